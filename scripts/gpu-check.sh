#!/usr/bin/env bash
# GPU checks for tdhook-kernels, in two halves:
#
#   scripts/gpu-check.sh build [BUNDLE]   # HERE (x86-64, no GPU needed, Rust toolchain)
#   scripts/gpu-check.sh run   [BUNDLE]   # ON THE GPU MACHINE (CUDA 13.0, driver 580, no Rust)
#
# build: sources scripts/cuda-env.sh (PyPI CUDA 13.0 toolkit + link-only libcuda stub),
#   builds the `kernels` test binary and the `kernels` bench binary with `--features cuda`
#   (release profile, CARGO_TARGET_DIR=target-cuda so the CPU builds in target/ are not
#   invalidated), strips and packs them into BUNDLE/gpu-bundle.tar.gz (~25 MB; BUNDLE
#   defaults to target-cuda/gpu-bundle, an ignored path: carry it to the GPU machine), then
#   runs a preflight here against the stub driver (CPU tests pass, CUDA tests skip).
#   Takes 20-30 min the first time on 2 busy cores (candle with CUDA, release), ~2 min after.
#
# run: on the GPU machine, from the repository root, with BUNDLE present:
#   1. correctness: the CUDA tests (GPU against CPU and against the naive candle chains; the
#      CPU tests run too) — `kernels --test-threads=1`;
#   2. `compute-sanitizer --tool memcheck` on the CUDA tests (and racecheck on the kernels'
#      shared-memory reductions when GPU_CHECK_RACECHECK=1);
#   3. bandwidth: `kernels-bench --bandwidth`, a markdown table of GB/s per fused kernel
#      against a device-to-device copy measured in the same run, and the unfused chain's time;
#   4. (GPU_CHECK_CRITERION=1) the criterion GPU groups, short.
#   Everything is printed and also written to $GPU_CHECK_REPORT (default
#   ${OUT:-.}/gpu-check-report.md), with the raw logs next to it. Exit status is non-zero when
#   a test fails, the CUDA tests skip (no GPU) or the sanitizer reports an error.
#   Expect 2-5 minutes (the sanitizer dominates).
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
    json="$(cargo test --release -p tdhook-kernels -p tdhook-suite --features tdhook-suite/cuda --test kernels --bench kernels --no-run --message-format=json)"
    local test_exe bench_exe
    test_exe="$(printf '%s\n' "$json" | grep '"reason":"compiler-artifact"' | grep '"name":"kernels"' | grep '"kind":\["test"\]' | sed -E 's/.*"executable":"([^"]+)".*/\1/' | tail -n1)"
    bench_exe="$(printf '%s\n' "$json" | grep '"reason":"compiler-artifact"' | grep '"name":"kernels"' | grep '"kind":\["bench"\]' | sed -E 's/.*"executable":"([^"]+)".*/\1/' | tail -n1)"
    [ -x "$test_exe" ] && [ -x "$bench_exe" ] || { echo "gpu-check: could not find the built binaries" >&2; exit 1; }
    local stage="$CARGO_TARGET_DIR/gpu-bundle-stage"
    rm -rf "$stage" && mkdir -p "$stage" "$bundle"
    cp "$test_exe" "$stage/kernels-test"
    cp "$bench_exe" "$stage/kernels-bench"
    strip "$stage/kernels-test" "$stage/kernels-bench" 2>/dev/null || true
    {
        echo "built $(date -u +%FT%TZ) on $(uname -m) in $((SECONDS - t0)) s"
        echo "nvcc: $(nvcc --version | tail -n1)"
        echo "git: $(git -C "$root" rev-parse --short HEAD 2>/dev/null)$(git -C "$root" diff --quiet 2>/dev/null || echo '+dirty')"
    } > "$stage/BUILD_INFO"
    # ~100 MB of binaries (candle's PTX inside) compress to ~25 MB: under the carry limit.
    rm -f "$bundle"/kernels-test "$bundle"/kernels-bench
    tar -C "$stage" -czf "$bundle/gpu-bundle.tar.gz" kernels-test kernels-bench BUILD_INFO
    cp "$stage/BUILD_INFO" "$bundle/BUILD_INFO"
    echo "gpu-check: bundle ready: $bundle/gpu-bundle.tar.gz"
    ls -la "$bundle"
    echo "dynamic libraries the binaries need:"
    readelf -d "$stage/kernels-test" | grep NEEDED
    # Preflight here, against the stub driver (every CUDA call fails with NO_DEVICE): the
    # binaries start, the CPU tests pass, the CUDA tests and GPU benches skip.
    make -s -C "$STUB_LIBCUDA_DIR" run CU="$CU"
    echo "gpu-check: preflight (no GPU: CUDA tests must skip)"
    LD_LIBRARY_PATH="$STUB_LIBCUDA_DIR/run:$CU/lib" "$stage/kernels-test" --test-threads=2 -q 2>&1 | tail -n 3
    LD_LIBRARY_PATH="$STUB_LIBCUDA_DIR/run:$CU/lib" "$stage/kernels-bench" --bandwidth 2>&1 | tail -n 2
}

run() {
    cd "$root"
    local report="${GPU_CHECK_REPORT:-${OUT:-.}/gpu-check-report.md}"
    local status=0 rc
    [ -f "$bundle/gpu-bundle.tar.gz" ] || { echo "gpu-check: no $bundle/gpu-bundle.tar.gz (run '$0 build' on the build machine and carry $bundle)" >&2; exit 2; }
    local bin="${TMPDIR:-/tmp}/tdhook-gpu-bundle"
    rm -rf "$bin" && mkdir -p "$bin" && tar -C "$bin" -xzf "$bundle/gpu-bundle.tar.gz" || exit 2
    # CUDA 13 runtime libraries (cublas, curand, cudart) and compute-sanitizer of the machine.
    for d in "${CUDA_HOME:-}" /usr/local/cuda /usr/local/cuda-13.0 /opt/cuda; do
        if [ -n "$d" ] && [ -d "$d/lib64" ]; then
            export LD_LIBRARY_PATH="$d/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
            export PATH="$d/bin:$d/compute-sanitizer:$PATH"
            break
        fi
    done
    mkdir -p "$(dirname "$report")"
    : > "$report"
    say() { printf '%s\n' "$*" | tee -a "$report"; }
    say "# tdhook-kernels GPU check"
    say ""
    say "- build: $(tr '\n' ';' < "$bin/BUILD_INFO")"
    say "- GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -n1)"
    say ""

    say "## 1. correctness (GPU vs CPU, CPU vs naive candle chains)"
    say ""
    say '```'
    "$bin/kernels-test" --test-threads=1 --nocapture > "$bin/tests.log" 2>&1
    rc=$?
    grep -E '^test |test result|SKIP|panicked|assert' "$bin/tests.log" | tee -a "$report"
    if [ "$rc" -ne 0 ]; then
        status=1
        say "FAILED (exit $rc); full log:"
        tee -a "$report" < "$bin/tests.log" > /dev/null
    fi
    if grep -q 'SKIP: no CUDA device' "$bin/tests.log"; then
        status=1
        say "FAILED: the CUDA tests skipped (no usable GPU)"
    fi
    say '```'

    say "## 2. compute-sanitizer (CUDA tests)"
    say ""
    say '```'
    if command -v compute-sanitizer > /dev/null; then
        compute-sanitizer --tool memcheck --error-exitcode 3 --print-limit 20 \
            "$bin/kernels-test" cuda:: --test-threads=1 > "$bin/memcheck.log" 2>&1
        rc=$?
        grep -E '^test |test result|ERROR SUMMARY|=========' "$bin/memcheck.log" | head -n 60 | tee -a "$report"
        if [ "$rc" -ne 0 ]; then status=1; say "memcheck FAILED (exit $rc)"; else say "memcheck: clean"; fi
        if [ "${GPU_CHECK_RACECHECK:-0}" = 1 ]; then
            compute-sanitizer --tool racecheck --error-exitcode 3 \
                "$bin/kernels-test" cuda::cuda_kernels_match_cpu --test-threads=1 > "$bin/racecheck.log" 2>&1
            rc=$?
            grep -E 'test result|RACECHECK SUMMARY|=========' "$bin/racecheck.log" | head -n 40 | tee -a "$report"
            if [ "$rc" -ne 0 ]; then status=1; say "racecheck FAILED (exit $rc)"; else say "racecheck: clean"; fi
        fi
    else
        say "compute-sanitizer not found: SKIPPED"
    fi
    say '```'

    say "## 3. bandwidth (fused kernels vs a device-to-device copy, same run)"
    "$bin/kernels-bench" --bandwidth > "$bin/bandwidth.log" 2>&1
    rc=$?
    tee -a "$report" < "$bin/bandwidth.log"
    [ "$rc" -eq 0 ] || { status=1; say "bandwidth run FAILED (exit $rc)"; }

    if [ "${GPU_CHECK_CRITERION:-0}" = 1 ]; then
        say "## 4. criterion GPU groups (short)"
        say '```'
        "$bin/kernels-bench" --bench --warm-up-time 0.5 --measurement-time 1 '^gpu_' 2>&1 \
            | grep -E 'time:|^gpu_|kernels\]' | tee -a "$report"
        say '```'
    fi
    say ""
    say "gpu-check: $([ $status -eq 0 ] && echo PASSED || echo FAILED)"
    cp "$bin"/*.log "$(dirname "$report")/" 2>/dev/null || true
    exit $status
}

case "$mode" in
    build) build ;;
    run) run ;;
    *) sed -n '2,28p' "$0"; exit 2 ;;
esac
