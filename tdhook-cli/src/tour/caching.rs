//! ActivationCaching: the attention patterns of every block and head.

use super::*;

/// Attention patterns of one sentence.
#[derive(Clone, Debug)]
pub struct AttentionResult {
    /// The sentence.
    pub text: String,
    /// Its tokens (with `<bos>`).
    pub tokens: Vec<String>,
    /// `[layer][head][query][key]`.
    pub patterns: Vec<Vec<Vec<Vec<f64>>>>,
    /// What the cache held: `(key, shape)`.
    pub cached: Vec<(String, Vec<usize>)>,
    /// The model's most likely next token after the sentence, and its probability.
    pub next: (String, f64),
}

/// Cache `transformer.h.{l}.attn.hook_pattern` for `text` with [`ActivationCaching`].
pub fn attention(m: &Loaded, text: &str) -> Result<AttentionResult> {
    let ids = m.tokenizer.encode(text)?;
    let tokens = m.tokenizer.tokens(&ids);
    let input = ids_tensor(&[ids])?;
    let mut caching =
        ActivationCaching::new(r"transformer\.h\.\d+\.attn\.hook_pattern").prepare(&m.model)?;
    let mut td = TensorDict::new([1]);
    td.insert("input", input)?;
    let out = caching.run(&td)?;
    let cache = out
        .get_dict("cache")
        .context("the run's dict has a cache")?;
    let mut cached = Vec::new();
    let mut patterns = Vec::new();
    for l in 0..m.model.config().n_layer {
        let key = format!("transformer.h.{l}.attn.hook_pattern");
        let p = cache.tensor(key.as_str())?;
        cached.push((key, p.dims().to_vec()));
        let p: Vec<Vec<Vec<f32>>> = p.get(0)?.to_vec3()?;
        patterns.push(
            p.into_iter()
                .map(|h| {
                    h.into_iter()
                        .map(|r| r.into_iter().map(f64::from).collect())
                        .collect()
                })
                .collect(),
        );
    }
    let logits = out.tensor("output")?;
    let t = logits.dim(1)?;
    let probs =
        candle_nn::ops::softmax_last_dim(&logits.get(0)?.get(t - 1)?.unsqueeze(0)?)?.squeeze(0)?;
    let best = probs.argmax(0)?.to_scalar::<u32>()?;
    let p = probs.get(best as usize)?.to_scalar::<f32>()? as f64;
    Ok(AttentionResult {
        text: text.into(),
        tokens,
        patterns,
        cached,
        next: (m.tokenizer.tokens(&[best]).remove(0), p),
    })
}
