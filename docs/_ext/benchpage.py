"""The benchmark page's table, machine facts and charts, made from ``bench/results/*.json``.

At ``builder-inited`` every JSON file in ``bench/results/`` is read and recognised by its
structure: ``bench/bench.py`` writes ``machine`` + ``cases`` (convolutions, one entry per
case, dtype and pass, with every method's timings), ``bench/pool.py`` writes ``machine`` +
``rows`` (pooling, one entry per case and operation). For each file the extension writes
an reST fragment and a chart (PNG) into ``docs/_generated/``, and ``benchmarks.rst``
includes ``_generated/bench.rst``. A file of another structure is named on the page and
left out; it never fails the build. Nothing is measured here: the page shows the numbers
of the runs that wrote the files, on the machine those files describe.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

METHODS = ["vecconv", "torch", "numpy-im2col", "direct-scipy"]   # the chart's bars
COMPARED = [("torch", "torch ×"), ("numpy-im2col", "numpy-im2col ×"),
            ("direct-scipy", "direct ×")]


# ----------------------------------------------------------------------------- reST helpers
def _table(header, rows, title=None):
    """A list-table directive; numbers are right-aligned by docs/_static/vecconv.css."""
    out = [f".. list-table:: {title or ''}".rstrip(), "   :header-rows: 1",
           "   :class: bench-table", ""]
    for row in [header] + rows:
        out.append("   * - " + str(row[0]))
        out.extend("     - " + (str(cell) if str(cell) else "..") for cell in row[1:])
    return out + [""]


def _fmt(value, digits=2):
    if value is None:
        return "—"
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.{digits}f}"


def _machine(m):
    """The machine a result file was measured on, as the file records it."""
    lines = [f"- **CPU:** {m.get('cpu', 'not recorded')}, {m.get('cores', '?')} cores "
             "as the process saw them."]
    vec = m.get("vector_extensions")
    if vec:
        lines.append("- **Vector extensions:** " + ", ".join(f"``{v}``" for v in vec) + ".")
    soft = [f"{name} {m[key]}" for name, key in (("Python", "python"), ("NumPy", "numpy"),
            ("SciPy", "scipy"), ("vecconv", "vecconv"), ("PyTorch", "torch")) if m.get(key)]
    lines.append("- **Software:** " + ", ".join(soft) + ".")
    rt = m.get("vecconv_runtime") or {}
    if rt:
        lines.append(f"- **vecconv's runtime:** {rt.get('num_threads')} threads, worker pool "
                     f"{'on' if rt.get('pool') else 'off'}, private BLAS "
                     f"{'loaded' if rt.get('private_blas') else 'not loaded'}.")
    blas = m.get("blas")
    if isinstance(blas, list):
        for lib in blas:
            if lib.get("internal_api") != "openblas":
                continue
            role = lib.get("role") or "loaded in the process"
            lines.append(f"- **BLAS ({role}):** OpenBLAS {lib.get('version')}, "
                         f"**{lib.get('architecture')} kernel**, {lib.get('threads')} "
                         f"thread{'s' if lib.get('threads') != 1 else ''}.")
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if m.get(var):
            lines.append(f"- ``{var}={m[var]}`` was set (it forces an older BLAS kernel).")
    if m.get("torch_backends"):
        lines.append("- **PyTorch's convolution:** " + ", ".join(
            f"{k} {v}" for k, v in m["torch_backends"].items())
            + f" on {m.get('torch_threads', '?')} threads.")
    return lines + [""]


# ----------------------------------------------------------------------------- bench.py
def _shape(shape):
    n, c, h, w, cout, k, stride, pad, table = shape
    s = f"{n}×{c}×{h}×{w} → {cout}, {k}×{k}"
    if stride != 1:
        s += f" /{stride}"
    if pad:
        s += f" pad {pad}"
    if table:
        s += ", Table I"
    return s


def _conv_rows(data, pass_):
    rows = []
    imports = data.get("import_order", {})
    for case in data["cases"]:
        if case["pass_"] != pass_:
            continue
        m = case["methods"]
        v = m["vecconv"]
        row = [case["case"], _shape(case["shape"]), case["dtype"], f"{v['median'] * 1e3:.2f}",
               _fmt(v.get("gflops"), 0), _fmt(case.get("roofline_fraction"))]
        for key, _ in COMPARED:
            other = m.get(key)
            if other is None:
                row.append("—")
                continue
            mark = "~" if other.get("extrapolated") else ""
            row.append(mark + _fmt(other.get("ratio_to_vecconv")))
        if pass_ == "forward+backward":
            ratio = imports.get(f"{case['case']}/{case['dtype']}", {}).get("ratio")
            row.append(_fmt(ratio))
        rows.append(row)
    return rows


def _conv_chart(data, path):
    cases = [c for c in data["cases"] if c["pass_"] == "forward+backward"]
    dtypes = sorted({c["dtype"] for c in cases})
    fig, axes = plt.subplots(1, len(dtypes), figsize=(5.2 * len(dtypes), 4.6), sharey=True,
                             squeeze=False)
    for ax, dt in zip(axes[0], dtypes):
        sub = [c for c in cases if c["dtype"] == dt]
        names = [c["case"] for c in sub]
        height = 0.8 / len(METHODS)
        for i, meth in enumerate(METHODS):
            ms = [c["methods"].get(meth, {}).get("median", float("nan")) * 1e3 for c in sub]
            ax.barh([j + i * height for j in range(len(sub))], ms, height=height, label=meth)
        ax.set_yticks([j + 0.4 - height / 2 for j in range(len(sub))], names)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlabel("forward + backward, ms (log scale; shorter is faster)")
        ax.set_title(dt)
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _conv_page(name, data, chart):
    out = [f"Convolutions (``bench/results/{name}``)", "-" * 80, ""]
    out += ["Measured by ``bench/bench.py`` on this machine:", ""] + _machine(data["machine"])
    peak = data.get("peak_gemm_gflops")
    if peak:
        out += ["Peak GEMM (2048³), GFLOP/s: " + "; ".join(
            f"{dt} {v['numpy']:.0f} through NumPy's BLAS, {v['engine']:.0f} through "
            f"vecconv's" for dt, v in peak.items()) + ".", ""]
    out += [f".. image:: /_generated/{chart}",
            "   :alt: forward + backward time of each method, per "
            "case, log scale", "   :class: bench-chart", ""]
    out += ["*of roofline*: the GEMMs alone divided by vecconv's time. *×*: the other "
            "method's time divided by vecconv's (above 1: vecconv is faster); ``~`` marks a "
            "direct-convolution time extrapolated from part of the (image, map) pairs. "
            "*torch first*: vecconv's time in a fresh process that imported and ran PyTorch "
            "first, over its time in one that did not. Times are medians.", ""]
    header = ["case", "shape (N×C×H×W → Cout, k)", "dtype", "vecconv ms", "GFLOP/s",
              "of roofline"] + [label for _, label in COMPARED]
    out += _table(header + ["torch first"], _conv_rows(data, "forward+backward"),
                  "Forward + backward (dx, dw, db)")
    out += _table(header, _conv_rows(data, "forward"), "Forward alone")
    extra = []
    for step in data.get("lenet5_step", []):
        extra.append(f"- LeNet-5 training step ({step['dtype']}): vecconv "
                     f"{step['vecconv']['median'] * 1e3:.2f} ms, PyTorch "
                     f"{step['torch']['median'] * 1e3:.2f} ms (PyTorch's time over "
                     f"vecconv's: {step['torch_over_vecconv']:.2f}).")
    for dt, t in data.get("threads", {}).items():
        extra.append(f"- Two Python threads calling at once ({dt}): {t['speedup']:.2f}× the "
                     "throughput of one.")
    load = data.get("under_load")
    if load:
        extra.append(f"- Beside two busy processes: {load['loaded_over_idle']:.2f}× the idle "
                     f"time, {load['loaded_over_one_thread']:.2f}× the time of one thread "
                     "under the same load.")
    return out + extra + [""]


# ----------------------------------------------------------------------------- pool.py
def _pool_chart(data, path):
    rows = data["rows"]
    labels = [f"{r['case'].split(' (')[0]} {r['op']} ({r.get('dtype', 'float32')})"
              for r in rows]
    fig, ax = plt.subplots(figsize=(8, 0.28 * len(rows) + 1.2))
    ys = range(len(rows))
    ax.barh([y - 0.2 for y in ys], [r["gbs"] for r in rows], height=0.4, label="vecconv")
    ax.barh([y + 0.2 for y in ys], [r["copy_gbs"] for r in rows], height=0.4,
            label="numpy copy of the input", alpha=0.6)
    ax.set_yticks(list(ys), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("GB/s (bytes a pass must move at least; longer is faster)")
    ax.set_title("Pooling throughput: vecconv against a NumPy copy of the same bytes")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _pool_page(name, data, chart):
    out = [f"Pooling (``bench/results/{name}``)", "-" * 80, ""]
    dtypes = sorted({r.get("dtype", "float32") for r in data["rows"]})
    out += [f"Measured by ``bench/pool.py`` ({', '.join(dtypes)}) on this machine:", ""]
    out += _machine(data["machine"])
    out += [f".. image:: /_generated/{chart}", "   :alt: pooling throughput against a numpy copy",
            "   :class: bench-chart", ""]
    rows = [[r["case"], r["op"], r.get("dtype", "float32"), f"{r['ms']:.2f}",
             f"{r['gbs']:.1f}", _fmt(r["of_copy"]),
             f"{r['one_thread_ms']:.2f}",
             f"{r['torch_ms']:.2f}" if r.get("torch_ms") is not None else "—"]
            for r in data["rows"]]
    out += _table(["case", "operation", "dtype", "vecconv ms", "GB/s", "of the copy's speed",
                   "one thread ms", "PyTorch ms"], rows, "Pooling")
    u = data.get("user_conditions")
    if u:
        out += [f"As a user runs it ({u['case']}): {u['clean_ms']:.1f} ms alone, "
                f"{u['busy_ms']:.1f} ms beside two busy processes "
                f"({u['busy_one_thread_ms']:.1f} ms on one thread there), "
                f"{u['two_threads_both_ms']:.1f} ms for two calls from two Python threads"
                + (f", {u['torch_first_ms']:.1f} ms with PyTorch imported and run first"
                   if u.get("torch_first_ms") is not None else "") + ".", ""]
    return out


def _dask_page(name, data):
    """bench/dask_filters.py: a filter bank over a zarr image past the workers' memory."""
    size, gib = data["size"], 2**30
    out = [f"A filter bank on Dask (``bench/results/{name}``)", "-" * 80, ""]
    out += [f"Measured by ``bench/dask_filters.py``: 16 learned 7×7 filters over a "
            f"{size}×{size} float32 image ({data['input_bytes'] / gib:.2f} GiB) read from "
            f"zarr, the {data['output_bytes'] / gib:.1f} GiB of maps written back to zarr, "
            f"on a LocalCluster of {data['workers']} worker processes with one thread each "
            f"and a memory limit of {data['memory_limit']} per worker, in chunks of "
            f"{data['chunk']}×{data['chunk']}:", ""]
    out += _machine(data["machine"])
    rows = []
    for label in ("vecconv.dask.conv", "dask_image.ndfilters.correlate x16"):
        r = data[label]
        rows.append([f"``{label}``", f"{r['zarr_seconds']:.1f}", f"{r['megapixels_per_s']:.1f}",
                     f"{r['peak_worker_bytes'] / 2**20:.0f}", f"{r['compute_seconds']:.1f}"])
    out += _table(["method", "zarr → zarr s", "Mpixel/s", "peak worker MiB",
                   "without the disk s"], rows, "Filter bank, float32")
    out += [f"vecconv.dask was {data['speedup_zarr']:.1f}× as fast as dask-image applied filter "
            f"by filter from zarr to zarr, and {data['speedup_compute']:.1f}× without the disk "
            f"(each block reduced to its sum). The two results agree on sampled tiles to a "
            f"relative {data['max_relative_difference_on_tiles']:.1e}.", ""]
    return out


def _signal_page(name, data):
    """bench/signal_methods.py: vecconv.signal's method='auto' against scipy.signal's."""
    out = [f"vecconv.signal against scipy.signal (``bench/results/{name}``)", "-" * 80, ""]
    out += ["Measured by ``bench/signal_methods.py``: ``convolve(x, k, 'same')`` with "
            "``method='auto'`` in both libraries; each cell is the median over passes of the "
            "grid of the ratio of the two minimum times of interleaved calls (below 1: "
            "vecconv.signal is faster). The route is the one vecconv.signal chose "
            "(``numpy``: NumPy's 1-D product, SciPy's own direct method), then SciPy's.", ""]
    out += _machine(data["machine"])
    rows = [[f"{r['ndim']}-D", r["dtype"], r["n"], r["k"],
             f"{r['vecconv_route']} / {r['scipy_method']}", _fmt(r["vecconv_s"] * 1e3, 3),
             _fmt(r["scipy_s"] * 1e3, 3), _fmt(r["ratio"])] for r in data["table"]]
    out += _table(["rank", "dtype", "n", "k", "route (vecconv / SciPy)", "vecconv ms",
                   "SciPy ms", "ratio"], rows, "vecconv.signal / scipy.signal, method='auto'")
    ratios = [r["ratio"] for r in data["table"]]
    out += [f"vecconv.signal was faster on {sum(q < 1 for q in ratios)} of {len(ratios)} "
            f"cells and within 10% of SciPy's choice on {sum(q <= 1.1 for q in ratios)}; "
            f"worst ratio {max(ratios):.2f}.", ""]
    return out


# ----------------------------------------------------------------------------- the page
def _headline_page(name, data):
    out = [f"The README's figures (``bench/results/{name}``)", "-" * 80, ""]
    out += ["Measured by ``bench/headline.py``, PyTorch imported and run first, each case "
            "against what a user would pick instead (× above 1: vecconv is faster):", ""]
    out += _machine(data["machine"])
    rows = [[r["case"], f"{r['vecconv_ms']:.2f}", r["other"], f"{r['other_ms']:.2f}",
             _fmt(r["speedup"])] for r in data["rows"]]
    out += _table(["case", "vecconv ms", "against", "its ms", "×"], rows, "Headline cases")
    return out


def _layers_page(name, data):
    """bench/layers.py: the layers people run, against PyTorch, with each route's error."""
    out = [f"The layers people run (``bench/results/{name}``)", "-" * 80, ""]
    out += ["Measured by ``bench/layers.py``: forward + backward (dx, dw, db) of each layer, "
            "vecconv against ``torch.nn.functional`` on the same threads, interleaved, "
            "PyTorch imported and run first (× above 1: vecconv is faster). The errors are "
            "normwise against PyTorch in float64, for the route the planner took and for "
            "im2col's (the accuracy policy: within 4×).", ""]
    out += _machine(data["machine"])
    rows = []
    for r in data["rows"]:
        routes = r.get("routes") or {}
        route = "/".join(routes.get(k, "?") for k in ("forward", "dx", "dw")) if routes \
            else "transposed"
        rows.append([r["case"], r["dtype"], "×".join(map(str, r["x"])), route,
                     f"{r['vecconv_ms']:.2f}", f"{r['torch_ms']:.2f}", _fmt(r["speedup"]),
                     f"{r['error']['y']:.1e}", f"{r['error_im2col']['y']:.1e}"])
    out += _table(["layer", "dtype", "x", "route (fwd/dx/dw)", "vecconv ms", "torch ms", "×",
                   "error y", "im2col's"], rows, "Forward + backward")
    for dt, sm in data.get("summary", {}).items():
        out += [f"- {dt}: faster on {sm['faster']} of {sm['of']}, geometric mean "
                f"{sm['geomean']:.2f}×."]
    roof = data.get("roofline")
    if roof:
        gemm = ", ".join(f"{k} {v:.0f}" for k, v in roof["gemm_gflops"].items())
        out += ["", f"The machine's best 2048³ float32 GEMM in the same process: "
                f"{roof['best_gemm_gflops']:.0f} GFLOP/s ({gemm}). The 3×3 stride-1 layers' "
                "forward pass in float32 as effective throughput (the direct convolution's "
                "flops over the time; a Winograd route does fewer):", ""]
        out += _table(["layer", "vecconv route", "vecconv GFLOP/s", "PyTorch GFLOP/s"],
                      [[r["case"], r["route"], f"{r['vecconv_gflops']:.0f}",
                        f"{r['torch_gflops']:.0f}"] for r in roof["layers"]])
        bound = [r for r in data["rows"] if r.get("gemm_bound_ms")]
        if bound:
            out += ["", "The ceiling of any method that does the direct convolution's products "
                    "(im2col, direct kernels): those products, forward + dx + dW, at the best "
                    "GEMM's rate, against PyTorch's time in float32. Only a route that does "
                    "fewer products (Winograd, FFT) can pass it.", ""]
            out += _table(["layer", "PyTorch ms", "products at the GEMM's rate, ms",
                           "ceiling ×", "vecconv ×"],
                          [[r["case"], f"{r['torch_ms']:.2f}", f"{r['gemm_bound_ms']:.2f}",
                            _fmt(r["torch_ms"] / r["gemm_bound_ms"]), _fmt(r["speedup"])]
                           for r in bound])
    return out + [""]


def _winograd_accuracy_page(name, data):
    """bench/winograd_accuracy.py: the Winograd route's error over im2col's, per m."""
    out = [f"The Winograd route's accuracy (``bench/results/{name}``)", "-" * 80, ""]
    out += ["Measured by ``bench/winograd_accuracy.py``: the worst ratio of F(m, 3)'s error "
            "to im2col's (normwise, y and dx, against an extended-precision reference) "
            "over its layers; 'auto' takes m only where it is at most 4.", ""]
    rows = [[k, f"{v:.1f}", "yes" if v <= 4 else "no"] for k, v in data["worst"].items()]
    out += _table(["(dtype, axes, m)", "worst ratio", "within 4×"], rows, "F(m, 3)")
    return out


def _versions_page(name, data):
    out = [f"Before and after a change (``bench/results/{name}``)", "-" * 80, ""]
    out += [f"Measured by ``bench/versions.py``: two installations in alternating fresh "
            f"processes ({data.get('rounds', '?')} rounds), PyTorch imported first, "
            "forward + backward; after/before below 1: the change is faster.", ""]
    out += _machine(data["machine"])
    rows = [[r["case"], f"{r['before_ms']:.2f}", f"{r['after_ms']:.2f}",
             _fmt(r["after_over_before"], 3), f"{r['best']:.2f}–{r['worst']:.2f}"]
            for r in data["rows"]]
    out += _table(["case", "before ms", "after ms", "after/before", "range over rounds"],
                  rows, "Before and after")
    return out


def write_pages(repo: Path, out_dir: Path):
    """Write ``out_dir/bench.rst`` and one chart per result file; returns the files read."""
    out_dir.mkdir(parents=True, exist_ok=True)
    results = sorted((repo / "bench" / "results").glob("*.json"))
    page, skipped = [], []
    for path in results:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            skipped.append(path.name)
            continue
        chart = f"bench-{path.stem}.png"        # written beside bench.rst
        if isinstance(data, dict) and "cases" in data and "machine" in data:
            _conv_chart(data, out_dir / chart)
            page += _conv_page(path.name, data, chart)
        elif (isinstance(data, dict) and data.get("rows") and "torch_ms" in data["rows"][0]
              and "error_im2col" in data["rows"][0]):
            page += _layers_page(path.name, data)
        elif isinstance(data, dict) and "worst" in data and data.get("rows"):
            page += _winograd_accuracy_page(path.name, data)
        elif isinstance(data, dict) and data.get("rows") and "speedup" in data["rows"][0]:
            page += _headline_page(path.name, data)
        elif (isinstance(data, dict) and data.get("rows")
              and "after_over_before" in data["rows"][0]):
            page += _versions_page(path.name, data)
        elif isinstance(data, dict) and "rows" in data and "machine" in data:
            _pool_chart(data, out_dir / chart)
            page += _pool_page(path.name, data, chart)
        elif isinstance(data, dict) and "speedup_zarr" in data and "machine" in data:
            page += _dask_page(path.name, data)
        elif isinstance(data, dict) and "table" in data and "fit_samples" in data:
            page += _signal_page(path.name, data)
        else:
            skipped.append(path.name)
    if not results:
        page += ["No result files were found in ``bench/results/``.", ""]
    if skipped:
        page += ["Not shown (a structure this page does not know): "
                 + ", ".join(f"``{s}``" for s in skipped) + ".", ""]
    (out_dir / "bench.rst").write_text("\n".join(page) + "\n")
    return results


def _on_builder_inited(app):
    docs = Path(app.srcdir)
    write_pages(docs.parent, docs / "_generated")


def setup(app):
    app.connect("builder-inited", _on_builder_inited)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1"}
