//! Layers that take the fused fast path when no gradient is wanted and a differentiable one
//! when it is.
//!
//! candle-nn's fused `layer_norm` and `softmax_last_dim` cut the autograd graph. A hook context
//! asking for gradients (`Direction::Bwd`) makes the hooked tensors track ops, so these layers
//! look at `track_op()` and switch to the op-by-op form exactly when a gradient can flow.

mod conv1d;
mod layer_norm;
mod rms_norm;

pub use conv1d::Conv1D;
pub use layer_norm::LayerNorm;
pub use rms_norm::RmsNorm;

use crate::hookable::{HasPath, HookPath, Hookable, Visitor};
use candle_core::{D, Module, Result, Tensor};

/// Softmax over the last dim: fused when no gradient can flow (on the CPU in f32 the
/// vectorised [`tdhook_kernels::softmax_last_dim`], elsewhere candle-nn's), differentiable when
/// one can.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if x.track_op() {
        candle_nn::ops::softmax(x, D::Minus1)
    } else if x.device().is_cpu() && x.dtype() == candle_core::DType::F32 {
        tdhook_kernels::softmax_last_dim(x)
    } else {
        candle_nn::ops::softmax_last_dim(x)
    }
}

/// GPT-2's `gelu_new` (tanh approximation), as a leaf module (`NewGELUActivation`). On the CPU
/// in f32 without gradients it runs the vectorised [`tdhook_kernels::gelu_tanh`]; otherwise
/// candle's `gelu` (differentiable).
#[derive(Clone, Copy, Debug, Default)]
pub struct NewGelu;

impl Module for NewGelu {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        tdhook_kernels::gelu_tanh(xs)
    }
}

/// Dropout in evaluation mode: the identity, kept as a module so its path exists.
#[derive(Clone, Copy, Debug, Default)]
pub struct Dropout;

impl Module for Dropout {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        Ok(xs.clone())
    }
}

macro_rules! nn_leaf {
    ($($t:ty => $name:literal),* $(,)?) => {$(
        impl Hookable for $t {
            fn hook_class(&self) -> &'static str {
                $name
            }
            fn visit_children(&self, _: &mut dyn Visitor) {}
        }
        impl HasPath for $t {
            type Path = HookPath;
        }
    )*};
}

nn_leaf!(
    NewGelu => "NewGELUActivation",
    Dropout => "Dropout",
    Conv1D => "Conv1D",
    LayerNorm => "LayerNorm",
);
