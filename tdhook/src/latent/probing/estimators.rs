//! Estimators a probe fits on activations: [`MeanDifferenceClassifier`] (tdhook's),
//! [`LogisticRegression`] and [`Ridge`] (sklearn's, which tdhook's examples pass in).
//!
//! All take `x: [N, F]` (any float or integer dtype, any device) and `y: [N]`, compute in `f64`
//! on the host, and are deterministic: the same data gives the same bits. Fitted parameters are
//! returned as `f32` tensors on the device `x` was on ([`Estimator::coef`],
//! [`Estimator::intercept`]), or in full precision via each estimator's `fitted()`.
//!
//! Classifiers are binary: labels must be `0` or `1` (any dtype) and both must be present.

use super::linalg::{
    cholesky, cholesky_solve, dot, matvec, matvec_t, outer_gram, solve_spd_jitter, weighted_gram,
};
use crate::error::Result;
use candle_core::{DType, Device, Tensor};

/// Why an estimator could not fit or predict. Each message names the estimator and the fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EstimatorError {
    /// A classifier was fitted on labels of one class only.
    #[error(
        "{estimator}.fit: Both classes must be present in y, but all {n} labels are {class}; \
         give it samples of class 0 and of class 1"
    )]
    OneClass {
        /// The estimator.
        estimator: &'static str,
        /// The one class present.
        class: u8,
        /// How many labels there were.
        n: usize,
    },

    /// A classifier was given a label other than 0 / 1.
    #[error(
        "{estimator}.fit: labels must be 0 or 1 (binary classification), but y holds {value}; \
         map the two classes to 0 and 1"
    )]
    BadLabel {
        /// The estimator.
        estimator: &'static str,
        /// The offending label.
        value: f64,
    },

    /// `x` or `y` has the wrong shape.
    #[error("{estimator}.{method}: {problem}")]
    Shape {
        /// The estimator.
        estimator: &'static str,
        /// `fit` or `predict`.
        method: &'static str,
        /// The shapes and what they must be.
        problem: String,
    },

    /// `predict` / `coef` / `intercept` before `fit`.
    #[error("{estimator} is not fitted; call fit(x, y) first")]
    NotFitted {
        /// The estimator.
        estimator: &'static str,
    },

    /// `x` or `y` holds NaN or infinite values.
    #[error(
        "{estimator}.{method}: {what} holds NaN or infinite values; probe finite activations \
         (check the model's dtype and inputs)"
    )]
    NotFinite {
        /// The estimator.
        estimator: &'static str,
        /// `fit` or `predict`.
        method: &'static str,
        /// `x` or `y`.
        what: &'static str,
    },

    /// A hyper-parameter is out of range.
    #[error("{estimator}: {param} must be {rule}, got {value}")]
    BadParam {
        /// The estimator.
        estimator: &'static str,
        /// The parameter.
        param: &'static str,
        /// Its valid range.
        rule: &'static str,
        /// The value given.
        value: f64,
    },

    /// The closed-form system has no unique solution.
    #[error(
        "{estimator}.fit: {matrix} is singular ({n} samples, {f} features), so the solution is \
         not unique; use alpha > 0"
    )]
    Singular {
        /// The estimator.
        estimator: &'static str,
        /// Which matrix.
        matrix: &'static str,
        /// Samples.
        n: usize,
        /// Features.
        f: usize,
    },
}

/// An estimator a probe fits on `[N, F]` activations and `[N]` labels.
pub trait Estimator: Send {
    /// The estimator's name, for errors.
    fn name(&self) -> &'static str;
    /// Fit on `x: [N, F]` and `y: [N]`.
    fn fit(&mut self, x: &Tensor, y: &Tensor) -> Result<()>;
    /// Predictions for `x: [M, F]`: `[M]` (`u8` classes 0 / 1 for classifiers, `f32` values for
    /// regressors), on `x`'s device.
    fn predict(&self, x: &Tensor) -> Result<Tensor>;
    /// The fitted coefficients, `f32` (classifiers: `[1, F]`, as sklearn's / tdhook's `coef_`;
    /// [`Ridge`]: `[F]`).
    fn coef(&self) -> Result<Tensor>;
    /// The fitted intercept, `f32` (classifiers: `[1]`; [`Ridge`]: `[]`).
    fn intercept(&self) -> Result<Tensor>;
}

impl<E: Estimator + ?Sized> Estimator for Box<E> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn fit(&mut self, x: &Tensor, y: &Tensor) -> Result<()> {
        (**self).fit(x, y)
    }
    fn predict(&self, x: &Tensor) -> Result<Tensor> {
        (**self).predict(x)
    }
    fn coef(&self) -> Result<Tensor> {
        (**self).coef()
    }
    fn intercept(&self) -> Result<Tensor> {
        (**self).intercept()
    }
}

/// A fitted linear function `x · coef + intercept`, in full precision.
#[derive(Clone, Debug)]
pub struct LinearModel {
    /// One weight per feature.
    pub coef: Vec<f64>,
    /// The bias.
    pub intercept: f64,
    device: Device,
}

impl PartialEq for LinearModel {
    /// Equal parameters (wherever they live).
    fn eq(&self, other: &Self) -> bool {
        self.coef == other.coef && self.intercept == other.intercept
    }
}

impl LinearModel {
    fn decision(&self, x: &[f64], n: usize) -> Vec<f64> {
        let f = self.coef.len();
        matvec(x, n, f, &self.coef)
            .into_iter()
            .map(|z| z + self.intercept)
            .collect()
    }

    fn coef_tensor(&self, dims: &[usize]) -> Result<Tensor> {
        let v: Vec<f32> = self.coef.iter().map(|&c| c as f32).collect();
        Ok(Tensor::from_vec(v, dims, &self.device)?)
    }

    fn intercept_tensor(&self, dims: &[usize]) -> Result<Tensor> {
        Ok(Tensor::from_vec(
            vec![self.intercept as f32],
            dims,
            &self.device,
        )?)
    }

    /// `x [M, F]` on the host, checked against the fitted feature count.
    fn host_x(&self, x: &Tensor, estimator: &'static str) -> Result<(Vec<f64>, usize)> {
        let (data, n, f) = host_matrix(x, estimator, "predict")?;
        if f != self.coef.len() {
            return Err(shape_err(
                estimator,
                "predict",
                format!(
                    "x has shape {:?}, but the estimator was fitted on {} features; give it \
                     [M, {}]",
                    x.dims(),
                    self.coef.len(),
                    self.coef.len()
                ),
            ));
        }
        Ok((data, n))
    }
}

fn shape_err(estimator: &'static str, method: &'static str, problem: String) -> crate::Error {
    EstimatorError::Shape {
        estimator,
        method,
        problem,
    }
    .into()
}

/// `x: [N, F]` as row-major `f64` on the host, with its dims; checked finite.
fn host_matrix(
    x: &Tensor,
    estimator: &'static str,
    method: &'static str,
) -> Result<(Vec<f64>, usize, usize)> {
    let &[n, f] = x.dims() else {
        return Err(shape_err(
            estimator,
            method,
            format!(
                "x must be [N, F] (2-D), got shape {:?}; flatten the features first, e.g. \
                 x.flatten_from(1)",
                x.dims()
            ),
        ));
    };
    let data = to_host(x)?;
    if data.iter().any(|v| !v.is_finite()) {
        return Err(EstimatorError::NotFinite {
            estimator,
            method,
            what: "x",
        }
        .into());
    }
    Ok((data, n, f))
}

/// `y: [N]` on the host, `N` from `x`; checked finite.
fn host_labels(y: &Tensor, x: &Tensor, estimator: &'static str) -> Result<Vec<f64>> {
    let n = x.dims()[0];
    if y.dims() != [n] {
        return Err(shape_err(
            estimator,
            "fit",
            format!(
                "y must be [N] with N = x's first dim, but x has shape {:?} and y has shape {:?}",
                x.dims(),
                y.dims()
            ),
        ));
    }
    let data = to_host(y)?;
    if data.iter().any(|v| !v.is_finite()) {
        return Err(EstimatorError::NotFinite {
            estimator,
            method: "fit",
            what: "y",
        }
        .into());
    }
    Ok(data)
}

fn to_host(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.to_device(&Device::Cpu)?
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?)
}

/// Checks binary labels: every one 0 or 1, both present. Returns the count of 1s.
fn check_binary(y: &[f64], estimator: &'static str) -> Result<usize> {
    if let Some(&bad) = y.iter().find(|&&v| v != 0.0 && v != 1.0) {
        return Err(EstimatorError::BadLabel {
            estimator,
            value: bad,
        }
        .into());
    }
    let pos = y.iter().filter(|&&v| v == 1.0).count();
    if pos == 0 || pos == y.len() {
        return Err(EstimatorError::OneClass {
            estimator,
            class: u8::from(pos > 0),
            n: y.len(),
        }
        .into());
    }
    Ok(pos)
}

fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// `log(1 + exp(z))`, stable.
fn softplus(z: f64) -> f64 {
    z.max(0.0) + (-z.abs()).exp().ln_1p()
}

fn classes(decision: &[f64], device: &Device) -> Result<Tensor> {
    let v: Vec<u8> = decision.iter().map(|&d| u8::from(d > 0.0)).collect();
    let n = v.len();
    Ok(Tensor::from_vec(v, n, device)?)
}

fn f32_vec(v: &[f64], device: &Device) -> Result<Tensor> {
    let out: Vec<f32> = v.iter().map(|&d| d as f32).collect();
    let n = out.len();
    Ok(Tensor::from_vec(out, n, device)?)
}

/// `[1 − σ(d), σ(d)]` per row: `[N, 2]`.
fn proba(decision: &[f64], device: &Device) -> Result<Tensor> {
    let mut out = Vec::with_capacity(decision.len() * 2);
    for &d in decision {
        let p = sigmoid(d);
        out.push((1.0 - p) as f32);
        out.push(p as f32);
    }
    Ok(Tensor::from_vec(out, (decision.len(), 2), device)?)
}

/// tdhook's `MeanDifferenceClassifier`: the direction from the negative class mean to the
/// positive one, with the hyperplane halfway between.
///
/// `coef = μ₊ − μ₋`, `intercept = −½(‖μ₊‖² − ‖μ₋‖²)`, both divided by `‖coef‖` when `normalize`
/// (the default; skipped when the means coincide). `predict` is `x · coef + intercept > 0`.
///
/// ```
/// use tdhook::latent::probing::{Estimator, MeanDifferenceClassifier};
/// use candle_core::{Device, Tensor};
/// # fn main() -> tdhook::Result<()> {
/// let x = Tensor::new(&[[2f32, 0.], [4., 0.], [0., 2.], [0., 4.]], &Device::Cpu)?;
/// let y = Tensor::new(&[1u8, 1, 0, 0], &Device::Cpu)?;
/// let mut mdc = MeanDifferenceClassifier::new().normalize(false);
/// mdc.fit(&x, &y)?;
/// // μ₊ = (3, 0), μ₋ = (0, 3): coef = (3, −3), intercept = −½(9 − 9) = 0.
/// assert_eq!(mdc.coef()?.to_vec2::<f32>()?, [[3., -3.]]);
/// assert_eq!(mdc.predict(&x)?.to_vec1::<u8>()?, [1, 1, 0, 0]);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct MeanDifferenceClassifier {
    normalize: bool,
    fitted: Option<LinearModel>,
}

impl Default for MeanDifferenceClassifier {
    fn default() -> Self {
        Self::new()
    }
}

impl MeanDifferenceClassifier {
    const NAME: &'static str = "MeanDifferenceClassifier";

    /// Unfitted, `normalize = true` (tdhook's default).
    pub fn new() -> Self {
        Self {
            normalize: true,
            fitted: None,
        }
    }

    /// Divide coef and intercept by `‖coef‖` (default `true`).
    pub fn normalize(mut self, normalize: bool) -> Self {
        self.normalize = normalize;
        self
    }

    /// The fitted parameters in full precision, `None` before `fit`.
    pub fn fitted(&self) -> Option<&LinearModel> {
        self.fitted.as_ref()
    }

    fn model(&self) -> Result<&LinearModel> {
        self.fitted.as_ref().ok_or_else(|| {
            EstimatorError::NotFitted {
                estimator: Self::NAME,
            }
            .into()
        })
    }

    /// `x · coef + intercept`: `[M]`, `f32`.
    pub fn decision_function(&self, x: &Tensor) -> Result<Tensor> {
        let m = self.model()?;
        let (data, n) = m.host_x(x, Self::NAME)?;
        f32_vec(&m.decision(&data, n), x.device())
    }

    /// `[1 − σ(d), σ(d)]` with `d` the decision function: `[M, 2]`, `f32`.
    pub fn predict_proba(&self, x: &Tensor) -> Result<Tensor> {
        let m = self.model()?;
        let (data, n) = m.host_x(x, Self::NAME)?;
        proba(&m.decision(&data, n), x.device())
    }
}

impl Estimator for MeanDifferenceClassifier {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn fit(&mut self, x: &Tensor, y: &Tensor) -> Result<()> {
        let (data, n, f) = host_matrix(x, Self::NAME, "fit")?;
        if y.rank() > 1 {
            return Err(shape_err(
                Self::NAME,
                "fit",
                format!(
                    "Multiclass classification not supported: y must be [N], got shape {:?}",
                    y.dims()
                ),
            ));
        }
        let labels = host_labels(y, x, Self::NAME)?;
        let pos_count = check_binary(&labels, Self::NAME)? as f64;
        let neg_count = n as f64 - pos_count;
        let mut pos = vec![0.0; f];
        let mut neg = vec![0.0; f];
        for (i, &label) in labels.iter().enumerate() {
            let acc = if label == 1.0 { &mut pos } else { &mut neg };
            for (a, &v) in acc.iter_mut().zip(&data[i * f..(i + 1) * f]) {
                *a += v;
            }
        }
        pos.iter_mut().for_each(|v| *v /= pos_count);
        neg.iter_mut().for_each(|v| *v /= neg_count);
        let mut coef: Vec<f64> = pos.iter().zip(&neg).map(|(p, q)| p - q).collect();
        let mut intercept = -0.5 * (dot(&pos, &pos) - dot(&neg, &neg));
        if self.normalize {
            let norm = dot(&coef, &coef).sqrt();
            if norm > 0.0 {
                coef.iter_mut().for_each(|c| *c /= norm);
                intercept /= norm;
            }
        }
        self.fitted = Some(LinearModel {
            coef,
            intercept,
            device: x.device().clone(),
        });
        Ok(())
    }

    fn predict(&self, x: &Tensor) -> Result<Tensor> {
        let m = self.model()?;
        let (data, n) = m.host_x(x, Self::NAME)?;
        classes(&m.decision(&data, n), x.device())
    }

    fn coef(&self) -> Result<Tensor> {
        let m = self.model()?;
        m.coef_tensor(&[1, m.coef.len()])
    }

    fn intercept(&self) -> Result<Tensor> {
        self.model()?.intercept_tensor(&[1])
    }
}

/// How [`LogisticRegression`] solves each Newton step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogisticSolver {
    /// [`LogisticSolver::NewtonCholesky`] up to 256 parameters, [`LogisticSolver::NewtonCg`]
    /// above.
    #[default]
    Auto,
    /// Form the Hessian and solve by Cholesky: `O(N·F²)` per step.
    NewtonCholesky,
    /// Hessian-free: Jacobi-preconditioned conjugate gradients on Hessian–vector products,
    /// `O(N·F)` per CG iteration.
    NewtonCg,
}

/// Binary logistic regression with an L2 penalty, sklearn's objective:
/// `min_w,b  C · Σᵢ log(1 + exp(−ỹᵢ (xᵢ·w + b))) + ½‖w‖²` (`ỹ = ±1`; the intercept is not
/// penalised, as with sklearn's `lbfgs` / `newton-cholesky` solvers).
///
/// Full batch, deterministic: Newton's method with an Armijo line search, stopping when the
/// largest entry of the gradient of the mean penalised loss is at most `tol` (default `1e-8`) —
/// tighter than sklearn's default stop, so it lands on sklearn's optimum to that solver's
/// precision. `C = f64::INFINITY` means no penalty (sklearn's `penalty=None`).
///
/// ```
/// use tdhook::latent::probing::{Estimator, LogisticRegression};
/// use candle_core::{Device, Tensor};
/// # fn main() -> tdhook::Result<()> {
/// let x = Tensor::new(&[[-2f32], [-1.], [1.], [2.]], &Device::Cpu)?;
/// let y = Tensor::new(&[0u8, 0, 1, 1], &Device::Cpu)?;
/// let mut lr = LogisticRegression::new().c(10.0);
/// lr.fit(&x, &y)?;
/// assert!(lr.converged());
/// assert_eq!(lr.predict(&x)?.to_vec1::<u8>()?, [0, 0, 1, 1]);
/// assert!(lr.coef()?.to_vec2::<f32>()?[0][0] > 0.0);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct LogisticRegression {
    c: f64,
    fit_intercept: bool,
    max_iter: usize,
    tol: f64,
    solver: LogisticSolver,
    fitted: Option<LinearModel>,
    n_iter: usize,
    converged: bool,
}

impl Default for LogisticRegression {
    fn default() -> Self {
        Self::new()
    }
}

/// The penalised mean log-loss over `θ = [w, b]`.
struct Logistic<'a> {
    x: &'a [f64],
    y: &'a [f64],
    n: usize,
    f: usize,
    /// `1 / (C·N)`: the penalty on the mean loss.
    lam: f64,
    fit_intercept: bool,
}

impl Logistic<'_> {
    fn dim(&self) -> usize {
        self.f + usize::from(self.fit_intercept)
    }

    fn margins(&self, th: &[f64]) -> Vec<f64> {
        let b = if self.fit_intercept { th[self.f] } else { 0.0 };
        matvec(self.x, self.n, self.f, &th[..self.f])
            .into_iter()
            .map(|z| z + b)
            .collect()
    }

    fn loss(&self, th: &[f64]) -> f64 {
        let z = self.margins(th);
        let data: f64 = z
            .iter()
            .zip(self.y)
            .map(|(&z, &y)| softplus(z) - y * z)
            .sum();
        let w = &th[..self.f];
        data / self.n as f64 + 0.5 * self.lam * dot(w, w)
    }

    /// The gradient and the Hessian weights `sᵢ = pᵢ(1 − pᵢ) / N`.
    fn grad(&self, th: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let z = self.margins(th);
        let nf = self.n as f64;
        let p: Vec<f64> = z.iter().map(|&z| sigmoid(z)).collect();
        let r: Vec<f64> = p.iter().zip(self.y).map(|(p, y)| (p - y) / nf).collect();
        let s: Vec<f64> = p.iter().map(|p| p * (1.0 - p) / nf).collect();
        let mut g = matvec_t(self.x, self.n, self.f, &r);
        for (gj, wj) in g.iter_mut().zip(&th[..self.f]) {
            *gj += self.lam * wj;
        }
        if self.fit_intercept {
            g.push(r.iter().sum());
        }
        (g, s)
    }

    fn hessian(&self, s: &[f64]) -> Vec<f64> {
        let (f, d) = (self.f, self.dim());
        let gram = weighted_gram(self.x, self.n, f, Some(s));
        let mut h = vec![0.0; d * d];
        for j in 0..f {
            h[j * d..j * d + f].copy_from_slice(&gram[j * f..(j + 1) * f]);
            h[j * d + j] += self.lam;
        }
        if self.fit_intercept {
            let xs = matvec_t(self.x, self.n, f, s);
            for j in 0..f {
                h[j * d + f] = xs[j];
                h[f * d + j] = xs[j];
            }
            h[f * d + f] = s.iter().sum();
        }
        h
    }

    fn hess_vec(&self, s: &[f64], v: &[f64]) -> Vec<f64> {
        let f = self.f;
        let mut xv = matvec(self.x, self.n, f, &v[..f]);
        let vb = if self.fit_intercept { v[f] } else { 0.0 };
        for (u, si) in xv.iter_mut().zip(s) {
            *u = (*u + vb) * si;
        }
        let mut out = matvec_t(self.x, self.n, f, &xv);
        for (o, vj) in out.iter_mut().zip(&v[..f]) {
            *o += self.lam * vj;
        }
        if self.fit_intercept {
            out.push(xv.iter().sum());
        }
        out
    }

    fn hess_diag(&self, s: &[f64]) -> Vec<f64> {
        let f = self.f;
        let mut d = vec![self.lam; f];
        for (row, si) in self.x.chunks_exact(f.max(1)).zip(s) {
            for (dj, &xij) in d.iter_mut().zip(row) {
                *dj += si * xij * xij;
            }
        }
        if self.fit_intercept {
            d.push(s.iter().sum());
        }
        d
    }

    /// Solve `H d = rhs` by preconditioned CG to relative residual `rtol`.
    fn cg(&self, s: &[f64], rhs: &[f64], rtol: f64) -> Vec<f64> {
        let dim = rhs.len();
        let diag: Vec<f64> = self
            .hess_diag(s)
            .into_iter()
            .map(|d| d.max(1e-300))
            .collect();
        let mut x = vec![0.0; dim];
        let mut r = rhs.to_vec();
        let mut z: Vec<f64> = r.iter().zip(&diag).map(|(r, d)| r / d).collect();
        let mut p = z.clone();
        let mut rz = dot(&r, &z);
        let target = rtol * dot(rhs, rhs).sqrt();
        for _ in 0..(2 * dim).max(50) {
            if dot(&r, &r).sqrt() <= target {
                break;
            }
            let hp = self.hess_vec(s, &p);
            let php = dot(&p, &hp);
            if php <= 0.0 || !php.is_finite() {
                break;
            }
            let alpha = rz / php;
            for i in 0..dim {
                x[i] += alpha * p[i];
                r[i] -= alpha * hp[i];
            }
            z = r.iter().zip(&diag).map(|(r, d)| r / d).collect();
            let rz_new = dot(&r, &z);
            let beta = rz_new / rz;
            rz = rz_new;
            for i in 0..dim {
                p[i] = z[i] + beta * p[i];
            }
        }
        x
    }
}

impl LogisticRegression {
    const NAME: &'static str = "LogisticRegression";

    /// Unfitted: `C = 1`, `fit_intercept = true`, `max_iter = 100`, `tol = 1e-8`.
    pub fn new() -> Self {
        Self {
            c: 1.0,
            fit_intercept: true,
            max_iter: 100,
            tol: 1e-8,
            solver: LogisticSolver::Auto,
            fitted: None,
            n_iter: 0,
            converged: false,
        }
    }

    /// Inverse penalty strength (sklearn's `C`, default 1; `f64::INFINITY`: no penalty).
    pub fn c(mut self, c: f64) -> Self {
        self.c = c;
        self
    }

    /// Fit an (unpenalised) intercept (default `true`).
    pub fn fit_intercept(mut self, fit: bool) -> Self {
        self.fit_intercept = fit;
        self
    }

    /// At most this many Newton steps (default 100).
    pub fn max_iter(mut self, max_iter: usize) -> Self {
        self.max_iter = max_iter;
        self
    }

    /// Stop when `max |∇|` of the mean penalised loss is at most `tol` (default `1e-8`).
    pub fn tol(mut self, tol: f64) -> Self {
        self.tol = tol;
        self
    }

    /// How each Newton step is solved (default [`LogisticSolver::Auto`]).
    pub fn solver(mut self, solver: LogisticSolver) -> Self {
        self.solver = solver;
        self
    }

    /// The fitted parameters in full precision, `None` before `fit`.
    pub fn fitted(&self) -> Option<&LinearModel> {
        self.fitted.as_ref()
    }

    /// Newton steps the last fit took.
    pub fn n_iter(&self) -> usize {
        self.n_iter
    }

    /// Whether the last fit reached `tol` within `max_iter`.
    pub fn converged(&self) -> bool {
        self.converged
    }

    fn model(&self) -> Result<&LinearModel> {
        self.fitted.as_ref().ok_or_else(|| {
            EstimatorError::NotFitted {
                estimator: Self::NAME,
            }
            .into()
        })
    }

    /// `x · coef + intercept`: `[M]`, `f32`.
    pub fn decision_function(&self, x: &Tensor) -> Result<Tensor> {
        let m = self.model()?;
        let (data, n) = m.host_x(x, Self::NAME)?;
        f32_vec(&m.decision(&data, n), x.device())
    }

    /// `[P(y = 0), P(y = 1)]` per row: `[M, 2]`, `f32`.
    pub fn predict_proba(&self, x: &Tensor) -> Result<Tensor> {
        let m = self.model()?;
        let (data, n) = m.host_x(x, Self::NAME)?;
        proba(&m.decision(&data, n), x.device())
    }

    fn check_params(&self) -> Result<()> {
        let bad = |param, rule, value| {
            Err(EstimatorError::BadParam {
                estimator: Self::NAME,
                param,
                rule,
                value,
            }
            .into())
        };
        if self.c.is_nan() || self.c <= 0.0 {
            return bad("C", "positive (f64::INFINITY for no penalty)", self.c);
        }
        if self.tol.is_nan() || self.tol < 0.0 {
            return bad("tol", "non-negative", self.tol);
        }
        Ok(())
    }
}

impl Estimator for LogisticRegression {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn fit(&mut self, x: &Tensor, y: &Tensor) -> Result<()> {
        self.check_params()?;
        let (data, n, f) = host_matrix(x, Self::NAME, "fit")?;
        let labels = host_labels(y, x, Self::NAME)?;
        check_binary(&labels, Self::NAME)?;
        let problem = Logistic {
            x: &data,
            y: &labels,
            n,
            f,
            lam: if self.c.is_infinite() {
                0.0
            } else {
                1.0 / (self.c * n as f64)
            },
            fit_intercept: self.fit_intercept,
        };
        let dim = problem.dim();
        let dense = match self.solver {
            LogisticSolver::Auto => dim <= 256,
            LogisticSolver::NewtonCholesky => true,
            LogisticSolver::NewtonCg => false,
        };
        let mut th = vec![0.0; dim];
        let mut loss = problem.loss(&th);
        self.converged = false;
        self.n_iter = 0;
        loop {
            let (g, s) = problem.grad(&th);
            let gmax = g.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            if gmax <= self.tol {
                self.converged = true;
                break;
            }
            if self.n_iter >= self.max_iter {
                break;
            }
            self.n_iter += 1;
            let neg_g: Vec<f64> = g.iter().map(|v| -v).collect();
            let mut d = if dense {
                solve_spd_jitter(&problem.hessian(&s), dim, &neg_g)
            } else {
                let gnorm = dot(&g, &g).sqrt();
                problem.cg(&s, &neg_g, gnorm.sqrt().min(0.1))
            };
            let mut slope = dot(&g, &d);
            if slope >= 0.0 || slope.is_nan() {
                d = neg_g;
                slope = dot(&g, &d);
            }
            // Armijo backtracking; the slack admits steps whose loss change is lost to rounding.
            let slack = 1e-13 * loss.abs().max(1.0);
            let mut t = 1.0;
            let accepted = loop {
                let trial: Vec<f64> = th.iter().zip(&d).map(|(a, b)| a + t * b).collect();
                let trial_loss = problem.loss(&trial);
                if trial_loss <= loss + 1e-4 * t * slope + slack {
                    th = trial;
                    loss = trial_loss;
                    break true;
                }
                t *= 0.5;
                if t < 1e-12 {
                    break false;
                }
            };
            if !accepted {
                break;
            }
        }
        if !self.converged {
            tracing::warn!(
                n_iter = self.n_iter,
                "LogisticRegression did not reach tol = {} in {} steps; raise max_iter or lower C",
                self.tol,
                self.max_iter
            );
        }
        let intercept = if self.fit_intercept { th[f] } else { 0.0 };
        th.truncate(f);
        self.fitted = Some(LinearModel {
            coef: th,
            intercept,
            device: x.device().clone(),
        });
        Ok(())
    }

    fn predict(&self, x: &Tensor) -> Result<Tensor> {
        let m = self.model()?;
        let (data, n) = m.host_x(x, Self::NAME)?;
        classes(&m.decision(&data, n), x.device())
    }

    fn coef(&self) -> Result<Tensor> {
        let m = self.model()?;
        m.coef_tensor(&[1, m.coef.len()])
    }

    fn intercept(&self) -> Result<Tensor> {
        self.model()?.intercept_tensor(&[1])
    }
}

/// Ridge regression, sklearn's: `min_w,b ‖y − Xw − b‖² + α‖w‖²`, in closed form.
///
/// With `fit_intercept` (default) `X` and `y` are centred, `(XᵀX + αI) w = Xᵀy` is solved by
/// Cholesky (or, with more features than samples, the kernel form `w = Xᵀ(XXᵀ + αI)⁻¹ y`, as
/// sklearn does), and `b = ȳ − x̄ · w`. `coef` is `[F]` and `intercept` `[]` (sklearn's shapes
/// for a 1-D target).
///
/// ```
/// use tdhook::latent::probing::{Estimator, Ridge};
/// use candle_core::{Device, Tensor};
/// # fn main() -> tdhook::Result<()> {
/// let x = Tensor::new(&[[0f32], [1.], [2.], [3.]], &Device::Cpu)?;
/// let y = Tensor::new(&[1f32, 3., 5., 7.], &Device::Cpu)?; // y = 2x + 1
/// let mut ridge = Ridge::new().alpha(0.0);
/// ridge.fit(&x, &y)?;
/// let m = ridge.fitted().unwrap();
/// assert!((m.coef[0] - 2.0).abs() < 1e-12 && (m.intercept - 1.0).abs() < 1e-12);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Ridge {
    alpha: f64,
    fit_intercept: bool,
    fitted: Option<LinearModel>,
}

impl Default for Ridge {
    fn default() -> Self {
        Self::new()
    }
}

impl Ridge {
    const NAME: &'static str = "Ridge";

    /// Unfitted: `alpha = 1`, `fit_intercept = true` (sklearn's defaults).
    pub fn new() -> Self {
        Self {
            alpha: 1.0,
            fit_intercept: true,
            fitted: None,
        }
    }

    /// The penalty (default 1; 0 is least squares, which needs a full-rank `X`).
    pub fn alpha(mut self, alpha: f64) -> Self {
        self.alpha = alpha;
        self
    }

    /// Fit an (unpenalised) intercept (default `true`).
    pub fn fit_intercept(mut self, fit: bool) -> Self {
        self.fit_intercept = fit;
        self
    }

    /// The fitted parameters in full precision, `None` before `fit`.
    pub fn fitted(&self) -> Option<&LinearModel> {
        self.fitted.as_ref()
    }

    fn model(&self) -> Result<&LinearModel> {
        self.fitted.as_ref().ok_or_else(|| {
            EstimatorError::NotFitted {
                estimator: Self::NAME,
            }
            .into()
        })
    }
}

impl Estimator for Ridge {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn fit(&mut self, x: &Tensor, y: &Tensor) -> Result<()> {
        if !self.alpha.is_finite() || self.alpha < 0.0 {
            return Err(EstimatorError::BadParam {
                estimator: Self::NAME,
                param: "alpha",
                rule: "finite and non-negative",
                value: self.alpha,
            }
            .into());
        }
        let (mut data, n, f) = host_matrix(x, Self::NAME, "fit")?;
        let mut target = host_labels(y, x, Self::NAME)?;
        let (x_mean, y_mean) = if self.fit_intercept && n > 0 {
            let mut xm = vec![0.0; f];
            for i in 0..n {
                for (m, v) in xm.iter_mut().zip(&data[i * f..(i + 1) * f]) {
                    *m += v;
                }
            }
            xm.iter_mut().for_each(|m| *m /= n as f64);
            let ym = target.iter().sum::<f64>() / n as f64;
            for i in 0..n {
                for (v, m) in data[i * f..(i + 1) * f].iter_mut().zip(&xm) {
                    *v -= m;
                }
            }
            target.iter_mut().for_each(|t| *t -= ym);
            (xm, ym)
        } else {
            (vec![0.0; f], 0.0)
        };
        let singular = |matrix| EstimatorError::Singular {
            estimator: Self::NAME,
            matrix,
            n,
            f,
        };
        let coef = if f <= n {
            let mut a = weighted_gram(&data, n, f, None);
            for j in 0..f {
                a[j * f + j] += self.alpha;
            }
            let l = cholesky(&a, f).ok_or_else(|| singular("XᵀX + αI"))?;
            cholesky_solve(&l, f, &matvec_t(&data, n, f, &target))
        } else {
            let mut k = outer_gram(&data, n, f);
            for i in 0..n {
                k[i * n + i] += self.alpha;
            }
            let l = cholesky(&k, n).ok_or_else(|| singular("XXᵀ + αI"))?;
            matvec_t(&data, n, f, &cholesky_solve(&l, n, &target))
        };
        let intercept = y_mean - dot(&x_mean, &coef);
        self.fitted = Some(LinearModel {
            coef,
            intercept,
            device: x.device().clone(),
        });
        Ok(())
    }

    fn predict(&self, x: &Tensor) -> Result<Tensor> {
        let m = self.model()?;
        let (data, n) = m.host_x(x, Self::NAME)?;
        f32_vec(&m.decision(&data, n), x.device())
    }

    fn coef(&self) -> Result<Tensor> {
        let m = self.model()?;
        m.coef_tensor(&[m.coef.len()])
    }

    fn intercept(&self) -> Result<Tensor> {
        self.model()?.intercept_tensor(&[])
    }
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)] // the naive references index like the formulas
mod tests {
    use super::*;
    use crate::Error;

    /// Deterministic uniform numbers in [-1, 1).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 11) as f64 / (1u64 << 52) as f64 - 1.0
        }
    }

    /// `n` rows of `f` features; class 1 rows are shifted by `shift` along every feature.
    fn blobs(n: usize, f: usize, shift: f64, seed: u64) -> (Vec<f64>, Vec<f64>) {
        let mut rng = Rng(seed);
        let mut x = Vec::with_capacity(n * f);
        let mut y = Vec::with_capacity(n);
        for i in 0..n {
            let label = (i % 2) as f64;
            for j in 0..f {
                x.push(rng.next() * (1.0 + j as f64 * 0.3) + label * shift);
            }
            y.push(label);
        }
        (x, y)
    }

    fn tx(x: &[f64], n: usize, f: usize) -> Tensor {
        Tensor::from_vec(
            x.iter().map(|&v| v as f32).collect::<Vec<_>>(),
            (n, f),
            &Device::Cpu,
        )
        .unwrap()
    }

    fn ty(y: &[f64]) -> Tensor {
        Tensor::from_vec(
            y.iter().map(|&v| v as f32).collect::<Vec<_>>(),
            y.len(),
            &Device::Cpu,
        )
        .unwrap()
    }

    /// The data as the estimators see it (rounded to f32, as the tensors hold it).
    fn rounded(v: &[f64]) -> Vec<f64> {
        v.iter().map(|&v| v as f32 as f64).collect()
    }

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * (1.0 + b.abs())
    }

    #[test]
    fn mean_difference_equals_the_closed_form_computed_naively() -> Result<()> {
        let (n, f) = (30, 5);
        let (x, y) = blobs(n, f, 0.7, 7);
        let xr = rounded(&x);
        // Naive: the class means, their difference and half the difference of squared norms.
        let mean = |class: f64| -> Vec<f64> {
            let rows: Vec<usize> = (0..n).filter(|&i| y[i] == class).collect();
            (0..f)
                .map(|j| rows.iter().map(|&i| xr[i * f + j]).sum::<f64>() / rows.len() as f64)
                .collect()
        };
        let (mp, mn) = (mean(1.0), mean(0.0));
        let coef: Vec<f64> = (0..f).map(|j| mp[j] - mn[j]).collect();
        let sq = |v: &[f64]| v.iter().map(|a| a * a).sum::<f64>();
        let intercept = -0.5 * (sq(&mp) - sq(&mn));
        let norm = sq(&coef).sqrt();

        let mut raw = MeanDifferenceClassifier::new().normalize(false);
        raw.fit(&tx(&x, n, f), &ty(&y))?;
        let m = raw.fitted().unwrap();
        for j in 0..f {
            assert!(
                close(m.coef[j], coef[j], 1e-12),
                "coef[{j}] {} vs {}",
                m.coef[j],
                coef[j]
            );
        }
        assert!(close(m.intercept, intercept, 1e-12));

        let mut normed = MeanDifferenceClassifier::new();
        normed.fit(&tx(&x, n, f), &ty(&y))?;
        let m = normed.fitted().unwrap();
        for j in 0..f {
            assert!(close(m.coef[j], coef[j] / norm, 1e-12));
        }
        assert!(close(m.intercept, intercept / norm, 1e-12));
        assert_eq!(normed.coef()?.dims(), &[1, f]);
        assert_eq!(normed.intercept()?.dims(), &[1]);

        // predict = decision > 0; predict_proba = [1 − σ, σ].
        let xt = tx(&x, n, f);
        let pred = normed.predict(&xt)?.to_vec1::<u8>()?;
        let proba = normed.predict_proba(&xt)?.to_vec2::<f32>()?;
        for i in 0..n {
            let d: f64 = (0..f).map(|j| xr[i * f + j] * m.coef[j]).sum::<f64>() + m.intercept;
            assert_eq!(pred[i], u8::from(d > 0.0));
            assert!((proba[i][0] + proba[i][1] - 1.0).abs() < 1e-6);
            assert!((proba[i][1] as f64 - 1.0 / (1.0 + (-d).exp())).abs() < 1e-6);
        }
        Ok(())
    }

    #[test]
    fn one_class_only_is_a_typed_error_naming_the_estimator() {
        let x = tx(&[1.0, 2.0, 3.0, 4.0], 2, 2);
        let y = ty(&[1.0, 1.0]);
        for est in [
            &mut MeanDifferenceClassifier::new() as &mut dyn Estimator,
            &mut LogisticRegression::new(),
        ] {
            let err = est.fit(&x, &y).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::Estimator(EstimatorError::OneClass { class: 1, n: 2, .. })
                ),
                "{err:?}"
            );
            let msg = err.to_string();
            assert!(
                msg.contains("Both classes must be present") && msg.contains(est.name()),
                "{msg}"
            );
        }
    }

    #[test]
    fn labels_other_than_0_1_and_bad_shapes_are_typed_errors() {
        let x = tx(&[1.0, 2.0, 3.0, 4.0], 2, 2);
        let err = MeanDifferenceClassifier::new()
            .fit(&x, &ty(&[0.0, 2.0]))
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::Estimator(EstimatorError::BadLabel { value: 2.0, .. })
            ),
            "{err:?}"
        );

        // y of the wrong length names both shapes.
        let err = LogisticRegression::new()
            .fit(&x, &ty(&[0.0, 1.0, 1.0]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("[2, 2]") && err.contains("[3]") && err.contains("LogisticRegression"),
            "{err}"
        );
        // x not 2-D.
        let x1 = ty(&[1.0, 2.0]);
        let err = Ridge::new()
            .fit(&x1, &ty(&[0.0, 1.0]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("[N, F]") && err.contains("[2]"), "{err}");
        // Multiclass y.
        let err = MeanDifferenceClassifier::new()
            .fit(&x, &x)
            .unwrap_err()
            .to_string();
        assert!(err.contains("Multiclass"), "{err}");
        // Predict before fit, and with the wrong feature count.
        let err = Ridge::new().predict(&x).unwrap_err();
        assert!(matches!(
            err,
            Error::Estimator(EstimatorError::NotFitted { estimator: "Ridge" })
        ));
        let mut mdc = MeanDifferenceClassifier::new();
        mdc.fit(&x, &ty(&[0.0, 1.0])).unwrap();
        let err = mdc
            .predict(&tx(&[1.0, 2.0, 3.0], 1, 3))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("[1, 3]") && err.contains("2 features"),
            "{err}"
        );
        // Non-finite data.
        let err = Ridge::new()
            .fit(&tx(&[f64::NAN, 1.0], 2, 1), &ty(&[0.0, 1.0]))
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::Estimator(EstimatorError::NotFinite { what: "x", .. })
            ),
            "{err:?}"
        );
        // Bad hyper-parameters.
        let err = LogisticRegression::new()
            .c(0.0)
            .fit(&x, &ty(&[0.0, 1.0]))
            .unwrap_err();
        assert!(matches!(
            err,
            Error::Estimator(EstimatorError::BadParam { param: "C", .. })
        ));
    }

    /// The gradient of sklearn's objective `C Σ log-loss + ½‖w‖²`, computed naively.
    fn sklearn_grad(
        x: &[f64],
        y: &[f64],
        n: usize,
        f: usize,
        c: f64,
        w: &[f64],
        b: f64,
    ) -> Vec<f64> {
        let mut g: Vec<f64> = w.to_vec();
        let mut gb = 0.0;
        for i in 0..n {
            let z: f64 = (0..f).map(|j| x[i * f + j] * w[j]).sum::<f64>() + b;
            let p = 1.0 / (1.0 + (-z).exp());
            for j in 0..f {
                g[j] += c * (p - y[i]) * x[i * f + j];
            }
            gb += c * (p - y[i]);
        }
        g.push(gb);
        g
    }

    #[test]
    fn logistic_regression_satisfies_kkt_with_both_solvers() -> Result<()> {
        let (n, f) = (60, 8);
        let (x, y) = blobs(n, f, 0.4, 11);
        let xr = rounded(&x);
        let mut fits = vec![];
        for solver in [LogisticSolver::NewtonCholesky, LogisticSolver::NewtonCg] {
            for c in [0.1, 1.0, 50.0] {
                let mut lr = LogisticRegression::new().c(c).solver(solver);
                lr.fit(&tx(&x, n, f), &ty(&y))?;
                assert!(lr.converged(), "{solver:?} C={c}: {} steps", lr.n_iter());
                let m = lr.fitted().unwrap();
                let g = sklearn_grad(&xr, &y, n, f, c, &m.coef, m.intercept);
                let scale = c * n as f64;
                let gmax = g.iter().fold(0.0f64, |a, v| a.max(v.abs()));
                assert!(gmax <= 1e-7 * scale, "{solver:?} C={c}: |∇| = {gmax:e}");
                fits.push((c, m.clone()));
            }
        }
        // Both solvers land on one optimum.
        for k in 0..3 {
            let (a, b) = (&fits[k].1, &fits[k + 3].1);
            for j in 0..f {
                assert!(
                    close(a.coef[j], b.coef[j], 1e-6),
                    "C={}: {} vs {}",
                    fits[k].0,
                    a.coef[j],
                    b.coef[j]
                );
            }
            assert!(close(a.intercept, b.intercept, 1e-6));
        }
        Ok(())
    }

    #[test]
    fn logistic_regression_equals_gradient_descent_run_to_convergence() -> Result<()> {
        let (n, f) = (40, 3);
        let (x, y) = blobs(n, f, 0.5, 3);
        let xr = rounded(&x);
        let c = 2.0;
        // Plain full-batch gradient descent on C Σ ℓ + ½‖w‖², step 1 / L.
        let l = 1.0
            + c * 0.25
                * (0..n)
                    .map(|i| 1.0 + (0..f).map(|j| xr[i * f + j].powi(2)).sum::<f64>())
                    .sum::<f64>();
        let (mut w, mut b) = (vec![0.0; f], 0.0);
        for _ in 0..200_000 {
            let g = sklearn_grad(&xr, &y, n, f, c, &w, b);
            for j in 0..f {
                w[j] -= g[j] / l;
            }
            b -= g[f] / l;
        }
        let mut lr = LogisticRegression::new().c(c);
        lr.fit(&tx(&x, n, f), &ty(&y))?;
        let m = lr.fitted().unwrap();
        for j in 0..f {
            assert!(
                close(m.coef[j], w[j], 1e-6),
                "coef[{j}]: {} vs GD {}",
                m.coef[j],
                w[j]
            );
        }
        assert!(
            close(m.intercept, b, 1e-6),
            "intercept {} vs GD {b}",
            m.intercept
        );

        // Without an intercept the intercept stays 0 and KKT holds on w alone.
        let mut lr = LogisticRegression::new().c(c).fit_intercept(false);
        lr.fit(&tx(&x, n, f), &ty(&y))?;
        let m = lr.fitted().unwrap();
        assert_eq!(m.intercept, 0.0);
        let g = sklearn_grad(&xr, &y, n, f, c, &m.coef, 0.0);
        assert!(
            g[..f].iter().all(|v| v.abs() < 1e-6 * c * n as f64),
            "{g:?}"
        );
        Ok(())
    }

    #[test]
    fn logistic_regression_separates_a_separable_set() -> Result<()> {
        let (n, f) = (50, 4);
        let (x, y) = blobs(n, f, 5.0, 5);
        let mut lr = LogisticRegression::new();
        lr.fit(&tx(&x, n, f), &ty(&y))?;
        let pred = lr.predict(&tx(&x, n, f))?.to_vec1::<u8>()?;
        let correct = pred
            .iter()
            .zip(&y)
            .filter(|(p, y)| **p as f64 == **y)
            .count();
        assert_eq!(correct, n);
        let proba = lr.predict_proba(&tx(&x, n, f))?.to_vec2::<f32>()?;
        assert!(
            proba
                .iter()
                .zip(&pred)
                .all(|(p, &c)| (p[1] > 0.5) == (c == 1))
        );
        assert_eq!(lr.coef()?.dims(), &[1, f]);
        assert_eq!(lr.intercept()?.dims(), &[1]);
        Ok(())
    }

    /// Solve `a x = b` by Gaussian elimination with partial pivoting.
    fn gauss(mut a: Vec<f64>, mut b: Vec<f64>, n: usize) -> Vec<f64> {
        for col in 0..n {
            let piv = (col..n)
                .max_by(|&i, &j| a[i * n + col].abs().total_cmp(&a[j * n + col].abs()))
                .unwrap();
            for k in 0..n {
                a.swap(col * n + k, piv * n + k);
            }
            b.swap(col, piv);
            for r in col + 1..n {
                let m = a[r * n + col] / a[col * n + col];
                for k in col..n {
                    a[r * n + k] -= m * a[col * n + k];
                }
                b[r] -= m * b[col];
            }
        }
        let mut x = vec![0.0; n];
        for r in (0..n).rev() {
            let s: f64 = (r + 1..n).map(|k| a[r * n + k] * x[k]).sum();
            x[r] = (b[r] - s) / a[r * n + r];
        }
        x
    }

    /// Ridge with an unpenalised intercept from the normal equations of `[w, b]`.
    fn ridge_naive(x: &[f64], y: &[f64], n: usize, f: usize, alpha: f64) -> (Vec<f64>, f64) {
        let d = f + 1;
        let row = |i: usize| (0..d).map(move |j| if j < f { x[i * f + j] } else { 1.0 });
        let mut a = vec![0.0; d * d];
        let mut rhs = vec![0.0; d];
        for i in 0..n {
            let r: Vec<f64> = row(i).collect();
            for j in 0..d {
                for k in 0..d {
                    a[j * d + k] += r[j] * r[k];
                }
                rhs[j] += r[j] * y[i];
            }
        }
        for j in 0..f {
            a[j * d + j] += alpha;
        }
        let mut sol = gauss(a, rhs, d);
        let b = sol.pop().unwrap();
        (sol, b)
    }

    #[test]
    fn ridge_equals_the_normal_equations_in_primal_and_kernel_form() -> Result<()> {
        for (n, f) in [(30, 4), (6, 10)] {
            let (x, _) = blobs(n, f, 0.0, 13);
            let mut rng = Rng(99);
            let y: Vec<f64> = (0..n)
                .map(|i| x[i * f] * 2.0 - x[i * f + 1] + 0.5 + 0.1 * rng.next())
                .collect();
            let (xr, yr) = (rounded(&x), rounded(&y));
            for alpha in [0.5, 3.0] {
                let mut ridge = Ridge::new().alpha(alpha);
                ridge.fit(&tx(&x, n, f), &ty(&y))?;
                let m = ridge.fitted().unwrap();
                let (w, b) = ridge_naive(&xr, &yr, n, f, alpha);
                for j in 0..f {
                    assert!(
                        close(m.coef[j], w[j], 1e-9),
                        "n={n} f={f} α={alpha}: {} vs {}",
                        m.coef[j],
                        w[j]
                    );
                }
                assert!(close(m.intercept, b, 1e-9));
                // predict = x · coef + intercept.
                let pred = ridge.predict(&tx(&x, n, f))?.to_vec1::<f32>()?;
                let want: f64 = (0..f).map(|j| xr[j] * w[j]).sum::<f64>() + b;
                assert!((pred[0] as f64 - want).abs() < 1e-4);
            }
        }
        // No intercept: (XᵀX + αI) w = Xᵀy, KKT: Xᵀ(Xw − y) + αw = 0.
        let (n, f) = (20, 3);
        let (x, _) = blobs(n, f, 0.0, 17);
        let y: Vec<f64> = (0..n).map(|i| x[i * f] - x[i * f + 2] + 1.0).collect();
        let mut ridge = Ridge::new().alpha(0.7).fit_intercept(false);
        ridge.fit(&tx(&x, n, f), &ty(&y))?;
        let m = ridge.fitted().unwrap();
        let (xr, yr) = (rounded(&x), rounded(&y));
        for j in 0..f {
            let g: f64 = (0..n)
                .map(|i| {
                    xr[i * f + j] * ((0..f).map(|k| xr[i * f + k] * m.coef[k]).sum::<f64>() - yr[i])
                })
                .sum::<f64>()
                + 0.7 * m.coef[j];
            assert!(g.abs() < 1e-9, "KKT[{j}] = {g:e}");
        }
        assert_eq!(m.intercept, 0.0);
        assert_eq!(ridge.coef()?.dims(), &[f]);
        assert_eq!(ridge.intercept()?.dims(), &[] as &[usize]);
        Ok(())
    }

    #[test]
    fn ridge_without_penalty_on_too_few_samples_is_singular() {
        let (x, y) = blobs(4, 6, 0.0, 1);
        let err = Ridge::new()
            .alpha(0.0)
            .fit(&tx(&x, 4, 6), &ty(&y))
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::Estimator(EstimatorError::Singular { n: 4, f: 6, .. })
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("alpha > 0"));
    }

    #[test]
    fn fits_are_deterministic() -> Result<()> {
        let (x, y) = blobs(40, 6, 0.3, 21);
        let fit = || -> Result<LinearModel> {
            let mut lr = LogisticRegression::new().solver(LogisticSolver::NewtonCg);
            lr.fit(&tx(&x, 40, 6), &ty(&y))?;
            Ok(lr.fitted().unwrap().clone())
        };
        assert_eq!(fit()?, fit()?);
        Ok(())
    }
}
