//! Generation with a KV cache and hooks: equal to cache-free decoding, left padding, absolute
//! positions seen by hooks, per-request steering, scopes, sampling, concurrency, bad input.

mod common;

use candle_core::{D, DType, Device, Tensor};
use common::oracle_dir;
use std::sync::{Arc, Mutex};
use tdhook::generate::{
    BatchSteering, GenerateHooks, GenerateOptions, PAD_POSITION, Sampling, SteerScope,
    SteeringVector, generate,
};
use tdhook::latent::{ActivationAddition, HookedModel, TokenReduction};
use tdhook::models::gpt2::Gpt2;
use tdhook::prelude::*;

fn model() -> Gpt2 {
    Gpt2::load(oracle_dir("gpt2_tiny"), &Device::Cpu).unwrap()
}

fn opts(n: usize) -> GenerateOptions {
    GenerateOptions {
        max_new_tokens: n,
        ..Default::default()
    }
}

/// Greedy decoding by re-running the whole sequence each step, no cache: the reference.
fn naive_greedy<M: HookedModel>(
    model: &M,
    prompt: &[u32],
    n: usize,
    hooks: Option<&mut HookSet>,
) -> Vec<u32> {
    let mut seq = prompt.to_vec();
    let mut hooks = hooks;
    for _ in 0..n {
        let ids = Tensor::new(seq.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let logits = match hooks.as_deref_mut() {
            Some(h) => h.run(|hx| model.forward_hooked(&ids, hx)).unwrap(),
            None => model.forward_hooked(&ids, &mut Hx::none()).unwrap(),
        };
        let next = logits
            .get(0)
            .unwrap()
            .get(seq.len() - 1)
            .unwrap()
            .argmax(D::Minus1)
            .unwrap();
        seq.push(next.to_scalar::<u32>().unwrap());
    }
    seq[prompt.len()..].to_vec()
}

#[test]
fn kv_cache_generation_equals_cache_free_decoding() {
    let m = model();
    for prompt in [vec![5u32, 17, 42], vec![1], vec![99, 3, 3, 3, 7, 64]] {
        let got = generate(&m, std::slice::from_ref(&prompt), &opts(8), None).unwrap();
        assert_eq!(
            got[0],
            naive_greedy(&m, &prompt, 8, None),
            "prompt {prompt:?}"
        );
    }
}

#[test]
fn left_padded_batch_equals_each_row_alone() {
    let m = model();
    let prompts = vec![vec![5u32, 17, 42, 8, 9], vec![33], vec![7, 7, 1]];
    let batched = generate(&m, &prompts, &opts(6), None).unwrap();
    for (p, row) in prompts.iter().zip(&batched) {
        let alone = generate(&m, std::slice::from_ref(p), &opts(6), None).unwrap();
        assert_eq!(row, &alone[0], "prompt {p:?}");
    }
}

#[test]
fn hooks_see_absolute_positions_at_prefill_and_every_decode_step() {
    let m = model();
    let seen: Arc<Mutex<Vec<Vec<Vec<u32>>>>> = Arc::default();
    let s = seen.clone();
    let mut hooks = GenerateHooks::new(&m);
    let positions = hooks.positions();
    hooks
        .read("transformer.h.0", Direction::Fwd, move |_, _| {
            s.lock()
                .unwrap()
                .push(positions.get().unwrap().to_vec2::<u32>()?);
            Ok(())
        })
        .unwrap();
    generate(&m, &[vec![1, 2, 3], vec![4]], &opts(3), Some(&mut hooks)).unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(
        seen.len(),
        3,
        "prefill + 2 decode steps (the last token needs no forward)"
    );
    let p = PAD_POSITION;
    assert_eq!(seen[0], vec![vec![0, 1, 2], vec![p, p, 0]]);
    assert_eq!(seen[1], vec![vec![3], vec![1]]);
    assert_eq!(seen[2], vec![vec![4], vec![2]]);
}

fn steer_vec(m: &Gpt2, scale: f64) -> SteeringVector {
    let d = m.config().n_embd;
    let v = Tensor::arange(0f32, d as f32, &Device::Cpu)
        .unwrap()
        .sin()
        .unwrap();
    SteeringVector::new([("transformer.h.1", v)])
        .unwrap()
        .with_coefficient(scale)
}

#[test]
fn steered_generation_equals_cache_free_steered_decoding() {
    let m = model();
    let v = steer_vec(&m, 6.0);
    let prompt = vec![5u32, 17, 42];
    let mut hooks = GenerateHooks::new(&m);
    BatchSteering::uniform(v.clone(), 1)
        .install(&m, &mut hooks, std::slice::from_ref(&prompt))
        .unwrap();
    let got = generate(
        &m,
        std::slice::from_ref(&prompt),
        &opts(8),
        Some(&mut hooks),
    )
    .unwrap();
    // Reference: add the vector at every position of a full forward, no cache.
    let scaled = v.scaled().unwrap().remove(0).1;
    let mut ref_hooks = GenerateHooks::new(&m);
    ref_hooks
        .add("transformer.h.1", Direction::Fwd, move |_, t| {
            Ok(Some(t.broadcast_add(&scaled)?))
        })
        .unwrap();
    let want = naive_greedy(&m, &prompt, 8, Some(&mut ref_hooks));
    assert_eq!(got[0], want);
    let plain = generate(&m, std::slice::from_ref(&prompt), &opts(8), None).unwrap();
    assert_ne!(
        got[0], plain[0],
        "a coefficient of 6 changes the greedy continuation"
    );
}

#[test]
fn per_request_steering_rows_equal_their_own_runs() {
    let m = model();
    let v = steer_vec(&m, 1.0);
    let prompts = vec![vec![5u32, 17, 42], vec![9, 9], vec![1, 2, 3, 4]];
    let rows = vec![Some((0, 6.0)), None, Some((0, -4.0))];
    let mut hooks = GenerateHooks::new(&m);
    BatchSteering::new(vec![v.clone()], rows.clone(), SteerScope::All)
        .install(&m, &mut hooks, &prompts)
        .unwrap();
    let batched = generate(&m, &prompts, &opts(6), Some(&mut hooks)).unwrap();
    for (r, p) in prompts.iter().enumerate() {
        let mut h = GenerateHooks::new(&m);
        BatchSteering::new(vec![v.clone()], vec![rows[r]], SteerScope::All)
            .install(&m, &mut h, std::slice::from_ref(p))
            .unwrap();
        let alone = generate(&m, std::slice::from_ref(p), &opts(6), Some(&mut h)).unwrap();
        assert_eq!(batched[r], alone[0], "row {r}");
    }
}

#[test]
fn generated_scope_leaves_the_prompt_and_so_the_first_token_alone() {
    let m = model();
    let prompt = vec![5u32, 17, 42];
    let plain = generate(&m, std::slice::from_ref(&prompt), &opts(6), None).unwrap();
    let v = steer_vec(&m, 12.0);
    let run = |scope| {
        let mut h = GenerateHooks::new(&m);
        BatchSteering::new(vec![v.clone()], vec![Some((0, 1.0))], scope)
            .install(&m, &mut h, std::slice::from_ref(&prompt))
            .unwrap();
        generate(&m, std::slice::from_ref(&prompt), &opts(6), Some(&mut h))
            .unwrap()
            .remove(0)
    };
    let generated = run(SteerScope::Generated);
    assert_eq!(generated[0], plain[0][0], "prefill is not steered");
    assert_ne!(generated, plain[0], "later steps are");
    let prompt_only = run(SteerScope::Prompt);
    let all = run(SteerScope::All);
    assert_ne!(
        prompt_only, all,
        "steering the prompt only differs from steering everything"
    );
}

#[test]
fn seeded_sampling_is_reproducible_and_stop_tokens_stop() {
    let m = model();
    let sample = |seed| GenerateOptions {
        max_new_tokens: 10,
        sampling: Sampling::Sample {
            temperature: 1.5,
            top_k: Some(40),
            top_p: Some(0.95),
            seed,
        },
        ..Default::default()
    };
    let p = vec![vec![5u32, 17], vec![3]];
    let a = generate(&m, &p, &sample(1), None).unwrap();
    assert_eq!(a, generate(&m, &p, &sample(1), None).unwrap());
    assert_ne!(a, generate(&m, &p, &sample(2), None).unwrap());
    let greedy = generate(&m, &p[..1], &opts(10), None).unwrap().remove(0);
    let stop = greedy[3];
    let first = greedy.iter().position(|&t| t == stop).unwrap();
    let stopped = generate(
        &m,
        &p[..1],
        &GenerateOptions {
            stop_tokens: vec![stop],
            ..opts(10)
        },
        None,
    )
    .unwrap()
    .remove(0);
    assert_eq!(stopped, greedy[..=first].to_vec());
}

#[test]
fn eight_threads_with_different_steering_equal_their_serial_results() {
    let m = Arc::new(model());
    let prompts = vec![vec![5u32, 17, 42], vec![8, 1]];
    let run = |m: &Gpt2, coef: f64| {
        let mut h = GenerateHooks::new(m);
        BatchSteering::uniform(steer_vec(m, coef), 2)
            .install(m, &mut h, &prompts)
            .unwrap();
        generate(m, &prompts, &opts(6), Some(&mut h)).unwrap()
    };
    let serial: Vec<_> = (0..8).map(|i| run(&m, i as f64 - 4.0)).collect();
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let m = m.clone();
            let prompts = prompts.clone();
            std::thread::spawn(move || {
                let mut h = GenerateHooks::new(&*m);
                BatchSteering::uniform(steer_vec(&m, i as f64 - 4.0), 2)
                    .install(&*m, &mut h, &prompts)
                    .unwrap();
                generate(&*m, &prompts, &opts(6), Some(&mut h)).unwrap()
            })
        })
        .collect();
    for (i, t) in threads.into_iter().enumerate() {
        assert_eq!(t.join().unwrap(), serial[i], "thread {i}");
    }
    assert!(
        serial.windows(2).any(|w| w[0] != w[1]),
        "different steering gives different text"
    );
}

#[test]
fn bad_steering_is_a_typed_error_before_generation() {
    let m = model();
    let prompts = vec![vec![1u32, 2]];
    let install = |v: SteeringVector, rows: Vec<Option<(usize, f64)>>| {
        let mut h = GenerateHooks::new(&m);
        BatchSteering::new(vec![v], rows, SteerScope::All).install(&m, &mut h, &prompts)
    };
    let narrow = SteeringVector::new([(
        "transformer.h.1",
        Tensor::ones(7, DType::F32, &Device::Cpu).unwrap(),
    )])
    .unwrap();
    let e = install(narrow, vec![Some((0, 1.0))])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("transformer.h.1") && e.contains("[64]") && e.contains("[7]"),
        "{e}"
    );
    let missing = SteeringVector::new([(
        "transformer.h.7",
        Tensor::ones(64, DType::F32, &Device::Cpu).unwrap(),
    )])
    .unwrap();
    let e = install(missing, vec![Some((0, 1.0))])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("transformer.h.7") && e.contains("transformer.h.1"),
        "nearest paths listed: {e}"
    );
    let nan = Tensor::new(&[f32::NAN; 64], &Device::Cpu).unwrap();
    let e = SteeringVector::new([("transformer.h.1", nan)]).unwrap_err();
    assert!(matches!(e, tdhook::Error::NotFinite { .. }), "{e}");
    let ok = steer_vec(&m, 1.0);
    let e = install(ok, vec![Some((0, 1.0)), None])
        .unwrap_err()
        .to_string();
    assert!(e.contains("2 row(s)") && e.contains("1 prompt(s)"), "{e}");
}

#[test]
fn steering_vector_arithmetic_round_trip_and_addition_conversion() {
    let m = model();
    let mut td = TensorDict::new([2]);
    td.insert(
        ("positive", "input"),
        Tensor::new(&[[1u32, 2, 3], [4, 5, 6]], &Device::Cpu).unwrap(),
    )
    .unwrap();
    td.insert(
        ("negative", "input"),
        Tensor::new(&[[7u32, 8, 9], [4, 5, 9]], &Device::Cpu).unwrap(),
    )
    .unwrap();
    let out = ActivationAddition::new(["transformer.h.1"])
        .reduction(TokenReduction::LastToken)
        .prepare(&m)
        .unwrap()
        .run(&td)
        .unwrap();
    let v =
        SteeringVector::from_addition(out.get_dict("steer").unwrap(), TokenReduction::LastToken)
            .unwrap()
            .with_coefficient(2.5)
            .with_scope(SteerScope::Generated);
    assert_eq!(v.get("transformer.h.1").unwrap().dims(), &[64]);
    assert_eq!(v.spec.reduction, "last_token");
    let dir = std::env::temp_dir().join(format!("tdhook-sv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("v.safetensors");
    v.save(&file).unwrap();
    let back = SteeringVector::load(&file, &Device::Cpu).unwrap();
    assert_eq!(back.spec, v.spec);
    let diff = (back.get("transformer.h.1").unwrap() - v.get("transformer.h.1").unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert_eq!(diff, 0.0);
    let double = (v.clone() + v.clone()).unwrap();
    let zero = (double - (v.clone() * 2.0).unwrap()).unwrap();
    let z = zero
        .get("transformer.h.1")
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(z < 1e-6);
    std::fs::remove_dir_all(&dir).ok();
}

/// One generation loop for both families: Llama's KV-cache decoding equals re-running the
/// whole sequence, with and without left padding, steered too.
#[test]
fn llama_shares_the_generation_loop_and_equals_cache_free_decoding() {
    use tdhook::models::llama::Llama;
    let m = Llama::load(oracle_dir("llama_tiny"), &Device::Cpu).unwrap();
    let naive =
        |prompt: &[u32], n: usize, hooks: Option<&mut HookSet>| naive_greedy(&m, prompt, n, hooks);
    let prompts = vec![vec![5u32, 17, 42, 8], vec![33, 2]];
    let batched = generate(&m, &prompts, &opts(6), None).unwrap();
    for (p, row) in prompts.iter().zip(&batched) {
        assert_eq!(row, &naive(p, 6, None), "prompt {p:?}");
    }
    let d = m.config().hidden_size;
    let v = Tensor::arange(0f32, d as f32, &Device::Cpu)
        .unwrap()
        .cos()
        .unwrap();
    let sv = SteeringVector::new([("model.layers.0", v.clone())])
        .unwrap()
        .with_coefficient(5.0);
    let mut hooks = GenerateHooks::new(&m);
    BatchSteering::uniform(sv, 1)
        .install(&m, &mut hooks, &prompts[..1])
        .unwrap();
    let steered = generate(&m, &prompts[..1], &opts(6), Some(&mut hooks)).unwrap();
    let add = (v * 5.0).unwrap();
    let mut ref_hooks = GenerateHooks::new(&m);
    ref_hooks
        .add("model.layers.0", Direction::Fwd, move |_, t| {
            Ok(Some(t.broadcast_add(&add)?))
        })
        .unwrap();
    assert_eq!(steered[0], naive(&prompts[0], 6, Some(&mut ref_hooks)));
}
