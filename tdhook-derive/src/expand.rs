//! Code generation: one generator per emitted item, burn-derive style.
//!
//! For `struct Block { ln_1: LayerNorm, attn: Attention }` this emits
//! - `impl Hookable for Block`: the hook tree (one `visit_field` call per field);
//! - `impl HookFields for Block` and a hidden `__BlockHookFields { ln_1: Slot, attn: Slot }`,
//!   which `hook!(hx, self.attn.forward(..))` reads to find a field's child slot at compile time
//!   (so a misspelt field never compiles);
//! - `impl HasPath for Block` and a hidden typed path `__BlockHookPath` with one method per field
//!   (`Block::path().attn()`), turning into the string path.

use crate::ast::{Field, Input};
use crate::attr::Errors;
use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{DeriveInput, GenericArgument, GenericParam, Ident, PathArguments, Type};

pub fn derive(input: &DeriveInput) -> TokenStream {
    let mut errors = Errors::default();
    let parsed = Input::from_syn(input, &mut errors);
    if let Some(model) = &parsed {
        crate::valid::validate(model, &mut errors);
    }
    match (parsed, errors.finish()) {
        (Some(model), None) => expand(&model),
        // The error, and every impl as if it were fixed: `hook!` calls and typed paths in the
        // user's code then raise nothing more.
        (Some(model), Some(err)) => {
            let err = err.to_compile_error();
            let impls = expand(&model);
            quote! { #err #impls }
        }
        (None, Some(err)) => err.to_compile_error(),
        (None, None) => quote! {},
    }
}

fn expand(input: &Input) -> TokenStream {
    let hookable = impl_hookable(input);
    let fields = impl_fields(input);
    let path = impl_path(input);
    quote! {
        #hookable
        #fields
        #path
    }
}

fn fields_ident(ident: &Ident) -> Ident {
    format_ident!("__{}HookFields", ident)
}

fn path_ident(ident: &Ident) -> Ident {
    format_ident!("__{}HookPath", ident)
}

/// `impl Hookable`: the class name and one visit per hooked field.
fn impl_hookable(input: &Input) -> TokenStream {
    let ident = input.ident;
    let (impl_g, ty_g, where_c) = input.generics.split_for_impl();
    let class = input
        .attrs
        .class
        .as_ref()
        .map_or_else(|| ident.to_string(), |c| c.value());
    let visits = input.fields.iter().filter(|f| !f.attrs.skip).map(|f| {
        let member = &f.member;
        let seg = f.segment();
        let slot = f.slot;
        if f.attrs.leaf {
            let name = leaf_type_name(f.ty);
            quote_spanned! {f.ty.span()=>
                ::tdhook::__private::visit_leaf(__visitor, #seg, #slot, #name);
            }
        } else {
            quote_spanned! {f.ty.span()=>
                ::tdhook::Hookable::visit_field(&self.#member, #seg, #slot, __visitor);
            }
        }
    });
    let bounds = generic_bounds(input, quote!(::tdhook::Hookable));
    let where_c = merge_where(where_c, &bounds);
    quote! {
        #[automatically_derived]
        impl #impl_g ::tdhook::Hookable for #ident #ty_g #where_c {
            fn hook_class(&self) -> &'static str {
                #class
            }
            fn visit_children(&self, __visitor: &mut dyn ::tdhook::Visitor) {
                #(#visits)*
            }
        }
    }
}

/// `impl HookFields` and the hidden slot struct `hook!` reads.
fn impl_fields(input: &Input) -> TokenStream {
    let ident = input.ident;
    let vis = input.vis;
    let fields_ty = fields_ident(ident);
    let (impl_g, ty_g, where_c) = input.generics.split_for_impl();
    let doc = format!("Child slots of `{ident}`'s hook points, read by `tdhook::hook!`.");
    let (decl, init) = if input.tuple {
        let tys = input.fields.iter().map(|f| slot_type(f));
        let vals = input.fields.iter().map(|f| slot_value(f));
        (
            quote! { #vis struct #fields_ty(#(pub #tys),*); },
            quote! { #fields_ty(#(#vals),*) },
        )
    } else {
        // Skipped fields stay in the table as `SkippedField`, so `hook!` on one says why it
        // fails rather than reporting an unknown field.
        let names: Vec<_> = input.fields.iter().map(|f| &f.member).collect();
        let tys = input.fields.iter().map(|f| slot_type(f));
        let vals = input.fields.iter().map(|f| slot_value(f));
        (
            quote! { #vis struct #fields_ty { #(pub #names: #tys),* } },
            quote! { #fields_ty { #(#names: #vals),* } },
        )
    };
    quote! {
        #[doc = #doc]
        #[doc(hidden)]
        #[derive(Clone, Copy, Debug)]
        #[allow(non_camel_case_types, non_snake_case)]
        #decl

        #[automatically_derived]
        impl #impl_g ::tdhook::HookFields for #ident #ty_g #where_c {
            type Fields = #fields_ty;
            const FIELDS: #fields_ty = #init;
        }
    }
}

fn slot_type(f: &Field) -> TokenStream {
    if f.attrs.skip {
        quote!(::tdhook::SkippedField)
    } else {
        quote!(::tdhook::Slot)
    }
}

fn slot_value(f: &Field) -> TokenStream {
    let slot = f.slot;
    if f.attrs.skip {
        quote!(::tdhook::SkippedField)
    } else {
        quote!(::tdhook::Slot(#slot))
    }
}

/// `impl HasPath` and the typed path struct: `Model::path().h(3).mlp()`.
fn impl_path(input: &Input) -> TokenStream {
    let ident = input.ident;
    let vis = input.vis;
    let path_ty = path_ident(ident);
    let generics = input.generics;
    let (impl_g, ty_g, where_c) = generics.split_for_impl();
    let phantom = phantom_of(input);
    let doc = format!("Typed hook path into a `{ident}`; each method is one of its fields.");
    let params: Vec<&Ident> = generics.type_params().map(|t| &t.ident).collect();
    let methods = input
        .fields
        .iter()
        .filter(|f| !f.attrs.skip)
        .map(|f| path_method(f, &params));
    let param_idents = generics.params.iter().map(|p| match p {
        GenericParam::Type(t) => {
            let i = &t.ident;
            quote!(#i)
        }
        GenericParam::Lifetime(l) => {
            let l = &l.lifetime;
            quote!(#l)
        }
        GenericParam::Const(c) => {
            let i = &c.ident;
            quote!(#i)
        }
    });
    let struct_params = generics.params.iter().map(strip_default);
    let struct_where = &generics.where_clause;
    quote! {
        #[doc = #doc]
        #[doc(hidden)]
        #[allow(non_camel_case_types)]
        #vis struct #path_ty<#(#struct_params),*> #struct_where {
            path: ::tdhook::HookPath,
            _model: #phantom,
        }

        #[automatically_derived]
        impl #impl_g ::core::clone::Clone for #path_ty #ty_g #where_c {
            fn clone(&self) -> Self {
                Self { path: self.path.clone(), _model: ::core::marker::PhantomData }
            }
        }

        #[automatically_derived]
        impl #impl_g ::core::convert::From<::tdhook::HookPath> for #path_ty #ty_g #where_c {
            fn from(path: ::tdhook::HookPath) -> Self {
                Self { path, _model: ::core::marker::PhantomData }
            }
        }

        #[automatically_derived]
        impl #impl_g ::core::convert::From<#path_ty #ty_g> for ::tdhook::HookPath #where_c {
            fn from(p: #path_ty #ty_g) -> Self {
                p.path
            }
        }

        #[automatically_derived]
        impl #impl_g ::core::convert::From<#path_ty #ty_g> for ::tdhook::Selector #where_c {
            fn from(p: #path_ty #ty_g) -> Self {
                ::tdhook::Selector::exact(p.path.as_str())
            }
        }

        #[automatically_derived]
        impl #impl_g ::core::ops::Deref for #path_ty #ty_g #where_c {
            type Target = ::tdhook::HookPath;
            fn deref(&self) -> &::tdhook::HookPath {
                &self.path
            }
        }

        // A model need not use every field's typed path.
        #[automatically_derived]
        #[allow(non_snake_case, dead_code, clippy::useless_conversion)]
        impl #impl_g #path_ty #ty_g #where_c {
            #(#methods)*
        }

        #[automatically_derived]
        impl #impl_g ::tdhook::HasPath for #ident #ty_g #where_c {
            type Path = #path_ty<#(#param_idents),*>;
        }
    }
}

fn strip_default(p: &GenericParam) -> TokenStream {
    match p {
        GenericParam::Type(t) => {
            let mut t = t.clone();
            t.default = None;
            t.eq_token = None;
            quote!(#t)
        }
        GenericParam::Const(c) => {
            let mut c = c.clone();
            c.default = None;
            c.eq_token = None;
            quote!(#c)
        }
        GenericParam::Lifetime(l) => quote!(#l),
    }
}

/// `PhantomData<fn() -> (&'a (), T, ...)>`: ties the path type to the model's parameters.
fn phantom_of(input: &Input) -> TokenStream {
    let parts = input.generics.params.iter().filter_map(|p| match p {
        GenericParam::Type(t) => {
            let i = &t.ident;
            Some(quote!(#i))
        }
        GenericParam::Lifetime(l) => {
            let l = &l.lifetime;
            Some(quote!(&#l ()))
        }
        GenericParam::Const(_) => None,
    });
    quote!(::core::marker::PhantomData<fn() -> (#(#parts,)*)>)
}

/// One typed-path method. Lists take the element index (one per level for nested lists);
/// `Option`/`Box`/`Arc` add no segment.
fn path_method(f: &Field, params: &[&Ident]) -> TokenStream {
    let name = match &f.member {
        syn::Member::Named(id) => id.clone(),
        syn::Member::Unnamed(i) => format_ident!("_{}", i.index),
    };
    let seg = f.segment();
    let doc = format!("The hook path of field `{seg}`.");
    if f.attrs.leaf {
        return quote! {
            #[doc = #doc]
            pub fn #name(&self) -> ::tdhook::HookPath { self.path.join(#seg) }
        };
    }
    let inner = strip_wrappers(f.ty);
    // `Vec<Vec<T>>`: one index per list level, down to the element type.
    let mut elem = inner;
    let mut depth = 0usize;
    while let Some(e) = list_element(elem) {
        elem = strip_wrappers(e);
        depth += 1;
    }
    match depth {
        1.. => {
            let indices: Vec<Ident> = match depth {
                1 => vec![format_ident!("index")],
                _ => (0..depth).map(|d| format_ident!("index{}", d)).collect(),
            };
            let bound = path_bound(elem, params);
            quote_spanned! {f.ty.span()=>
                #[doc = #doc]
                pub fn #name(&self, #(#indices: usize),*) -> <#elem as ::tdhook::HasPath>::Path #bound {
                    ::core::convert::From::from(
                        self.path.join(#seg)#(.join(&#indices.to_string()))*
                    )
                }
            }
        }
        0 => {
            let bound = path_bound(inner, params);
            quote_spanned! {f.ty.span()=>
                #[doc = #doc]
                pub fn #name(&self) -> <#inner as ::tdhook::HasPath>::Path #bound {
                    ::core::convert::From::from(self.path.join(#seg))
                }
            }
        }
    }
}

/// The typed-path method's bound on the field type. For a concrete type it is higher-ranked
/// (`for<'p> T: HasPath`), which the compiler checks where the method is called rather than
/// where it is defined: a field whose type is no hook point then raises one error (at the
/// `Hookable` impl), not a second one here.
fn path_bound(ty: &Type, params: &[&Ident]) -> TokenStream {
    if mentions_any(ty, params) {
        quote!(where #ty: ::tdhook::HasPath)
    } else {
        quote!(where for<'__tdhook_p> #ty: ::tdhook::HasPath)
    }
}

/// `Option<T>`, `Box<T>` and `Arc<T>` add no path segment: look through them.
fn strip_wrappers(ty: &Type) -> &Type {
    match single_generic(ty, &["Option", "Box", "Arc"]) {
        Some(inner) => strip_wrappers(inner),
        None => ty,
    }
}

/// The element type of `Vec<T>` or `[T; N]`.
fn list_element(ty: &Type) -> Option<&Type> {
    match ty {
        Type::Array(a) => Some(&a.elem),
        _ => single_generic(ty, &["Vec"]),
    }
}

fn single_generic<'a>(ty: &'a Type, names: &[&str]) -> Option<&'a Type> {
    let Type::Path(p) = ty else { return None };
    if p.qself.is_some() {
        return None;
    }
    let last = p.path.segments.last()?;
    if !names.iter().any(|n| last.ident == n) {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    let mut types = args.args.iter().filter_map(|a| match a {
        GenericArgument::Type(t) => Some(t),
        _ => None,
    });
    let first = types.next()?;
    // `Vec<T, A>` with an allocator is still a list of T.
    Some(first)
}

/// The class name of a `#[hook(leaf)]` field: its type's last path segment.
fn leaf_type_name(ty: &Type) -> String {
    let ty = strip_wrappers(ty);
    match ty {
        Type::Path(p) => p
            .path
            .segments
            .last()
            .map_or_else(|| "Module".into(), |s| s.ident.to_string()),
        _ => "Module".into(),
    }
}

/// `T: Trait` for each hooked field whose type mentions a type parameter (serde's heuristic);
/// concrete field types need no bound, and an error then points at the field.
fn generic_bounds(input: &Input, bound: TokenStream) -> Vec<TokenStream> {
    let params: Vec<&Ident> = input.generics.type_params().map(|t| &t.ident).collect();
    if params.is_empty() {
        return vec![];
    }
    input
        .fields
        .iter()
        .filter(|f| !f.attrs.skip && !f.attrs.leaf)
        .filter(|f| mentions_any(f.ty, &params))
        .map(|f| {
            let ty = f.ty;
            quote_spanned!(ty.span()=> #ty: #bound)
        })
        .collect()
}

fn mentions_any(ty: &Type, params: &[&Ident]) -> bool {
    let tokens = quote!(#ty).to_string();
    tokens
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .any(|w| params.iter().any(|p| *p == w))
}

fn merge_where(where_c: Option<&syn::WhereClause>, extra: &[TokenStream]) -> TokenStream {
    let existing = where_c.map(|w| {
        let preds = &w.predicates;
        quote!(#preds,)
    });
    if existing.is_none() && extra.is_empty() {
        return quote!();
    }
    quote!(where #existing #(#extra,)*)
}
