//! Generation cost: plain (no hook context) vs a hook context with no hook active vs steered
//! (one vector added at one block on every step), interleaved so machine drift hits all alike.
//!
//! ```text
//! cargo bench --bench generate -- [--rounds N]
//! ```
//! Each round times one generation of each arm, in a rotating order; the table gives the median
//! per-generation time and the ratios of medians. Without `--bench` (under `cargo test`) it
//! runs one round on the tiny model as a smoke test.

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use std::hint::black_box;
use std::time::Instant;
use tdhook::generate::{BatchSteering, GenerateOptions, SteeringVector, generate};
use tdhook::models::gpt2::{Gpt2, Gpt2Config};
use tdhook::prelude::*;

struct Shape {
    name: &'static str,
    config: Gpt2Config,
    batch: usize,
    prompt: usize,
    new_tokens: usize,
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    xs[xs.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bench = args.iter().any(|a| a == "--bench");
    let rounds = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(if bench { 21 } else { 1 });
    let mut shapes = vec![Shape {
        name: "tiny (2 layers, d 64), batch 4, 16 prompt + 32 new tokens",
        config: Gpt2Config::new(101, 64, 64, 2, 4),
        batch: 4,
        prompt: 16,
        new_tokens: 32,
    }];
    if bench {
        shapes.push(Shape {
            name: "GPT-2-small shape (12 layers, d 768), batch 1, 16 prompt + 16 new tokens",
            config: Gpt2Config::gpt2_small(),
            batch: 1,
            prompt: 16,
            new_tokens: 16,
        });
    }
    println!(
        "| shape | plain | hook context, no hook | steered | no-hook / plain | steered / plain |"
    );
    println!("|---|---|---|---|---|---|");
    for shape in shapes {
        let map = VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
        let model = Gpt2::new(shape.config.clone(), vb).unwrap();
        let d = shape.config.n_embd;
        let prompts: Vec<Vec<u32>> = (0..shape.batch)
            .map(|b| {
                (0..shape.prompt)
                    .map(|t| ((b * 31 + t * 7) % 100) as u32)
                    .collect()
            })
            .collect();
        let opts = GenerateOptions {
            max_new_tokens: shape.new_tokens,
            ..Default::default()
        };
        let v = SteeringVector::new([(
            "transformer.h.1",
            Tensor::ones(d, DType::F32, &Device::Cpu).unwrap(),
        )])
        .unwrap()
        .with_coefficient(0.5);
        let mut empty = HookSet::new(&model);
        let mut steered = HookSet::new(&model);
        BatchSteering::uniform(v, shape.batch)
            .install(&model, &mut steered, &prompts)
            .unwrap();
        let mut times = [vec![], vec![], vec![]];
        // Warm-up, then rounds with a rotating order.
        for round in 0..rounds + 1 {
            for k in 0..3 {
                let arm = (round + k) % 3;
                let t0 = Instant::now();
                let out = match arm {
                    0 => generate(&model, &prompts, &opts, None),
                    1 => generate(&model, &prompts, &opts, Some(&mut empty)),
                    _ => generate(&model, &prompts, &opts, Some(&mut steered)),
                };
                black_box(out.unwrap());
                if round > 0 {
                    times[arm].push(t0.elapsed().as_secs_f64());
                }
            }
        }
        let m: Vec<f64> = times.iter().map(|t| median(t.clone())).collect();
        println!(
            "| {} | {:.2} ms | {:.2} ms | {:.2} ms | {:.4} | {:.4} |",
            shape.name,
            m[0] * 1e3,
            m[1] * 1e3,
            m[2] * 1e3,
            m[1] / m[0],
            m[2] / m[0]
        );
    }
}
