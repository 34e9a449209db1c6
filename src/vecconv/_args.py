"""Argument checking shared by every public function: one place for each rule.

The compiled kernels assume clean input; everything a user can get wrong is caught here
and turned into a ``TypeError``/``ValueError`` that names the argument.
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


def int_tuple(name: str, value: object, n: int, minimum: int) -> tuple[int, ...]:
    """An int, or a sequence of n ints, each >= minimum, as a tuple of n ints."""
    if isinstance(value, (tuple, list)):
        if len(value) != n:
            raise ValueError(f"{name} must be an int or {n} ints, got {value!r}")
        return tuple(integer(name, v, minimum) for v in value)
    if isinstance(value, np.ndarray):
        raise TypeError(f"{name} must be an int or a tuple of {n} ints, got an array")
    return (integer(name, value, minimum),) * n


# ----------------------------------------------------------------------------- padding
PADDING_MODES = ("valid", "same", "full")


def resolve_padding(padding, extents, flip, signal_1d=False):
    """Padding before/after each spatial axis, as ((before, after), ...).

    ``extents`` are the dilated kernel sizes d*(k-1)+1. The string modes mean exactly what
    they mean in scipy.signal: 'full' pads k-1 on both sides; 'same' keeps the input size
    and, for even kernels, scipy centres the window differently per function:
    ``correlate2d`` pads (k-1)//2 before, ``convolve2d`` pads k//2 before (the flipped
    kernel moves its centre), and the 1-D ``correlate``/``convolve`` both pad k//2 before.
    """
    if isinstance(padding, str):
        if padding == "valid":
            return tuple((0, 0) for _ in extents)
        if padding == "full":
            return tuple((k - 1, k - 1) for k in extents)
        if padding == "same":
            out = []
            for k in extents:
                before = k // 2 if (flip or signal_1d) else (k - 1) // 2
                out.append((before, k - 1 - before))
            return tuple(out)
        raise ValueError(f"padding must be an int >= 0, a tuple of ints, or one of "
                         f"{PADDING_MODES}, got {padding!r}")
    n = len(extents)
    if isinstance(padding, (tuple, list)) and len(padding) == n and all(
            isinstance(p, (tuple, list)) for p in padding):
        out = []
        for p in padding:
            before, after = int_tuple("padding", p, 2, 0)
            out.append((before, after))
        return tuple(out)
    return tuple((p, p) for p in int_tuple("padding", padding, n, 0))


def output_size(name_in, size, pad, extent, stride):
    padded = size + pad[0] + pad[1]
    if padded < extent:
        raise ValueError(f"kernel (dilated extent {extent}) is larger than the padded "
                         f"{name_in} ({size} + padding {pad[0]}+{pad[1]} = {padded})")
    return (padded - extent) // stride + 1


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
