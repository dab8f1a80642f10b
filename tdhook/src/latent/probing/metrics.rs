//! Ready-made metrics for [`ProbeManager`](super::ProbeManager): each takes the predictions and
//! the labels (any dtypes, `[N]` each) and is computed in `f64`.

use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor};

/// `compute_metrics(predictions, labels) -> [(name, value)]`.
pub type MetricsFn = dyn Fn(&Tensor, &Tensor) -> Result<Vec<(String, f64)>> + Send + Sync;

fn pair(pred: &Tensor, labels: &Tensor, what: &str) -> Result<(Vec<f64>, Vec<f64>)> {
    if pred.dims() != labels.dims() {
        return Err(Error::Invalid(format!(
            "{what}: predictions have shape {:?} but labels have shape {:?}; they must match \
             (labels are [N], one per sample)",
            pred.dims(),
            labels.dims()
        )));
    }
    let host = |t: &Tensor| -> Result<Vec<f64>> {
        Ok(t.to_device(&Device::Cpu)?
            .to_dtype(DType::F64)?
            .flatten_all()?
            .to_vec1::<f64>()?)
    };
    let (p, l) = (host(pred)?, host(labels)?);
    if p.is_empty() {
        return Err(Error::Invalid(format!("{what} of no samples is undefined")));
    }
    Ok((p, l))
}

/// The fraction of predictions equal to their label.
pub fn accuracy(pred: &Tensor, labels: &Tensor) -> Result<f64> {
    let (p, l) = pair(pred, labels, "accuracy")?;
    Ok(p.iter().zip(&l).filter(|(a, b)| a == b).count() as f64 / p.len() as f64)
}

/// The mean of `(prediction − label)²`.
pub fn mean_squared_error(pred: &Tensor, labels: &Tensor) -> Result<f64> {
    let (p, l) = pair(pred, labels, "mean squared error")?;
    Ok(p.iter()
        .zip(&l)
        .map(|(a, b)| (a - b) * (a - b))
        .sum::<f64>()
        / p.len() as f64)
}

/// The coefficient of determination `1 − SS_res / SS_tot`, as sklearn's `r2_score`: with
/// constant labels it is 1 for a perfect fit and 0 otherwise.
pub fn r2_score(pred: &Tensor, labels: &Tensor) -> Result<f64> {
    let (p, l) = pair(pred, labels, "r2")?;
    let mean = l.iter().sum::<f64>() / l.len() as f64;
    let ss_res: f64 = p.iter().zip(&l).map(|(a, b)| (b - a) * (b - a)).sum();
    let ss_tot: f64 = l.iter().map(|b| (b - mean) * (b - mean)).sum();
    Ok(if ss_tot != 0.0 {
        1.0 - ss_res / ss_tot
    } else if ss_res == 0.0 {
        1.0
    } else {
        0.0
    })
}

/// `[("accuracy", …)]`: the metrics of a classification probe.
pub fn classification(pred: &Tensor, labels: &Tensor) -> Result<Vec<(String, f64)>> {
    Ok(vec![("accuracy".into(), accuracy(pred, labels)?)])
}

/// `[("r2", …), ("mse", …)]`: the metrics of a regression probe.
pub fn regression(pred: &Tensor, labels: &Tensor) -> Result<Vec<(String, f64)>> {
    Ok(vec![
        ("r2".into(), r2_score(pred, labels)?),
        ("mse".into(), mean_squared_error(pred, labels)?),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: &[f32]) -> Tensor {
        Tensor::new(v, &Device::Cpu).unwrap()
    }

    #[test]
    fn metrics_match_hand_computed_values() -> Result<()> {
        let y = t(&[1., 2., 3., 4.]);
        let p = t(&[1., 2., 3., 6.]);
        assert_eq!(accuracy(&p, &y)?, 0.75);
        assert_eq!(mean_squared_error(&p, &y)?, 1.0);
        // SS_res = 4, SS_tot = 5.
        assert!((r2_score(&p, &y)? - (1.0 - 4.0 / 5.0)).abs() < 1e-12);
        // Constant labels: sklearn's force_finite rule.
        assert_eq!(r2_score(&t(&[2., 2.]), &t(&[2., 2.]))?, 1.0);
        assert_eq!(r2_score(&t(&[1., 2.]), &t(&[2., 2.]))?, 0.0);
        // Mixed dtypes compare by value.
        let classes = Tensor::new(&[1u8, 0, 1], &Device::Cpu)?;
        let labels = Tensor::new(&[1i64, 1, 1], &Device::Cpu)?;
        assert!((accuracy(&classes, &labels)? - 2.0 / 3.0).abs() < 1e-12);
        Ok(())
    }

    #[test]
    fn mismatched_shapes_are_an_error_naming_both() {
        let err = accuracy(&t(&[1., 0.]), &t(&[1., 0., 1.]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("[2]") && err.contains("[3]"), "{err}");
    }
}
