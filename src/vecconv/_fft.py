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
whole map's transform is ever made. The tile size is chosen so that the transformed
kernels and one chunk of images' transforms fit the workspace budget.

A NaN or inf would reach every output of its tile through the transform, and a value far
above the rest of its image would drown the tile's small outputs in its rounding error,
so the runner (``_run._route_ok``) sends such images (or every image, for non-finite
kernels or fill) to the GEMM route, or per-map under a connection table.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.fft

from ._shapes import extents, padded_index

#: The kernels' extent is padded to at least this many times itself per tile: (T + e - 1)
#: / T transform entries per output (1.125 at 8 e).
TILE_PER_EXTENT = 8
#: Measured on the machines vecconv runs on: one floating-point operation of the FFT route
#: (transforms and complex products, counted as below) costs about this many GEMM ones.
FFT_COST = 6.0
#: Kernels with fewer taps never take the FFT route under algorithm='auto' (its model
#: never favoured one; the check costs a planning step).
FFT_MIN_TAPS = 25


#: Axes longer than this never take the FFT route (its transforms would be past memory).
MAX_AXIS = 2**31


def _next_len(n):
    return scipy.fft.next_fast_len(int(n), real=True)


def tile_shape(geometry, d, cout, cin_g, groups, itemsize, workspace):
    """(stride-1 outputs per tile, transform size) per spatial axis, and images per
    chunk, or None when the route cannot take this convolution within the workspace.

    The budget holds everything the route allocates besides the output: the dilated
    kernels and their transforms (Cout, C/groups, F/2, complex), and per image of a chunk
    the tile read from x, its transform, the transformed outputs with the products'
    temporaries, and the outputs transformed back.
    """
    lead = 3 - d
    ext = list(extents(geometry.dilation[lead:], geometry.kernel[lead:]))
    span = [(o - 1) * s + 1 for o, s in zip(geometry.out[lead:], geometry.stride[lead:])]
    if min(geometry.size[lead:]) == 0 or max(span + ext) > MAX_AXIS:
        return None             # nothing to transform, or transforms past any memory
    c = cin_g * groups
    complex_item = 2 * itemsize
    padded = [(o - 1) * s + e for o, s, e in zip(geometry.out[lead:], geometry.stride[lead:],
                                                   ext)]
    maps = 9 * sum(padded)      # each axis's index map (int64) and constant mask
    tile = [min(u, max(TILE_PER_EXTENT * e, 32)) for u, e in zip(span, ext)]
    while True:
        size = [_next_len(t + e - 1) for t, e in zip(tile, ext)]
        half = math.prod(size[:-1]) * (size[-1] // 2 + 1)
        full = math.prod(size)
        kernels = cout * cin_g * (half * complex_item + math.prod(ext) * itemsize)
        per_image = (c * full * itemsize                  # the tile read from x
                     + c * half * complex_item            # its transform
                     + 3 * cout * half * complex_item     # products, sum, a temporary
                     + cout * full * itemsize)            # transformed back
        if maps + kernels + per_image <= workspace:
            break
        # halve the largest tile that is still above its kernel's extent
        a = max(range(d), key=lambda i: tile[i] / ext[i])
        if tile[a] <= ext[a] and all(t <= e for t, e in zip(tile, ext)):
            return None
        tile[a] = max(1, tile[a] // 2)
    images = max(1, (workspace - maps - kernels) // per_image)
    # each transform size is what the tile needs, no more
    tile = [f - e + 1 for f, e in zip(size, ext)]
    tile = [min(t, u) for t, u in zip(tile, span)]
    return tuple(tile), tuple(size), images


def cost_ratio(n, geometry, d, cout, cin_g, groups, tiles):
    """The FFT route's estimated time over im2col's, in GEMM-flop units."""
    tile, size, _ = tiles
    lead = 3 - d
    taps = geometry.taps
    positions = geometry.positions
    direct = 2.0 * n * cout * cin_g * taps * positions
    span = [(o - 1) * s + 1 for o, s in zip(geometry.out[lead:], geometry.stride[lead:])]
    n_tiles = math.prod(-(-u // t) for u, t in zip(span, tile))
    f = math.prod(size)
    half = f / 2
    transforms = 2.5 * f * math.log2(max(f, 2)) * (n * cin_g * groups + n * cout) * n_tiles \
        + 2.5 * f * math.log2(max(f, 2)) * cout * cin_g
    products = 8.0 * n * cout * cin_g * half * n_tiles
    return FFT_COST * (transforms + products) / max(direct, 1.0)


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
    span = [(oo - 1) * s + 1 for oo, s in zip(out, stride)]
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
    kf = scipy.fft.rfftn(wd, s=size, axes=axes, workers=threads)
    del wd
    np.conjugate(kf, out=kf)
    y = np.empty((n, cout) + tuple(out), dtype=dtype)
    fill = dtype.type(o.fill_value)
    starts = [range(0, u, t) for u, t in zip(span, tile)]
    for n0 in range(0, n, images):
        xb = x[n0:n0 + images]
        for corner in np.ndindex(*[len(r) for r in starts]):
            u0 = [starts[a][i] for a, i in enumerate(corner)]
            u1 = [min(a0 + t, u) for a0, t, u in zip(u0, tile, span)]
            # the tile's input region, read through the padding's index map at once
            reach = [slice(u0[a], u1[a] + ext[a] - 1) for a in range(d)]
            region = xb[(slice(None), slice(None)) + np.ix_(*[m[r] for m, r in
                                                              zip(maps, reach)])]
            for a in range(d):
                m = constant[a][reach[a]]
                if m.any():
                    region[(slice(None), slice(None)) + (slice(None),) * a + (m,)] = fill
            xf = scipy.fft.rfftn(region, s=size, axes=axes, workers=threads)
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
                    prod = np.matmul(xs.reshape(nb, cin_g, -1).transpose(2, 0, 1),
                                     ks.reshape(cout_g, cin_g, -1).transpose(2, 1, 0))
                    acc[...] = prod.transpose(1, 2, 0).reshape((nb, cout_g) + xs.shape[2:])
                    del prod
            del xf, tmp
            yt = scipy.fft.irfftn(yf, s=size, axes=axes, workers=threads)
            # the stride-1 outputs of this tile; the stride keeps every s-th
            src, dst = [], []
            for a in range(d):
                first = -(-u0[a] // stride[a]) * stride[a]
                src.append(slice(first - u0[a], u1[a] - u0[a], stride[a]))
                dst.append(slice(first // stride[a], (u1[a] - 1) // stride[a] + 1))
            y[(slice(n0, n0 + xb.shape[0]), slice(None)) + tuple(dst)] = \
                yt[(slice(None), slice(None)) + tuple(src)]
    if bias is not None:
        y += bias.reshape((1, -1) + (1,) * d)
    return y
