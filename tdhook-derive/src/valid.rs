//! Checks across fields, after each field's attributes were read: two hooked fields must not
//! end up on one path.

use crate::ast::Input;
use crate::attr::Errors;
use std::collections::HashMap;
use syn::spanned::Spanned;

pub fn validate(input: &Input, errors: &mut Errors) {
    let mut seen: HashMap<String, String> = HashMap::new();
    for f in input.fields.iter().filter(|f| !f.attrs.skip) {
        let segment = f.segment();
        let name = member_name(&f.member);
        match seen.get(&segment) {
            Some(first) => {
                let span = f
                    .attrs
                    .rename
                    .as_ref()
                    .map_or_else(|| f.member.span(), |r| r.span());
                errors.spanned(
                    span,
                    format!(
                        "fields `{first}` and `{name}` both have the hook path `{segment}`; \
                         paths name one point each: rename one of them \
                         (`#[hook(rename = \"...\")]`) or skip it (`#[hook(skip)]`)"
                    ),
                );
            }
            None => {
                seen.insert(segment, name);
            }
        }
    }
}

fn member_name(m: &syn::Member) -> String {
    match m {
        syn::Member::Named(id) => id.to_string(),
        syn::Member::Unnamed(i) => i.index.to_string(),
    }
}
