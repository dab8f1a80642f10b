//! GPT-2's `gelu_new` (the tanh approximation of GELU) on the CPU, vectorised.
//!
//! candle computes it element by element through libm's `tanhf`, which does not vectorise and was
//! a large share of a GPT-2-small forward in profiles. Here `0.5·x·(1 + tanh(u)) = x / (1 + e^{−2u})`, with `e^t`
//! from a branch-free Cephes polynomial the compiler vectorises (AVX-512 / AVX2+FMA chosen at
//! run time), in parallel chunks above a size threshold.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// √(2/π), as candle and transformers use it.
const SQRT_TWO_OVER_PI: f32 = 0.797_884_6;
/// Elements per parallel chunk; smaller tensors run on the calling thread.
const CHUNK: usize = 1 << 14;
const PAR_MIN: usize = 1 << 16;

/// `gelu_new(x) = 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`, GPT-2's activation.
///
/// f32 tensors on the CPU that do not track gradients take the vectorised kernel (within a few
/// ulps of candle's `Tensor::gelu`); everything else (other dtypes and devices, tensors that
/// need a backward pass) is `Tensor::gelu`.
///
/// ```
/// use candle_core::{Device, Tensor};
/// let x = Tensor::new(&[-3f32, -0.5, 0.0, 0.5, 3.0], &Device::Cpu)?;
/// let ours = tdhook_kernels::gelu_tanh(&x)?.to_vec1::<f32>()?;
/// let candle = x.gelu()?.to_vec1::<f32>()?;
/// for (a, b) in ours.iter().zip(&candle) {
///     assert!((a - b).abs() <= 1e-6);
/// }
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn gelu_tanh(x: &Tensor) -> Result<Tensor> {
    if x.dtype() != DType::F32 || !x.device().is_cpu() || x.track_op() {
        return x.gelu();
    }
    x.contiguous()?.apply_op1_no_bwd(&GeluTanh)
}

struct GeluTanh;

impl CustomOp1 for GeluTanh {
    fn name(&self) -> &'static str {
        "gelu_tanh"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!(
                "gelu_tanh: f32 only (gelu_tanh() routes other dtypes to Tensor::gelu)"
            )
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("gelu_tanh: contiguous input only (gelu_tanh() makes it so)")
        };
        let mut out = data[start..end].to_vec();
        if out.len() >= PAR_MIN {
            out.par_chunks_mut(CHUNK).for_each(gelu_slice);
        } else {
            gelu_slice(&mut out);
        }
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

simd_dispatch! {
    /// In place, on the widest vector unit this CPU has.
    fn gelu_slice(xs: &mut [f32]) => gelu_generic
}

/// The loop the target-feature wrappers inline and vectorise.
#[inline(always)]
fn gelu_generic(xs: &mut [f32]) {
    for x in xs.iter_mut() {
        *x = gelu1(*x);
    }
}

#[inline(always)]
fn gelu1(x: f32) -> f32 {
    let u = SQRT_TWO_OVER_PI * (x + 0.044_715 * x * x * x);
    x / (1.0 + exp_approx(-2.0 * u))
}

/// `e^t` for f32, branch-free (Cephes `expf`: `t = n·ln 2 + r`, a degree-6 polynomial in `r`,
/// `2^n` from the exponent bits), within ~2 ulps on `[−87, 88]` and clamped outside. NaN in,
/// NaN out.
#[inline(always)]
pub(crate) fn exp_approx(t: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Round to nearest without SSE4.1's roundps: adding 1.5·2^23 leaves the integer in the
    // low mantissa bits.
    const MAGIC: f32 = 12_582_912.0;
    let t = t.clamp(-87.0, 88.0);
    let shifted = t * LOG2E + MAGIC;
    let n = shifted - MAGIC;
    let r = t - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e_r = p * r * r + r + 1.0;
    // n is in [-126, 127] after the clamp: a normal power of two.
    let ni = (shifted.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    let two_n = f32::from_bits(((ni + 127) as u32) << 23);
    e_r * two_n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_approx_is_within_a_few_ulps_of_libm() {
        let mut worst = 0f32;
        let mut t = -87.0f32;
        while t < 88.0 {
            let (a, b) = (exp_approx(t), t.exp());
            worst = worst.max(((a - b) / b).abs());
            t += 0.0137;
        }
        assert!(worst < 4.0 * f32::EPSILON, "max relative error {worst}");
        assert!(exp_approx(f32::NAN).is_nan());
        assert_eq!(exp_approx(-1000.0), (-87f32).exp());
    }

    #[test]
    fn gelu_matches_the_tanh_formula_everywhere() {
        let xs: Vec<f32> = (-4000..4000)
            .map(|i| i as f32 * 0.005)
            .chain([-1e4, -200.0, 200.0, 1e4])
            .collect();
        // The dispatched path (AVX-512 or AVX2 where the CPU has them) and the portable one.
        let mut ours = xs.clone();
        gelu_slice(&mut ours);
        let mut portable = xs.clone();
        gelu_generic(&mut portable);
        let pairs = xs.iter().zip(&ours).chain(xs.iter().zip(&portable));
        for (x, g) in pairs {
            let x64 = *x as f64;
            let want = 0.5
                * x64
                * (1.0
                    + ((2.0 / std::f64::consts::PI).sqrt() * (x64 + 0.044715 * x64.powi(3)))
                        .tanh());
            let err = (*g as f64 - want).abs();
            assert!(
                err <= 2e-7 * x64.abs().max(1.0),
                "gelu({x}) = {g}, want {want}"
            );
        }
    }
}
