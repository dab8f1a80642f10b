//! One probe per point, all trained together: the activations of every probed point of a
//! forward are stacked into `[K, N, F]` and fitted in one batched call of tdhook-kernels
//! (L-BFGS logistic regression with one fused pass over the activations per step, or the
//! mean-difference / ridge closed forms), instead of `K` separate fits.

use super::manager::{PreprocessFn, check_new_result, flatten_features, metrics_dict};
use super::metrics::MetricsFn;
use super::{LABELS, Probe, ProbeExtras, ProbeFactory, STEP_TYPE, StepType};
use crate::error::{Error, Result};
use crate::hx::Direction;
use crate::tensordict::{Key, TensorDict};
use crate::util::lock;
use candle_core::{DType, Device, Tensor};
use indexmap::IndexMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tdhook_kernels::{LinearProbes, LogisticConfig};

/// What [`BatchedProbes`] fits per point.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum BatchedEstimator {
    /// Binary logistic regression, scikit-learn's objective with inverse penalty `c`
    /// (`LogisticRegression(C=c)`), trained by batched L-BFGS until the largest gradient entry
    /// is at most `tol` (scikit-learn's default `1e-4`) or `max_iter` iterations. Labels 0/1;
    /// predictions 0/1 (`u8`).
    Logistic {
        /// scikit-learn's `C` (> 0).
        c: f64,
        /// Gradient tolerance (`‖∇‖∞`, on the mean loss).
        tol: f64,
        /// Iteration cap per probe.
        max_iter: usize,
    },
    /// tdhook's `MeanDifferenceClassifier` (normalised): `w = (μ₊ − μ₋)/‖μ₊ − μ₋‖`. Labels 0/1;
    /// predictions 0/1 (`u8`).
    MeanDifference,
    /// scikit-learn's `Ridge(alpha)` with an intercept. Any real targets; predictions `f32`.
    Ridge {
        /// The L2 penalty (>= 0).
        alpha: f64,
    },
}

impl BatchedEstimator {
    /// [`BatchedEstimator::Logistic`] with scikit-learn's `tol` (1e-4) and `max_iter` 500
    /// (scikit-learn's 100 is often too few for L-BFGS on raw activations).
    pub fn logistic(c: f64) -> Self {
        BatchedEstimator::Logistic {
            c,
            tol: 1e-4,
            max_iter: 500,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            BatchedEstimator::Logistic { .. } => "batched logistic regression",
            BatchedEstimator::MeanDifference => "batched mean difference",
            BatchedEstimator::Ridge { .. } => "batched ridge",
        }
    }

    fn classifies(&self) -> bool {
        !matches!(self, BatchedEstimator::Ridge { .. })
    }
}

/// How one fitted probe got there (logistic regression only reports iterations).
#[derive(Clone, Debug, PartialEq)]
pub struct FitReport {
    /// L-BFGS iterations (0 for the closed forms).
    pub iterations: usize,
    /// Whether the tolerance was reached (always `true` for the closed forms).
    pub converged: bool,
}

/// A fitted probe: `score(x) = x·coef + intercept`.
#[derive(Clone, Debug)]
struct Fitted {
    coef: Tensor,
    intercept: f32,
    report: FitReport,
}

struct State {
    /// Every `{path}_{direction}` a Probing was prepared with, in order.
    keys: Vec<String>,
    /// This run's `[N, F]` data per key (the last call of a point wins).
    pending: IndexMap<String, Tensor>,
    labels: Option<Tensor>,
    fitted: IndexMap<String, Fitted>,
    results: TensorDict,
    overwrite_results: bool,
}

struct Shared {
    estimator: BatchedEstimator,
    compute_metrics: Arc<MetricsFn>,
    preprocess: Arc<PreprocessFn>,
    state: Mutex<State>,
}

/// Probes on every selected point, fitted together: a [`ProbeFactory`] for
/// [`Probing`](super::Probing) that, like [`ProbeManager`](super::ProbeManager), keeps one
/// probe per `{path}_{direction}` and records metrics per phase — but a `Fit` run collects the
/// points' activations and, when the forward is over, trains all `K` probes in one batched call
/// (points of equal width together): one pass over `[K, N, F]` per L-BFGS step instead of `K`
/// separate fits.
///
/// Activations are flattened to `[N, F]` (tdhook's default preprocess; see
/// [`BatchedProbes::data_preprocess`]). The run needs `labels` among the Probing's
/// `additional_keys` and a step type (checked before the forward).
///
/// ```
/// use tdhook::latent::Probing;
/// use tdhook::latent::probing::{BatchedEstimator, BatchedProbes, StepType, metrics};
/// use tdhook::models::gpt2::{Gpt2, Gpt2Config};
/// use tdhook::prelude::*;
/// use candle_core::{DType, Device, Tensor};
/// # fn main() -> tdhook::Result<()> {
/// let vb = candle_nn::VarBuilder::from_varmap(&candle_nn::VarMap::new(), DType::F32, &Device::Cpu);
/// let model = Gpt2::new(Gpt2Config::new(50, 16, 32, 3, 4), vb)?;
///
/// // A logistic probe on the last token of every block, trained in one batched call.
/// let probes = BatchedProbes::new(BatchedEstimator::logistic(1.0), metrics::classification)
///     .data_preprocess(|t| Ok(t.narrow(1, t.dim(1)? - 1, 1)?.flatten_from(1)?.detach()));
/// let mut probing = Probing::new(r"transformer\.h\.\d+", probes.clone())
///     .additional_keys(["labels"])
///     .prepare(&model)?;
///
/// let ids = Tensor::new(&[[1u32, 2, 3], [4, 5, 6], [1, 2, 4], [7, 8, 9]], &Device::Cpu)?;
/// let labels = Tensor::new(&[1u8, 0, 1, 0], &Device::Cpu)?;
/// probing.fit_on(&ids, &labels)?;
/// assert_eq!(probes.keys(), ["transformer.h.0_fwd", "transformer.h.1_fwd", "transformer.h.2_fwd"]);
/// assert_eq!(probes.coef("transformer.h.2_fwd")?.dims(), &[1, 32]);
/// assert!(probes.report("transformer.h.2_fwd")?.converged);
///
/// probing.predict_on(&ids, &labels)?;
/// let acc = probes.result(StepType::Predict, "transformer.h.0_fwd", "accuracy").unwrap();
/// assert_eq!(acc, 1.0); // 4 samples, 32 features: separable
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct BatchedProbes {
    shared: Arc<Shared>,
}

impl BatchedProbes {
    /// Probes fitted by `estimator`, scored with `compute_metrics(predictions, labels)` (see
    /// [`metrics`](super::metrics)).
    pub fn new(
        estimator: BatchedEstimator,
        compute_metrics: impl Fn(&Tensor, &Tensor) -> Result<Vec<(String, f64)>> + Send + Sync + 'static,
    ) -> Self {
        Self::build(
            estimator,
            Arc::new(compute_metrics),
            Arc::new(flatten_features),
        )
    }

    fn build(
        estimator: BatchedEstimator,
        compute_metrics: Arc<MetricsFn>,
        preprocess: Arc<PreprocessFn>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                estimator,
                compute_metrics,
                preprocess,
                state: Mutex::new(State {
                    keys: Vec::new(),
                    pending: IndexMap::new(),
                    labels: None,
                    fitted: IndexMap::new(),
                    results: TensorDict::unbatched(),
                    overwrite_results: false,
                }),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.shared.state)
    }

    /// Turn each activation into `[N, F]` data (default: flatten, as tdhook). Returns a new,
    /// empty set of probes (set it before preparing a Probing).
    pub fn data_preprocess(
        self,
        f: impl Fn(&Tensor) -> Result<Tensor> + Send + Sync + 'static,
    ) -> Self {
        Self::build(
            self.shared.estimator.clone(),
            self.shared.compute_metrics.clone(),
            Arc::new(f),
        )
    }

    /// Let a result recorded twice replace the first (default `false`: an error).
    pub fn overwrite_results(self, overwrite: bool) -> Self {
        self.state().overwrite_results = overwrite;
        self
    }

    /// The probed keys (`{path}_{direction}`), in the order the Probing made them.
    pub fn keys(&self) -> Vec<String> {
        self.state().keys.clone()
    }

    fn fitted(&self, key: &str) -> Result<Fitted> {
        let state = self.state();
        state.fitted.get(key).cloned().ok_or_else(|| {
            Error::Invalid(format!(
                "no fitted probe `{key}`; fitted: [{}] (keys are `{{path}}_{{direction}}`; a \
                 probe is fitted by a Probing run with StepType::Fit)",
                state.fitted.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })
    }

    /// The fitted weights of the probe at `key`, f32, shaped as sklearn's `coef_`: `[1, F]` for
    /// the classifiers, `[F]` for ridge.
    pub fn coef(&self, key: &str) -> Result<Tensor> {
        let c = self.fitted(key)?.coef;
        Ok(if self.shared.estimator.classifies() {
            c.unsqueeze(0)?
        } else {
            c
        })
    }

    /// The fitted intercept of the probe at `key`, f32, shaped as sklearn's `intercept_`: `[1]`
    /// for the classifiers, `[]` for ridge.
    pub fn intercept(&self, key: &str) -> Result<Tensor> {
        let b = Tensor::new(self.fitted(key)?.intercept, &Device::Cpu)?;
        Ok(if self.shared.estimator.classifies() {
            b.unsqueeze(0)?
        } else {
            b
        })
    }

    /// Iterations and convergence of the probe at `key`.
    pub fn report(&self, key: &str) -> Result<FitReport> {
        Ok(self.fitted(key)?.report)
    }

    /// The metrics so far: `(phase, "{path}_{direction}", metric)` → 0-d `f64`.
    pub fn results(&self) -> TensorDict {
        self.state().results.clone()
    }

    /// One metric, `None` when not recorded.
    pub fn result(&self, phase: StepType, key: &str, metric: &str) -> Option<f64> {
        let state = self.state();
        state
            .results
            .get((phase.as_str(), key, metric))?
            .to_scalar::<f64>()
            .ok()
    }

    /// Discard fit and predict metrics, keeping the probes.
    pub fn reset_results(&self) {
        self.state().results = TensorDict::unbatched();
    }

    /// Fit (or apply) every probe that saw data this run, then record the metrics.
    fn finish(&self, step_type: Option<StepType>) -> Result<()> {
        let (pending, labels) = {
            let mut state = self.state();
            (std::mem::take(&mut state.pending), state.labels.take())
        };
        let (Some(step), Some(labels)) = (step_type, labels) else {
            return Ok(());
        };
        if pending.is_empty() {
            return Ok(());
        }
        if step == StepType::Fit {
            let fitted = self.fit_all(&pending, &labels)?;
            self.state().fitted.extend(fitted);
        }
        for (key, data) in &pending {
            let fitted = self.fitted(key)?;
            let predictions = self.predict(&fitted, data)?;
            self.record(step, key, &predictions, &labels)?;
        }
        Ok(())
    }

    /// Groups keys by feature width and trains each group in one batched call.
    fn fit_all(
        &self,
        pending: &IndexMap<String, Tensor>,
        labels: &Tensor,
    ) -> Result<Vec<(String, Fitted)>> {
        let est = &self.shared.estimator;
        let mut groups: IndexMap<usize, Vec<&String>> = IndexMap::new();
        for (key, data) in pending {
            groups.entry(data.dim(1)?).or_default().push(key);
        }
        let mut out = Vec::new();
        for keys in groups.values() {
            let x = Tensor::stack(
                &keys
                    .iter()
                    .map(|k| pending[*k].to_dtype(DType::F32))
                    .collect::<candle_core::Result<Vec<_>>>()?,
                0,
            )?; // [K, N, F]
            let n = x.dim(1)?;
            let (probes, reports) = match est {
                BatchedEstimator::Logistic { c, tol, max_iter } => {
                    if c.is_nan() || *c <= 0.0 {
                        return Err(Error::Invalid(format!(
                            "{}: C must be > 0, got {c}",
                            est.name()
                        )));
                    }
                    let cfg = LogisticConfig {
                        tol: *tol,
                        max_iter: *max_iter,
                        ..LogisticConfig::from_sklearn_c(*c, n)
                    };
                    let fit = tdhook_kernels::train_logistic_probes(&x, labels, &cfg)
                        .map_err(|e| self.kernel_error(keys, e))?;
                    let reports = fit
                        .iterations
                        .iter()
                        .zip(&fit.converged)
                        .map(|(&iterations, &converged)| FitReport {
                            iterations,
                            converged,
                        })
                        .collect();
                    (fit.probes, reports)
                }
                BatchedEstimator::MeanDifference => (
                    tdhook_kernels::mean_difference_probes(&x, labels)
                        .map_err(|e| self.kernel_error(keys, e))?,
                    closed_form_reports(keys.len()),
                ),
                BatchedEstimator::Ridge { alpha } => (
                    tdhook_kernels::ridge_probes(&x, labels, *alpha, true)
                        .map_err(|e| self.kernel_error(keys, e))?,
                    closed_form_reports(keys.len()),
                ),
            };
            out.extend(split(keys, &probes, reports)?);
        }
        Ok(out)
    }

    fn kernel_error(&self, keys: &[&String], e: candle_core::Error) -> Error {
        Error::Kernel {
            path: keys
                .iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            source: Box::new(e),
        }
    }

    fn predict(&self, fitted: &Fitted, data: &Tensor) -> Result<Tensor> {
        let x = data.to_dtype(DType::F32)?.to_device(fitted.coef.device())?;
        let scores = x
            .matmul(&fitted.coef.unsqueeze(1)?)?
            .squeeze(1)?
            .affine(1.0, fitted.intercept as f64)?;
        Ok(if self.shared.estimator.classifies() {
            scores.gt(0.0)?
        } else {
            scores
        })
    }

    fn record(
        &self,
        phase: StepType,
        key: &str,
        predictions: &Tensor,
        labels: &Tensor,
    ) -> Result<()> {
        {
            let state = self.state();
            check_new_result(&state.results, state.overwrite_results, phase, key)?;
        }
        let result = metrics_dict((self.shared.compute_metrics)(predictions, labels)?)?;
        self.state()
            .results
            .insert_dict((phase.as_str(), key), result)?;
        Ok(())
    }
}

fn closed_form_reports(k: usize) -> Vec<FitReport> {
    vec![
        FitReport {
            iterations: 0,
            converged: true,
        };
        k
    ]
}

/// One [`Fitted`] per key from `K` batched probes.
fn split(
    keys: &[&String],
    probes: &LinearProbes,
    reports: Vec<FitReport>,
) -> Result<Vec<(String, Fitted)>> {
    let bias = probes.bias.to_vec1::<f32>()?;
    keys.iter()
        .zip(reports)
        .enumerate()
        .map(|(i, (key, report))| {
            Ok((
                (*key).clone(),
                Fitted {
                    coef: probes.weights.get(i)?,
                    intercept: bias[i],
                    report,
                },
            ))
        })
        .collect()
}

/// The probe of one point: stashes its `[N, F]` data for the batched fit at the end of the run.
struct Collector {
    key: String,
    owner: BatchedProbes,
}

impl Probe for Collector {
    fn step(&mut self, activation: &Tensor, extras: &ProbeExtras<'_>) -> Result<()> {
        if extras.step_type.is_none() {
            return Err(Error::MissingKey {
                what: "BatchedProbes",
                key: STEP_TYPE.into(),
                fix: "run the probing with fit(&td) / predict(&td), or insert it with \
                      StepType::Fit.insert(&mut td)"
                    .into(),
            });
        }
        let labels = extras.labels().ok_or_else(|| Error::MissingKey {
            what: "BatchedProbes",
            key: LABELS.into(),
            fix: "list it in the Probing's additional_keys and put the labels in the dict".into(),
        })?;
        let data = (self.owner.shared.preprocess)(activation)?;
        if data.rank() != 2 || data.dim(0)? != labels.elem_count() {
            return Err(Error::Invalid(format!(
                "BatchedProbes at `{}`: the preprocessed activation has shape {:?}, expected \
                 [N, F] with N = {} (the number of labels)",
                self.key,
                data.dims(),
                labels.elem_count()
            )));
        }
        let mut state = self.owner.state();
        state.pending.insert(self.key.clone(), data);
        state.labels = Some(labels.flatten_all()?);
        Ok(())
    }

    fn required_keys(&self) -> Vec<Key> {
        vec![Key::from(STEP_TYPE), Key::from(LABELS)]
    }
}

impl ProbeFactory for BatchedProbes {
    fn make_probe(&self, path: &str, direction: Direction) -> Box<dyn Probe> {
        let key = format!("{path}_{direction}");
        {
            let mut state = self.state();
            if !state.keys.contains(&key) {
                state.keys.push(key.clone());
            }
        }
        Box::new(Collector {
            key,
            owner: self.clone(),
        })
    }

    fn end_step(&self, step_type: Option<StepType>) -> Result<()> {
        self.finish(step_type)
    }
}
