//! Softmax over the last dim on the CPU, vectorised.
//!
//! candle's fused `softmax_last_dim` calls libm's scalar `expf` per element, a visible share of
//! a small model's forward in profiles (the attention pattern). Here each row is
//! `e^{x − max} / Σ`, with `e^t` from the same branch-free polynomial as [`crate::gelu_tanh`]
//! (AVX-512 / AVX2+FMA chosen at run time), rows in parallel above a size threshold.

use candle_core::{CpuStorage, CustomOp1, D, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::gelu::exp_approx;

/// Below this many elements the rows run on the calling thread.
const PAR_MIN: usize = 1 << 15;

/// Softmax over the last dim.
///
/// f32 tensors on the CPU that do not track gradients take the vectorised kernel (within
/// ~1e-6 relative of candle's fused softmax); everything else is computed with candle ops
/// (`exp(x − max) / sum`, differentiable; on a GPU prefer candle-nn's fused kernel).
///
/// ```
/// use candle_core::{Device, Tensor};
/// let x = Tensor::new(&[[1f32, 2.0, 3.0], [-1e4, 0.0, f32::NEG_INFINITY]], &Device::Cpu)?;
/// let p = tdhook_kernels::softmax_last_dim(&x)?.to_vec2::<f32>()?;
/// let e = [1f32.exp(), 2f32.exp(), 3f32.exp()];
/// let s: f32 = e.iter().sum();
/// for (a, b) in p[0].iter().zip(e) {
///     assert!((a - b / s).abs() < 1e-6);
/// }
/// assert_eq!(p[1], [0.0, 1.0, 0.0]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if x.dtype() != DType::F32 || !x.device().is_cpu() || x.track_op() || x.rank() == 0 {
        let max = x.max_keepdim(D::Minus1)?;
        let e = x.broadcast_sub(&max)?.exp()?;
        return e.broadcast_div(&e.sum_keepdim(D::Minus1)?);
    }
    x.contiguous()?.apply_op1_no_bwd(&SoftmaxLastDim)
}

struct SoftmaxLastDim;

impl CustomOp1 for SoftmaxLastDim {
    fn name(&self) -> &'static str {
        "softmax_last_dim"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("softmax_last_dim: f32 only (softmax_last_dim() routes the rest)")
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("softmax_last_dim: contiguous input only")
        };
        let dim = layout.dims().last().copied().unwrap_or(1);
        let mut out = data[start..end].to_vec();
        if let Some(rows_per_task) = (PAR_MIN / 4).checked_div(dim) {
            if out.len() >= PAR_MIN {
                out.par_chunks_mut(rows_per_task.max(1) * dim)
                    .for_each(|rows| softmax_rows(rows, dim));
            } else {
                softmax_rows(&mut out, dim);
            }
        }
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

simd_dispatch! {
    /// In place, row by row, on the widest vector unit this CPU has.
    fn softmax_rows(xs: &mut [f32], dim: usize) => rows_generic
}

/// The loops the target-feature wrappers inline and vectorise.
#[inline(always)]
fn rows_generic(xs: &mut [f32], dim: usize) {
    for row in xs.chunks_exact_mut(dim) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if max == f32::NEG_INFINITY {
            // Every entry −inf (a fully masked row): candle gives NaN (0/0); keep that.
            row.iter_mut().for_each(|v| *v = f32::NAN);
            continue;
        }
        // Sixteen partial sums: the loop vectorises without licence to reassociate.
        let mut acc = [0f32; 16];
        for chunk in row.chunks_mut(16) {
            for (v, a) in chunk.iter_mut().zip(acc.iter_mut()) {
                let e = exp_masked(*v - max);
                *v = e;
                *a += e;
            }
        }
        let inv = 1.0 / acc.iter().sum::<f32>();
        row.iter_mut().for_each(|v| *v *= inv);
    }
}

/// `e^t`, exact 0 at −inf (masked scores), NaN for NaN.
#[inline(always)]
fn exp_masked(t: f32) -> f32 {
    let e = exp_approx(t);
    if t < -87.5 { 0.0 } else { e }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn reference(row: &[f32]) -> Vec<f32> {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let e: Vec<f64> = row.iter().map(|&v| ((v - max) as f64).exp()).collect();
        let s: f64 = e.iter().sum();
        e.iter().map(|v| (v / s) as f32).collect()
    }

    #[test]
    fn matches_an_f64_reference_on_odd_widths_masks_and_large_inputs() -> Result<()> {
        let dev = Device::Cpu;
        for (rows, dim) in [(3, 1), (5, 7), (4, 16), (9, 33), (300, 128), (2, 1000)] {
            let x = (Tensor::randn(0f32, 4.0, (rows, dim), &dev)? * 3.0)?;
            // Mask the upper triangle (causal attention) where the row is long enough.
            let mut v = x.to_vec2::<f32>()?;
            for (i, row) in v.iter_mut().enumerate() {
                for (j, s) in row.iter_mut().enumerate() {
                    if j > i % dim {
                        *s = f32::NEG_INFINITY;
                    }
                }
            }
            let x = Tensor::new(v.clone(), &dev)?;
            let got = softmax_last_dim(&x)?.to_vec2::<f32>()?;
            for (g, row) in got.iter().zip(&v) {
                for (a, b) in g.iter().zip(reference(row)) {
                    assert!((a - b).abs() <= 2e-7 + 2e-6 * b, "{a} vs {b} (dim {dim})");
                }
            }
        }
        Ok(())
    }

    #[test]
    fn fully_masked_rows_and_the_fallback_agree_with_candle() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::new(&[[f32::NEG_INFINITY, f32::NEG_INFINITY], [0.5, -0.5]], &dev)?;
        let ours = softmax_last_dim(&x)?.to_vec2::<f32>()?;
        assert!(ours[0].iter().all(|v| v.is_nan()));
        let f64_in = x.to_dtype(DType::F64)?;
        let fallback = softmax_last_dim(&f64_in)?.to_vec2::<f64>()?;
        let expect = reference(&[0.5, -0.5]);
        for ((a, b), c) in ours[1].iter().zip(&fallback[1]).zip(expect) {
            assert!((a - c).abs() < 1e-7 && (*b as f32 - c).abs() < 1e-7);
        }
        Ok(())
    }
}
