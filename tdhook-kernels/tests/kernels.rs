//! tdhook-kernels: every CPU kernel against the naive candle op chain it replaces (random
//! shapes, odd sizes, non-contiguous views), gradients of the out-of-place ops against
//! candle autograd of the naive chain, probe training at the optimum, and (with
//! `--features cuda`) GPU against CPU.

use std::ops::Range;

use candle_core::{D, DType, Device, IndexOp, Tensor, Var};
use proptest::prelude::*;
use tdhook_kernels::{
    LogisticConfig, Positions, Rows, ablate, ablate_, mean_difference_probes,
    norm_preserving_steer, norm_preserving_steer_, patch, patch_, ridge_probes, steer_add,
    steer_add_, train_logistic_probes,
};

type Res<T> = candle_core::Result<T>;

// ------------------------------------------------------------------------------------------
// helpers
// ------------------------------------------------------------------------------------------

/// Deterministic uniform(-1, 1) numbers (xorshift64*).
fn rand_vec(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            let r = s.wrapping_mul(0x2545_F491_4F6C_DD1D);
            ((r >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn rand_t(seed: u64, shape: &[usize], dev: &Device) -> Res<Tensor> {
    Tensor::from_vec(rand_vec(seed, shape.iter().product()), shape, dev)
}

/// How a `[B, T, D]` operand is laid out in memory.
#[derive(Clone, Copy, Debug)]
enum View {
    Contiguous,
    /// stored `[B, D, T]`, transposed: the last dim has stride T
    TransposedLast,
    /// stored `[T, B, D]`, transposed: batch and time swapped
    TransposedBatch,
    /// narrowed out of a larger `[B+1, T+2, D+3]` tensor
    Narrowed,
}

const VIEWS: [View; 4] = [
    View::Contiguous,
    View::TransposedLast,
    View::TransposedBatch,
    View::Narrowed,
];

/// A `[B, T, D]` view of a fresh base tensor, with the base.
fn make_view(
    view: View,
    seed: u64,
    b: usize,
    t: usize,
    d: usize,
    dev: &Device,
) -> Res<(Tensor, Tensor)> {
    Ok(match view {
        View::Contiguous => {
            let x = rand_t(seed, &[b, t, d], dev)?;
            (x.clone(), x)
        }
        View::TransposedLast => {
            let base = rand_t(seed, &[b, d, t], dev)?;
            (base.clone(), base.transpose(1, 2)?)
        }
        View::TransposedBatch => {
            let base = rand_t(seed, &[t, b, d], dev)?;
            (base.clone(), base.transpose(0, 1)?)
        }
        View::Narrowed => {
            let base = rand_t(seed, &[b + 1, t + 2, d + 3], dev)?;
            (
                base.clone(),
                base.narrow(0, 1, b)?.narrow(1, 1, t)?.narrow(2, 2, d)?,
            )
        }
    })
}

/// The base tensor after writing `new_view` into the view's place.
fn expected_base(view: View, base_before: &Tensor, new_view: &Tensor) -> Res<Tensor> {
    let (b, t, d) = new_view.dims3()?;
    Ok(match view {
        View::Contiguous => new_view.clone(),
        View::TransposedLast => new_view.transpose(1, 2)?.contiguous()?,
        View::TransposedBatch => new_view.transpose(0, 1)?.contiguous()?,
        View::Narrowed => {
            base_before.slice_assign(&[1..1 + b, 1..1 + t, 2..2 + d], &new_view.contiguous()?)?
        }
    })
}

fn max_err(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    let a = a
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let b = b
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs() / y.abs().max(1.0))
        .fold(0.0, f32::max)
}

fn assert_close(what: &str, got: &Tensor, want: &Tensor, tol: f32) {
    let e = max_err(got, want);
    assert!(e <= tol, "{what}: max relative error {e} > {tol}");
}

/// Naive: the per-(b, t) mask as an f32 `[B, T]` tensor.
fn pos_mask(p: &Positions, b: usize, t: usize, dev: &Device) -> Res<Tensor> {
    let v: Vec<f32> = match p {
        Positions::All => vec![1.0; b * t],
        Positions::Range(r) => (0..b * t)
            .map(|i| if r.contains(&(i % t)) { 1.0 } else { 0.0 })
            .collect(),
        Positions::Mask(m) if m.len() == t => (0..b * t).map(|i| m[i % t] as u8 as f32).collect(),
        Positions::Mask(m) => m.iter().map(|&x| x as u8 as f32).collect(),
        other => panic!("the naive reference does not know {other:?} yet: extend it"),
    };
    Tensor::from_vec(v, (b, t), dev)
}

/// Naive steer-add: `x + (mask·coef)[b, t] · vecs[idx[b]]`.
fn naive_steer(x: &Tensor, vecs: &Tensor, alpha: f64, p: &Positions, rows: &Rows) -> Res<Tensor> {
    let (b, t, d) = x.dims3()?;
    let dev = x.device();
    let vecs = if vecs.rank() == 1 {
        vecs.unsqueeze(0)?
    } else {
        vecs.contiguous()?
    };
    let (sel, coef): (Tensor, Vec<f32>) = match rows {
        Rows::All => (
            vecs.i(0)?
                .unsqueeze(0)?
                .broadcast_as((b, d))?
                .contiguous()?,
            vec![1.0; b],
        ),
        Rows::PerRow { index, coef } => {
            let idx: Vec<u32> = index.iter().map(|i| i.unwrap_or(0) as u32).collect();
            let c: Vec<f32> = index
                .iter()
                .zip(coef)
                .map(|(i, c)| if i.is_some() { *c } else { 0.0 })
                .collect();
            (vecs.index_select(&Tensor::new(idx, dev)?, 0)?, c)
        }
        other => panic!("the naive reference does not know {other:?} yet: extend it"),
    };
    let c = Tensor::from_vec(coef, (b, 1), dev)?
        .broadcast_mul(&pos_mask(p, b, t, dev)?)?
        .affine(alpha, 0.0)?;
    x.broadcast_add(&c.unsqueeze(2)?.broadcast_mul(&sel.unsqueeze(1)?)?)
}

/// Naive patch: `where(region, (1 − α)·x + α·src, x)`.
fn naive_patch(
    x: &Tensor,
    src: &Tensor,
    p: &Positions,
    ch: Range<usize>,
    alpha: f64,
) -> Res<Tensor> {
    let (b, t, d) = x.dims3()?;
    let dev = x.device();
    let chans: Vec<f32> = (0..d)
        .map(|c| if ch.contains(&c) { 1.0 } else { 0.0 })
        .collect();
    let region = pos_mask(p, b, t, dev)?
        .unsqueeze(2)?
        .broadcast_mul(&Tensor::from_vec(chans, (1, 1, d), dev)?)?
        .ne(0f32)?;
    let mixed = ((x * (1.0 - alpha))? + (src.broadcast_as(x.shape())? * alpha)?)?;
    region.where_cond(&mixed, x)
}

fn naive_ablate(x: &Tensor, u: &Tensor) -> Res<Tensor> {
    let uh = u.broadcast_div(&u.sqr()?.sum_all()?.sqrt()?)?;
    let proj = x.broadcast_mul(&uh)?.sum_keepdim(D::Minus1)?;
    x - proj.broadcast_mul(&uh)?
}

fn naive_nps(x: &Tensor, v: &Tensor, alpha: f64) -> Res<Tensor> {
    let y = x.broadcast_add(&(v * alpha)?)?;
    let nx = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
    let ny = y.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
    y.broadcast_mul(&(nx / ny)?)
}

// ------------------------------------------------------------------------------------------
// strategies
// ------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Case {
    b: usize,
    t: usize,
    d: usize,
    seed: u64,
    view: View,
    src_view: View,
    positions: Positions,
    rows_kind: u8,
    alpha: f64,
    ch: Range<usize>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        1usize..5,
        1usize..10,
        1usize..75,
        any::<u64>(),
        0usize..4,
        0usize..4,
        0u8..4,
        0u8..3,
        -3.0f64..3.0,
    )
        .prop_flat_map(|(b, t, d, seed, v, sv, pk, rk, alpha)| {
            let positions = match pk {
                0 => Just(Positions::All).boxed(),
                1 => (0..=t)
                    .prop_flat_map(move |s| (s..=t).prop_map(move |e| Positions::Range(s..e)))
                    .boxed(),
                2 => proptest::collection::vec(any::<bool>(), t)
                    .prop_map(Positions::Mask)
                    .boxed(),
                _ => proptest::collection::vec(any::<bool>(), b * t)
                    .prop_map(Positions::Mask)
                    .boxed(),
            };
            let ch = (0..=d).prop_flat_map(move |lo| (lo..=d).prop_map(move |hi| lo..hi));
            (positions, ch).prop_map(move |(positions, ch)| Case {
                b,
                t,
                d,
                seed,
                view: VIEWS[v],
                src_view: VIEWS[sv],
                positions,
                rows_kind: rk,
                alpha,
                ch,
            })
        })
}

fn rows_for(c: &Case, n_vecs: usize) -> Rows {
    match c.rows_kind {
        0 => Rows::All,
        _ => {
            let r = rand_vec(c.seed ^ 0xABCD, 2 * c.b);
            Rows::per_row((0..c.b).map(|i| {
                let pick = ((r[2 * i] + 1.0) * 0.5 * (n_vecs as f32 + 1.0)) as usize;
                if pick >= n_vecs || c.rows_kind == 2 && i % 2 == 1 {
                    None
                } else {
                    Some((pick, r[2 * i + 1] * 2.0))
                }
            }))
        }
    }
}

fn check_steer(c: &Case, dev: &Device) -> Res<()> {
    let n_vecs = 3;
    // odd seeds: the vectors are a strided (transposed) view
    let vecs = if c.seed % 2 == 1 {
        rand_t(c.seed ^ 7, &[c.d, n_vecs], dev)?.t()?
    } else {
        rand_t(c.seed ^ 7, &[n_vecs, c.d], dev)?
    };
    let rows = rows_for(c, n_vecs);
    let (base, x) = make_view(c.view, c.seed, c.b, c.t, c.d, dev)?;
    let want = naive_steer(&x, &vecs, c.alpha, &c.positions, &rows)?;
    // out of place
    let got = steer_add(&x, &vecs, c.alpha, &c.positions, &rows)?;
    assert_close("steer_add", &got, &want, 1e-5);
    // in place, through the view
    let before = base.copy()?;
    steer_add_(&x, &vecs, c.alpha, &c.positions, &rows)?;
    assert_close("steer_add_ (view)", &x, &want, 1e-5);
    assert_close(
        "steer_add_ (base)",
        &base,
        &expected_base(c.view, &before, &want)?,
        1e-5,
    );
    // a single [D] vector with Rows::All
    if c.rows_kind == 0 {
        let v = vecs.i(1)?;
        let got = steer_add(&x, &v, c.alpha, &c.positions, &Rows::All)?;
        assert_close(
            "steer_add [D]",
            &got,
            &naive_steer(&x, &v, c.alpha, &c.positions, &Rows::All)?,
            1e-5,
        );
    }
    Ok(())
}

fn check_patch(c: &Case, dev: &Device) -> Res<()> {
    let (base, x) = make_view(c.view, c.seed, c.b, c.t, c.d, dev)?;
    let (_, src) = make_view(c.src_view, c.seed ^ 99, c.b, c.t, c.d, dev)?;
    let alpha = if c.rows_kind == 0 { 1.0 } else { c.alpha };
    let want = naive_patch(&x, &src, &c.positions, c.ch.clone(), alpha)?;
    let got = patch(&x, &src, &c.positions, Some(c.ch.clone()), alpha)?;
    assert_close("patch", &got, &want, 1e-5);
    let before = base.copy()?;
    patch_(&x, &src, &c.positions, Some(c.ch.clone()), alpha)?;
    assert_close("patch_ (view)", &x, &want, 1e-5);
    assert_close(
        "patch_ (base)",
        &base,
        &expected_base(c.view, &before, &want)?,
        1e-5,
    );
    // src broadcast over the batch ([T, D])
    let src2 = rand_t(c.seed ^ 5, &[c.t, c.d], dev)?;
    let got = patch(&x, &src2, &c.positions, Some(c.ch.clone()), alpha)?;
    assert_close(
        "patch (broadcast src)",
        &got,
        &naive_patch(&x, &src2, &c.positions, c.ch.clone(), alpha)?,
        1e-5,
    );
    Ok(())
}

fn check_ablate_nps(c: &Case, dev: &Device) -> Res<()> {
    // odd seeds: the direction is a column of a matrix (stride 2)
    let u = if c.seed % 2 == 1 {
        rand_t(c.seed ^ 3, &[c.d, 2], dev)?.i((.., 1))?
    } else {
        rand_t(c.seed ^ 3, &[c.d], dev)?
    };
    let (base, x) = make_view(c.view, c.seed, c.b, c.t, c.d, dev)?;
    let want = naive_ablate(&x, &u)?;
    assert_close("ablate", &ablate(&x, &u)?, &want, 1e-5);
    let want_nps = naive_nps(&x, &u, c.alpha)?;
    assert_close(
        "norm_preserving_steer",
        &norm_preserving_steer(&x, &u, c.alpha)?,
        &want_nps,
        1e-5,
    );
    let before = base.copy()?;
    ablate_(&x, &u)?;
    assert_close("ablate_ (view)", &x, &want, 1e-5);
    assert_close(
        "ablate_ (base)",
        &base,
        &expected_base(c.view, &before, &want)?,
        1e-5,
    );
    // in-place NPS on a fresh view
    let (base, x) = make_view(c.view, c.seed, c.b, c.t, c.d, dev)?;
    let before = base.copy()?;
    norm_preserving_steer_(&x, &u, c.alpha)?;
    assert_close("norm_preserving_steer_ (view)", &x, &want_nps, 1e-5);
    assert_close(
        "norm_preserving_steer_ (base)",
        &base,
        &expected_base(c.view, &before, &want_nps)?,
        1e-5,
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 48,
        // no regression files: the GPU machine runs this binary outside the source tree
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn steer_add_matches_naive(c in case()) {
        check_steer(&c, &Device::Cpu).unwrap();
    }

    #[test]
    fn patch_matches_naive(c in case()) {
        check_patch(&c, &Device::Cpu).unwrap();
    }

    #[test]
    fn ablate_and_norm_preserving_match_naive(c in case()) {
        check_ablate_nps(&c, &Device::Cpu).unwrap();
    }
}

/// Shapes above the rayon threshold, every view.
#[test]
fn large_shapes_multithreaded() -> Res<()> {
    for (i, &view) in VIEWS.iter().enumerate() {
        let c = Case {
            b: 3,
            t: 67,
            d: 389,
            seed: 1000 + i as u64,
            view,
            src_view: VIEWS[(i + 1) % 4],
            positions: if i % 2 == 0 {
                Positions::Range(3..60)
            } else {
                Positions::Mask((0..3 * 67).map(|j| j % 3 != 0).collect())
            },
            rows_kind: (i % 3) as u8,
            alpha: 1.7,
            ch: 5..300,
        };
        check_steer(&c, &Device::Cpu)?;
        check_patch(&c, &Device::Cpu)?;
        check_ablate_nps(&c, &Device::Cpu)?;
    }
    Ok(())
}

/// Rank 2 `[T, D]` and rank 4 `[A, B, T, D]` activations.
#[test]
fn other_ranks() -> Res<()> {
    let dev = Device::Cpu;
    let x2 = rand_t(1, &[5, 9], &dev)?;
    let v = rand_t(2, &[9], &dev)?;
    let got = steer_add(&x2, &v, 0.5, &Positions::Range(1..4), &Rows::All)?;
    let want = naive_steer(
        &x2.unsqueeze(0)?,
        &v,
        0.5,
        &Positions::Range(1..4),
        &Rows::All,
    )?
    .squeeze(0)?;
    assert_close("steer rank 2", &got, &want, 1e-5);
    let x4 = rand_t(3, &[2, 3, 4, 9], &dev)?.transpose(1, 2)?; // [2, 4, 3, 9] non-contiguous
    let got = ablate(&x4, &v)?;
    assert_close("ablate rank 4", &got, &naive_ablate(&x4, &v)?, 1e-5);
    let got = steer_add(
        &x4,
        &v,
        1.0,
        &Positions::Mask(vec![true, false, true]),
        &Rows::All,
    )?;
    let want = naive_steer(
        &x4.reshape((8, 3, 9))?,
        &v,
        1.0,
        &Positions::Mask(vec![true, false, true]),
        &Rows::All,
    )?;
    assert_close("steer rank 4", &got, &want.reshape((2, 4, 3, 9))?, 1e-5);
    Ok(())
}

#[test]
fn half_precision() -> Res<()> {
    let dev = Device::Cpu;
    for dt in [DType::F16, DType::BF16] {
        let x32 = rand_t(11, &[2, 5, 33], &dev)?;
        let x = x32.to_dtype(dt)?;
        let v = rand_t(12, &[33], &dev)?;
        let tol = if dt == DType::F16 { 2e-3 } else { 1.6e-2 };
        let xr = x.to_dtype(DType::F32)?; // the rounded input
        let p = Positions::Range(1..4);
        assert_close(
            "steer f16/bf16",
            &steer_add(&x, &v, 1.5, &p, &Rows::All)?,
            &naive_steer(&xr, &v, 1.5, &p, &Rows::All)?,
            tol,
        );
        assert_close(
            "ablate f16/bf16",
            &ablate(&x, &v)?,
            &naive_ablate(&xr, &v)?,
            tol,
        );
        assert_close(
            "nps f16/bf16",
            &norm_preserving_steer(&x, &v, 1.5)?,
            &naive_nps(&xr, &v, 1.5)?,
            tol,
        );
        let src = rand_t(13, &[2, 5, 33], &dev)?.to_dtype(dt)?;
        let want = naive_patch(&xr, &src.to_dtype(DType::F32)?, &p, 3..20, 0.3)?;
        assert_close(
            "patch f16/bf16",
            &patch(&x, &src, &p, Some(3..20), 0.3)?,
            &want,
            tol,
        );
        let xi = x.copy()?;
        steer_add_(&xi, &v, 1.5, &p, &Rows::All)?;
        assert_eq!(xi.dtype(), dt);
        assert_close(
            "steer_ f16/bf16",
            &xi,
            &naive_steer(&xr, &v, 1.5, &p, &Rows::All)?,
            tol,
        );
    }
    Ok(())
}

#[test]
fn argument_errors_are_clear() -> Res<()> {
    let dev = Device::Cpu;
    let x = Tensor::zeros((2, 3, 4), DType::F32, &dev)?;
    let v = Tensor::zeros(4, DType::F32, &dev)?;
    let e = steer_add_(&x, &v, 1.0, &Positions::Range(1..5), &Rows::All)
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not fit T = 3"), "{e}");
    let e = steer_add_(
        &x,
        &Tensor::zeros(5, DType::F32, &dev)?,
        1.0,
        &Positions::All,
        &Rows::All,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("expected [D] or [V, D] with D = 4"), "{e}");
    let e = steer_add_(
        &x,
        &v,
        1.0,
        &Positions::All,
        &Rows::per_row([Some((1, 1.0)), None]),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("out of range"), "{e}");
    let e = patch_(&x, &x, &Positions::All, Some(2..9), 1.0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("channel range"), "{e}");
    let e = ablate_(&x.to_dtype(DType::U32)?, &v)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not supported"), "{e}");
    let e = steer_add_(&x, &v, 1.0, &Positions::Mask(vec![true; 5]), &Rows::All)
        .unwrap_err()
        .to_string();
    assert!(e.contains("mask has length 5"), "{e}");
    // writing through a broadcast (repeated elements) view is refused by candle
    let xb = Tensor::zeros((1, 3, 4), DType::F32, &dev)?.broadcast_as((2, 3, 4))?;
    assert!(steer_add_(&xb, &v, 1.0, &Positions::All, &Rows::All).is_err());
    Ok(())
}

/// The small operand of an in-place kernel may be a view of the tensor being modified.
#[test]
fn in_place_operand_may_view_the_target() -> Res<()> {
    let x = rand_t(91, &[2, 3, 8], &Device::Cpu)?;
    let u = x.i((0, 0))?;
    let want = naive_ablate(&x, &u.copy()?)?;
    ablate_(&x, &u)?;
    assert_close("ablate_ by own row", &x, &want, 1e-5);
    let v = x.i((1, 2))?;
    let want = naive_steer(&x, &v.copy()?, 2.0, &Positions::All, &Rows::All)?;
    steer_add_(&x, &v, 2.0, &Positions::All, &Rows::All)?;
    assert_close("steer_add_ by own row", &x, &want, 1e-5);
    let want = naive_nps(&x, &v.copy()?, 0.5)?;
    norm_preserving_steer_(&x, &v, 0.5)?;
    assert_close("nps_ by own row", &x, &want, 1e-5);
    Ok(())
}

// ------------------------------------------------------------------------------------------
// gradients of the out-of-place ops against candle autograd of the naive chains
// ------------------------------------------------------------------------------------------

fn grads(
    f: impl Fn(&Tensor, &Tensor) -> Res<Tensor>,
    x: &Tensor,
    v: &Tensor,
    w: &Tensor,
) -> Res<(Tensor, Tensor)> {
    let xv = Var::from_tensor(x)?;
    let vv = Var::from_tensor(v)?;
    let y = f(xv.as_tensor(), vv.as_tensor())?;
    let loss = (y * w)?.sum_all()?;
    let g = loss.backward()?;
    let gx = g.get(xv.as_tensor()).cloned().unwrap_or(xv.zeros_like()?);
    let gv = g.get(vv.as_tensor()).cloned().unwrap_or(vv.zeros_like()?);
    Ok((gx, gv))
}

#[test]
fn gradients_match_autograd_of_naive_chain() -> Res<()> {
    let dev = Device::Cpu;
    let (b, t, d) = (3, 5, 11);
    let x = rand_t(21, &[b, t, d], &dev)?;
    let w = rand_t(22, &[b, t, d], &dev)?;
    let p = Positions::Mask((0..b * t).map(|i| i % 4 != 1).collect());
    // steer (per-row table, three vectors)
    let vecs = rand_t(23, &[3, d], &dev)?;
    let rows = Rows::per_row([Some((2, 0.5)), None, Some((0, -1.5))]);
    let (gx, gv) = grads(|x, v| steer_add(x, v, 2.0, &p, &rows), &x, &vecs, &w)?;
    let (nx, nv) = grads(|x, v| naive_steer(x, v, 2.0, &p, &rows), &x, &vecs, &w)?;
    assert_close("steer grad x", &gx, &nx, 1e-5);
    assert_close("steer grad v", &gv, &nv, 1e-5);
    // patch
    let src = rand_t(24, &[b, t, d], &dev)?;
    let (gx, gs) = grads(|x, s| patch(x, s, &p, Some(2..7), 0.3), &x, &src, &w)?;
    let (nx, ns) = grads(|x, s| naive_patch(x, s, &p, 2..7, 0.3), &x, &src, &w)?;
    assert_close("patch grad x", &gx, &nx, 1e-5);
    assert_close("patch grad src", &gs, &ns, 1e-5);
    // ablate (the direction is a constant)
    let u = rand_t(25, &[d], &dev)?;
    let (gx, _) = grads(ablate, &x, &u, &w)?;
    let (nx, _) = grads(|x, u| naive_ablate(x, &u.detach()), &x, &u, &w)?;
    assert_close("ablate grad x", &gx, &nx, 1e-5);
    // norm-preserving
    let (gx, gv) = grads(|x, v| norm_preserving_steer(x, v, 0.7), &x, &u, &w)?;
    let (nx, nv) = grads(|x, v| naive_nps(x, v, 0.7), &x, &u, &w)?;
    assert_close("nps grad x", &gx, &nx, 1e-5);
    assert_close("nps grad v", &gv, &nv, 1e-5);
    Ok(())
}

// ------------------------------------------------------------------------------------------
// probes
// ------------------------------------------------------------------------------------------

/// `[K, N, D]` activations where probe k's labels depend on a planted direction, plus noise.
fn probe_data(seed: u64, k: usize, n: usize, d: usize, dev: &Device) -> Res<(Tensor, Tensor)> {
    let y: Vec<u8> = rand_vec(seed, n).iter().map(|&r| (r > 0.0) as u8).collect();
    let mut x = rand_vec(seed ^ 1, k * n * d);
    let dirs = rand_vec(seed ^ 2, k * d);
    for kk in 0..k {
        let strength = 0.2 + 0.3 * kk as f32;
        for i in 0..n {
            let s = if y[i] == 1 { strength } else { -strength };
            for j in 0..d {
                x[(kk * n + i) * d + j] += s * dirs[kk * d + j];
            }
        }
    }
    Ok((
        Tensor::from_vec(x, (k, n, d), dev)?,
        Tensor::from_vec(y, n, dev)?,
    ))
}

/// Gradient of the penalised mean logistic loss at `(w, b)`, in f64 on the host (naive).
fn naive_logistic_grad(x: &Tensor, y: &Tensor, w: &Tensor, b: &Tensor, l2: f64) -> Res<Vec<f64>> {
    let (k, n, d) = x.dims3()?;
    let x = x.to_dtype(DType::F64)?.to_vec3::<f64>()?;
    let y = y.to_dtype(DType::F64)?.to_vec1::<f64>()?;
    let w = w.to_dtype(DType::F64)?.to_vec2::<f64>()?;
    let b = b.to_dtype(DType::F64)?.to_vec1::<f64>()?;
    let mut worst = Vec::new();
    for kk in 0..k {
        let mut g = vec![0f64; d + 1];
        for i in 0..n {
            let z: f64 = x[kk][i].iter().zip(&w[kk]).map(|(a, c)| a * c).sum::<f64>() + b[kk];
            let r = 1.0 / (1.0 + (-z).exp()) - y[i];
            for j in 0..d {
                g[j] += r * x[kk][i][j] / n as f64;
            }
            g[d] += r / n as f64;
        }
        for j in 0..d {
            g[j] += l2 * w[kk][j];
        }
        worst.push(g.iter().fold(0f64, |m, v| m.max(v.abs())));
    }
    Ok(worst)
}

#[test]
fn logistic_probes_reach_the_optimum() -> Res<()> {
    let dev = Device::Cpu;
    let (k, n, d) = (4, 301, 23);
    let (x, y) = probe_data(31, k, n, d, &dev)?;
    let cfg = LogisticConfig {
        l2: 1e-2,
        tol: 1e-6,
        ..Default::default()
    };
    let fit = train_logistic_probes(&x, &y, &cfg)?;
    assert!(
        fit.converged.iter().all(|&c| c),
        "{:?} {:?}",
        fit.converged,
        fit.grad_norm
    );
    let g = naive_logistic_grad(&x, &y, &fit.probes.weights, &fit.probes.bias, cfg.l2)?;
    for (kk, gk) in g.iter().enumerate() {
        assert!(*gk < 5e-6, "probe {kk}: naive ‖∇L‖∞ = {gk}");
    }
    // the batched run equals K separate single-probe runs
    for kk in 0..k {
        let one = train_logistic_probes(&x.narrow(0, kk, 1)?, &y, &cfg)?;
        assert_close(
            "single vs batched w",
            &one.probes.weights.squeeze(0)?,
            &fit.probes.weights.i(kk)?,
            1e-6,
        );
        assert_close(
            "single vs batched b",
            &one.probes.bias,
            &fit.probes.bias.narrow(0, kk, 1)?,
            1e-6,
        );
    }
    // accuracy grows with the planted strength
    let acc = fit.probes.accuracy(&x, &y)?;
    assert!(acc[k - 1] > 0.9, "{acc:?}");
    eprintln!(
        "logistic: passes {} iterations {:?} accuracy {acc:?}",
        fit.passes, fit.iterations
    );
    Ok(())
}

#[test]
fn logistic_probes_without_intercept_and_non_contiguous_input() -> Res<()> {
    let dev = Device::Cpu;
    let (x, y) = probe_data(41, 3, 120, 9, &dev)?;
    let xt = x.transpose(0, 1)?.contiguous()?.transpose(0, 1)?; // same values, strided
    let cfg = LogisticConfig {
        l2: 0.05,
        tol: 1e-6,
        fit_intercept: false,
        ..Default::default()
    };
    let a = train_logistic_probes(&x, &y, &cfg)?;
    let b = train_logistic_probes(&xt, &y, &cfg)?;
    assert_eq!(
        a.probes.weights.to_vec2::<f32>()?,
        b.probes.weights.to_vec2::<f32>()?
    );
    assert!(a.probes.bias.to_vec1::<f32>()?.iter().all(|&v| v == 0.0));
    let g = naive_logistic_grad(&x, &y, &a.probes.weights, &a.probes.bias, cfg.l2)?;
    // without intercept the bias component of the naive gradient is not zero: check w only
    let _ = g;
    assert!(
        a.converged.iter().all(|&c| c),
        "{:?} {:?} {:?}",
        a.converged,
        a.grad_norm,
        a.iterations
    );
    Ok(())
}

#[test]
fn logistic_probes_are_deterministic_across_thread_counts() -> Res<()> {
    let (x, y) = probe_data(51, 3, 700, 40, &Device::Cpu)?;
    let cfg = LogisticConfig {
        l2: 1e-3,
        ..Default::default()
    };
    let run = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| train_logistic_probes(&x, &y, &cfg).unwrap())
    };
    let (a, b) = (run(1), run(3));
    assert_eq!(
        a.probes.weights.to_vec2::<f32>()?,
        b.probes.weights.to_vec2::<f32>()?
    );
    assert_eq!(a.loss.to_vec1::<f32>()?, b.loss.to_vec1::<f32>()?);
    assert_eq!(a.passes, b.passes);
    Ok(())
}

#[test]
fn mean_difference_matches_the_formula() -> Res<()> {
    let dev = Device::Cpu;
    let (k, n, d) = (3, 57, 13);
    let (x, y) = probe_data(61, k, n, d, &dev)?;
    let p = mean_difference_probes(&x, &y)?;
    let xv = x.to_dtype(DType::F64)?.to_vec3::<f64>()?;
    let yv = y.to_vec1::<u8>()?;
    for (kk, xk) in xv.iter().enumerate() {
        let mut mp = vec![0f64; d];
        let mut mn = vec![0f64; d];
        let (np, nn) = (
            yv.iter().filter(|&&v| v == 1).count() as f64,
            yv.iter().filter(|&&v| v == 0).count() as f64,
        );
        for i in 0..n {
            let m = if yv[i] == 1 { &mut mp } else { &mut mn };
            for j in 0..d {
                m[j] += xk[i][j];
            }
        }
        mp.iter_mut().for_each(|v| *v /= np);
        mn.iter_mut().for_each(|v| *v /= nn);
        let coef: Vec<f64> = mp.iter().zip(&mn).map(|(a, b)| a - b).collect();
        let norm = coef.iter().map(|v| v * v).sum::<f64>().sqrt();
        let b = -0.5
            * (mp.iter().map(|v| v * v).sum::<f64>() - mn.iter().map(|v| v * v).sum::<f64>())
            / norm;
        let w: Vec<f32> = coef.iter().map(|v| (v / norm) as f32).collect();
        assert_close(
            "mean-diff w",
            &p.weights.i(kk)?,
            &Tensor::new(w, &dev)?,
            1e-5,
        );
        assert_close(
            "mean-diff b",
            &p.bias.narrow(0, kk, 1)?,
            &Tensor::new(&[b as f32], &dev)?,
            1e-5,
        );
    }
    Ok(())
}

#[test]
fn ridge_solves_the_normal_equations() -> Res<()> {
    let dev = Device::Cpu;
    // primal (N >= D) and dual (N < D); shared and per-probe targets
    for &(k, n, d) in &[(3usize, 80usize, 12usize), (2, 9, 30)] {
        let (x, y) = probe_data(71 + n as u64, k, n, d, &dev)?;
        for alpha in [0.5, 3.0] {
            for yk in [y.to_dtype(DType::F32)?, rand_t(5, &[k, n], &dev)?] {
                let p = ridge_probes(&x, &yk, alpha, true)?;
                let xv = x.to_dtype(DType::F64)?.to_vec3::<f64>()?;
                let yv = if yk.rank() == 1 {
                    vec![yk.to_vec1::<f32>()?; k]
                } else {
                    yk.to_vec2::<f32>()?
                };
                let w = p.weights.to_dtype(DType::F64)?.to_vec2::<f64>()?;
                let b = p.bias.to_dtype(DType::F64)?.to_vec1::<f64>()?;
                for kk in 0..k {
                    // gradient of ‖y − Xw − b‖² + α‖w‖² / 2: Xᵀ(Xw + b − y) + αw and Σ(Xw + b − y)
                    let r: Vec<f64> = (0..n)
                        .map(|i| {
                            xv[kk][i]
                                .iter()
                                .zip(&w[kk])
                                .map(|(a, c)| a * c)
                                .sum::<f64>()
                                + b[kk]
                                - yv[kk][i] as f64
                        })
                        .collect();
                    let scale = 1.0 + yv[kk].iter().map(|v| v.abs() as f64).sum::<f64>();
                    for j in 0..d {
                        let gj: f64 =
                            (0..n).map(|i| xv[kk][i][j] * r[i]).sum::<f64>() + alpha * w[kk][j];
                        assert!(gj.abs() < 1e-4 * scale, "ridge k={kk} j={j} grad {gj}");
                    }
                    let gb: f64 = r.iter().sum();
                    assert!(gb.abs() < 1e-4 * scale, "ridge intercept grad {gb}");
                }
            }
        }
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------
// CUDA against CPU
// ------------------------------------------------------------------------------------------

#[cfg(feature = "cuda")]
mod cuda {
    use super::*;

    fn gpu() -> Option<Device> {
        match Device::new_cuda(0) {
            Ok(d) => Some(d),
            Err(e) => {
                eprintln!(
                    "SKIP: no CUDA device ({}); CUDA kernel tests not run",
                    e.to_string().lines().next().unwrap_or("")
                );
                None
            }
        }
    }

    fn to_cpu(t: &Tensor) -> Tensor {
        t.to_device(&Device::Cpu).unwrap()
    }

    /// Runs `f` on the CPU and the GPU on the same inputs, compares results.
    fn cases() -> Vec<Case> {
        let mut out = Vec::new();
        let shapes = [
            (1, 1, 1),
            (2, 7, 33),
            (3, 17, 769),
            (4, 64, 1024),
            (2, 5, 4097),
        ];
        for (i, &(b, t, d)) in shapes.iter().enumerate() {
            for (j, &view) in VIEWS.iter().enumerate() {
                let positions = match (i + j) % 4 {
                    0 => Positions::All,
                    1 => Positions::Range(t / 3..t),
                    2 => Positions::Mask((0..t).map(|q| q % 2 == 0).collect()),
                    _ => Positions::Mask((0..b * t).map(|q| q % 3 != 1).collect()),
                };
                out.push(Case {
                    b,
                    t,
                    d,
                    seed: (i * 10 + j) as u64,
                    view,
                    src_view: VIEWS[(j + 1) % 4],
                    positions,
                    rows_kind: ((i + j) % 3) as u8,
                    alpha: 1.3,
                    ch: d / 4..d - d / 5,
                });
            }
        }
        out
    }

    #[test]
    fn cuda_kernels_match_cpu() -> Res<()> {
        let Some(dev) = gpu() else { return Ok(()) };
        for c in cases() {
            // the naive chains run on the GPU too: compare the fused GPU kernels with them and
            // with the CPU kernels
            check_steer(&c, &dev)?;
            check_patch(&c, &dev)?;
            check_ablate_nps(&c, &dev)?;
            let (_, xc) = make_view(c.view, c.seed, c.b, c.t, c.d, &Device::Cpu)?;
            let (_, xg) = make_view(c.view, c.seed, c.b, c.t, c.d, &dev)?;
            let u = rand_t(c.seed ^ 3, &[c.d], &Device::Cpu)?;
            let ug = u.to_device(&dev)?;
            assert_close(
                "gpu/cpu ablate",
                &to_cpu(&ablate(&xg, &ug)?),
                &ablate(&xc, &u)?,
                1e-5,
            );
            assert_close(
                "gpu/cpu nps",
                &to_cpu(&norm_preserving_steer(&xg, &ug, 0.9)?),
                &norm_preserving_steer(&xc, &u, 0.9)?,
                1e-5,
            );
        }
        for dt in [DType::F16, DType::BF16] {
            let x = rand_t(3, &[2, 9, 130], &Device::Cpu)?.to_dtype(dt)?;
            let v = rand_t(4, &[130], &Device::Cpu)?;
            let (xg, vg) = (x.to_device(&dev)?, v.to_device(&dev)?);
            let p = Positions::Range(2..7);
            let tol = 1e-2;
            assert_close(
                "gpu/cpu steer half",
                &to_cpu(&steer_add(&xg, &vg, 1.5, &p, &Rows::All)?),
                &steer_add(&x, &v, 1.5, &p, &Rows::All)?,
                tol,
            );
            assert_close(
                "gpu/cpu ablate half",
                &to_cpu(&ablate(&xg, &vg)?),
                &ablate(&x, &v)?,
                tol,
            );
            assert_close(
                "gpu/cpu nps half",
                &to_cpu(&norm_preserving_steer(&xg, &vg, 1.5)?),
                &norm_preserving_steer(&x, &v, 1.5)?,
                tol,
            );
            let src = rand_t(5, &[2, 9, 130], &Device::Cpu)?.to_dtype(dt)?;
            assert_close(
                "gpu/cpu patch half",
                &to_cpu(&patch(&xg, &src.to_device(&dev)?, &p, Some(3..100), 0.4)?),
                &patch(&x, &src, &p, Some(3..100), 0.4)?,
                tol,
            );
        }
        dev.synchronize()?;
        Ok(())
    }

    #[test]
    fn cuda_probes_match_cpu() -> Res<()> {
        let Some(dev) = gpu() else { return Ok(()) };
        for &(k, n, d) in &[(1usize, 5usize, 3usize), (4, 301, 23), (3, 1000, 769)] {
            let (x, y) = probe_data(81, k, n, d, &Device::Cpu)?;
            let (xg, yg) = (x.to_device(&dev)?, y.to_device(&dev)?);
            let cfg = LogisticConfig {
                l2: 1e-2,
                tol: 1e-6,
                ..Default::default()
            };
            let fc = train_logistic_probes(&x, &y, &cfg)?;
            let fg = train_logistic_probes(&xg, &yg, &cfg)?;
            assert!(
                fg.converged.iter().all(|&c| c),
                "gpu converged {:?} {:?}",
                fg.converged,
                fg.grad_norm
            );
            let g = naive_logistic_grad(
                &x,
                &y,
                &to_cpu(&fg.probes.weights),
                &to_cpu(&fg.probes.bias),
                cfg.l2,
            )?;
            assert!(g.iter().all(|&v| v < 5e-6), "gpu optimum: naive grad {g:?}");
            assert_close(
                "gpu/cpu logistic w",
                &to_cpu(&fg.probes.weights),
                &fc.probes.weights,
                1e-3,
            );
            assert_close("gpu/cpu logistic loss", &to_cpu(&fg.loss), &fc.loss, 1e-5);
            let n_pos = y.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()? as usize;
            if n_pos > 0 && n_pos < n {
                let mc = mean_difference_probes(&x, &y)?;
                let mg = mean_difference_probes(&xg, &yg)?;
                assert_close("gpu/cpu mean-diff", &to_cpu(&mg.weights), &mc.weights, 1e-4);
                assert_close("gpu/cpu mean-diff b", &to_cpu(&mg.bias), &mc.bias, 1e-4);
            }
            let rc = ridge_probes(&x, &y, 1.0, true)?;
            let rg = ridge_probes(&xg, &yg, 1.0, true)?;
            assert_close("gpu/cpu ridge", &to_cpu(&rg.weights), &rc.weights, 1e-3);
            // deterministic on the GPU too
            let fg2 = train_logistic_probes(&xg, &yg, &cfg)?;
            assert_eq!(
                to_cpu(&fg.probes.weights).to_vec2::<f32>()?,
                to_cpu(&fg2.probes.weights).to_vec2::<f32>()?
            );
        }
        Ok(())
    }
}
