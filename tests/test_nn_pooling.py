"""The pooling layers by their names: AvgPool and MaxPool are PyTorch's parameter-free
pooling (N-d, and 1D/2D/3D with the axes fixed), Subsampling is LeCun's trainable layer
(eq. 2), and vecconv 0.1's AvgPool(channels, ...) is led to it."""

import json
import warnings

import numpy as np
import pytest

import vecconv as vc
import vecconv.nn as nn

FIXED = {1: (nn.AvgPool1D, nn.MaxPool1D), 2: (nn.AvgPool2D, nn.MaxPool2D),
         3: (nn.AvgPool3D, nn.MaxPool3D)}


def test_avgpool_of_2_is_the_average_any_user_expects(rng):
    """nn.AvgPool(2), tried as a new user would, on maps of any channel count."""
    x = rng.standard_normal((2, 5, 6, 4))
    pool = nn.AvgPool(2)
    y = pool.forward(x)
    np.testing.assert_allclose(y, x.reshape(2, 5, 3, 2, 2, 2).mean(axis=(3, 5)))
    assert pool.parameter_count() == 0 and list(pool.params) == []


@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("opts", [dict(), dict(stride=1, padding=1),
                                  dict(stride=2, padding=1, ceil_mode=True),
                                  dict(stride=2, padding=1, ceil_mode=True,
                                       count_include_pad=False),
                                  dict(stride=1, divisor_override=3)])
def test_avgpool_layers_are_the_function(rng, d, opts):
    x = rng.standard_normal((2, 3) + (7, 6, 5)[:d])
    dy_shape = vc.avg_pool(x, 3, **opts).shape
    dy = rng.standard_normal(dy_shape)
    for pool in (nn.AvgPool(3, **opts), FIXED[d][0](3, **opts)):
        np.testing.assert_array_equal(pool.forward(x), vc.avg_pool(x, 3, **opts))
        np.testing.assert_array_equal(pool.backward(dy),
                                      vc.avg_pool_backward(dy, x.shape, kernel_size=3, **opts))
        assert pool.backward(dy, input_grad=False) is None
        assert pool.output_shape(x.shape) == dy_shape


@pytest.mark.parametrize("d", [1, 2, 3])
def test_maxpool_layers_are_the_function(rng, d):
    x = rng.standard_normal((2, 3) + (7, 6, 5)[:d])
    opts = dict(stride=2, padding=1, dilation=1, ceil_mode=True)
    y, idx = vc.max_pool(x, 3, return_indices=True, **opts)
    dy = rng.standard_normal(y.shape)
    for pool in (nn.MaxPool(3, **opts), FIXED[d][1](3, **opts)):
        np.testing.assert_array_equal(pool.forward(x), y)
        np.testing.assert_array_equal(pool.backward(dy), vc.max_pool_backward(
            dy, x, kernel_size=3, indices=idx, **opts))


@pytest.mark.parametrize("d", [1, 2, 3])
def test_pooling_matches_torch(rng, d):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = rng.standard_normal((2, 3) + (7, 6, 5)[:d])
    tx = torch.tensor(x, requires_grad=True)
    avg = FIXED[d][0](3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)
    ty = getattr(F, f"avg_pool{d}d")(tx, 3, 2, 1, ceil_mode=True, count_include_pad=False)
    np.testing.assert_allclose(avg.forward(x), ty.detach().numpy(), rtol=1e-12)
    g = rng.standard_normal(ty.shape)
    ty.backward(torch.tensor(g))
    np.testing.assert_allclose(avg.backward(g), tx.grad.numpy(), rtol=1e-12)
    mx = FIXED[d][1](2, stride=1, dilation=2)
    np.testing.assert_array_equal(mx.forward(x), getattr(F, f"max_pool{d}d")(
        torch.tensor(x), 2, 1, 0, 2).numpy())


def test_the_axes_of_a_fixed_layer_are_fixed():
    with pytest.raises(ValueError, match=r"MaxPool2D needs a batch \(N, C, H, W\)"):
        nn.MaxPool2D(2).forward(np.zeros((1, 4, 4)))
    with pytest.raises(ValueError, match=r"AvgPool3D needs a batch \(N, C, D, H, W\)"):
        nn.AvgPool3D(2).forward(np.zeros((1, 1, 4, 4)))
    with pytest.raises(ValueError, match="kernel_size"):
        nn.AvgPool1D((2, 2))
    with pytest.raises(ValueError, match="stride"):
        nn.MaxPool3D(2, stride=(1, 2))
    with pytest.raises(ValueError, match="the same number"):      # N-d: tuples must agree
        nn.AvgPool((2, 2), padding=(1, 1, 1))
    with pytest.raises(ValueError, match="1, 2 or 3 spatial axes"):
        nn.AvgPool(2).forward(np.zeros((1, 1, 2, 2, 2, 2)))
    # an int window on an N-d layer pools whatever axes come
    for shape in ((1, 2, 4), (1, 2, 4, 4), (1, 2, 4, 4, 4)):
        assert nn.AvgPool(2)(np.ones(shape)).shape == shape[:2] + (2,) * (len(shape) - 2)


def test_parameter_free_pooling_keeps_the_float_dtype(rng):
    x32 = rng.standard_normal((1, 2, 4, 4)).astype(np.float32)
    for pool in (nn.AvgPool(2), nn.MaxPool2D(2)):
        y = pool.forward(x32)
        assert y.dtype == np.float32
        assert pool.backward(np.ones(y.shape, np.float64)).dtype == np.float32
        assert pool.forward(np.ones((1, 1, 4, 4), np.int16)).dtype == np.float64


def test_subsampling_is_eq_2(rng):
    pool = nn.Subsampling(3, 2, "tanh", dtype=np.float64)
    pool.params["beta"][:] = rng.standard_normal(3)
    pool.params["b"][:] = rng.standard_normal(3)
    x = rng.standard_normal((2, 3, 6, 8))
    per_map = (1, -1, 1, 1)
    z = pool.params["beta"].reshape(per_map) * vc.matrix.down(x, 2) \
        + pool.params["b"].reshape(per_map)
    np.testing.assert_allclose(pool.forward(x), np.tanh(z), rtol=1e-14)
    assert pool.parameter_count() == 6


# ----------------------------------------------------------------------------- 0.1 names
def test_vecconv_0_1_avgpool_calls_build_a_subsampling_with_a_warning(rng):
    x = rng.standard_normal((2, 3, 6, 4))
    new = nn.Subsampling(3, 2, "tanh", dtype=np.float64)
    for args, kwargs in (((3, 2, "tanh"), dict(dtype=np.float64)),
                         ((3,), dict(kernel_size=2, activation="tanh", dtype=np.float64)),
                         ((), dict(channels=3, activation="tanh", dtype=np.float64))):
        with pytest.warns(DeprecationWarning, match="nn.Subsampling"):
            old = nn.AvgPool(*args, **kwargs)
        assert type(old) is nn.Subsampling
        np.testing.assert_array_equal(old.forward(x), new.forward(x))


def test_an_ambiguous_avgpool_call_is_refused_with_both_readings():
    with pytest.raises(TypeError, match=r"stride=.*nn\.Subsampling\(6, 2\)"):
        nn.AvgPool(6, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")              # the new forms warn about nothing
        assert type(nn.AvgPool(6)) is nn.AvgPool
        assert type(nn.AvgPool(2, stride=1, padding=1)) is nn.AvgPool
        assert type(nn.AvgPool2D(2)) is nn.AvgPool2D


def test_lenet5_pooling_avg_is_the_old_name_of_subsampling(rng):
    with pytest.warns(DeprecationWarning, match="subsampling"):
        old = nn.lenet5(pooling="avg", seed=1)
    new = nn.lenet5(pooling="subsampling", seed=1)
    assert [type(a) for a in old.layers] == [type(b) for b in new.layers]
    assert isinstance(new.layers[2], nn.Subsampling) and new.layers[2].name == "S2"
    assert isinstance(nn.lenet5(pooling="max").layers[2], nn.MaxPool2D)
    x = rng.standard_normal((2, 1, 32, 32)).astype(np.float32)
    np.testing.assert_array_equal(old.forward(x), new.forward(x))
    with pytest.raises(ValueError, match="'subsampling' or 'max'"):
        nn.lenet5(pooling="median")


# ----------------------------------------------------------------------------- files
def test_every_pooling_layer_saves_and_loads(tmp_path, rng):
    net = nn.Sequential([nn.AvgPool(2, stride=1, padding=1, count_include_pad=False),
                         nn.MaxPool2D(2, stride=1), nn.AvgPool2D(2, divisor_override=3),
                         nn.Subsampling(2, 2, "sigmoid", dtype=np.float64),
                         nn.MaxPool((1, 2), ceil_mode=True)])
    path = net.save(tmp_path / "pools")
    with np.load(path) as f:
        spec = json.loads(str(f["__spec__"]))
    assert spec["format"] == "vecconv.nn.Sequential" and spec["version"] == 2
    assert [item["type"] for item in spec["layers"]] == ["AvgPool", "MaxPool2D", "AvgPool2D",
                                                         "Subsampling", "MaxPool"]
    again = nn.load(path)
    assert [type(a) for a in again.layers] == [type(b) for b in net.layers]
    x = rng.standard_normal((2, 2, 9, 8))
    np.testing.assert_array_equal(again.forward(x), net.forward(x))


def test_avgpool_means_what_the_file_version_says(tmp_path):
    """A vecconv 0.1 file's AvgPool is LeCun's layer; a version-2 file's is PyTorch's."""
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    old = [dict(type="AvgPool", name=None, config=dict(channels=1, kernel_size=[2, 2],
                                                       activation="identity",
                                                       dtype="float64"))]
    np.savez(tmp_path / "v1.npz", __spec__=np.array(json.dumps(old)),
             p0_beta=np.array([1.0]), p0_b=np.array([0.5]))
    net = nn.load(tmp_path / "v1.npz")
    assert type(net.layers[0]) is nn.Subsampling
    np.testing.assert_array_equal(net.forward(x)[0, 0], [[10.5, 18.5], [42.5, 50.5]])
    new = dict(format="vecconv.nn.Sequential", version=2,
               layers=[dict(type="AvgPool", name=None, config=dict(kernel_size=2))])
    np.savez(tmp_path / "v2.npz", __spec__=np.array(json.dumps(new)))
    net = nn.load(tmp_path / "v2.npz")
    assert type(net.layers[0]) is nn.AvgPool
    np.testing.assert_array_equal(net.forward(x)[0, 0], [[2.5, 4.5], [10.5, 12.5]])
    newer = dict(new, version=3)
    np.savez(tmp_path / "v3.npz", __spec__=np.array(json.dumps(newer)))
    with pytest.raises(ValueError, match="newer vecconv"):
        nn.load(tmp_path / "v3.npz")
