use tdhook::Hookable;

/// A module from another crate: implements neither `Hookable` nor anything tdhook knows.
struct Rotary {
    _theta: f32,
}

#[derive(Hookable)]
struct Attention {
    c_attn: candle_nn::Linear,
    rotary: Rotary,
}

fn main() {}
