//! Shared setup of the `hooks_off` benches: the two shapes, random weights, the DSL and the
//! plain GPT-2 built from the very same tensors, and the check that their logits are identical.
#![allow(dead_code)] // each bench binary uses part of this

pub mod plain_gpt2;
pub mod stats;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use plain_gpt2::PlainGpt2;
use std::collections::HashMap;
use tdhook::Hx;
use tdhook::models::gpt2::{Gpt2, Gpt2Config};

/// A model shape and an input shape.
#[derive(Clone, Debug)]
pub struct Shape {
    /// Group name (`tiny`, `gpt2_small`).
    pub name: &'static str,
    pub config: Gpt2Config,
    pub batch: usize,
    pub seq: usize,
}

/// 2 layers, width 64, 4 heads, vocab 101; batch 4 × 16 tokens.
pub fn tiny() -> Shape {
    Shape {
        name: "tiny",
        config: Gpt2Config::new(101, 32, 64, 2, 4),
        batch: 4,
        seq: 16,
    }
}

/// GPT-2 small's shape (12 layers, 768, 12 heads, vocab 50257), random weights; batch 1 × 128.
pub fn gpt2_small() -> Shape {
    Shape {
        name: "gpt2_small",
        config: Gpt2Config::gpt2_small(),
        batch: 1,
        seq: 128,
    }
}

/// splitmix64: a tiny deterministic generator, so every run times the same weights and ids.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.unit() * n as f64) as usize
    }
}

/// Random weights under HF's names for `config`: names and shapes are those `Gpt2::new` asks a
/// `VarMap` for; values are uniform with std 0.02 (LayerNorm weights around 1).
///
/// The tensors are plain (not `Var`s): a `Var` tracks ops, which would send `LayerNorm` and
/// `softmax_last_dim` down their differentiable slow paths and record a backprop graph — not the
/// inference forward this bench is about (`Gpt2::load` gives plain tensors too).
pub fn random_weights(config: &Gpt2Config, seed: u64) -> anyhow::Result<HashMap<String, Tensor>> {
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    Gpt2::new(
        config.clone(),
        VarBuilder::from_varmap(&varmap, DType::F32, &dev),
    )?;
    let mut specs: Vec<(String, Vec<usize>)> = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(name, var)| (name.clone(), var.dims().to_vec()))
        .collect();
    specs.sort();
    let mut rng = Rng::new(seed);
    let half_width = 0.02 * 3f64.sqrt();
    let mut out = HashMap::new();
    for (name, dims) in specs {
        let n: usize = dims.iter().product();
        let is_ln_weight = name.contains(".ln_") && name.ends_with(".weight");
        let center = if is_ln_weight { 1.0 } else { 0.0 };
        let data: Vec<f32> = (0..n)
            .map(|_| (center + (2.0 * rng.unit() - 1.0) * half_width) as f32)
            .collect();
        out.insert(name, Tensor::from_vec(data, dims, &dev)?);
    }
    Ok(out)
}

/// The two models of one shape, on the same weights, and an input.
pub struct Setup {
    pub shape: Shape,
    pub dsl: Gpt2,
    pub plain: PlainGpt2,
    pub ids: Tensor,
}

impl Setup {
    /// Build both models from one `VarBuilder` over the same tensors and check that their logits
    /// are bit-identical (and equal under an empty hook context).
    pub fn new(shape: Shape) -> anyhow::Result<Self> {
        let dev = Device::Cpu;
        let weights = random_weights(&shape.config, 0x7D_400C)?;
        let vb = VarBuilder::from_tensors(weights, DType::F32, &dev);
        let dsl = Gpt2::new(shape.config.clone(), vb.clone())?;
        let plain = PlainGpt2::new(&shape.config, vb)?;
        let mut rng = Rng::new(0x1D5);
        let ids: Vec<u32> = (0..shape.batch * shape.seq)
            .map(|_| rng.below(shape.config.vocab_size) as u32)
            .collect();
        let ids = Tensor::from_vec(ids, (shape.batch, shape.seq), &dev)?;
        let setup = Setup {
            shape,
            dsl,
            plain,
            ids,
        };
        setup.check_identical()?;
        Ok(setup)
    }

    pub fn forward_plain(&self) -> candle_core::Result<Tensor> {
        self.plain.forward(&self.ids)
    }

    pub fn forward_dsl(&self) -> candle_core::Result<Tensor> {
        self.dsl.forward(&self.ids, &mut Hx::none())
    }

    /// Fails unless plain and DSL (hooks off) logits are equal bit for bit.
    pub fn check_identical(&self) -> anyhow::Result<()> {
        let a = self.forward_plain()?;
        let b = self.forward_dsl()?;
        let want = [
            self.shape.batch,
            self.shape.seq,
            self.shape.config.vocab_size,
        ];
        anyhow::ensure!(a.dims() == want, "plain logits have shape {:?}", a.dims());
        anyhow::ensure!(b.dims() == want, "dsl logits have shape {:?}", b.dims());
        let a = a.flatten_all()?.to_vec1::<f32>()?;
        let b = b.flatten_all()?.to_vec1::<f32>()?;
        let differing = a
            .iter()
            .zip(&b)
            .filter(|(x, y)| x.to_bits() != y.to_bits())
            .count();
        anyhow::ensure!(
            differing == 0,
            "{}: plain and DSL logits differ in {differing} of {} elements",
            self.shape.name,
            a.len()
        );
        anyhow::ensure!(
            a.iter().all(|x| x.is_finite()),
            "{}: non-finite logits",
            self.shape.name
        );
        Ok(())
    }
}

/// `--bench` is what `cargo bench` passes; without it (`cargo test --benches`) run a smoke test.
pub fn bench_mode() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// Threads candle's CPU kernels use (`RAYON_NUM_THREADS`, else the physical cores).
pub fn threads() -> usize {
    candle_core::utils::get_num_threads()
}
