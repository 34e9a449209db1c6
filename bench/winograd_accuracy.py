"""The accuracy policy of the Winograd route, measured: for F(m, 3) with m = 2, 3, 4, the
normwise error of y, dx and dW against an extended-precision reference (numpy's
longdouble), over the im2col route's error, on 1-D, 2-D and 3-D layers of 3 to 512
channels, with normal, rectified (non-negative) and offset (mean 100) inputs, in both
dtypes.

``algorithm='auto'`` may take the route only where the ratios stay within 4: this run is
what ``vecconv._winograd.TILE`` (every pass) was chosen from.

    python bench/winograd_accuracy.py [--json bench/results/winograd_accuracy.json] [--smoke]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

import vecconv  # noqa: E402
from vecconv import _winograd  # noqa: E402

CASES = [((4, 3, 32, 32), (16, 3, 3, 3)), ((4, 64, 28, 28), (64, 64, 3, 3)),
         ((4, 256, 14, 14), (256, 256, 3, 3)), ((2, 512, 7, 7), (256, 512, 3, 3)),
         ((4, 3, 512), (8, 3, 3)), ((4, 64, 512), (64, 64, 3)),
         ((4, 256, 256), (256, 256, 3)),
         ((2, 32, 8, 16, 16), (32, 32, 3, 3, 3)), ((2, 128, 6, 8, 8), (64, 128, 3, 3, 3))]


def exact(x, w):
    """The stride-1 correlation with padding 1, summed in numpy's longdouble."""
    d = x.ndim - 2
    xp = np.pad(x.astype(np.longdouble), ((0, 0), (0, 0)) + ((1, 1),) * d)
    patches = sliding_window_view(xp, w.shape[2:], axis=tuple(range(2, 2 + d)))
    sub, ker = "xyz"[:d], "ijk"[:d]
    return np.einsum(f"nc{sub}{ker},oc{ker}->no{sub}", patches,
                     w.astype(np.longdouble)).astype(np.float64)


def exact_dw(x, dy, k):
    """The kernel gradient (eq. 12) of the same correlation, summed in longdouble."""
    d = x.ndim - 2
    xp = np.pad(x.astype(np.longdouble), ((0, 0), (0, 0)) + ((1, 1),) * d)
    patches = sliding_window_view(xp, k, axis=tuple(range(2, 2 + d)))
    sub, ker = "xyz"[:d], "ijk"[:d]
    return np.einsum(f"nc{sub}{ker},no{sub}->oc{ker}", patches,
                     dy.astype(np.longdouble)).astype(np.float64)


def error(got, ref):
    return float(np.linalg.norm(np.asarray(got, np.float64) - ref) / np.linalg.norm(ref))


def case_rows(xs, ws, dist, rng):
    d = len(xs) - 2
    x64 = rng.standard_normal(xs)
    if dist == "rectified":
        x64 = np.maximum(x64, 0)
    if dist == "offset":                # a large mean (a DC level): more cancellation
        x64 = x64 + 100
    w64 = rng.standard_normal(ws) / np.sqrt(np.prod(ws[1:]))
    y_ref = exact(x64, w64)
    dy64 = rng.standard_normal(y_ref.shape)
    w_adj = np.swapaxes(w64[(slice(None), slice(None)) + (slice(None, None, -1),) * d], 0, 1)
    dx_ref = exact(dy64, w_adj)
    dw_ref = exact_dw(x64, dy64, ws[2:])
    rows = []
    saved = dict(_winograd.TILE)
    try:
        for dt in (np.float32, np.float64):
            x, w, dy = x64.astype(dt), w64.astype(dt), dy64.astype(dt)
            base_y = error(vecconv.conv(x, w, padding=1, algorithm="im2col"), y_ref)
            base_dx = error(vecconv.conv_backward(dy, x, w, padding=1, algorithm="im2col",
                                                  weight_grad=False)[0], dx_ref)
            base_dw = error(vecconv.conv_backward(dy, x, w, padding=1, algorithm="im2col",
                                                  input_grad=False)[1], dw_ref)
            for m in (2, 3, 4):
                _winograd.TILE.update({k: m for k in _winograd.TILE})
                try:
                    e_y = error(vecconv.conv(x, w, padding=1, algorithm="winograd"), y_ref)
                    e_dx = error(vecconv.conv_backward(dy, x, w, padding=1,
                                                       algorithm="winograd",
                                                       weight_grad=False)[0], dx_ref)
                    e_dw = error(vecconv.conv_backward(dy, x, w, padding=1,
                                                       algorithm="winograd",
                                                       input_grad=False)[1], dw_ref)
                except ValueError:          # the transformed kernels past the workspace
                    continue
                rows.append(dict(x=xs, w=ws, inputs=dist, dtype=np.dtype(dt).name, m=m,
                                 axes=d, y_ratio=e_y / base_y, dx_ratio=e_dx / base_dx,
                                 dw_ratio=e_dw / base_dw,
                                 error_y=e_y, error_im2col_y=base_y))
    finally:
        _winograd.TILE.clear()
        _winograd.TILE.update(saved)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", default=None)
    ap.add_argument("--smoke", action="store_true", help="two small cases")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(1)
    cases = CASES[:1] + CASES[5:6] if args.smoke else CASES
    rows = []
    for dist in ("normal", "rectified", "offset"):
        for xs, ws in cases:
            for r in case_rows(xs, ws, dist, rng):
                rows.append(r)
                dw = f"  dw {r['dw_ratio']:5.1f}x"
                print(f"{dist:9s} {str(xs):22s} {r['dtype']} F({r['m']},3): y "
                      f"{r['y_ratio']:5.1f}x  dx {r['dx_ratio']:5.1f}x{dw} im2col's error",
                      flush=True)
    worst = {}
    for r in rows:
        key = (r["dtype"], r["axes"], r["m"])
        worst[key] = max(worst.get(key, 0.0), r["y_ratio"], r["dx_ratio"])
        key = (r["dtype"], r["axes"], r["m"], "dw")
        worst[key] = max(worst.get(key, 0.0), r["dw_ratio"])
    print("worst ratio per (dtype, axes, m):")
    for key, v in sorted(worst.items()):
        print(f"  {key}: {v:.1f} {'ok' if v <= 4 else 'over 4'}")
    if args.json:
        harness.write_json(args.json, dict(machine=harness.machine(), rows=rows,
                                           worst={str(k): v for k, v in worst.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
