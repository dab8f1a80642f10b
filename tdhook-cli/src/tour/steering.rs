//! ActivationAddition + SteeringVectors + generation: steering the next word and sampled text.

use super::*;

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
