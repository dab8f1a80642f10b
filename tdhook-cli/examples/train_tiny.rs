//! Train the tour's tiny GPT-2 on the toy language and write `assets/tiny/`.
//!
//! ```sh
//! cargo run --release --example train_tiny            # 5-15 minutes on 2 cores
//! cargo run --release --example train_tiny -- --help
//! ```
//!
//! Writes `model.safetensors` (HF GPT-2 names, so `Gpt2::load(dir)` loads it), `config.json`,
//! `vocab.json` (word → id), `tokenizer.json` (the same vocabulary as a `tokenizers` WordLevel
//! tokenizer) and `train_log.json` (settings, loss curve, held-out scores). Data and initial
//! weights are seeded: two runs with the defaults (one on one rayon thread, one on the default
//! pool) wrote bit-identical weights. The tour embeds the files at build time, so rebuild after
//! retraining.

#[allow(dead_code)]
#[path = "../src/toy.rs"]
mod toy;

#[allow(dead_code)]
#[path = "../src/eval.rs"]
mod eval;

use anyhow::{Context, Result};
use candle_core::{D, DType, Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use clap::Parser;
use eval::{Scores, doc_ids, evaluate, pad_batch};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;
use tdhook::Hx;
use tdhook::models::gpt2::{Gpt2, Gpt2Config};
use toy::{Doc, Rng, Toy, Vocab};

#[derive(Parser, Debug)]
#[command(about = "Train the tiny GPT-2 of the tour on the toy language")]
struct Args {
    /// Output folder.
    #[arg(long, default_value = "assets/tiny")]
    out: PathBuf,
    /// Optimiser steps.
    #[arg(long, default_value_t = 4000)]
    steps: usize,
    /// Documents per step.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Peak learning rate (linear warm-up, cosine decay to a tenth).
    #[arg(long, default_value_t = 3e-3)]
    lr: f64,
    /// Blocks.
    #[arg(long, default_value_t = 3)]
    layers: usize,
    /// Width of the residual stream.
    #[arg(long, default_value_t = 64)]
    width: usize,
    /// Attention heads.
    #[arg(long, default_value_t = 4)]
    heads: usize,
    /// Context length.
    #[arg(long, default_value_t = 32)]
    context: usize,
    /// Seed of the data stream and the initial weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Score on held-out data every this many steps.
    #[arg(long, default_value_t = 250)]
    eval_every: usize,
}

/// GPT-2's initialisation, from our own seeded generator (candle's CPU `randn` is not seeded).
fn init_weights(varmap: &VarMap, cfg: &Gpt2Config, seed: u64) -> Result<()> {
    let mut rng = Rng::new(seed ^ 0x5eed);
    let data = varmap.data().lock().expect("varmap lock");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let var = &data[name];
        let shape = var.shape().clone();
        let n = shape.elem_count();
        let std = if name.ends_with("c_proj.weight") {
            0.02 / (2.0 * cfg.n_layer as f64).sqrt()
        } else if name.ends_with("wpe.weight") {
            0.01
        } else {
            0.02
        };
        let values: Vec<f32> = if name.contains(".ln_") && name.ends_with(".weight") {
            vec![1.0; n]
        } else if name.ends_with(".bias") {
            vec![0.0; n]
        } else {
            (0..n).map(|_| (rng.normal() * std) as f32).collect()
        };
        var.set(&Tensor::from_vec(values, shape, var.device())?)?;
    }
    Ok(())
}

/// A line above the progress bar, or on stderr when the bar is hidden (not a terminal).
fn say(bar: &ProgressBar, line: String) {
    if bar.is_hidden() {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
}

/// Mean cross-entropy over non-pad targets.
fn masked_loss(logits: &Tensor, targets: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let (b, t, v) = logits.dims3()?;
    let logp = candle_nn::ops::log_softmax(&logits.reshape((b * t, v))?, D::Minus1)?;
    let picked = logp.gather(&targets.reshape((b * t, 1))?, 1)?.squeeze(1)?;
    let mask = mask.reshape(b * t)?;
    let total = (picked * &mask)?.sum_all()?;
    Ok((total.neg()? / mask.sum_all()?.to_scalar::<f32>()? as f64)?)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let device = Device::Cpu;
    let vocab = Vocab::toy();
    let mut cfg = Gpt2Config::new(
        vocab.len(),
        args.context,
        args.width,
        args.layers,
        args.heads,
    );
    cfg.n_inner = Some(4 * args.width);

    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
    let model = Gpt2::new(cfg.clone(), vb)?;
    init_weights(&varmap, &cfg, args.seed)?;
    let n_params: usize = varmap.all_vars().iter().map(|v| v.elem_count()).sum();
    println!(
        "tiny GPT-2: {} layers, width {}, {} heads, context {}, vocab {} — {n_params} parameters",
        cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.n_positions, cfg.vocab_size
    );

    let mut opt = AdamW::new(
        varmap.all_vars(),
        ParamsAdamW {
            lr: args.lr,
            weight_decay: 0.01,
            ..Default::default()
        },
    )?;

    // Held-out data from another seed.
    let mut held_toy = Toy::new(args.seed.wrapping_add(1_000_003));
    let held_out: Vec<Doc> = (0..1024).map(|_| held_toy.doc()).collect();

    let mut toy = Toy::new(args.seed);
    let warmup = (args.steps / 20).max(1);
    let bar = ProgressBar::new(args.steps as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} train [{bar:40}] {pos}/{len} step  {msg}  ({elapsed}, eta {eta})",
        )?
        .progress_chars("=> "),
    );
    let start = Instant::now();
    let mut curve = Vec::new();
    let mut evals = Vec::new();
    let mut smooth = None::<f64>;
    for step in 0..args.steps {
        let lr = if step < warmup {
            args.lr * (step + 1) as f64 / warmup as f64
        } else {
            let p = (step - warmup) as f64 / (args.steps - warmup).max(1) as f64;
            args.lr * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * p).cos()))
        };
        opt.set_learning_rate(lr);
        let seqs: Vec<Vec<u32>> = (0..args.batch)
            .map(|_| doc_ids(&vocab, &toy.doc()))
            .collect::<Result<_>>()?;
        let ids = pad_batch(&seqs, vocab.pad(), &device)?;
        let t = ids.dim(1)?;
        let input = ids.narrow(1, 0, t - 1)?;
        let targets = ids.narrow(1, 1, t - 1)?;
        let mask = targets.ne(vocab.pad())?.to_dtype(DType::F32)?;
        let logits = model.forward(&input, &mut Hx::none())?;
        let loss = masked_loss(&logits, &targets, &mask)?;
        let grads = loss.backward()?;
        opt.step(&grads)?;
        let l = loss.to_scalar::<f32>()? as f64;
        smooth = Some(smooth.map_or(l, |s| 0.98 * s + 0.02 * l));
        if step % 10 == 0 {
            curve.push(json!({"step": step, "loss": l, "lr": lr}));
            bar.set_message(format!("loss {:.3}", smooth.unwrap_or(l)));
        }
        if (step + 1) % args.eval_every == 0 || step + 1 == args.steps {
            let s = evaluate(&model, &vocab, &held_out)?;
            say(
                &bar,
                format!(
                    "step {:>5}: held-out loss {:.3}, next-word acc {:.3}, IOI acc {:.3}, sentiment acc {:.3}",
                    step + 1,
                    s.loss,
                    s.next_word_accuracy,
                    s.ioi_accuracy,
                    s.sentiment_accuracy
                ),
            );
            evals.push(json!({"step": step + 1, "scores": s}));
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();

    // Final scores on a fresh, larger held-out set.
    let mut final_toy = Toy::new(args.seed.wrapping_add(2_000_003));
    let final_docs: Vec<Doc> = (0..4096).map(|_| final_toy.doc()).collect();
    let scores: Scores = evaluate(&model, &vocab, &final_docs)?;
    println!(
        "trained {} steps in {seconds:.0} s: final train loss {:.3}; held-out loss {:.3}, \
         next-word acc {:.3}, IOI acc {:.3}, sentiment acc {:.3}",
        args.steps,
        smooth.unwrap_or(f64::NAN),
        scores.loss,
        scores.next_word_accuracy,
        scores.ioi_accuracy,
        scores.sentiment_accuracy
    );

    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    varmap.save(args.out.join("model.safetensors"))?;
    let mut config = serde_json::to_value(&cfg)?;
    let obj = config.as_object_mut().expect("object");
    obj.insert("model_type".into(), json!("gpt2"));
    obj.insert("architectures".into(), json!(["GPT2LMHeadModel"]));
    obj.insert("bos_token_id".into(), json!(vocab.bos()));
    obj.insert("eos_token_id".into(), json!(vocab.eos()));
    obj.insert("pad_token_id".into(), json!(vocab.pad()));
    std::fs::write(
        args.out.join("config.json"),
        serde_json::to_string_pretty(&config)? + "\n",
    )?;
    std::fs::write(args.out.join("vocab.json"), vocab.to_json())?;
    std::fs::write(args.out.join("tokenizer.json"), tokenizer_json(&vocab)?)?;
    let log = json!({
        "command": "cargo run --release --example train_tiny",
        "settings": {
            "steps": args.steps, "batch": args.batch, "lr": args.lr, "seed": args.seed,
            "optimizer": "AdamW (weight decay 0.01), linear warm-up then cosine decay to lr/10",
            "data": "toy language: half reviews (sentiment), half indirect-object sentences",
        },
        "model": {"config": cfg, "parameters": n_params},
        "seconds": seconds,
        "threads": std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "default".into()),
        "final_train_loss": smooth,
        "held_out": scores,
        "held_out_documents": final_docs.len(),
        "evals": evals,
        "loss_curve": curve,
    });
    std::fs::write(
        args.out.join("train_log.json"),
        serde_json::to_string_pretty(&log)? + "\n",
    )?;
    println!("wrote {}", args.out.display());
    Ok(())
}

/// The vocabulary as a `tokenizers` WordLevel tokenizer (whitespace split), so HF tooling and
/// the `tokenizers` crate read the same ids.
fn tokenizer_json(vocab: &Vocab) -> Result<String> {
    let map: serde_json::Map<String, serde_json::Value> = vocab
        .words()
        .iter()
        .enumerate()
        .map(|(i, w)| (w.clone(), json!(i)))
        .collect();
    let added: Vec<serde_json::Value> = [toy::PAD, toy::BOS, toy::EOS, toy::UNK]
        .iter()
        .map(|w| {
            json!({"id": vocab.id(w), "content": w, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let tok = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "WhitespaceSplit"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": toy::BOS, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": toy::BOS, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {toy::BOS: {"id": toy::BOS, "ids": [vocab.bos()], "tokens": [toy::BOS]}},
        },
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": map, "unk_token": toy::UNK},
    });
    Ok(serde_json::to_string(&tok)? + "\n")
}
