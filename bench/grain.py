"""Where the grain size comes from: the cost of a parallel job on the engine's pool, and
the smallest convolution that two threads run faster than one.

    python bench/grain.py [--load] [--smoke]

--load runs the same with two busy-loop processes beside it. Prints the pool's overhead
(an empty job of 2 units on 2 threads vs on the calling thread) and, for LeNet-sized
convolutions of growing batch, forward+backward time on 1 and on all threads with the
grain disabled, next to the pass's floating-point operations. Times are medians after
50 warm-up calls (bench/harness.py); --smoke runs every part a few times, to check that
the script works.
"""

import argparse
import contextlib

import numpy as np

import vecconv as vc
from vecconv import _config, _engine
from harness import busy_processes, timed

CASES = [(1, 6, 14, 16), (2, 6, 14, 16), (4, 6, 14, 16), (8, 6, 14, 16), (16, 6, 14, 16),
         (32, 6, 14, 16), (1, 1, 32, 6), (4, 1, 32, 6), (16, 1, 32, 6), (8, 16, 5, 120),
         (32, 16, 5, 120)]


def median_us(fn, n=2000, warmup=50):
    return timed(fn, n, warmup=warmup)["median"] * 1e6


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--load", action="store_true")
    p.add_argument("--smoke", action="store_true",
                   help="a few calls of each part: checks the script runs (no timing)")
    args = p.parse_args()
    calls = dict(n=2, warmup=1) if args.smoke else {}
    with busy_processes(2, settle=0) if args.load else contextlib.nullcontext():
        _config.GRAIN_FLOPS = 0
        threads = vc.get_num_threads()
        a = np.ones((1, 1))
        c = np.empty((1, 2))
        one = median_us(lambda: _engine.gemm_into(a, a, c[:, :1], count=2, c_step=1, threads=1),
                        **calls)
        two = median_us(lambda: _engine.gemm_into(a, a, c[:, :1], count=2, c_step=1,
                                                  threads=threads), **calls)
        print(f"empty job of 2 units: {one:.1f} us on the caller, {two:.1f} us on {threads} "
              f"threads (pool cost {two - one:.1f} us)")
        rng = np.random.default_rng(0)
        print("case                      MFLOP/pass   1 thread   all threads   ratio")
        for n, c_in, hw, cout in CASES[:2] if args.smoke else CASES:
            x = rng.standard_normal((n, c_in, hw, hw)).astype(np.float32)
            w = rng.standard_normal((cout, c_in, 5, 5)).astype(np.float32)
            y = vc.conv2d(x, w)
            dy = np.ones_like(y)

            def f():
                vc.conv2d(x, w)
                vc.conv2d_backward(dy, x, w)
            with vc.threads(1):
                t1 = median_us(f, **(calls or dict(n=300)))
            t2 = median_us(f, **(calls or dict(n=300)))
            mflop = 2 * n * cout * c_in * 25 * y.shape[2] * y.shape[3] / 1e6
            print(f"{str((n, c_in, hw, hw)) + '->' + str(cout):25s} {mflop:10.2f} {t1:9.0f} us "
                  f"{t2:10.0f} us   {t1 / t2:.2f}")


if __name__ == "__main__":
    main()
