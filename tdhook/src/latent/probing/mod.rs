//! Probing: feed each selected point's activation to a probe while the model runs (tdhook's
//! `Probing`, linear probes and concept activation vectors).
//!
//! * [`Probing`] — the method: a key pattern and a `probe_factory(path, direction)` called once
//!   per matched point and direction when it is prepared; each forward then calls
//!   [`Probe::step`] with the point's activation and the [`ProbeExtras`]: the step type and the
//!   `additional_keys` selected from the input dict (e.g. `labels`).
//! * [`ProbeManager`] — tdhook's manager: one persistent [`Estimator`] per `{path}_{direction}`,
//!   fitted on `fit` steps, applied on `predict` steps, with metrics recorded per phase.
//! * [`BatchedProbes`] — the same, but every point's probe is trained together at the end of
//!   a run: one batched call of tdhook-kernels over `[K, N, F]` (L-BFGS logistic regression,
//!   mean difference, ridge) instead of `K` separate fits.
//! * Estimators: [`MeanDifferenceClassifier`] (tdhook's), [`LogisticRegression`] and [`Ridge`]
//!   (sklearn's, which tdhook's examples use); [`metrics`] for accuracy, r2 and mse.
//!
//! # The step type
//!
//! tdhook puts `step_type = "fit" | "predict"` in the dict as non-tensor data and lists it in
//! `additional_keys`. A [`TensorDict`] holds only tensors, so here:
//!
//! * the step type is a [`StepType`], handed to every probe as [`ProbeExtras::step_type`];
//! * [`PreparedProbing::fit`] / [`PreparedProbing::predict`] (and the tensor faces
//!   [`PreparedProbing::fit_on`] / [`PreparedProbing::predict_on`]) set it;
//! * [`PreparedProbing::run`] reads it from the dict when there: an integer tensor at
//!   [`STEP_TYPE`] (`step_type`) whose every element is `0` (fit) or `1` (predict), of the batch
//!   shape so the dict accepts it ([`StepType::insert`] writes one). Absent, probes see `None`;
//! * it need not be listed in `additional_keys` (it is always passed). Where a probe needs it
//!   ([`Probe::required_keys`], as [`EstimatorProbe`] does) or it is listed, a run without one
//!   is an error raised before the forward.
//!
//! # Which points
//!
//! The pattern is a full-match regex over hook paths (or an exact / typed path); see
//! [`Selector`]. `classes_to_hook` keeps only points whose class is listed, `classes_to_skip`
//! drops points whose class is listed. A point's class is its Rust type's name without module
//! path or generics (`Linear`, `LayerNorm`, `Block`), or the struct's `#[hook(class = "...")]`
//! (the reference GPT-2 answers to PyTorch's: `GPT2Block`, `GPT2MLP`, …); markers are
//! `HookPoint`. tdhook skips `ModuleList` / `Sequential` by default; here list points are never
//! selected whatever the filters (their hooks would never fire), so the default skip list is
//! empty, and classes match by name, not by subclass.

mod batched;
mod estimators;
mod linalg;
mod manager;
pub mod metrics;

pub use batched::{BatchedEstimator, BatchedProbes, FitReport};
pub use estimators::{
    Estimator, EstimatorError, LinearModel, LogisticRegression, LogisticSolver,
    MeanDifferenceClassifier, Ridge,
};
pub use manager::{EstimatorProbe, PreprocessFn, ProbeCallback, ProbeManager, flatten_features};

use super::batch::{input_at, input_key};
use super::core::{LossFn, check_directions, forward};
use super::{HookedModel, INPUT, OUTPUT, hook_set};
use crate::error::{Error, Result};
use crate::hookset::HookSet;
use crate::hx::Direction;
use crate::select::Selector;
use crate::tensordict::{Entry, Key, TensorDict};
use crate::util::lock;
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The key a run reads the step type from.
pub const STEP_TYPE: &str = "step_type";
/// The key [`EstimatorProbe`] reads labels from, and the typed faces write them to.
pub const LABELS: &str = "labels";

/// Whether a run fits the probes or applies them (tdhook's `step_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StepType {
    /// Fit (code `0`).
    Fit,
    /// Predict (code `1`).
    Predict,
}

impl StepType {
    /// tdhook's name: `fit`, `predict` (also the phase of [`ProbeManager`] results).
    pub fn as_str(self) -> &'static str {
        match self {
            StepType::Fit => "fit",
            StepType::Predict => "predict",
        }
    }

    /// The code a dict stores: `0` fit, `1` predict.
    pub fn code(self) -> u8 {
        match self {
            StepType::Fit => 0,
            StepType::Predict => 1,
        }
    }

    /// A `u8` tensor of `shape` filled with [`StepType::code`].
    pub fn tensor(self, shape: &[usize], device: &Device) -> Result<Tensor> {
        Ok(Tensor::full(self.code(), shape, device)?)
    }

    /// Put this step type in `td` at [`STEP_TYPE`] (shape: the dict's batch size, on the device
    /// of `input` when there), replacing any.
    pub fn insert(self, td: &mut TensorDict) -> Result<()> {
        let device = td.get(INPUT).map_or(Device::Cpu, |t| t.device().clone());
        let t = self.tensor(td.batch_size(), &device)?;
        td.insert(STEP_TYPE, t)?;
        Ok(())
    }

    /// The step type `td` holds at [`STEP_TYPE`], `None` when absent. Every element must be the
    /// same code, `0` or `1`.
    pub fn from_dict(td: &TensorDict) -> Result<Option<StepType>> {
        let Some(entry) = td.entry(STEP_TYPE) else {
            return Ok(None);
        };
        let Entry::Tensor(t) = entry else {
            return Err(Error::Invalid(format!(
                "`{STEP_TYPE}` is a sub-dict; it must be a tensor of 0 (fit) or 1 (predict), e.g. \
                 from StepType::Fit.insert(&mut td)"
            )));
        };
        let codes = t
            .to_device(&Device::Cpu)?
            .to_dtype(DType::F64)?
            .flatten_all()?
            .to_vec1::<f64>()?;
        let Some(&first) = codes.first() else {
            return Err(Error::Invalid(format!(
                "`{STEP_TYPE}` has shape {:?}, no element to read the step type from; insert it \
                 with StepType::Fit.insert(&mut td)",
                t.dims()
            )));
        };
        if codes.iter().any(|&c| c != first) {
            return Err(Error::Invalid(format!(
                "`{STEP_TYPE}` mixes codes (e.g. {first} and {}); one run is one step: fit and \
                 predict in separate runs",
                codes
                    .iter()
                    .find(|&&c| c != first)
                    .copied()
                    .unwrap_or(first)
            )));
        }
        match first {
            0.0 => Ok(Some(StepType::Fit)),
            1.0 => Ok(Some(StepType::Predict)),
            other => Err(Error::Invalid(format!(
                "`{STEP_TYPE}` must be 0 (fit) or 1 (predict), got {other}"
            ))),
        }
    }
}

impl std::fmt::Display for StepType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a probe is told besides the activation.
#[derive(Clone, Copy, Debug)]
pub struct ProbeExtras<'a> {
    /// The hook path (with `module.` when the probing is not relative).
    pub path: &'a str,
    /// Which direction fired.
    pub direction: Direction,
    /// Which call of the point within the forward (0 for the first).
    pub occurrence: usize,
    /// The run's step type, when it has one.
    pub step_type: Option<StepType>,
    /// The `additional_keys` selected from the input dict, batch dims flattened into one (as
    /// the activation's). Unbatched: values keep their shapes.
    pub data: &'a TensorDict,
}

impl ProbeExtras<'_> {
    /// The tensor at `key` among the additional keys.
    pub fn get(&self, key: impl Into<Key>) -> Option<&Tensor> {
        self.data.get(key)
    }

    /// The tensor at [`LABELS`], if selected.
    pub fn labels(&self) -> Option<&Tensor> {
        self.data.get(LABELS)
    }
}

/// Something fed a point's activation on every forward (tdhook's `Probe` protocol).
///
/// Closures `FnMut(&Tensor, &ProbeExtras) -> Result<()>` are probes.
pub trait Probe: Send {
    /// See the activation (for `Bwd`, the gradient) of one call of the point.
    fn step(&mut self, activation: &Tensor, extras: &ProbeExtras<'_>) -> Result<()>;

    /// Keys this probe reads: [`STEP_TYPE`] (the run must have a step type) or keys of
    /// [`ProbeExtras::data`] (they must be among the `additional_keys`: checked at prepare).
    fn required_keys(&self) -> Vec<Key> {
        vec![]
    }
}

impl<F> Probe for F
where
    F: FnMut(&Tensor, &ProbeExtras<'_>) -> Result<()> + Send,
{
    fn step(&mut self, activation: &Tensor, extras: &ProbeExtras<'_>) -> Result<()> {
        self(activation, extras)
    }
}

/// Makes the probe of one point and direction (tdhook's `probe_factory(name, direction)`).
///
/// Closures `Fn(&str, Direction) -> impl Probe` are factories (annotate the path: `|path: &str,
/// direction: Direction| …`), and so is [`ProbeManager`].
pub trait ProbeFactory: Send + Sync {
    /// The probe for `path` in `direction`.
    fn make_probe(&self, path: &str, direction: Direction) -> Box<dyn Probe>;

    /// Called once after each run, when every probe has seen its activations (and gradients):
    /// where a factory whose probes work together does its joint work (e.g. [`BatchedProbes`]
    /// fits all its probes in one batched call). `step_type` is the run's, `None` when the run
    /// had none or failed (then only discard what the run collected). Default: nothing.
    fn end_step(&self, step_type: Option<StepType>) -> Result<()> {
        let _ = step_type;
        Ok(())
    }
}

impl<F, P> ProbeFactory for F
where
    F: Fn(&str, Direction) -> P + Send + Sync,
    P: Probe + 'static,
{
    fn make_probe(&self, path: &str, direction: Direction) -> Box<dyn Probe> {
        Box::new(self(path, direction))
    }
}

/// Feed the activations of the points `key_pattern` selects to probes while the model runs.
///
/// `probe_factory(path, direction)` is called once per matched point and direction when the
/// probing is prepared (directions outer, points in model order); each forward then steps each
/// probe with its point's activation (`Fwd`: the output, `FwdPre`: the input, `Bwd`: the gradient
/// of [`Probing::loss`] at the output, after the forward) and the [`ProbeExtras`]. The run's
/// result is the input dict with `output`; what probes learn lives in the probes (see
/// [`ProbeManager`]). See the [module docs](self) for the step type and the class filters.
///
/// ```
/// use tdhook::latent::Probing;
/// use tdhook::latent::probing::{MeanDifferenceClassifier, ProbeManager, StepType, metrics};
/// use tdhook::models::gpt2::{Gpt2, Gpt2Config};
/// use tdhook::prelude::*;
/// use candle_core::{DType, Device, Tensor};
/// # fn main() -> tdhook::Result<()> {
/// let vb = candle_nn::VarBuilder::from_varmap(&candle_nn::VarMap::new(), DType::F32, &Device::Cpu);
/// let model = Gpt2::new(Gpt2Config::new(50, 16, 32, 2, 4), vb)?;
///
/// let manager = ProbeManager::new(MeanDifferenceClassifier::new, metrics::classification);
/// let mut probing = Probing::new(r"transformer\.h\.\d+", manager.clone())
///     .additional_keys(["labels"])
///     .prepare(&model)?;
///
/// let mut td = TensorDict::new([4]);
/// td.insert("input", Tensor::new(&[[1u32, 2, 3], [4, 5, 6], [1, 2, 4], [7, 8, 9]], &Device::Cpu)?)?;
/// td.insert("labels", Tensor::new(&[1u8, 0, 1, 0], &Device::Cpu)?)?;
/// let out = probing.fit(&td)?; // sets step_type = fit; tdhook: td["step_type"] = "fit"
/// assert_eq!(out.tensor("output")?.dims(), &[4, 3, 50]);
/// probing.predict(&td)?;
///
/// assert_eq!(manager.estimator_keys(), ["transformer.h.0_fwd", "transformer.h.1_fwd"]);
/// // The activations [4, 3, 32] are flattened to [4, 96] features.
/// assert_eq!(manager.coef("transformer.h.0_fwd")?.dims(), &[1, 96]);
/// let acc = manager.result(StepType::Predict, "transformer.h.1_fwd", "accuracy").unwrap();
/// assert!((0.0..=1.0).contains(&acc));
///
/// // Labels are checked before the forward.
/// let err = probing.fit(&td.exclude(["labels"])).unwrap_err();
/// assert!(err.to_string().contains("`labels`"));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Probing {
    selector: Selector,
    factory: Arc<dyn ProbeFactory>,
    relative: bool,
    directions: Vec<Direction>,
    additional_keys: Vec<Key>,
    loss: Option<Arc<LossFn>>,
}

impl Probing {
    /// Probe the points `key_pattern` selects, with probes from `probe_factory`.
    pub fn new(
        key_pattern: impl Into<Selector>,
        probe_factory: impl ProbeFactory + 'static,
    ) -> Self {
        Self {
            selector: key_pattern.into(),
            factory: Arc::new(probe_factory),
            relative: true,
            directions: vec![Direction::Fwd],
            additional_keys: vec![],
            loss: None,
        }
    }

    setters!(relative);

    /// Directions to probe (default `[Fwd]`). `Bwd` needs [`Probing::loss`].
    pub fn directions(mut self, directions: impl IntoIterator<Item = Direction>) -> Self {
        self.directions = directions.into_iter().collect();
        self
    }

    /// Keys of the input dict handed to probes in [`ProbeExtras::data`] (e.g. `labels`); each
    /// must be in the dict of every run (checked before the forward). [`STEP_TYPE`] may be
    /// listed, making the step type required.
    pub fn additional_keys<K: Into<Key>>(mut self, keys: impl IntoIterator<Item = K>) -> Self {
        self.additional_keys = keys.into_iter().map(Into::into).collect();
        self
    }

    /// Probe only points of these classes (see the [module docs](self)).
    pub fn classes_to_hook<S: Into<String>>(
        mut self,
        classes: impl IntoIterator<Item = S>,
    ) -> Self {
        self.selector = self.selector.classes_to_hook(classes);
        self
    }

    /// Skip points of these classes (see the [module docs](self)).
    pub fn classes_to_skip<S: Into<String>>(
        mut self,
        classes: impl IntoIterator<Item = S>,
    ) -> Self {
        self.selector = self.selector.classes_to_skip(classes);
        self
    }

    /// The scalar loss whose gradient `Bwd` probes see, from the model's output.
    pub fn loss(mut self, f: impl Fn(&Tensor) -> Result<Tensor> + Send + Sync + 'static) -> Self {
        self.loss = Some(Arc::new(f));
        self
    }

    fn step_type_listed(&self) -> bool {
        self.additional_keys
            .iter()
            .any(|k| k.segments() == [STEP_TYPE])
    }

    /// Resolve the pattern against `model` (an error now if it matches nothing), make one probe
    /// per point and direction, check the keys they read are selected, and install the hooks.
    pub fn prepare<'m, M: HookedModel + ?Sized>(
        &self,
        model: &'m M,
    ) -> Result<PreparedProbing<'m, M>> {
        check_directions("Probing", &self.directions, self.loss.is_some())?;
        for key in &self.additional_keys {
            key.validate()?;
        }
        let mut hooks = hook_set(model, self.relative);
        let points = hooks.resolve(self.selector.clone())?;
        let ctx: Arc<Mutex<Option<StepContext>>> = Arc::default();
        let mut needs_step_type = self.step_type_listed();
        let mut bwd: HashMap<String, Box<dyn Probe>> = HashMap::new();
        let mut paths = Vec::new();
        for &dir in &self.directions {
            for &p in &points {
                let path = hooks.points()[p].path.clone();
                let probe = self.factory.make_probe(&path, dir);
                for key in probe.required_keys() {
                    if key.segments() == [STEP_TYPE] {
                        needs_step_type = true;
                    } else if !self.additional_keys.contains(&key) {
                        return Err(Error::Invalid(format!(
                            "the probe at `{path}` ({dir}) reads `{key}`, which is not among the \
                             Probing's additional_keys; add `.additional_keys([\"{key}\"])`"
                        )));
                    }
                }
                paths.push((path.clone(), dir));
                if dir == Direction::Bwd {
                    bwd.insert(path, probe);
                    continue;
                }
                let mut probe = probe;
                let ctx = ctx.clone();
                hooks.add_at(vec![p], dir, "probe", move |ev, t| {
                    let guard = lock(&ctx);
                    let Some(c) = guard.as_ref() else {
                        return Err(Error::Invalid(
                            "a probe's point ran outside a PreparedProbing run".into(),
                        ));
                    };
                    probe.step(t, &c.extras(ev.path, ev.direction, ev.occurrence))?;
                    Ok(None)
                })?;
            }
            if dir == Direction::Bwd {
                hooks.grad_at(points.clone())?;
            }
        }
        Ok(PreparedProbing {
            model,
            hooks,
            ctx,
            bwd,
            paths,
            needs_step_type,
            config: self.clone(),
        })
    }
}

/// What one run hands its probes.
struct StepContext {
    step_type: Option<StepType>,
    data: TensorDict,
}

impl StepContext {
    fn extras<'a>(
        &'a self,
        path: &'a str,
        direction: Direction,
        occurrence: usize,
    ) -> ProbeExtras<'a> {
        ProbeExtras {
            path,
            direction,
            occurrence,
            step_type: self.step_type,
            data: &self.data,
        }
    }
}

/// [`Probing`] prepared against one model.
pub struct PreparedProbing<'m, M: ?Sized> {
    model: &'m M,
    hooks: HookSet<'static>,
    ctx: Arc<Mutex<Option<StepContext>>>,
    bwd: HashMap<String, Box<dyn Probe>>,
    paths: Vec<(String, Direction)>,
    needs_step_type: bool,
    config: Probing,
}

impl<M: HookedModel + ?Sized> PreparedProbing<'_, M> {
    /// Run on `td` (input at `input`; step type at `step_type` when there, see the
    /// [module docs](self)): returns a new dict with `output`.
    pub fn run(&mut self, td: &TensorDict) -> Result<TensorDict> {
        let step_type = StepType::from_dict(td)?;
        self.run_step(td, step_type)
    }

    /// [`PreparedProbing::run`] as a fit step (tdhook: `td["step_type"] = "fit"`); the returned
    /// dict holds the `step_type` it ran with.
    pub fn fit(&mut self, td: &TensorDict) -> Result<TensorDict> {
        self.run_as(td, StepType::Fit)
    }

    /// [`PreparedProbing::run`] as a predict step.
    pub fn predict(&mut self, td: &TensorDict) -> Result<TensorDict> {
        self.run_as(td, StepType::Predict)
    }

    /// The typed face of [`PreparedProbing::fit`]: `input` (first dim: the batch) and `labels`
    /// (`[N]`, handed to probes at `labels` whatever the `additional_keys`); returns the output.
    /// Other additional keys need [`PreparedProbing::run`].
    pub fn fit_on(&mut self, input: &Tensor, labels: &Tensor) -> Result<Tensor> {
        self.run_tensors(input, labels, StepType::Fit)
    }

    /// The typed face of [`PreparedProbing::predict`].
    pub fn predict_on(&mut self, input: &Tensor, labels: &Tensor) -> Result<Tensor> {
        self.run_tensors(input, labels, StepType::Predict)
    }

    /// The probed `(path, direction)`s, in the order their probes were made.
    pub fn probed(&self) -> &[(String, Direction)] {
        &self.paths
    }

    fn run_as(&mut self, td: &TensorDict, step: StepType) -> Result<TensorDict> {
        let mut td = td.clone();
        step.insert(&mut td)?;
        self.run_step(&td, Some(step))
    }

    fn run_tensors(&mut self, input: &Tensor, labels: &Tensor, step: StepType) -> Result<Tensor> {
        let Some(&n) = input.dims().first() else {
            return Err(Error::Invalid(
                "the probing input is a scalar; give it a batch dim first: [N, …]".into(),
            ));
        };
        let mut td = TensorDict::new([n]);
        td.insert(INPUT, input.clone())?;
        td.insert(LABELS, labels.clone())?;
        let mut data = self.extras(&td, &[n], Some(step))?;
        if data.get(LABELS).is_none() {
            data.insert(LABELS, labels.clone())?;
        }
        self.forward(input, &[n], Some(step), data)
    }

    fn run_step(&mut self, td: &TensorDict, step_type: Option<StepType>) -> Result<TensorDict> {
        let (input, batch) = input_at(td, &input_key(None))?;
        let input = input.clone();
        let data = self.extras(td, &batch, step_type)?;
        let output = self.forward(&input, &batch, step_type, data)?;
        let mut out = td.clone();
        out.insert(OUTPUT, output)?;
        Ok(out)
    }

    /// The additional keys of `td`, batch dims flattened; missing ones are an error.
    fn extras(
        &self,
        td: &TensorDict,
        batch: &[usize],
        step_type: Option<StepType>,
    ) -> Result<TensorDict> {
        if self.needs_step_type && step_type.is_none() {
            return Err(Error::MissingKey {
                what: "Probing",
                key: STEP_TYPE.into(),
                fix: "the probes need a step type: run with fit(&td) / predict(&td), or insert \
                      it with StepType::Fit.insert(&mut td)"
                    .into(),
            });
        }
        let mut data = TensorDict::unbatched();
        for key in &self.config.additional_keys {
            if key.segments() == [STEP_TYPE] {
                continue;
            }
            let leaves: Vec<(Key, Tensor)> = match td.entry(key) {
                None => {
                    return Err(Error::MissingKey {
                        what: "Probing",
                        key: key.to_string(),
                        fix: format!(
                            "it is listed in additional_keys: put it in the dict \
                             (td.insert(\"{key}\", …)) or drop it from additional_keys"
                        ),
                    });
                }
                Some(Entry::Tensor(t)) => vec![(key.clone(), t.clone())],
                Some(Entry::Dict(d)) => d
                    .leaves()
                    .map(|(k, t)| {
                        let segments = key.segments().iter().chain(k.segments()).cloned();
                        Ok((Key::new(segments)?, t.clone()))
                    })
                    .collect::<Result<_>>()?,
            };
            for (k, t) in leaves {
                let t = if batch.len() > 1 && t.dims().starts_with(batch) {
                    let mut dims = vec![batch.iter().product()];
                    dims.extend_from_slice(&t.dims()[batch.len()..]);
                    t.reshape(dims)?
                } else {
                    t
                };
                data.insert(k, t)?;
            }
        }
        Ok(data)
    }

    fn forward(
        &mut self,
        input: &Tensor,
        batch: &[usize],
        step_type: Option<StepType>,
        data: TensorDict,
    ) -> Result<Tensor> {
        *lock(&self.ctx) = Some(StepContext { step_type, data });
        let res = self.forward_inner(input, batch);
        *lock(&self.ctx) = None;
        match res {
            Ok(output) => {
                self.config.factory.end_step(step_type)?;
                Ok(output)
            }
            Err(e) => {
                // Let the factory drop what it collected from the failed run.
                let _ = self.config.factory.end_step(None);
                Err(e)
            }
        }
    }

    fn forward_inner(&mut self, input: &Tensor, batch: &[usize]) -> Result<Tensor> {
        let loss = (!self.bwd.is_empty())
            .then_some(self.config.loss.as_deref())
            .flatten();
        let (output, grads) = forward(self.model, &mut self.hooks, input, batch, loss)?;
        if !grads.is_empty() {
            let guard = lock(&self.ctx);
            let c = guard.as_ref().ok_or_else(|| {
                Error::Invalid("a probe's gradient arrived outside a PreparedProbing run".into())
            })?;
            for (site, grad) in grads {
                if let Some(probe) = self.bwd.get_mut(&site.path) {
                    probe.step(
                        &grad,
                        &c.extras(&site.path, Direction::Bwd, site.occurrence),
                    )?;
                }
            }
        }
        Ok(output)
    }
}
