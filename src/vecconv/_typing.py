"""Type aliases of vecconv's public signatures (for annotations only; nothing here runs).

Why not ``numpy.typing.ArrayLike`` for the inputs: it admits ``str`` and ``bytes`` (NumPy
makes a string array of them), which vecconv always refuses. ``ArrayInput`` is what
vecconv takes: an ndarray, a tensor or anything else with ``__array__``, a number, or
nested sequences of those, up to the five axes of a batched 3-D input (and one more, so a
list of such batches is not refused by the type checker when NumPy would take it). A
``str`` is refused by the checker; ``bytes`` is not (to a type checker it is a sequence of
ints), so it is left to the run-time check.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, ParamSpec, Protocol, TypedDict, TypeVar, Union

import numpy as np
from numpy.typing import NDArray

__all__ = ["ArrayInput", "FloatArray", "IntArray", "Size", "Padding", "PaddingMode",
           "Algorithm", "TransposeAlgorithm", "Gradients", "Shape", "Documented"]


class SupportsArray(Protocol):
    """Anything NumPy converts through ``__array__`` (ndarray, NumPy scalars, tensors)."""

    def __array__(self) -> np.ndarray[Any, Any]: ...


_Leaf = Union[float, SupportsArray]
ArrayInput = Union[
    SupportsArray, float,
    Sequence[_Leaf],
    Sequence[Sequence[_Leaf]],
    Sequence[Sequence[Sequence[_Leaf]]],
    Sequence[Sequence[Sequence[Sequence[_Leaf]]]],
    Sequence[Sequence[Sequence[Sequence[Sequence[_Leaf]]]]],
    Sequence[Sequence[Sequence[Sequence[Sequence[Sequence[_Leaf]]]]]],
]

#: what vecconv returns: float32 when every input is float32, else float64
FloatArray = NDArray[np.floating[Any]]
IntArray = NDArray[np.int64]

#: an int for every spatial axis, or one int per axis (a tuple or a list)
Size = Union[int, tuple[int, ...], list[int]]
Shape = Union[tuple[int, ...], list[int]]
#: an int or d ints (both sides), d (before, after) pairs, or scipy.signal's names
Padding = Union[int, tuple[int, ...], list[int], tuple[tuple[int, int], ...],
                list[tuple[int, int]], list[list[int]], Literal["valid", "same", "full"]]
PaddingMode = Literal["zeros", "constant", "reflect", "replicate", "circular", "symmetric"]
#: how a convolution's forward pass is computed (``_options.ALGORITHMS``)
Algorithm = Literal["auto", "im2col", "fft", "winograd", "direct"]
TransposeAlgorithm = Literal["auto", "im2col", "winograd", "direct"]
#: (dx, dw, db) of a backward pass; None where the flags asked for no such gradient
Gradients = tuple[Union[FloatArray, None], Union[FloatArray, None], Union[FloatArray, None]]


# The keywords vecconv.torch passes on (``**options``), one TypedDict per operation.
class ConvOptions(TypedDict, total=False):
    stride: Size
    padding: Padding
    dilation: Size
    groups: int
    connections: ArrayInput | None
    flip: bool
    padding_mode: PaddingMode
    fill_value: float
    workspace: int | None
    algorithm: Algorithm


class ConvTransposeOptions(TypedDict, total=False):
    stride: Size
    padding: Padding
    output_padding: Size
    dilation: Size
    groups: int
    output_size: Shape | None
    workspace: int | None
    algorithm: TransposeAlgorithm


class MaxPoolOptions(TypedDict, total=False):
    stride: Size | None
    padding: Size
    dilation: Size
    ceil_mode: bool


class AvgPoolOptions(TypedDict, total=False):
    stride: Size | None
    padding: Size
    ceil_mode: bool
    count_include_pad: bool
    divisor_override: int | None


P = ParamSpec("P")
R = TypeVar("R", covariant=True)


class Documented(Protocol[P, R]):
    """A generated public function (conv2d from conv, ...): the template's parameters and
    result, and a docstring that is always there (the module appends to it)."""

    __doc__: str
    __name__: str

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R: ...


def like(template: Callable[P, R], f: Callable[..., Any]) -> Documented[P, R]:
    """f (conv2d, made by a factory) typed as its template (conv): the same parameters and
    result. The annotations are copied too, for ``inspect`` and ``typing.get_type_hints``
    (f and its template live in the same module, so the names resolve alike)."""
    f.__annotations__ = dict(template.__annotations__)
    return f
