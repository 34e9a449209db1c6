"""Padding modes: against PyTorch (F.pad + conv autograd), SciPy's boundaries and
numpy.pad; the pad's adjoint; on the pool; refused options."""

import numpy as np
import pytest
import scipy.signal as ss

import vecconv as vc
from reference import assert_close

MODES = ["zeros", "constant", "reflect", "replicate", "circular", "symmetric"]


def _padded_reference(x, pads, mode, fill):
    """numpy.pad of the spatial axes: the padded input vecconv never makes."""
    widths = ((0, 0), (0, 0)) + tuple(pads)
    if mode in ("zeros", "constant"):
        return np.pad(x, widths, mode="constant", constant_values=fill if mode == "constant" else 0)
    return np.pad(x, widths, mode={"replicate": "edge", "circular": "wrap"}.get(mode, mode))


@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forward_equals_a_valid_convolution_of_the_padded_input(rng, d, mode, dtype):
    x = rng.standard_normal((2, 3) + (6, 5, 4)[:d]).astype(dtype)
    w = rng.standard_normal((4, 3) + (3, 2, 3)[:d]).astype(dtype)
    pads = ((2, 1), (1, 3), (0, 2))[:d]
    fill = 1.5 if mode == "constant" else 0.0
    kw = dict(fill_value=fill) if mode == "constant" else {}
    y = vc.conv(x, w, padding=pads, padding_mode=mode, stride=(2, 1, 1)[:d], **kw)
    ref = vc.conv(_padded_reference(x, pads, mode, fill), w, stride=(2, 1, 1)[:d])
    assert_close(y, ref, dtype, against="regrouped")


@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("mode", ["constant", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forward_and_backward_match_torch(rng, d, mode, dtype):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = rng.standard_normal((2, 3) + (6, 5, 4)[:d]).astype(dtype)
    w = rng.standard_normal((4, 3) + (3, 2, 3)[:d]).astype(dtype)
    pads = ((2, 1), (1, 2), (0, 1))[:d]
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    flat = tuple(v for p in reversed(pads) for v in p)
    extra = dict(value=1.5) if mode == "constant" else {}
    yt = getattr(F, f"conv{d}d")(F.pad(xt, flat, mode=mode, **extra), wt, dilation=(1, 2, 1)[:d])
    dy = rng.standard_normal(tuple(yt.shape)).astype(dtype)
    yt.backward(torch.tensor(dy))
    kw = dict(padding=pads, padding_mode=mode, dilation=(1, 2, 1)[:d],
              **(dict(fill_value=1.5) if mode == "constant" else {}))
    y = vc.conv(x, w, **kw)
    dx, dw, db = vc.conv_backward(dy, x, w, **kw)
    for got, ref in ((y, yt), (dx, xt.grad), (dw, wt.grad)):
        assert_close(got, ref.detach().numpy(), dtype)


@pytest.mark.parametrize("mode, boundary", [("circular", "wrap"), ("symmetric", "symm"),
                                            ("constant", "fill"), ("zeros", "fill")])
@pytest.mark.parametrize("flip", [False, True])
def test_same_matches_scipy_boundaries(rng, mode, boundary, flip):
    x = rng.standard_normal((1, 1, 7, 6))
    k = rng.standard_normal((1, 1, 3, 4))
    fill = 2.5 if mode == "constant" else 0.0
    f = ss.convolve2d if flip else ss.correlate2d
    y = vc.conv2d(x, k, padding="same", padding_mode=mode, flip=flip,
                  **(dict(fill_value=fill) if mode == "constant" else {}))
    np.testing.assert_allclose(y[0, 0], f(x[0, 0], k[0, 0], "same", boundary=boundary,
                                          fillvalue=fill), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", MODES)
def test_the_backward_pass_is_the_adjoint_of_the_pad(rng, mode):
    """Linear modes: <dx, x'> = <dy, conv(x')> for any x' (the fill is an offset, so the
    constant mode is checked on differences)."""
    x = rng.standard_normal((2, 3, 5, 6))
    w = rng.standard_normal((4, 3, 3, 3))
    pads = ((3, 1), (2, 4)) if mode in ("replicate", "symmetric", "constant", "zeros") else ((2, 1), (1, 3))
    kw = dict(padding=pads, padding_mode=mode, **(dict(fill_value=0.7) if mode == "constant" else {}))
    y = vc.conv2d(x, w, **kw)
    dy = rng.standard_normal(y.shape)
    dx, dw, _ = vc.conv2d_backward(dy, x, w, **kw)
    x2 = rng.standard_normal(x.shape)
    zero = vc.conv2d(np.zeros_like(x), w, **kw)
    lhs = np.vdot(dy, vc.conv2d(x2, w, **kw) - zero)
    np.testing.assert_allclose(np.vdot(dx, x2), lhs, rtol=1e-10)


@pytest.mark.parametrize("mode", ["reflect", "circular", "symmetric"])
def test_padding_modes_on_the_pool_are_bit_identical(rng, mode, monkeypatch):
    """A reflected or wrapped tap may read a pixel far from its output position; the dx
    units still own their elements (channel blocks of one image span per round)."""
    from vecconv import _config, _plan
    monkeypatch.setattr(_config, "GRAIN_FLOPS", 0)
    monkeypatch.setattr(_plan, "ROUND_ELEMS", 3000)
    x = rng.standard_normal((1, 8, 23, 19))
    w = rng.standard_normal((6, 8, 3, 5))
    kw = dict(padding=((2, 2), (4, 3)), padding_mode=mode, workspace=20000)
    with vc.threads(1):
        y = vc.conv2d(x, w, **kw)
        ref = (y,) + vc.conv2d_backward(np.cos(y), x, w, **kw)
    with vc.threads(3):
        y = vc.conv2d(x, w, **kw)
        got = (y,) + vc.conv2d_backward(np.cos(y), x, w, **kw)
    for a, r in zip(got, ref):
        np.testing.assert_array_equal(a, r)


@pytest.mark.parametrize("kw, exc, match", [
    (dict(padding=5, padding_mode="reflect"), ValueError, "below the input size"),
    (dict(padding=7, padding_mode="circular"), ValueError, "at most the input size"),
    (dict(padding=1, padding_mode="wrap"), ValueError, "padding_mode must be one of"),
    (dict(padding=1, padding_mode=None), ValueError, "padding_mode"),
    (dict(padding=1, fill_value=2.0), ValueError, "fill_value"),
    (dict(padding=1, padding_mode="constant", fill_value="2"), TypeError, "fill_value"),
    (dict(padding=1, padding_mode="constant", fill_value=1j), TypeError, "fill_value"),
])
def test_impossible_padding_is_refused(kw, exc, match):
    with pytest.raises(exc, match=match):
        vc.conv2d(np.ones((1, 1, 5, 6)), np.ones((1, 1, 3, 3)), **kw)


def test_large_replicate_and_symmetric_pads_are_allowed(rng):
    x = rng.standard_normal((1, 2, 3, 2))
    w = rng.standard_normal((1, 2, 2, 2))
    for mode in ("replicate", "symmetric"):
        y = vc.conv2d(x, w, padding=7, padding_mode=mode)
        ref = vc.conv2d(_padded_reference(x, ((7, 7), (7, 7)), mode, 0.0), w)
        np.testing.assert_allclose(y, ref, rtol=1e-12)


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular", "symmetric"])
def test_modes_that_read_the_map_refuse_an_empty_axis(mode):
    """Found in review: replicate/symmetric on a length-0 axis read before the array (and
    symmetric divided by zero). A constant pad of an empty axis is defined."""
    for call in (lambda: vc.conv(np.zeros((1, 1, 0)), np.ones((1, 1, 1)), padding=2,
                                 padding_mode=mode),
                 lambda: vc.conv_backward(np.ones((1, 1, 4)), np.zeros((1, 1, 0)),
                                          np.ones((1, 1, 1)), padding=2, padding_mode=mode),
                 lambda: vc.im2col(np.zeros((1, 1, 0, 3)), 1, padding=1, padding_mode=mode)):
        with pytest.raises(ValueError, match="non-empty"):
            call()
    np.testing.assert_array_equal(
        vc.conv(np.zeros((1, 1, 0)), np.ones((1, 1, 1)), padding=2, padding_mode="constant",
                fill_value=3.0), np.full((1, 1, 4), 3.0))


@pytest.mark.parametrize("fill", [np.inf, -np.inf, np.nan])
def test_a_non_finite_fill_reaches_only_connected_maps(fill):
    """Found in review: an infinite fill met the zeroed kernel of an unconnected pair in
    the one dense product (0 * inf = NaN)."""
    x = np.ones((1, 2, 4))
    w = np.ones((2, 2, 3))
    table = np.array([[True, False], [False, True]])
    y = vc.conv(x, w, connections=table, padding=1, padding_mode="constant", fill_value=fill)
    alone = vc.conv(x[:, :1], w[:1, :1], padding=1, padding_mode="constant", fill_value=fill)
    np.testing.assert_array_equal(y[:, :1], alone)
    dx, dw, _ = vc.conv_backward(np.ones_like(y), x, w, connections=table, padding=1,
                                 padding_mode="constant", fill_value=fill)
    assert (dw[~table.T] == 0).all() and np.isfinite(dx).all()
