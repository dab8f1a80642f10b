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

/// Builder setters that several methods share, written once: `setters!(relative)` inside an
/// `impl` adds `fn relative(self, bool) -> Self` over a field of that name, and so on.
macro_rules! setters {
    ($($name:ident),+ $(,)?) => { $( setters!(@one $name); )+ };
    (@one relative) => {
        /// `false`: every path is prefixed with `module.` (tdhook's `relative=False`, which
        /// names a wrapped model's modules that way). Default `true`.
        pub fn relative(mut self, relative: bool) -> Self {
            self.relative = relative;
            self
        }
    };
    (@one cache_callback) => {
        /// Capture `cache_callback(event, output)` instead of the output.
        pub fn cache_callback(
            mut self,
            f: impl Fn(&crate::HookEvent<'_>, &candle_core::Tensor) -> crate::Result<candle_core::Tensor>
                + Send
                + Sync
                + 'static,
        ) -> Self {
            self.cache_callback = Some(std::sync::Arc::new(f));
            self
        }
    };
    (@one clean_intermediate_keys) => {
        /// `false` keeps the intermediate runs' outputs and activations in the output dict
        /// (under `_`-prefixed keys, as tdhook does). Default `true`.
        pub fn clean_intermediate_keys(mut self, clean: bool) -> Self {
            self.clean_intermediate_keys = clean;
            self
        }
    };
}

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
