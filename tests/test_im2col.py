"""im2col / col2im: layout, the adjoint identity, and agreement with the definition."""

import numpy as np
import pytest

import vecconv as vc
from reference import assert_close


def im2col_definition(x, kh, kw, sh, sw, ph, pw, dh, dw):
    """The contract of the issue, written out: row (n*Ho + i)*Wo + j, column (c*kh + p)*kw + q."""
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    out = np.empty((n * ho * wo, c * kh * kw), dtype=x.dtype)
    for m in range(n):
        for i in range(ho):
            for j in range(wo):
                for ch in range(c):
                    for p in range(kh):
                        for q in range(kw):
                            out[(m * ho + i) * wo + j, (ch * kh + p) * kw + q] = \
                                xp[m, ch, i * sh + p * dh, j * sw + q * dw]
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k,s,p,d", [((3, 3), 1, 0, 1), ((2, 4), (2, 1), (1, 2), 1),
                                     ((3, 2), 3, 2, (2, 1)), ((1, 1), 1, 0, 1), ((5, 1), 2, 0, 1)])
def test_im2col_matches_definition(rng, dtype, k, s, p, d):
    x = rng.standard_normal((2, 3, 9, 8)).astype(dtype)
    sh, sw = (s, s) if isinstance(s, int) else s
    ph, pw = (p, p) if isinstance(p, int) else p
    dh, dw = (d, d) if isinstance(d, int) else d
    cols = vc.im2col(x, k, stride=s, padding=p, dilation=d)
    assert cols.dtype == dtype
    np.testing.assert_array_equal(cols, im2col_definition(x, *k, sh, sw, ph, pw, dh, dw))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k,s,p,d", [((3, 3), 1, 0, 1), ((2, 4), (2, 1), (1, 2), 1),
                                     ((3, 2), 3, ((2, 2), (0, 1)), (2, 1)), ((4, 4), 2, "full", 1), ((1, 1), 1, 0, 1)])
def test_col2im_is_the_adjoint_of_im2col(rng, dtype, k, s, p, d):
    """<im2col(x), Y> = <x, col2im(Y)> for random x, Y."""
    x = rng.standard_normal((3, 2, 10, 7)).astype(dtype)
    cols = vc.im2col(x, k, stride=s, padding=p, dilation=d)
    y = rng.standard_normal(cols.shape).astype(dtype)
    back = vc.col2im(y, x.shape, k, stride=s, padding=p, dilation=d)
    assert back.shape == x.shape and back.dtype == dtype
    lhs = np.vdot(cols.astype(np.float64), y.astype(np.float64))
    rhs = np.vdot(x.astype(np.float64), back.astype(np.float64))
    assert_close(lhs, rhs, dtype, rtol={np.float32: 1e-4, np.float64: 1e-12}, atol=0)


def test_col2im_counts_overlaps():
    """col2im of all-ones columns counts how many patches cover each pixel."""
    x_shape = (1, 1, 4, 4)
    cols = np.ones((9, 4))
    counts = vc.col2im(cols, x_shape, 2)
    np.testing.assert_array_equal(counts[0, 0], [[1, 2, 2, 1], [2, 4, 4, 2], [2, 4, 4, 2], [1, 2, 2, 1]])


def test_im2col_then_gemm_is_conv2d(rng):
    x = rng.standard_normal((2, 3, 7, 6))
    w = rng.standard_normal((5, 3, 3, 2))
    cols = vc.im2col(x, (3, 2), padding=1)
    y = (cols @ w.reshape(5, -1).T).reshape(2, 7, 7, 5).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(y, vc.conv2d(x, w, padding=1), rtol=1e-12, atol=1e-12)


def test_non_square_kernels_index_correctly(rng):
    """The cs231n bug (ii*fh where ii*fw belongs) shows only with kh != kw."""
    x = rng.standard_normal((1, 2, 6, 9))
    for k in [(1, 4), (4, 1), (2, 5), (5, 2)]:
        np.testing.assert_array_equal(vc.im2col(x, k), im2col_definition(x, *k, 1, 1, 0, 0, 1, 1))


@pytest.mark.parametrize("d", [1, 3])
@pytest.mark.parametrize("mode", ["zeros", "reflect", "circular"])
def test_nd_im2col_matches_torch_style_unfold_and_col2im_is_its_adjoint(rng, d, mode):
    """im2col for 1 and 3 spatial axes: column (c, taps in C order), row (n, positions in
    C order), checked entry by entry against the padded input; col2im its adjoint."""
    x = rng.standard_normal((2, 3) + (5, 4, 6)[:d])
    k = (2, 3, 2)[:d]
    pads = ((1, 1), (2, 1), (1, 0))[:d]
    cols = vc.im2col(x, k, padding=pads, stride=(1, 2, 1)[:d], padding_mode=mode)
    xp = np.pad(x, ((0, 0), (0, 0)) + pads, mode={"zeros": "constant", "circular": "wrap"}.get(mode, mode))
    out = [(xp.shape[2 + a] - k[a]) // (1, 2, 1)[a] + 1 for a in range(d)]
    assert cols.shape == (2 * int(np.prod(out)), 3 * int(np.prod(k)))
    row = 0
    for n in range(2):
        for pos in np.ndindex(*out):
            col = 0
            for c in range(3):
                for tap in np.ndindex(*k):
                    idx = tuple(p * s + t for p, s, t in zip(pos, (1, 2, 1)[:d], tap))
                    assert cols[row, col] == xp[(n, c) + idx]
                    col += 1
            row += 1
    r = rng.standard_normal(cols.shape)
    back = vc.col2im(r, x.shape, k, padding=pads, stride=(1, 2, 1)[:d], padding_mode=mode)
    np.testing.assert_allclose(np.vdot(cols, r), np.vdot(x, back), rtol=1e-12)
