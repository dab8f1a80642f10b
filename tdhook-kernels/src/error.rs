//! Errors raised by the kernels. They travel inside `candle_core::Error` (as
//! `Error::Wrapped`, displayed with the kernel's name and what is wrong), so every public
//! function returns `candle_core::Result` and composes with candle code.

use candle_core::DType;

/// What went wrong in a kernel call (argument validation; device errors stay candle's).
///
/// ```
/// use candle_core::{Device, DType, Tensor};
/// let x = Tensor::zeros((1, 4, 8), DType::F32, &Device::Cpu)?;
/// let v = Tensor::zeros(8, DType::F32, &Device::Cpu)?;
/// let err = tdhook_kernels::steer_add_(&x, &v, 1.0, &tdhook_kernels::Positions::Range(2..9),
///     &tdhook_kernels::Rows::All).unwrap_err();
/// assert!(err.to_string().contains("steer_add: position range 2..9 does not fit T = 4"));
/// # Ok::<(), candle_core::Error>(())
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KernelError {
    /// An operand has the wrong shape.
    #[error("{op}: {what} has shape {got:?}, expected {expected}")]
    Shape {
        /// The kernel.
        op: &'static str,
        /// Which operand.
        what: &'static str,
        /// The shape it has.
        got: Vec<usize>,
        /// The shape it should have, in words.
        expected: String,
    },
    /// An operand has a dtype the kernel does not handle.
    #[error("{op}: dtype {dtype:?} is not supported (use f32, f16 or bf16)")]
    DType {
        /// The kernel.
        op: &'static str,
        /// The dtype it got.
        dtype: DType,
    },
    /// A position range, mask, channel range or row table does not fit the tensor.
    #[error("{op}: {msg}")]
    Argument {
        /// The kernel.
        op: &'static str,
        /// What is wrong.
        msg: String,
    },
    /// Operands live on different devices.
    #[error("{op}: operands are on different devices")]
    Device {
        /// The kernel.
        op: &'static str,
    },
}

impl From<KernelError> for candle_core::Error {
    fn from(e: KernelError) -> Self {
        candle_core::Error::wrap(e)
    }
}

pub(crate) fn arg(op: &'static str, msg: impl Into<String>) -> candle_core::Error {
    KernelError::Argument {
        op,
        msg: msg.into(),
    }
    .into()
}

pub(crate) fn shape(
    op: &'static str,
    what: &'static str,
    got: &[usize],
    expected: impl Into<String>,
) -> candle_core::Error {
    KernelError::Shape {
        op,
        what,
        got: got.to_vec(),
        expected: expected.into(),
    }
    .into()
}
