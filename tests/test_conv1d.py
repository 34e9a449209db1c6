"""conv1d / conv1d_backward against scipy.signal: the one-dimensional derivation (a Q&A
answer deriving backpropagation for x_i = sum_a w_a y_{a+i})."""

import numpy as np
import pytest
import scipy.signal as ss

import vecconv as vc
from reference import assert_close, numeric_grad, ref_conv1d, rel_err


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("padding", ["valid", "same", "full", 0, 3])
@pytest.mark.parametrize("k", [1, 2, 3, 4, 7])
def test_forward_matches_scipy_correlate_convolve(rng, dtype, flip, padding, k):
    x = rng.standard_normal((2, 3, 12)).astype(dtype)
    w = rng.standard_normal((4, 3, k)).astype(dtype)
    b = rng.standard_normal(4).astype(dtype)
    y = vc.conv1d(x, w, b, padding=padding, flip=flip)
    assert y.dtype == dtype
    assert_close(y, ref_conv1d(x, w, b, padding=padding, flip=flip), dtype)


def test_same_differs_from_correlate2d_for_even_kernels(rng):
    """scipy.signal.correlate('same') and correlate2d('same') centre an even kernel differently;
    conv1d follows the former, conv2d the latter."""
    x = rng.standard_normal(10)
    k = rng.standard_normal(4)
    y1 = vc.conv1d(x[None, None], k[None, None], padding="same")[0, 0]
    y2 = vc.conv2d(x[None, None, None], k[None, None, None], padding="same")[0, 0, 0]
    np.testing.assert_allclose(y1, ss.correlate(x, k, "same"), rtol=1e-12)
    np.testing.assert_allclose(y2, ss.correlate2d(x[None], k[None], "same")[0], rtol=1e-12)
    assert not np.allclose(y1, y2)


@pytest.mark.parametrize("stride,dilation,groups", [(2, 1, 1), (1, 3, 1), (3, 2, 2), (1, 1, 4)])
def test_stride_dilation_groups(rng, stride, dilation, groups):
    x = rng.standard_normal((2, 4, 20))
    w = rng.standard_normal((8, 4 // groups, 3))
    # 'same' is for stride 1 (as in PyTorch); a strided call says its padding explicitly:
    # here the pairs 'same' gives at stride 1 (k//2 before, as scipy's 1-D correlate)
    e = dilation * 2 + 1
    pads = "same" if stride == 1 else ((e // 2, e - 1 - e // 2),)
    y = vc.conv1d(x, w, stride=stride, dilation=dilation, groups=groups, padding=pads)
    np.testing.assert_allclose(y, ref_conv1d(x, w, stride=stride, dilation=dilation,
                                             groups=groups, padding="same"), rtol=1e-12, atol=1e-12)
    if stride > 1:
        with pytest.raises(ValueError, match=r"padding='same'.*stride"):
            vc.conv1d(x, w, stride=stride, dilation=dilation, groups=groups, padding="same")


def test_seed_gradient_formulas(rng):
    """dE/dw_a = sum_i delta_i y_{i+a}; delta^{l-1} = delta convolved with the kernel ('full')."""
    y = rng.standard_normal(15)
    w = rng.standard_normal(4)
    delta = rng.standard_normal(12)
    dx, dw, db = vc.conv1d_backward(delta[None, None], y[None, None], w[None, None])
    expect_w = [sum(delta[i] * y[i + a] for i in range(12)) for a in range(4)]
    np.testing.assert_allclose(dw[0, 0], expect_w, rtol=1e-12)
    np.testing.assert_allclose(dx[0, 0], ss.convolve(delta, w, "full"), rtol=1e-12)
    assert db[0] == pytest.approx(delta.sum())


@pytest.mark.parametrize("opts", [dict(), dict(padding="same", flip=True), dict(stride=2, dilation=2, padding=3)])
def test_finite_difference_gradients(rng, opts):
    x = rng.standard_normal((2, 3, 11))
    w = rng.standard_normal((2, 3, 4))
    b = rng.standard_normal(2)
    g = rng.standard_normal(vc.conv1d(x, w, b, **opts).shape)
    dx, dw, db = vc.conv1d_backward(g, x, w, **opts)
    assert dx.shape == x.shape and dw.shape == w.shape
    assert rel_err(dx, numeric_grad(lambda a: np.sum(g * vc.conv1d(a, w, b, **opts)), x)) < 1e-7
    assert rel_err(dw, numeric_grad(lambda a: np.sum(g * vc.conv1d(x, a, b, **opts)), w)) < 1e-7
    assert rel_err(db, numeric_grad(lambda a: np.sum(g * vc.conv1d(x, w, a, **opts)), b)) < 1e-7


def test_float32_gradients_stay_float32(rng):
    x = rng.standard_normal((1, 2, 9)).astype(np.float32)
    w = rng.standard_normal((3, 2, 2)).astype(np.float32)
    y = vc.conv1d(x, w)
    assert all(a.dtype == np.float32 for a in vc.conv1d_backward(y, x, w))


def test_connection_table_in_1d(rng):
    """conv1d takes the same (Cin, Cout) table as conv2d."""
    table = np.array([[True, False, True], [False, True, True]])
    x = rng.standard_normal((2, 2, 9))
    w = rng.standard_normal((3, 2, 3))
    y = vc.conv1d(x, w, connections=table)
    for j in range(3):
        expect = sum(ss.correlate(x[:, i], w[j, i][None], "valid") for i in range(2) if table[i, j])
        np.testing.assert_allclose(y[:, j], expect, rtol=1e-12)
    dx, dw, _ = vc.conv1d_backward(np.ones_like(y), x, w, connections=table)
    assert not dw[~table.T].any()
