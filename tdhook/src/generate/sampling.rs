//! Choosing the next token: greedy, or seeded sampling with temperature, top-k and top-p.

use crate::error::{Error, Result};

/// How the next token is chosen.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Sampling {
    /// The most likely token (ties: the lowest id).
    Greedy,
    /// Seeded sampling: logits / temperature, then top-k, then top-p (nucleus) filtering.
    Sample {
        /// > 0; 1 keeps the model's distribution.
        temperature: f64,
        /// Keep only the k most likely tokens.
        top_k: Option<usize>,
        /// Keep the smallest set of tokens whose probability reaches p.
        top_p: Option<f64>,
        /// The seed; row `b` of a batch uses its own stream derived from it.
        seed: u64,
    },
}

impl Sampling {
    pub(crate) fn validate(&self) -> Result<()> {
        if let Sampling::Sample {
            temperature,
            top_k,
            top_p,
            ..
        } = self
        {
            if !(*temperature > 0.0 && temperature.is_finite()) {
                return Err(Error::Invalid(format!(
                    "temperature must be a positive finite number, got {temperature}; use Sampling::Greedy for argmax"
                )));
            }
            if *top_k == Some(0) {
                return Err(Error::Invalid("top_k must be at least 1".into()));
            }
            if let Some(p) = top_p
                && !(*p > 0.0 && *p <= 1.0)
            {
                return Err(Error::Invalid(format!("top_p must be in (0, 1], got {p}")));
            }
        }
        Ok(())
    }
}

/// SplitMix64: a small, fast, seedable generator; one per batch row keeps rows independent of
/// each other and of the batch they run in.
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub fn new(seed: u64, stream: u64) -> Self {
        let mut r = Rng(seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        r.next_u64();
        r
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Pick a token from one row of logits.
pub(crate) fn pick(logits: &[f32], sampling: &Sampling, rng: &mut Rng) -> u32 {
    match sampling {
        Sampling::Greedy => argmax(logits),
        Sampling::Sample {
            temperature,
            top_k,
            top_p,
            ..
        } => {
            let mut idx: Vec<usize> = (0..logits.len()).collect();
            // Stable sort by descending logit: ties keep the lower id first.
            idx.sort_by(|&a, &b| {
                logits[b]
                    .partial_cmp(&logits[a])
                    .unwrap_or(std::cmp::Ordering::Equal)
            });
            if let Some(k) = top_k {
                idx.truncate((*k).max(1));
            }
            let max = logits[idx[0]] as f64;
            let mut probs: Vec<f64> = idx
                .iter()
                .map(|&i| ((logits[i] as f64 - max) / temperature).exp())
                .collect();
            let total: f64 = probs.iter().sum();
            probs.iter_mut().for_each(|p| *p /= total);
            if let Some(p) = top_p {
                let mut acc = 0.0;
                let mut keep = probs.len();
                for (n, q) in probs.iter().enumerate() {
                    acc += q;
                    if acc >= *p {
                        keep = n + 1;
                        break;
                    }
                }
                probs.truncate(keep);
                idx.truncate(keep);
                let total: f64 = probs.iter().sum();
                probs.iter_mut().for_each(|q| *q /= total);
            }
            let u = rng.next_f64();
            let mut acc = 0.0;
            for (n, q) in probs.iter().enumerate() {
                acc += q;
                if u < acc {
                    return idx[n] as u32;
                }
            }
            idx[probs.len() - 1] as u32
        }
    }
}

fn argmax(xs: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_is_argmax_and_top_k_one_is_greedy() {
        let logits = [0.1, 2.0, -1.0, 2.0, 0.5];
        let mut rng = Rng::new(7, 0);
        assert_eq!(pick(&logits, &Sampling::Greedy, &mut rng), 1);
        let s = Sampling::Sample {
            temperature: 0.7,
            top_k: Some(1),
            top_p: None,
            seed: 7,
        };
        for _ in 0..20 {
            assert_eq!(pick(&logits, &s, &mut rng), 1);
        }
    }

    #[test]
    fn sampling_frequencies_follow_softmax() {
        let logits = [0.0f32, (2.0f32).ln(), (5.0f32).ln()]; // probabilities 1/8, 2/8, 5/8
        let s = Sampling::Sample {
            temperature: 1.0,
            top_k: None,
            top_p: None,
            seed: 1,
        };
        let mut rng = Rng::new(1, 0);
        let mut counts = [0usize; 3];
        let n = 40_000;
        for _ in 0..n {
            counts[pick(&logits, &s, &mut rng) as usize] += 1;
        }
        for (c, p) in counts.iter().zip([0.125, 0.25, 0.625]) {
            let f = *c as f64 / n as f64;
            assert!((f - p).abs() < 0.01, "frequency {f} vs {p}");
        }
    }

    #[test]
    fn top_p_keeps_the_nucleus_only() {
        let logits = [0.0f32, (2.0f32).ln(), (5.0f32).ln()];
        let s = Sampling::Sample {
            temperature: 1.0,
            top_k: None,
            top_p: Some(0.6),
            seed: 3,
        };
        let mut rng = Rng::new(3, 0);
        for _ in 0..200 {
            assert_eq!(
                pick(&logits, &s, &mut rng),
                2,
                "only the 0.625 token is in the 0.6 nucleus"
            );
        }
    }

    #[test]
    fn bad_parameters_are_errors() {
        let bad = Sampling::Sample {
            temperature: 0.0,
            top_k: None,
            top_p: None,
            seed: 0,
        };
        assert!(bad.validate().is_err());
        let bad = Sampling::Sample {
            temperature: 1.0,
            top_k: None,
            top_p: Some(1.5),
            seed: 0,
        };
        assert!(bad.validate().is_err());
    }
}
