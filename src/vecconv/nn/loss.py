"""Losses: the error E of a batch and its delta = dE/dy, where the chain rule starts."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from .._typing import ArrayInput, FloatArray

__all__ = ["SquaredError", "SoftmaxCrossEntropy"]


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
