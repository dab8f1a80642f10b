//! `hook!` checks that the struct it reads a field of is the one the context belongs to.
use candle_core::{Result, Tensor};
use candle_nn::Linear;
use tdhook::prelude::*;

#[derive(Hookable)]
struct A {
    x: Linear,
}

#[derive(Hookable)]
struct B {
    x: Linear,
}

fn forward_b_with_a_context(b: &B, t: &Tensor, hx: &mut Hx<A>) -> Result<Tensor> {
    hook!(hx, b.x(t))
}

fn main() {}
