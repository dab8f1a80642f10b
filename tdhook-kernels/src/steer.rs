//! Steer-add: `x[b, t, :] += alpha · coef[b] · vecs[index[b], :]` on selected positions.

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp2, DType, InplaceOp2, Layout, Result, Shape, Tensor};

use crate::error::{KernelError, arg, shape};
use crate::positions::{NO_VEC, PosPlan, Positions, Rows};
use crate::util::{
    Elem, RowMap, SyncPtr, check_float, dispatch_mut, dispatch_new, for_each_row, new_rows,
    src_row, with_dst_row,
};

const OP: &str = "steer_add";

/// Checked geometry of a steer-add call.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Geom {
    pub b: usize,
    pub t: usize,
    pub d: usize,
    pub n_vecs: usize,
}

fn geom(x: &Tensor, v: &Tensor) -> Result<Geom> {
    check_float(OP, x.dtype())?;
    if !x.device().same_device(v.device()) {
        return Err(KernelError::Device { op: OP }.into());
    }
    let dims = x.dims();
    if dims.len() < 2 {
        return Err(shape(OP, "x", dims, "[..., T, D] (rank >= 2)"));
    }
    let d = dims[dims.len() - 1];
    let t = dims[dims.len() - 2];
    let b = dims[..dims.len() - 2].iter().product();
    let n_vecs = match v.dims() {
        [dv] if *dv == d => 1,
        [nv, dv] if *dv == d => *nv,
        other => return Err(shape(OP, "v", other, format!("[D] or [V, D] with D = {d}"))),
    };
    Ok(Geom { b, t, d, n_vecs })
}

/// The steering vectors as an `[V, D]` f32 tensor (what the ops receive).
fn vec_table(v: &Tensor) -> Result<Tensor> {
    let v = if v.rank() == 1 {
        v.unsqueeze(0)?
    } else {
        v.clone()
    };
    v.to_dtype(DType::F32)?.contiguous()
}

/// Adds `alpha · coef · v` to the selected rows of `x`, **in place**.
///
/// * `x`: `[B, T, D]` (more leading dims are flattened into `B`; `[T, D]` means `B = 1`),
///   f32 / f16 / bf16, any layout without repeated elements (a narrowed view writes through
///   to the tensor it views). Arithmetic is done in f32.
/// * `v`: `[D]` or `[V, D]`, any float dtype: the steering vector(s).
/// * `alpha`: global coefficient.
/// * `positions`: which positions of every row (see [`Positions`]).
/// * `rows`: [`Rows::All`] (every row uses vector 0) or per-row vector index and coefficient
///   (per-request steering).
///
/// In-place writes are invisible to candle's autograd: use [`steer_add`] on tensors you
/// will backpropagate through.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use tdhook_kernels::{Positions, Rows, steer_add_};
/// let x = Tensor::zeros((2, 3, 4), candle_core::DType::F32, &Device::Cpu)?;
/// let v = Tensor::ones(4, candle_core::DType::F32, &Device::Cpu)?;
/// steer_add_(&x, &v, 2.0, &Positions::Range(1..3), &Rows::All)?;
/// assert_eq!(x.sum_all()?.to_scalar::<f32>()?, 2.0 * 2.0 * 2.0 * 4.0);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn steer_add_(
    x: &Tensor,
    v: &Tensor,
    alpha: f64,
    positions: &Positions,
    rows: &Rows,
) -> Result<()> {
    let g = geom(x, v)?;
    let vt = crate::util::operand_f32(&vec_table(v)?, x)?;
    let op = SteerAdd::new(g, alpha, positions, rows)?;
    x.inplace_op2(&vt, &op)
}

/// Out-of-place [`steer_add_`]: returns `x` with `alpha · coef · v` added on the selected
/// rows, as a new contiguous tensor. Differentiable in `x` and `v`.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use tdhook_kernels::{Positions, Rows, steer_add};
/// let x = Tensor::zeros((1, 2, 3), candle_core::DType::F32, &Device::Cpu)?;
/// let vecs = Tensor::new(&[[1f32, 1., 1.], [0., 5., 0.]], &Device::Cpu)?;
/// let y = steer_add(&x, &vecs, 1.0, &Positions::All, &Rows::per_row([Some((1, 2.0))]))?;
/// assert_eq!(y.to_vec3::<f32>()?, vec![vec![vec![0., 10., 0.], vec![0., 10., 0.]]]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn steer_add(
    x: &Tensor,
    v: &Tensor,
    alpha: f64,
    positions: &Positions,
    rows: &Rows,
) -> Result<Tensor> {
    let g = geom(x, v)?;
    let vt = vec_table(v)?;
    let op = SteerAdd::new(g, alpha, positions, rows)?;
    crate::util::apply_op2(x, &vt, op)
}

/// The op: owns its position mask and row table (so it can live in the autograd graph).
#[derive(Clone, Debug)]
pub(crate) struct SteerAdd {
    pub g: Geom,
    pub positions: Positions,
    pub table: Vec<(u32, f32)>,
}

impl SteerAdd {
    fn new(g: Geom, alpha: f64, positions: &Positions, rows: &Rows) -> Result<Self> {
        positions.plan(OP, g.b, g.t)?;
        let table = rows.table(OP, g.b, g.n_vecs, alpha)?;
        Ok(Self {
            g,
            positions: positions.clone(),
            table,
        })
    }

    pub(crate) fn plan(&self) -> PosPlan<'_> {
        self.positions
            .plan(OP, self.g.b, self.g.t)
            .expect("checked in new")
    }

    /// Whether every row uses vector 0 with one coefficient (the CUDA kernel then needs
    /// no table).
    #[allow(dead_code)]
    pub(crate) fn uniform(&self) -> Option<f32> {
        let first = *self.table.first()?;
        (first.0 == 0 && self.table.iter().all(|&e| e == first)).then_some(first.1)
    }

    fn check_layout(&self, l: &Layout) -> Result<()> {
        if l.shape().elem_count() != self.g.b * self.g.t * self.g.d {
            return Err(arg(OP, "x changed shape"));
        }
        Ok(())
    }
}

#[inline(always)]
fn axpy_row<T: Elem>(row: &mut [T], c: f32, v: &[f32]) {
    for (x, &vj) in row.iter_mut().zip(v) {
        *x = T::from_f32(x.to_f32() + c * vj);
    }
}

fn cpu_inplace<T: Elem>(op: &SteerAdd, x: &mut [T], xl: &Layout, vecs: &[f32]) {
    let map = RowMap::new(xl);
    let Geom { t, d, .. } = op.g;
    let plan = op.plan();
    let ptr = SyncPtr(x.as_mut_ptr());
    assert!(map.span_end() <= x.len());
    for_each_row(map.n_rows, d, |r| {
        let (b, tt) = (r / t, r % t);
        let (k, c) = op.table[b];
        if k == NO_VEC || !plan.active(b, tt, t) {
            return;
        }
        let v = &vecs[k as usize * d..(k as usize + 1) * d];
        // SAFETY: rows are disjoint (no internal overlap, checked by candle), each visited once.
        unsafe { with_dst_row(ptr, &map, r, |row| axpy_row(row, c, v)) };
    });
}

fn cpu_new<T: Elem>(op: &SteerAdd, x: &[T], xl: &Layout, vecs: &[f32]) -> Vec<T> {
    let map = RowMap::new(xl);
    let Geom { t, d, .. } = op.g;
    let plan = op.plan();
    new_rows(map.n_rows, d, |r, out: &mut [MaybeUninit<T>]| {
        let mut scratch = Vec::new();
        let src = src_row(x, &map, r, &mut scratch);
        let (b, tt) = (r / t, r % t);
        let (k, c) = op.table[b];
        if k == NO_VEC || !plan.active(b, tt, t) {
            for (o, &s) in out.iter_mut().zip(src) {
                o.write(s);
            }
        } else {
            let v = &vecs[k as usize * d..(k as usize + 1) * d];
            for ((o, &s), &vj) in out.iter_mut().zip(src).zip(v) {
                o.write(T::from_f32(s.to_f32() + c * vj));
            }
        }
    })
}

impl InplaceOp2 for SteerAdd {
    fn name(&self) -> &'static str {
        "tdhook-steer-add-inplace"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        self.check_layout(l1)?;
        let vecs = crate::util::small_f32(s2, l2)?;
        dispatch_mut!(OP, s1, |x| cpu_inplace(self, x, l1, &vecs));
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
        self.check_layout(l1)?;
        crate::cuda::steer_add(self, s1, l1, s2, l2)
    }
}

impl CustomOp2 for SteerAdd {
    fn name(&self) -> &'static str {
        "tdhook-steer-add"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.check_layout(l1)?;
        let vecs = crate::util::small_f32(s2, l2)?;
        let out = dispatch_new!(OP, s1, |x| cpu_new(self, x, l1, &vecs));
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
        self.check_layout(l1)?;
        crate::cuda::steer_add_new(self, s1, l1, s2, l2)
    }

    fn bwd(
        &self,
        _x: &Tensor,
        vecs: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // d out / d x = I; d out / d vecs[k] = sum over the rows steered by k of coef · grad.
        let Geom { b, t, d, n_vecs } = self.g;
        let plan = self.plan();
        let mut a = vec![0f32; n_vecs * b * t];
        for bb in 0..b {
            let (k, c) = self.table[bb];
            if k == NO_VEC {
                continue;
            }
            for tt in 0..t {
                if plan.active(bb, tt, t) {
                    a[k as usize * b * t + bb * t + tt] = c;
                }
            }
        }
        let a = Tensor::from_vec(a, (n_vecs, b * t), grad.device())?;
        let g2 = grad.to_dtype(DType::F32)?.reshape((b * t, d))?;
        let gv = a.matmul(&g2)?.to_dtype(vecs.dtype())?;
        Ok((Some(grad.clone()), Some(gv)))
    }
}
