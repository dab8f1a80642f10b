//! Small helpers shared across the crate.

use crate::error::{Error, Result};
use candle_core::{DType, Tensor};
use std::sync::{Mutex, MutexGuard};

/// Lock a mutex whose holder may have panicked: the state it guards is plain data that a
/// panicking hook leaves consistent, and the panic is reported where it happened.
pub(crate) fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// An error naming `path` when `t` holds NaN or an infinity.
pub(crate) fn check_finite(
    t: &Tensor,
    what: &'static str,
    path: &str,
    fix: &'static str,
) -> Result<()> {
    let sum = t
        .to_dtype(DType::F32)?
        .abs()?
        .sum_all()?
        .to_scalar::<f32>()?;
    if sum.is_finite() {
        Ok(())
    } else {
        Err(Error::NotFinite {
            what,
            path: path.to_string(),
            fix,
        })
    }
}

/// What to do about a steering vector that holds NaN or an infinity.
pub(crate) const STEERING_NOT_FINITE: &str =
    "recompute it from finite activations, or drop that path";

/// A kernel's error at `path`, typed (the kernel's message names the operand and its shape).
pub(crate) fn kernel_error(path: &str) -> impl FnOnce(candle_core::Error) -> Error + '_ {
    move |e| Error::Kernel {
        path: path.to_string(),
        source: Box::new(e),
    }
}
