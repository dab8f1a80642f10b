//! The reference Llama against `transformers` and Python tdhook on the same weights (fixtures from
//! `tests/oracle/gen_llama.py`): paths, every module output, attention, logits, gradients,
//! sharded and tied checkpoints, rope scaling, and the four latent methods.

mod common;

use candle_core::{D, DType, Device, IndexOp, Tensor};
use common::{assert_close, load_fixture, oracle_dir, rel_err};
use std::collections::HashMap;
use tdhook::latent::{ActivationAddition, ActivationCaching, ActivationPatching, SteeringVectors};
use tdhook::models::llama::{Llama, LlamaConfig, RotaryEmbedding};
use tdhook::prelude::*;

const DIR: &str = "llama_tiny";

fn model() -> Llama {
    Llama::load(oracle_dir(DIR), &Device::Cpu).expect("load tiny llama")
}

/// `assert_close` that also reports the error, so `--nocapture` shows the margins.
fn check(what: &str, got: &Tensor, expected: &Tensor, tol: f32) -> f32 {
    assert_close(what, got, expected, tol);
    rel_err(got, expected)
}

#[test]
fn hook_paths_and_classes_equal_pytorch_named_modules() {
    let text = std::fs::read_to_string(oracle_dir(DIR).join("named_modules.json")).unwrap();
    let torch: Vec<(String, String)> = serde_json::from_str(&text).unwrap();
    assert_eq!(torch[0], (String::new(), "LlamaForCausalLM".to_string()));
    let torch: Vec<(String, String)> = torch.into_iter().filter(|(n, _)| !n.is_empty()).collect();
    let model = model();
    let points = model.hook_points();
    let ours: Vec<(String, String)> = points
        .iter()
        .filter(|p| p.kind != tdhook::PointKind::Marker)
        .map(|p| (p.path.clone(), p.class.to_string()))
        .collect();
    assert_eq!(ours, torch);
    let markers: Vec<&str> = points
        .iter()
        .filter(|p| p.kind == tdhook::PointKind::Marker)
        .map(|p| p.path.as_str())
        .collect();
    let mut want = Vec::new();
    for i in 0..2 {
        want.extend([
            format!("model.layers.{i}.hook_resid_pre"),
            format!("model.layers.{i}.self_attn.hook_pattern"),
            format!("model.layers.{i}.self_attn.hook_z"),
            format!("model.layers.{i}.hook_resid_post"),
        ]);
    }
    assert_eq!(markers, want);
}

#[test]
fn every_module_output_attention_and_logits_equal_transformers() -> tdhook::Result<()> {
    let fx = load_fixture(DIR, "expected.safetensors");
    let model = model();
    let ids = &fx["input_ids"];
    let mut seen: HashMap<String, Tensor> = HashMap::new();
    let mut hooks = HookSet::new(&model);
    hooks.read(".*", Direction::Fwd, |ev, t| {
        assert_eq!(ev.occurrence, 0, "{} called twice", ev.path);
        seen.insert(ev.path.to_string(), t.clone());
        Ok(())
    })?;
    let logits = hooks.run(|hx| model.forward(ids, hx))?;
    drop(hooks);
    let mut worst = check("logits", &logits, &fx["logits"], 1e-5);
    let mut compared = 0;
    for (key, expected) in &fx {
        if let Some(path) = key.strip_prefix("module/") {
            let got = seen
                .get(path)
                .unwrap_or_else(|| panic!("no hook fired at {path}"));
            worst = worst.max(check(path, got, expected, 1e-5));
            compared += 1;
        }
    }
    assert_eq!(
        compared, 31,
        "every module output of the fixture is compared"
    );
    assert!(
        !seen.contains_key("model.layers"),
        "the list is never called"
    );
    for layer in 0..2 {
        let p = format!("model.layers.{layer}");
        let got = &seen[&format!("{p}.self_attn.hook_pattern")];
        worst = worst.max(check(
            "attention",
            got,
            &fx[&format!("attn_probs/{layer}")],
            1e-5,
        ));
        // The markers: residual stream in and out, per-head outputs before o_proj.
        let resid_in = if layer == 0 {
            &fx["module/model.embed_tokens"]
        } else {
            &fx["module/model.layers.0"]
        };
        assert_close(
            "resid_pre",
            &seen[&format!("{p}.hook_resid_pre")],
            resid_in,
            1e-5,
        );
        assert_close(
            "resid_post",
            &seen[&format!("{p}.hook_resid_post")],
            &seen[&p],
            0.0,
        );
        let z = &seen[&format!("{p}.self_attn.hook_z")];
        assert_eq!(z.dims(), &[2, 7, 4, 16]);
        let o_proj = model.model.layers[layer].self_attn.o_proj.clone();
        let y = candle_core::Module::forward(&o_proj, &z.reshape((2, 7, 64))?)?;
        assert_close(
            "o_proj(hook_z)",
            &y,
            &fx[&format!("module/{p}.self_attn.o_proj")],
            1e-5,
        );
    }
    eprintln!("largest relative error over logits, 31 module outputs and attention: {worst:e}");
    // Hooks off gives the same logits as hooks on.
    let plain = model.forward(ids, &mut Hx::none())?;
    assert_close("hooks off", &plain, &logits, 0.0);
    Ok(())
}

#[test]
fn gradients_at_layer_outputs_equal_torch_autograd() -> tdhook::Result<()> {
    let fx = load_fixture(DIR, "expected.safetensors");
    let model = model();
    let mut hooks = HookSet::new(&model);
    hooks.grad(r"model\.layers\.\d+|model\.norm")?;
    let logits = hooks.run(|hx| model.forward(&fx["input_ids"], hx))?;
    let loss = logits.log_sum_exp(D::Minus1)?.sum_all()?;
    assert_close("loss", &loss, &fx["grad_loss"], 1e-5);
    loss.backward()?;
    let grads = hooks.take_grads();
    assert_eq!(grads.len(), 3, "one gradient per hooked point");
    let mut worst = 0f32;
    for g in &grads {
        assert_eq!(g.occurrence, 0);
        worst = worst.max(check(
            &g.path,
            &g.grad,
            &fx[&format!("grad/{}", g.path)],
            1e-4,
        ));
    }
    eprintln!("largest relative gradient error: {worst:e}");
    Ok(())
}

#[test]
fn differentiable_paths_equal_fused_paths() -> tdhook::Result<()> {
    // A gradient hook makes everything downstream of layer 0 track ops: RMSNorm, rope and
    // softmax take their op-by-op forms there. Logits must not change.
    let fx = load_fixture(DIR, "expected.safetensors");
    let model = model();
    let mut hooks = HookSet::new(&model);
    hooks.grad("model.embed_tokens")?;
    let logits = hooks.run(|hx| model.forward(&fx["input_ids"], hx))?;
    assert!(logits.track_op());
    let e = check("logits (differentiable path)", &logits, &fx["logits"], 1e-5);
    eprintln!("differentiable-path logits relative error: {e:e}");
    Ok(())
}

#[test]
fn sharded_checkpoint_gives_identical_logits() -> tdhook::Result<()> {
    let fx = load_fixture(DIR, "expected.safetensors");
    let dir = oracle_dir("llama_tiny_sharded");
    assert!(!dir.join("model.safetensors").exists());
    let sharded = Llama::load(&dir, &Device::Cpu)?;
    let single = model();
    let ids = &fx["input_ids"];
    let a = sharded.forward(ids, &mut Hx::none())?;
    let b = single.forward(ids, &mut Hx::none())?;
    assert_close("sharded vs single file", &a, &b, 0.0);
    Ok(())
}

#[test]
fn tied_and_untied_embeddings() -> tdhook::Result<()> {
    let dev = Device::Cpu;
    let fx = load_fixture(DIR, "expected.safetensors");
    let config = Llama::read_config(oracle_dir(DIR))?;
    assert!(!config.tie_word_embeddings);
    let mut tensors =
        candle_core::safetensors::load(oracle_dir(DIR).join("model.safetensors"), &dev)?;

    // Untied (the fixture): lm_head is its own weight.
    let untied = Llama::from_tensors(config.clone(), tensors.clone(), DType::F32, &dev)?;
    assert_ne!(
        untied.lm_head.weight().id(),
        untied.model.embed_tokens.embeddings().id()
    );

    // Tied: lm_head.weight is not read; the unembedding is embed_tokens' tensor.
    let lm_head = tensors.remove("lm_head.weight").unwrap();
    let tied_config = LlamaConfig {
        tie_word_embeddings: true,
        ..config.clone()
    };
    let tied = Llama::from_tensors(tied_config.clone(), tensors.clone(), DType::F32, &dev)?;
    assert_eq!(
        tied.lm_head.weight().id(),
        tied.model.embed_tokens.embeddings().id()
    );
    let ids = &fx["input_ids"];
    let h = tied.model.forward(ids, &mut Hx::none())?;
    let logits = tied.forward(ids, &mut Hx::none())?;
    let embed = tied.model.embed_tokens.embeddings();
    let want = h.broadcast_matmul(&embed.t()?)?;
    assert_close("tied logits = h · Eᵀ", &logits, &want, 1e-6);
    // A stray lm_head.weight in a tied checkpoint is ignored, as in transformers.
    let mut with_head = tensors.clone();
    with_head.insert("lm_head.weight".into(), lm_head);
    let tied2 = Llama::from_tensors(tied_config, with_head, DType::F32, &dev)?;
    assert_eq!(
        tied2.lm_head.weight().id(),
        tied2.model.embed_tokens.embeddings().id()
    );

    // Untied config without lm_head.weight: an error, not a silent tie.
    let err = Llama::from_tensors(config, tensors, DType::F32, &dev).unwrap_err();
    assert!(err.to_string().contains("lm_head.weight"), "{err}");
    Ok(())
}

#[test]
fn rope_scaling_equals_transformers() -> tdhook::Result<()> {
    let fx = load_fixture(DIR, "expected.safetensors");
    let text = std::fs::read_to_string(oracle_dir(DIR).join("rope_configs.json")).unwrap();
    let configs: HashMap<String, LlamaConfig> = serde_json::from_str(&text).unwrap();
    assert_eq!(configs.len(), 2);
    for (name, config) in &configs {
        let rot = RotaryEmbedding::new(config, &Device::Cpu)?;
        let inv = &fx[&format!("rope/{name}/inv_freq")];
        let e_inv = check(&format!("{name} inv_freq"), rot.inv_freq(), inv, 1e-6);
        let x = Tensor::zeros(1, DType::F32, &Device::Cpu)?;
        let pos = &fx[&format!("rope/{name}/positions")];
        let (cos, sin) = rot.forward(&x, pos, &mut Hx::none())?;
        let e_cos = check(
            &format!("{name} cos"),
            &cos,
            &fx[&format!("rope/{name}/cos")],
            1e-5,
        );
        let e_sin = check(
            &format!("{name} sin"),
            &sin,
            &fx[&format!("rope/{name}/sin")],
            1e-5,
        );
        eprintln!(
            "rope {name}: inv_freq {e_inv:e}, cos {e_cos:e}, sin {e_sin:e} (positions to 9000)"
        );
    }
    // Unsupported rope types are refused up front.
    let mut bad = configs["linear"].clone();
    bad.rope_scaling = Some(serde_json::json!({"type": "yarn", "factor": 4.0}));
    let vb = candle_nn::VarBuilder::zeros(DType::F32, &Device::Cpu);
    let err = Llama::new(bad, vb).unwrap_err();
    assert!(err.to_string().contains("yarn"), "{err}");
    Ok(())
}

#[test]
fn bf16_weights_stay_close_to_f32() -> tdhook::Result<()> {
    let fx = load_fixture(DIR, "expected.safetensors");
    let model = Llama::load_with_dtype(oracle_dir(DIR), DType::BF16, &Device::Cpu)?;
    let logits = model.forward(&fx["input_ids"], &mut Hx::none())?;
    assert_eq!(logits.dtype(), DType::BF16);
    let e = rel_err(&logits.to_dtype(DType::F32)?, &fx["logits"]);
    assert!(e < 0.05, "bf16 logits relative error {e}");
    Ok(())
}

/// f16 overflows −1e30 (the generation mask's floor for disallowed keys) to −inf: a padding
/// query row, allowed nothing, then softmaxes into NaN, and the NaN spreads through the pads'
/// values into every row. The scores are masked in f32, so a left-padded f16 batch decodes
/// as each row alone does.
#[test]
fn f16_left_padded_batch_equals_each_row_alone() -> tdhook::Result<()> {
    use tdhook::generate::{GenerateOptions, generate};
    let model = Llama::load_with_dtype(oracle_dir(DIR), DType::F16, &Device::Cpu)?;
    let prompts = vec![vec![5u32, 17, 42, 8, 9], vec![33]];
    let opts = GenerateOptions {
        max_new_tokens: 4,
        ..Default::default()
    };
    let batched = generate(&model, &prompts, &opts, None)?;
    for (p, row) in prompts.iter().zip(&batched) {
        let alone = generate(&model, std::slice::from_ref(p), &opts, None)?;
        assert_eq!(row, &alone[0], "prompt {p:?}");
    }
    Ok(())
}

// ---- Python tdhook 0.3.0 on the same model (tests/oracle/llama_tiny/tdhook_*.safetensors) ----

/// The fixture's `in/<a>/<b>` tensors as a TensorDict (tdhook's `input_ids` / `logits` are
/// `input` / `output` here).
fn input_dict(fx: &HashMap<String, Tensor>) -> TensorDict {
    let mut td = TensorDict::new([2]);
    for (key, t) in fx {
        if let Some(k) = key.strip_prefix("in/") {
            td.insert(rust_key(k), t.clone()).unwrap();
        }
    }
    td
}

fn rust_key(fixture_key: &str) -> Vec<String> {
    fixture_key
        .split('/')
        .map(|s| match s {
            "input_ids" => "input".to_string(),
            "logits" => "output".to_string(),
            s => s.to_string(),
        })
        .collect()
}

/// Every `out/...` tensor of the fixture equals the Rust output's entry (by content).
fn compare_outputs(case: &str, fx: &HashMap<String, Tensor>, out: &TensorDict) -> f32 {
    let mut worst = 0f32;
    let mut n = 0;
    for (key, expected) in fx {
        let Some(k) = key.strip_prefix("out/") else {
            continue;
        };
        let got = out.get(rust_key(k)).unwrap_or_else(|| {
            panic!(
                "{case}: the Rust output has no `{k}`; it has {:?}",
                out.keys(true)
            )
        });
        if expected.dtype() == DType::I64 {
            let got = got
                .to_dtype(DType::I64)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<i64>()
                .unwrap();
            assert_eq!(
                got,
                expected.flatten_all().unwrap().to_vec1::<i64>().unwrap(),
                "{case}: {k}"
            );
        } else {
            worst = worst.max(check(&format!("{case}: {k}"), got, expected, 1e-5));
        }
        n += 1;
    }
    assert!(n >= 1, "{case}: the fixture has no output");
    eprintln!("{case}: {n} outputs equal tdhook's, largest relative error {worst:e}");
    worst
}

#[test]
fn tdhook_activation_caching() -> tdhook::Result<()> {
    let fx = load_fixture(DIR, "tdhook_cache_layers.safetensors");
    let model = model();
    let out = ActivationCaching::new(r"model\.layers\.\d+")
        .prepare(&model)?
        .run(&input_dict(&fx))?;
    assert_eq!(out.get_dict("cache").unwrap().keys(true).len(), 2);
    compare_outputs("cache_layers", &fx, &out);
    Ok(())
}

#[test]
fn tdhook_activation_patching() -> tdhook::Result<()> {
    let fx = load_fixture(DIR, "tdhook_patch_layer.safetensors");
    let model = model();
    let out = ActivationPatching::new(["model.layers.0"])
        .prepare(&model)?
        .run(&input_dict(&fx))?;
    compare_outputs("patch_layer", &fx, &out);
    // The patch changed something: the patched run is neither the clean nor the corrupted one.
    let corrupted = model.forward(&fx["in/patched/input_ids"], &mut Hx::none())?;
    assert!(rel_err(out.tensor(("patched", "output"))?, &corrupted) > 1e-3);
    Ok(())
}

#[test]
fn tdhook_steering_vectors() -> tdhook::Result<()> {
    let fx = load_fixture(DIR, "tdhook_steer_layer.safetensors");
    let model = model();
    let alpha = f64::from(fx["aux/alpha"].to_scalar::<f32>()?);
    let v = fx["aux/v/model.layers.0"].clone();
    let scaled = (&v * alpha)?;
    let steer = SteeringVectors::new(["model.layers.0"], move |_path, out| {
        Ok(out.broadcast_add(&scaled)?)
    });
    let out = steer.prepare(&model)?.run(&input_dict(&fx))?;
    compare_outputs("steer_layer", &fx, &out);
    // The same through from_vectors.
    let mut vectors = TensorDict::unbatched();
    vectors.insert("model.layers.0", v)?;
    let out = SteeringVectors::from_vectors(&vectors, alpha)?
        .prepare(&model)?
        .run(&input_dict(&fx))?;
    compare_outputs("steer_layer (from_vectors)", &fx, &out);
    Ok(())
}

#[test]
fn tdhook_activation_addition() -> tdhook::Result<()> {
    let fx = load_fixture(DIR, "tdhook_addition_layer.safetensors");
    let model = model();
    let out = ActivationAddition::new(["model.layers.0"])
        .prepare(&model)?
        .run(&input_dict(&fx))?;
    compare_outputs("addition_layer", &fx, &out);
    assert_eq!(out.tensor(("steer", "model.layers.0"))?.dims(), &[7, 64]);
    let _ = fx["out/steer/model.layers.0"].i(0)?;
    Ok(())
}
