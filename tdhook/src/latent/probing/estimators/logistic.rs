//! sklearn's `LogisticRegression` (binary, L2), by Newton steps or L-BFGS.

use super::*;

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
