use tdhook::Hookable;

#[derive(Hookable)]
enum Model {
    Small(candle_nn::Linear),
    Large(candle_nn::Linear, candle_nn::Linear),
}

fn main() {}
