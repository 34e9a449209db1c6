"""vecconv.signal's method='auto' beside scipy.signal's, and where its cost model comes from.

    python bench/signal_methods.py            # the grid table (and the JSON beside it)
    python bench/signal_methods.py --fit      # also re-measure the cost model's constants
    python bench/signal_methods.py --quick    # fewer repeats

--fit times vecconv's two routes, the direct one (vecconv's engine) and the FFT one, on a
grid of 1-D and 2-D shapes for float32 and float64, and fits ``t = c0 + c1 * work`` per
route, dtype and rank by least squares on relative error (the work measures are those of
``vecconv.signal._predict``). The constants go to ``bench/results/signal_methods.json``;
``_COSTS`` in src/vecconv/signal.py holds them, copied by hand with the date.

The table: ``convolve(x, k, 'same')`` by ``vecconv.signal`` (method='auto') and by
``scipy.signal`` (method='auto'), 1-D signals and 2-D images, kernels 3 to 255, float32 and
float64, each the minimum of interleaved repeats (the two libraries alternate, so a slow
spell of a shared machine falls on both). Outputs are checked against each other first.
It prints the CPU and the BLAS (threadpoolctl) it ran with.
"""

import argparse
import json
import math
import platform
import time
from pathlib import Path

import numpy as np
import scipy
import scipy.signal as ss

import vecconv
import vecconv.signal as vs

HERE = Path(__file__).parent
OUT = HERE / "results" / "signal_methods.json"

GRID_1D = [1_000, 10_000, 100_000, 1_000_000]
GRID_2D = [64, 256, 1024]
KERNELS = [3, 7, 15, 31, 63, 127, 255]
DTYPES = ["float32", "float64"]


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def blas_info():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    return [{k: d.get(k) for k in ("user_api", "internal_api", "version", "num_threads",
                                   "architecture", "filepath")} for d in threadpool_info()]


def interleaved(fns, repeats, budget=2.0):
    """Minimum seconds of each function, the functions alternating on every repeat; fewer
    repeats when one call is slow (at most about ``budget`` seconds per function)."""
    best = [math.inf] * len(fns)
    for f in fns:                      # warm up (imports, plans, FFT caches)
        f()
    for r in range(repeats):
        for i, f in enumerate(fns):
            t0 = time.perf_counter()
            f()
            best[i] = min(best[i], time.perf_counter() - t0)
        if r >= 2 and max(best) * (r + 1) > budget:
            break
    return best


def shape_of(d, n, k):
    return ((n,), (k,)) if d == 1 else ((n, n), (k, k))


def table(repeats):
    rng = np.random.default_rng(0)
    rows = []
    for d, grid in ((1, GRID_1D), (2, GRID_2D)):
        for dt in DTYPES:
            for n in grid:
                for k in KERNELS:
                    if k > n:
                        continue
                    sx, sk = shape_of(d, n, k)
                    x = rng.standard_normal(sx).astype(dt)
                    w = rng.standard_normal(sk).astype(dt)
                    ours = vs.convolve(x, w, "same")
                    ref = ss.convolve(x, w, "same")
                    tol = 2e-3 if dt == "float32" else 1e-8
                    scale = np.abs(ref).max()
                    assert ours.dtype == ref.dtype and ours.shape == ref.shape
                    assert np.abs(ours - ref).max() <= tol * scale, (d, n, k, dt)
                    t_vc, t_sp = interleaved([lambda: vs.convolve(x, w, "same"),
                                              lambda: ss.convolve(x, w, "same")], repeats)
                    rows.append(dict(ndim=d, n=n, k=k, dtype=dt,
                                     vecconv_method=vs.choose_conv_method(x, w, "same"),
                                     scipy_method=ss.choose_conv_method(x, w, "same"),
                                     vecconv_s=t_vc, scipy_s=t_sp, ratio=t_vc / t_sp))
                    r = rows[-1]
                    print(f"{d}-D {dt:8s} n={n:>8} k={k:>4}  vecconv {r['vecconv_method']:6s}"
                          f" {t_vc * 1e3:9.3f} ms   scipy {r['scipy_method']:6s}"
                          f" {t_sp * 1e3:9.3f} ms   ratio {r['ratio']:.2f}", flush=True)
    return rows


def fit_constants(samples):
    """t = c0 + c1 * work per key, robustly: c0 the median time of the smallest quarter of
    the work (the fixed cost of a call), c1 the median of (t - c0) / work over the samples
    that take more than four times c0 (least squares let the many small calls decide the
    slope and missed the large ones by 50x)."""
    constants = {}
    for key, pts in samples.items():
        work = np.array([p[0] for p in pts])
        t = np.array([p[1] for p in pts])
        small = work <= np.quantile(work, 0.25)
        c0 = float(np.median(t[small]))
        big = t > 4 * c0
        c1 = float(np.median((t[big] - c0) / work[big])) if big.any() else float(
            np.median(t / work))
        constants[key] = [c0, c1]
        print(f"{key}: c0 = {c0:.3g} s, c1 = {c1:.3g} s per unit of work")
    return constants


def fit(repeats):
    """Time both routes of vecconv.signal on a grid; fit t = c0 + c1 * work."""
    rng = np.random.default_rng(1)
    samples = {}
    for d in (1, 2):
        sizes = [256, 2048, 16384, 131072, 1 << 20] if d == 1 else [16, 64, 256, 1024]
        kernels = [3, 5, 9, 17, 33, 65, 129, 255]   # k = 1 takes neither route
        for dt in DTYPES:
            work_dt = np.dtype(dt)
            for n in sizes:
                for k in kernels:
                    if k > n:
                        continue
                    sx, sk = shape_of(d, n, k)
                    x = rng.standard_normal(sx).astype(dt)
                    w = rng.standard_normal(sk).astype(dt)
                    wd, wf = vs._predict(sx, sk, "same", work_dt, 1, d)
                    c_d = vs._COSTS[("direct", dt, d)]
                    c_f = vs._COSTS[("fft", dt, d)]
                    work_d = (wd - c_d[0]) / c_d[1]
                    work_f = (wf - c_f[0]) / c_f[1]
                    fns, keys = [], []
                    if work_d < 3e9:        # the direct route where it can matter
                        fns.append(lambda: vs.convolve(x, w, "same", method="direct"))
                        keys.append(("direct", work_d))
                    fns.append(lambda: vs.convolve(x, w, "same", method="fft"))
                    keys.append(("fft", work_f))
                    ts = interleaved(fns, repeats)
                    for (route, work), t in zip(keys, ts):
                        samples.setdefault(f"{route}/{dt}/{d}", []).append((work, t))
                    print(f"fit {d}-D {dt} n={n} k={k}: " + ", ".join(
                        f"{key[0]} {t * 1e3:.3f} ms" for key, t in zip(keys, ts)), flush=True)
    constants = fit_constants(samples)
    return constants, samples


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--fit", action="store_true", help="re-measure the cost model")
    p.add_argument("--quick", action="store_true", help="fewer repeats")
    p.add_argument("--refit", action="store_true",
                   help="fit the constants again from the samples stored in the JSON")
    args = p.parse_args()
    repeats = 3 if args.quick else 7
    info = dict(cpu=cpu_name(), cores=len(__import__("os").sched_getaffinity(0)),
                python=platform.python_version(), numpy=np.__version__,
                scipy=scipy.__version__, vecconv_threads=vecconv.get_num_threads(),
                blas=blas_info())
    print(f"CPU: {info['cpu']} ({info['cores']} cores available); vecconv threads: "
          f"{info['vecconv_threads']}; NumPy {np.__version__}, SciPy {scipy.__version__}")
    for b in info["blas"]:
        print(f"  {b['user_api']}: {b['internal_api']} {b['version']} "
              f"({b['architecture']}, {b['num_threads']} threads) {b['filepath']}")
    result = dict(machine=info)
    if args.refit:
        samples = json.loads(OUT.read_text())["fit_samples"]
        samples = {k: [p for p in v if p[1] >= 3e-5] for k, v in samples.items()}  # no k=1
        result["constants"] = fit_constants(samples)
        result["fit_samples"] = samples
        OUT.write_text(json.dumps(dict(json.loads(OUT.read_text()), **result), indent=1))
        return
    if args.fit:
        result["constants"], samples = fit(repeats)
        result["fit_samples"] = {k: v for k, v in samples.items()}
    rows = table(repeats)
    result["table"] = rows
    ratios = np.array([r["ratio"] for r in rows])
    faster = int(np.sum(ratios < 1.0))
    print(f"\n{len(rows)} shapes: vecconv.signal faster on {faster}, within 10% of scipy's "
          f"choice on {int(np.sum(ratios <= 1.10))}; worst ratio {ratios.max():.2f}, "
          f"geometric mean {math.exp(np.log(ratios).mean()):.2f}")
    OUT.parent.mkdir(exist_ok=True)
    if OUT.exists() and not args.fit:          # keep the last fit's constants
        old = json.loads(OUT.read_text())
        for key in ("constants", "fit_samples"):
            if key in old:
                result.setdefault(key, old[key])
    OUT.write_text(json.dumps(result, indent=1))
    print(f"written to {OUT}")


if __name__ == "__main__":
    main()
