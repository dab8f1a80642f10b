//! GPT-2's `Conv1D`: a linear layer whose weight is stored `[in, out]`.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

/// `y = x · W + b` with `W: [in, out]` (HF GPT-2 stores its projections this way).
#[derive(Clone, Debug)]
pub struct Conv1D {
    weight: Tensor,
    bias: Tensor,
}

impl Conv1D {
    /// From `weight: [in, out]` and `bias: [out]`.
    pub fn new(weight: Tensor, bias: Tensor) -> Self {
        Self { weight, bias }
    }

    /// Load `weight` `[n_in, n_out]` and `bias` `[n_out]` under `vb`. A builder over a
    /// `VarMap` creates them as transformers initialises GPT-2: weight `N(0, 0.02²)`, bias 0.
    pub fn load(n_in: usize, n_out: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self::new(
            vb.get_with_hints(
                (n_in, n_out),
                "weight",
                candle_nn::Init::Randn {
                    mean: 0.0,
                    stdev: 0.02,
                },
            )?,
            vb.get_with_hints(n_out, "bias", candle_nn::Init::Const(0.0))?,
        ))
    }

    /// The weight `[in, out]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
}

impl Module for Conv1D {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (n_in, n_out) = self.weight.dims2()?;
        let mut out_dims = x.dims().to_vec();
        let last = out_dims.len() - 1;
        out_dims[last] = n_out;
        let flat = x.reshape(((), n_in))?;
        // One gemm into the bias rows on the CPU (f32, no gradients); matmul + add otherwise.
        tdhook_kernels::linear_bias(&flat, &self.weight, &self.bias)?.reshape(out_dims)
    }
}
