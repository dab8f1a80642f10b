//! ActivationPatching: where the answer lives, layer by position.

use super::*;

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
