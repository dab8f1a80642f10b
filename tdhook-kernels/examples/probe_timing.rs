//! Times batched logistic-probe training: on a `[K, N, D]` synthetic problem shaped like the
//! 12 GPT-2-small layers × 2000 samples × 768 features of DESIGN.md's Python baseline, or on
//! a safetensors file holding `x_train [K, N, D]`, `y_train [N]` (and optionally `x_test`,
//! `y_test`), such as the one `scripts/bench_python.py --workdir DIR` leaves in
//! `DIR/probe.safetensors`.
//!
//! ```text
//! cargo run -p tdhook-kernels --release --example probe_timing [K N D]
//! cargo run -p tdhook-kernels --release --example probe_timing -- --file probe.safetensors [--c 1.0] [--logistic-only]
//! ```

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use tdhook_kernels::{
    LogisticConfig, logistic_loss_grad, mean_difference_probes, ridge_probes, train_logistic_probes,
};

struct Data {
    x: Tensor,
    y: Tensor,
    test: Option<(Tensor, Tensor)>,
}

fn synthetic(k: usize, n: usize, d: usize, dev: &Device) -> candle_core::Result<Data> {
    // planted direction per probe, z-scored-like noise
    let y = Tensor::rand(0f32, 1f32, n, dev)?
        .ge(0.5)?
        .to_dtype(DType::F32)?;
    let dirs = Tensor::randn(0f32, 1f32, (k, 1, d), dev)?;
    let sign = ((&y * 2.0)? - 1.0)?.reshape((1, n, 1))?;
    let strength = Tensor::arange(0u32, k as u32, dev)?
        .to_dtype(DType::F32)?
        .affine(0.01, 0.02)?
        .reshape((k, 1, 1))?;
    let x = (Tensor::randn(0f32, 1f32, (k, n, d), dev)?
        + sign.broadcast_mul(&strength)?.broadcast_mul(&dirs)?)?;
    Ok(Data { x, y, test: None })
}

fn from_file(path: &str, dev: &Device) -> candle_core::Result<Data> {
    let mut t = candle_core::safetensors::load(path, dev)?;
    let mut take = |name: &str| {
        t.remove(name)
            .ok_or_else(|| candle_core::Error::Msg(format!("{path} has no tensor `{name}`")))
    };
    let (x, y) = (take("x_train")?, take("y_train")?);
    let test = match (take("x_test"), take("y_test")) {
        (Ok(xt), Ok(yt)) => Some((xt, yt)),
        _ => None,
    };
    Ok(Data { x, y, test })
}

fn main() -> candle_core::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
    };
    let c: Option<f64> = flag("--c").and_then(|v| v.parse().ok());
    let dev = Device::Cpu;
    let data = match flag("--file") {
        Some(path) => from_file(path, &dev)?,
        None => {
            let dims: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
            let (k, n, d) = match dims.as_slice() {
                [k, n, d] => (*k, *n, *d),
                _ => (12, 2000, 768),
            };
            synthetic(k, n, d, &dev)?
        }
    };
    let (x, y) = (&data.x, &data.y);
    let (k, n, d) = x.dims3()?;
    let w = Tensor::zeros((k, d), DType::F32, &dev)?;
    let b = Tensor::zeros(k, DType::F32, &dev)?;
    let l2 = 1.0 / (c.unwrap_or(1.0) * n as f64);
    for _ in 0..2 {
        logistic_loss_grad(x, y, &w, &b, l2)?;
    }
    let reps = 10;
    let t0 = Instant::now();
    for _ in 0..reps {
        logistic_loss_grad(x, y, &w, &b, l2)?;
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
    let cfg = LogisticConfig {
        l2,
        ..Default::default()
    };
    let mut times = Vec::new();
    let mut fit = None;
    for _ in 0..5 {
        let t0 = Instant::now();
        fit = Some(train_logistic_probes(x, y, &cfg)?);
        times.push(t0.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let fit = fit.expect("five fits ran");
    let acc = match &data.test {
        Some((xt, yt)) => fit.probes.accuracy(xt, yt)?,
        None => fit.probes.accuracy(x, y)?,
    };
    println!(
        "train_logistic_probes (λ = {l2:.3e}, tol 1e-4): median of 5 {:.4} s, {} passes, iterations {:?}, converged {}/{k}, {} acc {:.4}..{:.4} (mean {:.4})",
        times[2],
        fit.passes,
        fit.iterations,
        fit.converged.iter().filter(|&&c| c).count(),
        if data.test.is_some() {
            "held-out"
        } else {
            "train"
        },
        acc.iter().cloned().fold(1.0, f32::min),
        acc.iter().cloned().fold(0.0, f32::max),
        acc.iter().sum::<f32>() / k as f32,
    );
    if args.iter().any(|a| a == "--logistic-only") {
        return Ok(());
    }
    let t0 = Instant::now();
    mean_difference_probes(x, y)?;
    println!(
        "mean_difference_probes: {:.1} ms",
        t0.elapsed().as_secs_f64() * 1e3
    );
    let t0 = Instant::now();
    ridge_probes(x, y, 1.0, true)?;
    println!("ridge_probes: {:.3} s", t0.elapsed().as_secs_f64());
    Ok(())
}
