//! The latent methods on the fused kernels: batched probes against the per-point estimators
//! (fitted one by one through ProbeManager), region patching against a patch_fn that slices by
//! hand, and the typed errors of both.

mod common;

use candle_core::{DType, Device, Tensor};
use common::{assert_close, oracle_dir};
use tdhook::Error;
use tdhook::kernels::Positions;
use tdhook::latent::probing::{
    BatchedEstimator, BatchedProbes, Estimator, LogisticRegression, MeanDifferenceClassifier,
    ProbeManager, Ridge, StepType, metrics,
};
use tdhook::latent::{ActivationPatching, Probing};
use tdhook::models::gpt2::Gpt2;

const BLOCKS: &str = r"transformer\.h\.\d+";

fn model() -> Gpt2 {
    Gpt2::load(oracle_dir("gpt2_tiny"), &Device::Cpu).unwrap()
}

/// Deterministic token ids in `1..vocab`.
fn ids(n: usize, t: usize, seed: u64, vocab: u32) -> Tensor {
    let mut s = seed;
    let v: Vec<u32> = (0..n * t)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            1 + (s % (vocab as u64 - 1)) as u32
        })
        .collect();
    Tensor::from_vec(v, (n, t), &Device::Cpu).unwrap()
}

/// Labels learnable from the last token: 1 iff its id is even.
fn labels(ids: &Tensor) -> Tensor {
    let t = ids.dim(1).unwrap();
    let last: Vec<u32> = ids
        .narrow(1, t - 1, 1)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let y: Vec<u8> = last.iter().map(|&i| u8::from(i % 2 == 0)).collect();
    Tensor::new(y, &Device::Cpu).unwrap()
}

/// Real-valued targets: the last token id scaled.
fn targets(ids: &Tensor) -> Tensor {
    let t = ids.dim(1).unwrap();
    ids.narrow(1, t - 1, 1)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .affine(0.01, -0.3)
        .unwrap()
}

fn last_token(t: &Tensor) -> tdhook::Result<Tensor> {
    Ok(t.narrow(1, t.dim(1)? - 1, 1)?.flatten_from(1)?.detach())
}

/// Fits `batched` and `manager` on one set and predicts on another, then compares every key's
/// coefficients, intercept and held-out metric.
fn compare<E: Estimator + 'static>(
    batched: BatchedProbes,
    manager: ProbeManager<E>,
    y: fn(&Tensor) -> Tensor,
    metric: &str,
    tol: f32,
) -> tdhook::Result<()> {
    let m = model();
    let vocab = 101;
    let (train, test) = (ids(96, 6, 7, vocab), ids(64, 6, 99, vocab));
    let mut pb = Probing::new(BLOCKS, batched.clone())
        .additional_keys(["labels"])
        .prepare(&m)?;
    let mut pm = Probing::new(BLOCKS, manager.clone())
        .additional_keys(["labels"])
        .prepare(&m)?;
    pb.fit_on(&train, &y(&train))?;
    pm.fit_on(&train, &y(&train))?;
    pb.predict_on(&test, &y(&test))?;
    pm.predict_on(&test, &y(&test))?;
    let keys = batched.keys();
    assert_eq!(keys, manager.estimator_keys());
    assert_eq!(keys.len(), 2);
    for key in &keys {
        assert_close(
            &format!("{key} coef"),
            &batched.coef(key)?,
            &manager.coef(key)?,
            tol,
        );
        let scalar = |t: Tensor| t.flatten_all()?.to_vec1::<f32>().map(|v| v[0]);
        let (bi, mi) = (
            scalar(batched.intercept(key)?)?,
            scalar(manager.intercept(key)?)?,
        );
        assert!(
            (bi - mi).abs() <= tol * (1.0 + mi.abs()),
            "{key} intercept {bi} vs {mi}"
        );
        for phase in [StepType::Fit, StepType::Predict] {
            let b = batched.result(phase, key, metric).unwrap();
            let p = manager.result(phase, key, metric).unwrap();
            assert!(
                (b - p).abs() <= 1.0 / 64.0 + 1e-9,
                "{key} {phase:?} {metric}: batched {b} vs one by one {p}"
            );
        }
    }
    Ok(())
}

#[test]
fn batched_logistic_probes_match_logistic_regression_fitted_per_point() -> tdhook::Result<()> {
    // Tight tolerance so both solvers land on the one optimum of the strictly convex problem.
    let batched = BatchedProbes::new(
        BatchedEstimator::Logistic {
            c: 1.0,
            tol: 1e-7,
            max_iter: 5000,
        },
        metrics::classification,
    )
    .data_preprocess(last_token);
    let manager = ProbeManager::new(|| LogisticRegression::new().c(1.0), metrics::classification)
        .data_preprocess(last_token);
    compare(batched.clone(), manager, labels, "accuracy", 2e-3)?;
    for key in batched.keys() {
        assert!(batched.report(&key)?.converged, "{key} converged");
    }
    Ok(())
}

#[test]
fn batched_mean_difference_matches_tdhooks_classifier_per_point() -> tdhook::Result<()> {
    let batched = BatchedProbes::new(BatchedEstimator::MeanDifference, metrics::classification)
        .data_preprocess(last_token);
    let manager = ProbeManager::new(MeanDifferenceClassifier::new, metrics::classification)
        .data_preprocess(last_token);
    compare(batched, manager, labels, "accuracy", 1e-4)
}

#[test]
fn batched_ridge_matches_ridge_per_point() -> tdhook::Result<()> {
    let batched = BatchedProbes::new(BatchedEstimator::Ridge { alpha: 0.5 }, metrics::regression)
        .data_preprocess(last_token);
    let manager = ProbeManager::new(|| Ridge::new().alpha(0.5), metrics::regression)
        .data_preprocess(last_token);
    compare(batched, manager, targets, "r2", 1e-3)
}

#[test]
fn batched_probes_group_points_of_different_widths() -> tdhook::Result<()> {
    // Block outputs (64 wide) and the MLP's inner projection (256 wide) in one probing.
    let m = model();
    let probes = BatchedProbes::new(BatchedEstimator::MeanDifference, metrics::classification)
        .data_preprocess(last_token);
    let mut probing = Probing::new(
        r"transformer\.h\.0|transformer\.h\.\d\.mlp\.c_fc",
        probes.clone(),
    )
    .additional_keys(["labels"])
    .prepare(&m)?;
    let x = ids(32, 4, 3, 101);
    probing.fit_on(&x, &labels(&x))?;
    let widths: Vec<usize> = probes
        .keys()
        .iter()
        .map(|k| probes.coef(k).unwrap().dim(1).unwrap())
        .collect();
    assert!(widths.contains(&64) && widths.contains(&256), "{widths:?}");
    Ok(())
}

#[test]
fn batched_probes_errors_name_the_problem() -> tdhook::Result<()> {
    let m = model();
    let probes = BatchedProbes::new(BatchedEstimator::logistic(1.0), metrics::classification);
    let mut probing = Probing::new(BLOCKS, probes.clone())
        .additional_keys(["labels"])
        .prepare(&m)?;
    let x = ids(8, 4, 5, 101);
    // Predicting before any fit.
    let err = probing.predict_on(&x, &labels(&x)).unwrap_err();
    assert!(
        err.to_string()
            .contains("no fitted probe `transformer.h.0_fwd`"),
        "{err}"
    );
    // Labels that are not 0/1: the kernel's message, with the paths.
    let bad = Tensor::new(&[0u8, 1, 2, 0, 1, 0, 1, 0], &Device::Cpu)?;
    let err = probing.fit_on(&x, &bad).unwrap_err();
    assert!(matches!(err, Error::Kernel { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("transformer.h.0_fwd") && msg.contains("0 or 1"),
        "{msg}"
    );
    // A failed run leaves nothing behind: the next good fit works.
    probing.fit_on(&x, &labels(&x))?;
    assert_eq!(probes.coef("transformer.h.1_fwd")?.dims(), &[1, 4 * 64]);
    Ok(())
}

// ---- region patching ---------------------------------------------------------------------------

/// `corrupted` with positions `pos` and channels `ch` blended toward `clean` by `alpha`, by
/// slicing and concatenating (the reference the kernel must equal).
fn patch_by_hand(
    corrupted: &Tensor,
    clean: &Tensor,
    pos: std::ops::Range<usize>,
    ch: std::ops::Range<usize>,
    alpha: f64,
) -> candle_core::Result<Tensor> {
    let (_, t, d) = corrupted.dims3()?;
    let region = |x: &Tensor| {
        x.narrow(1, pos.start, pos.len())?
            .narrow(2, ch.start, ch.len())
    };
    let mixed = ((region(corrupted)? * (1.0 - alpha))? + (region(clean)? * alpha)?)?;
    let mid_row = Tensor::cat(
        &[
            &corrupted
                .narrow(1, pos.start, pos.len())?
                .narrow(2, 0, ch.start)?,
            &mixed,
            &corrupted
                .narrow(1, pos.start, pos.len())?
                .narrow(2, ch.end, d - ch.end)?,
        ],
        2,
    )?;
    Tensor::cat(
        &[
            &corrupted.narrow(1, 0, pos.start)?,
            &mid_row,
            &corrupted.narrow(1, pos.end, t - pos.end)?,
        ],
        1,
    )
}

#[test]
fn region_patching_equals_slicing_by_hand() -> tdhook::Result<()> {
    let m = model();
    let clean = ids(3, 6, 11, 101);
    let corrupted = ids(3, 6, 12, 101);
    let point = "transformer.h.1.attn.c_proj"; // [B, T, 64]: 4 heads of 16
    for (pos, heads, alpha) in [(2..5, 1..3, 1.0), (0..6, 0..4, 0.25), (5..6, 3..4, 0.7)] {
        let mut kernel = ActivationPatching::new([point])
            .positions(Positions::Range(pos.clone()))
            .heads(heads.clone(), 16)
            .alpha(alpha)
            .prepare(&m)?;
        let (pos2, ch) = (pos.clone(), heads.start * 16..heads.end * 16);
        let mut by_hand = ActivationPatching::new([point])
            .patch_fn(move |_, out, clean| {
                Ok(Some(patch_by_hand(
                    out,
                    clean,
                    pos2.clone(),
                    ch.clone(),
                    alpha,
                )?))
            })
            .prepare(&m)?;
        let (c1, p1) = kernel.patch(&clean, &corrupted)?;
        let (c2, p2) = by_hand.patch(&clean, &corrupted)?;
        assert_close("clean", &c1, &c2, 0.0);
        assert_close(
            &format!("patched {pos:?} {heads:?} {alpha}"),
            &p1,
            &p2,
            1e-6,
        );
    }
    Ok(())
}

#[test]
fn region_patching_with_a_per_row_mask() -> tdhook::Result<()> {
    let m = model();
    let clean = ids(2, 4, 21, 101);
    let corrupted = ids(2, 4, 22, 101);
    // Row 0 patches position 3, row 1 position 1.
    let mask = vec![false, false, false, true, false, true, false, false];
    let mut kernel = ActivationPatching::new(["transformer.h.0"])
        .positions(Positions::Mask(mask))
        .prepare(&m)?;
    let mut by_hand = ActivationPatching::new(["transformer.h.0"])
        .patch_fn(|_, out, clean| {
            let rows = [(0, 3..4), (1, 1..2)]
                .into_iter()
                .map(|(row, pos)| {
                    let (o, c) = (out.narrow(0, row, 1)?, clean.narrow(0, row, 1)?);
                    patch_by_hand(&o, &c, pos, 0..64, 1.0)
                })
                .collect::<candle_core::Result<Vec<_>>>()?;
            Ok(Some(Tensor::cat(&rows, 0)?))
        })
        .prepare(&m)?;
    let (_, p1) = kernel.patch(&clean, &corrupted)?;
    let (_, p2) = by_hand.patch(&clean, &corrupted)?;
    assert_close("per-row mask", &p1, &p2, 1e-6);
    Ok(())
}

#[test]
fn region_patching_errors_name_the_path_and_the_fix() -> tdhook::Result<()> {
    let m = model();
    let both = ActivationPatching::new(["transformer.h.0"])
        .positions(Positions::Range(0..1))
        .patch_fn(|_, _, clean| Ok(Some(clean.clone())))
        .prepare(&m);
    let err = both.err().expect("patch_fn and a region are exclusive");
    assert!(err.to_string().contains("drop one of them"), "{err}");

    let mut wide = ActivationPatching::new(["transformer.h.0"])
        .positions(Positions::Range(2..9))
        .prepare(&m)?;
    let (a, b) = (ids(1, 4, 1, 101), ids(1, 4, 2, 101));
    let err = wide.patch(&a, &b).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("`transformer.h.0`") && msg.contains("2..9") && msg.contains("T = 4"),
        "{msg}"
    );
    Ok(())
}
