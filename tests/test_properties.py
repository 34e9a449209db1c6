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

from reference import assert_close, ref_conv1d, ref_conv2d, ref_conv3d, same_pairs


def layouts(a, how):
    if how == "fortran":
        return np.asfortranarray(a)
    if how == "negative":
        return np.ascontiguousarray(a[..., ::-1])[..., ::-1]
    if how == "strided":
        return np.repeat(a, 2, axis=-1)[..., ::2]
    if how == "readonly":
        a = a.copy()
        a.flags.writeable = False
        return a
    return a


@st.composite
def conv_cases(draw):
    # 8 or more images reach the engine's whole-image tiles (and staging), fewer its bands
    n = draw(st.sampled_from([0, 1, 2, 3, 8, 11]))
    groups = draw(st.sampled_from([1, 1, 1, 2, 3]))
    use_table = groups == 1 and draw(st.booleans())
    c = groups * draw(st.integers(1, 3))
    cout = groups * draw(st.sampled_from([1, 2, 3, 9]))      # > 8 per group: not staged
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    padding = draw(st.one_of(
        st.sampled_from(["valid", "same", "full"]),
        st.integers(0, 2),
        st.tuples(st.integers(0, 2), st.integers(0, 2)),
        st.tuples(st.tuples(st.integers(0, 2), st.integers(0, 2)),
                  st.tuples(st.integers(0, 2), st.integers(0, 2)))))
    eh, ew = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    h = draw(st.integers(1, 10))
    w = draw(st.integers(1, 10))
    if isinstance(padding, str):
        extra = {"valid": (0, 0), "same": (eh - 1, ew - 1), "full": (2 * eh - 2, 2 * ew - 2)}[padding]
    elif isinstance(padding, int):
        extra = (2 * padding, 2 * padding)
    elif isinstance(padding[0], tuple):
        extra = (sum(padding[0]), sum(padding[1]))
    else:
        extra = (2 * padding[0], 2 * padding[1])
    assume(h + extra[0] >= eh and w + extra[1] >= ew)
    flip = draw(st.booleans())
    if padding == "same" and max(sh, sw) > 1:        # 'same' is for stride 1: say the pairs
        padding = same_pairs((kh, kw), (dh, dw), flip)
    table = None
    if use_table:
        table = np.array(draw(st.lists(st.booleans(), min_size=c * cout, max_size=c * cout))).reshape(c, cout)
        assume(table.any())
    return dict(shape=(n, c, h, w), wshape=(cout, c // groups, kh, kw), groups=groups,
                connections=table, stride=(sh, sw), dilation=(dh, dw), padding=padding,
                flip=flip, dtype=draw(st.sampled_from([np.float32, np.float64])),
                layout=draw(st.sampled_from(["c", "fortran", "negative", "strided", "readonly"])),
                seed=draw(st.integers(0, 2**32 - 1)),
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
    xl, wl = layouts(x, case["layout"]), layouts(w, case["layout"])
    y = vc.conv2d(xl, wl, b, workspace=case["workspace"], **opts)
    assert y.dtype == dt
    if case["shape"][0] == 0:
        assert y.shape[:2] == (0, case["wshape"][0])
        return
    ref = ref_conv2d(x, w, b, **opts)
    assert y.shape == ref.shape
    assert_close(y, ref, dt)
    dy = rng.standard_normal(y.shape).astype(dt)
    dx, dw, db = vc.conv2d_backward(layouts(dy, case["layout"]), xl, wl,
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
       padding=st.one_of(st.sampled_from(["valid", "same", "full"]), st.integers(0, 3)),
       flip=st.booleans(), dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 2**32 - 1))
def test_conv1d_forward_and_backward(n, c, cout, length, k, stride, dilation, padding, flip, dtype, seed):
    ext = dilation * (k - 1) + 1
    pad_total = {"valid": 0, "same": ext - 1, "full": 2 * ext - 2}.get(padding, None) \
        if isinstance(padding, str) else 2 * padding
    assume(length + pad_total >= ext)
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
    k = tuple(draw(st.integers(1, 3)) for _ in range(3))
    dil = tuple(draw(st.integers(1, 2)) for _ in range(3))
    stride = tuple(draw(st.integers(1, 2)) for _ in range(3))
    padding = draw(st.one_of(st.sampled_from(["valid", "same", "full"]), st.integers(0, 2),
                             st.tuples(*[st.tuples(st.integers(0, 2), st.integers(0, 2))] * 3)))
    ext = tuple(d * (kk - 1) + 1 for d, kk in zip(dil, k))
    size = tuple(draw(st.integers(1, 6)) for _ in range(3))
    if isinstance(padding, str):
        extra = {"valid": (0,) * 3, "same": tuple(e - 1 for e in ext),
                 "full": tuple(2 * e - 2 for e in ext)}[padding]
    elif isinstance(padding, int):
        extra = (2 * padding,) * 3
    else:
        extra = tuple(sum(p) for p in padding)
    assume(all(s + x >= e for s, x, e in zip(size, extra, ext)))
    flip = draw(st.booleans())
    if padding == "same" and max(stride) > 1:        # 'same' is for stride 1: say the pairs
        padding = same_pairs(k, dil, flip)
    table = None
    if use_table:
        table = np.array(draw(st.lists(st.booleans(), min_size=c * cout, max_size=c * cout))).reshape(c, cout)
    mode = draw(st.sampled_from(["zeros", "constant", "replicate", "symmetric", "circular",
                                 "reflect"]))
    pads = _pairs(padding, ext)
    if mode == "circular":
        assume(all(max(p) <= s for p, s in zip(pads, size)))
    if mode == "reflect":
        assume(all(max(p) < s for p, s in zip(pads, size)))
    return dict(shape=(n, c) + size, wshape=(cout, c // groups) + k, groups=groups,
                connections=table, stride=stride, dilation=dil, padding=padding,
                flip=flip, dtype=draw(st.sampled_from([np.float32, np.float64])),
                seed=draw(st.integers(0, 2**32 - 1)), workspace=draw(st.sampled_from([None, 700])),
                padding_mode=mode, fill_value=1.25 if mode == "constant" else 0.0)


def _pairs(padding, ext):
    """(before, after) per axis, as vecconv resolves the 3-D padding (strings as the N-d
    scipy.signal.correlate: k//2 before for 'same')."""
    if isinstance(padding, str):
        return [{"valid": (0, 0), "full": (e - 1, e - 1),
                 "same": (e // 2, e - 1 - e // 2)}[padding] for e in ext]
    if isinstance(padding, int):
        return [(padding, padding)] * 3
    return [tuple(p) for p in padding]


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
        # the reference: numpy.pad's padded input, then a valid convolution
        pads = _pairs(case["padding"], [d * (k - 1) + 1 for d, k in
                                        zip(case["dilation"], case["wshape"][2:])])
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
    kh, kw = case["wshape"][2:]
    ext = [d * (k - 1) + 1 for d, k in zip(case["dilation"], (kh, kw))]
    padding = case["padding"]
    if isinstance(padding, str):     # correlate2d / convolve2d centring for 'same'
        pads = [{"valid": (0, 0), "full": (e - 1, e - 1),
                 "same": ((e // 2 if case["flip"] else (e - 1) // 2),
                          e - 1 - (e // 2 if case["flip"] else (e - 1) // 2))}[padding]
                for e in ext]
    elif isinstance(padding, int):
        pads = [(padding, padding)] * 2
    elif isinstance(padding[0], tuple):
        pads = [tuple(p) for p in padding]
    else:
        pads = [(p, p) for p in padding]
    size = case["shape"][2:]
    if mode == "circular":
        assume(all(max(p) <= s for p, s in zip(pads, size)))
    if mode == "reflect":
        assume(all(max(p) < s for p, s in zip(pads, size)))
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
