/* Link-only stub for libcuda.so (the CUDA driver API).
 *
 * cudarc (through candle's `cuda` feature, `dynamic-linking`) links `-lcuda`. A machine
 * without an NVIDIA driver has no libcuda.so, so test and bench binaries cannot be linked
 * there. With `--as-needed` off (Rust's default for dylibs), the linker only needs the
 * library to exist and carry the soname; unresolved driver symbols in the Rust objects
 * are resolved against this file at link time only when they are defined here, otherwise
 * the linker accepts them because `-Wl,--allow-shlib-undefined` is not needed for the
 * executable's own references... To be safe every symbol name is generated from the list
 * in symbols.txt (see gen below) and defined as a function that aborts.
 *
 * The soname is libcuda.so.1, so the binary asks for the real driver at run time.
 * NEVER ship or install this file's output.
 */
#include <stdlib.h>
#include <stdio.h>

static void tdhook_stub_abort(const char *name) {
    fprintf(stderr, "tdhook libcuda stub called (%s): this binary was run against the "
                    "link-only stub instead of the real NVIDIA driver\n", name);
    abort();
}

#define STUB(name) int name(void) { tdhook_stub_abort(#name); return 999; }
#include "symbols.inc"
