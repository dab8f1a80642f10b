use candle_core::{Result, Tensor};
use candle_nn::Linear;
use tdhook::prelude::*;

#[derive(Hookable)]
struct Mlp {
    c_fc: Linear,
    #[hook(skip)]
    c_proj: Linear,
}

#[derive(Hookable)]
struct Pair(Linear, #[hook(skip)] Linear);

impl Mlp {
    fn forward(&self, x: &Tensor, hx: &mut Hx<Self>) -> Result<Tensor> {
        let h = hook!(hx, self.c_fc(x))?;
        hook!(hx, self.c_proj(&h))
    }
}

impl Pair {
    fn forward(&self, x: &Tensor, hx: &mut Hx<Self>) -> Result<Tensor> {
        let h = hook!(hx, self.0(x))?;
        hook!(hx, self.1(&h))
    }
}

fn main() {}
