"""The engine's BLAS call (row-major GEMM through scipy.linalg.cython_blas) against NumPy."""

import numpy as np
import pytest

from vecconv import _engine
from reference import assert_close


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
def test_gemm_into_all_transposes(rng, dtype, ta, tb):
    m, n, k = 5, 7, 3
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(dtype)
    c = np.empty((m, n), dtype)
    _engine.gemm_into(a, b, c, ta, tb)
    expect = (a.T if ta else a).astype(np.float64) @ (b.T if tb else b)
    # tighter than the table: relative alone, and float64 to 1e-13
    assert_close(c, expect, dtype, rtol={np.float32: 1e-5, np.float64: 1e-13}, atol=0)


def test_gemm_into_strided_batch_over_column_blocks(rng):
    """count GEMMs walking through column blocks, as the engine does per image."""
    w = rng.standard_normal((4, 6))
    cols = rng.standard_normal((6, 5 * 3))
    y = np.empty((4, 15))
    _engine.gemm_into(w, cols[:, :3], y[:, :3], count=5, b_step=3, c_step=3)
    np.testing.assert_allclose(y, w @ cols, rtol=1e-13)
    dy = rng.standard_normal((4, 15))
    dw = np.zeros((4, 6))
    _engine.gemm_into(dy[:, :3], cols[:, :3], dw, False, True, count=5, a_step=3, b_step=3, beta=1.0)
    np.testing.assert_allclose(dw, dy @ cols.T, rtol=1e-13)


def test_gemm_into_refuses_non_contiguous_rows(rng):
    a = rng.standard_normal((4, 8))[:, ::2]
    with pytest.raises(ValueError, match="contiguous"):
        _engine.gemm_into(a, np.ones((4, 2)), np.empty((4, 2)))


def test_gemm_into_spread_over_threads_is_the_serial_result(rng):
    w = rng.standard_normal((4, 6))
    cols = rng.standard_normal((6, 7 * 9))
    y1 = np.empty((4, 7 * 9))
    y2 = np.empty((4, 7 * 9))
    _engine.gemm_into(w, cols[:, :9], y1[:, :9], count=7, b_step=9, c_step=9)
    _engine.gemm_into(w, cols[:, :9], y2[:, :9], count=7, b_step=9, c_step=9, threads=3)
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_allclose(y1, w @ cols, rtol=1e-12)
