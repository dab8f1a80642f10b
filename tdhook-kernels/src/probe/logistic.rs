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

use super::cpu_pass::CpuEval;
use super::lbfgs::{LbfgsResult, finish, lbfgs};
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
