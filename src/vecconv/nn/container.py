"""Containers: ``Sequential``, layers in order, and the chain rule through them."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .._typing import ArrayInput, FloatArray, Shape
from .._validate import as_array, integer
from .parameter import Layer, Parameter

__all__ = ["Sequential"]


class Sequential:
    """Layers in order; ``backward`` runs the chain rule of the derivation's section 3 through them.

    An error in a layer names the layer (its index, label and type); when the network
    knows the input it is built for (``input_shape``), the error says that too.

    Parameters
    ----------
    layers : iterable of Layer
        The layers, first to last; kept in the ``layers`` list.
    input_shape : tuple of int, optional
        The shape of one input, without the batch axis, that the network is built for
        (LeNet-5's (1, 32, 32)): ``summary()`` starts from it, and errors mention it.
        Inputs of other shapes are not refused (a convolutional network may take them).
    """

    def __init__(self, layers: Iterable[Layer], *, input_shape: Shape | None = None) -> None:
        self.layers = list(layers)
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"layer {i} must be a vecconv.nn.Layer, got "
                                f"{type(layer).__name__}")
        self.input_shape: tuple[int, ...] | None = None
        if input_shape is not None:
            if not isinstance(input_shape, (tuple, list)) or not input_shape:
                raise TypeError(f"input_shape must be a tuple of ints (one input's shape, "
                                f"without the batch axis), got {input_shape!r}")
            self.input_shape = tuple(integer("input_shape entry", n, 1) for n in input_shape)

    def forward(self, x: ArrayInput) -> FloatArray:
        out: Any = x
        for i, layer in enumerate(self.layers):
            try:
                out = layer.forward(out)
            except (ValueError, TypeError) as exc:
                self._reraise(exc, i, "", x)
        return out

    def _reraise(self, exc: Exception, i: int, what: str, x: Any = None) -> None:
        """Raise ``exc`` again with the layer it came from (and the input the network
        is built for) in front of its message; other exception types pass unchanged."""
        if type(exc) not in (ValueError, TypeError):
            raise exc
        note = ""
        shape = getattr(x, "shape", None)
        if self.input_shape is not None and shape is not None \
                and tuple(shape[1:]) != self.input_shape:
            note = (f" (this network is built for inputs of shape (N, "
                    f"{', '.join(map(str, self.input_shape))}), got {tuple(shape)})")
        raise type(exc)(f"layer {i} ({self.layers[i].describe()}){what}: {exc}"
                        f"{note}").with_traceback(exc.__traceback__) from None

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
            try:
                grad = self.layers[i].backward(grad, input_grad=i > 0)
            except (ValueError, TypeError) as exc:
                self._reraise(exc, i, ", backward")

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
        size = integer("batch_size", batch_size, 1)
        xa = as_array("x", x)
        if xa.ndim < 1:
            raise ValueError(f"x must have a batch axis, got shape {xa.shape}")
        return np.concatenate([self.forward(xa[i:i + size]).argmax(axis=1)
                               for i in range(0, len(xa), size)]) if len(xa) else \
            np.zeros(0, dtype=np.intp)

    def summary(self, input_shape: Shape | None = None) -> str:
        """A table of every layer's output shape and parameter count, and the total.

        Parameters
        ----------
        input_shape : tuple of int, optional
            The shape of a batch given to the first layer. By default one input of the
            network's ``input_shape``, or, when it has none, (1, 1, 32, 32): one
            32 x 32 map, LeNet-5's input.

        Returns
        -------
        str
            The table, one line per layer.
        """
        default = input_shape is None
        if input_shape is None:
            input_shape = (1,) + (self.input_shape or (1, 32, 32))
        if not isinstance(input_shape, (tuple, list)):
            raise TypeError(f"input_shape must be a tuple of ints (a batch's shape), got "
                            f"{input_shape!r}")
        shape = tuple(integer("input_shape entry", n, 0) for n in input_shape)
        start = shape
        lines = [f"{'layer':<34}{'output shape':<22}{'parameters':>12}", "-" * 68]
        for i, layer in enumerate(self.layers):
            try:
                shape = layer.output_shape(shape)
            except (ValueError, TypeError) as exc:
                given = " (the default)" if default else ""
                raise ValueError(
                    f"summary(): layer {i} ({layer.describe()}) cannot take {shape}, the "
                    f"output of the layers before it for a batch of shape {start}{given}: "
                    f"{exc}. Give the shape of a batch this network takes as "
                    f"summary(input_shape=(1, C, ...))") from None
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
