"""Eigenvalues of each layer's activation covariance XᵀX/N in a probe file (the reading of the
probe numbers in BENCHMARKS.md: why L-BFGS needs ~90 passes and no cheap preconditioner helps).

    .venv-bench/bin/python scripts/bench_python.py ... --workdir DIR   # writes DIR/probe.safetensors
    .venv-bench/bin/python scripts/probe_spectrum.py DIR/probe.safetensors [LAYER ...]
"""
import sys

import numpy as np
from safetensors.numpy import load_file


def main():
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    x = load_file(sys.argv[1])["x_train"]
    layers = [int(a) for a in sys.argv[2:]] or list(range(x.shape[0]))
    print(f"x_train {x.shape}: eigenvalues of XᵀX/N per layer (largest first)")
    for layer in layers:
        xl = x[layer].astype(np.float64)
        ev = np.linalg.eigvalsh(xl.T @ xl / xl.shape[0])[::-1]
        picks = [i for i in (0, 1, 9, 32, 64, 128, 256, 512) if i < len(ev)] + [len(ev) - 1]
        cells = ", ".join(f"#{i + 1} {ev[i]:.4g}" for i in picks)
        print(f"layer {layer:2d}: {cells}; max/min {ev[0] / ev[-1]:.0f}")


if __name__ == "__main__":
    main()
