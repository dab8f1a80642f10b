//! `#[derive(Hookable)]` for every field kind: the exact hook points (path, class, kind, route),
//! the typed paths, and forwards through every `hook!` form (hooks fire at the right path and
//! occurrence; outputs equal the hook-free forward).

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{Embedding, LayerNorm, Linear};
use std::sync::Arc;
use tdhook::PointKind::{List, Marker, Module as Mod};
use tdhook::prelude::*;
use tdhook::{HookPointInfo, PointKind};

// ---- helpers ---------------------------------------------------------------------------------

const D: usize = 3;

/// A `D × D` linear layer with distinct, deterministic weights (`seed` varies them) and a bias.
fn lin(seed: usize) -> Linear {
    let w: Vec<f32> = (0..D * D)
        .map(|k| {
            let (i, j) = (k / D, k % D);
            let eye = if i == j { 1.0 } else { 0.0 };
            eye + 0.1 * (((k + 3 * seed) % 7) as f32 - 3.0)
        })
        .collect();
    let b: Vec<f32> = (0..D).map(|i| 0.05 * (i + seed) as f32).collect();
    Linear::new(
        Tensor::from_vec(w, (D, D), &Device::Cpu).unwrap(),
        Some(Tensor::from_vec(b, D, &Device::Cpu).unwrap()),
    )
}

fn emb() -> Embedding {
    let t = Tensor::arange(0f32, (5 * D) as f32, &Device::Cpu).unwrap();
    Embedding::new(t.reshape((5, D)).unwrap(), D)
}

fn ln() -> LayerNorm {
    let dev = Device::Cpu;
    LayerNorm::new(
        Tensor::ones(D, DType::F32, &dev).unwrap(),
        Tensor::zeros(D, DType::F32, &dev).unwrap(),
        1e-5,
    )
}

fn input() -> Tensor {
    Tensor::new(&[[0.5f32, -1.0, 2.0], [1.5, 0.25, -0.75]], &Device::Cpu).unwrap()
}

/// `(path, class, kind)` of every point.
fn points<M: Hookable + ?Sized>(m: &M) -> Vec<(String, &'static str, PointKind)> {
    m.hook_points()
        .into_iter()
        .map(|p| (p.path, p.class, p.kind))
        .collect()
}

/// Owned `(path, class, kind)` rows from literals.
fn rows(r: &[(&str, &'static str, PointKind)]) -> Vec<(String, &'static str, PointKind)> {
    r.iter().map(|&(p, c, k)| (p.to_string(), c, k)).collect()
}

fn route_of(m: &impl Hookable, path: &str) -> Vec<u32> {
    let all: Vec<HookPointInfo> = m.hook_points();
    all.into_iter()
        .find(|p| p.path == path)
        .unwrap_or_else(|| panic!("no point {path}"))
        .route
}

fn vec2(t: &Tensor) -> Vec<Vec<f32>> {
    t.to_vec2::<f32>().unwrap()
}

// ---- leaves and nesting ----------------------------------------------------------------------

#[derive(Hookable)]
struct Leaves {
    wte: Embedding,
    ln: LayerNorm,
    proj: Linear,
}

#[test]
fn candle_leaves_are_module_points_named_by_field() {
    let m = Leaves {
        wte: emb(),
        ln: ln(),
        proj: lin(0),
    };
    assert_eq!(
        points(&m),
        rows(&[
            ("wte", "Embedding", Mod),
            ("ln", "LayerNorm", Mod),
            ("proj", "Linear", Mod),
        ])
    );
    assert_eq!(route_of(&m, "wte"), [0]);
    assert_eq!(route_of(&m, "proj"), [2]);
    assert_eq!(Leaves::path().wte().as_str(), "wte");
    assert_eq!(Leaves::path().ln().as_str(), "ln");
    assert_eq!(Leaves::path().proj().as_str(), "proj");
    assert_eq!(m.hook_class(), "Leaves");
}

#[derive(Hookable)]
struct Mlp {
    up: Linear,
    down: Linear,
}

impl Mlp {
    fn new(seed: usize) -> Self {
        Mlp {
            up: lin(seed),
            down: lin(seed + 1),
        }
    }

    fn forward(&self, x: &Tensor, hx: &mut Hx<Self>) -> Result<Tensor> {
        let h = hook!(hx, self.up(x))?.relu()?;
        hook!(hx, self.down(&h))
    }

    fn plain(&self, x: &Tensor) -> Result<Tensor> {
        self.down.forward(&self.up.forward(x)?.relu()?)
    }

    /// A nested method with an extra argument after the input.
    fn forward_scaled(&self, x: &Tensor, scale: f64, hx: &mut Hx<Self>) -> Result<Tensor> {
        self.forward(&(x * scale)?, hx)
    }
}

#[derive(Hookable)]
struct Nested {
    first: Mlp,
    second: Mlp,
}

#[test]
fn nested_structs_are_points_with_children() {
    let m = Nested {
        first: Mlp::new(0),
        second: Mlp::new(2),
    };
    assert_eq!(
        points(&m),
        rows(&[
            ("first", "Mlp", Mod),
            ("first.up", "Linear", Mod),
            ("first.down", "Linear", Mod),
            ("second", "Mlp", Mod),
            ("second.up", "Linear", Mod),
            ("second.down", "Linear", Mod),
        ])
    );
    assert_eq!(route_of(&m, "second.down"), [1, 1]);
    assert_eq!(Nested::path().second().down().as_str(), "second.down");
    assert_eq!(Nested::path().first().as_str(), "first");
    let p: HookPath = Nested::path().first().up();
    assert_eq!(p, HookPath::from("first.up"));
}

// ---- lists -----------------------------------------------------------------------------------

#[derive(Hookable)]
struct Stack {
    layers: Vec<Mlp>,
    heads: Vec<Linear>,
}

#[test]
fn vec_is_a_list_point_with_numbered_elements() {
    let m = Stack {
        layers: vec![Mlp::new(0), Mlp::new(1)],
        heads: vec![lin(0), lin(1), lin(2)],
    };
    assert_eq!(
        points(&m),
        rows(&[
            ("layers", "ModuleList", List),
            ("layers.0", "Mlp", Mod),
            ("layers.0.up", "Linear", Mod),
            ("layers.0.down", "Linear", Mod),
            ("layers.1", "Mlp", Mod),
            ("layers.1.up", "Linear", Mod),
            ("layers.1.down", "Linear", Mod),
            ("heads", "ModuleList", List),
            ("heads.0", "Linear", Mod),
            ("heads.1", "Linear", Mod),
            ("heads.2", "Linear", Mod),
        ])
    );
    assert_eq!(route_of(&m, "layers.1.down"), [0, 1, 1]);
    assert_eq!(route_of(&m, "heads.2"), [1, 2]);
    assert_eq!(Stack::path().layers(1).down().as_str(), "layers.1.down");
    assert_eq!(Stack::path().layers(0).as_str(), "layers.0");
    assert_eq!(Stack::path().heads(2).as_str(), "heads.2");
}

#[test]
fn empty_vec_is_still_a_list_point() {
    let m = Stack {
        layers: vec![],
        heads: vec![lin(0)],
    };
    assert_eq!(
        points(&m),
        rows(&[
            ("layers", "ModuleList", List),
            ("heads", "ModuleList", List),
            ("heads.0", "Linear", Mod),
        ])
    );
}

#[derive(Hookable)]
struct Arrays {
    pair: [Mlp; 2],
    three: [Linear; 3],
}

#[test]
fn arrays_are_list_points_like_vec() {
    let m = Arrays {
        pair: [Mlp::new(0), Mlp::new(1)],
        three: [lin(0), lin(1), lin(2)],
    };
    assert_eq!(
        points(&m),
        rows(&[
            ("pair", "ModuleList", List),
            ("pair.0", "Mlp", Mod),
            ("pair.0.up", "Linear", Mod),
            ("pair.0.down", "Linear", Mod),
            ("pair.1", "Mlp", Mod),
            ("pair.1.up", "Linear", Mod),
            ("pair.1.down", "Linear", Mod),
            ("three", "ModuleList", List),
            ("three.0", "Linear", Mod),
            ("three.1", "Linear", Mod),
            ("three.2", "Linear", Mod),
        ])
    );
    assert_eq!(Arrays::path().pair(1).up().as_str(), "pair.1.up");
    assert_eq!(Arrays::path().three(2).as_str(), "three.2");
}

#[derive(Hookable)]
struct Grid {
    rows: Vec<Vec<Linear>>,
    blocks: Vec<Vec<Mlp>>,
}

#[test]
fn nested_vec_gives_nested_list_points() {
    let m = Grid {
        rows: vec![vec![lin(0), lin(1)], vec![], vec![lin(2)]],
        blocks: vec![vec![Mlp::new(0)]],
    };
    assert_eq!(
        points(&m),
        rows(&[
            ("rows", "ModuleList", List),
            ("rows.0", "ModuleList", List),
            ("rows.0.0", "Linear", Mod),
            ("rows.0.1", "Linear", Mod),
            ("rows.1", "ModuleList", List),
            ("rows.2", "ModuleList", List),
            ("rows.2.0", "Linear", Mod),
            ("blocks", "ModuleList", List),
            ("blocks.0", "ModuleList", List),
            ("blocks.0.0", "Mlp", Mod),
            ("blocks.0.0.up", "Linear", Mod),
            ("blocks.0.0.down", "Linear", Mod),
        ])
    );
    assert_eq!(route_of(&m, "rows.2.0"), [0, 2, 0]);
    assert_eq!(Grid::path().rows(2, 0).as_str(), "rows.2.0");
    assert_eq!(Grid::path().blocks(0, 0).down().as_str(), "blocks.0.0.down");
}

impl Grid {
    /// Every element of both lists of lists, in order, through the nested `hook!` forms.
    fn forward(&self, x: &Tensor, hx: &mut Hx<Self>) -> Result<Tensor> {
        let mut x = x.clone();
        for i in 0..self.rows.len() {
            for j in 0..self.rows[i].len() {
                x = hook!(hx, self.rows[i][j](&x))?;
            }
        }
        for i in 0..self.blocks.len() {
            for j in 0..self.blocks[i].len() {
                x = hook!(hx, self.blocks[i][j].forward(&x))?;
            }
        }
        Ok(x)
    }
}

#[test]
fn hook_indexes_lists_of_lists() -> tdhook::Result<()> {
    let m = Grid {
        rows: vec![vec![lin(0), lin(1)], vec![], vec![lin(2)]],
        blocks: vec![vec![Mlp::new(3), Mlp::new(4)]],
    };
    let x = input();
    let mut plain = x.clone();
    for l in m.rows.iter().flatten() {
        plain = l.forward(&plain)?;
    }
    for b in m.blocks.iter().flatten() {
        plain = b.down.forward(&b.up.forward(&plain)?.relu()?)?;
    }
    assert_eq!(vec2(&m.forward(&x, &mut Hx::none())?), vec2(&plain));

    let mut seen = Vec::new();
    let mut hooks = HookSet::new(&m);
    hooks.read(
        r"rows\.\d+\.\d+|blocks\.0\.1(\.down)?",
        Direction::Fwd,
        |ev, _| {
            seen.push(ev.path.to_string());
            Ok(())
        },
    )?;
    // Zero the output of rows.2.0: everything after it sees zeros.
    hooks.add(r"rows\.2\.0", Direction::Fwd, |_, t| {
        Ok(Some(t.zeros_like()?))
    })?;
    let y = hooks.run(|hx| m.forward(&x, hx))?;
    drop(hooks);
    assert_eq!(
        seen,
        [
            "rows.0.0",
            "rows.0.1",
            "rows.2.0",
            "blocks.0.1.down",
            "blocks.0.1"
        ]
    );
    let mut expect = x.zeros_like()?;
    for b in m.blocks.iter().flatten() {
        expect = b.down.forward(&b.up.forward(&expect)?.relu()?)?;
    }
    assert_eq!(vec2(&y), vec2(&expect));
    Ok(())
}

// ---- Option and Box --------------------------------------------------------------------------

#[derive(Hookable)]
struct Optional {
    maybe_mlp: Option<Mlp>,
    absent: Option<Linear>,
    present: Option<Linear>,
    maybe_list: Option<Vec<Linear>>,
}

#[test]
fn option_some_is_the_inner_point_at_the_field_path_and_none_is_no_point() {
    let m = Optional {
        maybe_mlp: Some(Mlp::new(0)),
        absent: None,
        present: Some(lin(0)),
        maybe_list: Some(vec![lin(1)]),
    };
    assert_eq!(
        points(&m),
        rows(&[
            ("maybe_mlp", "Mlp", Mod),
            ("maybe_mlp.up", "Linear", Mod),
            ("maybe_mlp.down", "Linear", Mod),
            ("present", "Linear", Mod),
            ("maybe_list", "ModuleList", List),
            ("maybe_list.0", "Linear", Mod),
        ])
    );
    // Slots stay declaration indices whether or not a field before is `None`.
    assert_eq!(route_of(&m, "present"), [2]);
    assert_eq!(route_of(&m, "maybe_list.0"), [3, 0]);

    let none = Optional {
        maybe_mlp: None,
        absent: None,
        present: None,
        maybe_list: None,
    };
    assert!(none.hook_points().is_empty());

    assert_eq!(Optional::path().maybe_mlp().up().as_str(), "maybe_mlp.up");
    assert_eq!(Optional::path().absent().as_str(), "absent");
    assert_eq!(Optional::path().maybe_list(0).as_str(), "maybe_list.0");
}

#[derive(Hookable)]
struct Boxed {
    mlp: Box<Mlp>,
    proj: Box<Linear>,
    maybe: Option<Box<Mlp>>,
    shared: Arc<Mlp>,
}

#[test]
fn box_and_arc_add_no_segment() {
    let m = Boxed {
        mlp: Box::new(Mlp::new(0)),
        proj: Box::new(lin(0)),
        maybe: Some(Box::new(Mlp::new(1))),
        shared: Arc::new(Mlp::new(2)),
    };
    assert_eq!(
        points(&m),
        rows(&[
            ("mlp", "Mlp", Mod),
            ("mlp.up", "Linear", Mod),
            ("mlp.down", "Linear", Mod),
            ("proj", "Linear", Mod),
            ("maybe", "Mlp", Mod),
            ("maybe.up", "Linear", Mod),
            ("maybe.down", "Linear", Mod),
            ("shared", "Mlp", Mod),
            ("shared.up", "Linear", Mod),
            ("shared.down", "Linear", Mod),
        ])
    );
    assert_eq!(Boxed::path().shared().up().as_str(), "shared.up");
    assert_eq!(Boxed::path().mlp().down().as_str(), "mlp.down");
    assert_eq!(Boxed::path().proj().as_str(), "proj");
    assert_eq!(Boxed::path().maybe().up().as_str(), "maybe.up");
}

// ---- generics and tuple structs --------------------------------------------------------------

#[derive(Hookable)]
struct Wrap<M> {
    inner: M,
}

#[derive(Hookable)]
struct WrapList<M: Hookable> {
    items: Vec<M>,
    #[hook(skip)]
    _note: &'static str,
}

#[test]
fn generic_struct_with_two_different_parameters() {
    let a = Wrap { inner: lin(0) };
    assert_eq!(points(&a), rows(&[("inner", "Linear", Mod)]));
    let b = Wrap { inner: Mlp::new(0) };
    assert_eq!(
        points(&b),
        rows(&[
            ("inner", "Mlp", Mod),
            ("inner.up", "Linear", Mod),
            ("inner.down", "Linear", Mod),
        ])
    );
    assert_eq!(a.hook_class(), "Wrap");
    assert_eq!(Wrap::<Linear>::path().inner().as_str(), "inner");
    assert_eq!(Wrap::<Mlp>::path().inner().down().as_str(), "inner.down");
    // Wrapping a wrapper.
    let c = Wrap {
        inner: Wrap { inner: lin(1) },
    };
    assert_eq!(
        points(&c),
        rows(&[("inner", "Wrap", Mod), ("inner.inner", "Linear", Mod)])
    );
    assert_eq!(
        Wrap::<Wrap<Linear>>::path().inner().inner().as_str(),
        "inner.inner"
    );

    let l = WrapList {
        items: vec![Mlp::new(0)],
        _note: "x",
    };
    assert_eq!(
        points(&l),
        rows(&[
            ("items", "ModuleList", List),
            ("items.0", "Mlp", Mod),
            ("items.0.up", "Linear", Mod),
            ("items.0.down", "Linear", Mod),
        ])
    );
    assert_eq!(WrapList::<Mlp>::path().items(0).up().as_str(), "items.0.up");
}

#[derive(Hookable)]
struct Pair(Linear, Mlp);

#[derive(Hookable)]
struct Gapped(Linear, #[hook(skip)] usize, Linear);

#[test]
fn tuple_structs_use_index_segments_and_underscore_methods() {
    let m = Pair(lin(0), Mlp::new(1));
    assert_eq!(
        points(&m),
        rows(&[
            ("0", "Linear", Mod),
            ("1", "Mlp", Mod),
            ("1.up", "Linear", Mod),
            ("1.down", "Linear", Mod),
        ])
    );
    assert_eq!(Pair::path()._0().as_str(), "0");
    assert_eq!(Pair::path()._1().up().as_str(), "1.up");

    let g = Gapped(lin(0), 7, lin(1));
    assert_eq!(
        points(&g),
        rows(&[("0", "Linear", Mod), ("2", "Linear", Mod)])
    );
    assert_eq!(route_of(&g, "2"), [2]);
    assert_eq!(g.1, 7);
    assert_eq!(Gapped::path()._2().as_str(), "2");
}

// ---- attributes ------------------------------------------------------------------------------

/// Not `Hookable`, not a module: only `#[hook(skip)]` lets it be a field.
struct Config {
    _width: usize,
}

#[derive(Hookable)]
struct Skipping {
    a: Linear,
    #[hook(skip)]
    cache: Linear,
    #[hook(skip)]
    cfg: Config,
    b: Linear,
}

#[test]
fn skip_drops_the_field_and_keeps_the_other_slots() {
    let m = Skipping {
        a: lin(0),
        cache: lin(1),
        cfg: Config { _width: 3 },
        b: lin(2),
    };
    assert_eq!(
        points(&m),
        rows(&[("a", "Linear", Mod), ("b", "Linear", Mod)])
    );
    assert_eq!(route_of(&m, "b"), [3]);
    assert_eq!(Skipping::path().b().as_str(), "b");
    let _ = (&m.cache, &m.cfg);
}

#[derive(Hookable)]
struct Renamed {
    #[hook(rename = "model.layers")]
    layers: Vec<Mlp>,
    #[hook(rename = "lm_head")]
    head: Linear,
    #[hook(rename = "model.norm")]
    norm: LayerNorm,
}

#[test]
fn rename_with_several_segments() {
    let m = Renamed {
        layers: vec![Mlp::new(0), Mlp::new(1)],
        head: lin(0),
        norm: ln(),
    };
    assert_eq!(
        points(&m),
        rows(&[
            ("model.layers", "ModuleList", List),
            ("model.layers.0", "Mlp", Mod),
            ("model.layers.0.up", "Linear", Mod),
            ("model.layers.0.down", "Linear", Mod),
            ("model.layers.1", "Mlp", Mod),
            ("model.layers.1.up", "Linear", Mod),
            ("model.layers.1.down", "Linear", Mod),
            ("lm_head", "Linear", Mod),
            ("model.norm", "LayerNorm", Mod),
        ])
    );
    // A multi-segment rename is one point: there is no `model` point.
    assert!(!m.hook_paths().iter().any(|p| p == "model"));
    assert_eq!(route_of(&m, "model.layers.1.up"), [0, 1, 0]);
    assert_eq!(Renamed::path().layers(1).up().as_str(), "model.layers.1.up");
    assert_eq!(Renamed::path().head().as_str(), "lm_head");
    assert_eq!(Renamed::path().norm().as_str(), "model.norm");
}

/// A module from elsewhere: a candle `Module`, not `Hookable`.
struct Rotary {
    theta: f32,
}

impl Module for Rotary {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        xs * self.theta as f64
    }
}

/// A generic foreign module: its class is the last path segment without generics.
struct Scale<T>(T);

impl Module for Scale<f64> {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        xs * self.0
    }
}

#[derive(Hookable)]
#[hook(class = "MyAttention")]
struct WithForeign {
    q: Linear,
    #[hook(leaf)]
    rotary: Rotary,
    #[hook(leaf)]
    scale: Scale<f64>,
}

#[test]
fn leaf_marks_a_foreign_module_as_a_point_and_class_renames_the_struct() {
    let m = WithForeign {
        q: lin(0),
        rotary: Rotary { theta: 2.0 },
        scale: Scale(0.5),
    };
    assert_eq!(
        points(&m),
        rows(&[
            ("q", "Linear", Mod),
            ("rotary", "Rotary", Mod),
            ("scale", "Scale", Mod),
        ])
    );
    assert_eq!(m.hook_class(), "MyAttention");
    let x = input();
    assert_eq!(
        vec2(&m.rotary.forward(&x).unwrap()),
        vec2(&(&x * 2.0).unwrap())
    );
    assert_eq!(
        vec2(&m.scale.forward(&x).unwrap()),
        vec2(&(&x * 0.5).unwrap())
    );
    assert_eq!(WithForeign::path().rotary().as_str(), "rotary");
    assert_eq!(WithForeign::path().scale().as_str(), "scale");

    let outer = Wrap { inner: m };
    assert_eq!(outer.hook_points()[0].class, "MyAttention");
    // Class filters see the renamed class.
    let hooks = HookSet::new(&outer);
    let sel = Selector::regex(".*").classes_to_hook(["MyAttention", "Rotary"]);
    assert_eq!(hooks.resolve_paths(sel).unwrap(), ["inner", "inner.rotary"]);
    let sel = Selector::regex("inner\\..*").classes_to_skip(["Linear"]);
    assert_eq!(
        hooks.resolve_paths(sel).unwrap(),
        ["inner.rotary", "inner.scale"]
    );
}

#[derive(Hookable)]
struct Markers {
    proj: Linear,
    hook_pattern: HookPoint,
    hook_resid: Vec<HookPoint>,
    hook_maybe: Option<HookPoint>,
}

#[test]
fn hook_point_fields_are_marker_points() {
    let m = Markers {
        proj: lin(0),
        hook_pattern: HookPoint,
        hook_resid: vec![HookPoint, HookPoint],
        hook_maybe: Some(HookPoint),
    };
    assert_eq!(
        points(&m),
        rows(&[
            ("proj", "Linear", Mod),
            ("hook_pattern", "HookPoint", Marker),
            ("hook_resid", "ModuleList", List),
            ("hook_resid.0", "HookPoint", Marker),
            ("hook_resid.1", "HookPoint", Marker),
            ("hook_maybe", "HookPoint", Marker),
        ])
    );
    assert_eq!(Markers::path().hook_pattern().as_str(), "hook_pattern");
    assert_eq!(Markers::path().hook_resid(1).as_str(), "hook_resid.1");
    assert_eq!(Markers::path().hook_maybe().as_str(), "hook_maybe");
}

#[derive(Hookable)]
#[allow(dead_code, clippy::vec_box)] // `Vec<Box<Tensor>>` on purpose: still no point
struct Plain {
    weight: Tensor,
    n_head: usize,
    name: String,
    eps: f64,
    proj: Linear,
    tensors: Vec<Tensor>,
    maybe: Option<Tensor>,
    boxed: Box<Tensor>,
    boxed_list: Vec<Box<Tensor>>,
    arr: [f32; 3],
    flag: bool,
}

#[test]
fn tensors_and_plain_values_are_no_points() {
    let t = Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap();
    let m = Plain {
        weight: t.clone(),
        n_head: 4,
        name: "x".into(),
        eps: 1e-5,
        proj: lin(0),
        tensors: vec![t.clone(), t.clone()],
        maybe: Some(t.clone()),
        boxed: Box::new(t.clone()),
        boxed_list: vec![Box::new(t.clone())],
        arr: [0.0; 3],
        flag: true,
    };
    assert_eq!(points(&m), rows(&[("proj", "Linear", Mod)]));
    assert_eq!(route_of(&m, "proj"), [4]);
    assert_eq!(Plain::path().proj().as_str(), "proj");
}

// ---- forwards through every `hook!` form -----------------------------------------------------

/// A tuple struct with a forward through `hook!(hx, self.0(x))`.
impl Pair {
    fn forward(&self, x: &Tensor, hx: &mut Hx<Self>) -> Result<Tensor> {
        let h = hook!(hx, self.0(x))?;
        hook!(hx, self.1.forward(&h))
    }

    fn plain(&self, x: &Tensor) -> Result<Tensor> {
        self.1.plain(&self.0.forward(x)?)
    }
}

impl<M: Module> Wrap<M> {
    fn forward(&self, x: &Tensor, hx: &mut Hx<Self>) -> Result<Tensor> {
        hook!(hx, self.inner(x))
    }
}

#[derive(Hookable)]
struct Net {
    #[hook(rename = "model.embed")]
    embed: Linear,
    mlp: Mlp,
    heads: Vec<Linear>,
    blocks: Vec<Mlp>,
    arr: [Linear; 2],
    pair: Pair,
    boxed: Box<Linear>,
    boxed_mlp: Box<Mlp>,
    wrapped: Wrap<Linear>,
    #[hook(leaf)]
    rotary: Rotary,
    hook_out: HookPoint,
    #[hook(skip)]
    n: usize,
}

fn net() -> Net {
    Net {
        embed: lin(0),
        mlp: Mlp::new(1),
        heads: vec![lin(2), lin(3)],
        blocks: vec![Mlp::new(4), Mlp::new(5)],
        arr: [lin(6), lin(7)],
        pair: Pair(lin(8), Mlp::new(9)),
        boxed: Box::new(lin(10)),
        boxed_mlp: Box::new(Mlp::new(11)),
        wrapped: Wrap { inner: lin(12) },
        rotary: Rotary { theta: 0.5 },
        hook_out: HookPoint,
        n: 2,
    }
}

impl Net {
    fn forward(&self, x: &Tensor, hx: &mut Hx<Self>) -> Result<Tensor> {
        let mut x = hook!(hx, self.embed(x))?; // leaf
        x = hook!(hx, self.mlp.forward(&x))?; // nested
        for i in 0..self.heads.len() {
            x = hook!(hx, self.heads[i](&x))?; // element of a list of leaves
        }
        for i in 0..self.n {
            x = hook!(hx, self.blocks[i].forward(&x))?; // element of a list of nested modules
        }
        x = hook!(hx, self.blocks[0].forward_scaled(&x, 0.5))?; // extra argument; 2nd call
        x = hook!(hx, self.arr[1](&x))?;
        x = hook!(hx, self.pair.forward(&x))?; // tuple struct inside
        x = hook!(hx, self.boxed(&x))?;
        x = hook!(hx, self.boxed_mlp.forward(&x))?;
        x = hook!(hx, self.wrapped.forward(&x))?;
        x = hook!(hx, self.rotary(&x))?; // #[hook(leaf)]
        x = hook!(hx, self.mlp.forward(&x))?; // second call of `mlp`
        hook!(hx, self.hook_out(&x)) // marker
    }

    fn plain(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = self.embed.forward(x)?;
        x = self.mlp.plain(&x)?;
        for h in &self.heads {
            x = h.forward(&x)?;
        }
        for b in &self.blocks {
            x = b.plain(&x)?;
        }
        x = self.blocks[0].plain(&(x * 0.5)?)?;
        x = self.arr[1].forward(&x)?;
        x = self.pair.plain(&x)?;
        x = self.boxed.forward(&x)?;
        x = self.boxed_mlp.plain(&x)?;
        x = self.wrapped.inner.forward(&x)?;
        x = self.rotary.forward(&x)?;
        self.mlp.plain(&x)
    }
}

/// Every Fwd call in the order the forward makes it, as `(path, occurrence)`.
const NET_CALLS: &[(&str, usize)] = &[
    ("model.embed", 0),
    ("mlp.up", 0),
    ("mlp.down", 0),
    ("mlp", 0),
    ("heads.0", 0),
    ("heads.1", 0),
    ("blocks.0.up", 0),
    ("blocks.0.down", 0),
    ("blocks.0", 0),
    ("blocks.1.up", 0),
    ("blocks.1.down", 0),
    ("blocks.1", 0),
    ("blocks.0.up", 1),
    ("blocks.0.down", 1),
    ("blocks.0", 1),
    ("arr.1", 0),
    ("pair.0", 0),
    ("pair.1.up", 0),
    ("pair.1.down", 0),
    ("pair.1", 0),
    ("pair", 0),
    ("boxed", 0),
    ("boxed_mlp.up", 0),
    ("boxed_mlp.down", 0),
    ("boxed_mlp", 0),
    ("wrapped.inner", 0),
    ("wrapped", 0),
    ("rotary", 0),
    ("mlp.up", 1),
    ("mlp.down", 1),
    ("mlp", 1),
    ("hook_out", 0),
];

#[test]
fn every_hook_form_fires_in_order_with_occurrences() -> tdhook::Result<()> {
    let m = net();
    let x = input();
    let plain = m.plain(&x)?;
    let none = m.forward(&x, &mut Hx::none())?;
    assert_eq!(
        vec2(&none),
        vec2(&plain),
        "hook-free forward equals plain candle"
    );

    let mut seen: Vec<(String, usize)> = Vec::new();
    let mut classes: Vec<(String, &'static str)> = Vec::new();
    let mut hooks = HookSet::new(&m);
    hooks.read(".*", Direction::Fwd, |ev, _| {
        seen.push((ev.path.to_string(), ev.occurrence));
        classes.push((ev.path.to_string(), ev.class));
        assert_eq!(ev.direction, Direction::Fwd);
        Ok(())
    })?;
    let y = hooks.run(|hx| m.forward(&x, hx))?;
    drop(hooks);
    let expected: Vec<(String, usize)> =
        NET_CALLS.iter().map(|&(p, o)| (p.to_string(), o)).collect();
    assert_eq!(seen, expected);
    assert_eq!(vec2(&y), vec2(&plain), "read-only hooks change nothing");
    let class_of = |p: &str| classes.iter().find(|(q, _)| q == p).unwrap().1;
    assert_eq!(class_of("rotary"), "Rotary");
    assert_eq!(class_of("hook_out"), "HookPoint");
    assert_eq!(class_of("pair"), "Pair");
    assert_eq!(class_of("wrapped"), "Wrap");
    Ok(())
}

#[test]
fn pre_hooks_see_the_input_and_fwd_hooks_the_output() -> tdhook::Result<()> {
    let m = net();
    let x = input();
    let mut pre: Vec<(String, usize, Vec<Vec<f32>>)> = Vec::new();
    let mut post: Vec<(String, usize, Vec<Vec<f32>>)> = Vec::new();
    let mut hooks = HookSet::new(&m);
    hooks.read(r"mlp\.up|model\.embed", Direction::FwdPre, |ev, t| {
        assert_eq!(ev.direction, Direction::FwdPre);
        pre.push((ev.path.to_string(), ev.occurrence, vec2(t)));
        Ok(())
    })?;
    hooks.read(r"mlp\.up|model\.embed", Direction::Fwd, |ev, t| {
        post.push((ev.path.to_string(), ev.occurrence, vec2(t)));
        Ok(())
    })?;
    let y = hooks.run(|hx| m.forward(&x, hx))?;
    drop(hooks);
    let order = |v: &[(String, usize, Vec<Vec<f32>>)]| -> Vec<(String, usize)> {
        v.iter().map(|(p, o, _)| (p.clone(), *o)).collect()
    };
    let expected = [
        ("model.embed".to_string(), 0),
        ("mlp.up".to_string(), 0),
        ("mlp.up".to_string(), 1),
    ];
    assert_eq!(order(&pre), expected);
    assert_eq!(order(&post), expected);
    // Each pre-hook sees exactly what its point is called with, each fwd hook what it returns.
    assert_eq!(pre[0].2, vec2(&x));
    let embedded = m.embed.forward(&x)?;
    assert_eq!(post[0].2, vec2(&embedded));
    assert_eq!(pre[1].2, vec2(&embedded));
    assert_eq!(post[1].2, vec2(&m.mlp.up.forward(&embedded)?));
    for (p, q) in pre.iter().zip(&post).skip(1) {
        let from_pre = m.mlp.up.forward(&Tensor::new(p.2.clone(), &Device::Cpu)?)?;
        assert_eq!(q.2, vec2(&from_pre));
    }
    assert_eq!(vec2(&y), vec2(&m.plain(&x)?));
    Ok(())
}

#[test]
fn pre_and_fwd_hooks_interleave_per_call() -> tdhook::Result<()> {
    let m = net();
    let x = input();
    let log = std::cell::RefCell::new(Vec::<String>::new());
    let mut hooks = HookSet::new(&m);
    for dir in [Direction::Fwd, Direction::FwdPre] {
        let log = &log;
        hooks.read(r"blocks\.0|blocks\.0\.down|rotary", dir, move |ev, _| {
            log.borrow_mut()
                .push(format!("{}:{}:{}", ev.direction, ev.path, ev.occurrence));
            Ok(())
        })?;
    }
    hooks.run(|hx| m.forward(&x, hx))?;
    drop(hooks);
    assert_eq!(
        log.into_inner(),
        [
            "fwd_pre:blocks.0:0",
            "fwd_pre:blocks.0.down:0",
            "fwd:blocks.0.down:0",
            "fwd:blocks.0:0",
            "fwd_pre:blocks.0:1",
            "fwd_pre:blocks.0.down:1",
            "fwd:blocks.0.down:1",
            "fwd:blocks.0:1",
            "fwd_pre:rotary:0",
            "fwd:rotary:0",
        ]
    );
    Ok(())
}

#[test]
fn one_deep_hook_fires_alone_and_replacing_it_changes_the_output() -> tdhook::Result<()> {
    let m = net();
    let x = input();
    let target = Net::path().blocks(1).down();
    let mut seen = Vec::new();
    let mut hooks = HookSet::new(&m);
    hooks.add(target.clone(), Direction::Fwd, |ev, t| {
        seen.push((ev.path.to_string(), ev.occurrence));
        Ok(Some(t.zeros_like()?))
    })?;
    let y = hooks.run(|hx| m.forward(&x, hx))?;
    drop(hooks);
    assert_eq!(seen, [("blocks.1.down".to_string(), 0)]);

    // By hand: everything after `blocks.1` starts from zeros.
    let mut h = m.embed.forward(&x)?;
    h = m.mlp.plain(&h)?;
    for head in &m.heads {
        h = head.forward(&h)?;
    }
    let _ = m.blocks[0].plain(&h)?;
    let mut h = h.zeros_like()?;
    h = m.blocks[0].plain(&(h * 0.5)?)?;
    h = m.arr[1].forward(&h)?;
    h = m.pair.plain(&h)?;
    h = m.boxed.forward(&h)?;
    h = m.boxed_mlp.plain(&h)?;
    h = m.wrapped.inner.forward(&h)?;
    h = m.rotary.forward(&h)?;
    h = m.mlp.plain(&h)?;
    assert_eq!(vec2(&y), vec2(&h));
    assert_ne!(vec2(&y), vec2(&m.plain(&x)?));
    Ok(())
}

#[test]
fn typed_paths_select_the_points_hooks_fire_on() -> tdhook::Result<()> {
    let m = net();
    let x = input();
    let typed: Vec<HookPath> = vec![
        Net::path().embed(),
        Net::path().mlp().down(),
        Net::path().heads(1),
        Net::path().blocks(0).up(),
        Net::path().arr(1),
        Net::path().pair()._0(),
        Net::path().pair()._1().down(),
        Net::path().boxed(),
        Net::path().boxed_mlp().into(),
        Net::path().wrapped().inner(),
        Net::path().rotary(),
        Net::path().hook_out(),
    ];
    let strs: Vec<&str> = typed.iter().map(HookPath::as_str).collect();
    assert_eq!(
        strs,
        [
            "model.embed",
            "mlp.down",
            "heads.1",
            "blocks.0.up",
            "arr.1",
            "pair.0",
            "pair.1.down",
            "boxed",
            "boxed_mlp",
            "wrapped.inner",
            "rotary",
            "hook_out",
        ]
    );
    let all = m.hook_paths();
    for p in &strs {
        assert!(all.iter().any(|q| q == p), "{p} is a hook point");
    }
    let fired = std::cell::RefCell::new(Vec::<String>::new());
    let mut hooks = HookSet::new(&m);
    for p in &typed {
        let fired = &fired;
        hooks.read(p, Direction::Fwd, move |ev, _| {
            fired.borrow_mut().push(ev.path.to_string());
            Ok(())
        })?;
    }
    hooks.run(|hx| m.forward(&x, hx))?;
    drop(hooks);
    let fired = fired.into_inner();
    let fired_once: std::collections::BTreeSet<&str> = fired.iter().map(String::as_str).collect();
    assert_eq!(
        fired_once,
        strs.iter()
            .copied()
            .collect::<std::collections::BTreeSet<_>>()
    );
    // `mlp.down` and `blocks.0.up` are called twice each; everything else once.
    assert_eq!(fired.len(), strs.len() + 2);
    Ok(())
}

mod option_calls {
    use candle_core::{DType, Device, Result, Tensor};
    use candle_nn::Linear;
    use tdhook::prelude::*;

    #[derive(Hookable)]
    struct Inner {
        fc: Linear,
    }

    impl Inner {
        fn forward(&self, x: &Tensor, hx: &mut Hx<Self>) -> Result<Tensor> {
            hook!(hx, self.fc(x))
        }
    }

    #[derive(Hookable)]
    struct Outer {
        proj: Option<Linear>,
        inner: Option<Inner>,
    }

    impl Outer {
        fn forward(&self, x: &Tensor, hx: &mut Hx<Self>) -> Result<Tensor> {
            let x = if self.proj.is_some() {
                hook!(hx, self.proj(x))?
            } else {
                x.clone()
            };
            hook!(hx, self.inner?.forward(&x))
        }
    }

    fn lin(scale: f64) -> Linear {
        Linear::new(
            (Tensor::eye(2, DType::F32, &Device::Cpu).unwrap() * scale).unwrap(),
            None,
        )
    }

    #[test]
    fn option_fields_are_called_through_hook_and_fire() {
        let m = Outer {
            proj: Some(lin(2.0)),
            inner: Some(Inner { fc: lin(3.0) }),
        };
        let x = Tensor::new(&[[1f32, 1.]], &Device::Cpu).unwrap();
        let mut seen = vec![];
        let mut hooks = HookSet::new(&m);
        hooks
            .read(".*", Direction::Fwd, |ev, t| {
                seen.push((ev.path.to_string(), t.to_vec2::<f32>()?[0][0]));
                Ok(())
            })
            .unwrap();
        let y = hooks.run(|hx| m.forward(&x, hx)).unwrap();
        drop(hooks);
        assert_eq!(y.to_vec2::<f32>().unwrap(), [[6., 6.]]);
        assert_eq!(
            seen,
            [
                ("proj".into(), 2.0),
                ("inner.fc".into(), 6.0),
                ("inner".into(), 6.0)
            ]
        );
        assert_eq!(
            m.forward(&x, &mut Hx::none())
                .unwrap()
                .to_vec2::<f32>()
                .unwrap(),
            [[6., 6.]]
        );
        let none = Outer {
            proj: None,
            inner: None,
        };
        let e = none.forward(&x, &mut Hx::none()).unwrap_err().to_string();
        assert!(e.contains("inner") && e.contains("None"), "{e}");
    }
}
