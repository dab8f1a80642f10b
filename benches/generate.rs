//! Generation cost (KV cache, greedy): plain (no hook context) vs a hook context with no hook
//! active vs steered (one vector added at one block on every prefill and decode step, through
//! `BatchSteering` and the fused steer-add kernel) vs per-request steering (half the rows, their
//! own vectors, generated tokens only) — interleaved so machine drift hits all arms alike.
//!
//! ```text
//! cargo bench -p tdhook-suite --bench generate -- [--shape tiny|gpt2_small|all] [--rounds N] [--inner K]
//! RAYON_NUM_THREADS=1 cargo bench -p tdhook-suite --bench generate
//! generate-<hash> --bench --shape tiny --only no_hook 20   # N untimed generations of one arm
//! ```
//! `--only ARM N` builds everything, then runs `N` generations of one arm, untimed (for
//! profilers). Instruction counts (callgrind, one thread) were tried and do not resolve the arms:
//! the idle rayon worker's spinning and glibc malloc move a generation's count by ±1 %, in
//! either direction between identical runs, more than the hooks cost.
//!
//! Weights are random plain tensors (not `Var`s, which would switch layers to their
//! differentiable paths). Each round times `K` generations of every arm back to back, in a
//! rotating order (`K` so that a block takes ~40 ms). Reported: the median per-generation wall
//! time of each arm, and per arm against plain: the ratio of medians and the median of the
//! per-round ratios with 95 % bootstrap intervals (rounds resampled, a round's times kept
//! together), and the ratio of median process CPU times. Without `--bench` (under `cargo test`)
//! it runs 2 rounds on the tiny model and checks that steering changed the tokens.

mod support;

use anyhow::{Context, Result, ensure};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use std::time::Instant;
use support::stats::{Est, bootstrap, median, time_k_both};
use tdhook::generate::{
    BatchSteering, GenerateHooks, GenerateOptions, SteerScope, SteeringVector, generate,
};
use tdhook::models::gpt2::{Gpt2, Gpt2Config};

struct Shape {
    name: &'static str,
    what: &'static str,
    config: Gpt2Config,
    batch: usize,
    prompt: usize,
    new_tokens: usize,
}

fn shapes() -> Vec<Shape> {
    vec![
        Shape {
            name: "tiny",
            what: "2 layers, d 64, batch 4, 16 prompt + 32 new tokens",
            config: Gpt2Config::new(101, 64, 64, 2, 4),
            batch: 4,
            prompt: 16,
            new_tokens: 32,
        },
        Shape {
            name: "gpt2_small",
            what: "12 layers, d 768, vocab 50257, batch 2, 16 prompt + 16 new tokens",
            config: Gpt2Config::gpt2_small(),
            batch: 2,
            prompt: 16,
            new_tokens: 16,
        },
    ]
}

const ARMS: [&str; 4] = ["plain", "no_hook", "steered", "per_request"];

struct Opts {
    shapes: Vec<&'static str>,
    rounds: Option<usize>,
    inner: Option<usize>,
    smoke: bool,
    /// `--only ARM N`.
    only: Option<(usize, usize)>,
}

fn parse() -> Result<Opts> {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| -> Option<&String> {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
    };
    let num = |flag: &str| -> Result<Option<usize>> {
        value(flag)
            .map(|s| s.parse().with_context(|| format!("{flag} {s}")))
            .transpose()
    };
    let smoke = !support::bench_mode();
    let shapes = match value("--shape").map(String::as_str) {
        None | Some("all") if !smoke => vec!["tiny", "gpt2_small"],
        None | Some("all") | Some("tiny") => vec!["tiny"],
        Some("gpt2_small") => vec!["gpt2_small"],
        Some(other) => anyhow::bail!("--shape {other}: expected tiny, gpt2_small or all"),
    };
    let only = match args.iter().position(|a| a == "--only") {
        None => None,
        Some(i) => {
            let (arm, n) = (args.get(i + 1), args.get(i + 2));
            let arm = arm
                .and_then(|a| ARMS.iter().position(|x| x == a))
                .with_context(|| format!("--only ARM N: ARM is one of {ARMS:?}"))?;
            let n = n
                .and_then(|n| n.parse().ok())
                .context("--only ARM N: N is a count")?;
            Some((arm, n))
        }
    };
    Ok(Opts {
        only,
        shapes,
        rounds: num("--rounds")?.or(smoke.then_some(2)),
        inner: num("--inner")?.or(smoke.then_some(1)),
        smoke,
    })
}

struct Outcome {
    name: &'static str,
    what: &'static str,
    rounds: usize,
    inner: usize,
    /// Median wall seconds per generation, per arm.
    wall: [f64; 4],
    /// Per arm (1..): ratio of medians and median per-round ratio against plain.
    ratio: [Option<(Est, Est)>; 4],
    /// Per arm: median CPU / median plain CPU.
    cpu_ratio: [f64; 4],
}

fn measure(shape: &Shape, opts: &Opts) -> Result<Option<Outcome>> {
    let t0 = Instant::now();
    let dev = Device::Cpu;
    let weights = support::random_weights(&shape.config, 0x6E7)?;
    let model = Gpt2::new(
        shape.config.clone(),
        VarBuilder::from_tensors(weights, DType::F32, &dev),
    )?;
    let d = shape.config.n_embd;
    let prompts: Vec<Vec<u32>> = (0..shape.batch)
        .map(|b| {
            (0..shape.prompt)
                .map(|t| ((b * 31 + t * 7) % 100) as u32)
                .collect()
        })
        .collect();
    let opts_gen = GenerateOptions {
        max_new_tokens: shape.new_tokens,
        ..Default::default()
    };
    let mut rng = support::Rng::new(0x57EE4);
    let mut vector = |scale: f64| -> Result<SteeringVector> {
        let v: Vec<f32> = (0..d)
            .map(|_| ((2.0 * rng.unit() - 1.0) * scale) as f32)
            .collect();
        Ok(SteeringVector::new([(
            "transformer.h.1",
            Tensor::from_vec(v, d, &dev)?,
        )])?)
    };
    let mut empty = GenerateHooks::new(&model);
    let mut steered = GenerateHooks::new(&model);
    BatchSteering::uniform(vector(4.0)?, shape.batch).install(&model, &mut steered, &prompts)?;
    // Per-request: even rows steer with their own vector, odd rows are left alone.
    let own: Vec<SteeringVector> = (0..shape.batch)
        .map(|_| vector(4.0))
        .collect::<Result<_>>()?;
    let rows = (0..shape.batch)
        .map(|b| (b % 2 == 0).then_some((b, 1.0)))
        .collect();
    let mut per_request = GenerateHooks::new(&model);
    BatchSteering::new(own, rows, SteerScope::Generated).install(
        &model,
        &mut per_request,
        &prompts,
    )?;

    let mut run = |arm: usize| -> tdhook::Result<Vec<Vec<u32>>> {
        match arm {
            0 => generate(&model, &prompts, &opts_gen, None),
            1 => generate(&model, &prompts, &opts_gen, Some(&mut empty)),
            2 => generate(&model, &prompts, &opts_gen, Some(&mut steered)),
            _ => generate(&model, &prompts, &opts_gen, Some(&mut per_request)),
        }
    };
    if let Some((arm, n)) = opts.only {
        for _ in 0..n {
            std::hint::black_box(run(arm)?);
        }
        return Ok(None);
    }
    // Sanity: no hook changes nothing; steering changes the tokens.
    let plain_out = run(0)?;
    ensure!(
        run(1)? == plain_out,
        "the empty hook set changed the tokens"
    );
    ensure!(run(2)? != plain_out, "steering did not change the tokens");
    ensure!(
        run(3)? != plain_out,
        "per-request steering did not change the tokens"
    );

    // Calibrate: K generations per block of ~40 ms.
    let one = time_k_both(2, || run(0))?.0;
    let inner = opts
        .inner
        .unwrap_or_else(|| ((0.040 / one).round() as usize).max(1));
    let rounds = opts
        .rounds
        .unwrap_or(if shape.name == "tiny" { 300 } else { 40 });
    eprintln!(
        "[{}] ~{:.2} ms/generation; {rounds} rounds × {inner} generations per arm",
        shape.name,
        one * 1e3
    );
    let mut wall: [Vec<f64>; 4] = Default::default();
    let mut cpu: [Vec<f64>; 4] = Default::default();
    for round in 0..rounds {
        for k in 0..ARMS.len() {
            let arm = (round + k) % ARMS.len();
            let (w, c) = time_k_both(inner, || run(arm))?;
            wall[arm].push(w);
            cpu[arm].push(c);
        }
    }
    let per_round = |p: &[f64], a: &[f64]| -> f64 {
        median(&a.iter().zip(p).map(|(a, p)| a / p).collect::<Vec<_>>())
    };
    let mut ratio: [Option<(Est, Est)>; 4] = Default::default();
    let mut cpu_ratio = [1.0; 4];
    for arm in 1..ARMS.len() {
        ratio[arm] = Some((
            bootstrap(&wall[0], &wall[arm], |p, a| median(a) / median(p)),
            bootstrap(&wall[0], &wall[arm], per_round),
        ));
        cpu_ratio[arm] = median(&cpu[arm]) / median(&cpu[0]);
    }
    eprintln!(
        "[{}] done in {:.1}s",
        shape.name,
        t0.elapsed().as_secs_f64()
    );
    Ok(Some(Outcome {
        name: shape.name,
        what: shape.what,
        rounds,
        inner,
        wall: [0, 1, 2, 3].map(|a| median(&wall[a])),
        ratio,
        cpu_ratio,
    }))
}

fn main() -> Result<()> {
    // SAFETY: first thing in main, no other thread exists yet (see tdhook::threads).
    unsafe { tdhook::threads::pin_rayon_num_threads(None) };
    // The setup README recommends: candle's ops run on this thread, not handed to a worker.
    if let Err(e) = tdhook::threads::use_current_thread(None) {
        eprintln!("generate: {e}");
    }
    let opts = parse()?;
    let threads = support::threads();
    let mut outcomes = Vec::new();
    for shape in shapes().iter().filter(|s| opts.shapes.contains(&s.name)) {
        outcomes.extend(measure(shape, &opts)?);
    }
    if opts.only.is_some() {
        return Ok(());
    }
    if opts.smoke {
        println!("generate bench smoke test: ok");
        return Ok(());
    }
    println!("threads: {threads}");
    println!();
    println!(
        "| shape | rounds × K | plain | no hook | steered | per-request | arm / plain | ratio of medians [95% CI] | per-round ratio median [95% CI] | CPU ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for o in &outcomes {
        for ((name, ratio), cpu) in ARMS.iter().zip(&o.ratio).zip(&o.cpu_ratio).skip(1) {
            let Some((r, p)) = ratio else { continue };
            println!(
                "| {} ({}) | {} × {} | {:.3} ms | {:.3} ms | {:.3} ms | {:.3} ms | {} | **{r}** | {p} | {:.4} |",
                o.name,
                o.what,
                o.rounds,
                o.inner,
                o.wall[0] * 1e3,
                o.wall[1] * 1e3,
                o.wall[2] * 1e3,
                o.wall[3] * 1e3,
                name,
                cpu,
            );
        }
    }
    Ok(())
}
