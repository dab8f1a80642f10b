//! The tour: the five latent methods of tdhook on the embedded tiny model, with pictures.
//!
//! Each step is a function returning its numbers ([`attention`], [`patching`], [`probing`],
//! [`steering`]); [`run`] runs them all, writes one SVG per picture and one self-contained HTML
//! report, and [`summary`] formats the terminal table.

use crate::eval::{pad_batch, polarity_mass};
use crate::report::Page;
use crate::report::svg::{BarChart, ColorScale, Heatmap, Panel, Rgb, esc};
use crate::tiny::{Loaded, TRAIN_LOG_JSON};
use crate::toy::{NEGATIVE, POSITIVE, SUBJECTS, Toy, Vocab, polarity};
use anyhow::{Context, Result, bail};
use candle_core::{D, Device, Tensor};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tdhook::generate::{
    BatchSteering, GenerateHooks, GenerateOptions, Sampling, SteeringVector, generate,
};
use tdhook::latent::probing::{LogisticRegression, ProbeManager, StepType, metrics};
use tdhook::latent::{
    ActivationAddition, ActivationCaching, ActivationPatching, Probing, SteeringVectors,
    TokenReduction,
};
use tdhook::prelude::*;

mod caching;
mod patching;
mod probing;
mod report;
mod steering;

pub use caching::{AttentionResult, attention};
pub use patching::{PatchingResult, patching};
pub use probing::{ProbingResult, probing};
use report::write_report;
pub use report::{pictures, summary};
pub use steering::{SteeringResult, steering};

/// How much of the tour to run, and where to write it.
#[derive(Clone, Debug)]
pub struct TourConfig {
    /// Output folder (created).
    pub out: PathBuf,
    /// The sentence whose attention patterns are drawn.
    pub attention_text: String,
    /// Clean/corrupted IOI pairs averaged in the patching heatmap.
    pub patch_pairs: usize,
    /// Reviews the probes are fitted on.
    pub probe_train: usize,
    /// Held-out reviews the probes are scored on.
    pub probe_test: usize,
    /// Positive/negative prompt pairs the steering vector is averaged over.
    pub steer_pairs: usize,
    /// Generations per steering coefficient.
    pub steer_samples: usize,
    /// Steering coefficients (0 = no steering).
    pub steer_coefs: Vec<f64>,
    /// The coefficient the summary reports (and its negative, when in the sweep).
    pub steer_headline: f64,
    /// The hook point steered.
    pub steer_point: String,
    /// New words per generation.
    pub max_new_tokens: usize,
    /// Seed of every sample drawn.
    pub seed: u64,
    /// Show progress bars.
    pub progress: bool,
}

impl TourConfig {
    /// The full tour into `out`.
    pub fn new(out: impl Into<PathBuf>) -> Self {
        Self {
            out: out.into(),
            attention_text: "alice and bob went to the shop . bob gave the book to".into(),
            patch_pairs: 48,
            probe_train: 512,
            probe_test: 512,
            steer_pairs: 16,
            steer_samples: 64,
            steer_coefs: vec![-6.0, -4.0, -2.0, 0.0, 2.0, 4.0, 6.0],
            steer_headline: 4.0,
            steer_point: "transformer.h.2".into(),
            max_new_tokens: 12,
            seed: 0,
            progress: true,
        }
    }

    /// Fewer samples (for tests).
    pub fn quick(out: impl Into<PathBuf>) -> Self {
        Self {
            patch_pairs: 16,
            probe_train: 160,
            probe_test: 160,
            steer_pairs: 8,
            steer_samples: 32,
            steer_coefs: vec![-4.0, 0.0, 4.0],
            progress: false,
            ..Self::new(out)
        }
    }
}

fn bar(len: usize, what: &str, show: bool) -> ProgressBar {
    let b = ProgressBar::new(len as u64);
    if !show {
        b.set_draw_target(ProgressDrawTarget::hidden());
    }
    b.set_style(
        ProgressStyle::with_template("  {prefix:<28} [{bar:32}] {pos}/{len} {msg}")
            .expect("template")
            .progress_chars("=> "),
    );
    b.set_prefix(what.to_string());
    b
}

fn ids_tensor(rows: &[Vec<u32>]) -> Result<Tensor> {
    let t = rows.first().map_or(0, Vec::len);
    if rows.iter().any(|r| r.len() != t) {
        bail!("rows of different lengths");
    }
    Ok(Tensor::from_vec(
        rows.concat(),
        (rows.len(), t),
        &Device::Cpu,
    )?)
}

/// Everything the tour measured, and the files it wrote.
#[derive(Clone, Debug)]
pub struct Tour {
    /// ActivationCaching.
    pub attention: AttentionResult,
    /// ActivationPatching.
    pub patching: PatchingResult,
    /// Probing.
    pub probing: ProbingResult,
    /// ActivationAddition, SteeringVectors, generation.
    pub steering: SteeringResult,
    /// The HTML report.
    pub report: PathBuf,
    /// The SVG pictures.
    pub pictures: Vec<PathBuf>,
    /// Wall time (s).
    pub seconds: f64,
}

/// Run every step on `m` (the embedded tiny model or another toy-language model) and write the
/// report and pictures into `cfg.out`.
pub fn run(m: &Loaded, cfg: &TourConfig) -> Result<Tour> {
    let start = Instant::now();
    std::fs::create_dir_all(&cfg.out).with_context(|| format!("creating {}", cfg.out.display()))?;
    let steps = bar(5, "tour", cfg.progress);
    steps.set_message("ActivationCaching: attention patterns");
    let attention = attention(m, &cfg.attention_text)?;
    steps.inc(1);
    steps.set_message("ActivationPatching: layers × positions");
    let patching = patching(m, cfg.patch_pairs, cfg.seed, cfg.progress)?;
    steps.inc(1);
    steps.set_message("Probing: sentiment by layer");
    let probing = probing(m, cfg.probe_train, cfg.probe_test, cfg.seed, cfg.progress)?;
    steps.inc(1);
    steps.set_message("ActivationAddition + SteeringVectors: steering");
    let steering = steering(
        m,
        &cfg.steer_point,
        cfg.steer_pairs,
        cfg.steer_samples,
        &cfg.steer_coefs,
        cfg.steer_headline,
        cfg.max_new_tokens,
        cfg.seed,
        cfg.progress,
    )?;
    steps.inc(1);
    steps.set_message("report");
    let (report, pictures) = write_report(m, &cfg.out, &attention, &patching, &probing, &steering)?;
    steps.inc(1);
    steps.finish_and_clear();
    Ok(Tour {
        attention,
        patching,
        probing,
        steering,
        report,
        pictures,
        seconds: start.elapsed().as_secs_f64(),
    })
}
