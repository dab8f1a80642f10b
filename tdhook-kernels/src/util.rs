//! Shared helpers: element conversions, strided row maps, parallel row loops.

use std::mem::MaybeUninit;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Tensor};
use half::{bf16, f16};
use rayon::prelude::*;

use crate::error::KernelError;

/// Element types the CPU kernels read and write; arithmetic is done in `f32`.
pub(crate) trait Elem: Copy + Send + Sync + 'static {
    fn to_f32(self) -> f32;
    fn from_f32(v: f32) -> Self;
}

impl Elem for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        v
    }
}

impl Elem for f16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        f16::from_f32(v)
    }
}

impl Elem for bf16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        bf16::from_f32(v)
    }
}

/// The dtypes the activation kernels accept.
pub(crate) fn check_float(op: &'static str, dtype: DType) -> Result<()> {
    match dtype {
        DType::F32 | DType::F16 | DType::BF16 => Ok(()),
        other => Err(KernelError::DType { op, dtype: other }.into()),
    }
}

/// Elements per task below which a loop stays on the calling thread, and the total size
/// below which no rayon task is spawned at all (rayon's wake-up costs tens of µs, see
/// DESIGN.md "Tiny models and rayon").
pub(crate) const PAR_MIN_TOTAL: usize = 1 << 16;
pub(crate) const PAR_MIN_TASK: usize = 1 << 14;

/// Runs `f(row)` for every row in `0..n_rows`, on rayon when the work is large enough.
#[inline]
pub(crate) fn for_each_row(n_rows: usize, row_len: usize, f: impl Fn(usize) + Send + Sync) {
    let total = n_rows.saturating_mul(row_len.max(1));
    if total < PAR_MIN_TOTAL || rayon::current_num_threads() <= 1 {
        (0..n_rows).for_each(f);
    } else {
        let min_len = (PAR_MIN_TASK / row_len.max(1)).max(1);
        (0..n_rows)
            .into_par_iter()
            .with_min_len(min_len)
            .for_each(f);
    }
}

/// A raw pointer that may cross threads. Used to write disjoint rows of one storage from
/// several rayon tasks; candle's `inplace_op` refuses layouts with internal overlap, and
/// every kernel writes each element from exactly one row.
#[derive(Copy, Clone)]
pub(crate) struct SyncPtr<T>(pub *mut T);
unsafe impl<T: Send> Send for SyncPtr<T> {}
unsafe impl<T: Sync> Sync for SyncPtr<T> {}

/// `x.apply_op2(rhs, op)`, skipping the autograd record (candle boxes the op in an `Arc` on
/// every call) when neither operand tracks gradients: the out-of-place kernels run once per
/// hook call, on tensors as small as one decode step's `[B, 1, D]`.
pub(crate) fn apply_op2<C: CustomOp2 + Send + Sync + 'static>(
    x: &Tensor,
    rhs: &Tensor,
    op: C,
) -> Result<Tensor> {
    if x.track_op() || rhs.track_op() {
        x.apply_op2(rhs, op)
    } else {
        x.apply_op2_no_bwd(rhs, &op)
    }
}

/// Maps a row index (all dims but the last, row-major) of a strided layout to the offset
/// of the row's first element; the last dim has length `d` and stride `sd`.
///
/// Borrows the layout's dims and strides: built on every kernel call, it allocates nothing.
#[derive(Clone, Debug)]
pub(crate) struct RowMap<'a> {
    lead_dims: &'a [usize],
    lead_strides: &'a [usize],
    /// `Some(s)` when row `r` starts at `offset + r * s` (the leading dims collapse).
    uniform: Option<usize>,
    pub offset: usize,
    pub d: usize,
    pub sd: usize,
    pub n_rows: usize,
}

impl<'a> RowMap<'a> {
    pub fn new(layout: &'a Layout) -> Self {
        let dims = layout.dims();
        let strides = layout.stride();
        let (d, sd) = match dims.len() {
            0 => (1, 1),
            n => (dims[n - 1], strides[n - 1]),
        };
        let nl = dims.len().saturating_sub(1);
        let lead_dims = &dims[..nl];
        let lead_strides = &strides[..nl];
        let n_rows = lead_dims.iter().product::<usize>();
        // Collapse: walking from the innermost leading dim out, each stride must equal the
        // next-inner stride times its dim (size-1 dims are free).
        let mut uniform = None;
        let mut ok = true;
        let mut expect: Option<usize> = None; // stride the next-outer dim must have
        for i in (0..nl).rev() {
            if lead_dims[i] == 1 {
                continue;
            }
            match expect {
                None => uniform = Some(lead_strides[i]),
                Some(e) if e == lead_strides[i] => {}
                Some(_) => {
                    ok = false;
                    break;
                }
            }
            expect = Some(lead_strides[i] * lead_dims[i]);
        }
        if !ok {
            uniform = None;
        } else if uniform.is_none() {
            uniform = Some(0); // at most one row
        }
        Self {
            lead_dims,
            lead_strides,
            uniform,
            offset: layout.start_offset(),
            d,
            sd,
            n_rows,
        }
    }

    #[inline]
    pub fn row_offset(&self, r: usize) -> usize {
        if let Some(s) = self.uniform {
            return self.offset + r * s;
        }
        let mut rem = r;
        let mut off = self.offset;
        for i in (0..self.lead_dims.len()).rev() {
            let dim = self.lead_dims[i];
            off += (rem % dim) * self.lead_strides[i];
            rem /= dim;
        }
        off
    }

    /// `(inner, s_outer, s_inner)` with `row_offset(r) = offset + (r / inner)·s_outer +
    /// (r % inner)·s_inner`, when the leading dims merge into at most two levels.
    #[allow(dead_code)]
    pub fn two_level(&self) -> Option<(usize, usize, usize)> {
        let mut merged: Vec<(usize, usize)> = Vec::new();
        for (&dim, &st) in self.lead_dims.iter().zip(self.lead_strides) {
            if dim == 1 {
                continue;
            }
            match merged.last_mut() {
                Some(last) if last.1 == st * dim => *last = (last.0 * dim, st),
                _ => merged.push((dim, st)),
            }
        }
        match merged.as_slice() {
            [] => Some((1, 0, 0)),
            [(n, s)] => Some((*n, 0, *s)),
            [(_, s0), (n1, s1)] => Some((*n1, *s0, *s1)),
            _ => None,
        }
    }

    /// Largest element offset this layout can touch, plus one (0 when empty).
    pub fn span_end(&self) -> usize {
        if self.n_rows == 0 || self.d == 0 {
            return 0;
        }
        let mut end = self.offset + (self.d - 1) * self.sd;
        for (dim, s) in self.lead_dims.iter().zip(self.lead_strides) {
            end += (dim - 1) * s;
        }
        end + 1
    }
}

/// Reads row `r` of a strided source as a slice: borrowed when the last dim is contiguous,
/// otherwise gathered into `scratch`.
#[inline]
pub(crate) fn src_row<'a, T: Copy>(
    data: &'a [T],
    map: &RowMap,
    r: usize,
    scratch: &'a mut Vec<T>,
) -> &'a [T] {
    let off = map.row_offset(r);
    if map.sd == 1 || map.d <= 1 {
        &data[off..off + map.d]
    } else {
        scratch.clear();
        scratch.extend((0..map.d).map(|j| data[off + j * map.sd]));
        scratch
    }
}

/// Applies `f` to row `r` of a strided destination, in place. The row is borrowed directly
/// when the last dim is contiguous, otherwise gathered, modified and scattered back.
///
/// # Safety
/// `ptr` must point to a live buffer covering `map.span_end()` elements, and no other thread
/// may access row `r` concurrently.
#[inline]
pub(crate) unsafe fn with_dst_row<T: Copy, R>(
    ptr: SyncPtr<T>,
    map: &RowMap,
    r: usize,
    f: impl FnOnce(&mut [T]) -> R,
) -> R {
    let off = map.row_offset(r);
    if map.sd == 1 || map.d <= 1 {
        let row = unsafe { std::slice::from_raw_parts_mut(ptr.0.add(off), map.d) };
        f(row)
    } else {
        let mut tmp: Vec<T> = (0..map.d)
            .map(|j| unsafe { *ptr.0.add(off + j * map.sd) })
            .collect();
        let out = f(&mut tmp);
        for (j, v) in tmp.into_iter().enumerate() {
            unsafe { *ptr.0.add(off + j * map.sd) = v };
        }
        out
    }
}

/// Whether two tensors view the same storage.
pub(crate) fn shares_storage(a: &candle_core::Tensor, b: &candle_core::Tensor) -> bool {
    // Lock one at a time (never both), compare the addresses of the storages.
    let pa = {
        let (s, _) = a.storage_and_layout();
        &*s as *const candle_core::Storage
    };
    let pb = {
        let (s, _) = b.storage_and_layout();
        &*s as *const candle_core::Storage
    };
    std::ptr::eq(pa, pb)
}

/// A small operand (vector, direction) as f32, copied into storage of its own when it views
/// `dst` (the in-place kernels may then be given a view of the very tensor they modify);
/// always contiguous (the CUDA kernels read it as a plain array).
pub(crate) fn operand_f32(
    t: &candle_core::Tensor,
    dst: &candle_core::Tensor,
) -> Result<candle_core::Tensor> {
    if t.dtype() != DType::F32 {
        t.to_dtype(DType::F32)?.contiguous()
    } else if shares_storage(t, dst) {
        t.copy()
    } else {
        t.contiguous()
    }
}

/// A small operand's values as f32 in logical order: borrowed when it is contiguous f32.
pub(crate) fn small_f32<'a>(s: &'a CpuStorage, l: &Layout) -> Result<std::borrow::Cow<'a, [f32]>> {
    if let (CpuStorage::F32(v), Some((a, b))) = (s, l.contiguous_offsets()) {
        return Ok(std::borrow::Cow::Borrowed(&v[a..b]));
    }
    Ok(std::borrow::Cow::Owned(gather_f32(s, l)?))
}

/// Gathers a small strided storage (any float dtype) into a contiguous `f32` vector, in
/// logical order. Used inside `cpu_fwd` for the small operands (steering vectors, directions).
pub(crate) fn gather_f32(s: &CpuStorage, l: &Layout) -> Result<Vec<f32>> {
    fn go<T: Elem>(data: &[T], l: &Layout) -> Vec<f32> {
        let map = RowMap::new(l);
        let mut out = Vec::with_capacity(map.n_rows * map.d);
        for r in 0..map.n_rows {
            let off = map.row_offset(r);
            out.extend((0..map.d).map(|j| data[off + j * map.sd].to_f32()));
        }
        out
    }
    Ok(match s {
        CpuStorage::F32(v) => go(v, l),
        CpuStorage::F16(v) => go(v, l),
        CpuStorage::BF16(v) => go(v, l),
        CpuStorage::F64(v) => {
            let map = RowMap::new(l);
            let mut out = Vec::with_capacity(map.n_rows * map.d);
            for r in 0..map.n_rows {
                let off = map.row_offset(r);
                out.extend((0..map.d).map(|j| v[off + j * map.sd] as f32));
            }
            out
        }
        other => {
            return Err(KernelError::DType {
                op: "gather",
                dtype: other.dtype(),
            }
            .into());
        }
    })
}

/// Dispatches a generic body over the float variants of a mutable `CpuStorage`.
macro_rules! dispatch_mut {
    ($op:expr, $storage:expr, |$v:ident| $body:expr) => {
        match $storage {
            candle_core::CpuStorage::F32($v) => $body,
            candle_core::CpuStorage::F16($v) => $body,
            candle_core::CpuStorage::BF16($v) => $body,
            other => {
                return Err($crate::error::KernelError::DType {
                    op: $op,
                    dtype: candle_core::backend::BackendStorage::dtype(other),
                }
                .into())
            }
        }
    };
}

/// Dispatches a generic body over the float variants of a `CpuStorage`, producing a new one.
macro_rules! dispatch_new {
    ($op:expr, $storage:expr, |$v:ident| $body:expr) => {
        match $storage {
            candle_core::CpuStorage::F32($v) => candle_core::CpuStorage::F32($body),
            candle_core::CpuStorage::F16($v) => candle_core::CpuStorage::F16($body),
            candle_core::CpuStorage::BF16($v) => candle_core::CpuStorage::BF16($body),
            other => {
                return Err($crate::error::KernelError::DType {
                    op: $op,
                    dtype: candle_core::backend::BackendStorage::dtype(other),
                }
                .into())
            }
        }
    };
}

pub(crate) use {dispatch_mut, dispatch_new};

/// Dot product of a row of any element type with an f32 vector, eight accumulators.
#[inline]
pub(crate) fn dot<T: Elem>(a: &[T], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (ac, at) = a[..n].as_chunks::<8>();
    let (bc, bt) = b[..n].as_chunks::<8>();
    let mut acc = [0f32; 8];
    for (x, y) in ac.iter().zip(bc) {
        for l in 0..8 {
            acc[l] += x[l].to_f32() * y[l];
        }
    }
    let mut s = 0f32;
    for (x, &y) in at.iter().zip(bt) {
        s += x.to_f32() * y;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + s
}

/// Builds a new contiguous `[n_rows, d]` buffer, row `r` written by `f(r, row)` (every
/// element must be written). Runs on rayon when large enough.
pub(crate) fn new_rows<T: Copy + Send + Sync>(
    n_rows: usize,
    d: usize,
    f: impl Fn(usize, &mut [MaybeUninit<T>]) + Send + Sync,
) -> Vec<T> {
    let n = n_rows * d;
    let mut out: Vec<T> = Vec::with_capacity(n);
    if d > 0 && n_rows > 0 {
        let spare = &mut out.spare_capacity_mut()[..n];
        if n < PAR_MIN_TOTAL || rayon::current_num_threads() <= 1 {
            spare
                .chunks_mut(d)
                .enumerate()
                .for_each(|(r, row)| f(r, row));
        } else {
            let min_len = (PAR_MIN_TASK / d).max(1);
            spare
                .par_chunks_mut(d)
                .with_min_len(min_len)
                .enumerate()
                .for_each(|(r, row)| f(r, row));
        }
    }
    // SAFETY: every row of every chunk was written by `f` (its contract).
    unsafe { out.set_len(n) };
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    fn check(t: &Tensor) {
        let map = RowMap::new(t.layout());
        let mut seen = Vec::new();
        for r in 0..map.n_rows {
            let off = map.row_offset(r);
            if let Some((inner, so, si)) = map.two_level() {
                assert_eq!(
                    off,
                    map.offset + (r / inner) * so + (r % inner) * si,
                    "{:?}",
                    t.layout()
                );
            }
            seen.push(off);
        }
        // the logical order of rows agrees with candle's strided index
        let (dims, strides) = (t.dims(), t.stride());
        let nl = dims.len() - 1;
        let mut want = Vec::new();
        for r in 0..map.n_rows {
            let (mut rem, mut off) = (r, t.layout().start_offset());
            for i in (0..nl).rev() {
                off += (rem % dims[i]) * strides[i];
                rem /= dims[i];
            }
            want.push(off);
        }
        assert_eq!(want, seen);
    }

    #[test]
    fn row_maps_follow_candle_layouts() {
        let dev = Device::Cpu;
        let base = Tensor::zeros((4, 5, 6, 7), candle_core::DType::F32, &dev).unwrap();
        check(&base);
        check(&base.transpose(1, 2).unwrap());
        check(&base.transpose(0, 3).unwrap());
        check(&base.narrow(1, 1, 3).unwrap().narrow(3, 2, 4).unwrap());
        check(&base.narrow(0, 1, 2).unwrap().transpose(1, 2).unwrap());
        check(&base.i_dims());
        let small = Tensor::zeros((1, 3, 1, 5), candle_core::DType::F32, &dev).unwrap();
        check(&small);
        check(&small.broadcast_as((2, 3, 4, 5)).unwrap());
        // a 4-level layout that does not merge
        let nm = base.permute((1, 0, 2, 3)).unwrap().narrow(2, 1, 4).unwrap();
        assert!(RowMap::new(nm.layout()).two_level().is_none());
        check(&nm);
    }

    trait IDims {
        fn i_dims(&self) -> Tensor;
    }
    impl IDims for Tensor {
        fn i_dims(&self) -> Tensor {
            self.permute((2, 0, 1, 3)).unwrap()
        }
    }
}
