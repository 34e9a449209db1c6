"""Convolution layers over 1, 2 or 3 spatial axes, and their transposes.

Each layer validates its options once, at construction, into the core's record
(``_options.conv_options`` / ``conv_transpose_options``); a forward pass plans the
convolution for the input's shape (``_plan``, cached per shape) and runs the plan
(``_run``). Eq. 1 of the derivation is the forward pass, eq. 12-13 the kernel gradient,
eq. 10 the bias gradient, eq. 16-18 the error of the previous layer.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
from numpy.typing import DTypeLike, NDArray

from .. import _config, _plan, _run
from .._options import ConvOptions, conv_options, conv_transpose_options
from .._shapes import LAYOUTS
from .._typing import Algorithm, ArrayInput, FloatArray, Padding, PaddingMode, Size
from .._validate import check_fits, check_ndim, int_tuple, integer, layer_dtype
from .parameter import Layer, check_room, lecun_uniform, random_source, plain, real_array

__all__ = ["Conv1D", "Conv2D", "Conv3D", "ConvTranspose1D", "ConvTranspose2D",
           "ConvTranspose3D"]

#: plans a layer keeps (a network sees a training batch, its last partial batch, and
#: the evaluation batches)
_PLANS_KEPT = 4


class _Sizes(Layer):
    """The sizes every convolution layer checks and keeps: channels, window, groups (which
    must divide both channel counts) and dtype."""

    # the number of spatial axes (1, 2 or 3), fixed by each subclass
    spatial: ClassVar[int] = 2
    in_channels: int
    out_channels: int
    kernel_size: tuple[int, ...]
    groups: int

    def _sizes(self, in_channels, out_channels, kernel_size, groups, dtype):
        self.in_channels = integer("in_channels", in_channels, 1)
        self.out_channels = integer("out_channels", out_channels, 1)
        self.kernel_size = int_tuple("kernel_size", kernel_size, self.spatial, 1)
        self.groups = integer("groups", groups, 1)
        self.dtype = layer_dtype(dtype)
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(f"groups={self.groups} must divide in_channels="
                             f"{self.in_channels} and out_channels={self.out_channels}")

    def _checked_shape(self, shape):
        """A batch shape checked against the layer: its axes and channels."""
        shape = tuple(int(n) for n in shape)
        kind, d = type(self).__name__, self.spatial
        check_ndim(f"{kind} input", shape, d + 2, LAYOUTS[d][0])
        if shape[1] != self.in_channels:
            raise ValueError(f"{kind} expects {self.in_channels} input channels, got input "
                             f"of shape {shape}")
        return shape

    def _input(self, x: object) -> NDArray[Any]:
        """x checked (real numbers, the layer's axes and channels) and made a clean array
        of the layer's dtype."""
        x = real_array("x", x)
        self._checked_shape(x.shape)
        return np.ascontiguousarray(x, dtype=self.dtype)

    def _delta(self, delta, shape):
        delta = real_array("delta", delta)
        if delta.shape != tuple(shape):
            raise ValueError(f"{type(self).__name__} backward expects delta of shape "
                             f"{tuple(shape)}, got {delta.shape}")
        return np.ascontiguousarray(delta, dtype=self.dtype)

    def _remember(self, key, plan):
        """Keep ``plan`` under ``key``, dropping the oldest past _PLANS_KEPT."""
        if len(self._plans) >= _PLANS_KEPT:
            self._plans.pop(next(iter(self._plans)))
        self._plans[key] = plan
        return plan


# ----------------------------------------------------------------------------- convolution
class _ConvNd(_Sizes):
    """Convolution over ``spatial`` axes: the base of ``Conv1D``/``Conv2D``/``Conv3D``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Size, *,
                 stride: Size = 1, padding: Padding = 0, padding_mode: PaddingMode = "zeros",
                 fill_value: float = 0.0, dilation: Size = 1, groups: int = 1,
                 connections: ArrayInput | None = None, flip: bool = False,
                 dtype: DTypeLike = np.float32, seed: int | None = None,
                 rng: np.random.Generator | None = None, algorithm: Algorithm = "auto") -> None:
        super().__init__()
        self._configure(in_channels, out_channels, kernel_size, stride=stride,
                        padding=padding, padding_mode=padding_mode, fill_value=fill_value,
                        dilation=dilation, groups=groups, connections=connections, flip=flip,
                        dtype=dtype, algorithm=algorithm)
        rng = random_source(seed, rng)
        check_room(self)
        self._init_parameters(rng)
        self._finish_building()

    def _configure(self, in_channels, out_channels, kernel_size, *, stride=1, padding=0,
                   padding_mode="zeros", fill_value=0.0, dilation=1, groups=1,
                   connections=None, flip=False, dtype=np.float32, algorithm="auto"):
        """Check every option, without inventing an input, and keep the record."""
        self._sizes(in_channels, out_channels, kernel_size, groups, dtype)
        options = conv_options(self.spatial, stride=stride, padding=padding,
                               dilation=dilation, groups=self.groups, connections=connections,
                               flip=flip, padding_mode=padding_mode, fill_value=fill_value,
                               algorithm=algorithm)
        _plan.check_forced(options, self.kernel_size)
        table = options.connections
        if table is not None and table.shape != (self.in_channels, self.out_channels):
            raise ValueError(f"connections must have shape (in_channels, out_channels) = "
                             f"({self.in_channels}, {self.out_channels}), got {table.shape}")
        self._options = options
        self.stride, self.padding, self.dilation = plain(stride), plain(padding), plain(dilation)
        self.padding_mode = padding_mode
        self.fill_value, self.flip = options.fill_value, options.flip
        self.algorithm = options.algorithm
        self._plans: dict[Any, Any] = {}

    def _parameter_mask(self, name: str) -> NDArray[np.bool_] | None:
        """The ``w`` Parameter's mask of the configured table, (Cout, Cin, 1, ...), or None."""
        table = self._options.connections
        if name != "w" or table is None:
            return None
        return table.T.reshape((self.out_channels, self.in_channels) + (1,) * self.spatial)

    def _init_parameters(self, rng):
        """LeCun's uniform kernels (variance 1/fan-in, the fan-in of each output map counted
        through the table) and zero biases."""
        table = self._options.connections
        taps = math.prod(self.kernel_size)
        fan_in = (table.sum(axis=0) if table is not None
                  else np.full(self.out_channels, self.in_channels // self.groups))
        cin_g = self.in_channels // self.groups
        w = np.stack([lecun_uniform(rng, (cin_g,) + self.kernel_size, max(int(f), 1) * taps,
                                    self.dtype) for f in fan_in])
        mask = self._parameter_mask("w")
        if mask is not None:
            w *= mask
        self.add_parameter("w", w, mask=mask)
        self.add_parameter("b", np.zeros(self.out_channels, dtype=self.dtype))

    @property
    def connections(self) -> NDArray[np.bool_] | None:
        """The (Cin, Cout) connection table, read from the mask of the ``w`` Parameter
        (its one home: change the mask and the layer follows), or None."""
        if "w" not in self._parameters:        # configured, its parameters not yet set
            return self._options.connections
        mask = self._parameters["w"].mask
        return None if mask is None else mask.reshape(mask.shape[:2]).T

    @property
    def options(self) -> ConvOptions:
        """The validated options of this convolution (its connection table the mask's)."""
        if "w" not in self._parameters:        # configured, its parameters not yet set
            return self._options
        table = self.connections
        kept = self._options.connections
        if (table is None) != (kept is None) or (
                table is not None and not np.array_equal(table, kept)):
            o = self._options
            self._options = conv_options(o.d, stride=o.stride, padding=o.padding,
                                         dilation=o.dilation, groups=o.groups,
                                         connections=table, flip=o.flip,
                                         padding_mode=o.padding_mode, fill_value=o.fill_value,
                                         algorithm=o.algorithm)
        return self._options

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"w": (self.out_channels, self.in_channels // self.groups) + self.kernel_size,
                "b": (self.out_channels,)}

    def _plan_for(self, x_shape):
        """The plan of a batch of ``x_shape`` (kept per shape, table, and the settings a
        plan is cut for: a ``vecconv.config(workspace=...)`` block gets its own)."""
        options = self.options
        key = (x_shape, options.key(), _config.get_workspace(), _plan.tunables())
        plan = self._plans.get(key)
        if plan is None:
            plan = _plan.plan_conv(x_shape, self.param_shapes()["w"], (self.out_channels,),
                                   self.dtype, options)
            check_fits(plan.memory() + plan.memory(backward=True),
                       f"{type(self).__name__} on input {x_shape}")
            self._remember(key, plan)
        return plan

    def forward(self, x: ArrayInput) -> FloatArray:
        xa = self._input(x)
        params = self.checked_params()
        plan = self._plan_for(xa.shape)
        # the effective weight (flipped, masked, one row per output map) is made once and
        # kept for the backward pass
        w2 = _run.effective_weight(params["w"], plan)
        self._state = (xa, w2, plan)
        return _run.forward(xa, w2, params["b"], plan)                      # eq. 1, 12

    def backward(self, delta: ArrayInput, input_grad: bool = True) -> FloatArray | None:
        x, w2, plan = self._forward_state("_state")
        delta = self._delta(delta, plan.out_shape)
        dx, dw2 = _run.backward(delta, x, w2, plan, need_dx=bool(input_grad), need_dw=True)
        self._parameters["w"].grad = _run.weight_gradient(dw2, plan)           # eq. 12-13
        self._parameters["b"].grad = _run.bias_gradient(delta, self.dtype)     # eq. 10
        return dx                                                              # eq. 16-18

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        shape = self._checked_shape(input_shape)
        _, out = _plan.check_conv((1,) + shape[1:], self.param_shapes()["w"],
                                  (self.out_channels,), self.options)
        return (shape[0], self.out_channels) + tuple(out)

    def describe(self) -> str:
        k = "x".join(map(str, self.kernel_size))
        table = self.connections
        note = f", table of {int(table.sum())}" if table is not None else ""
        return (f"{self.name + ' ' if self.name else ''}{type(self).__name__} {k} "
                f"{self.in_channels}->{self.out_channels}{note}")

    def config(self) -> dict[str, Any]:
        table = self.connections
        return dict(in_channels=self.in_channels, out_channels=self.out_channels,
                    kernel_size=list(self.kernel_size), stride=self.stride,
                    padding=self.padding, padding_mode=self.padding_mode,
                    fill_value=self.fill_value, dilation=self.dilation, groups=self.groups,
                    flip=self.flip, dtype=self.dtype.name,
                    connections=None if table is None else table.tolist(),
                    algorithm=self.algorithm)


_CONV_DOC = """Convolution layer over {d} spatial axes, on the vecconv engine: input
    (N, Cin, {layout}).

    Eq. 1 of the derivation: z_j = sum_{{i in M_j}} x_i * k_ij + b_j (the activation is a
    separate layer, ``Activation``). Its kernel gradient is eq. 12-13 (one GEMM with the
    patch matrix), its bias gradient eq. 10, the error for the previous layer eq. 16-18
    (a GEMM and col2im). The options are checked once, at construction; the plan of each
    input shape is made once and kept.

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
    algorithm : {{'auto', 'im2col', 'fft', 'winograd', 'direct'}}
        How the passes run, as for ``vecconv.conv`` ('auto': the planner's choice per
        input shape and pass).
    """


class Conv1D(_ConvNd):
    spatial = 1
    __doc__ = _CONV_DOC.format(d=1, layout="L", kshape="k")


class Conv2D(_ConvNd):
    spatial = 2
    __doc__ = _CONV_DOC.format(d=2, layout="H, W", kshape="kh, kw")


class Conv3D(_ConvNd):
    spatial = 3
    __doc__ = _CONV_DOC.format(d=3, layout="D, H, W", kshape="kd, kh, kw")


# ----------------------------------------------------------------------------- transposed
class _ConvTransposeNd(_Sizes):
    """Transposed convolution over ``spatial`` axes: the base of ``ConvTranspose1D/2D/3D``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Size, *,
                 stride: Size = 1, padding: Padding = 0, output_padding: Size = 0,
                 dilation: Size = 1, groups: int = 1, dtype: DTypeLike = np.float32,
                 seed: int | None = None, rng: np.random.Generator | None = None,
                 algorithm: Algorithm = "auto") -> None:
        super().__init__()
        self._configure(in_channels, out_channels, kernel_size, stride=stride,
                        padding=padding, output_padding=output_padding, dilation=dilation,
                        groups=groups, dtype=dtype, algorithm=algorithm)
        rng = random_source(seed, rng)
        check_room(self)
        self._init_parameters(rng)
        self._finish_building()

    def _configure(self, in_channels, out_channels, kernel_size, *, stride=1, padding=0,
                   output_padding=0, dilation=1, groups=1, dtype=np.float32,
                   algorithm="auto"):
        """Check every option, without inventing an input, and keep the record."""
        self._sizes(in_channels, out_channels, kernel_size, groups, dtype)
        self._options = conv_transpose_options(self.spatial, stride=stride, padding=padding,
                                               output_padding=output_padding,
                                               dilation=dilation, groups=self.groups,
                                               algorithm=algorithm)
        _plan.check_forced(self._options, self.kernel_size)
        self.algorithm = self._options.algorithm
        self.stride, self.padding = plain(stride), plain(padding)
        self.output_padding, self.dilation = plain(output_padding), plain(dilation)
        self._plans: dict[Any, Any] = {}

    def _init_parameters(self, rng):
        fan_in = (self.in_channels // self.groups) * math.prod(self.kernel_size)
        self.add_parameter("w", lecun_uniform(rng, self.param_shapes()["w"], fan_in,
                                              self.dtype))
        self.add_parameter("b", np.zeros(self.out_channels, dtype=self.dtype))

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"w": (self.in_channels, self.out_channels // self.groups) + self.kernel_size,
                "b": (self.out_channels,)}

    def _plan_for(self, x_shape):
        """The plan of the convolution this layer is the adjoint of, for a batch of
        ``x_shape`` (kept per shape and the settings a plan is cut for)."""
        key = (x_shape, _config.get_workspace(), _plan.tunables())
        plan = self._plans.get(key)
        if plan is None:
            plan = self._remember(key, _plan.plan_conv_transpose(
                x_shape, self.param_shapes()["w"], self.dtype, self._options))
        return plan

    @property
    def options(self) -> ConvOptions:
        """The validated options of this transposed convolution (fixed when built)."""
        return self._options

    def forward(self, x: ArrayInput) -> FloatArray:
        xa = self._input(x)
        params = self.checked_params()
        plan = self._plan_for(xa.shape)
        self._state = (xa, plan)
        return _run.transposed_forward(xa, params["w"], params["b"], plan)     # eq. 16-18

    def backward(self, delta: ArrayInput, input_grad: bool = True) -> FloatArray | None:
        x, plan = self._forward_state("_state")
        delta = self._delta(delta, plan.x_shape)
        dx, dw, db = _run.transposed_backward(delta, x, self.checked_params()["w"], plan,
                                              need_dx=bool(input_grad), need_dw=True)
        self._parameters["w"].grad = dw                                        # eq. 12-13
        self._parameters["b"].grad = db                                        # eq. 10
        return dx

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        shape = self._checked_shape(input_shape)
        out = _plan.transposed_output_shape((1,) + shape[1:], self.param_shapes()["w"],
                                            self.options)
        return (shape[0],) + tuple(out[1:])

    def config(self) -> dict[str, Any]:
        return dict(in_channels=self.in_channels, out_channels=self.out_channels,
                    kernel_size=list(self.kernel_size), stride=self.stride,
                    padding=self.padding, output_padding=self.output_padding,
                    dilation=self.dilation, groups=self.groups, dtype=self.dtype.name,
                    algorithm=self.algorithm)


_TRANSPOSE_DOC = """Transposed convolution layer over {d} spatial axes: input (N, Cin, {layout}).

    The adjoint of a convolution (eq. 16-18's path of the error, used as a layer: a GEMM
    W^T X and col2im); PyTorch's ConvTranspose{d}d. Its kernel gradient is eq. 12 with the
    input in the place of delta. Weight ``w`` is (Cin, Cout/groups, {kshape}), bias ``b``
    (Cout,).

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
    algorithm : {{'auto', 'im2col', 'winograd', 'direct'}}
        How the passes run, as for ``vecconv.conv_transpose``.
    """


class ConvTranspose1D(_ConvTransposeNd):
    spatial = 1
    __doc__ = _TRANSPOSE_DOC.format(d=1, layout="L", kshape="k")


class ConvTranspose2D(_ConvTransposeNd):
    spatial = 2
    __doc__ = _TRANSPOSE_DOC.format(d=2, layout="H, W", kshape="kh, kw")


class ConvTranspose3D(_ConvTransposeNd):
    spatial = 3
    __doc__ = _TRANSPOSE_DOC.format(d=3, layout="D, H, W", kshape="kd, kh, kw")
