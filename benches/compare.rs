//! Side B of the side-by-side benchmark against Python tdhook 0.3.0 (`scripts/bench_python.py`
//! is side A and drives this one; `scripts/compare-python.sh` runs the whole thing).
//!
//! Every answer is one JSON line on stdout (machine-readable timings, seconds).
//!
//! ```text
//! compare --serve                  commands on stdin, one per line:
//!     load NAME DIR                    Gpt2::load(DIR) + DIR/inputs.safetensors; checks every
//!                                      workload against DIR/expected.safetensors (Python's
//!                                      results) -> {"max_abs_diff", "worst"}
//!     time NAME WORKLOAD ITERS         -> {"times": [per-iteration seconds]}
//!     ab NAME A B ROUNDS ITERS         workload A against B in this process, interleaved
//!                                      -> {"a_median", "b_median", "ratio" (b / a), ...}
//!     probe_load FILE                  x_train [K, N, D], y_train [N], x_test, y_test
//!     probe batched|per_layer|estimator C
//!                                      sklearn's LogisticRegression(C) objective
//!                                      -> {"seconds", "test_acc", "iterations", "converged"}
//!     quit
//! compare --mem DIR                a fresh process: load, cache every block output of one
//!                                      batch, report peak RSS (VmHWM) against the bytes of
//!                                      the cache plus the model
//! compare [--dir DIR] [--iters N] [--only WORKLOAD]
//!                                  standalone: time every workload (or one: for a profiler such
//!                                      as `valgrind --tool=callgrind`) on DIR (a folder written
//!                                      by bench_python.py) or, without DIR, on a random tiny
//!                                      GPT-2; one JSON line per workload
//! ```
//!
//! Workloads (`_ctx`: a method prepared once, then `run(&td)`; `_whole`: `prepare(&model)?.run(&td)`):
//! `forward` (`Gpt2::forward` with `Hx::none()`), `cache_all_*` (every block,
//! `transformer\.h\.\d+`), `patch_one_*` (block 0, two passes), `steer_one_*` (block 0,
//! `out + v`), `add_one_*` (ActivationAddition at block 0, two passes).
//!
//! Threads: candle's CPU kernels and the probe trainer use `RAYON_NUM_THREADS`. By default the
//! main thread joins rayon's pool first (`tdhook::threads::use_current_thread`, the setup
//! README recommends); `--default-pool` (with any mode) skips that, so every parallel candle op
//! is handed from the main thread to a worker; `--in-pool` runs everything on a rayon worker.
//! Under `cargo test -p tdhook-suite --benches` (no `--bench` argument) it runs the standalone mode on the random
//! tiny model, one iteration per workload.

mod support;

use anyhow::{Context, Result, anyhow, bail, ensure};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::hint::black_box;
use std::io::{BufRead, Write};
use std::path::Path;
use std::time::Instant;
use tdhook::latent::probing::{Estimator, LogisticRegression};
use tdhook::latent::{
    ActivationAddition, ActivationCaching, ActivationPatching, PreparedAddition, PreparedCaching,
    PreparedPatching, PreparedSteering, SteeringVectors,
};
use tdhook::models::gpt2::Gpt2;
use tdhook::prelude::*;
use tdhook_kernels::{LogisticConfig, train_logistic_probes};

const BLOCKS: &str = r"transformer\.h\.\d+";
const ONE: &str = "transformer.h.0";

const WORKLOADS: [&str; 9] = [
    "forward",
    "cache_all_ctx",
    "cache_all_whole",
    "patch_one_ctx",
    "patch_one_whole",
    "steer_one_ctx",
    "steer_one_whole",
    "add_one_ctx",
    "add_one_whole",
];

/// The inputs of one shape (ids as u32, `[B, T]`) and the steering vector.
struct Inputs {
    input: Tensor,
    corrupted: Tensor,
    positive: Tensor,
    negative: Tensor,
    steer_v: Tensor,
}

impl Inputs {
    fn load(path: &Path) -> Result<Self> {
        let t = candle_core::safetensors::load(path, &Device::Cpu)
            .with_context(|| format!("reading {}", path.display()))?;
        let ids = |k: &str| -> Result<Tensor> {
            Ok(t.get(k)
                .with_context(|| format!("{k} missing in {}", path.display()))?
                .to_dtype(DType::U32)?)
        };
        Ok(Self {
            input: ids("input")?,
            corrupted: ids("corrupted")?,
            positive: ids("positive")?,
            negative: ids("negative")?,
            steer_v: t
                .get("steer_v")
                .context("steer_v missing")?
                .to_dtype(DType::F32)?,
        })
    }

    fn random(vocab: usize, batch: usize, seq: usize, width: usize) -> Result<Self> {
        let mut rng = support::Rng::new(0xC0FFEE);
        let mut ids = || -> Result<Tensor> {
            let v: Vec<u32> = (0..batch * seq).map(|_| rng.below(vocab) as u32).collect();
            Ok(Tensor::from_vec(v, (batch, seq), &Device::Cpu)?)
        };
        let (input, corrupted, positive, negative) = (ids()?, ids()?, ids()?, ids()?);
        let v: Vec<f32> = (0..width).map(|i| ((i % 7) as f32 - 3.0) * 0.1).collect();
        Ok(Self {
            input,
            corrupted,
            positive,
            negative,
            steer_v: Tensor::from_vec(v, width, &Device::Cpu)?,
        })
    }

    fn batch(&self) -> usize {
        self.input.dims()[0]
    }

    fn td_plain(&self) -> Result<TensorDict> {
        let mut td = TensorDict::new([self.batch()]);
        td.insert("input", self.input.clone())?;
        Ok(td)
    }

    fn td_patch(&self) -> Result<TensorDict> {
        let mut td = self.td_plain()?;
        td.insert(("patched", "input"), self.corrupted.clone())?;
        Ok(td)
    }

    fn td_add(&self) -> Result<TensorDict> {
        let mut td = TensorDict::new([self.batch()]);
        td.insert(("positive", "input"), self.positive.clone())?;
        td.insert(("negative", "input"), self.negative.clone())?;
        Ok(td)
    }
}

fn steering(v: &Tensor) -> SteeringVectors {
    let v = v.clone();
    SteeringVectors::new([ONE], move |_, out| Ok(out.broadcast_add(&v)?))
}

struct Factories {
    caching: ActivationCaching,
    patching: ActivationPatching,
    steering: SteeringVectors,
    addition: ActivationAddition,
}

/// One model, its inputs and the methods prepared once (the `_ctx` workloads).
struct Bench {
    model: &'static Gpt2,
    inputs: Inputs,
    /// The methods, built once: `_whole` prepares them again every iteration, as Python's
    /// `with factory.prepare(model) as hm:` does with a factory it built once.
    factories: Factories,
    caching: PreparedCaching<'static, Gpt2>,
    patching: PreparedPatching<'static, Gpt2>,
    steering: PreparedSteering<'static, Gpt2>,
    addition: PreparedAddition<'static, Gpt2>,
}

impl Bench {
    fn new(model: Gpt2, inputs: Inputs) -> Result<Self> {
        // Leaked on purpose: the prepared methods borrow the model for the life of the process.
        let model: &'static Gpt2 = Box::leak(Box::new(model));
        let factories = Factories {
            caching: ActivationCaching::new(BLOCKS),
            patching: ActivationPatching::new([ONE]),
            steering: steering(&inputs.steer_v),
            addition: ActivationAddition::new([ONE]),
        };
        Ok(Self {
            model,
            caching: factories.caching.prepare(model)?,
            patching: factories.patching.prepare(model)?,
            steering: factories.steering.prepare(model)?,
            addition: factories.addition.prepare(model)?,
            factories,
            inputs,
        })
    }

    /// One iteration of `workload`; returns what it produced (dropped by the caller).
    fn run(&mut self, workload: &str) -> Result<TensorDict> {
        let m = self.model;
        let i = &self.inputs;
        let f = &self.factories;
        Ok(match workload {
            "forward" => {
                let mut td = TensorDict::new([i.batch()]);
                td.insert("output", m.forward(&i.input, &mut Hx::none())?)?;
                td
            }
            "cache_all_ctx" => self.caching.run(&i.td_plain()?)?,
            "cache_all_whole" => f.caching.prepare(m)?.run(&i.td_plain()?)?,
            "patch_one_ctx" => self.patching.run(&i.td_patch()?)?,
            "patch_one_whole" => f.patching.prepare(m)?.run(&i.td_patch()?)?,
            "steer_one_ctx" => self.steering.run(&i.td_plain()?)?,
            "steer_one_whole" => f.steering.prepare(m)?.run(&i.td_plain()?)?,
            "add_one_ctx" => self.addition.run(&i.td_add()?)?,
            "add_one_whole" => f.addition.prepare(m)?.run(&i.td_add()?)?,
            other => bail!("unknown workload `{other}` (one of {WORKLOADS:?})"),
        })
    }

    fn time(&mut self, workload: &str, iters: usize) -> Result<Vec<f64>> {
        let mut times = Vec::with_capacity(iters);
        for _ in 0..iters {
            let t0 = Instant::now();
            let out = self.run(workload)?;
            drop(black_box(out));
            times.push(t0.elapsed().as_secs_f64());
        }
        Ok(times)
    }

    /// `a` against `b` within this process: `rounds` rounds of `iters` iterations of each, the
    /// order flipping every round (drift hits both alike). Medians per iteration, their ratio
    /// b / a, and the per-round ratios.
    fn ab(&mut self, a: &str, b: &str, rounds: usize, iters: usize) -> Result<Value> {
        self.time(a, iters.div_ceil(2))?;
        self.time(b, iters.div_ceil(2))?;
        let (mut ta, mut tb, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for r in 0..rounds {
            let (x, y) = if r % 2 == 0 {
                let x = self.time(a, iters)?;
                (x, self.time(b, iters)?)
            } else {
                let y = self.time(b, iters)?;
                (self.time(a, iters)?, y)
            };
            ratios.push(median(&y) / median(&x));
            ta.extend(x);
            tb.extend(y);
        }
        let (ma, mb) = (median(&ta), median(&tb));
        Ok(json!({
            "a": a, "b": b, "rounds": rounds, "iters": iters,
            "a_median": ma, "b_median": mb, "ratio": mb / ma,
            "round_ratio_median": median(&ratios),
            "round_ratio_min": ratios.iter().copied().fold(f64::INFINITY, f64::min),
            "round_ratio_max": ratios.iter().copied().fold(0.0, f64::max),
        }))
    }

    /// Max |ours − Python tdhook| over every workload's result (`expected.safetensors`).
    fn check(&mut self, expected: &HashMap<String, Tensor>) -> Result<(f64, String)> {
        let mut worst = (0f64, String::from("-"));
        let mut cmp = |key: &str, ours: &Tensor| -> Result<()> {
            let theirs = expected
                .get(key)
                .with_context(|| format!("expected.safetensors lacks {key}"))?;
            ensure!(
                theirs.dims() == ours.dims(),
                "{key}: Python {:?} vs Rust {:?}",
                theirs.dims(),
                ours.dims()
            );
            let d = (theirs.to_dtype(DType::F32)? - ours)?
                .abs()?
                .max_all()?
                .to_scalar::<f32>()? as f64;
            ensure!(d.is_finite(), "{key}: non-finite difference");
            if d >= worst.0 {
                worst = (d, key.to_string());
            }
            Ok(())
        };
        let out = self.run("forward")?;
        cmp("forward/logits", out.tensor("output")?)?;
        let out = self.run("cache_all_whole")?;
        cmp("cache/logits", out.tensor("output")?)?;
        for i in 0..self.model.config().n_layer {
            let path = format!("transformer.h.{i}");
            cmp(
                &format!("cache/{path}"),
                out.tensor(("cache", path.as_str()))?,
            )?;
        }
        let out = self.run("patch_one_whole")?;
        cmp("patch/logits", out.tensor("output")?)?;
        cmp("patch/patched_logits", out.tensor(("patched", "output"))?)?;
        let out = self.run("steer_one_whole")?;
        cmp("steer/logits", out.tensor("output")?)?;
        let out = self.run("add_one_whole")?;
        cmp("add/steer", out.tensor(("steer", ONE))?)?;
        Ok(worst)
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

// ---------------------------------------------------------------------------------------------
// Probes
// ---------------------------------------------------------------------------------------------

struct ProbeData {
    x_train: Tensor,
    y_train: Tensor,
    x_test: Tensor,
    y_test: Tensor,
    /// `x_train[k]` as `[1, N, D]` and `[N, D]`, contiguous (made before timing).
    layers: Vec<(Tensor, Tensor)>,
}

impl ProbeData {
    fn load(path: &str) -> Result<Self> {
        let t = candle_core::safetensors::load(path, &Device::Cpu)
            .with_context(|| format!("reading {path}"))?;
        let get = |k: &str| {
            t.get(k)
                .cloned()
                .with_context(|| format!("{k} missing in {path}"))
        };
        let x_train = get("x_train")?.to_dtype(DType::F32)?.contiguous()?;
        let k = x_train.dims()[0];
        let layers = (0..k)
            .map(|i| -> Result<(Tensor, Tensor)> {
                let one = x_train.narrow(0, i, 1)?.contiguous()?;
                let flat = one.squeeze(0)?.contiguous()?;
                Ok((one, flat))
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            x_train,
            y_train: get("y_train")?,
            x_test: get("x_test")?.to_dtype(DType::F32)?.contiguous()?,
            y_test: get("y_test")?,
            layers,
        })
    }

    fn n(&self) -> usize {
        self.x_train.dims()[1]
    }

    /// The same objective as scikit-learn's `LogisticRegression(C=c)` (lbfgs, tol 1e-4).
    fn config(&self, c: f64) -> LogisticConfig {
        LogisticConfig {
            max_iter: 1000,
            ..LogisticConfig::from_sklearn_c(c, self.n())
        }
    }

    fn run(&self, how: &str, c: f64) -> Result<Value> {
        match how {
            "batched" => {
                let t0 = Instant::now();
                let fit = train_logistic_probes(&self.x_train, &self.y_train, &self.config(c))?;
                let seconds = t0.elapsed().as_secs_f64();
                Ok(json!({
                    "seconds": seconds,
                    "test_acc": fit.probes.accuracy(&self.x_test, &self.y_test)?,
                    "iterations": fit.iterations,
                    "converged": fit.converged,
                    "passes": fit.passes,
                }))
            }
            "per_layer" => {
                let cfg = self.config(c);
                let t0 = Instant::now();
                let fits = self
                    .layers
                    .iter()
                    .map(|(one, _)| train_logistic_probes(one, &self.y_train, &cfg))
                    .collect::<candle_core::Result<Vec<_>>>()?;
                let seconds = t0.elapsed().as_secs_f64();
                let mut acc = Vec::new();
                for (k, fit) in fits.iter().enumerate() {
                    let xt = self.x_test.narrow(0, k, 1)?;
                    acc.push(fit.probes.accuracy(&xt, &self.y_test)?[0]);
                }
                Ok(json!({
                    "seconds": seconds,
                    "test_acc": acc,
                    "iterations": fits.iter().map(|f| f.iterations[0]).collect::<Vec<_>>(),
                    "converged": fits.iter().map(|f| f.converged[0]).collect::<Vec<_>>(),
                }))
            }
            "estimator" => {
                // tdhook's own per-layer estimator (Newton, f64), at sklearn's stopping tolerance.
                let t0 = Instant::now();
                let mut fitted = Vec::new();
                for (_, flat) in &self.layers {
                    let mut lr = LogisticRegression::new().c(c).tol(1e-4);
                    lr.fit(flat, &self.y_train)?;
                    fitted.push(lr);
                }
                let seconds = t0.elapsed().as_secs_f64();
                let y = self.y_test.to_dtype(DType::F32)?;
                let mut acc = Vec::new();
                for (k, lr) in fitted.iter().enumerate() {
                    let xt = self.x_test.get(k)?;
                    let pred = lr.decision_function(&xt)?.gt(0.0)?.to_dtype(DType::F32)?;
                    let hits = pred
                        .eq(&y)?
                        .to_dtype(DType::F32)?
                        .mean_all()?
                        .to_scalar::<f32>()?;
                    acc.push(hits);
                }
                Ok(json!({
                    "seconds": seconds,
                    "test_acc": acc,
                    "iterations": fitted.iter().map(|l| l.n_iter()).collect::<Vec<_>>(),
                    "converged": fitted.iter().map(|l| l.converged()).collect::<Vec<_>>(),
                }))
            }
            other => bail!("unknown probe mode `{other}` (batched, per_layer, estimator)"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Memory
// ---------------------------------------------------------------------------------------------

/// A `VmXXX:` line of /proc/self/status, in KiB.
fn status_kib(field: &str) -> Result<u64> {
    let s = std::fs::read_to_string("/proc/self/status")?;
    let line = s
        .lines()
        .find(|l| l.starts_with(field))
        .with_context(|| format!("{field} not in /proc/self/status"))?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("malformed status line")?
        .parse()?)
}

fn bytes(t: &Tensor) -> u64 {
    (t.elem_count() * t.dtype().size_in_bytes()) as u64
}

fn memory(dir: &Path) -> Result<Value> {
    let rss_start = status_kib("VmRSS:")?;
    let model = Gpt2::load(dir, &Device::Cpu)?;
    let hwm_load = status_kib("VmHWM:")?;
    let rss_loaded = status_kib("VmRSS:")?;
    // Reset the peak counter (Linux: "5" → clear_refs resets VmHWM to the current RSS).
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let inputs = Inputs::load(&dir.join("inputs.safetensors"))?;
    let td = inputs.td_plain()?;
    let out = ActivationCaching::new(BLOCKS).prepare(&model)?.run(&td)?;
    let hwm_run = status_kib("VmHWM:")?;
    let cache_bytes: u64 = out
        .get_dict("cache")
        .context("no cache")?
        .leaves()
        .map(|(_, t)| bytes(t))
        .sum();
    let output_bytes = bytes(out.tensor("output")?);
    // The model's bytes: every tensor in the file (tied lm_head is not stored twice); reading
    // the header only, after the measurement.
    let st =
        unsafe { candle_core::safetensors::MmapedSafetensors::new(dir.join("model.safetensors"))? };
    let model_bytes: u64 = st
        .tensors()
        .iter()
        .map(|(_, v)| (v.shape().iter().product::<usize>() * 4) as u64) // loaded as f32
        .sum();
    black_box(&out);
    let kib = |b: u64| b as f64 / 1024.0;
    let base = kib(model_bytes + cache_bytes);
    let hwm_process = hwm_load.max(hwm_run);
    Ok(json!({
        "batch": inputs.input.dims()[0],
        "seq": inputs.input.dims()[1],
        "model_bytes": model_bytes,
        "cache_bytes": cache_bytes,
        "output_bytes": output_bytes,
        "rss_start_kib": rss_start,
        "hwm_load_kib": hwm_load,
        "rss_loaded_kib": rss_loaded,
        "hwm_run_kib": hwm_run,
        "hwm_process_kib": hwm_process,
        "hwm_reset_worked": reset,
        "ratio_run": hwm_run as f64 / base,
        "ratio_process": hwm_process as f64 / base,
        "ratio_run_with_output": hwm_run as f64 / (base + kib(output_bytes)),
    }))
}

// ---------------------------------------------------------------------------------------------
// Modes
// ---------------------------------------------------------------------------------------------

fn load_bench(dir: &Path) -> Result<(Bench, HashMap<String, Tensor>)> {
    let model = Gpt2::load(dir, &Device::Cpu)?;
    let inputs = Inputs::load(&dir.join("inputs.safetensors"))?;
    let expected = candle_core::safetensors::load(dir.join("expected.safetensors"), &Device::Cpu)?;
    Ok((Bench::new(model, inputs)?, expected))
}

fn random_tiny() -> Result<Bench> {
    let shape = support::tiny();
    let weights = support::random_weights(&shape.config, 0x7D_400C)?;
    let model = Gpt2::new(
        shape.config.clone(),
        VarBuilder::from_tensors(weights, DType::F32, &Device::Cpu),
    )?;
    let c = &shape.config;
    let inputs = Inputs::random(c.vocab_size, shape.batch, shape.seq, c.n_embd)?;
    Bench::new(model, inputs)
}

fn emit(v: Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

fn serve() -> Result<()> {
    let mut benches: HashMap<String, Bench> = HashMap::new();
    let mut probes: Option<ProbeData> = None;
    emit(json!({"ready": true, "threads": support::threads()}));
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let words: Vec<&str> = line.split_whitespace().collect();
        let reply = (|| -> Result<Value> {
            match words.as_slice() {
                ["load", name, dir] => {
                    let (mut bench, expected) = load_bench(Path::new(dir))?;
                    let (diff, worst) = bench.check(&expected)?;
                    benches.insert(name.to_string(), bench);
                    Ok(json!({"max_abs_diff": diff, "worst": worst}))
                }
                ["time", name, workload, iters] => {
                    let bench = benches
                        .get_mut(*name)
                        .ok_or_else(|| anyhow!("no model `{name}` loaded"))?;
                    Ok(json!({"times": bench.time(workload, iters.parse()?)?}))
                }
                ["ab", name, a, b, rounds, iters] => {
                    let bench = benches
                        .get_mut(*name)
                        .ok_or_else(|| anyhow!("no model `{name}` loaded"))?;
                    bench.ab(a, b, rounds.parse()?, iters.parse()?)
                }
                ["probe_load", path] => {
                    probes = Some(ProbeData::load(path)?);
                    Ok(json!({"ok": true}))
                }
                ["probe", how, c] => probes
                    .as_ref()
                    .context("probe_load first")?
                    .run(how, c.parse()?),
                ["quit"] => Ok(json!({"bye": true})),
                _ => bail!("unknown command `{line}`"),
            }
        })();
        match reply {
            Ok(v) => emit(v),
            Err(e) => emit(json!({"error": format!("{e:#}")})),
        }
        if words.first() == Some(&"quit") {
            break;
        }
    }
    Ok(())
}

fn standalone(dir: Option<&str>, iters: usize, only: Option<&str>) -> Result<()> {
    let (mut bench, source) = match dir {
        Some(d) => {
            let (mut b, expected) = load_bench(Path::new(d))?;
            let (diff, worst) = b.check(&expected)?;
            emit(json!({"model": d, "max_abs_diff_vs_python": diff, "worst": worst}));
            (b, d.to_string())
        }
        None => (random_tiny()?, "random tiny".to_string()),
    };
    for w in WORKLOADS
        .into_iter()
        .filter(|w| only.is_none_or(|o| o == *w))
    {
        bench.time(w, 1.min(iters))?; // warm-up
        let times = bench.time(w, iters)?;
        emit(json!({
            "model": source,
            "threads": support::threads(),
            "workload": w,
            "iters": iters,
            "median_s": median(&times),
            "min_s": times.iter().copied().fold(f64::INFINITY, f64::min),
        }));
    }
    Ok(())
}

fn main() -> Result<()> {
    // SAFETY: first thing in main, no other thread exists yet (see tdhook::threads).
    unsafe { tdhook::threads::pin_rayon_num_threads(None) };
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--in-pool") {
        // Everything on a rayon worker: candle's parallel ops then start on the calling worker
        // instead of being injected into the pool from outside and waited for (BENCHMARKS.md).
        let rest: Vec<String> = args.into_iter().filter(|a| a != "--in-pool").collect();
        return rayon::scope(move |_| run(rest));
    }
    if args.iter().any(|a| a == "--default-pool") {
        // The main thread outside rayon's pool: every parallel candle op is handed over to a
        // worker and waited for (what a program that skips `use_current_thread` gets).
        let rest: Vec<String> = args.into_iter().filter(|a| a != "--default-pool").collect();
        return run(rest);
    }
    // The setup README recommends: the main thread joins rayon's pool, so candle's ops run on
    // it (RAYON_NUM_THREADS sets the pool's size).
    if let Err(e) = tdhook::threads::use_current_thread(None) {
        eprintln!("compare: {e}");
    }
    run(args)
}

fn run(args: Vec<String>) -> Result<()> {
    let value = |flag: &str| -> Option<String> {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    if args.iter().any(|a| a == "--serve") {
        return serve();
    }
    if let Some(dir) = value("--mem") {
        emit(memory(Path::new(&dir))?);
        return Ok(());
    }
    let smoke = !support::bench_mode();
    let iters = match value("--iters") {
        Some(n) => n.parse()?,
        None if smoke => 1,
        None => 20,
    };
    standalone(value("--dir").as_deref(), iters, value("--only").as_deref())
}
