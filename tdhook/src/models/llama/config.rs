//! `LlamaConfig`: the fields of HF's `config.json` a Llama needs, and the RoPE frequencies they
//! imply (default, `linear`, `dynamic`, `llama3` scaling).

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The fields of HF's `config.json` Llama needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads per layer.
    pub num_attention_heads: usize,
    /// Key/value heads per layer (grouped-query attention); default `num_attention_heads`.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Head width; default `hidden_size / num_attention_heads`.
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// Maximum sequence length (only read as llama3 rope's default original length).
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: usize,
    /// RMSNorm epsilon.
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    /// RoPE base (older configs; transformers 5 writes it in `rope_parameters`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_theta: Option<f64>,
    /// RoPE scaling (older configs), e.g. `{"rope_type": "llama3", "factor": 8.0, …}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<Value>,
    /// RoPE settings as transformers 5 writes them: `{"rope_theta": …, "rope_type": …, …}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_parameters: Option<Value>,
    /// Only `silu` is supported.
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Whether q/k/v/o projections have biases.
    #[serde(default)]
    pub attention_bias: bool,
    /// Whether the MLP projections have biases.
    #[serde(default)]
    pub mlp_bias: bool,
    /// Whether `lm_head` shares `model.embed_tokens`' weight.
    #[serde(default)]
    pub tie_word_embeddings: bool,
}

fn default_max_positions() -> usize {
    2048
}
fn default_eps() -> f64 {
    1e-6
}
fn default_act() -> String {
    "silu".into()
}

/// How RoPE frequencies are scaled (HF's `rope_type`).
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE.
    Default,
    /// Frequencies divided by `factor`.
    Linear {
        /// The divisor.
        factor: f64,
    },
    /// Llama 3.1's piecewise scaling.
    Llama3 {
        /// Divisor of the low frequencies.
        factor: f64,
        /// Wavelengths longer than `original / low_freq_factor` are divided by `factor`.
        low_freq_factor: f64,
        /// Wavelengths shorter than `original / high_freq_factor` are kept.
        high_freq_factor: f64,
        /// The pretraining context length.
        original_max_position_embeddings: f64,
    },
}

impl LlamaConfig {
    /// A config with the usual defaults (no GQA, `rope_theta` 10000, untied embeddings).
    pub fn new(
        vocab_size: usize,
        hidden_size: usize,
        intermediate_size: usize,
        num_hidden_layers: usize,
        num_attention_heads: usize,
    ) -> Self {
        Self {
            vocab_size,
            hidden_size,
            intermediate_size,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads: None,
            head_dim: None,
            max_position_embeddings: default_max_positions(),
            rms_norm_eps: default_eps(),
            rope_theta: Some(10000.0),
            rope_scaling: None,
            rope_parameters: None,
            hidden_act: default_act(),
            attention_bias: false,
            mlp_bias: false,
            tie_word_embeddings: false,
        }
    }

    /// Key/value heads.
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Head width.
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    /// The rope settings: `rope_parameters` if present, else `rope_scaling`.
    fn rope_dict(&self) -> Option<&serde_json::Map<String, Value>> {
        self.rope_parameters
            .as_ref()
            .or(self.rope_scaling.as_ref())
            .and_then(Value::as_object)
    }

    /// The RoPE base: `rope_parameters.rope_theta`, else `rope_theta`, else 10000.
    pub fn rope_base(&self) -> f64 {
        self.rope_dict()
            .and_then(|d| d.get("rope_theta"))
            .and_then(Value::as_f64)
            .or(self.rope_theta)
            .unwrap_or(10000.0)
    }

    /// The RoPE scaling the config asks for; an error for types not implemented.
    pub fn rope_scaling_kind(&self) -> Result<RopeScaling> {
        let Some(d) = self.rope_dict() else {
            return Ok(RopeScaling::Default);
        };
        let kind = d
            .get("rope_type")
            .or_else(|| d.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("default");
        if let Some(p) = d.get("partial_rotary_factor").and_then(Value::as_f64)
            && p != 1.0
        {
            return Err(Error::Invalid(format!(
                "partial_rotary_factor {p} is not supported; the reference Llama rotates whole heads"
            )));
        }
        let num = |key: &str| -> Result<f64> {
            d.get(key).and_then(Value::as_f64).ok_or_else(|| {
                Error::Invalid(format!(
                    "rope type `{kind}` needs `{key}` in the rope settings"
                ))
            })
        };
        match kind {
            "default" => Ok(RopeScaling::Default),
            "linear" => Ok(RopeScaling::Linear {
                factor: num("factor")?,
            }),
            "llama3" => Ok(RopeScaling::Llama3 {
                factor: num("factor")?,
                low_freq_factor: num("low_freq_factor")?,
                high_freq_factor: num("high_freq_factor")?,
                original_max_position_embeddings: d
                    .get("original_max_position_embeddings")
                    .and_then(Value::as_f64)
                    .unwrap_or(self.max_position_embeddings as f64),
            }),
            other => Err(Error::Invalid(format!(
                "rope type `{other}` is not supported; the reference Llama implements `default`, \
                 `linear` and `llama3`"
            ))),
        }
    }

    pub(super) fn validate(&self) -> Result<()> {
        if self.hidden_act != "silu" {
            return Err(Error::Invalid(format!(
                "hidden_act `{}` is not supported; the reference Llama implements `silu`",
                self.hidden_act
            )));
        }
        if self.head_dim.is_none() && !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(Error::Invalid(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}; set head_dim",
                self.hidden_size, self.num_attention_heads
            )));
        }
        if !self.num_attention_heads.is_multiple_of(self.kv_heads()) {
            return Err(Error::Invalid(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_attention_heads,
                self.kv_heads()
            )));
        }
        if !self.head_dim().is_multiple_of(2) {
            return Err(Error::Invalid(format!(
                "head_dim {} must be even for RoPE",
                self.head_dim()
            )));
        }
        self.rope_scaling_kind().map(|_| ())
    }
}
