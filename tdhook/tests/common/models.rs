//! Rust mirrors of the small PyTorch models `tests/oracle/gen_tdhook.py` builds, with the same
//! module names, loaded from the weights it saved.

use candle_core::{D, DType, Device, Module, Result, Tensor};
use candle_nn::{Embedding, Linear, VarBuilder};
use tdhook::latent::HookedModel;
use tdhook::nn::{LayerNorm, softmax_last_dim};
use tdhook::prelude::*;

fn vb_from(dir: &std::path::Path) -> VarBuilder<'static> {
    let tensors =
        candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
    VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu)
}

/// `nn.Tanh` as a leaf.
#[derive(Hookable, Clone, Copy)]
pub struct Tanh;

impl Module for Tanh {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        xs.tanh()
    }
}

/// `nn.GELU()` (exact erf) as a leaf.
#[derive(Hookable, Clone, Copy)]
#[hook(class = "GELU")]
pub struct Gelu;

impl Module for Gelu {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        xs.gelu_erf()
    }
}

/// `fc3(act(fc2(act(fc1(x)))))`: `act` is one module called twice.
#[derive(Hookable)]
pub struct SharedMlp {
    pub fc1: Linear,
    pub act: Tanh,
    pub fc2: Linear,
    pub fc3: Linear,
}

impl SharedMlp {
    pub fn load(dir: &std::path::Path) -> Self {
        let vb = vb_from(dir);
        Self {
            fc1: candle_nn::linear(6, 8, vb.pp("fc1")).unwrap(),
            act: Tanh,
            fc2: candle_nn::linear(8, 8, vb.pp("fc2")).unwrap(),
            fc3: candle_nn::linear(8, 3, vb.pp("fc3")).unwrap(),
        }
    }
}

impl HookedModel for SharedMlp {
    fn forward_hooked(&self, x: &Tensor, hx: &mut Hx<Self>) -> Result<Tensor> {
        let h = hook!(hx, self.fc1(x))?;
        let h = hook!(hx, self.act(&h))?;
        let h = hook!(hx, self.fc2(&h))?;
        let h = hook!(hx, self.act(&h))?;
        hook!(hx, self.fc3(&h))
    }
}

#[derive(Hookable)]
pub struct Attention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub o_proj: Linear,
}

impl Attention {
    fn forward(&self, x: &Tensor, hx: &mut Hx<Self>) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let (nh, hd) = (2, d / 2);
        let split = |y: Tensor| -> Result<Tensor> {
            y.reshape((b, t, nh, hd))?.transpose(1, 2)?.contiguous()
        };
        let q = split(hook!(hx, self.q_proj(x))?)?;
        let k = split(hook!(hx, self.k_proj(x))?)?;
        let v = split(hook!(hx, self.v_proj(x))?)?;
        let scores = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?;
        let mask = tdhook::models::gpt2::causal_mask(t, scores.dtype(), scores.device())?;
        let p = softmax_last_dim(&scores.broadcast_add(&mask)?)?;
        let y = p.matmul(&v)?.transpose(1, 2)?.reshape((b, t, d))?;
        hook!(hx, self.o_proj(&y))
    }
}

#[derive(Hookable)]
pub struct Mlp {
    pub up: Linear,
    pub act: Gelu,
    pub down: Linear,
}

impl Mlp {
    fn forward(&self, x: &Tensor, hx: &mut Hx<Self>) -> Result<Tensor> {
        let h = hook!(hx, self.up(x))?;
        let h = hook!(hx, self.act(&h))?;
        hook!(hx, self.down(&h))
    }
}

#[derive(Hookable)]
pub struct Layer {
    pub ln1: LayerNorm,
    pub attn: Attention,
    pub ln2: LayerNorm,
    pub mlp: Mlp,
}

impl Layer {
    fn forward(&self, x: &Tensor, hx: &mut Hx<Self>) -> Result<Tensor> {
        let h = hook!(hx, self.ln1(x))?;
        let x = (x + hook!(hx, self.attn.forward(&h))?)?;
        let h = hook!(hx, self.ln2(&x))?;
        &x + hook!(hx, self.mlp.forward(&h))?
    }
}

/// `head(norm(layers(embed(ids))))`, 2 layers, width 16, 2 heads, vocab 20.
#[derive(Hookable)]
pub struct TinyTransformer {
    pub embed: Embedding,
    pub layers: Vec<Layer>,
    pub norm: LayerNorm,
    pub head: Linear,
}

impl TinyTransformer {
    pub fn load(dir: &std::path::Path) -> Self {
        let vb = vb_from(dir);
        let lin = |i, o, p: &str| candle_nn::linear(i, o, vb.pp(p)).unwrap();
        let ln = |p: &str| LayerNorm::load(16, 1e-5, vb.pp(p)).unwrap();
        let layers = (0..2)
            .map(|i| {
                let p = |s: &str| format!("layers.{i}.{s}");
                Layer {
                    ln1: ln(&p("ln1")),
                    attn: Attention {
                        q_proj: lin(16, 16, &p("attn.q_proj")),
                        k_proj: lin(16, 16, &p("attn.k_proj")),
                        v_proj: lin(16, 16, &p("attn.v_proj")),
                        o_proj: lin(16, 16, &p("attn.o_proj")),
                    },
                    ln2: ln(&p("ln2")),
                    mlp: Mlp {
                        up: lin(16, 32, &p("mlp.up")),
                        act: Gelu,
                        down: lin(32, 16, &p("mlp.down")),
                    },
                }
            })
            .collect();
        Self {
            embed: candle_nn::embedding(20, 16, vb.pp("embed")).unwrap(),
            layers,
            norm: ln("norm"),
            head: lin(16, 20, "head"),
        }
    }
}

impl HookedModel for TinyTransformer {
    fn forward_hooked(&self, ids: &Tensor, hx: &mut Hx<Self>) -> Result<Tensor> {
        let mut x = hook!(hx, self.embed(ids))?;
        for i in 0..self.layers.len() {
            x = hook!(hx, self.layers[i].forward(&x))?;
        }
        let x = hook!(hx, self.norm(&x))?;
        let _ = D::Minus1;
        hook!(hx, self.head(&x))
    }
}
