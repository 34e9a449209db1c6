"""vecconv.dask against the in-memory functions: any chunking gives the same numbers.

The convolutions are compared to rounding (a block's GEMMs add the same terms as the
whole array's, not always in the same order); pooling to the bit, since every window is
computed by the same kernel from the same taps. The Dask graphs run on the synchronous
scheduler here, and on a LocalCluster of worker processes in ``test_process_cluster``.
"""

import dask
import dask.array as da
import distributed
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vecconv
import vecconv.dask as vd
from reference import assert_close, peak
from strategies import dtypes, per_axis, pool_windows, seeds, tables

# a Dask graph per example: a twelfth of the profile's examples (40 under CI, 250 --slow)
FEW = settings(max_examples=max(10, settings.default.max_examples // 12), deadline=None,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(autouse=True)
def synchronous():
    with dask.config.set(scheduler="synchronous"):
        yield


def split(draw, n, most=6):
    """A random chunking of an axis of n entries: cuts anywhere, 1-entry chunks included."""
    cuts = sorted(draw(st.sets(st.integers(1, max(1, n - 1)), max_size=min(most, n - 1)))) \
        if n > 1 else []
    edges = [0] + cuts + [n]
    return tuple(b - a for a, b in zip(edges[:-1], edges[1:]))


def close(got, want, dtype):
    assert got.dtype == want.dtype == dtype
    assert got.shape == want.shape
    assert_close(got, want, dtype, scale=peak(want))


def kernel(draw):
    """(d, dtype, kernel size, dilation) of a random case."""
    d = draw(st.integers(1, 3))
    dtype = draw(dtypes())
    k = draw(per_axis(d, 1, 4))
    return d, dtype, k, draw(per_axis(d, 1, 3))


@st.composite
def conv_case(draw):
    d, dtype, k, dil = kernel(draw)
    ext = [g * (kk - 1) + 1 for g, kk in zip(dil, k)]
    sizes = tuple(draw(st.integers(e, e + (14 if d < 3 else 6))) for e in ext)
    stride = draw(per_axis(d, 1, 3))
    mode = draw(st.sampled_from(["zeros", "constant", "reflect", "replicate", "circular",
                                 "symmetric"]))
    limit = {"reflect": lambda n: n - 1, "circular": lambda n: n}.get(mode, lambda n: 6)
    padding = tuple((draw(st.integers(0, min(4, limit(n)))), draw(st.integers(0, min(4, limit(n)))))
                    for n in sizes)
    if draw(st.booleans()) and mode in ("zeros", "constant"):
        # 'same' only at stride 1 (strided 'same' is refused, as in PyTorch)
        padding = draw(st.sampled_from(["valid", "full"] + (["same"] if max(stride) == 1
                                                             else [])))
    groups = draw(st.sampled_from([1, 2]))
    cin, cout = 2 * draw(st.integers(1, 2)), 2 * draw(st.integers(1, 2))
    connections = None
    if groups == 1 and draw(st.booleans()):
        connections = draw(tables(cin, cout))
    n = draw(st.integers(1, 3))
    chunks = (split(draw, n, 2), split(draw, cin, 2)) + tuple(split(draw, s) for s in sizes)
    opts = dict(stride=stride, padding=padding, dilation=dil, groups=groups,
                connections=connections, flip=draw(st.booleans()), padding_mode=mode,
                fill_value=1.5 if mode == "constant" else 0.0)
    return (n, cin, cout, sizes, k, dtype, chunks, opts, draw(seeds()))


def arrays(case):
    n, cin, cout, sizes, k, dtype, chunks, opts, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, cin) + sizes).astype(dtype)
    w = rng.standard_normal((cout, cin // opts["groups"]) + k).astype(dtype)
    b = rng.standard_normal(cout).astype(dtype)
    return x, w, b


@FEW
@given(conv_case())
def test_conv_and_backward_any_chunking(case):
    x, w, b = arrays(case)
    chunks, opts, dtype = case[6], case[7], case[5]
    xd = da.from_array(x, chunks=chunks)
    want = vecconv.conv(x, w, b, **opts)
    y = vd.conv(xd, w, b, **opts)
    assert y.shape == want.shape and y.dtype == dtype
    close(y.compute(), want, dtype)

    dy = np.random.default_rng(case[8] + 1).standard_normal(want.shape).astype(dtype)
    rx, rw, rb = vecconv.conv_backward(dy, x, w, **opts)
    dx, dw, db = vd.conv_backward(da.from_array(dy, chunks=3), xd, w, **opts)
    assert dx.chunks == xd.chunks                 # dx is chunked like x
    close(dx.compute(), rx, dtype)
    close(dw.compute(), rw, dtype)
    close(db.compute(), rb, dtype)


@st.composite
def transpose_case(draw):
    d, dtype, k, dil = kernel(draw)
    stride = draw(per_axis(d, 1, 4))
    sizes = draw(per_axis(d, 2, 12 if d < 3 else 5))
    pads = tuple((draw(st.integers(0, g * (kk - 1))), draw(st.integers(0, g * (kk - 1))))
                 for g, kk in zip(dil, k))
    op = tuple(draw(st.integers(0, max(s, g) - 1)) for s, g in zip(stride, dil))
    groups = draw(st.sampled_from([1, 2]))
    n = draw(st.integers(1, 2))
    cin = 2 * draw(st.integers(1, 2))
    chunks = (split(draw, n, 2), split(draw, cin, 2)) + tuple(split(draw, s) for s in sizes)
    return d, dtype, k, dil, stride, sizes, pads, op, groups, n, cin, chunks, draw(seeds())


@FEW
@given(transpose_case())
def test_conv_transpose_any_chunking(case):
    d, dtype, k, dil, stride, sizes, pads, op, groups, n, cin, chunks, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, cin) + sizes).astype(dtype)
    w = rng.standard_normal((cin, 3) + k).astype(dtype)
    b = rng.standard_normal(3 * groups).astype(dtype)
    opts = dict(stride=stride, padding=pads, output_padding=op, dilation=dil, groups=groups)
    try:
        want = vecconv.conv_transpose(x, w, b, **opts)
    except ValueError:          # padding cropped the whole result: refused in both
        with pytest.raises(ValueError):
            vd.conv_transpose(da.from_array(x, chunks=chunks), w, b, **opts)
        return
    y = vd.conv_transpose(da.from_array(x, chunks=chunks), w, b, **opts)
    close(y.compute(), want, dtype)


@st.composite
def pool_case(draw):
    d = draw(st.integers(1, 3))
    is_max = draw(st.booleans())
    k, stride, pad, dil = draw(pool_windows(d, kernel=4, stride=4, dilation=3))
    dil = dil if is_max else (1,) * d
    sizes = tuple(draw(st.integers(lo, lo + (12 if d < 3 else 5))) for lo in
                  (max(1, g * (kk - 1) + 1 - 2 * p) for g, kk, p in zip(dil, k, pad)))
    opts = dict(kernel_size=k, stride=stride, padding=pad, ceil_mode=draw(st.booleans()))
    if is_max:
        opts.update(dilation=dil, return_indices=draw(st.booleans()))
    else:
        opts.update(count_include_pad=draw(st.booleans()),
                    divisor_override=draw(st.sampled_from([None, 3])))
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    chunks = (split(draw, n, 2), split(draw, c, 2)) + tuple(split(draw, s) for s in sizes)
    return is_max, (n, c) + sizes, chunks, opts, draw(dtypes()), draw(seeds())


@settings(max_examples=max(20, settings.default.max_examples // 6), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(pool_case())
def test_pooling_any_chunking_same_bits(case):
    is_max, shape, chunks, opts, dtype, seed = case
    rng = np.random.default_rng(seed)
    x = rng.integers(-3, 4, size=shape).astype(dtype)       # ties on purpose
    x[rng.random(shape) < 0.05] = np.nan
    x[rng.random(shape) < 0.05] = -np.inf
    f, g = (vecconv.max_pool, vd.max_pool) if is_max else (vecconv.avg_pool, vd.avg_pool)
    try:
        want = f(x, **opts)
    except ValueError:          # the window does not fit: refused in both
        with pytest.raises(ValueError):
            g(da.from_array(x, chunks=chunks), **opts)
        return
    got = g(da.from_array(x, chunks=chunks), **opts)
    if opts.get("return_indices"):
        (y, idx), (wy, widx) = got, want
        np.testing.assert_array_equal(idx.compute(), widx)
        got, want = y, wy
    assert got.dtype == want.dtype == dtype
    np.testing.assert_array_equal(got.compute(), want)


def test_unbatched_numpy_channel_chunks_and_float32(rng):
    x = rng.standard_normal((6, 40, 33)).astype(np.float32)      # unbatched (C, H, W)
    w = rng.standard_normal((4, 6, 5, 5)).astype(np.float32)
    xd = da.from_array(x, chunks=(2, 9, 10))                      # channels split in 3
    y = vd.conv(xd, w, padding="same", padding_mode="reflect")
    assert y.dtype == np.float32 and y.ndim == 3
    close(y.compute(), vecconv.conv(x, w, padding="same", padding_mode="reflect"), np.float32)
    close(vd.conv(x, w).compute(), vecconv.conv(x, w), np.float32)      # plain NumPy x
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx, dw, db = vd.conv_backward(dy, xd, w, padding="same", padding_mode="reflect")
    assert dx.chunks == xd.chunks
    rx, rw, rb = vecconv.conv_backward(dy, x, w, padding="same", padding_mode="reflect")
    for got, want in ((dx, rx), (dw, rw), (db, rb)):
        close(got.compute(), want, np.float32)
    dx, dw, db = vd.conv_backward(dy, xd, w, padding="same", padding_mode="reflect",
                                  weight_grad=False)
    assert dw is None and db is None and dx is not None
    dx, dw, db = vd.conv_backward(dy, xd, w, padding="same", padding_mode="reflect",
                                  input_grad=False)
    assert dx is None
    close(dw.compute(), rw, np.float32)
    y, idx = vd.max_pool(xd, (3, 3), stride=2, return_indices=True)      # unbatched pool
    wy, widx = vecconv.max_pool(x, (3, 3), stride=2, return_indices=True)
    np.testing.assert_array_equal(y.compute(), wy)
    np.testing.assert_array_equal(idx.compute(), widx)


def test_dw_is_a_tree_reduction(rng):
    """No task adds every block's dw: each adds at most SPLIT_EVERY partials."""
    x = rng.standard_normal((4, 2, 64, 64))
    w = rng.standard_normal((3, 2, 3, 3))
    xd = da.from_array(x, chunks=(1, 2, 16, 16))                  # 4 x 4 x 4 = 64 blocks
    dy = rng.standard_normal((4, 3, 62, 62))
    _, dw, db = vd.conv_backward(dy, xd, w, input_grad=False)
    graph = dict(dw.__dask_graph__())
    partial = {k for k in graph if isinstance(k, tuple) and str(k[0]).startswith("_dw_block")}
    assert len(partial) == 64
    fan_in = [len(partial & dask.core.get_dependencies(graph, key)) for key in graph]
    assert max(fan_in) <= vd.SPLIT_EVERY
    np.testing.assert_allclose(dw.compute(), vecconv.conv_backward(dy, x, w)[1], rtol=1e-10)


def test_errors_before_any_graph(rng):
    x = da.zeros((1, 2, 10, 10), chunks=5)
    w = np.zeros((3, 2, 3, 3))
    with pytest.raises(ValueError, match="reflect"):
        vd.conv(x, w, padding=10, padding_mode="reflect")
    with pytest.raises(ValueError, match="groups"):
        vd.conv(x, w, groups=2)
    with pytest.raises(ValueError, match="dy must have the output shape"):
        vd.conv_backward(da.zeros((1, 3, 9, 8)), x, w)
    with pytest.raises(TypeError, match="x must be"):
        vd.conv(da.zeros((1, 2, 10, 10), dtype=complex), w)
    with pytest.raises(TypeError, match="x must be"):
        vd.conv("image", w)
    with pytest.raises(ValueError, match="kernel"):
        vd.conv(x, np.zeros((3, 2, 11, 3)))
    with pytest.raises(ValueError, match="padding must be at most half"):
        vd.max_pool(x, 2, padding=2)
    with pytest.raises(ValueError, match="output_size"):
        vd.conv_transpose(da.zeros((1, 3, 4, 4)), np.zeros((3, 2, 3, 3)), stride=2,
                          output_size=(20, 20))
    with pytest.raises(TypeError, match="return_indices"):
        vd.max_pool(x, 2, return_indices="yes")


def test_image_past_a_blas_dimension_plans_lazily():
    """A single map of more than 2**31 entries cannot go to one GEMM, but as blocks it
    can: planning the graph must not refuse it (nothing is computed here)."""
    x = da.zeros((1, 1, 50_000, 50_000), dtype=np.float32, chunks=(1, 1, 5_000, 5_000))
    y = vd.conv(x, np.ones((2, 1, 7, 7), np.float32), padding=3)
    assert y.shape == (1, 2, 50_000, 50_000) and y.numblocks == (1, 1, 10, 10)
    p = vd.max_pool(x, 2)
    assert p.shape == (1, 1, 25_000, 25_000)


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None, memory_limit="1GiB")
    c = distributed.Client(cluster)
    try:
        yield c
    finally:
        c.close()
        cluster.close()


def test_process_cluster(client, rng):
    """The same answers from worker processes (the graphs and block functions pickle)."""
    pids = set(client.run(lambda: __import__("os").getpid()).values())
    assert len(pids) == 2 and __import__("os").getpid() not in pids
    x = rng.standard_normal((3, 4, 45, 38)).astype(np.float32)
    w = rng.standard_normal((6, 2, 5, 3)).astype(np.float32)
    xd = da.from_array(x, chunks=(2, 4, (10, 20, 15), (7, 31)))
    opts = dict(stride=(2, 1), padding=((2, 3), (1, 1)), dilation=(1, 2), groups=2,
                padding_mode="circular")
    y = vd.conv(xd, w, **opts)
    want = vecconv.conv(x, w, **opts)
    close(client.compute(y).result(), want, np.float32)
    dy = rng.standard_normal(want.shape).astype(np.float32)
    dx, dw, db = client.compute(list(vd.conv_backward(dy, xd, w, **opts)), sync=True)
    for got, ref in zip((dx, dw, db), vecconv.conv_backward(dy, x, w, **opts)):
        close(got, ref, np.float32)
    wt = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    t = client.compute(vd.conv_transpose(xd, wt, stride=2, padding=1, output_padding=1),
                       sync=True)
    close(t, vecconv.conv_transpose(x, wt, stride=2, padding=1, output_padding=1),
          np.float32)
    for f, g, o in ((vd.max_pool, vecconv.max_pool, dict(kernel_size=3, stride=2, padding=1)),
                    (vd.avg_pool, vecconv.avg_pool, dict(kernel_size=2, ceil_mode=True))):
        np.testing.assert_array_equal(client.compute(f(xd, **o), sync=True), g(x, **o))


@pytest.mark.parametrize("mode", ["reflect", "circular", "symmetric", "replicate"])
def test_padding_adjoint_keeps_an_inf_where_it_lands(mode):
    """The gradient of a padded entry is added to the entry it was read from, and to no
    other: an inf in dy must not turn its neighbours into NaN (0 * inf)."""
    x = np.zeros((1, 1, 10))
    w = np.ones((1, 1, 1))
    dy = np.zeros((1, 1, 16))
    dy[..., 0] = np.inf
    dy[..., 15] = 2.0
    want = vecconv.conv_backward(dy, x, w, padding=3, padding_mode=mode)[0]
    got = vd.conv_backward(dy, da.from_array(x, chunks=(1, 1, 3)), w, padding=3,
                           padding_mode=mode)[0].compute()
    np.testing.assert_array_equal(got, want)


def test_unknown_chunk_sizes_are_refused_by_name():
    x = da.ones((4, 1, 12), chunks=2)
    x = x[da.from_array(np.array([True, False, True, True]), chunks=2)]   # nan chunks
    w = np.ones((1, 1, 3))
    for call in (lambda: vd.conv(x, w), lambda: vd.max_pool(x, 2),
                 lambda: vd.conv_transpose(x, w)):
        with pytest.raises(ValueError, match="x has unknown chunk sizes"):
            call()
    with pytest.raises(ValueError, match="dy has unknown chunk sizes"):
        vd.conv_backward(x, da.ones((3, 1, 14)), w)


def test_errors_name_the_callers_shape():
    with pytest.raises(ValueError, match=r"\(5, 0, 50, 50\)"):
        vd.conv(da.zeros((5, 0, 50, 50)), np.zeros((2, 0, 3, 3)))
