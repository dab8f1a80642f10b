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

// ---- ActivationCaching: attention patterns -------------------------------------------------

/// Attention patterns of one sentence.
#[derive(Clone, Debug)]
pub struct AttentionResult {
    /// The sentence.
    pub text: String,
    /// Its tokens (with `<bos>`).
    pub tokens: Vec<String>,
    /// `[layer][head][query][key]`.
    pub patterns: Vec<Vec<Vec<Vec<f64>>>>,
    /// What the cache held: `(key, shape)`.
    pub cached: Vec<(String, Vec<usize>)>,
    /// The model's most likely next token after the sentence, and its probability.
    pub next: (String, f64),
}

/// Cache `transformer.h.{l}.attn.hook_pattern` for `text` with [`ActivationCaching`].
pub fn attention(m: &Loaded, text: &str) -> Result<AttentionResult> {
    let ids = m.tokenizer.encode(text)?;
    let tokens = m.tokenizer.tokens(&ids);
    let input = ids_tensor(&[ids])?;
    let mut caching =
        ActivationCaching::new(r"transformer\.h\.\d+\.attn\.hook_pattern").prepare(&m.model)?;
    let mut td = TensorDict::new([1]);
    td.insert("input", input)?;
    let out = caching.run(&td)?;
    let cache = out
        .get_dict("cache")
        .context("the run's dict has a cache")?;
    let mut cached = Vec::new();
    let mut patterns = Vec::new();
    for l in 0..m.model.config().n_layer {
        let key = format!("transformer.h.{l}.attn.hook_pattern");
        let p = cache.tensor(key.as_str())?;
        cached.push((key, p.dims().to_vec()));
        let p: Vec<Vec<Vec<f32>>> = p.get(0)?.to_vec3()?;
        patterns.push(
            p.into_iter()
                .map(|h| {
                    h.into_iter()
                        .map(|r| r.into_iter().map(f64::from).collect())
                        .collect()
                })
                .collect(),
        );
    }
    let logits = out.tensor("output")?;
    let t = logits.dim(1)?;
    let probs =
        candle_nn::ops::softmax_last_dim(&logits.get(0)?.get(t - 1)?.unsqueeze(0)?)?.squeeze(0)?;
    let best = probs.argmax(0)?.to_scalar::<u32>()?;
    let p = probs.get(best as usize)?.to_scalar::<f32>()? as f64;
    Ok(AttentionResult {
        text: text.into(),
        tokens,
        patterns,
        cached,
        next: (m.tokenizer.tokens(&[best]).remove(0), p),
    })
}

// ---- ActivationPatching: where the answer lives ---------------------------------------------

/// A layers × positions heatmap of the patching effect.
#[derive(Clone, Debug)]
pub struct PatchingResult {
    /// Row names (`embed`, `block 0`, …).
    pub rows: Vec<String>,
    /// Hook paths of the rows.
    pub paths: Vec<String>,
    /// Position labels (template roles).
    pub positions: Vec<String>,
    /// `effect[row][pos]`: (patched − corrupted) / (clean − corrupted) logit difference, where the
    /// logit difference is logit(indirect object) − logit(repeated name) at the last position.
    pub effect: Vec<Vec<f64>>,
    /// Mean clean logit difference.
    pub clean_diff: f64,
    /// Mean corrupted logit difference.
    pub corrupted_diff: f64,
    /// One clean prompt.
    pub example_clean: String,
    /// Its corrupted twin.
    pub example_corrupted: String,
    /// Pairs averaged.
    pub pairs: usize,
    /// Positions holding names.
    pub name_positions: Vec<usize>,
}

impl PatchingResult {
    /// The `(row, position)` of the largest effect, the last position excluded (there, patching
    /// the last block restores everything by construction).
    pub fn argmax(&self) -> (usize, usize) {
        let last = self.positions.len() - 1;
        let mut best = (0, 0);
        for (r, row) in self.effect.iter().enumerate() {
            for (p, &v) in row.iter().enumerate().take(last) {
                if v > self.effect[best.0][best.1] {
                    best = (r, p);
                }
            }
        }
        best
    }
}

/// `corrupted` with position `p` (dim 1) taken from `clean`.
fn replace_position(corrupted: &Tensor, clean: &Tensor, p: usize) -> candle_core::Result<Tensor> {
    let t = corrupted.dim(1)?;
    let mut parts = Vec::with_capacity(3);
    if p > 0 {
        parts.push(corrupted.narrow(1, 0, p)?);
    }
    parts.push(clean.narrow(1, p, 1)?);
    if p + 1 < t {
        parts.push(corrupted.narrow(1, p + 1, t - p - 1)?);
    }
    Tensor::cat(&parts, 1)
}

/// Mean over rows of logit[row, last, a] − logit[row, last, b].
fn logit_diff(logits: &Tensor, a: &[u32], b: &[u32]) -> Result<f64> {
    let t = logits.dim(1)?;
    let last: Vec<Vec<f32>> = logits.narrow(1, t - 1, 1)?.squeeze(1)?.to_vec2()?;
    let n = last.len();
    Ok(last
        .iter()
        .enumerate()
        .map(|(i, row)| (row[a[i] as usize] - row[b[i] as usize]) as f64)
        .sum::<f64>()
        / n as f64)
}

/// Patch the embeddings and each block's output at one position at a time with
/// [`ActivationPatching`] (a `patch_fn` that replaces only that position), on IOI pairs whose
/// corrupted twin repeats the other name (so the answer flips).
pub fn patching(m: &Loaded, pairs: usize, seed: u64, progress: bool) -> Result<PatchingResult> {
    let vocab = m.vocab()?;
    let mut toy = Toy::new(seed.wrapping_add(17));
    // `IO and S went to the PLACE . S gave the OBJ to` — the indirect object named first.
    let mut ioi = Vec::new();
    while ioi.len() < pairs {
        let s = toy.ioi_fixed();
        if s.prompt.starts_with(&format!("{} ", s.answer)) {
            ioi.push(s);
        }
    }
    let clean: Vec<Vec<u32>> = ioi
        .iter()
        .map(|s| vocab.encode_doc(&s.prompt))
        .collect::<Result<_>>()?;
    let corrupted: Vec<Vec<u32>> = ioi
        .iter()
        .map(|s| vocab.encode_doc(&s.corrupted_prompt()))
        .collect::<Result<_>>()?;
    let io: Vec<u32> = ioi
        .iter()
        .map(|s| vocab.id(&s.answer).expect("name"))
        .collect();
    let subj: Vec<u32> = ioi
        .iter()
        .map(|s| vocab.id(&s.subject).expect("name"))
        .collect();
    let (clean_t, corrupt_t) = (ids_tensor(&clean)?, ids_tensor(&corrupted)?);
    let t = clean_t.dim(1)?;

    let clean_diff = logit_diff(&m.model.forward(&clean_t, &mut Hx::none())?, &io, &subj)?;
    let corrupted_diff = logit_diff(&m.model.forward(&corrupt_t, &mut Hx::none())?, &io, &subj)?;
    let denom = clean_diff - corrupted_diff;
    if denom.abs() < 1e-6 {
        bail!("clean and corrupted runs give the same logit difference; nothing to patch");
    }

    let mut rows = vec!["embed".to_string()];
    let mut paths = vec!["transformer.drop".to_string()];
    for l in 0..m.model.config().n_layer {
        rows.push(format!("block {l}"));
        paths.push(format!("transformer.h.{l}"));
    }
    let mut td = TensorDict::new([pairs]);
    td.insert("input", clean_t)?;
    td.insert(("patched", "input"), corrupt_t)?;
    let b = bar(paths.len() * t, "ActivationPatching", progress);
    let mut effect = vec![vec![0.0; t]; paths.len()];
    for (r, path) in paths.iter().enumerate() {
        b.set_message(path.clone());
        for (p, cell) in effect[r].iter_mut().enumerate() {
            let mut patching = ActivationPatching::new([path.as_str()])
                .patch_fn(move |_path, corrupted, clean| {
                    Ok(Some(replace_position(corrupted, clean, p)?))
                })
                .prepare(&m.model)?;
            let out = patching.run(&td)?;
            let patched = logit_diff(out.tensor(("patched", "output"))?, &io, &subj)?;
            *cell = (patched - corrupted_diff) / denom;
            b.inc(1);
        }
    }
    b.finish_and_clear();

    // Position labels: the template's roles.
    let first: Vec<&str> = ioi[0].prompt.split(' ').collect();
    let mut positions = vec!["<bos>".to_string()];
    let mut name_positions = Vec::new();
    let mut seen_subject = false;
    for (i, w) in first.iter().enumerate() {
        let label = if *w == ioi[0].answer {
            name_positions.push(i + 1);
            "IO (name once)".to_string()
        } else if *w == ioi[0].subject {
            name_positions.push(i + 1);
            let l = if seen_subject {
                "S2 (repeat)"
            } else {
                "S1 (name)"
            };
            seen_subject = true;
            l.to_string()
        } else if i == 6 {
            "[place]".into()
        } else if i == 11 {
            "[object]".into()
        } else {
            w.to_string()
        };
        positions.push(label);
    }
    if let Some(l) = positions.last_mut() {
        *l = "to (last)".into();
    }
    Ok(PatchingResult {
        rows,
        paths,
        positions,
        effect,
        clean_diff,
        corrupted_diff,
        example_clean: ioi[0].prompt.clone(),
        example_corrupted: ioi[0].corrupted_prompt(),
        pairs,
        name_positions,
    })
}

// ---- Probing: where sentiment is linearly readable ------------------------------------------

/// Probe accuracy per layer.
#[derive(Clone, Debug)]
pub struct ProbingResult {
    /// Row names (`embed`, `block 0`, …).
    pub layers: Vec<String>,
    /// Hook paths.
    pub paths: Vec<String>,
    /// Accuracy on the reviews the probe was fitted on.
    pub train_accuracy: Vec<f64>,
    /// Accuracy on held-out reviews.
    pub test_accuracy: Vec<f64>,
    /// Reviews fitted on.
    pub n_train: usize,
    /// Reviews scored.
    pub n_test: usize,
}

impl ProbingResult {
    /// The best held-out accuracy and its layer index.
    pub fn best(&self) -> (usize, f64) {
        self.test_accuracy
            .iter()
            .copied()
            .enumerate()
            .fold((0, f64::MIN), |a, (i, v)| if v > a.1 { (i, v) } else { a })
    }
}

/// A batch of reviews for probing: right-padded ids, labels, last-token index per row.
fn review_batch(vocab: &Vocab, toy: &mut Toy, n: usize) -> Result<(TensorDict, Tensor)> {
    let reviews: Vec<_> = (0..n).map(|i| toy.review_with(i % 2 == 0)).collect();
    let seqs: Vec<Vec<u32>> = reviews
        .iter()
        .map(|r| vocab.encode_doc(&r.text))
        .collect::<Result<_>>()?;
    let ids = pad_batch(&seqs, vocab.pad(), &Device::Cpu)?;
    let labels: Vec<u8> = reviews.iter().map(|r| u8::from(r.positive)).collect();
    let last: Vec<u32> = seqs.iter().map(|s| s.len() as u32 - 1).collect();
    let mut td = TensorDict::new([n]);
    td.insert("input", ids)?;
    td.insert("labels", Tensor::new(labels, &Device::Cpu)?)?;
    Ok((td, Tensor::new(last, &Device::Cpu)?))
}

/// Fit a logistic-regression probe per layer ([`Probing`] with a [`ProbeManager`]) on the last
/// token (the closing `.`) of reviews, and score it on held-out reviews.
pub fn probing(
    m: &Loaded,
    n_train: usize,
    n_test: usize,
    seed: u64,
    progress: bool,
) -> Result<ProbingResult> {
    let vocab = m.vocab()?;
    let mut toy = Toy::new(seed.wrapping_add(29));
    let (train, train_last) = review_batch(vocab, &mut toy, n_train)?;
    let (test, test_last) = review_batch(vocab, &mut toy, n_test)?;

    // The probes see each review's last real token: right padding leaves it untouched (causal
    // attention), and the row's index is set before each run.
    let last: Arc<Mutex<Tensor>> = Arc::new(Mutex::new(train_last.clone()));
    let idx = last.clone();
    let manager = ProbeManager::new(LogisticRegression::new, metrics::classification)
        .data_preprocess(move |act| {
            let idx = idx.lock().expect("index lock").clone();
            let (n, _, d) = act.dims3()?;
            let gather = idx
                .reshape((n, 1, 1))?
                .broadcast_as((n, 1, d))?
                .contiguous()?;
            Ok(act.gather(&gather, 1)?.squeeze(1)?)
        });
    let mut rows = vec!["embed".to_string()];
    let mut paths = vec!["transformer.drop".to_string()];
    for l in 0..m.model.config().n_layer {
        rows.push(format!("block {l}"));
        paths.push(format!("transformer.h.{l}"));
    }
    let b = bar(2, "Probing", progress);
    b.set_message("fit");
    let mut probing = Probing::new(r"transformer\.drop|transformer\.h\.\d+", manager.clone())
        .additional_keys(["labels"])
        .prepare(&m.model)?;
    probing.fit(&train)?;
    b.inc(1);
    b.set_message("predict");
    *last.lock().expect("index lock") = test_last;
    probing.predict(&test)?;
    b.inc(1);
    b.finish_and_clear();
    let acc = |phase, path: &str| {
        manager
            .result(phase, &format!("{path}_fwd"), "accuracy")
            .with_context(|| format!("no {phase} accuracy for {path}"))
    };
    Ok(ProbingResult {
        train_accuracy: paths
            .iter()
            .map(|p| acc(StepType::Fit, p))
            .collect::<Result<_>>()?,
        test_accuracy: paths
            .iter()
            .map(|p| acc(StepType::Predict, p))
            .collect::<Result<_>>()?,
        layers: rows,
        paths,
        n_train,
        n_test,
    })
}

// ---- ActivationAddition + SteeringVectors + generation --------------------------------------

/// What steering did.
#[derive(Clone, Debug)]
pub struct SteeringResult {
    /// The hook point steered.
    pub point: String,
    /// The steering vector's L2 norm.
    pub vector_norm: f64,
    /// Coefficients tried.
    pub coefs: Vec<f64>,
    /// Share of positive words among the sentiment words generated, per coefficient.
    pub positive_share: Vec<f64>,
    /// Sentiment words generated, per coefficient.
    pub sentiment_words: Vec<usize>,
    /// Share of generations that end (produce `<eos>`) within the token budget, per
    /// coefficient: a too-strong vector breaks the language before it flips the sentiment.
    pub finished: Vec<f64>,
    /// The coefficient the summary reports.
    pub headline: f64,
    /// P(positive) / P(positive or negative) of the next word after `the X was`, without
    /// steering and with the headline coefficient ([`SteeringVectors`]).
    pub next_word_positive: (f64, f64),
    /// A few generations per coefficient (prompt + continuation).
    pub examples: Vec<Vec<String>>,
    /// Generations per coefficient.
    pub samples: usize,
}

impl SteeringResult {
    /// Share at coefficient 0 (unsteered).
    pub fn baseline(&self) -> f64 {
        self.coefs
            .iter()
            .position(|&c| c == 0.0)
            .map_or(f64::NAN, |i| self.positive_share[i])
    }

    /// Share at coefficient `c` (NaN when not in the sweep).
    pub fn share_at(&self, c: f64) -> f64 {
        self.coefs
            .iter()
            .position(|&x| x == c)
            .map_or(f64::NAN, |i| self.positive_share[i])
    }

    /// Share at the headline coefficient.
    pub fn steered(&self) -> f64 {
        self.share_at(self.headline)
    }

    /// Share at minus the headline coefficient.
    pub fn steered_negative(&self) -> f64 {
        self.share_at(-self.headline)
    }
}

/// A steering vector from `great` vs `awful` reviews ([`ActivationAddition`], mean over tokens),
/// its effect on the next word ([`SteeringVectors`], at coefficient `headline`) and on sampled
/// generations ([`generate`] with [`BatchSteering`], at each of `coefs`).
#[allow(clippy::too_many_arguments)]
pub fn steering(
    m: &Loaded,
    point: &str,
    pairs: usize,
    samples: usize,
    coefs: &[f64],
    headline: f64,
    max_new_tokens: usize,
    seed: u64,
    progress: bool,
) -> Result<SteeringResult> {
    let vocab = m.vocab()?;
    let b = bar(coefs.len() + 2, "ActivationAddition + steer", progress);
    // Positive and negative prompts: the same review opening, one sentiment word apart.
    let mut pos = Vec::new();
    let mut neg = Vec::new();
    for i in 0..pairs {
        let subject = SUBJECTS[i % SUBJECTS.len()];
        let (p1, p2) = (
            POSITIVE[i % POSITIVE.len()],
            POSITIVE[(i + 5) % POSITIVE.len()],
        );
        let (n1, n2) = (
            NEGATIVE[i % NEGATIVE.len()],
            NEGATIVE[(i + 5) % NEGATIVE.len()],
        );
        pos.push(vocab.encode_doc(&format!("the {subject} was {p1} and {p2} ."))?);
        neg.push(vocab.encode_doc(&format!("the {subject} was {n1} and {n2} ."))?);
    }
    let mut td = TensorDict::new([pairs]);
    td.insert(("positive", "input"), ids_tensor(&pos)?)?;
    td.insert(("negative", "input"), ids_tensor(&neg)?)?;
    let mut addition = ActivationAddition::new([point])
        .reduction(TokenReduction::MeanTokens)
        .prepare(&m.model)?;
    let out = addition.run(&td)?;
    let steer = out
        .get_dict("steer")
        .context("ActivationAddition wrote `steer`")?;
    let v = steer.tensor(point)?;
    let vector_norm = v.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()? as f64;
    b.inc(1);

    // SteeringVectors: the next word after `the X was`, without and with the vector.
    let prompts: Vec<Vec<u32>> = (0..samples)
        .map(|i| vocab.encode_doc(&format!("the {} was", SUBJECTS[i % SUBJECTS.len()])))
        .collect::<Result<_>>()?;
    let prompt_t = ids_tensor(&prompts)?;
    let share_next = |logits: &Tensor| -> Result<f64> {
        let t = logits.dim(1)?;
        let logp: Vec<Vec<f32>> =
            candle_nn::ops::log_softmax(&logits.narrow(1, t - 1, 1)?.squeeze(1)?, D::Minus1)?
                .to_vec2()?;
        let shares: Vec<f64> = logp
            .iter()
            .map(|row| {
                let (p, n) = polarity_mass(vocab, row);
                p / (p + n)
            })
            .collect();
        Ok(shares.iter().sum::<f64>() / shares.len() as f64)
    };
    let before = share_next(&m.model.forward(&prompt_t, &mut Hx::none())?)?;
    let mut steered = SteeringVectors::from_vectors(steer, headline)?.prepare(&m.model)?;
    let after = share_next(&steered.forward(&prompt_t)?)?;
    b.inc(1);

    // Generations, steered by each coefficient.
    let vector = SteeringVector::from_addition(steer, TokenReduction::MeanTokens)?;
    let opts = GenerateOptions {
        max_new_tokens,
        sampling: Sampling::Sample {
            temperature: 1.0,
            top_k: None,
            top_p: None,
            seed,
        },
        stop_tokens: vec![vocab.eos()],
        pad_token: vocab.pad(),
    };
    let mut positive_share = Vec::new();
    let mut sentiment_words = Vec::new();
    let mut finished = Vec::new();
    let mut examples = Vec::new();
    for &c in coefs {
        b.set_message(format!("coefficient {c:+}"));
        let outs = if c == 0.0 {
            generate(&m.model, &prompts, &opts, None)?
        } else {
            let mut hooks = GenerateHooks::new(&m.model);
            BatchSteering::uniform(vector.clone().with_coefficient(c), prompts.len())
                .install(&m.model, &mut hooks, &prompts)?;
            generate(&m.model, &prompts, &opts, Some(&mut hooks))?
        };
        let (mut p, mut n) = (0usize, 0usize);
        let ended = outs.iter().filter(|r| r.contains(&vocab.eos())).count();
        finished.push(ended as f64 / outs.len() as f64);
        let mut ex = Vec::new();
        for (prompt, row) in prompts.iter().zip(&outs) {
            let words: Vec<&str> = row
                .iter()
                .take_while(|&&t| t != vocab.eos())
                .map(|&t| vocab.word(t))
                .collect();
            for w in &words {
                match polarity(w) {
                    Some(true) => p += 1,
                    Some(false) => n += 1,
                    None => {}
                }
            }
            if ex.len() < 4 {
                ex.push(format!(
                    "{} | {}",
                    vocab.decode(&prompt[1..]),
                    words.join(" ")
                ));
            }
        }
        positive_share.push(if p + n == 0 {
            f64::NAN
        } else {
            p as f64 / (p + n) as f64
        });
        sentiment_words.push(p + n);
        examples.push(ex);
        b.inc(1);
    }
    b.finish_and_clear();
    Ok(SteeringResult {
        point: point.into(),
        vector_norm,
        coefs: coefs.to_vec(),
        positive_share,
        sentiment_words,
        finished,
        headline,
        next_word_positive: (before, after),
        examples,
        samples,
    })
}

// ---- the whole tour ------------------------------------------------------------------------

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

/// The pictures, as SVG strings keyed by file name.
pub fn pictures(
    attention: &AttentionResult,
    patching: &PatchingResult,
    probing: &ProbingResult,
    steering: &SteeringResult,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let labels: Vec<String> = attention
        .tokens
        .iter()
        .enumerate()
        .map(|(i, t)| format!("{t} {i}"))
        .collect();
    for (l, heads) in attention.patterns.iter().enumerate() {
        let map = Heatmap {
            title: format!("Attention patterns, block {l} (transformer.h.{l}.attn.hook_pattern)"),
            subtitle: format!(
                "\"{}\" — row: the attending (query) token, column: the token attended to",
                attention.text
            ),
            row_labels: labels.clone(),
            col_labels: labels.clone(),
            row_title: "query position".into(),
            col_title: "key position".into(),
            panels: heads
                .iter()
                .enumerate()
                .map(|(h, p)| Panel {
                    title: format!("head {h}"),
                    values: p.clone(),
                })
                .collect(),
            scale: ColorScale::sequential(0.0, 1.0, "attention probability"),
            cell: 17.0,
            annotate: false,
            highlight: vec![],
        };
        out.push((
            format!("attention_block{l}.svg"),
            map.svg(&format!("att{l}")),
        ));
    }
    let (br, bp) = patching.argmax();
    let patch = Heatmap {
        title: "Activation patching: where the answer is carried".into(),
        subtitle: format!(
            "clean \"{}\" vs corrupted \"{}\" ({} pairs); 1 = patching that cell alone restores the clean answer",
            patching.example_clean, patching.example_corrupted, patching.pairs
        ),
        row_labels: patching
            .rows
            .iter()
            .zip(&patching.paths)
            .map(|(r, p)| format!("{r} ({p})"))
            .collect(),
        col_labels: patching.positions.clone(),
        row_title: "patched activation".into(),
        col_title: "patched position".into(),
        panels: vec![Panel {
            title: String::new(),
            values: patching.effect.clone(),
        }],
        scale: ColorScale::diverging(1.0, "normalised logit difference"),
        cell: 46.0,
        annotate: true,
        highlight: vec![(0, br, bp)],
    };
    out.push(("patching.svg".into(), patch.svg("patch")));
    let probe = BarChart {
        title: "Probing: sentiment is linearly readable after the first block".into(),
        subtitle: format!(
            "logistic-regression probe on the last token of a review; {} train / {} held-out reviews",
            probing.n_train, probing.n_test
        ),
        labels: probing.layers.clone(),
        values: probing.test_accuracy.clone(),
        dots: Some(("train accuracy".into(), probing.train_accuracy.clone())),
        colors: vec![Rgb(55, 110, 170)],
        series: "held-out accuracy".into(),
        y_title: "accuracy".into(),
        x_title: "probed activation (output of)".into(),
        y_min: 0.0,
        y_max: 1.0,
        reference: Some((0.5, "chance".into())),
    };
    out.push(("probing.svg".into(), probe.svg()));
    let colors: Vec<Rgb> = steering
        .coefs
        .iter()
        .map(|&c| {
            if c > 0.0 {
                Rgb(178, 24, 43)
            } else if c < 0.0 {
                Rgb(33, 102, 172)
            } else {
                Rgb(130, 130, 130)
            }
        })
        .collect();
    let steer = BarChart {
        title: format!(
            "Steering at {}: share of positive words generated",
            steering.point
        ),
        subtitle: format!(
            "vector = mean(positive − negative review) from ActivationAddition; {} sampled generations of \"the X was …\" per coefficient",
            steering.samples
        ),
        labels: steering.coefs.iter().map(|c| format!("{c:+}")).collect(),
        values: steering.positive_share.clone(),
        dots: Some(("generations that end".into(), steering.finished.clone())),
        colors,
        series: "positive / (positive + negative) words".into(),
        y_title: "share".into(),
        x_title: "steering coefficient".into(),
        y_min: 0.0,
        y_max: 1.0,
        reference: Some((0.5, "even".into())),
    };
    out.push(("steering.svg".into(), steer.svg()));
    out
}

fn write_report(
    m: &Loaded,
    dir: &Path,
    attention: &AttentionResult,
    patching: &PatchingResult,
    probing: &ProbingResult,
    steering: &SteeringResult,
) -> Result<(PathBuf, Vec<PathBuf>)> {
    let pics = pictures(attention, patching, probing, steering);
    let mut files = Vec::new();
    for (name, svg) in &pics {
        let path = dir.join(name);
        std::fs::write(&path, svg).with_context(|| format!("writing {}", path.display()))?;
        files.push(path);
    }
    let svg_of = |name: &str| {
        pics.iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s.as_str())
            .unwrap_or("")
    };
    let cfg = m.model.config();
    let mut page = Page::new("tdhook tour");
    page.para_html(&format!(
        "The five latent methods of <code>tdhook</code> on {}: a GPT-2-shaped model ({} blocks, width {}, {} heads, \
         vocabulary of {} words) trained on a toy language whose truths are known — reviews whose sentiment \
         words all share one polarity, and indirect-object sentences whose answer is the name that appeared once.",
        esc(&m.source),
        cfg.n_layer,
        cfg.n_embd,
        cfg.n_head,
        cfg.vocab_size
    ));
    if m.source.contains("embedded")
        && let Ok(log) = serde_json::from_str::<serde_json::Value>(TRAIN_LOG_JSON)
    {
        let h = &log["held_out"];
        page.para_html(&format!(
            "Training (<code>cargo run --release --example train_tiny</code>): {} steps in {:.0} s; held-out loss {:.3}, \
             next-word accuracy {:.3}, IOI answer accuracy {:.3}, sentiment-word accuracy {:.3}.",
            log["settings"]["steps"],
            log["seconds"].as_f64().unwrap_or(f64::NAN),
            h["loss"].as_f64().unwrap_or(f64::NAN),
            h["next_word_accuracy"].as_f64().unwrap_or(f64::NAN),
            h["ioi_accuracy"].as_f64().unwrap_or(f64::NAN),
            h["sentiment_accuracy"].as_f64().unwrap_or(f64::NAN),
        ));
    }
    page.table(
        &["method", "question", "result"],
        &summary_rows(attention, patching, probing, steering),
    );

    page.heading("1. ActivationCaching — attention patterns");
    page.para_html(&format!(
        "<code>ActivationCaching::new(r\"transformer\\.h\\.\\d+\\.attn\\.hook_pattern\")</code> keeps the attention \
         probabilities of every block ({}). After <i>{}</i> the model predicts <b>{}</b> (p = {:.2}). \
         Look at the last row of each head: which earlier words does the final <code>to</code> read?",
        attention.cached.iter().map(|(k, s)| format!("<code>{k}</code> {s:?}")).collect::<Vec<_>>().join(", "),
        esc(&attention.text),
        esc(&attention.next.0),
        attention.next.1
    ));
    for l in 0..attention.patterns.len() {
        let name = format!("attention_block{l}.svg");
        page.figure(
            svg_of(&name),
            &format!("Block {l}, one panel per head ({name})."),
        );
    }

    page.heading("2. ActivationPatching — which activation carries the answer");
    let (br, bp) = patching.argmax();
    page.para_html(&format!(
        "Clean: <i>{}</i> → the answer is the name that appeared once. Corrupted: the repeated name is swapped \
         (<i>{}</i>), so the answer flips. Mean logit(IO) − logit(S): clean {:.2}, corrupted {:.2}. \
         <code>ActivationPatching</code> with a <code>patch_fn</code> that copies one position of the clean run into the \
         corrupted run, for the embeddings and each block's output; a cell is the fraction of the clean logit \
         difference restored. The largest effect (last position aside) is at <b>{}</b>, position <b>{}</b> ({:.2}): \
         the information moves from the repeated name to the final token as depth grows.",
        esc(&patching.example_clean),
        esc(&patching.example_corrupted),
        patching.clean_diff,
        patching.corrupted_diff,
        esc(&patching.rows[br]),
        esc(&patching.positions[bp]),
        patching.effect[br][bp]
    ));
    page.figure(
        svg_of("patching.svg"),
        "Rows: patched activation; columns: patched position (patching.svg).",
    );

    page.heading("3. Probing — where sentiment is linearly readable");
    let (bl, ba) = probing.best();
    page.para_html(&format!(
        "<code>Probing</code> with a <code>ProbeManager</code> of <code>LogisticRegression</code> probes, one per \
         activation, fed the last token of each review (the closing <code>.</code>, a word with no sentiment of its \
         own). Fitted on {} reviews, scored on {} held-out ones. Best: <b>{}</b> at {:.3}; the embeddings alone are \
         at chance, as they must be.",
        probing.n_train,
        probing.n_test,
        esc(&probing.layers[bl]),
        ba
    ));
    page.figure(
        svg_of("probing.svg"),
        "Bars: held-out accuracy; dots: train accuracy (probing.svg).",
    );

    page.heading("4. ActivationAddition + SteeringVectors — steering sentiment");
    page.para_html(&format!(
        "<code>ActivationAddition</code> at <code>{}</code> with positive prompts like <i>the film was great and fun .</i> \
         and negative twins like <i>the film was awful and cold .</i> (difference averaged over the batch and the \
         tokens) gives a vector of norm {:.2}. Added through <code>SteeringVectors</code> with coefficient {:+}, the \
         probability that the word after <i>the X was</i> is positive (among sentiment words) goes from {:.2} to {:.2}. \
         In sampled generations from <i>the X was</i> (<code>generate</code> with <code>BatchSteering</code>, KV cache, \
         temperature 1, {} samples per coefficient) the share of positive words among the sentiment words generated \
         is {:.2} unsteered, {:.2} at {:+} and {:.2} at {:+}. Too strong a vector breaks the language before it \
         flips the sentiment: the dots show how many generations still end with <code>&lt;eos&gt;</code>.",
        esc(&steering.point),
        steering.vector_norm,
        steering.headline,
        steering.next_word_positive.0,
        steering.next_word_positive.1,
        steering.samples,
        steering.baseline(),
        steering.steered(),
        steering.headline,
        steering.steered_negative(),
        -steering.headline
    ));
    page.figure(
        svg_of("steering.svg"),
        "Bars: share of positive words among generated sentiment words; dots: share of generations that end (steering.svg).",
    );
    let mut rows = Vec::new();
    for (c, ex) in steering.coefs.iter().zip(&steering.examples) {
        let cells: Vec<String> = ex.iter().map(|e| colour_words(e)).collect();
        rows.push(format!(
            "<tr><th>{c:+}</th><td class=\"gen\">{}</td></tr>",
            cells.join("<br>")
        ));
    }
    page.raw(&format!(
        "<table><thead><tr><th>coefficient</th><th>prompt | sampled continuation (positive words red, negative blue)</th></tr></thead><tbody>{}</tbody></table>\n",
        rows.concat()
    ));
    page.para_html("Written by <code>tdhook tour</code>; every picture is also an .svg file next to this page.");
    let report = dir.join("report.html");
    std::fs::write(&report, page.html())
        .with_context(|| format!("writing {}", report.display()))?;
    Ok((report, files))
}

fn colour_words(text: &str) -> String {
    text.split(' ')
        .map(|w| match polarity(w) {
            Some(true) => format!("<span class=\"pos\">{}</span>", esc(w)),
            Some(false) => format!("<span class=\"neg\">{}</span>", esc(w)),
            None => esc(w),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn summary_rows(
    attention: &AttentionResult,
    patching: &PatchingResult,
    probing: &ProbingResult,
    steering: &SteeringResult,
) -> Vec<Vec<String>> {
    let (br, bp) = patching.argmax();
    let (bl, ba) = probing.best();
    vec![
        vec![
            "ActivationCaching".into(),
            "what does each head attend to?".into(),
            format!(
                "{} patterns {:?}; next word after the IOI prompt: {} (p {:.2})",
                attention.cached.len(),
                attention
                    .cached
                    .first()
                    .map(|c| c.1.clone())
                    .unwrap_or_default(),
                attention.next.0,
                attention.next.1
            ),
        ],
        vec![
            "ActivationPatching".into(),
            "where is the IOI answer carried?".into(),
            format!(
                "largest effect {:.2} at {} / {}; last position, last block {:.2}",
                patching.effect[br][bp],
                patching.rows[br],
                patching.positions[bp],
                patching
                    .effect
                    .last()
                    .and_then(|r| r.last())
                    .copied()
                    .unwrap_or(f64::NAN)
            ),
        ],
        vec![
            "Probing".into(),
            "where is sentiment linearly readable?".into(),
            format!(
                "held-out accuracy {} (best {} {:.3})",
                probing
                    .layers
                    .iter()
                    .zip(&probing.test_accuracy)
                    .map(|(l, a)| format!("{l} {a:.2}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                probing.layers[bl],
                ba
            ),
        ],
        vec![
            "ActivationAddition + SteeringVectors".into(),
            "does a great − awful vector steer?".into(),
            format!(
                "positive share {:.2} unsteered, {:.2} at {:+}, {:.2} at {:+}; next-word P(positive) {:.2} → {:.2}",
                steering.baseline(),
                steering.steered(),
                steering.headline,
                steering.steered_negative(),
                -steering.headline,
                steering.next_word_positive.0,
                steering.next_word_positive.1
            ),
        ],
    ]
}

/// The terminal summary.
pub fn summary(t: &Tour) -> String {
    let rows = summary_rows(&t.attention, &t.patching, &t.probing, &t.steering);
    let w0 = rows.iter().map(|r| r[0].chars().count()).max().unwrap_or(0);
    let w1 = rows.iter().map(|r| r[1].chars().count()).max().unwrap_or(0);
    let mut s = String::new();
    s.push_str(&format!(
        "{:<w0$}  {:<w1$}  {}\n",
        "method", "question", "result"
    ));
    s.push_str(&format!(
        "{}  {}  {}\n",
        "-".repeat(w0),
        "-".repeat(w1),
        "-".repeat(40)
    ));
    for r in &rows {
        s.push_str(&format!("{:<w0$}  {:<w1$}  {}\n", r[0], r[1], r[2]));
    }
    s.push_str("\nsteering sweep (positive share of generated sentiment words):\n");
    for (((c, p), n), f) in t
        .steering
        .coefs
        .iter()
        .zip(&t.steering.positive_share)
        .zip(&t.steering.sentiment_words)
        .zip(&t.steering.finished)
    {
        s.push_str(&format!(
            "  coef {c:+5.1}: {p:.2}  ({n} sentiment words; {:.0}% of generations end)\n",
            f * 100.0
        ));
    }
    s.push_str(&format!("\nreport: {}\n", t.report.display()));
    for p in &t.pictures {
        s.push_str(&format!("        {}\n", p.display()));
    }
    s.push_str(&format!("({:.1} s)\n", t.seconds));
    s
}
