"""Where the time of a large float32 layer goes: im2col, col2im, each GEMM alone, and the
engine's whole forward and backward pass (the profile behind the speed issue's note).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/profile_layers.py [--smoke]

Medians of 9 calls after a warm-up (bench/harness.py); --smoke runs each part once on a
small layer, to check that the script works.
"""

import argparse

import numpy as np

from vecconv import _engine, _plan, _run
from vecconv._options import conv_options
from harness import timed

# name: (N, C, H, W, Cout, k, stride, padding)
CASES = {"mid": (32, 64, 56, 56, 64, 3, 1, 1), "strided": (32, 64, 56, 56, 128, 3, 2, 1)}
SMOKE_CASES = {"small": (2, 4, 9, 9, 5, 3, 1, 1), "small-strided": (2, 4, 9, 9, 5, 3, 2, 1)}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true",
                   help="each part once on a small layer (no timing)")
    args = p.parse_args()
    repeats = 1 if args.smoke else 9

    def median_ms(f):
        return timed(f, repeats)["median"] * 1e3

    rng = np.random.default_rng(0)
    for name, (n, c, h, w, co, k, s, pad) in (SMOKE_CASES if args.smoke else CASES).items():
        dt = np.float32
        x = rng.standard_normal((n, c, h, w)).astype(dt)
        wt = rng.standard_normal((co, c, k, k)).astype(dt)
        plan = _plan.plan_conv(x.shape, wt.shape, None, np.dtype(dt),
                               conv_options(2, stride=s, padding=pad))
        w2 = _run.effective_weight(wt, plan)
        dy = np.ones(plan.out_shape, dt)
        L = plan.geometry.positions
        K = c * k * k
        cols = np.empty((K, L), dt)
        dx = np.zeros((1, c, h, w), dt)
        # one image at a time on the calling thread, as a unit of the engine does it
        im = median_ms(lambda: [_engine.unfold(x[b].reshape(-1), cols.reshape(-1), plan.geometry,
                                               1, c, 1, False) for b in range(n)])
        c2i = median_ms(lambda: [_engine.unfold(cols.reshape(-1), dx.reshape(-1), plan.geometry,
                                                1, c, 1, True) for b in range(n)])
        cb = rng.standard_normal((K, n * L)).astype(dt)
        y = np.empty((co, n * L), dt)
        d2 = rng.standard_normal((co, n * L)).astype(dt)
        dw = np.zeros((co, K), dt)
        dc = np.empty((K, n * L), dt)
        g1 = median_ms(lambda: _engine.gemm_into(w2, cb[:, :L], y[:, :L], count=n, b_step=L, c_step=L))
        g2 = median_ms(lambda: _engine.gemm_into(d2[:, :L], cb[:, :L], dw, False, True, count=n,
                                                 a_step=L, b_step=L, beta=1.0))
        g3 = median_ms(lambda: _engine.gemm_into(w2, d2[:, :L], dc[:, :L], True, False, count=n,
                                                 b_step=L, c_step=L))
        fwd = median_ms(lambda: _run.forward(x, w2, None, plan))
        bwd = median_ms(lambda: _run.backward(dy, x, w2, plan))
        print(f"{name} float32: im2col {im:.1f} ms, col2im {c2i:.1f} ms, GEMM fwd {g1:.1f} "
              f"dW {g2:.1f} dcols {g3:.1f} ms | engine forward {fwd:.1f} ms, backward {bwd:.1f} ms")


if __name__ == "__main__":
    main()
