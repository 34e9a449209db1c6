"""vecconv's operations inside PyTorch's autograd, to any order of derivative.

Each function takes and returns CPU tensors and records a ``torch.autograd.Function``:
the forward pass is vecconv's, the backward pass vecconv's adjoint (eq. 12-13 and 16-18
of the derivation for convolutions, eq. 6-8 for pooling). So a connection table, ``flip``
or a padding mode of vecconv can sit inside a PyTorch model and train with its
optimisers. Tensors that require grad are accepted as they are; float32 stays float32.

The backward passes are themselves recorded operations of this module, so gradients of
gradients (a gradient penalty, ``torch.autograd.functional.hessian``, ``gradgradcheck``)
are exact to any order:

* a convolution y = conv(x, w) is bilinear; its input gradient (eq. 16-18, a transposed
  convolution of dy) is linear in dy and in w, its weight gradient (eq. 12-13, a
  correlation of x with dy) linear in dy and in x, and the derivatives of either are again
  one of the three operations. ``conv_transpose`` forms the same family with the roles of
  its two passes exchanged. The bias gradient (eq. 10, dy summed) is a torch sum.
* max pooling's backward sends each delta to its window's argmax (eq. 7-8), a scatter by
  the saved indices; the derivative of that scatter is the gather by the same indices, and
  the gather's is the scatter again.
* average pooling is linear: its backward (eq. 6's up-sampling) has average pooling with
  the same options as its derivative.

Precision: float32 inputs compute and return float32; float64 (or a mix with float64,
or integers) float64, as in vecconv. bfloat16 and float16 tensors, which vecconv's
kernels do not take but PyTorch convolves on the CPU, are converted to float32 for the
computation; a result is returned in the half dtype when every tensor given is of that
one half dtype, else in float32 (float64 with a float64 input). Every gradient has the
dtype of the tensor it belongs to.

Reverse mode only: the Functions have no forward-mode rule (``torch.autograd.forward_ad``)
and no ``setup_context``/vmap rule, so ``torch.func`` transforms (``vmap``, ``jacrev``,
``torch.func.hessian``) and ``hessian(..., vectorize=True)`` are not supported; the
``torch.autograd`` API (``grad(create_graph=True)``, ``functional.hessian``) is. Tensors
must be dense CPU tensors of a real float or integer dtype.

>>> import torch, vecconv.torch as vt
>>> x = torch.randn(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
>>> w = torch.randn(4, 3, 3, 3, dtype=torch.float64, requires_grad=True)
>>> vt.conv(x, w, padding=1, padding_mode="reflect").sum().backward()
>>> x.grad.shape, w.grad.shape
(torch.Size([2, 3, 8, 8]), torch.Size([4, 3, 3, 3]))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, NamedTuple, overload

import numpy as np
import torch
from typing_extensions import Unpack      # typing's own from Python 3.11; torch requires it

from . import functional
from ._typing import AvgPoolOptions, ConvOptions, ConvTransposeOptions, MaxPoolOptions, Size

__all__ = ["conv", "conv_transpose", "max_pool", "avg_pool"]

#: the dtypes vecconv's kernels do not take: computed in float32, returned as given
_HALF = (torch.float16, torch.bfloat16)


_FLOATS = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
_INTEGERS = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.bool)


def _array(name, t):
    """A tensor's values as a NumPy array (no copy for a contiguous float32/float64 CPU
    tensor; a half-precision tensor is converted to float32)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.device.type != "cpu":
        raise ValueError(f"{name} must be on the CPU, got a tensor on {t.device}")
    if t.is_complex():
        raise TypeError(f"{name} must be a real tensor, got {t.dtype}")
    if t.layout != torch.strided or t.is_nested:
        raise TypeError(f"{name} must be a dense (strided) tensor, got a "
                        f"{'nested' if t.is_nested else t.layout} one")
    if t.is_quantized or not (t.is_floating_point() or t.dtype in _INTEGERS) or (
            t.is_floating_point() and t.dtype not in _FLOATS):
        raise TypeError(f"{name} must be a real tensor of float64, float32, float16, "
                        f"bfloat16 or an integer type, got {t.dtype}")
    t = t.detach()
    if t.dtype in _HALF:
        t = t.to(torch.float32)
    return t.resolve_conj().resolve_neg().contiguous().numpy()


def _tensor(a, dtype):
    """An array as a tensor of ``dtype`` (vecconv may have promoted, or computed a half
    dtype in float32)."""
    return torch.from_numpy(np.ascontiguousarray(a)).to(dtype)


def _shape_of(name, t):
    """An array that stands for ``t`` where only its shape and dtype count (the x of an
    input gradient, the w of a weight gradient): t's own values when they need no copy,
    else zeros of one broadcast element, so that nothing of t's size is made here."""
    if t.dtype in (torch.float32, torch.float64) and t.is_contiguous():
        return _array(name, t)
    dtype = np.float32 if t.dtype in (torch.float32, *_HALF) else np.float64
    return np.broadcast_to(np.zeros((), dtype), tuple(t.shape))


def _result(a, *inputs):
    """A forward result as a tensor: the half dtype of the inputs when they all share it,
    else vecconv's dtype (float32 when every input is float32 or half, else float64)."""
    dtypes = {t.dtype for t in inputs if t is not None}
    if len(dtypes) == 1 and next(iter(dtypes)) in _HALF:
        return _tensor(a, dtypes.pop())
    return torch.from_numpy(np.ascontiguousarray(a))


def _as(t, dtype):
    """t in ``dtype`` (a recorded cast when it changes: the graph goes on)."""
    return t if t is None or t.dtype == dtype else t.to(dtype)


# ----------------------------------------------------------------------------- convolutions
class _Pair(NamedTuple):
    """A convolution and its backward pass in vecconv's NumPy API:
    ``forward(x, w, bias, **opts) -> y`` and
    ``backward(dy, x, w, input_grad=, weight_grad=, **opts) -> (dx, dw, db)``."""
    forward: Callable[..., Any]
    backward: Callable[..., Any]


_CONV = _Pair(functional.conv, functional.conv_backward)
_CONV_TRANSPOSE = _Pair(functional.conv_transpose, functional.conv_transpose_backward)


def _linear_opts(opts):
    """The options of a convolution's bilinear part. With ``padding_mode='constant'``,
    conv(x, w) holds a term in w alone (the fill read through the kernels): it has a
    weight gradient (eq. 12-13: the patches hold the fill) but no input gradient (eq.
    16-18: the fill gets none). The input gradient's own derivatives, conv(g, w) and
    dT/dw(dy, g), are thus those of the convolution with the fill set to 0."""
    if opts.get("padding_mode") == "constant" and opts.get("fill_value", 0.0) != 0.0:
        return dict(opts, fill_value=0.0)
    return opts


def _bias_grad(dy, w, bias):
    """dE/db (eq. 10): dy summed over the batch and every position, as a torch sum so that
    it is differentiable too."""
    channel = dy.ndim - (w.ndim - 2) - 1          # 1, or 0 for an unbatched dy
    axes = [a for a in range(dy.ndim) if a != channel]
    return _as(dy.sum(dim=axes) if axes else dy, bias.dtype)


class _Convolve(torch.autograd.Function):
    """y = forward(x, w) + bias, bilinear in (x, w).

    With the trilinear form T(x, w, dy) = <forward(x, w), dy>, the input gradient
    ``_InputGrad(dy, w)`` is dT/dx (eq. 16-18 for a convolution) and the weight gradient
    ``_WeightGrad(dy, x)`` is dT/dw (eq. 12-13); each is differentiable in turn.
    """

    @staticmethod
    def forward(ctx, x, w, bias, pair, opts):
        y = pair.forward(_array("x", x), _array("w", w),
                         None if bias is None else _array("bias", bias), **opts)
        ctx.save_for_backward(x, w, bias)
        ctx.pair, ctx.opts = pair, opts
        return _result(y, x, w, bias)

    @staticmethod
    def backward(ctx, dy):
        x, w, bias = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        dx = _InputGrad.apply(dy, w, x.detach(), ctx.pair, ctx.opts) if need_x else None
        dw = _WeightGrad.apply(dy, x, w.detach(), ctx.pair, ctx.opts) if need_w else None
        db = _bias_grad(dy, w, bias) if need_b else None
        return dx, dw, db, None, None


class _InputGrad(torch.autograd.Function):
    """dx = dT/dx of ``_Convolve``: linear in dy and in w (x, given as ``like``, lends only
    its shape and dtype).

    Since <dx(dy, w), g> = T(g, w, dy) for the bilinear part of the convolution, its
    derivatives for an upstream g shaped like x are conv(g, w) for dy and the weight
    gradient dT/dw(dy, g) for w.
    """

    @staticmethod
    def forward(ctx, dy, w, like, pair, opts):
        dx, _, _ = pair.backward(_array("dy", dy), _shape_of("x", like), _array("w", w),
                                 input_grad=True, weight_grad=False, **opts)
        ctx.save_for_backward(dy, w)
        ctx.pair, ctx.opts = pair, _linear_opts(opts)
        return _tensor(dx, like.dtype)

    @staticmethod
    def backward(ctx, g):
        dy, w = ctx.saved_tensors
        need_dy, need_w = ctx.needs_input_grad[:2]
        ddy = dw = None
        if need_dy:
            ddy = _as(_Convolve.apply(g, w, None, ctx.pair, ctx.opts), dy.dtype)
        if need_w:
            dw = _WeightGrad.apply(dy, g, w.detach(), ctx.pair, ctx.opts)
        return ddy, dw, None, None, None


class _WeightGrad(torch.autograd.Function):
    """dw = dT/dw of ``_Convolve``: linear in dy and in x (w, given as ``like``, lends only
    its shape and dtype); exactly zero where a connection table has no connection.

    Since <dw(dy, x), h> = T(x, h, dy), its derivatives for an upstream h shaped like w
    are conv(x, h) for dy (a constant padding's fill included) and the input gradient
    dT/dx(dy, h) for x.
    """

    @staticmethod
    def forward(ctx, dy, x, like, pair, opts):
        _, dw, _ = pair.backward(_array("dy", dy), _array("x", x), _shape_of("w", like),
                                 input_grad=False, weight_grad=True, **opts)
        ctx.save_for_backward(dy, x)
        ctx.pair, ctx.opts = pair, opts
        return _tensor(dw, like.dtype)

    @staticmethod
    def backward(ctx, h):
        dy, x = ctx.saved_tensors
        need_dy, need_x = ctx.needs_input_grad[:2]
        ddy = dx = None
        if need_dy:
            ddy = _as(_Convolve.apply(x, h, None, ctx.pair, ctx.opts), dy.dtype)
        if need_x:
            dx = _InputGrad.apply(dy, h, x.detach(), ctx.pair, ctx.opts)
        return ddy, dx, None, None, None


# ----------------------------------------------------------------------------- pooling
def _spatial_axes(x_shape, kernel_size):
    """d, the pooled axes: vecconv's rule (a tuple's length, else all but N and C)."""
    if isinstance(kernel_size, (tuple, list)):
        return len(kernel_size)
    return len(x_shape) - 2


class _MaxPool(torch.autograd.Function):
    """y, indices = max_pool(x); dx is the scatter of dy to the argmax (eq. 7-8)."""

    @staticmethod
    def forward(ctx, x, opts):
        y, idx = functional.max_pool(_array("x", x), return_indices=True, **opts)
        indices = torch.from_numpy(idx)
        ctx.save_for_backward(indices)
        ctx.x_shape, ctx.x_dtype, ctx.opts = tuple(x.shape), x.dtype, opts
        ctx.mark_non_differentiable(indices)
        return _result(y, x), indices

    @staticmethod
    def backward(ctx, dy, _):
        (indices,) = ctx.saved_tensors
        return _Scatter.apply(dy, indices, ctx.x_shape, ctx.x_dtype, ctx.opts), None


class _Scatter(torch.autograd.Function):
    """dx = max_pool_backward(dy): each delta added to the position ``indices`` names in
    its map (eq. 7-8; an index of -1, a window with no tap inside x, sends it nowhere).
    Linear in dy; its derivative is ``_Gather`` by the same indices."""

    @staticmethod
    def forward(ctx, dy, indices, x_shape, dtype, opts):
        dx = functional.max_pool_backward(_array("dy", dy), x_shape, indices=indices.numpy(),
                                     **opts)
        ctx.save_for_backward(indices)
        ctx.x_shape, ctx.dy_dtype, ctx.opts = x_shape, dy.dtype, opts
        return _tensor(dx, dtype)

    @staticmethod
    def backward(ctx, g):
        (indices,) = ctx.saved_tensors
        dy = _Gather.apply(g, indices, ctx.x_shape, ctx.dy_dtype, ctx.opts)
        return dy, None, None, None, None


class _Gather(torch.autograd.Function):
    """The adjoint of ``_Scatter``: out[i] = g[indices[i]] within each map (0 where the
    index is -1), g shaped like max_pool's input; its derivative is ``_Scatter``."""

    @staticmethod
    def forward(ctx, g, indices, x_shape, dtype, opts):
        d = _spatial_axes(x_shape, opts["kernel_size"])
        lead = tuple(g.shape[:g.ndim - d])
        missing = indices < 0
        where = indices.clamp(min=0).reshape(lead + (-1,))
        out = g.detach().reshape(lead + (-1,)).gather(-1, where).reshape(indices.shape)
        if bool(missing.any()):
            out = out.masked_fill(missing, 0)
        ctx.save_for_backward(indices)
        ctx.x_shape, ctx.g_dtype, ctx.opts = x_shape, g.dtype, opts
        return out.to(dtype)

    @staticmethod
    def backward(ctx, h):
        (indices,) = ctx.saved_tensors
        dg = _Scatter.apply(h, indices, ctx.x_shape, ctx.g_dtype, ctx.opts)
        return dg, None, None, None, None


class _AvgPool(torch.autograd.Function):
    """y = avg_pool(x), linear; dx is ``_AvgPoolBackward`` (eq. 6's up-sampling)."""

    @staticmethod
    def forward(ctx, x, opts):
        y = functional.avg_pool(_array("x", x), **opts)
        ctx.x_shape, ctx.x_dtype, ctx.opts = tuple(x.shape), x.dtype, opts
        return _result(y, x)

    @staticmethod
    def backward(ctx, dy):
        return _AvgPoolBackward.apply(dy, ctx.x_shape, ctx.x_dtype, ctx.opts), None


class _AvgPoolBackward(torch.autograd.Function):
    """dx = avg_pool_backward(dy), the adjoint of average pooling: its own derivative is
    average pooling with the same options."""

    @staticmethod
    def forward(ctx, dy, x_shape, dtype, opts):
        dx = functional.avg_pool_backward(_array("dy", dy), x_shape, **opts)
        ctx.dy_dtype, ctx.opts = dy.dtype, opts
        return _tensor(dx, dtype)

    @staticmethod
    def backward(ctx, g):
        return _as(_AvgPool.apply(g, ctx.opts), ctx.dy_dtype), None, None, None


# ----------------------------------------------------------------------------- public API
def conv(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None,
         **options: Unpack[ConvOptions]) -> torch.Tensor:
    """``vecconv.conv`` as a differentiable torch operation (to any order).

    Parameters
    ----------
    x, w, bias : torch.Tensor
        CPU tensors, as ``vecconv.conv`` takes arrays; bias may be None; any may require
        grad. bfloat16 and float16 are computed in float32.
    **options
        The keywords of ``vecconv.conv`` (stride, padding, dilation, groups, connections,
        flip, padding_mode, fill_value, workspace, algorithm: the forward pass and each
        gradient, to any order, plan their routes as ``vecconv.conv`` does).

    Returns
    -------
    torch.Tensor
        ``vecconv.conv(x, w, bias, **options)`` as a CPU tensor: float32 when every input
        is float32, float64 when any is float64; a half dtype when every input is of that
        dtype (else float32). Its gradients (each in its tensor's dtype) are
        differentiable: dx (eq. 16-18) is a transposed convolution of dy with w, dw
        (eq. 12-13) a correlation of x with dy, db (eq. 10) the sum of dy.
    """
    return _Convolve.apply(x, w, bias, _CONV, options)


def conv_transpose(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None,
                   **options: Unpack[ConvTransposeOptions]) -> torch.Tensor:
    """``vecconv.conv_transpose`` as a differentiable torch operation (to any order).

    Parameters
    ----------
    x, w, bias : torch.Tensor
        CPU tensors, as ``vecconv.conv_transpose`` takes arrays (w is
        ``(Cin, Cout/groups, *kernel)``); bias may be None; any may require grad.
        bfloat16 and float16 are computed in float32.
    **options
        The keywords of ``vecconv.conv_transpose`` (stride, padding, output_padding,
        dilation, groups, output_size, workspace, algorithm).

    Returns
    -------
    torch.Tensor
        ``vecconv.conv_transpose(x, w, bias, **options)``, its dtype as for ``conv``. Its
        gradients are differentiable: dx is the convolution of dy with w (the forward pass
        eq. 16-18 is the adjoint of), dw eq. 12-13 with the roles of x and dy exchanged,
        db the sum of dy (eq. 10).
    """
    return _Convolve.apply(x, w, bias, _CONV_TRANSPOSE, options)


@overload
def max_pool(x: torch.Tensor, kernel_size: Size, *, return_indices: Literal[False] = False,
             **options: Unpack[MaxPoolOptions]) -> torch.Tensor: ...
@overload
def max_pool(x: torch.Tensor, kernel_size: Size, *, return_indices: Literal[True],
             **options: Unpack[MaxPoolOptions]) -> tuple[torch.Tensor, torch.Tensor]: ...
@overload
def max_pool(x: torch.Tensor, kernel_size: Size, *, return_indices: bool,
             **options: Unpack[MaxPoolOptions]
             ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]: ...
def max_pool(x: torch.Tensor, kernel_size: Size, *, return_indices: bool = False,
             **options: Unpack[MaxPoolOptions]) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``vecconv.max_pool`` as a differentiable torch operation (to any order); the
    indices (int64, not differentiable) are returned too with ``return_indices=True``.

    Parameters
    ----------
    x : torch.Tensor
        A CPU tensor, as ``vecconv.max_pool`` takes an array; it may require grad.
        bfloat16 and float16 are pooled in float32 and returned in their dtype.
    kernel_size : int or d ints
        The window, as for ``vecconv.max_pool``.
    return_indices : bool
        Also return where each maximum came from.
    **options
        The other keywords of ``vecconv.max_pool`` (stride, padding, dilation, ceil_mode).

    Returns
    -------
    y : torch.Tensor
        The window maxima in x's dtype, their gradient recorded (eq. 7-8: each delta goes
        to its window's argmax, a scatter by the indices whose own derivative is the
        gather by them).
    indices : torch.Tensor
        Only with ``return_indices=True``: int64, not differentiable, as PyTorch's.
    """
    y, idx = _MaxPool.apply(x, dict(kernel_size=kernel_size, **options))
    return (y, idx) if return_indices else y


def avg_pool(x: torch.Tensor, kernel_size: Size,
             **options: Unpack[AvgPoolOptions]) -> torch.Tensor:
    """``vecconv.avg_pool`` as a differentiable torch operation (to any order).

    Parameters
    ----------
    x : torch.Tensor
        A CPU tensor, as ``vecconv.avg_pool`` takes an array; it may require grad.
        bfloat16 and float16 are pooled in float32 and returned in their dtype.
    kernel_size : int or d ints
        The window, as for ``vecconv.avg_pool``.
    **options
        The other keywords of ``vecconv.avg_pool`` (stride, padding, ceil_mode,
        count_include_pad, divisor_override).

    Returns
    -------
    torch.Tensor
        The window means (float32 for float32 x, float64 for float64 or integer x, x's
        dtype for a half x), their gradient recorded: ``vecconv.avg_pool_backward``
        (eq. 6's up-sampling for windows that tile the map), whose own derivative is this
        average pooling again.
    """
    return _AvgPool.apply(x, dict(kernel_size=kernel_size, **options))
