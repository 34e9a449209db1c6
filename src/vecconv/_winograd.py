"""The Winograd route: minimal filtering F(m, 3) for stride-1, dilation-1 convolutions
whose kernels have 3 taps along some axes and 1 along the others (a 3 x 3 layer, a 3-tap
1-D layer, a 3 x 3 x 3 volume layer).

Along one axis, m outputs of a 3-tap correlation ``y[i] = sum_j d[i + j] g[j]`` read
a = m + 2 inputs, and

    y = A^T [(G g) * (B^T d)]        (* elementwise, a entries)

with a products where the direct sum makes 3 m. The matrices come from polynomial
evaluation and interpolation (Toom-Cook): with E_k the (a x k) matrix of the a - 1
points' powers 1, p, ..., p^(k-1) and a last row for the point at infinity (the leading
coefficient), the linear convolution of a k = 3 and an m-entry sequence is
``E_a^-1 [(E_3 g) * (E_m h)]``, and the correlation is its transpose for fixed g:
``A^T = E_m^T``, ``G = E_3``, ``B^T = E_a^-T``. Along several axes the transforms act on
each axis in turn. The sum over input channels of eq. 1 becomes, for each of the
T = prod(a) transformed taps t, one matrix product over a batch of tiles,
``M[t] = U[t] V[t]`` (Cout x C times C x tiles): matrix form, as the derivation has it,
with T / prod(m) products per output and channel where im2col makes 9 (3 x 3).

The error of the route grows with m (the points spread further and the transforms
cancel more). ``TILE`` holds m per dtype and number of transformed axes, measured so
that the route's error stays within 4x the im2col route's (normwise, against a float64
reference; ``bench/layers.py`` reports both): the accuracy policy of ``algorithm='auto'``.

The error of the previous layer (eq. 16-18) of such a layer is again a stride-1
correlation with 3-tap kernels: of dy with the flipped kernels, input and output
channels exchanged, padded by 2 - p before each axis. With a constant padding it takes
this route too (``dx``). The kernel gradient (eq. 12) of M[t] = U[t] V[t] is
dU[t] = sum over tiles of dM[t] V[t]^T with dM = A dy A^T (the adjoint of the output
transform), one product per transformed tap, and dW = G^T dU G (``weight_grad``).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from . import _engine

#: The interpolation points of F(m, 3) (and the point at infinity): the ones whose
#: measured error was lowest for each m.
POINTS = {2: (0.0, 1.0, -1.0), 3: (0.0, 1.0, -1.0, 0.5), 4: (0.0, 1.0, -1.0, 2.0, -0.5)}

#: m per (dtype, transformed axes), for every pass: the largest whose measured error
#: stays within 4x the im2col route's, for y, dx and dW, normwise against an
#: extended-precision reference (bench/winograd_accuracy.py: 1-D, 2-D and 3-D layers of 3
#: to 512 channels, normal, rectified and offset (mean 100) inputs;
#: bench/results/winograd_accuracy.json). Worst ratios over y, dx and dW: 2-D F(2) 2.3,
#: F(3) 7.8; 3-D F(2) 2.2, F(3) 15; 1-D F(2) 2.4, F(3) 4.4, F(4) 11.
TILE = {("float32", 1): 2, ("float32", 2): 2, ("float32", 3): 2,
        ("float64", 1): 2, ("float64", 2): 2, ("float64", 3): 2}

#: Tiles per transform unit: the length of the vectors the transforms run over.
UNIT_TILES = 128
#: V and M of a round (the transformed inputs and outputs of its tiles) take at most
#: this many bytes, within the workspace.
ROUND_BYTES = 16 * 2**20
#: Units a transform job is cut into at least, when the shapes allow.
MIN_UNITS = 8
#: The dW pass: a round of at least this many tiles (its GEMMs' depth) ...
MIN_GRAD_TILES = 64
#: ... and at most this many chunks of the tiles, each with its own dU ...
MAX_CHUNKS = 8
#: ... which take at most this many bytes (but there are at least 2 chunks).
ACCUMULATOR_BYTES = 16 * 2**20
#: The dW pass takes every tile at once (V and dM of the batch, one product per
#: transformed tap over all the tiles, no accumulators) when the workspace holds them, a
#: chunk's round of them would take no more than one accumulator (which each round reads
#: and writes again: few tiles, large kernels, ResNet's 7 x 7 and 14 x 14 stages), and
#: they take at most this many bytes (beyond, they go through memory where the chunks'
#: rounds stay in a core's cache: ResNet's 28 x 28 stage at batch 8, 25 MB, took twice as
#: long; its 14 x 14 stage, 12.5 MB, was 10% faster alone but 10% slower with two Python
#: threads calling at once); its transform units are blocks of GRAD_BLOCK channels.
WHOLE_GRAD_BYTES = 8 * 2**20
GRAD_BLOCK = 64
#: A fused unit's V and M take at most this many bytes (within a core's L2 cache) ...
FUSED_BYTES = 2**20
#: ... for at least this many tiles, or the rounds are shared step by step.
MIN_FUSED = 64


@functools.lru_cache(maxsize=None)
def matrices(m, r=3):
    """(A^T (m x a), G (a x r), B^T (a x a)) in float64 for F(m, r), read-only (kept)."""
    points = POINTS[m]
    a = m + r - 1

    def E(k):
        rows = [[p ** e for e in range(k)] for p in points]
        rows.append([0.0] * (k - 1) + [1.0])
        return np.array(rows, dtype=np.float64)

    out = (np.ascontiguousarray(E(m).T), E(r), np.ascontiguousarray(np.linalg.inv(E(a)).T))
    for M in out:
        M.flags.writeable = False
    return out


def kernel_rule(stride, dilation, kernel):
    """Why options of these strides, dilations and kernel sizes cannot take the route, or
    None: stride and dilation 1, every kernel axis of 1 or 3 taps (at least one of 3).
    (A layer asks this when it is built; the planner asks ``why_not`` of each call.)"""
    if any(s != 1 for s in stride) or any(d != 1 for d in dilation):
        return "it needs stride 1 and dilation 1"
    if any(k not in (1, 3) for k in kernel) or 3 not in kernel:
        return (f"it needs kernels of 3 taps along each axis (or 1 along some), got "
                f"{tuple(k for k in kernel)}")
    return None


def why_not(geometry):
    """Why a convolution's geometry cannot take the route, or None when it can: the
    kernel rule, and a non-empty input and output."""
    g = geometry
    reason = kernel_rule(g.stride, g.dilation, g.kernel)
    if reason is not None:
        return reason
    if math.prod(g.size) == 0 or g.positions == 0:
        return "it needs a non-empty input and output"
    return None


def tile_sizes(geometry, itemsize):
    """m per axis (1 on an untransformed axis) for the dtype of ``itemsize`` bytes."""
    axes = sum(k == 3 for k in geometry.kernel)
    m = TILE[("float32" if itemsize == 4 else "float64", axes)]
    return tuple(m if k == 3 else 1 for k in geometry.kernel)


def growth(geometry, m):
    """How much the route may grow a value on its way to an output: the product over the
    transformed axes of the largest row sums of |B^T|, |G| and |A^T| (so an output is at
    most max|x| sum|w| times this, where eq. 1's is at most max|x| sum|w|)."""
    g = 1.0
    for mm, k in zip(m, geometry.kernel):
        if k == 3:
            g *= math.prod(float(np.abs(M).sum(axis=1).max()) for M in matrices(mm))
    return g


def plan(n, geometry, cout, groups, itemsize, workspace):
    """(m per axis, schedule) of the route for n images, or None when the workspace
    cannot hold it; the geometry must be eligible (``why_not`` is None)."""
    m = tile_sizes(geometry, itemsize)
    sched = schedule(n, geometry, cout, groups, m, itemsize, workspace, 1)
    return None if sched is None else (m, sched)


#: The route's time model, in units of its GEMM's time per floating-point operation,
#: fitted to the forward passes of 9 layers in each dtype (ResNet-18's 3 x 3 stages, 1 and
#: 32 images, a 3-D volume layer, 3 and 16 channels; bench/layers.py): per transformed
#: tap, tile and channel (input or output) of the transforms ...
TRANSFORM_COST = 45.0
#: ... per element of the transformed kernels U (made on every call, by the engine's
#: loop over kernels: 1.8 ms for 512 x 512 3 x 3 kernels on 2 threads) ...
WEIGHT_COST = 100.0
#: ... per call (checks, allocations, waking the pool) ...
CALL_COST = 3.3e7
#: ... and im2col's time per floating-point operation of its GEMMs, in the same unit.
IM2COL_COST = 0.95
#: 'auto' takes the route where the model says it saves at least 10%: the fit's error
#: was about that much.
AUTO_BELOW = 0.9


def cost_ratio(n, geometry, cout, groups, m):
    """The route's estimated time over im2col's (the time model above)."""
    g = geometry
    T = transformed_taps(g, m)
    cig = g.channels // groups
    tiles = n * math.prod(-(-o // mm) for o, mm in zip(g.out, m))
    wino = (2.0 * T * cout * cig * tiles + TRANSFORM_COST * T * tiles * (g.channels + cout)
            + WEIGHT_COST * T * cout * cig + CALL_COST)
    im2col = IM2COL_COST * 2.0 * n * cout * cig * g.taps * g.positions
    return wino / max(im2col, 1.0)


def slots_within(m, sched, geometry, cout, groups, itemsize, workspace, threads):
    """Participants the workspace has buffers for (at least 1, at most threads)."""
    one = memory(geometry, cout, groups, m, sched, 1)
    per_slot = memory(geometry, cout, groups, m, sched, 2) - one
    room = workspace // itemsize - one
    return max(1, min(threads, 1 + room // max(per_slot, 1)))


def transformed_taps(geometry, m):
    """T, the transformed taps of one tile: prod(m + k - 1)."""
    return math.prod(mm + k - 1 for mm, k in zip(m, geometry.kernel))


def schedule(n, geometry, cout, groups, m, itemsize, workspace, slots, fused=None):
    """(tiles per transform unit, tiles per round, channels per input unit, output maps
    per output unit, fused), or None when the workspace cannot hold the transformed
    kernels and a round of one unit's tiles.

    fused (None: decided here): a unit is a whole round, its V and M its own, when a
    round of at least MIN_FUSED tiles fits FUSED_BYTES (few channels: the transforms
    weigh as much as the products, and data that stays in one core's cache pays); else
    rounds are shared by the pool step by step, with GEMMs as wide as ROUND_BYTES allows.
    """
    T = transformed_taps(geometry, m)
    c = geometry.channels
    tiles = n * math.prod(-(-o // mm) for o, mm in zip(geometry.out, m))
    tb = max(1, min(UNIT_TILES, tiles))
    per_tile = T * (c + cout) * itemsize                                 # V, M
    if fused is None:
        fused = per_tile * min(MIN_FUSED, tiles) <= FUSED_BYTES
    if fused:
        R = min(FUSED_BYTES // per_tile, -(-tiles // MIN_UNITS))
        R = max(tb, R - R % tb)
        fixed = (T * cout * (c // groups) + slots * (3 * T * tb + R * T * (c + cout))) \
            * itemsize
        if fixed <= workspace:
            return tb, R, c, cout, True
    while True:                     # a tight workspace: shorter transform units
        fixed = (T * cout * (c // groups) + slots * 3 * T * tb) * itemsize   # U, scratch
        R = min(tiles, min(workspace - fixed, ROUND_BYTES) // per_tile)
        if R >= tb or tb == 1:
            break
        tb = max(1, tb // 2)
    if R < 1:
        return None
    R -= R % tb if R < tiles else 0
    tblocks = -(-R // tb)
    split = -(-MIN_UNITS // tblocks)
    return tb, R, -(-c // split), -(-cout // split), False


def memory(geometry, cout, groups, m, sched, slots):
    """Elements the route allocates besides its output: U, V and M of a round (of each
    slot's round, fused), the scratch blocks."""
    tb, R, _, _, fused = sched
    T = transformed_taps(geometry, m)
    vm = R * (geometry.channels + cout)
    return T * (cout * (geometry.channels // groups) + (slots if fused else 1) * vm
                + slots * 3 * tb)


def weight_transform(geometry, m):
    """The (T x taps) matrix that takes vec(g), a kernel read in C order, to vec(G g G^T)
    (the Kronecker product of each axis's G; 1 on an untransformed axis). Its entries are
    products of powers of the points, exact in float32."""
    K = np.ones((1, 1))
    for a in range(3):
        G = matrices(m[a])[1] if geometry.kernel[a] == 3 else np.ones((1, 1))
        K = np.kron(K, G)
    return K


def transform_weights(w, geometry, m, dtype, threads=1):
    """U (T, Cout, C/groups) from the effective kernels w (Cout, C/groups, taps): U[t] =
    (G g G^T)[t] for each kernel g, K vec(g) with K = ``weight_transform`` (its entries,
    products of powers of the points, exact in float32), in the engine's loop over
    blocks of kernels spread over ``threads`` (the same bits for any count)."""
    K = np.ascontiguousarray(weight_transform(geometry, m), dtype=dtype)
    cout, cig = w.shape[0], w.shape[1]
    U = np.empty(K.shape[0] * cout * cig, dtype=dtype)
    _engine.winograd_kernels(np.ascontiguousarray(w, dtype=dtype).reshape(-1), U, K,
                             cout * cig, "forward", threads)
    return U.reshape(K.shape[0], cout, cig)


@functools.lru_cache(maxsize=None)
def flip_permutation(kernel, m):
    """The transformed taps' permutation p with (G flip(g) G^T)[t] = (G g G^T)[p[t]] for
    every kernel g (each axis's rows of G reversed along g are rows of G: at the points
    0, 1, -1 and infinity, F(2, 3)'s, flipping g swaps 0 and infinity), as a tuple; None
    where some axis's points have no such permutation (they are not closed under 1/p).
    dx's kernels are the forward pass's flipped and exchanged: its U[t] is the forward
    kernels' U[p[t]] transposed, so dx transforms the forward kernels as they are, with
    no flipped, exchanged copy. (Flipping twice is no flip: p is its own inverse.)"""
    perms = []
    for k, mm in zip(kernel, m):
        if k != 3:
            perms.append((0,))
            continue
        G = matrices(mm)[1]
        rows = []
        for row in G[:, ::-1]:
            hit = [j for j in range(G.shape[0]) if np.array_equal(G[j], row)]
            if not hit:
                return None
            rows.append(hit[0])
        perms.append(tuple(rows))
    sizes = [len(p) for p in perms]
    return tuple(int(np.ravel_multi_index((perms[0][a], perms[1][b], perms[2][c]), sizes))
                 for a in range(sizes[0]) for b in range(sizes[1]) for c in range(sizes[2]))


def run(x, w, bias, geometry, cout, groups, m, sched, threads, slots, adjoint_of=None):
    """The engine's Winograd pass: y (N, Cout, positions) from a clean x and the
    effective kernels w (Cout, C/groups * taps), on the schedule ``schedule`` gave.

    ``adjoint_of`` (the forward pass's geometry): the dx pass, w the forward pass's
    kernels, of which it takes the ``adjoint``: by reading their transform transposed,
    its taps permuted (``flip_permutation``), or else from a transform of a copy."""
    n = x.shape[0]
    dtype = x.dtype
    perm = None
    if adjoint_of is not None:
        perm = flip_permutation(tuple(geometry.kernel), tuple(m))
        if perm is None:
            w = adjoint(w, adjoint_of, groups)
    U = transform_weights(w.reshape(w.shape[0], -1, geometry.taps), geometry, m, dtype,
                          threads)
    BT, AT = [], []
    for a in range(3):
        at, bt = (None, None)
        if geometry.kernel[a] == 3:
            at, _, bt = matrices(m[a])
        BT.append(bt)
        AT.append(at)
    y = np.empty((n, cout, math.prod(geometry.out)), dtype=dtype)
    b = bias if bias is not None else np.empty(0, dtype=dtype)
    _engine.winograd_forward(x.reshape(-1), U.reshape(-1), b, y.reshape(-1),
                             bias is not None, geometry, tuple(m), BT, AT, n, cout, groups,
                             *sched, threads, slots, perm)
    return y


def grad_schedule(n, geometry, cout, groups, m, itemsize, workspace, slots):
    """(tiles per transform unit, tiles per round, chunks, whole) of the dW pass, or None
    when the workspace cannot hold it.

    whole (see WHOLE_GRAD_BYTES): V and dM of every tile are made at once, shared by the
    pool, and each transformed tap's dU is one product over all the tiles (one round,
    one chunk). Else each chunk of the tiles sums its own dU (T x Cout x
    C/groups; at most MAX_CHUNKS, within ACCUMULATOR_BYTES but at least 2), each slot
    transforming a round of x's and dy's tiles into its own V and dM."""
    T = transformed_taps(geometry, m)
    c = geometry.channels
    tiles = n * math.prod(-(-o // mm) for o, mm in zip(geometry.out, m))
    per_tile = T * (c + cout) * itemsize
    du = T * cout * (c // groups) * itemsize
    R = max(1, min(tiles, max(FUSED_BYTES // per_tile, MIN_GRAD_TILES)))
    if 0 < tiles * per_tile <= WHOLE_GRAD_BYTES and R * per_tile <= du:
        tb = min(UNIT_TILES, tiles)
        if slots * 3 * T * tb * itemsize + tiles * per_tile + du <= workspace:
            return tb, tiles, 1, True
    tb = min(UNIT_TILES, R)
    chunks = max(1, min(MAX_CHUNKS, -(-tiles // R), max(2, ACCUMULATOR_BYTES // max(du, 1))))
    total = slots * (3 * T * tb * itemsize + R * per_tile) + chunks * du
    if total > workspace:
        return None
    return tb, R, chunks, False


def grad_memory(geometry, cout, groups, m, sched, slots):
    """Elements the dW pass allocates: each slot's scratch, V and dM (each slot's, or
    the batch's once: whole), the chunks' dU."""
    tb, R, chunks, whole = sched
    T = transformed_taps(geometry, m)
    c = geometry.channels
    return (slots * 3 * T * tb + (1 if whole else slots) * T * R * (c + cout)
            + chunks * T * cout * (c // groups))


def grad_slots(geometry, cout, groups, m, sched, itemsize, workspace, threads):
    """Participants of the dW pass the workspace has buffers for (1 to threads)."""
    one = grad_memory(geometry, cout, groups, m, sched, 1)
    per_slot = grad_memory(geometry, cout, groups, m, sched, 2) - one
    return max(1, min(threads, 1 + (workspace // itemsize - one) // max(per_slot, 1)))


def weight_grad(x, dy, geometry, cout, groups, m, sched, threads, slots):
    """dW (Cout, C/groups * taps) on the route from clean x and dy: the chunks' dU added
    in a fixed order (whole: the one dU), then dW = G^T dU G (K^T applied in the
    engine's kernel loop)."""
    tb, R, chunks, whole = sched
    dtype = x.dtype
    T = transformed_taps(geometry, m)
    cig = geometry.channels // groups
    BT, AT, A = [], [], []
    for a in range(3):
        at = bt = None
        if geometry.kernel[a] == 3:
            at, _, bt = matrices(m[a])
        BT.append(bt)
        AT.append(at)
        A.append(None if at is None else np.ascontiguousarray(at.T))
    acc = (np.empty if whole else np.zeros)((chunks, T, cout, cig), dtype=dtype)
    _engine.winograd_weight_grad(x.reshape(-1), dy.reshape(-1), acc.reshape(-1), geometry,
                                 tuple(m), BT, AT, A, x.shape[0], cout, groups, tb, R,
                                 chunks, threads, slots, whole, GRAD_BLOCK)
    du = acc[0]
    for i in range(1, chunks):          # a fixed order: the same bits for any threads
        du += acc[i]
    K = np.ascontiguousarray(weight_transform(geometry, m), dtype=dtype)
    dw = np.empty(cout * cig * K.shape[1], dtype=dtype)
    _engine.winograd_kernels(du.reshape(-1), dw, K, cout * cig, "inverse", threads)
    return dw.reshape(cout, -1)


def adjoint(w, geometry, groups):
    """The kernels of dx's correlation from the effective kernels w (Cout, C/g * taps):
    flipped, input and output channels exchanged within each group ((C, Cout/g, *k)).
    (Where ``flip_permutation`` exists the route reads the forward pass's transform
    instead of transforming this copy.)"""
    k = tuple(geometry.kernel)
    cout = w.shape[0]
    cig = geometry.channels // groups
    w = w.reshape((cout, cig) + k)
    cog = cout // groups
    wf = w[(slice(None), slice(None)) + (slice(None, None, -1),) * len(k)]
    wf = wf.reshape((groups, cog, cig) + k).swapaxes(1, 2)
    return np.ascontiguousarray(wf.reshape(groups * cig, -1))


def adjoint_geometry(geometry, cout):
    """dx's correlation as a geometry: dy (Cout maps of the output's size) in, x's size
    out, padded by k - 1 - p before each axis."""
    g = geometry
    return g.replace(channels=cout, size=g.out, out=g.size,
                     pad=tuple(k - 1 - p for k, p in zip(g.kernel, g.pad)), mode=0, fill=0.0)
