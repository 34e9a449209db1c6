"""vecconv.signal's method='auto' beside scipy.signal's, and where its cost model comes from.

    python bench/signal_methods.py              # the grid table (and the JSON beside it)
    python bench/signal_methods.py --fit        # also re-measure the cost model's constants
    python bench/signal_methods.py --fit --fit-only
    python bench/signal_methods.py --refit      # fit again from the stored samples
    python bench/signal_methods.py --quick --rounds 1 --ndim 1   # a short look

--fit times the routes ``method='auto'`` chooses among: NumPy's direct product
(``numpy.convolve``; 1-D float32, float64, complex64, complex128 and int64, kernels on both
sides of NumPy's small-kernel cut), vecconv's direct route (the engine) and the FFT route,
on 1-D signals of 2**8..2**20 samples and 2-D images of 16**2..1024**2 with kernels 3..255,
float32 and float64. It fits the constants by non-negative least squares on relative error
(``fit_constants``; the work measures are ``vecconv.signal._engine_work``, ``_fft_work``,
``_oa_work`` with the share past ``_BIG_BYTES``, and NumPy's output entries x taps) and prints them as the ``_COSTS`` and ``_NUMPY_COSTS``
of src/vecconv/signal.py, where they are copied by hand; the samples and constants go to
``bench/results/signal_methods.json``. ``--routes`` times only some routes (after a change
to one of them), keeping the stored samples of the others.

The table: ``convolve(x, k, 'same')`` by ``vecconv.signal`` (method='auto') and by
``scipy.signal`` (method='auto'), 1-D signals and 2-D images, kernels 3 to 255, float32 and
float64. Each pass over the grid takes, per cell, the minimum of interleaved repeats (the
two libraries alternate, so a slow spell of a shared machine falls on both); the table
gives per cell the median ratio over ``--rounds`` passes. Outputs are checked against each
other first. It prints the CPU and the BLAS (threadpoolctl) it ran with.
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


def _cells(ndims=(1, 2)):
    rng = np.random.default_rng(0)
    for d, grid in ((1, GRID_1D), (2, GRID_2D)):
        if d not in ndims:
            continue
        for dt in DTYPES:
            for n in grid:
                for k in KERNELS:
                    if k > n:
                        continue
                    sx, sk = shape_of(d, n, k)
                    yield d, n, k, dt, rng.standard_normal(sx).astype(dt), \
                        rng.standard_normal(sk).astype(dt)


def table(repeats, rounds, ndims=(1, 2)):
    """Every cell timed in each of ``rounds`` passes over the grid (a slow spell of the
    machine falls on one pass, not on every sample of a cell); per pass the minimum of
    ``repeats`` interleaved calls, per cell the median over the passes."""
    cells = list(_cells(ndims))
    for d, n, k, dt, x, w in cells:
        ours = vs.convolve(x, w, "same")
        ref = ss.convolve(x, w, "same")
        tol = 2e-3 if dt == "float32" else 1e-8
        scale = np.abs(ref).max()
        assert ours.dtype == ref.dtype and ours.shape == ref.shape
        assert np.abs(ours - ref).max() <= tol * scale, (d, n, k, dt)
    times = [[] for _ in cells]
    for r in range(rounds):
        for i, (d, n, k, dt, x, w) in enumerate(cells):
            times[i].append(interleaved([lambda: vs.convolve(x, w, "same"),
                                         lambda: ss.convolve(x, w, "same")], repeats,
                                        budget=0.5))
        print(f"pass {r + 1} of {rounds} done", flush=True)
    rows = []
    for (d, n, k, dt, x, w), ts in zip(cells, times):
        t_vc = float(np.median([t[0] for t in ts]))
        t_sp = float(np.median([t[1] for t in ts]))
        ratio = float(np.median([t[0] / t[1] for t in ts]))
        rows.append(dict(ndim=d, n=n, k=k, dtype=dt,
                         vecconv_route=vs._choose_route(
                             x, w, "same", d == 1 and vs._numpy_ok(x, w, "same")),
                         scipy_method=ss.choose_conv_method(x, w, "same"),
                         vecconv_s=t_vc, scipy_s=t_sp, ratio=ratio,
                         ratios=[t[0] / t[1] for t in ts]))
        r = rows[-1]
        print(f"{d}-D {dt:8s} n={n:>8} k={k:>4}  vecconv {r['vecconv_route']:6s}"
              f" {t_vc * 1e3:9.3f} ms   scipy {r['scipy_method']:6s}"
              f" {t_sp * 1e3:9.3f} ms   ratio {ratio:.2f}"
              f"  ({' '.join(f'{q:.2f}' for q in r['ratios'])})", flush=True)
    return rows


def _nnls_relative(rows, t):
    """Non-negative coefficients c of t ~ rows @ c, least squares on relative error (a
    50 us call and a 50 ms call weigh the same)."""
    from scipy.optimize import nnls
    rows, t = np.asarray(rows, float), np.asarray(t, float)
    scale = rows.max(axis=0)
    scale[scale == 0] = 1.0
    c, _ = nnls(rows / scale / t[:, None], np.ones_like(t))
    return c / scale


def fit_constants(samples):
    """The constants of vecconv.signal's cost model, by least squares on relative error
    with non-negative coefficients: ``[c0, c1]`` of ``t = c0 + c1 * work`` for the engine's
    direct route and the FFTs, ``[c0, c_out, c_tap]`` of ``t = c0 + out * (c_out + c_tap *
    k)`` for NumPy's direct product. Samples are ``[work..., t]`` lists per key."""
    constants = {}
    for key, pts in sorted(samples.items()):
        pts = np.asarray(pts, float)
        work, t = pts[:, :-1], pts[:, -1]
        if key.startswith("numpy/"):
            out, k = work[:, 0], work[:, 1]
            rows = np.column_stack([np.ones_like(t), out, out * k])
        else:       # [work, the share of it past vs._BIG_BYTES(, output entries)]
            rows = np.column_stack([np.ones_like(t)] + [work[:, i]
                                                        for i in range(work.shape[1])])
        c = [float(v) for v in _nnls_relative(rows, t)]
        err = np.abs(rows @ np.array(c) / t - 1)
        constants[key] = c
        print(f"{key}: " + ", ".join(f"{v:.3g}" for v in c)
              + f"  (median error {np.median(err):.0%}, worst {err.max():.0%},"
              f" {len(t)} samples)")
    return constants


def _numpy_samples(rng, repeats, samples):
    """NumPy's direct product, on both sides of its small-kernel cut (vs._NP_SMALL_KERNEL)."""
    groups = {"f4": np.float32, "f8": np.float64, "c8": np.complex64, "c16": np.complex128,
              "int": np.int64}
    for key, dt in groups.items():
        for n in [256, 2048, 16384, 131072]:
            for k in [2, 3, 5, 7, 9, 11, 12, 17, 33, 65, 129, 255]:
                if k > n:
                    continue
                x = rng.standard_normal(n).astype(dt)
                w = rng.standard_normal(k).astype(dt)
                t, = interleaved([lambda: np.convolve(x, w, "same")], repeats, budget=0.3)
                small = k <= vs._NP_SMALL_KERNEL
                samples.setdefault(f"numpy/{key}/{small}", []).append([n, k, t])
        print(f"fit numpy {key}: done", flush=True)


def fit(repeats, routes=("numpy", "direct", "fft", "oa")):
    """Time vecconv.signal's routes on a grid; fit the cost model's constants. With only
    some ``routes``, the others' samples are those stored in the JSON."""
    rng = np.random.default_rng(1)
    samples = {}
    if OUT.exists():
        stored = json.loads(OUT.read_text()).get("fit_samples", {})
        samples = {k: v for k, v in stored.items() if k.split("/")[0] not in routes}
    if "numpy" in routes:
        _numpy_samples(rng, repeats, samples)
    for d in (1, 2):
        sizes = [256, 2048, 16384, 131072, 1 << 20] if d == 1 else [16, 32, 64, 128, 256,
                                                                    1024]
        kernels = [3, 5, 9, 17, 33, 65, 129, 255]   # k = 1 takes neither route
        for dt in DTYPES:
            for n in sizes:
                for k in kernels:
                    if k > n:
                        continue
                    sx, sk = shape_of(d, n, k)
                    x = rng.standard_normal(sx).astype(dt)
                    w = rng.standard_normal(sk).astype(dt)
                    size = np.dtype(dt).itemsize

                    def measure(work_entries):
                        work, entries = work_entries
                        return [work, vs._excess(work, entries * size)]

                    work_d = measure(vs._engine_work(sx, sk, "same")) + [
                        vs._out_size(sx, sk, "same")]
                    work_f = measure(vs._fft_work(sx, sk))
                    work_o = measure(vs._oa_work(n, k)) if d == 1 and vs._oa_work(n, k) \
                        else None
                    fns, keys = [], []
                    if work_d[0] < 3e9 and "direct" in routes:   # where it can matter
                        fns.append(lambda: vs.convolve(x, w, "same", method="direct"))
                        keys.append(("direct", work_d))
                    if "fft" in routes:
                        fns.append(lambda: vs.convolve(x, w, "same", method="fft"))
                        keys.append(("fft", work_f))
                    if work_o is not None and "oa" in routes:
                        fns.append(lambda: vs.convolve(x, w, "same", method="oa"))
                        keys.append(("oa", work_o))
                    if not fns:
                        continue
                    ts = interleaved(fns, repeats, budget=0.5)
                    for (route, work), t in zip(keys, ts):
                        samples.setdefault(f"{route}/{size}/{d}", []).append(work + [t])
                    print(f"fit {d}-D {dt} n={n} k={k}: " + ", ".join(
                        f"{key[0]} {t * 1e3:.3f} ms" for key, t in zip(keys, ts)), flush=True)
    constants = fit_constants(samples)
    return constants, samples


def print_constants(constants):
    """The constants as the two dicts of src/vecconv/signal.py, to paste there."""
    print("_COSTS = {")
    for key, c in constants.items():
        route, size, d = key.split("/")
        if route != "numpy":
            print(f'    ("{route}", {size}, {d}): ({", ".join(f"{v:.3g}" for v in c)}),')
    print("}\n_NUMPY_COSTS = {")
    for key, c in constants.items():
        route, group, small = key.split("/")
        if route == "numpy":
            print(f'    ("{group}", {small}): ({c[0]:.3g}, {c[1]:.3g}, {c[2]:.3g}),')
    print("}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--fit", action="store_true", help="re-measure the cost model")
    p.add_argument("--quick", action="store_true", help="fewer repeats")
    p.add_argument("--rounds", type=int, default=3,
                   help="passes over the grid (each cell: the median of the passes)")
    p.add_argument("--refit", action="store_true",
                   help="fit the constants again from the samples stored in the JSON")
    p.add_argument("--fit-only", action="store_true", help="with --fit: no table")
    p.add_argument("--routes", default="numpy,direct,fft,oa",
                   help="with --fit: the routes to time (the others' samples are kept)")
    p.add_argument("--ndim", type=int, choices=(1, 2), help="only the 1-D or the 2-D grid")
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
        result["constants"] = fit_constants(samples)
        print_constants(result["constants"])
        result["fit_samples"] = samples
        OUT.write_text(json.dumps(dict(json.loads(OUT.read_text()), **result), indent=1))
        return
    if args.fit:
        result["constants"], samples = fit(repeats, tuple(args.routes.split(",")))
        print_constants(result["constants"])
        result["fit_samples"] = samples
        if args.fit_only:
            old = json.loads(OUT.read_text()) if OUT.exists() else {}
            OUT.parent.mkdir(exist_ok=True)
            OUT.write_text(json.dumps(dict(old, **result), indent=1))
            return
    rows = table(repeats, args.rounds, (args.ndim,) if args.ndim else (1, 2))
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
