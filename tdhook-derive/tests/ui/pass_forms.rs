//! Every `hook!` form and every field kind compiles together, with `Hx::none()`.
use candle_core::{DType, Device, Result, Tensor};
use candle_nn::Linear;
use tdhook::prelude::*;

#[derive(Hookable)]
struct Mlp {
    c_fc: Linear,
    #[hook(skip)]
    _scale: f64,
}

#[derive(Hookable)]
#[hook(class = "MyModel")]
struct Model<M> {
    #[hook(rename = "model.embed")]
    embed: Linear,
    mlp: Mlp,
    leaves: Vec<Linear>,
    blocks: [Mlp; 2],
    maybe: Option<Box<Linear>>,
    generic: M,
    hook_out: HookPoint,
}

impl Mlp {
    fn forward(&self, x: &Tensor, hx: &mut Hx<Self>) -> Result<Tensor> {
        hook!(hx, self.c_fc(x))
    }
}

impl<M: candle_core::Module + Hookable> Model<M> {
    fn forward(&self, x: &Tensor, hx: &mut Hx<Self>) -> Result<Tensor> {
        let x = hook!(hx, self.embed(x))?;
        let x = hook!(hx, self.mlp.forward(&x))?;
        let x = hook!(hx, self.leaves[0](&x))?;
        let x = hook!(hx, self.blocks[1].forward(&x))?;
        let x = hook!(hx, self.generic(&x))?;
        hook!(hx, self.hook_out(&x))
    }
}

fn main() -> Result<()> {
    let dev = Device::Cpu;
    let lin = || Linear::new(Tensor::eye(2, DType::F32, &dev).unwrap(), None);
    let mlp = || Mlp {
        c_fc: lin(),
        _scale: 1.0,
    };
    let model = Model {
        embed: lin(),
        mlp: mlp(),
        leaves: vec![lin()],
        blocks: [mlp(), mlp()],
        maybe: Some(Box::new(lin())),
        generic: lin(),
        hook_out: HookPoint,
    };
    let x = Tensor::ones((1, 2), DType::F32, &dev)?;
    let _ = model.forward(&x, &mut Hx::none())?;
    let _: HookPath = Model::<Linear>::path().blocks(1).c_fc().into();
    let _: HookPath = Model::<Linear>::path().maybe();
    Ok(())
}
