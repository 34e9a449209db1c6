"""Edges of the layer API that a user meets: wrong shapes and arguments are named where
they are given, dtypes follow the functions' rule, and errors in a network say which
layer and which input."""

import numpy as np
import pytest

import vecconv as vc
import vecconv.nn as nn


def test_flatten_backward_refuses_a_delta_of_the_right_size_and_wrong_shape(rng):
    flat = nn.Flatten()
    x = rng.standard_normal((2, 3, 2, 2))
    y = flat.forward(x)
    np.testing.assert_array_equal(flat.backward(y), x)
    for bad in (y.reshape(12, 2), y.reshape(-1), y.T.copy(), y.reshape(2, 3, 4)):
        with pytest.raises(ValueError, match=r"Flatten backward expects delta of shape \(2, 12\)"):
            flat.backward(bad)


@pytest.mark.parametrize("dtype, want", [(np.int8, np.float64), (np.bool_, np.float64),
                                         (np.uint16, np.float64), (np.float16, np.float32),
                                         (np.float32, np.float32), (np.float64, np.float64)])
@pytest.mark.parametrize("function", ["tanh", "sigmoid", "lecun_tanh", "relu", "identity"])
def test_activation_computes_in_the_functions_dtype(dtype, want, function):
    act = nn.Activation(function)
    x = np.array([[0, 1], [1, 0]], dtype=dtype)
    y = act.forward(x)
    assert y.dtype == want
    np.testing.assert_allclose(y, nn.ACTIVATIONS[function][0](x.astype(np.float64)),
                               rtol=1e-6 if want == np.float32 else 1e-15)
    assert act.backward(np.ones((2, 2), np.float64)).dtype == want


@pytest.mark.parametrize("batch_size, error", [(0, ValueError), (-1, ValueError),
                                               (1.5, TypeError), (None, TypeError)])
def test_predict_names_a_bad_batch_size(batch_size, error):
    net = nn.Sequential([nn.Flatten(), nn.Dense(4, 3, dtype=np.float64, seed=0)])
    with pytest.raises(error, match="batch_size"):
        net.predict(np.ones((5, 4)), batch_size=batch_size)
    assert net.predict(np.ones((5, 4)), batch_size=2).shape == (5,)


def test_sgd_takes_the_network_and_checks_its_numbers():
    net = nn.Sequential([nn.Dense(2, 2, dtype=np.float64, seed=0)])
    with pytest.raises(TypeError, match=r"net must be.*SGD\(net\), not a list"):
        nn.SGD(list(net.parameters()))
    with pytest.raises(TypeError, match="net must be"):
        nn.SGD(net.parameters)
    for kwargs, name in ((dict(lr=float("nan")), "lr"), (dict(lr=-0.1), "lr"),
                         (dict(lr="0.1"), "lr"), (dict(momentum=1.0), "momentum"),
                         (dict(momentum=-0.5), "momentum"),
                         (dict(weight_decay=-1e-4), "weight_decay"),
                         (dict(weight_decay=float("inf")), "weight_decay")):
        with pytest.raises((TypeError, ValueError), match=name):
            nn.SGD(net, **kwargs)
    layer = net.layers[0]                           # one layer alone trains too
    layer.forward(np.ones((1, 2)))
    layer.backward(np.ones((1, 2)))
    before = layer.params["b"].copy()
    nn.SGD(layer, lr=0.5, momentum=0.0).step()
    np.testing.assert_allclose(layer.params["b"], before - 0.5)


def test_summary_of_a_network_that_does_not_take_32_x_32_says_input_shape():
    net = nn.Sequential([nn.Conv1D(1, 2, 3), nn.Flatten(), nn.Dense(16, 2)])
    with pytest.raises(ValueError, match=r"layer 0 \(Conv1D.*\(1, 1, 32, 32\).*"
                                         r"summary\(input_shape="):
        net.summary()
    assert "(2, 8)" in net.summary(input_shape=(1, 1, 10))
    built = nn.Sequential([nn.Conv1D(1, 2, 3), nn.Flatten(), nn.Dense(16, 2)],
                          input_shape=(1, 10))
    assert "(2, 8)" in built.summary()
    with pytest.raises(TypeError, match="input_shape"):
        net.summary(input_shape=5)
    with pytest.raises(TypeError, match="input_shape"):
        nn.Sequential([], input_shape=10)
    with pytest.raises(ValueError, match="input_shape"):
        nn.Sequential([], input_shape=(1, 0))


def test_lenet5_fed_a_28_x_28_digit_names_c5_and_the_32_x_32_input(tmp_path):
    net = nn.lenet5()
    assert net.input_shape == (1, 32, 32)
    digit = np.zeros((2, 1, 28, 28), np.float32)
    message = r"layer 6 \(C5 Conv2D 5x5 16->120\).*built for inputs of shape \(N, 1, 32, 32\)"
    with pytest.raises(ValueError, match=message):
        net.forward(digit)
    with pytest.raises(ValueError, match=message):
        net.predict(digit)
    again = nn.load(net.save(tmp_path / "lenet"))       # the file keeps it
    assert again.input_shape == (1, 32, 32)
    with pytest.raises(ValueError, match=message):
        again.forward(digit)
    assert net.forward(np.zeros((1, 1, 32, 32), np.float32)).shape == (1, 10)


def test_errors_in_a_network_name_the_layer_both_ways(rng):
    net = nn.Sequential([nn.Conv2D(1, 2, 3, dtype=np.float64, seed=0), nn.Flatten(),
                         nn.Dense(8, 3, dtype=np.float64, seed=0)])
    with pytest.raises(ValueError, match=r"layer 2 \(Dense\(8, 3\)\): Dense expects 8"):
        net.forward(np.ones((1, 1, 5, 5)))
    with pytest.raises(TypeError, match=r"layer 0 \(Conv2D 3x3 1->2\): x must be a real"):
        net.forward(np.ones((1, 1, 4, 4), complex))
    net.forward(np.ones((1, 1, 4, 4)))
    with pytest.raises(ValueError, match=r"layer 2 \(Dense\(8, 3\)\), backward: Dense backward"):
        net.backward(np.ones((1, 4)))


def test_huge_dilations_and_paddings_on_one_axis_construct(rng):
    """Options are checked without inventing an input: a dilation of 30000 or a padding of
    300 on one axis is fine until an input does not fit."""
    conv = nn.Conv2D(1, 1, 3, dilation=(1, 30000), dtype=np.float64, seed=0)
    assert conv.output_shape((2, 1, 5, 60001)) == (2, 1, 3, 1)
    x = rng.standard_normal((1, 1, 3, 60001))
    np.testing.assert_allclose(conv.forward(x), vc.conv2d(x, conv.params["w"],
                                                          dilation=(1, 30000)))
    with pytest.raises(ValueError, match="larger than"):
        conv.forward(np.ones((1, 1, 5, 5)))
    pad = nn.Conv2D(1, 1, 3, padding=(0, 300), dtype=np.float64, seed=0)
    assert pad.output_shape((1, 1, 5, 5)) == (1, 1, 3, 603)
    x = rng.standard_normal((1, 1, 5, 5))
    np.testing.assert_allclose(pad.forward(x), vc.conv2d(x, pad.params["w"], padding=(0, 300)))
    pairs = nn.Conv1D(1, 1, 2, padding=((300, 0),), dtype=np.float64, seed=0)
    assert pairs.output_shape((1, 1, 4)) == (1, 1, 303)
    t = nn.ConvTranspose2D(1, 1, 3, dilation=(1, 30000), padding=(0, 300))
    assert t.output_shape((1, 1, 2, 2)) == (1, 1, 4, 60002 - 600)


def test_training_plans_each_shape_once_and_reuses_the_weight(monkeypatch, rng):
    """LeNet-5's speed rests on two caches: a conv layer plans once per input shape, and
    its effective weight made in forward serves backward."""
    from vecconv import _plan, _run
    calls = {"plan": 0, "weight": 0}
    plan_conv, effective_weight = _plan.plan_conv, _run.effective_weight

    def counted_plan(*args, **kwargs):
        calls["plan"] += 1
        return plan_conv(*args, **kwargs)

    def counted_weight(*args, **kwargs):
        calls["weight"] += 1
        return effective_weight(*args, **kwargs)
    monkeypatch.setattr(_plan, "plan_conv", counted_plan)
    monkeypatch.setattr(_run, "effective_weight", counted_weight)
    net = nn.lenet5(dtype=np.float32, seed=0)
    opt = nn.SGD(net, lr=0.01)
    for step in range(3):
        x = rng.standard_normal((4 if step < 2 else 3, 1, 32, 32)).astype(np.float32)
        _, delta = nn.SoftmaxCrossEntropy()(net.forward(x), np.arange(len(x)))
        net.backward(delta)
        opt.step()
    net.summary()                                   # arithmetic only: no plan
    assert calls == {"plan": 3 * 2, "weight": 3 * 3}   # 3 conv layers, 2 shapes; 3 forwards


def test_a_built_layers_options_are_fixed():
    """Changing an option after construction was silently ignored by the layer's kept
    plans (and written by save() as if it held): it is refused, naming the option."""
    layer = nn.Conv2D(1, 1, 3)
    x = np.ones((1, 1, 8, 8), np.float32)
    y = layer.forward(x)
    for name, value in (("stride", 2), ("padding", 1), ("dilation", 2), ("flip", True)):
        with pytest.raises(AttributeError, match=f"Conv2D.{name} is fixed"):
            setattr(layer, name, value)
    np.testing.assert_array_equal(layer.forward(x), y)
    with pytest.raises(AttributeError, match="MaxPool.kernel_size is fixed"):
        nn.MaxPool(2).kernel_size = 3
    with pytest.raises(AttributeError, match="Dense.out_features is fixed"):
        nn.Dense(3, 4).out_features = 5
    with pytest.raises(AttributeError, match="Activation.function is fixed"):
        nn.Activation("tanh").function = "relu"
    layer.name = "C1"                 # not an option: still free
    assert layer.name == "C1"


@pytest.mark.parametrize("make, kind, match", [
    (lambda: nn.Conv2D(1, 1, (2**31, 1)), MemoryError, "Conv2D's parameters"),
    (lambda: nn.Conv2D(2**62, 1, 1), MemoryError, "Conv2D's parameters"),
    (lambda: nn.Conv2D(1, 2**40, 1), MemoryError, "Conv2D's parameters"),
    (lambda: nn.Dense(2**20, 2**20), MemoryError, "Dense's parameters"),
    (lambda: nn.Subsampling(2**40), MemoryError, "Subsampling's parameters"),
    (lambda: nn.Conv2D(1, 1, 3, rng=5), TypeError, "rng must be a numpy.random.Generator"),
    (lambda: nn.Conv2D(1, 1, 3, seed="a"), TypeError, "seed must be an int"),
    (lambda: nn.Conv2D(1, 1, 3, seed=-1), ValueError, "seed must be >= 0"),
])
def test_layers_refuse_parameters_before_drawing_them(make, kind, match, monkeypatch):
    """Weights past the machine were drawn (and the process killed) before anything was
    compared; now their size is checked first, against the memory this test says is
    there."""
    from vecconv import _validate
    monkeypatch.setattr(_validate, "_available_bytes", lambda: 8 * 2**30)
    with pytest.raises(kind, match=match):
        make()


def test_layers_plan_for_the_workspace_in_effect():
    """A layer keeps its plans per shape and per the settings they were cut for: a
    ``vecconv.config(workspace=...)`` block gets its own plan, and the default returns
    after it."""
    for layer, x in ((nn.Conv2D(4, 4, 3, padding=1, seed=0), np.ones((2, 4, 16, 16))),
                     (nn.ConvTranspose2D(4, 4, 3, seed=0), np.ones((2, 4, 16, 16)))):
        y = layer.forward(x.astype(np.float32))
        default = layer._plan_for((2, 4, 16, 16)).workspace
        with vc.config(workspace=4096):
            assert layer._plan_for((2, 4, 16, 16)).workspace == 4096
            np.testing.assert_allclose(layer.forward(x.astype(np.float32)), y, rtol=1e-6,
                                       atol=1e-6)
        assert layer._plan_for((2, 4, 16, 16)).workspace == default
    with pytest.raises(AttributeError, match="ConvTranspose2D.options is fixed|can't set|has no setter"):
        nn.ConvTranspose2D(2, 2, 3).options = None


def test_lenet5_names_a_bad_seed():
    with pytest.raises(ValueError, match="seed must be >= 0"):
        nn.lenet5(seed=-1)
    with pytest.raises(TypeError, match="seed must be an int"):
        nn.lenet5(seed=1.0)
