//! The latent methods against plain forwards, on the tiny and the GPT-2-small-shaped reference
//! models (random weights, `support::Setup`), and batched against one-at-a-time probe training.
//!
//! Groups `latent_tiny` (2 layers, width 64, 4 heads, vocab 101; batch 4 × 16) and
//! `latent_gpt2_small` (12 layers, 768, 12 heads, vocab 50257; batch 1 × 128), each with:
//!
//! - `forward`: `Gpt2::forward(&ids, &mut Hx::none())`; `two_forwards`: twice (the baseline of the
//!   two-pass methods);
//! - `cache_all_blocks`: `ActivationCaching::new(r"transformer\.h\.\d+")` prepared once, then
//!   `run(&td)` (every block output in the returned dict); `cache_all_blocks_prepare_run`: prepare
//!   and run each iteration;
//! - `patch_one_block`: `ActivationPatching::new(["transformer.h.0"])`, prepared (two passes);
//! - `addition_one_block`: `ActivationAddition::new(["transformer.h.0"])`, prepared (two passes);
//! - `steer_one_block`: `SteeringVectors` adding a vector at `transformer.h.0`, prepared.
//!
//! Group `probes`: `K = 12` logistic-regression probes on `[12, 2000, 768]` activations
//! (synthetic: two Gaussian classes per layer, label noise, z-scored scale; shared labels), the
//! objective of scikit-learn's `LogisticRegression(C=1)`: `batched_k12` trains all of them in one
//! `tdhook_kernels::train_logistic_probes` call (one fused pass over the activations per L-BFGS
//! step for every probe), `one_at_a_time_k12` calls it once per layer; `mean_difference_batched`
//! is the closed-form mean-difference classifier for all 12.
//!
//! Threads: candle and the probe trainer use `RAYON_NUM_THREADS` (else all physical cores); say
//! which. Without `--bench` (`cargo test -p tdhook-suite --benches`) only the tiny group and a small probe problem
//! run, once per function.

mod support;

use candle_core::{Device, Tensor};
use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::Duration;
use support::{Rng, Setup, Shape};
use tdhook::latent::{ActivationAddition, ActivationCaching, ActivationPatching, SteeringVectors};
use tdhook::prelude::*;
use tdhook_kernels::{LogisticConfig, mean_difference_probes, train_logistic_probes};

const BLOCKS: &str = r"transformer\.h\.\d+";
const ONE: &str = "transformer.h.0";

fn ids(setup: &Setup, seed: u64) -> Tensor {
    let s = &setup.shape;
    let mut rng = Rng::new(seed);
    let v: Vec<u32> = (0..s.batch * s.seq)
        .map(|_| rng.below(s.config.vocab_size) as u32)
        .collect();
    Tensor::from_vec(v, (s.batch, s.seq), &Device::Cpu).unwrap()
}

fn bench_shape(c: &mut Criterion, shape: Shape) {
    let setup = Setup::new(shape).expect("setup");
    let model = &setup.dsl;
    let cfg = &setup.shape.config;
    let b = setup.shape.batch;
    let big = setup.shape.name != "tiny";
    eprintln!(
        "[latent] {}: {} threads",
        setup.shape.name,
        support::threads()
    );

    let mut td = TensorDict::new([b]);
    td.insert("input", setup.ids.clone()).unwrap();
    let mut td_patch = td.clone();
    td_patch
        .insert(("patched", "input"), ids(&setup, 0xBAD))
        .unwrap();
    let mut td_add = TensorDict::new([b]);
    td_add
        .insert(("positive", "input"), ids(&setup, 0x9051))
        .unwrap();
    td_add
        .insert(("negative", "input"), ids(&setup, 0x4E9))
        .unwrap();
    let v = Tensor::ones(cfg.n_embd, candle_core::DType::F32, &Device::Cpu)
        .unwrap()
        .affine(0.5, 0.0)
        .unwrap();

    let mut caching = ActivationCaching::new(BLOCKS).prepare(model).unwrap();
    let mut patching = ActivationPatching::new([ONE]).prepare(model).unwrap();
    let mut addition = ActivationAddition::new([ONE]).prepare(model).unwrap();
    let mut steering = SteeringVectors::new([ONE], move |_, out| Ok(out.broadcast_add(&v)?))
        .prepare(model)
        .unwrap();

    // Sanity: the cache holds every block, the patched run differs from the corrupted one.
    let out = caching.run(&td).unwrap();
    assert_eq!(out.get_dict("cache").unwrap().len(), cfg.n_layer);
    assert!(
        patching
            .run(&td_patch)
            .unwrap()
            .contains(("patched", "output"))
    );
    assert!(addition.run(&td_add).unwrap().contains(("steer", ONE)));

    let mut group = c.benchmark_group(format!("latent_{}", setup.shape.name));
    if big {
        group
            .sample_size(10)
            .sampling_mode(SamplingMode::Flat)
            .warm_up_time(Duration::from_secs(2))
            .measurement_time(Duration::from_secs(8));
    } else {
        group
            .sample_size(40)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(4));
    }
    let fwd = |ids: &Tensor| model.forward(ids, &mut Hx::none()).unwrap();
    group.bench_function("forward", |bch| bch.iter(|| black_box(fwd(&setup.ids))));
    group.bench_function("two_forwards", |bch| {
        bch.iter(|| black_box((fwd(&setup.ids), fwd(&setup.ids))))
    });
    group.bench_function("cache_all_blocks", |bch| {
        bch.iter(|| black_box(caching.run(&td).unwrap()))
    });
    group.bench_function("cache_all_blocks_prepare_run", |bch| {
        bch.iter(|| {
            black_box(
                ActivationCaching::new(BLOCKS)
                    .prepare(model)
                    .unwrap()
                    .run(&td)
                    .unwrap(),
            )
        })
    });
    group.bench_function("patch_one_block", |bch| {
        bch.iter(|| black_box(patching.run(&td_patch).unwrap()))
    });
    group.bench_function("addition_one_block", |bch| {
        bch.iter(|| black_box(addition.run(&td_add).unwrap()))
    });
    group.bench_function("steer_one_block", |bch| {
        bch.iter(|| black_box(steering.run(&td).unwrap()))
    });
    group.finish();
}

/// Box–Muller on the support generator.
fn normal(rng: &mut Rng) -> f32 {
    let u1 = rng.unit().max(1e-300);
    let u2 = rng.unit();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

/// `[K, N, D]` activations and shared 0/1 labels `[N]`: per layer, the classes are two
/// unit-variance Gaussians whose means differ along a random direction (separation growing with
/// the layer), and 8 % of the labels are flipped, so held-out accuracy stays below 1.
fn probe_data(k: usize, n: usize, d: usize) -> (Tensor, Tensor) {
    let mut rng = Rng::new(0x9B0BE);
    let y: Vec<u8> = (0..n).map(|_| u8::from(rng.unit() < 0.5)).collect();
    let mut x = Vec::with_capacity(k * n * d);
    for layer in 0..k {
        let dir: Vec<f32> = (0..d).map(|_| normal(&mut rng)).collect();
        let norm = dir.iter().map(|v| v * v).sum::<f32>().sqrt();
        let sep = 1.0 + 1.5 * layer as f32 / k.max(1) as f32;
        for &yi in &y {
            let s = if yi == 1 { 0.5 * sep } else { -0.5 * sep };
            x.extend(dir.iter().map(|&u| normal(&mut rng) + s * u / norm));
        }
    }
    let noisy: Vec<u8> = y
        .iter()
        .map(|&v| if rng.unit() < 0.08 { 1 - v } else { v })
        .collect();
    (
        Tensor::from_vec(x, (k, n, d), &Device::Cpu).unwrap(),
        Tensor::from_vec(noisy, n, &Device::Cpu).unwrap(),
    )
}

fn bench_probes(c: &mut Criterion) {
    let (k, n, d) = if support::bench_mode() {
        (12, 2000, 768)
    } else {
        (3, 200, 32)
    };
    let (x, y) = probe_data(k, n, d);
    let cfg = LogisticConfig {
        max_iter: 1000,
        ..LogisticConfig::from_sklearn_c(1.0, n)
    };
    let layers: Vec<Tensor> = (0..k)
        .map(|i| x.narrow(0, i, 1).unwrap().contiguous().unwrap())
        .collect();
    let fit = train_logistic_probes(&x, &y, &cfg).unwrap();
    eprintln!(
        "[latent] probes [{k}, {n}, {d}]: {} threads; batched fit: iterations {:?}, converged {}/{k}, \
         train accuracy {:?}",
        support::threads(),
        fit.iterations,
        fit.converged.iter().filter(|&&c| c).count(),
        fit.probes
            .accuracy(&x, &y)
            .unwrap()
            .iter()
            .map(|a| (a * 1000.0).round() / 1000.0)
            .collect::<Vec<_>>()
    );

    let mut group = c.benchmark_group("probes");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8));
    group.bench_function(format!("batched_k{k}"), |b| {
        b.iter(|| black_box(train_logistic_probes(&x, &y, &cfg).unwrap()))
    });
    group.bench_function(format!("one_at_a_time_k{k}"), |b| {
        b.iter(|| {
            for one in &layers {
                black_box(train_logistic_probes(one, &y, &cfg).unwrap());
            }
        })
    });
    group.bench_function("mean_difference_batched", |b| {
        b.iter(|| black_box(mean_difference_probes(&x, &y).unwrap()))
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    bench_shape(c, support::tiny());
    if support::bench_mode() {
        bench_shape(c, support::gpt2_small());
    }
    bench_probes(c);
}

criterion_group!(latent, benches);
criterion_main!(latent);
