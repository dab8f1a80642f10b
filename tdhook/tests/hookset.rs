//! `HookSet` at run time: occurrences, replacing inputs and outputs, typed errors, full-match
//! patterns, absolute paths, removal, borrowed state, threads, and gradients at hook points
//! checked against hand-computed and finite-difference values.

use candle_core::{DType, Device, Module, Result, Tensor, Var};
use candle_nn::Linear;
use std::cell::RefCell;
use std::sync::Arc;
use tdhook::Error;
use tdhook::prelude::*;

// ---- helpers ---------------------------------------------------------------------------------

fn t2(rows: &[&[f32]]) -> Tensor {
    let v: Vec<Vec<f32>> = rows.iter().map(|r| r.to_vec()).collect();
    Tensor::new(v, &Device::Cpu).unwrap()
}

fn lin(w: &[&[f32]], b: &[f32]) -> Linear {
    Linear::new(t2(w), Some(Tensor::new(b, &Device::Cpu).unwrap()))
}

fn vec2(t: &Tensor) -> Vec<Vec<f32>> {
    t.to_dtype(DType::F32).unwrap().to_vec2::<f32>().unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

// ---- a two-layer model whose outputs are easy to compute by hand ------------------------------

#[derive(Hookable)]
struct Two {
    a: Linear,
    b: Linear,
}

impl Two {
    /// a: W = [[1, 2], [3, 4]], bias [0.5, -0.5]; b: W = [[1, -1], [0, 2]], bias [0, 1].
    fn new() -> Self {
        Two {
            a: lin(&[&[1., 2.], &[3., 4.]], &[0.5, -0.5]),
            b: lin(&[&[1., -1.], &[0., 2.]], &[0., 1.]),
        }
    }

    fn forward(&self, x: &Tensor, hx: &mut Hx<Self>) -> Result<Tensor> {
        let h = hook!(hx, self.a(x))?;
        hook!(hx, self.b(&h))
    }
}

/// x = [[1, 1]]: a(x) = [3.5, 6.5], b(a(x)) = [-3, 14].
fn ones() -> Tensor {
    t2(&[&[1., 1.]])
}

#[test]
fn the_hand_computed_model_is_right() -> tdhook::Result<()> {
    let m = Two::new();
    assert_eq!(vec2(&m.forward(&ones(), &mut Hx::none())?), [[-3., 14.]]);
    let mut hooks = HookSet::new(&m);
    assert!(hooks.is_empty());
    assert_eq!(vec2(&hooks.run(|hx| m.forward(&ones(), hx))?), [[-3., 14.]]);
    Ok(())
}

#[test]
fn fwd_pre_hooks_see_the_input_and_can_replace_it() -> tdhook::Result<()> {
    let m = Two::new();
    let mut seen = Vec::new();
    let mut hooks = HookSet::new(&m);
    hooks.add("b", Direction::FwdPre, |ev, t| {
        assert_eq!(ev.direction, Direction::FwdPre);
        seen.push(vec2(t));
        Ok(Some(t.ones_like()?))
    })?;
    let y = hooks.run(|hx| m.forward(&ones(), hx))?;
    drop(hooks);
    assert_eq!(seen, [[[3.5, 6.5]]], "the pre-hook sees b's input, a(x)");
    // b([1, 1]) = [1 - 1 + 0, 0 + 2 + 1].
    assert_eq!(vec2(&y), [[0., 3.]]);

    // Replacing the model's input: a(0) = [0.5, -0.5]; b of that = [1, -1 + 1].
    let mut hooks = HookSet::new(&m);
    hooks.add(Two::path().a(), Direction::FwdPre, |_, t| {
        Ok(Some(t.zeros_like()?))
    })?;
    assert_eq!(vec2(&hooks.run(|hx| m.forward(&ones(), hx))?), [[1., 0.]]);
    Ok(())
}

#[test]
fn fwd_hooks_replace_the_output_and_chain_in_registration_order() -> tdhook::Result<()> {
    let m = Two::new();
    let mut seen = Vec::new();
    let mut hooks = HookSet::new(&m);
    hooks.add("a", Direction::Fwd, |_, t| Ok(Some((t * 2.0)?)))?;
    // 2 · a(x) = [7, 13]; b = [7 - 13, 26 + 1].
    assert_eq!(vec2(&hooks.run(|hx| m.forward(&ones(), hx))?), [[-6., 27.]]);

    // A second hook at the same point sees the first one's replacement: (2 · a(x)) + 1 = [8, 14].
    hooks.add("a", Direction::Fwd, |_, t| {
        seen.push(vec2(t));
        Ok(Some((t + 1.0)?))
    })?;
    // b([8, 14]) = [8 - 14, 28 + 1].
    assert_eq!(vec2(&hooks.run(|hx| m.forward(&ones(), hx))?), [[-6., 29.]]);
    drop(hooks);
    assert_eq!(seen, [[[7., 13.]]]);
    Ok(())
}

#[test]
fn a_replacement_with_the_wrong_shape_is_a_shape_mismatch_naming_the_path() -> tdhook::Result<()> {
    let m = Two::new();
    let mut hooks = HookSet::new(&m);
    hooks.add_labelled("a", Direction::Fwd, "steer_fn", |_, _| {
        Ok(Some(Tensor::zeros((1, 3), DType::F32, &Device::Cpu)?))
    })?;
    let err = hooks.run(|hx| m.forward(&ones(), hx)).unwrap_err();
    match &err {
        Error::ShapeMismatch {
            what,
            path,
            expected,
            got,
        } => {
            assert_eq!(*what, "steer_fn");
            assert_eq!(path, "a");
            assert_eq!(expected, &[1, 2]);
            assert_eq!(got, &[1, 3]);
        }
        other => panic!("expected ShapeMismatch, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("`a`") && msg.contains("[1, 3]") && msg.contains("[1, 2]"),
        "{msg}"
    );

    // The same for a pre-hook.
    let mut hooks = HookSet::new(&m);
    hooks.add("b", Direction::FwdPre, |_, t| Ok(Some(t.reshape(2)?)))?;
    match hooks.run(|hx| m.forward(&ones(), hx)) {
        Err(Error::ShapeMismatch {
            what, path, got, ..
        }) => {
            assert_eq!(
                (what, path.as_str(), got.as_slice()),
                ("hook", "b", &[2][..])
            );
        }
        other => panic!("expected ShapeMismatch, got {other:?}"),
    }
    Ok(())
}

#[test]
fn a_hook_error_comes_back_typed_and_stops_the_forward() -> tdhook::Result<()> {
    let m = Two::new();
    let b_calls = RefCell::new(0);
    let mut hooks = HookSet::new(&m);
    hooks.read("a", Direction::Fwd, |ev, _| {
        Err(Error::Invalid(format!("refused at {}", ev.path)))
    })?;
    hooks.read("b", Direction::FwdPre, |_, _| {
        *b_calls.borrow_mut() += 1;
        Ok(())
    })?;
    match hooks.run(|hx| m.forward(&ones(), hx)) {
        Err(Error::Invalid(msg)) => assert_eq!(msg, "refused at a"),
        other => panic!("expected the hook's Invalid error, got {other:?}"),
    }
    // The error of one run does not leak into the next.
    let ok = hooks.run(|hx: &mut Hx<()>| Ok(hx.is_active()));
    assert!(matches!(ok, Ok(true)), "{ok:?}");
    drop(hooks);
    assert_eq!(*b_calls.borrow(), 0, "nothing after the failing hook ran");

    // A forward's own candle error comes back as `Error::Candle`.
    let mut hooks = HookSet::new(&m);
    hooks.read("a", Direction::Fwd, |_, _| Ok(()))?;
    let bad = Tensor::ones((1, 5), DType::F32, &Device::Cpu)?;
    assert!(matches!(
        hooks.run(|hx| m.forward(&bad, hx)),
        Err(Error::Candle(_))
    ));
    Ok(())
}

#[test]
fn forward_hooks_cannot_be_registered_on_bwd() {
    let m = Two::new();
    let mut hooks = HookSet::new(&m);
    let err = hooks.read("a", Direction::Bwd, |_, _| Ok(())).unwrap_err();
    assert!(
        matches!(&err, Error::Invalid(msg) if msg.contains("grad_hook")),
        "{err}"
    );
    assert!(hooks.is_empty());
}

// ---- occurrences -----------------------------------------------------------------------------

#[derive(Hookable)]
struct Twice {
    shared: Linear,
    other: Linear,
}

impl Twice {
    fn forward(&self, x: &Tensor, hx: &mut Hx<Self>) -> Result<Tensor> {
        let h = hook!(hx, self.shared(x))?;
        let h = hook!(hx, self.other(&h))?;
        hook!(hx, self.shared(&h))
    }
}

#[test]
fn a_module_called_twice_gives_occurrences_0_and_1_and_counts_restart_per_run() -> tdhook::Result<()>
{
    let m = Twice {
        shared: lin(&[&[1., 0.], &[0., 2.]], &[0., 0.]),
        other: lin(&[&[0., 1.], &[1., 0.]], &[1., 1.]),
    };
    let x = ones();
    let mut seen: Vec<(String, Direction, usize, Vec<Vec<f32>>)> = Vec::new();
    let mut hooks = HookSet::new(&m);
    hooks.read("shared", Direction::Fwd, |ev, t| {
        seen.push((ev.path.to_string(), ev.direction, ev.occurrence, vec2(t)));
        Ok(())
    })?;
    hooks.run(|hx| m.forward(&x, hx))?;
    hooks.run(|hx| m.forward(&x, hx))?;
    drop(hooks);
    // shared([1, 1]) = [1, 2]; other = [3, 2]; shared = [3, 4].
    let expected = [
        ("shared".to_string(), Direction::Fwd, 0, vec![vec![1., 2.]]),
        ("shared".to_string(), Direction::Fwd, 1, vec![vec![3., 4.]]),
    ];
    assert_eq!(seen[..2], expected);
    assert_eq!(seen[2..], expected, "the second run counts from 0 again");

    // Replacing only the second call.
    let mut hooks = HookSet::new(&m);
    hooks.add("shared", Direction::Fwd, |ev, t| {
        Ok((ev.occurrence == 1).then(|| (t * 10.0).unwrap()))
    })?;
    assert_eq!(vec2(&hooks.run(|hx| m.forward(&x, hx))?), [[30., 40.]]);
    // `hx()` by hand also restarts the counts.
    for _ in 0..2 {
        assert_eq!(vec2(&m.forward(&x, &mut hooks.hx())?), [[30., 40.]]);
    }
    Ok(())
}

// ---- selection -------------------------------------------------------------------------------

#[derive(Hookable)]
struct Block {
    lin: Linear,
    hook_out: HookPoint,
}

impl Block {
    fn forward(&self, x: &Tensor, hx: &mut Hx<Self>) -> Result<Tensor> {
        let h = hook!(hx, self.lin(x))?.tanh()?;
        let h = (x + h)?;
        hook!(hx, self.hook_out(&h))
    }
}

#[derive(Hookable)]
struct Deep {
    embed: Linear,
    h: Vec<Block>,
    head: Linear,
}

impl Deep {
    fn new(blocks: usize) -> Self {
        let l = |k: usize| {
            let k = k as f32;
            lin(
                &[
                    &[0.5 + 0.01 * k, -0.25, 0.125],
                    &[0.1, 0.3 - 0.02 * k, -0.2],
                    &[-0.4, 0.2, 0.6 + 0.03 * k],
                ],
                &[0.01 * k, -0.02, 0.03],
            )
        };
        Deep {
            embed: l(100),
            h: (0..blocks)
                .map(|k| Block {
                    lin: l(k),
                    hook_out: HookPoint,
                })
                .collect(),
            head: l(200),
        }
    }

    fn forward(&self, x: &Tensor, hx: &mut Hx<Self>) -> Result<Tensor> {
        let mut x = hook!(hx, self.embed(x))?;
        for i in 0..self.h.len() {
            x = hook!(hx, self.h[i].forward(&x))?;
        }
        hook!(hx, self.head(&x))
    }
}

fn x3() -> Tensor {
    t2(&[&[1.0, -0.5, 0.25], &[0.3, 0.7, -1.1]])
}

#[test]
fn patterns_are_full_match_so_h_1_does_not_select_h_10() -> tdhook::Result<()> {
    let m = Deep::new(12);
    let hooks = HookSet::new(&m);
    assert_eq!(hooks.resolve_paths("h.1")?, ["h.1"]);
    assert_eq!(hooks.resolve_paths(r"h\.1\.lin")?, ["h.1.lin"]);
    assert_eq!(
        hooks.resolve_paths(r"h\.1\d*")?,
        ["h.1", "h.10", "h.11"],
        "a prefix match must be asked for"
    );
    assert_eq!(hooks.resolve_paths(r"h\.1.*")?.len(), 3 * 3);
    // Typed paths are exact too.
    assert_eq!(hooks.resolve_paths(Deep::path().h(1))?, ["h.1"]);

    let fired = RefCell::new(Vec::<String>::new());
    let mut hooks = HookSet::new(&m);
    hooks.read("h.1", Direction::Fwd, |ev, _| {
        fired.borrow_mut().push(ev.path.to_string());
        Ok(())
    })?;
    hooks.run(|hx| m.forward(&x3(), hx))?;
    drop(hooks);
    assert_eq!(fired.into_inner(), ["h.1"]);
    Ok(())
}

#[test]
fn a_pattern_matching_nothing_is_no_match_listing_the_nearest_paths() {
    let m = Deep::new(3);
    let mut hooks = HookSet::new(&m);
    let err = hooks
        .read(r"h\.0\.linn", Direction::Fwd, |_, _| Ok(()))
        .unwrap_err();
    match &err {
        Error::NoMatch {
            what,
            pattern,
            full_match,
            nearest,
        } => {
            assert_eq!(*what, "pattern");
            assert_eq!(pattern, r"h\.0\.linn");
            assert!(*full_match);
            assert!(!nearest.is_empty() && nearest.len() <= 5, "{nearest:?}");
            assert!(nearest.iter().any(|p| p == "h.0.lin"), "{nearest:?}");
            let all = m.hook_paths();
            assert!(
                nearest.iter().all(|p| all.contains(p)),
                "only real paths: {nearest:?}"
            );
        }
        other => panic!("expected NoMatch, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("`h.0.lin`"), "{msg}");
    assert!(msg.contains("must match the whole path"), "{msg}");
    assert!(hooks.is_empty(), "a failed registration adds nothing");

    // An exact path that does not exist.
    let err = hooks.grad(HookPath::from("h.7.lin")).unwrap_err();
    match &err {
        Error::NoMatch {
            what,
            full_match,
            nearest,
            ..
        } => {
            assert_eq!(*what, "path");
            assert!(!full_match);
            assert!(nearest.iter().any(|p| p.starts_with("h.")), "{nearest:?}");
        }
        other => panic!("expected NoMatch, got {other:?}"),
    }
    // A class filter that removes every match is no match either.
    let sel = Selector::regex(r"h\.0\.lin").classes_to_skip(["Linear"]);
    assert!(matches!(hooks.resolve(sel), Err(Error::NoMatch { .. })));
    // An invalid regex says so.
    assert!(matches!(
        hooks.resolve("h.(0"),
        Err(Error::BadPattern { .. })
    ));
}

#[test]
fn a_pattern_matching_only_list_points_is_only_lists() {
    let m = Deep::new(2);
    let mut hooks = HookSet::new(&m);
    let err = hooks.add("h", Direction::Fwd, |_, _| Ok(None)).unwrap_err();
    match &err {
        Error::OnlyLists { pattern, paths } => {
            assert_eq!(pattern, "h");
            assert_eq!(paths, &["h"]);
        }
        other => panic!("expected OnlyLists, got {other:?}"),
    }
    assert!(err.to_string().contains("`h.0`"), "{err}");
    // With modules among the matches, the list is dropped silently.
    assert_eq!(hooks.resolve_paths("h|h.0").unwrap(), ["h.0"]);
}

#[test]
fn absolute_sets_prefix_every_path_with_module() -> tdhook::Result<()> {
    let m = Deep::new(2);
    let mut seen = Vec::new();
    let rel = HookSet::new(&m);
    let mut abs = HookSet::absolute(&m);
    let rel_paths: Vec<String> = rel.points().iter().map(|p| p.path.clone()).collect();
    let abs_paths: Vec<String> = abs.points().iter().map(|p| p.path.clone()).collect();
    assert_eq!(
        abs_paths,
        rel_paths
            .iter()
            .map(|p| format!("module.{p}"))
            .collect::<Vec<_>>()
    );
    assert!(matches!(abs.resolve("h.0.lin"), Err(Error::NoMatch { .. })));
    abs.read(r"module\.h\.1\.lin", Direction::Fwd, |ev, _| {
        seen.push(ev.path.to_string());
        Ok(())
    })?;
    abs.run(|hx| m.forward(&x3(), hx))?;
    drop(abs);
    assert_eq!(seen, ["module.h.1.lin"]);
    Ok(())
}

#[test]
fn remove_takes_a_hook_out() -> tdhook::Result<()> {
    let m = Two::new();
    let count = RefCell::new(0);
    let mut hooks = HookSet::new(&m);
    let zero = hooks.add("a", Direction::Fwd, |_, t| Ok(Some(t.zeros_like()?)))?;
    let counter = hooks.read("a|b", Direction::Fwd, |_, _| {
        *count.borrow_mut() += 1;
        Ok(())
    })?;
    assert_ne!(zero, counter);
    // b(0) = [0, 1].
    assert_eq!(vec2(&hooks.run(|hx| m.forward(&ones(), hx))?), [[0., 1.]]);
    assert_eq!(*count.borrow(), 2);

    assert!(hooks.remove(zero));
    assert!(!hooks.remove(zero), "removing twice reports it is gone");
    assert_eq!(vec2(&hooks.run(|hx| m.forward(&ones(), hx))?), [[-3., 14.]]);
    assert_eq!(*count.borrow(), 4);

    assert!(hooks.remove(counter));
    assert!(hooks.is_empty());
    let active = hooks.run(|hx| {
        let active = hx.is_active();
        m.forward(&ones(), hx).map(|y| (active, y))
    })?;
    assert!(!active.0, "no hooks left: the plain context");
    assert_eq!(vec2(&active.1), [[-3., 14.]]);
    drop(hooks);
    assert_eq!(*count.borrow(), 4);
    Ok(())
}

#[test]
fn hooks_borrow_local_mutable_state() -> tdhook::Result<()> {
    let m = Deep::new(4);
    let x = x3();
    let mut count = 0usize;
    let mut norms: Vec<(String, f32)> = Vec::new();
    // Replacements handed out from a local queue, one per call.
    let mut queue: Vec<f64> = vec![0.0, 1.0];
    {
        let mut hooks = HookSet::new(&m);
        hooks.read(r"h\.\d+\.lin", Direction::Fwd, |_, _| {
            count += 1;
            Ok(())
        })?;
        hooks.read(r"h\.\d+\.hook_out", Direction::Fwd, |ev, t| {
            norms.push((ev.path.to_string(), t.sqr()?.sum_all()?.to_scalar::<f32>()?));
            Ok(())
        })?;
        hooks.add(r"h\.[23]\.lin", Direction::Fwd, |_, t| {
            let s = queue.pop().expect("one scale per call");
            Ok(Some((t * s)?))
        })?;
        hooks.run(|hx| m.forward(&x, hx))?;
    }
    assert_eq!(count, 4);
    assert_eq!(
        norms.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(),
        [
            "h.0.hook_out",
            "h.1.hook_out",
            "h.2.hook_out",
            "h.3.hook_out"
        ]
    );
    assert!(queue.is_empty());
    // h.2.lin was scaled by 1 (popped first), h.3.lin by 0: block 3 adds tanh(0) = 0.
    let last_two: Vec<f32> = norms[2..].iter().map(|(_, n)| *n).collect();
    assert_eq!(last_two[0], last_two[1], "block 3 passed its input through");
    Ok(())
}

// ---- threads ---------------------------------------------------------------------------------

/// A run's output and the block outputs it cached.
type RunOut = (Vec<Vec<f32>>, Vec<Vec<Vec<f32>>>);

/// A steering run: h.3.lin's output doubled; caches every block output.
fn steer_run(m: &Deep, x: &Tensor) -> tdhook::Result<RunOut> {
    let mut cache = Vec::new();
    let mut hooks = HookSet::new(m);
    hooks.add(Deep::path().h(3).lin(), Direction::Fwd, |_, t| {
        Ok(Some((t * 2.0)?))
    })?;
    hooks.read(r"h\.\d+", Direction::Fwd, |_, t| {
        cache.push(vec2(t));
        Ok(())
    })?;
    let y = hooks.run(|hx| m.forward(x, hx))?;
    drop(hooks);
    Ok((vec2(&y), cache))
}

/// An ablation run: h.7's output zeroed before it reaches the rest.
fn ablate_run(m: &Deep, x: &Tensor) -> tdhook::Result<RunOut> {
    let mut hooks = HookSet::new(m);
    hooks.add(Deep::path().h(7).hook_out(), Direction::Fwd, |_, t| {
        Ok(Some(t.zeros_like()?))
    })?;
    let y = hooks.run(|hx| m.forward(x, hx))?;
    Ok((vec2(&y), vec![]))
}

#[test]
fn threads_running_one_model_with_different_hooks_get_their_serial_results() {
    let m = Deep::new(10);
    let x = x3();
    let plain = vec2(&m.forward(&x, &mut Hx::none()).unwrap());
    let steer = steer_run(&m, &x).unwrap();
    let ablate = ablate_run(&m, &x).unwrap();
    assert_ne!(steer.0, plain);
    assert_ne!(ablate.0, plain);
    assert_ne!(steer.0, ablate.0);
    assert_eq!(steer.1.len(), 10);

    std::thread::scope(|s| {
        let (m, x) = (&m, &x);
        let a = s.spawn(|| {
            for _ in 0..25 {
                assert_eq!(steer_run(m, x).unwrap(), steer);
            }
        });
        let b = s.spawn(|| {
            for _ in 0..25 {
                assert_eq!(ablate_run(m, x).unwrap(), ablate);
            }
        });
        let c = s.spawn(|| {
            for _ in 0..25 {
                assert_eq!(vec2(&m.forward(x, &mut Hx::none()).unwrap()), plain);
            }
        });
        a.join().unwrap();
        b.join().unwrap();
        c.join().unwrap();
    });

    // The same with an `Arc` and owned threads.
    let shared = Arc::new(m);
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let m = Arc::clone(&shared);
            let x = x.clone();
            std::thread::spawn(move || {
                (0..10)
                    .map(|_| {
                        if i % 2 == 0 {
                            steer_run(&m, &x).unwrap()
                        } else {
                            ablate_run(&m, &x).unwrap()
                        }
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        let want = if i % 2 == 0 { &steer } else { &ablate };
        for got in h.join().unwrap() {
            assert_eq!(&got, want);
        }
    }
}

// ---- gradients -------------------------------------------------------------------------------

fn lin64(w: &[[f64; 3]; 3], b: [f64; 3]) -> Linear {
    let dev = Device::Cpu;
    let w: Vec<f64> = w.iter().flatten().copied().collect();
    Linear::new(
        Tensor::from_vec(w, (3, 3), &dev).unwrap(),
        Some(Tensor::new(&b, &dev).unwrap()),
    )
}

fn x64() -> Tensor {
    Tensor::new(&[[0.3f64, -0.7, 1.1], [0.9, 0.2, -0.4]], &Device::Cpu).unwrap()
}

/// `y = b(tanh(a(x)))`; the aux branch `c(x)` is computed but the loss never uses it.
#[derive(Hookable)]
struct GradNet {
    a: Linear,
    b: Linear,
    c: Linear,
}

impl GradNet {
    fn new() -> Self {
        GradNet {
            a: lin64(
                &[[0.5, -0.3, 0.8], [0.1, 0.9, -0.6], [-0.7, 0.4, 0.2]],
                [0.1, -0.2, 0.05],
            ),
            b: lin64(
                &[[1.2, -0.5, 0.3], [-0.8, 0.6, 0.9], [0.4, 0.7, -1.1]],
                [0.0, 0.3, -0.1],
            ),
            c: lin64(
                &[[0.2, 0.2, 0.2], [0.3, -0.3, 0.1], [1.0, 0.0, -1.0]],
                [0.0, 0.0, 0.0],
            ),
        }
    }

    /// Returns `(y, aux)`.
    fn forward(&self, x: &Tensor, hx: &mut Hx<Self>) -> Result<(Tensor, Tensor)> {
        let h = hook!(hx, self.a(x))?.tanh()?;
        let y = hook!(hx, self.b(&h))?;
        let aux = hook!(hx, self.c(x))?;
        Ok((y, aux))
    }
}

/// loss = Σ y².
fn loss_of(y: &Tensor) -> Result<Tensor> {
    y.sqr()?.sum_all()
}

/// `(path, occurrence, gradient)` records.
type Grads = Vec<(String, usize, Tensor)>;

fn grads_by_path(hooks: &HookSet) -> Grads {
    let mut g: Grads = hooks
        .take_grads()
        .into_iter()
        .map(|r| (r.path, r.occurrence, r.grad))
        .collect();
    g.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    g
}

#[test]
fn recorded_gradients_equal_the_analytic_and_finite_difference_ones() -> tdhook::Result<()> {
    let m = GradNet::new();
    let x = x64();
    let mut hooks = HookSet::new(&m);
    hooks.grad(r"a|b|c")?;
    let (y, _aux) = hooks.run(|hx| m.forward(&x, hx))?;
    loss_of(&y)?.backward()?;
    let g = grads_by_path(&hooks);
    let paths: Vec<&str> = g.iter().map(|(p, _, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        ["a", "b"],
        "c is off the loss's path: nothing recorded"
    );
    assert!(g.iter().all(|(_, o, _)| *o == 0));

    // By hand: dL/dy = 2y; dL/dh = dL/dy · W_b; dL/da = dL/dh ⊙ (1 − tanh²(a)).
    let a_out = m.a.forward(&x)?;
    let h = a_out.tanh()?;
    let y_hand = m.b.forward(&h)?;
    assert!(max_abs_diff(&y, &y_hand) < 1e-12);
    let g_y = (&y_hand * 2.0)?;
    let g_h = g_y.matmul(m.b.weight())?;
    let g_a = (&g_h * (1.0 - h.sqr()?)?)?;
    assert!(max_abs_diff(&g[1].2, &g_y) < 1e-12);
    assert!(max_abs_diff(&g[0].2, &g_a) < 1e-12);

    // Finite differences at `a`'s output, through a Fwd hook that nudges one entry.
    let eps = 1e-6;
    let loss_with = |delta: Option<(usize, usize, f64)>| -> tdhook::Result<f64> {
        let mut hooks = HookSet::new(&m);
        hooks.add("a", Direction::Fwd, move |_, t| {
            let Some((i, j, d)) = delta else {
                return Ok(None);
            };
            let mut v = t.to_vec2::<f64>()?;
            v[i][j] += d;
            Ok(Some(Tensor::new(v, t.device())?))
        })?;
        let (y, _) = hooks.run(|hx| m.forward(&x, hx))?;
        Ok(loss_of(&y)?.to_scalar::<f64>()?)
    };
    let g_a = g[0].2.to_vec2::<f64>()?;
    for (i, row) in g_a.iter().enumerate() {
        for (j, &want) in row.iter().enumerate() {
            let fd = (loss_with(Some((i, j, eps)))? - loss_with(Some((i, j, -eps)))?) / (2.0 * eps);
            assert!((fd - want).abs() < 1e-6, "({i}, {j}): fd {fd} vs {want}");
        }
    }
    assert!(hooks.take_grads().is_empty(), "take_grads drains");
    Ok(())
}

/// `loss = Σ (a² + 3a)`: the hooked output used twice downstream.
#[derive(Hookable)]
struct UsedTwice {
    a: Linear,
}

#[test]
fn a_gradient_sums_over_every_downstream_use() -> tdhook::Result<()> {
    let m = UsedTwice {
        a: GradNet::new().a,
    };
    let x = x64();
    let mut hooks = HookSet::new(&m);
    hooks.grad("a")?;
    let a_out = hooks.run(|hx| hook!(hx, m.a(&x)))?;
    let loss = ((a_out.sqr()? + (&a_out * 3.0)?)?).sum_all()?;
    loss.backward()?;
    let g = hooks.take_grads();
    assert_eq!(g.len(), 1, "one record, the summed gradient");
    let want = ((m.a.forward(&x)? * 2.0)? + 3.0)?;
    assert!(max_abs_diff(&g[0].grad, &want) < 1e-12);
    Ok(())
}

/// Two branches off one (variable) input: `loss = Σ p(x) ⊙ q(x)`.
#[derive(Hookable)]
struct Branches {
    p: Linear,
    q: Linear,
}

#[test]
fn gradients_on_two_parallel_branches_and_the_input() -> tdhook::Result<()> {
    let net = GradNet::new();
    let m = Branches { p: net.a, q: net.b };
    let x = Var::from_tensor(&x64())?;
    let mut hooks = HookSet::new(&m);
    hooks.grad("p|q")?;
    let (p, q) = hooks.run(|hx| {
        let p = hook!(hx, m.p(x.as_tensor()))?;
        let q = hook!(hx, m.q(x.as_tensor()))?;
        Ok((p, q))
    })?;
    let store = (&p * &q)?.sum_all()?.backward()?;
    let g = grads_by_path(&hooks);
    assert_eq!(g.len(), 2);
    assert_eq!((g[0].0.as_str(), g[1].0.as_str()), ("p", "q"));
    // d/dp = q, d/dq = p.
    assert!(max_abs_diff(&g[0].2, &q) < 1e-12);
    assert!(max_abs_diff(&g[1].2, &p) < 1e-12);
    // The probes pass the gradient on unchanged: d/dx = q · W_p + p · W_q.
    let want_x = (q.matmul(m.p.weight())? + p.matmul(m.q.weight())?)?;
    let got_x = store.get(x.as_tensor()).expect("x has a gradient");
    assert!(max_abs_diff(got_x, &want_x) < 1e-12);
    Ok(())
}

#[test]
fn a_grad_hook_that_replaces_the_gradient_changes_what_flows_upstream() -> tdhook::Result<()> {
    let m = GradNet::new();
    let x = Var::from_tensor(&x64())?;
    let run = |scale: Option<f64>| -> tdhook::Result<(Tensor, Grads)> {
        let mut hooks = HookSet::new(&m);
        hooks.grad("a|b")?;
        if let Some(s) = scale {
            hooks.grad_hook("b", move |ev, g| {
                assert_eq!(ev.direction, Direction::Bwd);
                assert_eq!(ev.path, "b");
                Ok(Some((g * s)?))
            })?;
        }
        let (y, _) = hooks.run(|hx| m.forward(x.as_tensor(), hx))?;
        let store = loss_of(&y)?.backward()?;
        let gx = store.get(x.as_tensor()).expect("x has a gradient").clone();
        assert!(hooks.take_grad_error().is_none());
        Ok((gx, grads_by_path(&hooks)))
    };
    let (gx, g) = run(None)?;
    let (gx0, g0) = run(Some(0.0))?;
    let (gx2, g2) = run(Some(2.0))?;
    assert!(gx.abs()?.sum_all()?.to_scalar::<f64>()? > 1e-3);
    // Scaled by 0: nothing reaches `a` or the input.
    assert_eq!(gx0.abs()?.sum_all()?.to_scalar::<f64>()?, 0.0);
    assert_eq!(g0[0].2.abs()?.sum_all()?.to_scalar::<f64>()?, 0.0);
    // Scaled by 2: twice the gradient upstream; `b` records the replaced gradient.
    assert!(max_abs_diff(&gx2, &(&gx * 2.0)?) < 1e-12);
    assert!(max_abs_diff(&g2[0].2, &(&g[0].2 * 2.0)?) < 1e-12);
    assert!(max_abs_diff(&g2[1].2, &(&g[1].2 * 2.0)?) < 1e-12);
    Ok(())
}

#[test]
fn a_grad_hook_returning_the_wrong_shape_fails_backward_with_its_error() -> tdhook::Result<()> {
    let m = GradNet::new();
    let mut hooks = HookSet::new(&m);
    hooks.grad_hook("b", |_, g| Ok(Some(g.flatten_all()?)))?;
    let (y, _) = hooks.run(|hx| m.forward(&x64(), hx))?;
    assert!(loss_of(&y)?.backward().is_err());
    match hooks.take_grad_error() {
        Some(Error::ShapeMismatch { path, .. }) => assert_eq!(path, "b"),
        other => panic!("expected ShapeMismatch, got {other:?}"),
    }
    Ok(())
}
