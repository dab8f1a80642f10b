//! Interleaved plain vs DSL-hooks-off timing, for the headline overhead ratio.
//!
//! Criterion times one function after the other, so any drift of the machine (frequency, other
//! processes, page cache) between them lands in the ratio. Here each round times `K` forwards of
//! `plain` and `K` of `dsl_hooks_off` back to back, the order alternating between rounds, so drift
//! hits both alike. Per shape it prints the median per-forward time of each and three estimates
//! of dsl/plain, each with a 95 % bootstrap interval (rounds resampled, a round's two times kept
//! together): the ratio of the medians, the ratio of the 10th percentiles (the fast end, least
//! touched by other processes on a shared machine) and the median of the per-round ratios.
//!
//! ```text
//! cargo bench --bench hooks_off_interleaved -- [--shape tiny|gpt2_small|all]
//!     [--budget-tiny SECS] [--budget-small SECS] [--rounds N] [--inner K]
//!     [--only plain|dsl|none N]
//! ```
//!
//! `--only ARM N` builds the models (checking the logits) and runs `N` forwards of one arm, no
//! timing: under `valgrind --tool=callgrind`, with one thread, the instruction counts of two such
//! runs differ only by the arm, which measures the DSL's overhead without timing noise.
//!
//! Threads: candle's CPU kernels use `RAYON_NUM_THREADS` (else all physical cores); the script
//! runs this twice, with `RAYON_NUM_THREADS=1` and with the default. Without `--bench`
//! (`cargo test --benches`) it only builds the tiny models, checks the logits and runs 3 rounds.

mod support;

use anyhow::{Context, Result, bail};
use std::hint::black_box;
use std::time::{Duration, Instant};
use support::{Rng, Setup, Shape};

struct Opts {
    shapes: Vec<Shape>,
    budget_tiny: f64,
    budget_small: f64,
    rounds: Option<usize>,
    inner: Option<usize>,
    smoke: bool,
    /// `--only plain|dsl N`: build, then run N forwards of one arm and exit (for instruction
    /// counting under valgrind, where the two runs differ only in the arm).
    only: Option<(String, usize)>,
}

fn parse() -> Result<Opts> {
    let mut opts = Opts {
        shapes: vec![support::tiny(), support::gpt2_small()],
        budget_tiny: 25.0,
        budget_small: 70.0,
        rounds: None,
        inner: None,
        smoke: !support::bench_mode(),
        only: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--bench" => {}
            "--shape" => {
                opts.shapes = match value()?.as_str() {
                    "tiny" => vec![support::tiny()],
                    "gpt2_small" => vec![support::gpt2_small()],
                    "all" => vec![support::tiny(), support::gpt2_small()],
                    other => bail!("unknown shape {other}"),
                }
            }
            "--budget-tiny" => opts.budget_tiny = value()?.parse()?,
            "--budget-small" => opts.budget_small = value()?.parse()?,
            "--rounds" => opts.rounds = Some(value()?.parse()?),
            "--inner" => opts.inner = Some(value()?.parse()?),
            "--only" => {
                let arm = value()?;
                let n = value()?.parse()?;
                opts.only = Some((arm, n));
            }
            // Flags cargo or a harness may pass on.
            s if s.starts_with("--") => {}
            _ => {}
        }
    }
    if opts.smoke && opts.only.is_none() {
        opts.shapes = vec![support::tiny()];
        opts.rounds = Some(3);
        opts.inner = Some(2);
    }
    Ok(opts)
}

/// Seconds per forward over `k` forwards.
fn time_k(k: usize, f: &dyn Fn() -> candle_core::Result<candle_core::Tensor>) -> Result<f64> {
    let start = Instant::now();
    for _ in 0..k {
        black_box(f()?);
    }
    Ok(start.elapsed().as_secs_f64() / k as f64)
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// A statistic with its 95 % bootstrap interval.
#[derive(Clone, Copy)]
struct Est {
    value: f64,
    lo: f64,
    hi: f64,
}

impl std::fmt::Display for Est {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.4} [{:.4}, {:.4}]", self.value, self.lo, self.hi)
    }
}

/// `stat` on the rounds and on 2000 bootstrap resamples of them (a round's plain and dsl times
/// stay together).
fn bootstrap(tp: &[f64], td: &[f64], stat: impl Fn(&[f64], &[f64]) -> f64) -> Est {
    let n = tp.len();
    let mut rng = Rng::new(0xB007);
    let mut boots: Vec<f64> = (0..2000)
        .map(|_| {
            let idx: Vec<usize> = (0..n).map(|_| rng.below(n)).collect();
            let p: Vec<f64> = idx.iter().map(|&i| tp[i]).collect();
            let d: Vec<f64> = idx.iter().map(|&i| td[i]).collect();
            stat(&p, &d)
        })
        .collect();
    boots.sort_by(f64::total_cmp);
    Est {
        value: stat(tp, td),
        lo: percentile(&boots, 0.025),
        hi: percentile(&boots, 0.975),
    }
}

fn p10(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    percentile(&v, 0.10)
}

struct Outcome {
    name: &'static str,
    rounds: usize,
    inner: usize,
    plain: f64,
    dsl: f64,
    /// median(dsl) / median(plain).
    ratio: Est,
    /// p10(dsl) / p10(plain): the fast end, where other processes' interference is least.
    ratio_p10: Est,
    /// Median of the per-round ratios dsl / plain.
    paired: Est,
    paired_min: f64,
    paired_max: f64,
}

fn measure(shape: Shape, opts: &Opts) -> Result<Outcome> {
    let t0 = Instant::now();
    let setup = Setup::new(shape)?;
    let name = setup.shape.name;
    eprintln!(
        "[{name}] built and checked in {:.1}s: plain and DSL logits bit-identical",
        t0.elapsed().as_secs_f64()
    );
    let plain = || setup.forward_plain();
    let dsl = || setup.forward_dsl();

    // Warm up both, then calibrate: K forwards per block of about 20 ms (at least 1), and as many
    // rounds as the budget allows (10 to 2000).
    let warm = Instant::now();
    let mut n = 0;
    while n < 3 || warm.elapsed() < Duration::from_millis(500) {
        time_k(1, &plain)?;
        time_k(1, &dsl)?;
        n += 1;
    }
    let t_one = time_k(3, &plain)?.min(time_k(3, &dsl)?);
    let budget = if name == "tiny" {
        opts.budget_tiny
    } else {
        opts.budget_small
    };
    let inner = opts
        .inner
        .unwrap_or_else(|| ((0.020 / t_one).round() as usize).max(1));
    let rounds = opts
        .rounds
        .unwrap_or_else(|| ((budget / (2.0 * inner as f64 * t_one)) as usize).clamp(10, 2000));
    eprintln!(
        "[{name}] ~{:.3} ms/forward; {rounds} rounds × {inner} forwards per arm, alternating order",
        t_one * 1e3
    );

    let mut tp = Vec::with_capacity(rounds);
    let mut td = Vec::with_capacity(rounds);
    for r in 0..rounds {
        if r % 2 == 0 {
            tp.push(time_k(inner, &plain)?);
            td.push(time_k(inner, &dsl)?);
        } else {
            td.push(time_k(inner, &dsl)?);
            tp.push(time_k(inner, &plain)?);
        }
    }

    let (mp, md) = (median(&tp), median(&td));
    let ratio = bootstrap(&tp, &td, |p, d| median(d) / median(p));
    let ratio_p10 = bootstrap(&tp, &td, |p, d| p10(d) / p10(p));
    let paired_of =
        |p: &[f64], d: &[f64]| -> Vec<f64> { d.iter().zip(p).map(|(d, p)| d / p).collect() };
    let paired = bootstrap(&tp, &td, |p, d| median(&paired_of(p, d)));
    let all_paired = paired_of(&tp, &td);
    let out = Outcome {
        name,
        rounds,
        inner,
        plain: mp,
        dsl: md,
        ratio,
        ratio_p10,
        paired,
        paired_min: all_paired.iter().copied().fold(f64::INFINITY, f64::min),
        paired_max: all_paired.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    };
    eprintln!(
        "[{name}] plain {} dsl {} ratio of medians {}; p10 {}; per-round {}; {:.1}s",
        fmt_time(mp),
        fmt_time(md),
        out.ratio,
        out.ratio_p10,
        out.paired,
        t0.elapsed().as_secs_f64()
    );
    Ok(out)
}

fn fmt_time(s: f64) -> String {
    if s >= 1.0 {
        format!("{s:.3} s")
    } else if s >= 1e-3 {
        format!("{:.3} ms", s * 1e3)
    } else {
        format!("{:.1} µs", s * 1e6)
    }
}

fn main() -> Result<()> {
    let opts = parse()?;
    let threads = support::threads();
    let env = std::env::var("RAYON_NUM_THREADS").map(|v| format!("RAYON_NUM_THREADS={v}"));
    let env = env.unwrap_or_else(|_| "RAYON_NUM_THREADS unset (default pool)".into());
    eprintln!("hooks_off_interleaved: {threads} thread(s), {env}");
    if let Some((arm, n)) = &opts.only {
        for shape in opts.shapes.iter().cloned() {
            let setup = Setup::new(shape)?;
            for _ in 0..*n {
                match arm.as_str() {
                    "plain" => black_box(setup.forward_plain()?),
                    "dsl" => black_box(setup.forward_dsl()?),
                    "none" => break,
                    other => bail!("unknown arm {other} (plain, dsl, none)"),
                };
            }
        }
        return Ok(());
    }
    let mut outcomes = vec![];
    for shape in opts.shapes.iter().cloned() {
        outcomes.push(measure(shape, &opts)?);
    }
    if opts.smoke {
        eprintln!("smoke run (no --bench): logits identical, timing loop ran; not a measurement");
        return Ok(());
    }
    println!();
    println!(
        "| shape | threads | rounds × K | plain (median) | dsl_hooks_off (median) | ratio of medians [95% CI] | ratio of p10 [95% CI] | per-round ratio median [95% CI] | per-round min – max |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for o in &outcomes {
        println!(
            "| {} | {} | {} × {} | {} | {} | {} | {} | {} | {:.3} – {:.3} |",
            o.name,
            threads,
            o.rounds,
            o.inner,
            fmt_time(o.plain),
            fmt_time(o.dsl),
            o.ratio,
            o.ratio_p10,
            o.paired,
            o.paired_min,
            o.paired_max
        );
    }
    Ok(())
}
