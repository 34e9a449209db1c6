"""Transposed convolution (PyTorch's conv_transpose{1,2,3}d, ONNX ConvTranspose) and its
gradients: the public functions.

A transposed convolution is the adjoint of a convolution with the same weights, so it is
planned as that convolution (``_plan.plan_conv_transpose``) and run as its dx pass: the
derivation's path of the error back to the previous layer (eq. 16-18), W^T X then col2im.
"""

from __future__ import annotations

from .. import _plan, _run
from .._options import conv_transpose_options
from .._shapes import LAYOUTS, batched, kernel_axes
from .._typing import ArrayInput, FloatArray, Gradients, Padding, Shape, Size
from .._typing import TransposeAlgorithm as Algorithm
from .._typing import like as _like
from .._validate import (as_array, check_gradient_shape, check_ndim, flag,
                         float_dtype)
from ._variants import named, sections

__all__ = ["conv_transpose", "conv_transpose_backward", "conv_transpose1d",
           "conv_transpose1d_backward", "conv_transpose2d", "conv_transpose2d_backward",
           "conv_transpose3d", "conv_transpose3d_backward"]


def _arrays(fixed, fname, x, w):
    x = as_array("x", x)
    w = as_array("w", w)
    d = kernel_axes(w.shape, fixed, fname)
    x, unbatched = batched(x, d)
    return x, w, d, unbatched


def _transposed(fixed, fname, x, w, bias, opts, workspace):
    """options -> plan -> run, for every conv_transpose function."""
    x, w, d, unbatched = _arrays(fixed, fname, x, w)
    options = conv_transpose_options(d, **opts)
    bias = None if bias is None else as_array("bias", bias)
    dtype = float_dtype(x=x, w=w, bias=bias)
    plan = _plan.plan_conv_transpose(x.shape, w.shape, dtype, options, workspace)
    cout = plan.x_shape[1]
    if bias is not None:
        check_ndim("bias", bias.shape, 1, "(Cout,)")
        if bias.shape[0] != cout:
            raise ValueError(f"bias must have shape ({cout},) to match w, got {bias.shape}")
    y = _run.transposed_forward(x, w, bias, plan)
    return y[0] if unbatched else y


def _transposed_backward(fixed, fname, dy, x, w, opts, workspace, input_grad, weight_grad):
    """options -> plan -> run, for every conv_transpose_backward function."""
    need_dx, need_dw = flag("input_grad", input_grad), flag("weight_grad", weight_grad)
    dy = as_array("dy", dy)
    x, w, d, unbatched = _arrays(fixed, fname, x, w)
    options = conv_transpose_options(d, **opts)
    if unbatched:
        dy = dy[None]
    dtype = float_dtype(dy=dy, x=x, w=w)
    plan = _plan.plan_conv_transpose(x.shape, w.shape, dtype, options, workspace)
    check_gradient_shape("dy", dy.shape, plan.x_shape, unbatched,
                         "this transposed convolution")
    dx, dw, db = _run.transposed_backward(dy, x, w, plan, need_dx, need_dw)
    if unbatched and dx is not None:
        dx = dx[0]
    return dx, dw, db


def conv_transpose(x: ArrayInput, w: ArrayInput, bias: ArrayInput | None = None, *,
                   stride: Size = 1, padding: Padding = 0, output_padding: Size = 0,
                   dilation: Size = 1, groups: int = 1, output_size: Shape | None = None,
                   workspace: int | None = None, algorithm: Algorithm = "auto") -> FloatArray:
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
    algorithm : {'auto', 'im2col', 'winograd', 'direct'}
        How the passes run: a transposed convolution is a convolution's dx pass (and its
        dx that convolution's forward pass), so with stride 1 and 3-tap kernels it may
        take the Winograd route ('auto' where it pays, 'winograd' always), and a grouped
        one the direct route ('auto' for depthwise, 'direct' always; see ``conv``).

    Returns
    -------
    y : ndarray, shape ``(N, Cout, *out)``, unbatched for an unbatched x
        Along each axis of n entries, the output has
        (n - 1) stride - pad_before - pad_after + dilation (k - 1) + output_padding + 1
        entries. float32 if every input is float32, else float64.
    """
    opts = dict(stride=stride, padding=padding, output_padding=output_padding,
                dilation=dilation, groups=groups, output_size=output_size,
                algorithm=algorithm)
    return _transposed(None, "conv_transpose", x, w, bias, opts, workspace)


def conv_transpose_backward(dy: ArrayInput, x: ArrayInput, w: ArrayInput, *, stride: Size = 1,
                            padding: Padding = 0, output_padding: Size = 0,
                            dilation: Size = 1, groups: int = 1,
                            output_size: Shape | None = None, workspace: int | None = None,
                            input_grad: bool = True, weight_grad: bool = True,
                            algorithm: Algorithm = "auto") -> Gradients:
    """Gradients of ``conv_transpose``: dx is a convolution of dy with w (im2col + GEMM),
    dw a GEMM of x with the patch matrix of dy (eq. 12 with the roles of x and delta
    exchanged), db the sum of dy, given dy = dE/dy.

    Parameters
    ----------
    dy : array_like
        dE/dy, of ``conv_transpose``'s output shape (unbatched with an unbatched x).
    x, w : array_like
        The input and the kernels given to ``conv_transpose``.
    stride, padding, output_padding, dilation, groups, output_size, workspace, algorithm
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
                dilation=dilation, groups=groups, output_size=output_size,
                algorithm=algorithm)
    return _transposed_backward(None, "conv_transpose_backward", dy, x, w, opts, workspace,
                                input_grad, weight_grad)


def _fixed_transpose(d, backward_pass):
    name = f"conv_transpose{d}d" + ("_backward" if backward_pass else "")
    if backward_pass:
        def f(dy, x, w, *, stride=1, padding=0, output_padding=0, dilation=1, groups=1,
              output_size=None, workspace=None, input_grad=True, weight_grad=True,
              algorithm="auto"):
            opts = dict(stride=stride, padding=padding, output_padding=output_padding,
                        dilation=dilation, groups=groups, output_size=output_size,
                        algorithm=algorithm)
            return _transposed_backward(d, name, dy, x, w, opts, workspace, input_grad,
                                        weight_grad)
        doc = (f"``conv_transpose_backward`` for {d}-D inputs {LAYOUTS[d][0]} (or "
               "unbatched).\n\n" + sections(conv_transpose_backward.__doc__))
    else:
        def f(x, w, bias=None, *, stride=1, padding=0, output_padding=0, dilation=1,  # type: ignore[misc]
              groups=1, output_size=None, workspace=None, algorithm="auto"):
            opts = dict(stride=stride, padding=padding, output_padding=output_padding,
                        dilation=dilation, groups=groups, output_size=output_size,
                        algorithm=algorithm)
            return _transposed(d, name, x, w, bias, opts, workspace)
        doc = (f"``conv_transpose`` for {d}-D inputs {LAYOUTS[d][0]} (or unbatched) and "
               f"weights ``(Cin, Cout/groups, *kernel)``; see ``conv_transpose``.\n\n"
               + sections(conv_transpose.__doc__))
    return named(f, name, doc, __name__)


conv_transpose1d, conv_transpose2d, conv_transpose3d = (
    _like(conv_transpose, _fixed_transpose(d, False)) for d in (1, 2, 3))
conv_transpose1d_backward, conv_transpose2d_backward, conv_transpose3d_backward = (
    _like(conv_transpose_backward, _fixed_transpose(d, True)) for d in (1, 2, 3))
