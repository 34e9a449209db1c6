"""Optimisers: stochastic gradient descent with momentum."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from .container import Sequential

__all__ = ["SGD"]


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
