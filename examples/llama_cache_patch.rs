//! Activation caching and activation patching on a small random Llama.
//!
//! A clean and a corrupted prompt of equal length differ in one token. The example caches every
//! decoder layer's output for both (`ActivationCaching` with the regex `model\.layers\.\d+`) and
//! checks causality: the two runs agree at every position before the corrupted one, in every
//! layer. Then it patches one layer at a time (`ActivationPatching`) with the clean run's output
//! — at the corrupted position, at the last position, and at all positions — and prints the
//! fraction of the clean-vs-corrupted logit difference each patch restores at the last token.
//!
//! Run it with:
//!
//! ```text
//! cargo run -p tdhook-suite --example llama_cache_patch
//! ```

use anyhow::{Result, ensure};
use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::{VarBuilder, VarMap};
use tdhook::kernels::Positions;
use tdhook::latent::{ActivationCaching, ActivationPatching};
use tdhook::models::llama::{Llama, LlamaConfig};
use tdhook::prelude::*;

mod common;
use common::seed_weights;

fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    Ok((a - b)?.abs()?.max_all()?.to_scalar::<f32>()?)
}

fn main() -> Result<()> {
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let mut config = LlamaConfig::new(64, 32, 64, 4, 4);
    config.num_key_value_heads = Some(2); // grouped-query attention, as in Llama 2/3
    let n_layers = config.num_hidden_layers;
    let model = Llama::new(config, VarBuilder::from_varmap(&varmap, DType::F32, &dev))?;
    seed_weights(&varmap, 7)?;

    let clean_ids = [3u32, 17, 42, 8, 25, 11];
    let corrupt_ids = [3u32, 17, 42, 8, 51, 11];
    let pos = 4; // the corrupted position
    let last = clean_ids.len() - 1;
    let clean = Tensor::new(&[clean_ids], &dev)?;
    let corrupt = Tensor::new(&[corrupt_ids], &dev)?;
    println!("Llama: vocab 64, hidden 32, {n_layers} layers, 4 heads (2 kv heads), seeded weights");
    println!("clean     {clean_ids:?}\ncorrupted {corrupt_ids:?} (position {pos} differs)");

    // ---- 1. Cache every layer's output for both prompts ---------------------------------
    let mut caching = ActivationCaching::new(r"model\.layers\.\d+").prepare(&model)?;
    let (clean_logits, clean_cache) = caching.cache(&clean)?;
    let (corrupt_logits, corrupt_cache) = caching.cache(&corrupt)?;
    let keys: Vec<String> = clean_cache
        .keys(true)
        .iter()
        .map(|k| k.to_string())
        .collect();
    let expected: Vec<String> = (0..n_layers).map(|i| format!("model.layers.{i}")).collect();
    ensure!(keys == expected, "one cache entry per layer: {keys:?}");
    println!("\ncached layer outputs (clean vs corrupted, max |diff|):");
    println!(
        "  {:<16} {:<12} {:>14} {:>14}",
        "key",
        "shape",
        format!("before pos {pos}"),
        format!("from pos {pos}")
    );
    for k in &keys {
        let (a, b) = (
            clean_cache.tensor(k.as_str())?,
            corrupt_cache.tensor(k.as_str())?,
        );
        ensure!(a.dims() == [1, clean_ids.len(), 32]);
        let before = max_abs_diff(&a.i((.., ..pos))?, &b.i((.., ..pos))?)?;
        let after = max_abs_diff(&a.i((.., pos..))?, &b.i((.., pos..))?)?;
        println!(
            "  {k:<16} {:<12} {before:>14.2e} {after:>14.3}",
            format!("{:?}", a.dims())
        );
        ensure!(
            before < 1e-6,
            "causal: positions before {pos} cannot see the change"
        );
        ensure!(after > 1e-3, "the corruption reaches {k}");
    }

    // ---- 2. Patch one layer at a time ---------------------------------------------------
    // Metric: logit(a) − logit(b) at the last position, a = clean top token, b = the corrupted
    // run's top token (or its runner-up when both runs pick the same one).
    let clean_last = clean_logits.i((0, last))?.to_vec1::<f32>()?;
    let corrupt_last = corrupt_logits.i((0, last))?.to_vec1::<f32>()?;
    let argmax = |v: &[f32], skip: Option<usize>| {
        (0..v.len())
            .filter(|&i| Some(i) != skip)
            .max_by(|&i, &j| v[i].total_cmp(&v[j]))
            .expect("non-empty vocabulary")
    };
    let a = argmax(&clean_last, None);
    let b = argmax(&corrupt_last, Some(a));
    let ld = |logits: &Tensor| -> Result<f32> {
        let v = logits.i((0, last))?;
        Ok(v.i(a)?.to_scalar::<f32>()? - v.i(b)?.to_scalar::<f32>()?)
    };
    let (ld_clean, ld_corrupt) = (ld(&clean_logits)?, ld(&corrupt_logits)?);
    println!(
        "\nlogit(tok {a}) − logit(tok {b}) at the last position: clean {ld_clean:.3}, corrupted {ld_corrupt:.3}"
    );
    ensure!(
        (ld_clean - ld_corrupt).abs() > 1e-3,
        "the corruption moves the metric"
    );
    let restored = |patched: &Tensor| -> Result<f32> {
        Ok((ld(patched)? - ld_corrupt) / (ld_clean - ld_corrupt))
    };

    println!("\nfraction of the logit difference restored by patching one layer's output:");
    println!(
        "  {:<16} {:>12} {:>12} {:>12}",
        "layer",
        format!("pos {pos} only"),
        "last only",
        "all pos"
    );
    let mut table = Vec::new();
    for i in 0..n_layers {
        let layer = Llama::path().model().layers(i);
        let mut row = Vec::new();
        for positions in [
            Positions::Range(pos..pos + 1),
            Positions::Range(last..last + 1),
            Positions::All,
        ] {
            let mut patching = ActivationPatching::new([layer.clone()])
                .positions(positions)
                .prepare(&model)?;
            let (clean_out, patched) = patching.patch(&clean, &corrupt)?;
            ensure!(max_abs_diff(&clean_out, &clean_logits)? == 0.0);
            row.push(restored(&patched)?);
        }
        println!(
            "  {:<16} {:>12.3} {:>12.3} {:>12.3}",
            layer.as_str(),
            row[0],
            row[1],
            row[2]
        );
        table.push(row);
    }

    // Patching a whole layer output replaces the entire residual stream: everything downstream
    // is the clean run.
    for row in &table {
        ensure!((row[2] - 1.0).abs() < 1e-4, "all positions restore fully");
    }
    // After the last layer, positions no longer mix: the last position alone decides the
    // last token's logits, and the corrupted position has no say.
    let final_row = &table[n_layers - 1];
    ensure!((final_row[1] - 1.0).abs() < 1e-4);
    ensure!(final_row[0].abs() < 1e-4);

    // ---- 3. The same patch through the TensorDict face ----------------------------------
    let mut td = TensorDict::new([1]);
    td.insert("input", clean.clone())?;
    td.insert(("patched", "input"), corrupt.clone())?;
    let out = ActivationPatching::new([r"model\.layers\.0"])
        .positions(Positions::Range(pos..pos + 1))
        .prepare(&model)?
        .run(&td)?;
    let via_td = restored(out.tensor(("patched", "output"))?)?;
    println!("\nTensorDict run, layer 0 at position {pos}: restored {via_td:.3}");
    ensure!((via_td - table[0][0]).abs() < 1e-6);

    println!("\nall checks passed");
    Ok(())
}
