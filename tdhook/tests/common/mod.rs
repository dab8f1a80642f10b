//! Helpers shared by the integration tests: fixture loading and tensor comparison by content.
#![allow(dead_code)]

pub mod models;

use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::PathBuf;

/// `tests/oracle/<name>`.
pub fn oracle_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/oracle")
        .join(name)
}

/// All tensors of an oracle safetensors file, on CPU.
pub fn load_fixture(name: &str, file: &str) -> HashMap<String, Tensor> {
    let path = oracle_dir(name).join(file);
    candle_core::safetensors::load(&path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()))
}

/// Largest |a − b| divided by max(1, largest |b|): a relative error robust to near-zero values.
pub fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    let a = a.to_dtype(DType::F32).unwrap().flatten_all().unwrap();
    let b = b.to_dtype(DType::F32).unwrap().flatten_all().unwrap();
    let diff = (&a - &b)
        .unwrap()
        .abs()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let scale = b
        .abs()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
        .max(1.0);
    diff / scale
}

/// Panics with the key and the error when `a` and `b` differ by more than `tol` (relative).
pub fn assert_close(what: &str, a: &Tensor, b: &Tensor, tol: f32) {
    assert_eq!(
        a.dims(),
        b.dims(),
        "{what}: shape {:?} vs expected {:?}",
        a.dims(),
        b.dims()
    );
    let e = rel_err(a, b);
    assert!(e <= tol, "{what}: relative error {e:e} > {tol:e}");
}
