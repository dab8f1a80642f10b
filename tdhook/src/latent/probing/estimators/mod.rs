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

mod logistic;
mod mean_difference;
mod ridge;
#[cfg(test)]
mod tests;

use crate::error::Result;
use candle_core::{DType, Device, Tensor};
pub use logistic::{LogisticRegression, LogisticSolver};
pub use mean_difference::MeanDifferenceClassifier;
pub use ridge::Ridge;

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
