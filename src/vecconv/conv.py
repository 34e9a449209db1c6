"""The public convolution API: validation here, computation in ``vecconv._engine``.

Conventions (the seed's section 2.1 and its discussion of the J flips, eq. 14):

* ``flip=False`` is cross-correlation, z[i, j] = sum_pq k[p, q] x[i+p, j+q]: PyTorch's
  conv2d and ``scipy.signal.correlate2d``.
* ``flip=True`` rotates every kernel by 180 degrees first (J k J): true convolution as in
  the seed's eq. 1, ``scipy.signal.convolve2d`` and MATLAB's ``convn``.
"""

from __future__ import annotations

import math
import os as _os
from dataclasses import dataclass

import numpy as np

from . import _engine
from ._args import (INT32_MAX, as_array, check_fits, check_ndim, float_dtype, floats,
                    int_tuple, integer, nbytes_of, output_size, resolve_padding)

__all__ = ["im2col", "col2im", "conv2d", "conv2d_backward", "conv1d", "conv1d_backward",
           "set_workspace", "get_workspace", "openmp_threads"]

_DEFAULT_WORKSPACE = 64 * 2**20
_workspace = _DEFAULT_WORKSPACE


def set_workspace(nbytes):
    """Set the default workspace budget (bytes) for the column matrix; returns the old one.

    The convolution is computed in tiles (groups of images, or bands of output rows of one
    image) whose column buffer stays within the budget. Within it the engine picks tiles
    of about 4 MiB, which stay in cache between im2col and the GEMM that reads them
    (measured faster than one large tile). The budget is exceeded only when a single
    output row's columns are larger than it: then one row is one tile.
    """
    global _workspace
    old = _workspace
    _workspace = integer("nbytes", nbytes, 1)
    return old


def get_workspace():
    """The default workspace budget in bytes (64 MiB unless changed)."""
    return _workspace


def openmp_threads():
    """Threads the compiled im2col/col2im loops use (0: built without OpenMP)."""
    return _engine.openmp_threads()


# ----------------------------------------------------------------------------- planning
@dataclass(frozen=True)
class Plan:
    """Everything the engine needs about one convolution, derived once from the shapes."""

    dtype: np.dtype
    x_shape: tuple        # (N, C, H, W) as the engine sees it (1-D: H = 1)
    w_shape: tuple        # (Cout, C/groups, kh, kw)
    out_shape: tuple      # (N, Cout, Ho, Wo)
    geometry: tuple       # (kh, kw, sh, sw, dh, dw, pad_top, pad_left, Ho, Wo)
    groups: int
    flip: bool
    mask: np.ndarray | None   # (Cout, Cin) 0/1 weights of the connection table
    tile: tuple           # (images per tile, output rows per tile)
    threads: int          # > 1: batch-parallel mode, each OpenMP thread takes whole images


def _connection_mask(connections, cin, cout, groups, dtype):
    if connections is None:
        return None
    if groups != 1:
        raise ValueError("connections and groups cannot be combined: give groups=1 with a "
                         "connection table")
    table = as_array("connections", connections)
    if table.dtype.kind not in "biu":
        raise TypeError(f"connections must be a boolean (Cin, Cout) table, got dtype {table.dtype}")
    if table.shape != (cin, cout):
        raise ValueError(f"connections must have shape (Cin, Cout) = ({cin}, {cout}), "
                         f"got {table.shape}")
    if table.dtype.kind != "b" and not np.isin(table, (0, 1)).all():
        raise ValueError("connections must hold only True/False (or 0/1)")
    return np.ascontiguousarray(table.astype(bool).T, dtype=dtype)   # (Cout, Cin)


# The column buffer of one tile is written by im2col and read back by the GEMM right
# after: sized to stay in cache between the two, within the workspace budget.
_TILE_TARGET = int(_os.environ.get("VECCONV_TILE_BYTES", 4 * 2**20))


#: False turns the batch-parallel mode off (tests compare both modes).
BATCH_PARALLEL = True


def _batch_threads(n, ho, wo, pointwise):
    """Threads for the batch-parallel mode, or 1 for the tile-by-tile mode.

    On 2 cores, two threads that each run im2col -> single-threaded GEMM -> col2im on
    their own images beat one pipeline whose every step is split across both cores
    (measured: 'mid' forward+backward 224 -> 163 ms, LeNet-5's C3 3.4 -> 2.6 ms). It
    needs OpenMP, control of the BLAS's thread count, and at least two images of more
    than a handful of positions (tiny maps use the staged GEMM instead). A 1x1 convolution
    gained nothing and keeps its single GEMM per image.
    """
    if not BATCH_PARALLEL or pointwise or n < 2 or ho * wo < _engine.stage_below():
        return 1
    threads = _engine.openmp_threads()
    if threads < 2 or _engine.blas_thread_control() == 0:
        return 1
    return min(threads, n)


def _tile(plan_dims, itemsize, workspace, threads=1):
    """(images, output rows) per tile so that the column buffers stay within budget."""
    n, k_rows, cout, ho, wo, pointwise = plan_dims
    if pointwise or n == 0 or ho == 0 or wo == 0:
        return (1, max(ho, 1))
    if threads > 1:             # one buffer per thread, each holding part of one image
        per_row = k_rows * wo
        budget = max(min(workspace // threads, _TILE_TARGET) // itemsize, 1)
        return (1, max(1, min(ho, budget // per_row)))
    if ho * wo < _engine.stage_below():
        k_rows += cout          # a staged tile also holds (Cout, positions) of dY or Y
    budget = max(min(workspace, _TILE_TARGET) // itemsize, 1)       # elements
    per_row = k_rows * wo
    per_image = per_row * ho
    limit = INT32_MAX // max(ho * wo, 1)          # the buffer's leading dimension is an int
    if per_image <= budget:
        return (max(1, min(n, budget // per_image, limit)), ho)
    return (1, max(1, min(ho, budget // per_row)))


def make_plan(x_shape, w_shape, bias_shape, *, dtype, stride, padding, dilation, groups,
              connections, flip, workspace, spatial):
    """Validate the shapes and options of one convolution and derive its Plan.

    ``spatial`` is 1 (x is (N, C, L)) or 2 (x is (N, C, H, W)). Returns the plan and the
    output shape in the caller's layout.
    """
    layout = "(N, C, L)" if spatial == 1 else "(N, C, H, W)"
    wlayout = "(Cout, Cin/groups, k)" if spatial == 1 else "(Cout, Cin/groups, kh, kw)"
    check_ndim("x", x_shape, spatial + 2, layout)
    check_ndim("w", w_shape, spatial + 2, wlayout)
    if not isinstance(flip, (bool, np.bool_)):
        raise TypeError(f"flip must be True or False, got {flip!r}")
    flip = bool(flip)
    groups = integer("groups", groups, 1)
    x_shape, w_shape = tuple(x_shape), tuple(w_shape)
    n, c = x_shape[:2]
    cout, cin_g = w_shape[:2]
    ksize = w_shape[2:]
    if c == 0:
        raise ValueError(f"x must have at least one channel, got shape {x_shape}")
    if cout == 0 or cin_g == 0 or 0 in ksize:
        raise ValueError(f"w must have non-zero sizes {wlayout}, got shape {w_shape}")
    if c % groups or cout % groups:
        raise ValueError(f"groups={groups} must divide the input channels ({c}) and the "
                         f"output channels ({cout})")
    if cin_g * groups != c:
        raise ValueError(f"w has {cin_g} input channels per group but x has {c} channels "
                         f"and groups={groups}: expected w.shape[1] == {c // groups}")
    if bias_shape is not None:
        check_ndim("bias", bias_shape, 1, "(Cout,)")
        if bias_shape[0] != cout:
            raise ValueError(f"bias must have shape ({cout},) to match w, got {bias_shape}")
    stride = int_tuple("stride", stride, spatial, 1)
    dilation = int_tuple("dilation", dilation, spatial, 1)
    extents = tuple(d * (k - 1) + 1 for d, k in zip(dilation, ksize))
    pads = resolve_padding(padding, extents, flip, signal_1d=(spatial == 1))
    names = ("L",) if spatial == 1 else ("H", "W")
    out_sp = tuple(output_size(f"input {nm}", s, p, e, st) for nm, s, p, e, st in
                   zip(names, x_shape[2:], pads, extents, stride))
    if workspace is None:
        workspace = _workspace
    workspace = integer("workspace", workspace, 1)
    if spatial == 1:
        x4 = (n, c, 1, x_shape[2])
        w4 = (cout, cin_g, 1, ksize[0])
        geometry = (1, ksize[0], 1, stride[0], 1, dilation[0], 0, pads[0][0], 1, out_sp[0])
    else:
        x4, w4 = x_shape, w_shape
        geometry = (ksize[0], ksize[1], stride[0], stride[1], dilation[0], dilation[1],
                    pads[0][0], pads[1][0], out_sp[0], out_sp[1])
    ho, wo = geometry[8], geometry[9]
    k_rows = c * w4[2] * w4[3]
    for what, size in (("an output map", ho * wo), ("an input map", x4[2] * x4[3]),
                       ("a kernel column (C*kh*kw)", k_rows), ("the channel count", cout)):
        if size > INT32_MAX:
            raise ValueError(f"{what} has {size} elements, more than the 2**31-1 a BLAS "
                             "dimension can hold")
    mask = _connection_mask(connections, c, cout, groups, dtype)
    pointwise = _engine.pointwise(c, x4[2], x4[3], geometry)
    threads = _batch_threads(n, ho, wo, pointwise)
    tile = _tile((n, k_rows, cout, ho, wo, pointwise), dtype.itemsize, workspace, threads)
    out_shape = (n, cout) + out_sp
    return (Plan(dtype, x4, w4, (n, cout, ho, wo), geometry, groups, flip, mask, tile, threads),
            out_shape)


def effective_weight(w, plan):
    """The (Cout, C/groups*kh*kw) matrix the GEMMs use: masked, flipped, contiguous.

    The rows are vec of each kernel read row by row (q fastest) to match the column
    buffer; unconnected pairs of the connection table are zeroed (the seed's M_j).
    """
    w4 = w.reshape(plan.w_shape)
    if plan.flip:
        w4 = w4[:, :, ::-1, ::-1]          # J k J (eq. 14)
    if plan.mask is not None:
        w4 = w4 * plan.mask[:, :, None, None]
    return np.ascontiguousarray(w4, dtype=plan.dtype).reshape(plan.w_shape[0], -1)


def weight_gradient(dw2, plan, shape):
    """The kernel gradient in the user's layout from the engine's (Cout, K) matrix."""
    dw = dw2.reshape(plan.w_shape)
    if plan.flip:
        dw = dw[:, :, ::-1, ::-1]
    if plan.mask is not None:
        dw = dw * plan.mask[:, :, None, None]
    return np.ascontiguousarray(dw).reshape(shape)


def _copy_bytes(a, dtype):
    """Bytes np.ascontiguousarray(a, dtype) would allocate (0 when a is already clean)."""
    if a.dtype == dtype and a.flags.c_contiguous:
        return 0
    return a.size * np.dtype(dtype).itemsize


def _empty(plan, ndim):
    return np.empty((0,) * ndim, dtype=plan.dtype)


def forward(x, w2, bias, plan):
    """The engine's forward pass on clean arrays (x, w2 contiguous in plan.dtype)."""
    y = np.empty(plan.out_shape, dtype=plan.dtype)
    b = bias if bias is not None else _empty(plan, 1)
    _engine.conv_pass(True, x.reshape(plan.x_shape), w2, b, y, _empty(plan, 4), _empty(plan, 4),
                      _empty(plan, 2), _empty(plan, 3), False, False, plan.geometry,
                      plan.groups, *plan.tile, plan.threads)
    return y


def backward(dy, x, w2, plan, need_dx=True, need_dw=True):
    """The engine's backward pass: (dx in the engine's 4-D layout or None, dw2 or None)."""
    dt = plan.dtype
    dx = np.zeros(plan.x_shape, dtype=dt) if need_dx else _empty(plan, 4)
    k = math.prod(plan.w_shape[1:])
    dw2 = np.zeros((plan.w_shape[0], k), dtype=dt) if need_dw else _empty(plan, 2)
    # batch-parallel mode: one dW accumulator per thread, added up below
    dw_threads = np.zeros((plan.threads if plan.threads > 1 else 0, plan.w_shape[0], k), dtype=dt)
    _engine.conv_pass(False, x.reshape(plan.x_shape), w2, _empty(plan, 1), _empty(plan, 4),
                      dy.reshape(plan.out_shape), dx, dw2, dw_threads, need_dx, need_dw,
                      plan.geometry, plan.groups, *plan.tile, plan.threads)
    if need_dw and plan.threads > 1:
        np.sum(dw_threads, axis=0, out=dw2)
    return (dx if need_dx else None), (dw2 if need_dw else None)


# ----------------------------------------------------------------------------- public API
def _inputs(spatial, x, w, bias, opts):
    x = as_array("x", x)
    w = as_array("w", w)
    bias = None if bias is None else as_array("bias", bias)
    dtype = float_dtype(x=x, w=w, bias=bias)
    plan, out_shape = make_plan(x.shape, w.shape, None if bias is None else bias.shape,
                                dtype=dtype, spatial=spatial, **opts)
    # before any conversion copies x: the output and the copy must both fit
    check_fits(nbytes_of(plan.out_shape, dtype) + _copy_bytes(x, dtype), "conv (output and input copy)")
    x = floats(plan.dtype, x)
    bias = None if bias is None else floats(plan.dtype, bias)
    return x, w, bias, plan, out_shape


def conv2d(x, w, bias=None, *, stride=1, padding=0, dilation=1, groups=1, connections=None,
           flip=False, workspace=None):
    """2-D convolution of a batch of multi-channel maps, by im2col and one GEMM per image.

    Implements the seed's eq. 1 (without the activation f): output map j is the sum over
    the input maps i connected to it of x_i * k_ij, plus b_j. In matrix form (eq. 12)
    vec(z_j) = [c] vec(k_j), with [c] the patch (column) matrix.

    Parameters
    ----------
    x : array_like, shape (N, C, H, W)
    w : array_like, shape (Cout, C/groups, kh, kw)
    bias : array_like, shape (Cout,), optional
    stride, dilation : int or (int, int), >= 1
    padding : int, (int, int), ((top, bottom), (left, right)), or 'valid' | 'same' | 'full'
        The strings mean what they mean in ``scipy.signal.correlate2d`` (``flip=False``) or
        ``convolve2d`` (``flip=True``), including where an even kernel's extra row goes.
    groups : int
        As in PyTorch: input and output channels split into ``groups`` independent blocks.
    connections : array_like of bool, shape (C, Cout), optional
        The seed's Table 1: True where input map i feeds output map j. Weights of pairs not
        connected are ignored. Cannot be combined with ``groups``.
    flip : bool
        False: cross-correlation (PyTorch). True: true convolution (kernel rotated 180 deg).
    workspace : int, optional
        Byte budget of the column buffer for this call (default: ``get_workspace()``).

    Returns
    -------
    y : ndarray, shape (N, Cout, Ho, Wo), float32 if every input is float32, else float64.

    Examples
    --------
    >>> import numpy as np, scipy.signal, vecconv
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4); k = np.array([[1.0, 0.0], [0.0, -1.0]])
    >>> y = vecconv.conv2d(x, k[None, None])
    >>> np.allclose(y[0, 0], scipy.signal.correlate2d(x[0, 0], k, 'valid'))
    True
    """
    opts = dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
                connections=connections, flip=flip, workspace=workspace)
    x, w, bias, plan, out_shape = _inputs(2, x, w, bias, opts)
    return forward(x, effective_weight(w, plan), bias, plan).reshape(out_shape)


def conv2d_backward(dy, x, w, *, stride=1, padding=0, dilation=1, groups=1, connections=None,
                    flip=False, workspace=None):
    """Gradients of ``conv2d`` with respect to x, w and bias, given dy = dE/dy.

    * ``dw``: eq. 12/13, dE/dk_ij = unvec(vec(delta_j)^T [c_i]) — one GEMM of dy with the
      patch matrix per image (zero for pairs the connection table leaves out);
    * ``dx``: eq. 16-18, the full convolution of delta with the flipped kernels, computed
      as the GEMM W^T dy followed by col2im;
    * ``db``: eq. 10, the sum of delta over the batch and every position.

    Takes the same keywords as ``conv2d``; ``dy`` must have conv2d's output shape.

    Returns
    -------
    dx, dw, db : ndarrays shaped like x, w and (Cout,).
    """
    opts = dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
                connections=connections, flip=flip, workspace=workspace)
    return _backward(2, dy, x, w, opts)


def _backward(spatial, dy, x, w, opts):
    dy = as_array("dy", dy)
    x = as_array("x", x)
    w = as_array("w", w)
    dtype = float_dtype(dy=dy, x=x, w=w)
    plan, out_shape = make_plan(x.shape, w.shape, None, dtype=dtype, spatial=spatial, **opts)
    if dy.shape != out_shape:
        raise ValueError(f"dy must have the output shape {out_shape} of this convolution, "
                         f"got {dy.shape}")
    check_fits(nbytes_of(plan.x_shape, dtype) + _copy_bytes(x, dtype) + _copy_bytes(dy, dtype),
               "conv backward (dx and input copies)")
    x = floats(dtype, x)
    dy = floats(dtype, dy)
    dx, dw2 = backward(dy, x, effective_weight(w, plan), plan)
    db = dy.sum(axis=tuple(range(2, dy.ndim)), dtype=dtype).sum(axis=0)
    return dx.reshape(x.shape), weight_gradient(dw2, plan, w.shape), db


def conv1d(x, w, bias=None, *, stride=1, padding=0, dilation=1, groups=1, connections=None,
           flip=False, workspace=None):
    """1-D convolution of (N, C, L) signals — the first seed's x_i = sum_a w_a y_{a+i}.

    Same keywords as ``conv2d`` with ints in place of pairs. ``padding='same'`` follows
    ``scipy.signal.correlate``/``convolve``, which centre even kernels differently from
    ``correlate2d`` (both pad k//2 before). Returns (N, Cout, Lo).

    Examples
    --------
    >>> import numpy as np, scipy.signal, vecconv
    >>> y = np.array([[[1.0, 2.0, 3.0, 4.0]]]); w = np.array([[[1.0, -1.0]]])
    >>> vecconv.conv1d(y, w)[0, 0]
    array([-1., -1., -1.])
    """
    opts = dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
                connections=connections, flip=flip, workspace=workspace)
    x, w, bias, plan, out_shape = _inputs(1, x, w, bias, opts)
    return forward(x, effective_weight(w, plan), bias, plan).reshape(out_shape)


def conv1d_backward(dy, x, w, *, stride=1, padding=0, dilation=1, groups=1, connections=None,
                    flip=False, workspace=None):
    """Gradients of ``conv1d``: the first seed's dE/dw_a = sum_i delta_i y_{i+a}, and
    delta^{l-1} by the flipped kernel. Returns (dx, dw, db)."""
    opts = dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
                connections=connections, flip=flip, workspace=workspace)
    return _backward(1, dy, x, w, opts)


# ----------------------------------------------------------------------------- im2col API
def _unfold_plan(x_shape, kernel_size, stride, padding, dilation, name="x"):
    """The Plan of a single-kernel-per-channel unfold (im2col/col2im share it)."""
    if len(x_shape) != 4:
        raise ValueError(f"{name} must be 4-D (N, C, H, W), got shape {tuple(x_shape)}")
    kh, kw = int_tuple("kernel_size", kernel_size, 2, 1)
    plan, _ = make_plan(x_shape, (1, x_shape[1], kh, kw), None, dtype=np.dtype(np.float64),
                        stride=stride, padding=padding, dilation=dilation, groups=1,
                        connections=None, flip=False, workspace=None, spatial=2)
    return plan


def im2col(x, kernel_size, *, stride=1, padding=0, dilation=1):
    """The batched patch matrix of eq. 12: one row per output position, one column per tap.

    Parameters
    ----------
    x : array_like, shape (N, C, H, W)
    kernel_size : int or (kh, kw)

    Returns
    -------
    cols : ndarray, shape (N*Ho*Wo, C*kh*kw)
        Row ``(n*Ho + i)*Wo + j`` holds the patch under output position (i, j) of image n;
        column ``(c*kh + p)*kw + q`` the tap (p, q) of channel c — PyTorch's
        ``unfold(x).transpose(1, 2)`` stacked over the batch. The array is the transpose
        of the engine's C-contiguous (C*kh*kw, N*Ho*Wo) buffer, so it is Fortran-ordered.

    Examples
    --------
    >>> import numpy as np, vecconv
    >>> vecconv.im2col(np.arange(9.0).reshape(1, 1, 3, 3), 2)
    array([[0., 1., 3., 4.],
           [1., 2., 4., 5.],
           [3., 4., 6., 7.],
           [4., 5., 7., 8.]])
    """
    x = as_array("x", x)
    dtype = float_dtype(x=x)
    plan = _unfold_plan(x.shape, kernel_size, stride, padding, dilation)
    n, c = x.shape[:2]
    kh, kw = plan.w_shape[2:]
    ho, wo = plan.geometry[8:]
    shape = (c * kh * kw, n * ho * wo)
    check_fits(nbytes_of(shape, dtype) + _copy_bytes(x, dtype), "the column matrix")
    x = floats(dtype, x)
    cols = np.empty(shape, dtype=dtype)
    _engine.im2col_full(x, cols, plan.geometry)
    return cols.T


def col2im(cols, input_shape, kernel_size, *, stride=1, padding=0, dilation=1):
    """The adjoint of ``im2col``: every patch entry added back to the pixel it came from.

    This is how the seed's eq. 16-18 becomes matrix form: the full convolution of delta
    with the flipped kernel equals col2im(delta-columns), overlapping patches summed.

    Parameters
    ----------
    cols : array_like, shape (N*Ho*Wo, C*kh*kw)
    input_shape : (N, C, H, W)
    kernel_size, stride, padding, dilation : as for ``im2col``

    Returns
    -------
    x : ndarray, shape ``input_shape``
    """
    cols = as_array("cols", cols)
    if not isinstance(input_shape, (tuple, list)):
        raise TypeError(f"input_shape must be a tuple (N, C, H, W), got {input_shape!r}")
    input_shape = tuple(integer("input_shape", s, 0) for s in input_shape)
    dtype = float_dtype(cols=cols)
    plan = _unfold_plan(input_shape, kernel_size, stride, padding, dilation,
                        name="input_shape")
    n, c = input_shape[:2]
    kh, kw = plan.w_shape[2:]
    ho, wo = plan.geometry[8:]
    expected = (n * ho * wo, c * kh * kw)
    check_ndim("cols", cols.shape, 2, "(N*Ho*Wo, C*kh*kw)")
    if cols.shape != expected:
        raise ValueError(f"cols must have shape {expected} for input_shape {input_shape}, "
                         f"got {cols.shape}")
    check_fits(nbytes_of(input_shape, dtype) + cols.size * dtype.itemsize, "col2im")
    cols_t = np.ascontiguousarray(cols.T, dtype=dtype)
    x = np.zeros(input_shape, dtype=dtype)
    _engine.col2im_full(cols_t, x, plan.geometry)
    return x
