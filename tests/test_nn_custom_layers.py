"""Layers of your own: saved by their name, config() and param_shapes(), loaded only when
load is given their class, and refused with an error that says what is missing."""

import json

import numpy as np
import pytest

import vecconv.nn as nn


class Scale(nn.Layer):
    """y = a * x per channel, a trainable (channels,) vector; loadable."""

    def __init__(self, channels=1, dtype="float64"):
        super().__init__()
        self.channels = channels
        self.dtype = np.dtype(dtype)
        self.add_parameter("a", np.full(channels, 2.0, self.dtype))

    def config(self):
        return {"channels": self.channels, "dtype": self.dtype.name}

    def param_shapes(self):
        return {"a": (self.channels,)}

    def forward(self, x):
        self._x = np.asarray(x, self.dtype)
        return self.checked_params()["a"][None, :] * self._x

    def backward(self, delta, input_grad=True):
        self._parameters["a"].grad = (delta * self._x).sum(axis=0)
        return self.params["a"][None, :] * delta if input_grad else None


class Shift(nn.Layer):
    """A layer without parameters: y = x + c."""

    def __init__(self, c):
        super().__init__()
        self.c = c

    def config(self):
        return {"c": self.c}

    def forward(self, x):
        return np.asarray(x) + self.c


class NoShapes(nn.Layer):
    """Registers a parameter but never says its shape."""

    def __init__(self):
        super().__init__()
        self.dtype = np.dtype(np.float64)
        self.add_parameter("a", np.ones(3))

    def forward(self, x):
        return self.checked_params()["a"] * x


class NoConfig(nn.Layer):
    """Needs a constructor argument that config() does not give."""

    def __init__(self, k):
        super().__init__()
        self.k = k


def _net():
    scale = Scale(3)
    scale.params["a"][:] = [0.5, -1.0, 3.0]
    return nn.Sequential([scale, Shift(0.25), nn.Dense(3, 2, dtype=np.float64, seed=0)])


def test_a_custom_layer_saves_and_loads_when_load_is_given_its_class(tmp_path, rng):
    net = _net()
    path = net.save(tmp_path / "mine")
    x = rng.standard_normal((4, 3))
    for layers in ([Scale, Shift], (Shift, Scale), {"Scale": Scale, "Shift": Shift}):
        again = nn.load(path, layers=layers)
        assert [type(a) for a in again.layers] == [Scale, Shift, nn.Dense]
        np.testing.assert_array_equal(again.forward(x), net.forward(x))
        np.testing.assert_array_equal(again.layers[0].params["a"], [0.5, -1.0, 3.0])


def test_a_file_naming_a_class_load_was_not_given_is_refused_with_the_way_out(tmp_path):
    path = _net().save(tmp_path / "mine")
    with pytest.raises(ValueError, match=r"unknown type 'Scale'.*layers=\[YourLayer\]"):
        nn.load(path)
    with pytest.raises(ValueError, match="unknown type 'Shift'"):
        nn.load(path, layers=[Scale])


def test_load_builds_only_what_it_is_given(tmp_path):
    """A file may name anything; only built-in layers and the given classes are built,
    and no name from the file is imported."""
    for kind in ("os.system", "builtins.eval", "numpy.load", "Layer", "Sequential"):
        spec = dict(format="vecconv.nn.Sequential", version=2,
                    layers=[dict(type=kind, name=None, config={})])
        path = tmp_path / "evil.npz"
        np.savez(path, __spec__=np.array(json.dumps(spec)))
        with pytest.raises(ValueError, match="unknown type"):
            nn.load(path, layers=[Scale])


def test_the_stored_arrays_must_be_what_the_custom_layer_says(tmp_path):
    path = _net().save(tmp_path / "mine")
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    np.savez(tmp_path / "short.npz", **dict(arrays, p0_a=np.zeros(2)))
    with pytest.raises(ValueError, match=r"member 'p0_a\.npy'.*float64 of shape \(3,\)"):
        nn.load(tmp_path / "short.npz", layers=[Scale, Shift])
    np.savez(tmp_path / "f32.npz", **dict(arrays, p0_a=np.zeros(3, np.float32)))
    with pytest.raises(ValueError, match=r"member 'p0_a\.npy'.*got float32"):
        nn.load(tmp_path / "f32.npz", layers=[Scale, Shift])
    spec = json.loads(str(arrays["__spec__"]))
    spec["layers"][0]["config"]["colour"] = "red"
    np.savez(tmp_path / "cfg.npz", **dict(arrays, __spec__=np.array(json.dumps(spec))))
    with pytest.raises(ValueError, match=r"layer 0 \(Scale\) has an invalid config.*colour"):
        nn.load(tmp_path / "cfg.npz", layers=[Scale, Shift])


def test_a_missing_param_shapes_says_so(tmp_path):
    layer = NoShapes()
    with pytest.raises(NotImplementedError, match=r"NoShapes.*does not define param_shapes\(\)"):
        layer.param_shapes()
    with pytest.raises(NotImplementedError, match="param_shapes"):
        layer.forward(np.ones(3))
    with pytest.raises(TypeError, match=r"layer 0 \(NoShapes\) cannot be saved.*param_shapes"):
        nn.Sequential([layer]).save(tmp_path / "x")
    assert not (tmp_path / "x.npz").exists()
    # a file that names it (written by hand) is refused at load with the same words
    spec = dict(format="vecconv.nn.Sequential", version=2,
                layers=[dict(type="NoShapes", name=None, config={})])
    np.savez(tmp_path / "n.npz", __spec__=np.array(json.dumps(spec)), p0_a=np.ones(3))
    with pytest.raises(TypeError, match=r"n\.npz: layer 0 \(NoShapes\).*param_shapes"):
        nn.load(tmp_path / "n.npz", layers=[NoShapes])


def test_a_config_that_cannot_rebuild_the_layer_is_refused_at_save(tmp_path):
    with pytest.raises(TypeError, match=r"NoConfig\(\*\*config\(\)\) would fail.*define config"):
        nn.Sequential([NoConfig(3)]).save(tmp_path / "x")
    assert not (tmp_path / "x.npz").exists()


def test_a_class_named_as_a_built_in_is_refused(tmp_path):
    Dense = type("Dense", (Shift,), {})           # a user's class that shadows nn.Dense
    with pytest.raises(ValueError, match="name of the built-in vecconv.nn.Dense"):
        nn.Sequential([Dense(1.0)]).save(tmp_path / "x")
    with pytest.raises(ValueError, match="built-in"):
        nn.load(tmp_path / "x", layers=[Dense])
    with pytest.raises(ValueError, match="built-in"):
        nn.load(tmp_path / "x", layers={"Conv2D": Shift})


@pytest.mark.parametrize("layers", [Scale, "Scale", [Scale, "Shift"], [np.ndarray], 3,
                                    {"Scale": 3}, {1: Scale}])
def test_load_layers_must_be_layer_classes(tmp_path, layers):
    path = _net().save(tmp_path / "mine")
    with pytest.raises(TypeError, match="layers"):
        nn.load(path, layers=layers)
