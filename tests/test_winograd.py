"""The Winograd route (F(m, 3) minimal filtering) gives the reference's answer: on random
geometry against float64 and scipy.signal (through the reference), forward and dx, in
every padding mode it takes; its fallback for non-finite values; the same bits for any
thread count; its buffers within the workspace; its errors named; the planner's choice;
and the accuracy policy that chose m."""

import math
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vecconv as vc
from vecconv import _plan, _winograd
from vecconv._options import conv_options
from reference import assert_close, peak, ref_conv1d, ref_conv2d, ref_conv3d

MODES = ["zeros", "constant", "reflect", "replicate", "circular", "symmetric"]


@st.composite
def winograd_cases(draw):
    d = draw(st.sampled_from([1, 2, 3]))
    k = tuple(draw(st.sampled_from([1, 3])) for _ in range(d))
    if 3 not in k:
        k = k[:-1] + (3,)
    groups = draw(st.sampled_from([1, 1, 2]))
    c = groups * draw(st.integers(1, 3))
    cout = groups * draw(st.integers(1, 3))
    size = tuple(draw(st.integers(1, 13 if d < 3 else 6)) for _ in range(d))
    mode = draw(st.sampled_from(MODES))
    limit = {"reflect": lambda n: n - 1, "circular": lambda n: n}.get(mode, lambda n: 3)
    padding = []
    for n, kk in zip(size, k):
        before = draw(st.integers(0, min(3, limit(n))))
        after = draw(st.integers(0, min(3, limit(n))))
        if n + before + after < kk:            # the output must not be empty
            before = after = 0 if n >= kk else None
        padding.append((before, after))
    if any(p[0] is None for p in padding):
        size = tuple(max(n, kk) for n, kk in zip(size, k))
        padding = [(0, 0)] * d
    table = None
    if groups == 1 and draw(st.booleans()):
        table = np.array(draw(st.lists(st.booleans(), min_size=c * cout,
                                       max_size=c * cout))).reshape(c, cout)
    opts = dict(padding=tuple(padding), groups=groups, connections=table,
                flip=draw(st.booleans()), padding_mode=mode,
                fill_value=-0.75 if mode == "constant" else 0.0)
    n = draw(st.integers(1, 3))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    # rounds shared step by step (FUSED_BYTES 0) or a unit each; a tight workspace
    opts["workspace"] = draw(st.sampled_from([None, None, 2**13, 2**15, 2**17]))
    fused = draw(st.sampled_from([None, 0]))
    return ((n, c) + size, (cout, c // groups) + k, opts, dtype, draw(st.integers(0, 2**31)),
            fused)


def _normwise(got, ref):
    ref = np.asarray(ref, dtype=np.float64)
    return np.linalg.norm(np.asarray(got, dtype=np.float64) - ref) / max(
        np.linalg.norm(ref), 1e-300)


def _within(got, ref, magnitude, dtype, terms):
    """|got - ref| (normwise) within what the dtype allows for sums of ``terms``
    products, measured against ``magnitude``, the same sums of the terms' absolute values
    (a cancelling sum has a small result, not a small error): F(m, 3)'s error is a small
    multiple of the direct sum's (the accuracy policy holds it within 4x)."""
    err = np.linalg.norm(np.asarray(got, np.float64) - ref)
    return err <= 64 * np.finfo(dtype).eps * math.sqrt(terms) * np.linalg.norm(magnitude)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=winograd_cases())
def test_the_winograd_route_agrees_with_float64_on_random_geometry(case):
    xs, ws, opts, dtype, seed, fused = case
    saved = _winograd.FUSED_BYTES
    try:
        if fused is not None:
            _winograd.FUSED_BYTES = fused
        _check_random_case(xs, ws, opts, dtype, seed)
    finally:
        _winograd.FUSED_BYTES = saved


def _check_random_case(xs, ws, opts, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    try:
        plan = vc.conv_plan(xs, ws, dtype=dtype, algorithm="winograd", **opts)
    except ValueError as exc:       # a tight workspace: refused by name, nothing run
        assert opts["workspace"] and "do not fit a workspace" in str(exc)
        return
    assert plan["forward"] == "winograd" and plan["dw"] in ("winograd", "im2col")
    ref = vc.conv(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64),
                  algorithm="im2col", **opts)
    x0, w0 = x.copy(), w.copy()
    got = vc.conv(x, w, b, algorithm="winograd", **opts)
    assert got.dtype == dtype and got.shape == ref.shape
    absolute = dict(opts, fill_value=abs(opts["fill_value"]))
    magnitude = vc.conv(np.abs(x.astype(np.float64)), np.abs(w.astype(np.float64)),
                        np.abs(b.astype(np.float64)), algorithm="im2col", **absolute)
    assert _within(got, ref, magnitude, dtype, np.prod(ws[1:]))
    # dx takes the route under a constant padding, the backward route otherwise; dW always
    dy = rng.standard_normal(ref.shape).astype(dtype)
    assert plan["dx"] in (("winograd", "im2col") if opts["workspace"] else ("winograd",)) \
        if opts["padding_mode"] in ("zeros", "constant") else plan["dx"] == "im2col"
    dx_ref, dw_ref, db_ref = vc.conv_backward(dy.astype(np.float64), x.astype(np.float64),
                                              w.astype(np.float64), algorithm="im2col",
                                              **opts)
    dx, dw, db = vc.conv_backward(dy, x, w, algorithm="winograd", **opts)
    assert dx.dtype == dtype and dx.shape == x.shape
    dx_magnitude = vc.conv_backward(np.abs(dy.astype(np.float64)), x.astype(np.float64),
                                    np.abs(w.astype(np.float64)), algorithm="im2col",
                                    weight_grad=False, **absolute)[0]
    assert _within(dx, dx_ref, dx_magnitude, dtype, np.prod(ws[2:]) * ws[0])
    assert_close(dw, dw_ref, scale=peak(dw_ref))
    assert_close(db, db_ref, scale=peak(db_ref))
    np.testing.assert_array_equal(x, x0)          # the inputs are not modified
    np.testing.assert_array_equal(w, w0)


REFERENCES = {1: ref_conv1d, 2: ref_conv2d, 3: ref_conv3d}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("xs, ws, padding", [
    ((2, 5, 17, 19), (6, 5, 3, 3), 1),          # F(2 x 2, 3 x 3), edge tiles cut
    ((3, 4, 40), (5, 4, 3), 2),                 # F(m, 3) in 1-D
    ((2, 3, 5, 7, 6), (4, 3, 3, 3, 3), 1),      # F(2^3, 3^3)
    ((2, 4, 9, 8), (4, 2, 3, 1), (1, 0)),       # a 3 x 1 kernel, groups 2
])
def test_the_winograd_route_matches_scipy(dtype, xs, ws, padding):
    rng = np.random.default_rng(5)
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    d = len(xs) - 2
    groups = xs[1] // ws[1]
    got = vc.conv(x, w, b, padding=padding, groups=groups, algorithm="winograd")
    ref = REFERENCES[d](x.astype(np.float64), w.astype(np.float64), b.astype(np.float64),
                        padding=padding, groups=groups)
    assert_close(got, ref, scale=peak(ref))


def test_a_resnet_layer_takes_the_route_and_matches_pytorch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 32, 14, 14)).astype(np.float32)
    w = (rng.standard_normal((32, 32, 3, 3)) / 17).astype(np.float32)
    plan = vc.conv_plan(x.shape, w.shape, padding=1, algorithm="winograd")
    assert (plan["forward"], plan["dx"], plan["dw"]) == ("winograd",) * 3
    tx = torch.from_numpy(x).requires_grad_()
    tw = torch.from_numpy(w).requires_grad_()
    ty = torch.nn.functional.conv2d(tx, tw, padding=1)
    dy = rng.standard_normal(ty.shape).astype(np.float32)
    ty.backward(torch.from_numpy(dy))
    y = vc.conv2d(x, w, padding=1, algorithm="winograd")
    dx, dw, _ = vc.conv2d_backward(dy, x, w, padding=1, algorithm="winograd")
    assert_close(y, ty.detach().numpy(), scale=peak(y))
    assert_close(dx, tx.grad.numpy(), scale=peak(dx))
    assert_close(dw, tw.grad.numpy(), scale=peak(dw))


def test_the_accuracy_policy_holds_on_resnet_like_layers():
    """The error of the route stays within 4x the im2col route's (normwise, against an
    extended-precision reference), for y and dx, in both dtypes: what chose m (TILE)."""
    from numpy.lib.stride_tricks import sliding_window_view
    rng = np.random.default_rng(2)
    x64 = np.maximum(rng.standard_normal((2, 48, 12, 12)), 0)     # rectified, as in a net
    w64 = rng.standard_normal((40, 48, 3, 3)) / math.sqrt(48 * 9)
    xp = np.pad(x64.astype(np.longdouble), ((0, 0), (0, 0), (1, 1), (1, 1)))
    patches = sliding_window_view(xp, (3, 3), axis=(2, 3))
    exact = np.einsum("ncxyij,ocij->noxy", patches, w64.astype(np.longdouble))
    exact = exact.astype(np.float64)
    for dtype in (np.float32, np.float64):
        x, w = x64.astype(dtype), w64.astype(dtype)
        e_wino = _normwise(vc.conv2d(x, w, padding=1, algorithm="winograd"), exact)
        e_gemm = _normwise(vc.conv2d(x, w, padding=1, algorithm="im2col"), exact)
        assert e_wino <= 4 * e_gemm, (dtype, e_wino, e_gemm)


def test_nonfinite_images_take_the_backward_route_and_stay_local():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 6, 11, 11))
    w = rng.standard_normal((5, 6, 3, 3))
    clean = vc.conv2d(x, w, padding=1, algorithm="winograd")
    xb = x.copy()
    xb[1, 2, 4, 4] = np.nan
    xb[3, 0, 0, 0] = np.inf
    got = vc.conv2d(xb, w, padding=1, algorithm="winograd")
    ref = vc.conv2d(xb[[1, 3]], w, padding=1, algorithm="im2col")
    # the clean images are computed as before, bit for bit; the others as im2col does
    np.testing.assert_array_equal(got[[0, 2]], clean[[0, 2]])
    np.testing.assert_array_equal(got[[1, 3]], ref)
    # the NaN reaches only the outputs whose windows read it
    assert np.isnan(got[1]).sum() == np.isnan(ref[0]).sum() == 5 * 9
    dy = rng.standard_normal(clean.shape)
    dy[2, 1, 5, 5] = np.inf
    dx = vc.conv2d_backward(dy, x, w, padding=1, algorithm="winograd", weight_grad=False)[0]
    dx_ref = vc.conv2d_backward(dy, x, w, padding=1, algorithm="im2col", weight_grad=False)[0]
    np.testing.assert_array_equal(np.isfinite(dx), np.isfinite(dx_ref))
    assert_close(dx[[0, 1, 3]], dx_ref[[0, 1, 3]], against="regrouped",
                 scale=peak(dx_ref[[0, 1, 3]]))
    # non-finite kernels, or a huge value: every image on the backward route
    wb = w.copy()
    wb[0, 0, 1, 1] = np.inf
    np.testing.assert_array_equal(vc.conv2d(x, wb, padding=1, algorithm="winograd"),
                                  vc.conv2d(x, wb, padding=1, algorithm="im2col"))
    xh = x.copy()
    xh[0, 0, 0, 0] = 1e306
    np.testing.assert_array_equal(vc.conv2d(xh, w, padding=1, algorithm="winograd")[0],
                                  vc.conv2d(xh[:1], w, padding=1, algorithm="im2col")[0])


def test_the_kernel_gradient_sums_its_chunks_and_leaves_nonfinite_batches_to_im2col(
        monkeypatch):
    """dW on the route: every chunk of the tiles sums its own dU, added in a fixed order;
    a batch with a NaN or inf anywhere takes im2col's dW (a sum over the batch: the
    non-finite value reaches every kernel entry its windows read, as there)."""
    rng = np.random.default_rng(13)
    x = rng.standard_normal((4, 10, 17, 15))
    w = rng.standard_normal((6, 10, 3, 3))
    dy = rng.standard_normal((4, 6, 17, 15))
    ref = vc.conv2d_backward(dy, x, w, padding=1, algorithm="im2col", input_grad=False)[1]
    monkeypatch.setattr(_winograd, "WHOLE_GRAD_BYTES", 0)     # chunks, not every tile
    for chunks in (1, 3, 8):
        monkeypatch.setattr(_winograd, "MAX_CHUNKS", chunks)
        monkeypatch.setattr(_winograd, "FUSED_BYTES", 1)     # rounds of MIN_GRAD_TILES
        plan = _plan.plan_conv(x.shape, w.shape, None, np.float64,
                               conv_options(2, padding=1, algorithm="winograd"))
        assert plan.dw_winograd[1][2] == min(chunks, 5)        # 288 tiles, 64 a round
        got = vc.conv2d_backward(dy, x, w, padding=1, algorithm="winograd",
                                 input_grad=False)[1]
        assert_close(got, ref, against="regrouped", scale=peak(ref))
    xb = x.copy()
    xb[2, 3, 4, 5] = np.inf
    np.testing.assert_array_equal(
        vc.conv2d_backward(dy, xb, w, padding=1, algorithm="winograd", input_grad=False)[1],
        vc.conv2d_backward(dy, xb, w, padding=1, algorithm="im2col", input_grad=False)[1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("fused", [True, False])
def test_the_same_bits_with_any_thread_count(dtype, fused, monkeypatch):
    """Every cut is the shapes' and the workspace's, never the thread count's: the
    kernels' transform too (test_kernel_transforms cuts it into several units)."""
    monkeypatch.setattr(_winograd, "FUSED_BYTES", 2**40 if fused else 0)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 24, 30, 30)).astype(dtype)
    w = rng.standard_normal((25, 24, 3, 3)).astype(dtype)
    dy = rng.standard_normal((3, 25, 30, 30)).astype(dtype)
    results = []
    for n in (1, 2, 3):
        with vc.config(threads=n):
            results.append((vc.conv2d(x, w, padding=1, algorithm="winograd"),)
                           + vc.conv2d_backward(dy, x, w, padding=1, algorithm="winograd"))
    for got in results[1:]:
        for a, b in zip(got, results[0]):
            np.testing.assert_array_equal(a, b)


class _Axes:
    """A geometry's kernel sizes, all the kernels' transform reads."""
    def __init__(self, kernel):
        self.kernel = kernel


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kernel", [(1, 1, 3), (1, 3, 3), (3, 3, 3)])
def test_kernel_transforms(dtype, kernel):
    """The engine's loop over kernels: U = K vec(g) for each kernel and K^T dU for dW,
    against float64 products; the same bits on 1, 2 and 3 threads (over 4096 kernels:
    several units, a short last block)."""
    from vecconv import _engine
    rng = np.random.default_rng(21)
    m = tuple(2 if k == 3 else 1 for k in kernel)
    K = np.ascontiguousarray(_winograd.weight_transform(_Axes(kernel), m), dtype=dtype)
    T, taps = K.shape
    pairs = 111 * 41
    w = rng.standard_normal((pairs, taps)).astype(dtype)
    outs = {}
    for threads in (1, 2, 3):
        u = np.empty(T * pairs, dtype)
        _engine.winograd_kernels(w.reshape(-1), u, K, pairs, "forward", threads)
        dw = np.empty(pairs * taps, dtype)
        _engine.winograd_kernels(u, dw, K, pairs, "inverse", threads)
        outs[threads] = (u, dw)
    for got in (outs[2], outs[3]):
        for a, b in zip(got, outs[1]):
            np.testing.assert_array_equal(a, b)
    u, dw = outs[1]
    K64 = K.astype(np.float64)
    tol = 8 * np.finfo(dtype).eps
    np.testing.assert_allclose(u.reshape(T, pairs), K64 @ w.T.astype(np.float64),
                               rtol=tol, atol=tol * 8)
    np.testing.assert_allclose(dw.reshape(pairs, taps), (K64.T @ u.reshape(T, pairs)).T,
                               rtol=tol, atol=tol * 64)
    # bit for bit: each output is its nonzero terms summed in order, in the dtype
    some = slice(4090, 4100)                    # across two units
    want_u = np.zeros((T, 10), dtype)
    want_dw = np.zeros((10, taps), dtype)
    for o in range(T):
        first = True
        for c in np.flatnonzero(K[o]):
            term = K[o, c] * w[some, c]
            want_u[o] = term if first else want_u[o] + term
            first = False
    for c in range(taps):
        first = True
        for o in np.flatnonzero(K[:, c]):
            term = K[o, c] * u.reshape(T, pairs)[o, some]
            want_dw[:, c] = term if first else want_dw[:, c] + term
            first = False
    np.testing.assert_array_equal(u.reshape(T, pairs)[:, some], want_u)
    np.testing.assert_array_equal(dw.reshape(pairs, taps)[some], want_dw)


@pytest.mark.parametrize("kernel", [(1, 1, 3), (1, 3, 3), (3, 3, 3), (3, 1, 3)])
def test_flipped_kernels_transform_to_permuted_taps(kernel):
    """dx reads the forward pass's U: the flipped kernel's transform is the kernel's,
    its taps permuted (the same products, summed in another order), for F(2, 3); a tile
    whose points are
    not closed under 1/p has no such permutation and transforms a flipped copy."""
    rng = np.random.default_rng(5)
    m = tuple(2 if k == 3 else 1 for k in kernel)
    perm = _winograd.flip_permutation(kernel, m)
    K = _winograd.weight_transform(_Axes(kernel), m)
    g = rng.standard_normal((7, math.prod(kernel)))
    np.testing.assert_allclose(K @ g[:, ::-1].T, (K @ g.T)[list(perm)], rtol=0,
                               atol=64 * np.finfo(float).eps * np.abs(g).max())
    assert sorted(perm) == list(range(K.shape[0]))
    assert all(perm[p] == t for t, p in enumerate(perm))     # (its own inverse)
    assert _winograd.flip_permutation(kernel, tuple(3 if k == 3 else 1 for k in kernel)) \
        is None


def test_kernel_transforms_refuse_bad_arguments():
    from vecconv import _engine
    K = np.ones((4, 3))
    w = np.ones(6 * 3)
    with pytest.raises(ValueError, match="unknown kernel transform"):
        _engine.winograd_kernels(w, np.empty(24), K, 6, "sideways", 1)
    with pytest.raises(ValueError, match="dst has"):
        _engine.winograd_kernels(w, np.empty(23), K, 6, "forward", 1)
    with pytest.raises(ValueError, match="bad threads"):
        _engine.winograd_kernels(w, np.empty(24), K, 6, "forward", 0)
    with pytest.raises(ValueError, match="src has"):
        _engine.winograd_kernels(w[:-1], np.empty(24), K, 6, "forward", 1)
    with pytest.raises(ValueError, match="too many kernels"):    # (pairs * 4 wraps to 24)
        _engine.winograd_kernels(w, np.empty(24), K, 2**62 + 6, "forward", 1)


def test_every_tile_at_once_over_several_tile_blocks():
    """The whole-batch dW in float32 over 330 tiles (a round of 64 would take no more
    than one dU): three transform units of tiles, the last one short, split over threads; the same bits on 1, 2 and 3 threads, im2col's
    answer."""
    rng = np.random.default_rng(23)
    x = rng.standard_normal((3, 128, 21, 19)).astype(np.float32)
    w = rng.standard_normal((128, 128, 3, 3)).astype(np.float32)
    dy = rng.standard_normal((3, 128, 21, 19)).astype(np.float32)
    plan = _plan.plan_conv(x.shape, w.shape, None, np.float32,
                           conv_options(2, padding=1, algorithm="winograd"))
    assert plan.dw_winograd[1] == (128, 330, 1, True)
    got = []
    for n in (1, 2, 3):
        with vc.config(threads=n):
            got.append(vc.conv2d_backward(dy, x, w, padding=1, algorithm="winograd",
                                          input_grad=False)[1])
    for g in got[1:]:
        np.testing.assert_array_equal(g, got[0])
    ref = vc.conv2d_backward(dy.astype(np.float64), x.astype(np.float64),
                             w.astype(np.float64), padding=1, input_grad=False)[1]
    assert_close(got[0], ref, against="regrouped", scale=peak(ref))


@pytest.mark.parametrize("groups", [1, 2])
def test_the_kernel_gradient_of_every_tile_at_once(groups, monkeypatch):
    """dW from every tile's V and dM at once (one product per transformed tap over all
    the tiles), what few tiles and large kernels take, agrees with the chunks and with
    im2col and gives the same bits on 1, 2 and 3 threads."""
    rng = np.random.default_rng(17)
    c = 40 * groups
    x = rng.standard_normal((2, c, 5, 6))
    w = rng.standard_normal((c, 40, 3, 3))
    dy = rng.standard_normal((2, c, 5, 6))
    opts = dict(padding=1, groups=groups)
    plan = _plan.plan_conv(x.shape, w.shape, None, np.float64,
                           conv_options(2, algorithm="winograd", **opts))
    m = plan.dw_winograd[0]
    assert plan.dw_winograd[1] == (18, 18, 1, True)            # 18 tiles
    ref = vc.conv2d_backward(dy, x, w, algorithm="im2col", input_grad=False, **opts)[1]
    got = []
    for n in (1, 2, 3):
        with vc.config(threads=n):
            got.append(vc.conv2d_backward(dy, x, w, algorithm="winograd", input_grad=False,
                                          **opts)[1])
    for g in got[1:]:
        np.testing.assert_array_equal(g, got[0])
    assert_close(got[0], ref, against="regrouped", scale=peak(ref))
    monkeypatch.setattr(_winograd, "WHOLE_GRAD_BYTES", 0)
    sched = _winograd.grad_schedule(2, plan.geometry, c, groups, m, 8, 2**26, 1)
    assert sched[3] is False
    chunked = _winograd.weight_grad(x.reshape(2, c, -1), dy.reshape(2, c, -1), plan.geometry,
                                    c, groups, m, sched, 2, 2)
    assert_close(chunked.reshape(w.shape), got[0], against="regrouped", scale=peak(ref))


@pytest.mark.parametrize("fused", [True, False])
def test_both_ways_of_sharing_a_round_agree(fused, monkeypatch):
    """A unit that is a whole round (few channels) and rounds shared step by step (many)
    give the same answer."""
    monkeypatch.setattr(_winograd, "FUSED_BYTES", 2**40 if fused else 0)
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 20, 23, 17))
    w = rng.standard_normal((12, 20, 3, 3))
    plan = _plan.plan_conv(x.shape, w.shape, None, np.float64,
                           conv_options(2, padding=1, algorithm="winograd"))
    assert plan.winograd[1][4] is fused
    assert_close(vc.conv2d(x, w, padding=1, algorithm="winograd"),
                 ref_conv2d(x, w, padding=1), scale=peak(x) * 60)


def test_the_route_stays_within_its_workspace():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, 64, 40, 40)).astype(np.float32)
    w = rng.standard_normal((64, 64, 3, 3)).astype(np.float32)
    ref = vc.conv2d(x, w, padding=1, algorithm="im2col")
    for workspace in (2**19, 2**21, 2**24):
        plan = _plan.plan_conv(x.shape, w.shape, None, np.float32,
                               conv_options(2, padding=1, algorithm="winograd"), workspace)
        tracemalloc.start()
        try:
            y = vc.conv2d(x, w, padding=1, algorithm="winograd", workspace=workspace)
            _, top = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        out = y.nbytes
        assert top <= workspace + out + w.nbytes * 3 + 2**16, (workspace, top)
        assert plan.memory() <= workspace + out + w.nbytes * 2
        assert_close(y, ref, scale=peak(ref))
    with pytest.raises(ValueError, match="do not fit a workspace of 4096 bytes"):
        vc.conv2d(x, w, padding=1, algorithm="winograd", workspace=4096)


@pytest.mark.parametrize("opts, why", [
    (dict(stride=2), "stride 1 and dilation 1"),
    (dict(dilation=2), "stride 1 and dilation 1"),
    (dict(kernel=5), "3 taps"),
    (dict(padding_mode="constant", fill_value=np.nan, padding=1), "finite fill_value"),
])
def test_forcing_the_route_where_it_cannot_run_names_why(opts, why):
    opts = dict(opts)
    k = opts.pop("kernel", 3)
    with pytest.raises(ValueError, match=f"algorithm='winograd' cannot run.*{why}"):
        vc.conv2d(np.ones((1, 2, 9, 9)), np.ones((2, 2, k, k)), algorithm="winograd",
                  **opts)


def test_empty_batches_and_single_pixels():
    w = np.ones((3, 2, 3, 3))
    y = vc.conv2d(np.ones((0, 2, 8, 8)), w, padding=1, algorithm="winograd")
    assert y.shape == (0, 3, 8, 8)
    x = np.arange(2.0).reshape(1, 2, 1, 1)
    np.testing.assert_allclose(vc.conv2d(x, w, padding=1, algorithm="winograd"),
                               vc.conv2d(x, w, padding=1, algorithm="im2col"), rtol=1e-14)


def test_a_reflect_padded_layer_takes_the_route_but_for_dx():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 3, 10, 9))
    w = rng.standard_normal((4, 3, 3, 3))
    plan = vc.conv_plan(x.shape, w.shape, padding=1, padding_mode="reflect",
                        algorithm="winograd", dtype=np.float64)
    assert (plan["forward"], plan["dx"], plan["dw"]) == ("winograd", "im2col", "winograd")
    dy = rng.standard_normal((2, 4, 10, 9))
    got = vc.conv2d_backward(dy, x, w, padding=1, padding_mode="reflect",
                             algorithm="winograd")
    ref = vc.conv2d_backward(dy, x, w, padding=1, padding_mode="reflect",
                             algorithm="im2col")
    np.testing.assert_array_equal(got[0], ref[0])          # dx: the same path
    assert_close(got[1], ref[1], against="regrouped", scale=peak(ref[1]))
    np.testing.assert_array_equal(got[2], ref[2])


def test_the_transforms_are_exact_identities():
    """A^T [(G g) * (B^T d)] is the 3-tap correlation of d with g, for every m, in exact
    rational arithmetic's stead float64 on small integers."""
    rng = np.random.default_rng(9)
    for m in _winograd.POINTS:
        AT, G, BT = _winograd.matrices(m)
        d = rng.integers(-4, 5, m + 2).astype(np.float64)
        g = rng.integers(-4, 5, 3).astype(np.float64)
        want = np.array([d[i:i + 3] @ g for i in range(m)])
        np.testing.assert_allclose(AT @ ((G @ g) * (BT @ d)), want, atol=1e-12)



@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("xs, ws, opts", [
    ((3, 5, 13, 11), (4, 5, 3, 3), dict(padding=1)),
    ((2, 4, 9), (6, 2, 3), dict(padding=2, groups=2)),
    ((2, 3, 5, 7, 6), (4, 3, 3, 3, 3), dict(padding=1)),
    ((2, 3, 7, 9), (4, 3, 3, 1), dict(padding=(1, 0), padding_mode="circular")),
    ((2, 2, 6, 6), (3, 2, 3, 3), dict(padding=2, padding_mode="constant", fill_value=0.5)),
])
def test_f2_transforms_by_their_own_loops_give_the_generic_loops_bits(dtype, xs, ws, opts):
    """F(2, 3)'s transforms (B^T, A^T and dW's A) run by loops of their own; they make the
    same products and sums, in the same order, as the loop for any transform matrix."""
    from vecconv import _engine
    rng = np.random.default_rng(21)
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    opts = dict(opts, algorithm="winograd")
    dy = rng.standard_normal(vc.conv(x, w, **opts).shape).astype(dtype)
    got = {}
    try:
        for own in (True, False):
            _engine.set_winograd_own_loops(own)
            got[own] = (vc.conv(x, w, **opts),) + vc.conv_backward(dy, x, w, **opts)[:2]
    finally:
        _engine.set_winograd_own_loops(True)
    for a, b in zip(got[True], got[False]):
        np.testing.assert_array_equal(a, b)
    ref = (vc.conv(x, w, **dict(opts, algorithm="im2col")),) + vc.conv_backward(
        dy, x, w, **dict(opts, algorithm="im2col"))[:2]
    for a, b in zip(got[True], ref):
        assert_close(a, b, against="regrouped", scale=peak(b))


def test_the_generic_transform_loop_serves_a_larger_tile(monkeypatch):
    """m = 3 (5 x 5 transforms: no loop of their own) is still the convolution."""
    monkeypatch.setitem(_winograd.TILE, ("float64", 2), 3)
    rng = np.random.default_rng(22)
    x = rng.standard_normal((2, 3, 10, 9))
    w = rng.standard_normal((4, 3, 3, 3))
    opts = dict(padding=1, algorithm="winograd")
    y = vc.conv(x, w, **opts)
    dy = rng.standard_normal(y.shape)
    dx, dw, _ = vc.conv_backward(dy, x, w, **opts)
    ref = dict(padding=1, algorithm="im2col")
    rdx, rdw, _ = vc.conv_backward(dy, x, w, **ref)
    assert_close(y, vc.conv(x, w, **ref), against="regrouped", scale=peak(y))
    assert_close(dx, rdx, against="regrouped", scale=peak(rdx))
    assert_close(dw, rdw, against="regrouped", scale=peak(rdw))

# ----------------------------------------------------------------------------- front ends
def test_conv_transpose_takes_the_route_for_its_forward_and_dx():
    rng = np.random.default_rng(10)
    x = rng.standard_normal((2, 8, 12, 11))
    w = rng.standard_normal((8, 6, 3, 3))
    dy = rng.standard_normal((2, 6, 12, 11))
    ref_y = vc.conv_transpose2d(x, w, padding=1, algorithm="im2col")
    ref_g = vc.conv_transpose2d_backward(dy, x, w, padding=1, algorithm="im2col")
    plan = _plan.plan_conv_transpose(x.shape, w.shape, np.float64, _transpose(2, "winograd"))
    assert plan.route is plan.dx_route is _plan.Route.WINOGRAD
    assert_close(vc.conv_transpose2d(x, w, padding=1, algorithm="winograd"), ref_y,
                 against="regrouped", scale=peak(ref_y))
    for got, ref in zip(vc.conv_transpose2d_backward(dy, x, w, padding=1,
                                                     algorithm="winograd"), ref_g):
        assert_close(got, ref, against="regrouped", scale=peak(ref))
    with pytest.raises(ValueError, match="algorithm must be one of .* transposed"):
        vc.conv_transpose2d(x, w, algorithm="fft")
    with pytest.raises(ValueError, match="algorithm='winograd' cannot run"):
        vc.conv_transpose2d(x, w, stride=2, algorithm="winograd")


def _transpose(d, algorithm):
    from vecconv._options import conv_transpose_options
    return conv_transpose_options(d, padding=1, algorithm=algorithm)


def test_layers_keep_their_algorithm_through_a_model_file(tmp_path):
    net = vc.nn.Sequential([vc.nn.Conv2D(3, 8, 3, padding=1, algorithm="winograd", seed=0),
                            vc.nn.ConvTranspose2D(8, 4, 3, padding=1, algorithm="im2col",
                                                  seed=1)])
    x = np.random.default_rng(11).standard_normal((2, 3, 10, 10)).astype(np.float32)
    y = net.forward(x)
    path = vc.nn.save(net, tmp_path / "net.npz")
    back = vc.nn.load(path)
    assert [layer.algorithm for layer in back.layers] == ["winograd", "im2col"]
    np.testing.assert_array_equal(back.forward(x), y)
    with pytest.raises(ValueError, match="algorithm must be one of"):
        vc.nn.Conv2D(3, 8, 3, algorithm="gemm")
    # the layer's plan takes the route; its gradients are the im2col layer's
    ref = vc.nn.Conv2D(3, 8, 3, padding=1, algorithm="im2col", seed=0)
    wino = vc.nn.Conv2D(3, 8, 3, padding=1, algorithm="winograd", seed=0)
    dy = np.ones((2, 8, 10, 10), np.float32)
    assert_close(wino.forward(x), ref.forward(x), against="regrouped", scale=10)
    assert_close(wino.backward(dy), ref.backward(dy), against="regrouped", scale=10)
    assert_close(wino.grads["w"], ref.grads["w"], against="regrouped", scale=100)


def test_the_torch_bridge_passes_the_algorithm_on_to_every_order():
    torch = pytest.importorskip("torch")
    import vecconv.torch as vt
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 6, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, generator=gen, requires_grad=True)

    def f(x, w, b):
        return vt.conv(x, w, b, padding=1, algorithm="winograd")

    assert torch.autograd.gradcheck(f, (x, w, b), atol=1e-7)
    assert torch.autograd.gradgradcheck(f, (x, w, b), atol=1e-7)
    y = f(x, w, b)
    ref = torch.nn.functional.conv2d(x, w, b, padding=1)
    torch.testing.assert_close(y, ref)


def test_dask_blocks_take_the_route():
    da = pytest.importorskip("dask.array")
    import vecconv.dask as vd
    rng = np.random.default_rng(12)
    x = rng.standard_normal((3, 4, 40, 30))
    w = rng.standard_normal((5, 4, 3, 3))
    xd = da.from_array(x, chunks=(2, 4, 16, 16))
    got = vd.conv(xd, w, padding=1, algorithm="winograd").compute()
    assert_close(got, ref_conv2d(x, w, padding=1), scale=peak(x) * 30)
    dy = rng.standard_normal(got.shape)
    dx, dw, _ = vd.conv_backward(da.from_array(dy, chunks=(2, 5, 16, 16)), xd, w, padding=1,
                                 algorithm="winograd")
    dx_ref, dw_ref, _ = vc.conv2d_backward(dy, x, w, padding=1, algorithm="im2col")
    assert_close(dx.compute(), dx_ref, against="regrouped", scale=peak(dx_ref))
    assert_close(dw.compute(), dw_ref, against="regrouped", scale=peak(dw_ref))


# ----------------------------------------------------------------------------- hostile use
def test_a_table_with_a_nonfinite_delta_takes_per_map_for_that_image_alone():
    """Under a connection table, dx of an image whose dy holds a NaN is computed per map
    (the NaN reaches only the inputs its table connects), as im2col does."""
    table = np.array([[True, False], [False, True]])
    rng = np.random.default_rng(20)
    x = rng.standard_normal((4, 2, 6, 6))
    w = rng.standard_normal((2, 2, 3, 3))
    dy = rng.standard_normal((4, 2, 6, 6))
    dy[1, 1, 5, 5] = np.nan
    dy[2, 0, 0, 0] = 1e306
    opts = dict(padding=1, connections=table)
    got = vc.conv2d_backward(dy, x, w, algorithm="winograd", weight_grad=False, **opts)[0]
    ref = vc.conv2d_backward(dy, x, w, algorithm="im2col", weight_grad=False, **opts)[0]
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    assert not np.isnan(got[1, 0]).any()
    assert_close(got[[0, 3]], ref[[0, 3]], against="regrouped", scale=peak(ref[[0, 3]]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_finite_values_that_the_transforms_would_overflow_take_im2col(dtype):
    """Values below the dtype's largest whose transformed sums would overflow: the
    image takes im2col, whose sums do not (eq. 1's largest output is finite here)."""
    big = np.finfo(dtype).max / 4096 / 4 * 0.999
    s = np.array([-2.0, 1, 1, -2])
    x = np.zeros((2, 64, 6, 6), dtype)
    x[0, :, 1:5, 1:5] = big * np.outer(s, s)
    x[1] = 1
    w = np.ones((4, 64, 3, 3), dtype) / 64
    got = vc.conv2d(x, w, padding=1, algorithm="winograd")
    ref = vc.conv2d(x, w, padding=1, algorithm="im2col")
    assert np.isfinite(ref).all() and np.isfinite(got).all()
    np.testing.assert_array_equal(got[0], vc.conv2d(x[:1], w, padding=1,
                                                    algorithm="im2col")[0])
    assert_close(got[1], ref[1], scale=peak(ref[1]))


def test_a_nonfinite_fill_leaves_dx_on_the_route():
    """dx reads no pad: a NaN fill_value does not keep it off the route."""
    rng = np.random.default_rng(21)
    x = rng.standard_normal((2, 16, 12, 12)).astype(np.float32)
    w = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    dy = rng.standard_normal((2, 16, 12, 12)).astype(np.float32)
    opts = dict(padding=1, padding_mode="constant", fill_value=np.nan)
    got = vc.conv2d_backward(dy, x, w, weight_grad=False, **opts)[0]
    ref = vc.conv2d_backward(dy.astype(np.float64), x, w.astype(np.float64),
                             algorithm="im2col", weight_grad=False, **opts)[0]
    assert np.isfinite(got).all()
    assert_close(got, ref, scale=peak(ref))


def test_whether_the_route_fits_does_not_depend_on_the_batch():
    w = np.ones((9, 2, 3, 3))
    for n in (1, 2, 5):
        y = vc.conv2d(np.ones((n, 6, 12, 12)), w, groups=3, padding=1, algorithm="winograd",
                      workspace=20000)
        np.testing.assert_allclose(y, vc.conv2d(np.ones((n, 6, 12, 12)), w, groups=3,
                                                padding=1, algorithm="im2col"), rtol=1e-13)


def test_layers_check_a_forced_algorithm_when_built():
    with pytest.raises(ValueError, match="cannot run this layer: it needs kernels of 3 taps"):
        vc.nn.Conv2D(2, 4, 5, algorithm="winograd")
    with pytest.raises(ValueError, match="'winograd' cannot run this layer: it needs stride 1"):
        vc.nn.ConvTranspose2D(2, 4, 3, stride=2, algorithm="winograd")
    with pytest.raises(ValueError, match="algorithm='direct' runs grouped convolutions"):
        vc.nn.Conv2D(2, 4, 3, algorithm="direct")
    # an empty map has nothing to transform: the forced route is not asked
    assert vc.conv2d(np.ones((2, 3, 0, 5)), np.ones((4, 3, 3, 3)), padding=2,
                     algorithm="winograd").shape == (2, 4, 2, 7)
