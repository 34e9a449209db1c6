"""The independent reference the tests compare with: scipy.signal, looped.

The reference never calls vecconv. String padding modes are handed to scipy as they are
(so the tests check vecconv's reading of 'same' against scipy's own), integer padding by
np.pad, dilation by a kernel with zeros inserted, stride by subsampling the stride-1
result, groups and connection tables by which (i, j) pairs are summed.
"""

import numpy as np
import scipy.signal as ss

# How far a result may be from another computation of it, per dtype: dict(rtol=, atol=).
# "independent": an independent computation that adds the same terms in another order
# (scipy.signal or numpy loops in float64, PyTorch, vecconv.dask against the in-memory
# functions). "regrouped": vecconv against itself by another route (a padded copy,
# another thread count or workspace), the same products in other groups.
TOL = {
    "independent": {np.float32: dict(rtol=2e-4, atol=2e-4),
                    np.float64: dict(rtol=1e-10, atol=1e-10)},
    "regrouped": {np.float32: dict(rtol=1e-5, atol=1e-5),
                  np.float64: dict(rtol=1e-12, atol=1e-12)},
}


def tol(dtype, against="independent"):
    """The table's dict(rtol=, atol=) for results of ``dtype``."""
    try:
        return TOL[against][np.dtype(dtype).type]
    except KeyError:
        raise TypeError(f"no tolerance for {against!r} results of dtype {dtype}") from None


def _given(value, dtype, default):
    """A tolerance given by a test: None (the table's), a number, or a number per dtype
    (the table's for a dtype not named)."""
    if isinstance(value, dict):
        value = value.get(dtype)
    return default if value is None else value


def assert_close(actual, desired, dtype=None, *, scale=1.0, against="independent",
                 rtol=None, atol=None, err_msg=""):
    """numpy.testing.assert_allclose with the table's tolerance for ``dtype`` (by default
    ``actual``'s): |actual - desired| <= atol * max(1, scale) + rtol * |desired|.

    ``scale`` is the size of the values the absolute tolerance is measured in (say the
    largest |desired|, or a bound on a sum's terms). ``rtol``/``atol`` given here replace
    the table's, for a test that holds its results to a tighter tolerance: a number, or
    {dtype: number}.
    """
    dtype = np.dtype(np.asarray(actual).dtype if dtype is None else dtype).type
    t = tol(dtype, against)
    np.testing.assert_allclose(actual, desired, rtol=_given(rtol, dtype, t["rtol"]),
                               atol=_given(atol, dtype, t["atol"]) * max(1.0, scale),
                               err_msg=err_msg)


def peak(a):
    """The largest |entry| of a (0 for an empty array): a ``scale`` for assert_close."""
    return float(np.abs(np.asarray(a)).max(initial=0))


def same_pairs(kernel, dilation, flip):
    """The (before, after) pairs that padding='same' means at stride 1, per axis, as
    scipy.signal centres the window: correlate2d (k-1)//2 before, convolve2d and the 1-D
    and N-d functions k//2 before. A strided call must give these itself (vecconv refuses
    'same' with a stride, as PyTorch does)."""
    ext = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
    before = [e // 2 if (flip or len(ext) != 2) else (e - 1) // 2 for e in ext]
    return tuple((b, e - 1 - b) for b, e in zip(before, ext))


def padding_pairs(padding, kernel, dilation, flip):
    """The (before, after) pairs per axis of any padding conv takes: 'valid', 'same' (as
    same_pairs), 'full', one int, an int per axis or a pair per axis."""
    if padding == "same":
        return same_pairs(kernel, dilation, flip)
    if isinstance(padding, str):
        ext = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
        return tuple({"valid": (0, 0), "full": (e - 1, e - 1)}[padding] for e in ext)
    if isinstance(padding, int):
        return ((padding, padding),) * len(kernel)
    return tuple(tuple(p) if isinstance(p, (tuple, list)) else (p, p) for p in padding)


def dilate_kernel(k, dh, dw):
    kh, kw = k.shape
    out = np.zeros((dh * (kh - 1) + 1, dw * (kw - 1) + 1), dtype=k.dtype)
    out[::dh, ::dw] = k
    return out


def pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def ref_conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1, connections=None,
               flip=False):
    """The derivation's eq. 1 by scipy.signal.correlate2d/convolve2d, one map pair at a time."""
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    n, c = x.shape[:2]
    cout, cig = w.shape[:2]
    sh, sw = pair(stride)
    dh, dw = pair(dilation)
    f = ss.convolve2d if flip else ss.correlate2d
    if isinstance(padding, str):
        mode, xp = padding, x
    else:
        if isinstance(padding, (tuple, list)) and isinstance(padding[0], (tuple, list)):
            (pt, pb), (pl, pr) = padding
        else:
            ph, pw = pair(padding)
            pt, pb, pl, pr = ph, ph, pw, pw
        mode = "valid"
        xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    out = _sum_pairs(xp, w, groups, connections,
                     lambda xm, k: f(xm, dilate_kernel(k, dh, dw), mode)[::sh, ::sw])
    if out is None:   # nothing connected at all
        raise AssertionError("reference needs at least one connection")
    if b is not None:
        out += np.asarray(b, dtype=np.float64)[None, :, None, None]
    return out


def _sum_pairs(xp, w, groups, connections, one):
    """out[m, j] = sum over the input maps i that feed map j of one(xp[m, i], w[j, i'])."""
    n = xp.shape[0]
    cout, cig = w.shape[:2]
    cog = cout // groups
    out = None
    for j in range(cout):
        g = j // cog
        for ii in range(cig):
            i = g * cig + ii
            if connections is not None and not connections[i, j]:
                continue
            for m in range(n):
                r = one(xp[m, i], w[j, ii])
                if out is None:
                    out = np.zeros((n, cout) + r.shape)
                out[m, j] += r
    return out


def ref_conv1d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1, flip=False):
    """The one-dimensional derivation's x_i = sum_a w_a y_{a+i} by scipy.signal.correlate/convolve."""
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    n, c, _ = x.shape
    cout, cig, _ = w.shape
    f = ss.convolve if flip else ss.correlate
    if isinstance(padding, str):
        mode, xp = padding, x
    else:
        mode, xp = "valid", np.pad(x, ((0, 0), (0, 0), (padding, padding)))
    cog = cout // groups
    rows = []
    for m in range(n):
        row = []
        for j in range(cout):
            g = j // cog
            acc = 0
            for ii in range(cig):
                k = np.zeros(dilation * (w.shape[2] - 1) + 1)
                k[::dilation] = w[j, ii]
                acc = acc + f(xp[m, g * cig + ii], k, mode, method="direct")[::stride]
            row.append(acc + (0 if b is None else b[j]))
        rows.append(row)
    return np.array(rows)


def numeric_grad(f, a, eps=1e-6):
    """Central differences of the scalar f with respect to every element of a (float64)."""
    a = np.array(a, dtype=np.float64)
    g = np.zeros_like(a)
    it = np.nditer(a, flags=["multi_index"])
    for _ in it:
        idx = it.multi_index
        old = a[idx]
        a[idx] = old + eps
        fp = f(a)
        a[idx] = old - eps
        fm = f(a)
        a[idx] = old
        g[idx] = (fp - fm) / (2 * eps)
    return g


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.abs(a - b).max() / max(np.abs(b).max(), 1e-300)


# LeCun et al. 1998, Table I: the input maps of S2 read by each of C3's 16 maps.
LENET_C3_INPUTS = [
    (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (4, 5, 0), (5, 0, 1),
    (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (3, 4, 5, 0), (4, 5, 0, 1), (5, 0, 1, 2),
    (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
]


def _dilate(k, dilation):
    out = np.zeros(tuple(d * (s - 1) + 1 for d, s in zip(dilation, k.shape)), k.dtype)
    out[tuple(slice(None, None, d) for d in dilation)] = k
    return out


def ref_conv3d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1, connections=None,
               flip=False):
    """Eq. 1 by scipy.signal.correlate/convolve (N-d), one map pair at a time. String
    padding is scipy's own mode; ints and pairs by np.pad; dilation by a kernel with zeros
    inserted; stride by subsampling."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    n, c = x.shape[:2]
    cout, cig = w.shape[:2]
    stride = (stride,) * 3 if isinstance(stride, int) else tuple(stride)
    dilation = (dilation,) * 3 if isinstance(dilation, int) else tuple(dilation)
    f = ss.convolve if flip else ss.correlate
    if isinstance(padding, str):
        mode, xp = padding, x
    else:
        if isinstance(padding, int):
            pads = ((padding, padding),) * 3
        elif isinstance(padding[0], (tuple, list)):
            pads = tuple(tuple(p) for p in padding)
        else:
            pads = tuple((p, p) for p in padding)
        mode, xp = "valid", np.pad(x, ((0, 0), (0, 0)) + pads)
    out = _sum_pairs(xp, w, groups, connections,
                     lambda xm, k: f(xm, _dilate(k, dilation), mode, method="direct")[
                         ::stride[0], ::stride[1], ::stride[2]])
    if out is not None and b is not None:
        out += np.asarray(b)[None, :, None, None, None]
    return out
