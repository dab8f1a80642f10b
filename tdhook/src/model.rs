//! The traits a model implements to be run by the library: [`HookedModel`] for the latent
//! methods, [`CausalLm`] for generation.
//!
//! The latent methods and generation name these traits only, never a model family; each
//! reference model implements them in its own file (`models/gpt2.rs`, `models/llama.rs`), and a
//! new family implements them next to its forward.

use crate::hookable::Hookable;
use crate::hx::Hx;
use candle_core::{Device, Tensor};

/// A model the latent methods can run: one tensor in (what the dict holds at `input`), one out.
///
/// ```
/// use tdhook::prelude::*;
/// use tdhook::model::HookedModel;
/// use candle_core::{Result, Tensor};
/// use candle_nn::Linear;
///
/// #[derive(Hookable)]
/// struct Probe { fc: Linear }
///
/// impl HookedModel for Probe {
///     fn forward_hooked(&self, x: &Tensor, hx: &mut Hx<Self>) -> Result<Tensor> {
///         hook!(hx, self.fc(x))
///     }
/// }
/// ```
pub trait HookedModel: Hookable {
    /// The forward with hooks.
    fn forward_hooked(&self, input: &Tensor, hx: &mut Hx<'_, Self>) -> candle_core::Result<Tensor>;
}

impl<M: HookedModel + ?Sized> HookedModel for &M {
    fn forward_hooked(&self, input: &Tensor, hx: &mut Hx<'_, Self>) -> candle_core::Result<Tensor> {
        (**self).forward_hooked(input, &mut hx.same_tree())
    }
}

/// A causal language model the generation loop can drive (one loop for every family).
pub trait CausalLm: Hookable {
    /// The model's key/value cache.
    type Cache;
    /// An empty cache.
    fn new_cache(&self) -> Self::Cache;
    /// Vocabulary size.
    fn vocab_size(&self) -> usize;
    /// Longest sequence the model can position.
    fn max_positions(&self) -> usize;
    /// The device the model lives on.
    fn device(&self) -> Device;
    /// One step: `ids [B, T]` (u32), `positions [B, T]` (u32), additive `mask [B, 1, T, S]`
    /// (S = cached + T) → logits `[B, T, vocab]`, appending to `cache`.
    fn forward_step(
        &self,
        ids: &Tensor,
        positions: &Tensor,
        mask: &Tensor,
        cache: &mut Self::Cache,
        hx: &mut Hx<'_, Self>,
    ) -> candle_core::Result<Tensor>;
}
