use candle_nn::Linear;
use tdhook::Hookable;

#[derive(Hookable)]
struct Model {
    #[hook(rename = "")]
    empty: Linear,
    #[hook(rename = "a..b")]
    double_dot: Linear,
    #[hook(rename = "a-b")]
    dash: Linear,
    #[hook(rename = ".lead")]
    leading_dot: Linear,
}

fn main() {}
