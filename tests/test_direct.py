"""The direct route (grouped convolutions map by map; 'auto' takes it for depthwise
layers) gives the reference's answer in every pass, on random geometry and every padding
mode, keeps a NaN where it is read, gives the same bits for any thread count, and is
refused by name where it cannot run."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vecconv as vc
from reference import assert_close, peak, ref_conv2d

MODES = ["zeros", "constant", "reflect", "replicate", "circular", "symmetric"]


@st.composite
def grouped_cases(draw):
    d = draw(st.sampled_from([1, 2, 3]))
    groups = draw(st.integers(2, 4))
    cig = draw(st.sampled_from([1, 1, 2]))
    cog = draw(st.integers(1, 3))
    k = tuple(draw(st.integers(1, 4 if d < 3 else 3)) for _ in range(d))
    dil = tuple(draw(st.integers(1, 2)) for _ in range(d))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(d))
    ext = [g * (kk - 1) + 1 for g, kk in zip(dil, k)]
    size = tuple(draw(st.integers(e, e + (9 if d < 3 else 3))) for e in ext)
    mode = draw(st.sampled_from(MODES))
    limit = {"reflect": lambda n: n - 1, "circular": lambda n: n}.get(mode, lambda n: 3)
    padding = tuple((draw(st.integers(0, min(3, limit(n)))),
                     draw(st.integers(0, min(3, limit(n))))) for n in size)
    opts = dict(stride=stride, padding=padding, dilation=dil, groups=groups,
                flip=draw(st.booleans()), padding_mode=mode,
                fill_value=0.5 if mode == "constant" else 0.0)
    n = draw(st.integers(1, 3))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    return ((n, groups * cig) + size, (groups * cog, cig) + k, opts, dtype,
            draw(st.integers(0, 2**31)))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=grouped_cases())
def test_the_direct_route_agrees_with_float64_im2col_in_every_pass(case):
    xs, ws, opts, dtype, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    plan = vc.conv_plan(xs, ws, dtype=dtype, algorithm="direct", **opts)
    assert (plan["forward"], plan["dx"], plan["dw"]) == ("direct",) * 3
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    ref = vc.conv(x64, w64, b.astype(np.float64), algorithm="im2col", **opts)
    x0, w0 = x.copy(), w.copy()
    got = vc.conv(x, w, b, algorithm="direct", **opts)
    assert got.dtype == dtype and got.shape == ref.shape
    assert_close(got, ref, scale=peak(ref))
    dy = rng.standard_normal(ref.shape).astype(dtype)
    refs = vc.conv_backward(dy.astype(np.float64), x64, w64, algorithm="im2col", **opts)
    for g, r in zip(vc.conv_backward(dy, x, w, algorithm="direct", **opts), refs):
        assert g.dtype == dtype and g.shape == r.shape
        assert_close(g, r, scale=peak(r))
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(w, w0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("width", [7, 16, 33, 47, 64, 71])
@pytest.mark.parametrize("opts", [dict(padding=1), dict(padding=2, padding_mode="reflect"),
                                  dict(padding=(1, 3), padding_mode="circular", dilation=2),
                                  dict(padding=1, stride=2),
                                  dict(padding=(0, 4), padding_mode="constant",
                                       fill_value=0.5)])
def test_wide_rows_take_the_vector_blocks_and_agree(dtype, width, opts):
    """Rows as wide as a layer's (two vector registers, one, and the rest of a row): each
    pass against float64 im2col, with the padding's runs of x copied at once."""
    case = test_the_direct_route_agrees_with_float64_im2col_in_every_pass.hypothesis
    case.inner_test(((2, 4, 9, width), (4, 1, 3, 3), dict(opts, groups=4), dtype, width))


def test_auto_takes_the_direct_route_for_depthwise_layers_only():
    dw = vc.conv_plan((8, 128, 56, 56), (128, 1, 3, 3), padding=1, groups=128)
    assert (dw["forward"], dw["dx"], dw["dw"]) == ("direct",) * 3
    mult = vc.conv_plan((8, 32, 56, 56), (64, 1, 5, 5), padding=2, groups=32, stride=2)
    assert mult["forward"] == "direct"
    grouped = vc.conv_plan((8, 128, 28, 28), (128, 4, 3, 3), padding=1, groups=32)
    assert grouped["forward"] != "direct"
    dense = vc.conv_plan((8, 1, 28, 28), (6, 1, 5, 5))
    assert dense["forward"] != "direct"


def test_a_depthwise_layer_matches_scipy():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 6, 15, 13)).astype(np.float32)
    w = rng.standard_normal((12, 1, 3, 3)).astype(np.float32)
    b = rng.standard_normal(12).astype(np.float32)
    got = vc.conv2d(x, w, b, padding=1, groups=6)
    ref = ref_conv2d(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64),
                     padding=1, groups=6)
    assert_close(got, ref, scale=peak(ref))


def test_a_nan_stays_where_it_is_read_and_threads_change_no_bit():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 8, 20, 20))
    w = rng.standard_normal((8, 1, 3, 3))
    x[1, 2, 5, 5] = np.nan
    y = vc.conv2d(x, w, padding=1, groups=8)
    assert np.isnan(y).sum() == 9 and np.isnan(y[1, 2, 4:7, 4:7]).all()
    dy = rng.standard_normal(y.shape)
    dy[2, 3, 0, 0] = np.inf
    results = []
    for n in (1, 2, 3):
        with vc.config(threads=n):
            results.append((vc.conv2d(x, w, padding=1, groups=8),)
                           + vc.conv2d_backward(dy, x, w, padding=1, groups=8))
    for got in results[1:]:
        for a, b in zip(got, results[0]):
            np.testing.assert_array_equal(a, b)
    dx = results[0][1]
    assert np.isfinite(dx[[0, 1]]).all() and not np.isfinite(dx[2, 3, :2, :2]).any()


def test_forcing_the_route_where_it_cannot_run_names_why():
    with pytest.raises(ValueError, match="algorithm='direct' cannot run this convolution"):
        vc.conv2d(np.ones((1, 3, 8, 8)), np.ones((4, 3, 3, 3)), algorithm="direct")
    table = np.ones((2, 2), bool)
    with pytest.raises(ValueError, match="algorithm='direct' cannot run this convolution"):
        vc.conv2d(np.ones((1, 2, 8, 8)), np.ones((2, 2, 3, 3)), connections=table,
                  algorithm="direct")


def test_a_depthwise_transposed_convolution_and_layer_take_the_route():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 6, 9, 10))
    w = rng.standard_normal((6, 1, 3, 3))
    dy = rng.standard_normal((2, 6, 19, 21))
    ref = vc.conv_transpose2d(x, w, stride=2, groups=6, algorithm="im2col")
    got = vc.conv_transpose2d(x, w, stride=2, groups=6, algorithm="direct")
    assert_close(got, ref, against="regrouped", scale=peak(ref))
    for g, r in zip(vc.conv_transpose2d_backward(dy, x, w, stride=2, groups=6,
                                                 algorithm="direct"),
                    vc.conv_transpose2d_backward(dy, x, w, stride=2, groups=6,
                                                 algorithm="im2col")):
        assert_close(g, r, against="regrouped", scale=peak(r))
    layer = vc.nn.Conv2D(6, 6, 3, padding=1, groups=6, seed=0, dtype=np.float64)
    ref_layer = vc.nn.Conv2D(6, 6, 3, padding=1, groups=6, seed=0, dtype=np.float64,
                             algorithm="im2col")
    assert_close(layer.forward(x), ref_layer.forward(x), against="regrouped", scale=10)
    d = np.ones((2, 6, 9, 10))
    assert_close(layer.backward(d), ref_layer.backward(d), against="regrouped", scale=10)
    assert_close(layer.grads["w"], ref_layer.grads["w"], against="regrouped", scale=100)


def test_the_route_keeps_to_the_workspace_and_its_memory_is_counted():
    import tracemalloc

    from vecconv import _plan
    from vecconv._options import conv_options
    x = np.ones((1, 2, 1000, 1000), np.float32)
    w = np.ones((2, 1, 3, 3), np.float32)
    with pytest.raises(ValueError, match="does not fit a workspace of 4096 bytes"):
        vc.conv2d(x, w, padding=1, groups=2, algorithm="direct", workspace=4096)
    plan = vc.conv_plan(x.shape, w.shape, padding=1, groups=2, workspace=4096)
    assert plan["forward"] != "direct"
    # a depthwise transposed convolution's backward pass: the plan counts what it takes
    rng = np.random.default_rng(4)
    xt = rng.standard_normal((2, 16, 100, 100))
    wt = rng.standard_normal((16, 1, 3, 3))
    dy = rng.standard_normal((2, 16, 100, 100))
    from vecconv._options import conv_transpose_options
    tplan = _plan.plan_conv_transpose(xt.shape, wt.shape, np.float64,
                                      conv_transpose_options(2, padding=1, groups=16))
    assert tplan.route is tplan.dx_route is tplan.dw_route is _plan.Route.DIRECT
    tracemalloc.start()
    try:
        vc.conv_transpose2d_backward(dy, xt, wt, padding=1, groups=16)
        _, top = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    counted = tplan.memory() + tplan.memory(backward=True, need_dx=False)
    assert top <= counted + xt.nbytes + 2**16, (top, counted)
    del conv_options


@pytest.mark.parametrize("shape,ws,opts", [
    ((1, 2, 1, 6), (2, 1, 1, 3), dict()),                                   # 2-D, one row
    ((2, 3, 20), (6, 1, 3), dict(padding=2, dilation=2)),                   # 1-D
    ((1, 2, 5, 6, 18), (2, 1, 3, 3, 3), dict(padding=1, padding_mode="reflect"))])
def test_a_weight_that_is_not_finite_reaches_only_what_its_tap_reaches(shape, ws, opts):
    """A stride-1 dx pass gathers each padded row from dy with zero sides; an inf weight
    would turn those zeros into NaN (inf * 0) where im2col adds nothing: such weights
    take the scattering pass, and dx equals im2col's, NaN for NaN."""
    rng = np.random.default_rng(5)
    groups = shape[1]
    x = rng.standard_normal(shape)
    w = rng.standard_normal(ws)
    dy = rng.standard_normal(vc.conv(x, w, groups=groups, **opts).shape)
    for bad in (np.inf, -np.inf, np.nan):
        wb = w.copy()
        wb.reshape(-1)[0] = bad
        assert vc.conv_plan(shape, ws, groups=groups, **opts)["dx"] == "direct"
        got = vc.conv_backward(dy, x, wb, groups=groups, algorithm="direct", **opts)[0]
        ref = vc.conv_backward(dy, x, wb, groups=groups, algorithm="im2col", **opts)[0]
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
        np.testing.assert_array_equal(np.isinf(got), np.isinf(ref))
        ok = np.isfinite(ref)
        assert ok.any() and np.abs(got[ok] - ref[ok]).max() <= 1e-12 * np.abs(ref[ok]).max()


@pytest.mark.parametrize("xs,ws,opts", [
    ((2, 4, 7, 40), (8, 2, 3, 3), dict(groups=2, padding=1)),        # 2 maps a group: sums
    ((1, 3, 9, 37), (6, 1, 5, 5), dict(groups=3, padding=2)),        # 25 taps: two groups
    ((2, 2, 9, 70), (2, 1, 3, 3), dict(groups=2, stride=(2, 1), padding=1)),
    ((1, 2, 5, 6, 35), (4, 1, 3, 3, 3), dict(groups=2, dilation=2, padding=2)),
    ((1, 2, 8, 33), (2, 1, 3, 3), dict(groups=2, padding=1, workspace="tight"))])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vector_blocks_on_every_branch_agree(xs, ws, opts, dtype):
    """The direct kernels' branches at widths that fill vectors: a sum carried over input
    maps, taps past one group of 16, a stride the dx pass scatters, a 3-D dilated gather,
    and a workspace too small for the gathered dx's copy of dy (it scatters)."""
    from vecconv import _direct, _plan
    from vecconv._options import conv_options
    if opts.get("workspace") == "tight":
        plan = _plan.plan_conv(xs, ws, None, dtype, conv_options(
            2, groups=2, padding=1, algorithm="direct"), None)
        opts = dict(opts, workspace=_direct.scratch_elems(plan.geometry) * dtype().itemsize
                    + _direct.table_bytes(plan.geometry))
        assert not _direct._gathers(plan.geometry, dtype().itemsize, opts["workspace"])
    case = test_the_direct_route_agrees_with_float64_im2col_in_every_pass.hypothesis
    case.inner_test((xs, ws, opts, dtype, 11))


def test_a_weight_that_is_not_finite_changes_no_other_groups_bits(monkeypatch):
    """The engine decides gather or scatter per input map from the weights that reach it:
    an inf in one group's kernel leaves the other groups' dx bit for bit, and its own
    map's dx is im2col's (the pass still gathers: the flag is the layer's)."""
    from vecconv import _direct, _engine
    seen = []
    real = _engine.direct_conv

    def spy(pass_, *args):
        if pass_ == _direct.DX:
            seen.append(args[-2])           # the gather flag
        return real(pass_, *args)

    monkeypatch.setattr(_engine, "direct_conv", spy)
    rng = np.random.default_rng(12)
    x = rng.standard_normal((2, 3, 6, 20))
    w = rng.standard_normal((3, 1, 3, 3))
    dy = rng.standard_normal((2, 3, 6, 20))
    clean = vc.conv_backward(dy, x, w, groups=3, padding=1, algorithm="direct")[0]
    w[1, 0, 2, 2] = np.inf
    got = vc.conv_backward(dy, x, w, groups=3, padding=1, algorithm="direct")[0]
    ref = vc.conv_backward(dy, x, w, groups=3, padding=1, algorithm="im2col")[0]
    np.testing.assert_array_equal(got[:, [0, 2]], clean[:, [0, 2]])
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(ref))
    assert seen == [True, True]
