"""Activations: the squashing function f of eq. 1 and 2, as a layer of its own.

The backward pass is the o f'(z) of eq. 4, 7 and 18: the error times the derivative at
the layer's input.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from .._typing import ArrayInput, FloatArray
from .._validate import float_dtype
from .parameter import Layer, real_array

__all__ = ["ACTIVATIONS", "ActivationName", "Activation"]

#: the names of ``ACTIVATIONS``
ActivationName = Literal["identity", "sigmoid", "tanh", "lecun_tanh", "relu"]


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


def activation_pair(name: object) -> tuple[Any, Any]:
    """(f, f') of the activation called ``name``; a ValueError naming it otherwise."""
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]


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
        self._f, self._df = activation_pair(function)
        self.function = function
        self._finish_building()

    def forward(self, x: ArrayInput) -> FloatArray:
        z = real_array("x", x)
        # the functions' dtype rule: float32 stays float32, float16 computes in float32,
        # integers and bools in float64 (NumPy would give float16 for int8 and bool)
        self._z = np.asarray(z, dtype=float_dtype(x=z))
        self._a = self._f(self._z)
        return self._a

    def backward(self, delta: ArrayInput, input_grad: bool = True) -> FloatArray | None:
        z = self._forward_state("_z")
        d = real_array("delta", delta)
        if d.shape != z.shape:
            raise ValueError(f"Activation backward expects delta of shape {z.shape}, got "
                             f"{d.shape}")
        return np.asarray(d, dtype=z.dtype) * self._df(z, self._a) if input_grad else None

    def config(self) -> dict[str, Any]:
        return dict(function=self.function)
