//! The embedded tiny model (trained on the [toy](crate::toy) language by
//! `examples/train_tiny.rs`, weights in `assets/tiny/`), and loading a GPT-2 from a folder.

use crate::toy::Vocab;
use anyhow::{Context, Result, bail};
use candle_core::Device;
use std::path::Path;
use tdhook::models::gpt2::{Gpt2, Gpt2Config};

/// `assets/tiny/model.safetensors`, in the binary.
pub const MODEL_SAFETENSORS: &[u8] = include_bytes!("../assets/tiny/model.safetensors");
/// `assets/tiny/config.json`.
pub const CONFIG_JSON: &str = include_str!("../assets/tiny/config.json");
/// `assets/tiny/vocab.json`.
pub const VOCAB_JSON: &str = include_str!("../assets/tiny/vocab.json");
/// `assets/tiny/train_log.json`.
pub const TRAIN_LOG_JSON: &str = include_str!("../assets/tiny/train_log.json");

/// How text becomes ids.
pub enum Tokenizer {
    /// The toy language's words (a `<bos>` is prepended).
    Words(Vocab),
    /// A `tokenizer.json` read by the `tokenizers` crate (with its special tokens: GPT-2's adds
    /// none, the tiny model's prepends `<bos>`).
    Hf(Box<tokenizers::Tokenizer>),
}

impl Tokenizer {
    /// The ids of `text` as a model input.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match self {
            Tokenizer::Words(v) => v.encode_doc(text),
            Tokenizer::Hf(t) => {
                let enc = t
                    .encode(text, true)
                    .map_err(|e| anyhow::anyhow!("tokenizing {text:?}: {e}"))?;
                Ok(enc.get_ids().to_vec())
            }
        }
    }

    /// The text of `ids`.
    pub fn decode(&self, ids: &[u32]) -> String {
        match self {
            Tokenizer::Words(v) => v.decode(ids),
            Tokenizer::Hf(t) => t
                .decode(ids, false)
                .unwrap_or_else(|e| format!("<undecodable: {e}>")),
        }
    }

    /// One display string per id (for axis labels).
    pub fn tokens(&self, ids: &[u32]) -> Vec<String> {
        match self {
            Tokenizer::Words(v) => ids.iter().map(|&i| v.word(i).to_string()).collect(),
            Tokenizer::Hf(t) => ids
                .iter()
                .map(|&i| {
                    t.id_to_token(i)
                        .unwrap_or_else(|| format!("#{i}"))
                        .replace('Ġ', "·")
                })
                .collect(),
        }
    }

    /// The end-of-text id, if the tokenizer has one.
    pub fn eos(&self) -> Option<u32> {
        match self {
            Tokenizer::Words(v) => Some(v.eos()),
            Tokenizer::Hf(t) => ["<|endoftext|>", "</s>", "<eos>"]
                .iter()
                .find_map(|s| t.token_to_id(s)),
        }
    }

    /// The toy vocabulary, when this is one.
    pub fn vocab(&self) -> Option<&Vocab> {
        match self {
            Tokenizer::Words(v) => Some(v),
            Tokenizer::Hf(_) => None,
        }
    }
}

/// A model and its tokenizer.
pub struct Loaded {
    /// The model.
    pub model: Gpt2,
    /// Its tokenizer.
    pub tokenizer: Tokenizer,
    /// Where it came from.
    pub source: String,
}

impl Loaded {
    /// The toy vocabulary (the embedded model's); an error for other models.
    pub fn vocab(&self) -> Result<&Vocab> {
        self.tokenizer.vocab().with_context(|| {
            format!(
                "{} is not a toy-language model (it has no word vocabulary)",
                self.source
            )
        })
    }
}

/// The embedded tiny model, from the bytes in the binary.
pub fn embedded() -> Result<Loaded> {
    let device = Device::Cpu;
    let config: Gpt2Config = serde_json::from_str(CONFIG_JSON).context("embedded config.json")?;
    let tensors = candle_core::safetensors::load_buffer(MODEL_SAFETENSORS, &device)?;
    let model = Gpt2::from_tensors(config, tensors, &device)?;
    let vocab = Vocab::from_json(VOCAB_JSON)?;
    Ok(Loaded {
        model,
        tokenizer: Tokenizer::Words(vocab),
        source: "the embedded tiny model".into(),
    })
}

/// A GPT-2 folder: `config.json` + `model.safetensors`, and `tokenizer.json` (read by the
/// `tokenizers` crate) or a toy `vocab.json` (word → id) when there is no `tokenizer.json`.
pub fn load_dir(dir: &Path) -> Result<Loaded> {
    let device = Device::Cpu;
    let model = Gpt2::load(dir, &device)
        .with_context(|| format!("loading a GPT-2 from {}", dir.display()))?;
    let tok_path = dir.join("tokenizer.json");
    let vocab_path = dir.join("vocab.json");
    let tokenizer = if tok_path.exists() {
        let t = tokenizers::Tokenizer::from_file(&tok_path)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", tok_path.display()))?;
        Tokenizer::Hf(Box::new(t))
    } else if vocab_path.exists() {
        let text = std::fs::read_to_string(&vocab_path)?;
        Tokenizer::Words(
            Vocab::from_json(&text).with_context(|| format!("reading {}", vocab_path.display()))?,
        )
    } else {
        bail!(
            "{} has no tokenizer.json (nor a word vocab.json); put the model's tokenizer.json next to its config.json",
            dir.display()
        );
    };
    Ok(Loaded {
        model,
        tokenizer,
        source: dir.display().to_string(),
    })
}

/// [`embedded`], or [`load_dir`] when a folder is given.
pub fn load(dir: Option<&Path>) -> Result<Loaded> {
    match dir {
        Some(d) => load_dir(d),
        None => embedded(),
    }
}
