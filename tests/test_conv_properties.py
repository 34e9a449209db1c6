"""Property-based: random geometry, options, dtype and memory layout; forward against
scipy.signal and backward against exact adjoint identities evaluated with scipy.signal.

Because conv is linear in x and in w, dx and dw are fully determined by
<dx, x'> = <dy, conv(x', w)> and <dw, w'> = <dy, conv(x, w')> for every x', w'. Checked
with fresh random x', w' and scipy's forward pass, neither vecconv's forward nor anything
derived from it enters the reference.
"""

import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import vecconv as vc
import pytest

from reference import assert_close, padding_pairs, ref_conv1d, ref_conv2d, ref_conv3d
from strategies import (conv_windows, dtypes, fits, in_layout, layouts, mode_fits, paddings,
                        seeds, tables)


@st.composite
def conv_cases(draw):
    # 8 or more images reach the engine's whole-image tiles (and staging), fewer its bands
    n = draw(st.sampled_from([0, 1, 2, 3, 8, 11]))
    groups = draw(st.sampled_from([1, 1, 1, 2, 3]))
    use_table = groups == 1 and draw(st.booleans())
    c = groups * draw(st.integers(1, 3))
    cout = groups * draw(st.sampled_from([1, 2, 3, 9]))      # > 8 per group: not staged
    kernel, dilation, stride, size, padding, flip = draw(conv_windows(
        2, kernel=4, dilation=2, stride=3, size=10, padding=paddings(2, 2)))
    table = None
    if use_table:
        table = draw(tables(c, cout))
        assume(table.any())
    return dict(shape=(n, c) + size, wshape=(cout, c // groups) + kernel, groups=groups,
                connections=table, stride=stride, dilation=dilation, padding=padding,
                flip=flip, dtype=draw(dtypes()), layout=draw(layouts()), seed=draw(seeds()),
                workspace=draw(st.sampled_from([None, 1, 300, 5000])))


@settings(suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(conv_cases())
def test_conv2d_forward_and_backward(case):
    rng = np.random.default_rng(case["seed"])
    dt = case["dtype"]
    opts = {k: case[k] for k in ("stride", "padding", "dilation", "groups", "connections", "flip")}
    x = rng.standard_normal(case["shape"]).astype(dt)
    w = rng.standard_normal(case["wshape"]).astype(dt)
    b = rng.standard_normal(case["wshape"][0]).astype(dt)
    xl, wl = in_layout(x, case["layout"]), in_layout(w, case["layout"])
    y = vc.conv2d(xl, wl, b, workspace=case["workspace"], **opts)
    assert y.dtype == dt
    if case["shape"][0] == 0:
        assert y.shape[:2] == (0, case["wshape"][0])
        return
    ref = ref_conv2d(x, w, b, **opts)
    assert y.shape == ref.shape
    assert_close(y, ref, dt)
    dy = rng.standard_normal(y.shape).astype(dt)
    dx, dw, db = vc.conv2d_backward(in_layout(dy, case["layout"]), xl, wl,
                                    workspace=case["workspace"], **opts)
    assert dx.dtype == dw.dtype == db.dtype == dt
    np.testing.assert_array_equal(x, xl)            # inputs untouched
    x2 = rng.standard_normal(x.shape)
    w2 = rng.standard_normal(w.shape)
    if opts["connections"] is not None:
        w2 = w2 * opts["connections"].T[:, :, None, None]
    dy64 = dy.astype(np.float64)
    lhs_x = np.vdot(dy64, ref_conv2d(x2, w, None, **opts))
    lhs_w = np.vdot(dy64, ref_conv2d(x, w2, None, **opts))
    scale = np.abs(dy64).sum() * (np.abs(x).max() + 1) * (np.abs(w).max() + 1) * 10
    assert_close(np.vdot(dx.astype(np.float64), x2), lhs_x, dt, scale=scale, rtol=0)
    assert_close(np.vdot(dw.astype(np.float64), w2), lhs_w, dt, scale=scale, rtol=0)
    np.testing.assert_allclose(db, dy64.sum(axis=(0, 2, 3)), rtol=1e-4, atol=1e-3)
    if opts["connections"] is not None:
        assert not dw[~opts["connections"].T].any()


@settings(suppress_health_check=[HealthCheck.filter_too_much])
@given(n=st.sampled_from([1, 2, 3, 9]), c=st.integers(1, 3), cout=st.sampled_from([1, 3, 10]),
       length=st.integers(1, 15),
       k=st.integers(1, 5), stride=st.integers(1, 3), dilation=st.integers(1, 2),
       padding=paddings(1, 3, ints_per_axis=False, pairs=False),
       flip=st.booleans(), dtype=dtypes(), seed=seeds())
def test_conv1d_forward_and_backward(n, c, cout, length, k, stride, dilation, padding, flip, dtype, seed):
    assume(fits((length,), padding, (k,), (dilation,)))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, length)).astype(dtype)
    w = rng.standard_normal((cout, c, k)).astype(dtype)
    opts = dict(stride=stride, dilation=dilation, padding=padding, flip=flip)
    if padding == "same" and stride > 1:     # 'same' is for stride 1, as in PyTorch
        with pytest.raises(ValueError, match=r"padding='same'.*stride"):
            vc.conv1d(x, w, **opts)
        return
    y = vc.conv1d(x, w, **opts)
    ref = ref_conv1d(x, w, **opts)
    assert_close(y, ref, dtype)
    dy = rng.standard_normal(y.shape)
    dx, dw, _ = vc.conv1d_backward(dy, x, w, **opts)
    x2, w2 = rng.standard_normal(x.shape), rng.standard_normal(w.shape)
    scale = np.abs(dy).sum() * (np.abs(x).max() + 1) * (np.abs(w).max() + 1) * 10
    assert_close(np.vdot(dx, x2), np.vdot(dy, ref_conv1d(x2, w, **opts)), np.float64,
                 scale=scale, rtol=0)
    assert_close(np.vdot(dw, w2), np.vdot(dy, ref_conv1d(x, w2, **opts)), np.float64,
                 scale=scale, rtol=0)


@st.composite
def conv3d_cases(draw):
    n = draw(st.sampled_from([0, 1, 2, 9]))
    groups = draw(st.sampled_from([1, 1, 2]))
    use_table = groups == 1 and draw(st.booleans())
    c = groups * draw(st.integers(1, 2))
    cout = groups * draw(st.sampled_from([1, 2, 9]))
    k, dil, stride, size, padding, flip = draw(conv_windows(
        3, kernel=3, dilation=2, stride=2, size=6, padding=paddings(3, 2, ints_per_axis=False)))
    table = None
    if use_table:
        table = draw(tables(c, cout))
    mode = draw(st.sampled_from(["zeros", "constant", "replicate", "symmetric", "circular",
                                 "reflect"]))
    assume(mode_fits(mode, padding_pairs(padding, k, dil, flip), size))
    return dict(shape=(n, c) + size, wshape=(cout, c // groups) + k, groups=groups,
                connections=table, stride=stride, dilation=dil, padding=padding,
                flip=flip, dtype=draw(dtypes()), seed=draw(seeds()),
                workspace=draw(st.sampled_from([None, 700])),
                padding_mode=mode, fill_value=1.25 if mode == "constant" else 0.0)


@settings(suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(conv3d_cases())
def test_conv3d_forward_and_backward(case):
    rng = np.random.default_rng(case["seed"])
    dt = case["dtype"]
    x = rng.standard_normal(case["shape"]).astype(dt)
    w = rng.standard_normal(case["wshape"]).astype(dt)
    opts = {k: case[k] for k in ("stride", "dilation", "padding", "groups", "connections", "flip")}
    mode = dict(padding_mode=case["padding_mode"], fill_value=case["fill_value"])
    y = vc.conv(x, w, workspace=case["workspace"], **opts, **mode)
    assert y.dtype == dt
    if x.shape[0] == 0:
        return
    if case["padding_mode"] != "zeros":
        # the reference: numpy.pad's padded input, then a valid convolution (strings as the
        # N-d scipy.signal.correlate resolves them: k//2 before for 'same')
        pads = padding_pairs(case["padding"], case["wshape"][2:], case["dilation"], case["flip"])
        np_mode = {"constant": "constant", "replicate": "edge", "circular": "wrap"}.get(
            case["padding_mode"], case["padding_mode"])
        extra = dict(constant_values=case["fill_value"]) if np_mode == "constant" else {}
        xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0)) + tuple(pads), mode=np_mode, **extra)
        ref = ref_conv3d(xp, w, None, **dict(opts, padding=0))
        if ref is None:
            ref = np.zeros(y.shape)
        assert_close(y, ref, dt)
        return
    ref = ref_conv3d(x, w, None, **opts)
    if ref is None:                      # a table that connects nothing
        ref = np.zeros(y.shape)
    assert_close(y, ref, dt)
    dy = rng.standard_normal(y.shape)
    dx, dw, db = vc.conv_backward(dy.astype(dt), x, w, workspace=case["workspace"], **opts)
    x2, w2 = rng.standard_normal(x.shape), rng.standard_normal(w.shape)
    if opts["connections"] is not None:
        w2 = w2 * opts["connections"].T[:, :, None, None, None]
    scale = np.abs(dy).sum() * (np.abs(x).max() + 1) * (np.abs(w).max() + 1) * 10
    for got, probe, rhs in ((dx, x2, lambda: ref_conv3d(x2, w, None, **opts)),
                            (dw, w2, lambda: ref_conv3d(x, w2, None, **opts))):
        r = rhs()
        assert_close(np.vdot(got.astype(np.float64), probe),
                     0.0 if r is None else np.vdot(dy, r), dt, scale=scale, rtol=0)


@settings(suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(case=conv_cases(), mode=st.sampled_from(["constant", "reflect", "replicate",
                                                 "circular", "symmetric"]))
def test_conv2d_padding_modes(case, mode):
    """Every padding mode on random 2-D geometry: the same as a valid convolution of
    numpy.pad's padded input (vecconv never makes it), and dx the pad's adjoint."""
    dt = case["dtype"]
    # 'same' centred as correlate2d / convolve2d centre it
    pads = padding_pairs(case["padding"], case["wshape"][2:], case["dilation"], case["flip"])
    assume(mode_fits(mode, pads, case["shape"][2:]))
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal(case["shape"]).astype(dt)
    w = rng.standard_normal(case["wshape"]).astype(dt)
    opts = {k: case[k] for k in ("stride", "padding", "dilation", "groups", "connections", "flip")}
    fill = dict(fill_value=-0.5) if mode == "constant" else {}
    y = vc.conv2d(x, w, padding_mode=mode, workspace=case["workspace"], **opts, **fill)
    if case["shape"][0] == 0:
        return
    np_mode = {"constant": "constant", "replicate": "edge", "circular": "wrap"}.get(mode, mode)
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0)) + tuple(pads), mode=np_mode,
                **(dict(constant_values=-0.5) if mode == "constant" else {}))
    ref = ref_conv2d(xp, w, None, **dict(opts, padding=0))
    assert_close(y, ref, dt)
    dy = rng.standard_normal(y.shape)
    dx, _, _ = vc.conv2d_backward(dy, x, w, padding_mode=mode, **opts, **fill)
    x2 = rng.standard_normal(x.shape)
    zero = vc.conv2d(np.zeros(x.shape), w, padding_mode=mode, **opts, **fill)
    lhs = np.vdot(dy, vc.conv2d(x2, w, padding_mode=mode, **opts, **fill) - zero)
    scale = np.abs(dy).sum() * (np.abs(x2).max() + 1) * (np.abs(w).max() + 1) * 10
    assert_close(np.vdot(dx.astype(np.float64), x2), lhs, dt, scale=scale, rtol=0)
