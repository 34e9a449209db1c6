"""The layers people run on CPUs, forward + backward (dx, dw, db), against PyTorch: the
14 layers of issue 20 (ResNet-18's stages, MobileNet's depthwise and pointwise layers, a
grouped layer, a transposed-convolution decoder, a dilated 1-D audio layer, a 3-D volume
layer, LeNet-5's C3), both dtypes, in one process where PyTorch was imported and run
first, the two libraries interleaved, each on the same thread count.

For each case the error of y, dx and dw is measured normwise against a float64
reference (PyTorch in float64), for vecconv's route and for its im2col route, so that the
accuracy policy (a faster route only within 4x the im2col route's error) is visible.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/layers.py \
        [--batch 8] [--only NAME ...] [--json bench/results/layers.json] [--smoke]
"""

from __future__ import annotations

import argparse
import inspect
import math
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

torch.nn.functional.conv2d(torch.ones(1, 1, 8, 8), torch.ones(1, 1, 3, 3)).sum()  # torch first

import vecconv  # noqa: E402

#: name -> (x shape without the batch, w shape, options); the batch is --batch, or the
#: layer's own batch (audio 16, volume 4, LeNet's C3 64) scaled by --batch / 8
LAYERS = {
    "resnet conv1": ((3, 224, 224), (64, 3, 7, 7), dict(stride=2, padding=3)),
    "resnet l1": ((64, 56, 56), (64, 64, 3, 3), dict(padding=1)),
    "resnet l2 s2": ((64, 56, 56), (128, 64, 3, 3), dict(stride=2, padding=1)),
    "resnet l2 down": ((64, 56, 56), (128, 64, 1, 1), dict(stride=2)),
    "resnet l2": ((128, 28, 28), (128, 128, 3, 3), dict(padding=1)),
    "resnet l3": ((256, 14, 14), (256, 256, 3, 3), dict(padding=1)),
    "resnet l4": ((512, 7, 7), (512, 512, 3, 3), dict(padding=1)),
    "mobilenet depthwise": ((128, 56, 56), (128, 1, 3, 3), dict(padding=1, groups=128)),
    "mobilenet pointwise": ((128, 56, 56), (128, 128, 1, 1), dict()),
    "grouped": ((128, 28, 28), (128, 4, 3, 3), dict(padding=1, groups=32)),
    "decoder transpose": ((128, 28, 28), (128, 64, 4, 4), dict(stride=2, padding=1,
                                                               transposed=True)),
    "audio 1-D": ((64, 4096), (64, 64, 3), dict(padding=4, dilation=4, batch=16)),
    "volume 3-D": ((32, 16, 32, 32), (32, 32, 3, 3, 3), dict(padding=1, batch=4)),
    "lenet C3": ((6, 14, 14), (16, 6, 5, 5), dict(batch=64)),
}

#: seconds each timing sleeps first: the previous case's error norms (NumPy's threaded
#: OpenBLAS) and the 2048^3 GEMMs leave threads spinning for about 0.1 s
SETTLE = 0.3

TORCH_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
TORCH_TRANSPOSE = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def _ours(x, w, opts, algorithm="auto"):
    """vecconv forward + backward: (y, dx, dw, db)."""
    opts = dict(opts, algorithm=algorithm)
    if opts.pop("transposed", False):
        if "algorithm" not in inspect.signature(vecconv.conv_transpose).parameters:
            del opts["algorithm"]           # (vecconv before its routes)
        y = vecconv.conv_transpose(x, w, **opts)
        dx, dw, db = vecconv.conv_transpose_backward(y, x, w, **opts)
    else:
        y = vecconv.conv(x, w, **opts)
        dx, dw, db = vecconv.conv_backward(y, x, w, **opts)
    return y, dx, dw, db


def _theirs(tx, tw, tb, opts):
    opts = dict(opts)
    d = tx.dim() - 2
    fn = TORCH_TRANSPOSE[d] if opts.pop("transposed", False) else TORCH_CONV[d]
    y = fn(tx, tw, tb, **opts)
    return (y,) + torch.autograd.grad(y, (tx, tw, tb), y.detach())


def _error(got, ref):
    got = np.asarray(got, dtype=np.float64)
    return float(np.linalg.norm(got - ref) / max(np.linalg.norm(ref), 1e-300))


def _reference(x, w, opts):
    """float64 results of the same data through PyTorch (y, dx with dy = y, dw, db)."""
    tx = torch.from_numpy(x.astype(np.float64)).requires_grad_()
    tw = torch.from_numpy(w.astype(np.float64)).requires_grad_()
    tb = torch.zeros(w.shape[1] if opts.get("transposed") else w.shape[0],
                     dtype=torch.float64, requires_grad=True)
    return [t.detach().numpy() for t in _theirs(tx, tw, tb, opts)]


def _errors(results, ref):
    # dy is the run's own y: the backward errors carry the forward's, as in training
    return {k: _error(a, r) for k, a, r in zip(("y", "dx", "dw"), results, ref)}


def case_row(name, batch, dt, repeats):
    xs, ws, opts = LAYERS[name]
    opts = dict(opts)
    n = max(1, opts.pop("batch", 8) * batch // 8)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((n,) + xs).astype(dt)
    w = (rng.standard_normal(ws) / math.sqrt(math.prod(ws[1:]))).astype(dt)
    tx = torch.from_numpy(x.copy()).requires_grad_()
    tw = torch.from_numpy(w.copy()).requires_grad_()
    tb = torch.zeros(w.shape[1] if opts.get("transposed") else w.shape[0],
                     dtype=tx.dtype, requires_grad=True)
    t = harness.interleaved({"vecconv": lambda: _ours(x, w, opts),
                             "torch": lambda: _theirs(tx, tw, tb, opts)},
                            repeats, warmup=2, settle=SETTLE)
    ref = _reference(x, w, opts)
    err = _errors(_ours(x, w, opts), ref)
    err_im2col = _errors(_ours(x, w, opts, "im2col"), ref)
    err_torch = _errors([a.detach().numpy() for a in _theirs(tx, tw, tb, opts)], ref)
    plan = None if opts.get("transposed") else vecconv.conv_plan((n,) + xs, ws, dtype=dt,
                                                                 **opts)
    # the direct convolution's products, forward + dx + dW: every kernel entry meets every
    # position of the convolution's output (the transposed one's input) once per pass
    y = _ours(x, w, opts)[0]
    positions = math.prod((x if opts.get("transposed") else y).shape[2:])
    flops = 3 * 2.0 * n * math.prod(ws) * positions
    return dict(case=name, dtype=dt, batch=n, x=(n,) + xs, w=ws, options=opts, flops=flops,
                routes=None if plan is None else {k: str(v) for k, v in plan.items()},
                vecconv_ms=t["vecconv"]["median"] * 1e3, torch_ms=t["torch"]["median"] * 1e3,
                vecconv_range_ms=(t["vecconv"]["min"] * 1e3, t["vecconv"]["max"] * 1e3),
                torch_range_ms=(t["torch"]["min"] * 1e3, t["torch"]["max"] * 1e3),
                speedup=t["torch"]["median"] / t["vecconv"]["median"],
                error=err, error_im2col=err_im2col, error_torch=err_torch)


#: the 3x3 stride-1 layers whose forward throughput the issue compares with a GEMM
THREE_BY_THREE = ["resnet l1", "resnet l2", "resnet l3", "resnet l4", "volume 3-D"]


def roofline(batch, repeats):
    """The machine's best 2048^3 float32 GEMM in this process (NumPy's OpenBLAS and
    PyTorch's MKL, all threads) and the forward pass of the 3 x 3 stride-1 layers in
    float32 as effective throughput: the direct convolution's 2 N Cout C taps positions
    flops over the time, for vecconv (its route) and PyTorch, interleaved."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((2048, 2048)).astype(np.float32)
    b = rng.standard_normal((2048, 2048)).astype(np.float32)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    t = harness.interleaved({"numpy": lambda: a @ b, "torch": lambda: ta @ tb}, repeats,
                            warmup=2, settle=SETTLE)
    gemm = {k: 2 * 2048**3 / v["median"] / 1e9 for k, v in t.items()}
    rows = []
    for name in THREE_BY_THREE:
        xs, ws, opts = LAYERS[name]
        opts = dict(opts)
        n = max(1, opts.pop("batch", 8) * batch // 8)
        x = rng.standard_normal((n,) + xs).astype(np.float32)
        w = (rng.standard_normal(ws) / math.sqrt(math.prod(ws[1:]))).astype(np.float32)
        tx, tw = torch.from_numpy(x), torch.from_numpy(w)
        fn = TORCH_CONV[len(ws) - 2]
        t = harness.interleaved({"vecconv": lambda: vecconv.conv(x, w, **opts),
                                 "torch": lambda: fn(tx, tw, **opts)}, repeats, warmup=2,
                                settle=SETTLE)
        flops = 2.0 * n * ws[0] * math.prod(ws[1:]) * math.prod(xs[1:])   # 'same' padding
        route = vecconv.conv_plan(x.shape, w.shape, **opts)["forward"]
        rows.append(dict(case=name, route=str(route), **{
            f"{k}_gflops": flops / v["median"] / 1e9 for k, v in t.items()}))
    return dict(gemm_gflops=gemm, best_gemm_gflops=max(gemm.values()), layers=rows)


def summarise(rows):
    out = {}
    for dt in ("float32", "float64"):
        s = [r["speedup"] for r in rows if r["dtype"] == dt]
        if s:
            out[dt] = dict(faster=sum(v > 1 for v in s), of=len(s),
                           geomean=math.exp(sum(math.log(v) for v in s) / len(s)))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--dtypes", nargs="*", default=["float32", "float64"])
    ap.add_argument("--json", default=None)
    ap.add_argument("--smoke", action="store_true", help="batch 1, LeNet's C3 alone, once")
    args = ap.parse_args(argv)
    torch.set_num_threads(vecconv.get_num_threads())
    names = args.only or list(LAYERS)
    batch, repeats = args.batch, args.repeats
    if args.smoke:
        names, batch, repeats = ["lenet C3"], 1, 1
    facts = harness.machine()
    print(harness.describe(facts))
    rows = []
    for name in names:
        for dt in args.dtypes:
            r = case_row(name, batch, dt, repeats)
            rows.append(r)
            e = r["error"]
            print(f"{name:20s} {dt}  vecconv {r['vecconv_ms']:8.2f} ms  torch "
                  f"{r['torch_ms']:8.2f} ms  {r['speedup']:5.2f}x   err y {e['y']:.1e} "
                  f"dx {e['dx']:.1e} dw {e['dw']:.1e} (im2col y "
                  f"{r['error_im2col']['y']:.1e})  {r['routes']}", flush=True)
    summary = summarise(rows)
    for dt, s in summary.items():
        print(f"{dt}: faster on {s['faster']} of {s['of']}, geometric mean "
              f"{s['geomean']:.2f}x")
    roof = None
    if "float32" in args.dtypes and not args.only and not args.smoke:
        roof = roofline(batch, repeats)
        print(f"best 2048^3 float32 GEMM here: {roof['best_gemm_gflops']:.0f} GFLOP/s "
              + ", ".join(f"{k} {v:.0f}" for k, v in roof["gemm_gflops"].items()))
        for r in roof["layers"]:
            print(f"  {r['case']:12s} forward float32, direct-convolution flops / time: "
                  f"vecconv {r['vecconv_gflops']:.0f} GFLOP/s ({r['route']}), PyTorch "
                  f"{r['torch_gflops']:.0f}")
        # the ceiling of any method that does the direct convolution's products (im2col,
        # direct kernels): those flops at the best GEMM's rate, against PyTorch's time
        print("float32 speed-up over PyTorch that the direct convolution's products at the "
              "best GEMM's rate would give:")
        for r in rows:
            if r["dtype"] == "float32":
                r["gemm_bound_ms"] = r["flops"] / roof["best_gemm_gflops"] / 1e6
                print(f"  {r['case']:20s} {r['torch_ms'] / r['gemm_bound_ms']:5.2f}x "
                      f"(vecconv {r['speedup']:.2f}x)")
    if args.json:
        harness.write_json(args.json, dict(machine=facts, batch=batch, rows=rows,
                                           summary=summary, roofline=roof))
    return 0


if __name__ == "__main__":
    sys.exit(main())
