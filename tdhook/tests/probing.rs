//! Probing end to end on a small hand-made model whose first layer passes the input through, so
//! the labels are learnable from the probed activations: the ProbeManager's fit and predict
//! phases, its results and estimators against estimators fitted directly, the step type, the
//! additional keys, class filters, `Bwd` probes, and the typed errors.

use candle_core::{DType, Device, Module, Result as CResult, Tensor};
use candle_nn::Linear;
use std::sync::{Arc, Mutex};
use tdhook::Error;
use tdhook::latent::HookedModel;
use tdhook::latent::Probing;
use tdhook::latent::probing::{
    Estimator, EstimatorError, LogisticRegression, MeanDifferenceClassifier, ProbeExtras,
    ProbeManager, Ridge, StepType, metrics,
};
use tdhook::prelude::*;

// ---- the model --------------------------------------------------------------------------------

/// `tanh` as a leaf with its own class name.
#[derive(Hookable, Clone, Copy)]
#[hook(class = "Act")]
struct Act;

impl Module for Act {
    fn forward(&self, xs: &Tensor) -> CResult<Tensor> {
        xs.tanh()
    }
}

/// `fc2(act(fc1(x)))`, `fc1` the identity on 4 features, `fc2` a fixed 4 → 2 map.
#[derive(Hookable)]
struct Net {
    fc1: Linear,
    act: Act,
    fc2: Linear,
}

impl HookedModel for Net {
    fn forward_hooked(&self, x: &Tensor, hx: &mut Hx<Self>) -> CResult<Tensor> {
        let h = hook!(hx, self.fc1(x))?;
        let h = hook!(hx, self.act(&h))?;
        hook!(hx, self.fc2(&h))
    }
}

fn net() -> Net {
    let dev = Device::Cpu;
    let w2 = Tensor::new(&[[1f32, -1., 0.5, 0.], [0., 1., 1., -0.5]], &dev).unwrap();
    Net {
        fc1: Linear::new(Tensor::eye(4, DType::F32, &dev).unwrap(), None),
        act: Act,
        fc2: Linear::new(w2, Some(Tensor::new(&[0.1f32, -0.2], &dev).unwrap())),
    }
}

/// Deterministic uniform numbers in [-1, 1).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 11) as f64 / (1u64 << 52) as f64 - 1.0) as f32
    }
}

/// `n` samples of 4 features; label 1 iff `x0 + x1 > 0`, with a margin of 0.2 kept clear.
fn dataset(n: usize, seed: u64) -> (Tensor, Tensor) {
    let mut rng = Rng(seed);
    let (mut xs, mut ys) = (vec![], vec![]);
    while ys.len() < n {
        let x: Vec<f32> = (0..4).map(|_| rng.next()).collect();
        let s = x[0] + x[1];
        if s.abs() < 0.2 {
            continue;
        }
        ys.push(u8::from(s > 0.0));
        xs.extend(x);
    }
    let dev = Device::Cpu;
    (
        Tensor::from_vec(xs, (n, 4), &dev).unwrap(),
        Tensor::from_vec(ys, n, &dev).unwrap(),
    )
}

fn dict(x: &Tensor, y: &Tensor) -> TensorDict {
    let mut td = TensorDict::new([x.dim(0).unwrap()]);
    td.insert("input", x.clone()).unwrap();
    td.insert("labels", y.clone()).unwrap();
    td
}

// ---- ProbeManager end to end ------------------------------------------------------------------

#[test]
fn probe_manager_fits_then_predicts_and_records_accuracy_per_phase() -> tdhook::Result<()> {
    let model = net();
    let (x, y) = dataset(80, 1);
    let (x_test, y_test) = dataset(40, 2);
    let manager = ProbeManager::new(
        || LogisticRegression::new().c(100.0),
        metrics::classification,
    );
    let mut probing = Probing::new("fc1|fc2", manager.clone())
        .additional_keys(["labels"])
        .prepare(&model)?;

    let out = probing.fit(&dict(&x, &y))?;
    let plain = model.forward_hooked(&x, &mut Hx::none())?;
    assert_eq!(
        out.tensor("output")?.to_vec2::<f32>()?,
        plain.to_vec2::<f32>()?,
        "probes only read"
    );
    probing.predict(&dict(&x_test, &y_test))?;

    assert_eq!(manager.estimator_keys(), ["fc1_fwd", "fc2_fwd"]);
    let keys: Vec<String> = manager
        .results()
        .keys(true)
        .iter()
        .map(|k| k.to_string())
        .collect();
    assert_eq!(
        keys,
        [
            "fit/fc1_fwd/accuracy",
            "fit/fc2_fwd/accuracy",
            "predict/fc1_fwd/accuracy",
            "predict/fc2_fwd/accuracy"
        ]
    );
    // fc1 passes x through and the labels are linearly separable in x: every sample right.
    assert_eq!(
        manager.result(StepType::Fit, "fc1_fwd", "accuracy"),
        Some(1.0)
    );
    let test_acc = manager
        .result(StepType::Predict, "fc1_fwd", "accuracy")
        .unwrap();
    assert!(test_acc >= 0.95, "held-out accuracy {test_acc}");

    // The manager's estimator is the one fitted directly on fc1's activations, and the recorded
    // accuracies are those of its predictions.
    let mut direct = LogisticRegression::new().c(100.0);
    direct.fit(&x, &y)?;
    let managed = manager.estimator("fc1_fwd").unwrap();
    assert_eq!(managed.fitted(), direct.fitted());
    assert_eq!(
        manager.coef("fc1_fwd")?.to_vec2::<f32>()?,
        direct.coef()?.to_vec2::<f32>()?
    );
    assert_eq!(manager.intercept("fc1_fwd")?.dims(), &[1]);
    let want = metrics::accuracy(&direct.predict(&x_test)?, &y_test)?;
    assert_eq!(Some(want), Some(test_acc));
    let fc2_act = model.forward_hooked(&x_test, &mut Hx::none())?;
    let fc2_est = manager.estimator("fc2_fwd").unwrap();
    let want = metrics::accuracy(&fc2_est.predict(&fc2_act)?, &y_test)?;
    assert_eq!(
        manager.result(StepType::Predict, "fc2_fwd", "accuracy"),
        Some(want)
    );
    Ok(())
}

#[test]
fn mean_difference_manager_on_the_typed_face_matches_the_closed_form() -> tdhook::Result<()> {
    let model = net();
    let (x, y) = dataset(30, 3);
    let manager = ProbeManager::new(MeanDifferenceClassifier::new, metrics::classification);
    let mut probing = Probing::new("act", manager.clone())
        .additional_keys(["labels"])
        .prepare(&model)?;
    let out = probing.fit_on(&x, &y)?;
    assert_eq!(out.dims(), &[30, 2]);

    // Naive closed form on act's output tanh(x).
    let h = x.tanh()?.to_vec2::<f32>()?;
    let y = y.to_vec1::<u8>()?;
    let mean = |c: u8| -> Vec<f64> {
        let rows: Vec<&Vec<f32>> = h
            .iter()
            .zip(&y)
            .filter(|(_, l)| **l == c)
            .map(|(r, _)| r)
            .collect();
        (0..4)
            .map(|j| rows.iter().map(|r| r[j] as f64).sum::<f64>() / rows.len() as f64)
            .collect()
    };
    let (mp, mn) = (mean(1), mean(0));
    let coef: Vec<f64> = (0..4).map(|j| mp[j] - mn[j]).collect();
    let norm = coef.iter().map(|c| c * c).sum::<f64>().sqrt();
    let sq = |v: &[f64]| v.iter().map(|a| a * a).sum::<f64>();
    let intercept = -0.5 * (sq(&mp) - sq(&mn)) / norm;
    let got = manager.estimator("act_fwd").unwrap();
    let m = got.fitted().unwrap();
    for (j, (got, want)) in m.coef.iter().zip(&coef).enumerate() {
        assert!((got - want / norm).abs() < 1e-9, "coef[{j}]");
    }
    assert!((m.intercept - intercept).abs() < 1e-9);
    // The fit accuracy is that of the naive hyperplane's predictions.
    let right = h
        .iter()
        .zip(&y)
        .filter(|(r, l)| {
            let d: f64 = (0..4).map(|j| r[j] as f64 * coef[j] / norm).sum::<f64>() + intercept;
            u8::from(d > 0.0) == **l
        })
        .count();
    assert_eq!(
        manager.result(StepType::Fit, "act_fwd", "accuracy"),
        Some(right as f64 / 30.0)
    );
    Ok(())
}

#[test]
fn ridge_probe_records_r2_and_mse() -> tdhook::Result<()> {
    let model = net();
    let (x, _) = dataset(50, 4);
    // A regression target linear in fc1's activation (= x).
    let cols = x.to_vec2::<f32>()?;
    let target: Vec<f32> = cols.iter().map(|r| 2.0 * r[0] - r[3] + 0.5).collect();
    let target = Tensor::new(target, &Device::Cpu)?;
    let manager = ProbeManager::new(|| Ridge::new().alpha(1e-6), metrics::regression);
    let mut probing = Probing::new("fc1", manager.clone())
        .additional_keys(["labels"])
        .prepare(&model)?;
    probing.fit(&dict(&x, &target))?;
    let r2 = manager.result(StepType::Fit, "fc1_fwd", "r2").unwrap();
    let mse = manager.result(StepType::Fit, "fc1_fwd", "mse").unwrap();
    assert!(r2 > 1.0 - 1e-9 && mse < 1e-9, "r2 {r2}, mse {mse}");
    let m = manager.estimator("fc1_fwd").unwrap();
    let m = m.fitted().unwrap();
    assert!(
        (m.coef[0] - 2.0).abs() < 1e-4
            && (m.coef[3] + 1.0).abs() < 1e-4
            && (m.intercept - 0.5).abs() < 1e-4
    );
    Ok(())
}

#[test]
fn estimators_are_stable_across_factory_calls_until_reset() -> tdhook::Result<()> {
    let model = net();
    let (x, y) = dataset(20, 5);
    let manager = ProbeManager::new(MeanDifferenceClassifier::new, metrics::classification);
    let a = manager.probe("fc1", Direction::Fwd).estimator();
    let b = manager.probe("fc1", Direction::Fwd).estimator();
    assert!(
        Arc::ptr_eq(&a, &b),
        "one estimator per {{path}}_{{direction}}"
    );
    assert!(!Arc::ptr_eq(
        &a,
        &manager.probe("fc1", Direction::FwdPre).estimator()
    ));

    // A second prepare reuses the estimator the first one fitted.
    let mut first = Probing::new("fc1", manager.clone())
        .additional_keys(["labels"])
        .prepare(&model)?;
    first.fit(&dict(&x, &y))?;
    assert!(a.lock().unwrap().fitted().is_some());
    let _second = Probing::new("fc1", manager.clone())
        .additional_keys(["labels"])
        .prepare(&model)?;
    assert!(Arc::ptr_eq(
        &a,
        &manager.estimator_handle("fc1_fwd").unwrap()
    ));

    manager.reset_estimators();
    assert!(manager.estimator_keys().is_empty());
    assert!(manager.coef("fc1_fwd").is_err());
    let _third = Probing::new("fc1", manager.clone())
        .additional_keys(["labels"])
        .prepare(&model)?;
    let fresh = manager.estimator_handle("fc1_fwd").unwrap();
    assert!(!Arc::ptr_eq(&a, &fresh) && fresh.lock().unwrap().fitted().is_none());
    // Results survive reset_estimators.
    assert!(
        manager
            .result(StepType::Fit, "fc1_fwd", "accuracy")
            .is_some()
    );
    Ok(())
}

// ---- the overwrite rule -----------------------------------------------------------------------

#[test]
fn recording_a_result_twice_needs_reset_or_overwrite() -> tdhook::Result<()> {
    let model = net();
    let (x, y) = dataset(20, 6);
    let td = dict(&x, &y);
    let manager = ProbeManager::new(MeanDifferenceClassifier::new, metrics::classification);
    let mut probing = Probing::new("fc1", manager.clone())
        .additional_keys(["labels"])
        .prepare(&model)?;
    probing.fit(&td)?;
    probing.predict(&td)?;
    let err = probing.predict(&td).unwrap_err();
    assert!(
        matches!(&err, Error::ResultExists { phase: "predict", key } if key == "fc1_fwd"),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("reset_results()") && msg.contains("overwrite_results(true)"),
        "{msg}"
    );
    assert!(probing.fit(&td).is_err(), "the fit phase too");

    manager.reset_results();
    assert!(manager.results().is_empty());
    probing.predict(&td)?;

    let overwriting = ProbeManager::new(MeanDifferenceClassifier::new, metrics::classification)
        .overwrite_results(true);
    let mut probing = Probing::new("fc1", overwriting.clone())
        .additional_keys(["labels"])
        .prepare(&model)?;
    probing.fit(&td)?;
    probing.fit(&td)?;
    // Each result replaces the last: scored against flipped labels, accuracy a becomes 1 − a.
    probing.predict(&td)?;
    let a = overwriting
        .result(StepType::Predict, "fc1_fwd", "accuracy")
        .unwrap();
    let flipped = (Tensor::ones(20, DType::U8, &Device::Cpu)? - &y)?;
    probing.predict(&dict(&x, &flipped))?;
    let b = overwriting
        .result(StepType::Predict, "fc1_fwd", "accuracy")
        .unwrap();
    assert!((b - (1.0 - a)).abs() < 1e-12, "{b} vs 1 - {a}");
    probing.predict(&td)?;
    assert_eq!(
        overwriting.result(StepType::Predict, "fc1_fwd", "accuracy"),
        Some(a)
    );
    Ok(())
}

// ---- errors -----------------------------------------------------------------------------------

/// A closure probe.
type BoxedProbe = Box<dyn FnMut(&Tensor, &ProbeExtras) -> tdhook::Result<()> + Send>;

/// A probe that counts its steps.
fn counting(count: Arc<Mutex<usize>>) -> impl Fn(&str, Direction) -> BoxedProbe + Send + Sync {
    move |_path: &str, _dir: Direction| {
        let count = count.clone();
        Box::new(move |_t: &Tensor, _ex: &ProbeExtras| {
            *count.lock().unwrap() += 1;
            Ok(())
        })
    }
}

#[test]
fn missing_additional_keys_are_an_error_before_the_forward() -> tdhook::Result<()> {
    let model = net();
    let (x, _) = dataset(10, 7);
    let count = Arc::new(Mutex::new(0));
    let mut probing = Probing::new("fc1", counting(count.clone()))
        .additional_keys(["labels"])
        .prepare(&model)?;
    let mut td = TensorDict::new([10]);
    td.insert("input", x.clone())?;
    let err = probing.run(&td).unwrap_err();
    assert!(
        matches!(&err, Error::MissingKey { key, .. } if key == "labels"),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("`labels`") && msg.contains("additional_keys"),
        "{msg}"
    );
    assert_eq!(*count.lock().unwrap(), 0, "no probe ran");

    // With a ProbeManager: labels not selected is caught at prepare, a run without a step type
    // before the forward.
    let manager = ProbeManager::new(MeanDifferenceClassifier::new, metrics::classification);
    let err = Probing::new("fc1", manager.clone())
        .prepare(&model)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("`labels`") && err.contains(".additional_keys([\"labels\"])"),
        "{err}"
    );
    let mut probing = Probing::new("fc1", manager.clone())
        .additional_keys(["labels"])
        .prepare(&model)?;
    let (x, y) = dataset(10, 8);
    let err = probing.run(&dict(&x, &y)).unwrap_err();
    assert!(
        matches!(&err, Error::MissingKey { key, .. } if key == "step_type"),
        "{err:?}"
    );
    assert!(err.to_string().contains("fit(&td)"));
    Ok(())
}

#[test]
fn fitting_on_one_class_only_fails_with_the_estimators_error() -> tdhook::Result<()> {
    let model = net();
    let (x, _) = dataset(10, 9);
    let ones = Tensor::ones(10, DType::U8, &Device::Cpu)?;
    for (name, manager) in [
        (
            "MeanDifferenceClassifier",
            ProbeManager::new(
                || Box::new(MeanDifferenceClassifier::new()) as Box<dyn Estimator>,
                metrics::classification,
            ),
        ),
        (
            "LogisticRegression",
            ProbeManager::new(
                || Box::new(LogisticRegression::new()) as Box<dyn Estimator>,
                metrics::classification,
            ),
        ),
    ] {
        let mut probing = Probing::new("fc1", manager.clone())
            .additional_keys(["labels"])
            .prepare(&model)?;
        let err = probing.fit(&dict(&x, &ones)).unwrap_err();
        assert!(
            matches!(&err, Error::Estimator(EstimatorError::OneClass { estimator, class: 1, .. }) if *estimator == name),
            "{err:?}"
        );
        assert!(err.to_string().contains("Both classes must be present"));
        assert!(manager.results().is_empty());
    }
    Ok(())
}

// ---- the step type and the extras -------------------------------------------------------------

type Seen = Arc<
    Mutex<
        Vec<(
            String,
            Direction,
            Option<StepType>,
            Vec<usize>,
            Option<Vec<u8>>,
        )>,
    >,
>;

fn recorder(seen: Seen) -> impl Fn(&str, Direction) -> BoxedProbe + Send + Sync {
    move |_path: &str, _dir: Direction| {
        let seen = seen.clone();
        Box::new(move |t: &Tensor, ex: &ProbeExtras| {
            let labels = ex
                .labels()
                .map(|l| l.flatten_all().unwrap().to_vec1::<u8>().unwrap());
            seen.lock().unwrap().push((
                ex.path.to_string(),
                ex.direction,
                ex.step_type,
                t.dims().to_vec(),
                labels,
            ));
            Ok(())
        })
    }
}

#[test]
fn the_step_type_comes_from_the_dict_or_the_typed_faces() -> tdhook::Result<()> {
    let model = net();
    let (x, y) = dataset(6, 10);
    let seen: Seen = Arc::default();
    let mut probing = Probing::new("fc2", recorder(seen.clone()))
        .additional_keys(["labels"])
        .prepare(&model)?;
    let td = dict(&x, &y);
    probing.run(&td)?;
    let mut with_step = td.clone();
    StepType::Predict.insert(&mut with_step)?;
    assert_eq!(with_step.tensor("step_type")?.to_vec1::<u8>()?, [1; 6]);
    probing.run(&with_step)?;
    let out = probing.fit(&td)?;
    assert_eq!(StepType::from_dict(&out)?, Some(StepType::Fit));
    probing.predict_on(&x, &y)?;
    let steps: Vec<Option<StepType>> = seen.lock().unwrap().iter().map(|s| s.2).collect();
    assert_eq!(
        steps,
        [
            None,
            Some(StepType::Predict),
            Some(StepType::Fit),
            Some(StepType::Predict)
        ]
    );
    let labels = y.to_vec1::<u8>()?;
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .all(|s| s.4.as_deref() == Some(&labels[..]))
    );

    // A dict step type must be one code, 0 or 1.
    let mut bad = td.clone();
    bad.insert(
        "step_type",
        Tensor::new(&[0u8, 1, 0, 0, 0, 0], &Device::Cpu)?,
    )?;
    assert!(probing.run(&bad).unwrap_err().to_string().contains("mixes"));
    bad.insert("step_type", Tensor::full(2u8, 6, &Device::Cpu)?)?;
    assert!(
        probing
            .run(&bad)
            .unwrap_err()
            .to_string()
            .contains("0 (fit) or 1 (predict)")
    );

    // step_type listed in additional_keys makes it required.
    let mut strict = Probing::new("fc2", recorder(seen.clone()))
        .additional_keys(["labels", "step_type"])
        .prepare(&model)?;
    let err = strict.run(&td).unwrap_err();
    assert!(
        matches!(&err, Error::MissingKey { key, .. } if key == "step_type"),
        "{err:?}"
    );
    strict.run(&with_step)?;
    Ok(())
}

#[test]
fn several_batch_dims_flatten_activations_and_labels_alike() -> tdhook::Result<()> {
    let model = net();
    let (x, y) = dataset(6, 11);
    let seen: Seen = Arc::default();
    let mut probing = Probing::new("fc1", recorder(seen.clone()))
        .additional_keys(["labels"])
        .prepare(&model)?;
    let mut td = TensorDict::new([2, 3]);
    td.insert("input", x.reshape((2, 3, 4))?)?;
    td.insert("labels", y.reshape((2, 3))?)?;
    let out = probing.fit(&td)?;
    assert_eq!(out.tensor("output")?.dims(), &[2, 3, 2]);
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0].3, [6, 4]);
    assert_eq!(seen[0].4.as_deref(), Some(&y.to_vec1::<u8>()?[..]));

    // And a manager fitted that way equals one fitted on the flat batch.
    let flat = ProbeManager::new(MeanDifferenceClassifier::new, metrics::classification);
    let nested = ProbeManager::new(MeanDifferenceClassifier::new, metrics::classification);
    Probing::new("fc1", flat.clone())
        .additional_keys(["labels"])
        .prepare(&model)?
        .fit(&dict(&x, &y))?;
    Probing::new("fc1", nested.clone())
        .additional_keys(["labels"])
        .prepare(&model)?
        .fit(&td)?;
    assert_eq!(
        flat.estimator("fc1_fwd").unwrap().fitted(),
        nested.estimator("fc1_fwd").unwrap().fitted()
    );
    Ok(())
}

// ---- which points, which directions ------------------------------------------------------------

#[test]
fn the_factory_is_called_once_per_point_and_direction_directions_outer() -> tdhook::Result<()> {
    let model = net();
    let calls: Arc<Mutex<Vec<(String, Direction)>>> = Arc::default();
    let seen: Seen = Arc::default();
    let factory = {
        let calls = calls.clone();
        let inner = recorder(seen.clone());
        move |path: &str, dir: Direction| {
            calls.lock().unwrap().push((path.to_string(), dir));
            inner(path, dir)
        }
    };
    let mut probing = Probing::new("fc.", factory)
        .directions([Direction::Fwd, Direction::FwdPre])
        .prepare(&model)?;
    let want = [
        ("fc1", Direction::Fwd),
        ("fc2", Direction::Fwd),
        ("fc1", Direction::FwdPre),
        ("fc2", Direction::FwdPre),
    ];
    let got: Vec<(String, Direction)> = calls.lock().unwrap().clone();
    let want: Vec<(String, Direction)> = want.iter().map(|(p, d)| (p.to_string(), *d)).collect();
    assert_eq!(got, want);
    assert_eq!(probing.probed().len(), 4);
    let (x, y) = dataset(5, 12);
    probing.run(&dict(&x, &y))?;
    probing.run(&dict(&x, &y))?;
    assert_eq!(calls.lock().unwrap().len(), 4, "not called again by runs");
    // FwdPre sees the input (fc2's is [5, 4]), Fwd the output (fc2's is [5, 2]).
    let seen = seen.lock().unwrap();
    let fc2: Vec<(Direction, Vec<usize>)> = seen
        .iter()
        .filter(|s| s.0 == "fc2")
        .map(|s| (s.1, s.3.clone()))
        .take(2)
        .collect();
    assert!(
        fc2.contains(&(Direction::FwdPre, vec![5, 4]))
            && fc2.contains(&(Direction::Fwd, vec![5, 2]))
    );
    assert!(
        seen.iter().all(|s| s.4.is_none()),
        "no additional keys, no labels"
    );
    Ok(())
}

#[test]
fn class_filters_select_by_rust_type_or_hook_class() -> tdhook::Result<()> {
    let model = net();
    let paths = |p: Probing| -> tdhook::Result<Vec<String>> {
        Ok(p.prepare(&model)?
            .probed()
            .iter()
            .map(|(p, _)| p.clone())
            .collect())
    };
    let noop = |_: &str, _: Direction| |_: &Tensor, _: &ProbeExtras| Ok::<(), Error>(());
    assert_eq!(paths(Probing::new(".*", noop))?, ["fc1", "act", "fc2"]);
    assert_eq!(
        paths(Probing::new(".*", noop).classes_to_hook(["Linear"]))?,
        ["fc1", "fc2"]
    );
    assert_eq!(
        paths(Probing::new(".*", noop).classes_to_skip(["Linear"]))?,
        ["act"]
    );
    assert_eq!(
        paths(Probing::new(".*", noop).classes_to_hook(["Act"]))?,
        ["act"]
    );
    // Typed paths select exactly.
    for (path, want) in [(Net::path().fc1(), "fc1"), (Net::path().fc2(), "fc2")] {
        assert_eq!(paths(Probing::new(path, noop))?, [want]);
    }
    assert_eq!(paths(Probing::new(Net::path().act(), noop))?, ["act"]);
    let err = Probing::new(".*", noop)
        .classes_to_hook(["Conv2d"])
        .prepare(&model)
        .err()
        .unwrap();
    assert!(matches!(err, Error::NoMatch { .. }), "{err:?}");
    // relative(false): tdhook's `module.` prefix, in the manager's keys too.
    let manager = ProbeManager::new(MeanDifferenceClassifier::new, metrics::classification);
    Probing::new(r"module\.fc1", manager.clone())
        .relative(false)
        .additional_keys(["labels"])
        .prepare(&model)?;
    assert_eq!(manager.estimator_keys(), ["module.fc1_fwd"]);
    Ok(())
}

#[test]
fn bwd_probes_see_the_gradient_of_the_loss() -> tdhook::Result<()> {
    let model = net();
    let (x, y) = dataset(4, 13);
    let seen: Arc<Mutex<Vec<(String, Tensor)>>> = Arc::default();
    let factory = {
        let seen = seen.clone();
        move |_: &str, _: Direction| {
            let seen = seen.clone();
            move |t: &Tensor, ex: &ProbeExtras| {
                assert_eq!(ex.direction, Direction::Bwd);
                assert!(ex.labels().is_some());
                seen.lock().unwrap().push((ex.path.to_string(), t.clone()));
                Ok::<(), Error>(())
            }
        }
    };
    assert!(
        Probing::new("fc2", factory.clone())
            .directions([Direction::Bwd])
            .prepare(&model)
            .is_err()
    );
    let mut probing = Probing::new("fc2|act", factory)
        .directions([Direction::Bwd])
        .additional_keys(["labels"])
        .loss(|y| Ok(y.sqr()?.sum_all()?))
        .prepare(&model)?;
    let out = probing.fit(&dict(&x, &y))?;
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    // d/dy Σ y² = 2y at fc2's output; at act's output, 2y · W2.
    let y_out = out.tensor("output")?;
    let by_path = |p: &str| seen.iter().find(|s| s.0 == p).unwrap().1.clone();
    let g_fc2 = by_path("fc2");
    let want = (y_out * 2.0)?;
    assert!((g_fc2 - &want)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-5);
    let w2 = model.fc2.weight();
    let want_act = want.matmul(w2)?;
    assert!(
        (by_path("act") - want_act)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?
            < 1e-5
    );
    Ok(())
}
