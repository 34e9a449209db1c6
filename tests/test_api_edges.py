"""The edges of the options -> plan -> run path, each found by a hostile reading: options
checked without shapes, strided 'same', batch independence under a connection table,
arrays a public function returns, threadpoolctl in either import order, and the
messages of the rarer mistakes."""

import subprocess
import sys

import numpy as np
import pytest

import vecconv as vc
from reference import ref_conv2d


# ----------------------------------------------------------------------------- options
def test_per_axis_options_are_checked_without_inventing_an_input():
    """A layer's options are validated without a probe input: the largest dilation or
    padding of one axis is not applied to every axis (which asked for 3.6e9 entries or a
    157 GiB MemoryError)."""
    layer = vc.nn.Conv2D(1, 1, 3, dilation=(1, 30000))
    assert layer.dilation == (1, 30000)
    layer = vc.nn.Conv2D(1, 1, 3, padding=(300, 0), padding_mode="reflect")
    x = np.random.default_rng(0).standard_normal((1, 1, 301, 5))
    y = layer.forward(x.astype(np.float32))
    assert y.shape == (1, 1, 301 + 600 - 2, 3)
    with pytest.raises(ValueError, match="dilation must be >= 1"):
        vc.nn.Conv2D(1, 1, 3, dilation=(1, 0))


def test_a_strided_same_padding_is_refused_naming_both():
    x = np.ones((1, 1, 8, 8))
    w = np.ones((1, 1, 3, 3))
    with pytest.raises(ValueError, match=r"padding='same'.*stride=\(1, 2\)"):
        vc.conv2d(x, w, padding="same", stride=(1, 2))
    with pytest.raises(ValueError, match=r"padding='same'.*stride"):
        vc.conv2d_backward(np.ones((1, 1, 8, 4)), x, w, padding="same", stride=(1, 2))
    with pytest.raises(ValueError, match=r"padding='same'.*stride"):
        vc.nn.Conv2D(1, 1, 3, padding="same", stride=2)
    # at stride 1 it is scipy's 'same'
    np.testing.assert_allclose(vc.conv2d(x, w, padding="same"),
                               ref_conv2d(x, w, padding="same"), rtol=1e-12)


def test_fill_value_past_float64_is_a_value_error_naming_it():
    x = np.ones((1, 1, 5, 5))
    w = np.ones((1, 1, 3, 3))
    with pytest.raises(ValueError, match="fill_value must fit in a float64"):
        vc.conv2d(x, w, padding=1, padding_mode="constant", fill_value=2**1100)
    with pytest.raises(TypeError, match="fill_value must be a real number"):
        vc.conv2d(x, w, padding=1, padding_mode="constant", fill_value=1j)


def test_the_shape_message_names_the_unbatched_layout_too():
    with pytest.raises(ValueError, match=r"4-D \(N, C, H, W\) or 3-D unbatched \(C, H, W\)"):
        vc.conv2d(np.ones((5, 5)), np.ones((1, 1, 3, 3)))
    assert vc.conv2d(np.ones((1, 5, 5)), np.ones((1, 1, 3, 3))).shape == (1, 3, 3)


def test_a_transposed_convolution_of_an_empty_axis_says_so():
    with pytest.raises(ValueError, match="at least one entry along every spatial axis"):
        vc.conv_transpose(np.ones((1, 1, 0, 4)), np.ones((1, 1, 3, 3)))


def test_output_size_of_an_unbatched_transposed_input_may_lead_with_the_channels():
    """PyTorch accepts (C, H, W) as the output_size of an unbatched (C, H, W) input
    (pytorch#75889), as it accepts (N, C, H, W) for a batched one."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 4))
    w = rng.standard_normal((2, 3, 3, 3))
    want = vc.conv_transpose(x, w, stride=2, output_padding=1)
    for size in ((10, 10), (3, 10, 10), (1, 3, 10, 10)):
        got = vc.conv_transpose(x, w, stride=2, output_size=size)
        np.testing.assert_array_equal(got, want)


# ----------------------------------------------------------------------------- results
def test_a_flipped_one_tap_kernel_gives_a_gradient_with_positive_strides():
    """np.ascontiguousarray keeps the negative strides of a flipped view whose flipped
    axes have size 1; no public function returns such an array."""
    rng = np.random.default_rng(0)
    for shape in ((2, 3, 1), (2, 3, 1, 1), (2, 3, 1, 1, 1)):
        d = len(shape) - 2
        x = rng.standard_normal((2, 3) + (4,) * d)
        w = rng.standard_normal(shape)
        y = vc.conv(x, w, flip=True)
        _, dw, _ = vc.conv_backward(np.ones_like(y), x, w, flip=True)
        assert all(s > 0 for s in dw.strides), dw.strides
        assert dw.flags.c_contiguous and dw.flags.writeable
        # a one-tap kernel flipped is itself: the gradient is the unflipped one
        np.testing.assert_array_equal(dw, vc.conv_backward(np.ones_like(y), x, w)[1])


@pytest.mark.parametrize("where", ["x", "dy"])
def test_a_nan_in_one_image_leaves_the_other_images_bit_for_bit(where):
    """With a connection table that leaves pairs out, an image holding a NaN or inf takes
    the per-map route alone: every other image keeps the dense route's bits."""
    rng = np.random.default_rng(1)
    table = vc.nn.lenet5_c3_table()
    x = rng.standard_normal((10, 6, 14, 14)).astype(np.float32)
    w = rng.standard_normal((16, 6, 5, 5)).astype(np.float32)
    b = rng.standard_normal(16).astype(np.float32)
    dy = rng.standard_normal((10, 16, 10, 10)).astype(np.float32)
    y_ref = vc.conv2d(x, w, b, connections=table)
    dx_ref, _, _ = vc.conv2d_backward(dy, x, w, connections=table)
    bad_x, bad_dy = x.copy(), dy.copy()
    (bad_x if where == "x" else bad_dy)[3, 2, 4, 4] = np.nan
    y = vc.conv2d(bad_x, w, b, connections=table)
    dx, dw, db = vc.conv2d_backward(bad_dy, bad_x, w, connections=table)
    others = [i for i in range(10) if i != 3]
    if where == "x":
        np.testing.assert_array_equal(y[others], y_ref[others])
        # image 3: NaN only in the maps that read input map 2 (Table I)
        reads_2 = table[2]
        assert np.isnan(y[3, reads_2]).any(axis=(1, 2)).all()
        assert np.isfinite(y[3, ~reads_2]).all()
    np.testing.assert_array_equal(dx[others], dx_ref[others])
    # dw of pairs the table leaves out stays exactly 0
    assert (dw[~table.T] == 0).all()


@pytest.mark.parametrize("shape", [(12, 2, 3, 5, 6), (10, 2, 6, 7)])
def test_a_nan_under_a_table_leaves_staged_tiles_bit_for_bit(shape):
    """The staged route makes one GEMM per tile of images: the image with a NaN is zeroed
    there (and computed on the per-map route), so every other image keeps its tile and
    its column, and so its bits."""
    rng = np.random.default_rng(0)
    d = len(shape) - 2
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal((2, 2) + (3,) * d).astype(np.float32)
    conn = np.array([[False, False], [True, False]])
    y0 = vc.conv(x, w, connections=conn)
    dy = rng.standard_normal(y0.shape).astype(np.float32)
    dx0, dw0, _ = vc.conv_backward(dy, x, w, connections=conn)
    x2 = x.copy()
    x2[5, 0, 0] = np.nan
    y1 = vc.conv(x2, w, connections=conn)
    dx1, dw1, _ = vc.conv_backward(dy, x2, w, connections=conn)
    others = [i for i in range(shape[0]) if i != 5]
    np.testing.assert_array_equal(y1[others], y0[others])
    np.testing.assert_array_equal(dx1[others], dx0[others])
    assert np.isfinite(y1[5]).all()          # input map 0 feeds no output map
    assert np.isfinite(dw1).all() and (dw1[:, 0] == 0).all()
    np.testing.assert_allclose(dw1, dw0, rtol=1e-5, atol=1e-5)


def test_the_per_map_route_keeps_the_call_workspace(monkeypatch):
    """The per-map route plans its sub-convolutions with the call's workspace, not the
    global one."""
    from vecconv import _plan
    seen = []
    real = _plan._finish

    def spy(*args, **kwargs):
        plan = real(*args, **kwargs)
        seen.append(plan.workspace)
        return plan
    monkeypatch.setattr(_plan, "_finish", spy)
    table = vc.nn.lenet5_c3_table()
    x = np.ones((2, 6, 9, 9))
    x[0, 0, 0, 0] = np.inf
    vc.conv2d(x, np.ones((16, 6, 3, 3)), connections=table, workspace=12345)
    assert seen and set(seen) == {12345}


# ----------------------------------------------------------------------------- threads
@pytest.mark.parametrize("order", ["vecconv first", "threadpoolctl first"])
def test_threadpoolctl_limits_vecconv_in_either_import_order(order):
    imports = ("import vecconv\nimport threadpoolctl" if order == "vecconv first"
               else "import threadpoolctl\nimport vecconv")
    # no vecconv call before the limit: the first thing vecconv does is run limited
    code = imports + """
with threadpoolctl.threadpool_limits(1):
    inside = vecconv.get_num_threads()
    import numpy as np
    y = vecconv.conv2d(np.ones((1, 1, 5, 5)), np.ones((1, 1, 3, 3)))
assert inside == 1, inside
assert vecconv.get_num_threads() == 3, vecconv.get_num_threads()
assert any(i["user_api"] == "vecconv" for i in threadpoolctl.threadpool_info())
print("ok")
"""
    env = dict(__import__("os").environ, VECCONV_NUM_THREADS="3")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_config_overrides_are_per_thread_and_undone():
    import threading
    base = vc.get_config()
    seen = {}
    with vc.config(workspace=4096, threads=1) as inside:
        assert inside == {"workspace": 4096, "threads": 1}
        assert vc.get_workspace() == 4096 and vc.get_num_threads() == 1
        t = threading.Thread(target=lambda: seen.update(vc.get_config()))
        t.start()
        t.join()
        # the block's workspace reaches the planner
        from vecconv import _plan
        from vecconv._options import conv_options
        assert _plan.plan_conv((1, 1, 5, 5), (1, 1, 3, 3), None, np.float64,
                               conv_options(2)).workspace == 4096
    assert seen == base
    assert vc.get_config() == base
    with pytest.raises(ValueError, match="threads must be <= 1024"):
        with vc.config(threads=5000):
            pass
    with pytest.raises(TypeError, match="workspace must be an int"):
        vc.set_config(workspace=1.5)
    assert vc.get_config() == base


# ----------------------------------------------------------------------------- messages
@pytest.mark.parametrize("call,kind,match", [
    (lambda: vc.conv_transpose2d(np.ones((2, 4, 5, 5)), np.ones((4, 0, 3, 3))), ValueError,
     r"w must have non-zero sizes \(Cin, Cout/groups"),
    (lambda: vc.conv_transpose1d(np.ones((1, 1, 3)), np.ones((1, 1, 1)), stride=2**31),
     ValueError, "the output would have 4294967297 entries per map"),
    (lambda: vc.max_pool(np.ones((1, 1, 4, 4)), ((2, 2),)), TypeError,
     "kernel_size must be an int"),
    (lambda: vc.avg_pool_backward(np.ones((2, 3, 3, 3)), [2, 3, 7.0, 7], kernel_size=2),
     TypeError, "x_shape entry must be an int"),
    (lambda: vc.conv_transpose2d(np.ones((2, 4, 5)), np.ones((2, 3, 3, 3)), stride=2,
                                 output_size=(99, 10, 12)), ValueError,
     r"output_size \(99, 10, 12\) leads with \(99,\)"),
    (lambda: vc.conv2d(np.ones((1, 1, 5, 5)), np.ones((1, 1, 3, 3)), padding=1,
                       padding_mode="constant", fill_value=np.longdouble("1e4000")),
     ValueError, "fill_value must fit in a float64"),
])
def test_rarer_mistakes_name_what_is_wrong(call, kind, match):
    with pytest.raises(kind, match=match):
        call()


def test_dask_padding_index_map_is_made_from_the_ends_alone():
    """A graph over a long axis costs its pads, not its length: the index map of the
    padded ends is the same as numpy.pad's."""
    from vecconv._options import NUMPY_PAD_MODES
    from vecconv.dask import _source
    rng = np.random.default_rng(0)
    for _ in range(2000):
        mode = str(rng.choice(["reflect", "replicate", "circular", "symmetric"]))
        n, b, a = (int(v) for v in rng.integers((1, 0, 0), (60, 25, 25)))
        if (mode == "reflect" and max(a, b) >= n) or (mode == "circular" and max(a, b) > n):
            continue
        np.testing.assert_array_equal(
            _source(n, b, a, mode), np.pad(np.arange(n), (b, a), mode=NUMPY_PAD_MODES[mode]))


def test_dask_conv_takes_the_algorithm():
    da = pytest.importorskip("dask.array")
    import vecconv.dask as vd
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 1, 60, 50))
    w = rng.standard_normal((2, 1, 9, 9))
    for algorithm in ("im2col", "fft"):
        y = vd.conv(da.from_array(x, chunks=(1, 1, 30, 25)), w, padding=4,
                    algorithm=algorithm).compute()
        np.testing.assert_allclose(y, vc.conv2d(x, w, padding=4), rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="algorithm must be one of"):
        vd.conv(da.from_array(x), w, algorithm="direct!")


def test_pooling_tables_past_memory_are_refused_before_they_are_made(monkeypatch):
    from vecconv import _validate
    monkeypatch.setattr(_validate, "_available_bytes", lambda: 8 * 2**30)
    with pytest.raises(MemoryError, match="this pooling's window tables"):
        vc.max_pool(np.broadcast_to(np.float32(0), (1, 1, 1, 2 * 10**11)), (1, 2))


def test_signal_2d_wrap_of_an_empty_input_is_a_value_error():
    """SciPy's own routine dies of a floating-point exception here."""
    import vecconv.signal as vs
    for boundary in ("wrap", "symm"):
        with pytest.raises(ValueError, match="needs non-empty inputs"):
            vs.convolve2d(np.zeros((0, 3)), np.ones((2, 2)), "full", boundary)
    assert vs.convolve2d(np.zeros((0, 3)), np.ones((2, 2)), "full").shape == (1, 4)


def test_torch_bridge_names_tensors_it_cannot_take():
    torch = pytest.importorskip("torch")
    import vecconv.torch as vt
    w = torch.randn(1, 1, 3, 3)
    with pytest.raises(TypeError, match="x must be a dense"):
        vt.conv(torch.randn(1, 1, 5, 5).to_sparse(), w)
    with pytest.raises(TypeError, match="x must be a real tensor of float64"):
        vt.conv(torch.randn(1, 1, 5, 5).to(torch.float8_e4m3fn), w)
    assert vt.conv(torch.ones(1, 1, 5, 5, dtype=torch.int64), w.double()).dtype == torch.float64
