//! `#[hook(...)]` attributes: parsed once, validated, every error collected.

use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::{Attribute, LitStr};

/// Attributes on one field.
#[derive(Default)]
pub struct FieldAttrs {
    /// `#[hook(skip)]`: the field is no hook point (config values, caches, foreign types).
    pub skip: bool,
    /// `#[hook(leaf)]`: a candle `Module` that does not implement `Hookable`; a point, no children.
    pub leaf: bool,
    /// `#[hook(rename = "a.b")]`: the path segment(s) used instead of the field name.
    pub rename: Option<LitStr>,
}

/// Attributes on the struct itself.
#[derive(Default)]
pub struct StructAttrs {
    /// `#[hook(class = "GPT2Block")]`: the class name `classes_to_hook` filters on.
    pub class: Option<LitStr>,
}

/// Collects errors so a user sees all of them at once, as serde does.
#[derive(Default)]
pub struct Errors(Vec<syn::Error>);

impl Errors {
    pub fn push(&mut self, e: syn::Error) {
        self.0.push(e);
    }

    pub fn spanned(&mut self, span: Span, msg: impl std::fmt::Display) {
        self.0.push(syn::Error::new(span, msg));
    }

    /// All errors as one `syn::Error`, or `None` when there were none.
    pub fn finish(self) -> Option<syn::Error> {
        self.0.into_iter().reduce(|mut a, b| {
            a.combine(b);
            a
        })
    }
}

const FIELD_KEYS: &str = "expected one of `skip`, `leaf`, `rename = \"...\"`";

pub fn field_attrs(attrs: &[Attribute], errors: &mut Errors) -> FieldAttrs {
    let mut out = FieldAttrs::default();
    // The first `leaf` / `rename` key, for an error when the field is also skipped.
    let mut point_key: Option<(&str, Span)> = None;
    for attr in attrs.iter().filter(|a| a.path().is_ident("hook")) {
        let res = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("skip") {
                if out.skip {
                    errors.spanned(meta.path.span(), repeated("skip"));
                }
                out.skip = true;
            } else if meta.path.is_ident("leaf") {
                if out.leaf {
                    errors.spanned(meta.path.span(), repeated("leaf"));
                }
                out.leaf = true;
                point_key.get_or_insert(("leaf", meta.path.span()));
            } else if meta.path.is_ident("rename") {
                point_key.get_or_insert(("rename", meta.path.span()));
                let span = meta.path.span();
                let lit: LitStr = meta.value()?.parse()?;
                if let Err(msg) = validate_rename(&lit.value()) {
                    errors.spanned(lit.span(), msg);
                }
                if let Some(first) = &out.rename {
                    errors.spanned(
                        span,
                        format!(
                            "`rename` is given twice on this field (first `{}`); a field has one \
                             path segment: keep one `rename`",
                            first.value()
                        ),
                    );
                }
                out.rename = Some(lit);
            } else {
                return Err(meta.error(format!("unknown hook attribute; {FIELD_KEYS}")));
            }
            Ok(())
        });
        if let Err(e) = res {
            errors.push(e);
        }
    }
    if out.skip
        && let Some((key, span)) = point_key
    {
        errors.spanned(
            span,
            format!(
                "`#[hook(skip)]` cannot be combined with `{key}`: a skipped field has no hook \
                 point; remove `skip` to keep the point, or `{key}` to drop it"
            ),
        );
    }
    out
}

pub fn struct_attrs(attrs: &[Attribute], errors: &mut Errors) -> StructAttrs {
    let mut out = StructAttrs::default();
    for attr in attrs.iter().filter(|a| a.path().is_ident("hook")) {
        let res = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("class") {
                let span = meta.path.span();
                let lit: LitStr = meta.value()?.parse()?;
                if lit.value().is_empty() {
                    errors.spanned(lit.span(), "`class` must not be empty");
                }
                if out.class.is_some() {
                    errors.spanned(span, repeated("class"));
                }
                out.class = Some(lit);
                Ok(())
            } else {
                Err(meta.error("unknown hook attribute on a struct; expected `class = \"...\"`"))
            }
        });
        if let Err(e) = res {
            errors.push(e);
        }
    }
    out
}

fn repeated(key: &str) -> String {
    format!("`{key}` is given twice; write it once")
}

/// A rename is one or more non-empty segments of `[A-Za-z0-9_]` joined by dots.
fn validate_rename(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("`rename` must not be empty; use `#[hook(skip)]` to drop the field".into());
    }
    for seg in s.split('.') {
        if seg.is_empty() {
            return Err(format!(
                "`rename = \"{s}\"` has an empty segment; write segments joined by single dots, e.g. \"model.layers\""
            ));
        }
        if let Some(c) = seg
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '_'))
        {
            return Err(format!(
                "`rename = \"{s}\"` contains `{c}`; a path segment holds only letters, digits and `_`"
            ));
        }
    }
    Ok(())
}
