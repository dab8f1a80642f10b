//! Hook your own model: `#[derive(Hookable)]` on a hand-written candle model.
//!
//! A small residual MLP (an input projection, a `Vec` of blocks each holding a nested MLP struct
//! and a `HookPoint` marker for the residual stream, and an output head) becomes a tree of hook
//! points with dotted paths. The example lists them, shows `#[hook(skip)]` (a config field) and
//! `#[hook(rename = "...")]` (a field whose hook path differs from its Rust name), implements
//! `HookedModel` so the latent methods can run it, caches activations by regex and by typed path
//! (`TinyNet::path().blocks(1).mlp()`), and replaces an output with a raw `HookSet` hook.
//!
//! Run it with:
//!
//! ```text
//! cargo run -p tdhook-suite --example own_model
//! ```

use anyhow::{Result, ensure};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{LayerNorm, Linear, VarBuilder, VarMap};
use tdhook::latent::ActivationCaching;
use tdhook::model::HookedModel;
use tdhook::prelude::*;

/// Plain settings: no module, so no hook point (`#[hook(skip)]` on the field that holds it).
#[derive(Clone, Debug)]
struct Config {
    d_in: usize,
    d_model: usize,
    d_hidden: usize,
    d_out: usize,
    n_blocks: usize,
}

/// The MLP inside each block: paths `blocks.<i>.mlp.up` and `blocks.<i>.mlp.down`.
#[derive(Hookable)]
struct Mlp {
    up: Linear,
    down: Linear,
}

impl Mlp {
    fn forward(&self, x: &Tensor, hx: &mut Hx<Self>) -> candle_core::Result<Tensor> {
        let h = hook!(hx, self.up(x))?.gelu()?;
        hook!(hx, self.down(&h))
    }
}

/// One pre-norm residual block; `hook_resid` is an identity point on the residual stream.
#[derive(Hookable)]
struct Block {
    ln: LayerNorm,
    mlp: Mlp,
    hook_resid: HookPoint,
}

impl Block {
    fn forward(&self, x: &Tensor, hx: &mut Hx<Self>) -> candle_core::Result<Tensor> {
        let h = hook!(hx, self.ln(x))?;
        // A nested Hookable: `hook!` hands `Mlp::forward` its own `Hx<Mlp>`.
        let x = (x + hook!(hx, self.mlp.forward(&h))?)?;
        hook!(hx, self.hook_resid(&x))
    }
}

#[derive(Hookable)]
struct TinyNet {
    /// Hooked as `embed`, not `input_proj`.
    #[hook(rename = "embed")]
    input_proj: Linear,
    blocks: Vec<Block>,
    head: Linear,
    #[hook(skip)]
    config: Config,
}

impl TinyNet {
    fn new(config: Config, vb: VarBuilder) -> candle_core::Result<Self> {
        let c = &config;
        let blocks = (0..c.n_blocks)
            .map(|i| {
                let vb = vb.pp("blocks").pp(i);
                Ok(Block {
                    ln: candle_nn::layer_norm(c.d_model, 1e-5, vb.pp("ln"))?,
                    mlp: Mlp {
                        up: candle_nn::linear(c.d_model, c.d_hidden, vb.pp("mlp.up"))?,
                        down: candle_nn::linear(c.d_hidden, c.d_model, vb.pp("mlp.down"))?,
                    },
                    hook_resid: HookPoint,
                })
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            input_proj: candle_nn::linear(c.d_in, c.d_model, vb.pp("embed"))?,
            blocks,
            head: candle_nn::linear(c.d_model, c.d_out, vb.pp("head"))?,
            config,
        })
    }

    /// `x: [B, d_in]` → `[B, d_out]`.
    fn forward(&self, x: &Tensor, hx: &mut Hx<Self>) -> candle_core::Result<Tensor> {
        // The macro names the Rust field; the hook path is the renamed `embed`.
        let mut x = hook!(hx, self.input_proj(x))?;
        for i in 0..self.blocks.len() {
            x = hook!(hx, self.blocks[i].forward(&x))?;
        }
        hook!(hx, self.head(&x))
    }
}

/// What the latent methods (caching, patching, steering, probing) call.
impl HookedModel for TinyNet {
    fn forward_hooked(&self, input: &Tensor, hx: &mut Hx<'_, Self>) -> candle_core::Result<Tensor> {
        self.forward(input, hx)
    }
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    Ok((a - b)?.abs()?.max_all()?.to_scalar::<f32>()?)
}

fn main() -> Result<()> {
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let config = Config {
        d_in: 4,
        d_model: 8,
        d_hidden: 16,
        d_out: 3,
        n_blocks: 2,
    };
    let model = TinyNet::new(config, vb)?;
    let c = &model.config;
    println!(
        "TinyNet: d_in {} → d_model {} ({} blocks, MLP width {}) → d_out {}",
        c.d_in, c.d_model, c.n_blocks, c.d_hidden, c.d_out
    );

    // ---- 1. The hook points --------------------------------------------------------------
    println!("\nhook points (path, class, kind):");
    for p in model.hook_points() {
        println!("  {:<22} {:<10} {:?}", p.path, p.class, p.kind);
    }
    let paths = model.hook_paths();
    ensure!(
        paths.iter().any(|p| p == "embed"),
        "renamed field is `embed`"
    );
    ensure!(
        !paths
            .iter()
            .any(|p| p.contains("input_proj") || p.contains("config"))
    );
    ensure!(
        paths.len() == 2 + 2 * 6 + 1,
        "embed, blocks, 2 × 6 block points, head"
    );
    let typed = TinyNet::path().blocks(1).mlp();
    ensure!(typed.as_str() == "blocks.1.mlp");
    ensure!(TinyNet::path().input_proj().as_str() == "embed");

    let x = Tensor::randn(0f32, 1.0, (5, c.d_in), &dev)?;
    let plain = model.forward(&x, &mut Hx::none())?;

    // ---- 2. ActivationCaching by regex ---------------------------------------------------
    let mut caching = ActivationCaching::new(r"blocks\.\d+\.hook_resid").prepare(&model)?;
    let (out, cache) = caching.cache(&x)?;
    println!("\ncache of `blocks\\.\\d+\\.hook_resid`:");
    let keys: Vec<String> = cache.keys(true).iter().map(|k| k.to_string()).collect();
    for k in &keys {
        println!("  {k:<20} {:?}", cache.tensor(k.as_str())?.dims());
    }
    ensure!(keys == ["blocks.0.hook_resid", "blocks.1.hook_resid"]);
    ensure!(cache.tensor("blocks.1.hook_resid")?.dims() == [5, c.d_model]);
    ensure!(
        max_abs_diff(&out, &plain)? == 0.0,
        "reading hooks change nothing"
    );
    // The head applied to the last residual stream is the model's output.
    let via_cache = model.head.forward(cache.tensor("blocks.1.hook_resid")?)?;
    let diff = max_abs_diff(&via_cache, &plain)?;
    println!("  head(cache[blocks.1.hook_resid]) vs output: max |diff| = {diff:.1e}");
    ensure!(diff < 1e-6);

    // ---- 3. ActivationCaching by typed path ----------------------------------------------
    let mut caching = ActivationCaching::new(TinyNet::path().blocks(1).mlp()).prepare(&model)?;
    let (_, cache) = caching.cache(&x)?;
    let mlp_out = cache.tensor(typed.as_str())?;
    println!(
        "\ncache of typed path {}: {:?}",
        typed.as_str(),
        mlp_out.dims()
    );
    ensure!(cache.keys(true).len() == 1 && mlp_out.dims() == [5, c.d_model]);

    // ---- 4. A raw HookSet hook that replaces an output -----------------------------------
    // Zero-ablate block 1's MLP: block 1 then passes its input through unchanged, so the
    // output must be the head applied to block 0's residual stream.
    let mut resid0 = None;
    let mut fired = Vec::new();
    let ablated = {
        let mut hooks = HookSet::new(&model);
        hooks.read("blocks.0.hook_resid", Direction::Fwd, |_, t| {
            resid0 = Some(t.clone());
            Ok(())
        })?;
        hooks.add(typed.clone(), Direction::Fwd, |ev, t| {
            fired.push(format!(
                "{} ({}, call {})",
                ev.path, ev.direction, ev.occurrence
            ));
            Ok(Some(t.zeros_like()?))
        })?;
        hooks.run(|hx| model.forward(&x, hx))?
    };
    let resid0 = resid0.expect("the read hook fired");
    let expected = model.head.forward(&resid0)?;
    let diff = max_abs_diff(&ablated, &expected)?;
    println!(
        "\nzero-ablating {}: hook fired at {fired:?}",
        typed.as_str()
    );
    println!(
        "  output moved by {:.3} (max |diff| vs clean); head(resid after block 0) vs ablated output: {diff:.1e}",
        max_abs_diff(&ablated, &plain)?
    );
    ensure!(fired.len() == 1);
    ensure!(diff < 1e-6);
    ensure!(
        max_abs_diff(&ablated, &plain)? > 0.0,
        "the ablation changed the output"
    );

    println!("\nall checks passed");
    Ok(())
}
