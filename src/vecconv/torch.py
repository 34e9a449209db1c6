"""vecconv's operations inside PyTorch's autograd.

Each function takes and returns CPU tensors and records a ``torch.autograd.Function``:
the forward pass is vecconv's, the backward pass vecconv's adjoint (eq. 12-13 and 16-18
of the derivation for convolutions, eq. 6-8 for pooling). So a connection table, ``flip``
or a padding mode of vecconv can sit inside a PyTorch model and train with its
optimisers. Tensors that require grad are accepted as they are; float32 stays float32.

>>> import torch, vecconv.torch as vt
>>> x = torch.randn(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
>>> w = torch.randn(4, 3, 3, 3, dtype=torch.float64, requires_grad=True)
>>> vt.conv(x, w, padding=1, padding_mode="reflect").sum().backward()
>>> x.grad.shape, w.grad.shape
(torch.Size([2, 3, 8, 8]), torch.Size([4, 3, 3, 3]))

Only first derivatives are provided (``once_differentiable``).
"""

from __future__ import annotations

from typing import Literal, overload

import numpy as np
import torch
from torch.autograd.function import once_differentiable
from typing_extensions import Unpack      # typing's own from Python 3.11; torch requires it

from . import functional
from ._typing import AvgPoolOptions, ConvOptions, ConvTransposeOptions, MaxPoolOptions, Size

__all__ = ["conv", "conv_transpose", "max_pool", "avg_pool"]


def _array(name, t):
    """A tensor's values as a NumPy array (no copy for a contiguous CPU tensor)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.device.type != "cpu":
        raise ValueError(f"{name} must be on the CPU, got a tensor on {t.device}")
    if t.is_complex():
        raise TypeError(f"{name} must be a real tensor, got {t.dtype}")
    return t.detach().resolve_conj().resolve_neg().contiguous().numpy()


def _tensor(a, dtype):
    """A gradient as a tensor of its input's dtype (vecconv may have promoted)."""
    return torch.from_numpy(np.ascontiguousarray(a)).to(dtype)


def _dtypes(*tensors):
    return tuple(None if t is None else t.dtype for t in tensors)


def _convolution(name, forward_fn, backward_fn):
    """The autograd Function of a convolution: forward_fn(x, w, bias, **opts) and
    backward_fn(dy, x, w, input_grad=, weight_grad=, **opts) -> (dx, dw, db)."""

    def forward(ctx, x, w, bias, opts):
        y = forward_fn(_array("x", x), _array("w", w),
                       None if bias is None else _array("bias", bias), **opts)
        ctx.save_for_backward(x, w)
        ctx.opts = opts
        ctx.dtypes = _dtypes(x, w, bias)
        return torch.from_numpy(y)

    @once_differentiable
    def backward(ctx, dy):
        x, w = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        if not (need_x or need_w or need_b):
            return None, None, None, None
        dx, dw, db = backward_fn(_array("dy", dy), _array("x", x), _array("w", w),
                                 input_grad=bool(need_x), weight_grad=bool(need_w or need_b),
                                 **ctx.opts)
        tx, tw, tb = ctx.dtypes
        return (_tensor(dx, tx) if need_x else None, _tensor(dw, tw) if need_w else None,
                _tensor(db, tb) if need_b else None, None)

    return type(name, (torch.autograd.Function,),
                dict(forward=staticmethod(forward), backward=staticmethod(backward)))


_Conv = _convolution("_Conv", functional.conv, functional.conv_backward)
_ConvTranspose = _convolution("_ConvTranspose", functional.conv_transpose,
                              functional.conv_transpose_backward)


class _MaxPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, opts):
        y, idx = functional.max_pool(_array("x", x), return_indices=True, **opts)
        ctx.x_shape, ctx.opts, ctx.x_dtype = tuple(x.shape), opts, x.dtype
        indices = torch.from_numpy(idx)
        ctx.save_for_backward(indices)
        ctx.mark_non_differentiable(indices)
        return torch.from_numpy(y), indices

    @staticmethod
    @once_differentiable
    def backward(ctx, dy, _):
        (indices,) = ctx.saved_tensors
        dx = functional.max_pool_backward(_array("dy", dy), ctx.x_shape, indices=indices.numpy(),
                                     **ctx.opts)
        return _tensor(dx, ctx.x_dtype), None


class _AvgPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, opts):
        y = functional.avg_pool(_array("x", x), **opts)
        ctx.x_shape, ctx.opts, ctx.x_dtype = tuple(x.shape), opts, x.dtype
        return torch.from_numpy(y)

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        dx = functional.avg_pool_backward(_array("dy", dy), ctx.x_shape, **ctx.opts)
        return _tensor(dx, ctx.x_dtype), None


def conv(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None,
         **options: Unpack[ConvOptions]) -> torch.Tensor:
    """``vecconv.conv`` as a differentiable torch operation.

    Parameters
    ----------
    x, w, bias : torch.Tensor
        CPU tensors, as ``vecconv.conv`` takes arrays; any may require grad.
    **options
        The keywords of ``vecconv.conv`` (stride, padding, dilation, groups, connections,
        flip, padding_mode, fill_value, workspace).

    Returns
    -------
    torch.Tensor
        ``vecconv.conv(x, w, bias, **options)`` as a CPU tensor of x's dtype, its gradient
        recorded: the backward pass is ``vecconv.conv_backward``.
    """
    return _Conv.apply(x, w, bias, options)


def conv_transpose(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None,
                   **options: Unpack[ConvTransposeOptions]) -> torch.Tensor:
    """``vecconv.conv_transpose`` as a differentiable torch operation (keywords as there;
    w is ``(Cin, Cout/groups, *k)``).

    Parameters
    ----------
    x, w, bias : torch.Tensor
        CPU tensors, as ``vecconv.conv_transpose`` takes arrays (w is
        ``(Cin, Cout/groups, *kernel)``); bias may be None; any may require grad.
    **options
        The keywords of ``vecconv.conv_transpose`` (stride, padding, output_padding,
        dilation, groups, output_size, workspace).

    Returns
    -------
    torch.Tensor
        ``vecconv.conv_transpose(x, w, bias, **options)``, its gradient recorded: the
        backward pass is ``vecconv.conv_transpose_backward``.
    """
    return _ConvTranspose.apply(x, w, bias, options)


@overload
def max_pool(x: torch.Tensor, kernel_size: Size, *, return_indices: Literal[False] = False,
             **options: Unpack[MaxPoolOptions]) -> torch.Tensor: ...
@overload
def max_pool(x: torch.Tensor, kernel_size: Size, *, return_indices: Literal[True],
             **options: Unpack[MaxPoolOptions]) -> tuple[torch.Tensor, torch.Tensor]: ...
@overload
def max_pool(x: torch.Tensor, kernel_size: Size, *, return_indices: bool,
             **options: Unpack[MaxPoolOptions]) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]: ...
def max_pool(x: torch.Tensor, kernel_size: Size, *, return_indices: bool = False,
             **options: Unpack[MaxPoolOptions]) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``vecconv.max_pool`` as a differentiable torch operation; the indices (int64, not
    differentiable) are returned too with ``return_indices=True``.

    Parameters
    ----------
    x : torch.Tensor
        A CPU tensor, as ``vecconv.max_pool`` takes an array; it may require grad.
    kernel_size : int or d ints
        The window, as for ``vecconv.max_pool``.
    return_indices : bool
        Also return where each maximum came from.
    **options
        The other keywords of ``vecconv.max_pool`` (stride, padding, dilation, ceil_mode).

    Returns
    -------
    y : torch.Tensor
        The window maxima, their gradient recorded (eq. 7-8: each delta goes to its
        window's argmax).
    indices : torch.Tensor
        Only with ``return_indices=True``: int64, not differentiable, as PyTorch's.
    """
    y, idx = _MaxPool.apply(x, dict(kernel_size=kernel_size, **options))
    return (y, idx) if return_indices else y


def avg_pool(x: torch.Tensor, kernel_size: Size,
             **options: Unpack[AvgPoolOptions]) -> torch.Tensor:
    """``vecconv.avg_pool`` as a differentiable torch operation.

    Parameters
    ----------
    x : torch.Tensor
        A CPU tensor, as ``vecconv.avg_pool`` takes an array; it may require grad.
    kernel_size : int or d ints
        The window, as for ``vecconv.avg_pool``.
    **options
        The other keywords of ``vecconv.avg_pool`` (stride, padding, ceil_mode,
        count_include_pad, divisor_override).

    Returns
    -------
    torch.Tensor
        The window means, their gradient recorded (``vecconv.avg_pool_backward``: eq. 6's
        up-sampling for windows that tile the map).
    """
    return _AvgPool.apply(x, dict(kernel_size=kernel_size, **options))
