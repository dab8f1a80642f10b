//! Enumerating a model's hook points: paths, classes, kinds and the slot route to each.

use crate::hookable::{Hookable, PointKind, Visitor};

/// One hook point of a model, as [`HookableExt::hook_points`] lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookPointInfo {
    /// The dotted path, e.g. `transformer.h.0.mlp.c_fc` (PyTorch's `named_modules()` name).
    pub path: String,
    /// The class name (`Linear`, `Block`, `ModuleList`, …).
    pub class: &'static str,
    /// Module, list or marker.
    pub kind: PointKind,
    /// Child slots from the root to this point: how a forward reaches it.
    pub route: Vec<u32>,
}

#[derive(Default)]
struct Collector {
    segments: Vec<String>,
    route: Vec<u32>,
    out: Vec<HookPointInfo>,
}

impl Visitor for Collector {
    fn enter(&mut self, segment: &str, slot: u32, class: &'static str, kind: PointKind) {
        self.segments.push(segment.to_string());
        self.route.push(slot);
        self.out.push(HookPointInfo {
            path: self.segments.join("."),
            class,
            kind,
            route: self.route.clone(),
        });
    }

    fn exit(&mut self) {
        self.segments.pop();
        self.route.pop();
    }
}

/// Methods every [`Hookable`] model gets.
pub trait HookableExt: Hookable {
    /// Every hook point below the model, in depth-first pre-order (PyTorch's `named_modules()`
    /// order, without the root).
    ///
    /// ```
    /// use tdhook::prelude::*;
    /// use candle_nn::Linear;
    ///
    /// #[derive(Hookable)]
    /// struct Mlp { c_fc: Linear, c_proj: Linear }
    ///
    /// # let dev = candle_core::Device::Cpu;
    /// # let lin = || Linear::new(candle_core::Tensor::zeros((2, 2), candle_core::DType::F32, &dev).unwrap(), None);
    /// let mlp = Mlp { c_fc: lin(), c_proj: lin() };
    /// let paths: Vec<String> = mlp.hook_points().into_iter().map(|p| p.path).collect();
    /// assert_eq!(paths, ["c_fc", "c_proj"]);
    /// ```
    fn hook_points(&self) -> Vec<HookPointInfo> {
        let mut c = Collector::default();
        self.visit_children(&mut c);
        c.out
    }

    /// The dotted paths of [`HookableExt::hook_points`].
    fn hook_paths(&self) -> Vec<String> {
        self.hook_points().into_iter().map(|p| p.path).collect()
    }
}

impl<T: Hookable + ?Sized> HookableExt for T {}
