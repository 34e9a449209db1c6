"""conv2d / conv2d_backward against scipy.signal, finite differences and exact identities."""

import numpy as np
import pytest
import scipy.signal as ss

import vecconv as vc
from reference import assert_close, numeric_grad, ref_conv2d, rel_err, same_pairs

DTYPES = [np.float32, np.float64]


def rand(rng, shape, dtype=np.float64):
    return rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("padding", ["valid", "same", "full", 0, 2, (1, 3), ((0, 2), (3, 1))])
@pytest.mark.parametrize("xs,ks", [((9, 11), (3, 2)), ((8, 8), (4, 4)), ((7, 5), (2, 5)), ((5, 6), (1, 1))])
def test_forward_matches_scipy(rng, dtype, flip, padding, xs, ks):
    x = rand(rng, (2, 3) + xs, dtype)
    w = rand(rng, (4, 3) + ks, dtype)
    b = rand(rng, (4,), dtype)
    y = vc.conv2d(x, w, b, padding=padding, flip=flip)
    assert y.dtype == dtype
    assert_close(y, ref_conv2d(x, w, b, padding=padding, flip=flip), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("stride,dilation,padding", [
    (2, 1, 0), ((1, 3), 1, 1), (1, 2, 0), ((2, 1), (1, 3), "same"), (3, 2, "full"), (2, 2, "valid"),
])
def test_stride_and_dilation_match_scipy(rng, dtype, stride, dilation, padding):
    x = rand(rng, (2, 2, 13, 10), dtype)
    w = rand(rng, (3, 2, 3, 2), dtype)
    for flip in (False, True):
        pads = padding
        if padding == "same":       # strided: say the pairs 'same' means at stride 1
            pads = same_pairs(w.shape[2:], dilation if isinstance(dilation, tuple)
                              else (dilation,) * 2, flip)
            with pytest.raises(ValueError, match=r"padding='same'.*stride"):
                vc.conv2d(x, w, stride=stride, dilation=dilation, padding="same", flip=flip)
        y = vc.conv2d(x, w, stride=stride, dilation=dilation, padding=pads, flip=flip)
        ref = ref_conv2d(x, w, stride=stride, dilation=dilation, padding=padding, flip=flip)
        assert_close(y, ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("groups", [2, 3, 6])
def test_groups_match_scipy(rng, dtype, groups):
    x = rand(rng, (2, 6, 7, 8), dtype)
    w = rand(rng, (12, 6 // groups, 3, 3), dtype)
    b = rand(rng, (12,), dtype)
    y = vc.conv2d(x, w, b, groups=groups, padding=1)
    assert_close(y, ref_conv2d(x, w, b, padding=1, groups=groups), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_lenet_c3_connection_table_forward_and_backward(rng, dtype, lenet_table):
    assert lenet_table.sum() == 60           # Table 1 of the derivation (LeCun et al. 1998, Table I): 60 kernels
    x = rand(rng, (3, 6, 14, 14), dtype)
    w = rand(rng, (16, 6, 5, 5), dtype)
    b = rand(rng, (16,), dtype)
    y = vc.conv2d(x, w, b, connections=lenet_table)
    assert y.shape == (3, 16, 10, 10)
    assert_close(y, ref_conv2d(x, w, b, connections=lenet_table), dtype)
    # unconnected weights are ignored: changing them changes nothing
    w2 = w.copy()
    w2[~lenet_table.T] = 1e6
    np.testing.assert_array_equal(vc.conv2d(x, w2, b, connections=lenet_table), y)
    dy = rand(rng, y.shape, dtype)
    dx, dw, db = vc.conv2d_backward(dy, x, w, connections=lenet_table)
    assert np.all(dw[~lenet_table.T] == 0)
    # the table is the same as a dense convolution with the unconnected kernels zeroed
    wz = w * lenet_table.T[:, :, None, None]
    dx_d, dw_d, db_d = vc.conv2d_backward(dy, x, wz)
    assert_close(dx, dx_d, dtype)
    assert_close(dw, dw_d * lenet_table.T[:, :, None, None], dtype)
    assert_close(db, db_d, dtype)
    # and the kernel gradient of a connected pair is eq. 13: sum_n x_i * delta_j
    i, j = 2, 0          # S2 map 2 feeds C3 map 0 in Table I
    assert lenet_table[i, j] and not lenet_table[4, 0]
    expect = sum(ss.correlate2d(x[n, i].astype(np.float64), dy[n, j].astype(np.float64), "valid")
                 for n in range(3))
    assert_close(dw[j, i], expect, dtype)


def _grad_check(x, w, b, **opts):
    """Finite differences of E = sum(g * conv(x, w) + b) against conv2d_backward."""
    rng = np.random.default_rng(7)
    y = vc.conv2d(x, w, b, **opts)
    g = rng.standard_normal(y.shape)
    dx, dw, db = vc.conv2d_backward(g, x, w, **opts)
    ex = numeric_grad(lambda xx: np.sum(g * vc.conv2d(xx, w, b, **opts)), x)
    ew = numeric_grad(lambda ww: np.sum(g * vc.conv2d(x, ww, b, **opts)), w)
    eb = numeric_grad(lambda bb: np.sum(g * vc.conv2d(x, w, bb, **opts)), b)
    return rel_err(dx, ex), rel_err(dw, ew), rel_err(db, eb)


@pytest.mark.parametrize("opts", [
    dict(),
    dict(padding="same", flip=True),
    dict(padding="full"),
    dict(stride=2, padding=1),
    dict(stride=(1, 2), dilation=(2, 1), padding=((2, 2), (0, 1))),   # 'same' at stride 1
    dict(groups=2, padding=1),
    dict(padding=((2, 0), (1, 3)), stride=(2, 3)),
])
def test_finite_difference_gradients(rng, opts):
    x = rng.standard_normal((2, 4, 7, 6))
    w = rng.standard_normal((4, 4 // opts.get("groups", 1), 3, 2))
    b = rng.standard_normal(4)
    errs = _grad_check(x, w, b, **opts)
    assert max(errs) < 1e-7, errs


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("opts", [
    dict(), dict(stride=2, padding=2), dict(dilation=2, padding="same", flip=True),
    dict(groups=3, padding="full"), dict(stride=(3, 1), dilation=(1, 2)),
])
def test_backward_is_the_adjoint_of_forward(rng, dtype, opts):
    """<dy, conv(x, w)> = <dx, x> = <dw, w> exactly (the forward map is bilinear)."""
    groups = opts.get("groups", 1)
    x = rand(rng, (3, 6, 11, 9), dtype)
    w = rand(rng, (6, 6 // groups, 3, 4), dtype)
    y = vc.conv2d(x, w, **opts)
    dy = rand(rng, y.shape, dtype)
    dx, dw, db = vc.conv2d_backward(dy, x, w, **opts)
    assert dx.dtype == dw.dtype == db.dtype == dtype
    assert dx.shape == x.shape and dw.shape == w.shape and db.shape == (6,)
    inner = np.vdot(dy.astype(np.float64), y.astype(np.float64))
    exact = dict(rtol={np.float32: 1e-4, np.float64: 1e-11}, atol=0)    # relative alone
    assert_close(np.vdot(dx.astype(np.float64), x), inner, dtype, **exact)
    assert_close(np.vdot(dw.astype(np.float64), w), inner, dtype, **exact)
    assert_close(db, dy.astype(np.float64).sum(axis=(0, 2, 3)), dtype)


def test_dx_is_full_convolution_with_flipped_kernel_eq16_18(rng):
    """eq. 16-18: dE/dx_i = sum_j delta_j~ * (J k_ij J), the full convolution."""
    x = rng.standard_normal((1, 2, 8, 7))
    w = rng.standard_normal((3, 2, 3, 2))
    dy = rng.standard_normal((1, 3, 6, 6))
    dx, _, _ = vc.conv2d_backward(dy, x, w)
    for i in range(2):
        expect = sum(ss.convolve2d(dy[0, j], w[j, i], "full") for j in range(3))
        np.testing.assert_allclose(dx[0, i], expect, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_workspace_tiling_gives_identical_results(rng, dtype):
    """Tiles of images, tiles of output rows, one row per tile: the same numbers."""
    x = rand(rng, (5, 3, 17, 15), dtype)
    w = rand(rng, (4, 3, 5, 3), dtype)
    b = rand(rng, (4,), dtype)
    dy = rand(rng, (5, 4, 17, 15), dtype)
    full = vc.conv2d(x, w, b, padding="same")
    grads = vc.conv2d_backward(dy, x, w, padding="same")
    per_image = 3 * 5 * 3 * 17 * 15 * np.dtype(dtype).itemsize
    for budget in (10**9, 2 * per_image, per_image, per_image // 3, 1):
        assert_close(vc.conv2d(x, w, b, padding="same", workspace=budget), full, dtype)
        for got, ref in zip(vc.conv2d_backward(dy, x, w, padding="same", workspace=budget), grads):
            assert_close(got, ref, dtype)


def test_global_workspace_setting(rng):
    x = rng.standard_normal((2, 1, 20, 20))
    w = rng.standard_normal((2, 1, 3, 3))
    ref = vc.conv2d(x, w)
    old = vc.set_workspace(100)
    try:
        assert vc.get_workspace() == 100
        np.testing.assert_allclose(vc.conv2d(x, w), ref, rtol=1e-12, atol=1e-12)
    finally:
        vc.set_workspace(old)
    assert vc.get_workspace() == old


@pytest.mark.parametrize("dtype", DTYPES)
def test_pointwise_convolution_skips_im2col_and_is_right(rng, dtype):
    x = rand(rng, (3, 8, 6, 5), dtype)
    w = rand(rng, (4, 8, 1, 1), dtype)
    b = rand(rng, (4,), dtype)
    y = vc.conv2d(x, w, b)
    expect = np.einsum("oc,nchw->nohw", w[:, :, 0, 0].astype(np.float64), x) + b[None, :, None, None]
    assert_close(y, expect, dtype)
    dy = rand(rng, y.shape, dtype)
    dx, dw, db = vc.conv2d_backward(dy, x, w, workspace=200)
    assert_close(dx, np.einsum("oc,nohw->nchw", w[:, :, 0, 0].astype(np.float64), dy), dtype)
    assert_close(dw[:, :, 0, 0], np.einsum("nohw,nchw->oc", dy.astype(np.float64), x), dtype)


# ----------------------------------------------------------------------------- dtypes, layouts
@pytest.mark.parametrize("dx_,dw_,expect", [
    (np.float32, np.float32, np.float32), (np.float64, np.float64, np.float64),
    (np.float32, np.float64, np.float64), (np.int64, np.float32, np.float64),
    (np.int32, np.int16, np.float64), (np.bool_, np.float64, np.float64),
    (np.float16, np.float32, np.float32),
])
def test_dtype_policy(rng, dx_, dw_, expect):
    x = (rng.standard_normal((1, 2, 5, 5)) * 3).astype(dx_)
    w = (rng.standard_normal((2, 2, 2, 2)) * 3).astype(dw_)
    y = vc.conv2d(x, w)
    assert y.dtype == expect
    dx, dw, db = vc.conv2d_backward(np.ones(y.shape, dtype=expect), x, w)
    assert dx.dtype == dw.dtype == db.dtype == expect
    assert_close(y, ref_conv2d(x, w), expect)


@pytest.mark.parametrize("dtype", [np.complex128, object, np.longdouble])
def test_refused_dtypes(dtype):
    x = np.ones((1, 1, 3, 3), dtype=dtype)
    with pytest.raises(TypeError, match="x"):
        vc.conv2d(x, np.ones((1, 1, 2, 2)))


def test_layouts_fortran_strided_negative_readonly(rng):
    x = rng.standard_normal((2, 3, 10, 12))
    w = rng.standard_normal((4, 3, 3, 3))
    ref = ref_conv2d(x, w, padding=1)
    variants = [
        np.asfortranarray(x),
        np.ascontiguousarray(x[:, :, ::-1, ::-1])[:, :, ::-1, ::-1],
        np.repeat(x, 2, axis=3)[:, :, :, ::2],
    ]
    ro = x.copy()
    ro.flags.writeable = False
    variants.append(ro)
    for xv in variants:
        before = xv.copy()
        np.testing.assert_allclose(vc.conv2d(xv, np.asfortranarray(w[:, :, ::-1, ::-1])[:, :, ::-1, ::-1], padding=1),
                                   ref, rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(xv, before)


def test_inputs_are_never_modified(rng, lenet_table):
    x = rng.standard_normal((2, 6, 9, 9))
    w = rng.standard_normal((16, 6, 3, 3))
    b = rng.standard_normal(16)
    dy = rng.standard_normal((2, 16, 9, 9))
    copies = [a.copy() for a in (x, w, b, dy, lenet_table)]
    vc.conv2d(x, w, b, padding="same", flip=True, connections=lenet_table)
    vc.conv2d_backward(dy, x, w, padding="same", flip=True, connections=lenet_table)
    for a, c in zip((x, w, b, dy, lenet_table), copies):
        np.testing.assert_array_equal(a, c)


def test_empty_batch(rng):
    x = np.zeros((0, 3, 8, 8), dtype=np.float32)
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    y = vc.conv2d(x, w, padding=1)
    assert y.shape == (0, 5, 8, 8) and y.dtype == np.float32
    dx, dw, db = vc.conv2d_backward(y, x, w, padding=1)
    assert dx.shape == x.shape and dw.shape == w.shape and db.shape == (5,)
    assert not dw.any() and not db.any()


def test_every_output_position_is_written(rng):
    """np.empty output: a tile plan that skipped a row would leave garbage; compare twice."""
    x = rng.standard_normal((3, 2, 31, 7))
    w = rng.standard_normal((3, 2, 4, 3))
    for budget in (1, 500, 10**8):
        y = vc.conv2d(x, w, stride=(3, 2), padding=(2, 1), workspace=budget)
        np.testing.assert_allclose(y, ref_conv2d(x, w, stride=(3, 2), padding=(2, 1)),
                                   rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("budget", [2**16, 2**20, 2**22])
def test_peak_memory_stays_within_the_workspace_budget(rng, budget):
    """Peak traced memory of a call <= budget + the arrays it returns + the weight copy.

    The engine reports its workspace to tracemalloc, as NumPy does its arrays."""
    import tracemalloc
    x = rng.standard_normal((4, 8, 64, 64)).astype(np.float32)
    w = rng.standard_normal((16, 8, 5, 5)).astype(np.float32)
    dy = rng.standard_normal((4, 16, 60, 60)).astype(np.float32)
    full_cols = 8 * 25 * 4 * 60 * 60 * 4                       # 11.5 MB unbounded
    slack = 64 * 1024                                          # small Python objects
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        y = vc.conv2d(x, w, workspace=budget)
        peak = tracemalloc.get_traced_memory()[1] - base
        assert peak <= budget + y.nbytes + w.nbytes + slack, (peak, budget)
        del y
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        dx, dw, db = vc.conv2d_backward(dy, x, w, workspace=budget)
        peak = tracemalloc.get_traced_memory()[1] - base
        returned = dx.nbytes + 2 * dw.nbytes + db.nbytes       # dw and its reshaped copy
        assert peak <= budget + returned + w.nbytes + slack, (peak, budget)
        assert peak < full_cols
    finally:
        tracemalloc.stop()
