"""Optimisers: stochastic gradient descent with momentum."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .._validate import real
from .container import Sequential
from .parameter import Layer

__all__ = ["SGD"]


class SGD:
    """Stochastic gradient descent with momentum: v <- mu v - lr g; p <- p + v.

    Parameters
    ----------
    net : Sequential or Layer
        The network (or the one layer) whose parameters ``step`` updates, read anew at
        every step.
    lr : float
        The learning rate, >= 0 (it may be changed between steps: ``opt.lr = ...``).
    momentum : float
        mu, the fraction of the last update kept, in [0, 1) (0 for plain gradient
        descent).
    weight_decay : float
        L2 decay, >= 0, added to the gradient of every parameter named ``w`` (not the
        biases).
    """

    def __init__(self, net: Sequential | Layer, lr: float = 0.01, momentum: float = 0.9,
                 weight_decay: float = 0.0) -> None:
        if not isinstance(net, (Sequential, Layer)):
            hint = (": pass the network itself, SGD(net), not a list of its parameters"
                    if isinstance(net, (list, tuple)) else "")
            raise TypeError(f"net must be a vecconv.nn.Sequential or Layer, got "
                            f"{type(net).__name__}{hint}")
        self.net = net
        self.lr = _at_least("lr", lr, 0.0)
        self.momentum = _at_least("momentum", momentum, 0.0)
        if self.momentum >= 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        self.weight_decay = _at_least("weight_decay", weight_decay, 0.0)
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


def _at_least(name: str, value: object, low: float) -> float:
    v = real(name, value)
    if not math.isfinite(v) or v < low:
        raise ValueError(f"{name} must be a finite number >= {low:g}, got {value!r}")
    return v
