//! The one primitive under caching, patching and ActivationAddition: capture what hook points
//! saw in one run, keyed by `(path, direction, occurrence)`, and replay it into another.
//!
//! * [`Captures`] — the captured tensors, in path order, with the one key scheme every method
//!   writes (`path` for a point's first call, `path@k` for call `k`).
//! * [`Capture`] — a shared store that hooks record into ([`Capture::record`]) and replay from
//!   ([`Capture::replay`]); a method holds one per run kind it needs.
//! * [`forward`] — one run of a [`HookedModel`], with the backward pass when a loss is given.

use super::batch::run_model;
use crate::error::{Error, Result};
use crate::hookset::{HookEvent, HookSet};
use crate::hx::Direction;
use crate::model::HookedModel;
use crate::tensordict::{Key, TensorDict};
use crate::util::lock;
use candle_core::Tensor;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// `callback(event, tensor) -> value to keep` (tdhook's `callback` / `cache_callback`).
pub type CacheCallback = dyn Fn(&HookEvent<'_>, &Tensor) -> Result<Tensor> + Send + Sync;
/// The scalar whose gradient `Bwd` points see, computed from the model's output.
pub type LossFn = dyn Fn(&Tensor) -> Result<Tensor> + Send + Sync;

/// One call of one hook point in one direction.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Site {
    /// The hook path.
    pub path: String,
    /// Which direction the tensor was seen in.
    pub direction: Direction,
    /// Which call of the point within the forward (0 for the first).
    pub occurrence: usize,
}

impl Site {
    /// The site of a hook event.
    pub fn of(ev: &HookEvent<'_>) -> Self {
        Self {
            path: ev.path.to_string(),
            direction: ev.direction,
            occurrence: ev.occurrence,
        }
    }

    /// The key name of this call: `path` for call 0, `path@k` for call `k` (tdhook keeps only
    /// one call per path; this keeps every call, the first under the plain path).
    pub fn name(&self) -> String {
        if self.occurrence == 0 {
            self.path.clone()
        } else {
            format!("{}@{}", self.path, self.occurrence)
        }
    }

    /// The dict key: the name, or `(direction, name)` when `nested`.
    pub fn key(&self, nested: bool) -> Key {
        let name = self.name();
        if nested {
            Key::from((self.direction.as_str(), name.as_str()))
        } else {
            Key::from(name)
        }
    }
}

/// Tensors captured in one run, by [`Site`], in path order.
#[derive(Clone, Debug, Default)]
pub struct Captures {
    map: BTreeMap<Site, Tensor>,
}

impl Captures {
    /// The tensor captured at `site`.
    pub fn get(&self, site: &Site) -> Option<&Tensor> {
        self.map.get(site)
    }

    /// Keep `t` at `site` (replacing what was there).
    pub fn insert(&mut self, site: Site, t: Tensor) {
        self.map.insert(site, t);
    }

    /// Every capture, in path order (then direction, then occurrence).
    pub fn iter(&self) -> impl Iterator<Item = (&Site, &Tensor)> {
        self.map.iter()
    }

    /// As an unbatched dict keyed by [`Site::key`].
    pub fn to_dict(&self, nested: bool) -> Result<TensorDict> {
        let mut d = TensorDict::unbatched();
        for (site, t) in &self.map {
            d.insert(site.key(nested), t.clone())?;
        }
        Ok(d)
    }
}

/// A capture store shared between the hooks that fill it and the method that reads it.
#[derive(Clone, Default)]
pub(crate) struct Capture {
    store: Arc<Mutex<Captures>>,
}

impl Capture {
    /// Add hooks at `points` (direction `dir`) that keep `value(event, tensor)` (detached) at the
    /// event's site.
    pub fn record(
        &self,
        hooks: &mut HookSet<'static>,
        points: Vec<usize>,
        dir: Direction,
        what: &'static str,
        value: impl Fn(&HookEvent<'_>, &Tensor) -> Result<Tensor> + Send + Sync + 'static,
    ) -> Result<()> {
        let store = self.store.clone();
        hooks.add_at(points, dir, what, move |ev, t| {
            let v = value(ev, t)?.detach();
            lock(&store).insert(Site::of(ev), v);
            Ok(None)
        })?;
        Ok(())
    }

    /// Add hooks at `points` (forward outputs) that replace each call's output by
    /// `with(path, output, captured)`, `captured` being what the same site held when recorded.
    /// A call with no capture (the run took another path through the model) is an error.
    pub fn replay(
        &self,
        hooks: &mut HookSet<'static>,
        points: Vec<usize>,
        what: &'static str,
        with: impl Fn(&str, &Tensor, &Tensor) -> Result<Tensor> + Send + Sync + 'static,
    ) -> Result<()> {
        let store = self.store.clone();
        hooks.add_at(points, Direction::Fwd, what, move |ev, t| {
            let site = Site::of(ev);
            let store = lock(&store);
            let Some(captured) = store.get(&site) else {
                return Err(Error::Invalid(format!(
                    "`{}` runs {} time(s) or more in this run, but only {} time(s) in the run it \
                     replays; both inputs must take the same path through the model",
                    ev.path,
                    ev.occurrence + 1,
                    ev.occurrence
                )));
            };
            with(ev.path, t, captured).map(Some)
        })?;
        Ok(())
    }

    /// Keep `t` at `site` (gradients, which arrive after the forward).
    pub fn insert(&self, site: Site, t: Tensor) {
        lock(&self.store).insert(site, t);
    }

    /// Replace the contents.
    pub fn set(&self, captures: Captures) {
        *lock(&self.store) = captures;
    }

    /// Empty the store.
    pub fn clear(&self) {
        self.set(Captures::default());
    }

    /// A copy of the contents.
    pub fn snapshot(&self) -> Captures {
        lock(&self.store).clone()
    }

    /// The contents, leaving the store empty.
    pub fn take(&self) -> Captures {
        std::mem::take(&mut *lock(&self.store))
    }
}

/// One run of `model` on `input` (batch dims `batch`); with `loss`, the backward pass of
/// `loss(output)` follows and the gradients recorded at `Bwd` points come back (each as a
/// [`Site`]). The output is detached.
pub(crate) fn forward<M: HookedModel + ?Sized>(
    model: &M,
    hooks: &mut HookSet<'_>,
    input: &Tensor,
    batch: &[usize],
    loss: Option<&LossFn>,
) -> Result<(Tensor, Vec<(Site, Tensor)>)> {
    let output = run_model(model, hooks, input, batch)?;
    let mut grads = Vec::new();
    if let Some(loss) = loss {
        loss(&output)?.backward()?;
        if let Some(e) = hooks.take_grad_error() {
            return Err(e);
        }
        for rec in hooks.take_grads() {
            let site = Site {
                path: rec.path,
                direction: Direction::Bwd,
                occurrence: rec.occurrence,
            };
            grads.push((site, rec.grad));
        }
    }
    Ok((output.detach(), grads))
}

/// The directions a method hooks: at least one, and `Bwd` only with a loss to differentiate.
pub(crate) fn check_directions(
    method: &str,
    directions: &[Direction],
    has_loss: bool,
) -> Result<()> {
    if directions.is_empty() {
        return Err(Error::Invalid(format!(
            "{method} needs at least one direction, e.g. `.directions([Direction::Fwd])`"
        )));
    }
    if directions.contains(&Direction::Bwd) && !has_loss {
        return Err(Error::Invalid(format!(
            "{method} on `Bwd` needs the loss to differentiate: add `.loss(|output| ...)`, e.g. \
             `.loss(|y| Ok(y.sum_all()?))`"
        )));
    }
    Ok(())
}

/// What a capture keeps: `callback(event, tensor)` when there is one, else the tensor.
pub(crate) fn callback_value(
    callback: Option<Arc<CacheCallback>>,
) -> impl Fn(&HookEvent<'_>, &Tensor) -> Result<Tensor> + Send + Sync + 'static {
    move |ev, t| match &callback {
        Some(f) => f(ev, t),
        None => Ok(t.clone()),
    }
}

/// Two inputs a method runs side by side (clean / corrupted, positive / negative) must have one
/// shape.
pub(crate) fn check_same_shape(
    what: &'static str,
    a_name: impl std::fmt::Display,
    a: &Tensor,
    b_name: impl std::fmt::Display,
    b: &Tensor,
) -> Result<()> {
    if a.dims() == b.dims() {
        return Ok(());
    }
    Err(Error::InputMismatch {
        what,
        a: a_name.to_string(),
        a_shape: a.dims().to_vec(),
        b: b_name.to_string(),
        b_shape: b.dims().to_vec(),
    })
}
