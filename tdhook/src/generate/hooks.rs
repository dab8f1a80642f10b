//! The hooks a generation runs with, and the token positions they can read.

use crate::hookable::Hookable;
use crate::hookset::HookSet;
use crate::util::lock;
use candle_core::Tensor;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};

/// The absolute position of each token of the forward a generation is running, `[batch, tokens]`
/// (u32; padding is [`PAD_POSITION`](super::PAD_POSITION)) — at prefill and at every decode
/// step, where each step is one token long but its position is not 0.
///
/// A handle: clone it into a hook (from [`GenerateHooks::positions`]) and read it there; it is
/// `None` outside [`generate`](super::generate).
#[derive(Clone, Debug, Default)]
pub struct TokenPositions(Arc<Mutex<Option<Tensor>>>);

impl TokenPositions {
    /// The positions of the current forward, if a generation is running one.
    pub fn get(&self) -> Option<Tensor> {
        lock(&self.0).clone()
    }

    pub(crate) fn set(&self, positions: Option<Tensor>) {
        *lock(&self.0) = positions;
    }
}

/// A [`HookSet`] for [`generate`](super::generate), with the [`TokenPositions`] it fills at
/// each step. Derefs to the hook set, so hooks are added as on any set.
///
/// ```
/// use tdhook::generate::{generate, GenerateHooks, GenerateOptions};
/// use tdhook::models::gpt2::{Gpt2, Gpt2Config};
/// use tdhook::prelude::*;
/// use candle_core::{DType, Device};
/// # fn main() -> tdhook::Result<()> {
/// let vb = candle_nn::VarBuilder::from_varmap(&candle_nn::VarMap::new(), DType::F32, &Device::Cpu);
/// let model = Gpt2::new(Gpt2Config::new(50, 32, 32, 2, 4), vb)?;
///
/// let mut hooks = GenerateHooks::new(&model);
/// let positions = hooks.positions();
/// let mut seen = Vec::new();
/// hooks.read("transformer.h.0", Direction::Fwd, move |_, _| {
///     seen.push(positions.get().expect("set by generate").to_vec2::<u32>()?);
///     Ok(())
/// })?;
/// let opts = GenerateOptions { max_new_tokens: 2, ..Default::default() };
/// generate(&model, &[vec![1, 2, 3]], &opts, Some(&mut hooks))?;
/// # Ok(()) }
/// ```
pub struct GenerateHooks<'h> {
    hooks: HookSet<'h>,
    pub(super) positions: TokenPositions,
}

impl<'h> GenerateHooks<'h> {
    /// No hooks yet, for `model` (paths relative to it).
    pub fn new<M: Hookable + ?Sized>(model: &M) -> Self {
        Self::from_hooks(HookSet::new(model))
    }

    /// Generate with an existing hook set.
    pub fn from_hooks(hooks: HookSet<'h>) -> Self {
        Self {
            hooks,
            positions: TokenPositions::default(),
        }
    }

    /// The handle hooks read the current positions from.
    pub fn positions(&self) -> TokenPositions {
        self.positions.clone()
    }

    /// The hook set back.
    pub fn into_hooks(self) -> HookSet<'h> {
        self.hooks
    }
}

impl<'h> Deref for GenerateHooks<'h> {
    type Target = HookSet<'h>;
    fn deref(&self) -> &HookSet<'h> {
        &self.hooks
    }
}

impl DerefMut for GenerateHooks<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.hooks
    }
}
