//! Compiles `cuda/*.cu` to PTX with nvcc when the `cuda` feature is on.
//!
//! nvcc is taken from `$NVCC`, else `$CUDA_HOME/bin/nvcc` (also `CUDA_ROOT`, `CUDA_PATH`),
//! else `nvcc` on `PATH`. The PTX targets `compute_$CUDA_COMPUTE_CAP` (default 80: runs on
//! A100 and, JIT-compiled once by the driver, on H100/H200 and newer). No GPU is needed.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=cuda");
    for v in [
        "NVCC",
        "CUDA_HOME",
        "CUDA_ROOT",
        "CUDA_PATH",
        "CUDA_COMPUTE_CAP",
        "NVCC_CCBIN",
    ] {
        println!("cargo:rerun-if-env-changed={v}");
    }
    if env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let nvcc = env::var("NVCC").ok().map(PathBuf::from).or_else(|| {
        ["CUDA_HOME", "CUDA_ROOT", "CUDA_PATH"]
            .iter()
            .filter_map(|v| env::var(v).ok())
            .map(|root| PathBuf::from(root).join("bin").join("nvcc"))
            .find(|p| p.exists())
    });
    let nvcc = nvcc.unwrap_or_else(|| PathBuf::from("nvcc"));
    let cap = env::var("CUDA_COMPUTE_CAP")
        .ok()
        .map(|c| c.replace('.', ""))
        .unwrap_or_else(|| "80".into());
    let src = PathBuf::from("cuda/tdhook_kernels.cu");
    let ptx = out.join("tdhook_kernels.ptx");
    let mut cmd = Command::new(&nvcc);
    cmd.arg("--ptx")
        .arg(format!("-arch=compute_{cap}"))
        .args(["-O3", "-std=c++17", "-lineinfo"])
        .arg("-o")
        .arg(&ptx)
        .arg(&src);
    if let Ok(ccbin) = env::var("NVCC_CCBIN") {
        cmd.arg("-ccbin").arg(ccbin);
    }
    let status = cmd.status().unwrap_or_else(|e| {
        panic!(
            "tdhook-kernels: could not run nvcc ({}): {e}. Install the CUDA toolkit or `source scripts/cuda-env.sh`",
            nvcc.display()
        )
    });
    if !status.success() {
        panic!(
            "tdhook-kernels: nvcc failed on {} ({status})",
            src.display()
        );
    }
}
