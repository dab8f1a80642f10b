//! The reference GPT-2 forward written as plain candle: no `Hx`, no `hook!`, no derive.
//!
//! Same math, same op order and the same layer types as `tdhook::models::gpt2::Gpt2`
//! (`tdhook::nn::{Conv1D, LayerNorm, Dropout, softmax_last_dim}` and candle-nn's
//! `Embedding`/`Linear` are ordinary candle modules), loaded from the same HF names, so on the
//! same weights both give bit-identical logits. What the DSL forward does that this one does not
//! is the hook plumbing — which is what the `hooks_off` benches measure — and the few `Option`
//! checks of its KV cache (the DSL model's forward is shared with generation).
//!
//! The identity dropouts are called here too (an `Arc` clone each), because the DSL model calls
//! them as modules; leaving them out would charge the model's structure to the DSL. The causal
//! mask comes from `tdhook::models::gpt2::causal_mask`, a plain candle function, so both arms run
//! the very same code for it, and the forward is split into transformer and head like the DSL
//! model so that temporaries are freed at the same points (glibc malloc's work depends on it).

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{Embedding, Linear, VarBuilder};
use tdhook::models::gpt2::{Gpt2Config, causal_mask};
use tdhook::nn::{Conv1D, Dropout, LayerNorm, softmax_last_dim};

/// One `GPT2Block`, flattened: attention and MLP inline.
#[derive(Clone, Debug)]
struct PlainBlock {
    ln_1: LayerNorm,
    c_attn: Conv1D,
    attn_c_proj: Conv1D,
    resid_dropout: Dropout,
    ln_2: LayerNorm,
    c_fc: Conv1D,
    mlp_c_proj: Conv1D,
    mlp_dropout: Dropout,
    n_head: usize,
}

impl PlainBlock {
    fn new(cfg: &Gpt2Config, vb: VarBuilder) -> Result<Self> {
        let d = cfg.n_embd;
        let inner = cfg.n_inner.unwrap_or(4 * d);
        let eps = cfg.layer_norm_epsilon;
        Ok(Self {
            ln_1: LayerNorm::load(d, eps, vb.pp("ln_1"))?,
            c_attn: Conv1D::load(d, 3 * d, vb.pp("attn").pp("c_attn"))?,
            attn_c_proj: Conv1D::load(d, d, vb.pp("attn").pp("c_proj"))?,
            resid_dropout: Dropout,
            ln_2: LayerNorm::load(d, eps, vb.pp("ln_2"))?,
            c_fc: Conv1D::load(d, inner, vb.pp("mlp").pp("c_fc"))?,
            mlp_c_proj: Conv1D::load(inner, d, vb.pp("mlp").pp("c_proj"))?,
            mlp_dropout: Dropout,
            n_head: cfg.n_head,
        })
    }

    fn attention(&self, x: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let hd = d / self.n_head;
        let qkv = self.c_attn.forward(x)?;
        let heads = |i: usize| -> Result<Tensor> {
            qkv.narrow(2, i * d, d)?
                .reshape((b, t, self.n_head, hd))?
                .transpose(1, 2)?
                .contiguous()
        };
        let (q, k, v) = (heads(0)?, heads(1)?, heads(2)?);
        let scores = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?;
        let scores = scores.broadcast_add(mask)?;
        let pattern = softmax_last_dim(&scores)?;
        let y = pattern.matmul(&v)?.transpose(1, 2)?.reshape((b, t, d))?;
        let y = self.attn_c_proj.forward(&y)?;
        self.resid_dropout.forward(&y)
    }

    fn mlp(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.c_fc.forward(x)?;
        let h = tdhook_kernels::gelu_tanh(&h)?; // what `NewGelu` runs
        let h = self.mlp_c_proj.forward(&h)?;
        self.mlp_dropout.forward(&h)
    }

    fn forward(&self, x: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let h = self.ln_1.forward(x)?;
        let x = (x + self.attention(&h, mask)?)?;
        let h = self.ln_2.forward(&x)?;
        &x + self.mlp(&h)?
    }
}

/// `GPT2Model` as plain candle: embeddings, blocks, final norm.
#[derive(Clone, Debug)]
struct PlainGpt2Model {
    wte: Embedding,
    wpe: Embedding,
    drop: Dropout,
    blocks: Vec<PlainBlock>,
    ln_f: LayerNorm,
}

impl PlainGpt2Model {
    /// `ids: [B, T]` → hidden states `[B, T, D]`.
    fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let (_, t) = ids.dims2()?;
        let positions = Tensor::arange(0u32, t as u32, ids.device())?.unsqueeze(0)?;
        let mask = causal_mask(t, DType::F32, ids.device())?;
        let tok = self.wte.forward(ids)?;
        let pos = self.wpe.forward(&positions)?;
        let x = tok.broadcast_add(&pos)?;
        let mut x = self.drop.forward(&x)?;
        let mask = mask.to_dtype(x.dtype())?;
        for block in &self.blocks {
            x = block.forward(&x, &mask)?;
        }
        self.ln_f.forward(&x)
    }
}

/// GPT-2 (`GPT2LMHeadModel`) as plain candle. Split into transformer and head like the DSL
/// model, so temporaries are freed at the same points (the allocator's work depends on it).
#[derive(Clone, Debug)]
pub struct PlainGpt2 {
    transformer: PlainGpt2Model,
    lm_head: Linear,
}

impl PlainGpt2 {
    /// Build from a `VarBuilder` with HF's paths (`transformer.h.0.attn.c_attn.weight`, …),
    /// exactly the names `Gpt2::new` asks for.
    pub fn new(cfg: &Gpt2Config, vb: VarBuilder) -> Result<Self> {
        let tvb = vb.pp("transformer");
        let wte = candle_nn::embedding(cfg.vocab_size, cfg.n_embd, tvb.pp("wte"))?;
        let wpe = candle_nn::embedding(cfg.n_positions, cfg.n_embd, tvb.pp("wpe"))?;
        let blocks = (0..cfg.n_layer)
            .map(|i| PlainBlock::new(cfg, tvb.pp("h").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        let ln_f = LayerNorm::load(cfg.n_embd, cfg.layer_norm_epsilon, tvb.pp("ln_f"))?;
        let lm_head = if cfg.tie_word_embeddings {
            Linear::new(wte.embeddings().clone(), None)
        } else {
            Linear::new(
                vb.pp("lm_head")
                    .get((cfg.vocab_size, cfg.n_embd), "weight")?,
                None,
            )
        };
        Ok(Self {
            transformer: PlainGpt2Model {
                wte,
                wpe,
                drop: Dropout,
                blocks,
                ln_f,
            },
            lm_head,
        })
    }

    /// `ids: [B, T]` → logits `[B, T, vocab]`. Never inlined, like `Gpt2::forward` (a call into
    /// another crate), so both arms are one call and profilers can find it by name.
    #[inline(never)]
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let h = self.transformer.forward(ids)?;
        self.lm_head.forward(&h)
    }
}
