use candle_nn::Linear;
use tdhook::Hookable;

#[derive(Hookable)]
struct Model {
    #[hook(skip, rename = "proj")]
    c_proj: Linear,
}

fn main() {}
