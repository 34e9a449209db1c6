"""The direct route: convolutions with one input map per group (depthwise: groups equal
to the input channels, MobileNet's 3 x 3 layers, any channel multiplier), where im2col
would make a GEMM of one row per group and channel.

Eq. 1 literally, map by map (the kernels in ``_direct.h``): each output row is the sum
over the taps of w[tap] times a shifted row of the padded input map; dx (eq. 16-18) the
same windows walked backwards into a padded map folded back through the padding; dW
(eq. 12) per tap the sum of delta times the shifted input. Each output is computed from
its window alone, as im2col computes it: a NaN or inf stays where it is read (a stride-1
dx pass gathers from a zero-sided copy of dy only for maps whose weights are finite).
"""

from __future__ import annotations

import math

import numpy as np

from . import _engine
from ._shapes import extents, padded_index

#: the passes, as the engine numbers them
FORWARD, DX, DW = 0, 1, 2


#: 'auto' takes the route for groups of at most this many input maps (1: depthwise)
AUTO_CHANNELS = 1


def eligible(channels, groups, masked, most=None):
    """Whether a convolution can take the route: groups (more than one, no connection
    table) of at most ``most`` input maps (None: any)."""
    return groups > 1 and not masked and (most is None or channels // groups <= most)


def padded_extent(geometry):
    """Per axis: the entries of the padded input the outputs read, (o - 1) s + extent."""
    g = geometry
    return tuple((o - 1) * s + e for o, s, e in
                 zip(g.out, g.stride, extents(g.dilation, g.kernel)))


def tables(geometry, mode):
    """Per axis: the entry of x each position of the padded extent reads (-1: the fill)."""
    g = geometry
    return tuple(np.ascontiguousarray(padded_index(n, p, count - n - p, mode), dtype=np.int64)
                 for n, p, count in zip(g.size, g.pad, padded_extent(g)))


def _base_elems(geometry):
    """A unit's padded map and dW's partial sums (taps rows of output columns)."""
    g = geometry
    return math.prod(padded_extent(g)) + g.taps * g.out[2]


def _gather_elems(geometry):
    """dx's copy of one map of dy with (k - 1) * dilation zeros each side of its rows, for
    the gathered dx of a stride-1 layer (none at other strides)."""
    g = geometry
    if g.stride != (1, 1, 1):
        return 0
    return g.out[0] * g.out[1] * (g.out[2] + 2 * (g.kernel[2] - 1) * g.dilation[2])


def table_bytes(geometry):
    """The padding's index tables (an int64 per padded position of each axis) and the
    temporaries that make them: held beside the scratch for the whole pass."""
    return 16 * sum(padded_extent(geometry))


def _gathers(geometry, itemsize, workspace):
    """Whether a stride-1 dx pass may gather (its copy of dy fits the workspace beside the
    padded map); else it scatters into the padded map, in the base scratch."""
    extra = _gather_elems(geometry)
    return extra > 0 and ((_base_elems(geometry) + extra) * itemsize
                          + table_bytes(geometry) <= workspace)


def scratch_elems(geometry, pass_=FORWARD, itemsize=1, workspace=0):
    """Elements of one unit's scratch for ``pass_``: the padded map and dW's partial
    sums, and for a dx pass that gathers, the copy of dy (at most: a weight that is not
    finite makes it scatter)."""
    elems = _base_elems(geometry)
    if pass_ == DX and _gathers(geometry, itemsize, workspace):
        elems += _gather_elems(geometry)
    return elems


def fits(geometry, itemsize, workspace):
    """Whether one unit's scratch and the padding's tables fit the workspace (every pass
    can run in the base scratch)."""
    return _base_elems(geometry) * itemsize + table_bytes(geometry) <= workspace


def slots(geometry, itemsize, workspace, threads, pass_=FORWARD):
    """Participants the workspace has a scratch for (at least 1: the planner took the
    route only if one fits)."""
    elems = scratch_elems(geometry, pass_, itemsize, workspace)
    room = workspace - table_bytes(geometry)
    return max(1, min(threads, room // max(elems * itemsize, 1)))


def run(pass_, a, w2, b, out, has_bias, plan, threads):
    """One pass on the route: forward (a = x, b = bias, out = y), dx (a = dy, out = dx) or
    dW (a = x, b = dy, out = dW (Cout, C/groups * taps)); flat clean arrays of
    plan.dtype.

    A stride-1 dx pass gathers each padded row from a copy of dy with zero sides, which a
    weight that is not finite would spread (inf * 0) to positions its tap never reaches:
    an input map whose weights are not all finite scatters instead, as im2col does (the
    engine decides per map, so one group's weights change no other group's bits)."""
    g = plan.geometry
    itemsize, workspace = plan.dtype.itemsize, plan.workspace
    gather = pass_ == DX and _gathers(g, itemsize, workspace)
    elems = _base_elems(g) + (_gather_elems(g) if gather else 0)
    n_slots = slots(g, itemsize, workspace, threads, pass_)
    _engine.direct_conv(pass_, a, w2.reshape(-1), b, out, has_bias, g,
                        tables(g, plan.options.padding_mode), plan.out_shape[0],
                        plan.w_shape[0], plan.groups, threads, n_slots, gather, elems)
