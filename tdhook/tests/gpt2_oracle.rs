//! The reference GPT-2 against `transformers` on the same weights (fixtures from
//! `tests/oracle/gen_gpt2.py`): paths, every module output, attention, logits, gradients.

mod common;

use candle_core::{D, Device, Tensor};
use common::{assert_close, load_fixture, oracle_dir};
use std::collections::HashMap;
use tdhook::models::gpt2::Gpt2;
use tdhook::prelude::*;

fn model() -> Gpt2 {
    Gpt2::load(oracle_dir("gpt2_tiny"), &Device::Cpu).expect("load tiny gpt2")
}

#[test]
fn hook_paths_and_classes_equal_pytorch_named_modules() {
    let text = std::fs::read_to_string(oracle_dir("gpt2_tiny").join("named_modules.json")).unwrap();
    let torch: Vec<(String, String)> = serde_json::from_str(&text).unwrap();
    let torch: Vec<(String, String)> = torch.into_iter().filter(|(n, _)| !n.is_empty()).collect();
    let ours: Vec<(String, String)> = model()
        .hook_points()
        .into_iter()
        .filter(|p| p.kind != tdhook::PointKind::Marker)
        .map(|p| (p.path, p.class.to_string()))
        .collect();
    assert_eq!(ours, torch);
}

#[test]
fn every_module_output_attention_and_logits_equal_transformers() -> tdhook::Result<()> {
    let fx = load_fixture("gpt2_tiny", "expected.safetensors");
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
    assert_close("logits", &logits, &fx["logits"], 1e-5);
    let mut compared = 0;
    for (key, expected) in &fx {
        if let Some(path) = key.strip_prefix("module/") {
            let got = seen
                .get(path)
                .unwrap_or_else(|| panic!("no hook fired at {path}"));
            assert_close(path, got, expected, 1e-5);
            compared += 1;
        }
    }
    assert_eq!(
        compared, 30,
        "every module output of the fixture is compared"
    );
    for layer in 0..2 {
        let got = &seen[&format!("transformer.h.{layer}.attn.hook_pattern")];
        assert_close("attention", got, &fx[&format!("attn_probs/{layer}")], 1e-5);
    }
    // Hooks off gives the same logits as hooks on.
    let plain = model.forward(ids, &mut Hx::none())?;
    assert_close("hooks off", &plain, &logits, 0.0);
    Ok(())
}

#[test]
fn gradients_at_block_outputs_equal_torch_autograd() -> tdhook::Result<()> {
    let fx = load_fixture("gpt2_tiny", "expected.safetensors");
    let model = model();
    let mut hooks = HookSet::new(&model);
    hooks.grad(r"transformer\.h\.\d+|transformer\.ln_f")?;
    let logits = hooks.run(|hx| model.forward(&fx["input_ids"], hx))?;
    let loss = logits.log_sum_exp(D::Minus1)?.sum_all()?;
    assert_close("loss", &loss, &fx["grad_loss"], 1e-5);
    loss.backward()?;
    let grads = hooks.take_grads();
    assert_eq!(grads.len(), 3, "one gradient per hooked point");
    for g in &grads {
        assert_eq!(g.occurrence, 0);
        assert_close(&g.path, &g.grad, &fx[&format!("grad/{}", g.path)], 1e-4);
    }
    assert!(hooks.take_grads().is_empty(), "take_grads drains");
    Ok(())
}
