//! A hookable GPT-2 with HF's structure and names, whose logits equal `transformers`' GPT-2 on
//! the same weights.
//!
//! Paths are those of `GPT2LMHeadModel.named_modules()`: `transformer.wte`, `transformer.h.0`,
//! `transformer.h.0.attn.c_attn`, `transformer.h.0.mlp.act`, `transformer.ln_f`, `lm_head`, …,
//! plus one marker, `transformer.h.{i}.attn.hook_pattern`, for the attention probabilities
//! `[batch, head, query, key]`. (`attn.attn_dropout` exists, as in HF, but is never called: HF's
//! eager attention applies dropout as a function.)
//!
//! ```no_run
//! use tdhook::models::gpt2::Gpt2;
//! use tdhook::prelude::*;
//! # fn main() -> tdhook::Result<()> {
//! let model = Gpt2::load("path/to/gpt2", &candle_core::Device::Cpu)?;
//! let ids = candle_core::Tensor::new(&[[464u32, 3290, 318]], &candle_core::Device::Cpu)?;
//! let logits = model.forward(&ids, &mut Hx::none())?;
//! # Ok(()) }
//! ```

use super::load;
use crate::error::{Error, Result};
use crate::hook;
use crate::hookable::HookPoint;
use crate::hx::Hx;
use crate::model::{CausalLm, HookedModel};
use crate::nn::{Conv1D, Dropout, LayerNorm, NewGelu, softmax_last_dim};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Embedding, Linear, VarBuilder};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use tdhook_derive::Hookable;

/// The fields of HF's `config.json` GPT-2 needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Gpt2Config {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Maximum sequence length.
    pub n_positions: usize,
    /// Width of the residual stream.
    pub n_embd: usize,
    /// Number of blocks.
    pub n_layer: usize,
    /// Attention heads per block.
    pub n_head: usize,
    /// MLP width (default `4 · n_embd`).
    #[serde(default)]
    pub n_inner: Option<usize>,
    /// LayerNorm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    /// Only `gelu_new` is supported.
    #[serde(default = "default_act")]
    pub activation_function: String,
    /// Whether `lm_head` shares `wte`'s weight.
    #[serde(default = "default_true")]
    pub tie_word_embeddings: bool,
}

fn default_eps() -> f64 {
    1e-5
}
fn default_act() -> String {
    "gelu_new".into()
}
fn default_true() -> bool {
    true
}

impl Gpt2Config {
    /// GPT-2 small's shape (124M parameters).
    pub fn gpt2_small() -> Self {
        Self::new(50257, 1024, 768, 12, 12)
    }

    /// A config with the usual defaults.
    pub fn new(
        vocab_size: usize,
        n_positions: usize,
        n_embd: usize,
        n_layer: usize,
        n_head: usize,
    ) -> Self {
        Self {
            vocab_size,
            n_positions,
            n_embd,
            n_layer,
            n_head,
            n_inner: None,
            layer_norm_epsilon: 1e-5,
            activation_function: "gelu_new".into(),
            tie_word_embeddings: true,
        }
    }

    fn inner(&self) -> usize {
        self.n_inner.unwrap_or(4 * self.n_embd)
    }
}

/// `GPT2Attention`: causal self-attention, eager form.
#[derive(Hookable, Clone, Debug)]
#[hook(class = "GPT2Attention")]
pub struct Attention {
    /// Fused q, k, v projection `[D, 3D]`.
    pub c_attn: Conv1D,
    /// Output projection.
    pub c_proj: Conv1D,
    /// Never called (HF applies attention dropout functionally); kept for the path.
    pub attn_dropout: Dropout,
    /// Dropout after the output projection (identity at inference).
    pub resid_dropout: Dropout,
    /// The attention probabilities `[batch, head, query, key]`.
    pub hook_pattern: HookPoint,
    #[hook(skip)]
    n_head: usize,
}

impl Attention {
    fn load(cfg: &Gpt2Config, vb: VarBuilder) -> candle_core::Result<Self> {
        let d = cfg.n_embd;
        Ok(Self {
            c_attn: Conv1D::load(d, 3 * d, vb.pp("c_attn"))?,
            c_proj: Conv1D::load(d, d, vb.pp("c_proj"))?,
            attn_dropout: Dropout,
            resid_dropout: Dropout,
            hook_pattern: HookPoint,
            n_head: cfg.n_head,
        })
    }

    /// `x: [B, T, D]`, `mask`: additive `[1 or B, 1, T, S]` (0 where allowed, −inf where not),
    /// where `S` counts the cached keys plus these `T`. With `kv`, keys and values are appended
    /// to the cache and attention runs over all of them.
    pub fn forward(
        &self,
        x: &Tensor,
        mask: &Tensor,
        kv: Option<&mut LayerKv>,
        hx: &mut Hx<Self>,
    ) -> candle_core::Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let hd = d / self.n_head;
        let qkv = hook!(hx, self.c_attn(x))?;
        let heads = |i: usize| -> candle_core::Result<Tensor> {
            qkv.narrow(2, i * d, d)?
                .reshape((b, t, self.n_head, hd))?
                .transpose(1, 2)?
                .contiguous()
        };
        let (q, mut k, mut v) = (heads(0)?, heads(1)?, heads(2)?);
        if let Some(kv) = kv {
            if let Some((pk, pv)) = kv.take() {
                k = Tensor::cat(&[&pk, &k], 2)?;
                v = Tensor::cat(&[&pv, &v], 2)?;
            }
            *kv = Some((k.clone(), v.clone()));
        }
        let scores = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?;
        let scores = scores.broadcast_add(mask)?;
        let pattern = softmax_last_dim(&scores)?;
        let pattern = hook!(hx, self.hook_pattern(&pattern))?;
        let y = pattern.matmul(&v)?.transpose(1, 2)?.reshape((b, t, d))?;
        let y = hook!(hx, self.c_proj(&y))?;
        hook!(hx, self.resid_dropout(&y))
    }
}

/// `GPT2MLP`.
#[derive(Hookable, Clone, Debug)]
#[hook(class = "GPT2MLP")]
pub struct Mlp {
    /// `[D, 4D]`.
    pub c_fc: Conv1D,
    /// `[4D, D]`.
    pub c_proj: Conv1D,
    /// `gelu_new`.
    pub act: NewGelu,
    /// Identity at inference.
    pub dropout: Dropout,
}

impl Mlp {
    fn load(cfg: &Gpt2Config, vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(Self {
            c_fc: Conv1D::load(cfg.n_embd, cfg.inner(), vb.pp("c_fc"))?,
            c_proj: Conv1D::load(cfg.inner(), cfg.n_embd, vb.pp("c_proj"))?,
            act: NewGelu,
            dropout: Dropout,
        })
    }

    /// `x: [B, T, D]`.
    pub fn forward(&self, x: &Tensor, hx: &mut Hx<Self>) -> candle_core::Result<Tensor> {
        let h = hook!(hx, self.c_fc(x))?;
        let h = hook!(hx, self.act(&h))?;
        let h = hook!(hx, self.c_proj(&h))?;
        hook!(hx, self.dropout(&h))
    }
}

/// `GPT2Block`: pre-norm attention and MLP with residuals.
#[derive(Hookable, Clone, Debug)]
#[hook(class = "GPT2Block")]
pub struct Block {
    /// Norm before attention.
    pub ln_1: LayerNorm,
    /// Self-attention.
    pub attn: Attention,
    /// Norm before the MLP.
    pub ln_2: LayerNorm,
    /// The MLP.
    pub mlp: Mlp,
}

impl Block {
    fn load(cfg: &Gpt2Config, vb: VarBuilder) -> candle_core::Result<Self> {
        let eps = cfg.layer_norm_epsilon;
        Ok(Self {
            ln_1: LayerNorm::load(cfg.n_embd, eps, vb.pp("ln_1"))?,
            attn: Attention::load(cfg, vb.pp("attn"))?,
            ln_2: LayerNorm::load(cfg.n_embd, eps, vb.pp("ln_2"))?,
            mlp: Mlp::load(cfg, vb.pp("mlp"))?,
        })
    }

    /// `x: [B, T, D]` → `[B, T, D]`; `kv`: this block's key/value cache, if generating.
    pub fn forward(
        &self,
        x: &Tensor,
        mask: &Tensor,
        kv: Option<&mut LayerKv>,
        hx: &mut Hx<Self>,
    ) -> candle_core::Result<Tensor> {
        let h = hook!(hx, self.ln_1(x))?;
        let x = (x + hook!(hx, self.attn.forward(&h, mask, kv))?)?;
        let h = hook!(hx, self.ln_2(&x))?;
        &x + hook!(hx, self.mlp.forward(&h))?
    }
}

/// `GPT2Model`: embeddings, blocks, final norm.
#[derive(Hookable, Clone, Debug)]
#[hook(class = "GPT2Model")]
pub struct Gpt2Model {
    /// Token embeddings `[vocab, D]`.
    pub wte: Embedding,
    /// Position embeddings `[n_positions, D]`.
    pub wpe: Embedding,
    /// Embedding dropout (identity at inference).
    pub drop: Dropout,
    /// The blocks.
    pub h: Vec<Block>,
    /// Final norm.
    pub ln_f: LayerNorm,
}

impl Gpt2Model {
    /// `ids: [B, T]` (u32 or i64) → hidden states `[B, T, D]`, positions `0..T`.
    pub fn forward(&self, ids: &Tensor, hx: &mut Hx<Self>) -> candle_core::Result<Tensor> {
        let (_, t) = ids.dims2()?;
        let positions = Tensor::arange(0u32, t as u32, ids.device())?.unsqueeze(0)?;
        let mask = causal_mask(t, DType::F32, ids.device())?;
        self.forward_step(ids, &positions, &mask, None, hx)
    }

    /// One step with explicit positions `[1 or B, T]`, additive mask `[1 or B, 1, T, S]` and an
    /// optional key/value cache (generation: prefill, then one token per step).
    pub fn forward_step(
        &self,
        ids: &Tensor,
        positions: &Tensor,
        mask: &Tensor,
        mut cache: Option<&mut KvCache>,
        hx: &mut Hx<Self>,
    ) -> candle_core::Result<Tensor> {
        let tok = hook!(hx, self.wte(ids))?;
        let pos = hook!(hx, self.wpe(positions))?;
        let x = tok.broadcast_add(&pos)?;
        let mut x = hook!(hx, self.drop(&x))?;
        let mask = mask.to_dtype(x.dtype())?;
        if let Some(c) = cache.as_deref_mut() {
            c.layers.resize(self.h.len(), None);
        }
        for i in 0..self.h.len() {
            let kv = cache.as_deref_mut().map(|c| &mut c.layers[i]);
            x = hook!(hx, self.h[i].forward(&x, &mask, kv))?;
        }
        hook!(hx, self.ln_f(&x))
    }
}

use super::kv::{KvCache, LayerKv};

/// Additive causal mask `[1, 1, T, T]`: 0 on and below the diagonal, −inf above.
pub fn causal_mask(t: usize, dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| (0..t).map(move |j| if j <= i { 0. } else { f32::NEG_INFINITY }))
        .collect();
    Tensor::from_vec(mask, (1, 1, t, t), device)?.to_dtype(dtype)
}

/// `GPT2LMHeadModel`: the transformer and the (tied) unembedding.
#[derive(Hookable, Clone, Debug)]
#[hook(class = "GPT2LMHeadModel")]
pub struct Gpt2 {
    /// Embeddings, blocks, final norm.
    pub transformer: Gpt2Model,
    /// Unembedding `[vocab, D]`, tied to `transformer.wte` unless the config says otherwise.
    pub lm_head: Linear,
    #[hook(skip)]
    config: Gpt2Config,
}

impl Gpt2 {
    /// Build from a `VarBuilder` whose paths are HF's (`transformer.h.0.attn.c_attn.weight`, …).
    /// A builder over a `VarMap` gives a randomly initialised model.
    pub fn new(config: Gpt2Config, vb: VarBuilder) -> Result<Self> {
        if config.activation_function != "gelu_new" {
            return Err(Error::Invalid(format!(
                "activation_function `{}` is not supported; the reference GPT-2 implements `gelu_new`",
                config.activation_function
            )));
        }
        if !config.n_embd.is_multiple_of(config.n_head) {
            return Err(Error::Invalid(format!(
                "n_embd {} is not a multiple of n_head {}",
                config.n_embd, config.n_head
            )));
        }
        let tvb = vb.pp("transformer");
        let wte = candle_nn::embedding(config.vocab_size, config.n_embd, tvb.pp("wte"))?;
        let wpe = candle_nn::embedding(config.n_positions, config.n_embd, tvb.pp("wpe"))?;
        let h = (0..config.n_layer)
            .map(|i| Block::load(&config, tvb.pp("h").pp(i)))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let ln_f = LayerNorm::load(config.n_embd, config.layer_norm_epsilon, tvb.pp("ln_f"))?;
        let lm_head = if config.tie_word_embeddings {
            Linear::new(wte.embeddings().clone(), None)
        } else {
            Linear::new(
                vb.pp("lm_head").get_with_hints(
                    (config.vocab_size, config.n_embd),
                    "weight",
                    candle_nn::Init::Randn {
                        mean: 0.0,
                        stdev: 0.02,
                    },
                )?,
                None,
            )
        };
        Ok(Self {
            transformer: Gpt2Model {
                wte,
                wpe,
                drop: Dropout,
                h,
                ln_f,
            },
            lm_head,
            config,
        })
    }

    /// Load HF `config.json` and the weights from `dir`: `model.safetensors`, or the shards
    /// `model.safetensors.index.json` lists. Weight names may carry the `transformer.` prefix
    /// (saved from `GPT2LMHeadModel`) or not (the original `gpt2` files).
    pub fn load(dir: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let dir = dir.as_ref();
        let config = load::read_config(dir, "GPT-2")?;
        let tensors = load::read_weights(dir, device)?;
        Self::from_tensors(config, tensors, device)
    }

    /// Build from named tensors (HF names, with or without the `transformer.` prefix), in f32.
    /// With `tie_word_embeddings` (GPT-2's default) `lm_head` is `transformer.wte`'s weight;
    /// without it the tensors must hold `lm_head.weight`.
    pub fn from_tensors(
        config: Gpt2Config,
        tensors: HashMap<String, Tensor>,
        device: &Device,
    ) -> Result<Self> {
        let tensors = load::lm_names(tensors, "transformer.", DType::F32)?;
        load::check_lm_head(config.tie_word_embeddings, &tensors, "transformer.wte")?;
        Self::new(
            config,
            VarBuilder::from_tensors(tensors, DType::F32, device),
        )
    }

    /// The config.
    pub fn config(&self) -> &Gpt2Config {
        &self.config
    }

    /// `ids: [B, T]` → logits `[B, T, vocab]`.
    pub fn forward(&self, ids: &Tensor, hx: &mut Hx<Self>) -> candle_core::Result<Tensor> {
        let h = hook!(hx, self.transformer.forward(ids))?;
        hook!(hx, self.lm_head(&h))
    }

    /// One generation step (see [`Gpt2Model::forward_step`]) → logits `[B, T, vocab]`.
    pub fn forward_step(
        &self,
        ids: &Tensor,
        positions: &Tensor,
        mask: &Tensor,
        cache: Option<&mut KvCache>,
        hx: &mut Hx<Self>,
    ) -> candle_core::Result<Tensor> {
        let h = hook!(
            hx,
            self.transformer.forward_step(ids, positions, mask, cache)
        )?;
        hook!(hx, self.lm_head(&h))
    }
}

impl Module for Gpt2 {
    fn forward(&self, ids: &Tensor) -> candle_core::Result<Tensor> {
        Gpt2::forward(self, ids, &mut Hx::none())
    }
}

impl HookedModel for Gpt2 {
    fn forward_hooked(&self, input: &Tensor, hx: &mut Hx<'_, Self>) -> candle_core::Result<Tensor> {
        self.forward(input, hx)
    }
}

impl CausalLm for Gpt2 {
    type Cache = KvCache;
    fn new_cache(&self) -> KvCache {
        KvCache::default()
    }
    fn vocab_size(&self) -> usize {
        self.config().vocab_size
    }
    fn max_positions(&self) -> usize {
        self.config().n_positions
    }
    fn device(&self) -> Device {
        self.lm_head.weight().device().clone()
    }
    fn forward_step(
        &self,
        ids: &Tensor,
        positions: &Tensor,
        mask: &Tensor,
        cache: &mut KvCache,
        hx: &mut Hx<'_, Self>,
    ) -> candle_core::Result<Tensor> {
        Gpt2::forward_step(self, ids, positions, mask, Some(cache), hx)
    }
}
