"""Planning: everything the engine needs about one convolution, decided once.

``make_plan`` validates shapes and options and returns a :class:`Plan`: the geometry
(a :class:`Geometry`, mirrored field by field by the engine's ``Geom`` struct), how the
work is cut into units for the thread pool (a :class:`Schedule`) and how many threads
run it. ``forward``/``backward`` hand clean arrays and the plan to ``vecconv._engine``,
which only executes. ``vecconv._conv`` (the public functions), ``vecconv.nn`` and the
benchmark all plan through here.

How the work is cut does not depend on the thread count, so the result is bit-for-bit
the same with 1 or n threads: every unit sums its terms in the same order, and the dW
chunks are added up in a fixed order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from . import _engine
from ._threads import env_int, get_num_threads
from ._args import (INT32_MAX, as_array, check_ndim, int_tuple, integer, output_size,
                    resolve_padding)

# ----------------------------------------------------------------------------- constants
#: The column buffer of one tile is written by im2col and read back by the GEMM right
#: after: sized to stay in cache between the two (measured on this machine, see bench/).
TILE_BYTES = env_int("VECCONV_TILE_BYTES", 4 * 2**20)
#: Units a job is cut into at least, when the shapes allow: enough for the caller to
#: share with a worker, and for a worker that is late (busy machine) to cost little.
MIN_UNITS = 8
#: Column elements per round of a job; Ctrl-C is honoured between rounds.
ROUND_ELEMS = 1 << 24
#: Tiles with fewer output positions per image than this stage dY/Y as one matrix and
#: make one GEMM for the whole tile (LeNet-5's C5 has one position per image).
STAGE_BELOW = env_int("VECCONV_STAGE_BELOW", 64, 0)
#: ... and so do convolutions with this many output maps per group or fewer, whose
#: per-image GEMM is too skinny to run well (LeNet-5's C1: 6 maps; measured with
#: bench/bench.py, C1 forward+backward 3.0 -> 1.6 ms in float32, 2.8 -> 2.0 in float64,
#: while MNIST-like's 32 maps ran slower staged).
STAGE_COUT = 8
#: Columns (images x positions) a staged tile has at least, when the batch allows.
STAGE_WIDTH = env_int("VECCONV_STAGE_WIDTH", 32)
#: At most this many dW accumulators (chunks of a round, each summed by one unit).
MAX_ACCUMULATORS = 8
#: Below this many floating-point operations a pass runs in the calling thread alone:
#: waking a worker costs more than it saves. Measured with bench/grain.py on 2 cores:
#: LeNet-sized forward+backward ran 0.54-0.80x as fast on 2 threads at 1-2 MFLOP per
#: pass, 1.06-1.11x at ~3.8 MFLOP, 1.42x at 15 MFLOP; beside two busy processes 0.89-1.03x.
GRAIN_FLOPS = env_int("VECCONV_GRAIN_FLOPS", 4_000_000, 0)

_DEFAULT_WORKSPACE = 64 * 2**20
_workspace = _DEFAULT_WORKSPACE


def set_workspace(nbytes: int) -> int:
    """Set the default workspace budget (bytes) for the column buffers; returns the old one.

    The convolution is computed in tiles (groups of images, or bands of output positions
    of one image) whose column buffers, one per thread, stay within the budget. Within it
    the engine picks tiles of about 4 MiB, which stay in cache between im2col and the
    GEMM that reads them. The budget is exceeded only when a single output position's
    column is larger than it.

    Parameters
    ----------
    nbytes : int
        The new budget in bytes, at least 1. A call's ``workspace=`` overrides it for that
        call.

    Returns
    -------
    old : int
        The budget before this call.
    """
    global _workspace
    old = _workspace
    _workspace = integer("nbytes", nbytes, 1)
    return old


def get_workspace() -> int:
    """The default workspace budget of the column buffers.

    Returns
    -------
    nbytes : int
        The budget in bytes (64 MiB unless ``set_workspace`` changed it).
    """
    return _workspace


# ----------------------------------------------------------------------------- records
class Geometry(NamedTuple):
    """One convolution's geometry over three spatial axes (D, H, W); 1-D and 2-D
    convolutions have leading axes of size 1. The engine's ``Geom`` struct has the same
    fields."""

    channels: int       # input channels C
    size: tuple         # input size per axis
    kernel: tuple       # kernel size per axis
    stride: tuple
    dilation: tuple
    pad: tuple          # padding before each axis (after is implied by out)
    out: tuple          # output size per axis
    mode: int = 0       # PADDING_MODES[padding_mode]: how a tap in the padding reads
    fill: float = 0.0   # the value of a constant pad

    @property
    def taps(self):
        return math.prod(self.kernel)

    @property
    def positions(self):
        return math.prod(self.out)


class Schedule(NamedTuple):
    """How a convolution's work is cut into units (read by name by the engine)."""

    pointwise: bool      # 1x1 kernel, stride 1, no padding: the GEMMs read x itself
    staged: bool         # tiny maps or <= STAGE_COUT maps per group: one GEMM per tile
                         # over a staged (Cout, positions) matrix
    tile_images: int     # whole images per tile, or 0: tiles are bands of one image
    tile_positions: int  # output positions per band (tile_images == 0)
    n_tiles: int
    round_tiles: int     # tiles per round (forward and dW)
    n_acc: int           # dW chunks per round, each with its own accumulator
    dx_images: int       # whole images per dx piece, or 0: spans of one image
    dx_span: int         # output positions per dx piece (dx_images == 0)
    dx_cblock: int       # input channels per dx unit (within a group)
    dx_pieces: int
    dx_round: int        # dx pieces per round
    buf_elems: int       # elements of one column buffer
    max_slots: int       # column buffers the workspace budget allows (one per thread)


@dataclass(frozen=True)
class Plan:
    """Everything the engine needs about one convolution, derived once from the shapes."""

    dtype: np.dtype
    x_shape: tuple        # (N, C, *spatial) as given
    w_shape: tuple        # (Cout, C/groups, *kernel) as given
    out_shape: tuple      # (N, Cout, *out)
    geometry: Geometry
    groups: int
    flip: bool
    mask: np.ndarray | None   # (Cout, Cin) bool, the connection table; None: all connected
    schedule: Schedule

    def threads(self):
        """Threads for one pass of this plan, decided when it runs (the setting may have
        changed since the plan was made)."""
        return threads_for(self.flops)

    def slots(self, threads):
        """Column buffers for a pass on ``threads`` threads: one each, within the budget."""
        return max(1, min(threads, self.schedule.max_slots))

    def work_bytes(self, backward=False, need_dx=True, need_dw=True):
        """Bytes one pass allocates besides its inputs: the output (or dx), the column
        buffers (one per thread), the weight matrix, and backward's dW accumulators and
        the gradient copies made from them."""
        item = self.dtype.itemsize
        s = self.schedule
        w_elems = math.prod(self.w_shape)
        total = self.slots(self.threads()) * s.buf_elems + w_elems   # buffers, weight copy
        if not backward:
            total += math.prod(self.out_shape)                     # y
        else:
            if need_dx:
                total += math.prod(self.x_shape)                   # dx
            if need_dw:
                total += (s.n_acc + 2) * w_elems                   # accumulators, dW copies
        return total * item

    @property
    def flops(self):
        """Floating-point operations of one pass (forward, dW or dx)."""
        n, cout = self.out_shape[:2]
        return 2 * n * cout * (self.geometry.channels // self.groups) * self.geometry.taps \
            * self.geometry.positions


# ----------------------------------------------------------------------------- planning
#: padding_mode -> the engine's mode (0: a constant, 0 or fill_value)
PADDING_MODES = {"zeros": 0, "constant": 0, "reflect": 1, "replicate": 2, "circular": 3,
                 "symmetric": 4}


def _padding_mode(padding_mode, fill_value, pads, sizes, names):
    """The engine's (mode, fill) for a padding_mode, with PyTorch's limits: 'reflect'
    needs each pad below the axis length, 'circular' at most the axis length."""
    if not isinstance(padding_mode, str) or padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {sorted(PADDING_MODES)}, got "
                         f"{padding_mode!r}")
    if isinstance(fill_value, (bool, np.bool_)) or not isinstance(fill_value, (int, float, np.number)) \
            or isinstance(fill_value, complex) or np.iscomplexobj(fill_value):
        raise TypeError(f"fill_value must be a real number, got {fill_value!r}")
    fill_value = float(fill_value)
    if padding_mode != "constant" and fill_value != 0:
        raise ValueError(f"fill_value={fill_value} needs padding_mode='constant', got "
                         f"padding_mode={padding_mode!r}")
    for name, size, (before, after) in zip(names, sizes, pads):
        if size == 0 and before + after > 0 and padding_mode not in ("zeros", "constant"):
            raise ValueError(f"padding_mode={padding_mode!r} needs a non-empty input to pad "
                             f"from: axis {name} has size 0")
        if padding_mode == "reflect" and max(before, after) >= size:
            raise ValueError(f"padding_mode='reflect' needs padding below the input size: "
                             f"axis {name} has {size}, padding ({before}, {after})")
        if padding_mode == "circular" and max(before, after) > size:
            raise ValueError(f"padding_mode='circular' needs padding at most the input size: "
                             f"axis {name} has {size}, padding ({before}, {after})")
    return PADDING_MODES[padding_mode], fill_value


#: spatial axes d -> (layout of x, layout of w, names of the axes in messages)
LAYOUTS = {1: ("(N, C, L)", "(Cout, Cin/groups, k)", ("L",)),
           2: ("(N, C, H, W)", "(Cout, Cin/groups, kh, kw)", ("H", "W")),
           3: ("(N, C, D, H, W)", "(Cout, Cin/groups, kd, kh, kw)", ("D", "H", "W"))}


def _connection_mask(connections, cin, cout, groups):
    if connections is None:
        return None
    if groups != 1:
        raise ValueError("connections and groups cannot be combined: give groups=1 with a "
                         "connection table")
    table = as_array("connections", connections)
    if table.dtype.kind not in "biu":
        raise TypeError(f"connections must be a boolean (Cin, Cout) table, got dtype {table.dtype}")
    if table.shape != (cin, cout):
        raise ValueError(f"connections must have shape (Cin, Cout) = ({cin}, {cout}), "
                         f"got {table.shape}")
    if table.dtype.kind != "b" and not np.isin(table, (0, 1)).all():
        raise ValueError("connections must hold only True/False (or 0/1)")
    return np.ascontiguousarray(table.astype(bool).T)   # (Cout, Cin)


def pool_threads(flops):
    """Threads for ``flops`` operations of work without GEMMs: the setting, or 1 when the
    work is too small to repay waking a worker."""
    n = get_num_threads()
    if n <= 1 or flops < GRAIN_FLOPS or not _engine.have_threads():
        return 1
    return n


def threads_for(flops):
    """Threads for a convolution pass: as pool_threads, and 1 when the GEMMs cannot be
    held to one thread each (no private BLAS: SciPy's BLAS then parallelises them)."""
    threads = pool_threads(flops)      # first: it reads the setting (threadpoolctl hook)
    return threads if _engine.private_blas() else 1


def _ceil_div(a, b):
    return -(-a // b)


def make_schedule(n, geometry, cout, groups, itemsize, workspace):
    """Cut one convolution into tiles, dW chunks and dx pieces (see :class:`Schedule`)."""
    g = geometry
    c, taps, P = g.channels, g.taps, g.positions
    cig = c // groups
    pointwise = (taps == 1 and g.stride == (1, 1, 1) and g.pad == (0, 0, 0)
                 and g.out == g.size)
    k_rows = c * taps
    budget = max(min(workspace, TILE_BYTES) // itemsize, 1)           # elements
    per_image = k_rows * P
    staged = False
    if n >= MIN_UNITS and per_image <= budget:
        # whole images per tile, at least MIN_UNITS tiles
        staged = not pointwise and (P < STAGE_BELOW or cout // groups <= STAGE_COUT)
        rows = k_rows + (cout if staged else 0)
        # a staged tile is one GEMM: wide enough (STAGE_WIDTH columns) to run well, even
        # if that leaves fewer than MIN_UNITS tiles
        floor = _ceil_div(STAGE_WIDTH, P) if staged else 1
        tile_images = max(1, min(budget // (rows * P), max(_ceil_div(n, MIN_UNITS), floor),
                                 n, INT32_MAX // max(P, 1)))
        staged = staged and tile_images > 1
        tile_positions = P
        n_tiles = _ceil_div(n, tile_images)
        buf_elems = (k_rows + (cout if staged else 0)) * tile_images * P
    else:
        # bands of output positions: within budget, and MIN_UNITS bands in all
        tile_images = 0
        bands = max(_ceil_div(per_image, budget), _ceil_div(MIN_UNITS, max(n, 1)))
        tile_positions = max(1, min(P, _ceil_div(P, bands), max(budget // k_rows, 1)))
        n_tiles = n * _ceil_div(P, tile_positions)
        buf_elems = k_rows * tile_positions
    if pointwise:
        buf_elems = 0
    tile_elems = max(k_rows * (tile_images * P if tile_images else tile_positions), 1)
    round_tiles = max(1, ROUND_ELEMS // tile_elems)
    dw_bytes = cout * cig * taps * itemsize
    n_acc = max(1, min(MAX_ACCUMULATORS, n_tiles, workspace // max(dw_bytes, 1)))
    # dx: pieces own (images, positions, channel block) of dx; two pieces of one round
    # never share an element
    if tile_images or n >= MIN_UNITS:
        dx_images = tile_images or 1
        dx_span = P
        dx_pieces = _ceil_div(n, dx_images)
        dx_round = max(1, ROUND_ELEMS // max(k_rows * P * dx_images, 1))
        # MIN_UNITS units in each round: split channels when a round has few pieces
        blocks = _ceil_div(MIN_UNITS, min(dx_round, dx_pieces) * groups)
    else:
        # a few large images: spans of one image, one span per round, split by channels
        dx_images = 0
        dx_span = tile_positions * max(1, ROUND_ELEMS // max(k_rows * tile_positions, 1))
        dx_span = min(dx_span, P)
        dx_pieces = n * _ceil_div(P, dx_span)
        dx_round = 1
        blocks = _ceil_div(MIN_UNITS, groups)
    dx_cblock = max(1, _ceil_div(cig, max(blocks, 1)))
    buf_bytes = buf_elems * itemsize
    max_slots = 1 << 20 if buf_bytes == 0 else max(1, workspace // buf_bytes)
    return Schedule(pointwise, staged, tile_images, tile_positions, n_tiles, round_tiles,
                    n_acc, dx_images, dx_span, dx_cblock, dx_pieces, dx_round, buf_elems,
                    max_slots)


def make_plan(x_shape, w_shape, bias_shape, *, dtype, stride, padding, dilation, groups,
              connections, flip, workspace, spatial, padding_mode="zeros", fill_value=0.0):
    """Validate the shapes and options of one convolution and derive its Plan.

    ``spatial`` is the number of spatial axes d: x is (N, C, *d axes), w (Cout, C/groups,
    *d kernel sizes).
    """
    layout, wlayout, names = LAYOUTS[spatial]
    check_ndim("x", x_shape, spatial + 2, layout)
    check_ndim("w", w_shape, spatial + 2, wlayout)
    if not isinstance(flip, (bool, np.bool_)):
        raise TypeError(f"flip must be True or False, got {flip!r}")
    flip = bool(flip)
    groups = integer("groups", groups, 1)
    x_shape, w_shape = tuple(x_shape), tuple(w_shape)
    n, c = x_shape[:2]
    cout, cin_g = w_shape[:2]
    ksize = w_shape[2:]
    if c == 0:
        raise ValueError(f"x must have at least one channel, got shape {x_shape}")
    if cout == 0 or cin_g == 0 or 0 in ksize:
        raise ValueError(f"w must have non-zero sizes {wlayout}, got shape {w_shape}")
    if c % groups or cout % groups:
        raise ValueError(f"groups={groups} must divide the input channels ({c}) and the "
                         f"output channels ({cout})")
    if cin_g * groups != c:
        raise ValueError(f"w has {cin_g} input channels per group but x has {c} channels "
                         f"and groups={groups}: expected w.shape[1] == {c // groups}")
    if bias_shape is not None:
        check_ndim("bias", bias_shape, 1, "(Cout,)")
        if bias_shape[0] != cout:
            raise ValueError(f"bias must have shape ({cout},) to match w, got {bias_shape}")
    stride = int_tuple("stride", stride, spatial, 1)
    dilation = int_tuple("dilation", dilation, spatial, 1)
    extents = tuple(d * (k - 1) + 1 for d, k in zip(dilation, ksize))
    # 'same' follows the scipy function of the same rank: correlate2d centres even kernels
    # differently from convolve2d; the 1-D and N-d correlate/convolve both pad k//2 before
    pads = resolve_padding(padding, extents, flip, signal_1d=(spatial != 2))
    out_sp = tuple(output_size(f"input {nm}", s, p, e, st) for nm, s, p, e, st in
                   zip(names, x_shape[2:], pads, extents, stride))
    if workspace is None:
        workspace = _workspace
    workspace = integer("workspace", workspace, 1)
    lead = (1,) * (3 - spatial)
    # a stride along an axis of one output, or a dilation of a one-tap kernel, changes
    # nothing: give the engine 1 there (the values may be as large as INDEX_MAX)
    stride = tuple(st if o > 1 else 1 for st, o in zip(stride, out_sp))
    dilation = tuple(d if k > 1 else 1 for d, k in zip(dilation, ksize))
    mode, fill = _padding_mode(padding_mode, fill_value, pads, x_shape[2:], names)
    geometry = Geometry(c, lead + tuple(x_shape[2:]), lead + tuple(ksize), lead + stride,
                        lead + dilation, (0,) * (3 - spatial) + tuple(p[0] for p in pads),
                        lead + out_sp, mode, fill)
    k_rows = c * geometry.taps
    for what, size in (("an output map", geometry.positions),
                       ("an input map", math.prod(geometry.size)),
                       ("a kernel column (C*taps)", k_rows), ("the channel count", cout)):
        if size > INT32_MAX:
            raise ValueError(f"{what} has {size} elements, more than the 2**31-1 a BLAS "
                             "dimension can hold")
    mask = _connection_mask(connections, c, cout, groups)
    out_shape = (n, cout) + out_sp
    schedule = make_schedule(n, geometry, cout, groups, dtype.itemsize, workspace)
    return Plan(dtype, x_shape, w_shape, out_shape, geometry, groups, flip, mask, schedule)


# ----------------------------------------------------------------------------- weights
def _per_tap(mask, ndim):
    return mask.reshape(mask.shape + (1,) * (ndim - 2))


def _flipped(w):
    return w[(slice(None), slice(None)) + (slice(None, None, -1),) * (w.ndim - 2)]


def effective_weight(w, plan):
    """The (Cout, C/groups*taps) matrix the GEMMs use: flipped, masked, contiguous.

    The rows are vec of each kernel read in C order, to match the column buffer. Kernels
    of pairs the connection table leaves out are exactly 0, whatever they hold (selected
    away, not multiplied by 0: NaN * 0 is NaN).
    """
    w = np.asarray(w).reshape(plan.w_shape)
    if plan.flip:
        w = _flipped(w)                                    # J k J (eq. 14)
    if plan.mask is not None:
        w = np.where(_per_tap(plan.mask, w.ndim), w, 0)
    return np.ascontiguousarray(w, dtype=plan.dtype).reshape(plan.w_shape[0], -1)


def weight_gradient(dw2, plan):
    """The kernel gradient in the layout of w from the engine's (Cout, K) matrix; exactly
    0 for pairs the connection table leaves out."""
    dw = dw2.reshape(plan.w_shape)
    if plan.flip:
        dw = _flipped(dw)
    if plan.mask is not None:
        dw = np.where(_per_tap(plan.mask, dw.ndim), dw, 0)
    return np.ascontiguousarray(dw, dtype=plan.dtype)


def _partial_table(plan):
    """A table that leaves pairs out, where a non-finite value could reach them through
    the one dense product (0 * inf is NaN): x, dy, or a non-finite constant pad."""
    return plan.mask is not None and not plan.mask.all()


def _all_finite(*arrays, fill=0.0):
    return math.isfinite(fill) and all(a is None or np.isfinite(a).all() for a in arrays)


def _map_plan(plan, inputs):
    """The plan of one output map reading only ``inputs`` of the input maps."""
    n = plan.x_shape[0]
    geometry = plan.geometry._replace(channels=len(inputs))
    x_shape = (n, len(inputs)) + plan.x_shape[2:]
    w_shape = (1, len(inputs)) + plan.w_shape[2:]
    schedule = make_schedule(n, geometry, 1, 1, plan.dtype.itemsize, _workspace)
    return Plan(plan.dtype, x_shape, w_shape, (n, 1) + plan.out_shape[2:], geometry, 1,
                False, None, schedule)


def _by_output_map(plan, w2):
    """(j, the input maps j reads, its plan, its (1, |M_j|*taps) weight) for each map j.

    This is eq. 1 literally, z_j = sum over i in M_j of x_i * k_ij: only the connected
    pairs take part in any arithmetic. The engine takes this way when a NaN or inf is
    present (the one dense product with zeroed kernels would turn 0 * inf into NaN in the
    outputs and gradients of unconnected pairs)."""
    taps = plan.geometry.taps
    for j in range(plan.out_shape[1]):
        inputs = np.flatnonzero(plan.mask[j])
        if inputs.size:
            wj = w2[j].reshape(-1, taps)[inputs].reshape(1, -1)
            yield j, inputs, _map_plan(plan, inputs), np.ascontiguousarray(wj)


# ----------------------------------------------------------------------------- execution
def _flat(a):
    return a.reshape(-1)


def _engine_args(plan):
    n, cout = plan.out_shape[:2]
    threads = plan.threads()
    return plan.geometry, plan.schedule, n, cout, plan.groups, threads, plan.slots(threads)


def forward(x, w2, bias, plan):
    """The engine's forward pass on clean arrays (x, w2 and bias contiguous in plan.dtype)."""
    if _partial_table(plan) and not _all_finite(x, fill=plan.geometry.fill):
        y = np.zeros(plan.out_shape, dtype=plan.dtype)
        if bias is not None:            # a map that reads no input is its bias
            y[:] = bias.reshape((1, -1) + (1,) * (y.ndim - 2))
        for j, inputs, sub, wj in _by_output_map(plan, w2):
            y[:, j:j + 1] = forward(np.ascontiguousarray(x[:, inputs]), wj,
                                    None if bias is None else bias[j:j + 1], sub)
        return y
    y = np.empty(plan.out_shape, dtype=plan.dtype)
    b = bias if bias is not None else np.empty(0, dtype=plan.dtype)
    _engine.conv_forward(_flat(x), _flat(w2), b, _flat(y), bias is not None,
                         *_engine_args(plan))
    return y


def backward(dy, x, w2, plan, need_dx=True, need_dw=True):
    """The engine's backward pass: (dx shaped like x, or None; dw2 (Cout, K), or None)."""
    dt = plan.dtype
    if _partial_table(plan) and not _all_finite(x, dy, fill=plan.geometry.fill):
        dx = np.zeros(plan.x_shape, dtype=dt) if need_dx else None
        dw2 = np.zeros((plan.w_shape[0], math.prod(plan.w_shape[1:])), dtype=dt) if need_dw else None
        taps = plan.geometry.taps
        for j, inputs, sub, wj in _by_output_map(plan, w2):
            dxj, dwj = backward(np.ascontiguousarray(dy[:, j:j + 1]),
                                np.ascontiguousarray(x[:, inputs]), wj, sub, need_dx, need_dw)
            if need_dx:
                dx[:, inputs] += dxj
            if need_dw:
                dw2[j].reshape(-1, taps)[inputs] = dwj.reshape(-1, taps)
        return dx, dw2
    empty = np.empty(0, dtype=dt)
    if x is None:                       # the dx pass alone needs no x (conv_transpose)
        x, need_dw = empty, False
    dx = np.zeros(plan.x_shape, dtype=dt) if need_dx else None
    k = math.prod(plan.w_shape[1:])
    n_acc = plan.schedule.n_acc
    acc = np.zeros((n_acc, plan.w_shape[0], k), dtype=dt) if need_dw else None
    _engine.conv_backward(_flat(dy), _flat(x), _flat(w2),
                          _flat(dx) if need_dx else empty, _flat(acc) if need_dw else empty,
                          need_dx, need_dw, *_engine_args(plan))
    dw2 = None
    if need_dw:
        dw2 = acc[0]
        for i in range(1, n_acc):       # a fixed order: the same bits with any thread count
            dw2 += acc[i]
    return dx, dw2
