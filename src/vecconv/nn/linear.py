"""Fully connected layers: ``Dense`` and the ``Flatten`` that feeds it.

The products run on the engine's BLAS and threads (``_run.matmul``), not NumPy's: two
BLAS thread pools on the same cores slow each other down.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from .. import _run
from .._typing import ArrayInput, FloatArray
from .._validate import as_array, integer, layer_dtype
from .parameter import Layer, check_room, lecun_uniform, random_source, real_array

__all__ = ["Dense", "Flatten"]


class Dense(Layer):
    """Fully connected: z = x W^T + b; error back delta^l = (W^{l+1})^T delta^{l+1}.

    The products run on the engine's BLAS and threads. Input (N, in_features), output
    (N, out_features); the weight ``w`` is (out_features, in_features), the bias ``b``
    (out_features,). Its gradients are dE/dW = delta^T x and dE/db = the sum of delta
    over the batch (eq. 10).

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
        self._configure(in_features, out_features, dtype=dtype)
        rng = random_source(seed, rng)
        check_room(self)
        self._init_parameters(rng)
        self._finish_building()

    def _configure(self, in_features, out_features, *, dtype=np.float32):
        self.in_features = integer("in_features", in_features, 1)
        self.out_features = integer("out_features", out_features, 1)
        self.dtype = layer_dtype(dtype)

    def _init_parameters(self, rng):
        self.add_parameter("w", lecun_uniform(rng, (self.out_features, self.in_features),
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
        delta = np.ascontiguousarray(real_array("delta", delta), dtype=self.dtype)
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
    """(N, C, H, W) -> (N, C*H*W): every axis but the batch axis in one."""

    def forward(self, x: ArrayInput) -> FloatArray:
        x = as_array("x", x)
        if x.ndim < 2:
            raise ValueError(f"Flatten input must have a batch axis, got shape {x.shape}")
        self._shape = x.shape
        return x.reshape(x.shape[0], math.prod(x.shape[1:]))

    def backward(self, delta: ArrayInput, input_grad: bool = True) -> FloatArray | None:
        shape = self._forward_state("_shape")
        d = as_array("delta", delta)
        out = (shape[0], math.prod(shape[1:]))
        if d.shape != out:            # one image's error must not become another's
            raise ValueError(f"Flatten backward expects delta of shape {out} (the output "
                             f"for input of shape {shape}), got shape {d.shape}")
        return d.reshape(shape) if input_grad else None

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (input_shape[0], math.prod(input_shape[1:]))
