//! The latent methods against Python tdhook 0.3.0 on the same weights and inputs (fixtures from
//! `tests/oracle/gen_tdhook.py`). Where we deliberately differ from tdhook, the test name says
//! so and the expected values come from the fixture's plain-PyTorch reference.

mod common;

use candle_core::{D, Device, Tensor};
use common::models::{SharedMlp, TinyTransformer};
use common::{assert_close, oracle_dir};
use std::collections::HashMap;
use tdhook::latent::{
    ActivationAddition, ActivationCaching, ActivationPatching, HookedModel, SteeringVectors,
};
use tdhook::models::gpt2::Gpt2;
use tdhook::prelude::*;

const TOL: f32 = 1e-5;

fn fixture(model: &str, case: &str) -> HashMap<String, Tensor> {
    let path = oracle_dir("tdhook")
        .join(model)
        .join(format!("{case}.safetensors"));
    candle_core::safetensors::load(&path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// The fixture's input dict (`in/...`), with GPT-2's `input_ids` read as our `input`.
fn input_td(fx: &HashMap<String, Tensor>) -> TensorDict {
    let mut keys: Vec<&String> = fx.keys().filter(|k| k.starts_with("in/")).collect();
    keys.sort();
    let first = fx[keys[0]].dims()[0];
    let mut td = TensorDict::new([first]);
    for k in keys {
        let key = k["in/".len()..].replace("input_ids", "input");
        let segs: Vec<&str> = key.split('/').collect();
        td.insert(segs.as_slice(), fx[k].clone()).unwrap();
    }
    td
}

/// The output tensor the fixture saved (`out/output` or GPT-2's `out/logits`).
fn out_key(fx: &HashMap<String, Tensor>, prefix: &str) -> String {
    for name in ["output", "logits"] {
        let k = format!("{prefix}{name}");
        if fx.contains_key(&k) {
            return k;
        }
    }
    panic!("no output under {prefix}");
}

/// Every fixture key under `prefix` equals our dict's value at the same key (below `ours`).
fn assert_subtree(
    fx: &HashMap<String, Tensor>,
    prefix: &str,
    ours: &TensorDict,
    ours_prefix: &[&str],
) {
    let mut n = 0;
    for (k, want) in fx {
        let Some(rest) = k.strip_prefix(prefix) else {
            continue;
        };
        let mut key: Vec<&str> = ours_prefix.to_vec();
        key.extend(rest.split('/'));
        let got = ours.get(key.as_slice()).unwrap_or_else(|| {
            panic!(
                "we have no `{}`; we have {:?}",
                key.join("/"),
                ours.keys(true)
            )
        });
        assert_close(k, got, want, TOL);
        n += 1;
    }
    assert!(n > 0, "fixture has nothing under {prefix}");
}

fn shared() -> SharedMlp {
    SharedMlp::load(&oracle_dir("tdhook").join("shared_mlp"))
}
fn tiny() -> TinyTransformer {
    TinyTransformer::load(&oracle_dir("tdhook").join("tiny_transformer"))
}
fn gpt2() -> Gpt2 {
    Gpt2::load(oracle_dir("gpt2_tiny"), &Device::Cpu).unwrap()
}

fn lse_loss(y: &Tensor) -> tdhook::Result<Tensor> {
    Ok(y.log_sum_exp(D::Minus1)?.sum_all()?)
}

/// The cases tdhook runs the same way on every model.
fn common_cases<M: HookedModel>(model: &M, name: &str, block: &str, blocks: &str) {
    // cache_blocks
    let fx = fixture(name, "cache_blocks");
    let out = ActivationCaching::new(blocks)
        .prepare(model)
        .unwrap()
        .run(&input_td(&fx))
        .unwrap();
    assert_subtree(&fx, "out/cache/", &out, &["cache"]);
    assert_close(
        "output",
        out.tensor("output").unwrap(),
        &fx[&out_key(&fx, "out/")],
        TOL,
    );

    // cache_nested_one_direction
    let fx = fixture(name, "cache_nested_one_direction");
    let out = ActivationCaching::new(blocks)
        .use_nested_keys(true)
        .prepare(model)
        .unwrap()
        .run(&input_td(&fx))
        .unwrap();
    assert_subtree(&fx, "out/cache/", &out, &["cache"]);

    // cache_callback_mean
    let fx = fixture(name, "cache_callback_mean");
    let out = ActivationCaching::new(blocks)
        .callback(|_, t| Ok(t.mean(D::Minus1)?))
        .prepare(model)
        .unwrap()
        .run(&input_td(&fx))
        .unwrap();
    assert_subtree(&fx, "out/cache/", &out, &["cache"]);

    // cache_fwd_pre (tdhook needs a callback returning args[0]; we store the input as is)
    let fx = fixture(name, "cache_fwd_pre");
    let out = ActivationCaching::new(blocks)
        .directions([Direction::FwdPre])
        .prepare(model)
        .unwrap()
        .run(&input_td(&fx))
        .unwrap();
    assert_subtree(&fx, "out/cache/", &out, &["cache"]);

    // cache_blocks_nonrelative
    let fx = fixture(name, "cache_blocks_nonrelative");
    let pattern = format!(r"module\.{blocks}");
    let out = ActivationCaching::new(pattern.as_str())
        .relative(false)
        .prepare(model)
        .unwrap()
        .run(&input_td(&fx))
        .unwrap();
    assert_subtree(&fx, "out/cache/", &out, &["cache"]);

    // patch_one and patch_fn_pos1
    let fx = fixture(name, "patch_one");
    let out = ActivationPatching::new([block])
        .prepare(model)
        .unwrap()
        .run(&input_td(&fx))
        .unwrap();
    assert_close(
        "clean",
        out.tensor("output").unwrap(),
        &fx[&out_key(&fx, "out/")],
        TOL,
    );
    assert_close(
        "patched",
        out.tensor(("patched", "output")).unwrap(),
        &fx[&out_key(&fx, "out/patched/")],
        TOL,
    );

    let fx = fixture(name, "patch_fn_pos1");
    let out = ActivationPatching::new([block])
        .patch_fn(|_, corrupted, clean| {
            let t = corrupted.dim(1)?;
            let parts = [
                corrupted.narrow(1, 0, 1)?,
                clean.narrow(1, 1, 1)?,
                corrupted.narrow(1, 2, t - 2)?,
            ];
            Ok(Some(Tensor::cat(&parts, 1)?))
        })
        .prepare(model)
        .unwrap()
        .run(&input_td(&fx))
        .unwrap();
    assert_close(
        "patched pos 1",
        out.tensor(("patched", "output")).unwrap(),
        &fx[&out_key(&fx, "out/patched/")],
        TOL,
    );

    // patch_cache_callback: mean-ablation
    let fx = fixture(name, "patch_cache_callback");
    let path = if name == "gpt2_tiny" {
        "transformer.h.1.mlp"
    } else {
        "layers.1.mlp"
    };
    let out = ActivationPatching::new([path])
        .cache_callback(|_, t| Ok(t.mean_keepdim(0)?.broadcast_as(t.dims())?.contiguous()?))
        .prepare(model)
        .unwrap()
        .run(&input_td(&fx))
        .unwrap();
    assert_close(
        "mean-ablated",
        out.tensor(("patched", "output")).unwrap(),
        &fx[&out_key(&fx, "out/patched/")],
        TOL,
    );

    // steer_one
    let fx = fixture(name, "steer_one");
    let alpha = fx["aux/alpha"]
        .to_dtype(candle_core::DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()[0];
    let v = fx[&format!("aux/v/{block}")].clone();
    let out = SteeringVectors::new([block], move |_, o| Ok(o.broadcast_add(&(&v * alpha)?)?))
        .prepare(model)
        .unwrap()
        .run(&input_td(&fx))
        .unwrap();
    assert_close(
        "steered",
        out.tensor("output").unwrap(),
        &fx[&out_key(&fx, "out/")],
        TOL,
    );

    // addition_one
    let fx = fixture(name, "addition_one");
    let out = ActivationAddition::new([block])
        .prepare(model)
        .unwrap()
        .run(&input_td(&fx))
        .unwrap();
    assert_subtree(&fx, "out/steer/", &out, &["steer"]);
}

#[test]
fn tiny_transformer_cases_equal_tdhook() {
    common_cases(&tiny(), "tiny_transformer", "layers.0", r"layers\.\d+$");
}

#[test]
fn gpt2_cases_equal_tdhook() {
    common_cases(
        &gpt2(),
        "gpt2_tiny",
        "transformer.h.0",
        r"transformer\.h\.\d+$",
    );
}

#[test]
fn linear_leaves_cache_equal_tdhook() {
    for (name, pattern) in [
        (
            "tiny_transformer",
            r"(.*\.)?(q_proj|k_proj|v_proj|o_proj|up|down|head)$",
        ),
        ("gpt2_tiny", r"(.*\.)?(c_attn|c_proj|c_fc)$|lm_head$"),
    ] {
        let fx = fixture(name, "cache_linear");
        let out = if name == "gpt2_tiny" {
            ActivationCaching::new(pattern)
                .prepare(&gpt2())
                .unwrap()
                .run(&input_td(&fx))
                .unwrap()
        } else {
            ActivationCaching::new(pattern)
                .prepare(&tiny())
                .unwrap()
                .run(&input_td(&fx))
                .unwrap()
        };
        assert_subtree(&fx, "out/cache/", &out, &["cache"]);
    }
    let fx = fixture("shared_mlp", "cache_linear");
    let out = ActivationCaching::new(r"fc\d+")
        .prepare(&shared())
        .unwrap()
        .run(&input_td(&fx))
        .unwrap();
    assert_subtree(&fx, "out/cache/", &out, &["cache"]);
}

#[test]
fn two_patched_points_and_two_addition_points_equal_tdhook() {
    let fx = fixture("tiny_transformer", "patch_two");
    let out = ActivationPatching::new(["layers.0.attn", "layers.1.mlp"])
        .prepare(&tiny())
        .unwrap()
        .run(&input_td(&fx))
        .unwrap();
    assert_close(
        "patched",
        out.tensor(("patched", "output")).unwrap(),
        &fx["out/patched/output"],
        TOL,
    );
    let fx = fixture("gpt2_tiny", "patch_two");
    let out = ActivationPatching::new(["transformer.h.0.mlp", "transformer.h.1"])
        .prepare(&gpt2())
        .unwrap()
        .run(&input_td(&fx))
        .unwrap();
    assert_close(
        "patched",
        out.tensor(("patched", "output")).unwrap(),
        &fx["out/patched/logits"],
        TOL,
    );
    let fx = fixture("tiny_transformer", "addition_two");
    let out = ActivationAddition::new(["layers.0", "layers.1.mlp"])
        .prepare(&tiny())
        .unwrap()
        .run(&input_td(&fx))
        .unwrap();
    assert_subtree(&fx, "out/steer/", &out, &["steer"]);
    let fx = fixture("tiny_transformer", "steer_two");
    let alpha = 0.5;
    let vs: HashMap<String, Tensor> = ["layers.0", "layers.1.mlp"]
        .iter()
        .map(|p| (p.to_string(), fx[&format!("aux/v/{p}")].clone()))
        .collect();
    let out = SteeringVectors::new(["layers.0", "layers.1.mlp"], move |p, o| {
        Ok(o.broadcast_add(&(&vs[p] * alpha)?)?)
    })
    .prepare(&tiny())
    .unwrap()
    .run(&input_td(&fx))
    .unwrap();
    assert_close(
        "steered",
        out.tensor("output").unwrap(),
        &fx["out/output"],
        TOL,
    );
}

/// tdhook publishes the cache before backward runs, so its returned dict has no gradients
/// (they are only in the context's cache); ours has them under `cache`.
#[test]
fn bwd_cache_equals_tdhook_context_cache_and_we_return_it() {
    for name in ["tiny_transformer", "gpt2_tiny"] {
        let fx = fixture(name, "cache_bwd");
        let blocks = if name == "gpt2_tiny" {
            r"transformer\.h\.\d+$"
        } else {
            r"layers\.\d+$"
        };
        let caching = ActivationCaching::new(blocks)
            .directions([Direction::Bwd])
            .loss(lse_loss);
        let out = if name == "gpt2_tiny" {
            caching
                .prepare(&gpt2())
                .unwrap()
                .run(&input_td(&fx))
                .unwrap()
        } else {
            caching
                .prepare(&tiny())
                .unwrap()
                .run(&input_td(&fx))
                .unwrap()
        };
        assert_subtree(&fx, "ctx_cache/", &out, &["cache"]);

        let fx = fixture(name, "cache_fwd_bwd");
        let caching = ActivationCaching::new(blocks)
            .directions([Direction::Fwd, Direction::Bwd])
            .loss(lse_loss);
        let out = if name == "gpt2_tiny" {
            caching
                .prepare(&gpt2())
                .unwrap()
                .run(&input_td(&fx))
                .unwrap()
        } else {
            caching
                .prepare(&tiny())
                .unwrap()
                .run(&input_td(&fx))
                .unwrap()
        };
        assert_subtree(&fx, "ctx_cache/", &out, &["cache"]);
        assert_subtree(&fx, "out/cache/", &out, &["cache"]);
    }
}

/// tdhook keeps only the last call of a module called twice; we keep call 0 at `act` and call 1
/// at `act@1` (tdhook's `act` is our `act@1`).
#[test]
fn shared_module_called_twice_keeps_every_call_unlike_tdhook() {
    let m = shared();
    let fx = fixture("shared_mlp", "cache_act");
    let out = ActivationCaching::new("act")
        .prepare(&m)
        .unwrap()
        .run(&input_td(&fx))
        .unwrap();
    assert_close(
        "call 0",
        out.tensor(("cache", "act")).unwrap(),
        &fx["aux/act_call0"],
        TOL,
    );
    assert_close(
        "call 1",
        out.tensor(("cache", "act@1")).unwrap(),
        &fx["aux/act_call1"],
        TOL,
    );
    assert_close(
        "tdhook's last call",
        out.tensor(("cache", "act@1")).unwrap(),
        &fx["out/cache/act"],
        TOL,
    );

    let fx = fixture("shared_mlp", "cache_act_bwd");
    let out = ActivationCaching::new("act")
        .directions([Direction::Bwd])
        .loss(lse_loss)
        .prepare(&m)
        .unwrap()
        .run(&input_td(&fx))
        .unwrap();
    assert_close(
        "grad call 0",
        out.tensor(("cache", "act")).unwrap(),
        &fx["aux/grad_act_call0"],
        1e-4,
    );
    assert_close(
        "grad call 1",
        out.tensor(("cache", "act@1")).unwrap(),
        &fx["aux/grad_act_call1"],
        1e-4,
    );

    let fx = fixture("shared_mlp", "addition_act");
    let out = ActivationAddition::new(["act"])
        .prepare(&m)
        .unwrap()
        .run(&input_td(&fx))
        .unwrap();
    assert_close(
        "vector call 0",
        out.tensor(("steer", "act")).unwrap(),
        &fx["aux/steer_call0"],
        TOL,
    );
    assert_close(
        "vector call 1",
        out.tensor(("steer", "act@1")).unwrap(),
        &fx["aux/steer_call1"],
        TOL,
    );
}

/// tdhook's patching of a module called twice is wrong even for the clean output; we patch call
/// k with clean call k and leave the clean run alone (the fixture's `expected/` reference).
#[test]
fn patching_a_shared_module_patches_call_k_with_clean_call_k_unlike_tdhook() {
    let m = shared();
    let fx = fixture("shared_mlp", "patch_act");
    let out = ActivationPatching::new(["act"])
        .prepare(&m)
        .unwrap()
        .run(&input_td(&fx))
        .unwrap();
    assert_close(
        "clean untouched",
        out.tensor("output").unwrap(),
        &fx["expected/output"],
        TOL,
    );
    assert_close(
        "patched",
        out.tensor(("patched", "output")).unwrap(),
        &fx["expected/patched_output"],
        TOL,
    );
    let tdhook_clean = &fx["out/output"];
    assert!(
        common::rel_err(out.tensor("output").unwrap(), tdhook_clean) > 1e-3,
        "tdhook's clean output is the wrong one"
    );

    let fx = fixture("shared_mlp", "patch_fc2");
    let out = ActivationPatching::new(["fc2"])
        .prepare(&m)
        .unwrap()
        .run(&input_td(&fx))
        .unwrap();
    assert_close(
        "fc2 patched",
        out.tensor(("patched", "output")).unwrap(),
        &fx["expected/patched_output"],
        TOL,
    );
    assert_close(
        "fc2 patched = tdhook",
        out.tensor(("patched", "output")).unwrap(),
        &fx["out/patched/output"],
        TOL,
    );
}

/// tdhook's `_cache` (clean_intermediate_keys=False) ends up holding the corrupted run's
/// patched value; ours holds the clean activations, as the name says.
#[test]
fn kept_intermediate_cache_holds_clean_activations_unlike_tdhook() {
    let m = tiny();
    let fx = fixture("tiny_transformer", "patch_keep_intermediate");
    let td = input_td(&fx);
    let out = ActivationPatching::new(["layers.0.attn", "layers.1.mlp"])
        .clean_intermediate_keys(false)
        .prepare(&m)
        .unwrap()
        .run(&td)
        .unwrap();
    assert_close(
        "patched",
        out.tensor(("patched", "output")).unwrap(),
        &fx["out/patched/output"],
        TOL,
    );
    let clean = ActivationCaching::new(r"layers\.0\.attn|layers\.1\.mlp")
        .prepare(&m)
        .unwrap()
        .run(&td)
        .unwrap();
    for p in ["layers.0.attn", "layers.1.mlp"] {
        assert_close(
            p,
            out.tensor(("_cache", p)).unwrap(),
            clean.tensor(("cache", p)).unwrap(),
            0.0,
        );
    }
}

/// tdhook silently caches nothing when `relative=False` and the pattern lacks `module.`; we say
/// so, listing the nearest paths.
#[test]
fn unprefixed_pattern_with_relative_false_is_an_error_unlike_tdhook() {
    let fx = fixture("tiny_transformer", "cache_nonrelative_unprefixed");
    assert!(
        !fx.keys().any(|k| k.starts_with("out/cache/")),
        "tdhook cached nothing"
    );
    let err = ActivationCaching::new(r"layers\.\d+$")
        .relative(false)
        .prepare(&tiny())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("module.layers.0"), "{err}");
}

/// tdhook fails unless the dict has exactly one batch dim; we take any number.
#[test]
fn several_batch_dims_work_unlike_tdhook() {
    let m = gpt2();
    let fx = fixture("gpt2_tiny", "patch_one");
    let td = input_td(&fx);
    let clean = td.tensor("input").unwrap().unsqueeze(0).unwrap();
    let corrupt = td
        .tensor(("patched", "input"))
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let mut td2 = TensorDict::new([1, 2]);
    td2.insert("input", clean).unwrap();
    td2.insert(("patched", "input"), corrupt).unwrap();
    let out = ActivationPatching::new(["transformer.h.0"])
        .prepare(&m)
        .unwrap()
        .run(&td2)
        .unwrap();
    let got = out.tensor(("patched", "output")).unwrap();
    assert_eq!(got.dims(), &[1, 2, 7, 101]);
    assert_close(
        "patched",
        &got.squeeze(0).unwrap(),
        &fx["out/patched/logits"],
        TOL,
    );
    let cached = ActivationCaching::new(r"transformer\.h\.0")
        .prepare(&m)
        .unwrap()
        .run(&td2)
        .unwrap();
    assert_eq!(
        cached.tensor(("cache", "transformer.h.0")).unwrap().dims(),
        &[1, 2, 7, 64]
    );
}

/// tdhook mutates the caller's dict; we return a new one.
#[test]
fn the_callers_dict_is_never_mutated() {
    let m = tiny();
    let fx = fixture("tiny_transformer", "patch_one");
    let td = input_td(&fx);
    let before = td.keys(true);
    ActivationPatching::new(["layers.0"])
        .prepare(&m)
        .unwrap()
        .run(&td)
        .unwrap();
    ActivationCaching::new(r"layers\.\d+")
        .prepare(&m)
        .unwrap()
        .run(&td)
        .unwrap();
    assert_eq!(td.keys(true), before);
}

#[test]
fn errors_name_the_problem() {
    let m = gpt2();
    // A pattern matching nothing lists the nearest paths.
    let e = ActivationCaching::new(r"transformer\.h\.9")
        .prepare(&m)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("transformer.h.0") && e.contains("whole path"),
        "{e}"
    );
    // An unknown patch path.
    let e = ActivationPatching::new(["transformer.h.0.mpl"])
        .prepare(&m)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("transformer.h.0.mlp"), "{e}");
    // Clean and corrupted of different shapes.
    let mut td = TensorDict::new([1]);
    td.insert("input", Tensor::new(&[[1u32, 2, 3]], &Device::Cpu).unwrap())
        .unwrap();
    td.insert(
        ("patched", "input"),
        Tensor::new(&[[1u32, 2]], &Device::Cpu).unwrap(),
    )
    .unwrap();
    let e = ActivationPatching::new(["transformer.h.0"])
        .prepare(&m)
        .unwrap()
        .run(&td)
        .unwrap_err();
    assert!(matches!(e, tdhook::Error::InputMismatch { .. }), "{e}");
    // Positive and negative of different shapes.
    let mut td = TensorDict::new([1]);
    td.insert(
        ("positive", "input"),
        Tensor::new(&[[1u32, 2, 3]], &Device::Cpu).unwrap(),
    )
    .unwrap();
    td.insert(
        ("negative", "input"),
        Tensor::new(&[[1u32, 2]], &Device::Cpu).unwrap(),
    )
    .unwrap();
    let e = ActivationAddition::new(["transformer.h.0"])
        .prepare(&m)
        .unwrap()
        .run(&td)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("positive/input") && e.contains("[1, 3]") && e.contains("[1, 2]"),
        "{e}"
    );
    // steer_fn returning a wrong shape.
    let mut td = TensorDict::new([1]);
    td.insert("input", Tensor::new(&[[1u32, 2, 3]], &Device::Cpu).unwrap())
        .unwrap();
    let e = SteeringVectors::new(["transformer.h.0"], |_, o| Ok(o.narrow(1, 0, 1)?))
        .prepare(&m)
        .unwrap()
        .run(&td)
        .unwrap_err();
    match e {
        tdhook::Error::ShapeMismatch {
            what,
            path,
            expected,
            got,
        } => {
            assert_eq!((what, path.as_str()), ("steer_fn", "transformer.h.0"));
            assert_eq!((expected, got), (vec![1, 3, 64], vec![1, 1, 64]));
        }
        e => panic!("{e}"),
    }
    // NaN in a steering vector.
    let mut vecs = TensorDict::unbatched();
    vecs.insert(
        "transformer.h.0",
        Tensor::new(&[f32::NAN; 64], &Device::Cpu).unwrap(),
    )
    .unwrap();
    let e = SteeringVectors::from_vectors(&vecs, 1.0).err().unwrap();
    assert!(matches!(e, tdhook::Error::NotFinite { .. }), "{e}");
}

/// Probing with tdhook's ProbeManager + MeanDifferenceClassifier: coef, intercept, accuracy and
/// predictions per `{path}_{direction}`, fit then predict.
#[test]
fn mean_difference_probing_equals_tdhook() {
    use tdhook::latent::Probing;
    use tdhook::latent::probing::{
        Estimator, MeanDifferenceClassifier, ProbeManager, StepType, metrics,
    };
    let m = tiny();
    let fx = fixture("tiny_transformer", "probing_mean_difference");
    let phase_td = |phase: &str| {
        let n = fx[&format!("{phase}/in/input")].dims()[0];
        let mut td = TensorDict::new([n]);
        td.insert("input", fx[&format!("{phase}/in/input")].clone())
            .unwrap();
        td.insert("labels", fx[&format!("{phase}/in/labels")].clone())
            .unwrap();
        td
    };
    let manager = ProbeManager::new(MeanDifferenceClassifier::new, metrics::classification);
    let mut probing = Probing::new(r"layers\.\d+$", manager.clone())
        .additional_keys(["labels"])
        .prepare(&m)
        .unwrap();
    let fit_out = probing.fit(&phase_td("fit")).unwrap();
    assert_close(
        "fit output",
        fit_out.tensor("output").unwrap(),
        &fx["fit/out/output"],
        TOL,
    );
    probing.predict(&phase_td("predict")).unwrap();
    let n_fit = fx["fit/in/input"].dims()[0];
    for layer in ["layers.0", "layers.1"] {
        let key = format!("{layer}_fwd");
        let coef = manager.coef(&key).unwrap();
        assert_close("coef", &coef, &fx[&format!("probe/{key}/coef")], TOL);
        let intercept = manager.intercept(&key).unwrap();
        assert_close(
            "intercept",
            &intercept,
            &fx[&format!("probe/{key}/intercept")],
            TOL,
        );
        for (phase, step) in [("fit", StepType::Fit), ("predict", StepType::Predict)] {
            let want = fx[&format!("results/{phase}/{key}/accuracy")]
                .to_scalar::<f32>()
                .unwrap() as f64;
            let got = manager.result(step, &key, "accuracy").unwrap();
            assert!(
                (got - want).abs() < 1e-6,
                "{phase} {key} accuracy {got} vs tdhook {want}"
            );
        }
        // Predictions on the held-out rows of the fixture's activation matrix.
        let x = fx[&format!("aux/X/{layer}")]
            .narrow(0, n_fit, fx["predict/in/input"].dims()[0])
            .unwrap();
        let est = manager.estimator(&key).unwrap();
        let pred = est
            .predict(&x)
            .unwrap()
            .to_dtype(candle_core::DType::I64)
            .unwrap();
        let want = &fx[&format!("results/predict/{key}/predictions")];
        assert_eq!(
            pred.to_vec1::<i64>().unwrap(),
            want.to_vec1::<i64>().unwrap(),
            "{key} predictions"
        );
    }
}
