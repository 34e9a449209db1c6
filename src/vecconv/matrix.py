"""The derivation's matrix algebra, literally: vec, unvec and the patch matrix of eq. 12,
and the down- and up-sampling of eq. 2 and 6.

This is the teaching form — small, pure NumPy, one map and one kernel at a time — so that
the algebra of the derivation can be checked line by line. The fast batched form of the
same matrix is ``vecconv.im2col`` (whose columns are ordered row-major per kernel, as the
GEMMs want, where ``patch_matrix`` follows vec's column-major order).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._validate import check_fits, as_array, check_ndim, int_tuple, integer
from ._typing import ArrayInput, Shape

__all__ = ["vec", "unvec", "patch_matrix", "down", "up"]


def vec(a: ArrayInput) -> NDArray[Any]:
    """Stack the columns of a matrix into one vector (Magnus & Neudecker's vec).

    The vec of the derivation's eq. 12: vec(delta) is the error map unfolded column by
    column, vec([c]_{p,q}) a block of the input.

    Parameters
    ----------
    a : array_like
        A matrix (or any array of at least one dimension; its entries are taken in
        column-major, Fortran, order).

    Returns
    -------
    v : ndarray, shape (a.size,)
        A new one-dimensional array: the first column of ``a``, then the second, and so on.

    See Also
    --------
    unvec : the inverse.

    Examples
    --------
    >>> vec([[1, 2], [3, 4]])
    array([1, 3, 2, 4])
    """
    a = as_array("a", a)
    if a.ndim < 1:
        raise ValueError(f"a must have at least one dimension, got shape {a.shape}")
    return a.ravel(order="F").copy()


def unvec(v: ArrayInput, shape: Shape) -> NDArray[Any]:
    """The inverse of ``vec``: refill a matrix of ``shape`` column by column.

    The unvec_{K1,K2} of the derivation's eq. 12, which turns the row vector
    vec(delta)^T [c] back into the K1 x K2 kernel gradient.

    Parameters
    ----------
    v : array_like
        A vector: one-dimensional, or a single row or column.
    shape : tuple of int
        The shape of the result; its entries must multiply to ``v.size``.

    Returns
    -------
    a : ndarray, shape ``shape``
        A new array whose column-major (Fortran-order) entries are those of ``v``.

    See Also
    --------
    vec : the inverse.

    Examples
    --------
    >>> unvec([1, 3, 2, 4], (2, 2))
    array([[1, 2],
           [3, 4]])
    """
    v = as_array("v", v)
    if v.ndim != 1 and not (v.ndim == 2 and 1 in v.shape):
        raise ValueError(f"v must be a vector (1-D, or a single row or column), got shape "
                         f"{v.shape}")
    if not isinstance(shape, (tuple, list)) or len(shape) < 1:
        raise TypeError(f"shape must be a tuple of ints, got {shape!r}")
    shape = tuple(integer("shape", s, 0) for s in shape)
    if math.prod(shape) != v.size:
        raise ValueError(f"shape {shape} holds {math.prod(shape)} elements but v has {v.size}")
    return v.reshape(-1).reshape(shape, order="F").copy()


def patch_matrix(x: ArrayInput, kernel_shape: Shape) -> NDArray[Any]:
    """The matrix of eq. 12:
    [vec([c]_{1,1}) ... vec([c]_{K1,1}) vec([c]_{1,2}) ... vec([c]_{K1,K2})].

    [c]_{p,q} is the (M1-K1+1) x (M2-K2+1) block of ``x`` that meets kernel element (p, q)
    in a valid correlation. With C = patch_matrix(x, k.shape)::

        unvec(C @ vec(k), out_shape)     == scipy.signal.correlate2d(x, k, 'valid')
        unvec(vec(delta) @ C, k.shape)   == dE/dk for dE/dz = delta        (eq. 12, 13)

    Parameters
    ----------
    x : array_like, shape (M1, M2)
        One input map.
    kernel_shape : int or (K1, K2)
        The kernel's shape; an int means a square K x K kernel. At most the shape of ``x``.

    Returns
    -------
    C : ndarray, shape ((M1-K1+1)*(M2-K2+1), K1*K2)
        A new C-ordered array. Column p + q*K1 (0-based) is vec([c]_{p,q}); row r is the
        output position r of vec's column-major order.

    See Also
    --------
    im2col : the same matrix for a batch of many maps, rows and columns in row-major order.
    """
    x = as_array("x", x)
    check_ndim("x", x.shape, 2, "(M1, M2)")
    k1, k2 = int_tuple("kernel_shape", kernel_shape, 2, 1)
    m1, m2 = x.shape
    if k1 > m1 or k2 > m2:
        raise ValueError(f"kernel_shape {(k1, k2)} is larger than x {x.shape}")
    ho, wo = m1 - k1 + 1, m2 - k2 + 1
    check_fits(ho * wo * k1 * k2 * max(x.dtype.itemsize, 1) * 2, "the patch matrix")
    blocks = np.lib.stride_tricks.sliding_window_view(x, (ho, wo))   # blocks[p, q] = [c]_{p,q}
    # column p + q*K1 is vec([c]_{p,q}); vec is column-major, hence the transposes. Always
    # a new, writable array (a view of x for some shapes otherwise).
    return np.array(blocks.transpose(1, 0, 3, 2).reshape(k1 * k2, ho * wo).T, order="C")


def down(x: ArrayInput, n: int) -> NDArray[Any]:
    """Eq. 2's down(): the sum of every non-overlapping n x n area of the last two axes.

    LeCun's subsampling layer (``vecconv.nn.Subsampling``) computes
    beta * down(x) + b from it.

    Parameters
    ----------
    x : array_like, shape (..., H, W)
        The maps (a batch (N, C, H, W) is summed map by map). A remainder of H or W that
        does not fill an area is left out, as pooling leaves it.
    n : int
        The side of the areas summed.

    Returns
    -------
    ndarray, shape (..., H // n, W // n)
        A new array of the window sums, in x's dtype (``vecconv.avg_pool`` with
        ``divisor_override=1`` for non-overlapping windows).

    See Also
    --------
    up : its adjoint, eq. 6.

    Examples
    --------
    >>> down(np.arange(16).reshape(4, 4), 2)
    array([[10, 18],
           [42, 50]])
    """
    x = as_array("x", x)
    n = integer("n", n, 1)
    if x.ndim < 2:
        raise ValueError(f"x must have at least two axes (H, W), got shape {x.shape}")
    h, w = x.shape[-2] // n, x.shape[-1] // n
    areas = x[..., :h * n, :w * n].reshape(x.shape[:-2] + (h, n, w, n))
    return areas.sum(axis=(-3, -1))


def up(d: ArrayInput, n: int) -> NDArray[Any]:
    """Eq. 6's up(): d (x) 1_{n x n}, the Kronecker product, every entry copied into an
    n x n block of the last two axes.

    It is the adjoint of ``down``: the error of LeCun's subsampling layer for the
    previous layer is beta times up(delta) (eq. 4-6).

    Parameters
    ----------
    d : array_like, shape (..., H, W)
        The error maps; the last two axes are up-sampled (a batch (N, C, H, W) map by map).
    n : int
        The side of the blocks.

    Returns
    -------
    ndarray, shape (..., n H, n W)
        ``numpy.kron(d, numpy.ones((n, n)))``, in d's dtype.

    See Also
    --------
    down : its adjoint, eq. 2.

    Examples
    --------
    >>> up(np.array([[1, 2]]), 2)
    array([[1, 1, 2, 2],
           [1, 1, 2, 2]])
    """
    d = as_array("d", d)
    n = integer("n", n, 1)
    if d.ndim < 2:
        raise ValueError(f"d must have at least two axes (H, W), got shape {d.shape}")
    return np.kron(d, np.ones((n, n), dtype=d.dtype))
