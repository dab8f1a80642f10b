//! # Hook your own model
//!
//! A guide for model authors: what `#[derive(Hookable)]` makes of a struct, the forms of
//! [`hook!`](crate::hook), markers and tuples, gradients, the model traits, and the words the
//! library uses. Every example here compiles and runs as a test.
//!
//! ## 1. Derive `Hookable`
//!
//! Every field of a struct becomes a hook point named by the field, one dotted segment per
//! level — the names PyTorch's `named_modules()` gives the same model, and the names its weights
//! carry, so a hook path is a weight prefix.
//!
//! | field type | what it is |
//! |---|---|
//! | a candle-nn module (`Linear`, `LayerNorm`, `Embedding`, …) | a leaf point |
//! | a struct that derives `Hookable` | a point with the struct's fields below it |
//! | `Vec<T>`, `[T; N]` | a list point (`h`), never called; its elements are points `h.0`, `h.1`, … |
//! | `Option<T>`, `Box<T>`, `Arc<T>` | what `T` is, adding no segment (`None`: no point) |
//! | [`HookPoint`](crate::HookPoint) | a marker: an identity point for a value no module outputs |
//! | `Tensor`, numbers, `String`, `DType`, `Device` | no point (like parameters and config) |
//!
//! Attributes:
//!
//! | attribute | on | effect |
//! |---|---|---|
//! | `#[hook(skip)]` | a field | no point (a config value, a cache, a foreign type); `hook!` on it does not compile |
//! | `#[hook(rename = "a.b")]` | a field | the path segment(s) instead of the field name, e.g. to match a checkpoint |
//! | `#[hook(leaf)]` | a field | a candle `Module` of a foreign type that is not `Hookable`: a point with no children |
//! | `#[hook(class = "GPT2Block")]` | the struct | the class name `classes_to_hook` / `classes_to_skip` match (default: the type's name) |
//!
//! Mistakes are compile errors that name the fix: an enum or union, an unknown key, a key given
//! twice, `skip` with `rename`, an invalid rename, two fields on one path, a field type that is
//! no hook point.
//!
//! ```
//! use tdhook::prelude::*;
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::{LayerNorm, Linear};
//!
//! #[derive(Hookable)]
//! struct Mlp { c_fc: Linear, c_proj: Linear }
//!
//! #[derive(Hookable)]
//! #[hook(class = "GPT2Block")]
//! struct Block {
//!     ln_1: LayerNorm,
//!     #[hook(rename = "mlp")]
//!     feed_forward: Mlp,
//!     hook_resid: HookPoint,
//!     #[hook(skip)]
//!     scale: f64,
//! }
//!
//! #[derive(Hookable)]
//! struct Model { h: Vec<Block>, ln_f: Option<LayerNorm> }
//!
//! # let dev = Device::Cpu;
//! # let lin = || Linear::new(Tensor::eye(4, DType::F32, &dev).unwrap(), None);
//! # let ln = || LayerNorm::new(Tensor::ones(4, DType::F32, &dev).unwrap(), Tensor::zeros(4, DType::F32, &dev).unwrap(), 1e-5);
//! # let block = || Block { ln_1: ln(), feed_forward: Mlp { c_fc: lin(), c_proj: lin() }, hook_resid: HookPoint, scale: 1.0 };
//! let model = Model { h: vec![block()], ln_f: None };
//! assert_eq!(
//!     model.hook_paths(),
//!     ["h", "h.0", "h.0.ln_1", "h.0.mlp", "h.0.mlp.c_fc", "h.0.mlp.c_proj", "h.0.hook_resid"]
//! );
//! assert_eq!(model.hook_points()[1].class, "GPT2Block");
//! // Typed paths are checked by the compiler: a typo does not build.
//! assert_eq!(Model::path().h(0).feed_forward().c_proj().as_str(), "h.0.mlp.c_proj");
//! ```
//!
//! ## 2. Write the forward with `hook!`
//!
//! A forward takes `hx: &mut Hx<Self>` — the hook context, typed by the struct it belongs to —
//! and wraps each call of a field in `hook!`, one annotation per hooked call:
//!
//! | form | for |
//! |---|---|
//! | `hook!(hx, self.f(x, ..))` | a leaf: calls `self.f.forward(x, ..)` |
//! | `hook!(hx, self.f.m(x, ..))` | a nested `Hookable`: calls `self.f.m(x, .., hx_of_f)` |
//! | `hook!(hx, self.f[i](x))`, `hook!(hx, self.f[i].m(x))`, `self.f[i][j]…` | list elements |
//! | `hook!(hx, self.f?.m(x))` | a nested module in an `Option` field (an error if `None`) |
//!
//! `FwdPre` hooks see (and may replace) the first argument; `Fwd` and `Bwd` hooks see the
//! output: a `Tensor`, or the first element of a tuple `(Tensor, B)` / `(Tensor, B, C)` — so a
//! layer can return its key/value cache beside its output. With no hook at or below a field,
//! `hook!` is one branch and the plain call; [`Hx::none`](crate::Hx::none) runs a forward with
//! no hooks at all, at the cost of plain candle.
//!
//! The context of a child is made by `hook!` and has the child's type. A forward that hands its
//! own context to a child (`self.inner.forward(x, hx)`) does not compile: that context's slots
//! are the parent's fields, and hooks on them would fire at the child's. (A struct that holds a
//! value of its own type is the one case the types cannot tell apart: always call such a child
//! through `hook!`.)
//!
//! ```
//! use tdhook::prelude::*;
//! use candle_core::{DType, Device, Result, Tensor};
//! use candle_nn::Linear;
//!
//! #[derive(Hookable)]
//! struct Attn { qkv: Linear, hook_pattern: HookPoint }
//!
//! #[derive(Hookable)]
//! struct Block { attn: Attn, out: Linear }
//!
//! impl Attn {
//!     /// Returns the output and a cache: hooks see the output.
//!     fn forward(&self, x: &Tensor, hx: &mut Hx<Self>) -> Result<(Tensor, usize)> {
//!         let q = hook!(hx, self.qkv(x))?;
//!         let pattern = hook!(hx, self.hook_pattern(&candle_nn::ops::softmax_last_dim(&q)?))?;
//!         Ok((pattern, 1))
//!     }
//! }
//!
//! impl Block {
//!     fn forward(&self, x: &Tensor, hx: &mut Hx<Self>) -> Result<Tensor> {
//!         let (a, _cache) = hook!(hx, self.attn.forward(x))?;
//!         hook!(hx, self.out(&a))
//!     }
//! }
//!
//! # fn main() -> tdhook::Result<()> {
//! # let dev = Device::Cpu;
//! # let lin = || Linear::new(Tensor::eye(3, DType::F32, &dev).unwrap(), None);
//! let block = Block { attn: Attn { qkv: lin(), hook_pattern: HookPoint }, out: lin() };
//! let x = Tensor::ones((2, 3), DType::F32, &dev)?;
//! let mut seen = vec![];
//! let mut hooks = HookSet::new(&block);
//! hooks.read("attn.hook_pattern", Direction::Fwd, |ev, t| {
//!     seen.push((ev.path.to_string(), t.dims().to_vec()));
//!     Ok(())
//! })?;
//! hooks.run(|hx| block.forward(&x, hx))?;
//! drop(hooks);
//! assert_eq!(seen, [("attn.hook_pattern".to_string(), vec![2, 3])]);
//! # Ok(()) }
//! ```
//!
//! ## 3. Gradients at hook points
//!
//! `Direction::Bwd` hooks see the gradient of a loss with respect to a point's output, also on a
//! model whose weights are constants (see [`HookSet::grad`](crate::HookSet::grad)). candle-nn's
//! fused ops cut the autograd graph silently — `softmax_last_dim`, `layer_norm` /
//! `LayerNorm::forward`, `rms_norm` / `RmsNorm::forward`, `rope*` — so a point upstream of one of
//! them gets no gradient. The layers in [`crate::nn`] (`LayerNorm`, `RmsNorm`, `Conv1D`,
//! [`softmax_last_dim`](crate::nn::softmax_last_dim)) take the fused path when no gradient can
//! flow and the differentiable one when it can: use them in a model you want gradients from.
//!
//! ## 4. Implement the model traits
//!
//! The latent methods run any [`HookedModel`](crate::model::HookedModel) (one tensor in, one
//! out); generation runs any [`CausalLm`](crate::model::CausalLm). Implement them next to your
//! forward:
//!
//! ```
//! use tdhook::prelude::*;
//! use tdhook::model::HookedModel;
//! use tdhook::latent::ActivationCaching;
//! use candle_core::{DType, Device, Result, Tensor};
//! use candle_nn::Linear;
//!
//! #[derive(Hookable)]
//! struct Net { fc1: Linear, fc2: Linear }
//!
//! impl HookedModel for Net {
//!     fn forward_hooked(&self, x: &Tensor, hx: &mut Hx<Self>) -> Result<Tensor> {
//!         let h = hook!(hx, self.fc1(x))?.relu()?;
//!         hook!(hx, self.fc2(&h))
//!     }
//! }
//!
//! # fn main() -> tdhook::Result<()> {
//! # let dev = Device::Cpu;
//! # let lin = || Linear::new(Tensor::eye(3, DType::F32, &dev).unwrap(), None);
//! let net = Net { fc1: lin(), fc2: lin() };
//! let mut td = TensorDict::new([2]);
//! td.insert("input", Tensor::ones((2, 3), DType::F32, &dev)?)?;
//! let out = ActivationCaching::new("fc.").prepare(&net)?.run(&td)?;
//! assert_eq!(out.tensor(("cache", "fc1"))?.dims(), &[2, 3]);
//! # Ok(()) }
//! ```
//!
//! ## 5. Words
//!
//! **Points.** A *hook point* is a place in the model's tree with a dotted *path*
//! ([`HookPath`](crate::HookPath), or a typed path from `Model::path()`); every field is one.
//! [`HookPoint`](crate::HookPoint) is the marker *type* for a point no module outputs.
//! [`HookPointInfo`](crate::HookPointInfo) describes one point as
//! [`hook_points`](crate::HookableExt::hook_points) lists it. A [`Selector`](crate::Selector)
//! picks points by exact path or full-match regex.
//!
//! **Tokens.** Which tokens something acts on, by layer of the library:
//!
//! | name | where | says |
//! |---|---|---|
//! | [`TokenSelect`](crate::latent::TokenSelect) | caching | which positions of each cached activation to keep |
//! | [`TokenReduction`](crate::latent::TokenReduction) | ActivationAddition | how a steering vector reduces the token dim |
//! | [`Positions`](crate::kernels::Positions) | kernels, patching | which rows of a `[.., T, D]` activation a kernel writes |
//! | [`SteerScope`](crate::generate::SteerScope) | generation | prompt tokens, generated tokens or both |
//! | [`TokenPositions`](crate::generate::TokenPositions) | generation | each token's absolute position in the step being run |
