"""Options, validated once and without shapes: frozen records of a convolution (or its
transpose) and of a pooling.

A front end (a function, a layer, ``vecconv.torch``, ``vecconv.dask``) turns the user's
keywords into one of these records; every error here names the argument. What can only
be checked against shapes (a padding wider than an axis allows, a table of the wrong
size) is checked by the planner, ``_plan``, which takes these records and the shapes. So
a layer validates its options at construction without inventing an input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ._shapes import PADDING_NAMES, axis_names, padding_pairs
from ._validate import as_array, flag, int_tuple, integer, real

#: padding_mode -> the engine's code for what a tap in the padding reads (0: a constant,
#: zero or fill_value; 1 the mirror without the edge; 2 the edge; 3 the map wrapped round;
#: 4 the mirror with the edge)
PADDING_MODES = {"zeros": 0, "constant": 0, "reflect": 1, "replicate": 2, "circular": 3,
                 "symmetric": 4}

#: padding_mode -> numpy.pad's mode of the same padding (whose index map the engine's is)
NUMPY_PAD_MODES = {"zeros": "constant", "constant": "constant", "reflect": "reflect",
                   "replicate": "edge", "circular": "wrap", "symmetric": "symmetric"}
#: the algorithms a user may ask for (``algorithm=``); 'auto' lets the planner choose
ALGORITHMS = ("auto", "im2col", "fft", "winograd", "direct")
#: a transposed convolution's: it runs as a convolution's dx pass, which no FFT takes
TRANSPOSE_ALGORITHMS = ("auto", "im2col", "winograd", "direct")

Pads = tuple[tuple[int, int], ...]


@dataclass(frozen=True, eq=False)
class ConvOptions:
    """One convolution's options (ATen's ``ConvParams``): everything but the shapes.

    ``padding`` is a scipy.signal name ('valid', 'same', 'full') or d (before, after)
    pairs; ``connections`` a read-only (Cin, Cout) bool table or None. A transposed
    convolution has ``transposed`` set, its padding as crops of the full result, and
    ``output_padding``/``output_size``.
    """

    d: int
    stride: tuple[int, ...]
    padding: str | Pads
    dilation: tuple[int, ...]
    groups: int = 1
    connections: np.ndarray | None = None
    flip: bool = False
    padding_mode: str = "zeros"
    fill_value: float = 0.0
    transposed: bool = False
    output_padding: tuple[int, ...] = ()
    output_size: tuple[int, ...] | None = None
    algorithm: str = "auto"
    output_size_lead: tuple[int, ...] = ()     # (N, C) or (C,) given before output_size

    def key(self) -> tuple[Any, ...]:
        """A hashable value equal for equal options (plans are cached under it)."""
        table = None if self.connections is None else (
            self.connections.shape, np.packbits(self.connections).tobytes())
        return (self.d, self.stride, self.padding, self.dilation, self.groups, table,
                self.flip, self.padding_mode, self.fill_value, self.transposed,
                self.output_padding, self.output_size, self.algorithm,
                self.output_size_lead)


def connection_table(connections: object) -> np.ndarray:
    """A (Cin, Cout) table of True/False (or 0/1) as a read-only bool array."""
    table = as_array("connections", connections)
    if table.dtype.kind not in "biu":
        raise TypeError(f"connections must be a boolean (Cin, Cout) table, got dtype "
                        f"{table.dtype}")
    if table.ndim != 2:
        raise ValueError(f"connections must be a 2-D (Cin, Cout) table, got shape "
                         f"{table.shape}")
    if table.dtype.kind != "b" and not np.isin(table, (0, 1)).all():
        raise ValueError("connections must hold only True/False (or 0/1)")
    table = np.array(table, dtype=bool)          # a copy the caller cannot change
    table.flags.writeable = False
    return table


_SCALARS = frozenset({int, float, str, bool, type(None)})


def _tagged(value: object) -> object:
    """A hashable key that tells 1, True and 1.0 apart (a cache must not let a bool pass
    as an int), or None when the value cannot be a key."""
    t = type(value)
    if t in _SCALARS:
        return (t, value)
    if t is tuple or t is list:
        parts = tuple(_tagged(v) for v in value)   # type: ignore[attr-defined]
        return None if None in parts else (t, parts)
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return (t, value)
    return None


_CONV_OPTIONS: dict[object, ConvOptions] = {}


def conv_options(d: int, *, stride: object = 1, padding: object = 0, dilation: object = 1,
                 groups: object = 1, connections: object = None, flip: object = False,
                 padding_mode: object = "zeros", fill_value: object = 0.0,
                 algorithm: object = "auto") -> ConvOptions:
    """Validate a convolution's keywords for d spatial axes (the records of keywords seen
    before, without a connection table, are kept: a call's options cost a look-up)."""
    key = None
    if connections is None:
        key = _tagged((d, stride, padding, dilation, groups, flip, padding_mode, fill_value,
                       algorithm))
        if key is not None:
            found = _CONV_OPTIONS.get(key)
            if found is not None:
                return found
    options = _conv_options(d, stride, padding, dilation, groups, connections, flip,
                            padding_mode, fill_value, algorithm)
    if key is not None:
        if len(_CONV_OPTIONS) >= 256:
            _CONV_OPTIONS.clear()
        _CONV_OPTIONS[key] = options
    return options


def _conv_options(d, stride, padding, dilation, groups, connections, flip, padding_mode,
                  fill_value, algorithm):
    stride_t = int_tuple("stride", stride, d, 1)
    dilation_t = int_tuple("dilation", dilation, d, 1)
    pads: str | Pads
    if isinstance(padding, str):
        if padding not in PADDING_NAMES:
            raise ValueError(f"padding must be an int >= 0, a tuple of ints, or one of "
                             f"{PADDING_NAMES}, got {padding!r}")
        if padding == "same" and any(s > 1 for s in stride_t):
            raise ValueError(f"padding='same' needs stride 1 (as in PyTorch), got "
                             f"stride={stride!r}: give the padding as ints or (before, "
                             f"after) pairs for a strided convolution")
        pads = padding
    else:
        pads = padding_pairs(padding, d)
    groups_i = integer("groups", groups, 1)
    table = None
    if connections is not None:
        if groups_i != 1:
            raise ValueError("connections and groups cannot be combined: give groups=1 "
                             "with a connection table")
        table = connection_table(connections)
    if not isinstance(padding_mode, str) or padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {sorted(PADDING_MODES)}, got "
                         f"{padding_mode!r}")
    fill = real("fill_value", fill_value)
    if padding_mode != "constant" and fill != 0:
        raise ValueError(f"fill_value={fill} needs padding_mode='constant', got "
                         f"padding_mode={padding_mode!r}")
    if not isinstance(algorithm, str) or algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
    return ConvOptions(d, stride_t, pads, dilation_t, groups_i, table, flag("flip", flip),
                       padding_mode, fill, algorithm=algorithm)


def conv_transpose_options(d: int, *, stride: object = 1, padding: object = 0,
                           output_padding: object = 0, dilation: object = 1,
                           groups: object = 1, output_size: object = None,
                           algorithm: object = "auto") -> ConvOptions:
    """Validate a transposed convolution's keywords for d spatial axes."""
    if not isinstance(algorithm, str) or algorithm not in TRANSPOSE_ALGORITHMS:
        raise ValueError(f"algorithm must be one of {TRANSPOSE_ALGORITHMS} for a transposed "
                         f"convolution, got {algorithm!r}")
    stride_t = int_tuple("stride", stride, d, 1)
    dilation_t = int_tuple("dilation", dilation, d, 1)
    if isinstance(padding, str):
        raise TypeError("padding of a transposed convolution is an int, d ints or d "
                        f"(before, after) pairs (they crop the full result), got {padding!r}")
    pads = padding_pairs(padding, d)
    groups_i = integer("groups", groups, 1)
    out_pad = int_tuple("output_padding", output_padding, d, 0)
    size = None
    lead: tuple[int, ...] = ()
    if output_size is not None:
        if any(out_pad):
            raise ValueError("give output_size or output_padding, not both")
        # d sizes, or PyTorch's longer forms: (C, *d) for an unbatched input, (N, C, *d);
        # the leading entries are checked against the output when the shapes are known
        if isinstance(output_size, (tuple, list)) and len(output_size) in (d + 1, d + 2):
            lead = tuple(integer("output_size", v, 0) for v in output_size[:-d])
            output_size = tuple(output_size)[-d:]
        size = int_tuple("output_size", output_size, d, 1)
    else:
        for a, (op, s, dl) in enumerate(zip(out_pad, stride_t, dilation_t)):
            if op >= max(s, dl):
                raise ValueError(f"output_padding must be below max(stride, dilation) = "
                                 f"{max(s, dl)} along axis {axis_names(d)[a]}, got {op}")
    return ConvOptions(d, stride_t, pads, dilation_t, groups_i, transposed=True,
                       output_padding=out_pad, output_size=size, output_size_lead=lead,
                       algorithm=algorithm)


# ----------------------------------------------------------------------------- pooling
@dataclass(frozen=True)
class PoolOptions:
    """One pooling's options over d spatial axes (``divisor`` 0: no divisor_override)."""

    d: int
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    ceil_mode: bool = False
    count_include_pad: bool = True
    divisor: float = 0.0


def pool_options(d: int, kernel_size: object, *, stride: object = None, padding: object = 0,
                 dilation: object = 1, ceil_mode: object = False,
                 count_include_pad: object = True,
                 divisor_override: object = None) -> PoolOptions:
    """Validate a pooling's keywords for d spatial axes (PyTorch's rules: the stride
    defaults to the window, the padding is at most half the window)."""
    k = int_tuple("kernel_size", kernel_size, d, 1)
    s = k if stride is None else int_tuple("stride", stride, d, 1)
    p = int_tuple("padding", padding, d, 0)
    dl = int_tuple("dilation", dilation, d, 1)
    for a in range(d):
        if 2 * p[a] > k[a]:
            raise ValueError(f"padding must be at most half the window: padding {p[a]} for a "
                             f"window of {k[a]} (kernel_size={k}, padding={p})")
    divisor = 0.0
    if divisor_override is not None:
        v = integer("divisor_override", divisor_override, -2**62)
        if v == 0:
            raise ValueError("divisor_override must be a nonzero int, got 0")
        divisor = float(v)
    return PoolOptions(d, k, s, p, dl, flag("ceil_mode", ceil_mode),
                       flag("count_include_pad", count_include_pad), divisor)
