"""Transposed convolution: against PyTorch's conv_transpose{1,2,3}d autograd, as the
adjoint of conv, unbatched inputs, and refused options."""

import numpy as np
import pytest

import vecconv as vc
from reference import assert_close

CASES = [
    dict(),
    dict(stride=2, padding=1, output_padding=1),
    dict(stride=2, dilation=3, output_padding=2),        # output_padding >= stride
    dict(groups=2, stride=3, padding=2),
    dict(dilation=2, padding=1),
    dict(stride=2, output_size="pick"),
]


def _case(rng, d, case, dtype):
    g = case.get("groups", 1)
    x = rng.standard_normal((2, 4) + (4, 5, 3)[:d]).astype(dtype)
    w = rng.standard_normal((4, 3) + (3, 2, 3)[:d]).astype(dtype)
    b = rng.standard_normal(3 * g).astype(dtype)
    opts = dict(case)
    if opts.get("output_size") == "pick":    # the largest size this input allows
        s = opts["stride"]
        opts["output_size"] = tuple((i - 1) * s + k + s - 1 for i, k in zip(x.shape[2:], w.shape[2:]))
    return x, w, b, opts


@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("case", CASES, ids=[str(c) for c in CASES])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_torch_forward_and_backward(rng, d, case, dtype):
    torch = pytest.importorskip("torch")
    f = getattr(torch.nn.functional, f"conv_transpose{d}d")
    x, w, b, opts = _case(rng, d, case, dtype)
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    topts = {k: v for k, v in opts.items() if k != "output_size"}
    if "output_size" in opts:          # torch's functional takes output_padding only
        base = [(i - 1) * opts["stride"] + k for i, k in zip(x.shape[2:], w.shape[2:])]
        topts["output_padding"] = tuple(o - bb for o, bb in zip(opts["output_size"], base))
    yt = f(xt, wt, bt, **topts)
    dy = rng.standard_normal(tuple(yt.shape)).astype(dtype)
    yt.backward(torch.tensor(dy))
    fixed = getattr(vc, f"conv_transpose{d}d")
    fixed_bwd = getattr(vc, f"conv_transpose{d}d_backward")
    for fwd, bwd in ((vc.conv_transpose, vc.conv_transpose_backward), (fixed, fixed_bwd)):
        y = fwd(x, w, b, **opts)
        dx, dw, db = bwd(dy, x, w, **opts)
        for got, ref in ((y, yt), (dx, xt.grad), (dw, wt.grad), (db, bt.grad)):
            assert got.dtype == dtype
            assert_close(got, ref.detach().numpy(), dtype)


@pytest.mark.parametrize("d", [1, 2, 3])
def test_conv_transpose_is_the_adjoint_of_conv(rng, d):
    """<conv(u, w), x> = <u, conv_transpose(x, w)> with the same weights and options,
    asymmetric padding included (which PyTorch cannot express)."""
    w = rng.standard_normal((4, 3) + (3, 2, 2)[:d])
    pads = ((1, 0), (0, 2), (2, 1))[:d]
    for opts in (dict(), dict(stride=2, padding=pads), dict(stride=3, dilation=2),
                 dict(padding=pads, dilation=(2, 1, 1)[:d])):
        x = rng.standard_normal((2, 4) + (4, 5, 3)[:d])
        u = rng.standard_normal((2, 3) + vc.conv_transpose(x, w, **opts).shape[2:])
        y = vc.conv(u, w, **opts)
        assert y.shape == x.shape
        np.testing.assert_allclose(np.vdot(y, x), np.vdot(u, vc.conv_transpose(x, w, **opts)),
                                   rtol=1e-11)


def test_unbatched_and_gradient_switches(rng):
    x = rng.standard_normal((2, 4, 5, 6))
    w = rng.standard_normal((4, 2, 3, 3))
    b = rng.standard_normal(2)
    y = vc.conv_transpose(x, w, b, stride=2)
    np.testing.assert_allclose(vc.conv_transpose(x[1], w, b, stride=2), y[1], rtol=1e-12)
    dy = rng.standard_normal(y.shape)
    ref = vc.conv_transpose_backward(dy[:1], x[:1], w, stride=2)
    got = vc.conv_transpose_backward(dy[0], x[0], w, stride=2)
    np.testing.assert_allclose(got[0], ref[0][0], rtol=1e-12)
    for g, r in zip(got[1:], ref[1:]):
        np.testing.assert_allclose(g, r, rtol=1e-12)
    only_dx = vc.conv_transpose_backward(dy, x, w, stride=2, weight_grad=False)
    assert only_dx[1] is None and only_dx[2] is None
    only_dw = vc.conv_transpose_backward(dy, x, w, stride=2, input_grad=False)
    assert only_dw[0] is None and only_dw[1] is not None


@pytest.mark.parametrize("kw, match", [
    (dict(padding="same"), "padding"),
    (dict(stride=2, output_padding=2), "output_padding must be below"),
    (dict(output_padding=1), "output_padding must be below"),
    (dict(stride=2, output_size=(20, 20)), "output_size"),
    (dict(stride=2, output_size=(9,)), "output_size"),
    (dict(output_size=(9, 9), output_padding=1), "not both"),
    (dict(padding=5), "crops more"),
    (dict(groups=3), "groups"),
])
def test_impossible_options_are_refused(rng, kw, match):
    x = rng.standard_normal((1, 4, 4, 4))
    w = rng.standard_normal((4, 2, 3, 3))
    with pytest.raises((ValueError, TypeError), match=match):
        vc.conv_transpose(x, w, **kw)


def test_shapes_are_checked(rng):
    x = rng.standard_normal((1, 4, 4, 4))
    with pytest.raises(ValueError, match="Cin = 4"):
        vc.conv_transpose(x, np.ones((3, 2, 3, 3)))
    with pytest.raises(ValueError, match="bias"):
        vc.conv_transpose(x, np.ones((4, 2, 3, 3)), np.ones(3))
    with pytest.raises(ValueError, match="dy must have the output shape"):
        vc.conv_transpose_backward(np.ones((1, 2, 5, 5)), x, np.ones((4, 2, 3, 3)))
    with pytest.raises(ValueError, match="conv_transpose3d needs w of 5 dimensions"):
        vc.conv_transpose3d(x, np.ones((4, 2, 3, 3)))


def test_output_size_and_output_padding_forms(rng):
    """output_size as an int or d (or d + 2) ints, within PyTorch's range (below the
    stride past the smallest size); output_padding in any int form."""
    x = rng.standard_normal((1, 2, 3, 3))
    w = rng.standard_normal((2, 1, 2, 2))
    ref = vc.conv_transpose(x, w, stride=2, output_padding=1)
    for size in (7, (7, 7), [1, 1, 7, 7]):
        np.testing.assert_array_equal(vc.conv_transpose(x, w, stride=2, output_size=size), ref)
    np.testing.assert_array_equal(vc.conv_transpose(x, w, stride=2, output_padding=[1, 1]), ref)
    np.testing.assert_array_equal(vc.conv_transpose(x, w, stride=2, output_size=(7, 7),
                                                    output_padding=0), ref)
    with pytest.raises(ValueError, match="can be 6 to 7"):
        vc.conv_transpose(x, w, stride=2, output_size=(8, 8))
    with pytest.raises(ValueError, match="can be 6 to 6"):       # dilation 3, stride 1
        vc.conv_transpose(x, w, dilation=3, output_size=(9, 9))
    with pytest.raises(TypeError, match="output_padding"):
        vc.conv_transpose(x, w, output_padding=np.array([0, 0]))


@pytest.mark.parametrize("op", [1, 2])
def test_the_adjoint_holds_with_output_padding_past_the_stride(rng, op):
    """output_padding >= stride (allowed when dilation > stride) appends zero entries to
    x internally; conv_transpose stays the adjoint of conv, without torch."""
    x = rng.standard_normal((2, 3, 4, 5))
    w = rng.standard_normal((3, 2, 2, 3))
    opts = dict(stride=1, dilation=3, output_padding=op)
    y = vc.conv_transpose(x, w, **opts)
    u = rng.standard_normal(y.shape)
    np.testing.assert_allclose(np.vdot(vc.conv(u, w, dilation=3)[..., :4, :5], x),
                               np.vdot(u, y), rtol=1e-11)
    dx, dw, db = vc.conv_transpose_backward(u, x, w, **opts)
    np.testing.assert_allclose(dx, vc.conv(u, w, dilation=3)[..., :4, :5], rtol=1e-12)
