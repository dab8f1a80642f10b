//! RMSNorm that keeps gradients when they are wanted.

use crate::hookable::{HasPath, HookPath, Hookable, Visitor};
use candle_core::{D, DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

/// `y = weight · x / sqrt(mean(x²) + eps)` over the last dim, HF's `LlamaRMSNorm`: the
/// normalisation runs in f32 (half inputs are upcast), the result is cast back to the input
/// dtype, and the weight multiplies after the cast.
///
/// Without gradients it is candle's fused `rms_norm`; when the input or weight tracks ops it is
/// the op-by-op form, which keeps the graph. Its hook class (what `classes_to_hook` filters on)
/// is `RMSNorm` unless set with [`RmsNorm::with_class`] (`LlamaRMSNorm`, `Qwen2RMSNorm`, …).
#[derive(Clone, Debug)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f64,
    class: &'static str,
}

impl RmsNorm {
    /// From its weight `[D]` and epsilon.
    pub fn new(weight: Tensor, eps: f64) -> Self {
        Self {
            weight,
            eps,
            class: "RMSNorm",
        }
    }

    /// Load `weight` of width `size` under `vb` (a builder over a `VarMap` creates it as 1,
    /// as PyTorch does).
    pub fn load(size: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self::new(
            vb.get_with_hints(size, "weight", candle_nn::Init::Const(1.0))?,
            eps,
        ))
    }

    /// The same norm reporting `class` as its hook class (the PyTorch class name).
    pub fn with_class(mut self, class: &'static str) -> Self {
        self.class = class;
        self
    }

    /// The weight `[D]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The epsilon.
    pub fn eps(&self) -> f64 {
        self.eps
    }

    /// The differentiable op-by-op form (HF's order of operations).
    fn forward_slow(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        let internal = match dtype {
            DType::F16 | DType::BF16 => DType::F32,
            d => d,
        };
        let x = x.to_dtype(internal)?;
        let var = x.sqr()?.mean_keepdim(D::Minus1)?;
        let xn = x.broadcast_mul(&(var + self.eps)?.sqrt()?.recip()?)?;
        xn.to_dtype(dtype)?.broadcast_mul(&self.weight)
    }

    /// The fused kernel, with HF's casts around it for half inputs.
    fn forward_fused(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        match dtype {
            DType::F16 | DType::BF16 => {
                let ones = Tensor::ones(self.weight.dims1()?, DType::F32, x.device())?;
                let xn = candle_nn::ops::rms_norm(
                    &x.to_dtype(DType::F32)?.contiguous()?,
                    &ones,
                    self.eps as f32,
                )?;
                xn.to_dtype(dtype)?.broadcast_mul(&self.weight)
            }
            _ => candle_nn::ops::rms_norm(&x.contiguous()?, &self.weight, self.eps as f32),
        }
    }
}

impl Module for RmsNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if x.track_op() || self.weight.track_op() {
            self.forward_slow(x)
        } else {
            self.forward_fused(x)
        }
    }
}

impl Hookable for RmsNorm {
    fn hook_class(&self) -> &'static str {
        self.class
    }
    fn visit_children(&self, _: &mut dyn Visitor) {}
}

impl HasPath for RmsNorm {
    type Path = HookPath;
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn fused_and_slow_agree_and_slow_keeps_gradients() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1., (3, 5, 8), &dev)?;
        let norm = RmsNorm::new(Tensor::randn(1f32, 0.1, 8, &dev)?, 1e-6);
        let fused = norm.forward(&x)?;
        let slow = norm.forward_slow(&x)?;
        let diff = (fused - &slow)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "fused vs slow differ by {diff}");
        let xb = x.to_dtype(DType::BF16)?;
        let diff = (norm.to_bf16()?.forward(&xb)? - norm.to_bf16()?.forward_slow(&xb)?)?
            .to_dtype(DType::F32)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(diff < 2e-2, "bf16 fused vs slow differ by {diff}");
        let v = Var::from_tensor(&x)?;
        let y = norm.forward(v.as_tensor())?;
        let grads = y.sqr()?.sum_all()?.backward()?;
        assert!(grads.get(v.as_tensor()).is_some(), "gradient was cut");
        Ok(())
    }

    impl RmsNorm {
        fn to_bf16(&self) -> Result<Self> {
            Ok(Self::new(self.weight.to_dtype(DType::BF16)?, self.eps))
        }
    }

    #[test]
    fn class_is_settable() {
        let w = Tensor::ones(4, DType::F32, &Device::Cpu).unwrap();
        assert_eq!(RmsNorm::new(w.clone(), 1e-6).hook_class(), "RMSNorm");
        assert_eq!(
            RmsNorm::new(w, 1e-6)
                .with_class("LlamaRMSNorm")
                .hook_class(),
            "LlamaRMSNorm"
        );
    }
}
