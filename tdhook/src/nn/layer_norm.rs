//! LayerNorm that keeps gradients when they are wanted.

use candle_core::{D, DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

/// `y = (x − mean) / sqrt(var + eps) · weight + bias` over the last dim.
#[derive(Clone, Debug)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    /// From its parameters.
    pub fn new(weight: Tensor, bias: Tensor, eps: f64) -> Self {
        Self { weight, bias, eps }
    }

    /// Load `weight` and `bias` of width `size` under `vb` (a builder over a `VarMap`
    /// creates them as 1 and 0, as PyTorch does: never a zero gain that silences the layer).
    pub fn load(size: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self::new(
            vb.get_with_hints(size, "weight", candle_nn::Init::Const(1.0))?,
            vb.get_with_hints(size, "bias", candle_nn::Init::Const(0.0))?,
            eps,
        ))
    }

    /// The differentiable op-by-op form (computed in f32 for half inputs).
    fn forward_slow(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        let internal = match dtype {
            DType::F16 | DType::BF16 => DType::F32,
            d => d,
        };
        let x = x.to_dtype(internal)?;
        let mean = x.mean_keepdim(D::Minus1)?;
        let xc = x.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
        let xn = xc.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        xn.to_dtype(dtype)?
            .broadcast_mul(&self.weight)?
            .broadcast_add(&self.bias)
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if x.track_op() || self.weight.track_op() || self.bias.track_op() {
            self.forward_slow(x)
        } else {
            // Vectorised on the CPU in f32 (tdhook_kernels); candle-nn's fused op elsewhere.
            if x.device().is_cpu() && x.dtype() == DType::F32 {
                tdhook_kernels::layer_norm(x, &self.weight, &self.bias, self.eps)
            } else {
                candle_nn::ops::layer_norm(
                    &x.contiguous()?,
                    &self.weight,
                    &self.bias,
                    self.eps as f32,
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn fused_and_slow_agree_and_slow_keeps_gradients() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1., (3, 5, 8), &dev)?;
        let ln = LayerNorm::new(
            Tensor::randn(1f32, 0.1, 8, &dev)?,
            Tensor::randn(0f32, 0.1, 8, &dev)?,
            1e-5,
        );
        let fused = ln.forward(&x)?;
        let slow = ln.forward_slow(&x)?;
        let diff = (fused - &slow)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "fused vs slow differ by {diff}");
        let v = Var::from_tensor(&x)?;
        let y = ln.forward(v.as_tensor())?;
        let grads = y.sqr()?.sum_all()?.backward()?;
        assert!(grads.get(v.as_tensor()).is_some(), "gradient was cut");
        Ok(())
    }
}
