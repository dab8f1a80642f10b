//! The parsed model of a `#[derive(Hookable)]` input: a struct and its fields.

use crate::attr::{self, Errors, FieldAttrs, StructAttrs};
use syn::{Data, DeriveInput, Fields, Generics, Ident, Member, Type, Visibility};

pub struct Input<'a> {
    pub ident: &'a Ident,
    pub vis: &'a Visibility,
    pub generics: &'a Generics,
    pub attrs: StructAttrs,
    pub tuple: bool,
    pub fields: Vec<Field<'a>>,
}

pub struct Field<'a> {
    /// `self.<member>`: a name or a tuple index.
    pub member: Member,
    /// Declaration index: the field's child slot in the hook tree.
    pub slot: u32,
    pub ty: &'a Type,
    pub attrs: FieldAttrs,
}

impl Field<'_> {
    /// The path segment(s): the rename if given, else the field name or tuple index.
    pub fn segment(&self) -> String {
        match (&self.attrs.rename, &self.member) {
            (Some(r), _) => r.value(),
            (None, Member::Named(id)) => id.to_string().trim_start_matches("r#").to_string(),
            (None, Member::Unnamed(i)) => i.index.to_string(),
        }
    }
}

impl<'a> Input<'a> {
    pub fn from_syn(input: &'a DeriveInput, errors: &mut Errors) -> Option<Self> {
        let attrs = attr::struct_attrs(&input.attrs, errors);
        let data = match &input.data {
            Data::Struct(s) => s,
            Data::Enum(e) => {
                errors.spanned(
                    e.enum_token.span,
                    "#[derive(Hookable)] is for structs: an enum's variants have no fixed set of \
                     hook paths; hold the variants' modules in a struct (use `Option<T>` fields \
                     for the ones that may be absent)",
                );
                return None;
            }
            Data::Union(u) => {
                errors.spanned(
                    u.union_token.span,
                    "#[derive(Hookable)] is for structs: a union has no safe way to know which \
                     field holds a module; use a struct",
                );
                return None;
            }
        };
        let tuple = matches!(data.fields, Fields::Unnamed(_));
        let fields = data
            .fields
            .iter()
            .enumerate()
            .map(|(i, f)| Field {
                member: match &f.ident {
                    Some(id) => Member::Named(id.clone()),
                    None => Member::Unnamed(i.into()),
                },
                slot: i as u32,
                ty: &f.ty,
                attrs: attr::field_attrs(&f.attrs, errors),
            })
            .collect();
        Some(Input {
            ident: &input.ident,
            vis: &input.vis,
            generics: &input.generics,
            attrs,
            tuple,
            fields,
        })
    }
}
