//! `#[derive(Hookable)]`: every field of a model struct becomes a hook point with a static dotted
//! key path, the same name PyTorch's `named_modules()` and the weights use.
//!
//! The macro is split the way thiserror splits its own: [`ast`] parses the input once,
//! [`attr`] reads and validates `#[hook(...)]` attributes (collecting every error), and
//! [`expand`] emits one generator per impl. Users reach it through `tdhook::Hookable`.

mod ast;
mod attr;
mod expand;

use proc_macro::TokenStream;
use syn::{DeriveInput, parse_macro_input};

/// Derives `tdhook::Hookable`, `tdhook::HookFields` and `tdhook::HasPath` for a struct.
///
/// See the `tdhook` crate documentation for the attributes (`#[hook(skip)]`,
/// `#[hook(rename = "...")]`, `#[hook(leaf)]`, `#[hook(class = "...")]`).
#[proc_macro_derive(Hookable, attributes(hook))]
pub fn derive_hookable(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand::derive(&input).into()
}
