//! The pictures, the HTML report and the terminal summary.

use super::*;

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

pub(super) fn write_report(
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
