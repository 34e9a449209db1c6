"""Where the grain size comes from: the cost of a parallel job on the engine's pool, and
the smallest convolution that two threads run faster than one.

    python bench/grain.py [--load]

--load runs the same with two busy-loop processes beside it. Prints the pool's overhead
(an empty job of 2 units on 2 threads vs on the calling thread) and, for LeNet-sized
convolutions of growing batch, forward+backward time on 1 and on all threads with the
grain disabled, next to the pass's floating-point operations.
"""

import argparse
import statistics
import subprocess
import sys
import time

import numpy as np

import vecconv as vc
from vecconv import _engine, _plan


def median_us(fn, n=2000):
    for _ in range(50):
        fn()
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts) * 1e6


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--load", action="store_true")
    args = p.parse_args()
    procs = ([subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
             if args.load else [])
    try:
        _plan.GRAIN_FLOPS = 0
        threads = vc.get_num_threads()
        a = np.ones((1, 1))
        c = np.empty((1, 2))
        one = median_us(lambda: _engine.gemm_into(a, a, c[:, :1], count=2, c_step=1, threads=1))
        two = median_us(lambda: _engine.gemm_into(a, a, c[:, :1], count=2, c_step=1,
                                                  threads=threads))
        print(f"empty job of 2 units: {one:.1f} us on the caller, {two:.1f} us on {threads} "
              f"threads (pool cost {two - one:.1f} us)")
        rng = np.random.default_rng(0)
        print("case                      MFLOP/pass   1 thread   all threads   ratio")
        for n, c_in, hw, cout in [(1, 6, 14, 16), (2, 6, 14, 16), (4, 6, 14, 16), (8, 6, 14, 16),
                                  (16, 6, 14, 16), (32, 6, 14, 16), (1, 1, 32, 6), (4, 1, 32, 6),
                                  (16, 1, 32, 6), (8, 16, 5, 120), (32, 16, 5, 120)]:
            x = rng.standard_normal((n, c_in, hw, hw)).astype(np.float32)
            w = rng.standard_normal((cout, c_in, 5, 5)).astype(np.float32)
            y = vc.conv2d(x, w)
            dy = np.ones_like(y)

            def f():
                vc.conv2d(x, w)
                vc.conv2d_backward(dy, x, w)
            with vc.threads(1):
                t1 = median_us(f, 300)
            t2 = median_us(f, 300)
            mflop = 2 * n * cout * c_in * 25 * y.shape[2] * y.shape[3] / 1e6
            print(f"{str((n, c_in, hw, hw)) + '->' + str(cout):25s} {mflop:10.2f} {t1:9.0f} us "
                  f"{t2:10.0f} us   {t1 / t2:.2f}")
    finally:
        for pr in procs:
            pr.kill()
            pr.wait()


if __name__ == "__main__":
    main()
