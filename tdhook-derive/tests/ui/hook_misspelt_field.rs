use candle_core::{Result, Tensor};
use candle_nn::Linear;
use tdhook::prelude::*;

#[derive(Hookable)]
struct Mlp {
    c_fc: Linear,
    c_proj: Linear,
}

impl Mlp {
    fn forward(&self, x: &Tensor, hx: &mut Hx<Self>) -> Result<Tensor> {
        let h = hook!(hx, self.c_fcc(x))?;
        hook!(hx, self.c_proj(&h))
    }
}

fn main() {}
