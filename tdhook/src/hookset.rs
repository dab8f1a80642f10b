//! `HookSet`: hooks prepared against one model, and the context its forwards run with.
//!
//! ```
//! use tdhook::prelude::*;
//! use candle_core::{Device, DType, Tensor, Result};
//! use candle_nn::{Linear, Module};
//!
//! #[derive(Hookable)]
//! struct Mlp { c_fc: Linear, c_proj: Linear }
//!
//! impl Mlp {
//!     fn forward(&self, x: &Tensor, hx: &mut Hx<Self>) -> Result<Tensor> {
//!         let h = hook!(hx, self.c_fc(x))?.relu()?;
//!         hook!(hx, self.c_proj(&h))
//!     }
//! }
//!
//! # fn main() -> tdhook::Result<()> {
//! let dev = Device::Cpu;
//! let lin = || Linear::new(Tensor::ones((3, 3), DType::F32, &dev).unwrap(), None);
//! let mlp = Mlp { c_fc: lin(), c_proj: lin() };
//! let x = Tensor::ones((2, 3), DType::F32, &dev)?;
//!
//! let mut seen = Vec::new();
//! let mut hooks = HookSet::new(&mlp);
//! hooks.read("c_.*", Direction::Fwd, |ev, t| {
//!     seen.push((ev.path.to_string(), t.dims().to_vec()));
//!     Ok(())
//! })?;
//! let y = hooks.run(|hx| mlp.forward(&x, hx))?;
//! drop(hooks);
//! assert_eq!(seen, [("c_fc".to_string(), vec![2, 3]), ("c_proj".to_string(), vec![2, 3])]);
//! assert_eq!(y.to_vec2::<f32>()?, mlp.forward(&x, &mut Hx::none())?.to_vec2::<f32>()?);
//! # Ok(()) }
//! ```

use crate::error::{Error, Result};
use crate::grad::{GradFn, GradProbe, GradRecord, GradSink};
use crate::hookable::Hookable;
use crate::hx::{Direction, Hx, Node, Runner};
use crate::points::{HookPointInfo, HookableExt};
use crate::select::Selector;
use candle_core::Tensor;
use std::sync::Arc;

/// What a hook is told about the call it runs in.
#[derive(Clone, Copy, Debug)]
pub struct HookEvent<'a> {
    /// The hook path (with the `module.` prefix when the set is not relative).
    pub path: &'a str,
    /// The point's class name.
    pub class: &'static str,
    /// Which direction fired.
    pub direction: Direction,
    /// Which call of this point within the forward (0 for the first).
    pub occurrence: usize,
}

/// A forward hook: sees the point's tensor; `Some` replaces it (same shape).
pub type HookFn<'h> = dyn FnMut(&HookEvent<'_>, &Tensor) -> Result<Option<Tensor>> + 'h;

/// Identifies a registered hook, for [`HookSet::remove`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HookId(usize);

enum Action<'h> {
    Call {
        what: &'static str,
        f: Box<HookFn<'h>>,
    },
    Grad {
        record: bool,
        f: Option<Arc<GradFn>>,
    },
}

struct Registration<'h> {
    points: Vec<usize>,
    dir: Direction,
    action: Action<'h>,
}

/// The mutable part a forward runs against (split from the plan so both can be borrowed).
struct State<'h> {
    table: Arc<[HookPointInfo]>,
    paths: Vec<Arc<str>>,
    regs: Vec<Option<Registration<'h>>>,
    /// Active point → table index.
    active: Vec<usize>,
    /// Active point → registrations, per direction (Fwd, FwdPre, Bwd).
    by_point: Vec<[Vec<usize>; 3]>,
    occurrences: Vec<usize>,
    error: Option<Error>,
    sink: Arc<GradSink>,
}

/// Hooks prepared against one model: patterns are resolved when a hook is added (errors then,
/// not mid-forward), and the forward's context is a tree of just the hooked paths.
///
/// Hooks may borrow local state (`'h`), and none outlives the set: dropping it removes them.
/// One model can run with different hook sets on different threads at once.
pub struct HookSet<'h> {
    plan: Option<Node>,
    state: State<'h>,
}

impl<'h> HookSet<'h> {
    /// Prepare hooks for `model`, with paths relative to it (`transformer.h.0`).
    pub fn new<M: Hookable + ?Sized>(model: &M) -> Self {
        Self::from_points(model.hook_points())
    }

    /// Prepare hooks for `model`, with every path prefixed by `module.` (tdhook's
    /// `relative=False`, which names a wrapped model's modules that way).
    pub fn absolute<M: Hookable + ?Sized>(model: &M) -> Self {
        let mut points = model.hook_points();
        for p in &mut points {
            p.path = format!("module.{}", p.path);
        }
        Self::from_points(points)
    }

    /// Prepare hooks over an explicit point table (paths as hooks will see them).
    pub fn from_points(points: Vec<HookPointInfo>) -> Self {
        let paths = points.iter().map(|p| Arc::from(p.path.as_str())).collect();
        HookSet {
            plan: None,
            state: State {
                table: points.into(),
                paths,
                regs: vec![],
                active: vec![],
                by_point: vec![],
                occurrences: vec![],
                error: None,
                sink: Arc::default(),
            },
        }
    }

    /// The model's hook points as this set names them.
    pub fn points(&self) -> &[HookPointInfo] {
        &self.state.table
    }

    /// Indices (into [`HookSet::points`]) of the points `selector` selects; errors list the
    /// nearest paths when nothing matches.
    pub fn resolve(&self, selector: impl Into<Selector>) -> Result<Vec<usize>> {
        selector.into().resolve(&self.state.table)
    }

    /// The paths `selector` selects.
    pub fn resolve_paths(&self, selector: impl Into<Selector>) -> Result<Vec<String>> {
        Ok(self
            .resolve(selector)?
            .into_iter()
            .map(|i| self.state.table[i].path.clone())
            .collect())
    }

    fn register(&mut self, points: Vec<usize>, dir: Direction, action: Action<'h>) -> HookId {
        self.plan = None;
        self.state.regs.push(Some(Registration {
            points,
            dir,
            action,
        }));
        HookId(self.state.regs.len() - 1)
    }

    /// Add a hook that may replace the tensor (`Some`, same shape) at every selected point.
    pub fn add(
        &mut self,
        selector: impl Into<Selector>,
        dir: Direction,
        f: impl FnMut(&HookEvent<'_>, &Tensor) -> Result<Option<Tensor>> + 'h,
    ) -> Result<HookId> {
        self.add_labelled(selector, dir, "hook", f)
    }

    /// [`HookSet::add`] with a label (`steer_fn`, `patch_fn`) that errors name.
    pub fn add_labelled(
        &mut self,
        selector: impl Into<Selector>,
        dir: Direction,
        what: &'static str,
        f: impl FnMut(&HookEvent<'_>, &Tensor) -> Result<Option<Tensor>> + 'h,
    ) -> Result<HookId> {
        let points = self.resolve(selector)?;
        self.add_at(points, dir, what, f)
    }

    /// Add a hook at already-resolved point indices.
    pub fn add_at(
        &mut self,
        points: Vec<usize>,
        dir: Direction,
        what: &'static str,
        f: impl FnMut(&HookEvent<'_>, &Tensor) -> Result<Option<Tensor>> + 'h,
    ) -> Result<HookId> {
        if dir == Direction::Bwd {
            return Err(Error::Invalid(
                "forward hooks cannot run on `Direction::Bwd`: gradients appear during \
                 backward(); use `HookSet::grad` or `HookSet::grad_hook`"
                    .into(),
            ));
        }
        self.check_points(&points)?;
        Ok(self.register(
            points,
            dir,
            Action::Call {
                what,
                f: Box::new(f),
            },
        ))
    }

    /// Add a hook that only reads.
    pub fn read(
        &mut self,
        selector: impl Into<Selector>,
        dir: Direction,
        mut f: impl FnMut(&HookEvent<'_>, &Tensor) -> Result<()> + 'h,
    ) -> Result<HookId> {
        self.add(selector, dir, move |ev, t| f(ev, t).map(|()| None))
    }

    /// Record the gradient at every selected point during `backward()`; read them with
    /// [`HookSet::take_grads`].
    pub fn grad(&mut self, selector: impl Into<Selector>) -> Result<HookId> {
        let points = self.resolve(selector)?;
        self.grad_at(points)
    }

    /// [`HookSet::grad`] at already-resolved point indices.
    pub fn grad_at(&mut self, points: Vec<usize>) -> Result<HookId> {
        self.check_points(&points)?;
        Ok(self.register(
            points,
            Direction::Bwd,
            Action::Grad {
                record: true,
                f: None,
            },
        ))
    }

    /// A gradient hook: sees (and may replace, same shape) the gradient at every selected point
    /// during `backward()`.
    pub fn grad_hook(
        &mut self,
        selector: impl Into<Selector>,
        f: impl Fn(&HookEvent<'_>, &Tensor) -> Result<Option<Tensor>> + Send + Sync + 'static,
    ) -> Result<HookId> {
        let points = self.resolve(selector)?;
        let f: Arc<GradFn> = Arc::new(f);
        Ok(self.register(
            points,
            Direction::Bwd,
            Action::Grad {
                record: false,
                f: Some(f),
            },
        ))
    }

    fn check_points(&self, points: &[usize]) -> Result<()> {
        match points.iter().find(|&&i| i >= self.state.table.len()) {
            Some(i) => Err(Error::Invalid(format!(
                "point index {i} is out of range: the model has {} hook points",
                self.state.table.len()
            ))),
            None => Ok(()),
        }
    }

    /// Remove a hook. Returns whether it was there.
    pub fn remove(&mut self, id: HookId) -> bool {
        self.plan = None;
        self.state
            .regs
            .get_mut(id.0)
            .and_then(Option::take)
            .is_some()
    }

    /// Whether any hook is registered.
    pub fn is_empty(&self) -> bool {
        self.state.regs.iter().all(Option::is_none)
    }

    /// The context to run one forward with. Occurrence counts start again at 0.
    pub fn hx<M: ?Sized>(&mut self) -> Hx<'_, M> {
        if self.plan.is_none() {
            self.plan = Some(self.state.build_plan());
        }
        self.state.occurrences.iter_mut().for_each(|o| *o = 0);
        self.state.error = None;
        match (&self.plan, self.state.active.is_empty()) {
            (Some(plan), false) => Hx::new(plan, &mut self.state),
            _ => Hx::none(),
        }
    }

    /// Run `forward` with this set's hooks; a hook's error comes back typed.
    pub fn run<M: ?Sized, R>(
        &mut self,
        forward: impl FnOnce(&mut Hx<'_, M>) -> candle_core::Result<R>,
    ) -> Result<R> {
        let res = forward(&mut self.hx());
        match (res, self.state.error.take()) {
            (_, Some(e)) => Err(e),
            (Ok(r), None) => Ok(r),
            (Err(e), None) => Err(e.into()),
        }
    }

    /// The error of a gradient hook that failed in the last `backward()`, if any.
    pub fn take_grad_error(&self) -> Option<Error> {
        crate::util::lock(&self.state.sink.error).take()
    }

    /// Gradients recorded by [`HookSet::grad`] points since the last [`HookSet::take_grads`],
    /// in the order backward reached them. A point not on the path to the loss records nothing
    /// (its gradient is zero).
    pub fn take_grads(&self) -> Vec<GradRecord> {
        std::mem::take(&mut *crate::util::lock(&self.state.sink.records))
    }
}

impl State<'_> {
    /// The tree of hooked paths, and the per-point hook lists.
    fn build_plan(&mut self) -> Node {
        let mut root = Node::default();
        let mut active_of = vec![usize::MAX; self.table.len()];
        self.active.clear();
        self.by_point.clear();
        for (r, reg) in self.regs.iter().enumerate() {
            let Some(reg) = reg else { continue };
            for &p in &reg.points {
                if active_of[p] == usize::MAX {
                    active_of[p] = self.active.len();
                    self.active.push(p);
                    self.by_point.push(Default::default());
                }
                let dir_index = match reg.dir {
                    Direction::Fwd => 0,
                    Direction::FwdPre => 1,
                    Direction::Bwd => 2,
                };
                self.by_point[active_of[p]][dir_index].push(r);
                let mut node = &mut root;
                for &slot in &self.table[p].route {
                    node = node.child_mut(slot);
                }
                node.point = Some(active_of[p] as u32);
                node.dirs |= reg.dir.bit();
            }
        }
        self.occurrences = vec![0; self.active.len()];
        root
    }

    fn fail(&mut self, e: Error) -> candle_core::Error {
        let msg = e.to_string();
        self.error = Some(e);
        candle_core::Error::Msg(msg)
    }
}

impl Runner for State<'_> {
    fn begin(&mut self, point: u32) -> usize {
        let o = &mut self.occurrences[point as usize];
        *o += 1;
        *o - 1
    }

    fn fire(
        &mut self,
        point: u32,
        occurrence: usize,
        dir: Direction,
        t: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let p = self.active[point as usize];
        let info = &self.table[p];
        let class = info.class;
        let path = self.paths[p].clone();
        let event = HookEvent {
            path: &path,
            class,
            direction: dir,
            occurrence,
        };
        if dir == Direction::Bwd {
            let mut probe = GradProbe {
                sink: self.sink.clone(),
                path: path.clone(),
                class,
                occurrence,
                record: false,
                hooks: vec![],
            };
            for &r in &self.by_point[point as usize][2] {
                if let Some(Registration {
                    action: Action::Grad { record, f },
                    ..
                }) = &self.regs[r]
                {
                    probe.record |= *record;
                    probe.hooks.extend(f.clone());
                }
            }
            return probe.attach(t).map(Some);
        }
        let dir_index = if dir == Direction::Fwd { 0 } else { 1 };
        let mut current: Option<Tensor> = None;
        for i in 0..self.by_point[point as usize][dir_index].len() {
            let r = self.by_point[point as usize][dir_index][i];
            let Some(Registration {
                action: Action::Call { what, f },
                ..
            }) = &mut self.regs[r]
            else {
                continue;
            };
            let what = *what;
            let seen = current.as_ref().unwrap_or(t);
            match f(&event, seen) {
                Ok(None) => {}
                Ok(Some(new)) if new.dims() == t.dims() => current = Some(new),
                Ok(Some(new)) => {
                    let e = Error::ShapeMismatch {
                        what,
                        path: path.to_string(),
                        expected: t.dims().to_vec(),
                        got: new.dims().to_vec(),
                    };
                    return Err(self.fail(e));
                }
                Err(e) => return Err(self.fail(e)),
            }
        }
        Ok(current)
    }
}
