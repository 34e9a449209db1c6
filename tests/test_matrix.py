"""The derivation's algebra, literally: vec/unvec and the patch matrix of eq. 12 and 13."""

import numpy as np
import pytest
import scipy.signal as ss

import vecconv as vc


def test_vec_is_column_major_and_unvec_inverts_it(rng):
    a = rng.standard_normal((3, 5))
    v = vc.vec(a)
    assert v.shape == (15,)
    # columns stacked: the first three entries are the first column
    np.testing.assert_array_equal(v[:3], a[:, 0])
    np.testing.assert_array_equal(v[3:6], a[:, 1])
    np.testing.assert_array_equal(vc.unvec(v, a.shape), a)
    np.testing.assert_array_equal(vc.vec(vc.unvec(v, (5, 3))), v)


def test_vec_returns_a_copy(rng):
    a = rng.standard_normal((2, 2))
    v = vc.vec(a)
    v[:] = 0
    assert np.all(a != 0)


def test_unvec_accepts_row_and_column_vectors():
    np.testing.assert_array_equal(vc.unvec(np.array([[1, 3, 2, 4]]), (2, 2)), [[1, 2], [3, 4]])
    np.testing.assert_array_equal(vc.unvec(np.array([[1], [3], [2], [4]]), (2, 2)), [[1, 2], [3, 4]])


@pytest.mark.parametrize("m,k", [((3, 3), (2, 2)), ((7, 5), (3, 2)), ((4, 9), (1, 4)), ((6, 6), (6, 6))])
def test_patch_matrix_gives_correlate2d(rng, m, k):
    x = rng.standard_normal(m)
    kern = rng.standard_normal(k)
    c = vc.patch_matrix(x, k)
    out_shape = (m[0] - k[0] + 1, m[1] - k[1] + 1)
    assert c.shape == (out_shape[0] * out_shape[1], k[0] * k[1])
    np.testing.assert_allclose(vc.unvec(c @ vc.vec(kern), out_shape),
                               ss.correlate2d(x, kern, "valid"), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("m,k", [((3, 3), (2, 2)), ((8, 6), (3, 4))])
def test_patch_matrix_kernel_gradient_eq12_eq13(rng, m, k):
    """dE/dk = unvec(vec(delta)^T C) (eq. 12) = x * delta (eq. 13, * a valid correlation)."""
    x = rng.standard_normal(m)
    kern = rng.standard_normal(k)
    out_shape = (m[0] - k[0] + 1, m[1] - k[1] + 1)
    delta = rng.standard_normal(out_shape)
    c = vc.patch_matrix(x, k)
    grad = vc.unvec(vc.vec(delta) @ c, k)
    np.testing.assert_allclose(grad, ss.correlate2d(x, delta, "valid"), rtol=1e-12, atol=1e-12)
    # and it is the derivative of E = <delta, z(k)>, checked element by element
    e = lambda kk: np.sum(delta * ss.correlate2d(x, kk, "valid"))
    for p in range(k[0]):
        for q in range(k[1]):
            bump = np.zeros(k)
            bump[p, q] = 1.0
            assert grad[p, q] == pytest.approx(e(kern + bump) - e(kern), rel=1e-9, abs=1e-9)


def test_patch_matrix_blocks_are_the_seeds_c_pq():
    """Figure 4 of the derivation: a 3x3 map, a 2x2 kernel, [c]_{1,1} the top-left 2x2 block."""
    x = np.arange(1.0, 10.0).reshape(3, 3)
    c = vc.patch_matrix(x, (2, 2))
    np.testing.assert_array_equal(vc.unvec(c[:, 0], (2, 2)), [[1, 2], [4, 5]])   # [c]_{1,1}
    np.testing.assert_array_equal(vc.unvec(c[:, 1], (2, 2)), [[4, 5], [7, 8]])   # [c]_{2,1}
    np.testing.assert_array_equal(vc.unvec(c[:, 2], (2, 2)), [[2, 3], [5, 6]])   # [c]_{1,2}


def test_patch_matrix_and_im2col_hold_the_same_entries(rng):
    x = rng.standard_normal((6, 7))
    c = vc.patch_matrix(x, (3, 2))
    cols = vc.im2col(x[None, None], (3, 2))
    # same patches; patch_matrix orders rows and columns column-major, im2col row-major
    ho, wo = 4, 6
    rows = np.arange(ho * wo).reshape(ho, wo).T.ravel()    # vec order of positions
    taps = np.arange(6).reshape(3, 2).T.ravel()            # vec order of taps
    np.testing.assert_array_equal(c, cols[rows][:, taps])
