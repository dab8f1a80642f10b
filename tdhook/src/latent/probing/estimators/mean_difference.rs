//! tdhook's mean-difference classifier: the closed form of the class means.

use super::*;

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
