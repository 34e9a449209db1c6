"""vecconv on Dask arrays: convolutions and pooling of data past one machine's memory.

Each function takes a ``dask.array`` ``x`` (batched ``(N, C, *spatial)`` or unbatched
``(C, *spatial)``) with NumPy weights and returns ``dask.array``\\ s; nothing is computed
until you ask. Chunks are free along the batch and the spatial axes, misaligned ones
included; a convolution's input channels are gathered into one chunk (each output map
needs every input map, eq. 1 of the derivation), pooling keeps the channel chunks.

How a block finds its data. Every output entry is *owned* by the block of the input in
which its window starts, so the output is chunked like the input (one output chunk per
input chunk, its length the number of windows starting there). A block then needs the
input it owns plus the rest of its last windows: a halo on the right side only, of depth
``dilation * (k - 1)`` (the window's extent less one), which ``dask.array.map_overlap``
attaches. Stride, dilation and padding set that depth exactly; the padding itself is made
once on the Dask array by the same index map the in-memory engine reads through (zeros,
a constant, reflect, replicate, circular or symmetric, any width), so a block computes a
'valid' convolution, the same numbers as the whole array gives in memory, to rounding.

The adjoints run the other way round. A block of ``dx`` (eq. 16-18 of the derivation: the
full convolution of delta with the flipped kernels) needs the deltas of every window that
covers it: the deltas it owns plus a halo on the left, ``ceil((extent - 1) / stride)``
of them. The padding's adjoint then adds the gradient of each padded entry to the entry it
was read from. ``dw`` and ``db`` (eq. 12-13 and 10) are sums over every block: each block
gives its own, and Dask adds them in a tree (``split_every`` at a time), never all in one
task. ``conv_transpose`` is that same gather, with x in the role of delta.

The blocks call the in-memory ``vecconv`` functions, so they use vecconv's threads inside
each Dask worker: with several worker threads or processes on one machine, give each
``vecconv.set_num_threads(1)`` (``client.run(vecconv.set_num_threads, 1)``) or use one
worker thread per process.

float32 stays float32; the rules for dtypes, options and errors are those of the
in-memory functions of the same names, which check the options before any graph is made.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

try:
    import dask.array as da
except ImportError as exc:          # pragma: no cover - the extra is missing
    raise ImportError("vecconv.dask needs Dask: pip install 'vecconv[dask]'") from exc

from . import _plan, _run, functional
from ._options import NUMPY_PAD_MODES, conv_options, conv_transpose_options, pool_options
from ._pool_plan import block_plan, plan_pool
from ._shapes import LAYOUTS, batched, extents, kernel_axes, pool_axes
from ._validate import as_array, check_ndim, flag, float_dtype, floats, integer

__all__ = ["conv", "conv_backward", "conv_transpose", "avg_pool", "max_pool"]

#: How many block partials of dw (and db) one task of the tree reduction adds.
SPLIT_EVERY = 4



# ----------------------------------------------------------------------------- inputs
def _dask(name, a):
    """``a`` as a dask array (a NumPy array is wrapped with Dask's automatic chunks);
    refuses dtypes vecconv does not compute in and chunk sizes Dask does not know."""
    if isinstance(a, da.Array):
        arr = a
    else:
        if a is None or isinstance(a, (str, bytes)):
            raise TypeError(f"{name} must be a dask or NumPy array, got {type(a).__name__}")
        arr = da.from_array(np.asarray(a))
    float_dtype(**{name: np.empty(0, arr.dtype)})          # refuses complex, object, str
    if any(math.isnan(c) for axis in arr.chunks for c in axis):
        raise ValueError(f"{name} has unknown chunk sizes (after boolean indexing, say): call "
                         f"{name}.compute_chunk_sizes() first")
    return arr


def _merge(chunks, least):
    """Chunks of at least ``least`` entries, made by joining each short chunk to its
    neighbour (an axis shorter than ``least`` becomes one chunk)."""
    out: list[int] = []
    for c in chunks:
        if out and out[-1] < least:
            out[-1] += c
        elif c:
            out.append(c)
    while len(out) > 1 and out[-1] < least:
        last = out.pop()
        out[-1] += last
    return tuple(out) or tuple(chunks)


def _edges(chunks):
    return tuple(int(e) for e in np.concatenate([[0], np.cumsum(chunks)]))


def _take(x, axis, index):
    return x[(slice(None),) * axis + (index,)]


def _meta(ndim, dtype):
    return np.empty((0,) * ndim, dtype=dtype)


# ----------------------------------------------------------------------------- padding
def _source(n, before, after, mode):
    """Where each entry of a padded axis is read from (numpy.pad's index map, which is
    the engine's too). Only the padded ends are made: for an axis longer than both pads
    together the middle is the axis itself, and the map of the ends is the map of a short
    axis's ends, shifted (so a graph over a 2**30-entry axis costs the pads, not the
    axis)."""
    reach = before + after
    if n <= 2 * reach + 2:
        return np.pad(np.arange(n), (before, after), mode=NUMPY_PAD_MODES[mode])
    m = 2 * reach + 2                       # a short axis with the same ends
    short = np.pad(np.arange(m), (before, after), mode=NUMPY_PAD_MODES[mode])
    ends = np.concatenate([short[:before], short[before + m:]])
    # sources near the short axis's end are near the long axis's end (pads < n/2, so the
    # two regions never meet)
    ends = np.where(ends > reach, ends + (n - m), ends)
    return np.concatenate([ends[:before], np.arange(n), ends[before:]])


def _pad(x, pads, mode, fill):
    """x padded along its spatial axes, as the engine reads it."""
    for a, (before, after) in enumerate(pads):
        if before == after == 0:
            continue
        axis = 2 + a
        n = x.shape[axis]
        if mode in ("zeros", "constant"):
            def part(k):
                shape = x.shape[:axis] + (k,) + x.shape[axis + 1:]
                chunks = x.chunks[:axis] + ((k,),) + x.chunks[axis + 1:]
                return da.full(shape, fill, dtype=x.dtype, chunks=chunks)
            left, right = part(before), part(after)
        else:
            src = _source(n, before, after, mode)
            left, right = _take(x, axis, src[:before]), _take(x, axis, src[before + n:])
        x = da.concatenate([p for p in (left, x, right) if p.shape[axis]], axis=axis)
    return x


def _route(part, idx, span, axis):
    """Add slab i of ``part`` (along ``axis``) into slab ``idx[i]`` of a zero array of
    ``span`` slabs: the padded entries' gradients sent to where they were read from (a
    scatter-add, so an inf or NaN stays where it lands)."""
    shape = part.shape[:axis] + (span,) + part.shape[axis + 1:]
    out = np.zeros(shape, dtype=part.dtype)
    lead = (slice(None),) * axis
    for i, t in enumerate(idx):
        out[lead + (int(t),)] += part[lead + (i,)]
    return out


def _pad_adjoint(g, sizes, pads, mode):
    """The adjoint of ``_pad``: the gradient of each padded entry added to the entry it
    was read from (the constant of a constant pad takes none)."""
    for a in reversed(range(len(pads))):
        before, after = pads[a]
        axis, n = 2 + a, sizes[a]
        mid = g[(slice(None),) * axis + (slice(before, before + n),)]
        if mode not in ("zeros", "constant") and before + after:
            src = _source(n, before, after, mode)
            for lo, idx in ((0, src[:before]), (before + n, src[before + n:])):
                if not idx.size:
                    continue
                t0, t1 = int(idx.min()), int(idx.max()) + 1
                part = g[(slice(None),) * axis + (slice(lo, lo + idx.size),)]
                part = part.rechunk({axis: -1})
                extra = part.map_blocks(_route, idx=idx - t0, span=t1 - t0, axis=axis,
                                        chunks=part.chunks[:axis] + ((t1 - t0,),)
                                        + part.chunks[axis + 1:], dtype=g.dtype)
                pieces = [_take(mid, axis, slice(0, t0)),
                          _take(mid, axis, slice(t0, t1)) + extra,
                          _take(mid, axis, slice(t1, n))]
                mid = da.concatenate([p for p in pieces if p.shape[axis]], axis=axis)
        g = mid
    return g


# ----------------------------------------------------------------------------- geometry
class _Axis(NamedTuple):
    """One spatial axis of a 'valid' convolution over chunks: the chunk edges of the
    (padded) input, the stride, the window's extent and the number of outputs."""
    edges: tuple
    stride: int
    extent: int
    out: int

    def owned(self, j):
        """The outputs whose window starts in chunk j: [o0, o1)."""
        s = self.stride
        return (min(self.out, -(-self.edges[j] // s)), min(self.out, -(-self.edges[j + 1] // s)))

    def out_chunks(self):
        return tuple(o1 - o0 for o0, o1 in map(self.owned, range(len(self.edges) - 1)))

    def halo(self, side):
        """Depth of the halo a block needs: the input a block's last windows read past it
        ('right', forward and dw), or the deltas of the earlier windows that cover a
        block ('left', dx)."""
        if len(self.edges) <= 2:
            return 0
        if side == "right":
            return self.extent - 1
        return -(-(self.extent - 1) // self.stride)


def _least_backward(stride, extent):
    """Chunk size that leaves every chunk of dy at least the left halo deep."""
    return stride * (-(-(extent - 1) // stride) + 1) + extent


def _place(local, local_start, target_start, target_len):
    """The part of ``local`` (whose spatial axes start at ``local_start`` in the whole
    array) that falls in the box ``target_start + target_len``; zeros where it has none."""
    shape = local.shape[:2] + tuple(target_len)
    src, dst = [slice(None)] * 2, [slice(None)] * 2
    for ls, ll, ts, tl in zip(local_start, local.shape[2:], target_start, target_len):
        lo, hi = max(ls, ts), min(ls + ll, ts + tl)
        if hi <= lo:
            return np.zeros(shape, dtype=local.dtype)
        src.append(slice(lo - ls, hi - ls))
        dst.append(slice(lo - ts, hi - ts))
    part = local[tuple(src)]
    if part.shape == shape:
        return part
    out = np.zeros(shape, dtype=local.dtype)
    out[tuple(dst)] = part
    return out


# ----------------------------------------------------------------------------- convolution
class _ConvSetup(NamedTuple):
    x: Any              # batched, padded, channels in one chunk, merged spatial chunks
    sizes: tuple        # spatial sizes of x before padding
    chunks: tuple       # the caller's chunks of the batched x
    w: np.ndarray
    bias: np.ndarray | None
    d: int
    unbatched: bool
    dtype: np.dtype
    pads: tuple
    mode: str
    axes: tuple         # one _Axis per spatial axis
    opts: dict          # the keywords each block passes to the in-memory function


def _conv_setup(fname, x, w, bias, stride, padding, dilation, groups, connections, flip,
                padding_mode, fill_value, workspace, least, algorithm="auto"):
    x = _dask("x", x)
    w = as_array("w", w)
    bias = None if bias is None else as_array("bias", bias)
    d = kernel_axes(w.shape, None, fname)
    options = conv_options(d, stride=stride, padding=padding, dilation=dilation,
                           groups=groups, connections=connections, flip=flip,
                           padding_mode=padding_mode, fill_value=fill_value,
                           algorithm=algorithm)
    if workspace is not None:
        integer("workspace", workspace, 1)
    x, unbatched = batched(x, d)
    check_ndim("x", x.shape, d + 2, LAYOUTS[d][0])
    dtype = float_dtype(x=np.empty(0, x.dtype), w=w, bias=bias)
    # the whole array's shapes against the options, by arithmetic (it may be past what
    # one engine call takes; each block is planned when it runs)
    pads, outs = _plan.check_conv(tuple(x.shape), w.shape,
                                  None if bias is None else bias.shape, options)
    st, dl = options.stride, options.dilation
    spans = extents(dl, w.shape[2:])
    sizes = tuple(int(n) for n in x.shape[2:])
    chunks = x.chunks
    xp = _pad(x.astype(dtype), pads, padding_mode, options.fill_value)
    merged = {1: -1}
    for a in range(d):
        merged[2 + a] = _merge(xp.chunks[2 + a], least(st[a], spans[a]))
    xp = xp.rechunk(merged)
    axes = tuple(_Axis(_edges(xp.chunks[2 + a]), st[a], spans[a], outs[a]) for a in range(d))
    opts = dict(stride=st, dilation=dl, groups=groups, connections=connections, flip=flip,
                workspace=workspace, algorithm=algorithm)
    return _ConvSetup(xp, sizes, chunks, w.astype(dtype),
                      None if bias is None else bias.astype(dtype), d, unbatched, dtype,
                      pads, padding_mode, axes, opts)


def _window_slices(axes, block_id):
    """For block ``block_id``: the outputs it owns and the slice of its overlapped input
    that their windows read, per spatial axis (None when it owns none)."""
    index = [slice(None), slice(None)]
    for a, ax in enumerate(axes):
        j = block_id[2 + a]
        o0, o1 = ax.owned(j)
        if o1 <= o0:
            return None
        start = o0 * ax.stride - ax.edges[j]
        index.append(slice(start, start + (o1 - o0 - 1) * ax.stride + ax.extent))
    return tuple(index)


def _conv_block(xb, w, bias, axes, opts, block_id=None):
    index = _window_slices(axes, block_id)
    if index is None or xb.shape[0] == 0:       # no window starts in this block
        owned = tuple(o1 - o0 for o0, o1 in (ax.owned(block_id[2 + a])
                                             for a, ax in enumerate(axes)))
        return np.zeros((xb.shape[0], w.shape[0]) + owned, dtype=w.dtype)
    return functional.conv(xb[index], w, bias, padding=0, **opts)


def _depth(ndim, halos, side):
    depth = {a: (0, 0) for a in range(ndim)}
    for a, h in enumerate(halos):
        depth[2 + a] = (0, h) if side == "right" else (h, 0)
    return depth


def conv(x, w, bias=None, *, stride=1, padding=0, dilation=1, groups=1, connections=None,
         flip=False, padding_mode="zeros", fill_value=0.0, workspace=None, algorithm="auto"):
    """``vecconv.conv`` of a Dask array: eq. 1/12 of the derivation, block by block.

    Parameters
    ----------
    x : dask.array.Array or array_like, shape ``(N, C, *spatial)`` or ``(C, *spatial)``
        The input maps, chunked any way along the batch and spatial axes; the channels are
        gathered into one chunk. Another array is wrapped by ``dask.array.from_array``
        with its automatic chunks.
    w : array_like, shape ``(Cout, C/groups, *kernel)``
        The kernels, in memory (NumPy); d = ``w.ndim - 2`` spatial axes.
    bias : array_like, shape (Cout,), optional
        Added to every entry of each output map.
    stride, padding, dilation, groups, connections, flip, padding_mode, fill_value : optional
        As for :func:`vecconv.conv`, which checks them before any graph is made.
    workspace : int, optional
        Byte budget of the column buffers of each block's call.
    algorithm : {'auto', 'im2col', 'fft', 'winograd', 'direct'}
        The forward pass's algorithm in every block, as for :func:`vecconv.conv` ('auto':
        each block's planner chooses).

    Returns
    -------
    y : dask.array.Array, shape ``(N, Cout, *out)``
        Lazy. One chunk per block along the batch and spatial axes, holding the windows
        that start in that block (chunks shorter than the window are first joined to a
        neighbour; a block where no window starts, possible with a stride larger than
        the chunks, gives an empty chunk); the output channels in one chunk; float32 if
        every input is float32.
    """
    s = _conv_setup("conv", x, w, bias, stride, padding, dilation, groups, connections, flip,
                    padding_mode, fill_value, workspace, lambda st, e: e - 1, algorithm)
    xp, nd = s.x, s.x.ndim
    chunks = (xp.chunks[0], (s.w.shape[0],)) + tuple(ax.out_chunks() for ax in s.axes)
    y = da.map_overlap(_conv_block, xp, depth=_depth(nd, [ax.halo("right") for ax in s.axes],
                                                     "right"),
                       boundary="none", trim=False, allow_rechunk=False, chunks=chunks,
                       dtype=s.dtype, meta=_meta(nd, s.dtype), w=s.w, bias=s.bias,
                       axes=s.axes, opts=s.opts)
    return y[0] if s.unbatched else y


def _dw_block(xb, dyb, w, axes, opts, block_id=None):
    # block_id indexes the partials (N, *spatial, *w.shape): no channel axis
    index = _window_slices(axes, (block_id[0], 0) + tuple(block_id[1:]))
    lead = (1,) * (xb.ndim - 1)
    if index is None or dyb.shape[0] == 0:
        return np.zeros(lead + w.shape, dtype=w.dtype)
    _, dw, _ = functional.conv_backward(dyb, xb[index], w, padding=0, input_grad=False, **opts)
    return dw.reshape(lead + w.shape)


def _dx_block(dyb, w, channels, axes, opts, block_id=None):
    """dx of one block of the padded input from the deltas of every window covering it."""
    local_idx, start, target_start, target_len = [slice(None)] * 2, [], [], []
    for a, ax in enumerate(axes):
        j = block_id[2 + a]
        s, e = ax.stride, ax.extent
        a0, a1 = ax.edges[j], ax.edges[j + 1]
        o0, o1 = ax.owned(j)
        first = o0 - (dyb.shape[2 + a] - (o1 - o0))       # the first delta the block holds
        lo = max(first, 0, -(-(a0 - e + 1) // s))
        local_idx.append(slice(lo - first, o1 - first))
        start.append(lo * s)
        target_start.append(a0)
        target_len.append(a1 - a0)
    dy_local = dyb[tuple(local_idx)]
    if 0 in dy_local.shape[2:]:
        return np.zeros(dyb.shape[:1] + (channels,) + tuple(target_len), dtype=w.dtype)
    region = tuple((m - 1) * ax.stride + ax.extent for m, ax in zip(dy_local.shape[2:], axes))
    x_local = np.zeros(dyb.shape[:1] + (channels,) + region, dtype=w.dtype)
    dx, _, _ = functional.conv_backward(dy_local, x_local, w, padding=0, weight_grad=False, **opts)
    return _place(dx, start, target_start, target_len)


def conv_backward(dy, x, w, *, stride=1, padding=0, dilation=1, groups=1, connections=None,
                  flip=False, padding_mode="zeros", fill_value=0.0, workspace=None,
                  input_grad=True, weight_grad=True, algorithm="auto"):
    """``vecconv.conv_backward`` of Dask arrays: dx (eq. 16-18), dw (eq. 12-13), db (eq. 10).

    Parameters
    ----------
    dy : dask.array.Array or array_like, the shape of ``conv``'s output
        dE/dy, chunked any way (it is rechunked to the blocks of ``conv``'s output).
    x : dask.array.Array or array_like, shape ``(N, C, *spatial)`` or ``(C, *spatial)``
        The input of the forward pass, chunked any way along the batch and spatial axes.
    w : array_like, shape ``(Cout, C/groups, *kernel)``
        The kernels, in memory.
    stride, padding, dilation, groups, connections, flip, padding_mode, fill_value : optional
        As for :func:`vecconv.conv`.
    workspace : int, optional
        Byte budget of the column buffers of each block's call.
    input_grad, weight_grad : bool
        False skips dx, or dw and db, as :func:`vecconv.conv_backward` does.
    algorithm : {'auto', 'im2col', 'fft', 'winograd', 'direct'}
        As given to :func:`conv`; each block's passes route as
        :func:`vecconv.conv_backward`'s do.

    Returns
    -------
    dx : dask.array.Array or None
        Shaped and chunked like x.
    dw : dask.array.Array or None
        Shaped like w: the blocks' own dw added in a tree, ``SPLIT_EVERY`` at a time.
    db : dask.array.Array or None
        Shape (Cout,): the sum of dy over the batch and every position (a tree sum).
    """
    flag("input_grad", input_grad)
    flag("weight_grad", weight_grad)
    s = _conv_setup("conv_backward", x, w, None, stride, padding, dilation, groups,
                    connections, flip, padding_mode, fill_value, workspace, _least_backward,
                    algorithm)
    dy = _dask("dy", dy)
    if s.unbatched:
        dy = dy[None]
    want = (s.x.shape[0], s.w.shape[0]) + tuple(ax.out for ax in s.axes)
    if tuple(dy.shape) != want:
        raise ValueError(f"dy must have the output shape {want[1:] if s.unbatched else want} "
                         f"of this convolution, got "
                         f"{tuple(dy.shape[1:]) if s.unbatched else tuple(dy.shape)}")
    dtype = float_dtype(dy=np.empty(0, dy.dtype), x=np.empty(0, s.dtype), w=s.w)
    if dtype != s.dtype:
        s = s._replace(x=s.x.astype(dtype), w=s.w.astype(dtype), dtype=dtype)
    xp, nd = s.x, s.x.ndim
    dy = dy.astype(dtype).rechunk((xp.chunks[0], -1) + tuple(ax.out_chunks() for ax in s.axes))
    dx = dw = db = None
    if weight_grad:
        xo = da.overlap.overlap(xp, depth=_depth(nd, [ax.halo("right") for ax in s.axes],
                                                 "right"), boundary="none", allow_rechunk=False)
        blocks = xp.numblocks[:1] + xp.numblocks[2:]
        parts = da.map_blocks(
            _dw_block, xo, dy, drop_axis=1, new_axis=list(range(nd - 1, nd - 1 + s.w.ndim)),
            chunks=tuple((1,) * b for b in blocks) + tuple((k,) for k in s.w.shape),
            dtype=dtype, meta=_meta(nd - 1 + s.w.ndim, dtype), w=s.w,
            axes=s.axes, opts=s.opts)
        dw = parts.sum(axis=tuple(range(nd - 1)), split_every=SPLIT_EVERY, dtype=dtype)
        db = dy.sum(axis=(0,) + tuple(range(2, nd)), split_every=SPLIT_EVERY, dtype=dtype)
    if input_grad:
        dyo = da.overlap.overlap(dy, depth=_depth(nd, [ax.halo("left") for ax in s.axes],
                                                  "left"), boundary="none", allow_rechunk=False)
        g = da.map_blocks(_dx_block, dyo, chunks=(xp.chunks[0], (xp.shape[1],)) + xp.chunks[2:],
                          dtype=dtype, meta=_meta(nd, dtype), w=s.w, channels=xp.shape[1],
                          axes=s.axes, opts=s.opts)
        dx = _pad_adjoint(g, s.sizes, s.pads, s.mode).rechunk(s.chunks)
        if s.unbatched:
            dx = dx[0]
    return dx, dw, db


# ----------------------------------------------------------------------------- transpose
def _transpose_block(xb, w, axes, opts, total, block_id=None):
    """One block of the full (uncropped) transposed convolution: the entries
    [a0 * stride, a1 * stride) (the last block: to the end) from the inputs it owns and
    those of earlier blocks whose windows reach it."""
    start, target_start, target_len = [], [], []
    for a, ax in enumerate(axes):
        j = block_id[2 + a]
        a0, a1 = ax.edges[j], ax.edges[j + 1]
        first = a0 - (xb.shape[2 + a] - (a1 - a0))
        start.append(first * ax.stride)
        target_start.append(a0 * ax.stride)
        end = total[a] if j == len(ax.edges) - 2 else a1 * ax.stride
        target_len.append(end - a0 * ax.stride)
    full = functional.conv_transpose(xb, w, padding=0, **opts)
    return _place(full, start, target_start, target_len)


def conv_transpose(x, w, bias=None, *, stride=1, padding=0, output_padding=0, dilation=1,
                   groups=1, output_size=None, workspace=None, algorithm="auto"):
    """``vecconv.conv_transpose`` of a Dask array (eq. 16-18's product and col2im).

    Parameters
    ----------
    x : dask.array.Array or array_like, shape ``(N, Cin, *spatial)`` or ``(Cin, *spatial)``
        The input maps, chunked any way along the batch and spatial axes.
    w : array_like, shape ``(Cin, Cout/groups, *kernel)``
        The kernels, in memory.
    bias : array_like, shape (Cout,), optional
        Added to every entry of each output map.
    stride, padding, output_padding, dilation, groups, output_size : optional
        As for :func:`vecconv.conv_transpose`.
    workspace : int, optional
        Byte budget of the column buffers of each block's call.
    algorithm : {'auto', 'im2col', 'winograd', 'direct'}
        As for :func:`vecconv.conv_transpose`, in every block.

    Returns
    -------
    y : dask.array.Array, shape ``(N, Cout, *out)``
        Lazy. Each input chunk [a0, a1) gives the output entries [a0 * stride,
        a1 * stride) before the padding is cropped.
    """
    x = _dask("x", x)
    w = as_array("w", w)
    bias = None if bias is None else as_array("bias", bias)
    d = kernel_axes(w.shape, None, "conv_transpose")
    options = conv_transpose_options(d, stride=stride, padding=padding,
                                     output_padding=output_padding, dilation=dilation,
                                     groups=groups, output_size=output_size,
                                     algorithm=algorithm)
    if workspace is not None:
        integer("workspace", workspace, 1)
    x, unbatched = batched(x, d)
    dtype = float_dtype(x=np.empty(0, x.dtype), w=w, bias=bias)
    y_shape = _plan.transposed_output_shape(tuple(x.shape), w.shape, options)
    if bias is not None:
        check_ndim("bias", bias.shape, 1, "(Cout,)")
        if bias.shape[0] != y_shape[1]:
            raise ValueError(f"bias must have shape ({y_shape[1]},) to match w, got "
                             f"{bias.shape}")
    st, dl, pads, out = options.stride, options.dilation, options.padding, y_shape[2:]
    spans = extents(dl, w.shape[2:])
    merged = {1: -1}
    for a in range(d):      # each chunk at least the left halo deep
        merged[2 + a] = _merge(x.chunks[2 + a], -(-(spans[a] - 1) // st[a]) + 1)
    x = x.astype(dtype).rechunk(merged)
    axes = tuple(_Axis(_edges(x.chunks[2 + a]), st[a], spans[a], x.shape[2 + a])
                 for a in range(d))
    # the full result before cropping: (n - 1) * s + extent, and at least pb + out
    total = tuple(max((n - 1) * s + e, pb + o) for n, s, e, (pb, _), o in
                  zip(x.shape[2:], st, spans, pads, out))
    chunks = [x.chunks[0], (w.shape[1] * groups,)]
    for a, ax in enumerate(axes):
        c = [(ax.edges[j + 1] - ax.edges[j]) * ax.stride for j in range(len(ax.edges) - 2)]
        chunks.append(tuple(c) + (total[a] - sum(c),))
    halos = [(ax.extent - 1) // ax.stride if len(ax.edges) > 2 else 0 for ax in axes]
    full = da.map_overlap(_transpose_block, x, depth=_depth(x.ndim, halos, "left"),
                          boundary="none", trim=False, allow_rechunk=False,
                          chunks=tuple(chunks), dtype=dtype, meta=_meta(x.ndim, dtype),
                          w=w.astype(dtype), axes=axes, total=total,
                          opts=dict(stride=st, dilation=dl, groups=groups, workspace=workspace,
                                   algorithm=algorithm))
    y = full[(slice(None), slice(None)) + tuple(slice(pb, pb + o) for (pb, _), o in
                                                zip(pads, out))]
    if bias is not None:
        y = y + bias.astype(dtype).reshape((1, -1) + (1,) * d)
    return y[0] if unbatched else y


# ----------------------------------------------------------------------------- pooling
class _PoolAxis(NamedTuple):
    edges: tuple
    owned: tuple        # (o0, o1) per chunk


def _pool_block(xb, options, spatial, axes, is_max, want_indices, work, block_id=None):
    spans = []
    for a, ax in enumerate(axes):
        j = block_id[2 + a]
        o0, o1 = ax.owned[j]
        spans.append((ax.edges[j], o0, o1))
    counts = tuple(o1 - o0 for _, o0, o1 in spans)
    out_shape = xb.shape[:2] + counts
    if 0 in out_shape:
        y = np.zeros(out_shape, dtype=work)
        idx = np.zeros(out_shape, dtype=np.int64)
    else:
        plan = plan_pool(xb.shape[:2] + spatial, options)
        sub = block_plan(plan, xb.shape, spans)
        out = _run.pool_forward(floats(work, xb), sub, is_max, options.divisor, want_indices)
        if not want_indices:
            return out
        y, idx = out
        hit = idx >= 0          # flat position in the block -> in the whole map
        coords = np.unravel_index(idx[hit], xb.shape[2:])
        idx[hit] = np.ravel_multi_index(
            tuple(c + origin for c, (origin, _, _) in zip(coords, spans)), spatial)
    if not want_indices:
        return y
    rec = np.empty(out_shape, dtype=[("y", work), ("i", np.int64)])
    rec["y"], rec["i"] = y, idx
    return rec


def _pooling(fname, x, kernel_size, is_max, want_indices, **keywords):
    x = _dask("x", x)
    shape = tuple(x.shape)
    d, unbatched = pool_axes(shape, kernel_size, None, fname)
    if any(n == 0 for n in shape[-d:]):
        raise ValueError(f"x must have spatial axes of at least 1 entry, got shape {shape}")
    options = pool_options(d, kernel_size, **keywords)
    shape = ((1,) if unbatched else ()) + shape
    x = x.reshape(shape) if unbatched else x
    plan = plan_pool(shape, options)
    dtype = float_dtype(x=np.empty(0, x.dtype))
    k, s, p, dl = options.kernel_size, options.stride, options.padding, options.dilation
    merged, axes = {}, []
    for a in range(d):
        table = plan.tables[3 - d + a]
        n, count = table.n, table.count
        # a window belongs to the chunk in which it starts (clipped into the map)
        owner = np.clip(np.arange(count.size) * s[a] - p[a], 0, n - 1)
        reach = dl[a] * (k[a] - 1)
        merged[2 + a] = _merge(x.chunks[2 + a], max(reach, 1))
        edges = _edges(merged[2 + a])
        bounds = np.searchsorted(owner, edges, side="left")
        owned = tuple((int(bounds[j]), int(bounds[j + 1])) for j in range(len(edges) - 1))
        axes.append(_PoolAxis(edges, owned))
    x = x.rechunk(merged)
    depth = {0: (0, 0), 1: (0, 0)}
    for a, ax in enumerate(axes):        # the exact reach of each block's last window
        table = plan.tables[3 - d + a]
        dla, first, count = table.dilation, table.first, table.count
        last = np.where(count > 0, first + (count - 1) * dla + 1, 0)
        h = 0
        for j, (o0, o1) in enumerate(ax.owned[:-1]):
            if o1 > o0:
                h = max(h, int(last[o0:o1].max()) - ax.edges[j + 1])
        depth[2 + a] = (0, h)
    chunks = x.chunks[:2] + tuple(tuple(o1 - o0 for o0, o1 in ax.owned) for ax in axes)
    out_dtype = np.dtype([("y", dtype), ("i", np.int64)]) if want_indices else dtype
    res = da.map_overlap(_pool_block, x, depth=depth, boundary="none", trim=False,
                         allow_rechunk=False, chunks=chunks, dtype=out_dtype,
                         meta=_meta(x.ndim, out_dtype), options=options,
                         spatial=tuple(shape[2:]), axes=tuple(axes), is_max=is_max,
                         want_indices=want_indices, work=dtype)
    if want_indices:
        y, idx = res["y"], res["i"]
        return (y[0], idx[0]) if unbatched else (y, idx)
    return res[0] if unbatched else res


def avg_pool(x, kernel_size, *, stride=None, padding=0, ceil_mode=False,
             count_include_pad=True, divisor_override=None):
    """``vecconv.avg_pool`` of a Dask array: eq. 2 of the derivation with beta = 1/window.

    Parameters
    ----------
    x : dask.array.Array or array_like, shape ``(N, C, *spatial)`` or ``(C, *spatial)``
        The maps, chunked any way, channels included (each map pools alone).
    kernel_size : int or d ints
        The window.
    stride, padding, ceil_mode, count_include_pad, divisor_override : optional
        As for :func:`vecconv.avg_pool`.

    Returns
    -------
    y : dask.array.Array, shape ``(N, C, *out)``
        Each window computed by the same compiled kernel, with the same taps and divisor,
        as in memory: the same bits.
    """
    return _pooling("avg_pool", x, kernel_size, False, False, stride=stride, padding=padding,
                    ceil_mode=ceil_mode, count_include_pad=count_include_pad,
                    divisor_override=divisor_override)


def max_pool(x, kernel_size, *, stride=None, padding=0, dilation=1, ceil_mode=False,
             return_indices=False):
    """``vecconv.max_pool`` of a Dask array: eq. 3 of the derivation, window by window.

    Parameters
    ----------
    x : dask.array.Array or array_like, shape ``(N, C, *spatial)`` or ``(C, *spatial)``
        The maps, chunked any way, channels included.
    kernel_size : int or d ints
        The window (before dilation).
    stride, padding, dilation, ceil_mode : optional
        As for :func:`vecconv.max_pool`.
    return_indices : bool
        Also return where each maximum came from: flat positions in the whole map.

    Returns
    -------
    y : dask.array.Array, shape ``(N, C, *out)``
        The same bits as in memory (ties and NaNs resolved the same way).
    indices : dask.array.Array of int64
        Only with ``return_indices``: the shape of y.
    """
    return _pooling("max_pool", x, kernel_size, True, flag("return_indices", return_indices),
                    stride=stride, padding=padding, dilation=dilation, ceil_mode=ceil_mode)
