"""Layers and LeNet-5, with forward and backward passes as Haoxiang Xu's notes (after
Bouvrie, "Notes on Convolutional Neural Networks", 2006) derive them; LeNet-5 as LeCun et
al. 1998 build it.

Every layer maps a batch forward, keeps what its backward pass needs, and maps the error
delta = dE/d(output) back to dE/d(input), setting the ``grad`` of each of its
:class:`Parameter` s. The convolution and pooling layers run on the compiled engine;
float32 stays float32 throughout.

>>> import numpy as np, vecconv.nn as nn
>>> net = nn.lenet5(dtype=np.float32, seed=0)
>>> net.forward(np.zeros((2, 1, 32, 32), np.float32)).shape
(2, 10)
"""

from __future__ import annotations

import json
import math
import numbers
import os
import warnings
import zipfile
from collections.abc import Iterable, Iterator, MutableMapping
from typing import Any, Literal

import numpy as np
from numpy.typing import DTypeLike, NDArray

from . import _plan, _run, functional
from ._options import conv_options, conv_transpose_options, pool_options
from ._pool_plan import plan_pool
from ._shapes import pool_axes
from .matrix import down, up  # noqa: F401  (eq. 2 and 6, kept here under their old names)
from ._validate import (as_array, check_fits, check_ndim, float_dtype, int_tuple, integer,
                        layer_dtype)
from ._typing import ArrayInput, FloatArray, IntArray, Padding, PaddingMode, Shape, Size

#: the names of ``ACTIVATIONS``
ActivationName = Literal["identity", "sigmoid", "tanh", "lecun_tanh", "relu"]

__all__ = ["Layer", "Parameter", "Conv1D", "Conv2D", "Conv3D", "ConvTranspose1D",
           "ConvTranspose2D", "ConvTranspose3D", "AvgPool", "MaxPool", "Dense", "Flatten",
           "Activation", "Sequential", "SquaredError", "SoftmaxCrossEntropy", "SGD", "lenet5",
           "lenet5_c3_table", "load", "ACTIVATIONS"]


# ----------------------------------------------------------------------------- activations
def _sigmoid(z):
    return 0.5 * (np.tanh(0.5 * z) + 1)     # overflow-free logistic


ACTIVATIONS = {
    # name: (f(z), f'(z) expressed through z and a = f(z))
    "identity": (lambda z: z, lambda z, a: np.ones_like(z)),
    "sigmoid": (_sigmoid, lambda z, a: a * (1 - a)),
    "tanh": (np.tanh, lambda z, a: 1 - a * a),
    # LeCun et al. 1998, appendix A: f(z) = A tanh(S z), A = 1.7159, S = 2/3
    "lecun_tanh": (lambda z: 1.7159 * np.tanh(z * (2 / 3)),
                   lambda z, a: (2 / 3) * (1.7159 - a * a / 1.7159)),
    "relu": (lambda z: np.maximum(z, 0), lambda z, a: (z > 0).astype(z.dtype)),
}


def _activation(name):
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]


# ----------------------------------------------------------------------------- base
class Parameter:
    """A trainable array, its gradient, and (optionally) the mask of entries that exist.

    ``data`` is what the layer computes with, ``grad`` is dE/d(data) after the layer's
    backward pass. ``mask`` (bool, broadcastable to ``data``) marks the entries that are
    part of the model: a connection table's absent kernels are False, and an optimiser
    keeps them exactly zero.

    Parameters
    ----------
    data : ndarray
        The parameter's values; kept as given (not copied).
    grad : ndarray, optional
        Its gradient; zeros of ``data``'s shape and dtype when None.
    mask : ndarray of bool, optional
        The entries that exist (broadcastable to ``data``); None: all of them.
    """

    __slots__ = ("data", "grad", "mask")

    def __init__(self, data: NDArray[Any], grad: NDArray[Any] | None = None,
                 mask: NDArray[np.bool_] | None = None) -> None:
        self.data = data
        self.grad = np.zeros_like(data) if grad is None else grad
        self.mask = mask

    def __repr__(self) -> str:
        masked = "" if self.mask is None else ", masked"
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype}{masked})"


class _Field(MutableMapping):
    """A layer's parameters seen as {name: array} (``params``: data, ``grads``: grad)."""

    def __init__(self, parameters, attr):
        self._parameters, self._attr = parameters, attr

    def __getitem__(self, name):
        return getattr(self._parameters[name], self._attr)

    def __setitem__(self, name, value):
        if name not in self._parameters:
            raise KeyError(f"no parameter {name!r}; the layer has {sorted(self._parameters)}")
        setattr(self._parameters[name], self._attr, value)

    def __delitem__(self, name):
        raise TypeError("a layer's parameters cannot be removed")

    def __iter__(self):
        return iter(self._parameters)

    def __len__(self):
        return len(self._parameters)


class Layer:
    """A layer: ``forward(x)`` and ``backward(delta, input_grad=True)``.

    ``forward`` maps a batch and keeps what the backward pass needs. ``backward`` takes
    delta = dE/d(output), sets the ``grad`` of every :class:`Parameter` and returns
    dE/d(input), or None when ``input_grad`` is False (a network's first layer: its input
    needs no error, which saves the product of eq. 16-18).

    A layer of your own subclasses this, registers its arrays with ``add_parameter`` and
    implements ``forward`` and ``backward``; ``config()`` and ``param_shapes()`` let
    ``Sequential.save`` and ``load`` store and rebuild it.
    """

    #: a short label for summaries (LeNet-5's C1, S2, ...)
    name: str | None = None
    #: the float dtype of the layer's parameters and outputs
    dtype: np.dtype[Any]

    def __init__(self) -> None:
        self._parameters: dict[str, Parameter] = {}

    def add_parameter(self, name: str, data: NDArray[Any],
                      mask: NDArray[np.bool_] | None = None) -> Parameter:
        """Register ``data`` as the trainable parameter ``name``; returns the Parameter.

        Parameters
        ----------
        name : str
            The parameter's name in ``params`` and ``grads`` (``'w'``, ``'b'``, ...).
        data : ndarray
            Its initial values.
        mask : ndarray of bool, optional
            The entries that exist (a connection table's kernels); None: all of them.

        Returns
        -------
        Parameter
            The registered parameter, its ``grad`` zeros.
        """
        p = self._parameters[name] = Parameter(data, mask=mask)
        return p

    def named_parameters(self) -> Iterator[tuple[str, Parameter]]:
        """(name, Parameter) pairs in registration order.

        Returns
        -------
        iterator of (str, Parameter)
            One pair per parameter of this layer.
        """
        return iter(self._parameters.items())

    @property
    def params(self) -> MutableMapping[str, NDArray[Any]]:
        """{name: data}; assigning replaces a parameter's data."""
        return _Field(self._parameters, "data")

    @property
    def grads(self) -> MutableMapping[str, NDArray[Any]]:
        """{name: grad} after ``backward``."""
        return _Field(self._parameters, "grad")

    def forward(self, x: ArrayInput) -> FloatArray:
        raise NotImplementedError

    def backward(self, delta: ArrayInput, input_grad: bool = True) -> FloatArray | None:
        raise NotImplementedError

    def __call__(self, x: ArrayInput) -> FloatArray:
        return self.forward(x)

    def config(self) -> dict[str, Any]:
        """What ``load`` needs to rebuild the layer (parameters are stored separately).

        Returns
        -------
        dict
            The constructor's keyword arguments, as JSON can hold them.
        """
        return {}

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """{name: shape} of every parameter this layer's configuration implies.

        Returns
        -------
        dict of str to tuple of int
            Empty for a layer without parameters.
        """
        return {}

    def checked_params(self) -> MutableMapping[str, NDArray[Any]]:
        """``params``, each checked against the layer's configuration before any compiled
        code reads it: the names, the shapes, and a real numeric dtype, converted to the
        layer's dtype (a float64 bias given to a float32 layer is converted, as the
        kernels are). The converted arrays replace the ones in ``params``.

        Returns
        -------
        mapping of str to ndarray
            ``params`` after the checks.
        """
        shapes = self.param_shapes()
        kind = type(self).__name__
        if set(self._parameters) != set(shapes):
            raise ValueError(f"{kind} parameters must be {sorted(shapes)}, got "
                             f"{sorted(self._parameters)}")
        for name, shape in shapes.items():
            p = self._parameters[name]
            a = as_array(f"{kind} parameter {name!r}", p.data)
            if a.shape != tuple(shape):
                raise ValueError(f"{kind} parameter {name!r} must have shape {tuple(shape)} "
                                 f"for this layer's configuration, got {a.shape}")
            if a.dtype.kind not in "biuf":
                raise TypeError(f"{kind} parameter {name!r} must be a real numeric array, "
                                f"got dtype {a.dtype}")
            if a.dtype != self.dtype or not a.flags.c_contiguous or not a.flags.writeable:
                a = np.array(a, dtype=self.dtype, order="C")
            p.data = a
        return self.params

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return input_shape

    def parameter_count(self) -> int:
        """Trainable entries (a mask's absent entries are not counted).

        Returns
        -------
        int
            The number of entries of all parameters that take part in the model.
        """
        return int(sum(p.data.size if p.mask is None
                       else np.broadcast_to(p.mask, p.data.shape).sum()
                       for p in self._parameters.values()))

    def _check_input(self, x: object, ndim: int, layout: str,
                     channels: int | None = None) -> NDArray[Any]:
        x = _real("x", x)
        check_ndim(f"{type(self).__name__} input", x.shape, ndim, layout)
        if channels is not None and x.shape[1] != channels:
            raise ValueError(f"{type(self).__name__} expects {channels} input channels, "
                             f"got input of shape {x.shape}")
        return x

    def _forward_state(self, what):
        """A value the forward pass kept, or a clear error when backward comes first."""
        try:
            return getattr(self, what)
        except AttributeError:
            raise RuntimeError(f"{type(self).__name__}.backward needs a forward pass "
                               "first") from None

    def describe(self) -> str:
        """One line for ``summary``: the label, the type and the essentials.

        Returns
        -------
        str
            For example ``'C1 Conv2D(1, 6, [5, 5], ...)'``.
        """
        cfg = {k: v for k, v in self.config().items() if k not in ("connections", "dtype")}
        args = ", ".join(f"{v}" for v in cfg.values())
        return f"{self.name + ' ' if self.name else ''}{type(self).__name__}({args})"

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "connections")
        return f"{type(self).__name__}({args})"


# The interface every layer implements, documented once here (a layer's own forward and
# backward carry these docstrings in the API reference, where autodoc inherits them).
Layer.forward.__doc__ = """Map a batch forward and keep what the backward pass needs.

        Parameters
        ----------
        x : ndarray
            The batch, in the layer's input layout (``(N, C, *spatial)`` for convolution
            and pooling layers, ``(N, features)`` for ``Dense``).

        Returns
        -------
        ndarray
            The layer's output for the batch.
        """
Layer.backward.__doc__ = """Map the error back: set every Parameter's ``grad``, return dE/d(input).

        Parameters
        ----------
        delta : ndarray
            dE/d(output), of the shape the last ``forward`` returned.
        input_grad : bool
            False when the input needs no error (a network's first layer): nothing is
            computed for it and None is returned.

        Returns
        -------
        ndarray or None
            dE/d(input), of the last input's shape; None when ``input_grad`` is False.
        """
Layer.output_shape.__doc__ = """The output shape for an input of ``input_shape``.

        Parameters
        ----------
        input_shape : tuple of int
            A batch's shape, batch axis first.

        Returns
        -------
        tuple of int
            The shape ``forward`` returns for such a batch.
        """


def _real(name: str, value: object) -> NDArray[Any]:
    """An array of real numbers (integers and bools allowed): complex, strings and objects
    are refused with a TypeError naming the argument, as the functions do."""
    a = as_array(name, value)
    float_dtype(**{name: a})
    return a


def _lecun_uniform(rng, shape, fan_in, dtype):
    """Uniform with variance 1/fan_in (LeCun et al., 'Efficient BackProp')."""
    a = math.sqrt(3.0 / fan_in)
    return rng.uniform(-a, a, size=shape).astype(dtype)


# ----------------------------------------------------------------------------- convolution
def _sizes(layer, in_channels, out_channels, kernel_size, groups, dtype):
    """The sizes every convolution layer checks and keeps: channels, window, groups (which
    must divide both channel counts) and dtype."""
    layer.in_channels = integer("in_channels", in_channels, 1)
    layer.out_channels = integer("out_channels", out_channels, 1)
    layer.kernel_size = int_tuple("kernel_size", kernel_size, layer.spatial, 1)
    layer.groups = integer("groups", groups, 1)
    layer.dtype = layer_dtype(dtype)
    if layer.in_channels % layer.groups or layer.out_channels % layer.groups:
        raise ValueError(f"groups={layer.groups} must divide in_channels="
                         f"{layer.in_channels} and out_channels={layer.out_channels}")


class _Conv(Layer):
    """Convolution over ``spatial`` axes (``Conv1D``/``Conv2D``/``Conv3D``)."""

    spatial = 2
    # set by _sizes
    in_channels: int
    out_channels: int
    kernel_size: tuple[int, ...]
    groups: int

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Size, *,
                 stride: Size = 1, padding: Padding = 0, padding_mode: PaddingMode = "zeros",
                 fill_value: float = 0.0, dilation: Size = 1, groups: int = 1,
                 connections: ArrayInput | None = None, flip: bool = False,
                 dtype: DTypeLike = np.float32, seed: int | None = None,
                 rng: np.random.Generator | None = None) -> None:
        super().__init__()
        d = self.spatial
        _sizes(self, in_channels, out_channels, kernel_size, groups, dtype)
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.padding_mode, self.fill_value, self.flip = padding_mode, fill_value, flip
        # every option checked here, without inventing an input
        options = conv_options(d, stride=stride, padding=padding, dilation=dilation,
                               groups=self.groups, connections=connections, flip=flip,
                               padding_mode=padding_mode, fill_value=fill_value)
        connections = options.connections
        if connections is not None and connections.shape != (self.in_channels,
                                                             self.out_channels):
            raise ValueError(f"connections must have shape (in_channels, out_channels) = "
                             f"({self.in_channels}, {self.out_channels}), got "
                             f"{connections.shape}")
        self._plans: dict[Any, Any] = {}
        rng = rng if rng is not None else np.random.default_rng(seed)
        taps = math.prod(self.kernel_size)
        cin_g = self.in_channels // self.groups
        mask = (None if connections is None
                else connections.T.reshape((self.out_channels, self.in_channels) + (1,) * d))
        fan_in = (connections.sum(axis=0) if connections is not None
                  else np.full(self.out_channels, cin_g))
        w = np.stack([_lecun_uniform(rng, (cin_g,) + self.kernel_size, max(f, 1) * taps,
                                     self.dtype) for f in fan_in])
        if mask is not None:
            w *= mask
        self.add_parameter("w", w, mask=mask)
        self.add_parameter("b", np.zeros(self.out_channels, dtype=self.dtype))

    @property
    def connections(self) -> NDArray[np.bool_] | None:
        """The (Cin, Cout) connection table, read from the mask of the ``w`` Parameter
        (its one home: change the mask and the layer follows), or None."""
        mask = self._parameters["w"].mask
        return None if mask is None else mask.reshape(mask.shape[:2]).T

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"w": (self.out_channels, self.in_channels // self.groups) + self.kernel_size,
                "b": (self.out_channels,)}

    def _options(self):
        return conv_options(self.spatial, stride=self.stride, padding=self.padding,
                            dilation=self.dilation, groups=self.groups,
                            connections=self.connections, flip=self.flip,
                            padding_mode=self.padding_mode, fill_value=self.fill_value)

    def _plan(self, x_shape):
        table = self.connections
        key = (x_shape, None if table is None else np.packbits(table).tobytes())
        plan = self._plans.get(key)
        if plan is None:
            plan = _plan.plan_conv(x_shape, self.param_shapes()["w"], (self.out_channels,),
                                   self.dtype, self._options())
            check_fits(plan.memory() + plan.memory(backward=True),
                       f"{type(self).__name__} on input {x_shape}")
            self._plans = {key: plan}     # a network sees one or two batch shapes
        return plan

    def forward(self, x: ArrayInput) -> FloatArray:
        d = self.spatial
        x = self._check_input(x, d + 2, f"(N, C, {_LAYOUT[d]})", self.in_channels)
        x = np.ascontiguousarray(x, dtype=self.dtype)
        params = self.checked_params()
        plan = self._plan(x.shape)
        self._x = x
        self._w2 = _run.effective_weight(params["w"], plan)
        return _run.forward(x, self._w2, params["b"], plan)

    def backward(self, delta: ArrayInput, input_grad: bool = True) -> FloatArray | None:
        x = self._forward_state("_x")
        plan = self._plan(x.shape)
        delta = np.ascontiguousarray(_real("delta", delta), dtype=self.dtype)
        if delta.shape != plan.out_shape:
            raise ValueError(f"{type(self).__name__} backward expects delta of shape "
                             f"{plan.out_shape}, got {delta.shape}")
        dx, dw2 = _run.backward(delta, x, self._w2, plan, need_dx=bool(input_grad),
                                need_dw=True)
        self._parameters["w"].grad = _run.weight_gradient(dw2, plan)           # eq. 12-13
        self._parameters["b"].grad = _run.bias_gradient(delta, self.dtype)     # eq. 10
        return dx                                                              # eq. 16-18

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (input_shape[0],) + self._plan((1,) + tuple(input_shape[1:])).out_shape[1:]

    def describe(self) -> str:
        k = "x".join(map(str, self.kernel_size))
        table = f", table of {int(self.connections.sum())}" if self.connections is not None else ""
        return (f"{self.name + ' ' if self.name else ''}{type(self).__name__} {k} "
                f"{self.in_channels}->{self.out_channels}{table}")

    def config(self) -> dict[str, Any]:
        return dict(in_channels=self.in_channels, out_channels=self.out_channels,
                    kernel_size=list(self.kernel_size), stride=self.stride,
                    padding=self.padding, padding_mode=self.padding_mode,
                    fill_value=self.fill_value, dilation=self.dilation, groups=self.groups,
                    flip=self.flip, dtype=self.dtype.name,
                    connections=None if self.connections is None else self.connections.tolist())


_LAYOUT = {1: "L", 2: "H, W", 3: "D, H, W"}
_CONV_DOC = """Convolution layer over {d} spatial axes, on the vecconv engine: input (N, Cin, {layout}).

    Eq. 1 of the derivation: z_j = sum_{{i in M_j}} x_i * k_ij + b_j (the activation is a
    separate layer, ``Activation``). Its kernel gradient is eq. 12-13 (one GEMM with the
    patch matrix), the error for the previous layer eq. 16-18 (a GEMM and col2im).

    Parameters
    ----------
    in_channels, out_channels : int
        The number of input maps (Cin) and of output maps (Cout).
    kernel_size : int or {d} ints
        The kernels' size; an int is the same along every axis.
    stride, dilation : int or {d} ints
        As for ``vecconv.conv``: the step between output positions and between taps.
    padding : int, {d} ints, {d} (before, after) pairs, or 'valid' | 'same' | 'full'
        As for ``vecconv.conv``; the strings mean what they mean in ``scipy.signal``.
    padding_mode : {{'zeros', 'constant', 'reflect', 'replicate', 'circular', 'symmetric'}}
        What the padding holds, as for ``vecconv.conv``.
    fill_value : float
        The constant of ``padding_mode='constant'``.
    groups : int
        PyTorch's grouped convolution; the weight ``w`` is (Cout, Cin/groups, {kshape}).
    connections : (Cin, Cout) bool array, optional
        Table 1 of the derivation (LeNet-5's S2 -> C3 table): output map j sees only the
        input maps i with connections[i, j]. The absent kernels are masked in the
        ``w`` Parameter: never used, trained nor counted.
    flip : bool
        True convolution (kernels rotated by 180 degrees, the J k J of eq. 14) instead of
        cross-correlation.
    dtype : float32 or float64
        The dtype of the parameters, of the computation and of the output.
    seed, rng : int or numpy.random.Generator, optional
        The initialisation's random source: a Generator ``rng``, else one made from
        ``seed``. The kernels are drawn from LeCun's uniform distribution (variance
        1/fan-in); the biases start at zero.
    """


class Conv1D(_Conv):
    spatial = 1
    __doc__ = _CONV_DOC.format(d=1, layout="L", kshape="k")


class Conv2D(_Conv):
    spatial = 2
    __doc__ = _CONV_DOC.format(d=2, layout="H, W", kshape="kh, kw")


class Conv3D(_Conv):
    spatial = 3
    __doc__ = _CONV_DOC.format(d=3, layout="D, H, W", kshape="kd, kh, kw")


class _ConvTranspose(Layer):
    """Transposed convolution over ``spatial`` axes (``ConvTranspose1D/2D/3D``)."""

    spatial = 2
    # set by _sizes
    in_channels: int
    out_channels: int
    kernel_size: tuple[int, ...]
    groups: int

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Size, *,
                 stride: Size = 1, padding: Padding = 0, output_padding: Size = 0,
                 dilation: Size = 1, groups: int = 1, dtype: DTypeLike = np.float32,
                 seed: int | None = None, rng: np.random.Generator | None = None) -> None:
        super().__init__()
        d = self.spatial
        _sizes(self, in_channels, out_channels, kernel_size, groups, dtype)
        self.stride, self.padding = stride, padding
        self.output_padding, self.dilation = output_padding, dilation
        conv_transpose_options(d, stride=stride, padding=padding,
                               output_padding=output_padding, dilation=dilation,
                               groups=self.groups)            # every option checked here
        rng = rng if rng is not None else np.random.default_rng(seed)
        fan_in = (self.in_channels // self.groups) * math.prod(self.kernel_size)
        self.add_parameter("w", _lecun_uniform(rng, self.param_shapes()["w"], fan_in,
                                               self.dtype))
        self.add_parameter("b", np.zeros(self.out_channels, dtype=self.dtype))

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"w": (self.in_channels, self.out_channels // self.groups) + self.kernel_size,
                "b": (self.out_channels,)}

    def _call(self, f, *args, **extra):
        return f(*args, stride=self.stride, padding=self.padding,
                 output_padding=self.output_padding, dilation=self.dilation,
                 groups=self.groups, **extra)

    def forward(self, x: ArrayInput) -> FloatArray:
        d = self.spatial
        x = self._check_input(x, d + 2, f"(N, C, {_LAYOUT[d]})", self.in_channels)
        self._x = np.ascontiguousarray(x, dtype=self.dtype)
        params = self.checked_params()
        return self._call(functional.conv_transpose, self._x, params["w"], params["b"])

    def backward(self, delta: ArrayInput, input_grad: bool = True) -> FloatArray | None:
        x = self._forward_state("_x")
        delta = np.asarray(_real("delta", delta), dtype=self.dtype)
        dx, dw, db = self._call(functional.conv_transpose_backward, delta, x,
                                self.checked_params()["w"], input_grad=bool(input_grad))
        self._parameters["w"].grad = dw
        self._parameters["b"].grad = db
        return dx

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        probe = np.zeros((1,) + tuple(input_shape[1:]), self.dtype)
        return (input_shape[0],) + self._call(functional.conv_transpose, probe,
                                              self.checked_params()["w"]).shape[1:]

    def config(self) -> dict[str, Any]:
        return dict(in_channels=self.in_channels, out_channels=self.out_channels,
                    kernel_size=list(self.kernel_size), stride=self.stride,
                    padding=self.padding, output_padding=self.output_padding,
                    dilation=self.dilation, groups=self.groups, dtype=self.dtype.name)


_TRANSPOSE_DOC = """Transposed convolution layer over {d} spatial axes: input (N, Cin, {layout}).

    The adjoint of a convolution (eq. 16-18's path of the error, used as a layer: a GEMM
    W^T X and col2im); PyTorch's ConvTranspose{d}d. Weight ``w`` is (Cin, Cout/groups,
    {kshape}), bias ``b`` (Cout,).

    Parameters
    ----------
    in_channels, out_channels : int
        The number of input maps (Cin) and of output maps (Cout).
    kernel_size : int or {d} ints
        The kernels' size; an int is the same along every axis.
    stride, dilation : int or {d} ints
        The stride and dilation of the convolution this layer is the adjoint of.
    padding : int, {d} ints or {d} (before, after) pairs
        Entries cropped from the output.
    output_padding : int or {d} ints
        Entries added at the end of each output axis; each below max(stride, dilation).
    groups : int
        Input and output maps split into ``groups`` independent blocks.
    dtype : float32 or float64
        The dtype of the parameters, of the computation and of the output.
    seed, rng : int or numpy.random.Generator, optional
        The initialisation's random source: a Generator ``rng``, else one made from
        ``seed`` (LeCun's uniform distribution, variance 1/fan-in; zero biases).
    """


class ConvTranspose1D(_ConvTranspose):
    spatial = 1
    __doc__ = _TRANSPOSE_DOC.format(d=1, layout="L", kshape="k")


class ConvTranspose2D(_ConvTranspose):
    spatial = 2
    __doc__ = _TRANSPOSE_DOC.format(d=2, layout="H, W", kshape="kh, kw")


class ConvTranspose3D(_ConvTranspose):
    spatial = 3
    __doc__ = _TRANSPOSE_DOC.format(d=3, layout="D, H, W", kshape="kd, kh, kw")


# ----------------------------------------------------------------------------- pooling
class _Pooling(Layer):
    """The pooling geometry of a layer: its options, checked at construction; the plan of
    the last forward pass, which its backward pass uses."""

    def _options(self, kernel_size, stride, padding, dilation, ceil_mode):
        self.kernel_size = (list(kernel_size) if isinstance(kernel_size, (tuple, list))
                            else kernel_size)
        self.stride = list(stride) if isinstance(stride, (tuple, list)) else stride
        self.padding = list(padding) if isinstance(padding, (tuple, list)) else padding
        self.dilation = list(dilation) if isinstance(dilation, (tuple, list)) else dilation
        self.ceil_mode = ceil_mode
        # the number of spatial axes the options imply: a tuple's length (2 when every
        # option is an int, which fits any number of axes)
        lengths = {len(v) for v in (self.kernel_size, self.stride, self.padding,
                                    self.dilation) if isinstance(v, list)}
        if len(lengths) > 1 or (lengths and not lengths <= {1, 2, 3}):
            raise ValueError(f"{type(self).__name__}: kernel_size, stride, padding and "
                             f"dilation given as tuples must all have 1, 2 or 3 entries, "
                             f"the same number; got {self.config()}")
        d = lengths.pop() if lengths else 2
        pool_options(d, self.kernel_size, stride=self.stride, padding=self.padding,
                     dilation=self.dilation, ceil_mode=ceil_mode)    # checks them all
        self._plan = None

    def _plan_for(self, shape):
        """The plan of a batch of ``shape`` (the layer's cached plan is left alone)."""
        shape = tuple(shape)
        d, unbatched = pool_axes(shape, self.kernel_size, None, type(self).__name__)
        if unbatched:
            raise ValueError(f"{type(self).__name__} needs a batch (N, C, *spatial), got "
                             f"shape {shape}")
        if any(n == 0 for n in shape[2:]):
            raise ValueError(f"x must have spatial axes of at least 1 entry, got shape "
                             f"{shape}")
        return plan_pool(shape, pool_options(d, self.kernel_size, stride=self.stride,
                                             padding=self.padding, dilation=self.dilation,
                                             ceil_mode=self.ceil_mode))

    def _forward_plan(self, shape):
        """The plan of this forward pass, kept for its backward pass (reused while the
        batch shape repeats: a network pools the same shape every step)."""
        if self._plan is None or self._plan.x_shape != tuple(shape):
            self._plan = self._plan_for(shape)
        return self._plan

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return self._plan_for(input_shape).out_shape

    def describe(self) -> str:
        k = self.kernel_size
        window = "x".join(map(str, k)) if isinstance(k, list) else str(k)
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


class AvgPool(_Pooling):
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
        self.channels = integer("channels", channels, 1)
        self.spatial = integer("spatial", spatial, 1, 3)
        if not isinstance(kernel_size, (tuple, list)):
            kernel_size = (integer("kernel_size", kernel_size, 1),) * self.spatial
        self.activation = activation
        self._f, self._df = _activation(activation)
        self.dtype = layer_dtype(dtype)
        self._options(kernel_size, stride, padding, 1, ceil_mode)
        self.spatial = len(self.kernel_size)
        window = math.prod(self.kernel_size)
        self.add_parameter("beta", np.full(self.channels, 1.0 / window, dtype=self.dtype))
        self.add_parameter("b", np.zeros(self.channels, dtype=self.dtype))

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"beta": (self.channels,), "b": (self.channels,)}

    def forward(self, x: ArrayInput) -> FloatArray:
        x = _real("x", x)
        if x.ndim != self.spatial + 2 or x.shape[1] != self.channels:
            raise ValueError(f"AvgPool expects input (N, {self.channels}, "
                             f"{_LAYOUT[self.spatial]}), got shape {x.shape}")
        x = np.ascontiguousarray(x, dtype=self.dtype)
        params = self.checked_params()
        plan = self._forward_plan(x.shape)
        self._down = _run.pool_forward(x, plan, False, divisor=1.0)          # eq. 2
        per_map = (1, -1) + (1,) * (x.ndim - 2)
        self._z = params["beta"].reshape(per_map) * self._down + params["b"].reshape(per_map)
        self._a = self._f(self._z)
        return self._a

    def backward(self, delta: ArrayInput, input_grad: bool = True) -> FloatArray | None:
        z = self._forward_state("_z")
        delta = np.asarray(_real("delta", delta), dtype=self.dtype)
        if delta.shape != z.shape:
            raise ValueError(f"AvgPool backward expects delta of shape {z.shape}, got "
                             f"{delta.shape}")
        dz = delta * self._df(z, self._a)
        axes = (0,) + tuple(range(2, dz.ndim))
        self._parameters["b"].grad = dz.sum(axis=axes)                             # eq. 20
        self._parameters["beta"].grad = (dz * self._down).sum(axis=axes)          # eq. 21-22
        if not input_grad:
            return None
        beta = self.checked_params()["beta"].reshape((1, -1) + (1,) * (dz.ndim - 2))
        return _run.pool_backward(np.ascontiguousarray(dz * beta), self._plan, False,
                                  divisor=1.0)                                    # eq. 6

    def config(self) -> dict[str, Any]:
        return dict(channels=self.channels, kernel_size=self.kernel_size,
                    activation=self.activation, stride=self.stride, padding=self.padding,
                    ceil_mode=self.ceil_mode, dtype=self.dtype.name)


class MaxPool(_Pooling):
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
        self._options(kernel_size, stride, padding, dilation, ceil_mode)

    def forward(self, x: ArrayInput) -> FloatArray:
        x = as_array("x", x)
        plan = self._forward_plan(x.shape)
        dtype = float_dtype(x=x)
        self._y, self._idx = _run.pool_forward(np.ascontiguousarray(x, dtype=dtype), plan,
                                               True, want_indices=True)
        return self._y

    def backward(self, delta: ArrayInput, input_grad: bool = True) -> FloatArray | None:
        idx = self._forward_state("_idx")
        if not input_grad:
            return None
        delta = _real("delta", delta)
        if delta.shape != idx.shape:
            raise ValueError(f"MaxPool backward expects delta of shape {idx.shape}, got "
                             f"{delta.shape}")
        delta = np.ascontiguousarray(delta, dtype=self._y.dtype)
        return _run.pool_backward(delta, self._plan, True, indices=idx)

    def config(self) -> dict[str, Any]:
        return dict(kernel_size=self.kernel_size, stride=self.stride, padding=self.padding,
                    dilation=self.dilation, ceil_mode=self.ceil_mode)


AvgPool.__doc__ = AvgPool.__doc__.format(options=_POOL_OPTIONS.format(  # type: ignore[union-attr]
    int_note=" (``spatial`` of them)", pad_note="zeros", extra=""))
MaxPool.__doc__ = MaxPool.__doc__.format(options=_POOL_OPTIONS.format(  # type: ignore[union-attr]
    int_note="", pad_note="-inf",
    extra="dilation : int or d ints\n        The step between a window's taps.\n    "))


class Dense(Layer):
    """Fully connected: z = x W^T + b; error back delta^l = (W^{l+1})^T delta^{l+1}.

    The products run on the engine's BLAS and threads. Input (N, in_features), output
    (N, out_features); the weight ``w`` is (out_features, in_features), the bias ``b``
    (out_features,).

    Parameters
    ----------
    in_features, out_features : int
        The sizes of the input and of the output vectors.
    dtype : float32 or float64
        The dtype of the parameters, of the computation and of the output.
    seed, rng : int or numpy.random.Generator, optional
        The initialisation's random source: a Generator ``rng``, else one made from
        ``seed`` (LeCun's uniform distribution, variance 1/fan-in; zero biases).
    """

    def __init__(self, in_features: int, out_features: int, *, dtype: DTypeLike = np.float32,
                 seed: int | None = None, rng: np.random.Generator | None = None) -> None:
        super().__init__()
        self.in_features = integer("in_features", in_features, 1)
        self.out_features = integer("out_features", out_features, 1)
        self.dtype = layer_dtype(dtype)
        rng = rng if rng is not None else np.random.default_rng(seed)
        self.add_parameter("w", _lecun_uniform(rng, (self.out_features, self.in_features),
                                               self.in_features, self.dtype))
        self.add_parameter("b", np.zeros(self.out_features, dtype=self.dtype))

    def forward(self, x: ArrayInput) -> FloatArray:
        x = self._check_input(x, 2, "(N, features)", None)
        if x.shape[1] != self.in_features:
            raise ValueError(f"Dense expects {self.in_features} input features, got input of "
                             f"shape {x.shape}")
        self._x = np.ascontiguousarray(x, dtype=self.dtype)
        params = self.checked_params()
        out = _run.matmul(self._x, params["w"], trans_b=True)
        out += params["b"]
        return out

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"w": (self.out_features, self.in_features), "b": (self.out_features,)}

    def backward(self, delta: ArrayInput, input_grad: bool = True) -> FloatArray | None:
        x = self._forward_state("_x")
        delta = np.ascontiguousarray(_real("delta", delta), dtype=self.dtype)
        if delta.shape != (x.shape[0], self.out_features):
            raise ValueError(f"Dense backward expects delta of shape "
                             f"{(x.shape[0], self.out_features)}, got {delta.shape}")
        self._parameters["w"].grad = _run.matmul(delta, x, trans_a=True)
        self._parameters["b"].grad = delta.sum(axis=0)
        return _run.matmul(delta, self.checked_params()["w"]) if input_grad else None

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (input_shape[0], self.out_features)

    def config(self) -> dict[str, Any]:
        return dict(in_features=self.in_features, out_features=self.out_features,
                    dtype=self.dtype.name)


class Flatten(Layer):
    """(N, C, H, W) -> (N, C*H*W)."""

    def forward(self, x: ArrayInput) -> FloatArray:
        x = as_array("x", x)
        if x.ndim < 2:
            raise ValueError(f"Flatten input must have a batch axis, got shape {x.shape}")
        self._shape = x.shape
        return x.reshape(x.shape[0], math.prod(x.shape[1:]))

    def backward(self, delta: ArrayInput, input_grad: bool = True) -> FloatArray | None:
        shape = self._forward_state("_shape")
        delta = as_array("delta", delta)
        if delta.size != math.prod(shape):
            raise ValueError(f"Flatten backward expects delta of {math.prod(shape)} entries "
                             f"(input shape {shape}), got shape {delta.shape}")
        return delta.reshape(shape) if input_grad else None

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (input_shape[0], math.prod(input_shape[1:]))


class Activation(Layer):
    """An elementwise f; backward multiplies by f'(z) (the o f'(z^l) of eq. 4, 7, 18).

    Parameters
    ----------
    function : str
        The name of f in ``ACTIVATIONS``: 'lecun_tanh' (LeCun's 1.7159 tanh(2x/3), the
        default), 'tanh', 'sigmoid', 'relu' or 'identity'.
    """

    def __init__(self, function: ActivationName = "lecun_tanh") -> None:
        super().__init__()
        self.function = function
        self._f, self._df = _activation(function)

    def forward(self, x: ArrayInput) -> FloatArray:
        self._z = _real("x", x)
        self._a = self._f(self._z)
        return self._a

    def backward(self, delta: ArrayInput, input_grad: bool = True) -> FloatArray | None:
        z = self._forward_state("_z")
        delta = _real("delta", delta)
        if delta.shape != z.shape:
            raise ValueError(f"Activation backward expects delta of shape {z.shape}, got "
                             f"{delta.shape}")
        return delta * self._df(z, self._a) if input_grad else None

    def config(self) -> dict[str, Any]:
        return dict(function=self.function)


# ----------------------------------------------------------------------------- losses
class SquaredError:
    """E = 1/2 sum (y - t)^2 / N, the derivation's error; t is one-hot from integer labels.

    Calling it with the network's output y (N, classes) and N integer labels returns
    ``(E, delta)``: the loss as a float and its error delta = dE/dy = (y - t) / N, in y's
    dtype, ready for ``Sequential.backward``.
    """

    def __call__(self, y: NDArray[np.floating[Any]],
                 labels: ArrayInput) -> tuple[float, FloatArray]:
        t = _one_hot(labels, y.shape, y.dtype)
        diff = y - t
        n = y.shape[0]
        return float(0.5 * np.sum(diff.astype(np.float64) ** 2) / n), (diff / n).astype(y.dtype)


class SoftmaxCrossEntropy:
    """E = -mean log softmax(y)[label]; its error is (softmax(y) - onehot) / N.

    Calling it with the network's output y (N, classes) and N integer labels returns
    ``(E, delta)``: the loss as a float and delta = dE/dy in y's dtype.
    """

    def __call__(self, y: NDArray[np.floating[Any]],
                 labels: ArrayInput) -> tuple[float, FloatArray]:
        t = _one_hot(labels, y.shape, y.dtype)
        z = y - y.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        n = y.shape[0]
        loss = -float(np.sum(logp.astype(np.float64) * t) / n)
        return loss, ((np.exp(logp) - t) / n).astype(y.dtype)


def _one_hot(labels, shape, dtype):
    labels = np.asarray(labels)
    if labels.shape != (shape[0],) or labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be {shape[0]} integers, got shape {labels.shape} "
                         f"dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= shape[1]):
        raise ValueError(f"labels must lie in [0, {shape[1]}), got {labels.min()}..{labels.max()}")
    t = np.zeros(shape, dtype=dtype)
    t[np.arange(shape[0]), labels] = 1
    return t


# ----------------------------------------------------------------------------- network
class Sequential:
    """Layers in order; ``backward`` runs the chain rule of the derivation's section 3 through them.

    Parameters
    ----------
    layers : iterable of Layer
        The layers, first to last; kept in the ``layers`` list.
    """

    def __init__(self, layers: Iterable[Layer]) -> None:
        self.layers = list(layers)
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"layer {i} must be a vecconv.nn.Layer, got "
                                f"{type(layer).__name__}")

    def forward(self, x: ArrayInput) -> FloatArray:
        out: Any = x
        for layer in self.layers:
            out = layer.forward(out)
        return out

    def __call__(self, x: ArrayInput) -> FloatArray:
        return self.forward(x)

    def backward(self, delta: ArrayInput) -> None:
        """The chain rule through every layer; the first layer is told that its input
        needs no error (the layer object itself is not changed).

        Parameters
        ----------
        delta : ndarray
            dE/d(output) of the last layer (a loss's error).

        Returns
        -------
        None
            Every layer's parameters have their ``grad`` set; the first layer computes no
            error for its input.
        """
        grad: Any = delta
        for i in range(len(self.layers) - 1, -1, -1):
            grad = self.layers[i].backward(grad, input_grad=i > 0)

    def named_parameters(self) -> Iterator[tuple[str, Parameter]]:
        """("index.Type.name", Parameter) pairs in a fixed order."""
        for i, layer in enumerate(self.layers):
            for k, p in layer.named_parameters():
                yield f"{i}.{type(layer).__name__}.{k}", p

    def parameters(self) -> list[Parameter]:
        """Every Parameter, in the order of ``named_parameters``.

        Returns
        -------
        list of Parameter
            The layers' parameters, first layer first.
        """
        return [p for _, p in self.named_parameters()]

    def parameter_count(self) -> int:
        return sum(layer.parameter_count() for layer in self.layers)

    def predict(self, x: ArrayInput, batch_size: int = 256) -> NDArray[np.intp]:
        x = as_array("x", x)
        return np.concatenate([self.forward(x[i:i + batch_size]).argmax(axis=1)
                               for i in range(0, len(x), batch_size)]) if len(x) else \
            np.zeros(0, dtype=np.intp)

    def summary(self, input_shape: Shape = (1, 1, 32, 32)) -> str:
        """A table of every layer's output shape and parameter count, and the total.

        Parameters
        ----------
        input_shape : tuple of int
            The shape of a batch given to the first layer (LeNet-5's (1, 1, 32, 32) by
            default).

        Returns
        -------
        str
            The table, one line per layer.
        """
        lines = [f"{'layer':<34}{'output shape':<22}{'parameters':>12}", "-" * 68]
        shape = tuple(input_shape)
        for layer in self.layers:
            shape = layer.output_shape(shape)
            lines.append(f"{layer.describe()[:33]:<34}{str(shape[1:]):<22}{layer.parameter_count():>12,}")
        lines.append("-" * 68)
        lines.append(f"{'total':<56}{self.parameter_count():>12,}")
        return "\n".join(lines)

    def save(self, path: str | os.PathLike[str]) -> str:
        """Architecture (JSON) and parameters in one .npz file; returns the path written.

        A path without the ``.npz`` suffix gets it (as ``numpy.savez`` does), and ``load``
        finds the file by the same path.

        Parameters
        ----------
        path : str or os.PathLike
            Where to write.

        Returns
        -------
        str
            The path written (with ``.npz``).
        """
        path = _npz_path(path)
        arrays: dict[str, Any] = {f"p{i}_{k}": v for i, layer in enumerate(self.layers)
                  for k, v in layer.checked_params().items()}
        spec = [dict(type=type(layer).__name__, name=layer.name, config=_plain(layer.config()))
                for layer in self.layers]
        np.savez(path, __spec__=np.array(json.dumps(spec)), **arrays)
        return path


Sequential.forward.__doc__ = """Run the batch through every layer in order.

        Parameters
        ----------
        x : ndarray
            The first layer's input.

        Returns
        -------
        ndarray
            The last layer's output.
        """
Sequential.parameter_count.__doc__ = """Trainable entries of all layers.

        Returns
        -------
        int
            The sum of the layers' ``parameter_count()`` (60,850 for ``lenet5()``).
        """
Sequential.predict.__doc__ = """The predicted class of every input: the argmax of the output.

        Parameters
        ----------
        x : array_like
            The inputs, batch axis first.
        batch_size : int
            How many inputs go forward at once.

        Returns
        -------
        ndarray of intp, shape (N,)
            The index of each input's largest output.
        """


def _plain(value):
    """A configuration as JSON can hold it: numpy scalars and tuples become Python values."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    return value


def _npz_path(path: str | os.PathLike[str]) -> str:
    path = os.fspath(path)
    return path if path.endswith(".npz") else path + ".npz"


_LAYER_TYPES = {c.__name__: c for c in (Conv1D, Conv2D, Conv3D, ConvTranspose1D,
                                        ConvTranspose2D, ConvTranspose3D, AvgPool, MaxPool,
                                        Dense, Flatten, Activation)}


def load(path: str | os.PathLike[str]) -> Sequential:
    """Rebuild a network saved by ``Sequential.save``; it predicts the same outputs.

    Everything in the file is checked before it is used: it must be a vecconv model
    (an .npz holding ``__spec__``), every layer type and configuration must be valid, and
    the parameter arrays must be exactly the ones the configuration implies (no missing
    or extra arrays; each of the layer's shape and dtype). A path without ``.npz`` is
    read with the suffix added when only that file exists (as ``save`` writes it).

    Parameters
    ----------
    path : str or os.PathLike
        A file written by ``Sequential.save``.

    Returns
    -------
    Sequential
        The network, its layers configured and their parameters set as saved.
    """
    path = os.fspath(path)
    if not os.path.exists(path) and os.path.exists(_npz_path(path)):
        path = _npz_path(path)
    try:
        f = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        if isinstance(exc, (FileNotFoundError, IsADirectoryError)):
            raise
        raise ValueError(f"{path} is not a vecconv model (an .npz saved by "
                         f"Sequential.save): {exc}") from None
    if not isinstance(f, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} holds a single array (.npy), not a vecconv model (an .npz "
                         "saved by Sequential.save)")
    with f:
        if "__spec__" not in f.files:
            raise ValueError(f"{path} is an .npz but not a vecconv model: it has no __spec__")
        try:
            spec = json.loads(str(f["__spec__"]))
            if not isinstance(spec, list) or not all(isinstance(i, dict) for i in spec):
                raise ValueError("not a list of layers")
        except (ValueError, RecursionError) as exc:
            raise ValueError(f"{path}: the model's __spec__ is not valid: {exc}") from None
        layers, expected = [], set()
        for i, item in enumerate(spec):
            kind = item.get("type")
            if not isinstance(kind, str) or kind not in _LAYER_TYPES:
                raise ValueError(f"{path}: layer {i} has unknown type {kind!r}; known: "
                                 f"{sorted(_LAYER_TYPES)}")
            config = item.get("config", {})
            if not isinstance(config, dict):
                raise ValueError(f"{path}: layer {i} ({kind}) has no valid config")
            if kind in ("AvgPool", "MaxPool") and "size" in config and "kernel_size" not in config:
                config = dict(config)
                config["kernel_size"] = config.pop("size")          # vecconv 0.1 files
            if {"seed", "rng"} & set(config):
                raise ValueError(f"{path}: layer {i} ({kind}) has an invalid config: "
                                 "a saved layer carries no random source")
            name = item.get("name")
            if name is not None and not isinstance(name, str):
                raise ValueError(f"{path}: layer {i} ({kind}) has a name that is not a "
                                 f"string: {name!r}")
            try:
                layer = _LAYER_TYPES[kind](**config)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{path}: layer {i} ({kind}) has an invalid config: "
                                 f"{exc}") from None
            layer.name = name
            for k, shape in layer.param_shapes().items():
                key = f"p{i}_{k}"
                expected.add(key)
                if key not in f.files:
                    raise ValueError(f"{path}: parameter {key!r} of layer {i} ({kind}) is missing")
                a = f[key]
                if a.shape != tuple(shape) or a.dtype != layer.dtype:
                    raise ValueError(f"{path}: parameter {key!r} of layer {i} ({kind}) must be "
                                     f"{layer.dtype.name} of shape {tuple(shape)}, got "
                                     f"{a.dtype.name} of shape {a.shape}")
                layer.params[k] = np.array(a, order="C")
            layers.append(layer)
        extra = set(f.files) - expected - {"__spec__"}
        if extra:
            raise ValueError(f"{path}: arrays that no layer has: {sorted(extra)}")
    return Sequential(layers)


# ----------------------------------------------------------------------------- training
class SGD:
    """Stochastic gradient descent with momentum: v <- mu v - lr g; p <- p + v.

    Parameters
    ----------
    net : Sequential
        The network whose parameters ``step`` updates.
    lr : float
        The learning rate.
    momentum : float
        mu, the fraction of the last update kept (0 for plain gradient descent).
    weight_decay : float
        L2 decay added to the gradient of every parameter named ``w`` (not the biases).
    """

    def __init__(self, net: Sequential, lr: float = 0.01, momentum: float = 0.9,
                 weight_decay: float = 0.0) -> None:
        self.net, self.lr, self.momentum, self.weight_decay = net, lr, momentum, weight_decay
        self._velocity: dict[str, NDArray[Any]] = {}

    def step(self) -> None:
        """One update of every Parameter of the network from its ``grad``; weight decay
        applies to the parameters named ``w``; masked-out entries stay exactly zero."""
        for name, param in self.net.named_parameters():
            p, g = param.data, param.grad
            if self.weight_decay and name.rsplit(".", 1)[-1] == "w":
                g = g + self.weight_decay * p
            v = self._velocity.get(name)
            if v is None:
                v = self._velocity[name] = np.zeros_like(p)
            v *= self.momentum
            v -= np.asarray(self.lr, dtype=p.dtype) * g
            p += v
            if param.mask is not None:
                # absent entries stay exactly zero, whatever they held (NaN * 0 is NaN)
                np.copyto(p, 0, where=~np.broadcast_to(param.mask, p.shape))


# ----------------------------------------------------------------------------- LeNet-5
def lenet5_c3_table() -> NDArray[np.bool_]:
    """LeCun et al. 1998, Table I: the (6, 16) S2 -> C3 connection table (60 True).

    Returns
    -------
    ndarray of bool, shape (6, 16)
        ``table[i, j]`` is True when S2's map i feeds C3's map j: maps 0-5 read three
        neighbouring maps, 6-11 four neighbouring, 12-14 four not all neighbouring, and 15
        all six. Pass it as ``connections=`` to ``Conv2D`` or ``vecconv.conv2d``.
    """
    inputs = [(0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (4, 5, 0), (5, 0, 1),
              (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (3, 4, 5, 0), (4, 5, 0, 1), (5, 0, 1, 2),
              (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5), (0, 1, 2, 3, 4, 5)]
    table = np.zeros((6, 16), dtype=bool)
    for j, ins in enumerate(inputs):
        table[list(ins), j] = True
    return table


def lenet5(*, dtype: DTypeLike = np.float32, seed: int | None = 0,
           activation: ActivationName = "lecun_tanh", pooling: Literal["avg", "max"] = "avg",
           num_classes: int = 10) -> Sequential:
    """LeCun et al. 1998's LeNet-5 on 32 x 32 inputs, as Xu's derivation uses it.

    C1 6@28x28 (5x5) - S2 6@14x14 (AvgPool 2 with beta, b) - C3 16@10x10 (Table I, 60
    kernels, 1516 parameters) - S4 16@5x5 - C5 120 (5x5 conv) - F6 84 - 10 outputs.
    Every layer up to F6 ends in the squashing function (LeCun's 1.7159 tanh(2x/3)).
    The output layer is linear (a softmax loss replaces the paper's RBF units).
    ``pooling='max'`` swaps S2/S4 for max pooling followed by the activation.

    Parameters
    ----------
    dtype : float32 or float64
        The dtype of every layer.
    seed : int
        The seed of the initialisation's random source.
    activation : str
        The squashing function, a name in ``ACTIVATIONS``.
    pooling : {'avg', 'max'}
        S2 and S4: average pooling with trainable beta and b (eq. 2), or max pooling
        (eq. 3) followed by the activation.
    num_classes : int
        The number of outputs.

    Returns
    -------
    Sequential
        The network, its layers labelled C1, S2, C3, S4, C5, F6 and out (60,850
        parameters with the defaults).
    """
    dtype = layer_dtype(dtype)
    rng = np.random.default_rng(seed)

    def pool(channels):
        if pooling == "avg":
            return [AvgPool(channels, 2, activation, dtype=dtype)]
        if pooling == "max":
            return [MaxPool(2), Activation(activation)]
        raise ValueError(f"pooling must be 'avg' or 'max', got {pooling!r}")

    layers = [
        ("C1", Conv2D(1, 6, 5, dtype=dtype, rng=rng)), (None, Activation(activation)),
        *[("S2", p) for p in pool(6)],
        ("C3", Conv2D(6, 16, 5, connections=lenet5_c3_table(), dtype=dtype, rng=rng)),
        (None, Activation(activation)),
        *[("S4", p) for p in pool(16)],
        ("C5", Conv2D(16, 120, 5, dtype=dtype, rng=rng)), (None, Activation(activation)),
        (None, Flatten()),
        ("F6", Dense(120, 84, dtype=dtype, rng=rng)), (None, Activation(activation)),
        ("out", Dense(84, num_classes, dtype=dtype, rng=rng)),
    ]
    for label, layer in layers:
        layer.name = label
    return Sequential([layer for _, layer in layers])
