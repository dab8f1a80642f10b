//! The latent methods of Python tdhook (`tdhook.latent`), against a [`Hookable`] model.
//!
//! Each method is a builder (the arguments tdhook takes), *prepared* against a model — paths and
//! patterns resolved then, errors raised then — and *run* on a [`TensorDict`](crate::TensorDict) ("td in, td out"):
//! the input at `input`, the output at `output`, results under the method's key (`cache`,
//! `patched`, `steer`). The caller's dict is never mutated; a new one comes back.
//!
//! | method | result |
//! |---|---|
//! | [`ActivationCaching`] | `cache/<path>`: what each hook point saw |
//! | [`ActivationPatching`] | `patched/output`: the corrupted run with clean activations patched in |
//! | [`SteeringVectors`] | `output` with each listed point's output replaced by `steer_fn(path, output)` |
//! | [`ActivationAddition`] | `steer/<path>`: mean over batch dims of (positive − negative) |
//! | [`Probing`] | probes fed each point's activation while the model runs |
//!
//! Where the dict has several batch dims (tdhook accepts exactly one), the input's batch dims are
//! flattened into one for the forward and the output (and every cached value whose leading dim is
//! that flattened batch) is unflattened after.

mod batch;
mod caching;
mod core;
mod patching;
pub mod probing;
mod steering;

pub use caching::{ActivationCaching, PreparedCaching, TokenSelect};
pub use core::{CacheCallback, LossFn};
pub use patching::{ActivationPatching, PreparedPatching};
pub use probing::{PreparedProbing, Probing};
pub use steering::{
    ActivationAddition, PreparedAddition, PreparedSteering, SteeringVectors, TokenReduction,
};

use crate::hookable::Hookable;

/// The key tdhook reads the model's input from.
pub const INPUT: &str = "input";
/// The key tdhook writes the model's output to.
pub const OUTPUT: &str = "output";

pub use crate::model::HookedModel;

/// A new hook set over `model`, relative or `module.`-prefixed.
pub(crate) fn hook_set<M: Hookable + ?Sized>(model: &M, relative: bool) -> crate::HookSet<'static> {
    if relative {
        crate::HookSet::new(model)
    } else {
        crate::HookSet::absolute(model)
    }
}
