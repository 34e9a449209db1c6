"""Shape arithmetic, in one place: layouts and axis names, padding by name, and the
output size of a convolution, a transposed convolution and a pooling (small pure
functions of integers, as ATen's ``conv_output_size`` or Chainer's ``get_conv_outsize``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._validate import int_tuple

#: spatial axes d -> (layout of x, layout of w, names of the axes in messages)
LAYOUTS = {1: ("(N, C, L)", "(Cout, Cin/groups, k)", ("L",)),
           2: ("(N, C, H, W)", "(Cout, Cin/groups, kh, kw)", ("H", "W")),
           3: ("(N, C, D, H, W)", "(Cout, Cin/groups, kd, kh, kw)", ("D", "H", "W"))}

#: The padding strings and what they mean (scipy.signal's modes).
PADDING_NAMES = ("valid", "same", "full")


def spatial_layout(d: int) -> str:
    """'(L,)', '(H, W)' or '(D, H, W)'."""
    names = LAYOUTS[d][2]
    return "(" + ", ".join(names) + ("," if d == 1 else "") + ")"


def axis_names(d: int) -> tuple[str, ...]:
    return LAYOUTS[d][2]


def kernel_axes(w_shape: tuple[int, ...], fixed: int | None, fname: str) -> int:
    """d, the number of spatial axes of a convolution: ``w.ndim - 2``, checked against
    ``fixed`` (conv1d/2d/3d)."""
    d = len(w_shape) - 2
    if fixed is not None and d != fixed:
        raise ValueError(f"{fname} needs w of {fixed + 2} dimensions {LAYOUTS[fixed][1]}, got "
                         f"shape {tuple(w_shape)}")
    if d not in LAYOUTS:
        raise ValueError(f"w must be (Cout, Cin/groups, *kernel) with 1, 2 or 3 kernel axes, "
                         f"got shape {tuple(w_shape)}")
    return d


def batched(a: Any, d: int) -> tuple[Any, bool]:
    """(a with a batch axis, whether it came without one): PyTorch's unbatched inputs.
    Works on NumPy and Dask arrays alike."""
    if a.ndim == d + 1:
        return a[None], True
    return a, False


def pool_axes(shape: tuple[int, ...], kernel_size: object, fixed: int | None,
              fname: str) -> tuple[int, bool]:
    """(d, whether the input is unbatched) for a pooling of an input of ``shape``: d is
    fixed (max_pool2d...), or len(kernel_size), or ``ndim - 2`` for an int kernel_size."""
    ndim = len(shape)
    if fixed is not None:
        d = fixed
    elif isinstance(kernel_size, (tuple, list)):
        d = len(kernel_size)
        if d not in LAYOUTS:
            raise ValueError(f"kernel_size must have 1, 2 or 3 entries, got {kernel_size!r}")
        int_tuple("kernel_size", kernel_size, d, 1)       # a nested tuple is no window
    else:
        d = ndim - 2
        if d not in LAYOUTS:
            raise ValueError(f"{fname} with an int kernel_size needs x of shape (N, C, *spatial) "
                             f"with 1, 2 or 3 spatial axes, got shape {tuple(shape)} (give "
                             f"kernel_size as a tuple for an unbatched x)")
        return d, False
    if ndim in (d + 1, d + 2):
        return d, ndim == d + 1
    names = spatial_layout(d)
    raise ValueError(f"{fname} needs x of shape (N, C, *{names}) or (C, *{names}) for a "
                     f"{d}-D window, got shape {tuple(shape)}")


# ----------------------------------------------------------------------------- padding
def padding_pairs(padding: object, d: int) -> tuple[tuple[int, int], ...]:
    """An int, d ints, or d (before, after) pairs as d (before, after) pairs."""
    if isinstance(padding, (tuple, list)) and len(padding) == d and all(
            isinstance(p, (tuple, list)) for p in padding):
        return tuple(int_tuple("padding", p, 2, 0) for p in padding)   # type: ignore[misc]
    return tuple((p, p) for p in int_tuple("padding", padding, d, 0))


def resolve_padding(padding: str | tuple[tuple[int, int], ...], extents: tuple[int, ...],
                    flip: bool, signal_1d: bool = False) -> tuple[tuple[int, int], ...]:
    """Padding before/after each spatial axis, as ((before, after), ...).

    ``extents`` are the dilated kernel sizes d*(k-1)+1. The string modes mean exactly what
    they mean in scipy.signal: 'full' pads k-1 on both sides; 'same' keeps the input size
    and, for even kernels, scipy centres the window differently per function:
    ``correlate2d`` pads (k-1)//2 before, ``convolve2d`` pads k//2 before (the flipped
    kernel moves its centre), and the 1-D ``correlate``/``convolve`` both pad k//2 before.
    """
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
    assert not isinstance(padding, str)
    return padding


# ----------------------------------------------------------------------------- sizes
def extents(dilation: tuple[int, ...], kernel: tuple[int, ...]) -> tuple[int, ...]:
    """The dilated kernel sizes, d (k - 1) + 1 per axis: the span one window reads."""
    return tuple(dl * (k - 1) + 1 for dl, k in zip(dilation, kernel))


def conv_output_size(name_in: str, size: int, pad: tuple[int, int], extent: int,
                     stride: int) -> int:
    """Output entries along one axis: 1 + (size + pads - extent) // stride, where extent
    is the dilated kernel size."""
    padded = size + pad[0] + pad[1]
    if padded < extent:
        raise ValueError(f"kernel (dilated extent {extent}) is larger than the padded "
                         f"{name_in} ({size} + padding {pad[0]}+{pad[1]} = {padded})")
    return (padded - extent) // stride + 1


def transposed_output_size(size: int, stride: int, pad: tuple[int, int], dilation: int,
                           kernel: int) -> int:
    """A transposed convolution's output entries along one axis before output_padding:
    the input size of the convolution it is the adjoint of."""
    return (size - 1) * stride - pad[0] - pad[1] + dilation * (kernel - 1) + 1


def pool_output_size(name: str, n: int, k: int, s: int, p: int, dl: int,
                     ceil_mode: bool) -> int:
    """Windows along one axis, as PyTorch's ``pooling_output_shape`` counts them: with
    ``ceil_mode`` the last window must start inside x or the padding before it."""
    (span,) = extents((dl,), (k,))
    top = n + 2 * p - span + ((s - 1) if ceil_mode else 0)
    o = top // s + 1                                 # floor division, as PyTorch's div_rtn
    if ceil_mode and (o - 1) * s >= n + p:
        o -= 1
    if o < 1:
        raise ValueError(f"the {name} window (size {k}, dilation {dl}) does not fit the "
                         f"input's {n} entries with padding {p}: the output would be empty")
    return o


def padded_index(n, before, after, mode):
    """For each entry of an axis of n entries padded by (before, after) in ``mode``, the
    entry it reads, or -1 for a constant (numpy.pad's index map, which is the engine's
    fold_index too). A negative pad crops."""
    from ._options import NUMPY_PAD_MODES
    b, a = max(before, 0), max(after, 0)
    if mode in ("zeros", "constant"):
        full = np.concatenate([np.full(b, -1), np.arange(n), np.full(a, -1)])
    else:
        full = np.pad(np.arange(n), (b, a), mode=NUMPY_PAD_MODES[mode])
    return full[b - before:len(full) - (a - after)]
