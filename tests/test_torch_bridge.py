"""vecconv.torch: vecconv's operations as torch.autograd.Functions (gradcheck in float64,
float32 kept, inside a torch model)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import vecconv as vc  # noqa: E402
import vecconv.torch as vt  # noqa: E402

gradcheck = torch.autograd.gradcheck


def t(rng, *shape, dtype=torch.float64):
    return torch.tensor(rng.standard_normal(shape), dtype=dtype, requires_grad=True)


@pytest.mark.parametrize("options", [
    dict(),
    dict(stride=2, padding=1, dilation=(1, 2)),
    dict(padding=2, padding_mode="reflect", flip=True),
    dict(padding=1, padding_mode="circular", groups=2),
    dict(connections=np.array([[1, 0, 1], [0, 1, 1], [1, 1, 0], [0, 0, 1]], bool)),
])
def test_conv_passes_gradcheck(rng, options):
    cin = 4
    groups = options.get("groups", 1)
    x, w, b = t(rng, 2, cin, 6, 5), t(rng, 3 if groups == 1 else 4, cin // groups, 3, 2), None
    cout = w.shape[0]
    b = t(rng, cout)
    assert gradcheck(lambda x, w, b: vt.conv(x, w, b, **options), (x, w, b), atol=1e-7)


@pytest.mark.parametrize("d", [1, 3])
def test_conv_of_other_dimensions_passes_gradcheck(rng, d):
    x = t(rng, 2, 2, *([5] * d))
    w = t(rng, 3, 2, *([2] * d))
    assert gradcheck(lambda x, w: vt.conv(x, w, padding=1, padding_mode="replicate"), (x, w))


def test_conv_transpose_passes_gradcheck(rng):
    x, w, b = t(rng, 2, 4, 3, 4), t(rng, 4, 3, 3, 2), t(rng, 6)
    f = lambda x, w, b: vt.conv_transpose(x, w, b, stride=2, padding=1, output_padding=1,
                                          groups=2)
    assert gradcheck(f, (x, w, b))


@pytest.mark.parametrize("options", [dict(), dict(stride=1, padding=1, ceil_mode=True),
                                     dict(stride=2, dilation=2)])
def test_max_pool_passes_gradcheck(rng, options):
    x = t(rng, 2, 3, 7, 6)
    assert gradcheck(lambda x: vt.max_pool(x, 3 if "padding" in options else 2, **options), (x,))


@pytest.mark.parametrize("options", [dict(), dict(stride=1, padding=1, ceil_mode=True,
                                                  count_include_pad=False),
                                     dict(divisor_override=1)])
def test_avg_pool_passes_gradcheck(rng, options):
    x = t(rng, 2, 3, 7, 6)
    assert gradcheck(lambda x: vt.avg_pool(x, (3, 2), **options), (x,))


def test_float32_stays_float32_and_results_equal_vecconv(rng):
    x, w = t(rng, 2, 3, 8, 8, dtype=torch.float32), t(rng, 4, 3, 3, 3, dtype=torch.float32)
    y = vt.conv(x, w, padding=1)
    assert y.dtype == torch.float32 and y.requires_grad
    np.testing.assert_array_equal(y.detach().numpy(),
                                  vc.conv(x.detach().numpy(), w.detach().numpy(), padding=1))
    p, idx = vt.max_pool(y, 2, return_indices=True)
    assert p.dtype == torch.float32 and idx.dtype == torch.int64 and not idx.requires_grad
    vt.avg_pool(p, 2).sum().backward()
    assert x.grad.dtype == torch.float32 and w.grad.dtype == torch.float32


def test_inside_a_torch_model_with_a_connection_table(rng):
    """A layer with a connection table trains inside a torch.nn.Module; its gradient is
    the masked torch convolution's."""
    table = np.array([[1, 0], [1, 1], [0, 1]], bool)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor(rng.standard_normal((2, 3, 3, 3))))
            self.fc = torch.nn.Linear(2 * 3 * 3, 2, dtype=torch.float64)

        def forward(self, x, ours=True):
            if ours:
                h = vt.conv(x, self.w, connections=table)
            else:
                h = torch.nn.functional.conv2d(x, self.w * torch.tensor(table.T[:, :, None, None]))
            return self.fc(torch.tanh(vt.max_pool(h, 2) if ours else
                                      torch.nn.functional.max_pool2d(h, 2)).flatten(1))

    net = Net()
    x = torch.tensor(rng.standard_normal((4, 3, 8, 8)))
    grads = []
    for ours in (True, False):
        net.zero_grad()
        net(x, ours).square().sum().backward()
        grads.append(net.w.grad.clone())
    np.testing.assert_allclose(grads[0].numpy(), grads[1].numpy(), rtol=1e-10, atol=1e-12)
    assert (grads[0].numpy()[~table.T] == 0).all()


def test_bad_tensors_are_named():
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        vt.conv(np.zeros((1, 1, 3, 3)), torch.zeros(1, 1, 2, 2))
    with pytest.raises(TypeError, match="real"):
        vt.max_pool(torch.zeros(1, 1, 4, 4, dtype=torch.complex64), 2)
