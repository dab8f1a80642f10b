//! `tdhook`: the tour (the default), and `cache` / `steer` on the embedded tiny model or a GPT-2
//! folder.

use anyhow::{Context, Result, bail};
use candle_core::{D, Device, Tensor};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use tdhook::generate::{
    BatchSteering, GenerateHooks, GenerateOptions, Sampling, SteeringVector, generate,
};
use tdhook::latent::{ActivationAddition, ActivationCaching, TokenReduction};
use tdhook::prelude::*;
use tdhook_cli::tiny::{self, Loaded};
use tdhook_cli::tour::{self, TourConfig};

#[derive(Parser, Debug)]
#[command(
    name = "tdhook",
    version,
    about = "Hook a candle GPT-2 for interpretability and steering. With no command: the tour.",
    after_help = "Without --model, commands run on the tiny model embedded in this binary, trained on a toy \
                  language (e.g. \"the film was great and fun .\", \"alice and bob went to the shop . bob gave \
                  the book to alice\"). --model DIR takes a GPT-2 folder: config.json, model.safetensors and \
                  tokenizer.json."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The five methods on the embedded model, with pictures: an HTML report and SVGs.
    Tour {
        /// Output folder.
        #[arg(long, default_value = "out/tour")]
        out: PathBuf,
        /// Fewer samples (seconds instead of tens of seconds).
        #[arg(long)]
        quick: bool,
        /// Seed of every sample drawn.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// The hook point the steering vector is added at (default: the tour's, `transformer.h.2`).
        #[arg(long)]
        steer_point: Option<String>,
    },
    /// Cache the hook points a pattern matches while the model reads a text; print shapes and stats.
    Cache {
        /// Full-match regex over hook paths, e.g. 'transformer\.h\.\d+' or 'transformer\.h\.0\.attn\..*'.
        #[arg(long)]
        pattern: String,
        /// The text to run.
        #[arg(
            long,
            default_value = "alice and bob went to the shop . bob gave the book to"
        )]
        text: String,
        /// A GPT-2 folder instead of the embedded model.
        #[arg(long)]
        model: Option<PathBuf>,
    },
    /// Steer generation with the vector of a positive and a negative prompt (ActivationAddition).
    Steer {
        /// The positive prompt.
        #[arg(long)]
        positive: String,
        /// The negative prompt (same number of tokens as the positive one).
        #[arg(long)]
        negative: String,
        /// The prompt to continue.
        #[arg(long)]
        prompt: String,
        /// Steering coefficient.
        #[arg(long, default_value_t = 4.0, allow_negative_numbers = true)]
        coef: f64,
        /// Hook point the vector is computed and added at.
        #[arg(long, default_value = "transformer.h.2")]
        point: String,
        /// How the token dim of positive − negative is reduced: `mean` over tokens or the `last` token.
        #[arg(long, default_value = "mean", value_parser = ["mean", "last"])]
        reduction: String,
        /// Tokens to generate.
        #[arg(long, default_value_t = 12)]
        max_new_tokens: usize,
        /// Sample with this temperature (0: greedy).
        #[arg(long, default_value_t = 0.0)]
        temperature: f64,
        /// Sampling seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// A GPT-2 folder instead of the embedded model.
        #[arg(long)]
        model: Option<PathBuf>,
    },
}

fn main() -> Result<()> {
    // SAFETY: first thing in main, no other thread exists yet. candle then reads the thread
    // count from the environment instead of parsing /proc/cpuinfo on every matmul.
    unsafe { tdhook::threads::pin_rayon_num_threads(None) };
    // candle's parallel CPU ops then run on this thread instead of being handed to a worker.
    if let Err(e) = tdhook::threads::use_current_thread(None) {
        eprintln!("note: {e}");
    }
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Tour {
        out: PathBuf::from("out/tour"),
        quick: false,
        seed: 0,
        steer_point: None,
    }) {
        Command::Tour {
            out,
            quick,
            seed,
            steer_point,
        } => run_tour(out, quick, seed, steer_point),
        Command::Cache {
            pattern,
            text,
            model,
        } => cache(&tiny::load(model.as_deref())?, &pattern, &text),
        Command::Steer {
            positive,
            negative,
            prompt,
            coef,
            point,
            reduction,
            max_new_tokens,
            temperature,
            seed,
            model,
        } => {
            let m = tiny::load(model.as_deref())?;
            let reduction = if reduction == "last" {
                TokenReduction::LastToken
            } else {
                TokenReduction::MeanTokens
            };
            let opts = SteerOpts {
                coef,
                point,
                reduction,
                max_new_tokens,
                temperature,
                seed,
            };
            steer(&m, &positive, &negative, &prompt, &opts)
        }
    }
}

fn run_tour(out: PathBuf, quick: bool, seed: u64, steer_point: Option<String>) -> Result<()> {
    let m = tiny::embedded()?;
    let cfg = m.model.config();
    println!(
        "tdhook tour on {}: GPT-2 with {} blocks, width {}, {} heads, {} words; writing {}",
        m.source,
        cfg.n_layer,
        cfg.n_embd,
        cfg.n_head,
        cfg.vocab_size,
        out.display()
    );
    let mut tc = if quick {
        TourConfig::quick(&out)
    } else {
        TourConfig::new(&out)
    };
    tc.seed = seed;
    if let Some(p) = steer_point {
        tc.steer_point = p;
    }
    tc.progress = true;
    let t = tour::run(&m, &tc)?;
    println!("\n{}", tour::summary(&t));
    Ok(())
}

fn stats(t: &Tensor) -> Result<(f32, f32, f32, f32)> {
    let v = t.flatten_all()?.to_dtype(candle_core::DType::F32)?;
    let mean = v.mean_all()?.to_scalar::<f32>()?;
    let std = v
        .broadcast_sub(&v.mean_all()?)?
        .sqr()?
        .mean_all()?
        .sqrt()?
        .to_scalar::<f32>()?;
    Ok((mean, std, v.min(0)?.to_scalar()?, v.max(0)?.to_scalar()?))
}

fn cache(m: &Loaded, pattern: &str, text: &str) -> Result<()> {
    let ids = m.tokenizer.encode(text)?;
    if ids.is_empty() {
        bail!("the text has no tokens");
    }
    let n_pos = m.model.config().n_positions;
    if ids.len() > n_pos {
        bail!(
            "the text has {} tokens; the model takes at most {n_pos}",
            ids.len()
        );
    }
    println!(
        "{}: {} tokens {:?}",
        m.source,
        ids.len(),
        m.tokenizer.tokens(&ids)
    );
    let input = Tensor::new(ids.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
    let mut caching = ActivationCaching::new(pattern).prepare(&m.model)?;
    let (logits, cache) = caching.cache(&input)?;
    println!("cached `{pattern}`: {} tensors", cache.keys(true).len());
    let width = cache
        .leaves()
        .map(|(k, _)| k.to_string().len())
        .max()
        .unwrap_or(10);
    println!(
        "  {:<width$}  {:<18} {:>10} {:>10} {:>10} {:>10}",
        "key", "shape", "mean", "std", "min", "max"
    );
    for (key, t) in cache.leaves() {
        let (mean, std, min, max) = stats(t)?;
        println!(
            "  {:<width$}  {:<18} {mean:>10.4} {std:>10.4} {min:>10.4} {max:>10.4}",
            key.to_string(),
            format!("{:?}", t.dims())
        );
    }
    let last = logits.get(0)?.get(ids.len() - 1)?;
    let probs = candle_nn::ops::softmax_last_dim(&last.unsqueeze(0)?)?.squeeze(0)?;
    let best = probs.argmax(D::Minus1)?.to_scalar::<u32>()?;
    println!(
        "next token: {:?} (p {:.3})",
        m.tokenizer.tokens(&[best]).remove(0),
        probs.get(best as usize)?.to_scalar::<f32>()?
    );
    Ok(())
}

struct SteerOpts {
    coef: f64,
    point: String,
    reduction: TokenReduction,
    max_new_tokens: usize,
    temperature: f64,
    seed: u64,
}

fn steer(m: &Loaded, positive: &str, negative: &str, prompt: &str, o: &SteerOpts) -> Result<()> {
    let SteerOpts {
        coef,
        reduction,
        max_new_tokens,
        temperature,
        seed,
        ..
    } = *o;
    let point = o.point.as_str();
    let pos = m.tokenizer.encode(positive)?;
    let neg = m.tokenizer.encode(negative)?;
    if pos.len() != neg.len() {
        bail!(
            "the positive prompt has {} tokens {:?} and the negative one {} {:?}; ActivationAddition compares them \
             position by position, so give prompts of the same token length",
            pos.len(),
            m.tokenizer.tokens(&pos),
            neg.len(),
            m.tokenizer.tokens(&neg)
        );
    }
    let mut td = TensorDict::new([1]);
    td.insert(
        ("positive", "input"),
        Tensor::new(pos.as_slice(), &Device::Cpu)?.unsqueeze(0)?,
    )?;
    td.insert(
        ("negative", "input"),
        Tensor::new(neg.as_slice(), &Device::Cpu)?.unsqueeze(0)?,
    )?;
    let mut addition = ActivationAddition::new([point])
        .reduction(reduction)
        .prepare(&m.model)?;
    let out = addition.run(&td)?;
    let steer = out
        .get_dict("steer")
        .context("ActivationAddition wrote `steer`")?;
    let v = steer.tensor(point)?;
    let norm = v.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()?;
    println!(
        "{}: steering vector at {point} (positive − negative, {reduction:?}), norm {norm:.3}",
        m.source
    );

    let ids = m.tokenizer.encode(prompt)?;
    let prompts = vec![ids.clone()];
    let opts = GenerateOptions {
        max_new_tokens,
        sampling: if temperature > 0.0 {
            Sampling::Sample {
                temperature,
                top_k: None,
                top_p: None,
                seed,
            }
        } else {
            Sampling::Greedy
        },
        stop_tokens: m.tokenizer.eos().into_iter().collect(),
        pad_token: m.tokenizer.eos().unwrap_or(0),
    };
    let plain = generate(&m.model, &prompts, &opts, None)?;
    let vector = SteeringVector::from_addition(steer, reduction)?.with_coefficient(coef);
    let mut hooks = GenerateHooks::new(&m.model);
    BatchSteering::uniform(vector, 1).install(&m.model, &mut hooks, &prompts)?;
    let steered = generate(&m.model, &prompts, &opts, Some(&mut hooks))?;
    println!("prompt:         {prompt}");
    println!("unsteered:      {}", m.tokenizer.decode(&plain[0]));
    println!("steered ({coef:+}): {}", m.tokenizer.decode(&steered[0]));
    Ok(())
}
