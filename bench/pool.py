"""Pooling at memory speed? vecconv's compiled pooling against a plain numpy copy of the
same array, PyTorch's pooling, and itself on one thread, measured side by side.

    python bench/pool.py [--json out.json] [--repeats 15] [--smoke]

GB/s counts the bytes a pass must move at least: the input read and the output (and the
indices) written for the forward pass; dy read and dx written for the backward pass. The
numpy copy moves 2 x the input's bytes (read + write) and is the memory speed a pass over
this array can reach. Every time is the best of ``--repeats`` after a warm-up
(bench/harness.py). ``--smoke`` runs every part once on tiny arrays, to check that the
script works.
"""

import argparse
import os
import subprocess
import sys
import threading

import numpy as np

import vecconv
from harness import busy_processes, describe, machine, timed, write_json

try:
    import torch
    import torch.nn.functional as F
except ImportError:          # the comparison column is left out
    torch = None


CASES = [
    # name, shape, kernel, stride, padding
    ("lenet-s2 (64x6x28x28, 2/2)", (64, 6, 28, 28), 2, 2, 0),
    ("resnet-stem (32x64x112x112, 3/2 pad 1)", (32, 64, 112, 112), 3, 2, 1),
    ("vgg (32x64x112x112, 2/2)", (32, 64, 112, 112), 2, 2, 0),
    ("3-D (8x16x32x32x32, 2/2)", (8, 16, 32, 32, 32), 2, 2, 0),
    ("1-D (64x64x4096, 3/2 pad 1)", (64, 64, 4096), 3, 2, 1),
]
SMOKE_CASES = [("tiny 2-D", (2, 3, 8, 8), 2, 2, 0), ("tiny 1-D pad 1", (2, 3, 16), 3, 2, 1)]
USER_SHAPE = (32, 64, 112, 112)


def best(f, repeats):
    """The fastest of ``repeats`` calls after a warm-up, in seconds."""
    return timed(f, repeats)["min"]


def user_conditions(repeats, shape=USER_SHAPE):
    """The same pooling as a user's process sees it: beside two busy processes, from two
    Python threads at once, and in a process that imported and ran PyTorch first. Each
    is reported next to the clean figure measured in the same run."""
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    f = lambda: vecconv.max_pool(x, (2, 2), return_indices=True)
    out = dict(case="max 2x2/2 with indices, " + ("32x64x112^2" if shape == USER_SHAPE else
                                                  "x".join(map(str, shape))) + " float32",
               clean_ms=best(f, repeats) * 1e3)
    with busy_processes(2):
        out["busy_ms"] = best(f, repeats) * 1e3
        with vecconv.threads(1):
            out["busy_one_thread_ms"] = best(f, repeats) * 1e3

    def pair():
        ts = [threading.Thread(target=f) for _ in range(2)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    out["two_threads_both_ms"] = best(pair, repeats) * 1e3      # two calls, side by side
    # in fresh processes, with and without PyTorch imported and run first
    here = os.path.dirname(os.path.abspath(__file__))
    for key, first in (("child_ms", ""), ("torch_first_child_ms", "import torch; torch.nn."
                       "functional.conv2d(torch.randn(8, 3, 64, 64), torch.randn(8, 3, 3, 3)); ")):
        if first and torch is None:
            continue
        code = (f"import sys; sys.path.insert(0, {here!r}); from harness import timed; "
                f"import numpy as np; {first}import vecconv; x = np.random.default_rng(0)"
                f".standard_normal({tuple(shape)!r}).astype(np.float32); "
                "f = lambda: vecconv.max_pool(x, (2, 2), return_indices=True)\n"
                f"print(timed(f, {repeats})['min'] * 1e3)")
        out[key] = float(subprocess.run([sys.executable, "-c", code], check=True,
                                        capture_output=True, text=True).stdout)
    return out


def run_case(name, shape, k, s, p, dtype, repeats):
    x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    d = len(shape) - 2
    kd = (k,) * d
    out = np.empty_like(x)
    copy = 2 * x.nbytes / best(lambda: np.copyto(out, x), repeats) / 1e9
    y, idx = vecconv.max_pool(x, kd, stride=s, padding=p, return_indices=True)
    dy = np.random.default_rng(1).standard_normal(y.shape).astype(dtype)
    ops = {
        "max": (lambda: vecconv.max_pool(x, kd, stride=s, padding=p), x.nbytes + y.nbytes),
        "max+indices": (lambda: vecconv.max_pool(x, kd, stride=s, padding=p,
                                                 return_indices=True),
                        x.nbytes + y.nbytes + idx.nbytes),
        "avg": (lambda: vecconv.avg_pool(x, kd, stride=s, padding=p), x.nbytes + y.nbytes),
        "max backward": (lambda: vecconv.max_pool_backward(dy, x.shape, kernel_size=kd,
                                                           stride=s, padding=p, indices=idx),
                         dy.nbytes + idx.nbytes + x.nbytes),
        "avg backward": (lambda: vecconv.avg_pool_backward(dy, x.shape, kernel_size=kd,
                                                           stride=s, padding=p),
                         dy.nbytes + x.nbytes),
    }
    rows = []
    for op, (f, nbytes) in ops.items():
        t = best(f, repeats)
        with vecconv.threads(1):
            t1 = best(f, repeats)
        row = dict(case=name, dtype=np.dtype(dtype).name, op=op, ms=t * 1e3,
                   gbs=nbytes / t / 1e9, copy_gbs=copy, of_copy=nbytes / t / 1e9 / copy,
                   one_thread_ms=t1 * 1e3)
        if torch is not None and op in ("max", "avg"):
            tx = torch.from_numpy(x)
            tf = getattr(F, f"{op}_pool{d}d")
            row["torch_ms"] = best(lambda: tf(tx, k, s, p), repeats) * 1e3
        rows.append(row)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--only-user", action="store_true",
                    help="only the user-condition measurements")
    ap.add_argument("--smoke", action="store_true",
                    help="every part once on tiny arrays: checks the script runs (no timing)")
    args = ap.parse_args()
    if args.smoke:
        args.repeats = 1
    info = machine()
    print("# " + describe(info).replace("\n", "\n# "))
    print(f"{'case':<40}{'dtype':<8}{'op':<14}{'ms':>8}{'GB/s':>7}{'copy':>7}{'of copy':>8}"
          f"{'1 thr ms':>9}{'torch ms':>9}")
    rows = []
    for dtype in ((np.float32, np.float64) if not args.only_user else ()):
        for case in SMOKE_CASES if args.smoke else CASES:
            for r in run_case(*case, dtype, args.repeats):
                rows.append(r)
                tm = f"{r['torch_ms']:9.2f}" if "torch_ms" in r else " " * 9
                print(f"{r['case']:<40}{r['dtype']:<8}{r['op']:<14}{r['ms']:8.2f}"
                      f"{r['gbs']:7.1f}{r['copy_gbs']:7.1f}{r['of_copy']:8.2f}"
                      f"{r['one_thread_ms']:9.2f}{tm}", flush=True)
    user = user_conditions(args.repeats, (2, 3, 8, 8) if args.smoke else USER_SHAPE)
    print("# as a user runs it: " + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else
                                               f"{k} {v}" for k, v in user.items()))
    if args.json:
        write_json(args.json, dict(machine=info, rows=rows, user_conditions=user))


if __name__ == "__main__":
    main()
