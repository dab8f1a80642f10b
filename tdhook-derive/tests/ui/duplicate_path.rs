//! Two fields on one path, and a key given twice: each is one error, and the forward that
//! uses the fields raises nothing more.
use candle_core::{Result, Tensor};
use candle_nn::Linear;
use tdhook::prelude::*;

#[derive(Hookable)]
struct Mlp {
    c_fc: Linear,
    #[hook(rename = "c_fc")]
    c_proj: Linear,
    #[hook(rename = "a", rename = "b")]
    gate: Linear,
}

impl Mlp {
    fn forward(&self, x: &Tensor, hx: &mut Hx<Self>) -> Result<Tensor> {
        let h = hook!(hx, self.c_fc(x))?;
        let h = hook!(hx, self.gate(&h))?;
        hook!(hx, self.c_proj(&h))
    }
}

fn main() {
    let _ = Mlp::path().c_proj();
}
