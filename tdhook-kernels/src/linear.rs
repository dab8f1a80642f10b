//! `x·W + b` on the CPU as one `gemm` call.
//!
//! candle computes a biased linear layer as a matmul into a zero-filled buffer, then a
//! broadcast add that reads and writes the whole output again. Here the output starts as the
//! bias rows and `gemm` accumulates `x·W` into it (`dst = dst + x·W`): one write pass fewer
//! and no zero fill. Small products run on the calling thread (rayon's split costs more than
//! it saves below ~2^22 multiply-adds, a threshold measured on the tiny GPT-2 at two threads).

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};

/// Below this many multiply-adds the product runs on one thread.
const PAR_MIN_FLOPS: usize = 1 << 22;

/// `x·w + bias` for `x: [m, k]`, `w: [k, n]` (any strides: pass `weight.t()` for a
/// `[n, k]` nn.Linear weight) and `bias: [n]`.
///
/// f32 CPU tensors none of which track gradients take the fused kernel; everything else is
/// `x.matmul(w)?.broadcast_add(bias)` (differentiable, any device). Equal to that up to
/// float rounding order (the bias is added first).
///
/// ```
/// use candle_core::{Device, Tensor};
/// let dev = Device::Cpu;
/// let x = Tensor::arange(0f32, 6.0, &dev)?.reshape((2, 3))?;
/// let w = Tensor::arange(0f32, 12.0, &dev)?.reshape((3, 4))?;
/// let b = Tensor::new(&[1f32, -1.0, 0.5, 0.0], &dev)?;
/// let fused = tdhook_kernels::linear_bias(&x, &w, &b)?;
/// let chain = x.matmul(&w)?.broadcast_add(&b)?;
/// assert_eq!(fused.to_vec2::<f32>()?, chain.to_vec2::<f32>()?);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn linear_bias(x: &Tensor, w: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let fused = [x, w, bias]
        .iter()
        .all(|t| t.dtype() == DType::F32 && t.device().is_cpu() && !t.track_op());
    if !fused {
        return x.matmul(w)?.broadcast_add(bias);
    }
    let (_, k) = x.dims2()?;
    let (k2, n) = w.dims2()?;
    let nb = bias.dims1()?;
    if k != k2 || nb != n {
        candle_core::bail!(
            "linear_bias: x {:?} · w {:?} + bias {:?} do not fit: want x [m, k], w [k, n], bias [n]",
            x.dims(),
            w.dims(),
            bias.dims()
        )
    }
    x.apply_op3_no_bwd(w, &bias.contiguous()?, &LinearBias)
}

struct LinearBias;

fn f32_slice<'a>(s: &'a CpuStorage, what: &str) -> Result<&'a [f32]> {
    match s {
        CpuStorage::F32(v) => Ok(v),
        _ => candle_core::bail!("linear_bias: {what} must be f32"),
    }
}

impl CustomOp3 for LinearBias {
    fn name(&self) -> &'static str {
        "linear_bias"
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
        let (x, w, b) = (
            f32_slice(xs, "x")?,
            f32_slice(ws, "w")?,
            f32_slice(bs, "bias")?,
        );
        let (m, k) = xl.shape().dims2()?;
        let (_, n) = wl.shape().dims2()?;
        let Some((b0, b1)) = bl.contiguous_offsets() else {
            candle_core::bail!("linear_bias: contiguous bias only (linear_bias() makes it so)")
        };
        let bias = &b[b0..b1];
        let mut dst = Vec::with_capacity(m * n);
        for _ in 0..m {
            dst.extend_from_slice(bias);
        }
        if m > 0 && n > 0 && k > 0 {
            let (xst, wst) = (xl.stride(), wl.stride());
            let x = &x[xl.start_offset()..];
            let w = &w[wl.start_offset()..];
            let threads = rayon::current_num_threads();
            let parallelism = if threads > 1 && m * n * k >= PAR_MIN_FLOPS {
                gemm::Parallelism::Rayon(threads)
            } else {
                gemm::Parallelism::None
            };
            // SAFETY: dst is m×n row-major (row stride n, column stride 1); x and w are read
            // through their layouts' strides from their start offsets, which candle guarantees
            // stay inside their storages for shapes [m, k] and [k, n].
            unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    dst.as_mut_ptr(),
                    1,
                    n as isize,
                    true,
                    x.as_ptr(),
                    xst[1] as isize,
                    xst[0] as isize,
                    w.as_ptr(),
                    wst[1] as isize,
                    wst[0] as isize,
                    1.0f32,
                    1.0f32,
                    false,
                    false,
                    false,
                    parallelism,
                )
            }
        }
        Ok((CpuStorage::F32(dst), Shape::from((m, n))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn matches_matmul_plus_bias_for_strided_and_small_and_large_shapes() -> Result<()> {
        let dev = Device::Cpu;
        for (m, k, n) in [
            (1, 1, 1),
            (3, 5, 7),
            (64, 64, 192),
            (128, 96, 300),
            (17, 768, 33),
        ] {
            let x = Tensor::randn(0f32, 1.0, (m, k), &dev)?;
            let w = Tensor::randn(0f32, 1.0, (k, n), &dev)?;
            let wt = Tensor::randn(0f32, 1.0, (n, k), &dev)?; // nn.Linear layout
            let b = Tensor::randn(0f32, 1.0, n, &dev)?;
            for (w, name) in [(w, "w"), (wt.t()?, "wt.t()")] {
                let got = linear_bias(&x, &w, &b)?.to_vec2::<f32>()?;
                let want = x.matmul(&w)?.broadcast_add(&b)?.to_vec2::<f32>()?;
                for (g, e) in got.iter().flatten().zip(want.iter().flatten()) {
                    assert!(
                        (g - e).abs() <= 1e-4 * (1.0 + e.abs()),
                        "{name} {m}x{k}x{n}: {g} vs {e}"
                    );
                }
            }
        }
        Ok(())
    }

    #[test]
    fn shape_errors_name_the_shapes_and_other_dtypes_fall_back() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::zeros((2, 3), DType::F32, &dev)?;
        let w = Tensor::zeros((4, 5), DType::F32, &dev)?;
        let b = Tensor::zeros(5, DType::F32, &dev)?;
        let err = linear_bias(&x, &w, &b).unwrap_err().to_string();
        assert!(err.contains("[2, 3]") && err.contains("[4, 5]"), "{err}");
        let x64 = Tensor::ones((2, 4), DType::F64, &dev)?;
        let y = linear_bias(&x64, &w.to_dtype(DType::F64)?, &b.to_dtype(DType::F64)?)?;
        assert_eq!(y.dims(), [2, 5]);
        Ok(())
    }
}
