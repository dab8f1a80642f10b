//! SteeringVectors (replace outputs by `steer_fn(path, output)`) and ActivationAddition (the
//! steering vector of a positive and a negative input).

use super::batch::{input_at, input_key, run_model};
use super::core::{CacheCallback, Capture, Captures, callback_value, check_same_shape, forward};
use super::patching::resolve_all;
use super::{HookedModel, OUTPUT, hook_set};
use crate::error::{Error, Result};
use crate::hookset::HookSet;
use crate::hx::Direction;
use crate::select::Selector;
use crate::tensordict::{Key, TensorDict};
use crate::util::{STEERING_NOT_FINITE, check_finite};
use candle_core::Tensor;
use std::collections::HashMap;
use std::sync::Arc;

/// `steer_fn(path, output) -> new output` (same shape).
pub type SteerFn = dyn Fn(&str, &Tensor) -> Result<Tensor> + Send + Sync;

/// Replace the output of each listed point by `steer_fn(path, output)` on every forward.
///
/// ```
/// use tdhook::latent::SteeringVectors;
/// use tdhook::models::gpt2::{Gpt2, Gpt2Config};
/// use tdhook::prelude::*;
/// use candle_core::{DType, Device, Tensor};
/// # fn main() -> tdhook::Result<()> {
/// let vb = candle_nn::VarBuilder::from_varmap(&candle_nn::VarMap::new(), DType::F32, &Device::Cpu);
/// let model = Gpt2::new(Gpt2Config::new(50, 16, 32, 2, 4), vb)?;
/// let v = Tensor::ones(32, DType::F32, &Device::Cpu)?;
///
/// let steer = SteeringVectors::new(["transformer.h.0"], move |_path, out| Ok(out.broadcast_add(&v)?));
/// let mut steered = steer.prepare(&model)?;
/// let ids = Tensor::new(&[[1u32, 2, 3]], &Device::Cpu)?;
/// let logits = steered.forward(&ids)?;
/// assert_eq!(logits.dims(), &[1, 3, 50]);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SteeringVectors {
    modules: Vec<Selector>,
    steer_fn: Arc<SteerFn>,
    relative: bool,
}

impl SteeringVectors {
    /// Steer these points with `steer_fn`.
    pub fn new<S: Into<Selector>>(
        modules_to_steer: impl IntoIterator<Item = S>,
        steer_fn: impl Fn(&str, &Tensor) -> Result<Tensor> + Send + Sync + 'static,
    ) -> Self {
        Self {
            modules: modules_to_steer.into_iter().map(Into::into).collect(),
            steer_fn: Arc::new(steer_fn),
            relative: true,
        }
    }

    /// Add `coefficient · v` to each point's output, `v` from `vectors` keyed by path (`[D]`,
    /// or `[T, D]` per position). Vectors must be finite.
    pub fn from_vectors(vectors: &TensorDict, coefficient: f64) -> Result<Self> {
        let mut by_path: HashMap<String, Tensor> = HashMap::new();
        for (key, v) in vectors.leaves() {
            let path = key.to_string();
            check_finite(v, "steering vector", &path, STEERING_NOT_FINITE)?;
            by_path.insert(path, (v * coefficient)?);
        }
        let modules: Vec<Selector> = by_path.keys().map(|p| Selector::exact(p.clone())).collect();
        Ok(Self {
            modules,
            steer_fn: Arc::new(move |path, out| add_vector(out, &by_path[path], path)),
            relative: true,
        })
    }

    setters!(relative);

    /// Resolve the paths and install the hooks.
    pub fn prepare<'m, M: HookedModel + ?Sized>(
        &self,
        model: &'m M,
    ) -> Result<PreparedSteering<'m, M>> {
        let mut hooks = hook_set(model, self.relative);
        let points = resolve_all(&hooks, &self.modules)?;
        let steer = self.steer_fn.clone();
        hooks.add_at(points, Direction::Fwd, "steer_fn", move |ev, t| {
            Ok(Some(steer(ev.path, t)?))
        })?;
        Ok(PreparedSteering { model, hooks })
    }
}

/// `out + v`, `v` of shape `[D]` or `[T, D]` against `out: [.., T, D]`.
fn add_vector(out: &Tensor, v: &Tensor, path: &str) -> Result<Tensor> {
    let od = out.dims();
    let vd = v.dims();
    let fits = vd.len() <= od.len() && od[od.len() - vd.len()..] == *vd;
    if !fits {
        return Err(Error::ShapeMismatch {
            what: "steering vector",
            path: path.to_string(),
            expected: od[od.len().saturating_sub(vd.len().max(1))..].to_vec(),
            got: vd.to_vec(),
        });
    }
    // One broadcast add is already a single pass over the activation: the fused steer-add
    // kernel measured no faster here (BENCHMARKS.md, "Kernels"). It pays for per-row vectors
    // and position subsets (`BatchSteering`).
    Ok(out.broadcast_add(&v.to_dtype(out.dtype())?)?)
}

/// [`SteeringVectors`] prepared against one model.
pub struct PreparedSteering<'m, M: ?Sized> {
    model: &'m M,
    hooks: HookSet<'static>,
}

impl<M: HookedModel + ?Sized> PreparedSteering<'_, M> {
    /// Run on `td` (input at `input`): a new dict with the steered `output`.
    pub fn run(&mut self, td: &TensorDict) -> Result<TensorDict> {
        let (input, batch) = input_at(td, &input_key(None))?;
        let output = run_model(self.model, &mut self.hooks, &input.clone(), &batch)?;
        let mut out = td.clone();
        out.insert(OUTPUT, output)?;
        Ok(out)
    }

    /// The typed face: the steered output for `input`.
    pub fn forward(&mut self, input: &Tensor) -> Result<Tensor> {
        self.hooks.run(|hx| self.model.forward_hooked(input, hx))
    }

    /// The hook set, to run the model's own forward (e.g. a generation loop) with its `hx()`.
    pub fn hooks(&mut self) -> &mut HookSet<'static> {
        &mut self.hooks
    }
}

/// How ActivationAddition reduces the token dim of `mean(pos − neg)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenReduction {
    /// Keep every position (tdhook's vector: `[T, D]` for `[B, T, D]` activations).
    #[default]
    PerPosition,
    /// The last position only (`[D]`).
    LastToken,
    /// Mean over positions (`[D]`).
    MeanTokens,
}

/// The steering vector of a positive and a negative input: `(steer_key, path)` =
/// mean over the batch dims of (positive − negative) activations.
///
/// Input dict: `(positive_key, "input")` and `(negative_key, "input")`, of one shape. Improvements
/// over tdhook: a token reduction and a coefficient, and [`PreparedAddition::steering`] applies
/// the vectors through [`SteeringVectors`] in one call.
///
/// ```
/// use tdhook::latent::{ActivationAddition, TokenReduction};
/// use tdhook::models::gpt2::{Gpt2, Gpt2Config};
/// use tdhook::prelude::*;
/// use candle_core::{DType, Device, Tensor};
/// # fn main() -> tdhook::Result<()> {
/// let vb = candle_nn::VarBuilder::from_varmap(&candle_nn::VarMap::new(), DType::F32, &Device::Cpu);
/// let model = Gpt2::new(Gpt2Config::new(50, 16, 32, 2, 4), vb)?;
///
/// let mut td = TensorDict::new([2]);
/// td.insert(("positive", "input"), Tensor::new(&[[1u32, 2, 3], [4, 5, 6]], &Device::Cpu)?)?;
/// td.insert(("negative", "input"), Tensor::new(&[[7u32, 8, 9], [4, 5, 9]], &Device::Cpu)?)?;
///
/// let mut addition = ActivationAddition::new(["transformer.h.0"]).prepare(&model)?;
/// let out = addition.run(&td)?;
/// assert_eq!(out.tensor(("steer", "transformer.h.0"))?.dims(), &[3, 32]); // per position
///
/// // Apply it: every forward adds 4 · v at transformer.h.0.
/// let steer = addition.reduction(TokenReduction::LastToken).coefficient(4.0).steering(&td)?;
/// let mut steered = steer.prepare(&model)?;
/// let logits = steered.forward(&Tensor::new(&[[1u32, 2, 3, 4, 5]], &Device::Cpu)?)?;
/// assert_eq!(logits.dims(), &[1, 5, 50]);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ActivationAddition {
    modules: Vec<Selector>,
    positive_key: Key,
    negative_key: Key,
    steer_key: Key,
    clean_intermediate_keys: bool,
    cache_callback: Option<Arc<CacheCallback>>,
    reduction: TokenReduction,
    coefficient: f64,
    relative: bool,
}

impl ActivationAddition {
    /// Compute vectors at these points.
    pub fn new<S: Into<Selector>>(modules_to_steer: impl IntoIterator<Item = S>) -> Self {
        Self {
            modules: modules_to_steer.into_iter().map(Into::into).collect(),
            positive_key: Key::from("positive"),
            negative_key: Key::from("negative"),
            steer_key: Key::from("steer"),
            clean_intermediate_keys: true,
            cache_callback: None,
            reduction: TokenReduction::PerPosition,
            coefficient: 1.0,
            relative: true,
        }
    }

    /// Where the positive input lives (default `positive`).
    pub fn positive_key(mut self, key: impl Into<Key>) -> Self {
        self.positive_key = key.into();
        self
    }

    /// Where the negative input lives (default `negative`).
    pub fn negative_key(mut self, key: impl Into<Key>) -> Self {
        self.negative_key = key.into();
        self
    }

    /// Where the vectors go (default `steer`).
    pub fn steer_key(mut self, key: impl Into<Key>) -> Self {
        self.steer_key = key.into();
        self
    }

    setters!(clean_intermediate_keys, cache_callback, relative);

    /// How to reduce the token dim (default per position, as tdhook).
    pub fn reduction(mut self, reduction: TokenReduction) -> Self {
        self.reduction = reduction;
        self
    }

    /// Scale the vectors (default 1).
    pub fn coefficient(mut self, coefficient: f64) -> Self {
        self.coefficient = coefficient;
        self
    }

    /// Resolve the paths and install the capture hooks.
    pub fn prepare<'m, M: HookedModel + ?Sized>(
        &self,
        model: &'m M,
    ) -> Result<PreparedAddition<'m, M>> {
        let mut hooks = hook_set(model, self.relative);
        let points = resolve_all(&hooks, &self.modules)?;
        let capture = Capture::default();
        capture.record(
            &mut hooks,
            points,
            Direction::Fwd,
            "cache_callback",
            callback_value(self.cache_callback.clone()),
        )?;
        Ok(PreparedAddition {
            model,
            hooks,
            capture,
            config: self.clone(),
        })
    }
}

/// [`ActivationAddition`] prepared against one model.
pub struct PreparedAddition<'m, M: ?Sized> {
    model: &'m M,
    hooks: HookSet<'static>,
    capture: Capture,
    config: ActivationAddition,
}

/// One side's run: its output and what the points saw.
type Side = (Tensor, Captures);
/// The vectors by key name, and both sides' runs.
type Computed = (Vec<(String, Tensor)>, Side, Side);

impl<'m, M: HookedModel + ?Sized> PreparedAddition<'m, M> {
    /// Set the token reduction used from now on.
    pub fn reduction(mut self, reduction: TokenReduction) -> Self {
        self.config.reduction = reduction;
        self
    }

    /// Set the coefficient used from now on.
    pub fn coefficient(mut self, coefficient: f64) -> Self {
        self.config.coefficient = coefficient;
        self
    }

    fn capture(&mut self, input: &Tensor, batch: &[usize]) -> Result<Side> {
        self.capture.clear();
        let (out, _) = forward(self.model, &mut self.hooks, input, batch, None)?;
        Ok((out, self.capture.take()))
    }

    /// Run on `td`: a new dict with `(steer_key, path)` for each point.
    pub fn run(&mut self, td: &TensorDict) -> Result<TensorDict> {
        let (vectors, pos, neg) = self.compute(td)?;
        let mut out = td.clone();
        let mut steer = TensorDict::unbatched();
        for (path, v) in &vectors {
            steer.insert(path.as_str(), v.clone())?;
        }
        out.insert_dict(self.config.steer_key.clone(), steer)?;
        if !self.config.clean_intermediate_keys {
            let (pos_out, pos_acts) = pos;
            let (neg_out, neg_acts) = neg;
            out.insert("_positive_out", pos_out)?;
            out.insert("_negative_out", neg_out)?;
            out.insert_dict("_positive_cache", pos_acts.to_dict(false)?)?;
            out.insert_dict("_negative_cache", neg_acts.to_dict(false)?)?;
        }
        Ok(out)
    }

    /// The vectors (after reduction and coefficient), keyed by path, as a [`SteeringVectors`]
    /// that adds them on every forward.
    pub fn steering(&mut self, td: &TensorDict) -> Result<SteeringVectors> {
        let (vectors, _, _) = self.compute(td)?;
        let mut d = TensorDict::unbatched();
        for (path, v) in vectors {
            d.insert(path.as_str(), v)?;
        }
        let mut steer = SteeringVectors::from_vectors(&d, 1.0)?;
        steer.relative = self.config.relative;
        Ok(steer)
    }

    fn compute(&mut self, td: &TensorDict) -> Result<Computed> {
        let pos_key = input_key(Some(&self.config.positive_key));
        let neg_key = input_key(Some(&self.config.negative_key));
        let (pos_in, batch) = input_at(td, &pos_key)?;
        let (neg_in, neg_batch) = input_at(td, &neg_key)?;
        check_same_shape("ActivationAddition", &pos_key, pos_in, &neg_key, neg_in)?;
        let (pos_in, neg_in) = (pos_in.clone(), neg_in.clone());
        let pos = self.capture(&pos_in, &batch)?;
        let neg = self.capture(&neg_in, &neg_batch)?;
        let n_batch: usize = batch.iter().product();
        let mut vectors = Vec::new();
        for (site, p) in pos.1.iter() {
            let name = site.name();
            let n = neg.1.get(site).ok_or_else(|| {
                Error::Invalid(format!(
                    "`{name}` ran for the positive input but not the negative one"
                ))
            })?;
            check_same_shape(
                "ActivationAddition activations",
                format!("positive {name}"),
                p,
                format!("negative {name}"),
                n,
            )?;
            let diff = (p - n)?;
            // Mean over the (flattened) batch dim when the activation has it first.
            let v = if diff.dims().first() == Some(&n_batch) {
                diff.mean(0)?
            } else {
                diff
            };
            let v = match self.config.reduction {
                TokenReduction::PerPosition => v,
                TokenReduction::LastToken if v.rank() >= 2 => {
                    let t = v.dim(0)?;
                    v.get(t - 1)?
                }
                TokenReduction::MeanTokens if v.rank() >= 2 => v.mean(0)?,
                _ => v,
            };
            vectors.push((name, (v * self.config.coefficient)?));
        }
        Ok((vectors, pos, neg))
    }
}
