//! Fused kernels for tdhook, applied to candle tensors.
//!
//! | kernel | in place | out of place (differentiable) |
//! |---|---|---|
//! | steer-add `x[b,t,:] += α·c_b·v_{i_b}` on selected positions | [`steer_add_`] | [`steer_add`] |
//! | patch `x[b,t,lo..hi] = (1−α)x + α·src` | [`patch_`] | [`patch`] |
//! | directional ablation `x −= (x·û)û` | [`ablate_`] | [`ablate`] |
//! | norm-preserving steering `(x + αv)·‖x‖/‖x + αv‖` | [`norm_preserving_steer_`] | [`norm_preserving_steer`] |
//!
//! plus [`gelu_tanh`], GPT-2's activation vectorised on the CPU (the model layers use it),
//! and batched training of `K` probes on `[K, N, D]` activations:
//! [`train_logistic_probes`] (L-BFGS, one fused pass over the activations per step for all
//! probes), [`mean_difference_probes`], [`ridge_probes`].
//!
//! Every kernel has a CPU implementation (the reference; multi-threaded with rayon above a
//! size threshold, single-threaded for small tensors) and, with the `cuda` feature, a CUDA
//! one (PTX compiled by nvcc at build time). Activations may be f32, f16 or bf16
//! (arithmetic in f32) and may have any strides: transposed, narrowed or broadcast inputs are
//! read through their layout, and the in-place kernels write through a view into the tensor
//! it views.
//!
//! The in-place kernels (`_` suffix) mutate storage behind candle's back: use them on
//! activations you will not backpropagate through (inference-time steering); the
//! out-of-place versions are custom ops with a backward pass.
//!
//! ```
//! use candle_core::{Device, DType, Tensor};
//! use tdhook_kernels::{Positions, Rows, steer_add_};
//! let x = Tensor::zeros((2, 4, 8), DType::F32, &Device::Cpu)?; // [B, T, D]
//! let vecs = Tensor::ones((3, 8), DType::F32, &Device::Cpu)?;   // three steering vectors
//! // request 0 steers with vector 2 at +4, request 1 is not steered; only the last position
//! steer_add_(&x, &vecs, 1.0, &Positions::last(1, 4), &Rows::per_row([Some((2, 4.0)), None]))?;
//! assert_eq!(x.sum_all()?.to_scalar::<f32>()?, 4.0 * 8.0);
//! # Ok::<(), candle_core::Error>(())
//! ```

#![warn(missing_docs)]

#[macro_use]
mod simd;

mod ablate;
#[cfg(feature = "cuda")]
mod cuda;
mod error;
mod gelu;
mod layer_norm;
pub mod linalg;
mod linear;
mod patch;
mod positions;
mod probe;
mod softmax;
mod steer;
mod util;

pub use ablate::{ablate, ablate_, norm_preserving_steer, norm_preserving_steer_};
pub use error::KernelError;
pub use gelu::gelu_tanh;
pub use layer_norm::layer_norm;
pub use linear::linear_bias;
pub use patch::{head_channels, patch, patch_};
pub use positions::{Positions, Rows};
pub use probe::{
    LinearProbes, LogisticConfig, LogisticFit, logistic_loss_grad, mean_difference_probes,
    ridge_probes, train_logistic_probes,
};
pub use softmax::softmax_last_dim;
pub use steer::{steer_add, steer_add_};

/// Whether this build has the CUDA kernels (the `cuda` feature).
pub const CUDA_ENABLED: bool = cfg!(feature = "cuda");
