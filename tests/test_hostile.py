"""Hostile use: tampered layers and model files, non-finite values beside a connection
table, allocations past the machine's memory, odd byte orders and huge options, and a
command line given bad arguments. Each must end in a correct result or a clear error."""

import json
import math
import os
import tracemalloc
import zipfile

import numpy as np
import pytest

import vecconv as vc
import vecconv.nn as nn
from vecconv import _plan, _run, _validate
from vecconv._options import conv_options
from vecconv.__main__ import main
from reference import assert_close

rng_ = np.random.default_rng(7)


def _layers(dtype=np.float32):
    return {
        "Conv2D": (nn.Conv2D(3, 4, 3, dtype=dtype, seed=0), (2, 3, 8, 8)),
        "Conv2D-table": (nn.Conv2D(3, 4, 3, connections=rng_.random((3, 4)) < 0.5, dtype=dtype,
                                   seed=0), (2, 3, 8, 8)),
        "Dense": (nn.Dense(5, 3, dtype=dtype, seed=0), (2, 5)),
        "Subsampling": (nn.Subsampling(3, 2, dtype=dtype), (2, 3, 4, 4)),
    }


# ----------------------------------------------------------------------------- 1. layers
@pytest.mark.parametrize("kind", sorted(_layers()))
def test_every_parameter_of_the_wrong_shape_is_refused_before_the_engine(kind):
    layer, xshape = _layers()[kind]
    x = np.ones(xshape, np.float32)
    for name, p in list(layer.params.items()):
        for bad in (p.reshape(-1)[:-1] if p.size > 1 else np.zeros(0, p.dtype),   # too short
                    np.concatenate([p.reshape(-1), p.reshape(-1)]).reshape((-1,) + p.shape[1:]),
                    p[..., None], np.float32(1.0)):
            layer.params[name] = bad
            with pytest.raises(ValueError, match=f"{type(layer).__name__} parameter '{name}'"):
                layer.forward(x)
        layer.params[name] = p
    layer.forward(x)


@pytest.mark.parametrize("kind", sorted(_layers()))
def test_missing_extra_and_non_numeric_parameters_are_refused(kind):
    """A layer's parameters are registered: none can be removed or invented through
    ``params``, and the data of one must be a real numeric array."""
    layer, xshape = _layers()[kind]
    x = np.ones(xshape, np.float32)
    name = next(iter(layer.params))
    p = layer.params[name]
    with pytest.raises(TypeError, match="cannot be removed"):
        layer.params.pop(name)
    with pytest.raises(KeyError, match="no parameter 'extra'"):
        layer.params["extra"] = p
    assert list(layer.params) == list(layer.param_shapes())
    layer._parameters["extra"] = nn.Parameter(p)           # behind the API's back
    with pytest.raises(ValueError, match="parameters must be"):
        layer.forward(x)
    del layer._parameters["extra"]
    layer.params[name] = p.astype(complex)
    with pytest.raises(TypeError, match="real numeric"):
        layer.forward(x)
    layer.params[name] = p.astype(object)
    with pytest.raises(TypeError, match="real numeric"):
        layer.forward(x)


@pytest.mark.parametrize("kind", sorted(_layers()))
def test_parameters_of_another_dtype_or_layout_are_converted(kind):
    layer, xshape = _layers()[kind]
    x = rng_.standard_normal(xshape).astype(np.float32)
    ref = layer.forward(x)
    for name, p in list(layer.params.items()):
        layer.params[name] = np.asfortranarray(p.astype(np.float64))
    got = layer.forward(x)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=1e-6)
    assert all(p.dtype == np.float32 for p in layer.params.values())


def test_dense_backward_checks_delta_and_weights():
    d = nn.Dense(5, 3, dtype=np.float64, seed=0)
    d.forward(np.ones((2, 5)))
    with pytest.raises(ValueError, match="delta"):
        d.backward(np.ones((2, 4)))
    d.params["w"] = np.ones((3, 4))
    with pytest.raises(ValueError, match="parameter 'w'"):
        d.backward(np.ones((2, 3)))


@pytest.mark.parametrize("dtype", [np.float16, np.int64, ">f4", ">f8", np.complex64, object,
                                   "not-a-dtype", np.longdouble])
def test_layers_refuse_a_dtype_the_engine_cannot_run(dtype):
    if np.dtype(np.longdouble) == np.dtype(np.float64) and dtype is np.longdouble:
        pytest.skip("long double is double here")
    for make in (lambda: nn.Conv2D(1, 2, 3, dtype=dtype), lambda: nn.Dense(2, 2, dtype=dtype),
                 lambda: nn.Subsampling(2, dtype=dtype), lambda: nn.lenet5(dtype=dtype)):
        with pytest.raises(TypeError, match="dtype"):
            make()


def test_the_engine_entry_points_check_sizes_themselves():
    """Whatever calls the compiled engine, a wrong-sized array is refused before a kernel
    runs (the public functions check first, with better messages)."""
    from vecconv import _engine
    x = np.ones((2, 3, 8, 8))
    w = np.ones((4, 3, 3, 3))
    plan = _plan.plan_conv(x.shape, w.shape, (4,), np.float64, conv_options(2))
    w2 = _run.effective_weight(w, plan)
    y = np.empty(plan.out_shape)
    args = (plan.geometry, plan.schedule, 2, 4, 1, 1, 1)
    for xx, ww, bb, yy in ((x.ravel()[:-1], w2.ravel(), np.ones(4), y.ravel()),
                           (x.ravel(), w2.ravel()[:-1], np.ones(4), y.ravel()),
                           (x.ravel(), w2.ravel(), np.ones(2), y.ravel()),
                           (x.ravel(), w2.ravel(), np.ones(4), y.ravel()[:-3])):
        with pytest.raises(ValueError, match="vecconv engine"):
            _engine.conv_forward(xx, ww, bb, yy, True, *args)
    with pytest.raises(ValueError, match="cannot give c"):
        _engine.gemm_into(np.ones((3, 4)), np.ones((5, 2)), np.ones((3, 2)))
    with pytest.raises(ValueError, match="groups"):
        _engine.conv_forward(x.ravel(), w2.ravel(), np.ones(4), y.ravel(), True, plan.geometry,
                             plan.schedule, 2, 4, 3, 1, 1)


# ----------------------------------------------------------------------------- 1. files
def _tamper(path, out, **changes):
    """Copy the .npz at path to out with arrays replaced (None deletes one)."""
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    for k, v in changes.items():
        if v is None:
            arrays.pop(k, None)
        else:
            arrays[k] = v
    np.savez(out, **arrays)
    return out


@pytest.fixture
def saved_lenet(tmp_path):
    net = nn.lenet5(dtype=np.float32, seed=1)
    return net, net.save(tmp_path / "net")


def test_save_and_load_round_trip_with_or_without_the_suffix(saved_lenet, tmp_path):
    net, path = saved_lenet
    assert path.endswith("net.npz") and os.path.exists(path)
    x = rng_.standard_normal((3, 1, 32, 32)).astype(np.float32)
    for p in (tmp_path / "net", tmp_path / "net.npz", str(tmp_path / "net")):
        np.testing.assert_array_equal(nn.load(p).forward(x), net.forward(x))


def test_layers_built_with_numpy_integers_save(tmp_path):
    net = nn.Sequential([nn.Conv2D(np.int64(1), np.int32(2), (np.int64(3), 3),
                                   stride=np.int64(2), padding=np.int16(1))])
    path = net.save(tmp_path / "m")
    x = np.ones((1, 1, 7, 7), np.float32)
    np.testing.assert_array_equal(nn.load(path).forward(x), net.forward(x))


@pytest.mark.parametrize("change, match", [
    (dict(p0_b=np.zeros(5, np.float32)), "p0_b.*shape"),
    (dict(p0_w=np.zeros((6, 1, 5, 4), np.float32)), "p0_w.*shape"),
    (dict(p0_w=np.zeros((6, 1, 5, 5), np.float64)), "p0_w.*float32"),
    (dict(p0_b=np.zeros(6, np.int32)), "p0_b.*float32"),
    (dict(p0_b=None), "p0_b.*missing"),
    (dict(p99_w=np.zeros(3, np.float32)), "no layer has"),
    (dict(__spec__=np.array("not json")), "__spec__"),
    (dict(__spec__=np.array(json.dumps([{"type": "Evil", "config": {}}]))), "unknown type"),
    (dict(__spec__=np.array(json.dumps([{"type": "Conv2D", "config": {"in_channels": -1}}]))),
     "invalid config"),
    (dict(__spec__=np.array(json.dumps({"a": 1}))), "__spec__"),
    (dict(__spec__=None), "no __spec__"),
])
def test_tampered_model_files_are_refused(saved_lenet, tmp_path, change, match):
    _, path = saved_lenet
    bad = _tamper(path, tmp_path / "bad.npz", **change)
    with pytest.raises(ValueError, match=match):
        nn.load(bad)


def test_files_that_are_not_models_are_refused(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros(3))
    (tmp_path / "t.npz").write_text("hello")
    with zipfile.ZipFile(tmp_path / "z.npz", "w") as z:
        z.writestr("readme.txt", "not numpy")
    with pytest.raises(ValueError, match="single array"):
        nn.load(tmp_path / "a.npy")
    for name in ("t.npz", "z.npz"):
        with pytest.raises(ValueError, match="vecconv model"):
            nn.load(tmp_path / name)
    with pytest.raises(FileNotFoundError):
        nn.load(tmp_path / "missing")


# ----------------------------------------------------------------------------- 2. tables
@pytest.fixture
def table_case():
    rng = np.random.default_rng(3)
    t = nn.lenet5_c3_table()
    x = rng.standard_normal((3, 6, 9, 9))
    w = rng.standard_normal((16, 6, 3, 3))
    return t, x, w


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("flip", [False, True])
def test_non_finite_unconnected_weights_change_nothing(table_case, bad, flip):
    t, x, w = table_case
    ref_y = vc.conv2d(x, w, connections=t, flip=flip)
    ref = vc.conv2d_backward(np.cos(ref_y), x, w, connections=t, flip=flip)
    w_bad = w.copy()
    w_bad[~t.T] = bad
    y = vc.conv2d(x, w_bad, connections=t, flip=flip)
    np.testing.assert_array_equal(y, ref_y)
    for a, r in zip(vc.conv2d_backward(np.cos(y), x, w_bad, connections=t, flip=flip), ref):
        np.testing.assert_array_equal(a, r)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_non_finite_input_map_reaches_only_the_maps_connected_to_it(table_case, bad, dtype):
    t, x, w = table_case
    x, w = x.astype(dtype), w.astype(dtype)
    ref_y = vc.conv2d(x, w, connections=t)
    ref_dx, ref_dw, _ = vc.conv2d_backward(np.ones_like(ref_y), x, w, connections=t)
    for i in range(6):
        xb = x.copy()
        xb[1, i, 4, 4] = bad
        y = vc.conv2d(xb, w, connections=t)
        reads = t[i]                           # the output maps that read map i
        assert_close(y[:, ~reads], ref_y[:, ~reads], dtype, against="regrouped")
        np.testing.assert_array_equal(np.isfinite(y[1, reads]).all(axis=(1, 2)), False)
        dx, dw, _ = vc.conv2d_backward(np.ones_like(y), xb, w, connections=t)
        assert (dw[~t.T] == 0).all()           # unconnected: exactly 0
        others = [k for k in range(6) if k != i]
        assert_close(dw[:, others], ref_dw[:, others], dtype, against="regrouped")
        assert_close(dx, ref_dx, dtype, against="regrouped")


def test_a_non_finite_error_reaches_only_the_inputs_of_its_map(table_case):
    t, x, w = table_case
    y = vc.conv2d(x, w, connections=t)
    ref_dx = vc.conv2d_backward(np.ones_like(y), x, w, connections=t)[0]
    for j in (0, 6, 12, 15):
        dy = np.ones_like(y)
        dy[2, j, 1, 1] = np.inf
        dx, dw, _ = vc.conv2d_backward(dy, x, w, connections=t)
        np.testing.assert_allclose(dx[:, ~t[:, j]], ref_dx[:, ~t[:, j]], rtol=1e-12)
        assert (dw[~t.T] == 0).all()


def test_unconnected_kernels_of_a_layer_stay_exactly_zero(table_case):
    t, x, _ = table_case
    layer = nn.Conv2D(6, 16, 3, connections=t, dtype=np.float64, seed=0)
    layer.params["w"][~t.T] = np.nan
    net = nn.Sequential([layer])
    opt = nn.SGD(net, lr=0.1)
    y = net.forward(x)
    assert np.isfinite(y).all()
    net.backward(np.ones_like(y))
    assert (layer.grads["w"][~t.T] == 0).all()
    opt.step()
    assert (layer.params["w"][~t.T] == 0).all()


# ----------------------------------------------------------------------------- 3. memory
@pytest.fixture
def little_memory(monkeypatch):
    monkeypatch.setattr(_validate, "_available_bytes", lambda: 300 * 2**20)


@pytest.mark.parametrize("call", ["conv2d", "conv2d_backward", "conv1d", "im2col", "col2im",
                                  "patch_matrix", "layer"])
def test_every_large_allocation_is_counted_before_any_is_made(little_memory, call):
    big = np.broadcast_to(np.float32(1), (64, 64, 128, 128))      # 256 MiB if copied
    small = np.ones((1, 64, 128, 128), np.float32)
    w = np.ones((64, 64, 3, 3), np.float32)
    calls = {
        # the input copy alone fits; with the output it does not
        "conv2d": lambda: vc.conv2d(big, w, padding=1),
        "conv2d_backward": lambda: vc.conv2d_backward(big, big, w, padding=1),
        "conv1d": lambda: vc.conv1d(np.broadcast_to(np.float64(1), (64, 64, 2**13)),
                                    np.ones((64, 64, 3)), padding=1),
        # columns of 64*9 rows by 16384*16 positions: 0.56 GiB
        "im2col": lambda: vc.im2col(np.ones((16, 64, 128, 128), np.float32), 3, padding=1),
        "col2im": lambda: vc.col2im(np.broadcast_to(np.float32(1), (8 * 128 * 128, 64 * 9)),
                                    (8, 64, 128, 128), 3, padding=1),
        "patch_matrix": lambda: vc.patch_matrix(np.ones((1500, 1500), np.float32), (500, 500)),
        "layer": lambda: nn.Conv2D(64, 64, 3, padding=1).forward(
            np.broadcast_to(np.float32(1), (48, 64, 128, 128))),
    }
    del small
    with pytest.raises(MemoryError, match=r"needs \d+\.\d\d GiB but only 0\.29 GiB"):
        calls[call]()


def test_work_bytes_count_the_column_buffers_and_accumulators():
    plan = _plan.plan_conv((32, 64, 56, 56), (64, 64, 3, 3), None, np.float32,
                           conv_options(2, padding=1, algorithm="im2col"))
    s = plan.schedule
    slots = plan.slots(plan.threads())
    w_bytes = 64 * 64 * 9 * 4
    assert plan.memory() == (slots * s.buf_elems * 4 + w_bytes
                                 + math.prod(plan.out_shape) * 4)
    assert plan.memory(backward=True) == (slots * s.buf_elems * 4 + w_bytes
                                              + math.prod(plan.x_shape) * 4
                                              + (s.n_acc + 2) * w_bytes)


def test_a_huge_kernel_stays_within_the_workspace():
    """A 512 x 512 kernel on one map: the column matrix would hold 23 million entries; the
    engine's buffers stay near the 4 MiB tile target (tracemalloc sees the engine's
    workspace), and the answer is scipy's."""
    import scipy.signal as ss
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 1, 512, 600)).astype(np.float32)
    k = rng.standard_normal((1, 1, 512, 512)).astype(np.float32)
    tracemalloc.start()
    try:
        y = vc.conv2d(x, k)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 24 * 2**20, peak
    ref = ss.correlate2d(x[0, 0].astype(np.float64), k[0, 0].astype(np.float64), "valid")
    np.testing.assert_allclose(y[0, 0], ref, rtol=1e-3, atol=1e-2)


# ----------------------------------------------------------------------------- 4. small holes
@pytest.mark.parametrize("order", [">", "<"])
def test_any_byte_order_is_accepted_everywhere(order):
    x = rng_.standard_normal((2, 2, 6, 5)).astype(order + "f4")
    w = rng_.standard_normal((3, 2, 3, 2)).astype(order + "f4")
    native = (x.astype(np.float32), w.astype(np.float32))
    np.testing.assert_array_equal(vc.conv2d(x, w), vc.conv2d(*native))
    for a, b in zip(vc.conv2d_backward(vc.conv2d(x, w), x, w),
                    vc.conv2d_backward(vc.conv2d(*native), *native)):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == np.float32 and a.dtype.isnative
    cols = vc.im2col(x, 2)
    assert cols.dtype == np.float32
    np.testing.assert_array_equal(cols, vc.im2col(native[0], 2))
    back = vc.col2im(cols.astype(order + "f8"), x.shape, 2)
    np.testing.assert_array_equal(back, vc.col2im(cols.astype(np.float64), x.shape, 2))
    np.testing.assert_array_equal(vc.conv1d(x[:, :, 0], w[:, :, 0]),
                                  vc.conv1d(native[0][:, :, 0], native[1][:, :, 0]))


@pytest.mark.parametrize("name, value", [("stride", 2**64), ("stride", 2**63), ("dilation", 2**63),
                                         ("padding", 2**63), ("workspace", 2**64),
                                         ("groups", 2**64)])
def test_options_past_two_to_the_63_are_refused_by_name(name, value):
    with pytest.raises(ValueError, match=name):
        vc.conv2d(np.ones((1, 1, 5, 5)), np.ones((1, 1, 2, 2)), **{name: value})
    with pytest.raises(ValueError):
        vc.im2col(np.ones((1, 1, 5, 5)), 2, **({name: value} if name in ("stride", "dilation",
                                                                          "padding") else {}),
                  **({} if name in ("stride", "dilation", "padding") else {"stride": 2**64}))


def test_options_that_cannot_matter_give_the_defined_answer():
    x = rng_.standard_normal((1, 1, 5, 7))
    w = rng_.standard_normal((1, 1, 2, 1))
    # a stride past the map: one output position, the one at the origin
    np.testing.assert_allclose(vc.conv2d(x, w, stride=2**62), vc.conv2d(x, w)[:, :, :1, :1])
    # the dilation of a one-tap axis changes nothing
    np.testing.assert_allclose(vc.conv2d(x, w, dilation=(1, 2**62)), vc.conv2d(x, w))
    np.testing.assert_allclose(vc.im2col(x, (2, 1), stride=2**62), vc.im2col(x, (2, 1))[:1])


@pytest.mark.parametrize("shape, k", [((1, 5), (1, 1)), ((4, 1), (1, 1)), ((3, 3), (3, 3)),
                                      ((1, 1), (1, 1))])
def test_patch_matrix_is_always_a_new_writable_array(shape, k):
    x = np.arange(float(np.prod(shape))).reshape(shape)
    c = vc.patch_matrix(x, k)
    assert c.flags.writeable and c.flags.owndata and not np.shares_memory(c, x)
    c[...] = -1
    assert (x >= 0).all()


def test_set_num_threads_refuses_absurd_counts():
    for bad in (2**64, 2**31, 10**6):
        with pytest.raises(ValueError, match="n must be <="):
            vc.set_num_threads(bad)


# ----------------------------------------------------------------------------- 5. command line
@pytest.mark.parametrize("argv, name", [
    (["--train-size", "0"], "--train-size"), (["--train-size", "-5"], "--train-size"),
    (["--train-size", "4001"], "--train-size"), (["--seed", "-1"], "--seed"),
    (["--max-shift", "-1"], "--max-shift"), (["--lr", "nan"], "--lr"), (["--lr", "inf"], "--lr"),
    (["--lr", "0"], "--lr"), (["--lr", "-0.1"], "--lr"), (["--momentum", "nan"], "--momentum"),
    (["--momentum", "1"], "--momentum"), (["--epochs", "0"], "--epochs"),
    (["--epochs", "x"], "--epochs"), (["--batch-size", "0"], "--batch-size"),
    (["--dtype", "float16"], "--dtype"),
])
def test_bad_training_arguments_exit_2_with_one_line(argv, name, capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--no-progress"] + argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and name in err and "Traceback" not in err, err


def test_output_paths_are_checked_before_training(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for argv, name in ((["--out", str(blocker / "run")], "--out"),
                       (["--out", str(blocker)], "--out"),
                       (["--json", str(tmp_path / "missing" / "m.json")], "--json"),
                       (["--json", str(tmp_path)], "--json")):
        with pytest.raises(SystemExit) as info:
            main(["train", "--no-progress", "--epochs", "10000"] + argv)   # would take hours
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and name in err, err


def test_version_and_help_show_every_default(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and vc.__version__ in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    entries, current = [], None
    for line in out[out.index("options:"):].splitlines()[1:]:
        if line.startswith("  -"):
            current = [line]
            entries.append(current)
        elif current is not None:
            current.append(line)
    assert len(entries) >= 11
    for entry in entries:
        text = " ".join(entry)
        if not text.strip().startswith("-h"):
            assert "(default:" in text, text
