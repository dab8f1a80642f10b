//! Interleaved plain vs DSL-hooks-off timing, for the headline overhead ratio.
//!
//! Criterion times one function after the other, so any drift of the machine (frequency, other
//! processes, page cache) between them lands in the ratio. Here each round times `K` forwards of
//! `plain` and `K` of `dsl_hooks_off` back to back, the order alternating between rounds, so drift
//! hits both alike. Per shape it prints the median per-forward time of each and three estimates
//! of dsl/plain, each with a 95 % bootstrap interval (rounds resampled, a round's two times kept
//! together): the ratio of the medians, the ratio of the 10th percentiles (the fast end, least
//! touched by other processes on a shared machine) and the median of the per-round ratios. A
//! second table does the same with the process's CPU time (`CLOCK_PROCESS_CPUTIME_ID`), which
//! does not count time other processes held the core.
//!
//! ```text
//! cargo bench -p tdhook-suite --bench hooks_off_interleaved -- [--shape tiny|gpt2_small|all]
//!     [--budget-tiny SECS] [--budget-small SECS] [--rounds N] [--inner K]
//!     [--only plain|dsl|empty|cache|none N]
//! ```
//!
//! `--only ARM N` builds the models (checking the logits) and runs `N` forwards of one arm, no
//! timing: under `valgrind --tool=callgrind`, with one thread, the instruction counts of two such
//! runs differ only by the arm, which measures the DSL's overhead without timing noise.
//!
//! Threads: candle's CPU kernels use `RAYON_NUM_THREADS` (else all physical cores); the script
//! runs this twice, with `RAYON_NUM_THREADS=1` and with the default. Without `--bench`
//! (`cargo test -p tdhook-suite --benches`) it only builds the tiny models, checks the logits and runs 3 rounds.

mod support;

use anyhow::{Context, Result, bail};
use std::cell::RefCell;
use std::hint::black_box;
use std::time::{Duration, Instant};
use support::stats::{Est, bootstrap, median, p10, time_k_both};
use support::{Setup, Shape};
use tdhook::{Direction, HookSet, TensorDict};

struct Opts {
    shapes: Vec<Shape>,
    budget_tiny: f64,
    budget_small: f64,
    rounds: Option<usize>,
    inner: Option<usize>,
    smoke: bool,
    /// `--only plain|dsl|empty|cache N`: build, then run N forwards of one arm and exit (for
    /// instruction counting under valgrind, where the runs differ only in the arm).
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
    Ok(time_k_both(k, f)?.0)
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
    /// Median process CPU seconds per forward.
    cpu_plain: f64,
    cpu_dsl: f64,
    /// median(cpu dsl) / median(cpu plain).
    cpu_ratio: Est,
    /// Median of the per-round CPU-time ratios.
    cpu_paired: Est,
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
    let mut cp = Vec::with_capacity(rounds);
    let mut cd = Vec::with_capacity(rounds);
    for r in 0..rounds {
        let (p, d) = if r % 2 == 0 {
            let p = time_k_both(inner, &plain)?;
            (p, time_k_both(inner, &dsl)?)
        } else {
            let d = time_k_both(inner, &dsl)?;
            (time_k_both(inner, &plain)?, d)
        };
        tp.push(p.0);
        td.push(d.0);
        cp.push(p.1);
        cd.push(d.1);
    }

    let (mp, md) = (median(&tp), median(&td));
    let ratio = bootstrap(&tp, &td, |p, d| median(d) / median(p));
    let ratio_p10 = bootstrap(&tp, &td, |p, d| p10(d) / p10(p));
    let paired_of =
        |p: &[f64], d: &[f64]| -> Vec<f64> { d.iter().zip(p).map(|(d, p)| d / p).collect() };
    let paired = bootstrap(&tp, &td, |p, d| median(&paired_of(p, d)));
    let all_paired = paired_of(&tp, &td);
    let cpu_ratio = bootstrap(&cp, &cd, |p, d| median(d) / median(p));
    let cpu_paired = bootstrap(&cp, &cd, |p, d| median(&paired_of(p, d)));
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
        cpu_plain: median(&cp),
        cpu_dsl: median(&cd),
        cpu_ratio,
        cpu_paired,
    };
    eprintln!(
        "[{name}] wall: plain {} dsl {} ratio of medians {}; p10 {}; per-round {}",
        fmt_time(mp),
        fmt_time(md),
        out.ratio,
        out.ratio_p10,
        out.paired,
    );
    eprintln!(
        "[{name}] cpu:  plain {} dsl {} ratio of medians {}; per-round {}; {:.1}s",
        fmt_time(out.cpu_plain),
        fmt_time(out.cpu_dsl),
        out.cpu_ratio,
        out.cpu_paired,
        t0.elapsed().as_secs_f64()
    );
    Ok(out)
}

/// `--only ARM N`: N forwards of one arm, untimed (for callgrind). `empty` and `cache` are the
/// criterion bench's `dsl_empty_hookset` and `dsl_cache_all_blocks`.
fn run_only(setup: &Setup, arm: &str, n: usize) -> Result<()> {
    let forward_with = |hooks: &mut HookSet| -> Result<candle_core::Tensor> {
        Ok(hooks.run(|hx| setup.dsl.forward(&setup.ids, hx))?)
    };
    match arm {
        "plain" => {
            for _ in 0..n {
                black_box(setup.forward_plain()?);
            }
        }
        "dsl" => {
            for _ in 0..n {
                black_box(setup.forward_dsl()?);
            }
        }
        "empty" => {
            let mut hooks = HookSet::new(&setup.dsl);
            hooks.read(
                "transformer.h.0.attn.attn_dropout",
                Direction::Fwd,
                |ev, _| panic!("{} is never called, yet its hook fired", ev.path),
            )?;
            for _ in 0..n {
                black_box(forward_with(&mut hooks)?);
            }
        }
        "cache" => {
            let cache = RefCell::new(TensorDict::unbatched());
            let mut hooks = HookSet::new(&setup.dsl);
            hooks.read(r"transformer\.h\.\d+", Direction::Fwd, |ev, t| {
                cache.borrow_mut().insert(ev.path, t.clone())?;
                Ok(())
            })?;
            for _ in 0..n {
                let out = forward_with(&mut hooks)?;
                *cache.borrow_mut() = TensorDict::unbatched();
                black_box(out);
            }
        }
        "none" => {}
        other => bail!("unknown arm {other} (plain, dsl, empty, cache, none)"),
    }
    Ok(())
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
    let from_env = std::env::var_os("RAYON_NUM_THREADS").is_some();
    // SAFETY: first thing in main, no other thread exists yet (see tdhook::threads).
    let n = unsafe { tdhook::threads::pin_rayon_num_threads(None) };
    let opts = parse()?;
    let threads = support::threads();
    let env = if from_env {
        format!("RAYON_NUM_THREADS={n} (environment)")
    } else {
        format!("RAYON_NUM_THREADS={n} (pinned to the CPU count by tdhook::threads)")
    };
    eprintln!("hooks_off_interleaved: {threads} thread(s), {env}");
    if let Some((arm, n)) = &opts.only {
        for shape in opts.shapes.iter().cloned() {
            run_only(&Setup::new(shape)?, arm, *n)?;
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
    println!();
    println!(
        "| shape | threads | process CPU / forward, plain (median) | dsl_hooks_off (median) | CPU ratio of medians [95% CI] | CPU per-round ratio median [95% CI] |"
    );
    println!("|---|---|---|---|---|---|");
    for o in &outcomes {
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            o.name,
            threads,
            fmt_time(o.cpu_plain),
            fmt_time(o.cpu_dsl),
            o.cpu_ratio,
            o.cpu_paired
        );
    }
    Ok(())
}
