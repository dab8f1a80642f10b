//! tdhook-kernels: each fused kernel against the unfused candle op chain it replaces.
//!
//! Groups (f32 unless named):
//! - `steer_all/{shape}`: `x += α·v` on every position — `fused_inplace` (`steer_add_`),
//!   `fused_new` (`steer_add`), `chain` (`x.broadcast_add(α·v)`);
//! - `steer_per_row/{shape}`: per-request vectors and coefficients on the last 4 positions —
//!   fused in place vs `index_select` + mask + `broadcast_mul` + `broadcast_add`;
//! - `patch_heads/{shape}`: copy 3 of 12 heads on half the positions from a clean run —
//!   fused in place vs `slice_assign` of the narrowed source;
//! - `ablate/{shape}`, `norm_steer/{shape}`: fused in place vs the textbook chains;
//! - `probes`: on `[12, 2000, 768]` (12 layers × 2000 samples × GPT-2-small width):
//!   `fused_pass` (`logistic_loss_grad`: loss + gradient of 12 probes, one pass) vs `chain_pass`
//!   (matmul logits, sigmoid, matmul gradient); `train_logistic` (L-BFGS to tol 1e-4),
//!   `mean_difference`, `ridge`.
//!
//! Shapes: `tiny` = [4, 16, 64] (tiny GPT-2 block output), `gpt2s` = [8, 128, 768].
//! With `--features cuda` and a GPU present the same groups also run on the GPU (`gpu_*`,
//! shapes `gpt2s` and `large` = [16, 1024, 4096]), each iteration synchronised.
//!
//! `cargo bench -p tdhook-suite --bench kernels -- --bandwidth` (GPU builds) prints instead a markdown table of
//! the bandwidth each fused kernel reaches against a device-to-device copy of the same bytes.
//! Threads: candle's and these kernels' CPU paths use rayon (`RAYON_NUM_THREADS`, else all
//! cores); the kernels stay on one thread below 64 Ki elements.

use std::hint::black_box;
use std::time::Duration;

use candle_core::{D, DType, Device, IndexOp, Tensor};
use criterion::{BenchmarkId, Criterion};
use tdhook_kernels::{
    LogisticConfig, Positions, Rows, ablate_, head_channels, logistic_loss_grad,
    mean_difference_probes, norm_preserving_steer_, patch, patch_, ridge_probes, steer_add,
    steer_add_, train_logistic_probes,
};

type Res<T> = candle_core::Result<T>;

fn rand_vec(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            ((s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn rand_t(seed: u64, shape: &[usize], dev: &Device) -> Tensor {
    Tensor::from_vec(rand_vec(seed, shape.iter().product()), shape, dev).unwrap()
}

fn sync(dev: &Device) {
    dev.synchronize().unwrap();
}

/// The unfused chains.
mod chain {
    use super::*;

    pub fn steer_all(x: &Tensor, v: &Tensor, alpha: f64) -> Res<Tensor> {
        x.broadcast_add(&v.affine(alpha, 0.0)?)
    }

    pub fn steer_per_row(
        x: &Tensor,
        vecs: &Tensor,
        idx: &Tensor,
        coef_mask: &Tensor,
    ) -> Res<Tensor> {
        // coef_mask: [B, T, 1] = coef[b]·[t selected]; idx: [B] u32
        let sel = vecs.index_select(idx, 0)?.unsqueeze(1)?; // [B, 1, D]
        x.broadcast_add(&coef_mask.broadcast_mul(&sel)?)
    }

    pub fn patch(
        x: &Tensor,
        src: &Tensor,
        pos: std::ops::Range<usize>,
        ch: std::ops::Range<usize>,
    ) -> Res<Tensor> {
        let b = x.dim(0)?;
        let piece = src.i((.., pos.clone(), ch.clone()))?.contiguous()?;
        x.slice_assign(&[0..b, pos, ch], &piece)
    }

    pub fn ablate(x: &Tensor, u: &Tensor) -> Res<Tensor> {
        let uh = u.broadcast_div(&u.sqr()?.sum_all()?.sqrt()?)?;
        x - x
            .broadcast_mul(&uh)?
            .sum_keepdim(D::Minus1)?
            .broadcast_mul(&uh)?
    }

    pub fn norm_steer(x: &Tensor, v: &Tensor, alpha: f64) -> Res<Tensor> {
        let y = x.broadcast_add(&v.affine(alpha, 0.0)?)?;
        let nx = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
        let ny = y.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
        y.broadcast_mul(&(nx / ny)?)
    }

    /// Penalised logistic loss and gradient, the candle way (two passes over x).
    pub fn logistic_pass(
        x: &Tensor,
        y: &Tensor,
        w: &Tensor,
        b: &Tensor,
        l2: f64,
    ) -> Res<(Tensor, Tensor, Tensor)> {
        let n = x.dim(1)? as f64;
        let z = x
            .matmul(&w.unsqueeze(2)?)?
            .squeeze(2)?
            .broadcast_add(&b.unsqueeze(1)?)?; // [K, N]
        let yb = y.unsqueeze(0)?.broadcast_as(z.shape())?;
        let sp = (z.relu()? + z.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?)?;
        let loss = ((sp - (&z * &yb)?)?.sum(1)? / n)?.add(&(w.sqr()?.sum(1)? * (0.5 * l2))?)?;
        let r = (candle_nn_free_sigmoid(&z)? - yb)?; // [K, N]
        let gw = (r.unsqueeze(1)?.matmul(x)?.squeeze(1)? / n)?.add(&(w * l2)?)?;
        let gb = (r.sum(1)? / n)?;
        Ok((loss, gw, gb))
    }

    fn candle_nn_free_sigmoid(z: &Tensor) -> Res<Tensor> {
        (z.neg()?.exp()? + 1.0)?.recip()
    }
}

struct Shape3 {
    name: &'static str,
    b: usize,
    t: usize,
    d: usize,
}

const CPU_SHAPES: [Shape3; 2] = [
    Shape3 {
        name: "tiny",
        b: 4,
        t: 16,
        d: 64,
    },
    Shape3 {
        name: "gpt2s",
        b: 8,
        t: 128,
        d: 768,
    },
];

fn activation_groups(c: &mut Criterion, dev: &Device, prefix: &str, shapes: &[Shape3]) {
    for s in shapes {
        let (b, t, d) = (s.b, s.t, s.d);
        let big = b * t * d > 1 << 20;
        let x = rand_t(1, &[b, t, d], dev);
        let v = rand_t(2, &[d], dev);
        let alpha = 0.5;

        let mut g = c.benchmark_group(format!("{prefix}steer_all"));
        if big {
            g.sample_size(30);
        }
        g.bench_function(BenchmarkId::new("fused_inplace", s.name), |bn| {
            bn.iter(|| {
                steer_add_(&x, &v, alpha, &Positions::All, &Rows::All).unwrap();
                sync(dev);
            })
        });
        g.bench_function(BenchmarkId::new("fused_new", s.name), |bn| {
            bn.iter(|| {
                black_box(steer_add(&x, &v, alpha, &Positions::All, &Rows::All).unwrap());
                sync(dev);
            })
        });
        g.bench_function(BenchmarkId::new("chain", s.name), |bn| {
            bn.iter(|| {
                black_box(chain::steer_all(&x, &v, alpha).unwrap());
                sync(dev);
            })
        });
        g.finish();

        // per-request: 3 vectors, every other row steered, last 4 positions
        let vecs = rand_t(3, &[3, d], dev);
        let rows = Rows::per_row((0..b).map(|i| (i % 2 == 0).then_some((i % 3, 1.0 + i as f32))));
        let pos = Positions::last(4, t);
        let idx = Tensor::new((0..b).map(|i| (i % 3) as u32).collect::<Vec<_>>(), dev).unwrap();
        let cm: Vec<f32> = (0..b * t)
            .map(|r| {
                let (bb, tt) = (r / t, r % t);
                if bb % 2 == 0 && tt + 4 >= t {
                    1.0 + bb as f32
                } else {
                    0.0
                }
            })
            .collect();
        let cm = Tensor::from_vec(cm, (b, t, 1), dev).unwrap();
        let mut g = c.benchmark_group(format!("{prefix}steer_per_row"));
        if big {
            g.sample_size(30);
        }
        g.bench_function(BenchmarkId::new("fused_inplace", s.name), |bn| {
            bn.iter(|| {
                steer_add_(&x, &vecs, 1.0, &pos, &rows).unwrap();
                sync(dev);
            })
        });
        g.bench_function(BenchmarkId::new("chain", s.name), |bn| {
            bn.iter(|| {
                black_box(chain::steer_per_row(&x, &vecs, &idx, &cm).unwrap());
                sync(dev);
            })
        });
        g.finish();

        // patch 3 of 12 heads on half the positions
        let src = rand_t(4, &[b, t, d], dev);
        let hd = (d / 12).max(1);
        let ch = head_channels(2..5, hd);
        let ch = ch.start.min(d)..ch.end.min(d);
        let prange = t / 2..t;
        let mut g = c.benchmark_group(format!("{prefix}patch_heads"));
        if big {
            g.sample_size(30);
        }
        g.bench_function(BenchmarkId::new("fused_inplace", s.name), |bn| {
            bn.iter(|| {
                patch_(
                    &x,
                    &src,
                    &Positions::Range(prange.clone()),
                    Some(ch.clone()),
                    1.0,
                )
                .unwrap();
                sync(dev);
            })
        });
        // What ActivationPatching::positions / heads run: a new (differentiable) tensor.
        g.bench_function(BenchmarkId::new("fused_new", s.name), |bn| {
            bn.iter(|| {
                black_box(
                    patch(
                        &x,
                        &src,
                        &Positions::Range(prange.clone()),
                        Some(ch.clone()),
                        1.0,
                    )
                    .unwrap(),
                );
                sync(dev);
            })
        });
        g.bench_function(BenchmarkId::new("chain", s.name), |bn| {
            bn.iter(|| {
                black_box(chain::patch(&x, &src, prange.clone(), ch.clone()).unwrap());
                sync(dev);
            })
        });
        g.finish();

        for (name, fused, unfused) in [
            (
                "ablate",
                Box::new(|| ablate_(&x, &v).unwrap()) as Box<dyn Fn()>,
                Box::new(|| {
                    black_box(chain::ablate(&x, &v).unwrap());
                }) as Box<dyn Fn()>,
            ),
            (
                "norm_steer",
                Box::new(|| norm_preserving_steer_(&x, &v, alpha).unwrap()),
                Box::new(|| {
                    black_box(chain::norm_steer(&x, &v, alpha).unwrap());
                }),
            ),
        ] {
            let mut g = c.benchmark_group(format!("{prefix}{name}"));
            if big {
                g.sample_size(30);
            }
            g.bench_function(BenchmarkId::new("fused_inplace", s.name), |bn| {
                bn.iter(|| {
                    fused();
                    sync(dev);
                })
            });
            g.bench_function(BenchmarkId::new("chain", s.name), |bn| {
                bn.iter(|| {
                    unfused();
                    sync(dev);
                })
            });
            g.finish();
        }
    }
}

/// `[K, N, D]` probe data: a planted direction per probe plus uniform noise.
fn probe_data(k: usize, n: usize, d: usize, dev: &Device) -> (Tensor, Tensor) {
    let y: Vec<f32> = rand_vec(7, n)
        .iter()
        .map(|&r| (r > 0.0) as u8 as f32)
        .collect();
    let mut x = rand_vec(8, k * n * d);
    let dirs = rand_vec(9, k * d);
    for kk in 0..k {
        let s = 0.02 + 0.01 * kk as f32;
        for i in 0..n {
            let sg = if y[i] == 1.0 { s } else { -s };
            for j in 0..d {
                x[(kk * n + i) * d + j] = x[(kk * n + i) * d + j] * 1.7 + sg * dirs[kk * d + j];
            }
        }
    }
    (
        Tensor::from_vec(x, (k, n, d), dev).unwrap(),
        Tensor::from_vec(y, n, dev).unwrap(),
    )
}

fn probe_groups(c: &mut Criterion, dev: &Device, prefix: &str) {
    let (k, n, d) = (12, 2000, 768);
    let (x, y) = probe_data(k, n, d, dev);
    let l2 = 1.0 / n as f64;
    let w = rand_t(10, &[k, d], dev).affine(0.01, 0.0).unwrap();
    let b = Tensor::zeros(k, DType::F32, dev).unwrap();
    let mut g = c.benchmark_group(format!("{prefix}probes"));
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    g.bench_function("fused_pass", |bn| {
        bn.iter(|| {
            black_box(logistic_loss_grad(&x, &y, &w, &b, l2).unwrap());
            sync(dev);
        })
    });
    g.bench_function("chain_pass", |bn| {
        bn.iter(|| {
            black_box(chain::logistic_pass(&x, &y, &w, &b, l2).unwrap());
            sync(dev);
        })
    });
    let cfg = LogisticConfig {
        l2,
        ..Default::default()
    };
    let fit = train_logistic_probes(&x, &y, &cfg).unwrap();
    let acc = fit.probes.accuracy(&x, &y).unwrap();
    eprintln!(
        "[kernels] {prefix}train_logistic [12, 2000, 768], λ = 1/N, tol 1e-4: {} passes, iterations {:?}, \
         train accuracy {:.3}..{:.3}, converged {}/{}",
        fit.passes,
        fit.iterations,
        acc.iter().cloned().fold(f32::INFINITY, f32::min),
        acc.iter().cloned().fold(0.0, f32::max),
        fit.converged.iter().filter(|&&c| c).count(),
        k
    );
    g.bench_function("train_logistic", |bn| {
        bn.iter(|| {
            black_box(train_logistic_probes(&x, &y, &cfg).unwrap());
            sync(dev);
        })
    });
    g.bench_function("mean_difference", |bn| {
        bn.iter(|| {
            black_box(mean_difference_probes(&x, &y).unwrap());
            sync(dev);
        })
    });
    g.bench_function("ridge", |bn| {
        bn.iter(|| {
            black_box(ridge_probes(&x, &y, 1.0, true).unwrap());
            sync(dev);
        })
    });
    g.finish();
}

#[cfg(feature = "cuda")]
mod gpu {
    use super::*;
    use std::time::Instant;

    pub fn device() -> Option<Device> {
        match Device::new_cuda(0) {
            Ok(d) => Some(d),
            Err(e) => {
                eprintln!(
                    "[kernels] SKIP GPU benches: no CUDA device ({})",
                    e.to_string().lines().next().unwrap_or("")
                );
                None
            }
        }
    }

    /// Median seconds per call of `f` (synchronised), after warm-up.
    fn time(dev: &Device, reps: usize, mut f: impl FnMut()) -> f64 {
        for _ in 0..3 {
            f();
        }
        sync(dev);
        let mut ts = Vec::new();
        for _ in 0..reps {
            let t0 = Instant::now();
            f();
            sync(dev);
            ts.push(t0.elapsed().as_secs_f64());
        }
        ts.sort_by(|a, b| a.partial_cmp(b).unwrap());
        ts[ts.len() / 2]
    }

    /// Device-to-device copy of `bytes` bytes (cudarc through candle).
    fn copy_time(dev: &Device, n_f32: usize) -> f64 {
        use candle_core::Storage;
        let src = Tensor::zeros(n_f32, DType::F32, dev).unwrap();
        let Device::Cuda(cd) = dev else {
            unreachable!()
        };
        let mut dst = unsafe { cd.alloc::<f32>(n_f32).unwrap() };
        let (st, _) = src.storage_and_layout();
        let Storage::Cuda(cs) = &*st else {
            unreachable!()
        };
        let s = cs.as_cuda_slice::<f32>().unwrap();
        time(dev, 20, || cd.memcpy_dtod(s, &mut dst).unwrap())
    }

    /// Markdown table: bandwidth of each fused kernel (and its chain) against a D2D copy.
    pub fn bandwidth_report() {
        let Some(dev) = device() else { return };
        let name = format!("{dev:?}");
        for (dt, label) in [(DType::F32, "f32"), (DType::BF16, "bf16")] {
            let (b, t, d) = (16usize, 1024usize, 4096usize);
            let n = b * t * d;
            let es = dt.size_in_bytes();
            let x = rand_t(1, &[b, t, d], &dev).to_dtype(dt).unwrap();
            let src = rand_t(2, &[b, t, d], &dev).to_dtype(dt).unwrap();
            let v = rand_t(3, &[d], &dev);
            let copy = copy_time(&dev, n * es / 4);
            let copy_gbs = 2.0 * (n * es) as f64 / copy / 1e9;
            println!("\n### {label} activations [{b}, {t}, {d}] on {name}\n");
            println!(
                "device-to-device copy of {:.0} MiB: {:.1} µs, {:.0} GB/s (read + write)\n",
                (n * es) as f64 / 1048576.0,
                copy * 1e6,
                copy_gbs
            );
            println!(
                "| kernel | bytes moved | fused µs | fused GB/s | % of copy | chain µs | chain / fused |"
            );
            println!("|---|---|---|---|---|---|---|");
            let vd = v.to_dtype(dt).unwrap();
            let rows: Vec<(&str, f64, Box<dyn FnMut()>, Box<dyn FnMut()>)> = vec![
                (
                    "steer_add_ (all positions)",
                    2.0,
                    Box::new(|| steer_add_(&x, &v, 0.5, &Positions::All, &Rows::All).unwrap()),
                    Box::new(|| {
                        black_box(chain::steer_all(&x, &vd, 0.5).unwrap());
                    }),
                ),
                (
                    "steer_add (new tensor)",
                    2.0,
                    Box::new(|| {
                        black_box(steer_add(&x, &v, 0.5, &Positions::All, &Rows::All).unwrap());
                    }),
                    Box::new(|| {
                        black_box(chain::steer_all(&x, &vd, 0.5).unwrap());
                    }),
                ),
                (
                    "patch_ (all, α = 0.5)",
                    3.0,
                    Box::new(|| patch_(&x, &src, &Positions::All, None, 0.5).unwrap()),
                    Box::new(|| {
                        black_box(((&x * 0.5).unwrap() + (&src * 0.5).unwrap()).unwrap());
                    }),
                ),
                (
                    "ablate_",
                    2.0,
                    Box::new(|| ablate_(&x, &v).unwrap()),
                    Box::new(|| {
                        black_box(chain::ablate(&x, &vd).unwrap());
                    }),
                ),
                (
                    "norm_preserving_steer_",
                    2.0,
                    Box::new(|| norm_preserving_steer_(&x, &v, 0.5).unwrap()),
                    Box::new(|| {
                        black_box(chain::norm_steer(&x, &vd, 0.5).unwrap());
                    }),
                ),
            ];
            for (kname, passes, mut fused, mut unfused) in rows {
                let tf = time(&dev, 20, &mut fused);
                let tc = time(&dev, 10, &mut unfused);
                let bytes = passes * (n * es) as f64;
                let gbs = bytes / tf / 1e9;
                println!(
                    "| {kname} | {:.0} MiB | {:.1} | {:.0} | {:.0}% | {:.1} | {:.2}× |",
                    bytes / 1048576.0,
                    tf * 1e6,
                    gbs,
                    100.0 * gbs / copy_gbs,
                    tc * 1e6,
                    tc / tf
                );
            }
            if dt == DType::F32 {
                let (k, nn, dd) = (16usize, 8192usize, 1024usize);
                let (xp, yp) = probe_data(k, nn, dd, &dev);
                let w = rand_t(10, &[k, dd], &dev).affine(0.01, 0.0).unwrap();
                let bb = Tensor::zeros(k, DType::F32, &dev).unwrap();
                let tf = time(&dev, 10, || {
                    black_box(logistic_loss_grad(&xp, &yp, &w, &bb, 1e-4).unwrap());
                });
                let tc = time(&dev, 10, || {
                    black_box(chain::logistic_pass(&xp, &yp, &w, &bb, 1e-4).unwrap());
                });
                let bytes = (k * nn * dd * 4) as f64;
                let gbs = bytes / tf / 1e9;
                // the pass reads X once; compare with a copy's read half
                println!(
                    "| logistic pass [{k}, {nn}, {dd}] (reads X once, incl. host round trip) | {:.0} MiB | {:.1} | {:.0} | {:.0}% | {:.1} | {:.2}× |",
                    bytes / 1048576.0,
                    tf * 1e6,
                    gbs,
                    100.0 * gbs / copy_gbs,
                    tc * 1e6,
                    tc / tf
                );
                let t0 = Instant::now();
                let fit = train_logistic_probes(
                    &xp,
                    &yp,
                    &LogisticConfig {
                        l2: 1.0 / nn as f64,
                        ..Default::default()
                    },
                )
                .unwrap();
                sync(&dev);
                println!(
                    "\ntrain_logistic_probes [{k}, {nn}, {dd}]: {:.1} ms, {} passes, converged {}/{k}",
                    t0.elapsed().as_secs_f64() * 1e3,
                    fit.passes,
                    fit.converged.iter().filter(|&&c| c).count()
                );
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--bandwidth") {
        #[cfg(feature = "cuda")]
        gpu::bandwidth_report();
        #[cfg(not(feature = "cuda"))]
        eprintln!("[kernels] --bandwidth needs a build with --features cuda");
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    activation_groups(&mut c, &Device::Cpu, "", &CPU_SHAPES);
    probe_groups(&mut c, &Device::Cpu, "");
    #[cfg(feature = "cuda")]
    if let Some(dev) = gpu::device() {
        let shapes = [
            Shape3 {
                name: "gpt2s",
                b: 8,
                t: 128,
                d: 768,
            },
            Shape3 {
                name: "large",
                b: 16,
                t: 1024,
                d: 4096,
            },
        ];
        activation_groups(&mut c, &dev, "gpu_", &shapes);
        probe_groups(&mut c, &dev, "gpu_");
    }
    c.final_summary();
}
