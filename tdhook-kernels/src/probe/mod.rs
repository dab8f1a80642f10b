//! Batched training of `K` linear probes (one per hook point) on activations `[K, N, D]`
//! that share labels `[N]`: logistic regression (L-BFGS, one fused pass over the
//! activations per step for all probes), mean-difference classifiers and ridge regression
//! (closed forms).

mod cpu_pass;
mod lbfgs;
pub(crate) mod logistic;

use candle_core::{D, DType, Device, Result, Tensor};

pub use logistic::{LogisticConfig, LogisticFit, logistic_loss_grad, train_logistic_probes};

use crate::error::{arg, shape};

/// `K` linear probes: `score_k(x) = weights[k]·x + bias[k]`.
#[derive(Clone, Debug)]
pub struct LinearProbes {
    /// `[K, D]`, f32.
    pub weights: Tensor,
    /// `[K]`, f32.
    pub bias: Tensor,
}

impl LinearProbes {
    /// Scores of activations `x` (`[K, N, D]`): `[K, N]`, f32.
    ///
    /// ```
    /// use candle_core::{Device, Tensor};
    /// use tdhook_kernels::LinearProbes;
    /// let p = LinearProbes {
    ///     weights: Tensor::new(&[[1f32, 0.]], &Device::Cpu)?,
    ///     bias: Tensor::new(&[0.5f32], &Device::Cpu)?,
    /// };
    /// let x = Tensor::new(&[[[2f32, 7.], [-1., 3.]]], &Device::Cpu)?;
    /// assert_eq!(p.scores(&x)?.to_vec2::<f32>()?, vec![vec![2.5, -0.5]]);
    /// # Ok::<(), candle_core::Error>(())
    /// ```
    pub fn scores(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.to_dtype(DType::F32)?;
        x.matmul(&self.weights.unsqueeze(2)?)?
            .squeeze(2)?
            .broadcast_add(&self.bias.unsqueeze(1)?)
    }

    /// Accuracy per probe of the rule `score > 0` against 0/1 `labels` (`[N]`): `Vec` of `K`.
    pub fn accuracy(&self, x: &Tensor, labels: &Tensor) -> Result<Vec<f32>> {
        let pred = self.scores(x)?.gt(0.0)?.to_dtype(DType::F32)?;
        let y = labels.to_dtype(DType::F32)?.unsqueeze(0)?;
        let n = y.dim(1)? as f32;
        let hits = pred
            .broadcast_eq(&y)?
            .to_dtype(DType::F32)?
            .sum(1)?
            .to_vec1::<f32>()?;
        Ok(hits.into_iter().map(|h| h / n).collect())
    }
}

/// Checks `x` (`[K, N, D]`) and returns `(K, N, D)`.
pub(crate) fn dims3(op: &'static str, x: &Tensor) -> Result<(usize, usize, usize)> {
    match x.dims() {
        &[k, n, d] => Ok((k, n, d)),
        other => Err(shape(op, "x", other, "[K, N, D]")),
    }
}

/// 0/1 labels `[N]` (any dtype) as f32 on the host, checked.
pub(crate) fn host_labels(op: &'static str, labels: &Tensor, n: usize) -> Result<Vec<f32>> {
    if labels.dims() != [n] {
        return Err(shape(
            op,
            "labels",
            labels.dims(),
            format!("[N] with N = {n}"),
        ));
    }
    let y = labels.to_dtype(DType::F32)?.to_vec1::<f32>()?;
    if let Some(bad) = y.iter().find(|&&v| v != 0.0 && v != 1.0) {
        return Err(arg(op, format!("labels must be 0 or 1, found {bad}")));
    }
    Ok(y)
}

/// Batched mean-difference classifiers (tdhook's `MeanDifferenceClassifier`), one pass over
/// `x` (a batched matmul):
/// `w = (μ₊ − μ₋)/‖μ₊ − μ₋‖`, `b = −½(‖μ₊‖² − ‖μ₋‖²)/‖μ₊ − μ₋‖`, per probe.
///
/// * `x`: `[K, N, D]` activations (any float dtype, any device); `labels`: `[N]`, 0/1, both
///   classes present.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use tdhook_kernels::mean_difference_probes;
/// let x = Tensor::new(&[[[2f32, 0.], [0., 0.]]], &Device::Cpu)?;
/// let p = mean_difference_probes(&x, &Tensor::new(&[1u8, 0], &Device::Cpu)?)?;
/// assert_eq!(p.weights.to_vec2::<f32>()?, vec![vec![1., 0.]]);
/// assert_eq!(p.bias.to_vec1::<f32>()?, vec![-1.]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn mean_difference_probes(x: &Tensor, labels: &Tensor) -> Result<LinearProbes> {
    const OP: &str = "mean_difference_probes";
    let (_, n, _) = dims3(OP, x)?;
    let y = host_labels(OP, labels, n)?;
    let n1 = y.iter().sum::<f32>();
    let n0 = n as f32 - n1;
    if n1 == 0.0 || n0 == 0.0 {
        return Err(arg(OP, "both classes must be present"));
    }
    let mut w = Vec::with_capacity(2 * n);
    w.extend(y.iter().map(|&v| v / n1));
    w.extend(y.iter().map(|&v| (1.0 - v) / n0));
    let k = x.dim(0)?;
    // [K, 2, N] materialised: batched GEMMs want a real batch stride
    let w = Tensor::from_vec(w, (1, 2, n), x.device())?
        .broadcast_as((k, 2, n))?
        .contiguous()?;
    let x = x.to_dtype(DType::F32)?;
    let mu = w.matmul(&x)?; // [K, 2, D]
    let mu_pos = mu.narrow(1, 0, 1)?.squeeze(1)?;
    let mu_neg = mu.narrow(1, 1, 1)?.squeeze(1)?;
    let coef = (&mu_pos - &mu_neg)?;
    let norm = coef.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?; // [K, 1]
    let half_gap = ((mu_pos.sqr()?.sum(D::Minus1)? - mu_neg.sqr()?.sum(D::Minus1)?)? * -0.5)?;
    Ok(LinearProbes {
        weights: coef.broadcast_div(&norm)?,
        bias: (half_gap / norm.squeeze(1)?)?,
    })
}

/// Batched ridge regression in closed form, per probe
/// `min ‖y − X w − b‖² + alpha ‖w‖²` (scikit-learn `Ridge(alpha)`; the intercept is not
/// penalised). Solved on the `D × D` normal equations when `N >= D`, on the `N × N` dual
/// otherwise (Gram matrices by batched matmul on `x`'s device, Cholesky in f64 on the host).
///
/// * `x`: `[K, N, D]`; `y`: `[N]` (shared) or `[K, N]` targets (0/1 labels work too).
///
/// ```
/// use candle_core::{Device, Tensor};
/// use tdhook_kernels::ridge_probes;
/// let x = Tensor::new(&[[[0f32], [1.], [2.]]], &Device::Cpu)?;
/// let p = ridge_probes(&x, &Tensor::new(&[1f32, 3., 5.], &Device::Cpu)?, 0.0, true)?;
/// let (w, b) = (p.weights.to_vec2::<f32>()?[0][0], p.bias.to_vec1::<f32>()?[0]);
/// assert!((w - 2.0).abs() < 1e-5 && (b - 1.0).abs() < 1e-5);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn ridge_probes(
    x: &Tensor,
    y: &Tensor,
    alpha: f64,
    fit_intercept: bool,
) -> Result<LinearProbes> {
    const OP: &str = "ridge_probes";
    let (k, n, d) = dims3(OP, x)?;
    if alpha < 0.0 {
        return Err(arg(OP, "alpha must be >= 0"));
    }
    let y = match y.dims() {
        [m] if *m == n => y
            .to_dtype(DType::F32)?
            .unsqueeze(0)?
            .broadcast_as((k, n))?
            .contiguous()?,
        [kk, m] if *kk == k && *m == n => y.to_dtype(DType::F32)?.contiguous()?,
        other => {
            return Err(shape(
                OP,
                "y",
                other,
                format!("[N] or [K, N] with K = {k}, N = {n}"),
            ));
        }
    };
    let x = x.to_dtype(DType::F32)?;
    let (xc, yc, xm, ym) = if fit_intercept {
        let xm = x.mean_keepdim(1)?; // [K, 1, D]
        let ym = y.mean_keepdim(1)?; // [K, 1]
        (
            x.broadcast_sub(&xm)?,
            y.broadcast_sub(&ym)?,
            Some(xm),
            Some(ym),
        )
    } else {
        (x.clone(), y.clone(), None, None)
    };
    let yc3 = yc.unsqueeze(2)?; // [K, N, 1]
    let w = if n >= d {
        let gram = xc.transpose(1, 2)?.matmul(&xc)?; // [K, D, D]
        let rhs = xc.transpose(1, 2)?.matmul(&yc3)?.squeeze(2)?; // [K, D]
        let gram = to_host_f64(&gram)?;
        let rhs = to_host_f64(&rhs)?;
        let w = crate::linalg::batched_spd_solve(&gram, &rhs, k, d, alpha);
        Tensor::from_vec(
            w.into_iter().map(|v| v as f32).collect::<Vec<_>>(),
            (k, d),
            &Device::Cpu,
        )?
        .to_device(x.device())?
    } else {
        let gram = xc.matmul(&xc.transpose(1, 2)?)?; // [K, N, N]
        let gram = to_host_f64(&gram)?;
        let rhs = to_host_f64(&yc)?;
        let a = crate::linalg::batched_spd_solve(&gram, &rhs, k, n, alpha);
        let a = Tensor::from_vec(
            a.into_iter().map(|v| v as f32).collect::<Vec<_>>(),
            (k, 1, n),
            &Device::Cpu,
        )?
        .to_device(x.device())?;
        a.matmul(&xc)?.squeeze(1)? // [K, D]
    };
    let b = match (xm, ym) {
        (Some(xm), Some(ym)) => {
            let xw = xm.squeeze(1)?.mul(&w)?.sum(1)?; // [K]
            (ym.squeeze(1)? - xw)?
        }
        _ => Tensor::zeros(k, DType::F32, x.device())?,
    };
    Ok(LinearProbes {
        weights: w,
        bias: b,
    })
}

fn to_host_f64(t: &Tensor) -> Result<Vec<f64>> {
    t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()
}
