//! Helpers the examples share (not an example itself: cargo only runs `examples/*.rs`).

use anyhow::Result;
use candle_core::{DType, Tensor};
use candle_nn::VarMap;

/// A model built over a fresh `VarMap` draws its weights from candle's unseeded generator.
/// Refill every variable from a seeded one (norm gains 1; matrices uniform with variance
/// 1/√(rows·cols)) so the printed numbers are the same on every run.
pub fn seed_weights(varmap: &VarMap, seed: u64) -> Result<()> {
    let vars = varmap.data().lock().expect("varmap lock");
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    let mut state = seed;
    for name in names {
        let var = &vars[name];
        let t = match *var.dims() {
            [n] if name.ends_with("weight") => Tensor::ones(n, DType::F32, var.device())?,
            [n] => Tensor::zeros(n, DType::F32, var.device())?,
            [r, c] => {
                let bound = (3.0 / ((r * c) as f64).sqrt()).sqrt();
                let data: Vec<f32> = (0..r * c)
                    .map(|_| (bound * (2.0 * uniform(&mut state) - 1.0)) as f32)
                    .collect();
                Tensor::from_vec(data, (r, c), var.device())?
            }
            _ => continue,
        };
        var.set(&t)?;
    }
    Ok(())
}

/// SplitMix64 → uniform in [0, 1).
pub fn uniform(state: &mut u64) -> f64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
}
