"""vecconv side by side with direct convolution, plain-numpy im2col, PyTorch and the GEMM
roofline, all measured in one run on this machine.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/bench.py [--quick] \
        [--json PATH] [--plot PATH] [--cases NAME,...] [--dtypes float32,float64]

Every method's output is compared with vecconv's before it is timed, so the table never
shows the speed of a wrong answer. Times are the median of at least 7 repeats after a
warm-up, the methods timed round-robin (bench/harness.py); ratios are taken within this
run. ``--smoke`` runs every part once on tiny inputs, to check that the script works.
"""

from __future__ import annotations

import os

# Idle OpenBLAS threads (NumPy's, SciPy's) spin-yield for up to ~0.1 s after a product
# and slow whatever method runs next on these 2 cores; timed round-robin, that noise lands
# on the methods unevenly. In this process alone they go to sleep at once. (vecconv's own
# workers never spin.) Must be set before NumPy loads its OpenBLAS.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import argparse
import json
import math
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.signal as ss

import vecconv as vc
import vecconv.nn as vnn
from vecconv import _engine
from harness import busy_processes, describe, interleaved, machine, once, timed, write_json

try:
    import torch
    import torch.nn.functional as F
except ImportError:          # the benchmark runs without torch, minus its columns
    torch = None

# name: (N, Cin, H, W, Cout, k, stride, padding, table)
CASES = {
    "lenet-c1": (64, 1, 32, 32, 6, 5, 1, 0, False),
    "lenet-c3": (64, 6, 14, 14, 16, 5, 1, 0, False),
    "lenet-c3-table": (64, 6, 14, 14, 16, 5, 1, 0, True),
    "mnist-like": (256, 1, 28, 28, 32, 3, 1, 1, False),
    "mid": (32, 64, 56, 56, 64, 3, 1, 1, False),
    "pointwise": (32, 256, 28, 28, 64, 1, 1, 0, False),
    "strided": (32, 64, 56, 56, 128, 3, 2, 1, False),
    "large-image": (1, 3, 224, 224, 64, 7, 2, 3, False),
}
QUICK_CASES = ["lenet-c1", "lenet-c3-table", "mnist-like", "pointwise", "strided"]
# the largest max_rel_diff from vecconv's result a method may show before it is timed
AGREE = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-10}


# ----------------------------------------------------------------------------- memory
def _status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return None


def _malloc_trim():
    """Hand freed heap memory back to the OS, so that reuse of it shows up in the RSS."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_extra_memory(fn):
    """Peak RSS above the starting RSS during one call (kernel high-water mark, reset first).

    Counts every allocation: NumPy's, the engine's malloc'd workspace, torch's. Freed
    memory is trimmed first: otherwise a method that reuses memory it freed earlier would
    look free of cost.
    """
    _malloc_trim()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    before = _status("VmRSS")
    fn()
    peak = _status("VmHWM")
    return None if before is None or peak is None else max(peak - before, 0)


# ----------------------------------------------------------------------------- methods
def geometry(case):
    n, c, h, w, cout, k, s, p, _ = case
    ho = (h + 2 * p - k) // s + 1
    wo = (w + 2 * p - k) // s + 1
    return ho, wo


def flops(case):
    n, c, h, w, cout, k, s, p, _ = case
    ho, wo = geometry(case)
    return 2.0 * n * cout * ho * wo * c * k * k


def make_inputs(case, dtype, seed=0):
    n, c, h, w, cout, k, s, p, table = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt = (rng.standard_normal((cout, c, k, k)) / math.sqrt(c * k * k)).astype(dtype)
    b = rng.standard_normal(cout).astype(dtype)
    ho, wo = geometry(case)
    dy = rng.standard_normal((n, cout, ho, wo)).astype(dtype)
    conn = vnn.lenet5_c3_table() if table else None
    if conn is not None:
        wt = wt * conn.T[:, :, None, None]
    return x, wt, b, dy, conn


class VecConv:
    name = "vecconv"

    def __init__(self, case, x, w, b, dy, conn):
        _, _, _, _, _, k, s, p, _ = case
        self.opts = dict(stride=s, padding=p, connections=conn)
        self.x, self.w, self.b, self.dy = x, w, b, dy

    def forward(self):
        return vc.conv2d(self.x, self.w, self.b, **self.opts)

    def forward_backward(self):
        y = vc.conv2d(self.x, self.w, self.b, **self.opts)
        return (y,) + vc.conv2d_backward(self.dy, self.x, self.w, **self.opts)


class NumpyIm2col:
    """What vecconv would be without its compiled core: sliding_window_view + copy + @."""
    name = "numpy-im2col"

    def __init__(self, case, x, w, b, dy, conn):
        n, c, h, wd, cout, k, s, p, _ = case
        self.k, self.s, self.p = k, s, p
        self.x, self.b, self.dy = x, b, dy
        self.w2 = (w * conn.T[:, :, None, None] if conn is not None else w).reshape(cout, -1)
        self.shape = x.shape
        self.conn = conn

    def _cols(self):
        k, s, p = self.k, self.s, self.p
        xp = np.pad(self.x, ((0, 0), (0, 0), (p, p), (p, p))) if p else self.x
        win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::s, ::s]
        n, c, ho, wo = win.shape[:4]
        cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(n * ho * wo, c * k * k)   # the copy
        return cols, (n, ho, wo)

    def forward(self):
        cols, (n, ho, wo) = self._cols()
        y = cols @ self.w2.T + self.b
        return np.ascontiguousarray(y.reshape(n, ho, wo, -1).transpose(0, 3, 1, 2))

    def forward_backward(self):
        k, s, p = self.k, self.s, self.p
        cols, (n, ho, wo) = self._cols()
        y = np.ascontiguousarray((cols @ self.w2.T + self.b).reshape(n, ho, wo, -1).transpose(0, 3, 1, 2))
        dy2 = self.dy.transpose(0, 2, 3, 1).reshape(n * ho * wo, -1)
        dw = (dy2.T @ cols).reshape(-1, self.shape[1], k, k)
        if self.conn is not None:
            dw = dw * self.conn.T[:, :, None, None]
        dcols = (dy2 @ self.w2).reshape(n, ho, wo, self.shape[1], k, k)
        N, C, H, W = self.shape
        dxp = np.zeros((N, C, H + 2 * p, W + 2 * p), dtype=self.x.dtype)
        for a in range(k):
            for q in range(k):
                dxp[:, :, a:a + s * ho:s, q:q + s * wo:s] += dcols[..., a, q].transpose(0, 3, 1, 2)
        dx = dxp[:, :, p:p + H, p:p + W] if p else dxp
        return y, dx, dw, self.dy.sum(axis=(0, 2, 3))


class Direct:
    """scipy.signal.correlate2d / convolve2d looped over batch x Cout x Cin (the reference).

    Far too slow to run whole: each call runs a prefix of the (image, output map) pairs
    for a time budget, and the time is extrapolated linearly to all pairs.
    """
    name = "direct-scipy"

    def __init__(self, case, x, w, b, dy, conn):
        n, c, h, wd, cout, k, s, p, _ = case
        self.case = case
        self.xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p))) if p else x
        self.w, self.b, self.dy, self.s, self.p = w, b, dy, s, p
        self.pairs = [(m, j) for m in range(n) for j in range(cout)]
        self.inputs = [[i for i in range(c) if conn is None or conn[i, j]] for j in range(cout)]
        self.limit = len(self.pairs)
        self.ho, self.wo = geometry(case)

    def _forward_pairs(self, count):
        y = np.zeros(self.dy.shape, dtype=self.dy.dtype)
        for m, j in self.pairs[:count]:
            acc = sum(ss.correlate2d(self.xp[m, i], self.w[j, i], "valid") for i in self.inputs[j])
            y[m, j] = acc[::self.s, ::self.s] + self.b[j]
        return y

    def _backward_pairs(self, count):
        n, c, h, wd, cout, k, s, p, _ = self.case
        dxp = np.zeros(self.xp.shape, dtype=self.dy.dtype)
        dw = np.zeros(self.w.shape, dtype=self.dy.dtype)
        hf, wf = self.xp.shape[2] - k + 1, self.xp.shape[3] - k + 1
        for m, j in self.pairs[:count]:
            up = np.zeros((hf, wf), dtype=self.dy.dtype)
            up[::s, ::s] = self.dy[m, j]
            for i in self.inputs[j]:
                dw[j, i] += ss.correlate2d(self.xp[m, i], up, "valid")          # eq. 13
                dxp[m, i] += ss.convolve2d(up, self.w[j, i], "full")            # eq. 16-18
        dx = dxp[:, :, p:p + h, p:p + wd] if p else dxp
        return dx, dw

    def forward(self, count=None):
        return self._forward_pairs(self.limit if count is None else count)

    def forward_backward(self, count=None):
        count = self.limit if count is None else count
        return (self._forward_pairs(count),) + self._backward_pairs(count) + (self.dy.sum(axis=(0, 2, 3)),)

    def timed(self, what, budget):
        """(seconds for all pairs, extrapolated?) from running prefixes within the budget."""
        fn = self.forward if what == "forward" else self.forward_backward
        count = 1
        while True:
            dt, _ = once(lambda: fn(count))
            if count >= self.limit or dt > budget / 4:
                break
            count = min(self.limit, count * 4)
        return dt * self.limit / count, count < self.limit, count


class Torch:
    name = "torch"

    def __init__(self, case, x, w, b, dy, conn):
        n, c, h, wd, cout, k, s, p, _ = case
        self.s, self.p = s, p
        self.x = torch.from_numpy(x.copy())
        self.w = torch.from_numpy(w.copy())
        self.b = torch.from_numpy(b.copy())
        self.dy = torch.from_numpy(dy.copy())
        # a connection table in torch: the mask multiplies the weight inside the graph
        self.mask = None if conn is None else torch.from_numpy(conn.T[:, :, None, None].astype(x.dtype))

    def _weight(self, w):
        return w if self.mask is None else w * self.mask

    def forward(self):
        with torch.no_grad():
            return F.conv2d(self.x, self._weight(self.w), self.b, stride=self.s, padding=self.p).numpy()

    def forward_backward(self):
        x = self.x.detach().requires_grad_(True)
        w = self.w.detach().requires_grad_(True)
        b = self.b.detach().requires_grad_(True)
        y = F.conv2d(x, self._weight(w), b, stride=self.s, padding=self.p)
        y.backward(self.dy)
        return y.detach().numpy(), x.grad.numpy(), w.grad.numpy(), b.grad.numpy()


class Roofline:
    """The engine's matrix products alone: forward Y = W cols, backward dW = dY cols^T and
    dcols = W^T dY, as one GEMM over the whole batch through NumPy's BLAS with all its
    threads (the engine's own BLAS is single-threaded by design)."""
    name = "gemm-batched"

    def __init__(self, case, x, w, b, dy, conn):
        n, c, h, wd, cout, k, s, p, _ = case
        ho, wo = geometry(case)
        kk, self.n, self.L = c * k * k, n, ho * wo
        dt = x.dtype
        rng = np.random.default_rng(1)
        self.w2 = rng.standard_normal((cout, kk)).astype(dt)
        self.cols = rng.standard_normal((kk, n * self.L)).astype(dt)
        self.dy2 = rng.standard_normal((cout, n * self.L)).astype(dt)
        self.y = np.empty((cout, n * self.L), dt)
        self.dw = np.zeros((cout, kk), dt)
        self.dcols = np.empty((kk, n * self.L), dt)

    def forward(self):
        np.matmul(self.w2, self.cols, out=self.y)

    def forward_backward(self):
        np.matmul(self.w2, self.cols, out=self.y)
        np.matmul(self.dy2, self.cols.T, out=self.dw)
        np.matmul(self.w2.T, self.dy2, out=self.dcols)


class RooflinePerImage(Roofline):
    """The same products as the engine makes them: single-threaded GEMMs through the
    engine's BLAS, spread over its threads. Forward and dcols: one GEMM per image (each
    image's columns new to the cache, as in the engine). dW: one GEMM per thread's share
    of the images, into its own accumulator. For skinny shapes such as LeNet-5's C1
    (M=6, K=25) this is the faster way, so the roofline is the better of the two."""
    name = "gemm-per-image"

    def __init__(self, *args):
        super().__init__(*args)
        self.t = max(1, min(vc.get_num_threads(), self.n))
        self.per = self.n // self.t
        self.dw_parts = np.zeros((self.t,) + self.dw.shape, self.dw.dtype)

    def forward(self):
        L = self.L
        _engine.gemm_into(self.w2, self.cols[:, :L], self.y[:, :L], count=self.n, b_step=L,
                          c_step=L, threads=self.t)

    def forward_backward(self):
        L, n, t = self.L, self.n, self.t
        self.forward()
        span = self.per * L
        _engine.gemm_into(self.dy2[:, :span], self.cols[:, :span],
                          self.dw_parts.reshape(-1, self.dw.shape[1])[:self.dw.shape[0]],
                          False, True, count=t, a_step=span, b_step=span,
                          c_step=self.dw.size, threads=t)
        if self.per * t < n:            # the images left over, into the first accumulator
            rest = self.per * t * L
            _engine.gemm_into(self.dy2[:, rest:], self.cols[:, rest:], self.dw_parts[0],
                              False, True, beta=1.0)
        _engine.gemm_into(self.w2, self.dy2[:, :L], self.dcols[:, :L], True, False, count=n,
                          b_step=L, c_step=L, threads=t)


def max_rel_diff(got, ref):
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    return float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-30))


# ----------------------------------------------------------------------------- GEMM peak
def peak_gemm(dtype, size=2048, repeats=5):
    """GEMM peak of this machine: one size^3 product through NumPy's BLAS (all threads),
    and the same product split into one column block per vecconv thread through the
    engine's single-threaded BLAS."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size)).astype(dtype)
    b = rng.standard_normal((size, size)).astype(dtype)
    c = np.empty((size, size), dtype)
    t_np = timed(lambda: np.matmul(a, b, out=c), repeats)
    t = vc.get_num_threads()
    part = size // t
    t_vc = timed(lambda: _engine.gemm_into(a, b[:, :part], c[:, :part], count=t, b_step=part,
                                           c_step=part, threads=t), repeats)
    fl = 2 * size**3
    return dict(numpy=fl / t_np["median"] / 1e9,
                engine=2 * size**2 * part * t / t_vc["median"] / 1e9)


# ----------------------------------------------------------------------------- LeNet-5 step
def lenet_step_vecconv(dtype, batch=64):
    net = vnn.lenet5(dtype=dtype, seed=0)
    opt = vnn.SGD(net, lr=0.01, momentum=0.9)
    loss_fn = vnn.SoftmaxCrossEntropy()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 1, 32, 32)).astype(dtype)
    labels = rng.integers(0, 10, batch)

    def step():
        loss, d = loss_fn(net.forward(x), labels)
        net.backward(d)
        opt.step()
        return loss
    return step


def lenet_step_torch(dtype, batch=64):
    tdt = torch.float32 if dtype == np.float32 else torch.float64
    table = torch.tensor(vnn.lenet5_c3_table().T, dtype=tdt)[:, :, None, None]

    class AvgPoolBeta(torch.nn.Module):
        def __init__(self, ch):
            super().__init__()
            self.beta = torch.nn.Parameter(torch.full((ch,), 0.25, dtype=tdt))
            self.b = torch.nn.Parameter(torch.zeros(ch, dtype=tdt))

        def forward(self, h):
            s = F.avg_pool2d(h, 2) * 4
            return act(self.beta[None, :, None, None] * s + self.b[None, :, None, None])

    def act(z):
        return 1.7159 * torch.tanh(z * (2 / 3))

    class LeNet5(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = torch.nn.Conv2d(1, 6, 5, dtype=tdt)
            self.s2 = AvgPoolBeta(6)
            self.c3 = torch.nn.Conv2d(6, 16, 5, dtype=tdt)
            self.s4 = AvgPoolBeta(16)
            self.c5 = torch.nn.Conv2d(16, 120, 5, dtype=tdt)
            self.f6 = torch.nn.Linear(120, 84, dtype=tdt)
            self.out = torch.nn.Linear(84, 10, dtype=tdt)

        def forward(self, x):
            h = self.s2(act(self.c1(x)))
            h = self.s4(act(F.conv2d(h, self.c3.weight * table, self.c3.bias)))
            h = act(self.c5(h)).flatten(1)
            return self.out(act(self.f6(h)))

    net = LeNet5()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((batch, 1, 32, 32)).astype(dtype))
    labels = torch.from_numpy(rng.integers(0, 10, batch))

    def step():
        opt.zero_grad()
        loss = F.cross_entropy(net(x), labels)
        loss.backward()
        opt.step()
        return loss.item()
    return step


# ----------------------------------------------------------------------------- 2 threads
def thread_scaling(dtype, calls=64):
    """Throughput of conv2d + backward from 2 Python threads vs 1, each call held to one
    thread (set_num_threads(1)); else one call already fills both cores, and the
    comparison says nothing about the GIL."""
    case = (8, 16, 28, 28, 32, 3, 1, 1, False)
    x, w, b, dy, _ = make_inputs(case, dtype)

    def one(_):
        y = vc.conv2d(x, w, b, padding=1)
        vc.conv2d_backward(dy, x, w, padding=1)
        return y.shape
    out = {}
    old = vc.set_num_threads(1)          # the process's setting: the pool threads use it
    try:
        one(0)
        for threads in (1, 2):
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(one, range(threads)))                      # warm the threads
                seconds, _ = once(lambda: list(pool.map(one, range(calls))))
                out[threads] = calls / seconds
    finally:
        vc.set_num_threads(old)
    return dict(calls_per_s_1_thread=out[1], calls_per_s_2_threads=out[2], speedup=out[2] / out[1])


# ----------------------------------------------------------------------------- 3-D
def conv3d_vs_torch(dtype=np.float32, repeats=9, n=8, c=32, size=(16, 32, 32)):
    """conv3d + backward (dx, dw, db) against PyTorch, batch 8, 32 -> 32 channels, 3x3x3
    kernels, padding 1, on 16x32x32 volumes; interleaved, outputs checked first."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c) + size).astype(dtype)
    w = rng.standard_normal((c, c, 3, 3, 3)).astype(dtype)
    b = rng.standard_normal(c).astype(dtype)
    dy = rng.standard_normal((n, c) + size).astype(dtype)

    def ours():
        y = vc.conv3d(x, w, b, padding=1)
        return (y,) + vc.conv3d_backward(dy, x, w, padding=1)
    fns = {"vecconv": ours}
    if torch is not None:
        xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
        dyt = torch.tensor(dy)

        def theirs():
            for t in (xt, wt, bt):
                t.grad = None
            y = F.conv3d(xt, wt, bt, padding=1)
            y.backward(dyt)
            return y.detach().numpy(), xt.grad.numpy(), wt.grad.numpy(), bt.grad.numpy()
        err = max(max_rel_diff(a, r) for a, r in zip(ours(), theirs()))
        if not err < AGREE[np.dtype(dtype)]:
            raise SystemExit(f"torch disagrees with vecconv on conv3d: {err:.2e}")
        fns["torch"] = theirs
    t = interleaved(fns, repeats)
    gflop = 3 * 2 * n * c * c * 27 * math.prod(size) / 1e9
    out = {k: dict(v, gflops=gflop / v["median"]) for k, v in t.items()}
    if "torch" in out:
        out["torch_over_vecconv"] = out["torch"]["median"] / out["vecconv"]["median"]
    return out


# ----------------------------------------------------------------------------- a user's process
def _child_times(first, cases, dtypes, repeats):
    """In a fresh process that imports (and uses) ``first`` before anything else: the
    median forward+backward time of vecconv on each case. PyTorch first means its OpenMP
    runtime is loaded and its threads have run, as in a user's training script."""
    code = (
        "import sys, json\n"
        f"first = {first!r}\n"
        "if first == 'torch':\n"
        "    import torch, torch.nn.functional as F\n"
        "    F.conv2d(torch.ones(8, 16, 32, 32), torch.ones(16, 16, 3, 3)).sum().item()\n"
        f"sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})\n"
        "import bench, numpy as np\n"
        f"out = bench._time_cases({cases!r}, {dtypes!r}, {repeats})\n"
        "print('RESULT ' + json.dumps(out))\n")
    import subprocess
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=1800)
    if res.returncode != 0:
        raise SystemExit(f"child process ({first} first) failed:\n{res.stderr}")
    line = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def _time_cases(cases, dtypes, repeats):
    out = {}
    for name in cases:
        for dt in dtypes:
            impl = VecConv(CASES[name], *make_inputs(CASES[name], np.dtype(dt)))
            out[f"{name}/{dt}"] = timed(impl.forward_backward, repeats)["median"]
    return out


def import_order(cases, dtypes, rounds=3, repeats=9):
    """vecconv's forward+backward time with PyTorch imported (and run) first, over its time
    with vecconv imported alone: fresh processes, alternating, median of ``rounds``."""
    runs = {"vecconv": [], "torch": []}
    for _ in range(rounds):
        for first in ("vecconv", "torch"):
            runs[first].append(_child_times(first, cases, dtypes, repeats))
    out = {}
    for key in runs["vecconv"][0]:
        alone = statistics.median(r[key] for r in runs["vecconv"])
        after = statistics.median(r[key] for r in runs["torch"])
        out[key] = dict(vecconv_first=alone, torch_first=after, ratio=after / alone)
    return out


def under_load(dtype=np.float32, batch=32, steps=40, rounds=5):
    """LeNet-5 training step (batch 32) on an idle machine and beside two busy-loop
    processes, with vecconv's default threads and with threads(1); PyTorch's step under
    the same load for reference. Within each state the variants alternate, each timing
    ``steps`` steps after one untimed step."""
    one_thread_step = lenet_step_vecconv(dtype, batch)

    def one_thread():
        with vc.threads(1):
            return one_thread_step()
    variants = {"vecconv": lenet_step_vecconv(dtype, batch), "vecconv-1-thread": one_thread}
    if torch is not None:
        variants["torch"] = lenet_step_torch(dtype, batch)

    def measure():
        t = interleaved(variants, rounds, number=steps, rewarm=True)
        return {k: v["median"] for k, v in t.items()}
    idle = measure()
    with busy_processes(2):
        loaded = measure()
    return dict(idle=idle, loaded=loaded,
                loaded_over_idle=loaded["vecconv"] / idle["vecconv"],
                loaded_over_one_thread=loaded["vecconv"] / loaded["vecconv-1-thread"])


# ----------------------------------------------------------------------------- main
def run(args):
    facts = machine()
    if facts["OPENBLAS_CORETYPE"] or facts["OPENBLAS_L2_SIZE"]:
        print(f"WARNING: OPENBLAS_CORETYPE={facts['OPENBLAS_CORETYPE']} OPENBLAS_L2_SIZE="
              f"{facts['OPENBLAS_L2_SIZE']} force an older BLAS kernel (about half speed on "
              "AVX-512). For the machine's real speed run:\n  env -u OPENBLAS_CORETYPE -u "
              "OPENBLAS_L2_SIZE python bench/bench.py\n", file=sys.stderr)
    threads = vc.get_num_threads()
    if torch is not None:
        torch.set_num_threads(threads)
    print(describe(facts))
    repeats = args.repeats
    smoke = args.smoke
    dtypes = [np.dtype(d) for d in args.dtypes.split(",")]
    cases = args.cases.split(",") if args.cases else (
        ["lenet-c1"] if smoke else QUICK_CASES if args.quick else list(CASES))
    results = dict(machine=facts, peak_gemm_gflops={}, cases=[], lenet5_step=[], threads={},
                   import_order={}, under_load={}, conv3d={})
    gemm_size = 128 if smoke else 1024 if args.quick else 2048
    for dt in dtypes:
        pk = results["peak_gemm_gflops"][dt.name] = peak_gemm(dt, gemm_size,
                                                              1 if smoke else 5)
        print(f"peak GEMM {dt.name}: {pk['numpy']:.0f} GFLOP/s through NumPy's BLAS, "
              f"{pk['engine']:.0f} through the engine's ({gemm_size}^3)")
    # The order within a round matters on 2 cores: NumPy's OpenBLAS threads (numpy-im2col,
    # the batched roofline) spin-yield for a while after each product and slow whatever
    # runs next (measured: torch's LeNet-C1 median 68 ms after numpy-im2col, min 4.5 ms).
    # vecconv's workers sleep at once, so torch runs right after vecconv, and vecconv right
    # after the per-image roofline (also vecconv's pool).
    methods = ([VecConv] + ([Torch] if torch is not None else [])
               + [NumpyIm2col, Roofline, RooflinePerImage])
    for name in cases:
        case = CASES[name]
        for dt in dtypes:
            inputs = make_inputs(case, dt)
            ref_impl = VecConv(case, *inputs)
            ref = {"forward": ref_impl.forward(), "forward+backward": ref_impl.forward_backward()}
            for what in ("forward", "forward+backward"):
                gflop = flops(case) * (1 if what == "forward" else 3) / 1e9
                row = dict(case=name, shape=case, dtype=dt.name, pass_=what, gflop=gflop, methods={})
                fns, errs = {}, {}
                for cls in methods:
                    impl = cls(case, *inputs)
                    fn = impl.forward if what == "forward" else impl.forward_backward
                    errs[cls.name] = None
                    if not issubclass(cls, Roofline):
                        got = fn()
                        want = ref[what]
                        if what == "forward":
                            got, want = (got,), (want,)
                        err = max(max_rel_diff(g, r) for g, r in zip(got, want))
                        if not err < AGREE[dt]:
                            raise SystemExit(f"{cls.name} disagrees with vecconv on {name} "
                                             f"{dt.name} {what}: max rel diff {err:.2e}")
                        errs[cls.name] = err
                    fns[cls.name] = fn
                timings = interleaved(fns, repeats, budget=args.budget)
                for mname, fn in fns.items():
                    t = timings[mname]
                    row["methods"][mname] = dict(t, gflops=gflop / t["median"],
                                                 max_rel_diff=errs[mname],
                                                 peak_extra_bytes=peak_extra_memory(fn))
                d = Direct(case, *inputs)
                got = d.forward(1) if what == "forward" else d.forward_backward(1)
                m, j = d.pairs[0]
                if what == "forward":
                    err = max_rel_diff(got[m, j], ref[what][m, j])
                else:
                    # the first pair's forward and its dw contribution are complete after one pair
                    err = max_rel_diff(got[0][m, j], ref[what][0][m, j])
                if not err < AGREE[dt]:
                    raise SystemExit(f"direct disagrees with vecconv on {name}: {err:.2e}")
                secs, extrap, count = d.timed(what, args.direct_budget)
                row["methods"]["direct-scipy"] = dict(median=secs, min=secs, max=secs, n=1,
                                                      gflops=gflop / secs, extrapolated=extrap,
                                                      pairs_run=count, pairs=d.limit,
                                                      max_rel_diff=err, peak_extra_bytes=None)
                v = row["methods"]["vecconv"]["median"]
                for mname, r in row["methods"].items():
                    r["ratio_to_vecconv"] = r["median"] / v
                row["roofline_seconds"] = min(row["methods"]["gemm-batched"]["median"],
                                              row["methods"]["gemm-per-image"]["median"])
                row["roofline_fraction"] = row["roofline_seconds"] / v
                results["cases"].append(row)
                print_row(row)
    if not args.skip_lenet:
        steps = 1 if smoke else max(repeats, 10)
        for dt in dtypes:
            entry = dict(dtype=dt.name)
            entry["vecconv"] = timed(lenet_step_vecconv(dt), steps)
            if torch is not None:
                entry["torch"] = timed(lenet_step_torch(dt), steps)
                entry["torch_over_vecconv"] = entry["torch"]["median"] / entry["vecconv"]["median"]
            results["lenet5_step"].append(entry)
            print(f"LeNet-5 training step, batch 64, {dt.name}: vecconv "
                  f"{entry['vecconv']['median'] * 1e3:.2f} ms" +
                  (f", torch {entry['torch']['median'] * 1e3:.2f} ms "
                   f"(torch/vecconv {entry['torch_over_vecconv']:.2f})" if torch is not None else ""))
    r = results["conv3d"] = conv3d_vs_torch(**(dict(repeats=1, n=1, c=4, size=(4, 6, 6))
                                               if smoke else {}))
    print(f"conv3d + backward, float32, {'tiny' if smoke else '8x32x16x32x32, 3x3x3 -> 32'}: vecconv "
          f"{r['vecconv']['median'] * 1e3:.1f} ms ({r['vecconv']['gflops']:.0f} GFLOP/s)" +
          (f", torch {r['torch']['median'] * 1e3:.1f} ms (torch/vecconv "
           f"{r['torch_over_vecconv']:.2f})" if "torch" in r else ""))
    for dt in dtypes:
        results["threads"][dt.name] = thread_scaling(dt, 4 if smoke else 64)
        r = results["threads"][dt.name]
        print(f"2 Python threads vs 1 (each call on 1 thread), {dt.name}: "
              f"{r['calls_per_s_2_threads']:.0f} vs {r['calls_per_s_1_thread']:.0f} calls/s "
              f"= {r['speedup']:.2f}x")
    if not args.skip_load:
        r = results["under_load"] = under_load(**(dict(steps=1, rounds=1) if smoke else {}))
        print("LeNet-5 step (batch 32, float32) idle / beside 2 busy processes: " + ", ".join(
            f"{k} {r['idle'][k] * 1e3:.1f} / {r['loaded'][k] * 1e3:.1f} ms" for k in r["idle"])
            + f"; vecconv loaded/idle {r['loaded_over_idle']:.2f}, loaded vs 1 thread "
            f"{r['loaded_over_one_thread']:.2f}")
    if torch is not None and not args.skip_import_order:
        r = results["import_order"] = import_order(
            cases, [d.name for d in dtypes], rounds=1 if smoke else 2 if args.quick else 3,
            repeats=1 if smoke else 9)
        for key, v in r.items():
            print(f"import order {key}: vecconv first {v['vecconv_first'] * 1e3:.2f} ms, "
                  f"torch first {v['torch_first'] * 1e3:.2f} ms, ratio {v['ratio']:.2f}")
    print()
    print(table(results))
    if args.json:
        write_json(args.json, results)
    if args.plot:
        plot(results, args.plot)
        print(f"wrote {args.plot}")
    return results


def fmt_t(s):
    return f"{s * 1e3:9.2f} ms" if s < 10 else f"{s:9.1f} s "


def print_row(row):
    m = row["methods"]
    print(f"{row['case']:<15} {row['dtype']:<8} {row['pass_']:<17} vecconv {fmt_t(m['vecconv']['median'])}"
          f"  roofline {row['roofline_fraction']:.2f}" +
          (f"  torch x{m['torch']['ratio_to_vecconv']:.2f}" if "torch" in m else "") +
          f"  numpy x{m['numpy-im2col']['ratio_to_vecconv']:.2f}"
          f"  direct x{m['direct-scipy']['ratio_to_vecconv']:.0f}", flush=True)


def table(results):
    """The console/README table: times in ms (median), ratios = method time / vecconv time."""
    lines = ["| case | dtype | pass | vecconv ms | GFLOP/s | of roofline | torch × "
             "| numpy-im2col × | direct × | torch imported first | vecconv peak MiB "
             "| torch peak MiB |",
             "|" + "---|" * 12]
    order = results.get("import_order", {})

    def ratio(m, name, fmt="{:.2f}"):
        return fmt.format(m[name]["ratio_to_vecconv"]) if name in m else "–"

    def mib(m, name):
        b = m.get(name, {}).get("peak_extra_bytes")
        return "–" if b is None else f"{b / 2**20:.0f}"

    for r in results["cases"]:
        m = r["methods"]
        d = m["direct-scipy"]
        cells = [r["case"], r["dtype"], r["pass_"], f"{m['vecconv']['median'] * 1e3:.2f}",
                 f"{m['vecconv']['gflops']:.0f}", f"{r['roofline_fraction']:.2f}",
                 ratio(m, "torch"), ratio(m, "numpy-im2col"),
                 ("~" if d["extrapolated"] else "") + f"{d['ratio_to_vecconv']:.0f}",
                 (f"{order[key]['ratio']:.2f}" if (key := f"{r['case']}/{r['dtype']}") in order
                  and r["pass_"] == "forward+backward" else ""),
                 mib(m, "vecconv"), mib(m, "torch")]
        lines.append("| " + " | ".join(cells) + " |")
    for e in results["lenet5_step"]:
        t = e.get("torch_over_vecconv")
        cells = ["LeNet-5 train step (batch 64)", e["dtype"], "fwd+bwd+SGD",
                 f"{e['vecconv']['median'] * 1e3:.2f}", "", "", "–" if t is None else f"{t:.2f}",
                 "", "", "", "", ""]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("× = that method's median time / vecconv's (above 1: vecconv is faster); "
                 "'of roofline' = GEMM-alone time (the faster of one batched GEMM or one GEMM "
                 "per image) / vecconv time; ~ = extrapolated from a prefix of the (image, map) "
                 "pairs; 'torch imported first' = vecconv's forward+backward time in a fresh "
                 "process that imported and ran PyTorch first / in one that imported vecconv "
                 "alone.")
    return "\n".join(lines)


def plot(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = [r for r in results["cases"] if r["pass_"] == "forward+backward"]
    dts = sorted({r["dtype"] for r in rows})
    fig, axes = plt.subplots(1, len(dts), figsize=(7 * len(dts), 5), squeeze=False)
    names = ["vecconv", "gemm-roofline", "torch", "numpy-im2col", "direct-scipy"]
    for ax, dt in zip(axes[0], dts):
        sub = [r for r in rows if r["dtype"] == dt]
        xs = np.arange(len(sub))
        width = 0.16
        for i, nm in enumerate(names):
            if nm == "gemm-roofline":
                vals = [r["roofline_seconds"] for r in sub]
            else:
                vals = [r["methods"][nm]["median"] if nm in r["methods"] else np.nan for r in sub]
            ax.bar(xs + (i - 2) * width, vals, width, label=nm)
        ax.set_xticks(xs)
        ax.set_xticklabels([r["case"] for r in sub], rotation=30, ha="right")
        ax.set_yscale("log")
        ax.set_ylabel("seconds (median), forward + backward")
        ax.set_title(f"{dt}")
        ax.legend(fontsize=8)
    fig.suptitle("vecconv vs peers vs GEMM roofline (" + results["machine"]["cpu"] + ")")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer cases and repeats (< 2 minutes)")
    p.add_argument("--smoke", action="store_true",
                   help="every part once on tiny inputs: checks the script runs (no timing)")
    p.add_argument("--skip-load", action="store_true",
                   help="skip the LeNet-5 step beside two busy-loop processes")
    p.add_argument("--skip-import-order", action="store_true",
                   help="skip the fresh processes that import PyTorch first")
    p.add_argument("--cases", default=None, help="comma-separated: " + ",".join(CASES))
    p.add_argument("--dtypes", default="float32,float64")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--budget", type=float, default=None, help="seconds per timing, at least 3 repeats")
    p.add_argument("--direct-budget", type=float, default=None, help="seconds for direct conv timing")
    p.add_argument("--skip-lenet", action="store_true")
    p.add_argument("--json", default=None)
    p.add_argument("--plot", default=None)
    args = p.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.smoke else 7
    if args.budget is None:
        args.budget = 0.0 if args.smoke else 1.5 if args.quick else 6.0
    if args.direct_budget is None:
        args.direct_budget = 0.0 if args.smoke else 0.5 if args.quick else 2.0
    run(args)


if __name__ == "__main__":
    main()
