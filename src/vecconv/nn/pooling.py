"""Pooling layers over 1, 2 or 3 spatial axes.

* ``MaxPool`` and ``AvgPool`` (and their 1D/2D/3D forms) are PyTorch's parameter-free
  max and average pooling, with the same options and output sizes. Max pooling is eq. 3
  of the derivation, its error eq. 7-8; the average's error is spread over each window
  (eq. 6's up-sampling, divided by the window size, for windows equal to the stride).
* ``Subsampling`` is LeCun et al.'s trainable layer, eq. 2: x_j = f(beta_j down(x_j) +
  b_j), with the gradients of eq. 20-22.

Each layer validates its options once, at construction, into the core's records
(``_options.pool_options``); a forward pass plans the pooling of the input's shape
(``_pool_plan``) and runs it (``_run``), keeping the plan for its backward pass.
"""

from __future__ import annotations

import inspect
import math
import warnings
from typing import Any, ClassVar

import numpy as np
from numpy.typing import DTypeLike

from .. import _run
from .._options import PoolOptions, pool_options
from .._pool_plan import plan_pool
from .._shapes import LAYOUTS
from .._typing import ArrayInput, FloatArray, Size
from .._validate import float_dtype, floats, integer, layer_dtype, nbytes_of
from .activation import ActivationName, activation_pair
from .parameter import Layer, check_room, plain, real_array

__all__ = ["MaxPool", "MaxPool1D", "MaxPool2D", "MaxPool3D", "AvgPool", "AvgPool1D",
           "AvgPool2D", "AvgPool3D", "Subsampling"]


class _PoolNd(Layer):
    """A pooling layer's geometry: its options, validated at construction for the number
    of spatial axes they imply (a subclass's ``spatial``, else the length of the tuples
    given, else every number: an int option fits 1, 2 and 3 axes, a record for each); the
    plan of the last forward pass, which its backward pass uses."""

    # the number of spatial axes, fixed by the 1D/2D/3D subclasses; None: any
    spatial: ClassVar[int | None] = None

    def _configure_pool(self, kernel_size, stride, padding, dilation, ceil_mode, **extra):
        self.kernel_size = plain(kernel_size)
        self.stride, self.padding = plain(stride), plain(padding)
        self.dilation, self.ceil_mode = plain(dilation), ceil_mode
        given = {"kernel_size": self.kernel_size, "stride": self.stride,
                 "padding": self.padding, "dilation": self.dilation}
        lengths = {len(v) for v in given.values() if isinstance(v, tuple)}
        if self.spatial is not None:
            axes: tuple[int, ...] = (self.spatial,)        # pool_options checks the lengths
        elif len(lengths) > 1 or (lengths and not lengths <= set(LAYOUTS)):
            raise ValueError(f"{type(self).__name__}: kernel_size, stride, padding and "
                             f"dilation given as tuples must all have 1, 2 or 3 entries, "
                             f"the same number; got {given}")
        else:
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



# ----------------------------------------------------------------------------- docstrings
_OPTIONS = """kernel_size : int or d ints
        The window. {int_note}
    stride : int or d ints, optional
        The window's step; the window when None.
    padding : int or d ints
        Implicit {pad_note} on both sides of each axis, at most half the window.
    {extra}ceil_mode : bool
        Round the output size up: keep a last, partial window that starts inside the
        input or in the padding before it (PyTorch's rule)."""
_ANY_D = ("An int pools every spatial axis of the input, whatever their\n"
          "        number (1, 2 or 3); tuples fix the number by their length.")
_MAX_EXTRA = "dilation : int or d ints\n        The step between a window's taps.\n    "
_AVG_EXTRA = ("count_include_pad : bool\n        Whether the padding counts in the divisor "
              "(the part of a ``ceil_mode`` window\n        past the padding never does).\n"
              "    divisor_override : int, optional\n        A fixed divisor for every "
              "window (1: the window sums, eq. 2's down()).\n    ")


def _options_doc(d, pad_note, extra):
    note = _ANY_D if d is None else f"An int applies to each of the {d} axes."
    return _OPTIONS.format(int_note=note, pad_note=pad_note, extra=extra)


def _batch_layout(d):
    return "``(N, C, *spatial)``" if d is None else f"``{LAYOUTS[d][0]}``"


# ----------------------------------------------------------------------------- max
class MaxPool(_PoolNd):
    """Max pooling, eq. 3, with its error of eq. 7-8 (PyTorch's ``MaxPool{{1,2,3}}d``).

    Input {layout}; the output has the same maps, each window replaced by its largest
    entry. The error goes only to the position that held each window's maximum (ties:
    the first in row-major order; a NaN in the window wins, as in PyTorch); overlapping
    windows add up. No parameters; the output keeps the input's float dtype (integers
    and bools pool as float64).

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
            warnings.warn(f"{type(self).__name__}(size=) is now "
                          f"{type(self).__name__}(kernel_size=)", DeprecationWarning,
                          stacklevel=2)
            kernel_size = size
        self._configure(kernel_size, stride=stride, padding=padding, dilation=dilation,
                        ceil_mode=ceil_mode)
        self._finish_building()

    def _configure(self, kernel_size=2, *, stride=None, padding=0, dilation=1,
                   ceil_mode=False):
        self._configure_pool(kernel_size, stride, padding, dilation, ceil_mode)

    def forward(self, x: ArrayInput) -> FloatArray:
        xa = real_array("x", x)
        plan = self._plan_for(xa.shape)
        dtype = float_dtype(x=xa)
        _run.check_pool_memory(plan, dtype, nbytes_of(plan.out_shape, np.int64))
        y, idx = _run.pool_forward(floats(dtype, xa), plan, True, want_indices=True)  # eq. 3
        self._state = (plan, idx, dtype)
        return y

    def backward(self, delta: ArrayInput, input_grad: bool = True) -> FloatArray | None:
        plan, idx, dtype = self._forward_state("_state")
        if not input_grad:
            return None
        d = real_array("delta", delta)
        if d.shape != idx.shape:
            raise ValueError(f"{type(self).__name__} backward expects delta of shape "
                             f"{idx.shape}, got {d.shape}")
        return _run.pool_backward(floats(dtype, d), plan, True, indices=idx)    # eq. 7-8

    def config(self) -> dict[str, Any]:
        return dict(kernel_size=self.kernel_size, stride=self.stride, padding=self.padding,
                    dilation=self.dilation, ceil_mode=self.ceil_mode)


# ----------------------------------------------------------------------------- average
#: keywords only vecconv 0.1's AvgPool (LeCun's trainable layer, now Subsampling) took
_LECUN_KEYWORDS = frozenset({"channels", "activation", "spatial", "dtype", "size"})


def _vecconv_0_1_avgpool(*args: Any, **kwargs: Any) -> Subsampling:
    """vecconv 0.1's ``AvgPool(channels, kernel_size, activation, ...)``, when the call
    cannot mean PyTorch's AvgPool: a Subsampling, with a DeprecationWarning."""
    if len(args) == 2 and not _LECUN_KEYWORDS & kwargs.keys():
        raise TypeError(
            f"nn.AvgPool{args!r}: AvgPool takes one positional argument, kernel_size: it "
            "is PyTorch's parameter-free average pooling (give the step as stride=). "
            "vecconv 0.1's AvgPool(channels, kernel_size, activation), LeCun's trainable "
            f"subsampling (eq. 2), is now nn.Subsampling{args!r}")
    warnings.warn(
        "nn.AvgPool(channels, kernel_size, activation, ...) is LeCun's trainable "
        "subsampling (eq. 2), now named nn.Subsampling; this form of nn.AvgPool will be "
        "removed in the next release, where nn.AvgPool(kernel_size) is PyTorch's "
        "parameter-free average pooling (as it is already with one positional argument)",
        DeprecationWarning, stacklevel=3)
    if kwargs.get("size") is not None:
        warnings.warn("AvgPool(size=) is now Subsampling(kernel_size=)", DeprecationWarning,
                      stacklevel=3)
        kwargs["kernel_size"] = kwargs.pop("size")
    kwargs.pop("size", None)
    return Subsampling(*args, **kwargs)


class AvgPool(_PoolNd):
    """Average pooling (PyTorch's ``AvgPool{{1,2,3}}d``): the mean of each window.

    Input {layout}; eq. 2 of the derivation with beta = 1/window and no bias or
    activation (the trainable form is ``Subsampling``). The error of each output is
    divided by its window's divisor and added to every entry of the window: for windows
    equal to the stride, eq. 6's up-sampling divided by the window size. No parameters;
    the output keeps the input's float dtype (integers and bools pool as float64).

    Parameters
    ----------
    {options}

    Notes
    -----
    In vecconv 0.1, ``AvgPool(channels, kernel_size, activation, ...)`` was LeCun's
    trainable layer, now ``Subsampling``. A call that can only mean that form (an
    ``activation``, ``channels``, ``spatial``, ``dtype`` or ``size`` keyword, or three
    positional arguments) still builds a ``Subsampling``, with a DeprecationWarning, for
    this release; ``AvgPool(a, b)`` is refused as ambiguous; ``AvgPool(k)`` is this
    layer. Files saved by vecconv 0.1 load their ``AvgPool`` layers as ``Subsampling``.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls is AvgPool and (len(args) > 1 or _LECUN_KEYWORDS & kwargs.keys()):
            return _vecconv_0_1_avgpool(*args, **kwargs)
        return super().__new__(cls)

    def __init__(self, kernel_size: Size, *, stride: Size | None = None, padding: Size = 0,
                 ceil_mode: bool = False, count_include_pad: bool = True,
                 divisor_override: int | None = None) -> None:
        super().__init__()
        self._configure(kernel_size, stride=stride, padding=padding, ceil_mode=ceil_mode,
                        count_include_pad=count_include_pad,
                        divisor_override=divisor_override)
        self._finish_building()

    def _configure(self, kernel_size, *, stride=None, padding=0, ceil_mode=False,
                   count_include_pad=True, divisor_override=None):
        self._configure_pool(kernel_size, stride, padding, 1, ceil_mode,
                             count_include_pad=count_include_pad,
                             divisor_override=divisor_override)
        self.count_include_pad = count_include_pad
        self.divisor_override = plain(divisor_override)

    def forward(self, x: ArrayInput) -> FloatArray:
        xa = real_array("x", x)
        plan = self._plan_for(xa.shape)
        dtype = float_dtype(x=xa)
        _run.check_pool_memory(plan, dtype)
        divisor = self._options[len(xa.shape) - 2].divisor
        self._state = (plan, dtype, divisor)
        return _run.pool_forward(floats(dtype, xa), plan, False, divisor)

    def backward(self, delta: ArrayInput, input_grad: bool = True) -> FloatArray | None:
        plan, dtype, divisor = self._forward_state("_state")
        if not input_grad:
            return None
        d = real_array("delta", delta)
        if d.shape != plan.out_shape:
            raise ValueError(f"{type(self).__name__} backward expects delta of shape "
                             f"{plan.out_shape}, got {d.shape}")
        return _run.pool_backward(floats(dtype, d), plan, False, divisor)        # eq. 6

    def config(self) -> dict[str, Any]:
        return dict(kernel_size=self.kernel_size, stride=self.stride, padding=self.padding,
                    ceil_mode=self.ceil_mode, count_include_pad=self.count_include_pad,
                    divisor_override=self.divisor_override)


# the signature users (and help(), and the API pages) see is __init__'s, not __new__'s
AvgPool.__signature__ = inspect.signature(AvgPool.__init__).replace(  # type: ignore[attr-defined]
    parameters=list(inspect.signature(AvgPool.__init__).parameters.values())[1:])

MaxPool.__doc__ = MaxPool.__doc__.format(  # type: ignore[union-attr]
    layout=_batch_layout(None), options=_options_doc(None, "-inf", _MAX_EXTRA))
AvgPool.__doc__ = AvgPool.__doc__.format(  # type: ignore[union-attr]
    layout=_batch_layout(None), options=_options_doc(None, "zeros", _AVG_EXTRA))

_FIXED_DOC = """{base} over {d} spatial axe{s}: input {layout} (PyTorch's ``{base}{d}d``).

    ``{base}`` with the number of axes fixed: an int option applies to each axis, and an
    input of another number of axes is refused.

    Parameters
    ----------
    {options}{size}
    """
_SIZE_DOC = ("\n    size : int, optional\n        Deprecated name of ``kernel_size`` "
             "(vecconv 0.1).")


class MaxPool1D(MaxPool):
    spatial = 1
    __doc__ = _FIXED_DOC.format(base="MaxPool", d=1, s="", layout=_batch_layout(1),
                                options=_options_doc(1, "-inf", _MAX_EXTRA), size=_SIZE_DOC)


class MaxPool2D(MaxPool):
    spatial = 2
    __doc__ = _FIXED_DOC.format(base="MaxPool", d=2, s="s", layout=_batch_layout(2),
                                options=_options_doc(2, "-inf", _MAX_EXTRA), size=_SIZE_DOC)


class MaxPool3D(MaxPool):
    spatial = 3
    __doc__ = _FIXED_DOC.format(base="MaxPool", d=3, s="s", layout=_batch_layout(3),
                                options=_options_doc(3, "-inf", _MAX_EXTRA), size=_SIZE_DOC)


class AvgPool1D(AvgPool):
    spatial = 1
    __doc__ = _FIXED_DOC.format(base="AvgPool", d=1, s="", layout=_batch_layout(1),
                                options=_options_doc(1, "zeros", _AVG_EXTRA), size="")


class AvgPool2D(AvgPool):
    spatial = 2
    __doc__ = _FIXED_DOC.format(base="AvgPool", d=2, s="s", layout=_batch_layout(2),
                                options=_options_doc(2, "zeros", _AVG_EXTRA), size="")


class AvgPool3D(AvgPool):
    spatial = 3
    __doc__ = _FIXED_DOC.format(base="AvgPool", d=3, s="s", layout=_batch_layout(3),
                                options=_options_doc(3, "zeros", _AVG_EXTRA), size="")


# ----------------------------------------------------------------------------- LeCun
class Subsampling(_PoolNd):
    """LeCun's trainable subsampling, eq. 2: x_j = f(beta_j down(x_j) + b_j).

    The S2 and S4 layers of LeNet-5 (LeCun et al. 1998): down() sums each window
    (``vecconv.matrix.down`` for non-overlapping n x n windows), over 1, 2 or 3 spatial
    axes, with any window, stride, padding (zeros) and ``ceil_mode``; each map has its
    own trainable multiplier beta_j and bias b_j, and f squashes the result. beta starts
    at 1/window size, so the layer begins as an average over whole windows (a window
    clipped by the padding or ``ceil_mode`` sums fewer entries).

    Backward: delta_z = delta o f'(z); dE/db_j = sum delta_z (eq. 20); dE/dbeta_j =
    sum delta_z o down(x) (eq. 21-22); the error for the previous layer is beta_j times
    down()'s adjoint applied to delta_z, which for windows equal to the stride is the
    Kronecker up-sampling up(delta_z) of eq. 4-6 (``vecconv.matrix.up``).

    Parameters
    ----------
    channels : int
        The maps pooled, each with its own beta and b.
    kernel_size : int or d ints
        The window; an int means ``spatial`` axes.
    activation : str
        f, one of ``ACTIVATIONS`` ('identity' for none; LeNet-5's 'lecun_tanh').
    stride : int or d ints, optional
        The window's step; the window when None.
    padding : int or d ints
        Zeros on both sides of each axis, at most half the window.
    ceil_mode : bool
        Keep a last, partial window that starts inside the input (PyTorch's rule).
    spatial : int
        The number of spatial axes an int ``kernel_size`` means (1, 2 or 3; LeNet-5's
        2). A tuple ``kernel_size`` gives it by its length.
    dtype : float32 or float64
        The dtype of beta, b, the computation and the output.
    """

    def __init__(self, channels: int, kernel_size: Size = 2,
                 activation: ActivationName = "lecun_tanh", *, stride: Size | None = None,
                 padding: Size = 0, ceil_mode: bool = False, spatial: int = 2,
                 dtype: DTypeLike = np.float32) -> None:
        super().__init__()
        self._configure(channels, kernel_size, activation, stride=stride, padding=padding,
                        ceil_mode=ceil_mode, spatial=spatial, dtype=dtype)
        check_room(self)
        self._init_parameters()
        self._finish_building()

    def _configure(self, channels, kernel_size=2, activation="lecun_tanh", *, stride=None,
                   padding=0, ceil_mode=False, spatial=2, dtype=np.float32):
        self.channels = integer("channels", channels, 1)
        spatial = integer("spatial", spatial, 1, 3)
        if not isinstance(kernel_size, (tuple, list)):
            kernel_size = (integer("kernel_size", kernel_size, 1),) * spatial
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
        xa = real_array("x", x)
        d = len(self.kernel_size)
        if xa.ndim != d + 2 or xa.shape[1] != self.channels:
            raise ValueError(f"{type(self).__name__} expects input (N, {self.channels}, "
                             f"{', '.join(LAYOUTS[d][2])}), got shape {xa.shape}")
        xa = np.ascontiguousarray(xa, dtype=self.dtype)
        params = self.checked_params()
        plan = self._plan_for(xa.shape)
        _run.check_pool_memory(plan, self.dtype, 2 * nbytes_of(plan.out_shape, self.dtype))
        down = _run.pool_forward(xa, plan, False, divisor=1.0)                  # eq. 2
        per_map = (1, -1) + (1,) * d
        z = params["beta"].reshape(per_map) * down + params["b"].reshape(per_map)
        a = self._f(z)
        self._state = (plan, down, z, a)
        return a

    def backward(self, delta: ArrayInput, input_grad: bool = True) -> FloatArray | None:
        plan, down, z, a = self._forward_state("_state")
        dl = np.asarray(real_array("delta", delta), dtype=self.dtype)
        if dl.shape != z.shape:
            raise ValueError(f"{type(self).__name__} backward expects delta of shape "
                             f"{z.shape}, got {dl.shape}")
        dz = dl * self._df(z, a)
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
