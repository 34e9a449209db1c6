"""vecconv.torch to any order: the backward passes are recorded operations themselves, so
gradgradcheck passes, a gradient penalty and a Hessian equal PyTorch's, and half
precision computes in float32 and answers in the input's dtype."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

import vecconv.torch as vt  # noqa: E402

gradgradcheck = torch.autograd.gradgradcheck


def t(rng, *shape, dtype=torch.float64, grad=True):
    return torch.tensor(rng.standard_normal(shape), dtype=dtype, requires_grad=grad)


def distinct(rng, *shape):
    """Values with no ties, at least 0.05 apart: a maximum's argmax does not move under
    gradgradcheck's perturbations."""
    n = int(np.prod(shape))
    values = (rng.permutation(n) * 0.05 + 0.01 * rng.random(n)).reshape(shape)
    return torch.tensor(values, dtype=torch.float64, requires_grad=True)


# ----------------------------------------------------------------------------- convolutions
TABLE = np.array([[1, 0, 1], [0, 1, 1]], bool)       # 2 input maps -> 3 output maps


@pytest.mark.parametrize("options", [
    dict(),
    dict(stride=2, padding=1),
    dict(dilation=(2, 1), padding=(1, 2)),
    dict(groups=2),
    dict(connections=TABLE),
    dict(flip=True, padding="same"),
    dict(padding=1, padding_mode="reflect"),
    dict(padding=2, padding_mode="circular", stride=(1, 2)),
    dict(padding=(1, 2), padding_mode="replicate"),
    dict(padding=3, padding_mode="symmetric"),
    dict(padding=1, padding_mode="constant", fill_value=0.7),
], ids=lambda o: ",".join(f"{k}={v if k != 'connections' else 'table'}"
                          for k, v in o.items()) or "plain")
def test_conv2d_passes_gradgradcheck(rng, options):
    groups = options.get("groups", 1)
    x = t(rng, 1, 2, 4, 5)
    w = t(rng, 4 if groups > 1 else 3, 2 // groups, 3, 2)
    b = t(rng, w.shape[0])
    assert gradgradcheck(lambda x, w, b: vt.conv(x, w, b, **options), (x, w, b))


@pytest.mark.parametrize("d, options", [
    (1, dict(stride=2, padding=2, dilation=2)),
    (1, dict(padding=3, padding_mode="reflect", flip=True)),
    (3, dict(padding=1, padding_mode="circular")),
    (3, dict(stride=(1, 2, 1), groups=2)),
])
def test_conv1d_and_3d_pass_gradgradcheck(rng, d, options):
    size = 6 if d == 1 else 3
    x = t(rng, 1, 2, *([size] * d))
    w = t(rng, 2, 2 // options.get("groups", 1), *([2] * d))
    assert gradgradcheck(lambda x, w: vt.conv(x, w, **options), (x, w))


def test_unbatched_conv_passes_gradgradcheck(rng):
    x, w, b = t(rng, 2, 4, 4), t(rng, 3, 2, 2, 2), t(rng, 3)
    assert gradgradcheck(lambda x, w, b: vt.conv(x, w, b, padding=1), (x, w, b))


@pytest.mark.parametrize("options", [
    dict(stride=2, padding=1, output_padding=1),
    dict(groups=2, stride=(1, 2)),
    dict(dilation=2, padding=(1, 0)),
    dict(dilation=3, stride=2, output_padding=2),     # output_padding >= stride
])
def test_conv_transpose_passes_gradgradcheck(rng, options):
    groups = options.get("groups", 1)
    x, w = t(rng, 1, 2, 3, 3), t(rng, 2, 4 // groups if groups > 1 else 2, 2, 3)
    b = t(rng, w.shape[1] * groups)
    assert gradgradcheck(lambda x, w, b: vt.conv_transpose(x, w, b, **options), (x, w, b))


@pytest.mark.parametrize("d", [1, 3])
def test_conv_transpose_of_other_dimensions_passes_gradgradcheck(rng, d):
    x, w = t(rng, 1, 2, *([3] * d)), t(rng, 2, 1, *([2] * d))
    assert gradgradcheck(lambda x, w: vt.conv_transpose(x, w, stride=2), (x, w))


# ----------------------------------------------------------------------------- pooling
@pytest.mark.parametrize("kernel, options", [
    (2, dict()),
    (3, dict(stride=2, padding=1)),
    (2, dict(stride=1, dilation=2)),
    (3, dict(stride=2, padding=1, ceil_mode=True)),
    ((2,), dict(stride=1)),                            # 1-D over the last axis
    ((2, 1, 2), dict(stride=(1, 1, 2), padding=(1, 0, 1))),
])
def test_max_pool_passes_gradgradcheck(rng, kernel, options):
    d = len(kernel) if isinstance(kernel, tuple) else 2
    x = distinct(rng, 1, 2, *[(4, 5, 3)[a] for a in range(d)])
    assert gradgradcheck(lambda x: vt.max_pool(x, kernel, **options), (x,))


@pytest.mark.parametrize("kernel, options", [
    (2, dict()),
    (3, dict(stride=2, padding=1, count_include_pad=False)),
    (3, dict(stride=2, padding=1, ceil_mode=True)),
    ((2, 3), dict(stride=1, divisor_override=4)),
    ((3,), dict(stride=2, padding=1, ceil_mode=True, count_include_pad=False)),
    ((2, 2, 2), dict(stride=1, padding=1)),
])
def test_avg_pool_passes_gradgradcheck(rng, kernel, options):
    d = len(kernel) if isinstance(kernel, tuple) else 2
    x = t(rng, 1, 2, *[(5, 4, 3)[a] for a in range(d)])
    assert gradgradcheck(lambda x: vt.avg_pool(x, kernel, **options), (x,))


def test_max_pool_second_derivative_of_a_window_outside_the_input_is_zero(rng):
    """Index -1 (no tap of the window inside x): no gradient, and none of the gradient's
    derivative either."""
    x = t(rng, 1, 2, 3)
    y, idx = vt.max_pool(x, (2,), dilation=4, padding=1, return_indices=True)
    assert (idx == -1).all() and torch.isinf(y).all()
    v = t(rng, *y.shape)
    dx, = torch.autograd.grad(y, x, v, create_graph=True)
    assert (dx == 0).all()
    dv, = torch.autograd.grad((dx * t(rng, *x.shape, grad=False)).sum(), v)
    assert (dv == 0).all()


def test_max_pool_gradient_of_gradient_equals_pytorchs(rng):
    """Overlapping windows (one entry can be the maximum of several) through a
    non-linearity, differentiated twice."""
    x = distinct(rng, 2, 3, 6, 5)

    def penalty(pool):
        y = pool(x)
        g, = torch.autograd.grad(torch.sin(y).sum(), x, create_graph=True)
        return torch.autograd.grad((g ** 2 * torch.cos(x)).sum(), x)[0]

    ours = penalty(lambda x: vt.max_pool(x, 3, stride=1, padding=1))
    theirs = penalty(lambda x: F.max_pool2d(x, 3, stride=1, padding=1))
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- the cases
def test_gradient_penalty_equals_pytorchs(rng):
    """A constant upstream gradient (the gradient-penalty pattern)."""
    x0, w0 = rng.standard_normal((1, 1, 5, 5)), rng.standard_normal((1, 1, 3, 3))
    results = []
    for conv in (vt.conv, F.conv2d):
        x = torch.tensor(x0, requires_grad=True)
        w = torch.tensor(w0, requires_grad=True)
        y = conv(x, w)
        g, = torch.autograd.grad(y, x, torch.ones_like(y), create_graph=True)
        (y.mean() + (g ** 2).sum()).backward()
        results.append((x.grad, w.grad))
    (ours_x, ours_w), (theirs_x, theirs_w) = results
    torch.testing.assert_close(ours_w, theirs_w, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours_x, theirs_x, rtol=1e-12, atol=1e-12)


def test_gradient_penalty_with_options_equals_pytorchs(rng):
    """The same with bias, stride, groups, reflect padding and a gradient-of-w penalty."""
    x, w, b = t(rng, 2, 4, 7, 6), t(rng, 6, 2, 3, 3), t(rng, 6)

    def run(conv):
        for v in (x, w, b):
            v.grad = None
        y = torch.tanh(conv(x, w, b))
        gx, gw = torch.autograd.grad(y.square().sum(), (x, w), create_graph=True)
        ((gx ** 2).sum() + (gw ** 3).sum()).backward()
        return x.grad.clone(), w.grad.clone(), b.grad.clone()

    ours = run(lambda x, w, b: vt.conv(x, w, b, stride=2, groups=2, padding=1,
                                       padding_mode="reflect"))
    theirs = run(lambda x, w, b: F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), w, b,
                                          stride=2, groups=2))
    for a, e in zip(ours, theirs):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-10)


def test_hessian_equals_pytorchs(rng):
    x = t(rng, 1, 1, 5, 5, grad=False)
    w = t(rng, 1, 1, 3, 3, grad=False)
    hessian = torch.autograd.functional.hessian
    ours = hessian(lambda t: (vt.conv(t, w) ** 2).sum(), x)
    theirs = hessian(lambda t: (F.conv2d(t, w) ** 2).sum(), x)
    assert ours.abs().max() > 0.1
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    # the joint Hessian of a non-quadratic function: every block, mixed ones included
    ours = hessian(lambda x, w: torch.sin(vt.conv(x, w, stride=2, padding=1)).sum(), (x, w))
    theirs = hessian(lambda x, w: torch.sin(F.conv2d(x, w, stride=2, padding=1)).sum(), (x, w))
    for row_ours, row_theirs in zip(ours, theirs):
        for a, e in zip(row_ours, row_theirs):
            torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12)


def test_third_derivative_equals_pytorchs(rng):
    x, w = t(rng, 1, 2, 5, 4), t(rng, 3, 2, 2, 2)

    def third(conv, transpose):
        g1, = torch.autograd.grad(torch.tanh(conv(x, w)).sum(), w, create_graph=True)
        y = transpose(conv(x, g1), w)
        g2, = torch.autograd.grad((y ** 2).sum(), x, create_graph=True)
        return torch.autograd.grad((g2 ** 2).sum(), (x, w))

    ours = third(vt.conv, vt.conv_transpose)
    theirs = third(F.conv2d, F.conv_transpose2d)
    for a, e in zip(ours, theirs):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-10)


# ----------------------------------------------------------------------------- dtypes
def _as(v, dtype):
    return v.detach().to(dtype).requires_grad_()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_computes_in_float32_and_answers_in_its_dtype(rng, dtype):
    """Forward and backward against PyTorch's own CPU computation, in the half dtype."""
    eps = torch.finfo(dtype).eps
    x32, w32, b32 = t(rng, 2, 3, 7, 6), t(rng, 4, 3, 3, 3), t(rng, 4)
    cases = [
        (lambda x, w, b: vt.conv(x, w, b, padding=1, stride=(1, 2)),
         lambda x, w, b: F.conv2d(x, w, b, padding=1, stride=(1, 2)), (x32, w32, b32)),
        (lambda x, w: vt.conv_transpose(x, w, stride=2, padding=1),
         lambda x, w: F.conv_transpose2d(x, w, stride=2, padding=1), (x32, w32.transpose(0, 1))),
        (lambda x: vt.max_pool(x, 3, stride=2, padding=1),
         lambda x: F.max_pool2d(x, 3, stride=2, padding=1), (x32,)),
        (lambda x: vt.avg_pool(x, 2, count_include_pad=False, padding=1),
         lambda x: F.avg_pool2d(x, 2, count_include_pad=False, padding=1), (x32,)),
    ]
    for ours, theirs, inputs in cases:
        results = []
        for f in (ours, theirs):
            args = [_as(v, dtype) for v in inputs]
            y = f(*args)
            v = torch.linspace(-1, 1, y.numel()).reshape(y.shape).to(dtype)
            grads = torch.autograd.grad(y, args, v)
            assert y.dtype == dtype and all(g.dtype == dtype for g in grads)
            results.append((y,) + grads)
        for a, e in zip(*results):
            scale = e.float().abs().max().item()
            torch.testing.assert_close(a.float(), e.float(), rtol=4 * eps, atol=4 * eps * scale)
        # and both against float64 to the half dtype's precision (ours is one rounding)
        exact = ours(*inputs)
        err = (results[0][0].double() - exact).abs().max().item()
        assert err <= eps * exact.abs().max().item()


def test_half_precision_second_derivative(rng):
    x, w = t(rng, 1, 2, 5, 5), t(rng, 3, 2, 3, 3)

    def penalty(x, w):
        y = vt.conv(x, w, padding=1)
        g, = torch.autograd.grad(y.square().sum(), x, create_graph=True)
        return torch.autograd.grad(g.square().sum(), w)[0]

    exact = penalty(x, w)
    half = penalty(_as(x, torch.bfloat16), _as(w, torch.bfloat16))
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.double(), exact, rtol=0.05,
                               atol=0.05 * exact.abs().max().item())


def test_half_precision_mixed_with_other_dtypes(rng):
    """A half dtype with float32 (or the other half dtype) computes and answers in
    float32; every gradient has its own tensor's dtype."""
    x, w = t(rng, 1, 2, 5, 5), t(rng, 3, 2, 3, 3)
    xh, wf = _as(x, torch.bfloat16), _as(w, torch.float32)
    y = vt.conv(xh, wf, _as(t(rng, 3), torch.float16))
    assert y.dtype == torch.float32
    gx, gw = torch.autograd.grad(y.sum(), (xh, wf))
    assert gx.dtype == torch.bfloat16 and gw.dtype == torch.float32
    assert vt.conv(xh, _as(w, torch.float16)).dtype == torch.float32
    assert vt.conv(_as(x, torch.float16), _as(w, torch.float16)).dtype == torch.float16


def test_mixed_dtypes_follow_the_documented_rule(rng):
    """float32 with float64 computes in float64 and each gradient has its own tensor's
    dtype; a tensor that requires no grad gets none, at first and second order."""
    x = t(rng, 1, 2, 5, 5, dtype=torch.float32)
    w = t(rng, 3, 2, 3, 3)
    y = vt.conv(x, w)
    assert y.dtype == torch.float64
    y.sum().backward()
    assert x.grad.dtype == torch.float32 and w.grad.dtype == torch.float64
    x64, w_fixed = t(rng, 1, 2, 5, 5), t(rng, 3, 2, 3, 3, grad=False)
    y = vt.conv(x64, w_fixed)
    g, = torch.autograd.grad(y.square().sum(), x64, create_graph=True)
    g.square().sum().backward()
    assert w_fixed.grad is None and x64.grad is not None and x64.grad.abs().max() > 0
    assert not vt.conv(x64.detach(), w_fixed).requires_grad


def test_bad_tensors_are_named():
    with pytest.raises(ValueError, match="x must be on the CPU"):
        vt.conv(torch.zeros(1, 1, 3, 3, device="meta"), torch.zeros(1, 1, 2, 2))
    with pytest.raises(TypeError, match="w must be a torch.Tensor"):
        vt.conv_transpose(torch.zeros(1, 1, 3, 3), [[[[1.0]]]])
