"""Planning: everything the engine needs about one convolution, decided once.

``plan_conv`` takes the shapes, the dtype, a validated :class:`~vecconv._options.ConvOptions`
and the workspace budget, and returns a :class:`Plan`: the geometry (a :class:`Geometry`,
which the engine reads as its ``Geom`` struct), **the route** (a :class:`Route`, chosen by
one function, :func:`select_route`), how the work is cut into units for the thread pool
(a :class:`Schedule`), and the memory a pass needs. Geometry and Schedule are declared
once, in ``_engine.pxd``: the kernels read the same objects' typed fields. ``_run``
executes plans; every front end (the functions, the layers, ``vecconv.torch``,
``vecconv.dask``, the benchmark) plans through here.

How the work is cut does not depend on the thread count, so the result is bit-for-bit
the same with 1 or n threads: every unit sums its terms in the same order, and the dW
chunks are added up in a fixed order.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, replace

import numpy as np

from . import _config, _direct, _engine, _fft, _winograd
from ._engine import Geometry, Schedule
from ._options import PADDING_MODES, ConvOptions
from ._shapes import (LAYOUTS, conv_output_size, extents, resolve_padding,
                      transposed_output_size)
from ._validate import INT32_MAX, check_ndim, integer

# ----------------------------------------------------------------------------- constants
#: Units a job is cut into at least, when the shapes allow: enough for the caller to
#: share with a worker, and for a worker that is late (busy machine) to cost little.
MIN_UNITS = 8
#: A band of one image's output positions holds at least this many (or the whole map):
#: a GEMM narrower than this runs far below the BLAS's speed, which more units do not
#: repay (ResNet-18's 512-channel 7 x 7 layer, one image, float64, forward + backward:
#: bands of 7 positions took 37 ms, bands of 49 20 ms; bench/layers.py --batch 1).
MIN_BAND = 64
#: Column elements per round of a job; Ctrl-C is honoured between rounds.
ROUND_ELEMS = 1 << 24
#: Convolutions with this many output maps per group or fewer stage their tiles (see
#: Route.STAGED): their per-image GEMM is too skinny to run well (LeNet-5's C1: 6 maps;
#: measured with bench/bench.py, C1 forward+backward 3.0 -> 1.6 ms in float32, 2.8 -> 2.0
#: in float64, while MNIST-like's 32 maps ran slower staged).
STAGE_COUT = 8
#: A staged tile's products are at least WIDE_STAGE columns wide when the weight matrix
#: holds WIDE_WEIGHTS entries or more: ResNet-18's 512-channel 7 x 7 stage made products
#: of 49 columns, which the BLAS ran at 60-70% of its speed at 98 or more. Forward +
#: backward of 8 images, interleaved, medians of 11: float32 39.7 -> 37.1 ms, float64
#: 94.2 -> 82.1 ms (192 columns: the same within noise, with half the tiles). This leaves
#: fewer tiles than MIN_UNITS (4 at batch 8): fewer threads share such a call.
WIDE_STAGE = 96
WIDE_WEIGHTS = 2**18
#: At most this many dW accumulators (chunks of a round, each summed by one unit) ...
MAX_ACCUMULATORS = 8
#: ... and no more than fit this many bytes, but at least 2: each is zeroed and added up
#: once per call, which for large weights costs more than the chunks save (ResNet-18's
#: 512 x 512 x 3 x 3 layer, float32, 7 x 7 maps: dW 39.6 -> 16.6 ms with 2 of 9.4 MB
#: instead of 6; smaller weights unchanged; bench/layers.py).
ACCUMULATOR_BYTES = 16 * 2**20
#: dW of a batch with at most this many output positions in all (ResNet-18's 14 x 14 and
#: 7 x 7 stages at one image) is one product over the whole batch's patch matrix, its rows
#: (output maps) cut into blocks over the threads (``_run.matmul``), where the chunked
#: route's rank-64 updates of whole dW accumulators ran far below the BLAS's speed:
#: 256 x 256 x 3 x 3 at 14 x 14, one image, 3.11 -> 2.56 ms (float32), 5.73 -> 4.21
#: (float64); 512 x 512 x 3 x 3 at 7 x 7, 4.63 -> 3.45 and 16.1 -> 12.7 (medians of 11,
#: the two interleaved in one process); 784 positions in all were level or slower.
DW_BY_MAPS_POSITIONS = 256


# ----------------------------------------------------------------------------- records
class Route(enum.Enum):
    """How a convolution pass runs (ATen's ``ConvBackend``), chosen by :func:`select_route`.

    Every route is the derivation's matrix form: eq. 12 for the forward pass and the kernel
    gradient, eq. 16-18 for the error of the previous layer.
    """

    #: a column buffer per image (or band of one image), one GEMM per image and group
    IM2COL = "im2col"
    #: a 1x1 kernel, stride 1, no padding: the GEMMs read x itself, no columns are made
    POINTWISE = "pointwise"
    #: tiny maps or few output maps per group: a tile of images staged as one matrix and
    #: one GEMM per tile (LeNet-5's C1 and C5)
    STAGED = "staged"
    #: a connection table that leaves pairs out, with a NaN or inf in an image: eq. 1
    #: literally, each output map from its connected inputs alone (in the one dense product
    #: 0 * inf would be NaN in maps the table does not connect)
    PER_MAP = "per-map"
    #: large kernels, forward pass: tiles of each map and the kernels transformed once, a
    #: product per frequency summed over input channels, transformed back (``_fft``)
    FFT = "fft"
    #: 3-tap kernels (3 x 3, 3 x 3 x 3, 3), stride and dilation 1, forward and dx passes:
    #: minimal filtering F(m, 3), one GEMM per transformed tap over a batch of tiles
    #: (``_winograd``)
    WINOGRAD = "winograd"
    #: grouped convolutions ('auto': one input map per group, depthwise), every pass:
    #: eq. 1 map by map, the output columns innermost (``_direct``)
    DIRECT = "direct"


def _ceil_div(a, b):
    return -(-a // b)


def _tile_budget(workspace, itemsize):
    """Elements a tile's column buffer may hold: cache-sized, within the workspace."""
    return max(min(workspace, _config.TILE_BYTES) // itemsize, 1)


def _tile_images(n, rows, positions, budget, staged, weights=0):
    """Whole images per tile: within the budget, at least MIN_UNITS tiles, and a staged
    tile (one GEMM) wide enough (STAGE_WIDTH columns, WIDE_STAGE for a weight matrix of
    ``weights`` >= WIDE_WEIGHTS entries) to run well, even if that leaves fewer than
    MIN_UNITS tiles."""
    width = WIDE_STAGE if weights >= WIDE_WEIGHTS else _config.STAGE_WIDTH
    floor = _ceil_div(width, positions) if staged else 1
    return max(1, min(budget // (rows * positions), max(_ceil_div(n, MIN_UNITS), floor), n,
                      INT32_MAX // max(positions, 1)))


def select_route(n, geometry, cout, groups, itemsize, workspace, *, masked=False,
                 finite=True, algorithm="im2col", d=2, allow_fft=True):
    """The route of a forward pass over ``n`` images: the one place where it is decided.

    ``masked``: a connection table leaves pairs out; ``finite``: the values the pass reads
    (and a constant pad) hold no NaN or inf; ``algorithm``: the user's choice ('auto',
    'im2col', 'fft', 'winograd' or 'direct'); ``allow_fft`` False: a transposed
    convolution's plan, whose passes no FFT takes. Returns (route, FFT tiles or Winograd
    (m, schedule), or None).
    """
    if algorithm in ("auto", "direct"):
        most = _direct.AUTO_CHANNELS if algorithm == "auto" else None
        ok = _direct.eligible(geometry.channels, groups, masked, most)
        if ok and _direct.fits(geometry, itemsize, workspace):
            return Route.DIRECT, None
        if algorithm == "direct":
            why = (f"its padded map does not fit a workspace of {workspace} bytes" if ok
                   else f"it runs grouped convolutions (groups > 1, no connection table), "
                        f"got groups={groups}")
            raise ValueError(f"algorithm='direct' cannot run this convolution: {why}; use "
                             f"algorithm='auto' or 'im2col'")
    # the FFT route pays only for large kernels: below FFT_MIN_TAPS 'auto' does not ask
    # (an empty map has nothing to transform: any route gives its empty or constant answer)
    if allow_fft and algorithm in ("auto", "fft") and finite and n > 0 \
            and math.prod(geometry.size) > 0 \
            and (algorithm == "fft" or geometry.taps >= _fft.FFT_MIN_TAPS):
        cin_g = geometry.channels // groups
        tiles = _fft.tile_shape(geometry, d, cout, cin_g, groups, itemsize, workspace)
        if algorithm == "fft":
            if tiles is None:
                raise ValueError(f"algorithm='fft' cannot run these kernels within a "
                                 f"workspace of {workspace} bytes (the transformed kernels "
                                 f"and one image's tile must fit, and each axis of the "
                                 f"padded input be below 2**31): raise workspace= or use "
                                 f"algorithm='im2col'")
            return Route.FFT, tiles
        if tiles is not None and _fft.cost_ratio(n, geometry, d, cout, cin_g, groups,
                                                 tiles) < 1.0:
            return Route.FFT, tiles
    if algorithm in ("auto", "winograd"):
        wino = _winograd_choice(n, geometry, cout, groups, itemsize, workspace, algorithm,
                                finite)
        if wino is not None:
            return Route.WINOGRAD, wino
    return _gemm_route(n, geometry, cout, groups, itemsize, workspace, masked, finite), None


def _winograd_choice(n, geometry, cout, groups, itemsize, workspace, algorithm, finite=True,
                     strict=True):
    """(m, schedule) when a pass takes the Winograd route, else None: under 'auto' where
    the time model says it pays, under 'winograd' always, and (``strict``) an error naming
    why when it cannot."""
    if n == 0 or math.prod(geometry.size) == 0 or geometry.positions == 0:
        return None                 # nothing to compute: any route gives the empty answer
    reason = _winograd.why_not(geometry)
    if reason is None and not finite:
        reason = "it needs a finite fill_value"
    choice = None
    if reason is None:
        choice = _winograd.plan(n, geometry, cout, groups, itemsize, workspace)
        if choice is None:
            reason = (f"its transformed kernels and tiles do not fit a workspace of "
                      f"{workspace} bytes")
    if algorithm == "winograd":
        if choice is None and strict:
            raise ValueError(f"algorithm='winograd' cannot run this convolution: "
                             f"{reason}; use algorithm='auto' or 'im2col'")
        return choice
    if choice is None or _winograd.cost_ratio(n, geometry, cout, groups,
                                              choice[0]) >= _winograd.AUTO_BELOW:
        return None
    return choice


def check_forced(options, kernel_size):
    """What a forced algorithm needs of the options alone, checked when a layer is built
    (the shapes, and the workspace, are checked when it runs)."""
    if options.algorithm == "winograd":
        reason = _winograd.kernel_rule(options.stride, options.dilation, kernel_size)
        if reason is None and not math.isfinite(options.fill_value):
            reason = "it needs a finite fill_value"
        if reason is not None:
            raise ValueError(f"algorithm='winograd' cannot run this layer: {reason}")
    if options.algorithm == "direct" and not _direct.eligible(
            options.groups, options.groups, options.connections is not None):
        raise ValueError(f"algorithm='direct' runs grouped convolutions (groups > 1, no "
                         f"connection table), got groups={options.groups}")


def select_dx_route(n, geometry, cout, groups, itemsize, workspace, algorithm):
    """The route of the dx pass (eq. 16-18): a stride-1 3-tap convolution's dx is again one,
    of dy with the flipped kernels, and takes the Winograd route as the forward pass would
    (``_winograd_choice``), if the padding is constant: any other mode folds the
    padding's gradient back, which a correlation of dy cannot. Never an error: a dx that
    cannot take the route takes the backward route.
    Returns (route, (m, schedule) or None); route None: the backward route."""
    if algorithm not in ("auto", "winograd") or n == 0 or geometry.mode != 0:
        return None, None
    wino = _winograd_choice(n, _winograd.adjoint_geometry(geometry, cout),
                            geometry.channels, groups, itemsize, workspace, algorithm,
                            strict=False)
    return (None, None) if wino is None else (Route.WINOGRAD, wino)


def select_dw_route(n, geometry, cout, groups, itemsize, workspace, m):
    """The dW pass of a convolution whose forward pass takes the Winograd route: eq. 12 in
    the route's own form, dU[t] = sum over tiles of dM[t] V[t]^T, with the forward
    pass's tiles m, when the workspace holds its chunks' dU; else the backward route.
    Returns (route or None, (m, schedule))."""
    sched = _winograd.grad_schedule(n, geometry, cout, groups, m, itemsize, workspace, 1)
    return (None, None) if sched is None else (Route.WINOGRAD, (m, sched))


def _gemm_route(n, geometry, cout, groups, itemsize, workspace, masked, finite):
    """The route of the engine's GEMM family (im2col, pointwise, staged, per-map)."""
    if masked and not finite:
        return Route.PER_MAP
    g = geometry
    if g.taps == 1 and g.stride == (1, 1, 1) and g.pad == (0, 0, 0) and g.out == g.size:
        return Route.POINTWISE
    positions, k_rows = g.positions, g.channels * g.taps
    budget = _tile_budget(workspace, itemsize)
    if (n >= MIN_UNITS and k_rows * positions <= budget
            and (positions < _config.STAGE_BELOW or cout // groups <= STAGE_COUT)
            and _tile_images(n, k_rows + cout, positions, budget, True,
                             cout * k_rows // groups**2) > 1):
        return Route.STAGED
    return Route.IM2COL


def make_schedule(route, n, geometry, cout, groups, itemsize, workspace):
    """Cut one convolution on ``route`` into tiles, dW chunks and dx pieces (see
    :class:`Schedule`)."""
    g = geometry
    c, taps, P = g.channels, g.taps, g.positions
    cig = c // groups
    pointwise, staged = route is Route.POINTWISE, route is Route.STAGED
    k_rows = c * taps
    budget = _tile_budget(workspace, itemsize)
    per_image = k_rows * P
    if n >= MIN_UNITS and per_image <= budget:
        rows = k_rows + (cout if staged else 0)
        tile_images = _tile_images(n, rows, P, budget, staged, cout * k_rows // groups**2)
        tile_positions = P
        n_tiles = _ceil_div(n, tile_images)
        buf_elems = rows * tile_images * P
    else:
        # bands of output positions: within budget, and MIN_UNITS bands in all
        tile_images = 0
        bands = max(_ceil_div(per_image, budget), _ceil_div(MIN_UNITS, max(n, 1)))
        tile_positions = max(1, min(P, max(_ceil_div(P, bands), MIN_BAND),
                                    max(budget // k_rows, 1)))
        n_tiles = n * _ceil_div(P, tile_positions)
        buf_elems = k_rows * tile_positions
    if pointwise:
        buf_elems = 0
    tile_elems = max(k_rows * (tile_images * P if tile_images else tile_positions), 1)
    round_tiles = max(1, ROUND_ELEMS // tile_elems)
    dw_bytes = cout * cig * taps * itemsize
    n_acc = max(1, min(MAX_ACCUMULATORS, n_tiles, workspace // max(dw_bytes, 1),
                       max(2, ACCUMULATOR_BYTES // max(dw_bytes, 1))))
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


# ----------------------------------------------------------------------------- threads
def threads_above(work, grain):
    """The thread setting, or 1 when ``work`` is below ``grain`` (waking a worker costs
    more than it saves) or the build has no worker pool: the one grain policy of the
    convolutions, the unfolds and the poolings."""
    n = _config.get_num_threads()
    if n <= 1 or work < grain or not _engine.have_threads():
        return 1
    return n


def pool_threads(flops):
    """Threads for ``flops`` operations of work without GEMMs."""
    return threads_above(flops, _config.GRAIN_FLOPS)


def threads_for(flops):
    """Threads for a convolution pass: as pool_threads, and 1 when the GEMMs cannot be
    held to one thread each (no private BLAS: SciPy's BLAS then parallelises them)."""
    threads = pool_threads(flops)
    return threads if _engine.private_blas() else 1


# ----------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class Plan:
    """One convolution, decided: shapes, geometry, route, schedule, budget.

    A transposed convolution is planned as the convolution it is the adjoint of: its
    ``x_shape`` is the transposed convolution's output, ``out_shape`` its input (grown by
    ``extra`` zero entries per axis where output_padding reaches past the stride).
    """

    dtype: np.dtype
    x_shape: tuple        # (N, C, *spatial) of the convolution
    w_shape: tuple        # (Cout, C/groups, *kernel)
    out_shape: tuple      # (N, Cout, *out)
    geometry: Geometry
    groups: int
    flip: bool
    mask: np.ndarray | None   # (Cout, Cin) bool, the connection table; None: all connected
    route: Route              # the forward pass's route for finite values
    backward_route: Route     # the dx and dW passes' route (and the forward's fallback)
    schedule: Schedule        # how the engine cuts backward_route's work
    workspace: int            # the budget this plan was cut for
    options: ConvOptions
    extra: tuple = ()         # transposed: zeros appended to its input per axis
    fft_tiles: tuple | None = None   # Route.FFT: (tile, transform size, images per chunk)
    winograd: tuple | None = None    # Route.WINOGRAD forward: (m per axis, schedule)
    dx_route: Route | None = None    # the dx pass's route when not backward_route
    dx_winograd: tuple | None = None  # dx on Route.WINOGRAD: (m per axis, schedule)
    dw_route: Route | None = None    # the dW pass's route when not backward_route
    dw_winograd: tuple | None = None  # dW on Route.WINOGRAD: (m per axis, schedule)

    @property
    def masked(self):
        """Whether a connection table leaves pairs out."""
        return self.mask is not None and not self.mask.all()

    def threads(self):
        """Threads for one pass of this plan, decided when it runs (the setting may have
        changed since the plan was made)."""
        return threads_for(self.flops)

    def slots(self, threads):
        """Column buffers for a pass on ``threads`` threads: one each, within the budget."""
        return max(1, min(threads, self.schedule.max_slots))

    def memory(self, backward=False, need_dx=True, need_dw=True):
        """Bytes one call allocates besides its inputs: the weight matrix, the largest
        of its passes' working buffers (the passes run one after another), and the
        outputs: y, or dx and the dW copies."""
        w_elems = math.prod(self.w_shape)
        kinds = ["forward"] if not backward else (["dx"] * need_dx + ["dw"] * need_dw)
        total = max([self.buffers(kind) for kind in kinds], default=0) + w_elems
        if not backward:
            total += math.prod(self.out_shape)                     # y
        else:
            total += math.prod(self.x_shape) * need_dx             # dx
            total += 2 * w_elems * need_dw                         # dW, its copy in w's layout
        return total * self.dtype.itemsize

    def buffers(self, kind):
        """Elements of the working buffers of one pass ('forward', 'dx' or 'dw') on its
        route, with the threads the setting gives now."""
        threads = self.threads()
        route = {"forward": self.route, "dx": self.dx_route or self.backward_route,
                 "dw": self.dw_route or self.backward_route}[kind]
        if route is Route.DIRECT:
            pass_ = {"forward": _direct.FORWARD, "dx": _direct.DX, "dw": _direct.DW}[kind]
            args = (self.geometry, self.dtype.itemsize, self.workspace)
            return _direct.slots(*args, threads, pass_) * _direct.scratch_elems(
                self.geometry, pass_, *args[1:]) \
                + -(-_direct.table_bytes(self.geometry) // self.dtype.itemsize)
        if route is Route.WINOGRAD and kind == "dw":
            m, sched = self.dw_winograd
            args = (self.geometry, self.w_shape[0], self.groups, m, sched)
            return _winograd.grad_memory(*args, _winograd.grad_slots(
                *args, self.dtype.itemsize, self.workspace, threads)) \
                + math.prod(self.w_shape)                          # dU summed, dW
        if route is Route.WINOGRAD:                    # U, V and M, scratch
            geometry, cout, (m, sched) = self.winograd_pass(kind == "dx")
            slots = _winograd.slots_within(m, sched, geometry, cout, self.groups,
                                           self.dtype.itemsize, self.workspace, threads)
            adjoint = 0     # dx's kernels, copied where their transform is no permutation
            if kind == "dx" and _winograd.flip_permutation(tuple(geometry.kernel),
                                                           tuple(m)) is None:
                adjoint = math.prod(self.w_shape)
            return _winograd.memory(geometry, cout, self.groups, m, sched, slots) + adjoint
        if kind == "dw" and self.dw_by_maps():         # the batch's patch matrix, dy's rows
            n, cout = self.out_shape[:2]
            return (self.geometry.channels * self.geometry.taps + cout) * n \
                * self.geometry.positions
        columns = self.slots(threads) * self.schedule.buf_elems
        if kind == "dw":                               # and the dW accumulators
            columns += self.schedule.n_acc * math.prod(self.w_shape)
        return columns

    def dw_by_maps(self):
        """Whether dW on the GEMM routes is one product over the whole batch's patch
        matrix (few positions in all: DW_BY_MAPS_POSITIONS), cut by output maps, within
        the workspace."""
        n, cout = self.out_shape[:2]
        positions = n * self.geometry.positions
        elems = (self.geometry.channels * self.geometry.taps + cout) * positions
        return (self.backward_route in (Route.IM2COL, Route.STAGED) and self.groups == 1
                and not self.masked and 0 < positions <= DW_BY_MAPS_POSITIONS
                and elems * self.dtype.itemsize <= self.workspace)

    def winograd_pass(self, dx=False):
        """(geometry, output maps, (m, schedule)) of the forward pass (dx False) or the dx
        pass on the Winograd route, or None when that pass takes another."""
        if not dx and self.route is Route.WINOGRAD:
            return self.geometry, self.w_shape[0], self.winograd
        if dx and self.dx_route is Route.WINOGRAD:
            return (_winograd.adjoint_geometry(self.geometry, self.w_shape[0]),
                    self.geometry.channels, self.dx_winograd)
        return None

    @property
    def flops(self):
        """Floating-point operations of one pass (forward, dW or dx)."""
        n, cout = self.out_shape[:2]
        return 2 * n * cout * (self.geometry.channels // self.groups) * self.geometry.taps \
            * self.geometry.positions

    def for_batch(self, n):
        """The same convolution for n images (a part of the batch)."""
        return _finish(self.dtype, (n,) + self.x_shape[1:], self.w_shape, self.geometry,
                       self.groups, self.flip, self.mask, self.workspace,
                       replace(self.options, algorithm="im2col"), self.extra)

    def for_inputs(self, inputs):
        """The plan of one output map reading only ``inputs`` of the input maps (the
        PER_MAP route): all connected, no flip (its weight is already flipped)."""
        geometry = self.geometry.replace(channels=len(inputs))
        x_shape = (self.x_shape[0], len(inputs)) + self.x_shape[2:]
        w_shape = (1, len(inputs)) + self.w_shape[2:]
        return _finish(self.dtype, x_shape, w_shape, geometry, 1, False, None,
                       self.workspace, replace(self.options, algorithm="im2col"))


def _finish(dtype, x_shape, w_shape, geometry, groups, flip, mask, workspace, options,
            extra=(), allow_fft=True):
    """The Plan: the route of each pass (forward, dx, dW) and the GEMM family's schedule,
    which is every pass's fallback."""
    n, cout = x_shape[0], w_shape[0]
    args = (n, geometry, cout, groups, dtype.itemsize, workspace)
    gemm, _ = select_route(*args)
    route, found = gemm, None
    if not options.transposed:
        route, found = select_route(*args, algorithm=options.algorithm, d=options.d,
                                    finite=math.isfinite(geometry.fill), allow_fft=allow_fft)
    dx_route, dx_wino = select_dx_route(*args, options.algorithm)
    dw_route = dw_wino = None
    if route is Route.DIRECT:           # the direct route takes every pass
        dx_route, dx_wino, dw_route = Route.DIRECT, None, Route.DIRECT
    elif route is Route.WINOGRAD:       # and the Winograd route dW with the forward pass
        dw_route, dw_wino = select_dw_route(*args, found[0])
    return Plan(dtype=dtype, x_shape=x_shape, w_shape=w_shape,
                out_shape=(n, cout) + geometry.out[3 - options.d:], geometry=geometry,
                groups=groups, flip=flip, mask=mask, route=route, backward_route=gemm,
                schedule=make_schedule(gemm, *args), workspace=workspace, options=options,
                extra=extra, fft_tiles=found if route is Route.FFT else None,
                winograd=found if route is Route.WINOGRAD else None, dx_route=dx_route,
                dx_winograd=dx_wino, dw_route=dw_route, dw_winograd=dw_wino)


def _check_padding_mode(mode, pads, sizes, names):
    """PyTorch's limits of a padding mode against the input: 'reflect' needs each pad
    below the axis length, 'circular' at most the axis length."""
    for name, size, (before, after) in zip(names, sizes, pads):
        if size == 0 and before + after > 0 and mode not in ("zeros", "constant"):
            raise ValueError(f"padding_mode={mode!r} needs a non-empty input to pad "
                             f"from: axis {name} has size 0")
        if mode == "reflect" and max(before, after) >= size:
            raise ValueError(f"padding_mode='reflect' needs padding below the input size: "
                             f"axis {name} has {size}, padding ({before}, {after})")
        if mode == "circular" and max(before, after) > size:
            raise ValueError(f"padding_mode='circular' needs padding at most the input size: "
                             f"axis {name} has {size}, padding ({before}, {after})")


def _check_shapes(x_shape, w_shape, bias_shape, groups, d):
    layout, wlayout, _ = LAYOUTS[d]
    check_ndim("x", x_shape, d + 2, f"{layout} or {d + 1}-D unbatched (C, "
                                    f"{', '.join(LAYOUTS[d][2])})")
    check_ndim("w", w_shape, d + 2, wlayout)
    c = x_shape[1]
    cout, cin_g = w_shape[:2]
    if c == 0:
        raise ValueError(f"x must have at least one channel, got shape {x_shape}")
    if cout == 0 or cin_g == 0 or 0 in w_shape[2:]:
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


def _workspace(workspace):
    return _config.get_workspace() if workspace is None else integer("workspace", workspace, 1)


def check_conv(x_shape, w_shape, bias_shape, options):
    """Check a convolution's shapes against its options, by arithmetic alone; returns its
    ((before, after) padding, output size) per spatial axis. (``vecconv.dask`` checks a
    whole array this way, which may be past what one engine call takes.)"""
    d = options.d
    _check_shapes(x_shape, w_shape, bias_shape, options.groups, d)
    names = LAYOUTS[d][2]
    spans = extents(options.dilation, w_shape[2:])
    # 'same' follows the scipy function of the same rank: correlate2d centres even kernels
    # differently from convolve2d; the 1-D and N-d correlate/convolve both pad k//2 before
    pads = resolve_padding(options.padding, spans, options.flip, signal_1d=(d != 2))
    out_sp = tuple(conv_output_size(f"input {nm}", s, p, e, st) for nm, s, p, e, st in
                   zip(names, x_shape[2:], pads, spans, options.stride))
    _check_padding_mode(options.padding_mode, pads, x_shape[2:], names)
    if options.connections is not None:
        cin, cout = x_shape[1], w_shape[0]
        if options.connections.shape != (cin, cout):
            raise ValueError(f"connections must have shape (Cin, Cout) = ({cin}, {cout}), "
                             f"got {options.connections.shape}")
    return pads, out_sp


def tunables():
    """The knobs a plan depends on besides its arguments (tests and the benchmark change
    them): part of a kept plan's key."""
    return (_config.TILE_BYTES, _config.STAGE_BELOW, _config.STAGE_WIDTH, ROUND_ELEMS,
            WIDE_STAGE, WIDE_WEIGHTS,
            MIN_UNITS, MIN_BAND, MAX_ACCUMULATORS, ACCUMULATOR_BYTES, STAGE_COUT,
            _fft.FFT_COST, _direct.AUTO_CHANNELS,
            _fft.FFT_MIN_TAPS, _fft.TILE_ELEMENTS, _fft.TILE_COST,
            _winograd.UNIT_TILES, _winograd.ROUND_BYTES, _winograd.FUSED_BYTES,
            _winograd.MIN_FUSED, _winograd.TRANSFORM_COST, _winograd.WEIGHT_COST,
            _winograd.CALL_COST, _winograd.IM2COL_COST, _winograd.AUTO_BELOW,
            _winograd.MIN_GRAD_TILES, _winograd.MAX_CHUNKS, _winograd.ACCUMULATOR_BYTES,
            _winograd.WHOLE_GRAD_BYTES, _winograd.GRAD_BLOCK,
            tuple(sorted(_winograd.TILE.items())))


#: plans of recent calls: a network, a loop or a filter bank repeats its shapes
_PLANS: dict[tuple, Plan] = {}
_PLANS_KEPT = 128


def plan_conv(x_shape, w_shape, bias_shape, dtype, options, workspace=None, *,
              allow_fft=True):
    """Check a convolution's shapes against its options and derive its Plan.

    x is (N, C, *d axes), w (Cout, C/groups, *d kernel sizes); ``workspace`` None means
    the setting in effect (``vecconv.config``). Plans are immutable and kept for the
    calls that repeat them (the thread count is decided when a plan runs).
    """
    x_shape, w_shape = tuple(x_shape), tuple(w_shape)
    workspace = _workspace(workspace)
    key = (x_shape, w_shape, None if bias_shape is None else tuple(bias_shape),
           np.dtype(dtype).str, options.key(), workspace, tunables(), allow_fft)
    plan = _PLANS.get(key)
    if plan is None:
        plan = _plan_conv(x_shape, w_shape, bias_shape, dtype, options, workspace,
                          allow_fft)
        if len(_PLANS) >= _PLANS_KEPT:
            _PLANS.clear()
        _PLANS[key] = plan
    return plan


def _plan_conv(x_shape, w_shape, bias_shape, dtype, options, workspace, allow_fft):
    d = options.d
    pads, out_sp = check_conv(x_shape, w_shape, bias_shape, options)
    ksize = w_shape[2:]
    # a stride along an axis of one output, or a dilation of a one-tap kernel, changes
    # nothing: give the engine 1 there (the values may be as large as INDEX_MAX)
    stride = tuple(st if o > 1 else 1 for st, o in zip(options.stride, out_sp))
    dilation = tuple(dl if k > 1 else 1 for dl, k in zip(options.dilation, ksize))
    lead = (1,) * (3 - d)
    geometry = Geometry(x_shape[1], lead + x_shape[2:], lead + ksize, lead + stride,
                        lead + dilation, (0,) * (3 - d) + tuple(p[0] for p in pads),
                        lead + out_sp, PADDING_MODES[options.padding_mode],
                        options.fill_value)
    for what, size in (("an output map", geometry.positions),
                       ("an input map", math.prod(geometry.size)),
                       ("a kernel column (C*taps)", x_shape[1] * geometry.taps),
                       ("the channel count", w_shape[0])):
        if size > INT32_MAX:
            raise ValueError(f"{what} has {size} elements, more than the 2**31-1 a BLAS "
                             "dimension can hold")
    mask = None
    if options.connections is not None:
        mask = np.ascontiguousarray(options.connections.T)        # (Cout, Cin)
        mask.flags.writeable = False                               # plans are shared
    return _finish(np.dtype(dtype), x_shape, w_shape, geometry, options.groups,
                   options.flip, mask, workspace, options, allow_fft=allow_fft)


def transposed_output_shape(x_shape, w_shape, options):
    """A transposed convolution's (N, Cout, *out) for a batched x, by arithmetic alone
    (checked against its options: channels, groups, output_size or output_padding)."""
    d = options.d
    layout, _, names = LAYOUTS[d]
    if len(x_shape) != d + 2:
        raise ValueError(f"x must be {d + 2}-D {layout} or unbatched, got shape {x_shape}")
    if len(w_shape) != d + 2:
        raise ValueError(f"w must be (Cin, Cout/groups, *kernel), got shape {w_shape}")
    groups, cin = options.groups, x_shape[1]
    if 0 in x_shape[2:]:
        raise ValueError(f"x must have at least one entry along every spatial axis for a "
                         f"transposed convolution, got shape {x_shape}")
    if w_shape[0] != cin:
        raise ValueError(f"w must have shape (Cin, Cout/groups, *kernel) with Cin = {cin} "
                         f"(the channels of x), got {w_shape}")
    if 0 in w_shape[1:]:
        raise ValueError(f"w must have non-zero sizes (Cin, Cout/groups, *kernel), got shape "
                         f"{w_shape}")
    if cin % groups:
        raise ValueError(f"groups={groups} must divide the input channels ({cin})")
    base = tuple(transposed_output_size(i, s, p, dl, k) for i, s, p, dl, k in
                 zip(x_shape[2:], options.stride, options.padding, options.dilation,
                     w_shape[2:]))
    output_padding = options.output_padding
    if options.output_size is not None:
        # as PyTorch picks it: output_padding below the stride
        output_padding = tuple(sz - b for sz, b in zip(options.output_size, base))
        for a, (op, s, b) in enumerate(zip(output_padding, options.stride, base)):
            if not 0 <= op < s:
                raise ValueError(f"output_size {options.output_size}: axis {names[a]} can be "
                                 f"{b} to {b + s - 1} for this input and stride")
    out = tuple(b + op for b, op in zip(base, output_padding))
    if min(out) < 1:
        raise ValueError(f"the output would have size {out}: padding crops more than the "
                         "full result")
    if math.prod(out) > INT32_MAX:
        raise ValueError(f"the output would have {math.prod(out)} entries per map ({out}), "
                         "more than the 2**31-1 a BLAS dimension can hold")
    y_shape = (x_shape[0], w_shape[1] * groups) + out
    lead = options.output_size_lead
    if lead and lead != y_shape[2 - len(lead):2]:
        raise ValueError(f"output_size {lead + options.output_size} leads with "
                         f"{lead}, but the output is {y_shape[2 - len(lead):2]} "
                         f"(batch, channels) there")
    return y_shape


def plan_conv_transpose(x_shape, w_shape, dtype, options, workspace=None):
    """The plan of the convolution whose dx pass is this transposed convolution: its
    input is the transposed one's output (N, Cout, *out), its weight w itself ((Cin,
    Cout/groups, *k) is a convolution weight from Cout to Cin maps). ``plan.extra[a]``
    zero entries are appended to x along axis a when output_padding >= stride (possible
    only with dilation > stride), so that the convolution's output matches x."""
    x_shape, w_shape = tuple(x_shape), tuple(w_shape)
    y_shape = transposed_output_shape(x_shape, w_shape, options)
    # its passes are the adjoint convolution's: its forward is their dx pass, its dx
    # their forward (each on the Winograd route where the planner takes it); no FFT
    conv = replace(options, transposed=False, output_padding=(), output_size=None)
    plan = plan_conv(y_shape, w_shape, None, dtype, conv, workspace, allow_fft=False)
    if options.algorithm == "winograd" and plan.dx_route is not Route.WINOGRAD \
            and y_shape[0] > 0:
        # (its forward pass took the route: the dx pass, this one's forward, did not fit)
        raise ValueError(f"algorithm='winograd' cannot run this transposed convolution: "
                         f"it needs a workspace above {plan.workspace} bytes; use "
                         f"algorithm='auto' or 'im2col'")
    extra = tuple(o - i for o, i in zip(plan.out_shape[2:], x_shape[2:]))
    return replace(plan, options=options, extra=extra)


# ----------------------------------------------------------------------------- unfold
def plan_unfold(x_shape, kernel_size, options):
    """The plan of a single-kernel-per-channel unfold (im2col/col2im share it): one kernel
    of ``kernel_size`` per channel (``options.d`` axes)."""
    return plan_conv(x_shape, (1, x_shape[1]) + tuple(kernel_size), None,
                     np.dtype(np.float64), options)


def unfold_units(plan):
    """(channels per unit, threads) of an im2col/col2im alone: (image, channel block)
    units, at least MIN_UNITS of them when the shapes allow."""
    n, c = plan.x_shape[:2]
    blocks = max(1, min(c, _ceil_div(MIN_UNITS, max(n, 1))))
    elems = n * c * plan.geometry.taps * plan.geometry.positions
    return _ceil_div(c, blocks), pool_threads(2 * elems)
