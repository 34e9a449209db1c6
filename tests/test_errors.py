"""Bad input: every public function, every argument. A clear TypeError/ValueError that
names the argument, never a crash, never a modified input."""

import numpy as np
import pytest

import vecconv as vc


def good_args():
    rng = np.random.default_rng(0)
    return dict(x=rng.standard_normal((2, 3, 8, 8)), w=rng.standard_normal((4, 3, 3, 3)),
                bias=rng.standard_normal(4))


def good_args_1d():
    rng = np.random.default_rng(0)
    return dict(x=rng.standard_normal((2, 3, 8)), w=rng.standard_normal((4, 3, 3)),
                bias=rng.standard_normal(4))


NAN = float("nan")

# (name of the argument the message must name, keyword changes, exception)
CONV_CASES = [
    ("x", dict(x=np.ones((8, 8))), ValueError),          # neither batched nor unbatched
    ("x", dict(x=np.ones((1, 2, 3, 8, 8))), ValueError),
    ("x", dict(x="abc"), TypeError),
    ("x", dict(x=None), TypeError),
    ("x", dict(x=np.ones((2, 3, 8, 8), dtype=complex)), TypeError),
    ("x", dict(x=np.array([[[["a"]]]])), TypeError),
    ("x", dict(x=[[[[1, 2], [3]]]]), TypeError),
    ("w", dict(w=np.ones((4, 3, 3))), ValueError),
    ("w", dict(w=np.ones((4, 2, 3, 3))), ValueError),
    ("w", dict(w=np.ones((4, 3, 0, 3))), ValueError),
    ("w", dict(w=np.ones((0, 3, 3, 3)), bias=None), ValueError),
    ("w", dict(w=np.ones((4, 3, 3, 3), dtype=object)), TypeError),
    ("x", dict(x=np.ones((2, 0, 8, 8)), w=np.ones((4, 0, 3, 3))), ValueError),
    ("bias", dict(bias=np.ones(5)), ValueError),
    ("bias", dict(bias=np.ones((4, 1))), ValueError),
    ("bias", dict(bias=np.ones(4, dtype=complex)), TypeError),
    ("kernel", dict(w=np.ones((4, 3, 9, 3))), ValueError),
    ("kernel", dict(w=np.ones((4, 3, 5, 5)), dilation=2), ValueError),
    ("stride", dict(stride=0), ValueError),
    ("stride", dict(stride=-1), ValueError),
    ("stride", dict(stride=1.5), TypeError),
    ("stride", dict(stride=NAN), TypeError),
    ("stride", dict(stride=True), TypeError),
    ("stride", dict(stride="2"), TypeError),
    ("stride", dict(stride=(1, 2, 3)), ValueError),
    ("stride", dict(stride=None), TypeError),
    ("dilation", dict(dilation=0), ValueError),
    ("dilation", dict(dilation=(1, 0)), ValueError),
    ("dilation", dict(dilation=2.0), TypeError),
    ("padding", dict(padding=-1), ValueError),
    ("padding", dict(padding="circular"), ValueError),
    ("padding", dict(padding=(1, -2)), ValueError),
    ("padding", dict(padding=1.0), TypeError),
    ("padding", dict(padding=NAN), TypeError),
    ("padding", dict(padding=False), TypeError),
    ("padding", dict(padding=((1, 1), (1,))), ValueError),
    ("groups", dict(groups=0), ValueError),
    ("groups", dict(groups=2), ValueError),
    ("groups", dict(groups=2.0), TypeError),
    ("groups", dict(groups=True), TypeError),
    ("connections", dict(connections=np.ones((4, 3), dtype=bool)), ValueError),
    ("connections", dict(connections=np.ones((3, 4)) * 0.5), TypeError),
    ("connections", dict(connections=np.full((3, 4), 2)), ValueError),
    ("connections", dict(connections=np.ones((3, 4), dtype=bool), groups=3,
                         w=np.ones((3, 1, 3, 3)), bias=None), ValueError),
    ("flip", dict(flip=1), TypeError),
    ("flip", dict(flip="yes"), TypeError),
    ("workspace", dict(workspace=0), ValueError),
    ("workspace", dict(workspace=1.5), TypeError),
]


def _snapshot(args):
    return {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in args.items()}


def _assert_unchanged(args, snap):
    for k, v in args.items():
        if isinstance(v, np.ndarray) and v.dtype != object:
            np.testing.assert_array_equal(v, snap[k])


def assert_refused(call, args, name, exc, with_bias):
    """call(x, w, [bias,] **rest) raises exc naming the argument and changes no input."""
    given = dict(args)
    if not with_bias:
        given.pop("bias")
    snap = _snapshot(given)
    rest = dict(given)
    positional = [rest.pop("x"), rest.pop("w")] + ([rest.pop("bias")] if with_bias else [])
    with pytest.raises(exc, match=name):
        call(*positional, **rest)
    _assert_unchanged(given, snap)          # every input, bias included, is untouched


@pytest.mark.parametrize("name,change,exc", CONV_CASES)
def test_conv2d_bad_input(name, change, exc):
    assert_refused(vc.conv2d, {**good_args(), **change}, name, exc, with_bias=True)


@pytest.mark.parametrize("name,change,exc", [c for c in CONV_CASES if c[0] != "bias"])
def test_conv2d_backward_bad_input(name, change, exc):
    dy = np.ones((2, 4, 6, 6))
    assert_refused(lambda x, w, **kw: vc.conv2d_backward(dy, x, w, **kw),
                   {**good_args(), **change}, name, exc, with_bias=False)


@pytest.mark.parametrize("dy,exc", [
    (np.ones((2, 4, 6, 5)), ValueError), (np.ones((2, 4, 6)), ValueError),
    (np.ones((2, 4, 6, 6), dtype=complex), TypeError), (None, TypeError), ("dy", TypeError),
])
def test_conv2d_backward_bad_dy(dy, exc):
    a = good_args()
    with pytest.raises(exc, match="dy"):
        vc.conv2d_backward(dy, a["x"], a["w"])


CONV1D_CASES = [
    ("x", dict(x=np.ones(8)), ValueError),                # neither batched nor unbatched
    ("w", dict(w=np.ones((4, 3, 3, 3))), ValueError),
    ("w", dict(w=np.ones((4, 2, 3))), ValueError),
    ("kernel", dict(w=np.ones((4, 3, 9))), ValueError),
    ("stride", dict(stride=(1, 1)), ValueError),
    ("stride", dict(stride=0), ValueError),
    ("padding", dict(padding="reflect"), ValueError),
    ("bias", dict(bias=np.ones(3)), ValueError),
    ("groups", dict(groups=5), ValueError),
]


@pytest.mark.parametrize("name,change,exc", CONV1D_CASES)
def test_conv1d_bad_input(name, change, exc):
    args = {**good_args_1d(), **change}
    assert_refused(vc.conv1d, args, name, exc, with_bias=True)
    if name != "bias":
        dy = np.ones((2, 4, 6))
        assert_refused(lambda x, w, **kw: vc.conv1d_backward(dy, x, w, **kw), args, name, exc,
                       with_bias=False)


@pytest.mark.parametrize("call,name,exc", [
    (lambda: vc.im2col(np.ones(8), 3), "kernel_size", ValueError),
    (lambda: vc.im2col(np.ones((1, 1, 8, 8)), 0), "kernel_size", ValueError),
    (lambda: vc.im2col(np.ones((1, 1, 8, 8)), (2, 2, 2)), "kernel_size", ValueError),
    (lambda: vc.im2col(np.ones((1, 1, 8, 8)), 9), "kernel", ValueError),
    (lambda: vc.im2col(np.ones((1, 1, 8, 8)), 2.5), "kernel_size", TypeError),
    (lambda: vc.im2col(np.ones((1, 1, 8, 8)), 3, stride=0), "stride", ValueError),
    (lambda: vc.im2col(np.ones((1, 1, 8, 8), dtype=complex), 3), "x", TypeError),
    (lambda: vc.col2im(np.ones((35, 9)), (1, 1, 8, 8), 3), "cols", ValueError),
    (lambda: vc.col2im(np.ones((36, 9, 1)), (1, 1, 8, 8), 3), "cols", ValueError),
    (lambda: vc.col2im(np.ones((36, 9)), (1, 1, 8), 3), "input_shape", ValueError),
    (lambda: vc.col2im(np.ones((36, 9)), 5, 3), "input_shape", TypeError),
    (lambda: vc.col2im(np.ones((36, 9)), (1, 1, -8, 8), 3), "input_shape", ValueError),
    (lambda: vc.col2im(np.ones((36, 9)), (1, 1, 8.0, 8), 3), "input_shape", TypeError),
    (lambda: vc.col2im(np.ones((36, 9), dtype=complex), (1, 1, 8, 8), 3), "cols", TypeError),
    (lambda: vc.vec(np.float64(3.0)), "a", ValueError),
    (lambda: vc.vec("abc"), "a", TypeError),
    (lambda: vc.unvec(np.ones(6), (4, 2)), "shape", ValueError),
    (lambda: vc.unvec(np.ones((2, 3)), (3, 2)), "v", ValueError),
    (lambda: vc.unvec(np.ones(6), 6), "shape", TypeError),
    (lambda: vc.unvec(np.ones(6), (2.0, 3)), "shape", TypeError),
    (lambda: vc.patch_matrix(np.ones((3, 3, 3)), 2), "x", ValueError),
    (lambda: vc.patch_matrix(np.ones((3, 3)), 4), "kernel_shape", ValueError),
    (lambda: vc.patch_matrix(np.ones((3, 3)), 0), "kernel_shape", ValueError),
    (lambda: vc.set_workspace(0), "nbytes", ValueError),
    (lambda: vc.set_workspace("big"), "nbytes", TypeError),
])
def test_other_functions_bad_input(call, name, exc):
    with pytest.raises(exc, match=name):
        call()


def test_impossible_output_fails_before_allocating():
    """An output far larger than memory: MemoryError naming the size, not the OOM killer."""
    # each map fits a BLAS int (1.6e9 < 2**31) but 64 output maps need 819 GB
    x = np.lib.stride_tricks.as_strided(np.zeros(1), (1, 1, 40_000, 40_000), (0,) * 4)
    w = np.ones((64, 1, 1, 1))
    with pytest.raises(MemoryError, match="GiB"):
        vc.conv2d(x, w)


def test_too_large_for_blas_int_is_a_clear_error():
    x = np.lib.stride_tricks.as_strided(np.zeros(1), (1, 1, 50_000, 50_000), (0,) * 4)
    with pytest.raises(ValueError, match="2\\*\\*31"):
        vc.conv2d(x, np.ones((1, 1, 1, 1)))


def test_aliasing_inputs_are_fine(rng):
    """x passed as its own dy, w a view of x: results as with copies, inputs untouched."""
    x = rng.standard_normal((2, 2, 5, 5))
    w = x[:2, :, :3, :3]
    snap = x.copy()
    y = vc.conv2d(x, w, padding=1)
    np.testing.assert_array_equal(y, vc.conv2d(x.copy(), w.copy(), padding=1))
    dx, dw, db = vc.conv2d_backward(x, x, w, padding=1)
    ref = vc.conv2d_backward(x.copy(), x.copy(), w.copy(), padding=1)
    for a, b in zip((dx, dw, db), ref):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(x, snap)
