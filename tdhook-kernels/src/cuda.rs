//! CUDA launches of the kernels in `cuda/tdhook_kernels.cu` (PTX compiled by build.rs).
//! cudarc is reached through `candle_core::cuda_backend::cudarc` only.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{
    CudaFunction, CudaSlice, CudaStream, DeviceRepr, LaunchConfig, PushKernelArg,
};
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::{CudaDevice, CudaStorage, DType, Layout, Result, Shape};
use half::{bf16, f16};

use crate::error::{KernelError, arg};
use crate::patch::Patch;
use crate::positions::PosPlan;
use crate::probe::logistic::Evaluator;
use crate::steer::SteerAdd;
use crate::util::RowMap;

/// The PTX of every kernel, compiled at build time.
const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/tdhook_kernels.ptx"));
const MODULE: &str = "tdhook_kernels";

fn func(dev: &CudaDevice, name: &str) -> Result<(CudaFunction, std::sync::Arc<CudaStream>)> {
    Ok((
        dev.get_or_load_custom_func(name, MODULE, PTX)?
            .into_cuda_function(),
        dev.cuda_stream(),
    ))
}

fn suffix(op: &'static str, dt: DType) -> Result<&'static str> {
    Ok(match dt {
        DType::F32 => "f32",
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        other => return Err(KernelError::DType { op, dtype: other }.into()),
    })
}

/// A null device pointer argument.
const NULL: u64 = 0;

/// Row geometry for the kernels: `(inner, s_outer, s_inner)` when the leading dims merge
/// into two levels, else uploaded per-row offsets. Offsets are relative to the layout's
/// start offset.
struct Geom {
    n_rows: i64,
    inner: i64,
    s_outer: i64,
    s_inner: i64,
    d: i64,
    sd: i64,
    offs: Option<CudaSlice<i64>>,
}

impl Geom {
    fn new(dev: &CudaDevice, l: &Layout) -> Result<Self> {
        let map = RowMap::new(l);
        let (inner, s_outer, s_inner, offs) = match map.two_level() {
            Some((inner, so, si)) => (inner as i64, so as i64, si as i64, None),
            None => {
                let offs: Vec<i64> = (0..map.n_rows)
                    .map(|r| (map.row_offset(r) - map.offset) as i64)
                    .collect();
                (1, 0, 0, Some(dev.clone_htod(&offs)?))
            }
        };
        Ok(Self {
            n_rows: map.n_rows as i64,
            inner,
            s_outer,
            s_inner,
            d: map.d as i64,
            sd: map.sd as i64,
            offs,
        })
    }

    /// Launch shape: `tpr` threads per row (multiple of 32, at most 256), 256 threads a block.
    fn cfg(&self) -> LaunchConfig {
        let per = (self.d as u64)
            .div_ceil(4)
            .max(1)
            .next_power_of_two()
            .clamp(32, 256) as u32;
        let rpb = 256 / per;
        let blocks = (self.n_rows as u64).div_ceil(rpb as u64).max(1) as u32;
        LaunchConfig {
            grid_dim: (blocks, 1, 1),
            block_dim: (per, rpb, 1),
            shared_mem_bytes: 0,
        }
    }
}

/// Device copies of a position plan's mask.
struct Pos {
    t_len: i64,
    kind: i32,
    start: i64,
    end: i64,
    mask: Option<CudaSlice<u8>>,
}

impl Pos {
    fn new(dev: &CudaDevice, plan: &PosPlan<'_>, t_len: usize) -> Result<Self> {
        let (kind, start, end) = plan.code();
        let mask = match plan.mask() {
            Some(m) => Some(dev.clone_htod(&m.iter().map(|&b| b as u8).collect::<Vec<u8>>())?),
            None => None,
        };
        Ok(Self {
            t_len: t_len.max(1) as i64,
            kind,
            start: start as i64,
            end: end as i64,
            mask,
        })
    }
}

macro_rules! push_geom {
    ($b:ident, $g:expr) => {
        $b.arg(&$g.n_rows)
            .arg(&$g.inner)
            .arg(&$g.s_outer)
            .arg(&$g.s_inner)
            .arg(&$g.d)
            .arg(&$g.sd);
        match &$g.offs {
            Some(o) => $b.arg(o),
            None => $b.arg(&NULL),
        };
    };
}

macro_rules! push_pos {
    ($b:ident, $p:expr) => {
        $b.arg(&$p.t_len).arg(&$p.kind).arg(&$p.start).arg(&$p.end);
        match &$p.mask {
            Some(m) => $b.arg(m),
            None => $b.arg(&NULL),
        };
    };
}

// ------------------------------------------------------------------------------------------
// steer-add
// ------------------------------------------------------------------------------------------

struct SteerArgs {
    pos: Pos,
    idx: Option<CudaSlice<u32>>,
    coef: Option<CudaSlice<f32>>,
    coef0: f32,
}

fn steer_args(op: &SteerAdd, dev: &CudaDevice) -> Result<SteerArgs> {
    let pos = Pos::new(dev, &op.plan(), op.g.t)?;
    Ok(match op.uniform() {
        Some(c) => SteerArgs {
            pos,
            idx: None,
            coef: None,
            coef0: c,
        },
        None => {
            let idx: Vec<u32> = op.table.iter().map(|e| e.0).collect();
            let coef: Vec<f32> = op.table.iter().map(|e| e.1).collect();
            SteerArgs {
                pos,
                idx: Some(dev.clone_htod(&idx)?),
                coef: Some(dev.clone_htod(&coef)?),
                coef0: 0.0,
            }
        }
    })
}

fn vecs_view<'a>(
    v: &'a CudaStorage,
    vl: &Layout,
) -> Result<candle_core::cuda_backend::cudarc::driver::CudaView<'a, f32>> {
    let (o1, o2) = vl
        .contiguous_offsets()
        .ok_or_else(|| arg("steer_add", "steering vectors must be contiguous"))?;
    Ok(v.as_cuda_slice::<f32>()?.slice(o1..o2))
}

fn steer_launch<T: CudaDType + DeviceRepr>(
    op: &SteerAdd,
    x: &mut CudaStorage,
    xl: &Layout,
    v: &CudaStorage,
    vl: &Layout,
) -> Result<()> {
    let dev = x.device.clone();
    let g = Geom::new(&dev, xl)?;
    let a = steer_args(op, &dev)?;
    let (f, st) = func(
        &dev,
        &format!("steer_add_{}", suffix("steer_add", x.dtype())?),
    )?;
    let vv = vecs_view(v, vl)?;
    let xs = x.as_cuda_slice_mut::<T>()?;
    let mut xv = xs.slice_mut(xl.start_offset()..);
    let mut b = st.launch_builder(&f);
    b.arg(&mut xv);
    push_geom!(b, g);
    b.arg(&NULL);
    push_pos!(b, a.pos);
    match (&a.idx, &a.coef) {
        (Some(i), Some(c)) => b.arg(i).arg(c),
        _ => b.arg(&NULL).arg(&NULL),
    };
    b.arg(&a.coef0).arg(&vv);
    unsafe { b.launch(g.cfg()) }.w()?;
    Ok(())
}

fn steer_new_launch<T: CudaDType + DeviceRepr>(
    op: &SteerAdd,
    x: &CudaStorage,
    xl: &Layout,
    v: &CudaStorage,
    vl: &Layout,
) -> Result<CudaStorage> {
    let dev = x.device.clone();
    let g = Geom::new(&dev, xl)?;
    let a = steer_args(op, &dev)?;
    let (f, st) = func(
        &dev,
        &format!("steer_add_{}", suffix("steer_add", x.dtype())?),
    )?;
    let vv = vecs_view(v, vl)?;
    let xv = x.as_cuda_slice::<T>()?.slice(xl.start_offset()..);
    let out = unsafe { dev.alloc::<T>(xl.shape().elem_count())? };
    let mut b = st.launch_builder(&f);
    b.arg(&xv);
    push_geom!(b, g);
    b.arg(&out);
    push_pos!(b, a.pos);
    match (&a.idx, &a.coef) {
        (Some(i), Some(c)) => b.arg(i).arg(c),
        _ => b.arg(&NULL).arg(&NULL),
    };
    b.arg(&a.coef0).arg(&vv);
    unsafe { b.launch(g.cfg()) }.w()?;
    drop(b);
    Ok(CudaStorage::wrap_cuda_slice(out, dev))
}

pub(crate) fn steer_add(
    op: &SteerAdd,
    x: &mut CudaStorage,
    xl: &Layout,
    v: &CudaStorage,
    vl: &Layout,
) -> Result<()> {
    if xl.shape().elem_count() == 0 {
        return Ok(());
    }
    match x.dtype() {
        DType::F32 => steer_launch::<f32>(op, x, xl, v, vl),
        DType::F16 => steer_launch::<f16>(op, x, xl, v, vl),
        DType::BF16 => steer_launch::<bf16>(op, x, xl, v, vl),
        dt => Err(KernelError::DType {
            op: "steer_add",
            dtype: dt,
        }
        .into()),
    }
}

pub(crate) fn steer_add_new(
    op: &SteerAdd,
    x: &CudaStorage,
    xl: &Layout,
    v: &CudaStorage,
    vl: &Layout,
) -> Result<(CudaStorage, Shape)> {
    let out = match x.dtype() {
        DType::F32 => steer_new_launch::<f32>(op, x, xl, v, vl)?,
        DType::F16 => steer_new_launch::<f16>(op, x, xl, v, vl)?,
        DType::BF16 => steer_new_launch::<bf16>(op, x, xl, v, vl)?,
        dt => {
            return Err(KernelError::DType {
                op: "steer_add",
                dtype: dt,
            }
            .into());
        }
    };
    Ok((out, xl.shape().clone()))
}

// ------------------------------------------------------------------------------------------
// patch
// ------------------------------------------------------------------------------------------

fn patch_launch<T: CudaDType + DeviceRepr>(
    op: &Patch,
    x: &mut CudaStorage,
    xl: &Layout,
    src: &CudaStorage,
    sl: &Layout,
) -> Result<()> {
    let dev = x.device.clone();
    let g = Geom::new(&dev, xl)?;
    let sg = Geom::new(&dev, sl)?;
    let pos = Pos::new(&dev, &op.plan(), op.t)?;
    let (f, st) = func(&dev, &format!("patch_{}", suffix("patch", x.dtype())?))?;
    let sv = src.as_cuda_slice::<T>()?.slice(sl.start_offset()..);
    let xs = x.as_cuda_slice_mut::<T>()?;
    let mut xv = xs.slice_mut(xl.start_offset()..);
    let (lo, hi) = (op.lo as i64, op.hi as i64);
    let mut b = st.launch_builder(&f);
    b.arg(&mut xv);
    push_geom!(b, g);
    b.arg(&sv)
        .arg(&sg.inner)
        .arg(&sg.s_outer)
        .arg(&sg.s_inner)
        .arg(&sg.sd);
    match &sg.offs {
        Some(o) => b.arg(o),
        None => b.arg(&NULL),
    };
    b.arg(&NULL);
    push_pos!(b, pos);
    b.arg(&lo).arg(&hi).arg(&op.alpha);
    unsafe { b.launch(g.cfg()) }.w()?;
    Ok(())
}

fn patch_new_launch<T: CudaDType + DeviceRepr>(
    op: &Patch,
    x: &CudaStorage,
    xl: &Layout,
    src: &CudaStorage,
    sl: &Layout,
) -> Result<CudaStorage> {
    let dev = x.device.clone();
    let g = Geom::new(&dev, xl)?;
    let sg = Geom::new(&dev, sl)?;
    let pos = Pos::new(&dev, &op.plan(), op.t)?;
    let (f, st) = func(&dev, &format!("patch_{}", suffix("patch", x.dtype())?))?;
    let sv = src.as_cuda_slice::<T>()?.slice(sl.start_offset()..);
    let xv = x.as_cuda_slice::<T>()?.slice(xl.start_offset()..);
    let out = unsafe { dev.alloc::<T>(xl.shape().elem_count())? };
    let (lo, hi) = (op.lo as i64, op.hi as i64);
    let mut b = st.launch_builder(&f);
    b.arg(&xv);
    push_geom!(b, g);
    b.arg(&sv)
        .arg(&sg.inner)
        .arg(&sg.s_outer)
        .arg(&sg.s_inner)
        .arg(&sg.sd);
    match &sg.offs {
        Some(o) => b.arg(o),
        None => b.arg(&NULL),
    };
    b.arg(&out);
    push_pos!(b, pos);
    b.arg(&lo).arg(&hi).arg(&op.alpha);
    unsafe { b.launch(g.cfg()) }.w()?;
    drop(b);
    Ok(CudaStorage::wrap_cuda_slice(out, dev))
}

pub(crate) fn patch(
    op: &Patch,
    x: &mut CudaStorage,
    xl: &Layout,
    src: &CudaStorage,
    sl: &Layout,
) -> Result<()> {
    if xl.shape().elem_count() == 0 || op.lo == op.hi {
        return Ok(());
    }
    match x.dtype() {
        DType::F32 => patch_launch::<f32>(op, x, xl, src, sl),
        DType::F16 => patch_launch::<f16>(op, x, xl, src, sl),
        DType::BF16 => patch_launch::<bf16>(op, x, xl, src, sl),
        dt => Err(KernelError::DType {
            op: "patch",
            dtype: dt,
        }
        .into()),
    }
}

pub(crate) fn patch_new(
    op: &Patch,
    x: &CudaStorage,
    xl: &Layout,
    src: &CudaStorage,
    sl: &Layout,
) -> Result<(CudaStorage, Shape)> {
    let out = match x.dtype() {
        DType::F32 => patch_new_launch::<f32>(op, x, xl, src, sl)?,
        DType::F16 => patch_new_launch::<f16>(op, x, xl, src, sl)?,
        DType::BF16 => patch_new_launch::<bf16>(op, x, xl, src, sl)?,
        dt => {
            return Err(KernelError::DType {
                op: "patch",
                dtype: dt,
            }
            .into());
        }
    };
    Ok((out, xl.shape().clone()))
}

// ------------------------------------------------------------------------------------------
// ablate / norm-preserving steer
// ------------------------------------------------------------------------------------------

/// Which row op `rowop_*` runs.
#[derive(Clone, Copy, Debug)]
pub(crate) enum RowOp {
    Ablate = 0,
    NormSteer = 1,
}

fn u_view<'a>(
    u: &'a CudaStorage,
    ul: &Layout,
) -> Result<candle_core::cuda_backend::cudarc::driver::CudaView<'a, f32>> {
    let (o1, o2) = ul
        .contiguous_offsets()
        .ok_or_else(|| arg("ablate", "direction must be contiguous"))?;
    Ok(u.as_cuda_slice::<f32>()?.slice(o1..o2))
}

fn rowop_launch<T: CudaDType + DeviceRepr>(
    op: RowOp,
    x: &mut CudaStorage,
    xl: &Layout,
    u: &CudaStorage,
    ul: &Layout,
    alpha: f32,
) -> Result<()> {
    let dev = x.device.clone();
    let g = Geom::new(&dev, xl)?;
    let (f, st) = func(&dev, &format!("rowop_{}", suffix("rowop", x.dtype())?))?;
    let uv = u_view(u, ul)?;
    let xs = x.as_cuda_slice_mut::<T>()?;
    let mut xv = xs.slice_mut(xl.start_offset()..);
    let opc = op as i32;
    let mut b = st.launch_builder(&f);
    b.arg(&opc).arg(&mut xv);
    push_geom!(b, g);
    b.arg(&NULL).arg(&uv).arg(&alpha);
    unsafe { b.launch(g.cfg()) }.w()?;
    Ok(())
}

fn rowop_new_launch<T: CudaDType + DeviceRepr>(
    op: RowOp,
    x: &CudaStorage,
    xl: &Layout,
    u: &CudaStorage,
    ul: &Layout,
    alpha: f32,
) -> Result<CudaStorage> {
    let dev = x.device.clone();
    let g = Geom::new(&dev, xl)?;
    let (f, st) = func(&dev, &format!("rowop_{}", suffix("rowop", x.dtype())?))?;
    let uv = u_view(u, ul)?;
    let xv = x.as_cuda_slice::<T>()?.slice(xl.start_offset()..);
    let out = unsafe { dev.alloc::<T>(xl.shape().elem_count())? };
    let opc = op as i32;
    let mut b = st.launch_builder(&f);
    b.arg(&opc).arg(&xv);
    push_geom!(b, g);
    b.arg(&out).arg(&uv).arg(&alpha);
    unsafe { b.launch(g.cfg()) }.w()?;
    drop(b);
    Ok(CudaStorage::wrap_cuda_slice(out, dev))
}

pub(crate) fn rowwise(
    op: RowOp,
    x: &mut CudaStorage,
    xl: &Layout,
    u: &CudaStorage,
    ul: &Layout,
    alpha: f32,
) -> Result<()> {
    if xl.shape().elem_count() == 0 {
        return Ok(());
    }
    match x.dtype() {
        DType::F32 => rowop_launch::<f32>(op, x, xl, u, ul, alpha),
        DType::F16 => rowop_launch::<f16>(op, x, xl, u, ul, alpha),
        DType::BF16 => rowop_launch::<bf16>(op, x, xl, u, ul, alpha),
        dt => Err(KernelError::DType {
            op: "rowop",
            dtype: dt,
        }
        .into()),
    }
}

pub(crate) fn rowwise_new(
    op: RowOp,
    x: &CudaStorage,
    xl: &Layout,
    u: &CudaStorage,
    ul: &Layout,
    alpha: f32,
) -> Result<(CudaStorage, Shape)> {
    let out = match x.dtype() {
        DType::F32 => rowop_new_launch::<f32>(op, x, xl, u, ul, alpha)?,
        DType::F16 => rowop_new_launch::<f16>(op, x, xl, u, ul, alpha)?,
        DType::BF16 => rowop_new_launch::<bf16>(op, x, xl, u, ul, alpha)?,
        dt => {
            return Err(KernelError::DType {
                op: "rowop",
                dtype: dt,
            }
            .into());
        }
    };
    Ok((out, xl.shape().clone()))
}

// ------------------------------------------------------------------------------------------
// fused logistic pass
// ------------------------------------------------------------------------------------------

/// Rows per block of `logistic_pass_f32` (`PROBE_ROWS` in the .cu file).
const PROBE_ROWS: usize = 32;

/// Evaluates the logistic loss and gradient of the active probes on the GPU: one fused
/// kernel over `X` (logits, then gradient contributions, per 32-row chunk), one reduction
/// kernel over chunks in a fixed order, then `[A, D+1]` gradients and `[A, chunks]` losses
/// copied back.
pub(crate) struct ProbeEval<'a> {
    dev: CudaDevice,
    x: candle_core::cuda_backend::cudarc::driver::CudaView<'a, f32>,
    y: CudaSlice<f32>,
    k: usize,
    n: usize,
    d: usize,
}

impl<'a> ProbeEval<'a> {
    pub(crate) fn new(
        cs: &'a CudaStorage,
        offset: usize,
        y: &[f32],
        k: usize,
        n: usize,
        d: usize,
    ) -> Result<Self> {
        let dev = cs.device.clone();
        let x = cs.as_cuda_slice::<f32>()?.slice(offset..offset + k * n * d);
        let y = dev.clone_htod(y)?;
        Ok(Self { dev, x, y, k, n, d })
    }
}

impl Evaluator for ProbeEval<'_> {
    fn eval(
        &mut self,
        active: &[usize],
        theta: &[f32],
        loss: &mut [f64],
        grad: &mut [f64],
    ) -> Result<()> {
        let (n, d) = (self.n as i64, self.d as i64);
        let dp = self.d + 1;
        let a = active.len();
        if a == 0 || self.n == 0 {
            return Ok(());
        }
        debug_assert!(theta.len() == self.k * dp);
        let n_chunks = self.n.div_ceil(PROBE_ROWS);
        let th = self.dev.clone_htod(theta)?;
        let act: Vec<u32> = active.iter().map(|&i| i as u32).collect();
        let act = self.dev.clone_htod(&act)?;
        let gpart = unsafe { self.dev.alloc::<f32>(a * n_chunks * dp)? };
        let lpart = unsafe { self.dev.alloc::<f64>(a * n_chunks)? };
        let gsum = unsafe { self.dev.alloc::<f64>(a * dp)? };
        let (f, st) = func(&self.dev, "logistic_pass_f32")?;
        let cfg = LaunchConfig {
            grid_dim: (n_chunks as u32, a as u32, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = st.launch_builder(&f);
        b.arg(&self.x)
            .arg(&th)
            .arg(&self.y)
            .arg(&act)
            .arg(&n)
            .arg(&d)
            .arg(&gpart)
            .arg(&lpart);
        unsafe { b.launch(cfg) }.w()?;
        drop(b);
        let (f, st) = func(&self.dev, "logistic_reduce_f32")?;
        let (nc, dpi) = (n_chunks as i64, dp as i64);
        let cfg = LaunchConfig {
            grid_dim: (dp.div_ceil(256) as u32, a as u32, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = st.launch_builder(&f);
        b.arg(&gpart).arg(&nc).arg(&dpi).arg(&gsum);
        unsafe { b.launch(cfg) }.w()?;
        drop(b);
        let g = self.dev.clone_dtoh(&gsum)?;
        let l = self.dev.clone_dtoh(&lpart)?;
        for (ai, &kk) in active.iter().enumerate() {
            grad[kk * dp..(kk + 1) * dp].copy_from_slice(&g[ai * dp..(ai + 1) * dp]);
            loss[kk] = l[ai * n_chunks..(ai + 1) * n_chunks].iter().sum();
        }
        Ok(())
    }
}
