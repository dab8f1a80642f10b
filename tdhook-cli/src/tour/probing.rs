//! Probing: where sentiment is linearly readable, layer by layer.

use super::*;

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
