//! Activation patching: `x[b, t, lo..hi] = (1 − α)·x + α·src` on selected positions.

use std::mem::MaybeUninit;
use std::ops::Range;

use candle_core::{CpuStorage, CustomOp2, InplaceOp2, Layout, Result, Shape, Tensor};

use crate::error::{KernelError, arg, shape};
use crate::positions::{PosPlan, Positions};
use crate::util::{
    Elem, RowMap, SyncPtr, check_float, for_each_row, new_rows, src_row, with_dst_row,
};

const OP: &str = "patch";

/// The channel range of heads `heads` when each head is `head_dim` wide (heads laid out
/// one after another along `D`, as after a `[B, T, H·hd]` attention projection).
///
/// ```
/// assert_eq!(tdhook_kernels::head_channels(2..4, 64), 128..256);
/// ```
pub fn head_channels(heads: Range<usize>, head_dim: usize) -> Range<usize> {
    heads.start * head_dim..heads.end * head_dim
}

/// Checked geometry and parameters of a patch call.
#[derive(Clone, Debug)]
pub(crate) struct Patch {
    pub b: usize,
    pub t: usize,
    pub d: usize,
    pub positions: Positions,
    pub lo: usize,
    pub hi: usize,
    pub alpha: f32,
}

impl Patch {
    pub(crate) fn plan(&self) -> PosPlan<'_> {
        self.positions
            .plan(OP, self.b, self.t)
            .expect("checked in prepare")
    }
}

fn prepare(
    x: &Tensor,
    src: &Tensor,
    positions: &Positions,
    channels: Option<Range<usize>>,
    alpha: f64,
) -> Result<(Patch, Tensor)> {
    check_float(OP, x.dtype())?;
    if !x.device().same_device(src.device()) {
        return Err(KernelError::Device { op: OP }.into());
    }
    let dims = x.dims();
    if dims.len() < 2 {
        return Err(shape(OP, "x", dims, "[..., T, D] (rank >= 2)"));
    }
    let d = dims[dims.len() - 1];
    let t = dims[dims.len() - 2];
    let b = dims[..dims.len() - 2].iter().product();
    let src = if src.dims() == dims {
        src.clone()
    } else {
        src.broadcast_as(dims)
            .map_err(|_| shape(OP, "src", src.dims(), format!("broadcastable to {dims:?}")))?
    };
    let src = src.to_dtype(x.dtype())?;
    let ch = channels.unwrap_or(0..d);
    if ch.start > ch.end || ch.end > d {
        return Err(arg(
            OP,
            format!("channel range {ch:?} does not fit D = {d}"),
        ));
    }
    positions.plan(OP, b, t)?;
    Ok((
        Patch {
            b,
            t,
            d,
            positions: positions.clone(),
            lo: ch.start,
            hi: ch.end,
            alpha: alpha as f32,
        },
        src,
    ))
}

/// Patches `x` from `src`, **in place**: on the selected positions and channels
/// `x = (1 − alpha)·x + alpha·src` (`alpha = 1`: copy `src`).
///
/// * `x`: `[B, T, D]` (more leading dims are flattened into `B`), f32 / f16 / bf16, any
///   layout without repeated elements.
/// * `src`: same shape as `x`, or broadcastable to it (e.g. `[T, D]` shared by the batch);
///   any layout (transposed, narrowed, broadcast views are read through their strides).
/// * `channels`: `lo..hi` along `D` (`None`: all); for attention heads use [`head_channels`].
///
/// ```
/// use candle_core::{Device, DType, Tensor};
/// use tdhook_kernels::{Positions, patch_};
/// let x = Tensor::zeros((1, 3, 4), DType::F32, &Device::Cpu)?;
/// let clean = Tensor::ones((1, 3, 4), DType::F32, &Device::Cpu)?;
/// patch_(&x, &clean, &Positions::Range(2..3), Some(0..2), 1.0)?;
/// assert_eq!(x.to_vec3::<f32>()?[0][2], vec![1., 1., 0., 0.]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn patch_(
    x: &Tensor,
    src: &Tensor,
    positions: &Positions,
    channels: Option<Range<usize>>,
    alpha: f64,
) -> Result<()> {
    let (op, src) = prepare(x, src, positions, channels, alpha)?;
    x.inplace_op2(&src, &op)
}

/// Out-of-place [`patch_`]: a new contiguous tensor. Differentiable in `x` and `src`.
///
/// ```
/// use candle_core::{Device, DType, Tensor};
/// use tdhook_kernels::{Positions, patch};
/// let x = Tensor::zeros((2, 2), DType::F32, &Device::Cpu)?;     // [T, D]
/// let src = Tensor::ones((2, 2), DType::F32, &Device::Cpu)?;
/// let y = patch(&x, &src, &Positions::All, None, 0.25)?;
/// assert_eq!(y.to_vec2::<f32>()?, vec![vec![0.25; 2]; 2]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn patch(
    x: &Tensor,
    src: &Tensor,
    positions: &Positions,
    channels: Option<Range<usize>>,
    alpha: f64,
) -> Result<Tensor> {
    let (op, src) = prepare(x, src, positions, channels, alpha)?;
    crate::util::apply_op2(x, &src, op)
}

#[inline(always)]
fn mix<T: Elem>(x: T, s: T, alpha: f32) -> T {
    if alpha == 1.0 {
        s
    } else {
        T::from_f32((1.0 - alpha) * x.to_f32() + alpha * s.to_f32())
    }
}

fn cpu_inplace<T: Elem>(op: &Patch, x: &mut [T], xl: &Layout, src: &[T], sl: &Layout) {
    let xmap = RowMap::new(xl);
    let smap = RowMap::new(sl);
    let (t, lo, hi, alpha) = (op.t, op.lo, op.hi, op.alpha);
    let plan = op.plan();
    let ptr = SyncPtr(x.as_mut_ptr());
    assert!(xmap.span_end() <= x.len() && smap.span_end() <= src.len());
    for_each_row(xmap.n_rows, hi - lo, |r| {
        if !plan.active(r / t, r % t, t) {
            return;
        }
        let mut scratch = Vec::new();
        let s = src_row(src, &smap, r, &mut scratch);
        // SAFETY: disjoint rows, each visited once.
        unsafe {
            with_dst_row(ptr, &xmap, r, |row| {
                for (xv, &sv) in row[lo..hi].iter_mut().zip(&s[lo..hi]) {
                    *xv = mix(*xv, sv, alpha);
                }
            })
        };
    });
}

fn cpu_new<T: Elem>(op: &Patch, x: &[T], xl: &Layout, src: &[T], sl: &Layout) -> Vec<T> {
    let xmap = RowMap::new(xl);
    let smap = RowMap::new(sl);
    let (t, lo, hi, alpha) = (op.t, op.lo, op.hi, op.alpha);
    let plan = op.plan();
    new_rows(xmap.n_rows, op.d, |r, out: &mut [MaybeUninit<T>]| {
        let mut scratch = Vec::new();
        let xr = src_row(x, &xmap, r, &mut scratch);
        for (o, &v) in out.iter_mut().zip(xr) {
            o.write(v);
        }
        if plan.active(r / t, r % t, t) {
            let mut scratch2 = Vec::new();
            let s = src_row(src, &smap, r, &mut scratch2);
            for ((o, &xv), &sv) in out[lo..hi].iter_mut().zip(&xr[lo..hi]).zip(&s[lo..hi]) {
                o.write(mix(xv, sv, alpha));
            }
        }
    })
}

fn check_src(op: &Patch, l1: &Layout, l2: &Layout) -> Result<()> {
    if l1.dims() != l2.dims() || l1.shape().elem_count() != op.b * op.t * op.d {
        return Err(arg(OP, "x and src changed shape"));
    }
    Ok(())
}

impl InplaceOp2 for Patch {
    fn name(&self) -> &'static str {
        "tdhook-patch-inplace"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        check_src(self, l1, l2)?;
        match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(s)) => cpu_inplace(self, x, l1, s, l2),
            (CpuStorage::F16(x), CpuStorage::F16(s)) => cpu_inplace(self, x, l1, s, l2),
            (CpuStorage::BF16(x), CpuStorage::BF16(s)) => cpu_inplace(self, x, l1, s, l2),
            (x, _) => {
                use candle_core::backend::BackendStorage;
                return Err(KernelError::DType {
                    op: OP,
                    dtype: x.dtype(),
                }
                .into());
            }
        }
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
        check_src(self, l1, l2)?;
        crate::cuda::patch(self, s1, l1, s2, l2)
    }
}

impl CustomOp2 for Patch {
    fn name(&self) -> &'static str {
        "tdhook-patch"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        check_src(self, l1, l2)?;
        let out = match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(s)) => {
                CpuStorage::F32(cpu_new(self, x, l1, s, l2))
            }
            (CpuStorage::F16(x), CpuStorage::F16(s)) => {
                CpuStorage::F16(cpu_new(self, x, l1, s, l2))
            }
            (CpuStorage::BF16(x), CpuStorage::BF16(s)) => {
                CpuStorage::BF16(cpu_new(self, x, l1, s, l2))
            }
            (x, _) => {
                use candle_core::backend::BackendStorage;
                return Err(KernelError::DType {
                    op: OP,
                    dtype: x.dtype(),
                }
                .into());
            }
        };
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
        check_src(self, l1, l2)?;
        crate::cuda::patch_new(self, s1, l1, s2, l2)
    }

    fn bwd(
        &self,
        x: &Tensor,
        _src: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // region(b, t, c) = active(b, t) · [lo <= c < hi]
        let plan = self.plan();
        let rows: Vec<f32> = (0..self.b * self.t)
            .map(|r| {
                if plan.active(r / self.t, r % self.t, self.t) {
                    1.0
                } else {
                    0.0
                }
            })
            .collect();
        let chans: Vec<f32> = (0..self.d)
            .map(|c| {
                if c >= self.lo && c < self.hi {
                    1.0
                } else {
                    0.0
                }
            })
            .collect();
        let dev = grad.device();
        let region = Tensor::from_vec(rows, (self.b * self.t, 1), dev)?
            .broadcast_mul(&Tensor::from_vec(chans, (1, self.d), dev)?)?
            .reshape(x.dims())?
            .to_dtype(grad.dtype())?;
        let a = self.alpha as f64;
        let g_src = (grad * &region)?.affine(a, 0.0)?;
        let g_x = (grad - &g_src)?;
        Ok((Some(g_x), Some(g_src)))
    }
}
