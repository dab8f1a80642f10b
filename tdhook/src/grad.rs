//! Gradients at hook points (`Direction::Bwd`).
//!
//! candle keeps gradients only for variables, and models are usually loaded as constants. So at a
//! `Bwd` point the output goes through an identity op whose `bwd` sees the gradient flowing back,
//! records it (and may replace it), and passes it on. Where the output tracks no op yet (everything
//! upstream is constant), it is first made a variable so the op is recorded at all.

use crate::error::Error;
use crate::hookset::HookEvent;
use crate::hx::Direction;
use candle_core::backend::{BackendDevice, BackendStorage};
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor, Var};
use std::sync::{Arc, Mutex};

/// A gradient hook: sees (and may replace) the gradient at a point during `backward()`.
/// It runs inside candle's backward pass, so it must be `Send + Sync + 'static`.
pub type GradFn = dyn Fn(&HookEvent<'_>, &Tensor) -> crate::Result<Option<Tensor>> + Send + Sync;

/// One gradient seen at a hook point.
#[derive(Clone, Debug)]
pub struct GradRecord {
    /// The hook path.
    pub path: String,
    /// Which call of the point (0, 1, … within the forward).
    pub occurrence: usize,
    /// d loss / d output at that call (after any replacement).
    pub grad: Tensor,
}

/// Where gradient probes report; shared by the hook set and the ops in the graph.
#[derive(Default)]
pub(crate) struct GradSink {
    pub records: Mutex<Vec<GradRecord>>,
    pub error: Mutex<Option<Error>>,
}

pub(crate) struct GradProbe {
    pub sink: Arc<GradSink>,
    pub path: Arc<str>,
    pub class: &'static str,
    pub occurrence: usize,
    pub record: bool,
    pub hooks: Vec<Arc<GradFn>>,
}

/// A copy of `storage` as laid out by `layout`, on any backend.
fn copy_layout<S>(storage: &S, layout: &Layout) -> Result<(S, Shape)>
where
    S: BackendStorage,
    S::Device: BackendDevice<Storage = S>,
{
    let shape = layout.shape().clone();
    let mut dst = storage.device().zeros_impl(&shape, storage.dtype())?;
    storage.copy_strided_src(&mut dst, 0, layout)?;
    Ok((dst, shape))
}

impl CustomOp1 for GradProbe {
    fn name(&self) -> &'static str {
        "tdhook-grad-probe"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        copy_layout(storage, layout)
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        copy_layout(storage, layout)
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let event = HookEvent {
            path: &self.path,
            class: self.class,
            direction: Direction::Bwd,
            occurrence: self.occurrence,
        };
        let mut grad = grad.clone();
        for hook in &self.hooks {
            match hook(&event, &grad) {
                Ok(Some(g)) if g.dims() == grad.dims() => grad = g,
                Ok(Some(g)) => {
                    let e = Error::ShapeMismatch {
                        what: "gradient hook",
                        path: self.path.to_string(),
                        expected: grad.dims().to_vec(),
                        got: g.dims().to_vec(),
                    };
                    return Err(self.fail(e));
                }
                Ok(None) => {}
                Err(e) => return Err(self.fail(e)),
            }
        }
        if self.record {
            let mut records = crate::util::lock(&self.sink.records);
            records.push(GradRecord {
                path: self.path.to_string(),
                occurrence: self.occurrence,
                grad: grad.clone(),
            });
        }
        Ok(Some(grad))
    }
}

impl GradProbe {
    fn fail(&self, e: Error) -> candle_core::Error {
        let msg = format!("gradient hook at `{}` failed: {e}", self.path);
        *crate::util::lock(&self.sink.error) = Some(e);
        candle_core::Error::Msg(msg)
    }

    /// Route `t` through the probe so `backward()` reports its gradient.
    pub fn attach(self, t: &Tensor) -> Result<Tensor> {
        let t = if t.track_op() {
            t.clone()
        } else {
            Var::from_tensor(t)?.as_tensor().clone()
        };
        t.apply_op1(self)
    }
}
