//! "Zero overhead when no hook is active": the reference GPT-2 run through the DSL with hooks
//! off against the same forward written as plain candle (`support/plain_gpt2.rs`), on the same
//! weights (their logits are checked bit-identical before timing).
//!
//! Groups `tiny` (2 layers, width 64, 4 heads, vocab 101; batch 4 × 16) and `gpt2_small`
//! (12 layers, 768, 12 heads, vocab 50257; batch 1 × 128; random weights), each with:
//!
//! - `plain`: `PlainGpt2::forward(&ids)`;
//! - `dsl_hooks_off`: `Gpt2::forward(&ids, &mut Hx::none())`;
//! - `dsl_empty_hookset`: a `HookSet` holding one hook on `transformer.h.0.attn.attn_dropout`,
//!   a point the forward never calls — a non-empty context that never fires;
//! - `dsl_cache_all_blocks` (for information): a hook on `transformer\.h\.\d+` storing a clone
//!   of every block output in a `TensorDict`.
//!
//! Criterion runs these one after the other, so machine drift biases the plain/dsl ratio; the
//! `hooks_off_interleaved` bench alternates them round by round for the headline ratio.
//! `scripts/bench-hooks-off.sh` runs both. Without `--bench` (`cargo test -p tdhook-suite --benches`) only the
//! tiny group runs, once per function.

mod support;

use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use std::cell::RefCell;
use std::hint::black_box;
use std::time::Duration;
use support::{Setup, Shape};
use tdhook::prelude::*;

fn bench_shape(c: &mut Criterion, shape: Shape) {
    let setup = Setup::new(shape).expect("setup (plain and DSL logits must be identical)");
    let name = setup.shape.name;
    let big = name != "tiny";
    eprintln!(
        "[hooks_off] {name}: plain and DSL logits identical; {} threads",
        support::threads()
    );

    // A hook set whose only hook sits on a point the forward never calls.
    let mut empty = HookSet::new(&setup.dsl);
    empty
        .read(
            "transformer.h.0.attn.attn_dropout",
            Direction::Fwd,
            |ev, _| panic!("{} is never called, yet its hook fired", ev.path),
        )
        .expect("attn_dropout is a hook point");
    let reference = setup
        .forward_plain()
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let with_empty = empty.run(|hx| setup.dsl.forward(&setup.ids, hx)).unwrap();
    assert_eq!(
        with_empty.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        reference,
        "empty hook set changes the logits"
    );

    // A hook set caching every block output.
    let cache = RefCell::new(TensorDict::unbatched());
    let mut cache_all = HookSet::new(&setup.dsl);
    cache_all
        .read(r"transformer\.h\.\d+", Direction::Fwd, |ev, t| {
            cache.borrow_mut().insert(ev.path, t.clone())?;
            Ok(())
        })
        .expect("block paths");
    cache_all
        .run(|hx| setup.dsl.forward(&setup.ids, hx))
        .unwrap();
    assert_eq!(cache.borrow().keys(true).len(), setup.shape.config.n_layer);

    let mut group = c.benchmark_group(name);
    if big {
        group
            .sample_size(10)
            .sampling_mode(SamplingMode::Flat)
            .warm_up_time(Duration::from_secs(2))
            .measurement_time(Duration::from_secs(12));
    } else {
        group
            .sample_size(60)
            .warm_up_time(Duration::from_secs(2))
            .measurement_time(Duration::from_secs(6));
    }
    group.bench_function("plain", |b| {
        b.iter(|| black_box(setup.forward_plain().unwrap()))
    });
    group.bench_function("dsl_hooks_off", |b| {
        b.iter(|| black_box(setup.forward_dsl().unwrap()))
    });
    group.bench_function("dsl_empty_hookset", |b| {
        b.iter(|| black_box(empty.run(|hx| setup.dsl.forward(&setup.ids, hx)).unwrap()))
    });
    group.bench_function("dsl_cache_all_blocks", |b| {
        b.iter(|| {
            let out = cache_all
                .run(|hx| setup.dsl.forward(&setup.ids, hx))
                .unwrap();
            *cache.borrow_mut() = TensorDict::unbatched();
            black_box(out)
        })
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    bench_shape(c, support::tiny());
    if support::bench_mode() {
        bench_shape(c, support::gpt2_small());
    }
}

criterion_group!(hooks_off, benches);
criterion_main!(hooks_off);
