/* Link-only stub for libcuda.so (the CUDA driver API).
 *
 * cudarc (through candle's `cuda` feature, `dynamic-linking`) links `-lcuda`. A machine
 * without an NVIDIA driver has no libcuda.so, so test and bench binaries cannot be linked
 * there. This library defines every driver function cudarc declares (symbols.inc, generated
 * by gen-symbols.sh from cudarc's sources), so the linker can resolve the executable's
 * references. Its soname is libcuda.so.1: the binaries ask for the real driver at run time.
 *
 * Every function returns CUDA_ERROR_NO_DEVICE (100). That lets a preflight run on the build
 * machine (gpu-check.sh build, LD_LIBRARY_PATH=scripts/stub-libcuda/run) start the binary,
 * run the CPU tests and see the CUDA tests skip cleanly, instead of crashing.
 *
 * NEVER ship or install this library.
 */
#include <stdio.h>

static int tdhook_stub_warned = 0;

static int tdhook_stub(const char *name) {
    if (!tdhook_stub_warned) {
        tdhook_stub_warned = 1;
        fprintf(stderr, "[libcuda stub] %s: no CUDA driver here (link-only stub), "
                        "returning CUDA_ERROR_NO_DEVICE\n", name);
    }
    return 100; /* CUDA_ERROR_NO_DEVICE */
}

#define STUB(name) int name(void) { return tdhook_stub(#name); }
#include "symbols.inc"
