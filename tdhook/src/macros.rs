//! `hook!`: the one annotation a hooked call needs.

/// Run one field's call as a hook point.
///
/// | form | for | calls |
/// |---|---|---|
/// | `hook!(hx, self.f(x, ..))` | a leaf module (candle `Module`, [`HookPoint`](crate::HookPoint)) | `self.f.forward(x, ..)` |
/// | `hook!(hx, self.f.m(x, ..))` | a nested `Hookable` | `self.f.m(x, .., sub_hx)`: the context one path deeper is appended |
/// | `hook!(hx, self.f[i](x, ..))` | element `i` of a list of leaves | `self.f[i].forward(x, ..)` |
/// | `hook!(hx, self.f[i].m(x, ..))` | element `i` of a list of nested modules | `self.f[i].m(x, .., sub_hx)` |
/// | `hook!(hx, self.f[i][j](x, ..))`, `hook!(hx, self.f[i][j].m(x, ..))` | lists of lists (`Vec<Vec<T>>`, path `f.i.j`), any depth | as above |
/// | `hook!(hx, self.f?.m(x, ..))` | a nested module in an `Option` field | the inner module's `m`; an error if `None` |
///
/// A leaf in an `Option` field uses the plain leaf form (`hook!(hx, self.f(x))`): it calls the
/// inner module, and is an error if the field is `None`.
///
/// The first argument is the input `FwdPre` hooks see (it must be a `&Tensor`, or for leaves
/// anything `AsRef<Tensor>`); `Fwd` and `Bwd` hooks see the output (a `Tensor`, or the first
/// element of a tuple). The field is checked by the compiler: a misspelt or `#[hook(skip)]` field
/// does not compile. The expression is a `candle_core::Result`. With no hook at or below the
/// field, it is the plain call.
///
/// ```
/// use tdhook::prelude::*;
/// use candle_core::{Result, Tensor};
/// use candle_nn::{LayerNorm, Linear};
///
/// #[derive(Hookable)]
/// struct Mlp { c_fc: Linear, c_proj: Linear }
///
/// #[derive(Hookable)]
/// struct Block { ln: LayerNorm, mlp: Mlp, hook_resid: HookPoint }
///
/// impl Mlp {
///     fn forward(&self, x: &Tensor, hx: &mut Hx<Self>) -> Result<Tensor> {
///         let h = hook!(hx, self.c_fc(x))?.gelu()?;
///         hook!(hx, self.c_proj(&h))
///     }
/// }
///
/// impl Block {
///     fn forward(&self, x: &Tensor, hx: &mut Hx<Self>) -> Result<Tensor> {
///         let h = hook!(hx, self.ln(x))?;
///         let x = (x + hook!(hx, self.mlp.forward(&h))?)?;
///         hook!(hx, self.hook_resid(&x))
///     }
/// }
/// ```
#[macro_export]
macro_rules! hook {
    // element of a list of nested modules
    ($hx:expr, $s:ident . $f:tt $( [ $i:expr ] )+ . $m:ident ( $first:expr $(, $rest:expr)* $(,)? )) => {{
        let (__owner, __slot) = {
            use $crate::__private::FieldsOf as _;
            ($s.__tdhook_owner(), $crate::hookable::into_slot($s.__tdhook_fields().$f))
        };
        match $crate::Hx::element_at($hx, __owner, __slot, &[$($i),+]) {
            ::core::option::Option::None => $s.$f $([$i])+ .$m($first $(, $rest)*, &mut $crate::Hx::none()),
            ::core::option::Option::Some(__point) => __point.nested(
                $crate::__private::as_tensor(&$first),
                |__in, __hx| $s.$f $([$i])+ .$m(__in $(, $rest)*, __hx),
            ),
        }
    }};
    // element of a list of leaves
    ($hx:expr, $s:ident . $f:tt $( [ $i:expr ] )+ ( $first:expr $(, $rest:expr)* $(,)? )) => {{
        let (__owner, __slot) = {
            use $crate::__private::FieldsOf as _;
            ($s.__tdhook_owner(), $crate::hookable::into_slot($s.__tdhook_fields().$f))
        };
        match $crate::Hx::element_at($hx, __owner, __slot, &[$($i),+]) {
            ::core::option::Option::None => {
                #[allow(unused_imports)]
                use $crate::__private::{Module as _, OptionalLeaf as _};
                $s.$f $([$i])+ .forward($first $(, $rest)*)
            }
            ::core::option::Option::Some(__point) => __point.leaf(
                $crate::__private::as_tensor(&$first),
                |__in| {
                    #[allow(unused_imports)]
                use $crate::__private::{Module as _, OptionalLeaf as _};
                    $s.$f $([$i])+ .forward(__in $(, $rest)*)
                },
            ),
        }
    }};
    // nested module in an `Option` field: `self.f?.m(x, ..)`; an error if the field is None
    ($hx:expr, $s:ident . $f:tt ? . $m:ident ( $first:expr $(, $rest:expr)* $(,)? )) => {{
        let (__owner, __slot) = {
            use $crate::__private::FieldsOf as _;
            ($s.__tdhook_owner(), $crate::hookable::into_slot($s.__tdhook_fields().$f))
        };
        match (&$s.$f, $crate::Hx::point($hx, __owner, __slot)) {
            (::core::option::Option::None, _) => ::core::result::Result::Err(
                $crate::__private::none_field(stringify!($f)),
            ),
            (::core::option::Option::Some(__inner), ::core::option::Option::None) => {
                __inner.$m($first $(, $rest)*, &mut $crate::Hx::none())
            }
            (::core::option::Option::Some(__inner), ::core::option::Option::Some(__point)) => __point.nested(
                $crate::__private::as_tensor(&$first),
                |__in, __hx| __inner.$m(__in $(, $rest)*, __hx),
            ),
        }
    }};
    // nested module
    ($hx:expr, $s:ident . $f:tt . $m:ident ( $first:expr $(, $rest:expr)* $(,)? )) => {{
        let (__owner, __slot) = {
            use $crate::__private::FieldsOf as _;
            ($s.__tdhook_owner(), $crate::hookable::into_slot($s.__tdhook_fields().$f))
        };
        match $crate::Hx::point($hx, __owner, __slot) {
            ::core::option::Option::None => $s.$f.$m($first $(, $rest)*, &mut $crate::Hx::none()),
            ::core::option::Option::Some(__point) => __point.nested(
                $crate::__private::as_tensor(&$first),
                |__in, __hx| $s.$f.$m(__in $(, $rest)*, __hx),
            ),
        }
    }};
    // leaf module
    ($hx:expr, $s:ident . $f:tt ( $first:expr $(, $rest:expr)* $(,)? )) => {{
        let (__owner, __slot) = {
            use $crate::__private::FieldsOf as _;
            ($s.__tdhook_owner(), $crate::hookable::into_slot($s.__tdhook_fields().$f))
        };
        match $crate::Hx::point($hx, __owner, __slot) {
            ::core::option::Option::None => {
                #[allow(unused_imports)]
                use $crate::__private::{Module as _, OptionalLeaf as _};
                $s.$f.forward($first $(, $rest)*)
            }
            ::core::option::Option::Some(__point) => __point.leaf(
                $crate::__private::as_tensor(&$first),
                |__in| {
                    #[allow(unused_imports)]
                use $crate::__private::{Module as _, OptionalLeaf as _};
                    $s.$f.forward(__in $(, $rest)*)
                },
            ),
        }
    }};
}
