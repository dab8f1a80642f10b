//! sklearn's `Ridge`: the closed form, primal or dual by shape.

use super::*;

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
