//! ActivationCaching: keep what the hook points a pattern selects saw.

use super::batch::{input_at, input_key, unflatten_dict};
use super::core::{CacheCallback, Capture, LossFn, check_directions, forward};
use super::{HookedModel, OUTPUT, hook_set};
use crate::error::{Error, Result};
use crate::hookset::{HookEvent, HookSet};
use crate::hx::Direction;
use crate::select::Selector;
use crate::tensordict::{Key, TensorDict};
use candle_core::{Device, Tensor};
use std::ops::Range;
use std::sync::Arc;

/// Which token positions to keep, along the token dim (default dim 1: `[batch, token, …]`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenSelect {
    /// Every position (tdhook's behaviour).
    #[default]
    All,
    /// The last position only (the dim is kept, size 1).
    Last,
    /// A range of positions.
    Range(Range<usize>),
    /// Chosen positions, in this order.
    Indices(Vec<usize>),
}

impl TokenSelect {
    fn apply(&self, t: &Tensor, dim: usize, path: &str) -> Result<Tensor> {
        if matches!(self, TokenSelect::All) {
            return Ok(t.clone());
        }
        let Some(&len) = t.dims().get(dim) else {
            return Err(Error::Invalid(format!(
                "token selection on dim {dim}, but the tensor at `{path}` has shape {:?}; \
                 choose another token_dim or cache every position",
                t.dims()
            )));
        };
        let out_of_range = |i: usize| {
            Error::Invalid(format!(
                "token position {i} is out of range at `{path}`: dim {dim} has {len} positions"
            ))
        };
        Ok(match self {
            TokenSelect::All => t.clone(),
            TokenSelect::Last => {
                t.narrow(dim, len.checked_sub(1).ok_or_else(|| out_of_range(0))?, 1)?
            }
            TokenSelect::Range(r) => {
                if r.end > len || r.start > r.end {
                    return Err(out_of_range(r.end));
                }
                t.narrow(dim, r.start, r.end - r.start)?
            }
            TokenSelect::Indices(ix) => {
                if let Some(&bad) = ix.iter().find(|&&i| i >= len) {
                    return Err(out_of_range(bad));
                }
                let ids: Vec<u32> = ix.iter().map(|&i| i as u32).collect();
                t.index_select(&Tensor::new(ids, t.device())?, dim)?
            }
        })
    }
}

/// Cache the activations of the hook points `key_pattern` selects.
///
/// Keys follow tdhook: with one direction the cache key is the path (`cache/transformer.h.0`);
/// with several, or `use_nested_keys`, it is `(direction, path)` (`cache/fwd/transformer.h.0`).
/// Improvements over tdhook: a point called several times in one forward keeps every call —
/// call 0 at `path`, call k at `path@k` (tdhook keeps only the last); values are stored as the
/// hook saw them, whatever their leading dims; token positions can be selected and the cache
/// moved to another device as it is filled.
///
/// ```
/// use tdhook::latent::ActivationCaching;
/// use tdhook::models::gpt2::{Gpt2, Gpt2Config};
/// use tdhook::prelude::*;
/// use candle_core::{DType, Device, Tensor};
/// # fn main() -> tdhook::Result<()> {
/// let vb = candle_nn::VarBuilder::from_varmap(&candle_nn::VarMap::new(), DType::F32, &Device::Cpu);
/// let model = Gpt2::new(Gpt2Config::new(50, 16, 32, 2, 4), vb)?;
///
/// let mut td = TensorDict::new([2]);
/// td.insert("input", Tensor::new(&[[1u32, 2, 3], [4, 5, 6]], &Device::Cpu)?)?;
///
/// let mut caching = ActivationCaching::new(r"transformer\.h\.\d+").prepare(&model)?;
/// let out = caching.run(&td)?;
/// assert_eq!(out.tensor(("cache", "transformer.h.1"))?.dims(), &[2, 3, 32]);
/// assert_eq!(out.tensor("output")?.dims(), &[2, 3, 50]);
/// assert!(td.get("output").is_none(), "the caller's dict is untouched");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ActivationCaching {
    selector: Selector,
    relative: bool,
    cache: Option<TensorDict>,
    callback: Option<Arc<CacheCallback>>,
    directions: Vec<Direction>,
    use_nested_keys: bool,
    clear_cache: bool,
    cache_key: Option<Key>,
    tokens: TokenSelect,
    token_dim: usize,
    device: Option<Device>,
    loss: Option<Arc<LossFn>>,
}

impl ActivationCaching {
    /// Cache the points `key_pattern` selects (a full-match regex, or an exact / typed path).
    pub fn new(key_pattern: impl Into<Selector>) -> Self {
        Self {
            selector: key_pattern.into(),
            relative: true,
            cache: None,
            callback: None,
            directions: vec![Direction::Fwd],
            use_nested_keys: false,
            clear_cache: true,
            cache_key: Some(Key::from("cache")),
            tokens: TokenSelect::All,
            token_dim: 1,
            device: None,
            loss: None,
        }
    }

    setters!(relative);

    /// Start from this cache. With `clear_cache(true)` (the default) it is emptied when a run
    /// starts, as tdhook does; with `clear_cache(false)` its entries stay and runs add to it.
    pub fn cache(mut self, cache: TensorDict) -> Self {
        self.cache = Some(cache);
        self
    }

    /// Cache `callback(event, tensor)` instead of the tensor.
    pub fn callback(
        mut self,
        f: impl Fn(&HookEvent<'_>, &Tensor) -> Result<Tensor> + Send + Sync + 'static,
    ) -> Self {
        self.callback = Some(Arc::new(f));
        self
    }

    /// Directions to cache (default `[Fwd]`). `Bwd` needs [`ActivationCaching::loss`].
    pub fn directions(mut self, directions: impl IntoIterator<Item = Direction>) -> Self {
        self.directions = directions.into_iter().collect();
        self
    }

    /// Key the cache by `(direction, path)` even with one direction.
    pub fn use_nested_keys(mut self, nested: bool) -> Self {
        self.use_nested_keys = nested;
        self
    }

    /// Empty the cache at the start of each run (default `true`).
    pub fn clear_cache(mut self, clear: bool) -> Self {
        self.clear_cache = clear;
        self
    }

    /// Where the cache goes in the output dict (default `cache`); `None` leaves it out.
    pub fn cache_key(mut self, key: Option<impl Into<Key>>) -> Self {
        self.cache_key = key.map(Into::into);
        self
    }

    /// Keep only these token positions along `token_dim` (default dim 1).
    pub fn tokens(mut self, tokens: TokenSelect) -> Self {
        self.tokens = tokens;
        self
    }

    /// The token dim [`ActivationCaching::tokens`] selects along.
    pub fn token_dim(mut self, dim: usize) -> Self {
        self.token_dim = dim;
        self
    }

    /// Move cached values to `device` as they are stored (e.g. CPU while the model runs on GPU).
    pub fn to_device(mut self, device: Device) -> Self {
        self.device = Some(device);
        self
    }

    /// The scalar loss `Bwd` caching differentiates, from the model's output.
    pub fn loss(mut self, f: impl Fn(&Tensor) -> Result<Tensor> + Send + Sync + 'static) -> Self {
        self.loss = Some(Arc::new(f));
        self
    }

    fn nested(&self) -> bool {
        self.use_nested_keys || self.directions.len() > 1
    }

    /// Resolve the pattern against `model` (an error now if it matches nothing) and install the
    /// hooks.
    pub fn prepare<'m, M: HookedModel + ?Sized>(
        &self,
        model: &'m M,
    ) -> Result<PreparedCaching<'m, M>> {
        check_directions("ActivationCaching", &self.directions, self.loss.is_some())?;
        let mut hooks = hook_set(model, self.relative);
        let points = hooks.resolve(self.selector.clone())?;
        let capture = Capture::default();
        for &dir in &self.directions {
            if dir == Direction::Bwd {
                hooks.grad_at(points.clone())?;
            } else {
                capture.record(&mut hooks, points.clone(), dir, "callback", self.value())?;
            }
        }
        Ok(PreparedCaching {
            model,
            hooks,
            capture,
            config: self.clone(),
        })
    }

    /// The value a hook event caches: the callback's (or the tensor), its selected tokens, on
    /// the chosen device.
    fn value(&self) -> impl Fn(&HookEvent<'_>, &Tensor) -> Result<Tensor> + Send + Sync + 'static {
        let callback = self.callback.clone();
        let tokens = self.tokens.clone();
        let token_dim = self.token_dim;
        let device = self.device.clone();
        move |ev, t| {
            let value = match &callback {
                Some(f) => f(ev, t)?,
                None => t.clone(),
            };
            let value = tokens.apply(&value.detach(), token_dim, ev.path)?;
            Ok(match &device {
                Some(d) => value.to_device(d)?,
                None => value,
            })
        }
    }
}

/// [`ActivationCaching`] prepared against one model.
pub struct PreparedCaching<'m, M: ?Sized> {
    model: &'m M,
    hooks: HookSet<'static>,
    capture: Capture,
    config: ActivationCaching,
}

impl<M: HookedModel + ?Sized> PreparedCaching<'_, M> {
    /// Run on `td` (input at `input`): returns a new dict with `output` and the cache at the
    /// cache key.
    pub fn run(&mut self, td: &TensorDict) -> Result<TensorDict> {
        let (input, batch) = input_at(td, &input_key(None))?;
        let input = input.clone();
        let (output, cache) = self.run_tensor(&input, &batch)?;
        let mut out = td.clone();
        out.insert(OUTPUT, output)?;
        if let Some(key) = &self.config.cache_key {
            out.insert_dict(key.clone(), cache)?;
        }
        Ok(out)
    }

    /// The typed face: run on an input tensor whose first dim is the batch; returns the output
    /// and the cache (keys as in [`PreparedCaching::run`]).
    pub fn cache(&mut self, input: &Tensor) -> Result<(Tensor, TensorDict)> {
        let batch = input
            .dims()
            .first()
            .copied()
            .map(|b| vec![b])
            .unwrap_or_default();
        self.run_tensor(input, &batch)
    }

    fn run_tensor(&mut self, input: &Tensor, batch: &[usize]) -> Result<(Tensor, TensorDict)> {
        if self.config.clear_cache {
            // tdhook clears the cache (the given one included) when the context is entered.
            self.capture.clear();
        }
        let loss = self
            .config
            .directions
            .contains(&Direction::Bwd)
            .then_some(self.config.loss.as_deref())
            .flatten();
        let (output, grads) = forward(self.model, &mut self.hooks, input, batch, loss)?;
        if !grads.is_empty() {
            let value = self.config.value();
            for (site, grad) in grads {
                let class = self
                    .hooks
                    .points()
                    .iter()
                    .find(|p| p.path == site.path)
                    .map_or("", |p| p.class);
                let ev = HookEvent {
                    path: &site.path,
                    class,
                    direction: Direction::Bwd,
                    occurrence: site.occurrence,
                };
                let v = value(&ev, &grad)?;
                self.capture.insert(site, v);
            }
        }
        Ok((output, unflatten_dict(&self.current_cache()?, batch)?))
    }

    /// The cache as it stands (what the runs so far filled, on top of the initial cache when
    /// `clear_cache(false)`).
    pub fn current_cache(&self) -> Result<TensorDict> {
        let mut cache = match (&self.config.cache, self.config.clear_cache) {
            (Some(initial), false) => initial.clone(),
            _ => TensorDict::unbatched(),
        };
        let nested = self.config.nested();
        for (site, t) in self.capture.snapshot().iter() {
            cache.insert(site.key(nested), t.clone())?;
        }
        Ok(cache)
    }
}
