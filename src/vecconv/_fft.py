"""The FFT route of a convolution's forward pass: for large kernels, where im2col's
O(taps) work per output loses to the FFT's O(log n).

In matrix form again: each tile of each input map and each kernel is transformed once,
and at every frequency the transformed outputs are a product of the transformed inputs
with the (conjugated) transformed kernels, summed over the input channels of a group:
Y[n, j, f] = sum_i X[n, i, f] conj(K[j, i, f]) -- the correlation theorem, with the sum
over i of eq. 1. The transform back gives the stride-1 correlation, which the stride then
samples.

The output is cut into tiles (overlap-save): each tile reads its input region, padded as
the padding mode says through numpy.pad's index map, so neither the padded input nor a
whole map's transform is ever made (a tile inside x reads a view of it). The tile is the
one of least modelled work among the transform lengths FFTs do fastest (``_lengths``),
within a cache-sized transform (``TILE_ELEMENTS``) and the workspace budget: the
transformed kernels and a chunk of images' transforms. Tiles and chunks run on the
threads at once, each transform on one thread.

A NaN or inf would reach every output of its tile through the transform, and a value far
above the rest of its image would drown the tile's small outputs in its rounding error,
so the runner (``_run._route_ok``) sends such images (or every image, for non-finite
kernels or fill) to the GEMM route, or per-map under a connection table.
"""

from __future__ import annotations

import itertools
import math
import threading

import numpy as np
import scipy.fft

from ._shapes import extents, padded_index

#: A tile's transform holds at most this many entries, unless the kernels' extent needs
#: more: one tile's transform, its products and the outputs transformed back then stay in
#: a core's cache (31 x 31 kernels on a 1024^2 float32 image: 256^2 transforms ran 1.5-2x
#: faster than 288^2 or 512^2 ones, and than one 1024^2 transform of the whole image).
TILE_ELEMENTS = 2**16
#: Measured on the machines vecconv runs on: one floating-point operation of the FFT route
#: (transforms and complex products, counted as below) costs about this many GEMM ones.
FFT_COST = 6.0
#: A tile's fixed cost (its calls from Python, ~0.15 ms) in FFT-flop units: 128^2 tiles of
#: a 1024^2 image ran at half the speed of 256^2 ones.
TILE_COST = 2e6
#: Kernels with fewer taps never take the FFT route under algorithm='auto' (its model
#: never favoured one; the check costs a planning step).
FFT_MIN_TAPS = 25


#: Axes longer than this never take the FFT route (its transforms would be past memory).
MAX_AXIS = 2**31


def _next_len(n):
    return scipy.fft.next_fast_len(int(n), real=True)


def _span(geometry, d):
    """Per spatial axis: the stride-1 outputs that cover the strided ones, (o - 1) s + 1."""
    lead = 3 - d
    return [(o - 1) * s + 1 for o, s in zip(geometry.out[lead:], geometry.stride[lead:])]


def _lengths(span, e):
    """Candidate transform lengths of one axis whose outputs span ``span`` with kernels of
    extent ``e``: 2^k and 3 * 2^k giving a tile of at least e outputs (the lengths the FFT
    does fastest; smaller tiles would spend more on their overlap than on outputs), and
    the whole padded axis's fast length."""
    whole = _next_len(span + e - 1)
    found = {whole}
    f = 4
    while f < whole:
        found.update(c for c in (f, 3 * f // 2) if 2 * e - 1 <= c < whole)
        f *= 2
    return sorted(found)


def _cost(n, tile, size, span, cout, c, cin_g):
    """The route's work in FFT-flop units (as ``cost_ratio`` counts it) for n images:
    transforms, complex products, and each tile's fixed cost in Python."""
    n_tiles = math.prod(-(-u // t) for u, t in zip(span, tile))
    f = math.prod(size)
    lg = math.log2(max(f, 2))
    return (2.5 * f * lg * (n * (c + cout) * n_tiles + cout * cin_g)
            + 4.0 * n * cout * cin_g * f * n_tiles + TILE_COST * n_tiles)


def tile_shape(geometry, d, cout, cin_g, groups, itemsize, workspace):
    """(stride-1 outputs per tile, transform size) per spatial axis, and images per
    chunk, or None when the route cannot take this convolution within the workspace.

    Of the tiles whose transform lengths are fast ones (``_lengths``) and hold at most
    ``TILE_ELEMENTS`` entries (or the fewest, when the kernels need more), the one of least
    work per image that fits the budget, chosen without the batch size: with at most 8
    input maps per group (elementwise products) an image gives the same bits alone or in
    any batch; with more, NumPy's batched product may round a few ulps apart. The budget
    holds everything the route allocates besides the output: the dilated kernels, their
    zero-padded copy and their transforms (Cout, C/groups, F/2, complex), and per image of
    a chunk the tile read from x, its transform, the transformed outputs with the
    products' temporaries, and the outputs transformed back.
    """
    lead = 3 - d
    ext = list(extents(geometry.dilation[lead:], geometry.kernel[lead:]))
    span = _span(geometry, d)
    if min(geometry.size[lead:]) == 0 or max(span + ext) > MAX_AXIS:
        return None             # nothing to transform, or transforms past any memory
    c = cin_g * groups
    complex_item = 2 * itemsize
    padded = [(o - 1) * s + e for o, s, e in zip(geometry.out[lead:], geometry.stride[lead:],
                                                   ext)]
    maps = 9 * sum(padded)      # each axis's index map (int64) and constant mask
    choices = list(itertools.product(*[_lengths(u, e) for u, e in zip(span, ext)]))
    cap = max(TILE_ELEMENTS, min(math.prod(size) for size in choices))
    best = None
    for size in choices:
        full = math.prod(size)
        if full > cap:
            continue
        half = math.prod(size[:-1]) * (size[-1] // 2 + 1)
        # the dilated kernels, the zero-padded copy the transform makes of them, theirs
        kernels = cout * cin_g * (half * complex_item + (math.prod(ext) + full) * itemsize)
        per_image = (c * full * itemsize                  # the tile read from x
                     + c * half * complex_item            # its transform
                     + 3 * cout * half * complex_item     # products, sum, a temporary
                     + cout * full * itemsize)            # transformed back
        if maps + kernels + per_image > workspace:
            continue
        # each transform size is what the tile needs, no more
        tile = tuple(min(f - e + 1, u) for f, e, u in zip(size, ext, span))
        cost = _cost(1, tile, size, span, cout, c, cin_g)
        if best is None or cost < best[0]:
            images = max(1, (workspace - maps - kernels) // per_image)
            best = (cost, (tile, tuple(size), images))
    return None if best is None else best[1]


def cost_ratio(n, geometry, d, cout, cin_g, groups, tiles):
    """The FFT route's estimated time over im2col's, in GEMM-flop units."""
    tile, size, _ = tiles
    span = _span(geometry, d)
    direct = 2.0 * n * cout * cin_g * geometry.taps * geometry.positions
    work = _cost(n, tile, size, span, cout, cin_g * groups, cin_g)
    return FFT_COST * work / max(direct, 1.0)


def _run(index, constant):
    """The slice of x an axis's index map entries read, when they are one increasing run
    of x's own entries (no pad); else None."""
    if index.size == 0 or constant.any() or index[-1] - index[0] != index.size - 1 \
            or (index.size > 1 and not (np.diff(index) == 1).all()):
        return None
    return slice(int(index[0]), int(index[-1]) + 1)


def _run_tasks(one, tasks, concurrent):
    """one(task) for every task, on the calling thread and ``concurrent`` - 1 helper
    threads, each taking the next task in turn (no queue of them is made).

    An error or Ctrl-C in any of them: no task not yet begun starts, the helpers finish
    theirs and the first error is raised. A helper that cannot start (the interpreter
    shutting down) leaves its share to the others: every task is independent.
    """
    remaining = iter(tasks)
    lock = threading.Lock()
    stop = threading.Event()
    errors = []

    def work():
        try:
            while not stop.is_set():
                with lock:
                    task = next(remaining, None)
                if task is None:
                    return
                one(task)
        except BaseException as exc:        # Ctrl-C too: stop the others, raise below
            errors.append(exc)
            stop.set()

    helpers = []
    try:
        for _ in range(concurrent - 1):
            helper = threading.Thread(target=work, name="vecconv-fft", daemon=True)
            try:
                helper.start()
            except RuntimeError:            # no new thread now
                break
            helpers.append(helper)
        work()
    finally:                                # (a Ctrl-C while starting them, too)
        stop.set()
        for helper in helpers:
            helper.join()
    if errors:
        raise errors[0]


def forward(x, w, bias, plan, threads):
    """y of a convolution under ``plan`` by tiled FFTs: x (N, C, *spatial) and the
    effective weight w (Cout, C/groups, *kernel; flipped and masked already) clean arrays
    of plan.dtype, every value finite."""
    o = plan.options
    d = o.d
    lead = 3 - d
    g = plan.geometry
    n, c = x.shape[:2]
    cout = plan.w_shape[0]
    groups = plan.groups
    cin_g, cout_g = c // groups, cout // groups
    dtype = plan.dtype
    tile, size, images = plan.fft_tiles
    ext = list(extents(g.dilation[lead:], g.kernel[lead:]))
    stride = g.stride[lead:]
    out = g.out[lead:]
    span = _span(g, d)
    sizes = plan.x_shape[2:]
    pads_before = g.pad[lead:]
    pads_after = [(oo - 1) * s + e - sz - pb for oo, s, e, sz, pb in
                  zip(out, stride, ext, sizes, pads_before)]
    maps = [padded_index(sz, pb, max(pa, 0), o.padding_mode) for sz, pb, pa in
            zip(sizes, pads_before, pads_after)]
    constant = [m < 0 for m in maps]          # entries that read the fill, not x
    np.maximum(maps[0], 0, out=maps[0])
    for m in maps[1:]:
        np.maximum(m, 0, out=m)
    axes = tuple(range(2, 2 + d))
    # the kernels, dilated, transformed once (conjugated: correlation, not convolution)
    wd = np.zeros((cout, cin_g) + tuple(ext), dtype=dtype)
    wd[(slice(None), slice(None)) + tuple(slice(None, None, dl) for dl in g.dilation[lead:])] = w
    kf = scipy.fft.rfftn(wd, s=size, axes=axes)
    del wd
    np.conjugate(kf, out=kf)
    y = np.empty((n, cout) + tuple(out), dtype=dtype)
    fill = dtype.type(o.fill_value)
    starts = [range(0, u, t) for u, t in zip(span, tile)]
    # Tiles (and chunks of images) are independent: ``threads`` of them run at once, each
    # transform on one thread (a single tile's transform split over threads ran slower).
    # SciPy's own transform threads are never used: a fork from another thread during a
    # call could hang in their pool (SciPy's fork handler) and fail the parent's calls.
    # With the elementwise products a chunk's size changes no bit, so the budget's images
    # are shared among the threads; the batched products keep the plan's chunk.
    chunk = max(1, min(images // threads, -(-n // threads))) if cin_g <= 8 else images
    # (made as they are taken: a list of them grew with images x tiles past the budget)
    tasks = itertools.product(range(0, n, chunk), itertools.product(*map(range, map(len,
                                                                                  starts))))
    count = -(-n // chunk) * math.prod(len(r) for r in starts)
    concurrent = max(1, min(threads, images // min(chunk, n), count))

    def one(task):
        n0, corner = task
        xb = x[n0:n0 + chunk]
        u0 = [starts[a][i] for a, i in enumerate(corner)]
        u1 = [min(a0 + t, u) for a0, t, u in zip(u0, tile, span)]
        # the tile's input region, read through the padding's index map at once
        reach = [slice(u0[a], u1[a] + ext[a] - 1) for a in range(d)]
        runs = [_run(m[r], k[r]) for m, k, r in zip(maps, constant, reach)]
        if all(r is not None for r in runs):    # inside x: a view, not a copy
            region = xb[(slice(None), slice(None)) + tuple(runs)]
        else:
            region = xb[(slice(None), slice(None)) + np.ix_(*[m[r] for m, r in
                                                              zip(maps, reach)])]
            for a in range(d):
                m = constant[a][reach[a]]
                if m.any():
                    region[(slice(None), slice(None)) + (slice(None),) * a + (m,)] = fill
        xf = scipy.fft.rfftn(region, s=size, axes=axes)
        del region
        nb = xf.shape[0]
        yf = np.empty((nb, cout) + xf.shape[2:], dtype=xf.dtype)
        tmp = np.empty((nb, cout_g) + xf.shape[2:], dtype=xf.dtype)
        for gi in range(groups):
            xs = xf[:, gi * cin_g:(gi + 1) * cin_g]
            ks = kf[gi * cout_g:(gi + 1) * cout_g]
            acc = yf[:, gi * cout_g:(gi + 1) * cout_g]
            if cin_g <= 8:            # a few channels: multiply-add in place
                np.multiply(xs[:, None, 0], ks[None, :, 0], out=acc)
                for i in range(1, cin_g):
                    np.multiply(xs[:, None, i], ks[None, :, i], out=tmp)
                    acc += tmp
            else:                     # many: one (images x C_g)(C_g x Cout_g) product
                # per frequency (NumPy's BLAS: on concurrent tiles its threads may
                # outnumber the cores for a moment; these products are small)
                prod = np.matmul(xs.reshape(nb, cin_g, -1).transpose(2, 0, 1),
                                 ks.reshape(cout_g, cin_g, -1).transpose(2, 1, 0))
                acc[...] = prod.transpose(1, 2, 0).reshape((nb, cout_g) + xs.shape[2:])
                del prod
        del xf, tmp
        yt = scipy.fft.irfftn(yf, s=size, axes=axes)
        # the stride-1 outputs of this tile; the stride keeps every s-th
        src, dst = [], []
        for a in range(d):
            first = -(-u0[a] // stride[a]) * stride[a]
            src.append(slice(first - u0[a], u1[a] - u0[a], stride[a]))
            dst.append(slice(first // stride[a], (u1[a] - 1) // stride[a] + 1))
        y[(slice(n0, n0 + nb), slice(None)) + tuple(dst)] = \
            yt[(slice(None), slice(None)) + tuple(src)]

    _run_tasks(one, tasks, concurrent)
    if bias is not None:
        y += bias.reshape((1, -1) + (1,) * d)
    return y
