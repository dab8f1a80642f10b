//! Times batched logistic-probe training on a `[K, N, D]` synthetic problem shaped like the
//! 12 GPT-2-small layers × 2000 samples × 768 features of DESIGN.md's Python baseline
//! (scikit-learn 3.47 s, torch L-BFGS 0.82 s).
//!
//! `cargo run -p tdhook-kernels --release --example probe_timing [K N D]`

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use tdhook_kernels::{
    LogisticConfig, logistic_loss_grad, mean_difference_probes, ridge_probes, train_logistic_probes,
};

fn main() -> candle_core::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (k, n, d) = match args.as_slice() {
        [k, n, d] => (*k, *n, *d),
        _ => (12, 2000, 768),
    };
    let dev = Device::Cpu;
    // planted direction per probe, z-scored-like noise
    let y = Tensor::rand(0f32, 1f32, n, &dev)?
        .ge(0.5)?
        .to_dtype(DType::F32)?;
    let dirs = Tensor::randn(0f32, 1f32, (k, 1, d), &dev)?;
    let sign = ((&y * 2.0)? - 1.0)?.reshape((1, n, 1))?;
    let strength = Tensor::arange(0u32, k as u32, &dev)?
        .to_dtype(DType::F32)?
        .affine(0.01, 0.02)?
        .reshape((k, 1, 1))?;
    let x = (Tensor::randn(0f32, 1f32, (k, n, d), &dev)?
        + sign.broadcast_mul(&strength)?.broadcast_mul(&dirs)?)?;
    let w = Tensor::zeros((k, d), DType::F32, &dev)?;
    let b = Tensor::zeros(k, DType::F32, &dev)?;
    let l2 = 1.0 / n as f64;
    for _ in 0..2 {
        logistic_loss_grad(&x, &y, &w, &b, l2)?;
    }
    let reps = 10;
    let t0 = Instant::now();
    for _ in 0..reps {
        logistic_loss_grad(&x, &y, &w, &b, l2)?;
    }
    let pass = t0.elapsed().as_secs_f64() / reps as f64;
    let gb = (k * n * d * 4) as f64 / 1e9;
    println!(
        "[{k}, {n}, {d}] fused pass: {:.2} ms ({:.1} GB/s of X)",
        pass * 1e3,
        gb / pass
    );
    // reference: one plain read pass over X (candle's sum, a memory-bound reduction)
    x.sum_all()?;
    let t0 = Instant::now();
    for _ in 0..reps {
        x.sum_all()?.to_scalar::<f32>()?;
    }
    let rd = t0.elapsed().as_secs_f64() / reps as f64;
    println!(
        "reference x.sum_all(): {:.2} ms ({:.1} GB/s)",
        rd * 1e3,
        gb / rd
    );
    let t0 = Instant::now();
    let fit = train_logistic_probes(
        &x,
        &y,
        &LogisticConfig {
            l2,
            ..Default::default()
        },
    )?;
    let t = t0.elapsed().as_secs_f64();
    let acc = fit.probes.accuracy(&x, &y)?;
    println!(
        "train_logistic_probes (λ = 1/N, tol 1e-4): {:.3} s, {} passes, iterations {:?}, converged {}/{k}, train acc {:.3}..{:.3}",
        t,
        fit.passes,
        fit.iterations,
        fit.converged.iter().filter(|&&c| c).count(),
        acc.iter().cloned().fold(1.0, f32::min),
        acc.iter().cloned().fold(0.0, f32::max)
    );
    let t0 = Instant::now();
    mean_difference_probes(&x, &y)?;
    println!(
        "mean_difference_probes: {:.1} ms",
        t0.elapsed().as_secs_f64() * 1e3
    );
    let t0 = Instant::now();
    ridge_probes(&x, &y, 1.0, true)?;
    println!("ridge_probes: {:.3} s", t0.elapsed().as_secs_f64());
    Ok(())
}
