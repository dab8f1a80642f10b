//! Behaviour of the latent methods beyond tdhook parity: token selection, cache persistence,
//! typed faces agreeing with the dict face, steering through ActivationAddition in one call.

mod common;

use candle_core::{Device, Tensor};
use common::{assert_close, oracle_dir};
use tdhook::latent::{
    ActivationAddition, ActivationCaching, ActivationPatching, SteeringVectors, TokenReduction,
    TokenSelect,
};
use tdhook::models::gpt2::Gpt2;
use tdhook::prelude::*;

fn model() -> Gpt2 {
    Gpt2::load(oracle_dir("gpt2_tiny"), &Device::Cpu).unwrap()
}

fn td(ids: &[[u32; 5]]) -> TensorDict {
    let mut td = TensorDict::new([ids.len()]);
    let flat: Vec<u32> = ids.iter().flatten().copied().collect();
    td.insert(
        "input",
        Tensor::from_vec(flat, (ids.len(), 5), &Device::Cpu).unwrap(),
    )
    .unwrap();
    td
}

#[test]
fn token_selection_equals_slicing_the_full_cache() {
    let m = model();
    let input = td(&[[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]]);
    let full = ActivationCaching::new(r"transformer\.h\.\d+")
        .prepare(&m)
        .unwrap()
        .run(&input)
        .unwrap();
    let full0 = full.tensor(("cache", "transformer.h.0")).unwrap();
    for (sel, want) in [
        (TokenSelect::Last, full0.narrow(1, 4, 1).unwrap()),
        (TokenSelect::Range(1..3), full0.narrow(1, 1, 2).unwrap()),
        (
            TokenSelect::Indices(vec![4, 0]),
            Tensor::cat(
                &[
                    full0.narrow(1, 4, 1).unwrap(),
                    full0.narrow(1, 0, 1).unwrap(),
                ],
                1,
            )
            .unwrap(),
        ),
    ] {
        let out = ActivationCaching::new(r"transformer\.h\.\d+")
            .tokens(sel.clone())
            .to_device(Device::Cpu)
            .prepare(&m)
            .unwrap()
            .run(&input)
            .unwrap();
        assert_close(
            &format!("{sel:?}"),
            out.tensor(("cache", "transformer.h.0")).unwrap(),
            &want,
            0.0,
        );
    }
    let e = ActivationCaching::new(r"transformer\.h\.0")
        .tokens(TokenSelect::Range(3..9))
        .prepare(&m)
        .unwrap()
        .run(&input)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("transformer.h.0") && e.contains("5 positions"),
        "{e}"
    );
}

#[test]
fn clear_cache_false_keeps_entries_across_runs_and_cache_key_none_leaves_it_out() {
    let m = model();
    let mut initial = TensorDict::unbatched();
    initial
        .insert(
            "extra",
            Tensor::ones(3, candle_core::DType::F32, &Device::Cpu).unwrap(),
        )
        .unwrap();
    for (clear, want) in [(false, 3), (true, 2)] {
        let mut c = ActivationCaching::new(r"transformer\.h\.\d+")
            .cache(initial.clone())
            .clear_cache(clear)
            .prepare(&m)
            .unwrap();
        c.run(&td(&[[1, 2, 3, 4, 5]])).unwrap();
        let second = c.run(&td(&[[9, 9, 9, 9, 9]])).unwrap();
        let keys = second.get_dict("cache").unwrap().keys(true);
        assert_eq!(keys.len(), want, "clear_cache({clear}): {keys:?}");
        assert_eq!(
            second.get_dict("cache").unwrap().get("extra").is_some(),
            !clear
        );
    }
    let none = ActivationCaching::new(r"transformer\.h\.\d+")
        .cache_key(None::<&str>)
        .prepare(&m)
        .unwrap()
        .run(&td(&[[1, 2, 3, 4, 5]]))
        .unwrap();
    assert!(none.get_dict("cache").is_none());
    assert!(none.get("output").is_some());
}

#[test]
fn typed_faces_agree_with_the_dict_face() {
    let m = model();
    let ids = Tensor::new(&[[1u32, 2, 3, 4, 5]], &Device::Cpu).unwrap();
    let corrupt = Tensor::new(&[[1u32, 2, 9, 4, 5]], &Device::Cpu).unwrap();
    let mut c = ActivationCaching::new(Gpt2::path().transformer().h(1).mlp())
        .prepare(&m)
        .unwrap();
    let (out, cache) = c.cache(&ids).unwrap();
    let mut d = td(&[[1, 2, 3, 4, 5]]);
    let via_td = c.run(&d).unwrap();
    assert_close("output", &out, via_td.tensor("output").unwrap(), 0.0);
    assert_close(
        "cache",
        cache.tensor("transformer.h.1.mlp").unwrap(),
        via_td.tensor(("cache", "transformer.h.1.mlp")).unwrap(),
        0.0,
    );
    let mut p = ActivationPatching::new([Gpt2::path().transformer().h(0)])
        .prepare(&m)
        .unwrap();
    let (clean, patched) = p.patch(&ids, &corrupt).unwrap();
    d.insert(("patched", "input"), corrupt).unwrap();
    let via_td = p.run(&d).unwrap();
    assert_close("clean", &clean, via_td.tensor("output").unwrap(), 0.0);
    assert_close(
        "patched",
        &patched,
        via_td.tensor(("patched", "output")).unwrap(),
        0.0,
    );
}

#[test]
fn addition_reductions_and_coefficient_then_steering_in_one_call() {
    let m = model();
    let mut d = TensorDict::new([2]);
    d.insert(
        ("positive", "input"),
        Tensor::new(&[[1u32, 2, 3, 4], [5, 6, 7, 8]], &Device::Cpu).unwrap(),
    )
    .unwrap();
    d.insert(
        ("negative", "input"),
        Tensor::new(&[[9u32, 2, 3, 4], [5, 6, 7, 1]], &Device::Cpu).unwrap(),
    )
    .unwrap();
    let per_pos = ActivationAddition::new(["transformer.h.1"])
        .prepare(&m)
        .unwrap()
        .run(&d)
        .unwrap();
    let v = per_pos
        .tensor(("steer", "transformer.h.1"))
        .unwrap()
        .clone(); // [T, D]
    for (red, want) in [
        (TokenReduction::LastToken, v.get(3).unwrap()),
        (TokenReduction::MeanTokens, v.mean(0).unwrap()),
    ] {
        let out = ActivationAddition::new(["transformer.h.1"])
            .reduction(red)
            .coefficient(3.0)
            .prepare(&m)
            .unwrap()
            .run(&d)
            .unwrap();
        assert_close(
            &format!("{red:?}"),
            out.tensor(("steer", "transformer.h.1")).unwrap(),
            &(want * 3.0).unwrap(),
            1e-6,
        );
    }
    // Applying through SteeringVectors equals adding the vector by hand.
    let steer = ActivationAddition::new(["transformer.h.1"])
        .prepare(&m)
        .unwrap()
        .reduction(TokenReduction::LastToken)
        .coefficient(2.0)
        .steering(&d)
        .unwrap();
    let ids = Tensor::new(&[[3u32, 1, 4, 1, 5, 9]], &Device::Cpu).unwrap();
    let got = steer.prepare(&m).unwrap().forward(&ids).unwrap();
    let add = (v.get(3).unwrap() * 2.0).unwrap();
    let by_hand = SteeringVectors::new(["transformer.h.1"], move |_, o| Ok(o.broadcast_add(&add)?))
        .prepare(&m)
        .unwrap()
        .forward(&ids)
        .unwrap();
    assert_close("steered", &got, &by_hand, 1e-6);
    let plain = m.forward(&ids, &mut Hx::none()).unwrap();
    assert!(
        common::rel_err(&got, &plain) > 1e-3,
        "steering changed the logits"
    );
}

/// A reference model built over a `VarMap` (the doc examples' way to get one) is initialised as
/// transformers would: its logits depend on the input. (Zero-initialised norms and projections
/// once made every such model output zeros, so examples asserted shapes of a silent model.)
#[test]
fn models_built_over_a_var_map_are_not_silent() -> tdhook::Result<()> {
    use candle_core::DType;
    use tdhook::models::gpt2::Gpt2Config;
    use tdhook::models::llama::{Llama, LlamaConfig};
    let dev = Device::Cpu;
    let ids_a = Tensor::new(&[[1u32, 2, 3]], &dev)?;
    let ids_b = Tensor::new(&[[4u32, 5, 6]], &dev)?;
    let spread = |a: &Tensor, b: &Tensor| -> tdhook::Result<(f32, f32)> {
        let scale = a.abs()?.max_all()?.to_scalar::<f32>()?;
        let diff = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
        Ok((scale, diff))
    };
    let vm = candle_nn::VarMap::new();
    let gpt2 = Gpt2::new(
        Gpt2Config::new(50, 16, 32, 2, 4),
        candle_nn::VarBuilder::from_varmap(&vm, DType::F32, &dev),
    )?;
    let (scale, diff) = spread(
        &gpt2.forward(&ids_a, &mut Hx::none())?,
        &gpt2.forward(&ids_b, &mut Hx::none())?,
    )?;
    assert!(
        scale > 0.0 && diff > 0.0,
        "GPT-2: |logits| {scale}, input effect {diff}"
    );
    let vm = candle_nn::VarMap::new();
    let llama = Llama::new(
        LlamaConfig::new(50, 32, 64, 2, 4),
        candle_nn::VarBuilder::from_varmap(&vm, DType::F32, &dev),
    )?;
    let (scale, diff) = spread(
        &llama.forward(&ids_a, &mut Hx::none())?,
        &llama.forward(&ids_b, &mut Hx::none())?,
    )?;
    assert!(
        scale > 0.0 && diff > 0.0,
        "Llama: |logits| {scale}, input effect {diff}"
    );
    Ok(())
}
