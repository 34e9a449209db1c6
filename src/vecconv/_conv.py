"""The public convolution API: validation here, computation in ``vecconv._engine``.

Conventions (the derivation's section 2.1 and its discussion of the J flips, eq. 14):

* ``flip=False`` is cross-correlation, z[i, j] = sum_pq k[p, q] x[i+p, j+q]: PyTorch's
  conv2d and ``scipy.signal.correlate2d``.
* ``flip=True`` rotates every kernel by 180 degrees first (J k J): true convolution as in
  the derivation's eq. 1, ``scipy.signal.convolve2d`` and MATLAB's ``convn``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from . import _engine
from ._args import (as_array, check_fits, check_ndim, float_dtype, floats, int_tuple,
                    integer, nbytes_of)
from ._plan import (LAYOUTS, backward, effective_weight, forward, get_workspace, make_plan,
                    set_workspace, weight_gradient)
from ._typing import ArrayInput, FloatArray, Gradients, Padding, PaddingMode, Shape, Size
from ._typing import like as _like

__all__ = ["im2col", "col2im", "conv", "conv_backward", "conv1d", "conv1d_backward",
           "conv2d", "conv2d_backward", "conv3d", "conv3d_backward", "conv_transpose",
           "conv_transpose_backward", "conv_transpose1d", "conv_transpose1d_backward",
           "conv_transpose2d", "conv_transpose2d_backward", "conv_transpose3d",
           "conv_transpose3d_backward", "set_workspace", "get_workspace"]


def _copy_bytes(a, dtype):
    """Bytes np.ascontiguousarray(a, dtype) would allocate (0 when a is already clean)."""
    if a.dtype == dtype and a.flags.c_contiguous:
        return 0
    return a.size * np.dtype(dtype).itemsize


# ----------------------------------------------------------------------------- public API
_KEYWORDS = ("stride", "padding", "dilation", "groups", "connections", "flip", "workspace")


def _spatial_axes(w, fixed, fname):
    """d, the number of spatial axes: w.ndim - 2, checked against ``fixed`` (conv1d/2d/3d)."""
    d = w.ndim - 2
    if fixed is not None and d != fixed:
        raise ValueError(f"{fname} needs w of {fixed + 2} dimensions {LAYOUTS[fixed][1]}, got "
                         f"shape {w.shape}")
    if d not in LAYOUTS:
        raise ValueError(f"w must be (Cout, Cin/groups, *kernel) with 1, 2 or 3 kernel axes, "
                         f"got shape {w.shape}")
    return d


def _batched(a, d):
    """(a with a batch axis, whether it came without one): PyTorch's unbatched inputs."""
    if a.ndim == d + 1:
        return a[None], True
    return a, False


def _forward(fixed, fname, x, w, bias, opts):
    x = as_array("x", x)
    w = as_array("w", w)
    bias = None if bias is None else as_array("bias", bias)
    d = _spatial_axes(w, fixed, fname)
    x, unbatched = _batched(x, d)
    dtype = float_dtype(x=x, w=w, bias=bias)
    plan = make_plan(x.shape, w.shape, None if bias is None else bias.shape,
                     dtype=dtype, spatial=d, **opts)
    # before anything is allocated: the input copies, the output, the column buffers
    check_fits(plan.work_bytes() + _copy_bytes(x, dtype) + _copy_bytes(w, dtype),
               "this convolution (output, column buffers, weight and input copies)")
    x = floats(plan.dtype, x)
    bias = None if bias is None else floats(plan.dtype, bias)
    y = forward(x, effective_weight(w, plan), bias, plan)
    return y[0] if unbatched else y


def _check_grad_flags(input_grad, weight_grad):
    for name, flag in (("input_grad", input_grad), ("weight_grad", weight_grad)):
        if not isinstance(flag, (bool, np.bool_)):
            raise TypeError(f"{name} must be True or False, got {flag!r}")


def _named(f: Callable[..., Any], name: str, doc: str) -> Callable[..., Any]:
    """A generated public function, under its own name (conv2d, conv_transpose3d, ...)."""
    f.__doc__ = doc
    f.__name__ = f.__qualname__ = name
    f.__module__ = __name__
    return f


def _backward(fixed, fname, dy, x, w, opts, input_grad=True, weight_grad=True):
    _check_grad_flags(input_grad, weight_grad)
    dy = as_array("dy", dy)
    x = as_array("x", x)
    w = as_array("w", w)
    d = _spatial_axes(w, fixed, fname)
    x, unbatched = _batched(x, d)
    if unbatched:
        dy = dy[None]
    dtype = float_dtype(dy=dy, x=x, w=w)
    plan = make_plan(x.shape, w.shape, None, dtype=dtype, spatial=d, **opts)
    if dy.shape != plan.out_shape:
        want = plan.out_shape[1:] if unbatched else plan.out_shape
        raise ValueError(f"dy must have the output shape {want} of this convolution, "
                         f"got {dy.shape[1:] if unbatched else dy.shape}")
    need_dx, need_dw = bool(input_grad), bool(weight_grad)
    check_fits(plan.work_bytes(backward=True, need_dx=need_dx, need_dw=need_dw)
               + _copy_bytes(x, dtype) + _copy_bytes(dy, dtype) + _copy_bytes(w, dtype),
               "this convolution's backward pass (dx, dW accumulators, column buffers, "
               "weight and input copies)")
    x = floats(dtype, x)
    dy = floats(dtype, dy)
    dx, dw2 = (None, None)
    if need_dx or need_dw:
        dx, dw2 = backward(dy, x, effective_weight(w, plan), plan, need_dx, need_dw)
    dw = db = None
    if need_dw:
        dw = weight_gradient(dw2, plan)
        db = dy.sum(axis=tuple(range(2, dy.ndim)), dtype=dtype).sum(axis=0)      # eq. 10
    if unbatched and dx is not None:
        dx = dx[0]
    return dx, dw, db


def conv(x: ArrayInput, w: ArrayInput, bias: ArrayInput | None = None, *, stride: Size = 1,
         padding: Padding = 0, dilation: Size = 1, groups: int = 1,
         connections: ArrayInput | None = None, flip: bool = False,
         padding_mode: PaddingMode = "zeros", fill_value: float = 0.0,
         workspace: int | None = None) -> FloatArray:
    """1-, 2- or 3-D convolution by im2col and one GEMM per image and group.

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
        Byte budget of the column buffers for this call (default: ``get_workspace()``).

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
                fill_value=fill_value, workspace=workspace)
    return _forward(None, "conv", x, w, bias, opts)


def conv_backward(dy: ArrayInput, x: ArrayInput, w: ArrayInput, *, stride: Size = 1,
                  padding: Padding = 0, dilation: Size = 1, groups: int = 1,
                  connections: ArrayInput | None = None, flip: bool = False,
                  padding_mode: PaddingMode = "zeros", fill_value: float = 0.0,
                  workspace: int | None = None, input_grad: bool = True,
                  weight_grad: bool = True) -> Gradients:
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
                fill_value=fill_value, workspace=workspace)
    return _backward(None, "conv_backward", dy, x, w, opts, input_grad, weight_grad)


def _sections(doc, examples=True):
    """The Parameters section onwards of a public function's docstring (dedented), for
    the docstrings of its fixed-rank variants; without Examples when ``examples`` is
    False (they call the general function)."""
    import inspect
    text = inspect.cleandoc(doc)
    text = text[text.index("Parameters\n----------"):]
    if not examples and "Examples\n--------" in text:
        text = text[:text.index("Examples\n--------")].rstrip() + "\n"
    return text


def _fixed(d, backward):
    """conv1d/conv2d/conv3d (and their backward): ``conv`` with d checked."""
    name = f"conv{d}d" + ("_backward" if backward else "")
    if backward:
        def f(dy, x, w, *, stride=1, padding=0, dilation=1, groups=1, connections=None,
              flip=False, padding_mode="zeros", fill_value=0.0, workspace=None,
              input_grad=True, weight_grad=True):
            opts = dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
                        connections=connections, flip=flip, padding_mode=padding_mode,
                        fill_value=fill_value, workspace=workspace)
            return _backward(d, name, dy, x, w, opts, input_grad, weight_grad)
        doc = (f"``conv_backward`` for {d}-D inputs {LAYOUTS[d][0]} (or unbatched): "
               "the gradients (dx, dw, db) of eq. 16-18, 12/13 and 10.\n\n"
               + _sections(conv_backward.__doc__))
    else:
        def f(x, w, bias=None, *, stride=1, padding=0, dilation=1, groups=1,  # type: ignore[misc]
              connections=None, flip=False, padding_mode="zeros", fill_value=0.0,
              workspace=None):
            opts = dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
                        connections=connections, flip=flip, padding_mode=padding_mode,
                        fill_value=fill_value, workspace=workspace)
            return _forward(d, name, x, w, bias, opts)
        doc = (f"``conv`` for {d}-D inputs {LAYOUTS[d][0]} (or unbatched) and weights "
               f"{LAYOUTS[d][1]}; see ``conv`` for the keywords.\n\n"
               + _sections(conv.__doc__, examples=False))
    return _named(f, name, doc)


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


# ----------------------------------------------------------------------------- transposed
def _transpose_plan(x_shape, w_shape, d, dtype, stride, padding, output_padding, dilation,
                    groups, output_size, workspace):
    """The convolution whose dx pass is this transposed convolution: its input is the
    transposed one's output (N, Cout, *out), its weight w itself ((Cin, Cout/groups, *k)
    is a convolution weight from Cout to Cin maps). Returns (plan, extra): extra[a] zero
    entries to append to x along axis a when output_padding >= stride (possible only with
    dilation > stride), so that the convolution's output matches x."""
    stride, dilation, pads, out = _transpose_options(
        x_shape, w_shape, d, stride=stride, padding=padding, output_padding=output_padding,
        dilation=dilation, groups=groups, output_size=output_size)
    cout = w_shape[1] * groups
    plan = make_plan((x_shape[0], cout) + out, tuple(w_shape), None, dtype=dtype,
                     stride=stride, padding=pads, dilation=dilation, groups=groups,
                     connections=None, flip=False, workspace=workspace, spatial=d)
    extra = tuple(o - i for o, i in zip(plan.out_shape[2:], x_shape[2:]))
    return plan, extra


def _transpose_options(x_shape, w_shape, d, *, stride, padding, output_padding, dilation,
                       groups, output_size, workspace=None):
    """A transposed convolution's options checked against the shapes, by arithmetic alone:
    (stride, dilation, (before, after) crops, output spatial size)."""
    layout, _, names = LAYOUTS[d]
    if len(x_shape) != d + 2:
        raise ValueError(f"x must be {d + 2}-D {layout} or unbatched, got shape {x_shape}")
    if len(w_shape) != d + 2:
        raise ValueError(f"w must be (Cin, Cout/groups, *kernel), got shape {w_shape}")
    groups = integer("groups", groups, 1)
    cin = x_shape[1]
    if w_shape[0] != cin:
        raise ValueError(f"w must have shape (Cin, Cout/groups, *kernel) with Cin = {cin} "
                         f"(the channels of x), got {w_shape}")
    if cin % groups:
        raise ValueError(f"groups={groups} must divide the input channels ({cin})")
    stride = int_tuple("stride", stride, d, 1)
    dilation = int_tuple("dilation", dilation, d, 1)
    if isinstance(padding, str):
        raise TypeError("padding of a transposed convolution is an int, d ints or d "
                        f"(before, after) pairs (they crop the full result), got {padding!r}")
    if isinstance(padding, (tuple, list)) and len(padding) == d and all(
            isinstance(p, (tuple, list)) for p in padding):
        pads = tuple(int_tuple("padding", p, 2, 0) for p in padding)
    else:
        pads = tuple((p, p) for p in int_tuple("padding", padding, d, 0))
    ksize = w_shape[2:]
    base = tuple((i - 1) * s - pb - pa + dl * (k - 1) + 1 for i, s, (pb, pa), dl, k in
                 zip(x_shape[2:], stride, pads, dilation, ksize))
    limit = tuple(max(s, dl) for s, dl in zip(stride, dilation))
    output_padding = int_tuple("output_padding", output_padding, d, 0)
    if output_size is not None:
        if any(output_padding):
            raise ValueError("give output_size or output_padding, not both")
        if isinstance(output_size, (tuple, list)) and len(output_size) == d + 2:
            output_size = tuple(output_size)[2:]
        size = int_tuple("output_size", output_size, d, 1)
        # as PyTorch picks it: output_padding below the stride
        output_padding = tuple(sz - b for sz, b in zip(size, base))
        for a, (op, s, b) in enumerate(zip(output_padding, stride, base)):
            if not 0 <= op < s:
                raise ValueError(f"output_size {size}: axis {names[a]} can be {b} to "
                                 f"{b + s - 1} for this input and stride")
    else:
        for a, (op, lim) in enumerate(zip(output_padding, limit)):
            if op >= lim:
                raise ValueError(f"output_padding must be below max(stride, dilation) = {lim} "
                                 f"along axis {names[a]}, got {op}")
    out = tuple(b + op for b, op in zip(base, output_padding))
    if min(out) < 1:
        raise ValueError(f"the output would have size {out}: padding crops more than the "
                         "full result")
    return stride, dilation, pads, out


def _grow(a, extra):
    """a with extra[k] zero entries appended along spatial axis k."""
    if not any(extra):
        return a
    return np.pad(a, ((0, 0), (0, 0)) + tuple((0, e) for e in extra))


def _transpose_call(fixed, fname, x, w):
    x = as_array("x", x)
    w = as_array("w", w)
    d = _spatial_axes(w, fixed, fname)
    x, unbatched = _batched(x, d)
    return x, w, d, unbatched


def conv_transpose(x: ArrayInput, w: ArrayInput, bias: ArrayInput | None = None, *,
                   stride: Size = 1, padding: Padding = 0, output_padding: Size = 0,
                   dilation: Size = 1, groups: int = 1, output_size: Shape | None = None,
                   workspace: int | None = None) -> FloatArray:
    """Transposed convolution (PyTorch's conv_transpose{1,2,3}d, ONNX ConvTranspose).

    In matrix form this is the derivation's path of the error back to the previous layer
    (eq. 16-18): a GEMM W^T X followed by col2im. It is the adjoint of ``conv`` with the
    same weights: <conv(u, w), x> = <u, conv_transpose(x, w)>.

    Parameters
    ----------
    x : array_like, shape ``(N, Cin, *spatial)`` or unbatched ``(Cin, *spatial)``
        The input maps (in the derivation's reading: the error of the next layer).
    w : array_like, shape ``(Cin, Cout/groups, *kernel)``
        The kernels, in the layout of the convolution this one is the adjoint of
        (PyTorch's ``conv_transpose`` layout).
    bias : array_like, shape (Cout,), optional
        Added to every entry of output map j. None adds nothing.
    stride, dilation : int or d ints
        The stride and dilation of the convolution this one is the adjoint of.
    padding : int, d ints or d (before, after) pairs
        Entries cropped from each side of the full result (no strings).
    output_padding : int or d ints
        Entries added at the end of each axis; each below max(stride, dilation).
    output_size : d ints (or d + 2), optional
        The output's spatial size; picks output_padding as PyTorch does.
    groups, workspace
        As for ``conv``.

    Returns
    -------
    y : ndarray, shape ``(N, Cout, *out)``, unbatched for an unbatched x
        Along each axis of n entries, the output has
        (n - 1) stride - pad_before - pad_after + dilation (k - 1) + output_padding + 1
        entries. float32 if every input is float32, else float64.
    """
    opts = dict(stride=stride, padding=padding, output_padding=output_padding,
                dilation=dilation, groups=groups, output_size=output_size, workspace=workspace)
    return _transposed(None, "conv_transpose", x, w, bias, opts)


def _transposed(fixed, fname, x, w, bias, opts):
    x, w, d, unbatched = _transpose_call(fixed, fname, x, w)
    bias = None if bias is None else as_array("bias", bias)
    dtype = float_dtype(x=x, w=w, bias=bias)
    plan, extra = _transpose_plan(x.shape, w.shape, d, dtype, **opts)
    cout = plan.x_shape[1]
    if bias is not None:
        check_ndim("bias", bias.shape, 1, "(Cout,)")
        if bias.shape[0] != cout:
            raise ValueError(f"bias must have shape ({cout},) to match w, got {bias.shape}")
    check_fits(plan.work_bytes(backward=True, need_dw=False) + _copy_bytes(x, dtype)
               + _copy_bytes(w, dtype), "this transposed convolution (output, column "
               "buffers, weight and input copies)")
    xg = _grow(floats(dtype, x), extra)
    y, _ = backward(np.ascontiguousarray(xg), None, effective_weight(w, plan), plan, True, False)
    if bias is not None:
        y += floats(dtype, bias).reshape((1, -1) + (1,) * d)
    return y[0] if unbatched else y


def conv_transpose_backward(dy: ArrayInput, x: ArrayInput, w: ArrayInput, *, stride: Size = 1,
                            padding: Padding = 0, output_padding: Size = 0,
                            dilation: Size = 1, groups: int = 1,
                            output_size: Shape | None = None, workspace: int | None = None,
                            input_grad: bool = True, weight_grad: bool = True) -> Gradients:
    """Gradients of ``conv_transpose``: dx is a convolution of dy with w (im2col + GEMM),
    dw a GEMM of x with the patch matrix of dy (eq. 12 with the roles of x and delta
    exchanged), db the sum of dy, given dy = dE/dy.

    Parameters
    ----------
    dy : array_like
        dE/dy, of ``conv_transpose``'s output shape (unbatched with an unbatched x).
    x, w : array_like
        The input and the kernels given to ``conv_transpose``.
    stride, padding, output_padding, dilation, groups, output_size, workspace
        The keywords given to ``conv_transpose``, with the same meaning.
    input_grad : bool
        False skips dx.
    weight_grad : bool
        False skips dw and db.

    Returns
    -------
    dx : ndarray or None
        dE/dx, shaped like x; None when ``input_grad`` is False.
    dw : ndarray or None
        dE/dw, shaped like w; None when ``weight_grad`` is False.
    db : ndarray or None
        dE/db, shape (Cout,); None when ``weight_grad`` is False.
    """
    opts = dict(stride=stride, padding=padding, output_padding=output_padding,
                dilation=dilation, groups=groups, output_size=output_size, workspace=workspace)
    return _transposed_backward(None, "conv_transpose_backward", dy, x, w, opts, input_grad,
                                weight_grad)


def _transposed_backward(fixed, fname, dy, x, w, opts, input_grad, weight_grad):
    _check_grad_flags(input_grad, weight_grad)
    dy = as_array("dy", dy)
    x, w, d, unbatched = _transpose_call(fixed, fname, x, w)
    if unbatched:
        dy = dy[None]
    dtype = float_dtype(dy=dy, x=x, w=w)
    plan, extra = _transpose_plan(x.shape, w.shape, d, dtype, **opts)
    if dy.shape != plan.x_shape:
        want = plan.x_shape[1:] if unbatched else plan.x_shape
        raise ValueError(f"dy must have the output shape {want} of this transposed "
                         f"convolution, got {dy.shape[1:] if unbatched else dy.shape}")
    check_fits(plan.work_bytes() + plan.work_bytes(backward=True, need_dx=False)
               + _copy_bytes(x, dtype) + _copy_bytes(dy, dtype) + _copy_bytes(w, dtype),
               "this transposed convolution's backward pass")
    dy = floats(dtype, dy)
    w2 = effective_weight(w, plan)
    dx = dw = db = None
    if input_grad:           # the forward pass of the matching convolution
        dx = forward(dy, w2, None, plan)
        if any(extra):
            dx = np.ascontiguousarray(dx[(slice(None), slice(None)) + tuple(
                slice(0, s) for s in x.shape[2:])])
    if weight_grad:          # its kernel gradient, with x in the place of delta
        xg = np.ascontiguousarray(_grow(floats(dtype, x), extra))
        _, dw2 = backward(xg, dy, w2, plan, False, True)
        dw = weight_gradient(dw2, plan)
        db = dy.sum(axis=tuple(range(2, dy.ndim)), dtype=dtype).sum(axis=0)
    if unbatched and dx is not None:
        dx = dx[0]
    return dx, dw, db


def _fixed_transpose(d, backward_pass):
    name = f"conv_transpose{d}d" + ("_backward" if backward_pass else "")
    if backward_pass:
        def f(dy, x, w, *, stride=1, padding=0, output_padding=0, dilation=1, groups=1,
              output_size=None, workspace=None, input_grad=True, weight_grad=True):
            opts = dict(stride=stride, padding=padding, output_padding=output_padding,
                        dilation=dilation, groups=groups, output_size=output_size,
                        workspace=workspace)
            return _transposed_backward(d, name, dy, x, w, opts, input_grad, weight_grad)
        doc = (f"``conv_transpose_backward`` for {d}-D inputs {LAYOUTS[d][0]} (or "
               "unbatched).\n\n" + _sections(conv_transpose_backward.__doc__))
    else:
        def f(x, w, bias=None, *, stride=1, padding=0, output_padding=0, dilation=1,  # type: ignore[misc]
              groups=1, output_size=None, workspace=None):
            opts = dict(stride=stride, padding=padding, output_padding=output_padding,
                        dilation=dilation, groups=groups, output_size=output_size,
                        workspace=workspace)
            return _transposed(d, name, x, w, bias, opts)
        doc = (f"``conv_transpose`` for {d}-D inputs {LAYOUTS[d][0]} (or unbatched) and "
               f"weights ``(Cin, Cout/groups, *kernel)``; see ``conv_transpose``.\n\n"
               + _sections(conv_transpose.__doc__))
    return _named(f, name, doc)


conv_transpose1d, conv_transpose2d, conv_transpose3d = (
    _like(conv_transpose, _fixed_transpose(d, False)) for d in (1, 2, 3))
conv_transpose1d_backward, conv_transpose2d_backward, conv_transpose3d_backward = (
    _like(conv_transpose_backward, _fixed_transpose(d, True)) for d in (1, 2, 3))


# ----------------------------------------------------------------------------- im2col API
def _unfold_plan(x_shape, kernel_size, stride, padding, dilation, padding_mode, fill_value,
                 name="x"):
    """The Plan of a single-kernel-per-channel unfold (im2col/col2im share it). d is
    len(kernel_size) for a tuple, else x's dimensions - 2 (batched)."""
    if isinstance(kernel_size, (tuple, list)):
        d = len(kernel_size)
    else:
        d = len(x_shape) - 2
    if d not in LAYOUTS:
        raise ValueError(f"kernel_size must have 1, 2 or 3 entries (an int: {name} has 1 to 3 "
                         f"spatial axes), got {kernel_size!r} for shape {tuple(x_shape)}")
    if len(x_shape) != d + 2:
        raise ValueError(f"{name} must be {d + 2}-D {LAYOUTS[d][0]} for a kernel_size of {d} "
                         f"axes, got shape {tuple(x_shape)}")
    ksize = int_tuple("kernel_size", kernel_size, d, 1)
    return make_plan(x_shape, (1, x_shape[1]) + ksize, None, dtype=np.dtype(np.float64),
                     stride=stride, padding=padding, dilation=dilation, groups=1,
                     connections=None, flip=False, workspace=None, spatial=d,
                     padding_mode=padding_mode, fill_value=fill_value)


def _unfold_units(plan: Any) -> tuple[int, int]:
    """(channels per unit, threads) of an im2col/col2im alone: (image, channel block)
    units, at least MIN_UNITS of them when the shapes allow."""
    from ._plan import MIN_UNITS, pool_threads
    n, c = plan.x_shape[:2]
    blocks = max(1, min(c, -(-MIN_UNITS // max(n, 1))))
    elems = n * c * plan.geometry.taps * plan.geometry.positions
    return -(-c // blocks), pool_threads(2 * elems)


def im2col(x: ArrayInput, kernel_size: Size, *, stride: Size = 1, padding: Padding = 0,
           dilation: Size = 1, padding_mode: PaddingMode = "zeros",
           fill_value: float = 0.0) -> FloatArray:
    """The batched patch matrix of eq. 12: one row per output position, one column per tap.

    Parameters
    ----------
    x : array_like, shape ``(N, C, *spatial)``, 1 to 3 spatial axes
        The input maps.
    kernel_size : int or d ints
        d ints give d spatial axes; an int means d = x.ndim - 2.
    stride, padding, dilation, padding_mode, fill_value
        As for ``conv``.

    Returns
    -------
    cols : ndarray, shape ``(N*Ho*Wo, C*kh*kw)``
        Row ``(n*Ho + i)*Wo + j`` holds the patch under output position (i, j) of image n;
        column ``(c*kh + p)*kw + q`` the tap (p, q) of channel c — PyTorch's
        ``unfold(x).transpose(1, 2)`` stacked over the batch (in 1-D and 3-D the same, with
        positions and taps in C order). The array is the transpose of the engine's
        C-contiguous ``(C*taps, N*positions)`` buffer, so it is Fortran-ordered.

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
    plan = _unfold_plan(x.shape, kernel_size, stride, padding, dilation, padding_mode,
                        fill_value)
    n, c = x.shape[:2]
    shape = (c * plan.geometry.taps, n * plan.geometry.positions)
    check_fits(nbytes_of(shape, dtype) + _copy_bytes(x, dtype), "the column matrix")
    x = floats(dtype, x)
    cols = np.empty(shape, dtype=dtype)
    _engine.unfold(x.reshape(-1), cols.reshape(-1), plan.geometry, n, *_unfold_units(plan),
                   False)          # src: the maps, dst: the columns
    return cols.T


def col2im(cols: ArrayInput, input_shape: Shape, kernel_size: Size, *, stride: Size = 1,
           padding: Padding = 0, dilation: Size = 1, padding_mode: PaddingMode = "zeros",
           fill_value: float = 0.0) -> FloatArray:
    """The adjoint of ``im2col``: every patch entry added back to the pixel it came from.

    This is how the derivation's eq. 16-18 becomes matrix form: the full convolution of delta
    with the flipped kernel equals col2im(delta-columns), overlapping patches summed.

    Parameters
    ----------
    cols : array_like, shape ``(N*positions, C*taps)``
        A column matrix in ``im2col``'s layout, e.g. the product dy W of the backward pass.
    input_shape : tuple of int
        ``(N, C, *spatial)``, the shape of the maps the columns were taken from.
    kernel_size, stride, padding, dilation, padding_mode, fill_value
        As for ``im2col`` (a padded tap's entry is added to the pixel it was read from; a
        constant pad's is dropped).

    Returns
    -------
    x : ndarray, shape ``input_shape``
        Every entry of ``cols`` added to the pixel its patch read; float32 for float32
        columns, else float64.
    """
    cols = as_array("cols", cols)
    if not isinstance(input_shape, (tuple, list)):
        raise TypeError(f"input_shape must be a tuple (N, C, *spatial), got {input_shape!r}")
    input_shape = tuple(integer("input_shape", s, 0) for s in input_shape)
    dtype = float_dtype(cols=cols)
    plan = _unfold_plan(input_shape, kernel_size, stride, padding, dilation, padding_mode,
                        fill_value, name="input_shape")
    n, c = input_shape[:2]
    expected = (n * plan.geometry.positions, c * plan.geometry.taps)
    check_ndim("cols", cols.shape, 2, "(N*positions, C*taps)")
    if cols.shape != expected:
        raise ValueError(f"cols must have shape {expected} for input_shape {input_shape}, "
                         f"got {cols.shape}")
    check_fits(nbytes_of(input_shape, dtype) + cols.size * dtype.itemsize, "col2im")
    cols_t = np.ascontiguousarray(cols.T, dtype=dtype)
    x = np.zeros(input_shape, dtype=dtype)
    _engine.unfold(cols_t.reshape(-1), x.reshape(-1), plan.geometry, n, *_unfold_units(plan),
                   True)           # src: the columns, dst: the maps
    return x
