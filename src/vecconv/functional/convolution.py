"""Convolution and its gradients over 1, 2 or 3 spatial axes: the public functions.

Each call takes the one path of every front end: keywords -> options (``_options``) ->
plan (``_plan``) -> run (``_run``).

Conventions (the derivation's section 2.1 and its discussion of the J flips, eq. 14):

* ``flip=False`` is cross-correlation, z[i, j] = sum_pq k[p, q] x[i+p, j+q]: PyTorch's
  conv2d and ``scipy.signal.correlate2d``.
* ``flip=True`` rotates every kernel by 180 degrees first (J k J): true convolution as in
  the derivation's eq. 1, ``scipy.signal.convolve2d`` and MATLAB's ``convn``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from .. import _plan, _run
from .._options import conv_options
from .._shapes import LAYOUTS, batched, kernel_axes
from .._typing import (Algorithm, ArrayInput, FloatArray, Gradients, Padding, PaddingMode,
                       Shape, Size)
from .._typing import like as _like
from .._validate import (as_array, check_gradient_shape, flag, float_dtype, integer,
                         layer_dtype)
from ._variants import named, sections

__all__ = ["conv", "conv_backward", "conv1d", "conv1d_backward", "conv2d", "conv2d_backward",
           "conv3d", "conv3d_backward", "conv_plan"]


def _forward(fixed, fname, x, w, bias, opts, workspace):
    """options -> plan -> run, for the forward pass of every conv function."""
    x = as_array("x", x)
    w = as_array("w", w)
    bias = None if bias is None else as_array("bias", bias)
    d = kernel_axes(w.shape, fixed, fname)
    options = conv_options(d, **opts)
    x, unbatched = batched(x, d)
    dtype = float_dtype(x=x, w=w, bias=bias)
    plan = _plan.plan_conv(x.shape, w.shape, None if bias is None else bias.shape, dtype,
                           options, workspace)
    y = _run.conv_forward(x, w, bias, plan)
    return y[0] if unbatched else y


def _backward(fixed, fname, dy, x, w, opts, workspace, input_grad=True, weight_grad=True):
    """options -> plan -> run, for the backward pass of every conv function."""
    need_dx, need_dw = flag("input_grad", input_grad), flag("weight_grad", weight_grad)
    dy = as_array("dy", dy)
    x = as_array("x", x)
    w = as_array("w", w)
    d = kernel_axes(w.shape, fixed, fname)
    # no backward pass takes the FFT route (its dx and dW are the GEMMs'); the Winograd
    # route takes dx where it can
    options = conv_options(d, **opts)
    if options.algorithm == "fft":
        options = replace(options, algorithm="im2col")
    x, unbatched = batched(x, d)
    if unbatched:
        dy = dy[None]
    dtype = float_dtype(dy=dy, x=x, w=w)
    plan = _plan.plan_conv(x.shape, w.shape, None, dtype, options, workspace)
    check_gradient_shape("dy", dy.shape, plan.out_shape, unbatched, "this convolution")
    dx, dw, db = _run.conv_backward(dy, x, w, plan, need_dx, need_dw)
    if unbatched and dx is not None:
        dx = dx[0]
    return dx, dw, db


def conv(x: ArrayInput, w: ArrayInput, bias: ArrayInput | None = None, *, stride: Size = 1,
         padding: Padding = 0, dilation: Size = 1, groups: int = 1,
         connections: ArrayInput | None = None, flip: bool = False,
         padding_mode: PaddingMode = "zeros", fill_value: float = 0.0,
         workspace: int | None = None, algorithm: Algorithm = "auto") -> FloatArray:
    """1-, 2- or 3-D convolution: im2col and one GEMM per image and group, or FFTs.

    Implements eq. 1 of the derivation (without the activation f): output map j is the sum
    over the input maps i connected to it of x_i * k_ij, plus b_j. In matrix form (eq. 12)
    vec(z_j) = [c] vec(k_j), with [c] the patch (column) matrix; the patch matrix has one
    entry per kernel tap and output position whatever the number of axes.

    Parameters
    ----------
    x : array_like, shape ``(N, C, *spatial)`` or unbatched ``(C, *spatial)``
        The input maps: d = ``w.ndim - 2`` spatial axes (1, 2 or 3). An unbatched x gives
        an unbatched y.
    w : array_like, shape ``(Cout, C/groups, *kernel)``
        The kernels k_ij: ``w[j, i]`` is the kernel from input map i (of its group) to
        output map j.
    bias : array_like, shape (Cout,), optional
        b_j, added to every entry of output map j. None adds nothing.
    stride, dilation : int or d ints, >= 1
        The step between output positions, and the step between a kernel's taps.
    padding : int, d ints, d (before, after) pairs, or 'valid' | 'same' | 'full'
        Entries added around every spatial axis before the correlation.
        The strings mean what they mean in the scipy.signal function of the same rank:
        1-D ``correlate``/``convolve`` and 3-D ``correlate``/``convolve`` (even kernels:
        k//2 before), 2-D ``correlate2d`` ((k-1)//2 before) and ``convolve2d`` (k//2).
    groups : int
        As in PyTorch: input and output channels split into ``groups`` independent blocks.
    connections : array_like of bool, shape (C, Cout), optional
        Table 1 of the derivation: True where input map i feeds output map j. Weights of
        pairs not connected are ignored, whatever they hold. Cannot be combined with
        ``groups``.
    flip : bool
        False: cross-correlation (PyTorch). True: true convolution (every kernel axis
        reversed, the J k J of eq. 14).
    padding_mode : {'zeros', 'constant', 'reflect', 'replicate', 'circular', 'symmetric'}
        What the padding holds: zeros; ``fill_value`` (scipy's ``boundary='fill'``); the
        mirror image without the edge (PyTorch/NumPy 'reflect'; padding below the axis
        length); the edge repeated; the map wrapped around (scipy's 'wrap'; padding at most
        the axis length); the mirror image with the edge (NumPy 'symmetric', scipy's
        'symm'; any width, repeated as numpy.pad does). The padded input is never made:
        the patch matrix reads through the index map, and the backward pass adds the
        gradient of a padded tap to the pixel it came from (the fill gets none).
    fill_value : float
        The constant of ``padding_mode='constant'``.
    workspace : int, optional
        Byte budget of the column buffers (or of the FFT route's transforms) for this call
        (default: ``get_workspace()``).
    algorithm : {'auto', 'im2col', 'fft', 'winograd', 'direct'}
        How the forward pass is computed. 'im2col': the patch matrix and a GEMM (eq. 12).
        'fft': tiles of each map and the kernels transformed once, one product per
        frequency summed over the input channels, transformed back (for large kernels;
        images holding a NaN or inf take im2col, since a transform would spread them).
        'winograd': for stride-1, dilation-1 kernels of 3 taps along each axis (or 1
        along some), minimal filtering F(m, 3): tiles of the input and the kernels
        transformed, one GEMM per transformed tap over a batch of tiles, transformed
        back (2.25x fewer products in 2-D); dW in the route's own form, and dx under a
        constant padding. 'direct': grouped convolutions map by map, every pass (eq. 1,
        12 and 16-18 literally; 'auto' takes it for depthwise layers, where im2col makes
        a one-row GEMM per channel). 'auto': the planner's choice from the shapes, the
        dtype and the workspace; it takes 'fft' or 'winograd' only where that route's
        error stays within 4x the im2col route's (the docs' accuracy policy) and its
        model says it is faster.

    Returns
    -------
    y : ndarray, shape ``(N, Cout, *out)``, or ``(Cout, *out)`` for an unbatched x
        The output maps z_j before the activation: float32 if every input is float32,
        else float64. Along each axis of n entries, the output has
        1 + (n + pad_before + pad_after - dilation (k - 1) - 1) // stride entries.

    Examples
    --------
    >>> import numpy as np, scipy.signal, vecconv
    >>> x = np.arange(27.0).reshape(1, 3, 3, 3); k = np.ones((1, 1, 2, 2, 2))
    >>> y = vecconv.conv(x, k)                          # unbatched, 3-D
    >>> np.allclose(y[0], scipy.signal.correlate(x[0], k[0, 0], 'valid'))
    True
    """
    opts = dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
                connections=connections, flip=flip, padding_mode=padding_mode,
                fill_value=fill_value, algorithm=algorithm)
    return _forward(None, "conv", x, w, bias, opts, workspace)


def conv_backward(dy: ArrayInput, x: ArrayInput, w: ArrayInput, *, stride: Size = 1,
                  padding: Padding = 0, dilation: Size = 1, groups: int = 1,
                  connections: ArrayInput | None = None, flip: bool = False,
                  padding_mode: PaddingMode = "zeros", fill_value: float = 0.0,
                  workspace: int | None = None, input_grad: bool = True,
                  weight_grad: bool = True, algorithm: Algorithm = "auto") -> Gradients:
    """Gradients of ``conv`` with respect to x, w and bias, given dy = dE/dy.

    * ``dw``: eq. 12/13, dE/dk_ij = unvec(vec(delta_j)^T [c_i]): one GEMM of dy with the
      patch matrix per image (exactly zero for pairs the connection table leaves out);
    * ``dx``: eq. 16-18, the full convolution of delta with the flipped kernels, computed
      as the GEMM W^T dy followed by col2im;
    * ``db``: eq. 10, the sum of delta over the batch and every position.

    Parameters
    ----------
    dy : array_like
        dE/dy, the error delta of the output maps: ``conv``'s output shape (unbatched with
        an unbatched x).
    x, w : array_like
        The input and the kernels given to ``conv``.
    stride, padding, dilation, groups, connections, flip, padding_mode, fill_value, workspace
        The keywords given to ``conv``, with the same meaning.
    algorithm : {'auto', 'im2col', 'fft', 'winograd', 'direct'}
        As given to ``conv`` (one set of keywords serves both passes). Under 'auto' and
        'winograd' a stride-1 3-tap layer takes the Winograd route for dW (eq. 12 in the
        route's form) and, with a constant padding, for dx (eq. 16-18); 'direct' takes
        every pass; 'fft' and 'im2col' give the GEMMs and col2im.
    input_grad : bool
        False skips dx (a first layer needs none): the engine then makes neither its GEMMs
        nor its column buffers.
    weight_grad : bool
        False skips dw and db in the same way.

    Returns
    -------
    dx : ndarray or None
        dE/dx, shaped like x (eq. 16-18); None when ``input_grad`` is False.
    dw : ndarray or None
        dE/dw, shaped like w (eq. 12/13); exactly zero where the connection table has no
        connection. None when ``weight_grad`` is False.
    db : ndarray or None
        dE/db, shape (Cout,) (eq. 10); None when ``weight_grad`` is False.
    """
    opts = dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
                connections=connections, flip=flip, padding_mode=padding_mode,
                fill_value=fill_value, algorithm=algorithm)
    return _backward(None, "conv_backward", dy, x, w, opts, workspace, input_grad,
                     weight_grad)


def _fixed(d, backward):
    """conv1d/conv2d/conv3d (and their backward): ``conv`` with d checked."""
    name = f"conv{d}d" + ("_backward" if backward else "")
    if backward:
        def f(dy, x, w, *, stride=1, padding=0, dilation=1, groups=1, connections=None,
              flip=False, padding_mode="zeros", fill_value=0.0, workspace=None,
              input_grad=True, weight_grad=True, algorithm="auto"):
            opts = dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
                        connections=connections, flip=flip, padding_mode=padding_mode,
                        fill_value=fill_value, algorithm=algorithm)
            return _backward(d, name, dy, x, w, opts, workspace, input_grad, weight_grad)
        doc = (f"``conv_backward`` for {d}-D inputs {LAYOUTS[d][0]} (or unbatched): "
               "the gradients (dx, dw, db) of eq. 16-18, 12/13 and 10.\n\n"
               + sections(conv_backward.__doc__))
    else:
        def f(x, w, bias=None, *, stride=1, padding=0, dilation=1, groups=1,  # type: ignore[misc]
              connections=None, flip=False, padding_mode="zeros", fill_value=0.0,
              workspace=None, algorithm="auto"):
            opts = dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
                        connections=connections, flip=flip, padding_mode=padding_mode,
                        fill_value=fill_value, algorithm=algorithm)
            return _forward(d, name, x, w, bias, opts, workspace)
        doc = (f"``conv`` for {d}-D inputs {LAYOUTS[d][0]} (or unbatched) and weights "
               f"{LAYOUTS[d][1]}; see ``conv`` for the keywords.\n\n"
               + sections(conv.__doc__, examples=False))
    return named(f, name, doc, __name__)


conv1d, conv2d, conv3d = (_like(conv, _fixed(d, False)) for d in (1, 2, 3))
conv1d_backward, conv2d_backward, conv3d_backward = (_like(conv_backward, _fixed(d, True))
                                                     for d in (1, 2, 3))
conv1d.__doc__ += """

Notes
-----
The first derivation's 1-D case, x_i = sum_a w_a y_{a+i}.

Examples
--------
>>> import numpy as np, vecconv
>>> y = np.array([[[1.0, 2.0, 3.0, 4.0]]]); w = np.array([[[1.0, -1.0]]])
>>> vecconv.conv1d(y, w)[0, 0]
array([-1., -1., -1.])
"""
conv2d.__doc__ += """

Examples
--------
>>> import numpy as np, scipy.signal, vecconv
>>> x = np.arange(16.0).reshape(1, 1, 4, 4); k = np.array([[1.0, 0.0], [0.0, -1.0]])
>>> y = vecconv.conv2d(x, k[None, None])
>>> np.allclose(y[0, 0], scipy.signal.correlate2d(x[0, 0], k, 'valid'))
True
"""


def conv_plan(x_shape: Shape, w_shape: Shape, *, dtype: Any = "float32", stride: Size = 1,
              padding: Padding = 0, dilation: Size = 1, groups: int = 1,
              connections: ArrayInput | None = None, flip: bool = False,
              padding_mode: PaddingMode = "zeros", fill_value: float = 0.0,
              workspace: int | None = None, algorithm: Algorithm = "auto") -> dict[str, Any]:
    """How ``conv`` and ``conv_backward`` would run on arrays of these shapes: the routes
    the planner chooses, without computing anything.

    Parameters
    ----------
    x_shape, w_shape : tuple of int
        The shapes of x (batched, or unbatched) and w, as ``conv`` takes them.
    dtype : dtype
        The working dtype (float32 or float64).
    stride, padding, dilation, groups, connections, flip, padding_mode, fill_value
        As for ``conv``.
    workspace, algorithm
        As for ``conv``.

    Returns
    -------
    plan : dict
        ``forward``, ``dx`` and ``dw``: the routes of the passes ('im2col', 'pointwise',
        'staged', 'fft', 'winograd', 'direct'; an image holding a NaN or inf, or beyond
        the FFT route's accuracy reach, takes the backward route, or 'per-map' under a
        connection table); ``backward``: the GEMM family's route, the others' fallback;
        ``out_shape``; ``workspace``: the budget the plan was cut for; ``fft_tile``: the
        stride-1 outputs per FFT tile along each axis, or None.

    Examples
    --------
    >>> import vecconv
    >>> vecconv.conv_plan((1, 1, 512, 512), (16, 1, 31, 31))["forward"]
    'fft'
    >>> vecconv.conv_plan((8, 64, 56, 56), (64, 64, 3, 3), padding=1)["forward"]
    'winograd'
    >>> vecconv.conv_plan((8, 64, 56, 56), (64, 64, 3, 3), padding=1, stride=2)["forward"]
    'im2col'
    """
    if not isinstance(x_shape, (tuple, list)) or not isinstance(w_shape, (tuple, list)):
        raise TypeError(f"x_shape and w_shape must be tuples of ints, got {x_shape!r} and "
                        f"{w_shape!r}")
    w_shape = tuple(integer("w_shape entry", v, 0) for v in w_shape)
    x_shape = tuple(integer("x_shape entry", v, 0) for v in x_shape)
    d = kernel_axes(w_shape, None, "conv_plan")
    options = conv_options(d, stride=stride, padding=padding, dilation=dilation,
                           groups=groups, connections=connections, flip=flip,
                           padding_mode=padding_mode, fill_value=fill_value,
                           algorithm=algorithm)
    unbatched = len(x_shape) == d + 1
    if unbatched:
        x_shape = (1,) + x_shape
    plan = _plan.plan_conv(x_shape, w_shape, None, layer_dtype(dtype), options, workspace)
    return dict(forward=plan.route.value,
                dx=(plan.dx_route or plan.backward_route).value,
                dw=(plan.dw_route or plan.backward_route).value,
                backward=plan.backward_route.value,
                out_shape=plan.out_shape[1:] if unbatched else plan.out_shape,
                workspace=plan.workspace,
                fft_tile=None if plan.fft_tiles is None else plan.fft_tiles[0])
