//! `Hx`, the hook context a forward runs with.
//!
//! A forward takes `hx: &mut Hx<Self>` and wraps each hooked call in [`crate::hook!`]. With no hooks
//! (`Hx::none()`) every `hook!` is one branch on a `None` and then the plain call: it costs what
//! plain candle costs. With hooks, the context points at a node of a small tree built when the
//! hooks were prepared, holding only the paths that carry hooks; a subtree without hooks gets
//! `Hx::none()` again, so it runs at plain speed too. Moving one level down is an index.

use crate::hookable::Slot;
use candle_core::{Result, Tensor};
use std::marker::PhantomData;

/// Hook directions, as in tdhook.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// The output of the point (PyTorch forward hook). Hooks may replace it.
    Fwd,
    /// The input of the point (PyTorch forward pre-hook): its first argument. Hooks may replace it.
    FwdPre,
    /// The gradient of the loss with respect to the point's output, seen during `backward()`.
    Bwd,
}

impl Direction {
    /// tdhook's name: `fwd`, `fwd_pre`, `bwd`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Fwd => "fwd",
            Direction::FwdPre => "fwd_pre",
            Direction::Bwd => "bwd",
        }
    }

    pub(crate) fn bit(self) -> u8 {
        match self {
            Direction::Fwd => 1,
            Direction::FwdPre => 2,
            Direction::Bwd => 4,
        }
    }
}

impl std::fmt::Display for Direction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A node of the prepared hook tree: one hook point on the way to (or carrying) hooks.
#[derive(Debug, Default)]
pub(crate) struct Node {
    /// Index of this point among the run's active points, when it carries hooks.
    pub point: Option<u32>,
    /// Which directions have hooks here ([`Direction::bit`]).
    pub dirs: u8,
    /// Children by slot; `None` where no hooks lie below.
    pub children: Vec<Option<Box<Node>>>,
}

impl Node {
    #[inline]
    fn child(&self, slot: u32) -> Option<&Node> {
        self.children.get(slot as usize)?.as_deref()
    }

    pub(crate) fn child_mut(&mut self, slot: u32) -> &mut Node {
        let i = slot as usize;
        if self.children.len() <= i {
            self.children.resize_with(i + 1, || None);
        }
        self.children[i].get_or_insert_with(Default::default)
    }
}

/// What runs the hooks at a point; implemented by the hook set's state.
pub(crate) trait Runner {
    /// The occurrence index of this call of `point` in the current run (0, 1, …).
    fn begin(&mut self, point: u32) -> usize;
    /// Run the hooks of `dir` at `point` on `t`; `Some` replaces it.
    fn fire(
        &mut self,
        point: u32,
        occurrence: usize,
        dir: Direction,
        t: &Tensor,
    ) -> Result<Option<Tensor>>;
}

struct Active<'a> {
    node: &'a Node,
    run: &'a mut (dyn Runner + 'a),
}

/// The hook context a forward of `M` runs with; see the module docs. Get one from
/// [`crate::HookSet::run`], [`crate::HookSet::hx`] or [`Hx::none`].
///
/// The context is typed by the struct whose fields it addresses: `M`'s forward takes
/// `hx: &mut Hx<Self>`, and [`crate::hook!`] hands a child's forward an `Hx<Child>`. So a
/// forward that passes its own context straight to a child (`self.inner.forward(x, hx)`,
/// without `hook!`) does not compile — that context's slots are the parent's fields, and hooks
/// on them would fire at the child's. `M` costs nothing at run time.
///
/// ```compile_fail
/// use tdhook::prelude::*;
/// use candle_core::{Result, Tensor};
/// use candle_nn::Linear;
///
/// #[derive(Hookable)]
/// struct Inner { a: Linear }
/// #[derive(Hookable)]
/// struct Outer { first: Linear, inner: Inner }
///
/// impl Inner {
///     fn forward(&self, x: &Tensor, hx: &mut Hx<Self>) -> Result<Tensor> {
///         hook!(hx, self.a(x))
///     }
/// }
/// impl Outer {
///     fn forward(&self, x: &Tensor, hx: &mut Hx<Self>) -> Result<Tensor> {
///         let y = hook!(hx, self.first(x))?;
///         self.inner.forward(&y, hx) // error: expected `Hx<Inner>`, found `Hx<Outer>`
///     }
/// }
/// ```
pub struct Hx<'a, M: ?Sized> {
    active: Option<Active<'a>>,
    _model: PhantomData<fn(&M)>,
}

impl<'a, M: ?Sized> Hx<'a, M> {
    /// No hooks: the forward costs what plain candle costs.
    #[inline]
    pub fn none() -> Self {
        Hx {
            active: None,
            _model: PhantomData,
        }
    }

    pub(crate) fn new(node: &'a Node, run: &'a mut (dyn Runner + 'a)) -> Self {
        Hx {
            active: Some(Active { node, run }),
            _model: PhantomData,
        }
    }

    /// The same context, for a type with the same hook tree as `M` (`&M`, `Box<M>`, a wrapper
    /// that forwards to its inner model without adding a path segment).
    #[inline]
    pub fn same_tree<N: ?Sized>(&mut self) -> Hx<'_, N> {
        match &mut self.active {
            Some(a) => Hx::new(a.node, &mut *a.run),
            None => Hx::none(),
        }
    }

    /// Whether any hook can fire below this context.
    #[inline]
    pub fn is_active(&self) -> bool {
        self.active.is_some()
    }

    /// The hook point of field `slot` of `M`, or `None` when no hook lies at or below it.
    /// `owner` ties the slot to `M` (see [`crate::hook!`]).
    #[doc(hidden)]
    #[inline]
    pub fn point(&mut self, _owner: Owner<M>, slot: Slot) -> Option<Point<'_>> {
        let active = self.active.as_mut()?;
        let node = active.node.child(slot.0)?;
        Some(Point {
            node,
            run: &mut *active.run,
        })
    }

    /// The hook point of element `indices` of a list (of lists: `field[i][j]…`) in field `slot`.
    #[doc(hidden)]
    #[inline]
    pub fn element_at(
        &mut self,
        _owner: Owner<M>,
        slot: Slot,
        indices: &[usize],
    ) -> Option<Point<'_>> {
        let active = self.active.as_mut()?;
        let mut node = active.node.child(slot.0)?;
        for &i in indices {
            node = node.child(u32::try_from(i).ok()?)?;
        }
        Some(Point {
            node,
            run: &mut *active.run,
        })
    }
}

/// Ties a slot to the struct that declares it: [`crate::hook!`] takes it from the same value
/// as the slot, so `Hx<M>` only accepts the fields of `M`.
#[doc(hidden)]
pub struct Owner<M: ?Sized>(PhantomData<fn(&M)>);

impl<M: ?Sized> Owner<M> {
    #[doc(hidden)]
    #[inline(always)]
    pub const fn new() -> Self {
        Owner(PhantomData)
    }
}

/// A hook point about to be called, with hooks at or below it. Made by [`crate::hook!`].
#[doc(hidden)]
pub struct Point<'a> {
    node: &'a Node,
    run: &'a mut (dyn Runner + 'a),
}

/// A forward result whose main tensor hooks see: a `Tensor`, or a tuple whose first element is
/// one (e.g. `(output, kv_cache)`).
pub trait HookOutput: Sized {
    /// The tensor hooks see.
    fn main(&self) -> &Tensor;
    /// Replace it.
    fn set_main(&mut self, t: Tensor);
}

impl HookOutput for Tensor {
    fn main(&self) -> &Tensor {
        self
    }
    fn set_main(&mut self, t: Tensor) {
        *self = t;
    }
}

impl<B> HookOutput for (Tensor, B) {
    fn main(&self) -> &Tensor {
        &self.0
    }
    fn set_main(&mut self, t: Tensor) {
        self.0 = t;
    }
}

impl<B, C> HookOutput for (Tensor, B, C) {
    fn main(&self) -> &Tensor {
        &self.0
    }
    fn set_main(&mut self, t: Tensor) {
        self.0 = t;
    }
}

impl<'a> Point<'a> {
    fn has(&self, dir: Direction) -> bool {
        self.node.dirs & dir.bit() != 0
    }

    /// Call a leaf module: pre-hooks on `input`, `f`, then output hooks.
    pub fn leaf(self, input: &Tensor, f: impl FnOnce(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
        self.nested::<(), _>(input, |x, _| f(x))
    }

    /// Call a nested module whose forward takes a sub-context one path deeper; its type `C` is
    /// the child's, read from the child's forward.
    pub fn nested<C: ?Sized, R: HookOutput>(
        self,
        input: &Tensor,
        f: impl FnOnce(&Tensor, &mut Hx<'_, C>) -> Result<R>,
    ) -> Result<R> {
        let Some(point) = self.node.point else {
            return f(input, &mut Hx::new(self.node, self.run));
        };
        let occurrence = self.run.begin(point);
        let replaced_input = if self.has(Direction::FwdPre) {
            self.run.fire(point, occurrence, Direction::FwdPre, input)?
        } else {
            None
        };
        let input = replaced_input.as_ref().unwrap_or(input);
        let mut out = if self.node.children.is_empty() {
            f(input, &mut Hx::none())?
        } else {
            f(input, &mut Hx::new(self.node, &mut *self.run))?
        };
        for dir in [Direction::Fwd, Direction::Bwd] {
            if self.has(dir)
                && let Some(t) = self.run.fire(point, occurrence, dir, out.main())?
            {
                out.set_main(t);
            }
        }
        Ok(out)
    }
}
