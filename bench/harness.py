"""What every benchmark script shares: timing, the machine record, busy neighbours and
the JSON file.

    from harness import busy_processes, interleaved, machine, once, timed, write_json

Times are wall-clock seconds (``time.perf_counter``). ``interleaved`` times several
callables round-robin, so that a slow spell of a shared machine hits them all alike and
the ratios between them stay honest; ``timed`` is the same for one callable. Both return
``dict(median=, min=, max=, n=)`` per callable, in seconds per call.

Only the standard library is imported here: a fresh process that imports this module
first (to time vecconv with or without PyTorch loaded before it) loads nothing else.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time

VECTOR_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_bf16",
                "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")


# ----------------------------------------------------------------------------- timing
def once(fn):
    """(seconds, result) of one call of fn."""
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def summary(times):
    return dict(median=statistics.median(times), min=min(times), max=max(times),
                n=len(times))


def _batch(fn, number):
    def calls():
        for _ in range(number):
            fn()
    return calls


def interleaved(fns, repeats, *, warmup=1, number=1, budget=None, rewarm=False, settle=0.0):
    """Each callable of ``fns`` (name -> callable) timed ``repeats`` times, round-robin:
    every round times each callable once, in the order given.

    warmup: untimed calls of each callable before its first timing (``rewarm``: before
    every timing). number: calls per timing, the time reported per call. budget: seconds
    per callable; after the third round, stop once the rounds so far took longer than
    budget times the number of callables. settle: seconds to sleep first, so that threads
    the caller's own work left spinning are idle (NumPy's OpenBLAS spins about 0.1 s
    after a threaded call: a norm of the previous case's error kept the first rounds of a
    batch-1 layer, 3.5 ms a call, at 6-7 ms for whichever library it fell on).
    Returns {name: dict(median, min, max, n)}.
    """
    if settle:
        time.sleep(settle)
    if not rewarm:
        for fn in fns.values():
            for _ in range(warmup):
                fn()
    times = {name: [] for name in fns}
    batches = {name: fn if number == 1 else _batch(fn, number) for name, fn in fns.items()}
    start = time.perf_counter()
    for r in range(repeats):
        for name, batch in batches.items():
            if rewarm:
                for _ in range(warmup):
                    fns[name]()
            t0 = time.perf_counter()
            batch()
            times[name].append((time.perf_counter() - t0) / number)
        if budget is not None and r >= 2 and time.perf_counter() - start > budget * len(fns):
            break
    return {name: summary(t) for name, t in times.items()}


def timed(fn, repeats, *, warmup=1, number=1, budget=None):
    """dict(median, min, max, n) of fn alone, as ``interleaved`` times it."""
    return interleaved({"fn": fn}, repeats, warmup=warmup, number=number, budget=budget)["fn"]


# ----------------------------------------------------------------------------- neighbours
@contextlib.contextmanager
def busy_processes(n, settle=0.5):
    """n processes spinning on a core each while the block runs (started ``settle``
    seconds before it, killed after): a machine other work is using."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        time.sleep(settle)
        yield procs
    finally:
        for p in procs:
            p.kill()
            p.wait()


# ----------------------------------------------------------------------------- the machine
def _cpuinfo():
    """(model name, set of flags) of the first CPU in /proc/cpuinfo."""
    model = flags = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model is None:
                    model = value.strip()
                elif key == "flags" and flags is None:
                    flags = set(value.split())
    except OSError:
        pass
    return model or platform.processor(), flags or set()


def _blas_role(path):
    if "scipy_openblas32" in path:
        return "vecconv's engine (private, 1 thread per call)"
    if "numpy" in path:
        return "NumPy (the batched roofline)"
    if "scipy" in path:
        return "SciPy"
    if "_engine" in path:
        return "vecconv's thread setting"
    return ""


def _blas():
    try:
        import threadpoolctl
    except ImportError:
        return "threadpoolctl not installed"
    return [dict(internal_api=i.get("internal_api"), prefix=i.get("prefix"),
                 version=i.get("version"),
                 architecture=i.get("architecture") or i.get("corename"),
                 threads=i.get("num_threads"), filepath=i.get("filepath"),
                 role=_blas_role(i.get("filepath") or ""))
            for i in threadpoolctl.threadpool_info()]


def _torch(torch):
    """PyTorch's version, threads, convolution backend per dtype and BLAS."""
    config = torch.__config__.show()
    blas = re.search(r"BLAS_INFO=(\w+)", config)
    library = [ln.strip(" -") for ln in config.splitlines()
               if re.search(r"Math Kernel Library|OpenBLAS|BLIS|Accelerate", ln)]
    capability = re.search(r"CPU capability usage: (\w+)", config)
    return dict(torch=torch.__version__, torch_threads=torch.get_num_threads(),
                torch_backends=dict(
                    float32="oneDNN (mkldnn)" if torch.backends.mkldnn.is_available()
                    else "native",
                    float64="slow_conv2d (im2col + GEMM)"),
                torch_blas=", ".join(([f"BLAS_INFO={blas.group(1)}"] if blas else []) + library)
                or None,
                torch_cpu_capability=capability.group(1) if capability else None)


def machine():
    """What the numbers were measured on: CPU and vector extensions, core count, the
    versions of Python, NumPy, SciPy and vecconv, vecconv's runtime, every BLAS and
    OpenMP runtime loaded (threadpoolctl), and PyTorch's version and backends when this
    process has imported it (this never imports it)."""
    import numpy as np
    import scipy
    import vecconv as vc
    cpu, flags = _cpuinfo()
    facts = dict(cpu=cpu, cores=os.cpu_count(),
                 vector_extensions=[f for f in VECTOR_FLAGS if f in flags],
                 python=platform.python_version(), numpy=np.__version__,
                 scipy=scipy.__version__, vecconv=vc.__version__,
                 vecconv_runtime=vc.runtime_info(), torch=None,
                 OPENBLAS_CORETYPE=os.environ.get("OPENBLAS_CORETYPE"),
                 OPENBLAS_L2_SIZE=os.environ.get("OPENBLAS_L2_SIZE"))
    facts["blas"] = _blas()
    if "torch" in sys.modules:
        facts.update(_torch(sys.modules["torch"]))
    return facts


def describe(facts):
    """The machine record as a few lines for the console."""
    rt = facts["vecconv_runtime"]
    lines = [f"CPU: {facts['cpu']}; {facts['cores']} cores; "
             f"{' '.join(facts['vector_extensions'])}; vecconv threads {rt['num_threads']}, "
             f"private BLAS {rt['private_blas']}"]
    if isinstance(facts["blas"], list):
        for lib in facts["blas"]:
            lines.append(f"{lib['internal_api']} {lib['version'] or ''} "
                         f"kernel={lib['architecture']} threads={lib['threads']} "
                         f"({os.path.basename(lib['filepath'] or '')}) {lib['role']}")
    lines.append(f"numpy {facts['numpy']}, scipy {facts['scipy']}, torch {facts['torch']}"
                 + (f" ({facts['torch_blas']}; {facts['torch_threads']} threads)"
                    if facts.get("torch_blas") else ""))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- results
def write_json(path, results):
    """The results as JSON (what cannot be written as JSON, as its str)."""
    with open(path, "w") as f:
        json.dump(results, f, indent=1, default=str)
    print(f"wrote {path}")
