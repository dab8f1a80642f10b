//! Steering during generation on a small random GPT-2.
//!
//! `ActivationAddition` turns a batch of "positive" and "negative" token prompts into a steering
//! vector at `transformer.h.0` (mean over the batch and the tokens of positive − negative
//! activations). The vector becomes a `SteeringVector`, and `BatchSteering` applies it inside one
//! greedy `generate` call with a different setting per row: pushed towards the positive prompts,
//! pushed away from them, not steered at all, and steered with coefficient 0. The unsteered and
//! zero-coefficient rows must generate exactly what plain generation does.
//!
//! Run it with:
//!
//! ```text
//! cargo run -p tdhook-suite --example steer_generate
//! ```

use anyhow::{Result, ensure};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use tdhook::generate::{
    BatchSteering, GenerateHooks, GenerateOptions, Sampling, SteerScope, SteeringVector, generate,
};
use tdhook::latent::{ActivationAddition, TokenReduction};
use tdhook::models::gpt2::{Gpt2, Gpt2Config};
use tdhook::prelude::*;

mod common;
use common::seed_weights;

fn main() -> Result<()> {
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let model = Gpt2::new(
        Gpt2Config::new(64, 64, 32, 2, 4),
        VarBuilder::from_varmap(&varmap, DType::F32, &dev),
    )?;
    seed_weights(&varmap, 11)?;
    println!("GPT-2: vocab 64, 64 positions, width 32, 2 blocks, 4 heads, seeded weights");

    // ---- 1. A steering vector from positive and negative prompts --------------------------
    let point = Gpt2::path().transformer().h(0);
    let mut td = TensorDict::new([2]);
    td.insert(
        ("positive", "input"),
        Tensor::new(&[[10u32, 11, 12], [12, 11, 10]], &dev)?,
    )?;
    td.insert(
        ("negative", "input"),
        Tensor::new(&[[40u32, 41, 42], [42, 41, 40]], &dev)?,
    )?;
    let reduction = TokenReduction::MeanTokens;
    let mut addition = ActivationAddition::new([point.clone()])
        .reduction(reduction)
        .prepare(&model)?;
    let out = addition.run(&td)?;
    let steer = out
        .get_dict("steer")
        .expect("ActivationAddition writes `steer`");
    let vector = SteeringVector::from_addition(steer, reduction)?;
    let v = vector.get(point.as_str()).expect("a vector at the point");
    ensure!(v.dims() == [32]);
    let norm = v.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()?;
    println!(
        "\nActivationAddition at {}: vector {:?}, ‖v‖ = {norm:.3}, reduction {}",
        point.as_str(),
        v.dims(),
        vector.spec.reduction
    );

    // Steering a plain forward with coefficient 0 changes nothing.
    let ids = Tensor::new(&[[1u32, 2, 3, 4]], &dev)?;
    let unsteered = model.forward(&ids, &mut Hx::none())?;
    let mut zero = addition.coefficient(0.0).steering(&td)?.prepare(&model)?;
    let diff = (zero.forward(&ids)? - &unsteered)?
        .abs()?
        .max_all()?
        .to_scalar::<f32>()?;
    println!("SteeringVectors with coefficient 0 vs unsteered logits: max |diff| = {diff:.1e}");
    ensure!(diff == 0.0);

    // ---- 2. Per-row steering inside one generate call --------------------------------------
    let prompts: Vec<Vec<u32>> = vec![
        vec![1, 2, 3],
        vec![1, 2, 3],
        vec![7, 8],
        vec![20, 21, 22, 23],
    ];
    let rows = vec![Some((0, 6.0)), Some((0, -6.0)), None, Some((0, 0.0))];
    let labels = ["+6 · v", "−6 · v", "unsteered", "0 · v"];
    let opts = GenerateOptions {
        max_new_tokens: 8,
        sampling: Sampling::Greedy,
        ..Default::default()
    };

    let plain = generate(&model, &prompts, &opts, None)?;

    let steering = BatchSteering::new(vec![vector.clone()], rows, SteerScope::All);
    let mut gen_hooks = GenerateHooks::new(&model);
    steering.install(&model, &mut gen_hooks, &prompts)?;
    let steered = generate(&model, &prompts, &opts, Some(&mut gen_hooks))?;

    println!("\ngreedy generation, 8 new tokens per row:");
    println!(
        "  {:<3} {:<18} {:<11} {:<33} plain",
        "row", "prompt", "steering", "steered"
    );
    for r in 0..prompts.len() {
        println!(
            "  {r:<3} {:<18} {:<11} {:<33} {:?}",
            format!("{:?}", prompts[r]),
            labels[r],
            format!("{:?}", steered[r]),
            plain[r]
        );
    }

    ensure!(
        steered[2] == plain[2],
        "the unsteered row is plain generation"
    );
    ensure!(steered[3] == plain[3], "coefficient 0 is plain generation");
    ensure!(
        steered[0] != plain[0] && steered[1] != plain[1],
        "steering by ±6 · v changes the greedy continuation"
    );
    ensure!(
        steered[0] != steered[1],
        "opposite coefficients steer the same prompt apart"
    );

    println!("\nall checks passed");
    Ok(())
}
