//! `#[derive(Hookable)]`: every field of a model struct becomes a hook point with a static dotted
//! key path, the same name PyTorch's `named_modules()` and the weights use. Use it through
//! `tdhook::Hookable`; see [`macro@Hookable`] for the attributes.

// The macro is split the way thiserror splits its own: `ast` parses the input once, `attr`
// reads each `#[hook(...)]` attribute (collecting every error), `valid` checks the fields
// together (no two on one path), and `expand` emits one generator per impl. On an error the
// impls are still emitted (as far as the input could be read) beside the `compile_error!`, so
// the user sees that one error, not a cascade from their forwards.

mod ast;
mod attr;
mod expand;
mod valid;

use proc_macro::TokenStream;
use syn::{DeriveInput, parse_macro_input};

/// Derives `tdhook::Hookable` (the hook tree), `tdhook::HasPath` (typed paths such as
/// `Model::path().h(3).mlp()`) and the slot table `tdhook::hook!` reads, for a struct.
///
/// Every field is a hook point named by the field (tuple structs: `0`, `1`, …). `Vec<T>` and
/// `[T; N]` are list points whose elements are `0`, `1`, …; `Option<T>`, `Box<T>` and `Arc<T>`
/// add no segment; tensors and plain values (numbers, `String`, `DType`, `Device`) are no point.
/// Generic structs work: a field of a type parameter is a point when the parameter is
/// `Hookable`.
///
/// # Attributes
///
/// | attribute | on | effect |
/// |---|---|---|
/// | `#[hook(skip)]` | field | no hook point (config values, caches, foreign types); `hook!` on it does not compile |
/// | `#[hook(rename = "a.b")]` | field | the path segment(s) instead of the field name: letters, digits and `_`, joined by single dots |
/// | `#[hook(leaf)]` | field | a candle `Module` whose type is not `Hookable`: a point with no children, class = the type's name |
/// | `#[hook(class = "Name")]` | struct | the class `classes_to_hook` / `classes_to_skip` match (default: the struct's name) |
///
/// ```
/// use tdhook::prelude::*;
/// use candle_core::{DType, Device, Tensor};
/// use candle_nn::Linear;
///
/// /// A module from another crate that only implements candle's `Module`.
/// struct Foreign(Linear);
/// impl candle_core::Module for Foreign {
///     fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> { self.0.forward(x) }
/// }
///
/// #[derive(Hookable)]
/// #[hook(class = "LlamaDecoderLayer")]
/// struct Layer {
///     #[hook(rename = "self_attn.o_proj")]
///     out: Linear,
///     #[hook(leaf)]
///     gate: Foreign,
///     #[hook(skip)]
///     eps: f64,
/// }
///
/// #[derive(Hookable)]
/// struct Model { layers: Vec<Layer> }
///
/// # let dev = Device::Cpu;
/// # let lin = || Linear::new(Tensor::eye(2, DType::F32, &dev).unwrap(), None);
/// let model = Model { layers: vec![Layer { out: lin(), gate: Foreign(lin()), eps: 1e-5 }] };
/// assert_eq!(model.hook_paths(), ["layers", "layers.0", "layers.0.self_attn.o_proj", "layers.0.gate"]);
/// let points = model.hook_points();
/// assert_eq!((points[1].class, points[3].class), ("LlamaDecoderLayer", "Foreign"));
/// assert_eq!(Model::path().layers(0).out().as_str(), "layers.0.self_attn.o_proj");
/// ```
///
/// # Errors
///
/// Each mistake is one compile error with a span and the fix: an enum or a union, an unknown
/// key, a key given twice, `skip` together with `rename` or `leaf`, an empty or malformed
/// `rename`, two fields on one path, a field whose type is no hook point. The impls are still
/// emitted, so the forwards that use the struct raise nothing more.
///
/// ```compile_fail
/// use tdhook::prelude::*;
/// use candle_nn::Linear;
///
/// #[derive(Hookable)]
/// struct Mlp {
///     c_fc: Linear,
///     #[hook(rename = "c_fc")] // error: fields `c_fc` and `c_proj` both have the hook path `c_fc`
///     c_proj: Linear,
/// }
/// ```
#[proc_macro_derive(Hookable, attributes(hook))]
pub fn derive_hookable(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand::derive(&input).into()
}
