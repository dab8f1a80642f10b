use candle_nn::Linear;
use tdhook::Hookable;

#[derive(Hookable)]
struct Mlp {
    #[hook(skipp)]
    c_fc: Linear,
    #[hook(name = "proj")]
    c_proj: Linear,
}

#[derive(Hookable)]
#[hook(klass = "GPT2MLP")]
struct Block {
    mlp: Mlp,
}

fn main() {}
