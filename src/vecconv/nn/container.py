"""Containers: ``Sequential``, layers in order, and the chain rule through them."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .._typing import ArrayInput, FloatArray, Shape
from .._validate import as_array
from .parameter import Layer, Parameter

__all__ = ["Sequential"]


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
            lines.append(f"{layer.describe()[:33]:<34}{str(shape[1:]):<22}"
                         f"{layer.parameter_count():>12,}")
        lines.append("-" * 68)
        lines.append(f"{'total':<56}{self.parameter_count():>12,}")
        return "\n".join(lines)

    def save(self, path: str | os.PathLike[str]) -> str:
        """Architecture (JSON) and parameters in one .npz file; returns the path written.

        A path without the ``.npz`` suffix gets it (as ``numpy.savez`` does), and ``load``
        finds the file by the same path. A layer class of your own is saved by its name,
        ``config()`` and ``param_shapes()``; ``load(path, layers=[YourLayer])`` rebuilds
        it. A layer that could not be rebuilt that way is refused here, before anything
        is written.

        Parameters
        ----------
        path : str or os.PathLike
            Where to write.

        Returns
        -------
        str
            The path written (with ``.npz``).
        """
        from .serialization import save
        return save(self, path)


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
