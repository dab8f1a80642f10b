//! LayerNorm over the last dim on the CPU, vectorised, rows in parallel only when large.
//!
//! candle-nn's fused `layer_norm` hands every row to rayon as its own task: on a small model
//! that split costs more than the arithmetic. Here rows run
//! in blocks on the calling thread below a size threshold, and each row is two vectorised
//! passes (mean, then centred variance: no `E[x²] − E[x]²` cancellation).

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Below this many elements the rows run on the calling thread.
const PAR_MIN: usize = 1 << 16;

/// `(x − mean) / √(var + eps) · weight + bias` over the last dim (biased variance, as
/// PyTorch's `LayerNorm`).
///
/// f32 tensors on the CPU none of which track gradients take the vectorised kernel;
/// everything else is computed with candle ops (differentiable, any device and dtype).
///
/// ```
/// use candle_core::{Device, Tensor};
/// let dev = Device::Cpu;
/// let x = Tensor::new(&[[1f32, 2.0, 3.0, 6.0]], &dev)?;
/// let (w, b) = (Tensor::ones(4, candle_core::DType::F32, &dev)?, Tensor::zeros(4, candle_core::DType::F32, &dev)?);
/// let y = tdhook_kernels::layer_norm(&x, &w, &b, 1e-5)?.to_vec2::<f32>()?;
/// // mean 3, variance 3.5
/// let want: Vec<f32> = [-2f32, -1.0, 0.0, 3.0].iter().map(|v| v / (3.5f32 + 1e-5).sqrt()).collect();
/// for (a, b) in y[0].iter().zip(want) {
///     assert!((a - b).abs() < 1e-6);
/// }
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    let fused = [x, weight, bias]
        .iter()
        .all(|t| t.dtype() == DType::F32 && t.device().is_cpu() && !t.track_op());
    let dim = x.dims().last().copied().unwrap_or(0);
    if weight.dims1()? != dim || bias.dims1()? != dim {
        candle_core::bail!(
            "layer_norm: x {:?} normalises over {dim} features but weight is {:?} and bias {:?}",
            x.dims(),
            weight.dims(),
            bias.dims()
        )
    }
    if !fused || dim == 0 {
        let mean = x.mean_keepdim(candle_core::D::Minus1)?;
        let xc = x.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(candle_core::D::Minus1)?;
        return xc
            .broadcast_div(&(var + eps)?.sqrt()?)?
            .broadcast_mul(weight)?
            .broadcast_add(bias);
    }
    x.contiguous()?.apply_op3_no_bwd(
        &weight.contiguous()?,
        &bias.contiguous()?,
        &LayerNormOp { eps: eps as f32 },
    )
}

struct LayerNormOp {
    eps: f32,
}

fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let (CpuStorage::F32(v), Some((a, b))) = (s, l.contiguous_offsets()) else {
        candle_core::bail!("layer_norm: {what} must be contiguous f32 (layer_norm() makes it so)")
    };
    Ok(&v[a..b])
}

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "layer_norm"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(xs, xl, "x")?;
        let w = contiguous_f32(ws, wl, "weight")?;
        let b = contiguous_f32(bs, bl, "bias")?;
        let dim = w.len();
        let mut out = x.to_vec();
        let eps = self.eps;
        if out.len() >= PAR_MIN {
            let rows_per_task = (PAR_MIN / 4 / dim).max(1);
            out.par_chunks_mut(rows_per_task * dim)
                .for_each(|rows| norm_rows(rows, w, b, eps));
        } else {
            norm_rows(&mut out, w, b, eps);
        }
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }
}

simd_dispatch! {
    /// In place, row by row, on the widest vector unit this CPU has.
    fn norm_rows(xs: &mut [f32], w: &[f32], b: &[f32], eps: f32) => rows_generic
}

/// `Σ f(v)` over `row` with sixteen partial sums: vectorises without licence to reassociate.
#[inline(always)]
fn sum16(row: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; 16];
    let mut chunks = row.chunks_exact(16);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v);
        }
    }
    let tail: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
    acc.iter().sum::<f32>() + tail
}

#[inline(always)]
fn rows_generic(xs: &mut [f32], w: &[f32], b: &[f32], eps: f32) {
    let dim = w.len();
    for row in xs.chunks_exact_mut(dim) {
        let mean = sum16(row, |v| v) / dim as f32;
        let var = sum16(row, |v| (v - mean) * (v - mean)) / dim as f32;
        let rstd = 1.0 / (var + eps).sqrt();
        for ((v, &g), &c) in row.iter_mut().zip(w).zip(b) {
            *v = (*v - mean) * rstd * g + c;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn matches_candle_nn_layer_norm_and_the_op_chain() -> Result<()> {
        let dev = Device::Cpu;
        for (rows, dim) in [(1, 1), (3, 5), (7, 64), (300, 768), (2, 1000)] {
            let x = ((Tensor::randn(0f32, 1.0, (rows, dim), &dev)? * 4.0)? + 3.0)?;
            let w = Tensor::randn(1f32, 0.2, dim, &dev)?;
            let b = Tensor::randn(0f32, 0.2, dim, &dev)?;
            let ours = layer_norm(&x, &w, &b, 1e-5)?;
            let chain = layer_norm(
                &x.to_dtype(DType::F64)?,
                &w.to_dtype(DType::F64)?,
                &b.to_dtype(DType::F64)?,
                1e-5,
            )?;
            let diff = (ours.to_dtype(DType::F64)? - chain)?
                .abs()?
                .max_all()?
                .to_scalar::<f64>()?;
            assert!(diff < 5e-6, "{rows}x{dim}: max |Δ| {diff}");
        }
        Ok(())
    }

    #[test]
    fn a_mismatched_weight_is_an_error_naming_the_shapes() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((2, 4), DType::F32, &dev).unwrap();
        let w = Tensor::zeros(3, DType::F32, &dev).unwrap();
        let err = layer_norm(&x, &w, &w, 1e-5).unwrap_err().to_string();
        assert!(err.contains("[2, 4]") && err.contains("[3]"), "{err}");
    }
}
