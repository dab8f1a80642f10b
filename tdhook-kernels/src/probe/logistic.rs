//! Batched binary logistic regression: `K` probes, full batch, L2, deterministic.
//!
//! Objective per probe (mean loss, bias not penalised):
//! `L(w, b) = (1/N) Σ_n [log(1 + e^{z_n}) − y_n z_n] + (λ/2)‖w‖²`, `z_n = w·x_n + b`.
//! (scikit-learn's `LogisticRegression(C)` is the same problem with `λ = 1/(C·N)`.)
//!
//! Solver: L-BFGS per probe with Armijo backtracking (quadratic interpolation). Every step
//! evaluates loss and gradient in ONE fused pass over the activations (per row: the logit,
//! then the row's contribution to the gradient while the row is in cache). On CUDA all
//! probes run in lockstep, one kernel per step for every still-active probe; on the CPU the
//! probes run one after another (one probe's activations stay in cache between passes), each
//! pass split by rayon over fixed chunks of rows reduced in a fixed order, so results do not
//! depend on the thread count.

use candle_core::{CpuStorage, DType, Device, Result, Storage, Tensor};
use rayon::prelude::*;

use super::{LinearProbes, dims3, host_labels};
use crate::error::arg;

/// Settings of [`train_logistic_probes`].
///
/// ```
/// use tdhook_kernels::LogisticConfig;
/// let cfg = LogisticConfig { l2: 1e-2, ..LogisticConfig::default() };
/// // scikit-learn's LogisticRegression(C=1.0) on N = 2000 samples:
/// let sk = LogisticConfig::from_sklearn_c(1.0, 2000);
/// assert!((sk.l2 - 5e-4).abs() < 1e-12);
/// # let _ = cfg;
/// ```
#[derive(Clone, Debug)]
pub struct LogisticConfig {
    /// λ, the L2 penalty on the weights (the bias is not penalised). Must be `>= 0`;
    /// `> 0` makes the problem strictly convex (a unique optimum).
    pub l2: f64,
    /// Stop a probe when `‖∇L‖∞ <= tol` (scikit-learn's lbfgs convention, default 1e-4).
    pub tol: f64,
    /// At most this many L-BFGS iterations per probe.
    pub max_iter: usize,
    /// L-BFGS memory (pairs kept).
    pub history: usize,
    /// Fit a bias.
    pub fit_intercept: bool,
}

impl Default for LogisticConfig {
    fn default() -> Self {
        Self {
            l2: 1e-3,
            tol: 1e-4,
            max_iter: 500,
            history: 10,
            fit_intercept: true,
        }
    }
}

impl LogisticConfig {
    /// The penalty matching scikit-learn's `LogisticRegression(C=c)` on `n` samples.
    pub fn from_sklearn_c(c: f64, n: usize) -> Self {
        Self {
            l2: 1.0 / (c * n as f64),
            ..Self::default()
        }
    }
}

/// Result of [`train_logistic_probes`].
#[derive(Clone, Debug)]
pub struct LogisticFit {
    /// Weights `[K, D]` and bias `[K]` (f32, on the activations' device).
    pub probes: LinearProbes,
    /// Final penalised mean loss per probe, `[K]` (f32, on the activations' device).
    pub loss: Tensor,
    /// Final `‖∇L‖∞` per probe.
    pub grad_norm: Vec<f64>,
    /// L-BFGS iterations per probe.
    pub iterations: Vec<usize>,
    /// Whether each probe met `tol`.
    pub converged: Vec<bool>,
    /// Loss-and-gradient passes: on a GPU, fused passes over all probes together (lockstep);
    /// on the CPU, where probes train one after another, the most any probe needed.
    pub passes: usize,
}

/// Loss and gradient sums of the data term for a set of probes, one pass over `X`.
pub(crate) trait Evaluator {
    /// For each `k` in `active`, with `theta[k·(D+1)..]` = `(w, b)` in f32: writes
    /// `loss[k] = Σ_n softplus(z) − y z` and `grad[k·(D+1)..] = Σ_n (σ(z) − y)·(x_n, 1)`.
    fn eval(
        &mut self,
        active: &[usize],
        theta: &[f32],
        loss: &mut [f64],
        grad: &mut [f64],
    ) -> Result<()>;
}

/// Rows per task of the CPU pass: fixed, so the reduction order never depends on threads.
const CHUNK: usize = 256;

/// Row `z`'s loss `softplus(z) − y·z` (f64) and residual `σ(z) − y` (f32), sharing one
/// `e^{−|z|}`.
#[inline(always)]
fn loss_and_residual(z: f32, y: f32) -> (f64, f32) {
    let zd = z as f64;
    let e = (-zd.abs()).exp();
    let softplus = zd.max(0.0) + e.ln_1p();
    let sigmoid = if zd >= 0.0 {
        1.0 / (1.0 + e)
    } else {
        e / (1.0 + e)
    };
    (softplus - (y as f64) * zd, (sigmoid - y as f64) as f32)
}

pub(crate) struct CpuEval<'a> {
    pub x: &'a [f32],
    pub y: &'a [f32],
    pub n: usize,
    pub d: usize,
}

impl Evaluator for CpuEval<'_> {
    fn eval(
        &mut self,
        active: &[usize],
        theta: &[f32],
        loss: &mut [f64],
        grad: &mut [f64],
    ) -> Result<()> {
        let (n, d) = (self.n, self.d);
        let dp = d + 1;
        let n_chunks = n.div_ceil(CHUNK);
        let tasks: Vec<(usize, usize)> = active
            .iter()
            .flat_map(|&k| (0..n_chunks).map(move |c| (k, c)))
            .collect();
        let simd = simd_level();
        let run = |&(k, c): &(usize, usize)| -> (f64, f64, Vec<f32>) {
            let w = &theta[k * dp..k * dp + d];
            let b = theta[k * dp + d];
            let xk = &self.x[k * n * d..(k + 1) * n * d];
            let rows = c * CHUNK..((c + 1) * CHUNK).min(n);
            let mut g = vec![0f32; d];
            let (l, gb) = chunk_pass_dispatch(simd, xk, self.y, w, b, d, rows, &mut g);
            (l, gb, g)
        };
        let parts: Vec<(f64, f64, Vec<f32>)> =
            if tasks.len() > 1 && rayon::current_num_threads() > 1 {
                tasks.par_iter().map(run).collect()
            } else {
                tasks.iter().map(run).collect()
            };
        for &k in active {
            loss[k] = 0.0;
            grad[k * dp..(k + 1) * dp].iter_mut().for_each(|v| *v = 0.0);
        }
        for (&(k, _), (l, gb, g)) in tasks.iter().zip(parts) {
            loss[k] += l;
            let gk = &mut grad[k * dp..(k + 1) * dp];
            for (a, &v) in gk[..d].iter_mut().zip(&g) {
                *a += v as f64;
            }
            gk[d] += gb;
        }
        Ok(())
    }
}

/// The widest vector unit the CPU pass can use here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Simd {
    Generic,
    Avx2,
    Avx512,
}

/// The CPU's [`Simd`] level (detected once).
pub(crate) fn simd_level() -> Simd {
    #[cfg(target_arch = "x86_64")]
    {
        static LEVEL: std::sync::OnceLock<Simd> = std::sync::OnceLock::new();
        *LEVEL.get_or_init(|| {
            let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
            if avx2 && is_x86_feature_detected!("avx512f") {
                Simd::Avx512
            } else if avx2 {
                Simd::Avx2
            } else {
                Simd::Generic
            }
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        Simd::Generic
    }
}

#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA { a.mul_add(b, c) } else { a * b + c }
}

/// Rows processed together by the CPU pass: their logits share the loads of `w`, and their
/// gradient contributions share one read-modify-write sweep of the accumulator.
const BLOCK: usize = 4;

/// `acc[e] += x[e]·w[e]` on 8 lanes.
#[inline(always)]
fn lane_fma<const FMA: bool>(acc: &mut [f32; 8], x: &[f32; 8], w: &[f32; 8]) {
    for e in 0..8 {
        acc[e] = madd::<FMA>(x[e], w[e], acc[e]);
    }
}

/// `w·x` for one row (8 lanes, fixed reduction order).
#[inline(always)]
fn dot8<const FMA: bool>(x: &[f32], w: &[f32]) -> f32 {
    let (xc, xr) = x.as_chunks::<8>();
    let (wc, wr) = w.as_chunks::<8>();
    let mut a = [0f32; 8];
    for (xv, wv) in xc.iter().zip(wc) {
        for e in 0..8 {
            a[e] = madd::<FMA>(xv[e], wv[e], a[e]);
        }
    }
    let mut t = 0f32;
    for (&xv, &wv) in xr.iter().zip(wr) {
        t = madd::<FMA>(xv, wv, t);
    }
    ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7])) + t
}

/// Loss and gradient sums over `rows` of one probe; `g` accumulates `Σ r·x`. Returns
/// `(Σ loss, Σ r)`. Generic over fused multiply-add so the AVX2 build can use it.
#[inline(always)]
fn chunk_pass<const FMA: bool>(
    xk: &[f32],
    y: &[f32],
    w: &[f32],
    b: f32,
    d: usize,
    rows: std::ops::Range<usize>,
    g: &mut [f32],
) -> (f64, f64) {
    let (mut l, mut gb) = (0f64, 0f64);
    let w = &w[..d];
    let g = &mut g[..d];
    let mut i = rows.start;
    while i < rows.end {
        let nb = BLOCK.min(rows.end - i);
        if nb == BLOCK {
            let x0 = &xk[i * d..(i + 1) * d];
            let x1 = &xk[(i + 1) * d..(i + 2) * d];
            let x2 = &xk[(i + 2) * d..(i + 3) * d];
            let x3 = &xk[(i + 3) * d..(i + 4) * d];
            // four logits sharing the loads of w
            let (wc, wr) = w.as_chunks::<8>();
            let (c0, r0) = x0.as_chunks::<8>();
            let (c1, r1) = x1.as_chunks::<8>();
            let (c2, r2) = x2.as_chunks::<8>();
            let (c3, r3) = x3.as_chunks::<8>();
            // one 8-lane accumulator per row, each updated by its own lane loop (so the
            // compiler vectorises along the lanes, not across rows)
            let (mut a0, mut a1, mut a2, mut a3) = ([0f32; 8], [0f32; 8], [0f32; 8], [0f32; 8]);
            for ((((wv, v0), v1), v2), v3) in wc.iter().zip(c0).zip(c1).zip(c2).zip(c3) {
                lane_fma::<FMA>(&mut a0, v0, wv);
                lane_fma::<FMA>(&mut a1, v1, wv);
                lane_fma::<FMA>(&mut a2, v2, wv);
                lane_fma::<FMA>(&mut a3, v3, wv);
            }
            let acc = [a0, a1, a2, a3];
            let tails = [r0, r1, r2, r3];
            let mut r = [0f32; BLOCK];
            for q in 0..BLOCK {
                let a = &acc[q];
                let mut t = 0f32;
                for (&xv, &wv) in tails[q].iter().zip(wr) {
                    t = madd::<FMA>(xv, wv, t);
                }
                let z = b + (((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7])) + t);
                let yi = y[i + q];
                let (lq, rq) = loss_and_residual(z, yi);
                l += lq;
                r[q] = rq;
                gb += r[q] as f64;
            }
            // one read-modify-write sweep of g for the four rows
            let (gc, gr) = g.as_chunks_mut::<8>();
            let (s0, s1, s2, s3) = ([r[0]; 8], [r[1]; 8], [r[2]; 8], [r[3]; 8]);
            for ((((gv, v0), v1), v2), v3) in gc.iter_mut().zip(c0).zip(c1).zip(c2).zip(c3) {
                lane_fma::<FMA>(gv, v0, &s0);
                lane_fma::<FMA>(gv, v1, &s1);
                lane_fma::<FMA>(gv, v2, &s2);
                lane_fma::<FMA>(gv, v3, &s3);
            }
            for (j, gj) in gr.iter_mut().enumerate() {
                let mut v = *gj;
                for q in 0..BLOCK {
                    v = madd::<FMA>(r[q], tails[q][j], v);
                }
                *gj = v;
            }
        } else {
            for q in 0..nb {
                let row = &xk[(i + q) * d..(i + q + 1) * d];
                let z = b + dot8::<FMA>(row, w);
                let yi = y[i + q];
                let (lq, rq) = loss_and_residual(z, yi);
                l += lq;
                gb += rq as f64;
                for (gj, &xj) in g.iter_mut().zip(row) {
                    *gj = madd::<FMA>(rq, xj, *gj);
                }
            }
        }
        i += nb;
    }
    (l, gb)
}

/// Defines `$name::<R>`: [`chunk_pass`] with explicit `$lanes`-wide intrinsics, `R` rows at a
/// time sharing the loads of `w` and one read-modify-write sweep of `g`, one accumulator
/// per row (left to itself, the compiler vectorises across the rows and spends its time
/// shuffling). Leftover rows go through the generic pass.
macro_rules! simd_chunk_pass {
    ($name:ident, $features:literal, $lanes:literal, $zero:ident, $load:ident, $store:ident,
     $fmadd:ident, $set1:ident, $hsum:expr) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        fn $name<const R: usize>(
            xk: &[f32],
            y: &[f32],
            w: &[f32],
            b: f32,
            d: usize,
            rows: std::ops::Range<usize>,
            g: &mut [f32],
        ) -> (f64, f64) {
            use std::arch::x86_64::*;
            assert!(
                xk.len() >= rows.end * d && w.len() >= d && g.len() >= d && y.len() >= rows.end
            );
            let lanes = d / $lanes * $lanes;
            let (mut l, mut gb) = (0f64, 0f64);
            let mut i = rows.start;
            while i + R <= rows.end {
                // SAFETY: rows i..i+R lie within `xk` (asserted above); j + $lanes <= lanes
                // <= d.
                unsafe {
                    let p: [*const f32; R] = std::array::from_fn(|q| xk.as_ptr().add((i + q) * d));
                    let (wp, gp) = (w.as_ptr(), g.as_mut_ptr());
                    let mut acc = [$zero(); R];
                    let mut j = 0;
                    while j < lanes {
                        let wv = $load(wp.add(j));
                        for q in 0..R {
                            acc[q] = $fmadd($load(p[q].add(j)), wv, acc[q]);
                        }
                        j += $lanes;
                    }
                    let mut r = [0f32; R];
                    let mut s = [$zero(); R];
                    for q in 0..R {
                        let mut t = 0f32;
                        for (jj, &wj) in w.iter().enumerate().take(d).skip(lanes) {
                            t = (*p[q].add(jj)).mul_add(wj, t);
                        }
                        let z = b + ($hsum(acc[q]) + t);
                        let (lq, rq) = loss_and_residual(z, y[i + q]);
                        l += lq;
                        r[q] = rq;
                        gb += rq as f64;
                        s[q] = $set1(rq);
                    }
                    let mut j = 0;
                    while j < lanes {
                        let mut gv = $load(gp.add(j));
                        for q in 0..R {
                            gv = $fmadd(s[q], $load(p[q].add(j)), gv);
                        }
                        $store(gp.add(j), gv);
                        j += $lanes;
                    }
                    for (jj, gj) in g.iter_mut().enumerate().take(d).skip(lanes) {
                        let mut v = *gj;
                        for q in 0..R {
                            v = r[q].mul_add(*p[q].add(jj), v);
                        }
                        *gj = v;
                    }
                }
                i += R;
            }
            let (l2, gb2) = chunk_pass::<true>(xk, y, w, b, d, i..rows.end, g);
            (l + l2, gb + gb2)
        }
    };
}

/// Horizontal sum of 8 lanes in the generic pass's order.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn hsum256(v: std::arch::x86_64::__m256) -> f32 {
    let mut a = [0f32; 8];
    // SAFETY: `a` has room for 8 floats.
    unsafe { std::arch::x86_64::_mm256_storeu_ps(a.as_mut_ptr(), v) };
    ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]))
}

simd_chunk_pass!(
    chunk_pass_avx2,
    "avx2,fma",
    8,
    _mm256_setzero_ps,
    _mm256_loadu_ps,
    _mm256_storeu_ps,
    _mm256_fmadd_ps,
    _mm256_set1_ps,
    hsum256
);
simd_chunk_pass!(
    chunk_pass_avx512,
    "avx512f,avx2,fma",
    16,
    _mm512_setzero_ps,
    _mm512_loadu_ps,
    _mm512_storeu_ps,
    _mm512_fmadd_ps,
    _mm512_set1_ps,
    _mm512_reduce_add_ps
);

#[allow(clippy::too_many_arguments)]
fn chunk_pass_dispatch(
    simd: Simd,
    xk: &[f32],
    y: &[f32],
    w: &[f32],
    b: f32,
    d: usize,
    rows: std::ops::Range<usize>,
    g: &mut [f32],
) -> (f64, f64) {
    match simd {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `simd_level` found AVX-512F (and AVX2, FMA) on this CPU.
        Simd::Avx512 => unsafe { chunk_pass_avx512::<ROWS_512>(xk, y, w, b, d, rows, g) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `simd_level` found AVX2 and FMA on this CPU.
        Simd::Avx2 => unsafe { chunk_pass_avx2::<BLOCK>(xk, y, w, b, d, rows, g) },
        _ => chunk_pass::<false>(xk, y, w, b, d, rows, g),
    }
}

/// Rows per block of the AVX-512 pass.
const ROWS_512: usize = 8;

/// Trains `K` binary logistic-regression probes at once.
///
/// * `x`: `[K, N, D]` activations (probe `k` sees `x[k]`), any float dtype, CPU or CUDA
///   (read as f32; z-score features first for fast convergence).
/// * `labels`: `[N]`, 0/1 (any dtype), shared by every probe.
///
/// Deterministic: the same inputs give bit-identical results for any thread count on a
/// given machine (the CPU pass uses FMA and 8- or 16-lane sums by what the CPU has, so
/// results may differ in the last bits between CPUs, and between CPU and GPU).
///
/// ```
/// use candle_core::{Device, Tensor};
/// use tdhook_kernels::{LogisticConfig, train_logistic_probes};
/// let x = Tensor::new(&[[[1f32, 0.], [2., 1.], [-1., 0.], [-2., -1.]]], &Device::Cpu)?;
/// let y = Tensor::new(&[1u8, 1, 0, 0], &Device::Cpu)?;
/// let fit = train_logistic_probes(&x, &y, &LogisticConfig { l2: 0.1, ..Default::default() })?;
/// assert!(fit.converged[0]);
/// assert_eq!(fit.probes.accuracy(&x, &y)?, vec![1.0]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn train_logistic_probes(
    x: &Tensor,
    labels: &Tensor,
    cfg: &LogisticConfig,
) -> Result<LogisticFit> {
    const OP: &str = "train_logistic_probes";
    let (k, n, d) = dims3(OP, x)?;
    if n == 0 {
        return Err(arg(OP, "no samples"));
    }
    if cfg.l2 < 0.0 || !cfg.l2.is_finite() {
        return Err(arg(OP, "l2 must be finite and >= 0"));
    }
    let y = host_labels(OP, labels, n)?;
    let device = x.device().clone();
    let res = if x.device().is_cpu() && k > 1 {
        // On the CPU the probes train one after another: a pass over one probe's activations
        // stays in cache, a lockstep pass over all K does not (measured slower at GPT-2-small
        // probe sizes; BENCHMARKS.md, "Batched probes"). Each probe's arithmetic is the same
        // either way.
        let parts = (0..k)
            .map(|kk| with_evaluator(OP, &x.narrow(0, kk, 1)?, &y, |ev| lbfgs(ev, 1, n, d, cfg)))
            .collect::<Result<Vec<_>>>()?;
        LbfgsResult::concat(parts)
    } else {
        with_evaluator(OP, x, &y, |ev| lbfgs(ev, k, n, d, cfg))?
    };
    let dp = d + 1;
    let w: Vec<f32> = (0..k)
        .flat_map(|kk| res.theta[kk * dp..kk * dp + d].iter().map(|&v| v as f32))
        .collect();
    let b: Vec<f32> = (0..k).map(|kk| res.theta[kk * dp + d] as f32).collect();
    let loss: Vec<f32> = res.f.iter().map(|&v| v as f32).collect();
    Ok(LogisticFit {
        probes: LinearProbes {
            weights: Tensor::from_vec(w, (k, d), &Device::Cpu)?.to_device(&device)?,
            bias: Tensor::from_vec(b, k, &Device::Cpu)?.to_device(&device)?,
        },
        loss: Tensor::from_vec(loss, k, &Device::Cpu)?.to_device(&device)?,
        grad_norm: res.gnorm,
        iterations: res.iters,
        converged: res.converged,
        passes: res.passes,
    })
}

/// Runs `f` with the fused evaluator of `x`'s device (x is read as contiguous f32).
fn with_evaluator<R>(
    op: &'static str,
    x: &Tensor,
    y: &[f32],
    f: impl FnOnce(&mut dyn Evaluator) -> Result<R>,
) -> Result<R> {
    let (k, n, d) = dims3(op, x)?;
    let xf = x.to_dtype(DType::F32)?.contiguous()?;
    let (storage, layout) = xf.storage_and_layout();
    let (o1, o2) = layout
        .contiguous_offsets()
        .ok_or_else(|| arg(op, "x must be contiguous"))?;
    match &*storage {
        Storage::Cpu(CpuStorage::F32(data)) => {
            let mut ev = CpuEval {
                x: &data[o1..o2],
                y,
                n,
                d,
            };
            f(&mut ev)
        }
        #[cfg(feature = "cuda")]
        Storage::Cuda(cs) => {
            let mut ev = crate::cuda::ProbeEval::new(cs, o1, y, k, n, d)?;
            f(&mut ev)
        }
        _ => {
            let _ = (k, o2);
            Err(arg(op, "unsupported device"))
        }
    }
}

/// One fused evaluation of the penalised logistic loss and its gradient for `K` probes at
/// given parameters: the pass [`train_logistic_probes`] runs every step, exposed for custom
/// solvers and optimality checks.
///
/// * `x`: `[K, N, D]`; `labels`: `[N]` 0/1; `weights`: `[K, D]`; `bias`: `[K]`; `l2`: λ.
///
/// Returns `(loss [K], grad_weights [K, D], grad_bias [K])`, f32, on `x`'s device.
///
/// ```
/// use candle_core::{Device, DType, Tensor};
/// use tdhook_kernels::logistic_loss_grad;
/// let x = Tensor::new(&[[[1f32, 0.], [-1., 0.]]], &Device::Cpu)?;
/// let y = Tensor::new(&[1u8, 0], &Device::Cpu)?;
/// let w = Tensor::zeros((1, 2), DType::F32, &Device::Cpu)?;
/// let b = Tensor::zeros(1, DType::F32, &Device::Cpu)?;
/// let (loss, gw, gb) = logistic_loss_grad(&x, &y, &w, &b, 0.0)?;
/// assert!((loss.to_vec1::<f32>()?[0] - 2f32.ln()).abs() < 1e-6);
/// assert_eq!(gw.to_vec2::<f32>()?, vec![vec![-0.5, 0.]]);
/// assert_eq!(gb.to_vec1::<f32>()?, vec![0.]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn logistic_loss_grad(
    x: &Tensor,
    labels: &Tensor,
    weights: &Tensor,
    bias: &Tensor,
    l2: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    const OP: &str = "logistic_loss_grad";
    let (k, n, d) = dims3(OP, x)?;
    let y = host_labels(OP, labels, n)?;
    if weights.dims() != [k, d] || bias.dims() != [k] {
        return Err(arg(
            OP,
            format!(
                "weights must be [{k}, {d}] and bias [{k}], got {:?} and {:?}",
                weights.dims(),
                bias.dims()
            ),
        ));
    }
    let w = weights.to_dtype(DType::F64)?.to_vec2::<f64>()?;
    let b = bias.to_dtype(DType::F64)?.to_vec1::<f64>()?;
    let dp = d + 1;
    let mut theta = Vec::with_capacity(k * dp);
    for kk in 0..k {
        theta.extend_from_slice(&w[kk]);
        theta.push(b[kk]);
    }
    let theta32: Vec<f32> = theta.iter().map(|&v| v as f32).collect();
    let mut loss = vec![0f64; k];
    let mut grad = vec![0f64; k * dp];
    let active: Vec<usize> = (0..k).collect();
    with_evaluator(OP, x, &y, |ev| {
        ev.eval(&active, &theta32, &mut loss, &mut grad)
    })?;
    let mut lo = Vec::with_capacity(k);
    let mut gw = Vec::with_capacity(k * d);
    let mut gb = Vec::with_capacity(k);
    for kk in 0..k {
        let (f, g) = finish(
            loss[kk],
            &grad[kk * dp..(kk + 1) * dp],
            &theta[kk * dp..(kk + 1) * dp],
            n,
            d,
            l2,
            true,
        );
        lo.push(f as f32);
        gw.extend(g[..d].iter().map(|&v| v as f32));
        gb.push(g[d] as f32);
    }
    let dev = x.device();
    Ok((
        Tensor::from_vec(lo, k, &Device::Cpu)?.to_device(dev)?,
        Tensor::from_vec(gw, (k, d), &Device::Cpu)?.to_device(dev)?,
        Tensor::from_vec(gb, k, &Device::Cpu)?.to_device(dev)?,
    ))
}

pub(crate) struct LbfgsResult {
    pub theta: Vec<f64>,
    pub f: Vec<f64>,
    pub gnorm: Vec<f64>,
    pub iters: Vec<usize>,
    pub converged: Vec<bool>,
    pub passes: usize,
}

impl LbfgsResult {
    /// Results of probes trained separately, in order; `passes` is the largest count.
    fn concat(parts: Vec<LbfgsResult>) -> Self {
        let mut all = LbfgsResult {
            theta: vec![],
            f: vec![],
            gnorm: vec![],
            iters: vec![],
            converged: vec![],
            passes: 0,
        };
        for p in parts {
            all.theta.extend(p.theta);
            all.f.extend(p.f);
            all.gnorm.extend(p.gnorm);
            all.iters.extend(p.iters);
            all.converged.extend(p.converged);
            all.passes = all.passes.max(p.passes);
        }
        all
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    /// Waiting for the evaluation at the starting point.
    Start,
    /// Waiting for the evaluation at `theta + step·dir`.
    Search,
    Done,
}

struct Probe {
    theta: Vec<f64>,
    f: f64,
    g: Vec<f64>,
    dir: Vec<f64>,
    step: f64,
    gtd: f64,
    s: Vec<Vec<f64>>,
    yv: Vec<Vec<f64>>,
    rho: Vec<f64>,
    phase: Phase,
    iters: usize,
    converged: bool,
}

fn dot64(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn inf_norm(g: &[f64]) -> f64 {
    g.iter().fold(0.0, |m, v| m.max(v.abs()))
}

impl Probe {
    /// L-BFGS two-loop direction `−H g` (H₀ = γI with γ = sᵀy/yᵀy of the newest pair).
    fn direction(&mut self) {
        let m = self.s.len();
        let mut q: Vec<f64> = self.g.clone();
        let mut al = vec![0f64; m];
        for i in (0..m).rev() {
            al[i] = self.rho[i] * dot64(&self.s[i], &q);
            for (qj, yj) in q.iter_mut().zip(&self.yv[i]) {
                *qj -= al[i] * yj;
            }
        }
        let gamma = if m > 0 {
            dot64(&self.s[m - 1], &self.yv[m - 1]) / dot64(&self.yv[m - 1], &self.yv[m - 1])
        } else {
            1.0
        };
        q.iter_mut().for_each(|v| *v *= gamma);
        for (i, &a) in al.iter().enumerate() {
            let be = self.rho[i] * dot64(&self.yv[i], &q);
            for (qj, sj) in q.iter_mut().zip(&self.s[i]) {
                *qj += (a - be) * sj;
            }
        }
        q.iter_mut().for_each(|v| *v = -*v);
        self.dir = q;
        self.gtd = dot64(&self.g, &self.dir);
        if self.gtd >= 0.0 || !self.gtd.is_finite() {
            // Not a descent direction (numerical trouble): restart from steepest descent.
            self.s.clear();
            self.yv.clear();
            self.rho.clear();
            self.dir = self.g.iter().map(|v| -v).collect();
            self.gtd = -dot64(&self.g, &self.g);
        }
        self.step = if m == 0 {
            1.0 / self.g.iter().map(|v| v * v).sum::<f64>().sqrt().max(1.0)
        } else {
            1.0
        };
    }

    fn trial(&self) -> Vec<f64> {
        self.theta
            .iter()
            .zip(&self.dir)
            .map(|(t, p)| t + self.step * p)
            .collect()
    }
}

/// Adds the mean scaling and the L2 term to the data sums of probe `k`.
fn finish(
    loss: f64,
    grad: &[f64],
    theta: &[f64],
    n: usize,
    d: usize,
    l2: f64,
    fit_b: bool,
) -> (f64, Vec<f64>) {
    let inv_n = 1.0 / n as f64;
    let w = &theta[..d];
    let f = loss * inv_n + 0.5 * l2 * dot64(w, w);
    let mut g: Vec<f64> = grad.iter().map(|v| v * inv_n).collect();
    for j in 0..d {
        g[j] += l2 * w[j];
    }
    if !fit_b {
        g[d] = 0.0;
    }
    (f, g)
}

pub(crate) fn lbfgs(
    ev: &mut dyn Evaluator,
    k: usize,
    n: usize,
    d: usize,
    cfg: &LogisticConfig,
) -> Result<LbfgsResult> {
    let dp = d + 1;
    const C1: f64 = 1e-4;
    let mut probes: Vec<Probe> = (0..k)
        .map(|_| Probe {
            theta: vec![0.0; dp],
            f: 0.0,
            g: vec![0.0; dp],
            dir: vec![0.0; dp],
            step: 0.0,
            gtd: 0.0,
            s: Vec::new(),
            yv: Vec::new(),
            rho: Vec::new(),
            phase: Phase::Start,
            iters: 0,
            converged: false,
        })
        .collect();
    let mut theta32 = vec![0f32; k * dp];
    let mut loss = vec![0f64; k];
    let mut grad = vec![0f64; k * dp];
    let mut passes = 0usize;
    let mut trials: Vec<Vec<f64>> = vec![Vec::new(); k];
    loop {
        let active: Vec<usize> = (0..k).filter(|&i| probes[i].phase != Phase::Done).collect();
        if active.is_empty() {
            break;
        }
        for &i in &active {
            let p = &probes[i];
            trials[i] = if p.phase == Phase::Start {
                p.theta.clone()
            } else {
                p.trial()
            };
            for (dst, &v) in theta32[i * dp..(i + 1) * dp].iter_mut().zip(&trials[i]) {
                *dst = v as f32;
            }
        }
        ev.eval(&active, &theta32, &mut loss, &mut grad)?;
        passes += 1;
        for &i in &active {
            let p = &mut probes[i];
            let (f_new, g_new) = finish(
                loss[i],
                &grad[i * dp..(i + 1) * dp],
                &trials[i],
                n,
                d,
                cfg.l2,
                cfg.fit_intercept,
            );
            match p.phase {
                Phase::Start => {
                    p.f = f_new;
                    p.g = g_new;
                    if inf_norm(&p.g) <= cfg.tol {
                        p.converged = true;
                        p.phase = Phase::Done;
                    } else if cfg.max_iter == 0 {
                        p.phase = Phase::Done;
                    } else {
                        p.direction();
                        p.phase = Phase::Search;
                    }
                }
                Phase::Search => {
                    // Armijo, or Hager–Zhang's approximate Wolfe condition: near the optimum
                    // the loss (from f32 logits) is noisier than its decrease, while the
                    // gradient stays accurate.
                    let gtd_new = dot64(&g_new, &p.dir);
                    let armijo = f_new <= p.f + C1 * p.step * p.gtd;
                    let approx_wolfe = f_new <= p.f + 1e-6 * p.f.abs()
                        && gtd_new <= (2.0 * 0.1 - 1.0) * p.gtd
                        && gtd_new >= 0.9 * p.gtd;
                    if f_new.is_finite() && (armijo || approx_wolfe) {
                        let trial = std::mem::take(&mut trials[i]);
                        let s: Vec<f64> = trial.iter().zip(&p.theta).map(|(a, b)| a - b).collect();
                        let yv: Vec<f64> = g_new.iter().zip(&p.g).map(|(a, b)| a - b).collect();
                        let sy = dot64(&s, &yv);
                        if sy > 1e-12 * dot64(&yv, &yv).sqrt() * dot64(&s, &s).sqrt() && sy > 0.0 {
                            if p.s.len() == cfg.history.max(1) {
                                p.s.remove(0);
                                p.yv.remove(0);
                                p.rho.remove(0);
                            }
                            p.s.push(s);
                            p.yv.push(yv);
                            p.rho.push(1.0 / sy);
                        }
                        p.theta = trial;
                        p.f = f_new;
                        p.g = g_new;
                        p.iters += 1;
                        if inf_norm(&p.g) <= cfg.tol {
                            p.converged = true;
                            p.phase = Phase::Done;
                        } else if p.iters >= cfg.max_iter {
                            p.phase = Phase::Done;
                        } else {
                            p.direction();
                        }
                    } else {
                        // Backtrack: minimiser of the quadratic through f(0), f'(0), f(step),
                        // kept within [0.1, 0.5]·step.
                        let t = p.step;
                        let denom = 2.0 * (f_new - p.f - p.gtd * t);
                        let tq = if f_new.is_finite() && denom > 0.0 {
                            -p.gtd * t * t / denom
                        } else {
                            0.1 * t
                        };
                        p.step = tq.clamp(0.1 * t, 0.5 * t);
                        if p.step < 1e-20 {
                            p.phase = Phase::Done; // line search failed: keep the last point
                        }
                    }
                }
                Phase::Done => {}
            }
        }
    }
    Ok(LbfgsResult {
        gnorm: probes.iter().map(|p| inf_norm(&p.g)).collect(),
        f: probes.iter().map(|p| p.f).collect(),
        iters: probes.iter().map(|p| p.iters).collect(),
        converged: probes.iter().map(|p| p.converged).collect(),
        theta: probes.into_iter().flat_map(|p| p.theta).collect(),
        passes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_simd_pass_agrees_with_the_generic_one() {
        // d = 45: the 16- and 8-lane bodies plus scalar tails; n = 37: full blocks of 4 and 8
        // rows plus leftover rows.
        let (n, d) = (37, 45);
        let mut s = 7u64;
        let mut next = || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        };
        let x: Vec<f32> = (0..n * d).map(|_| next()).collect();
        let w: Vec<f32> = (0..d).map(|_| next()).collect();
        let y: Vec<f32> = (0..n).map(|i| (i % 3 == 0) as u8 as f32).collect();
        let mut g0 = vec![0f32; d];
        let (l0, b0) = chunk_pass::<false>(&x, &y, &w, 0.3, d, 0..n, &mut g0);
        let levels: &[Simd] = match simd_level() {
            Simd::Avx512 => &[Simd::Avx2, Simd::Avx512],
            Simd::Avx2 => &[Simd::Avx2],
            Simd::Generic => &[],
        };
        for &level in levels {
            let mut g1 = vec![0f32; d];
            let (l1, b1) = chunk_pass_dispatch(level, &x, &y, &w, 0.3, d, 0..n, &mut g1);
            assert!(
                (l0 - l1).abs() < 1e-4 && (b0 - b1).abs() < 1e-4,
                "{level:?}"
            );
            for (a, b) in g0.iter().zip(&g1) {
                assert!((a - b).abs() < 1e-4, "{level:?}: {a} {b}");
            }
        }
    }
}
