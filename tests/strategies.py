"""Hypothesis strategies the property-based tests share (dtypes, seeds, per-axis
geometry, padding in every form conv takes, connection tables, memory layouts), and the
rules a drawn case keeps: the window fits the padded input, 'same' only at stride 1,
reflect and circular padding no wider than the map."""

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st

from reference import padding_pairs, same_pairs

DTYPES = (np.float32, np.float64)
LAYOUTS = ("c", "fortran", "negative", "strided", "readonly")


def dtypes():
    return st.sampled_from(DTYPES)


def seeds(most=2**32 - 1):
    """A seed for numpy.random.default_rng."""
    return st.integers(0, most)


def per_axis(d, lo, hi):
    """A d-tuple of integers in [lo, hi]: a kernel size, stride, dilation or map size."""
    return st.tuples(*[st.integers(lo, hi)] * d)


def paddings(d, most, *, ints_per_axis=True, pairs=True):
    """padding as conv takes it, entries up to ``most``: 'valid', 'same' or 'full', one
    int, an int per axis (``ints_per_axis``) or a (before, after) pair per axis (``pairs``)."""
    forms = [st.sampled_from(["valid", "same", "full"]), st.integers(0, most)]
    if ints_per_axis:
        forms.append(per_axis(d, 0, most))
    if pairs:
        forms.append(st.tuples(*[per_axis(2, 0, most)] * d))
    return st.one_of(*forms)


@st.composite
def pool_windows(draw, d, *, kernel, stride, dilation):
    """A pooling window, axis by axis, each entry from 1 to the most given (padding: 0 to
    half the window): (kernel, stride, padding, dilation)."""
    k, s = draw(per_axis(d, 1, kernel)), draw(per_axis(d, 1, stride))
    p = draw(st.tuples(*[st.integers(0, kk // 2) for kk in k]))
    return k, s, p, draw(per_axis(d, 1, dilation))


@st.composite
def pool_cases(draw, *, kernel, stride, dilation, size):
    """A pooling call in 1 to 3 dimensions, map sizes from 1 to ``size``: (sizes, kernel,
    stride, padding, dilation, ceil_mode, count_include_pad)."""
    d = draw(st.integers(1, 3))
    k, s, p, dl = draw(pool_windows(d, kernel=kernel, stride=stride, dilation=dilation))
    return draw(per_axis(d, 1, size)), k, s, p, dl, draw(st.booleans()), draw(st.booleans())


def tables(c, cout):
    """A (C, Cout) connection table of any pattern (connecting nothing included)."""
    return st.lists(st.booleans(), min_size=c * cout, max_size=c * cout).map(
        lambda v: np.array(v, dtype=bool).reshape(c, cout))


def layouts():
    return st.sampled_from(LAYOUTS)


def in_layout(a, how):
    """a's values in one of LAYOUTS: C order, Fortran order, negative strides, a strided
    view, or read-only."""
    if how == "fortran":
        return np.asfortranarray(a)
    if how == "negative":
        return np.ascontiguousarray(a[..., ::-1])[..., ::-1]
    if how == "strided":
        return np.repeat(a, 2, axis=-1)[..., ::2]
    if how == "readonly":
        a = a.copy()
        a.flags.writeable = False
        return a
    return a


def fits(sizes, padding, kernel, dilation):
    """Whether the dilated window fits every padded axis (one output at least)."""
    pads = padding_pairs(padding, kernel, dilation, False)
    return all(n + sum(p) >= d * (k - 1) + 1
               for n, p, k, d in zip(sizes, pads, kernel, dilation))


def same_at_stride_one(padding, stride, kernel, dilation, flip):
    """'same' is for stride 1 (vecconv refuses it with a stride, as PyTorch does): with a
    stride, the pairs 'same' means at stride 1, given explicitly."""
    if padding == "same" and max(stride) > 1:
        return same_pairs(kernel, dilation, flip)
    return padding


def mode_fits(mode, pads, sizes):
    """Whether a padding mode can make these pads: reflect reads at most size - 1
    entries past an edge, circular at most size."""
    if mode == "circular":
        return all(max(p) <= n for p, n in zip(pads, sizes))
    if mode == "reflect":
        return all(max(p) < n for p, n in zip(pads, sizes))
    return True


@st.composite
def conv_windows(draw, d, *, kernel, dilation, stride, size, padding):
    """A convolution's window over its input, axis by axis, each entry from 1 to the most
    given: (kernel, dilation, stride, sizes, padding, flip), padding drawn from the
    strategy ``padding``. The window fits the padded input; 'same' with a stride is given
    as its pairs."""
    k, dil = draw(per_axis(d, 1, kernel)), draw(per_axis(d, 1, dilation))
    s = draw(per_axis(d, 1, stride))
    pad = draw(padding)
    sizes = draw(per_axis(d, 1, size))
    assume(fits(sizes, pad, k, dil))
    flip = draw(st.booleans())
    return k, dil, s, sizes, same_at_stride_one(pad, s, k, dil, flip), flip
