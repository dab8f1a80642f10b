//! tdhook's `Probe` (an estimator fitted / applied on a point's activations) and `ProbeManager`
//! (one persistent estimator per `{path}_{direction}`, with metric results per phase).

use super::estimators::Estimator;
use super::metrics::MetricsFn;
use super::{LABELS, Probe, ProbeExtras, ProbeFactory, STEP_TYPE, StepType};
use crate::error::{Error, Result};
use crate::hx::Direction;
use crate::tensordict::{Key, TensorDict};
use crate::util::lock;
use candle_core::{Device, Tensor};
use indexmap::IndexMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// `callback(predictions, labels)`, run after each fit / predict.
pub type ProbeCallback = dyn Fn(&Tensor, &Tensor) -> Result<()> + Send + Sync;
/// `preprocess(activation) -> [N, F]` data for the estimator.
pub type PreprocessFn = dyn Fn(&Tensor) -> Result<Tensor> + Send + Sync;

/// tdhook's default data preprocess, `data.detach().flatten(1)`: `[N, …] → [N, F]`. A 1-D
/// activation becomes `[N, 1]` (PyTorch would reject it).
pub fn flatten_features(t: &Tensor) -> Result<Tensor> {
    let t = t.detach();
    Ok(match t.rank() {
        0 => {
            return Err(Error::Invalid(
                "a probe needs a batch of activations [N, …], but the hook point's tensor is a \
                 scalar; probe another point or pass a data_preprocess"
                    .into(),
            ));
        }
        1 => t.unsqueeze(1)?,
        _ => t.flatten_from(1)?,
    })
}

/// tdhook's `Probe`: on a `Fit` step, fits the estimator on the (preprocessed) activation and the
/// `labels`, then calls the fit callback (if any) with the estimator's predictions on the same
/// data; on a `Predict` step, calls the predict callback with the predictions.
///
/// It needs `step_type` and `labels` ([`Probe::required_keys`]), so [`Probing`](super::Probing)
/// must list `labels` in its `additional_keys` (checked at prepare) and every run must say its
/// step type (checked before the forward).
pub struct EstimatorProbe<E> {
    estimator: Arc<Mutex<E>>,
    predict_callback: Arc<ProbeCallback>,
    fit_callback: Option<Arc<ProbeCallback>>,
    preprocess: Arc<PreprocessFn>,
}

impl<E> Clone for EstimatorProbe<E> {
    fn clone(&self) -> Self {
        Self {
            estimator: self.estimator.clone(),
            predict_callback: self.predict_callback.clone(),
            fit_callback: self.fit_callback.clone(),
            preprocess: self.preprocess.clone(),
        }
    }
}

impl<E: Estimator + 'static> EstimatorProbe<E> {
    /// A probe owning `estimator`; `predict_callback(predictions, labels)` runs on each predict.
    pub fn new(
        estimator: E,
        predict_callback: impl Fn(&Tensor, &Tensor) -> Result<()> + Send + Sync + 'static,
    ) -> Self {
        Self::shared(Arc::new(Mutex::new(estimator)), predict_callback)
    }

    /// A probe on an estimator shared with others (read its fit back through the `Arc`).
    pub fn shared(
        estimator: Arc<Mutex<E>>,
        predict_callback: impl Fn(&Tensor, &Tensor) -> Result<()> + Send + Sync + 'static,
    ) -> Self {
        Self {
            estimator,
            predict_callback: Arc::new(predict_callback),
            fit_callback: None,
            preprocess: Arc::new(flatten_features),
        }
    }

    /// Run `f(predictions on the fit data, labels)` after each fit.
    pub fn fit_callback(
        mut self,
        f: impl Fn(&Tensor, &Tensor) -> Result<()> + Send + Sync + 'static,
    ) -> Self {
        self.fit_callback = Some(Arc::new(f));
        self
    }

    /// Turn the activation into the estimator's `[N, F]` data (default [`flatten_features`]).
    pub fn data_preprocess(
        mut self,
        f: impl Fn(&Tensor) -> Result<Tensor> + Send + Sync + 'static,
    ) -> Self {
        self.preprocess = Arc::new(f);
        self
    }

    /// The estimator this probe fits.
    pub fn estimator(&self) -> Arc<Mutex<E>> {
        self.estimator.clone()
    }
}

impl<E: Estimator + 'static> Probe for EstimatorProbe<E> {
    fn step(&mut self, activation: &Tensor, extras: &ProbeExtras<'_>) -> Result<()> {
        let step_type = extras.step_type.ok_or_else(|| Error::MissingKey {
            what: "EstimatorProbe",
            key: STEP_TYPE.into(),
            fix: "run the probing with fit(&td) / predict(&td), or insert it with \
                  StepType::Fit.insert(&mut td)"
                .into(),
        })?;
        let labels = extras.labels().ok_or_else(|| Error::MissingKey {
            what: "EstimatorProbe",
            key: LABELS.into(),
            fix: "list it in the Probing's additional_keys and put the labels in the dict".into(),
        })?;
        let data = (self.preprocess)(activation)?;
        let predictions = {
            let mut estimator = lock(&self.estimator);
            match step_type {
                StepType::Fit => {
                    estimator.fit(&data, labels)?;
                    if self.fit_callback.is_none() {
                        return Ok(());
                    }
                }
                StepType::Predict => {}
            }
            estimator.predict(&data)?
        };
        // The estimator's lock is released before the callbacks (they may read it).
        match step_type {
            StepType::Fit => match &self.fit_callback {
                Some(f) => f(&predictions, labels),
                None => Ok(()),
            },
            StepType::Predict => (self.predict_callback)(&predictions, labels),
        }
    }

    fn required_keys(&self) -> Vec<Key> {
        vec![Key::from(STEP_TYPE), Key::from(LABELS)]
    }
}

struct State<E> {
    estimators: IndexMap<String, Arc<Mutex<E>>>,
    probes: IndexMap<String, EstimatorProbe<E>>,
    results: TensorDict,
    overwrite_results: bool,
    preprocess: Arc<PreprocessFn>,
}

struct Shared<E> {
    make: Box<dyn Fn() -> E + Send + Sync>,
    compute_metrics: Arc<MetricsFn>,
    state: Mutex<State<E>>,
}

/// tdhook's `ProbeManager`: one estimator per probed `{path}_{direction}` (`transformer.h.0_fwd`),
/// kept across runs and prepares, and the metrics of each phase.
///
/// Use it as the `probe_factory` of [`Probing`](super::Probing) (it implements
/// [`ProbeFactory`]; clones share one state). A `Fit` run fits each estimator on its point's
/// activations and records `compute_metrics(predictions on the fit data, labels)` under
/// `("fit", key, metric)`; a `Predict` run records them under `("predict", key, metric)`.
/// Recording a key twice in one phase is an error unless `overwrite_results(true)`: call
/// [`ProbeManager::reset_results`] between runs.
///
/// Results are a [`TensorDict`] of 0-d `f64` tensors (batch size `[]`).
///
/// ```
/// use tdhook::latent::Probing;
/// use tdhook::latent::probing::{ProbeManager, Ridge, StepType, metrics};
/// use tdhook::models::gpt2::{Gpt2, Gpt2Config};
/// use tdhook::prelude::*;
/// use candle_core::{DType, Device, Tensor};
/// # fn main() -> tdhook::Result<()> {
/// let vb = candle_nn::VarBuilder::from_varmap(&candle_nn::VarMap::new(), DType::F32, &Device::Cpu);
/// let model = Gpt2::new(Gpt2Config::new(50, 16, 32, 2, 4), vb)?;
///
/// // A regression probe per block on the last position.
/// let manager = ProbeManager::new(|| Ridge::new().alpha(1e-2), metrics::regression)
///     .data_preprocess(|t| Ok(t.narrow(1, t.dim(1)? - 1, 1)?.flatten_from(1)?.detach()));
/// let mut probing =
///     Probing::new(r"transformer\.h\.\d+", manager.clone()).additional_keys(["labels"]).prepare(&model)?;
///
/// let mut td = TensorDict::new([3]);
/// td.insert("input", Tensor::new(&[[1u32, 2], [3, 4], [5, 6]], &Device::Cpu)?)?;
/// td.insert("labels", Tensor::new(&[0.5f32, 1.5, -1.0], &Device::Cpu)?)?;
/// probing.fit(&td)?;
/// let r2 = manager.result(StepType::Fit, "transformer.h.1_fwd", "r2").unwrap();
/// assert!(r2 > 0.9, "3 samples, 32 features: ridge nearly interpolates");
/// assert_eq!(manager.coef("transformer.h.1_fwd")?.dims(), &[32]);
///
/// // Predicting twice without resetting is an error; reset_results() clears the way.
/// probing.predict(&td)?;
/// assert!(probing.predict(&td).is_err());
/// manager.reset_results();
/// probing.predict(&td)?;
/// # Ok(()) }
/// ```
pub struct ProbeManager<E> {
    shared: Arc<Shared<E>>,
}

impl<E> Clone for ProbeManager<E> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<E: Estimator + 'static> ProbeManager<E> {
    /// A manager making a fresh estimator per probed point with `make_estimator` (tdhook's
    /// `estimator_class(**estimator_kwargs)`), scoring with `compute_metrics(predictions,
    /// labels)` (see [`metrics`](super::metrics) for ready-made ones).
    pub fn new(
        make_estimator: impl Fn() -> E + Send + Sync + 'static,
        compute_metrics: impl Fn(&Tensor, &Tensor) -> Result<Vec<(String, f64)>> + Send + Sync + 'static,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                make: Box::new(make_estimator),
                compute_metrics: Arc::new(compute_metrics),
                state: Mutex::new(State {
                    estimators: IndexMap::new(),
                    probes: IndexMap::new(),
                    results: TensorDict::unbatched(),
                    overwrite_results: false,
                    preprocess: Arc::new(flatten_features),
                }),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State<E>> {
        lock(&self.shared.state)
    }

    /// Let a result recorded twice replace the first (default `false`: an error).
    pub fn overwrite_results(self, overwrite: bool) -> Self {
        self.state().overwrite_results = overwrite;
        self
    }

    /// The data preprocess of probes made from now on (default [`flatten_features`]).
    pub fn data_preprocess(
        self,
        f: impl Fn(&Tensor) -> Result<Tensor> + Send + Sync + 'static,
    ) -> Self {
        self.state().preprocess = Arc::new(f);
        self
    }

    /// The probe for `path` in `direction` (tdhook's `probe_factory`): the same estimator every
    /// time for one `{path}_{direction}` until [`ProbeManager::reset_estimators`].
    pub fn probe(&self, path: &str, direction: Direction) -> EstimatorProbe<E> {
        let key = format!("{path}_{direction}");
        let mut state = self.state();
        if let Some(probe) = state.probes.get(&key) {
            return probe.clone();
        }
        let estimator = Arc::new(Mutex::new((self.shared.make)()));
        state.estimators.insert(key.clone(), estimator.clone());
        // The callbacks hold the manager weakly: probes live in the manager's own map.
        let recorder = |phase: StepType| {
            let weak = Arc::downgrade(&self.shared);
            let key = key.clone();
            move |predictions: &Tensor, labels: &Tensor| -> Result<()> {
                match weak.upgrade() {
                    Some(shared) => {
                        record_result(&shared, phase, &key, predictions, labels).map(|_| ())
                    }
                    None => Ok(()),
                }
            }
        };
        let probe = EstimatorProbe::shared(estimator, recorder(StepType::Predict))
            .fit_callback(recorder(StepType::Fit));
        let probe = EstimatorProbe {
            preprocess: state.preprocess.clone(),
            ..probe
        };
        state.probes.insert(key, probe.clone());
        probe
    }

    /// The keys (`{path}_{direction}`) of the estimators made so far, in order.
    pub fn estimator_keys(&self) -> Vec<String> {
        self.state().estimators.keys().cloned().collect()
    }

    /// The estimator at `key`, shared with its probe.
    pub fn estimator_handle(&self, key: &str) -> Option<Arc<Mutex<E>>> {
        self.state().estimators.get(key).cloned()
    }

    /// `f(estimator)` for the estimator at `key`.
    pub fn with_estimator<R>(&self, key: &str, f: impl FnOnce(&E) -> R) -> Option<R> {
        let handle = self.estimator_handle(key)?;
        let estimator = lock(&handle);
        Some(f(&estimator))
    }

    /// A copy of the estimator at `key`.
    pub fn estimator(&self, key: &str) -> Option<E>
    where
        E: Clone,
    {
        self.with_estimator(key, E::clone)
    }

    fn known(&self, key: &str) -> Result<Arc<Mutex<E>>> {
        self.estimator_handle(key).ok_or_else(|| {
            Error::Invalid(format!(
                "no estimator `{key}`; the manager has [{}] (keys are `{{path}}_{{direction}}`, \
                 made when a Probing is prepared with this manager)",
                self.estimator_keys().join(", ")
            ))
        })
    }

    /// The fitted coefficients of the estimator at `key` ([`Estimator::coef`]).
    pub fn coef(&self, key: &str) -> Result<Tensor> {
        let handle = self.known(key)?;
        lock(&handle).coef()
    }

    /// The fitted intercept of the estimator at `key` ([`Estimator::intercept`]).
    pub fn intercept(&self, key: &str) -> Result<Tensor> {
        let handle = self.known(key)?;
        lock(&handle).intercept()
    }

    /// The metrics so far: `(phase, "{path}_{direction}", metric)` → 0-d `f64`.
    pub fn results(&self) -> TensorDict {
        self.state().results.clone()
    }

    /// One metric, `None` when not recorded.
    pub fn result(&self, phase: StepType, key: &str, metric: &str) -> Option<f64> {
        let state = self.state();
        let t = state.results.get((phase.as_str(), key, metric))?;
        t.to_scalar::<f64>().ok()
    }

    /// Discard fitted estimators and their probes: the next prepare makes fresh ones (probes
    /// already installed keep theirs).
    pub fn reset_estimators(&self) {
        let mut state = self.state();
        state.estimators.clear();
        state.probes.clear();
    }

    /// Discard fit and predict metrics, keeping the estimators.
    pub fn reset_results(&self) {
        self.state().results = TensorDict::unbatched();
    }
}

fn record_result<E>(
    shared: &Shared<E>,
    phase: StepType,
    key: &str,
    predictions: &Tensor,
    labels: &Tensor,
) -> Result<TensorDict> {
    {
        let state = lock(&shared.state);
        check_new_result(&state.results, state.overwrite_results, phase, key)?;
    }
    let result = metrics_dict((shared.compute_metrics)(predictions, labels)?)?;
    lock(&shared.state)
        .results
        .insert_dict((phase.as_str(), key), result.clone())?;
    Ok(result)
}

/// Recording `(phase, key)` again is an error unless results may be overwritten.
pub(super) fn check_new_result(
    results: &TensorDict,
    overwrite: bool,
    phase: StepType,
    key: &str,
) -> Result<()> {
    if results.contains((phase.as_str(), key)) && !overwrite {
        return Err(Error::ResultExists {
            phase: phase.as_str(),
            key: key.to_string(),
        });
    }
    Ok(())
}

/// Metrics as a dict of 0-d `f64` tensors (what the results hold per phase and key).
pub(super) fn metrics_dict(metrics: Vec<(String, f64)>) -> Result<TensorDict> {
    let mut result = TensorDict::unbatched();
    for (name, value) in metrics {
        result.insert(name.as_str(), Tensor::new(value, &Device::Cpu)?)?;
    }
    Ok(result)
}

impl<E: Estimator + 'static> ProbeFactory for ProbeManager<E> {
    fn make_probe(&self, path: &str, direction: Direction) -> Box<dyn Probe> {
        Box::new(self.probe(path, direction))
    }
}
