//! The tour end to end on the embedded tiny model (fewer samples than `tdhook-cli tour`), the
//! trained model's known truths, and the `tdhook-cli` binary's commands.

use std::path::PathBuf;
use std::process::Command;
use tdhook_cli::eval::evaluate;
use tdhook_cli::tiny;
use tdhook_cli::tour::{self, TourConfig};
use tdhook_cli::toy::{Toy, is_name};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tdhook-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn the_tour_runs_end_to_end_and_finds_the_known_truths() {
    let m = tiny::embedded().unwrap();
    let dir = temp_dir("tour");
    let t = tour::run(&m, &TourConfig::quick(&dir)).unwrap();

    // The report and every picture exist and are real documents.
    let html = std::fs::read_to_string(&t.report).unwrap();
    assert!(html.len() > 20_000, "report is {} bytes", html.len());
    assert!(html.starts_with("<!DOCTYPE html>") && html.contains("</html>"));
    // Self-contained: no scripts, nothing fetched (the only URL is the SVG namespace).
    assert!(!html.contains("<script") && !html.contains("<link") && !html.contains("src="));
    assert!(!html.contains("href=\"http") && !html.contains("url(http"));
    let n_layer = m.model.config().n_layer;
    assert_eq!(
        t.pictures.len(),
        n_layer + 3,
        "attention per block, patching, probing, steering"
    );
    for p in &t.pictures {
        let svg = std::fs::read_to_string(p).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
            "{}",
            p.display()
        );
        assert!(svg.len() > 3_000, "{} is {} bytes", p.display(), svg.len());
        assert!(
            html.contains(svg.trim_end()),
            "{} is inlined in the report",
            p.display()
        );
    }

    // Caching: one [1, heads, T, T] pattern per block, rows summing to 1.
    assert_eq!(t.attention.patterns.len(), n_layer);
    for layer in &t.attention.patterns {
        for head in layer {
            for row in head {
                assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-4);
            }
        }
    }

    // Probing: sentiment is readable after the first block, not from the embedding of `.`.
    let (best, acc) = t.probing.best();
    assert!(
        acc >= 0.9,
        "best probe accuracy {acc} at {}",
        t.probing.layers[best]
    );
    assert!(
        t.probing.test_accuracy[0] < 0.7,
        "embeddings: {}",
        t.probing.test_accuracy[0]
    );

    // Steering: the vector moves the positive share both ways.
    let s = &t.steering;
    let (base, up, down) = (s.baseline(), s.share_at(4.0), s.share_at(-4.0));
    assert!(up > base + 0.15, "steering +4: {base:.2} → {up:.2}");
    assert!(down < base - 0.15, "steering −4: {base:.2} → {down:.2}");
    assert!(
        s.next_word_positive.1 > s.next_word_positive.0 + 0.2,
        "{:?}",
        s.next_word_positive
    );

    // Patching: the clean run prefers the indirect object, the corrupted one the other name, and
    // the largest effect (last position aside) is on a name.
    let p = &t.patching;
    assert!(
        p.clean_diff > 1.0 && p.corrupted_diff < -1.0,
        "{} {}",
        p.clean_diff,
        p.corrupted_diff
    );
    let (row, pos) = p.argmax();
    assert!(
        p.name_positions.contains(&pos),
        "argmax at {} / {}",
        p.rows[row],
        p.positions[pos]
    );
    assert!(p.effect[row][pos] > 0.5);
    let last = p.positions.len() - 1;
    assert!(
        p.effect[p.rows.len() - 1][last] > 0.99,
        "the last block at the last position restores all"
    );

    let summary = tour::summary(&t);
    for method in [
        "ActivationCaching",
        "ActivationPatching",
        "Probing",
        "ActivationAddition",
    ] {
        assert!(summary.contains(method), "{summary}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_embedded_model_has_learned_the_toy_language() {
    let m = tiny::embedded().unwrap();
    let vocab = m.vocab().unwrap();
    let mut toy = Toy::new(424_242);
    let docs: Vec<_> = (0..256).map(|_| toy.doc()).collect();
    let s = evaluate(&m.model, vocab, &docs).unwrap();
    assert!(s.ioi_accuracy > 0.9, "{s:?}");
    assert!(s.sentiment_accuracy > 0.9, "{s:?}");
    // Every IOI answer it gives is a name.
    let ioi = toy.ioi();
    let out = tdhook::generate::generate(
        &m.model,
        &[vocab.encode_doc(&ioi.prompt).unwrap()],
        &tdhook::generate::GenerateOptions {
            max_new_tokens: 1,
            ..Default::default()
        },
        None,
    )
    .unwrap();
    assert!(is_name(vocab.word(out[0][0])));
}

#[test]
fn the_assets_folder_loads_through_the_tokenizers_crate_with_the_same_ids() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/tiny");
    let from_dir = tiny::load_dir(&dir).unwrap();
    assert!(
        matches!(from_dir.tokenizer, tiny::Tokenizer::Hf(_)),
        "tokenizer.json wins over vocab.json"
    );
    let embedded = tiny::embedded().unwrap();
    for text in [
        "the film was great and fun .",
        "alice and bob went to the shop . bob gave the book to",
    ] {
        let a = embedded.tokenizer.encode(text).unwrap();
        let b = from_dir.tokenizer.encode(text).unwrap();
        assert_eq!(a, b, "{text}");
        assert_eq!(from_dir.tokenizer.decode(&b[1..]), text);
    }
    // Same weights.
    let ids = candle_core::Tensor::new(&[[1u32, 5, 9, 20]], &candle_core::Device::Cpu).unwrap();
    let x = embedded
        .model
        .forward(&ids, &mut tdhook::Hx::none())
        .unwrap();
    let y = from_dir
        .model
        .forward(&ids, &mut tdhook::Hx::none())
        .unwrap();
    let d = (x - y)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert_eq!(d, 0.0);
}

fn tdhook(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tdhook-cli"))
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_cache_command_prints_shapes_and_names_the_nearest_paths_on_a_typo() {
    let (ok, text) = tdhook(&[
        "cache",
        "--pattern",
        r"transformer\.h\.\d+",
        "--text",
        "the film was great .",
    ]);
    assert!(ok, "{text}");
    assert!(
        text.contains("transformer.h.0") && text.contains("[1, 6, "),
        "{text}"
    );
    let (ok, text) = tdhook(&[
        "cache",
        "--pattern",
        r"transformer\.hh\.\d+",
        "--text",
        "the film",
    ]);
    assert!(!ok);
    assert!(
        text.contains("transformer.h"),
        "the error lists real paths: {text}"
    );
    let (ok, text) = tdhook(&["cache", "--pattern", "lm_head", "--text", "the flim"]);
    assert!(!ok && text.contains("flim"), "{text}");
}

#[test]
fn the_steer_command_changes_the_continuation_and_loads_a_model_folder() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/tiny");
    let args = [
        "steer",
        "--positive",
        "the film was great and fun .",
        "--negative",
        "the film was awful and cold .",
        "--prompt",
        "the meal was",
        "--coef",
        "4",
        "--point",
        "transformer.h.2",
        "--model",
        dir.to_str().unwrap(),
    ];
    let (ok, text) = tdhook(&args);
    assert!(ok, "{text}");
    let line = |p: &str| {
        text.lines()
            .find(|l| l.starts_with(p))
            .unwrap_or_default()
            .to_string()
    };
    let after_colon = |l: String| {
        l.split_once(':')
            .map(|(_, t)| t.trim().to_string())
            .unwrap_or_default()
    };
    let (plain, steered) = (after_colon(line("unsteered")), after_colon(line("steered")));
    assert!(!plain.is_empty() && !steered.is_empty(), "{text}");
    assert_ne!(
        plain, steered,
        "a +4 sentiment vector changes the greedy continuation: {text}"
    );
    let (ok, text) = tdhook(&[
        "steer",
        "--positive",
        "great",
        "--negative",
        "very awful",
        "--prompt",
        "the",
    ]);
    assert!(!ok && text.contains("same token length"), "{text}");
}
