//! A forward that hands its own context to a child without `hook!` does not compile: the
//! context is typed by the struct whose fields it addresses.
use candle_core::{Result, Tensor};
use candle_nn::Linear;
use tdhook::prelude::*;

#[derive(Hookable)]
struct Inner {
    a: Linear,
}

#[derive(Hookable)]
struct Outer {
    first: Linear,
    inner: Inner,
}

impl Inner {
    fn forward(&self, x: &Tensor, hx: &mut Hx<Self>) -> Result<Tensor> {
        hook!(hx, self.a(x))
    }
}

impl Outer {
    fn forward(&self, x: &Tensor, hx: &mut Hx<Self>) -> Result<Tensor> {
        let y = hook!(hx, self.first(x))?;
        self.inner.forward(&y, hx)
    }
}

fn main() {}
