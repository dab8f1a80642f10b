//! Scores of a model on the toy language: loss, next-word accuracy, IOI answer accuracy and
//! sentiment-word accuracy (shared by `examples/train_tiny.rs` and the tour).

use crate::toy::{Doc, Vocab, polarity};
use anyhow::Result;
use candle_core::{D, Device, Tensor};
use serde::{Deserialize, Serialize};
use tdhook::Hx;
use tdhook::models::gpt2::Gpt2;

/// Right-pad `seqs` with `pad` into a `[B, T]` u32 tensor (`T` = the longest).
pub fn pad_batch(seqs: &[Vec<u32>], pad: u32, device: &Device) -> Result<Tensor> {
    let t = seqs.iter().map(Vec::len).max().unwrap_or(0);
    let flat: Vec<u32> = seqs
        .iter()
        .flat_map(|s| {
            s.iter()
                .copied()
                .chain(std::iter::repeat_n(pad, t - s.len()))
        })
        .collect();
    Ok(Tensor::from_vec(flat, (seqs.len(), t), device)?)
}

/// `<bos> words <eos>` ids of a document.
pub fn doc_ids(vocab: &Vocab, doc: &Doc) -> Result<Vec<u32>> {
    let mut ids = vocab.encode_doc(&doc.text())?;
    ids.push(vocab.eos());
    Ok(ids)
}

/// Probability mass on positive and on negative words, from log-probabilities over the vocab.
pub fn polarity_mass(vocab: &Vocab, logp: &[f32]) -> (f64, f64) {
    let (mut p, mut n) = (0f64, 0f64);
    for (id, &lp) in logp.iter().enumerate() {
        match polarity(vocab.word(id as u32)) {
            Some(true) => p += (lp as f64).exp(),
            Some(false) => n += (lp as f64).exp(),
            None => {}
        }
    }
    (p, n)
}

/// How well a model speaks the toy language.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    /// Mean next-token cross-entropy (nats) over real (non-pad) targets.
    pub loss: f64,
    /// Argmax next-token accuracy over real targets.
    pub next_word_accuracy: f64,
    /// IOI: the argmax after `... to` is the indirect object.
    pub ioi_accuracy: f64,
    /// Reviews: where the next word is a sentiment word that is not the review's first, the
    /// model puts more probability on words of the review's polarity than of the other.
    pub sentiment_accuracy: f64,
    /// Targets scored.
    pub tokens: usize,
    /// IOI sentences scored.
    pub ioi_sentences: usize,
    /// Sentiment positions scored.
    pub sentiment_positions: usize,
}

/// Score `model` on `docs` (batches of 64).
pub fn evaluate(model: &Gpt2, vocab: &Vocab, docs: &[Doc]) -> Result<Scores> {
    let device = model.lm_head.weight().device().clone();
    let (mut nll, mut tokens, mut correct) = (0f64, 0usize, 0usize);
    let (mut ioi_n, mut ioi_ok, mut sent_n, mut sent_ok) = (0usize, 0usize, 0usize, 0usize);
    for chunk in docs.chunks(64) {
        let seqs: Vec<Vec<u32>> = chunk
            .iter()
            .map(|d| doc_ids(vocab, d))
            .collect::<Result<_>>()?;
        let ids = pad_batch(&seqs, vocab.pad(), &device)?;
        let logits = model.forward(&ids, &mut Hx::none())?;
        let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
        let argmax: Vec<Vec<u32>> = logits.argmax(D::Minus1)?.to_vec2()?;
        let logp: Vec<Vec<Vec<f32>>> = logp.to_vec3()?;
        for (b, (doc, seq)) in chunk.iter().zip(&seqs).enumerate() {
            let mut seen_sentiment = false;
            for i in 0..seq.len() - 1 {
                let target = seq[i + 1];
                nll -= logp[b][i][target as usize] as f64;
                tokens += 1;
                let pred = argmax[b][i];
                correct += usize::from(pred == target);
                match doc {
                    Doc::Ioi(_) if i + 2 == seq.len() - 1 => {
                        // Position of `to`; the target is the answer (then `<eos>`).
                        ioi_n += 1;
                        ioi_ok += usize::from(pred == target);
                    }
                    Doc::Review(r) if polarity(vocab.word(target)).is_some() => {
                        if seen_sentiment {
                            sent_n += 1;
                            let (p, n) = polarity_mass(vocab, &logp[b][i]);
                            sent_ok += usize::from((p > n) == r.positive);
                        }
                        seen_sentiment = true;
                    }
                    _ => {}
                }
            }
        }
    }
    let ratio = |a: usize, n: usize| if n == 0 { 0.0 } else { a as f64 / n as f64 };
    Ok(Scores {
        loss: nll / tokens.max(1) as f64,
        next_word_accuracy: ratio(correct, tokens),
        ioi_accuracy: ratio(ioi_ok, ioi_n),
        sentiment_accuracy: ratio(sent_ok, sent_n),
        tokens,
        ioi_sentences: ioi_n,
        sentiment_positions: sent_n,
    })
}
