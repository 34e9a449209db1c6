"""The README's first-screen figures, measured in one run, each against what a user would
pick instead, with PyTorch imported and run first:

* a bank of 16 filters of 31 x 31 on a 1024^2 float32 image (and one filter): vecconv
  (its planner picks the FFT route) against the faster of ``scipy.signal.fftconvolve`` and
  ``oaconvolve`` looped over the bank;
* a 5 x 5 filter on a 2048^2 float32 image: ``vecconv.signal.correlate2d`` against
  ``scipy.signal.correlate2d`` (a drop-in);
* convolution layers, forward + backward, float32 and float64: vecconv against
  ``torch.nn.functional`` on the CPU (both on 2 threads).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/headline.py \
        [--json bench/results/headline.json] [--smoke]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

torch.nn.functional.conv2d(torch.ones(1, 1, 8, 8), torch.ones(1, 1, 3, 3)).sum()  # torch first

import scipy.signal  # noqa: E402

import vecconv  # noqa: E402
import vecconv.signal as vs  # noqa: E402

#: layers: name -> (x shape, w shape, stride, padding, groups)
LAYERS = {
    "resnet l1 (8,64,56²)→64×3²": ((8, 64, 56, 56), (64, 64, 3, 3), 1, 1, 1),
    "resnet l3 (8,256,14²)→256×3²": ((8, 256, 14, 14), (256, 256, 3, 3), 1, 1, 1),
    "decoder-ish (8,128,28²)→128×5²": ((8, 128, 28, 28), (128, 128, 5, 5), 1, 2, 1),
    "lenet C3 (64,6,14²)→16×5²": ((64, 6, 14, 14), (16, 6, 5, 5), 1, 0, 1),
    "audio 1-D (16,64,4096)→64×9": ((16, 64, 4096), (64, 64, 9), 1, 4, 1),
}


def bank_rows(repeats, size, taps, count):
    rng = np.random.default_rng(0)
    image = rng.random((size, size), dtype=np.float32)
    bank = rng.standard_normal((count, taps, taps)).astype(np.float32)
    x, w = image[None, None], bank[:, None]
    fns = {
        "vecconv": lambda: vecconv.conv2d(x, w),
        "scipy fftconvolve": lambda: [scipy.signal.fftconvolve(image, k[::-1, ::-1], "valid")
                                      for k in bank],
        "scipy oaconvolve": lambda: [scipy.signal.oaconvolve(image, k[::-1, ::-1], "valid")
                                     for k in bank],
    }
    ref = np.stack(fns["scipy fftconvolve"]())
    got = fns["vecconv"]()[0]
    assert np.abs(got - ref).max() <= 1e-3 * np.abs(ref).max()
    t = harness.interleaved(fns, repeats)
    best = min(t["scipy fftconvolve"]["median"], t["scipy oaconvolve"]["median"])
    return dict(case=f"{count} filter(s) {taps}x{taps}, {size}^2 float32",
                route=vecconv.conv_plan(x.shape, w.shape)["forward"],
                vecconv_ms=t["vecconv"]["median"] * 1e3, other_ms=best * 1e3,
                other="faster of scipy.signal.fftconvolve/oaconvolve, looped",
                speedup=best / t["vecconv"]["median"])


def signal_row(repeats, size):
    rng = np.random.default_rng(1)
    image = rng.random((size, size), dtype=np.float32)
    k = rng.standard_normal((5, 5)).astype(np.float32)
    fns = {"vecconv.signal": lambda: vs.correlate2d(image, k, "same"),
           "scipy.signal": lambda: scipy.signal.correlate2d(image, k, "same")}
    np.testing.assert_allclose(fns["vecconv.signal"](), fns["scipy.signal"](), rtol=1e-4,
                               atol=1e-4)
    t = harness.interleaved(fns, repeats)
    return dict(case=f"correlate2d 5x5, {size}^2 float32",
                vecconv_ms=t["vecconv.signal"]["median"] * 1e3,
                other_ms=t["scipy.signal"]["median"] * 1e3, other="scipy.signal.correlate2d",
                speedup=t["scipy.signal"]["median"] / t["vecconv.signal"]["median"])


def layer_rows(repeats, names):
    rows = []
    for name in names:
        xs, ws, s, p, g = LAYERS[name]
        conv_t = F.conv1d if len(xs) == 3 else F.conv2d
        for dt in ("float32", "float64"):
            rng = np.random.default_rng(2)
            x = rng.standard_normal(xs).astype(dt)
            w = rng.standard_normal(ws).astype(dt)
            tx = torch.from_numpy(x).requires_grad_()
            tw = torch.from_numpy(w).requires_grad_()

            def ours():
                y = vecconv.conv(x, w, stride=s, padding=p, groups=g)
                vecconv.conv_backward(y, x, w, stride=s, padding=p, groups=g)

            def theirs():
                y = conv_t(tx, tw, stride=s, padding=p, groups=g)
                torch.autograd.grad(y, (tx, tw), y.detach())

            t = harness.interleaved({"vecconv": ours, "torch": theirs}, repeats, warmup=2)
            rows.append(dict(case=f"{name} {dt}", vecconv_ms=t["vecconv"]["median"] * 1e3,
                             other_ms=t["torch"]["median"] * 1e3,
                             other="torch.nn.functional, forward + backward",
                             speedup=t["torch"]["median"] / t["vecconv"]["median"]))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", default=None)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, one repeat")
    args = ap.parse_args(argv)
    torch.set_num_threads(vecconv.get_num_threads())
    if args.smoke:
        rows = [bank_rows(1, 128, 9, 2), signal_row(1, 128)]
        rows += layer_rows(1, list(LAYERS)[3:4])
    else:
        rows = [bank_rows(5, 1024, 31, 16), bank_rows(5, 1024, 31, 1), signal_row(7, 2048)]
        rows += layer_rows(7, list(LAYERS))
    facts = harness.machine()
    print(harness.describe(facts))
    for r in rows:
        print(f"{r['case']:45s} vecconv {r['vecconv_ms']:8.2f} ms  {r['other']}: "
              f"{r['other_ms']:8.2f} ms  ({r['speedup']:.2f}x)")
    if args.json:
        harness.write_json(args.json, dict(machine=facts, rows=rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
