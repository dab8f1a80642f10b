use candle_nn::Linear;
use tdhook::prelude::*;

#[derive(Hookable)]
struct Mlp {
    c_fc: Linear,
    c_proj: Linear,
}

#[derive(Hookable)]
struct Model {
    h: Vec<Mlp>,
}

fn main() {
    let _ = Model::path().h(0).c_prj();
}
