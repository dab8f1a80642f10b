//! Loading a Hugging Face model folder, the same way for every family: `config.json`, the
//! weights from `model.safetensors` or the shards `model.safetensors.index.json` lists, weight
//! names with or without the base model's prefix, and one policy for tied embeddings.

use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;

/// A load error naming the file.
pub(crate) fn load_err(path: &Path, reason: impl ToString) -> Error {
    Error::Load {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// `dir/config.json`, read as a `family` config.
pub(crate) fn read_config<C: DeserializeOwned>(dir: &Path, family: &str) -> Result<C> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| load_err(&path, e))?;
    serde_json::from_str(&text).map_err(|e| load_err(&path, format!("not a {family} config: {e}")))
}

/// The tensors of `dir/model.safetensors`, or of every shard `dir/model.safetensors.index.json`
/// names in its `weight_map`.
pub fn read_weights(dir: impl AsRef<Path>, device: &Device) -> Result<HashMap<String, Tensor>> {
    let dir = dir.as_ref();
    let single = dir.join("model.safetensors");
    if single.exists() {
        return super::load_safetensors(&single, device);
    }
    let index_path = dir.join("model.safetensors.index.json");
    let text = std::fs::read_to_string(&index_path).map_err(|_| {
        load_err(
            dir,
            "neither model.safetensors nor model.safetensors.index.json is there",
        )
    })?;
    let index: Value = serde_json::from_str(&text).map_err(|e| load_err(&index_path, e))?;
    let map = index
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| load_err(&index_path, "no `weight_map` object"))?;
    let mut shards: Vec<&str> = map.values().filter_map(Value::as_str).collect();
    shards.sort_unstable();
    shards.dedup();
    let mut tensors = HashMap::new();
    for shard in shards {
        let path = dir.join(shard);
        tensors.extend(super::load_safetensors(&path, device)?);
    }
    if let Some(missing) = map.keys().find(|k| !tensors.contains_key(k.as_str())) {
        return Err(load_err(
            &index_path,
            format!("`{missing}` is in the weight_map but in no shard"),
        ));
    }
    Ok(tensors)
}

/// The weights under the causal-LM names: every name gets `prefix` (`transformer.`, `model.`)
/// unless some name already has it (a checkpoint saved from the base model has none), except
/// `lm_head.*`; every tensor is converted to `dtype`.
pub(crate) fn lm_names(
    tensors: HashMap<String, Tensor>,
    prefix: &str,
    dtype: DType,
) -> Result<HashMap<String, Tensor>> {
    let prefixed = tensors.keys().any(|k| k.starts_with(prefix));
    tensors
        .into_iter()
        .map(|(k, v)| {
            let k = if prefixed || k.starts_with("lm_head.") {
                k
            } else {
                format!("{prefix}{k}")
            };
            Ok((k, v.to_dtype(dtype)?))
        })
        .collect()
}

/// The one tied-embedding policy: with `tie_word_embeddings` the output projection is the
/// embedding matrix (as transformers ties it, whatever `lm_head.weight` the file holds);
/// without it the file must hold `lm_head.weight` — never a silently random or borrowed head.
pub(crate) fn check_lm_head(
    tie_word_embeddings: bool,
    tensors: &HashMap<String, Tensor>,
    embedding: &str,
) -> Result<()> {
    if tie_word_embeddings || tensors.contains_key("lm_head.weight") {
        return Ok(());
    }
    Err(Error::Invalid(format!(
        "the config has tie_word_embeddings = false but the weights hold no `lm_head.weight`; \
         set tie_word_embeddings to true to share `{embedding}.weight`, or add the head's weights"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> Tensor {
        Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap()
    }

    #[test]
    fn names_get_the_prefix_unless_the_checkpoint_has_it() -> Result<()> {
        let base: HashMap<String, Tensor> =
            [("wte.weight".into(), t()), ("lm_head.weight".into(), t())].into();
        let named = lm_names(base, "transformer.", DType::F32)?;
        let mut keys: Vec<&String> = named.keys().collect();
        keys.sort();
        assert_eq!(keys, ["lm_head.weight", "transformer.wte.weight"]);
        let full: HashMap<String, Tensor> = [("transformer.wte.weight".into(), t())].into();
        assert!(lm_names(full, "transformer.", DType::F32)?.contains_key("transformer.wte.weight"));
        Ok(())
    }

    #[test]
    fn an_untied_config_without_a_head_is_an_error() {
        let none = HashMap::new();
        assert!(check_lm_head(true, &none, "transformer.wte").is_ok());
        let err = check_lm_head(false, &none, "transformer.wte")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("tie_word_embeddings = false") && err.contains("transformer.wte.weight"),
            "{err}"
        );
        let head: HashMap<String, Tensor> = [("lm_head.weight".into(), t())].into();
        assert!(check_lm_head(false, &head, "transformer.wte").is_ok());
    }

    #[test]
    fn a_folder_without_weights_names_both_files() {
        let dir = std::env::temp_dir().join("tdhook-load-test-empty");
        std::fs::create_dir_all(&dir).unwrap();
        let err = read_weights(&dir, &Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("model.safetensors.index.json"), "{err}");
    }
}
