//! `#[derive(Hookable)]`: every field of a model struct becomes a hook point with a static dotted
//! key path, the same name PyTorch's `named_modules()` and the weights use.
//!
//! The macro is split the way thiserror splits its own: [`ast`] parses the input once,
//! [`attr`] reads each `#[hook(...)]` attribute (collecting every error), [`valid`] checks the
//! fields together (no two on one path), and [`expand`] emits one generator per impl. On an
//! error the impls are still emitted (as far as the input could be read) beside the
//! `compile_error!`, so the user sees that one error, not a cascade from their forwards. Users reach it through `tdhook::Hookable`.

mod ast;
mod attr;
mod expand;
mod valid;

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
