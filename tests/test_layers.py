"""The layer set beyond LeNet-5: 1-D and 3-D networks trained side by side with the same
networks built from PyTorch operations, parameters with their gradients, networks that
leave their layers unchanged, and save/load of every layer."""

import numpy as np
import pytest

import vecconv as vc
import vecconv.nn as nn
from vecconv.nn.conv import _ConvNd, _ConvTransposeNd
from vecconv.nn.serialization import plain_json

try:
    import torch
    F = torch.nn.functional
except ImportError:          # only the torch twins need it
    torch = None

ACT = {"identity": lambda z: z, "tanh": lambda z: torch.tanh(z),
       "sigmoid": lambda z: torch.sigmoid(z), "relu": lambda z: torch.relu(z),
       "lecun_tanh": lambda z: 1.7159 * torch.tanh(z * (2 / 3))}
PAD_MODES = {"reflect": "reflect", "replicate": "replicate", "circular": "circular"}


def _pairs(padding, d):
    p = (padding,) * d if isinstance(padding, int) else tuple(padding)
    return [(q, q) if isinstance(q, int) else tuple(q) for q in p]


def torch_layer(layer, h, p):
    """One vecconv layer as PyTorch operations on h, with the parameters p (torch leaf
    tensors, shared with the vecconv layer's values)."""
    if isinstance(layer, _ConvNd):
        d = layer.spatial
        w = p["w"]
        if layer.connections is not None:
            w = w * torch.tensor(layer.connections.T.astype(float)).reshape(
                w.shape[:2] + (1,) * d).to(w.dtype)
        if layer.flip:
            w = torch.flip(w, dims=tuple(range(2, 2 + d)))
        pads = _pairs(layer.padding, d)
        flat = [v for pair in reversed(pads) for v in pair]           # F.pad: last axis first
        if layer.padding_mode in PAD_MODES:
            h = F.pad(h, flat, mode=PAD_MODES[layer.padding_mode])
        else:
            h = F.pad(h, flat)
        conv = getattr(F, f"conv{d}d")
        return conv(h, w, p["b"], stride=layer.stride, dilation=layer.dilation,
                    groups=layer.groups)
    if isinstance(layer, _ConvTransposeNd):
        conv = getattr(F, f"conv_transpose{layer.spatial}d")
        return conv(h, p["w"], p["b"], stride=layer.stride, padding=layer.padding,
                    output_padding=layer.output_padding, groups=layer.groups,
                    dilation=layer.dilation)
    if isinstance(layer, nn.MaxPool):
        d = h.dim() - 2
        return getattr(F, f"max_pool{d}d")(h, layer.kernel_size, layer.stride, layer.padding,
                                           layer.dilation, ceil_mode=layer.ceil_mode)
    if isinstance(layer, nn.AvgPool):
        d = h.dim() - 2
        extra = {} if d == 1 else {"divisor_override": layer.divisor_override}
        return getattr(F, f"avg_pool{d}d")(h, layer.kernel_size, layer.stride, layer.padding,
                                           ceil_mode=layer.ceil_mode,
                                           count_include_pad=layer.count_include_pad, **extra)
    if isinstance(layer, nn.Subsampling):
        d = h.dim() - 2
        k = layer.kernel_size
        if d == 1:       # torch's avg_pool1d has no divisor_override: pool a 1 x n window
            s = F.avg_pool2d(h[:, :, None], (1,) + tuple(k), (1, layer.stride or k[0]),
                             (0, layer.padding), ceil_mode=layer.ceil_mode,
                             divisor_override=1)[:, :, 0]
        else:
            s = getattr(F, f"avg_pool{d}d")(h, k, layer.stride, layer.padding,
                                            ceil_mode=layer.ceil_mode, divisor_override=1)
        shape = (1, -1) + (1,) * d
        return ACT[layer.activation](p["beta"].reshape(shape) * s + p["b"].reshape(shape))
    if isinstance(layer, nn.Activation):
        return ACT[layer.function](h)
    if isinstance(layer, nn.Flatten):
        return h.reshape(h.shape[0], -1)
    if isinstance(layer, nn.Dense):
        return h @ p["w"].T + p["b"]
    raise TypeError(type(layer))


def torch_twin(net):
    """(f, params): the network as a torch function and its parameters by name."""
    params = {name: torch.tensor(p.data.copy(), requires_grad=True)
              for name, p in net.named_parameters()}

    def f(x):
        h = torch.tensor(x)
        for i, layer in enumerate(net.layers):
            prefix = f"{i}.{type(layer).__name__}."
            h = torch_layer(layer, h, {k[len(prefix):]: v for k, v in params.items()
                                       if k.startswith(prefix)})
        return h
    return f, params


def net_1d(dtype):
    rng = np.random.default_rng(4)
    return nn.Sequential([
        nn.Conv1D(2, 4, 3, padding=2, padding_mode="reflect", dtype=dtype, rng=rng),
        nn.Activation("tanh"),
        nn.Subsampling(4, (3,), "lecun_tanh", stride=2, padding=1, ceil_mode=True, dtype=dtype),
        nn.Conv1D(4, 6, 3, groups=2, dilation=2, padding=((1, 3),), padding_mode="circular",
                  flip=True, dtype=dtype, rng=rng),
        nn.MaxPool(3, stride=2, padding=1, ceil_mode=True),
        nn.ConvTranspose1D(6, 3, 3, stride=2, padding=1, output_padding=1, dtype=dtype, rng=rng),
        nn.Activation("relu"),
        nn.AvgPool1D(3, stride=1, padding=1, count_include_pad=False),
        nn.Flatten(),
        nn.Dense(3 * 14, 5, dtype=dtype, rng=rng),
    ])


def net_3d(dtype):
    rng = np.random.default_rng(5)
    table = np.array([[1, 0, 1, 1], [0, 1, 1, 0]], bool)
    return nn.Sequential([
        nn.Conv3D(2, 4, (2, 3, 3), padding=(0, 1, 1), padding_mode="replicate",
                  connections=table, dtype=dtype, rng=rng),
        nn.Activation("lecun_tanh"),
        nn.MaxPool3D(2, stride=(1, 2, 2), dilation=(2, 1, 1)),
        nn.ConvTranspose3D(4, 4, 2, stride=(1, 2, 2), groups=2, dtype=dtype, rng=rng),
        nn.Subsampling(4, (2, 2, 2), "sigmoid", dtype=dtype),
        nn.AvgPool((1, 3, 3), stride=1, padding=(0, 1, 1), divisor_override=4),
        nn.Conv3D(4, 3, 2, stride=1, dilation=(1, 1, 2), padding=1, dtype=dtype, rng=rng),
        nn.Activation("tanh"),
        nn.Flatten(),
        nn.Dense(72, 4, dtype=dtype, rng=rng),
    ])


CASES = {"1-D": (net_1d, (5, 2, 20), 5), "3-D": (net_3d, (3, 2, 5, 6, 7), 4)}


@pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_network_trains_as_its_torch_twin(case, dtype):
    """Loss, every gradient and four SGD steps with momentum agree with the same
    network built from torch operations and trained by torch.optim.SGD."""
    make, shape, classes = CASES[case]
    net = make(dtype)
    rng = np.random.default_rng(6)
    x = rng.standard_normal(shape).astype(dtype)
    labels = rng.integers(0, classes, shape[0])
    f, params = torch_twin(net)
    opt = nn.SGD(net, lr=0.1, momentum=0.9)
    topt = torch.optim.SGD(list(params.values()), lr=0.1, momentum=0.9)
    rtol = 1e-9 if dtype == np.float64 else 2e-4
    for step in range(4):
        loss, delta = nn.SoftmaxCrossEntropy()(net.forward(x), labels)
        assert net.backward(delta) is None
        topt.zero_grad()
        tloss = F.cross_entropy(f(x), torch.tensor(labels))
        tloss.backward()
        assert loss == pytest.approx(tloss.item(), rel=rtol, abs=1e-6)
        for name, p in net.named_parameters():
            assert p.grad.dtype == dtype, name
            np.testing.assert_allclose(p.grad, params[name].grad.numpy(), rtol=rtol,
                                       atol=1e-10 if dtype == np.float64 else 1e-5,
                                       err_msg=f"step {step}, {name}")
        opt.step()
        topt.step()
        with torch.no_grad():                      # torch's copy of the table constraint
            for name, p in net.named_parameters():
                if p.mask is not None:
                    params[name] *= torch.tensor(np.broadcast_to(p.mask, p.data.shape).astype(dtype))
    for name, p in net.named_parameters():          # where four steps took both
        np.testing.assert_allclose(p.data, params[name].detach().numpy(), rtol=rtol,
                                   atol=1e-10 if dtype == np.float64 else 1e-5, err_msg=name)


def test_sequential_leaves_its_layers_unchanged(rng):
    conv = nn.Conv2D(1, 2, 3, dtype=np.float64, seed=0)
    before = vars(conv).copy()
    net = nn.Sequential([conv, nn.Flatten(), nn.Dense(2 * 4 * 4, 3, dtype=np.float64, seed=0)])
    assert vars(conv).keys() == before.keys()
    x = rng.standard_normal((2, 1, 6, 6))
    _, delta = nn.SoftmaxCrossEntropy()(net.forward(x), np.array([0, 2]))
    assert net.backward(delta) is None                      # the network needs no dx ...
    y = conv.forward(x)
    dx = conv.backward(np.ones_like(y))                     # ... the layer alone gives it
    assert dx.shape == x.shape and np.abs(dx).sum() > 0
    assert conv.backward(np.ones_like(y), input_grad=False) is None


def test_parameters_carry_their_gradients():
    conv = nn.Conv3D(2, 3, 2, connections=np.array([[1, 0, 1], [1, 1, 0]], bool), seed=0)
    named = dict(conv.named_parameters())
    assert list(named) == ["w", "b"]
    w = named["w"]
    assert isinstance(w, nn.Parameter) and w.grad.shape == w.data.shape
    assert w.mask.shape == (3, 2, 1, 1, 1)
    np.testing.assert_array_equal(w.mask[..., 0, 0, 0], conv.connections.T)
    assert conv.params["w"] is w.data and conv.grads["w"] is w.grad
    assert conv.parameter_count() == 4 * 8 + 3
    x = np.random.default_rng(0).standard_normal((1, 2, 3, 3, 3)).astype(np.float32)
    conv.backward(np.ones_like(conv.forward(x)))
    assert (w.grad[~np.broadcast_to(w.mask, w.data.shape)] == 0).all()


def test_sgd_keeps_masked_entries_zero_and_decays_only_weights(rng):
    conv = nn.Conv3D(2, 3, 2, connections=np.array([[1, 0, 1], [1, 1, 0]], bool),
                     dtype=np.float64, seed=0)
    net = nn.Sequential([conv])
    w = dict(conv.named_parameters())["w"]
    w.data[~np.broadcast_to(w.mask, w.data.shape)] = np.nan            # whatever they hold
    b = conv.params["b"]
    b[:] = 1.0
    for p in net.parameters():
        p.grad = np.zeros_like(p.data)
    absent = ~np.broadcast_to(w.mask, w.data.shape)
    before = w.data[~absent].copy()
    nn.SGD(net, lr=0.1, momentum=0.0, weight_decay=0.5).step()
    assert (w.data[absent] == 0).all() and np.isfinite(w.data).all()
    np.testing.assert_allclose(w.data[~absent], before * (1 - 0.1 * 0.5))   # decayed
    np.testing.assert_array_equal(conv.params["b"], 1.0)                # no decay of biases


class Scale(nn.Layer):
    """A layer a user writes: y = a * x with a trainable scalar a."""

    def __init__(self):
        super().__init__()
        self.dtype = np.dtype(np.float64)
        self.add_parameter("a", np.array([2.0]))

    def param_shapes(self):
        return {"a": (1,)}

    def forward(self, x):
        self._x = x
        return self.checked_params()["a"][0] * x

    def backward(self, delta, input_grad=True):
        self._parameters["a"].grad = np.array([np.sum(delta * self._x)])
        return self.params["a"][0] * delta if input_grad else None


def test_a_layer_of_your_own_trains_in_a_network(rng):
    net = nn.Sequential([Scale(), nn.Flatten(), nn.Dense(4, 2, dtype=np.float64, seed=0)])
    x = rng.standard_normal((3, 4))
    before = net.layers[0].params["a"].copy()
    _, delta = nn.SoftmaxCrossEntropy()(net.forward(x), np.array([0, 1, 1]))
    net.backward(delta)
    g = net.layers[0].grads["a"].copy()
    nn.SGD(net, lr=0.5, momentum=0.0).step()
    np.testing.assert_allclose(net.layers[0].params["a"], before - 0.5 * g)
    assert "Layer" in nn.__all__ and "Parameter" in nn.__all__


def test_backward_before_forward_is_a_clear_error():
    for layer in (nn.Conv1D(1, 1, 2), nn.ConvTranspose2D(1, 1, 2), nn.MaxPool(2),
                  nn.Subsampling(1, 2), nn.AvgPool(2), nn.Dense(2, 2), nn.Flatten(),
                  nn.Activation()):
        with pytest.raises(RuntimeError, match="forward pass first"):
            layer.backward(np.zeros((1, 1, 2, 2)))


def test_save_and_load_every_layer(tmp_path):
    for make, shape, _ in CASES.values():
        net = make(np.float32)
        x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
        path = net.save(tmp_path / "net")
        again = nn.load(path)
        assert [type(a) for a in again.layers] == [type(b) for b in net.layers]
        assert ([plain_json(a.config()) for a in again.layers]
                == [plain_json(b.config()) for b in net.layers])
        np.testing.assert_array_equal(again.forward(x), net.forward(x))
        for (n1, p1), (n2, p2) in zip(net.named_parameters(), again.named_parameters()):
            assert n1 == n2
            np.testing.assert_array_equal(p1.data, p2.data)
            assert (p1.mask is None) == (p2.mask is None)


def test_files_of_vecconv_0_1_pooling_layers_load(tmp_path):
    """vecconv 0.1 wrote the pooling window as ``size``."""
    import json
    spec = [dict(type="MaxPool", name=None, config=dict(size=2)),
            dict(type="AvgPool", name="S", config=dict(channels=1, size=2,
                                                       activation="identity",
                                                       dtype="float64"))]
    path = tmp_path / "old.npz"
    np.savez(path, __spec__=np.array(json.dumps(spec)), p1_beta=np.array([0.25]),
             p1_b=np.array([0.0]))
    net = nn.load(path)
    assert [type(layer) for layer in net.layers] == [nn.MaxPool, nn.Subsampling]
    y = net.forward(np.arange(16.0).reshape(1, 1, 4, 4))
    # the max of each 2x2 area is [[5, 7], [13, 15]]; their sum times beta = 0.25
    np.testing.assert_allclose(y, [[[[40 * 0.25]]]])


def test_subsampling_backward_is_eq_6_for_windows_equal_to_the_stride(rng):
    pool = nn.Subsampling(3, 2, "tanh", dtype=np.float64)
    pool.params["beta"][:] = rng.standard_normal(3)
    x = rng.standard_normal((2, 3, 6, 8))
    z = pool.params["beta"][None, :, None, None] * nn.down(x, 2) + pool.params["b"][None, :, None, None]
    np.testing.assert_allclose(pool.forward(x), np.tanh(z), rtol=1e-14)
    delta = rng.standard_normal(z.shape)
    dz = delta * (1 - np.tanh(z) ** 2)
    dx = pool.backward(delta)
    np.testing.assert_allclose(dx, nn.up(dz * pool.params["beta"][None, :, None, None], 2),
                               rtol=1e-13)


def test_layers_are_callable_and_plans_survive_a_summary(rng):
    """forward -> summary (which plans other shapes) -> backward uses the forward's plan."""
    for pooling in ("subsampling", "max"):
        net = nn.lenet5(dtype=np.float64, seed=0, pooling=pooling)
        x = rng.standard_normal((4, 1, 32, 32))
        np.testing.assert_array_equal(net.layers[0](x), net.layers[0].forward(x))
        _, delta = nn.SoftmaxCrossEntropy()(net(x), np.arange(4))
        net.summary()
        net.backward(delta)
        again = nn.lenet5(dtype=np.float64, seed=0, pooling=pooling)
        again.backward(nn.SoftmaxCrossEntropy()(again(x), np.arange(4))[1])
        for (_, p), (_, q) in zip(net.named_parameters(), again.named_parameters()):
            np.testing.assert_array_equal(p.grad, q.grad)


@pytest.mark.parametrize("spatial", [1, 2, 3])
def test_subsampling_starts_as_the_average_of_its_window(spatial):
    pool = nn.Subsampling(2, 2, "identity", spatial=spatial, dtype=np.float64)
    x = np.ones((1, 2) + (4,) * spatial)
    np.testing.assert_array_equal(pool.forward(x), 1.0)
    tup = nn.Subsampling(2, (2,) * spatial, "identity", dtype=np.float64)
    np.testing.assert_array_equal(tup.params["beta"], pool.params["beta"])
    with pytest.raises(ValueError, match="Subsampling expects input"):
        pool.forward(np.ones((1, 2) + (4,) * (spatial % 3 + 1)))


def test_pooling_options_as_tuples_set_the_axes(rng):
    pool = nn.MaxPool(2, padding=(0, 1, 1), stride=(1, 2, 2))
    x = rng.standard_normal((1, 2, 3, 4, 4))
    np.testing.assert_array_equal(pool.forward(x), vc.max_pool(x, 2, padding=(0, 1, 1),
                                                               stride=(1, 2, 2)))
    with pytest.raises(ValueError, match="the same number"):
        nn.MaxPool((2, 2), stride=(1, 1, 1))
    with pytest.warns(DeprecationWarning, match="kernel_size"):
        assert nn.MaxPool(size=3).kernel_size == 3
    with pytest.warns(DeprecationWarning, match="kernel_size"):
        old = nn.AvgPool(1, size=3)        # vecconv 0.1's form: LeCun's layer, renamed
    assert isinstance(old, nn.Subsampling) and old.kernel_size == (3, 3)
    assert "MaxPool 2 /(1, 2, 2)" in pool.describe() or "MaxPool 2 /[1, 2, 2]" in pool.describe()


def test_the_mask_is_the_one_home_of_the_connection_table(rng):
    conv = nn.Conv2D(3, 2, 2, connections=np.ones((3, 2), bool), dtype=np.float64, seed=0)
    x = rng.standard_normal((1, 3, 4, 4))
    full = conv.forward(x)
    w = dict(conv.named_parameters())["w"]
    w.mask = w.mask.copy()
    w.mask[0, 1] = False                    # output map 0 no longer reads input map 1
    np.testing.assert_array_equal(conv.connections[:, 0], [True, False, True])
    part = conv.forward(x)
    ref = vc.conv2d(x, w.data * w.mask)
    np.testing.assert_allclose(part, ref, rtol=1e-12)
    assert not np.allclose(part, full)


def test_hostile_inputs_to_layers_are_named(rng):
    with pytest.raises(ValueError, match="at least 1 entry"):
        nn.MaxPool(2, padding=1).forward(np.ones((1, 1, 0, 4)))
    with pytest.raises(ValueError, match="at least 1 entry"):
        nn.Subsampling(1, 2, padding=1).forward(np.ones((1, 1, 0, 4)))
    with pytest.raises(ValueError, match="at least 1 entry"):
        nn.AvgPool(2, padding=1).forward(np.ones((1, 1, 0, 4)))
    assert nn.Flatten().forward(np.zeros((0, 3, 2, 2))).shape == (0, 12)
    assert nn.lenet5().forward(np.zeros((0, 1, 32, 32), np.float32)).shape == (0, 10)
    for layer, shape in ((nn.Conv2D(2, 2, 3), (1, 2, 5, 5)), (nn.Dense(3, 2), (2, 3)),
                         (nn.Subsampling(2, 2), (1, 2, 4, 4)), (nn.AvgPool(2), (1, 2, 4, 4)),
                         (nn.MaxPool(2), (1, 2, 4, 4)),
                         (nn.ConvTranspose2D(2, 2, 2), (1, 2, 3, 3)), (nn.Activation(), (2, 3))):
        with pytest.raises(TypeError, match="x must be a real"):
            layer.forward(np.ones(shape, complex))
        y = layer.forward(np.ones(shape, np.float32))
        with pytest.raises(TypeError, match="delta must be a real"):
            layer.backward(np.full(y.shape, "1"))
    act = nn.Activation()
    act.forward(np.ones((2, 3)))
    with pytest.raises(ValueError, match="Activation backward expects"):
        act.backward(np.ones((3, 2)))


@pytest.mark.parametrize("spec,match", [
    ([{"type": ["Dense"], "config": {}}], "unknown type"),
    ([{"type": "Dense", "config": {"in_features": 2, "out_features": 3, "rng": 5}}],
     "no random source"),
    ([{"type": "Flatten", "config": {}, "name": [1, 2]}], "name that is not a string"),
])
def test_tampered_layer_specs_are_refused(tmp_path, spec, match):
    import json
    path = tmp_path / "bad.npz"
    np.savez(path, __spec__=np.array(json.dumps(spec)))
    with pytest.raises(ValueError, match=match):
        nn.load(path)


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04garbage", b"not a zip at all"])
def test_files_that_are_not_models_are_refused(tmp_path, content):
    path = tmp_path / "bad.npz"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="not a vecconv model"):
        nn.load(path)
