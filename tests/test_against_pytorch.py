"""conv2d / conv1d and their gradients against PyTorch's autograd (when torch is installed)."""

import numpy as np
import pytest

import vecconv as vc
from reference import assert_close

torch = pytest.importorskip("torch")
F = torch.nn.functional


def torch_conv(x, w, b, dy, stride, padding, dilation, groups, spatial):
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(w, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True)
    conv = F.conv2d if spatial == 2 else F.conv1d
    if isinstance(padding, tuple) and isinstance(padding[0], tuple):
        (pt, pb), (pl, pr) = padding
        tx_p = F.pad(tx, (pl, pr, pt, pb))
        y = conv(tx_p, tw, tb, stride=stride, dilation=dilation, groups=groups)
    else:
        y = conv(tx, tw, tb, stride=stride, padding=padding, dilation=dilation, groups=groups)
    y.backward(torch.tensor(dy))
    return y.detach().numpy(), tx.grad.numpy(), tw.grad.numpy(), tb.grad.numpy()


def assert_matches_torch(rng, x, w, b, dtype, stride, padding, dilation, groups):
    """Each of vecconv's conv1d/conv2d (y, dx, dw, db), for a random dy, keeps the dtype
    and equals torch's."""
    d = x.ndim - 2
    opts = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    y = getattr(vc, f"conv{d}d")(x, w, b, **opts)
    dy = rng.standard_normal(y.shape).astype(dtype)
    ref = torch_conv(x, w, b, dy, stride, padding, dilation, groups, d)
    grads = getattr(vc, f"conv{d}d_backward")(dy, x, w, **opts)
    for g, r in zip((y,) + grads, ref):
        assert g.dtype == dtype
        assert_close(g, r, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("stride,padding,dilation,groups", [
    (1, 0, 1, 1), (2, 1, 1, 1), ((2, 3), (0, 2), 1, 1), (1, 2, 2, 1), ((1, 2), 1, (3, 1), 2),
    (2, 0, 1, 4), (1, 1, 1, 8), (3, ((2, 1), (0, 3)), 2, 1),
])
def test_conv2d_and_gradients_match_torch(rng, dtype, stride, padding, dilation, groups):
    x = rng.standard_normal((3, 8, 15, 13)).astype(dtype)
    w = rng.standard_normal((8, 8 // groups, 3, 4)).astype(dtype)
    b = rng.standard_normal(8).astype(dtype)
    assert_matches_torch(rng, x, w, b, dtype, stride, padding, dilation, groups)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_same_padding_matches_torch_for_odd_kernels(rng, dtype):
    x = rng.standard_normal((2, 3, 9, 10)).astype(dtype)
    w = rng.standard_normal((4, 3, 5, 3)).astype(dtype)
    b = np.zeros(4, dtype=dtype)
    dy = rng.standard_normal((2, 4, 9, 10)).astype(dtype)
    ty, tdx, tdw, _ = torch_conv(x, w, b, dy, 1, "same", 1, 1, 2)
    assert_close(vc.conv2d(x, w, padding="same"), ty, dtype)
    dx, dw, _ = vc.conv2d_backward(dy, x, w, padding="same")
    assert_close(dx, tdx, dtype)
    assert_close(dw, tdw, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("stride,padding,dilation,groups", [(1, 0, 1, 1), (2, 3, 2, 2), (3, 1, 1, 4)])
def test_conv1d_and_gradients_match_torch(rng, dtype, stride, padding, dilation, groups):
    x = rng.standard_normal((2, 4, 30)).astype(dtype)
    w = rng.standard_normal((8, 4 // groups, 5)).astype(dtype)
    b = rng.standard_normal(8).astype(dtype)
    assert_matches_torch(rng, x, w, b, dtype, stride, padding, dilation, groups)


def test_im2col_is_torch_unfold(rng):
    x = rng.standard_normal((2, 3, 9, 8))
    cols = vc.im2col(x, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2))
    u = F.unfold(torch.tensor(x), (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2))
    np.testing.assert_array_equal(cols, u.transpose(1, 2).reshape(-1, u.shape[1]).numpy())
    y = rng.standard_normal(cols.shape)
    back = vc.col2im(y, x.shape, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2))
    tf = F.fold(torch.tensor(y.reshape(2, -1, 18).transpose(0, 2, 1)), (9, 8), (3, 2),
                stride=(2, 1), padding=(1, 0), dilation=(1, 2))
    np.testing.assert_allclose(back, tf.numpy(), rtol=1e-12, atol=1e-12)
