# shellcheck shell=bash
# Source this file (do not execute it) to get a CUDA 13.0 toolchain from PyPI on a
# machine with no GPU and no system CUDA:
#
#     source scripts/cuda-env.sh            # installs into $CUDA_VENV on first use
#     CARGO_TARGET_DIR=target-cuda cargo build -p tdhook-kernels --features cuda
#
# What it does:
#   * creates the venv $CUDA_VENV (default /work/cuda-venv) and installs
#     cuda-toolkit[nvcc,cudart,cccl,nvrtc,curand,cublas]==13.0.* into it if nvcc is missing
#     (about 1.2 GB, under a minute). 13.0 is pinned to match the GPU machines (CUDA 13.0,
#     driver 580) and cudarc 0.19 (which panics on an nvcc newer than it knows).
#   * exports CU (the toolkit root), PATH, CUDA_HOME, CUDA_ROOT, CUDA_PATH,
#     CUDA_COMPUTE_CAP (default 90, H100/H200), LD_LIBRARY_PATH (for nvrtc/cublas at run time).
#   * builds the link-only libcuda stub (scripts/stub-libcuda/libcuda.so, plus unversioned
#     symlinks to the wheel's libcublas/libcurand/libnvrtc) and puts its folder on
#     LIBRARY_PATH, which the linker driver searches for `-lcuda` etc.: test and bench
#     binaries then link on a machine without a driver, and no RUSTFLAGS change forces a
#     rebuild (TDHOOK_CUDA_RUSTFLAGS="-L <stub dir>" is exported for those who prefer flags).
#     The stub is never shipped or loaded: binaries record the soname libcuda.so.1, which
#     the GPU machine's driver provides.
#
# Variables you may set before sourcing: CUDA_VENV, CUDA_TOOLKIT_VERSION (default 13.0.*),
# CUDA_COMPUTE_CAP.

_tdhook_script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CUDA_VENV="${CUDA_VENV:-/work/cuda-venv}"
CUDA_TOOLKIT_VERSION="${CUDA_TOOLKIT_VERSION:-13.0.*}"

_tdhook_find_cu() {
    local sp
    sp="$("$CUDA_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' 2>/dev/null)" || return 1
    [ -x "$sp/nvidia/cu13/bin/nvcc" ] || return 1
    echo "$sp/nvidia/cu13"
}

if ! CU="$(_tdhook_find_cu)"; then
    echo "cuda-env: installing cuda-toolkit==$CUDA_TOOLKIT_VERSION into $CUDA_VENV" >&2
    if [ ! -x "$CUDA_VENV/bin/python" ]; then
        python3 -m venv "$CUDA_VENV" || return 1 2>/dev/null || exit 1
    fi
    "$CUDA_VENV/bin/pip" install --quiet --upgrade pip >&2
    "$CUDA_VENV/bin/pip" install --quiet \
        "cuda-toolkit[nvcc,cudart,cccl,nvrtc,curand,cublas]==$CUDA_TOOLKIT_VERSION" >&2 \
        || { echo "cuda-env: pip install failed" >&2; return 1 2>/dev/null || exit 1; }
    CU="$(_tdhook_find_cu)" || { echo "cuda-env: nvcc not found after install" >&2; return 1 2>/dev/null || exit 1; }
fi

export CU
export PATH="$CU/bin:$PATH"
export CUDA_HOME="$CU" CUDA_ROOT="$CU" CUDA_PATH="$CU"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
# The wheels put libraries in lib/ (some versions in lib64/); nvcc needs cudart's headers in include/.
export LD_LIBRARY_PATH="$CU/lib:$CU/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# Link-only libcuda stub (no driver on this machine).
export STUB_LIBCUDA_DIR="$_tdhook_script_dir/stub-libcuda"
if [ ! -f "$STUB_LIBCUDA_DIR/libcuda.so" ] || [ ! -e "$STUB_LIBCUDA_DIR/libnvrtc.so" ] \
    || [ "$STUB_LIBCUDA_DIR/stub.c" -nt "$STUB_LIBCUDA_DIR/libcuda.so" ] \
    || [ "$STUB_LIBCUDA_DIR/symbols.inc" -nt "$STUB_LIBCUDA_DIR/libcuda.so" ]; then
    rm -f "$STUB_LIBCUDA_DIR/libcuda.so"
    make -s -C "$STUB_LIBCUDA_DIR" CU="$CU" >&2 || echo "cuda-env: could not build the libcuda stub" >&2
fi
case ":${LIBRARY_PATH:-}:" in
    *":$STUB_LIBCUDA_DIR:"*) ;;
    *) export LIBRARY_PATH="$STUB_LIBCUDA_DIR:$CU/lib${LIBRARY_PATH:+:$LIBRARY_PATH}" ;;
esac
export TDHOOK_CUDA_RUSTFLAGS="-L $STUB_LIBCUDA_DIR"
unset _tdhook_script_dir
unset -f _tdhook_find_cu
