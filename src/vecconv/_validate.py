"""Argument checks shared by every front end: one place for each rule.

The compiled kernels assume clean input; everything a user can get wrong about a single
argument (its type, dtype, range, or whether memory can hold it) is caught here and
turned into a ``TypeError``/``ValueError`` that names the argument. Rules that relate
several arguments live with what they decide: ``_options`` (options without shapes),
``_shapes`` (sizes), ``_plan`` (options against shapes).
"""

from __future__ import annotations

import math
import numbers
import operator
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import DTypeLike, NDArray

INT32_MAX = 2**31 - 1  # BLAS dimensions are C ints in scipy.linalg.cython_blas


# ----------------------------------------------------------------------------- dtypes
def float_dtype(**arrays: NDArray[Any] | None) -> np.dtype[Any]:
    """The working dtype of a call: float32 only when every float input is float32.

    Integer and bool inputs promote to float64; float16 to float32. Complex, object,
    string and extended-precision inputs are refused: converting them would lose
    information silently.
    """
    result = None
    for name, a in arrays.items():
        if a is None:
            continue
        dt = a.dtype
        if dt.kind in "biu":
            dt = np.dtype(np.float64)
        elif dt.kind == "f":
            if dt.itemsize > 8:
                raise TypeError(f"{name} has dtype {dt}; vecconv computes in float32 or "
                                "float64 (convert explicitly if the precision loss is intended)")
            if dt.itemsize < 4:
                dt = np.dtype(np.float32)
        else:
            raise TypeError(f"{name} must be a real numeric array (float32/float64, or "
                            f"integer/bool promoted to float64), got dtype {dt}")
        result = dt if result is None else np.promote_types(result, dt)
    # native byte order always: a big-endian float32 input computes as float32
    return np.dtype(np.float64) if result is None else result.newbyteorder("=")


def as_array(name: str, value: object) -> NDArray[Any]:
    """np.asarray with a message that names the argument when it is not array-like."""
    if value is None:
        raise TypeError(f"{name} must be an array, got None")
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be an array, got {type(value).__name__}")
    try:
        a = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise TypeError(f"{name} must be an array: {exc}") from None
    if a.dtype == object:
        raise TypeError(f"{name} must be a real numeric array, got dtype object")
    return a


def floats(dtype: DTypeLike, a: NDArray[Any]) -> NDArray[Any]:
    """A C-contiguous copy-if-needed of ``a`` in ``dtype`` (never a view we could write)."""
    return np.ascontiguousarray(a, dtype=dtype)


def copy_bytes(a: NDArray[Any], dtype: DTypeLike) -> int:
    """Bytes ``floats(dtype, a)`` would allocate (0 when ``a`` is already clean)."""
    if a.dtype == dtype and a.flags.c_contiguous:
        return 0
    return a.size * np.dtype(dtype).itemsize


def layer_dtype(dtype: DTypeLike) -> np.dtype[Any]:
    """The dtype a layer computes in: float32 or float64 in native byte order (the
    policy of ``float_dtype`` for a dtype a user names)."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from None
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)) or not dt.isnative:
        raise TypeError(f"dtype must be float32 or float64 (native byte order), got {dt.str!r}")
    return dt


def check_gradient_shape(name: str, got: tuple[int, ...], want: tuple[int, ...],
                         unbatched: bool, what: str) -> None:
    """A gradient (dy) must have its pass's output shape; said in the caller's terms
    (without the batch axis the call added to an unbatched input)."""
    if tuple(got) != tuple(want):
        show = (lambda s: tuple(s)[1:]) if unbatched else tuple
        raise ValueError(f"{name} must have the output shape {show(want)} of {what}, got "
                         f"{show(got)}")


def check_ndim(name: str, shape: Sequence[int], ndim: int, layout: str) -> None:
    if len(shape) != ndim:
        raise ValueError(f"{name} must be {ndim}-D {layout}, got shape {tuple(shape)}")


# ----------------------------------------------------------------------------- integers
#: No option or size reaches 2**62: the engine's indices are 64-bit signed integers.
INDEX_MAX = 2**62


def integer(name: str, value: object, minimum: int, maximum: int = INDEX_MAX) -> int:
    """An int in [minimum, maximum]; bool, float and None are refused (1.0 is not a size)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    v = operator.index(value)
    if v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    if v > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {v}")
    return v


def flag(name: str, value: object) -> bool:
    """True or False (NumPy's bools too); anything else is refused: 0, 1 and "no" are
    not answers to a yes/no option."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def real(name: str, value: object) -> float:
    """A real number as a Python float (inf and nan allowed; too large to be a float, a
    bool, a complex or a string refused)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.number)) \
            or np.iscomplexobj(value):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    try:
        f = float(value)
        if math.isinf(f) and not np.isinf(value):        # extended precision past float64
            raise OverflowError
        return f
    except OverflowError:
        size = (f"an int of {int(value).bit_length()} bits" if isinstance(value, numbers.Integral)
                else repr(value))
        raise ValueError(f"{name} must fit in a float64 (magnitude below 1.8e308), got "
                         f"{size}") from None


def int_tuple(name: str, value: object, n: int, minimum: int) -> tuple[int, ...]:
    """An int, or a sequence of n ints, each >= minimum, as a tuple of n ints."""
    if isinstance(value, (tuple, list)):
        if len(value) != n:
            raise ValueError(f"{name} must be an int or {n} ints, got {value!r}")
        return tuple(integer(name, v, minimum) for v in value)
    if isinstance(value, np.ndarray):
        raise TypeError(f"{name} must be an int or a tuple of {n} ints, got an array")
    return (integer(name, value, minimum),) * n


# ----------------------------------------------------------------------------- memory
def _available_bytes():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_fits(nbytes: int, what: str) -> None:
    """Refuse, before allocating, an array the machine cannot hold.

    Linux over-commits: a too-large np.empty can succeed and the process is killed later
    when the pages are touched. Asking first turns that into a MemoryError that says how
    much was asked for.
    """
    if nbytes < 256 * 2**20:
        return
    avail = _available_bytes()
    if avail is not None and nbytes > avail:
        raise MemoryError(f"vecconv: {what} needs {nbytes / 2**30:.2f} GiB but only "
                          f"{avail / 2**30:.2f} GiB of memory is available")


def nbytes_of(shape: Sequence[int], dtype: DTypeLike) -> int:
    return math.prod(shape) * np.dtype(dtype).itemsize
