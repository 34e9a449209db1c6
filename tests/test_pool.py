"""Max and average pooling (1-, 2- and 3-D) against PyTorch's autograd, and their
identities: the backward pass is the adjoint of the forward pass, and for
non-overlapping windows the average's adjoint is eq. 6's Kronecker up-sampling."""

import itertools

import numpy as np
import pytest
from hypothesis import given

import vecconv as vc
import vecconv._config as vconfig
from reference import assert_close
from strategies import dtypes, pool_cases, seeds

try:
    import torch
    F = torch.nn.functional
except ImportError:      # the identities and the loop reference below still run
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")

SHAPES = {1: (2, 3, 13), 2: (2, 3, 9, 11), 3: (2, 2, 7, 8, 6)}


def torch_max(x, d, dy=None, **kw):
    t = torch.tensor(x, requires_grad=True)
    y, idx = getattr(F, f"max_pool{d}d")(t, return_indices=True, **kw)
    if dy is None:
        return y.detach().numpy(), idx.numpy(), None
    y.backward(torch.tensor(dy))
    return y.detach().numpy(), idx.numpy(), t.grad.numpy()


def torch_avg(x, d, dy, **kw):
    t = torch.tensor(x, requires_grad=True)
    y = getattr(F, f"avg_pool{d}d")(t, **kw)
    if dy is None:
        return y.detach().numpy(), None
    y.backward(torch.tensor(dy))
    return y.detach().numpy(), t.grad.numpy()


def check_max(x, d, k, dtype, **opts):
    """vecconv's max pooling, indices and gradient are torch's (values and indices to the
    bit: a max is a choice, not a sum)."""
    y, idx = vc.max_pool(x, (k,) * d if isinstance(k, int) else k, return_indices=True, **opts)
    assert y.dtype == dtype and idx.dtype == np.int64
    dy = np.random.default_rng(1).standard_normal(y.shape).astype(dtype)
    ty, tidx, tdx = torch_max(x, d, dy, kernel_size=k, **opts)
    np.testing.assert_array_equal(y, ty)
    np.testing.assert_array_equal(idx, tidx)
    dx = vc.max_pool_backward(dy, x, kernel_size=k, **opts)                # recomputed
    dx_i = vc.max_pool_backward(dy, x.shape, kernel_size=k, indices=idx, **opts)
    assert dx.dtype == dtype
    np.testing.assert_array_equal(dx, dx_i)
    assert_close(dx, tdx, dtype)


def check_avg(x, d, k, dtype, **opts):
    y = vc.avg_pool(x, (k,) * d if isinstance(k, int) else k, **opts)
    assert y.dtype == dtype
    dy = np.random.default_rng(2).standard_normal(y.shape).astype(dtype)
    ty, tdx = torch_avg(x, d, dy, kernel_size=k, **opts)
    assert_close(y, ty, dtype)
    dx = vc.avg_pool_backward(dy, x, kernel_size=k, **opts)
    assert dx.dtype == dtype
    assert_close(dx, tdx, dtype)


@needs_torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("k,stride,padding,dilation", [
    (2, None, 0, 1), (3, 1, 1, 1), (3, 2, 1, 1), (2, 3, 1, 1), (3, 2, 0, 2), (1, 2, 0, 1),
    (4, 1, 2, 1), (2, 1, 1, 3),
])
@pytest.mark.parametrize("ceil_mode", [False, True])
def test_max_pool_matches_torch(rng, dtype, d, k, stride, padding, dilation, ceil_mode):
    x = rng.standard_normal(SHAPES[d]).astype(dtype)
    check_max(x, d, k, dtype, stride=stride, padding=padding, dilation=dilation,
              ceil_mode=ceil_mode)


@needs_torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("k,stride,padding", [
    (2, None, 0), (3, 1, 1), (3, 2, 1), (2, 3, 1), (1, 2, 0), (4, 3, 2),
])
@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("count_include_pad", [False, True])
def test_avg_pool_matches_torch(rng, dtype, d, k, stride, padding, ceil_mode,
                                count_include_pad):
    x = rng.standard_normal(SHAPES[d]).astype(dtype)
    check_avg(x, d, k, dtype, stride=stride, padding=padding, ceil_mode=ceil_mode,
              count_include_pad=count_include_pad)


@needs_torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("d", [2, 3])       # torch's avg_pool1d has no divisor_override
@pytest.mark.parametrize("divisor", [1, 3, -2])
def test_avg_pool_divisor_override_matches_torch(rng, dtype, d, divisor):
    x = rng.standard_normal(SHAPES[d]).astype(dtype)
    check_avg(x, d, 3, dtype, stride=2, padding=1, ceil_mode=True, divisor_override=divisor)


@needs_torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("d", [1, 2, 3])
def test_non_square_windows_match_torch(rng, dtype, d):
    k = (3, 2, 1)[:d] if d > 1 else (4,)
    stride = (2, 1, 3)[:d] if d > 1 else (3,)
    padding = (1, 0, 0)[:d] if d > 1 else (2,)
    x = rng.standard_normal(SHAPES[d]).astype(dtype)
    check_max(x, d, k, dtype, stride=stride, padding=padding, dilation=(1, 2, 1)[:d],
              ceil_mode=True)
    check_avg(x, d, k, dtype, stride=stride, padding=padding, ceil_mode=True,
              count_include_pad=False)


@needs_torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("d", [1, 2, 3])
def test_ties_go_to_the_first_in_row_major_order(rng, dtype, d):
    """Few distinct values: most windows hold their maximum more than once."""
    x = rng.integers(0, 3, SHAPES[d]).astype(dtype)
    for k, s, p in ((2, 2, 0), (3, 1, 1), (3, 2, 1)):
        check_max(x, d, k, dtype, stride=s, padding=p)


@needs_torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("d", [1, 2, 3])
def test_nan_and_infinities_propagate_as_in_torch(rng, dtype, d):
    x = rng.standard_normal(SHAPES[d]).astype(dtype)
    flat = x.reshape(-1)
    spots = rng.choice(flat.size, flat.size // 5, replace=False)
    flat[spots[::3]] = np.nan
    flat[spots[1::3]] = -np.inf
    flat[spots[2::3]] = np.inf
    for k, s, p in ((2, 2, 0), (3, 1, 1), (3, 2, 1)):
        check_max(x, d, k, dtype, stride=s, padding=p)
        y = vc.avg_pool(x, (k,) * d, stride=s, padding=p)
        ty, _ = torch_avg(x, d, np.zeros(y.shape, dtype), kernel_size=k, stride=s, padding=p)
        assert_close(y, ty, dtype)       # NaN where torch has NaN


@needs_torch
def test_all_minus_infinity_window_points_at_its_first_entry():
    x = np.full((1, 1, 3, 3), -np.inf)
    check_max(x, 2, 2, np.float64, stride=1)


@needs_torch
def test_window_outside_the_map_gives_minus_inf_and_index_minus_one():
    """Dilation 5 with padding 1 on a 4-wide map: the window's taps are -1 and 4, both
    outside. PyTorch returns index 20 there (past the 16-entry map); vecconv says -1 and
    sends that window's gradient nowhere."""
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    y, idx = vc.max_pool(x, 2, stride=1, padding=1, dilation=5, return_indices=True)
    assert y.shape == (1, 1, 1, 1) and y[0, 0, 0, 0] == -np.inf and idx[0, 0, 0, 0] == -1
    ty, _, _ = torch_max(x, 2, kernel_size=2, stride=1, padding=1, dilation=5)
    np.testing.assert_array_equal(y, ty)
    dx = vc.max_pool_backward(np.ones_like(y), x, kernel_size=2, stride=1, padding=1,
                              dilation=5)
    assert (dx == 0).all()


@needs_torch
@given(case=pool_cases(kernel=4, stride=3, dilation=3, size=9), dtype=dtypes(),
       seed=seeds(2**16))
def test_random_geometry_matches_torch(case, dtype, seed):
    sizes, k, s, p, dl, ceil, cip = case
    d = len(sizes)
    x = np.random.default_rng(seed).standard_normal((2, 2) + sizes).astype(dtype)
    kw = dict(stride=s, padding=p, ceil_mode=ceil)
    try:
        ty, tidx, _ = torch_max(x, d, kernel_size=k, dilation=dl, **kw)
    except RuntimeError:                     # torch: the output would be empty
        with pytest.raises(ValueError, match="does not fit"):
            vc.max_pool(x, k, dilation=dl, **kw)
    else:
        y, idx = vc.max_pool(x, k, dilation=dl, return_indices=True, **kw)
        np.testing.assert_array_equal(y, ty)
        # a window wholly outside x (max pooling with dilation) has index -1; torch's
        # points outside the map there (see the test above)
        inside = idx >= 0
        np.testing.assert_array_equal(idx[inside], tidx[inside])
        assert (y[~inside] == -np.inf).all()
    try:
        torch_avg(x, d, None, kernel_size=k, count_include_pad=cip, **kw)
    except RuntimeError as exc:
        if "smaller than kernel size" in str(exc):
            # torch's avg_pool3d alone refuses an input smaller than the window even when
            # the padding makes it fit (its max_pool3d and avg_pool2d accept it)
            return
        with pytest.raises(ValueError, match="does not fit"):
            vc.avg_pool(x, k, count_include_pad=cip, **kw)
    else:
        check_avg(x, d, k, dtype, count_include_pad=cip, **kw)


def loop_pool(x, k, s, p, dl, ceil_mode, kind, count_include_pad=True, divisor=None):
    """Pooling by its definition, one window at a time (the reference without torch),
    stated as rules on windows rather than PyTorch's size formulas: window o starts at
    o*s - p; without ceil_mode a window is kept when it lies in the padded input; with
    ceil_mode also when it starts inside x and overhangs the padded input by less than a
    stride. The divisor counts the window's taps inside the padded input (or, without
    count_include_pad, inside x)."""
    starts = []
    for n, kk, ss, pp, dd in zip(x.shape[2:], k, s, p, dl):
        span = dd * (kk - 1) + 1
        axis = []
        for o in range(n + 2 * pp + ss):
            st = o * ss - pp
            end = st + span
            if end <= n + pp or (ceil_mode and st < n and end - (n + pp) < ss):
                axis.append(st)
        if not axis:
            raise ValueError("no window")
        starts.append(axis)
    y = np.zeros(x.shape[:2] + tuple(len(a) for a in starts), x.dtype)
    idx = np.full(y.shape, -1, np.int64)
    for o in np.ndindex(*y.shape[2:]):
        taps = [[a[oi] + j * dd for j in range(kk)] for a, oi, kk, dd in zip(starts, o, k, dl)]
        inside = [[t for t in ax if 0 <= t < n] for ax, n in zip(taps, x.shape[2:])]
        padded = [[t for t in ax if -pp <= t < n + pp] for ax, n, pp in zip(taps, x.shape[2:], p)]
        pos = list(itertools.product(*inside))
        for b in range(x.shape[0]):
            for c in range(x.shape[1]):
                vals = [x[(b, c) + q] for q in pos]
                if kind == "max":
                    best, where = -np.inf, (np.ravel_multi_index(pos[0], x.shape[2:])
                                            if pos else -1)
                    for v, q in zip(vals, pos):
                        if v > best or np.isnan(v):
                            best, where = v, np.ravel_multi_index(q, x.shape[2:])
                    y[(b, c) + o], idx[(b, c) + o] = best, where
                else:
                    if divisor is not None:
                        div = divisor
                    elif count_include_pad:
                        div = np.prod([len(a) for a in padded])
                    else:
                        div = len(pos)
                    y[(b, c) + o] = sum(vals, x.dtype.type(0)) / x.dtype.type(div)
    return y, idx


@given(case=pool_cases(kernel=3, stride=3, dilation=2, size=7), seed=seeds(2**16))
def test_random_geometry_matches_the_loop_reference(case, seed):
    sizes, k, s, p, dl, ceil, cip = case
    d = len(sizes)
    x = np.random.default_rng(seed).integers(-3, 3, (2, 2) + sizes).astype(np.float64)
    x[x == -3] = np.nan
    kw = dict(stride=s, padding=p, ceil_mode=ceil)
    try:
        ref_y, ref_idx = loop_pool(x, k, s, p, dl, ceil, "max")
    except ValueError:
        with pytest.raises(ValueError, match="does not fit"):
            vc.max_pool(x, k, dilation=dl, **kw)
    else:
        y, idx = vc.max_pool(x, k, dilation=dl, return_indices=True, **kw)
        np.testing.assert_array_equal(y, ref_y)
        np.testing.assert_array_equal(idx, ref_idx)
        g = np.random.default_rng(seed).standard_normal(y.shape)
        dx = vc.max_pool_backward(g, x, kernel_size=k, dilation=dl, **kw)
        ref_dx = np.zeros(x.size)
        flat = (np.arange(4)[:, None] * int(np.prod(sizes)) + idx.reshape(4, -1))
        np.add.at(ref_dx, flat[idx.reshape(4, -1) >= 0], g.reshape(4, -1)[idx.reshape(4, -1) >= 0])
        np.testing.assert_allclose(dx.reshape(-1), ref_dx, rtol=1e-12, atol=1e-12)
    try:
        ref_a, _ = loop_pool(x, k, s, p, (1,) * d, ceil, "avg", cip)
    except ValueError:
        with pytest.raises(ValueError, match="does not fit"):
            vc.avg_pool(x, k, count_include_pad=cip, **kw)
    else:
        np.testing.assert_allclose(vc.avg_pool(x, k, count_include_pad=cip, **kw), ref_a,
                                   rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- identities
@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("ceil_mode", [False, True])
def test_backward_is_the_adjoint(rng, d, ceil_mode):
    """<pool(x), g> = <x, pool_backward(g)> for the (linear) average pooling, and for max
    pooling with its indices fixed (the linear map it is around x)."""
    x = rng.standard_normal(SHAPES[d])
    u = rng.standard_normal(SHAPES[d])
    opts = dict(stride=2, padding=1, ceil_mode=ceil_mode)
    y = vc.avg_pool(u, (3,) * d, **opts)
    g = rng.standard_normal(y.shape)
    dx = vc.avg_pool_backward(g, u.shape, kernel_size=3, **opts)
    assert np.isclose(np.vdot(y, g), np.vdot(u, dx), rtol=1e-12)
    _, idx = vc.max_pool(x, 3, return_indices=True, **opts)
    gathered = np.take_along_axis(u.reshape(u.shape[:2] + (-1,)),
                                  idx.reshape(idx.shape[:2] + (-1,)), axis=2)
    dx = vc.max_pool_backward(g, x, kernel_size=3, **opts)
    assert np.isclose(np.vdot(gathered, g.reshape(gathered.shape)), np.vdot(u, dx),
                      rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_average_adjoint_is_the_kronecker_up_sampling_of_eq_6(rng, dtype):
    """Non-overlapping n x n windows: dx = (delta (x) 1_{n x n}) / n^2, to the bit."""
    n = 3
    delta = rng.standard_normal((2, 4, 5, 6)).astype(dtype)
    dx = vc.avg_pool_backward(delta, (2, 4, 15, 18), kernel_size=n)
    up = np.kron(delta, np.ones((n, n), dtype)) / dtype(n * n)
    np.testing.assert_array_equal(dx, up.astype(dtype))
    sums = vc.avg_pool_backward(delta, (2, 4, 15, 18), kernel_size=n, divisor_override=1)
    np.testing.assert_array_equal(sums, np.kron(delta, np.ones((n, n), dtype)))


def test_window_sums_are_eq_2_down(rng):
    x = rng.standard_normal((2, 3, 8, 6))
    down = x.reshape(2, 3, 4, 2, 3, 2).sum(axis=(3, 5))
    np.testing.assert_allclose(vc.avg_pool(x, 2, divisor_override=1), down, rtol=1e-14)


# ----------------------------------------------------------------------------- API rules
def test_dimension_rules(rng):
    x = rng.standard_normal((3, 8, 8))                   # unbatched 2-D, or batched 1-D
    np.testing.assert_array_equal(vc.max_pool(x, (2, 2)), vc.max_pool(x[None], 2)[0])
    np.testing.assert_array_equal(vc.max_pool(x, 2), vc.max_pool1d(x, 2))   # int: batched
    np.testing.assert_array_equal(vc.max_pool2d(x, 2), vc.max_pool(x, (2, 2)))
    np.testing.assert_array_equal(vc.avg_pool2d(x, 2), vc.avg_pool(x[None], 2)[0])
    np.testing.assert_array_equal(vc.avg_pool3d(x[None], 2), vc.avg_pool(x[None], (2,) * 3))
    y, idx = vc.max_pool2d(x, 2, return_indices=True)
    dy = rng.standard_normal(y.shape)
    dx = vc.max_pool_backward(dy, x, kernel_size=(2, 2), indices=idx)
    assert dx.shape == x.shape
    np.testing.assert_array_equal(dx, vc.max_pool_backward(dy[None], x[None], kernel_size=2)[0])
    dxa = vc.avg_pool_backward(dy, x.shape, kernel_size=(2, 2))
    np.testing.assert_array_equal(dxa, vc.avg_pool_backward(dy[None], (1,) + x.shape,
                                                            kernel_size=2)[0])


def test_dtypes_and_inputs_untouched(rng):
    x = rng.integers(-5, 5, (2, 3, 6, 6))
    before = x.copy()
    assert vc.avg_pool(x, 2).dtype == np.float64
    assert vc.max_pool(x.astype(np.float16), 2).dtype == np.float32
    assert vc.max_pool(x.astype(">f4"), 2).dtype == np.float32
    xf = x.astype(np.float32)[:, :, ::-1]                # not contiguous
    np.testing.assert_array_equal(vc.max_pool(xf, 2), vc.max_pool(np.ascontiguousarray(xf), 2))
    np.testing.assert_array_equal(x, before)


def test_empty_batch_and_channels():
    for shape in ((0, 3, 4, 4), (2, 0, 4, 4)):
        x = np.zeros(shape, np.float32)
        y, idx = vc.max_pool(x, 2, return_indices=True)
        assert y.shape == shape[:2] + (2, 2) and idx.shape == y.shape
        assert vc.max_pool_backward(y, x, kernel_size=2).shape == shape
        assert vc.avg_pool_backward(y, shape, kernel_size=2).shape == shape


def test_threads_give_the_same_bits(rng, monkeypatch):
    monkeypatch.setattr(vconfig, "POOL_GRAIN", 0)
    x = rng.standard_normal((3, 5, 37, 29)).astype(np.float32)
    x[0, 0, :4, :4] = np.nan
    runs = []
    for n in (1, 2, 3):
        with vc.threads(n):
            y, idx = vc.max_pool(x, 3, stride=2, padding=1, return_indices=True)
            a = vc.avg_pool(x, 3, stride=2, padding=1, ceil_mode=True)
            runs.append((y, idx, a, vc.max_pool_backward(y, x, kernel_size=3, stride=2,
                                                         padding=1),
                         vc.avg_pool_backward(a, x.shape, kernel_size=3, stride=2,
                                              padding=1, ceil_mode=True)))
    for other in runs[1:]:
        for r, o in zip(runs[0], other):
            np.testing.assert_array_equal(r, o)


@pytest.mark.parametrize("call,match", [
    (lambda x: vc.max_pool(x, 3, padding=2), "at most half the window"),
    (lambda x: vc.avg_pool(x, 9), "does not fit"),
    (lambda x: vc.max_pool(x, 2, stride=0), "stride must be >= 1"),
    (lambda x: vc.max_pool(x, 2, dilation=0), "dilation must be >= 1"),
    (lambda x: vc.max_pool(x, 0), "kernel_size must be >= 1"),
    (lambda x: vc.max_pool(x, (2, 2, 2, 2)), "1, 2 or 3 entries"),
    (lambda x: vc.max_pool(x[0, 0], 2), "int kernel_size needs x"),
    (lambda x: vc.max_pool(x[0, 0, 0], (2, 2)), r"needs x of shape \(N, C, \*\(H, W\)\)"),
    (lambda x: vc.max_pool3d(x[0, 0], 2), r"\(D, H, W\)"),
    (lambda x: vc.avg_pool(x, 2, divisor_override=0), "nonzero"),
    (lambda x: vc.avg_pool(x, 2, divisor_override=1.5), "divisor_override must be an int"),
    (lambda x: vc.avg_pool(x, 2, ceil_mode=1), "ceil_mode must be True or False"),
    (lambda x: vc.avg_pool(x, 2, count_include_pad="yes"), "count_include_pad"),
    (lambda x: vc.max_pool(x, 2, return_indices=None), "return_indices"),
    (lambda x: vc.max_pool(x.astype(complex), 2), "real numeric"),
    (lambda x: vc.max_pool(np.zeros((1, 1, 0, 4)), 2), "at least 1 entry"),
    (lambda x: vc.max_pool_backward(np.zeros((1, 2, 3, 3)), x, kernel_size=2), "dy must"),
    (lambda x: vc.avg_pool_backward(np.zeros((1, 2, 3, 3)), x.shape, kernel_size=2), "dy must"),
    (lambda x: vc.max_pool_backward(np.zeros((1, 2, 2, 2)), x.shape, kernel_size=2),
     "needs x itself"),
    (lambda x: vc.max_pool_backward(np.zeros((1, 2, 2, 2)), x, kernel_size=2,
                                    indices=np.full((1, 2, 2, 2), 16)), "inside each map"),
    (lambda x: vc.max_pool_backward(np.zeros((1, 2, 2, 2)), x, kernel_size=2,
                                    indices=np.full((1, 2, 2, 2), -2)), "inside each map"),
    (lambda x: vc.max_pool_backward(np.zeros((1, 2, 2, 2)), x, kernel_size=2,
                                    indices=np.zeros((1, 2, 2, 2))), "integer array"),
    (lambda x: vc.max_pool_backward(np.zeros((1, 2, 2, 2)), x, kernel_size=2,
                                    indices=np.zeros((1, 2, 2, 1), int)), "indices must have"),
    (lambda x: vc.avg_pool_backward(np.zeros((1, 2, 2, 2)), (1, 2, -4, 4), kernel_size=2),
     "x_shape entry must be >= 0"),
])
def test_bad_arguments_are_named(call, match):
    x = np.zeros((1, 2, 4, 4))
    with pytest.raises((ValueError, TypeError), match=match):
        call(x)


def test_huge_windows_cost_what_the_input_costs():
    """A window far larger than x: the indices' scratch is sized by the taps inside x,
    and the divisor's product is taken without int64 overflow."""
    x = np.arange(10.0)[None, None]
    y, idx = vc.max_pool1d(x, 2**28, padding=2**27, stride=2**28, return_indices=True)
    assert y.ravel().tolist() == [9.0] and idx.ravel().tolist() == [9]
    a = vc.avg_pool3d(np.ones((1, 1, 1, 1, 1)), 2**21, padding=2**20)
    assert a.ravel()[0] == pytest.approx(1.0 / 2**63)
