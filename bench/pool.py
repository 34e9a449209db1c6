"""Pooling at memory speed? vecconv's compiled pooling against a plain numpy copy of the
same array, PyTorch's pooling, and itself on one thread, measured side by side.

    python bench/pool.py [--json out.json] [--repeats 15]

GB/s counts the bytes a pass must move at least: the input read and the output (and the
indices) written for the forward pass; dy read and dx written for the backward pass. The
numpy copy moves 2 x the input's bytes (read + write) and is the memory speed a pass over
this array can reach.
"""

import argparse
import json
import platform
import time

import numpy as np

import vecconv

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


def best(f, repeats):
    f()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times)


def cpu():
    name, flags = platform.processor(), set()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name") and not name:
                    name = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    ext = [f for f in ("avx2", "fma", "avx512f", "amx_tile") if f in flags]
    return name, ext


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
    args = ap.parse_args()
    name, ext = cpu()
    info = dict(cpu=name, extensions=ext, threads=vecconv.get_num_threads(),
                numpy=np.__version__, torch=None if torch is None else torch.__version__,
                torch_threads=None if torch is None else torch.get_num_threads())
    print(f"# {name} [{' '.join(ext)}], vecconv threads {info['threads']}, torch "
          f"{info['torch']} on {info['torch_threads']} threads")
    print(f"{'case':<40}{'dtype':<8}{'op':<14}{'ms':>8}{'GB/s':>7}{'copy':>7}{'of copy':>8}"
          f"{'1 thr ms':>9}{'torch ms':>9}")
    rows = []
    for dtype in (np.float32, np.float64):
        for case in CASES:
            for r in run_case(*case, dtype, args.repeats):
                rows.append(r)
                tm = f"{r['torch_ms']:9.2f}" if "torch_ms" in r else " " * 9
                print(f"{r['case']:<40}{r['dtype']:<8}{r['op']:<14}{r['ms']:8.2f}"
                      f"{r['gbs']:7.1f}{r['copy_gbs']:7.1f}{r['of_copy']:8.2f}"
                      f"{r['one_thread_ms']:9.2f}{tm}", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(dict(machine=info, rows=rows), fh, indent=1)


if __name__ == "__main__":
    main()
