//! ActivationPatching: a clean run, then a corrupted run with chosen activations replaced by the
//! clean ones.

use super::batch::{input_at, input_key, unflatten_dict};
use super::core::{CacheCallback, Capture, callback_value, check_same_shape, forward};
use super::{HookedModel, OUTPUT, hook_set};
use crate::error::{Error, Result};
use crate::hookset::HookSet;
use crate::hx::Direction;
use crate::select::Selector;
use crate::tensordict::{Key, TensorDict};
use crate::util::kernel_error;
use candle_core::Tensor;
use std::ops::Range;
use std::sync::Arc;
use tdhook_kernels::Positions;

/// `patch_fn(module_key, output, output_to_patch)`: the corrupted output and the clean one it
/// is patched with; `None` means "use the clean one" (tdhook's contract).
pub type PatchFn = dyn Fn(&str, &Tensor, &Tensor) -> Result<Option<Tensor>> + Send + Sync;

/// Patch the outputs of `modules_to_patch` in the corrupted run with the clean run's.
///
/// Input dict: the clean input at `input`, the corrupted one at `(patch_key, "input")` (same
/// shape). Output: the clean output at `output`, the patched one at `(patch_key, "output")`.
///
/// Improvements over tdhook 0.3.0: any number of batch dims; the caller's dict is not mutated;
/// a module called several times per forward patches call k with clean call k, and the clean
/// run is left untouched (tdhook replaces the clean run's second call by its first output and
/// patches every corrupted call with the first clean call).
///
/// ```
/// use tdhook::latent::ActivationPatching;
/// use tdhook::models::gpt2::{Gpt2, Gpt2Config};
/// use tdhook::prelude::*;
/// use candle_core::{DType, Device, Tensor};
/// # fn main() -> tdhook::Result<()> {
/// let vb = candle_nn::VarBuilder::from_varmap(&candle_nn::VarMap::new(), DType::F32, &Device::Cpu);
/// let model = Gpt2::new(Gpt2Config::new(50, 16, 32, 2, 4), vb)?;
///
/// let mut td = TensorDict::new([1]);
/// td.insert("input", Tensor::new(&[[1u32, 2, 3]], &Device::Cpu)?)?;
/// td.insert(("patched", "input"), Tensor::new(&[[1u32, 7, 3]], &Device::Cpu)?)?;
///
/// // Patch the last block: everything downstream comes from the clean run.
/// let mut patching = ActivationPatching::new(["transformer.h.1"]).prepare(&model)?;
/// let out = patching.run(&td)?;
/// let clean = out.tensor("output")?;
/// let patched = out.tensor(("patched", "output"))?;
/// let diff = (clean - patched)?.abs()?.max_all()?.to_scalar::<f32>()?;
/// assert!(diff < 1e-5);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ActivationPatching {
    modules: Vec<Selector>,
    patch_key: Key,
    clean_intermediate_keys: bool,
    patch_fn: Option<Arc<PatchFn>>,
    cache_callback: Option<Arc<CacheCallback>>,
    relative: bool,
    region: Option<Region>,
}

/// Which part of a `[.., T, D]` activation is patched, and how much (the fused patch kernel).
#[derive(Clone, Debug)]
struct Region {
    positions: Positions,
    channels: Option<Range<usize>>,
    alpha: f64,
}

impl Default for Region {
    fn default() -> Self {
        Self {
            positions: Positions::All,
            channels: None,
            alpha: 1.0,
        }
    }
}

impl ActivationPatching {
    /// Patch these points (paths, typed paths or full-match patterns).
    pub fn new<S: Into<Selector>>(modules_to_patch: impl IntoIterator<Item = S>) -> Self {
        Self {
            modules: modules_to_patch.into_iter().map(Into::into).collect(),
            patch_key: Key::from("patched"),
            clean_intermediate_keys: true,
            patch_fn: None,
            cache_callback: None,
            relative: true,
            region: None,
        }
    }

    /// Patch only these positions (dim −2 of each patched output): a range, a `[T]` mask or a
    /// per-row `[B·T]` mask (see [`Positions`]). Default: every position. tdhook patches the
    /// whole output; selecting positions here needs no `patch_fn` and runs the fused patch
    /// kernel (one pass over the patched rows only).
    ///
    /// ```
    /// use tdhook::latent::ActivationPatching;
    /// use tdhook::models::gpt2::{Gpt2, Gpt2Config};
    /// use tdhook::prelude::*;
    /// use tdhook::kernels::Positions;
    /// use candle_core::{DType, Device, Tensor};
    /// # fn main() -> tdhook::Result<()> {
    /// let vb = candle_nn::VarBuilder::from_varmap(&candle_nn::VarMap::new(), DType::F32, &Device::Cpu);
    /// let model = Gpt2::new(Gpt2Config::new(50, 16, 32, 2, 4), vb)?;
    /// // Patch the clean run's last token into block 0 of the corrupted run.
    /// let mut patching = ActivationPatching::new(["transformer.h.0"])
    ///     .positions(Positions::Range(2..3))
    ///     .prepare(&model)?;
    /// let clean = Tensor::new(&[[1u32, 2, 3]], &Device::Cpu)?;
    /// let corrupted = Tensor::new(&[[1u32, 2, 9]], &Device::Cpu)?;
    /// let (clean_logits, patched) = patching.patch(&clean, &corrupted)?;
    /// // Positions 0 and 1 are the same tokens in both runs, and position 2 now reads the
    /// // clean activation: the patched logits are the clean ones.
    /// let diff = (clean_logits - patched)?.abs()?.max_all()?.to_scalar::<f32>()?;
    /// assert!(diff < 1e-5);
    /// # Ok(()) }
    /// ```
    pub fn positions(mut self, positions: Positions) -> Self {
        self.region.get_or_insert_with(Region::default).positions = positions;
        self
    }

    /// Patch only channels `lo..hi` of the last dim (default: all).
    pub fn channels(mut self, channels: Range<usize>) -> Self {
        self.region.get_or_insert_with(Region::default).channels = Some(channels);
        self
    }

    /// Patch only attention heads `heads` of an output whose last dim holds the heads one after
    /// another, `head_dim` wide each (e.g. GPT-2's `attn.c_attn`, whose first third is the
    /// queries): channels `heads.start·head_dim .. heads.end·head_dim`.
    pub fn heads(self, heads: Range<usize>, head_dim: usize) -> Self {
        self.channels(tdhook_kernels::head_channels(heads, head_dim))
    }

    /// Blend instead of replace: `(1 − alpha)·corrupted + alpha·clean` on the patched region
    /// (default 1: replace).
    pub fn alpha(mut self, alpha: f64) -> Self {
        self.region.get_or_insert_with(Region::default).alpha = alpha;
        self
    }

    /// Where the corrupted input is read and the patched output written (default `patched`).
    pub fn patch_key(mut self, key: impl Into<Key>) -> Self {
        self.patch_key = key.into();
        self
    }

    setters!(clean_intermediate_keys, cache_callback, relative);

    /// Compute the patched output from the corrupted and clean ones.
    pub fn patch_fn(
        mut self,
        f: impl Fn(&str, &Tensor, &Tensor) -> Result<Option<Tensor>> + Send + Sync + 'static,
    ) -> Self {
        self.patch_fn = Some(Arc::new(f));
        self
    }

    /// Resolve the paths against `model` (unknown paths are errors now) and install the hooks:
    /// one set captures the clean run, the other replays it into the corrupted run.
    pub fn prepare<'m, M: HookedModel + ?Sized>(
        &self,
        model: &'m M,
    ) -> Result<PreparedPatching<'m, M>> {
        if self.patch_fn.is_some() && self.region.is_some() {
            return Err(Error::Invalid(
                "ActivationPatching has both a patch_fn and positions / channels / alpha; the \
                 patch_fn decides the whole replacement, so drop one of them"
                    .into(),
            ));
        }
        if let Some(r) = &self.region
            && !(r.alpha.is_finite())
        {
            return Err(Error::Invalid(format!(
                "ActivationPatching alpha must be finite, got {}",
                r.alpha
            )));
        }
        let capture = Capture::default();
        let mut clean_hooks = hook_set(model, self.relative);
        let points = resolve_all(&clean_hooks, &self.modules)?;
        capture.record(
            &mut clean_hooks,
            points.clone(),
            Direction::Fwd,
            "cache_callback",
            callback_value(self.cache_callback.clone()),
        )?;
        let mut patch_hooks = hook_set(model, self.relative);
        let patch_fn = self.patch_fn.clone();
        let region = self.region.clone();
        capture.replay(
            &mut patch_hooks,
            points,
            "patch_fn",
            move |path, t, clean| match (&patch_fn, &region) {
                (Some(f), _) => Ok(f(path, t, clean)?.unwrap_or_else(|| clean.clone())),
                (None, None) => Ok(clean.clone()),
                (None, Some(r)) => {
                    tdhook_kernels::patch(t, clean, &r.positions, r.channels.clone(), r.alpha)
                        .map_err(kernel_error(path))
                }
            },
        )?;
        Ok(PreparedPatching {
            model,
            clean_hooks,
            patch_hooks,
            capture,
            config: self.clone(),
        })
    }
}

/// Resolve several selectors into one list of points (in order, without repeats).
pub(crate) fn resolve_all(hooks: &HookSet<'_>, selectors: &[Selector]) -> Result<Vec<usize>> {
    if selectors.is_empty() {
        return Err(Error::Invalid(
            "no modules given: list at least one path".into(),
        ));
    }
    let mut points = Vec::new();
    for s in selectors {
        for p in hooks.resolve(s.clone())? {
            if !points.contains(&p) {
                points.push(p);
            }
        }
    }
    Ok(points)
}

/// [`ActivationPatching`] prepared against one model.
pub struct PreparedPatching<'m, M: ?Sized> {
    model: &'m M,
    /// Captures the clean run.
    clean_hooks: HookSet<'static>,
    /// Replays the capture into the corrupted run.
    patch_hooks: HookSet<'static>,
    capture: Capture,
    config: ActivationPatching,
}

impl<M: HookedModel + ?Sized> PreparedPatching<'_, M> {
    /// Run on `td`; see [`ActivationPatching`] for the keys.
    pub fn run(&mut self, td: &TensorDict) -> Result<TensorDict> {
        let (clean_in, batch) = input_at(td, &input_key(None))?;
        let corrupted_key = input_key(Some(&self.config.patch_key));
        let (corrupt_in, corrupt_batch) = input_at(td, &corrupted_key)?;
        check_same_shape(
            "ActivationPatching",
            "input",
            clean_in,
            &corrupted_key,
            corrupt_in,
        )?;
        let (clean_out, patched_out) = self.run_pair(
            &clean_in.clone(),
            &corrupt_in.clone(),
            &batch,
            &corrupt_batch,
        )?;
        let mut out = td.clone();
        out.insert(OUTPUT, clean_out)?;
        out.insert(self.config.patch_key.join(OUTPUT), patched_out)?;
        if !self.config.clean_intermediate_keys {
            let cache = self.capture.snapshot().to_dict(false)?;
            out.insert_dict("_cache", unflatten_dict(&cache, &batch)?)?;
        }
        Ok(out)
    }

    /// The typed face: `(clean output, patched output)` for two inputs of one shape.
    pub fn patch(&mut self, clean: &Tensor, corrupted: &Tensor) -> Result<(Tensor, Tensor)> {
        check_same_shape("ActivationPatching", "clean", clean, "corrupted", corrupted)?;
        let batch = clean.dims().first().map(|&b| vec![b]).unwrap_or_default();
        self.run_pair(clean, corrupted, &batch, &batch)
    }

    fn run_pair(
        &mut self,
        clean: &Tensor,
        corrupted: &Tensor,
        batch: &[usize],
        corrupt_batch: &[usize],
    ) -> Result<(Tensor, Tensor)> {
        self.capture.clear();
        let (clean_out, _) = forward(self.model, &mut self.clean_hooks, clean, batch, None)?;
        let (patched_out, _) = forward(
            self.model,
            &mut self.patch_hooks,
            corrupted,
            corrupt_batch,
            None,
        )?;
        Ok((clean_out, patched_out))
    }
}
