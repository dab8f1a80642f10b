//! The hook tree: what `#[derive(Hookable)]` implements, and the impls for containers,
//! candle-nn leaves and plain values.
//!
//! A model is a tree of *hook points*. Each field is one point named by its segment; `Vec<T>` and
//! `[T; N]` are list points whose elements are `0`, `1`, …; `Option<T>` and `Box<T>` add no
//! segment; tensors and plain values are no point at all (as in PyTorch, where parameters and
//! config values do not appear in `named_modules()`).

use candle_core::{DType, Device, Tensor, Var};

/// What a hook point is, as [`crate::HookPointInfo::kind`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PointKind {
    /// A module: a candle leaf (`Linear`, …) or a nested `Hookable` struct. Hooks fire on it.
    Module,
    /// A list of modules (`Vec<T>`, `[T; N]`, PyTorch's `ModuleList`). Never called itself, so
    /// hooks never fire on it; its elements are points.
    List,
    /// A [`HookPoint`] marker: an identity point for a value no submodule outputs (attention
    /// pattern, residual stream), TransformerLens style.
    Marker,
}

/// Receives the hook tree in depth-first pre-order, the order of PyTorch's `named_modules()`.
pub trait Visitor {
    /// Enter the point `segment` (one or more dotted segments) at child slot `slot` of the
    /// current point.
    fn enter(&mut self, segment: &str, slot: u32, class: &'static str, kind: PointKind);
    /// Leave the point last entered.
    fn exit(&mut self);
}

/// A type whose values are (or hold) hook points. Derive it with `#[derive(Hookable)]`.
///
/// Implemented here for candle-nn's modules (leaves), containers (`Vec`, arrays, `Option`,
/// `Box`) and values that are no point (`Tensor`, numbers, `String`, …).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a hook point type",
    label = "this field's type does not implement `Hookable`",
    note = "derive `Hookable` on it, mark the field `#[hook(leaf)]` if it is a candle `Module`, or `#[hook(skip)]` if it holds no module"
)]
pub trait Hookable {
    /// `false` for values that are no hook point (tensors, numbers, …).
    const IS_POINT: bool = true;

    /// The class name `classes_to_hook` / `classes_to_skip` filter on: the Rust type's name
    /// (without module path or generics), or the struct's `#[hook(class = "...")]`.
    fn hook_class(&self) -> &'static str;

    /// Visit the hook points below this one.
    fn visit_children(&self, visitor: &mut dyn Visitor);

    /// Visit this value as the field `segment` at child slot `slot` of its parent.
    fn visit_field(&self, segment: &str, slot: u32, visitor: &mut dyn Visitor) {
        if Self::IS_POINT {
            visitor.enter(segment, slot, self.hook_class(), PointKind::Module);
            self.visit_children(visitor);
            visitor.exit();
        }
    }
}

/// The child slot of a field in its parent's hook tree (its declaration index).
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot(pub u32);

/// Stands in the slot table for a `#[hook(skip)]` field: hooking it does not compile.
#[doc(hidden)]
#[derive(Clone, Copy, Debug)]
pub struct SkippedField;

/// A slot-table entry [`crate::hook!`] can call: a [`Slot`], never a [`SkippedField`].
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "this field is `#[hook(skip)]`: it is no hook point, so `hook!` cannot call it",
    label = "a `#[hook(skip)]` field",
    note = "remove `#[hook(skip)]` from the field to hook it, or call it directly, without `hook!`"
)]
pub trait IntoSlot {
    /// The slot.
    fn into_slot(self) -> Slot;
}

impl IntoSlot for Slot {
    #[inline(always)]
    fn into_slot(self) -> Slot {
        self
    }
}

/// The slot `hook!` reads from a slot table; refuses `#[hook(skip)]` fields.
#[doc(hidden)]
#[inline(always)]
pub fn into_slot<S: IntoSlot>(slot: S) -> Slot {
    slot.into_slot()
}

/// The compile-time slot table of a derived struct, read by [`crate::hook!`].
#[doc(hidden)]
pub trait HookFields {
    /// A struct with one [`Slot`] per hooked field, named like the fields.
    type Fields: Copy;
    /// The slots.
    const FIELDS: Self::Fields;
}

/// Types with a typed path: `Gpt2::path().transformer().h(3).mlp()`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no typed hook path",
    label = "this field's type does not implement `HasPath`",
    note = "derive `Hookable` on it (which implements `HasPath`), mark the field `#[hook(leaf)]` if it is a candle `Module`, or `#[hook(skip)]` if it holds no module"
)]
pub trait HasPath {
    /// The typed path; converts into a [`HookPath`].
    type Path: From<HookPath>;

    /// The typed path of the model's root (relative paths, as `named_modules()` gives them).
    fn path() -> Self::Path {
        Self::Path::from(HookPath::root())
    }
}

/// A dotted hook path such as `transformer.h.3.mlp`; built from typed paths or parsed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HookPath(String);

impl HookPath {
    /// The empty path: the model itself.
    pub fn root() -> Self {
        Self(String::new())
    }

    /// The path one (or more, when `segment` holds dots) segment deeper.
    pub fn join(&self, segment: &str) -> Self {
        if self.0.is_empty() {
            Self(segment.to_string())
        } else {
            Self(format!("{}.{segment}", self.0))
        }
    }

    /// The dotted string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for HookPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for HookPath {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<&str> for HookPath {
    fn from(s: &str) -> Self {
        Self(s.to_string())
    }
}

impl From<String> for HookPath {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl HasPath for HookPath {
    type Path = HookPath;
}

// ---- containers ------------------------------------------------------------------------------

fn visit_list<'a, T: Hookable + 'a>(
    items: impl Iterator<Item = &'a T>,
    segment: &str,
    slot: u32,
    visitor: &mut dyn Visitor,
) {
    if !T::IS_POINT {
        return;
    }
    visitor.enter(segment, slot, "ModuleList", PointKind::List);
    for (i, item) in items.enumerate() {
        item.visit_field(&i.to_string(), i as u32, visitor);
    }
    visitor.exit();
}

impl<T: Hookable> Hookable for Vec<T> {
    const IS_POINT: bool = T::IS_POINT;
    fn hook_class(&self) -> &'static str {
        "ModuleList"
    }
    fn visit_children(&self, visitor: &mut dyn Visitor) {
        for (i, item) in self.iter().enumerate() {
            item.visit_field(&i.to_string(), i as u32, visitor);
        }
    }
    fn visit_field(&self, segment: &str, slot: u32, visitor: &mut dyn Visitor) {
        visit_list(self.iter(), segment, slot, visitor);
    }
}

impl<T: Hookable, const N: usize> Hookable for [T; N] {
    const IS_POINT: bool = T::IS_POINT;
    fn hook_class(&self) -> &'static str {
        "ModuleList"
    }
    fn visit_children(&self, visitor: &mut dyn Visitor) {
        for (i, item) in self.iter().enumerate() {
            item.visit_field(&i.to_string(), i as u32, visitor);
        }
    }
    fn visit_field(&self, segment: &str, slot: u32, visitor: &mut dyn Visitor) {
        visit_list(self.iter(), segment, slot, visitor);
    }
}

impl<T: Hookable> Hookable for Option<T> {
    const IS_POINT: bool = T::IS_POINT;
    fn hook_class(&self) -> &'static str {
        self.as_ref().map_or("None", Hookable::hook_class)
    }
    fn visit_children(&self, visitor: &mut dyn Visitor) {
        if let Some(inner) = self {
            inner.visit_children(visitor);
        }
    }
    fn visit_field(&self, segment: &str, slot: u32, visitor: &mut dyn Visitor) {
        if let Some(inner) = self {
            inner.visit_field(segment, slot, visitor);
        }
    }
}

impl<T: Hookable + ?Sized> Hookable for Box<T> {
    const IS_POINT: bool = T::IS_POINT;
    fn hook_class(&self) -> &'static str {
        (**self).hook_class()
    }
    fn visit_children(&self, visitor: &mut dyn Visitor) {
        (**self).visit_children(visitor);
    }
    fn visit_field(&self, segment: &str, slot: u32, visitor: &mut dyn Visitor) {
        (**self).visit_field(segment, slot, visitor);
    }
}

impl<T: Hookable + ?Sized> Hookable for &T {
    const IS_POINT: bool = T::IS_POINT;
    fn hook_class(&self) -> &'static str {
        (**self).hook_class()
    }
    fn visit_children(&self, visitor: &mut dyn Visitor) {
        (**self).visit_children(visitor);
    }
    fn visit_field(&self, segment: &str, slot: u32, visitor: &mut dyn Visitor) {
        (**self).visit_field(segment, slot, visitor);
    }
}

impl<T: Hookable> Hookable for std::sync::Arc<T> {
    const IS_POINT: bool = T::IS_POINT;
    fn hook_class(&self) -> &'static str {
        (**self).hook_class()
    }
    fn visit_children(&self, visitor: &mut dyn Visitor) {
        (**self).visit_children(visitor);
    }
    fn visit_field(&self, segment: &str, slot: u32, visitor: &mut dyn Visitor) {
        (**self).visit_field(segment, slot, visitor);
    }
}

// ---- values that are no hook point -----------------------------------------------------------

macro_rules! no_point {
    ($($t:ty),* $(,)?) => {$(
        impl Hookable for $t {
            const IS_POINT: bool = false;
            fn hook_class(&self) -> &'static str {
                stringify!($t)
            }
            fn visit_children(&self, _: &mut dyn Visitor) {}
            fn visit_field(&self, _: &str, _: u32, _: &mut dyn Visitor) {}
        }

        // The derive gives every unskipped field a typed-path method; this one names no point.
        impl HasPath for $t {
            type Path = HookPath;
        }
    )*};
}

no_point!(
    Tensor,
    Var,
    DType,
    Device,
    bool,
    f32,
    f64,
    usize,
    u8,
    u16,
    u32,
    u64,
    isize,
    i8,
    i16,
    i32,
    i64,
    String,
    (),
);

// ---- candle-nn leaves ------------------------------------------------------------------------

macro_rules! leaf {
    ($($t:ty => $name:literal),* $(,)?) => {$(
        impl Hookable for $t {
            fn hook_class(&self) -> &'static str {
                $name
            }
            fn visit_children(&self, _: &mut dyn Visitor) {}
        }
    )*};
}

leaf!(
    candle_nn::Linear => "Linear",
    candle_nn::Embedding => "Embedding",
    candle_nn::LayerNorm => "LayerNorm",
    candle_nn::RmsNorm => "RmsNorm",
    candle_nn::GroupNorm => "GroupNorm",
    candle_nn::BatchNorm => "BatchNorm",
    candle_nn::Conv1d => "Conv1d",
    candle_nn::Conv2d => "Conv2d",
    candle_nn::ConvTranspose1d => "ConvTranspose1d",
    candle_nn::ConvTranspose2d => "ConvTranspose2d",
    candle_nn::Dropout => "Dropout",
    candle_nn::Activation => "Activation",
    candle_nn::PReLU => "PReLU",
    candle_nn::Sequential => "Sequential",
);

/// An identity hook point for a value no submodule outputs, TransformerLens's `HookPoint`:
/// put `hook_pattern: HookPoint` in a struct and write `hook!(hx, self.hook_pattern(&att))`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HookPoint;

impl candle_core::Module for HookPoint {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        Ok(xs.clone())
    }
}

impl Hookable for HookPoint {
    fn hook_class(&self) -> &'static str {
        "HookPoint"
    }
    fn visit_children(&self, _: &mut dyn Visitor) {}
    fn visit_field(&self, segment: &str, slot: u32, visitor: &mut dyn Visitor) {
        visitor.enter(segment, slot, "HookPoint", PointKind::Marker);
        visitor.exit();
    }
}

impl HasPath for HookPoint {
    type Path = HookPath;
}

macro_rules! leaf_path {
    ($($t:ty),* $(,)?) => {$( impl HasPath for $t { type Path = HookPath; } )*};
}

leaf_path!(
    candle_nn::Linear,
    candle_nn::Embedding,
    candle_nn::LayerNorm,
    candle_nn::RmsNorm,
    candle_nn::GroupNorm,
    candle_nn::BatchNorm,
    candle_nn::Conv1d,
    candle_nn::Conv2d,
    candle_nn::ConvTranspose1d,
    candle_nn::ConvTranspose2d,
    candle_nn::Dropout,
    candle_nn::Activation,
    candle_nn::PReLU,
    candle_nn::Sequential,
);
