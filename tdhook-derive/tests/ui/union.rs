use tdhook::Hookable;

#[derive(Hookable)]
union Bits {
    a: u32,
    b: f32,
}

fn main() {}
