"""Pooling layers: max pooling (eq. 3, its error eq. 7-8) and LeCun's trainable
average (eq. 2, its gradients eq. 20-22), over 1, 2 or 3 spatial axes.

Each layer validates its options once, at construction, into the core's records
(``_options.pool_options``); a forward pass plans the pooling of the input's shape
(``_pool_plan``) and runs it (``_run``), keeping the plan for its backward pass.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from .. import _run
from .._options import PoolOptions, pool_options
from .._pool_plan import plan_pool
from .._shapes import LAYOUTS
from .._typing import ArrayInput, FloatArray, Size
from .._validate import float_dtype, floats, integer, layer_dtype, nbytes_of
from .activation import ActivationName, activation_pair
from .conv import plain
from .parameter import Layer, real_array

__all__ = ["AvgPool", "MaxPool"]


class _PoolNd(Layer):
    """A pooling layer's geometry: its options, validated at construction for the number
    of spatial axes they imply (an int option fits 1, 2 and 3 axes: a record for each);
    the plan of the last forward pass, which its backward pass uses."""

    def _configure_pool(self, kernel_size, stride, padding, dilation, ceil_mode, **extra):
        self.kernel_size = plain(kernel_size)
        self.stride, self.padding = plain(stride), plain(padding)
        self.dilation, self.ceil_mode = plain(dilation), ceil_mode
        given = {"kernel_size": self.kernel_size, "stride": self.stride,
                 "padding": self.padding, "dilation": self.dilation}
        lengths = {len(v) for v in given.values() if isinstance(v, tuple)}
        if len(lengths) > 1 or (lengths and not lengths <= set(LAYOUTS)):
            raise ValueError(f"{type(self).__name__}: kernel_size, stride, padding and "
                             f"dilation given as tuples must all have 1, 2 or 3 entries, "
                             f"the same number; got {given}")
        axes = tuple(lengths) if lengths else tuple(LAYOUTS)
        self._options: dict[int, PoolOptions] = {
            d: pool_options(d, self.kernel_size, stride=self.stride, padding=self.padding,
                            dilation=self.dilation, ceil_mode=ceil_mode, **extra)
            for d in axes}

    def _plan_for(self, shape):
        """The plan of a batch of ``shape``."""
        shape = tuple(int(n) for n in shape)
        kind = type(self).__name__
        options = self._options.get(len(shape) - 2)
        if options is None:
            if len(self._options) == 1:
                (d,) = self._options
                want = LAYOUTS[d][0]
            else:
                want = "(N, C, *spatial) with 1, 2 or 3 spatial axes"
            raise ValueError(f"{kind} needs a batch {want}, got shape {shape}")
        if any(n == 0 for n in shape[2:]):
            raise ValueError(f"x must have spatial axes of at least 1 entry, got shape "
                             f"{shape}")
        return plan_pool(shape, options)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return self._plan_for(input_shape).out_shape

    def describe(self) -> str:
        k = self.kernel_size
        window = "x".join(map(str, k)) if isinstance(k, tuple) else str(k)
        step = "" if self.stride is None else f" /{self.stride}"
        return f"{self.name + ' ' if self.name else ''}{type(self).__name__} {window}{step}"


_POOL_OPTIONS = """kernel_size : int or d ints
        The window. An int pools every spatial axis of the input{int_note}.
    stride : int or d ints, optional
        The window's step; the window when None.
    padding : int or d ints
        Padding on both sides of each axis, at most half the window ({pad_note}).
    {extra}ceil_mode : bool
        Keep a last, partial window that starts inside the input (PyTorch's rule)."""


class AvgPool(_PoolNd):
    """Average polymerization with trainable beta and bias, eq. 2: x_j = f(beta_j down(x_j) + b_j).

    down() sums each window over 1, 2 or 3 spatial axes, with any window, stride, padding
    (zeros) and ``ceil_mode``. beta starts at 1/window size, so the layer begins as an
    average over whole windows (a window clipped by the padding or ``ceil_mode`` sums
    fewer entries). Backward: delta_z = delta o f'(z); dE/db_j = sum delta_z (eq. 20);
    dE/dbeta_j = sum delta_z o down(x) (eq. 21-22); the error for the previous layer is
    beta_j times down()'s adjoint applied to delta_z, which for windows equal to the
    stride is the Kronecker up-sampling up(delta_z) of eq. 4-6.

    Parameters
    ----------
    channels : int
        The maps pooled, each with its own beta and b.
    {options}
    activation : str
        f, one of ``ACTIVATIONS`` ('identity' for none).
    spatial : int
        The number of spatial axes an int ``kernel_size`` means (1, 2 or 3; LeNet-5's
        2). A tuple ``kernel_size`` gives it by its length.
    dtype : float32 or float64
        The dtype of beta, b, the computation and the output.
    size : int, optional
        Deprecated name of ``kernel_size`` (vecconv 0.1).
    """

    def __init__(self, channels: int, kernel_size: Size = 2,
                 activation: ActivationName = "lecun_tanh", *, stride: Size | None = None,
                 padding: Size = 0, ceil_mode: bool = False, spatial: int = 2,
                 dtype: DTypeLike = np.float32, size: Size | None = None) -> None:
        super().__init__()
        if size is not None:
            warnings.warn("AvgPool(size=) is now AvgPool(kernel_size=)", DeprecationWarning,
                          stacklevel=2)
            kernel_size = size
        self._configure(channels, kernel_size, activation, stride=stride, padding=padding,
                        ceil_mode=ceil_mode, spatial=spatial, dtype=dtype)
        self._init_parameters()

    def _configure(self, channels, kernel_size=2, activation="lecun_tanh", *, stride=None,
                   padding=0, ceil_mode=False, spatial=2, dtype=np.float32):
        self.channels = integer("channels", channels, 1)
        self.spatial = integer("spatial", spatial, 1, 3)
        if not isinstance(kernel_size, (tuple, list)):
            kernel_size = (integer("kernel_size", kernel_size, 1),) * self.spatial
        self._f, self._df = activation_pair(activation)
        self.activation = activation
        self.dtype = layer_dtype(dtype)
        self._configure_pool(kernel_size, stride, padding, 1, ceil_mode)
        self.spatial = len(self.kernel_size)

    def _init_parameters(self):
        """beta = 1/window (an average over a whole window) and b = 0."""
        window = math.prod(self.kernel_size)
        self.add_parameter("beta", np.full(self.channels, 1.0 / window, dtype=self.dtype))
        self.add_parameter("b", np.zeros(self.channels, dtype=self.dtype))

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"beta": (self.channels,), "b": (self.channels,)}

    def forward(self, x: ArrayInput) -> FloatArray:
        x = real_array("x", x)
        if x.ndim != self.spatial + 2 or x.shape[1] != self.channels:
            raise ValueError(f"{type(self).__name__} expects input (N, {self.channels}, "
                             f"{', '.join(LAYOUTS[self.spatial][2])}), got shape {x.shape}")
        x = np.ascontiguousarray(x, dtype=self.dtype)
        params = self.checked_params()
        plan = self._plan_for(x.shape)
        _run.check_pool_memory(plan, self.dtype, 2 * nbytes_of(plan.out_shape, self.dtype))
        down = _run.pool_forward(x, plan, False, divisor=1.0)                   # eq. 2
        per_map = (1, -1) + (1,) * (x.ndim - 2)
        z = params["beta"].reshape(per_map) * down + params["b"].reshape(per_map)
        a = self._f(z)
        self._state = (plan, down, z, a)
        return a

    def backward(self, delta: ArrayInput, input_grad: bool = True) -> FloatArray | None:
        plan, down, z, a = self._forward_state("_state")
        delta = np.asarray(real_array("delta", delta), dtype=self.dtype)
        if delta.shape != z.shape:
            raise ValueError(f"{type(self).__name__} backward expects delta of shape "
                             f"{z.shape}, got {delta.shape}")
        dz = delta * self._df(z, a)
        axes = (0,) + tuple(range(2, dz.ndim))
        self._parameters["b"].grad = dz.sum(axis=axes)                             # eq. 20
        self._parameters["beta"].grad = (dz * down).sum(axis=axes)                # eq. 21-22
        if not input_grad:
            return None
        beta = self.checked_params()["beta"].reshape((1, -1) + (1,) * (dz.ndim - 2))
        return _run.pool_backward(np.ascontiguousarray(dz * beta), plan, False,
                                  divisor=1.0)                                    # eq. 6

    def config(self) -> dict[str, Any]:
        return dict(channels=self.channels, kernel_size=list(self.kernel_size),
                    activation=self.activation, stride=self.stride, padding=self.padding,
                    ceil_mode=self.ceil_mode, dtype=self.dtype.name)


class MaxPool(_PoolNd):
    """Max polymerization, eq. 3, with its error of eq. 7-8, over 1, 2 or 3 spatial axes.

    The error goes only to the position that held each window's maximum (ties: the first
    in row-major order; a NaN in the window wins, as in PyTorch); overlapping windows add
    up.

    Parameters
    ----------
    {options}
    size : int, optional
        Deprecated name of ``kernel_size`` (vecconv 0.1).
    """

    def __init__(self, kernel_size: Size = 2, *, stride: Size | None = None, padding: Size = 0,
                 dilation: Size = 1, ceil_mode: bool = False, size: Size | None = None) -> None:
        super().__init__()
        if size is not None:
            warnings.warn("MaxPool(size=) is now MaxPool(kernel_size=)", DeprecationWarning,
                          stacklevel=2)
            kernel_size = size
        self._configure(kernel_size, stride=stride, padding=padding, dilation=dilation,
                        ceil_mode=ceil_mode)

    def _configure(self, kernel_size=2, *, stride=None, padding=0, dilation=1,
                   ceil_mode=False):
        self._configure_pool(kernel_size, stride, padding, dilation, ceil_mode)

    def forward(self, x: ArrayInput) -> FloatArray:
        x = real_array("x", x)
        plan = self._plan_for(x.shape)
        dtype = float_dtype(x=x)
        _run.check_pool_memory(plan, dtype, nbytes_of(plan.out_shape, np.int64))
        y, idx = _run.pool_forward(floats(dtype, x), plan, True, want_indices=True)   # eq. 3
        self._state = (plan, idx, dtype)
        return y

    def backward(self, delta: ArrayInput, input_grad: bool = True) -> FloatArray | None:
        plan, idx, dtype = self._forward_state("_state")
        if not input_grad:
            return None
        delta = real_array("delta", delta)
        if delta.shape != idx.shape:
            raise ValueError(f"{type(self).__name__} backward expects delta of shape "
                             f"{idx.shape}, got {delta.shape}")
        return _run.pool_backward(floats(dtype, delta), plan, True, indices=idx)  # eq. 7-8

    def config(self) -> dict[str, Any]:
        return dict(kernel_size=self.kernel_size, stride=self.stride, padding=self.padding,
                    dilation=self.dilation, ceil_mode=self.ceil_mode)


AvgPool.__doc__ = AvgPool.__doc__.format(options=_POOL_OPTIONS.format(  # type: ignore[union-attr]
    int_note=" (``spatial`` of them)", pad_note="zeros", extra=""))
MaxPool.__doc__ = MaxPool.__doc__.format(options=_POOL_OPTIONS.format(  # type: ignore[union-attr]
    int_note="", pad_note="-inf",
    extra="dilation : int or d ints\n        The step between a window's taps.\n    "))
