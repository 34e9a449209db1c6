"""Every route of the planner gives the reference's answer: the FFT route on random
geometry against scipy.signal (through the reference) and against the im2col route, its
fallback for non-finite values, its tiles within the workspace, and the planner's choice
('auto')."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vecconv as vc
from vecconv import _plan
from vecconv._options import conv_options
from reference import ref_conv2d


@st.composite
def fft_cases(draw):
    d = draw(st.sampled_from([1, 2, 3]))
    groups = draw(st.sampled_from([1, 1, 2]))
    c = groups * draw(st.integers(1, 3))
    cout = groups * draw(st.integers(1, 3))
    k = tuple(draw(st.integers(1, 6 if d < 3 else 3)) for _ in range(d))
    dil = tuple(draw(st.integers(1, 2)) for _ in range(d))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(d))
    ext = [g * (kk - 1) + 1 for g, kk in zip(dil, k)]
    size = tuple(draw(st.integers(e, e + (20 if d < 3 else 5))) for e in ext)
    mode = draw(st.sampled_from(["zeros", "constant", "reflect", "replicate", "circular",
                                 "symmetric"]))
    limit = {"reflect": lambda n: n - 1, "circular": lambda n: n}.get(mode, lambda n: 5)
    padding = tuple((draw(st.integers(0, min(4, limit(n)))),
                     draw(st.integers(0, min(4, limit(n))))) for n in size)
    table = None
    if groups == 1 and draw(st.booleans()):
        table = np.array(draw(st.lists(st.booleans(), min_size=c * cout,
                                       max_size=c * cout))).reshape(c, cout)
    opts = dict(stride=stride, padding=padding, dilation=dil, groups=groups,
                connections=table, flip=draw(st.booleans()), padding_mode=mode,
                fill_value=-0.75 if mode == "constant" else 0.0)
    n = draw(st.integers(1, 3))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    return (n, c) + size, (cout, c // groups) + k, opts, dtype, draw(st.integers(0, 2**31))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=fft_cases())
def test_the_fft_route_agrees_with_im2col_on_random_geometry(case):
    xs, ws, opts, dtype, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    ref = vc.conv(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64),
                  algorithm="im2col", **opts)
    got = vc.conv(x, w, b, algorithm="fft", **opts)
    assert got.dtype == dtype and got.shape == ref.shape
    # normwise error against float64, within what the dtype allows for this many terms
    terms = np.prod(ws[1:])
    eps = np.finfo(dtype).eps
    scale = np.sqrt(terms) * (np.abs(x).max() + 1) * (np.abs(w).max() + 1)
    assert np.abs(got - ref).max() <= 64 * eps * scale, np.abs(got - ref).max()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_fft_route_matches_scipy_for_a_large_kernel(dtype):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 2, 70, 65)).astype(dtype)
    w = rng.standard_normal((3, 2, 17, 15)).astype(dtype)
    for opts in (dict(), dict(padding="same", flip=True), dict(stride=(2, 3), padding=4)):
        got = vc.conv2d(x, w, algorithm="fft", **opts)
        ref = ref_conv2d(x, w, **opts)
        tol = 2e-4 if dtype == np.float32 else 1e-10
        np.testing.assert_allclose(got, ref, rtol=tol, atol=tol * np.abs(ref).max())


def test_nonfinite_images_take_the_gemm_route_and_stay_local():
    """A NaN in one image reaches only the outputs whose windows read it; the other
    images keep the FFT route's bits."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 2, 40, 40))
    w = rng.standard_normal((2, 2, 9, 9))
    clean = vc.conv2d(x, w, algorithm="fft")
    x[1, 0, 5, 5] = np.nan
    got = vc.conv2d(x, w, algorithm="fft")
    np.testing.assert_array_equal(got[[0, 2]], clean[[0, 2]])
    nan = np.isnan(got[1])
    assert nan[:, :6, :6].all() and nan.sum() == 2 * 36      # windows that read (5, 5)
    # a non-finite kernel: every image on the GEMM route, the same as im2col
    w[0, 0, 0, 0] = np.inf
    np.testing.assert_array_equal(vc.conv2d(x, w, algorithm="fft"),
                                  vc.conv2d(x, w, algorithm="im2col"))


@pytest.mark.parametrize("xs,ws", [((2, 3, 200, 180), (4, 3, 21, 21)),
                                   ((1, 1, 4096), (1, 1, 257)),
                                   ((4, 8, 64, 64), (8, 8, 15, 15)),
                                   ((2, 2, 20, 24, 22), (3, 2, 7, 7, 7))])
def test_the_fft_route_stays_within_its_workspace(xs, ws):
    """Everything the FFT route allocates besides its output (and the weight matrix every
    route makes) fits the workspace: traced, not estimated."""
    import tracemalloc
    rng = np.random.default_rng(1)
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    full = vc.conv(x, w, algorithm="im2col")
    for workspace in (40_000, 2**20, 4 * 2**20):
        try:
            plan = _plan.plan_conv(x.shape, w.shape, None, np.float32,
                                   conv_options(len(ws) - 2, algorithm="fft"), workspace)
        except ValueError as exc:
            assert "algorithm='fft' cannot run these kernels" in str(exc)
            continue
        assert plan.route is _plan.Route.FFT
        tracemalloc.start()
        try:
            y = vc.conv(x, w, algorithm="fft", workspace=workspace)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak - y.nbytes - w.nbytes <= workspace, (workspace, peak - y.nbytes)
        np.testing.assert_allclose(y, full, rtol=1e-4, atol=2e-3)
    with pytest.raises(ValueError, match="algorithm='fft' cannot run these kernels"):
        vc.conv(x, w, algorithm="fft", workspace=4096)


def test_auto_keeps_im2col_where_the_fft_would_lose_accuracy():
    """One large, finite value: the FFT's rounding error reaches its whole tile (and in
    float32 its sums overflow), so 'auto' leaves that image on im2col; the others keep
    the FFT route."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 8, 96, 96)).astype(np.float32)
    w = (rng.standard_normal((8, 8, 21, 21)) * 0.01).astype(np.float32)
    clean = vc.conv2d(x, w)
    assert _plan.plan_conv(x.shape, w.shape, None, np.float32,
                           conv_options(2)).route is _plan.Route.FFT
    for big in (1e37, 1e5):
        xb = x.copy()
        xb[0, 0, 90, 90] = big
        got = vc.conv2d(xb, w)
        ref = vc.conv2d(xb, w, algorithm="im2col")
        np.testing.assert_array_equal(got[0], ref[0])       # image 0 took im2col
        np.testing.assert_array_equal(got[1:], clean[1:])   # the others kept their bits
    # forced, the FFT route still refuses what would overflow
    xb[0, 0, 90, 90] = 1e37
    assert np.isfinite(vc.conv2d(xb, w, algorithm="fft")).all()


def test_zero_sized_and_huge_axes_plan_without_the_fft_route():
    y = vc.conv2d(np.ones((2, 8, 0, 64)), np.ones((8, 8, 31, 31)), padding=30)
    assert y.shape == (2, 8, 30, 94) and (y == 0).all()
    y = vc.conv2d(np.ones((2, 3, 0, 9)), np.ones((4, 3, 3, 3)), padding=2, algorithm="fft")
    assert y.shape == (2, 4, 2, 11) and (y == 0).all()
    y = vc.conv1d(np.ones((1, 1, 5)), np.ones((1, 1, 3)), dilation=2**62, padding=2**62)
    assert y.shape == (1, 1, 5)
    with pytest.raises(ValueError, match="algorithm='fft' cannot run"):
        vc.conv1d(np.ones((1, 1, 5)), np.ones((1, 1, 3)), dilation=2**40, padding=2**40,
                  algorithm="fft")


def test_auto_takes_fft_for_large_kernels_and_im2col_for_small_ones():
    options = conv_options(2)
    big = _plan.plan_conv((1, 1, 512, 512), (16, 1, 31, 31), None, np.float32, options)
    small = _plan.plan_conv((8, 64, 56, 56), (64, 64, 5, 5), None, np.float32, options)
    assert big.route is _plan.Route.FFT
    assert small.route in (_plan.Route.IM2COL, _plan.Route.STAGED)
    # a 3 x 3 stride-1 layer of enough channels takes the Winograd route, forward and dx
    wino = _plan.plan_conv((8, 64, 56, 56), (64, 64, 3, 3), None, np.float32, options)
    assert wino.route is wino.dx_route is _plan.Route.WINOGRAD
    assert wino.backward_route is _plan.Route.IM2COL
    # the backward passes keep the GEMM family
    assert big.backward_route is _plan.Route.IM2COL
    # a non-finite fill cannot take the FFT route
    opts = conv_options(2, padding=3, padding_mode="constant", fill_value=np.inf)
    assert _plan.plan_conv((1, 1, 512, 512), (16, 1, 31, 31), None, np.float32,
                           opts).route is not _plan.Route.FFT


def test_algorithm_is_checked_by_name():
    with pytest.raises(ValueError, match="algorithm must be one of"):
        vc.conv2d(np.ones((1, 1, 5, 5)), np.ones((1, 1, 3, 3)), algorithm="winograd!")
    with pytest.raises(ValueError, match="algorithm must be one of"):
        vc.conv2d(np.ones((1, 1, 5, 5)), np.ones((1, 1, 3, 3)), algorithm=None)


def test_conv_plan_says_which_route_runs_and_checks_its_arguments():
    info = vc.conv_plan((1, 1, 512, 512), (16, 1, 31, 31))
    assert info["forward"] == "fft" and info["backward"] == "im2col"
    assert info["out_shape"] == (1, 16, 482, 482) and info["fft_tile"] is not None
    assert vc.conv_plan((1, 1, 512, 512), (16, 1, 31, 31), algorithm="im2col")["forward"] \
        == "im2col"
    assert vc.conv_plan((64, 8, 7, 7), (16, 8, 1, 1))["forward"] == "pointwise"
    assert vc.conv_plan((64, 1, 32, 32), (6, 1, 5, 5))["forward"] == "staged"   # LeNet C1
    assert vc.conv_plan((1, 28, 28), (6, 1, 5, 5))["out_shape"] == (6, 24, 24)   # unbatched
    with pytest.raises(TypeError, match="x_shape and w_shape must be tuples"):
        vc.conv_plan(np.ones((1, 1, 5, 5)), (1, 1, 3, 3))
    with pytest.raises(TypeError, match="dtype must be float32 or float64"):
        vc.conv_plan((1, 1, 5, 5), (1, 1, 3, 3), dtype=np.int32)


@pytest.mark.parametrize("fill", [1e3, 1e6, 1e39])
def test_a_large_constant_fill_keeps_auto_off_the_fft_route(fill):
    """The fill of a constant pad is mixed into every tile like x's values: a large one
    (or one past float32) sends the images to im2col, whose interior outputs never see
    it."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 1, 256, 256)).astype(np.float32)
    w = rng.standard_normal((16, 1, 31, 31)).astype(np.float32)
    opts = dict(padding=15, padding_mode="constant", fill_value=fill)
    got = vc.conv2d(x, w, **opts)
    ref = vc.conv2d(x, w, algorithm="im2col", **opts)
    np.testing.assert_array_equal(got, ref)


def test_a_float32_spike_whose_square_overflows_keeps_auto_off_the_fft_route():
    x = np.zeros((1, 1, 200, 200), np.float32)
    x[0, 0, 100, 100] = 1e20
    w = np.random.default_rng(0).standard_normal((16, 1, 31, 31)).astype(np.float32)
    got = vc.conv2d(x, w)
    assert (got[:, :, :60, :60] == 0).all()          # windows that never read the spike
    np.testing.assert_array_equal(got, vc.conv2d(x, w, algorithm="im2col"))


def test_backward_and_transposed_plans_never_take_the_fft_route():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 1, 64, 64))
    w = rng.standard_normal((2, 1, 31, 31))
    y = vc.conv2d(x, w)
    # a workspace too small for the FFT's transforms is no obstacle to the GEMMs
    dx, dw, db = vc.conv2d_backward(y, x, w, algorithm="fft", workspace=4096)
    rx, rw, rb = vc.conv2d_backward(y, x, w)
    np.testing.assert_allclose(dx, rx, rtol=1e-12, atol=1e-9)
    plan = _plan.plan_conv_transpose((1, 2, 34, 34), (2, 1, 31, 31), np.float64,
                                     _options_transpose())
    assert plan.route is not _plan.Route.FFT and plan.fft_tiles is None


def _options_transpose():
    from vecconv._options import conv_transpose_options
    return conv_transpose_options(2)


@pytest.mark.parametrize("xs,ws,workspace", [
    ((1, 1, 300, 280), (3, 1, 31, 31), 2**23),      # tiles of one image at once
    ((5, 2, 90, 70), (2, 2, 25, 25), 2**21),        # chunks of images at once
    ((1, 12, 300, 300), (4, 12, 17, 17), 2**25),      # batched products, tiles at once
    ((3, 12, 60, 60), (4, 12, 17, 17), 2**21),      # batched products, one at a time
    ((2, 3, 5000), (2, 3, 301), 2**23)])
def test_the_fft_route_gives_the_same_bits_on_any_thread_count(xs, ws, workspace,
                                                                monkeypatch):
    """Its tiles run on the threads at once, each transform on one thread; tiles and
    image chunks are independent, so the thread count changes no bit."""
    from vecconv import _fft
    pools = []
    run_tasks = _fft._run_tasks

    def counted(one, tasks, concurrent):
        if concurrent > 1:
            pools.append(concurrent)
        return run_tasks(one, tasks, concurrent)

    monkeypatch.setattr(_fft, "_run_tasks", counted)
    rng = np.random.default_rng(7)
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    plan = vc.conv_plan(x.shape, w.shape, algorithm="fft", workspace=workspace)
    assert plan["forward"] == "fft"
    got = {}
    for threads in (1, 2, 3):
        with vc.config(threads=threads):
            got[threads] = vc.conv(x, w, algorithm="fft", workspace=workspace)
    np.testing.assert_array_equal(got[1], got[2])
    np.testing.assert_array_equal(got[1], got[3])
    # the concurrent branch ran where the budget holds more than one task
    assert bool(pools) == (xs != (3, 12, 60, 60)), pools
    ref = vc.conv(x.astype(np.float64), w.astype(np.float64), algorithm="im2col")
    assert np.abs(got[1] - ref).max() <= 1e-4 * np.abs(ref).max()


def test_an_error_in_one_tile_stops_the_others_and_the_route_still_works(monkeypatch):
    """A tile that raises (here its inverse transform; a Ctrl-C alike): no tile not yet
    begun starts, the helpers are waited for, the error reaches the caller, and the next
    call gives the same bits as before."""
    import scipy.fft

    from vecconv import _fft
    rng = np.random.default_rng(8)
    x = rng.standard_normal((1, 1, 700, 700)).astype(np.float32)
    w = rng.standard_normal((2, 1, 31, 31)).astype(np.float32)
    with vc.config(threads=2):
        good = vc.conv2d(x, w, algorithm="fft")
    calls = []
    real = scipy.fft.irfftn

    def failing(*args, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(_fft.scipy.fft, "irfftn", failing)
    with vc.config(threads=2), pytest.raises(KeyboardInterrupt):
        vc.conv2d(x, w, algorithm="fft")
    tiles = vc.conv_plan(x.shape, w.shape)["fft_tile"]
    assert len(calls) < -(-670 // tiles[0]) * -(-670 // tiles[1])   # not every tile ran
    monkeypatch.setattr(_fft.scipy.fft, "irfftn", real)
    with vc.config(threads=2):
        np.testing.assert_array_equal(vc.conv2d(x, w, algorithm="fft"), good)


def test_tiles_run_on_the_calling_thread_when_no_thread_can_start(monkeypatch):
    """As at the interpreter's shutdown: a helper thread that cannot start leaves its
    tiles to the calling thread."""
    import threading

    def refuse(self):
        raise RuntimeError("can't create new thread at interpreter shutdown")

    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 2, 300, 300)).astype(np.float32)
    w = rng.standard_normal((3, 2, 21, 21)).astype(np.float32)
    with vc.config(threads=1):
        ref = vc.conv2d(x, w, algorithm="fft")
    monkeypatch.setattr(threading.Thread, "start", refuse)
    with vc.config(threads=2):
        np.testing.assert_array_equal(vc.conv2d(x, w, algorithm="fft"), ref)


def test_an_image_gives_the_same_bits_alone_and_in_a_batch():
    """The tile is chosen without the batch size."""
    rng = np.random.default_rng(10)
    x = rng.standard_normal((4, 1, 600, 600)).astype(np.float32)
    w = rng.standard_normal((1, 1, 31, 31)).astype(np.float32)
    assert vc.conv_plan(x.shape, w.shape)["fft_tile"] == vc.conv_plan(x[:1].shape,
                                                                      w.shape)["fft_tile"]
    np.testing.assert_array_equal(vc.conv2d(x, w, algorithm="fft")[2:3],
                                  vc.conv2d(x[2:3], w, algorithm="fft"))


@pytest.mark.parametrize("workspace", [20_000, 86_202, 2**20])
def test_tiles_hold_at_least_the_kernels_extent_of_outputs(workspace):
    """Smaller tiles would transform more overlap than outputs (and make a task per few
    outputs): the planner refuses the route instead."""
    from vecconv._options import conv_options
    for xs, ws in (((32, 2, 96, 96), (16, 2, 11, 11)), ((128, 1, 64, 64), (2, 1, 13, 13))):
        try:
            plan = _plan.plan_conv(xs, ws, None, np.float32,
                                   conv_options(2, algorithm="fft"), workspace)
        except ValueError as exc:
            assert "cannot run these kernels" in str(exc)
            continue
        tile = plan.fft_tiles[0]
        assert all(t >= min(k, n - k + 1) for t, k, n in zip(tile, ws[2:], xs[2:])), tile


def test_the_route_never_uses_scipys_transform_threads(monkeypatch):
    """SciPy's transform pool is not fork-safe from another thread (a child could hang in
    its fork handler): the route's parallelism is its own helper threads."""
    import scipy.fft

    from vecconv import _fft
    seen = []
    for name in ("rfftn", "irfftn"):
        real = getattr(scipy.fft, name)

        def spy(*args, _real=real, **kw):
            seen.append(kw.get("workers"))
            return _real(*args, **kw)

        monkeypatch.setattr(_fft.scipy.fft, name, spy)
    x = np.random.default_rng(13).standard_normal((3, 2, 200, 200)).astype(np.float32)
    w = np.ones((2, 2, 21, 21), np.float32)
    with vc.config(threads=2):
        vc.conv2d(x, w, algorithm="fft")
    assert seen and all(v in (None, 1) for v in seen)


# ----------------------------------------------------------------------------- dW by maps
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("xs, ws, opts", [
    ((1, 12, 7, 7), (10, 12, 3, 3), dict(padding=1)),
    ((2, 5, 9, 8), (6, 5, 3, 2), dict(stride=2, padding=(1, 0), padding_mode="reflect")),
    ((3, 4, 5), (7, 4, 3), dict(padding=2, dilation=2, padding_mode="circular")),
    ((1, 3, 4, 4, 4), (2, 3, 3, 3, 3), dict(padding=1, padding_mode="constant",
                                            fill_value=0.5)),
    ((2, 6, 5, 5), (6, 4, 4, 4), dict(stride=2, padding=1, transposed=True)),
    ((1, 16, 6, 6), (80, 16, 3, 3), dict(padding=1)),         # output maps in 3 blocks
])
def test_dw_of_few_positions_is_one_product_by_output_maps(dtype, xs, ws, opts, monkeypatch):
    """Where the batch has few output positions in all, dW is one product over the whole
    patch matrix, cut by output maps: the same answer (float64 reference, and the chunked
    route's, which a workspace too small for the patch matrix takes), the same bits on 1
    and 2 threads."""
    from vecconv import _config
    monkeypatch.setattr(_config, "GRAIN_FLOPS", 0)          # small products on 2 threads
    rng = np.random.default_rng(31)
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    opts = dict(opts, algorithm="im2col")
    transposed = opts.pop("transposed", False)
    fwd = vc.conv_transpose if transposed else vc.conv
    bwd = vc.conv_transpose_backward if transposed else vc.conv_backward
    dy = rng.standard_normal(fwd(x, w, **opts).shape).astype(dtype)
    if not transposed:
        plan = _plan.plan_conv(xs, ws, None, np.dtype(dtype),
                               conv_options(len(ws) - 2, **opts), None)
        assert plan.dw_by_maps()
        assert plan.buffers("dw") == (xs[1] * plan.geometry.taps + ws[0]) \
            * xs[0] * plan.geometry.positions
    with vc.threads(1):
        one = bwd(dy, x, w, **opts)
    with vc.threads(2):
        two = bwd(dy, x, w, **opts)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)
    chunked = bwd(dy, x, w, workspace=64, **opts)
    exact = bwd(dy.astype(np.float64), x.astype(np.float64), w.astype(np.float64),
                **opts)
    tol = dict(rtol=2e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-12,
                                                                       atol=1e-12)
    scale = np.abs(exact[1]).max()
    np.testing.assert_allclose(one[1] / scale, exact[1] / scale, **tol)
    np.testing.assert_allclose(chunked[1] / scale, exact[1] / scale, **tol)
    np.testing.assert_allclose(one[0], exact[0], **tol)
