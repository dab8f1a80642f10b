#!/usr/bin/env bash
# GPU checks for tdhook-kernels, in two halves:
#
#   scripts/gpu-check.sh build [BUNDLE]   # HERE (x86-64, no GPU needed, Rust toolchain)
#   scripts/gpu-check.sh run   [BUNDLE]   # ON THE GPU MACHINE (CUDA 13.0, driver 580, no Rust)
#
# build: sources scripts/cuda-env.sh (PyPI CUDA 13.0 toolkit + link-only libcuda stub),
#   builds the `kernels` test binary and the `kernels` bench binary with `--features cuda`
#   (release profile, CARGO_TARGET_DIR=target-cuda so the CPU builds in target/ are not
#   invalidated), and copies them, stripped, to BUNDLE (default target-cuda/gpu-bundle, an
#   ignored path: carry it to the GPU machine), then runs a preflight here against the stub
#   driver (CPU tests pass, CUDA tests skip). Takes ~10-30 min the first time (candle with
#   CUDA in release), a minute after.
#
# run: on the GPU machine, from the repository root, with BUNDLE present:
#   1. correctness: the CUDA tests (GPU against CPU and against the naive candle chains; the
#      CPU tests run too) — `kernels --test-threads=1`;
#   2. `compute-sanitizer --tool memcheck` on the CUDA tests (and racecheck on the kernels'
#      shared-memory reductions when GPU_CHECK_RACECHECK=1);
#   3. bandwidth: `kernels-bench --bandwidth`, a markdown table of GB/s per fused kernel
#      against a device-to-device copy measured in the same run, and the unfused chain's time;
#   4. (GPU_CHECK_CRITERION=1) the criterion GPU groups, short.
#   Everything is printed and also written to $GPU_CHECK_REPORT (default ${OUT:-.}/gpu-check-report.md).
#   Exit status is non-zero when a test or the sanitizer fails. Expect 2-5 minutes.
#
# Example (device tool): command `scripts/gpu-check.sh run`, carry ["target-cuda/gpu-bundle"].
set -uo pipefail

mode="${1:-}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bundle="${2:-$root/target-cuda/gpu-bundle}"

build() {
    set -e
    cd "$root"
    # shellcheck source=cuda-env.sh
    source "$root/scripts/cuda-env.sh"
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target-cuda}"
    local t0=$SECONDS
    local json
    json="$(cargo test --release --features cuda --test kernels --bench kernels --no-run --message-format=json)"
    local test_exe bench_exe
    test_exe="$(printf '%s\n' "$json" | grep '"reason":"compiler-artifact"' | grep '"name":"kernels"' | grep '"kind":\["test"\]' | sed -E 's/.*"executable":"([^"]+)".*/\1/' | tail -n1)"
    bench_exe="$(printf '%s\n' "$json" | grep '"reason":"compiler-artifact"' | grep '"name":"kernels"' | grep '"kind":\["bench"\]' | sed -E 's/.*"executable":"([^"]+)".*/\1/' | tail -n1)"
    [ -x "$test_exe" ] && [ -x "$bench_exe" ] || { echo "gpu-check: could not find the built binaries" >&2; exit 1; }
    mkdir -p "$bundle"
    cp "$test_exe" "$bundle/kernels-test"
    cp "$bench_exe" "$bundle/kernels-bench"
    strip "$bundle/kernels-test" "$bundle/kernels-bench" 2>/dev/null || true
    {
        echo "built $(date -u +%FT%TZ) on $(uname -m) in $((SECONDS - t0)) s"
        echo "nvcc: $(nvcc --version | tail -n1)"
        echo "git: $(git -C "$root" rev-parse --short HEAD 2>/dev/null)$(git -C "$root" diff --quiet 2>/dev/null || echo '+dirty')"
    } > "$bundle/BUILD_INFO"
    echo "gpu-check: bundle ready in $bundle"
    ls -la "$bundle"
    echo "dynamic libraries the binaries need:"
    readelf -d "$bundle/kernels-test" | grep NEEDED
    # Preflight here, against the stub driver (every CUDA call fails with NO_DEVICE): the
    # binaries start, the CPU tests pass, the CUDA tests and GPU benches skip.
    make -s -C "$STUB_LIBCUDA_DIR" run CU="$CU"
    echo "gpu-check: preflight (no GPU: CUDA tests must skip)"
    LD_LIBRARY_PATH="$STUB_LIBCUDA_DIR/run:$CU/lib" "$bundle/kernels-test" --test-threads=2 -q 2>&1 | tail -n 3
    LD_LIBRARY_PATH="$STUB_LIBCUDA_DIR/run:$CU/lib" "$bundle/kernels-bench" --bandwidth 2>&1 | tail -n 2
}

run() {
    cd "$root"
    local report="${GPU_CHECK_REPORT:-${OUT:-.}/gpu-check-report.md}"
    local status=0
    [ -x "$bundle/kernels-test" ] || { echo "gpu-check: no bundle at $bundle (run '$0 build' on the build machine and carry it)" >&2; exit 2; }
    # CUDA 13 runtime libraries (cublas, curand, nvrtc) of the machine's toolkit.
    for d in "${CUDA_HOME:-}" /usr/local/cuda /usr/local/cuda-13.0 /opt/cuda; do
        if [ -n "$d" ] && [ -d "$d/lib64" ]; then
            export LD_LIBRARY_PATH="$d/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
            export PATH="$d/bin:$d/compute-sanitizer:$PATH"
            break
        fi
    done
    : > "$report"
    say() { printf '%s\n' "$*" | tee -a "$report"; }
    say "# tdhook-kernels GPU check"
    say ""
    say "- $(cat "$bundle/BUILD_INFO" 2>/dev/null | tr '\n' ';')"
    say "- GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -n1)"
    say ""

    say "## 1. correctness (GPU vs CPU, CPU vs naive candle chains)"
    say '```'
    if "$bundle/kernels-test" --test-threads=1 2>&1 | tee -a "$report" | tail -n 5; then :; fi
    if [ "${PIPESTATUS[0]}" -ne 0 ]; then status=1; say "FAILED"; fi
    say '```'

    say "## 2. compute-sanitizer memcheck (CUDA tests)"
    say '```'
    if command -v compute-sanitizer >/dev/null; then
        compute-sanitizer --tool memcheck --error-exitcode 3 --print-limit 20 \
            "$bundle/kernels-test" cuda:: --test-threads=1 2>&1 | tee -a "$report" | tail -n 8
        rc="${PIPESTATUS[0]}"
        if [ "$rc" -ne 0 ]; then status=1; say "memcheck FAILED (exit $rc)"; else say "memcheck: no errors"; fi
        if [ "${GPU_CHECK_RACECHECK:-0}" = 1 ]; then
            compute-sanitizer --tool racecheck --error-exitcode 3 \
                "$bundle/kernels-test" cuda::cuda_kernels_match_cpu --test-threads=1 2>&1 | tee -a "$report" | tail -n 5
            rc="${PIPESTATUS[0]}"
            if [ "$rc" -ne 0 ]; then status=1; say "racecheck FAILED (exit $rc)"; else say "racecheck: no hazards"; fi
        fi
    else
        say "compute-sanitizer not found: SKIPPED"
    fi
    say '```'

    say "## 3. bandwidth (fused kernels vs a device-to-device copy, same run)"
    "$bundle/kernels-bench" --bandwidth 2>&1 | tee -a "$report"
    [ "${PIPESTATUS[0]}" -eq 0 ] || status=1

    if [ "${GPU_CHECK_CRITERION:-0}" = 1 ]; then
        say "## 4. criterion GPU groups (short)"
        say '```'
        "$bundle/kernels-bench" --bench --warm-up-time 0.5 --measurement-time 1 '^gpu_' 2>&1 \
            | grep -E 'time:|^gpu_|kernels\]' | tee -a "$report"
        say '```'
    fi
    say ""
    say "gpu-check: $([ $status -eq 0 ] && echo PASSED || echo FAILED)"
    exit $status
}

case "$mode" in
    build) build ;;
    run) run ;;
    *) sed -n '2,27p' "$0"; exit 2 ;;
esac
