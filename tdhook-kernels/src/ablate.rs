//! Directional ablation `x −= (x·û)û` and norm-preserving steering
//! `x ← (x + αv)·‖x‖/‖x + αv‖`, row by row over the last dim.

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp2, D, DType, InplaceOp2, Layout, Result, Shape, Tensor};

use crate::error::{KernelError, arg, shape};
use crate::util::{
    Elem, RowMap, SyncPtr, check_float, dispatch_mut, dispatch_new, dot, for_each_row, new_rows,
    operand_f32, small_f32, src_row, with_dst_row,
};

fn check(op: &'static str, x: &Tensor, u: &Tensor) -> Result<usize> {
    check_float(op, x.dtype())?;
    if !x.device().same_device(u.device()) {
        return Err(KernelError::Device { op }.into());
    }
    let d = *x
        .dims()
        .last()
        .ok_or_else(|| shape(op, "x", x.dims(), "[..., D] (rank >= 1)"))?;
    if u.dims() != [d] {
        return Err(shape(
            op,
            "direction",
            u.dims(),
            format!("[D] with D = {d}"),
        ));
    }
    Ok(d)
}

// ------------------------------------------------------------------------------------------
// Directional ablation
// ------------------------------------------------------------------------------------------

const ABLATE: &str = "ablate";

/// Directional ablation op; the direction is the op's second operand (f32, `[D]`).
#[derive(Clone, Debug)]
pub(crate) struct Ablate {
    pub d: usize,
}

/// û = u / ‖u‖ in f32 (computed in f64); a zero direction ablates nothing.
fn unit(u: &[f32]) -> Vec<f32> {
    let n = u.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt();
    if n == 0.0 {
        vec![0.0; u.len()]
    } else {
        u.iter().map(|&v| (v as f64 / n) as f32).collect()
    }
}

#[inline(always)]
fn ablate_row<T: Elem>(row: &mut [T], uh: &[f32]) {
    let p = dot(row, uh);
    for (x, &u) in row.iter_mut().zip(uh) {
        *x = T::from_f32(x.to_f32() - p * u);
    }
}

/// Removes the component of every row of `x` along `u`, **in place**:
/// `x[..., :] −= (x·û) û` with `û = u/‖u‖` (a zero `u` leaves `x` unchanged).
///
/// * `x`: `[..., D]`, f32 / f16 / bf16, any layout without repeated elements.
/// * `u`: `[D]`, any float dtype, need not be normalised.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use tdhook_kernels::ablate_;
/// let x = Tensor::new(&[[3f32, 4.], [1., -2.]], &Device::Cpu)?;
/// ablate_(&x, &Tensor::new(&[0f32, 2.], &Device::Cpu)?)?;
/// assert_eq!(x.to_vec2::<f32>()?, vec![vec![3., 0.], vec![1., 0.]]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn ablate_(x: &Tensor, u: &Tensor) -> Result<()> {
    let d = check(ABLATE, x, u)?;
    x.inplace_op2(&operand_f32(u, x)?, &Ablate { d })
}

/// Out-of-place [`ablate_`]: a new contiguous tensor. Differentiable in `x` (the direction
/// is treated as a constant: no gradient flows to `u`).
///
/// ```
/// use candle_core::{Device, Tensor};
/// use tdhook_kernels::ablate;
/// let x = Tensor::new(&[[3f32, 4.]], &Device::Cpu)?;
/// let y = ablate(&x, &Tensor::new(&[1f32, 0.], &Device::Cpu)?)?;
/// assert_eq!(y.to_vec2::<f32>()?, vec![vec![0., 4.]]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn ablate(x: &Tensor, u: &Tensor) -> Result<Tensor> {
    let d = check(ABLATE, x, u)?;
    crate::util::apply_op2(
        x,
        &u.to_dtype(DType::F32)?.contiguous()?.detach(),
        Ablate { d },
    )
}

fn ablate_inplace<T: Elem>(x: &mut [T], xl: &Layout, uh: &[f32]) {
    let map = RowMap::new(xl);
    let ptr = SyncPtr(x.as_mut_ptr());
    assert!(map.span_end() <= x.len());
    // SAFETY: disjoint rows, each visited once.
    for_each_row(map.n_rows, map.d, |r| unsafe {
        with_dst_row(ptr, &map, r, |row| ablate_row(row, uh))
    });
}

fn ablate_new<T: Elem>(x: &[T], xl: &Layout, uh: &[f32]) -> Vec<T> {
    let map = RowMap::new(xl);
    new_rows(map.n_rows, map.d, |r, out: &mut [MaybeUninit<T>]| {
        let mut scratch = Vec::new();
        let xr = src_row(x, &map, r, &mut scratch);
        let p = dot(xr, uh);
        for ((o, &xv), &u) in out.iter_mut().zip(xr).zip(uh) {
            o.write(T::from_f32(xv.to_f32() - p * u));
        }
    })
}

fn check_d(op: &'static str, d: usize, l: &Layout) -> Result<()> {
    if l.dims().last() != Some(&d) {
        return Err(arg(op, "x changed shape"));
    }
    Ok(())
}

impl InplaceOp2 for Ablate {
    fn name(&self) -> &'static str {
        "tdhook-ablate-inplace"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        check_d(ABLATE, self.d, l1)?;
        let uh = unit(&small_f32(s2, l2)?);
        dispatch_mut!(ABLATE, s1, |x| ablate_inplace(x, l1, &uh));
        Ok(())
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &mut candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<()> {
        check_d(ABLATE, self.d, l1)?;
        crate::cuda::rowwise(crate::cuda::RowOp::Ablate, s1, l1, s2, l2, 0.0)
    }
}

impl CustomOp2 for Ablate {
    fn name(&self) -> &'static str {
        "tdhook-ablate"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        check_d(ABLATE, self.d, l1)?;
        let uh = unit(&small_f32(s2, l2)?);
        let out = dispatch_new!(ABLATE, s1, |x| ablate_new(x, l1, &uh));
        Ok((out, l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        check_d(ABLATE, self.d, l1)?;
        crate::cuda::rowwise_new(crate::cuda::RowOp::Ablate, s1, l1, s2, l2, 0.0)
    }

    fn bwd(
        &self,
        _x: &Tensor,
        u: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // The projection I − ûûᵀ is symmetric: the gradient is the ablated gradient.
        Ok((Some(ablate(grad, u)?), None))
    }
}

// ------------------------------------------------------------------------------------------
// Norm-preserving steering
// ------------------------------------------------------------------------------------------

const NPS: &str = "norm_preserving_steer";

/// Norm-preserving steering op; the vector is the op's second operand (f32, `[D]`).
#[derive(Clone, Debug)]
pub(crate) struct NormSteer {
    pub d: usize,
    pub alpha: f32,
}

/// The scale `‖x‖/‖x + αv‖` of one row (0 when `x + αv = 0`).
#[inline(always)]
fn nps_scale<T: Elem>(xr: &[T], v: &[f32], alpha: f32) -> f32 {
    let n = xr.len().min(v.len());
    let (xc, xt) = xr[..n].as_chunks::<8>();
    let (vc, vt) = v[..n].as_chunks::<8>();
    let mut nx = [0f32; 8];
    let mut ny = [0f32; 8];
    for (xa, va) in xc.iter().zip(vc) {
        for l in 0..8 {
            let xv = xa[l].to_f32();
            let y = xv + alpha * va[l];
            nx[l] += xv * xv;
            ny[l] += y * y;
        }
    }
    let (mut sx, mut sy) = (0f32, 0f32);
    for (x, &vj) in xt.iter().zip(vt) {
        let xv = x.to_f32();
        let y = xv + alpha * vj;
        sx += xv * xv;
        sy += y * y;
    }
    let sx = ((nx[0] + nx[4]) + (nx[1] + nx[5])) + ((nx[2] + nx[6]) + (nx[3] + nx[7])) + sx;
    let sy = ((ny[0] + ny[4]) + (ny[1] + ny[5])) + ((ny[2] + ny[6]) + (ny[3] + ny[7])) + sy;
    if sy > 0.0 { (sx / sy).sqrt() } else { 0.0 }
}

/// Adds `alpha·v` to every row of `x` and rescales the row to its original norm, **in
/// place**: `x ← (x + αv)·‖x‖/‖x + αv‖` (a row with `x + αv = 0` becomes 0).
///
/// * `x`: `[..., D]`, f32 / f16 / bf16, any layout without repeated elements.
/// * `v`: `[D]`, any float dtype.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use tdhook_kernels::norm_preserving_steer_;
/// let x = Tensor::new(&[[3f32, 4.]], &Device::Cpu)?;
/// norm_preserving_steer_(&x, &Tensor::new(&[-3f32, 0.], &Device::Cpu)?, 1.0)?;
/// assert_eq!(x.to_vec2::<f32>()?, vec![vec![0., 5.]]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn norm_preserving_steer_(x: &Tensor, v: &Tensor, alpha: f64) -> Result<()> {
    let d = check(NPS, x, v)?;
    x.inplace_op2(
        &operand_f32(v, x)?,
        &NormSteer {
            d,
            alpha: alpha as f32,
        },
    )
}

/// Out-of-place [`norm_preserving_steer_`]: a new contiguous tensor. Differentiable in `x`
/// and `v`.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use tdhook_kernels::norm_preserving_steer;
/// let x = Tensor::new(&[[0f32, 2.]], &Device::Cpu)?;
/// let y = norm_preserving_steer(&x, &Tensor::new(&[1f32, 0.], &Device::Cpu)?, 2.0)?;
/// let y = y.to_vec2::<f32>()?;
/// assert!((y[0][0] - 2f32.sqrt()).abs() < 1e-6 && (y[0][1] - 2f32.sqrt()).abs() < 1e-6);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn norm_preserving_steer(x: &Tensor, v: &Tensor, alpha: f64) -> Result<Tensor> {
    let d = check(NPS, x, v)?;
    crate::util::apply_op2(
        x,
        &v.to_dtype(DType::F32)?.contiguous()?,
        NormSteer {
            d,
            alpha: alpha as f32,
        },
    )
}

fn nps_inplace<T: Elem>(x: &mut [T], xl: &Layout, v: &[f32], alpha: f32) {
    let map = RowMap::new(xl);
    let ptr = SyncPtr(x.as_mut_ptr());
    assert!(map.span_end() <= x.len());
    for_each_row(map.n_rows, map.d, |r| {
        // SAFETY: disjoint rows, each visited once.
        unsafe {
            with_dst_row(ptr, &map, r, |row| {
                let s = nps_scale(row, v, alpha);
                for (x, &vj) in row.iter_mut().zip(v) {
                    *x = T::from_f32((x.to_f32() + alpha * vj) * s);
                }
            })
        };
    });
}

fn nps_new<T: Elem>(x: &[T], xl: &Layout, v: &[f32], alpha: f32) -> Vec<T> {
    let map = RowMap::new(xl);
    new_rows(map.n_rows, map.d, |r, out: &mut [MaybeUninit<T>]| {
        let mut scratch = Vec::new();
        let xr = src_row(x, &map, r, &mut scratch);
        let s = nps_scale(xr, v, alpha);
        for ((o, &xv), &vj) in out.iter_mut().zip(xr).zip(v) {
            o.write(T::from_f32((xv.to_f32() + alpha * vj) * s));
        }
    })
}

impl InplaceOp2 for NormSteer {
    fn name(&self) -> &'static str {
        "tdhook-norm-steer-inplace"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        check_d(NPS, self.d, l1)?;
        let v = small_f32(s2, l2)?;
        dispatch_mut!(NPS, s1, |x| nps_inplace(x, l1, &v, self.alpha));
        Ok(())
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &mut candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<()> {
        check_d(NPS, self.d, l1)?;
        crate::cuda::rowwise(crate::cuda::RowOp::NormSteer, s1, l1, s2, l2, self.alpha)
    }
}

impl CustomOp2 for NormSteer {
    fn name(&self) -> &'static str {
        "tdhook-norm-steer"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        check_d(NPS, self.d, l1)?;
        let v = small_f32(s2, l2)?;
        let out = dispatch_new!(NPS, s1, |x| nps_new(x, l1, &v, self.alpha));
        Ok((out, l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        check_d(NPS, self.d, l1)?;
        crate::cuda::rowwise_new(crate::cuda::RowOp::NormSteer, s1, l1, s2, l2, self.alpha)
    }

    fn bwd(
        &self,
        x: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // y = s·z, z = x + αv, s = ‖x‖/‖z‖.
        // grad_z = s·g − (g·z)·‖x‖·z/‖z‖³ ; grad_x = grad_z + (g·z)·x/(‖x‖‖z‖) ;
        // grad_v = α Σ_rows grad_z.
        let dt = x.dtype();
        let xf = x.to_dtype(DType::F32)?;
        let g = grad.to_dtype(DType::F32)?;
        let a = self.alpha as f64;
        let z = xf.broadcast_add(&v.affine(a, 0.0)?)?;
        let nx = xf.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
        let nz = z.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
        let s = (&nx / &nz)?;
        let gz = (&g * &z)?.sum_keepdim(D::Minus1)?;
        let nz3 = nz.powf(3.0)?;
        let grad_z =
            (g.broadcast_mul(&s)? - z.broadcast_mul(&(&gz * &nx)?.broadcast_div(&nz3)?)?)?;
        let grad_x = (&grad_z + xf.broadcast_mul(&(&gz / (&nx * &nz)?)?)?)?;
        let rows = grad_z.elem_count() / self.d;
        let grad_v = grad_z.reshape((rows, self.d))?.sum(0)?.affine(a, 0.0)?;
        Ok((Some(grad_x.to_dtype(dt)?), Some(grad_v)))
    }
}
