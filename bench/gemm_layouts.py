"""Single-threaded GEMM throughput of the two column layouts an im2col engine can use,
timed round-robin: (C*kh*kw, positions), vecconv's, and (positions, C*kh*kw).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/gemm_layouts.py [--smoke]

Medians of 15 rounds (bench/harness.py); --smoke times each product once on two small
shapes, to check that the script works.
"""

import argparse

import numpy as np
import threadpoolctl

from vecconv import _engine
from harness import interleaved

SHAPES = [(64, 576, 784), (64, 576, 1792), (128, 576, 784), (128, 576, 1568),
          (16, 150, 100), (6, 25, 784), (120, 400, 1)]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true",
                   help="each product once on two small shapes (no timing)")
    args = p.parse_args()
    rng = np.random.default_rng(0)
    shapes = SHAPES[-3:-1] if args.smoke else SHAPES
    rounds = 1 if args.smoke else 15
    with threadpoolctl.threadpool_limits(1, user_api="blas"):
        for dt in (np.float32, np.float64):
            for co, k, L in shapes:
                w = rng.random((co, k)).astype(dt)
                cols = rng.random((k, L)).astype(dt)
                cols_t = np.ascontiguousarray(cols.T)
                y = np.empty((co, L), dt)
                dy = rng.random((co, L)).astype(dt)
                dw = np.zeros((co, k), dt)
                dc = np.empty((k, L), dt)
                dc_t = np.empty((L, k), dt)
                r = interleaved({
                    "fwd W.cols": lambda: _engine.gemm_into(w, cols, y),
                    "fwd W.colsT^T": lambda: _engine.gemm_into(w, cols_t, y, False, True),
                    "dW dY.cols^T": lambda: _engine.gemm_into(dy, cols, dw, False, True),
                    "dW dY.colsT": lambda: _engine.gemm_into(dy, cols_t, dw),
                    "dcols W^T.dY": lambda: _engine.gemm_into(w, dy, dc, True, False),
                    "dcolsT dY^T.W": lambda: _engine.gemm_into(dy, w, dc_t, True, False)},
                    rounds)
                gflop = 2 * co * k * L / 1e9
                print(dt.__name__, (co, k, L), " | ".join(f"{n} {gflop / t['median']:.0f}" for n, t in r.items()),
                      "GFLOP/s")


if __name__ == "__main__":
    main()
