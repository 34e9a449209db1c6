"""The direct route: convolutions with one input map per group (depthwise: groups equal
to the input channels, MobileNet's 3 x 3 layers, any channel multiplier), where im2col
would make a GEMM of one row per group and channel.

Eq. 1 literally, map by map (the kernels in ``_direct.h``): each output row is the sum
over the taps of w[tap] times a shifted row of the padded input map; dx (eq. 16-18) the
same windows walked backwards into a padded map folded back through the padding; dW
(eq. 12) per tap the sum of delta times the shifted input. Each output is computed from
its window alone, as im2col computes it: a NaN or inf stays where it is read.
"""

from __future__ import annotations

import numpy as np

from . import _engine
from ._shapes import padded_index

#: the passes, as the engine numbers them
FORWARD, DX, DW = 0, 1, 2


#: 'auto' takes the route for groups of at most this many input maps (1: depthwise)
AUTO_CHANNELS = 1


def eligible(channels, groups, masked, most=None):
    """Whether a convolution can take the route: groups (more than one) of at most
    ``most`` input maps (None: any)."""
    return groups > 1 and not masked and (most is None or channels // groups <= most)


def tables(geometry, mode):
    """Per axis: the entry of x each position of the padded extent the outputs read."""
    g = geometry
    out = []
    for n, o, k, s, d, p in zip(g.size, g.out, g.kernel, g.stride, g.dilation, g.pad):
        count = (o - 1) * s + (k - 1) * d + 1
        out.append(np.ascontiguousarray(padded_index(n, p, count - n - p, mode),
                                        dtype=np.int64))
    return tuple(out)


def scratch_elems(geometry):
    """Elements of one unit's scratch: the padded map and dW's partial sums."""
    g = geometry
    padded = 1
    for o, k, s, d in zip(g.out, g.kernel, g.stride, g.dilation):
        padded *= (o - 1) * s + (k - 1) * d + 1
    return padded + g.taps * g.out[2]


def run(pass_, a, w2, b, out, has_bias, plan, threads):
    """One pass on the route: forward (a = x, b = bias, out = y), dx (a = dy, out = dx) or
    dW (a = x, b = dy, out = dW (Cout, taps)); flat clean arrays of plan.dtype."""
    g = plan.geometry
    slots = max(1, min(threads, plan.workspace // max(
        scratch_elems(g) * plan.dtype.itemsize, 1)))
    _engine.direct_conv(pass_, a, w2.reshape(-1), b, out, has_bias, g,
                        tables(g, plan.options.padding_mode), plan.out_shape[0],
                        plan.w_shape[0], plan.groups, threads, slots)
