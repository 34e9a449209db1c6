"""Parameters and the layer interface: what every layer of ``vecconv.nn`` is.

A :class:`Layer` maps a batch forward and the error delta = dE/d(output) back to
dE/d(input), setting the ``grad`` of each of its :class:`Parameter` s on the way (the
derivation's section 3: the chain rule, one layer at a time).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, MutableMapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .._typing import ArrayInput, FloatArray
from .._validate import INDEX_MAX, as_array, check_fits, check_ndim, float_dtype, integer

__all__ = ["Parameter", "Layer"]


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
    implements ``forward`` and ``backward``. To save and load it, also define
    ``config()`` (its constructor's keyword arguments) and ``param_shapes()`` (the shape
    of each parameter, as its configuration implies): ``Sequential.save`` stores it under
    its class name, and ``vecconv.nn.load(path, layers=[YourLayer])`` rebuilds it
    (``load`` builds only the classes it is given, never one named by a file alone).
    """

    #: a short label for summaries (LeNet-5's C1, S2, ...)
    name: str | None = None
    #: the float dtype of the layer's parameters and outputs
    dtype: np.dtype[Any]

    def __init__(self) -> None:
        self._parameters: dict[str, Parameter] = {}

    def __setattr__(self, name: str, value: Any) -> None:
        # a built-in layer's options are fixed once it is built: its plans, its weights
        # and what save() writes follow from them, so a changed option would be ignored
        # by the plans it keeps, or written to a file it does not match
        if name in self.__dict__.get("_fixed", ()):
            raise AttributeError(f"{type(self).__name__}.{name} is fixed when the layer is "
                                 f"built (its plans, weights and saved configuration follow "
                                 f"from it): build a new layer with {name}={value!r}")
        object.__setattr__(self, name, value)

    def _finish_building(self) -> None:
        """Mark the options final (the built-in layers call it once they are built)."""
        object.__setattr__(self, "_fixed", frozenset(self.config()) | {"dtype"})

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

        A layer with parameters must define it (the base class knows none): ``save``,
        ``load`` and ``checked_params`` compare the arrays against it.

        Returns
        -------
        dict of str to tuple of int
            Empty for a layer without parameters.
        """
        if self._parameters:
            raise NotImplementedError(
                f"{type(self).__name__} has parameters {sorted(self._parameters)} but does "
                "not define param_shapes(): define it to return {name: shape} as the "
                "layer's configuration implies, so that its parameters can be checked, "
                "saved and loaded")
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

    @classmethod
    def _blank(cls, config: dict[str, Any]) -> Layer:
        """The layer of ``config`` with its options checked and no parameter values drawn
        (``load`` sets them once the file's arrays are checked): through ``_configure``
        when the class has one (the built-in layers), else its constructor."""
        configure = getattr(cls, "_configure", None)
        if configure is None:
            return cls(**config)
        layer = cls.__new__(cls)
        Layer.__init__(layer)
        configure(layer, **config)
        layer._finish_building()
        return layer

    def _parameter_mask(self, name: str) -> NDArray[np.bool_] | None:
        """The mask of parameter ``name`` that the configuration implies (None: all
        entries exist)."""
        return None

    def _restore(self, arrays: dict[str, NDArray[Any]]) -> None:
        """Set the parameters to ``arrays`` (checked by the caller), registering those
        the layer does not have yet."""
        for name, a in arrays.items():
            p = self._parameters.get(name)
            if p is None:
                self.add_parameter(name, a, mask=self._parameter_mask(name))
            else:
                p.data = a

    def _check_input(self, x: object, ndim: int, layout: str,
                     channels: int | None = None) -> NDArray[Any]:
        x = real_array("x", x)
        check_ndim(f"{type(self).__name__} input", x.shape, ndim, layout)
        if channels is not None and x.shape[1] != channels:
            raise ValueError(f"{type(self).__name__} expects {channels} input channels, "
                             f"got input of shape {x.shape}")
        return x

    def _forward_state(self, what: str) -> Any:
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
            For example ``'C1 Conv2D 5x5 1->6'``.
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


# ----------------------------------------------------------------------------- helpers
def real_array(name: str, value: object) -> NDArray[Any]:
    """An array of real numbers (integers and bools allowed): complex, strings and objects
    are refused with a TypeError naming the argument, as the functions do."""
    a = as_array(name, value)
    float_dtype(**{name: a})
    return a


def random_source(seed: object, rng: object) -> np.random.Generator:
    """A layer's random source: ``rng`` (a NumPy Generator), else one made from ``seed``
    (None or an int >= 0)."""
    if rng is not None:
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        return rng
    if seed is not None:
        seed = integer("seed", seed, 0)
    return np.random.default_rng(seed)


def check_room(layer: Layer) -> None:
    """Refuse, before anything is drawn, parameters past what the engine indexes or the
    machine holds (they are drawn in float64, then kept in the layer's dtype)."""
    shapes = layer.param_shapes()
    total = 0
    for name, shape in shapes.items():
        size = math.prod(shape)
        if size > INDEX_MAX:
            raise ValueError(f"{type(layer).__name__}'s parameter {name!r} would have shape "
                             f"{shape}, {size} entries: more than any array can index")
        total += size
    check_fits(total * (8 + layer.dtype.itemsize),
               f"{type(layer).__name__}'s parameters {dict(shapes)}")


def lecun_uniform(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int,
                  dtype: np.dtype[Any]) -> NDArray[Any]:
    """Uniform with variance 1/fan_in (LeCun et al., 'Efficient BackProp')."""
    a = math.sqrt(3.0 / fan_in)
    return rng.uniform(-a, a, size=shape).astype(dtype)


def plain(value: Any) -> Any:
    """An option as given, in Python's own types: tuples for sequences, int, float and
    bool for NumPy scalars (what a layer's ``config()`` reports and a file stores)."""
    if isinstance(value, (tuple, list)):
        return tuple(plain(v) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    return value
