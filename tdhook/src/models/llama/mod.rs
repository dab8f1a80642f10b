//! A hookable Llama with HF's structure and names, whose logits equal `transformers`'
//! `LlamaForCausalLM` (eager attention) on the same weights.
//!
//! Paths are those of `LlamaForCausalLM.named_modules()`: `model.embed_tokens`, `model.layers.0`,
//! `model.layers.0.self_attn.q_proj`, `model.layers.0.mlp.act_fn`, `model.layers.0.input_layernorm`,
//! `model.norm`, `model.rotary_emb`, `lm_head`, … (`model.layers` is the list; it is never called
//! itself, as in PyTorch). `model.rotary_emb` outputs `(cos, sin)`; hooks see `cos`
//! `[1, token, head_dim]`, as PyTorch hooks see element 0 of the tuple.
//!
//! Marker points (TransformerLens style) for values no module outputs:
//!
//! | path | value |
//! |---|---|
//! | `model.layers.{i}.hook_resid_pre` | the residual stream entering block `i` `[batch, token, hidden]` |
//! | `model.layers.{i}.self_attn.hook_pattern` | attention probabilities `[batch, head, query, key]` |
//! | `model.layers.{i}.self_attn.hook_z` | per-head outputs before `o_proj` `[batch, token, head, head_dim]` |
//! | `model.layers.{i}.hook_resid_post` | the residual stream leaving block `i` (the block's output) |
//!
//! Supported: grouped-query attention (`num_key_value_heads`), `head_dim`, RoPE with
//! `rope_theta` and the `default`, `linear` and `llama3` rope types (both the transformers-5
//! `rope_parameters` and the older `rope_theta` / `rope_scaling` config keys), attention and MLP
//! biases, tied and untied embeddings, single-file and sharded safetensors checkpoints.
//!
//! ```no_run
//! use tdhook::models::llama::Llama;
//! use tdhook::prelude::*;
//! # fn main() -> tdhook::Result<()> {
//! let model = Llama::load("path/to/llama", &candle_core::Device::Cpu)?;
//! let ids = candle_core::Tensor::new(&[[1u32, 450, 4996]], &candle_core::Device::Cpu)?;
//! let logits = model.forward(&ids, &mut Hx::none())?;
//! # Ok(()) }
//! ```

mod config;

pub use super::load::read_weights;
pub use config::{LlamaConfig, RopeScaling};

use super::kv::{KvCache, LayerKv};
use super::load;
use crate::error::Result;
use crate::hook;
use crate::hookable::HookPoint;
use crate::hx::Hx;
use crate::model::{CausalLm, HookedModel};
use crate::nn::{RmsNorm, softmax_last_dim};
use candle_core::{D, DType, Device, Module, Tensor};
use candle_nn::{Embedding, Linear, VarBuilder};
use std::collections::HashMap;
use std::path::Path;
use tdhook_derive::Hookable;

/// HF's `SiLUActivation` (`silu(x) = x · sigmoid(x)`), as a leaf module.
#[derive(Hookable, Clone, Copy, Debug, Default)]
#[hook(class = "SiLUActivation")]
pub struct SiluActivation;

impl Module for SiluActivation {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        xs.silu()
    }
}

/// `LlamaRotaryEmbedding`: the RoPE `cos` and `sin` tables for given positions.
#[derive(Hookable, Clone, Debug)]
#[hook(class = "LlamaRotaryEmbedding")]
pub struct RotaryEmbedding {
    #[hook(skip)]
    inv_freq: Tensor,
}

impl RotaryEmbedding {
    /// The inverse frequencies of `config` (f32, `[head_dim / 2]`), computed as transformers
    /// does (in f32, with the config's rope scaling).
    pub fn new(config: &LlamaConfig, device: &Device) -> Result<Self> {
        let dim = config.head_dim();
        let base = config.rope_base() as f32;
        let inv: Vec<f32> = (0..dim)
            .step_by(2)
            .map(|i| 1.0 / base.powf(i as f32 / dim as f32))
            .collect();
        let inv = match config.rope_scaling_kind()? {
            RopeScaling::Default => inv,
            RopeScaling::Linear { factor } => inv.into_iter().map(|f| f / factor as f32).collect(),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: old,
            } => {
                let (factor, low, high, old) = (
                    factor as f32,
                    low_freq_factor as f32,
                    high_freq_factor as f32,
                    old as f32,
                );
                let (low_wavelen, high_wavelen) = (old / low, old / high);
                inv.into_iter()
                    .map(|f| {
                        let wavelen = 2.0 * std::f32::consts::PI / f;
                        let scaled = if wavelen > low_wavelen { f / factor } else { f };
                        let smooth = (old / wavelen - low) / (high - low);
                        let medium = wavelen >= high_wavelen && wavelen <= low_wavelen;
                        if medium {
                            (1.0 - smooth) * scaled / factor + smooth * scaled
                        } else {
                            scaled
                        }
                    })
                    .collect()
            }
        };
        Ok(Self {
            inv_freq: Tensor::from_vec(inv, dim / 2, device)?,
        })
    }

    /// The inverse frequencies `[head_dim / 2]` (f32).
    pub fn inv_freq(&self) -> &Tensor {
        &self.inv_freq
    }

    /// `positions: [1 or B, T]` (integer) → `(cos, sin)`, each `[1 or B, T, head_dim]` in `x`'s
    /// dtype (`x` is only read for its dtype, as in HF).
    pub fn forward(
        &self,
        x: &Tensor,
        positions: &Tensor,
        _hx: &mut Hx<Self>,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let freqs = positions
            .to_dtype(DType::F32)?
            .unsqueeze(D::Minus1)?
            .broadcast_mul(&self.inv_freq.to_device(positions.device())?)?;
        let emb = Tensor::cat(&[&freqs, &freqs], D::Minus1)?;
        Ok((
            emb.cos()?.to_dtype(x.dtype())?,
            emb.sin()?.to_dtype(x.dtype())?,
        ))
    }
}

/// HF's `rotate_half`: `[x1, x2] → [−x2, x1]` over the last dim.
fn rotate_half(x: &Tensor) -> candle_core::Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    let x1 = x.narrow(D::Minus1, 0, d / 2)?;
    let x2 = x.narrow(D::Minus1, d / 2, d - d / 2)?;
    Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)
}

/// HF's `apply_rotary_pos_emb` on one of q, k: `x: [B, H, T, hd]`, `cos`/`sin`: `[1 or B, T, hd]`.
///
/// candle's fused `rope` kernel (which reads the first half of `cos`/`sin`, equal to the second
/// in HF's convention) when no gradient can flow; HF's `x·cos + rotate_half(x)·sin` op by op,
/// which keeps the graph, when one can.
pub fn apply_rotary(x: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
    if x.track_op() || cos.track_op() || sin.track_op() {
        let cos = cos.unsqueeze(1)?;
        let sin = sin.unsqueeze(1)?;
        return x.broadcast_mul(&cos)? + rotate_half(x)?.broadcast_mul(&sin)?;
    }
    let half = x.dim(D::Minus1)? / 2;
    let table = |t: &Tensor| -> candle_core::Result<Tensor> {
        let t = t.narrow(D::Minus1, 0, half)?;
        let t = if t.dim(0)? == 1 { t.squeeze(0)? } else { t };
        t.contiguous()
    };
    candle_nn::rotary_emb::rope(&x.contiguous()?, &table(cos)?, &table(sin)?)
}

/// HF's `repeat_kv`: `[B, kv, T, hd]` → `[B, kv · n_rep, T, hd]`, each kv head repeated `n_rep`
/// times in place.
fn repeat_kv(x: Tensor, n_rep: usize) -> candle_core::Result<Tensor> {
    if n_rep == 1 {
        return Ok(x);
    }
    let (b, kv, t, hd) = x.dims4()?;
    x.unsqueeze(2)?
        .expand((b, kv, n_rep, t, hd))?
        .reshape((b, kv * n_rep, t, hd))
}

/// `LlamaAttention`: grouped-query self-attention with RoPE, HF's eager form.
#[derive(Hookable, Clone, Debug)]
#[hook(class = "LlamaAttention")]
pub struct Attention {
    /// `[hidden] → [heads · head_dim]`.
    pub q_proj: Linear,
    /// `[hidden] → [kv_heads · head_dim]`.
    pub k_proj: Linear,
    /// `[hidden] → [kv_heads · head_dim]`.
    pub v_proj: Linear,
    /// `[heads · head_dim] → [hidden]`.
    pub o_proj: Linear,
    /// The attention probabilities `[batch, head, query, key]`.
    pub hook_pattern: HookPoint,
    /// Per-head outputs before `o_proj` `[batch, token, head, head_dim]`.
    pub hook_z: HookPoint,
    #[hook(skip)]
    n_head: usize,
    #[hook(skip)]
    n_kv_head: usize,
    #[hook(skip)]
    head_dim: usize,
}

impl Attention {
    fn load(cfg: &LlamaConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let (d, hd, nh, nkv) = (
            cfg.hidden_size,
            cfg.head_dim(),
            cfg.num_attention_heads,
            cfg.kv_heads(),
        );
        let bias = cfg.attention_bias;
        Ok(Self {
            q_proj: candle_nn::linear_b(d, nh * hd, bias, vb.pp("q_proj"))?,
            k_proj: candle_nn::linear_b(d, nkv * hd, bias, vb.pp("k_proj"))?,
            v_proj: candle_nn::linear_b(d, nkv * hd, bias, vb.pp("v_proj"))?,
            o_proj: candle_nn::linear_b(nh * hd, d, bias, vb.pp("o_proj"))?,
            hook_pattern: HookPoint,
            hook_z: HookPoint,
            n_head: nh,
            n_kv_head: nkv,
            head_dim: hd,
        })
    }

    /// `x: [B, T, D]`; `cos`, `sin`: `[1 or B, T, head_dim]` (the rotary module's output for the
    /// query positions); `mask`: additive `[1 or B, 1, T, S]` (0 where allowed, −inf where not),
    /// or `None` for no mask. With `kv`, this layer's past keys and values (after RoPE, before
    /// `repeat_kv`) are prepended and the new ones appended to the cache, so `S` = past + `T`.
    pub fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: Option<&Tensor>,
        kv: Option<&mut LayerKv>,
        hx: &mut Hx<Self>,
    ) -> candle_core::Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let (nh, nkv, hd) = (self.n_head, self.n_kv_head, self.head_dim);
        let heads = |y: Tensor, n: usize| y.reshape((b, t, n, hd))?.transpose(1, 2)?.contiguous();
        let q = heads(hook!(hx, self.q_proj(x))?, nh)?;
        let k = heads(hook!(hx, self.k_proj(x))?, nkv)?;
        let v = heads(hook!(hx, self.v_proj(x))?, nkv)?;
        let q = apply_rotary(&q, cos, sin)?;
        let mut k = apply_rotary(&k, cos, sin)?;
        let mut v = v;
        if let Some(kv) = kv {
            if let Some((pk, pv)) = kv.take() {
                k = Tensor::cat(&[&pk, &k], 2)?;
                v = Tensor::cat(&[&pv, &v], 2)?;
            }
            *kv = Some((k.clone(), v.clone()));
        }
        let k = repeat_kv(k, nh / nkv)?;
        let v = repeat_kv(v, nh / nkv)?;
        // HF: softmax in f32, then back to the query dtype. The mask is added in f32 too (HF adds
        // it in the query dtype): allowed keys add 0, so their scores are the same either way,
        // and the generation mask's −1e30 floor stays finite instead of overflowing f16 to
        // −inf (a padding row, allowed nothing, would softmax into NaN).
        let scores = (q.matmul(&k.t()?)? * (hd as f64).powf(-0.5))?.to_dtype(DType::F32)?;
        let scores = match mask {
            Some(m) => scores.broadcast_add(&m.to_dtype(DType::F32)?)?,
            None => scores,
        };
        let pattern = softmax_last_dim(&scores)?.to_dtype(q.dtype())?;
        let pattern = hook!(hx, self.hook_pattern(&pattern))?;
        let z = pattern.matmul(&v)?.transpose(1, 2)?.contiguous()?;
        let z = hook!(hx, self.hook_z(&z))?;
        let y = z.reshape((b, t, nh * hd))?;
        hook!(hx, self.o_proj(&y))
    }
}

/// `LlamaMLP`: SwiGLU, `down(silu(gate(x)) · up(x))`.
#[derive(Hookable, Clone, Debug)]
#[hook(class = "LlamaMLP")]
pub struct Mlp {
    /// `[hidden] → [intermediate]`, through the activation.
    pub gate_proj: Linear,
    /// `[hidden] → [intermediate]`.
    pub up_proj: Linear,
    /// `[intermediate] → [hidden]`.
    pub down_proj: Linear,
    /// SiLU, applied to `gate_proj`'s output.
    pub act_fn: SiluActivation,
}

impl Mlp {
    fn load(cfg: &LlamaConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let (d, i, bias) = (cfg.hidden_size, cfg.intermediate_size, cfg.mlp_bias);
        Ok(Self {
            gate_proj: candle_nn::linear_b(d, i, bias, vb.pp("gate_proj"))?,
            up_proj: candle_nn::linear_b(d, i, bias, vb.pp("up_proj"))?,
            down_proj: candle_nn::linear_b(i, d, bias, vb.pp("down_proj"))?,
            act_fn: SiluActivation,
        })
    }

    /// `x: [B, T, D]` → `[B, T, D]` (calls in HF's order: gate, act, up, down).
    pub fn forward(&self, x: &Tensor, hx: &mut Hx<Self>) -> candle_core::Result<Tensor> {
        let g = hook!(hx, self.gate_proj(x))?;
        let g = hook!(hx, self.act_fn(&g))?;
        let u = hook!(hx, self.up_proj(x))?;
        hook!(hx, self.down_proj(&(g * u)?))
    }
}

/// `LlamaDecoderLayer`: pre-norm attention and MLP with residuals.
#[derive(Hookable, Clone, Debug)]
#[hook(class = "LlamaDecoderLayer")]
pub struct DecoderLayer {
    /// The residual stream entering the layer.
    pub hook_resid_pre: HookPoint,
    /// Self-attention.
    pub self_attn: Attention,
    /// The MLP.
    pub mlp: Mlp,
    /// Norm before attention.
    pub input_layernorm: RmsNorm,
    /// Norm before the MLP.
    pub post_attention_layernorm: RmsNorm,
    /// The residual stream leaving the layer (equal to the layer's output).
    pub hook_resid_post: HookPoint,
}

impl DecoderLayer {
    fn load(cfg: &LlamaConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let norm = |name: &str| -> candle_core::Result<RmsNorm> {
            Ok(
                RmsNorm::load(cfg.hidden_size, cfg.rms_norm_eps, vb.pp(name))?
                    .with_class("LlamaRMSNorm"),
            )
        };
        Ok(Self {
            hook_resid_pre: HookPoint,
            self_attn: Attention::load(cfg, vb.pp("self_attn"))?,
            mlp: Mlp::load(cfg, vb.pp("mlp"))?,
            input_layernorm: norm("input_layernorm")?,
            post_attention_layernorm: norm("post_attention_layernorm")?,
            hook_resid_post: HookPoint,
        })
    }

    /// `x: [B, T, D]` → `[B, T, D]`; `cos`, `sin`, `mask`, `kv` as in [`Attention::forward`].
    pub fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: Option<&Tensor>,
        kv: Option<&mut LayerKv>,
        hx: &mut Hx<Self>,
    ) -> candle_core::Result<Tensor> {
        let x = hook!(hx, self.hook_resid_pre(x))?;
        let h = hook!(hx, self.input_layernorm(&x))?;
        let x = (&x + hook!(hx, self.self_attn.forward(&h, cos, sin, mask, kv))?)?;
        let h = hook!(hx, self.post_attention_layernorm(&x))?;
        let x = (&x + hook!(hx, self.mlp.forward(&h))?)?;
        hook!(hx, self.hook_resid_post(&x))
    }
}

/// `LlamaModel`: embeddings, decoder layers, final norm, and the rotary tables.
#[derive(Hookable, Clone, Debug)]
#[hook(class = "LlamaModel")]
pub struct LlamaModel {
    /// Token embeddings `[vocab, D]`.
    pub embed_tokens: Embedding,
    /// The decoder layers.
    pub layers: Vec<DecoderLayer>,
    /// Final norm.
    pub norm: RmsNorm,
    /// RoPE `cos`/`sin` for the positions (called once per forward, before the layers).
    pub rotary_emb: RotaryEmbedding,
}

impl LlamaModel {
    /// `ids: [B, T]` (u32 or i64) → hidden states `[B, T, D]`, positions `0..T`, causal mask.
    pub fn forward(&self, ids: &Tensor, hx: &mut Hx<Self>) -> candle_core::Result<Tensor> {
        let (_, t) = ids.dims2()?;
        let x = hook!(hx, self.embed_tokens(ids))?;
        let positions = Tensor::arange(0u32, t as u32, ids.device())?.unsqueeze(0)?;
        let mask = if t > 1 {
            Some(causal_mask(t, 0, x.dtype(), x.device())?)
        } else {
            None
        };
        self.forward_embeds(&x, &positions, mask.as_ref(), None, hx)
    }

    /// One generation step: `ids [B, T]`, `positions [1 or B, T]`, additive `mask
    /// [1 or B, 1, T, S]` (S = cached + T), appending to `cache`.
    pub fn forward_step(
        &self,
        ids: &Tensor,
        positions: &Tensor,
        mask: &Tensor,
        cache: Option<&mut KvCache>,
        hx: &mut Hx<Self>,
    ) -> candle_core::Result<Tensor> {
        let x = hook!(hx, self.embed_tokens(ids))?;
        self.forward_embeds(&x, positions, Some(mask), cache, hx)
    }

    /// Everything after the embedding: `x: [B, T, D]`, `positions: [1 or B, T]` (integer),
    /// `mask`: additive `[1 or B, 1, T, S]` or `None`; `cache`: the KV cache when generating.
    /// Hooks are at this model's level (`hx` is the context [`LlamaModel::forward`] gets).
    pub fn forward_embeds(
        &self,
        x: &Tensor,
        positions: &Tensor,
        mask: Option<&Tensor>,
        mut cache: Option<&mut KvCache>,
        hx: &mut Hx<Self>,
    ) -> candle_core::Result<Tensor> {
        let (cos, sin) = hook!(hx, self.rotary_emb.forward(x, positions))?;
        let mut x = x.clone();
        if let Some(c) = cache.as_deref_mut() {
            c.layers.resize(self.layers.len(), None);
        }
        for i in 0..self.layers.len() {
            let kv = cache.as_deref_mut().map(|c| &mut c.layers[i]);
            x = hook!(hx, self.layers[i].forward(&x, &cos, &sin, mask, kv))?;
        }
        hook!(hx, self.norm(&x))
    }
}

/// Additive causal mask `[1, 1, T, past + T]` for `T` queries at positions `past..past + T`:
/// 0 where key `j <= past + i`, −inf elsewhere.
pub fn causal_mask(
    t: usize,
    past: usize,
    dtype: DType,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let s = past + t;
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| (0..s).map(move |j| if j <= past + i { 0. } else { f32::NEG_INFINITY }))
        .collect();
    Tensor::from_vec(mask, (1, 1, t, s), device)?.to_dtype(dtype)
}

/// `LlamaForCausalLM`: the model and the unembedding.
#[derive(Hookable, Clone, Debug)]
#[hook(class = "LlamaForCausalLM")]
pub struct Llama {
    /// Embeddings, layers, final norm, rotary tables.
    pub model: LlamaModel,
    /// Unembedding `[vocab, D]`; shares `model.embed_tokens`' weight when the config ties them.
    pub lm_head: Linear,
    #[hook(skip)]
    config: LlamaConfig,
}

impl Llama {
    /// Build from a `VarBuilder` whose paths are HF's (`model.layers.0.self_attn.q_proj.weight`,
    /// …). A builder over a `VarMap` gives a randomly initialised model. With
    /// `tie_word_embeddings`, `lm_head` is `model.embed_tokens`' weight (the same tensor) and
    /// `lm_head.weight` is not read.
    pub fn new(config: LlamaConfig, vb: VarBuilder) -> Result<Self> {
        config.validate()?;
        let mvb = vb.pp("model");
        let embed_tokens = candle_nn::embedding(
            config.vocab_size,
            config.hidden_size,
            mvb.pp("embed_tokens"),
        )?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| DecoderLayer::load(&config, mvb.pp("layers").pp(i)))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let norm = RmsNorm::load(config.hidden_size, config.rms_norm_eps, mvb.pp("norm"))?
            .with_class("LlamaRMSNorm");
        let rotary_emb = RotaryEmbedding::new(&config, vb.device())?;
        let lm_head = if config.tie_word_embeddings {
            Linear::new(embed_tokens.embeddings().clone(), None)
        } else {
            Linear::new(
                vb.pp("lm_head").get_with_hints(
                    (config.vocab_size, config.hidden_size),
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
            model: LlamaModel {
                embed_tokens,
                layers,
                norm,
                rotary_emb,
            },
            lm_head,
            config,
        })
    }

    /// Load HF `config.json` and the weights from `dir`, as f32: `model.safetensors`, or the
    /// shards `model.safetensors.index.json` lists.
    pub fn load(dir: impl AsRef<Path>, device: &Device) -> Result<Self> {
        Self::load_with_dtype(dir, DType::F32, device)
    }

    /// [`Llama::load`] with the weights converted to `dtype` (e.g. `BF16` to keep a checkpoint's
    /// precision; norms and softmax still compute in f32, as in HF).
    pub fn load_with_dtype(dir: impl AsRef<Path>, dtype: DType, device: &Device) -> Result<Self> {
        let dir = dir.as_ref();
        let config = Self::read_config(dir)?;
        let tensors = load::read_weights(dir, device)?;
        Self::from_tensors(config, tensors, dtype, device)
    }

    /// Read HF `config.json` from `dir`.
    pub fn read_config(dir: impl AsRef<Path>) -> Result<LlamaConfig> {
        load::read_config(dir.as_ref(), "Llama")
    }

    /// Build from named tensors (HF names, with or without the `model.` prefix), converted to
    /// `dtype`.
    pub fn from_tensors(
        config: LlamaConfig,
        tensors: HashMap<String, Tensor>,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let tensors = load::lm_names(tensors, "model.", dtype)?;
        load::check_lm_head(config.tie_word_embeddings, &tensors, "model.embed_tokens")?;
        Self::new(config, VarBuilder::from_tensors(tensors, dtype, device))
    }

    /// The config.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// `ids: [B, T]` → logits `[B, T, vocab]`.
    pub fn forward(&self, ids: &Tensor, hx: &mut Hx<Self>) -> candle_core::Result<Tensor> {
        let h = hook!(hx, self.model.forward(ids))?;
        hook!(hx, self.lm_head(&h))
    }

    /// One generation step (see [`LlamaModel::forward_step`]) → logits `[B, T, vocab]`.
    pub fn forward_step(
        &self,
        ids: &Tensor,
        positions: &Tensor,
        mask: &Tensor,
        cache: Option<&mut KvCache>,
        hx: &mut Hx<Self>,
    ) -> candle_core::Result<Tensor> {
        let h = hook!(hx, self.model.forward_step(ids, positions, mask, cache))?;
        hook!(hx, self.lm_head(&h))
    }
}

impl Module for Llama {
    fn forward(&self, ids: &Tensor) -> candle_core::Result<Tensor> {
        Llama::forward(self, ids, &mut Hx::none())
    }
}

impl HookedModel for Llama {
    fn forward_hooked(&self, input: &Tensor, hx: &mut Hx<'_, Self>) -> candle_core::Result<Tensor> {
        self.forward(input, hx)
    }
}

impl CausalLm for Llama {
    type Cache = KvCache;
    fn new_cache(&self) -> KvCache {
        KvCache::default()
    }
    fn vocab_size(&self) -> usize {
        self.config().vocab_size
    }
    fn max_positions(&self) -> usize {
        self.config().max_position_embeddings
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
        Llama::forward_step(self, ids, positions, mask, Some(cache), hx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    #[test]
    fn fused_and_differentiable_rope_agree_for_shared_and_per_row_positions() -> Result<()> {
        let dev = Device::Cpu;
        let mut cfg = LlamaConfig::new(10, 32, 8, 1, 2);
        cfg.num_key_value_heads = Some(1);
        let rot = RotaryEmbedding::new(&cfg, &dev)?;
        let x = Tensor::randn(0f32, 1., (2, 2, 3, 16), &dev)?;
        let shared = Tensor::new(&[[0u32, 1, 2]], &dev)?;
        let per_row = Tensor::new(&[[0u32, 1, 2], [4, 5, 6]], &dev)?;
        for positions in [shared, per_row] {
            let (cos, sin) = rot.forward(&x, &positions, &mut Hx::none())?;
            let fused = apply_rotary(&x, &cos, &sin)?;
            let v = Var::from_tensor(&x)?;
            let slow = apply_rotary(v.as_tensor(), &cos, &sin)?;
            assert!(slow.track_op(), "the differentiable path keeps the graph");
            let d = max_diff(&fused, &slow);
            assert!(d < 1e-6, "fused vs differentiable rope differ by {d}");
        }
        Ok(())
    }

    #[test]
    fn causal_mask_with_past() -> Result<()> {
        let m = causal_mask(2, 3, DType::F32, &Device::Cpu)?;
        let rows = m.squeeze(0)?.squeeze(0)?.to_vec2::<f32>()?;
        let inf = f32::NEG_INFINITY;
        assert_eq!(rows, [[0., 0., 0., 0., inf], [0., 0., 0., 0., 0.]]);
        Ok(())
    }

    #[test]
    fn config_parses_old_and_new_rope_keys() {
        let old: LlamaConfig = serde_json::from_str(
            r#"{"vocab_size": 8, "hidden_size": 8, "intermediate_size": 8, "num_hidden_layers": 1,
                "num_attention_heads": 2, "rope_theta": 500000.0, "rope_scaling": null}"#,
        )
        .unwrap();
        assert_eq!(old.rope_base(), 500000.0);
        assert_eq!(old.rope_scaling_kind().unwrap(), RopeScaling::Default);
        let new: LlamaConfig = serde_json::from_str(
            r#"{"vocab_size": 8, "hidden_size": 8, "intermediate_size": 8, "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "rope_parameters": {"rope_theta": 1000.0, "rope_type": "linear", "factor": 2.0}}"#,
        )
        .unwrap();
        assert_eq!(new.rope_base(), 1000.0);
        assert_eq!(
            new.rope_scaling_kind().unwrap(),
            RopeScaling::Linear { factor: 2.0 }
        );
        assert_eq!(new.kv_heads(), 2);
        assert_eq!(new.head_dim(), 4);
    }
}
