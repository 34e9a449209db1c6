"""1-, 2- and 3-D convolution through one ``conv``: 3-D against loops of scipy.signal's
N-d correlate/convolve and PyTorch's conv3d autograd; unbatched inputs; the gradient
switches."""

import itertools

import numpy as np
import pytest
import scipy.signal as ss

import vecconv as vc
from reference import assert_close, ref_conv3d


CASES = [
    dict(),
    dict(stride=(2, 1, 3)),
    dict(dilation=(1, 2, 1), padding=2),
    dict(padding=((1, 0), (0, 2), (2, 1))),
    dict(padding="same"),
    dict(padding="full", flip=True),
    dict(padding="same", flip=True),
    dict(groups=2),
    dict(connections="table"),
    dict(stride=2, padding=1, flip=True, groups=2),
]


def _inputs(rng, dtype, case, n=2, c=4, cout=6, size=(5, 7, 6), k=(2, 3, 4)):
    groups = case.get("groups", 1)
    x = rng.standard_normal((n, c) + size).astype(dtype)
    w = rng.standard_normal((cout, c // groups) + k).astype(dtype)
    b = rng.standard_normal(cout).astype(dtype)
    opts = dict(case)
    if opts.get("connections") == "table":
        opts["connections"] = rng.random((c, cout)) < 0.5
    return x, w, b, opts


@pytest.mark.parametrize("case", CASES, ids=[str(c) for c in CASES])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv3d_matches_scipy(rng, case, dtype):
    x, w, b, opts = _inputs(rng, dtype, case)
    y = vc.conv3d(x, w, b, **opts)
    assert y.dtype == dtype
    assert_close(y, ref_conv3d(x, w, b, **opts), dtype)


@pytest.mark.parametrize("case", CASES, ids=[str(c) for c in CASES])
def test_conv3d_backward_matches_the_adjoint_identities(rng, case):
    """conv is linear in x and in w, so <dx, x'> = <dy, conv(x', w)> and
    <dw, w'> = <dy, conv(x, w')>, evaluated with scipy's forward alone."""
    x, w, b, opts = _inputs(rng, np.float64, case)
    y = vc.conv3d(x, w, b, **opts)
    dy = rng.standard_normal(y.shape)
    dx, dw, db = vc.conv3d_backward(dy, x, w, **opts)
    x2, w2 = rng.standard_normal(x.shape), rng.standard_normal(w.shape)
    if opts.get("connections") is not None:
        w2 = w2 * opts["connections"].T[:, :, None, None, None]
        assert not dw[~opts["connections"].T].any()
    np.testing.assert_allclose(np.vdot(dx, x2), np.vdot(dy, ref_conv3d(x2, w, **opts)), rtol=1e-9)
    np.testing.assert_allclose(np.vdot(dw, w2), np.vdot(dy, ref_conv3d(x, w2, **opts)), rtol=1e-9)
    np.testing.assert_allclose(db, dy.sum(axis=(0, 2, 3, 4)), rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", [dict(), dict(stride=(1, 2, 2), padding=(1, 0, 2), dilation=(2, 1, 1)),
                                  dict(groups=2, padding=1), dict(stride=2, padding=(2, 1, 1))])
def test_conv3d_forward_and_backward_match_torch(rng, dtype, case):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x, w, b, opts = _inputs(rng, dtype, case, n=3, c=4, cout=4, size=(6, 8, 7), k=(3, 2, 3))
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    bt = torch.tensor(b, requires_grad=True)
    yt = F.conv3d(xt, wt, bt, **opts)
    dy = rng.standard_normal(tuple(yt.shape)).astype(dtype)
    yt.backward(torch.tensor(dy))
    y = vc.conv3d(x, w, b, **opts)
    dx, dw, db = vc.conv3d_backward(dy, x, w, **opts)
    for got, ref in ((y, yt), (dx, xt.grad), (dw, wt.grad), (db, bt.grad)):
        assert got.dtype == dtype
        assert_close(got, ref.detach().numpy(), dtype)


@pytest.mark.parametrize("d", [1, 2, 3])
def test_unbatched_inputs_give_unbatched_results(rng, d):
    x = rng.standard_normal((2, 3) + (7,) * d)
    w = rng.standard_normal((5, 3) + (3,) * d)
    b = rng.standard_normal(5)
    fixed = {1: vc.conv1d, 2: vc.conv2d, 3: vc.conv3d}[d]
    fixed_bwd = {1: vc.conv1d_backward, 2: vc.conv2d_backward, 3: vc.conv3d_backward}[d]
    for f, fb in ((vc.conv, vc.conv_backward), (fixed, fixed_bwd)):
        y = f(x, w, b, padding=1)
        y0 = f(x[0], w, b, padding=1)
        assert y0.shape == y.shape[1:]
        np.testing.assert_allclose(y0, y[0], rtol=1e-12)
        dy = rng.standard_normal(y.shape)
        dx, dw, db = fb(dy[:1], x[:1], w, padding=1)
        dx0, dw0, db0 = fb(dy[0], x[0], w, padding=1)
        assert dx0.shape == x.shape[1:]
        np.testing.assert_allclose(dx0, dx[0], rtol=1e-12)
        np.testing.assert_allclose(dw0, dw, rtol=1e-12)
        np.testing.assert_allclose(db0, db, rtol=1e-12)
        with pytest.raises(ValueError, match="dy must have the output shape"):
            fb(dy[0, :, :-1], x[0], w, padding=1)


@pytest.mark.parametrize("input_grad, weight_grad", list(itertools.product([True, False], repeat=2)))
def test_gradients_not_asked_for_are_none(rng, input_grad, weight_grad):
    x = rng.standard_normal((2, 3, 5, 6, 4))
    w = rng.standard_normal((4, 3, 2, 2, 2))
    dy = rng.standard_normal((2, 4, 4, 5, 3))
    ref = vc.conv_backward(dy, x, w)
    got = vc.conv_backward(dy, x, w, input_grad=input_grad, weight_grad=weight_grad)
    for g, r, asked in zip(got, ref, (input_grad, weight_grad, weight_grad)):
        if asked:
            np.testing.assert_array_equal(g, r)
        else:
            assert g is None
    with pytest.raises(TypeError, match="input_grad"):
        vc.conv_backward(dy, x, w, input_grad=1)


def test_same_padding_follows_scipy_nd_for_even_kernels(rng):
    """3-D 'same' centres even kernels as scipy.signal.correlate/convolve do (k//2
    before, for both), unlike correlate2d."""
    x = rng.standard_normal((1, 1, 6, 5, 7))
    k = rng.standard_normal((1, 1, 2, 4, 3))
    for flip, f in ((False, ss.correlate), (True, ss.convolve)):
        np.testing.assert_allclose(vc.conv3d(x, k, padding="same", flip=flip)[0, 0],
                                   f(x[0, 0], k[0, 0], "same", method="direct"), rtol=1e-12)


def test_the_number_of_axes_is_checked(rng):
    x3 = np.ones((1, 2, 4, 4, 4))
    with pytest.raises(ValueError, match="conv2d needs w of 4 dimensions"):
        vc.conv2d(x3, np.ones((1, 2, 2, 2, 2)))
    with pytest.raises(ValueError, match="conv3d_backward needs w of 5 dimensions"):
        vc.conv3d_backward(np.ones((1, 1, 3, 3)), np.ones((1, 2, 4, 4)), np.ones((1, 2, 2, 2)))
    with pytest.raises(ValueError, match="1, 2 or 3 kernel axes"):
        vc.conv(np.ones((1, 1, 3, 3, 3, 3)), np.ones((1, 1, 2, 2, 2, 2)))
    with pytest.raises(ValueError, match=r"x must be 5-D \(N, C, D, H, W\)"):
        vc.conv(np.ones((2, 4, 4)), np.ones((1, 2, 2, 2, 2)))


def test_conv3d_on_the_pool_is_bit_identical_for_any_thread_count(rng, monkeypatch):
    from vecconv import _config
    monkeypatch.setattr(_config, "GRAIN_FLOPS", 0)
    x = rng.standard_normal((3, 4, 9, 10, 8))
    w = rng.standard_normal((6, 2, 3, 2, 3))
    with vc.threads(1):
        y = vc.conv3d(x, w, padding=1, groups=2, workspace=20000)
        ref = (y,) + vc.conv3d_backward(np.cos(y), x, w, padding=1, groups=2, workspace=20000)
    for n in (2, 3):
        with vc.threads(n):
            y = vc.conv3d(x, w, padding=1, groups=2, workspace=20000)
            got = (y,) + vc.conv3d_backward(np.cos(y), x, w, padding=1, groups=2, workspace=20000)
        for a, r in zip(got, ref):
            np.testing.assert_array_equal(a, r)
