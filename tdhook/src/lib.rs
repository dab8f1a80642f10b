//! # tdhook — hook any candle model for interpretability and steering
//!
//! `#[derive(Hookable)]` on a model struct makes every field a hook point with a static dotted
//! path (`transformer.h.3.mlp.c_proj`), the names PyTorch's `named_modules()` and the weights use.
//! A forward takes a hook context `hx: &mut Hx<Self>` and marks each hooked call with [`hook!`]; with
//! `Hx::none()` it costs what plain candle costs.
//!
//! ```
//! use tdhook::prelude::*;
//! use candle_core::{DType, Device, Result, Tensor};
//! use candle_nn::Linear;
//!
//! #[derive(Hookable)]
//! struct Mlp { c_fc: Linear, c_proj: Linear }
//!
//! #[derive(Hookable)]
//! struct Model { h: Vec<Mlp> }
//!
//! impl Mlp {
//!     fn forward(&self, x: &Tensor, hx: &mut Hx<Self>) -> Result<Tensor> {
//!         let h = hook!(hx, self.c_fc(x))?.relu()?;
//!         hook!(hx, self.c_proj(&h))
//!     }
//! }
//!
//! impl Model {
//!     fn forward(&self, x: &Tensor, hx: &mut Hx<Self>) -> Result<Tensor> {
//!         let mut x = x.clone();
//!         for i in 0..self.h.len() {
//!             x = hook!(hx, self.h[i].forward(&x))?;
//!         }
//!         Ok(x)
//!     }
//! }
//!
//! # fn main() -> tdhook::Result<()> {
//! # let dev = Device::Cpu;
//! # let lin = || Linear::new(Tensor::eye(4, DType::F32, &dev).unwrap(), None);
//! let model = Model { h: vec![Mlp { c_fc: lin(), c_proj: lin() }, Mlp { c_fc: lin(), c_proj: lin() }] };
//! assert_eq!(model.hook_paths(), ["h", "h.0", "h.0.c_fc", "h.0.c_proj", "h.1", "h.1.c_fc", "h.1.c_proj"]);
//! assert_eq!(Model::path().h(1).c_proj().as_str(), "h.1.c_proj");
//!
//! // Cache every block's output.
//! let x = Tensor::ones((2, 4), DType::F32, &dev)?;
//! let mut cache = TensorDict::unbatched();
//! let mut hooks = HookSet::new(&model);
//! hooks.read(r"h\.\d+", Direction::Fwd, |ev, t| {
//!     cache.insert(ev.path, t.clone())?;
//!     Ok(())
//! })?;
//! hooks.run(|hx| model.forward(&x, hx))?;
//! drop(hooks);
//! assert_eq!(cache.keys(true).len(), 2);
//! # Ok(()) }
//! ```
//!
//! Start with the [`guide`]: deriving `Hookable`, the `hook!` forms, gradients, the model
//! traits and the words used here.
//!
//! | module | what it holds |
//! |---|---|
//! | [`guide`] | hook your own model, step by step |
//! | [`hookable`] | the hook tree the derive implements, and its impls for candle-nn and containers |
//! | [`points`] | listing a model's hook points |
//! | [`hx`] | the hook context a forward runs with |
//! | [`hookset`] | hooks prepared against a model, run with a forward |
//! | [`select`] | choosing points by path or full-match regex, with class filters |
//! | [`model`] | the traits the latent methods and generation run: `HookedModel`, `CausalLm` |
//! | [`latent`] | tdhook's latent methods: caching, patching, probing, steering vectors, activation addition |
//! | [`generate`] | generation with a key/value cache and per-request steering |
//! | [`tensordict`] | the nested tensor dict methods read and write ("td in, td out") |
//! | [`nn`] | layers that stay differentiable when a gradient is wanted |
//! | [`models`] | reference models (GPT-2, Llama) with the Hugging Face names |
//! | [`threads`] | running candle's CPU ops on the calling thread |
//! | [`error`] | the one error type |
//! | [`kernels`] | the fused kernels (re-exported `tdhook-kernels`) |

extern crate self as tdhook;

pub mod error;
pub mod generate;
mod grad;
pub mod guide;
pub mod hookable;
pub mod hookset;
pub mod hx;
pub mod latent;
mod macros;
pub mod model;
pub mod models;
pub mod nn;
pub mod points;
pub mod select;
pub mod tensordict;
pub mod threads;
mod util;

pub use error::{Error, Result};
pub use grad::{GradFn, GradRecord};
pub use hookable::{HasPath, HookPath, HookPoint, Hookable, PointKind, Visitor};
// Plumbing the derive and `hook!` expand to; not for hand-written code.
#[doc(hidden)]
pub use hookable::{HookFields, SkippedField, Slot};
pub use hookset::{HookEvent, HookFn, HookId, HookSet};
pub use hx::{Direction, HookOutput, Hx};
#[doc(hidden)]
pub use hx::{Owner, Point};
pub use points::{HookPointInfo, HookableExt};
pub use select::{Pattern, Selector};
pub use tdhook_derive::Hookable;
/// The fused kernels the latent methods run on (steer-add, patch, ablation, batched probes),
/// re-exported so their argument types (`Positions`, `Rows`, …) need no extra dependency.
pub use tdhook_kernels as kernels;
pub use tensordict::{Key, TensorDict};

/// What a user imports to write and run a hooked model.
pub mod prelude {
    pub use crate::hook;
    pub use crate::{
        Direction, HasPath, HookPath, HookPoint, HookSet, Hookable, HookableExt, Hx, Selector,
        TensorDict,
    };
}

#[doc(hidden)]
pub mod __private {
    pub use candle_core::Module;
    use candle_core::Tensor;

    /// The slot table of a model's type, found by method-call autoderef (so `self`, `&self`
    /// and owned values all work); `hook!` reads one field of it.
    pub trait FieldsOf: crate::HookFields {
        #[inline(always)]
        fn __tdhook_fields(&self) -> Self::Fields {
            Self::FIELDS
        }

        /// The struct the slots belong to: `hook!` hands it to `Hx<Self>` with the slot, so a
        /// context only takes its own struct's fields.
        #[inline(always)]
        fn __tdhook_owner(&self) -> crate::hx::Owner<Self> {
            crate::hx::Owner::new()
        }
    }

    impl<T: crate::HookFields> FieldsOf for T {}

    /// `hook!`'s leaf call on an `Option<M>` field: the inner module, or an error naming the
    /// field when it is `None`.
    pub trait OptionalLeaf {
        /// Forward through the inner module.
        fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor>;
    }

    impl<M: Module> OptionalLeaf for Option<M> {
        fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
            match self {
                Some(m) => m.forward(xs),
                None => Err(none_field(std::any::type_name::<M>())),
            }
        }
    }

    /// The error for calling a `None` field through `hook!`.
    pub fn none_field(what: &str) -> candle_core::Error {
        candle_core::Error::Msg(format!(
            "hook!: the Option field `{what}` is None; check it with `if let Some(..)` before calling it"
        ))
    }

    #[inline(always)]
    pub fn as_tensor<T: AsRef<Tensor> + ?Sized>(t: &T) -> &Tensor {
        t.as_ref()
    }

    /// A `#[hook(leaf)]` field: one point, no children.
    pub fn visit_leaf(
        visitor: &mut dyn crate::Visitor,
        segment: &str,
        slot: u32,
        class: &'static str,
    ) {
        visitor.enter(segment, slot, class, crate::PointKind::Module);
        visitor.exit();
    }
}
