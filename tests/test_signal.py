"""vecconv.signal against scipy.signal: shapes, dtypes, values, errors, and what it adds."""

import warnings

import numpy as np
import pytest
import scipy.signal as ss
from hypothesis import given, settings
from hypothesis import strategies as st

import vecconv
import vecconv.signal as vs

MODES = ["full", "same", "valid"]
REAL = ["float32", "float64"]
ALL = REAL + ["complex64", "complex128", "int16", "int64", "uint8"]


def tol(dtype):
    """(rtol, atol) for a result of this dtype, relative to the result's scale."""
    dt = np.dtype(dtype)
    if dt in (np.float32, np.complex64):
        return 2e-5, 2e-5
    if dt.kind in "biu":
        return 0, 0
    return 1e-12, 1e-12


def sample(rng, shape, dtype):
    dt = np.dtype(dtype)
    if dt.kind == "c":
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dt)
    if dt.kind == "u":
        return rng.integers(0, 20, shape).astype(dt)
    if dt.kind == "i":
        return rng.integers(-20, 20, shape).astype(dt)
    return rng.standard_normal(shape).astype(dt)


def check(ours, ref):
    assert ours.shape == ref.shape
    assert ours.dtype == ref.dtype
    rtol, atol = tol(ref.dtype)
    scale = max(float(np.abs(ref).max()) if ref.size else 0.0, 1.0)
    np.testing.assert_allclose(ours, ref, rtol=rtol, atol=atol * scale)


def scipy_or_error(f, *args, **kw):
    try:
        return f(*args, **kw), None
    except (ValueError, TypeError) as e:
        return None, type(e)


shapes_nd = st.integers(1, 3).flatmap(
    lambda nd: st.tuples(st.lists(st.integers(1, 9), min_size=nd, max_size=nd),
                         st.lists(st.integers(1, 9), min_size=nd, max_size=nd)))


@settings(max_examples=60, deadline=None)
@given(shapes=shapes_nd, dtype=st.sampled_from(ALL), mode=st.sampled_from(MODES),
       method=st.sampled_from(["direct", "fft", "oa", "auto"]),
       name=st.sampled_from(["correlate", "convolve"]), seed=st.integers(0, 2**16))
def test_nd_matches_scipy(shapes, dtype, mode, method, name, seed):
    rng = np.random.default_rng(seed)
    a, b = sample(rng, shapes[0], dtype), sample(rng, shapes[1], dtype)
    ref, err = scipy_or_error(getattr(ss, name), a, b, mode, method="direct")
    if err is not None:
        with pytest.raises(err):
            getattr(vs, name)(a, b, mode, method=method)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ours = getattr(vs, name)(a, b, mode, method=method)
    if method in ("fft", "oa") and ref.dtype.kind in "biu":
        np.testing.assert_array_equal(ours, ref)       # rounded back exactly
        assert ours.dtype == ref.dtype
    else:
        check(ours, ref)


@settings(max_examples=60, deadline=None)
@given(s1=st.tuples(st.integers(1, 8), st.integers(1, 8)),
       s2=st.tuples(st.integers(1, 12), st.integers(1, 12)),
       dtype=st.sampled_from(ALL), mode=st.sampled_from(MODES),
       boundary=st.sampled_from(["fill", "wrap", "symm", "pad", "circular", "symmetric"]),
       fillvalue=st.sampled_from([0, 2, -1.5]), name=st.sampled_from(["correlate2d",
                                                                      "convolve2d"]),
       seed=st.integers(0, 2**16))
def test_2d_matches_scipy(s1, s2, dtype, mode, boundary, fillvalue, name, seed):
    rng = np.random.default_rng(seed)
    a, b = sample(rng, s1, dtype), sample(rng, s2, dtype)
    ref, err = scipy_or_error(getattr(ss, name), a, b, mode, boundary, fillvalue)
    if err is not None:
        with pytest.raises(err):
            getattr(vs, name)(a, b, mode, boundary, fillvalue)
        return
    check(getattr(vs, name)(a, b, mode, boundary, fillvalue), ref)


@pytest.mark.parametrize("dtype", REAL)
@pytest.mark.parametrize("mode", MODES)
def test_float32_kept_on_every_route(dtype, mode):
    rng = np.random.default_rng(0)
    x, k = sample(rng, (40, 30), dtype), sample(rng, (5, 4), dtype)
    for f in (vs.correlate, vs.convolve):
        for method in ("direct", "fft", "oa", "auto"):
            assert f(x, k, mode, method=method).dtype == dtype
    for f in (vs.correlate2d, vs.convolve2d):
        assert f(x, k, mode).dtype == dtype
    assert vs.fftconvolve(x, k, mode).dtype == dtype
    assert vs.oaconvolve(x, k, mode).dtype == dtype


def test_complex_by_stacked_real_parts():
    rng = np.random.default_rng(1)
    for da, db in [("complex128", "complex128"), ("float64", "complex128"),
                   ("complex64", "float32"), ("complex64", "complex64")]:
        a, b = sample(rng, (7, 9), da), sample(rng, (3, 4), db)
        for mode in MODES:
            for name in ("correlate", "convolve"):
                check(getattr(vs, name)(a, b, mode, method="direct"),
                      getattr(ss, name)(a, b, mode, method="direct"))
            check(vs.correlate2d(a, b, mode, "symm"), ss.correlate2d(a, b, mode, "symm"))
            check(vs.convolve2d(a, b, mode, fillvalue=1 - 2j if "complex" in da + db
                                and np.result_type(a, b).kind == "c" else 0),
                  ss.convolve2d(a, b, mode, fillvalue=1 - 2j if np.result_type(
                      a, b).kind == "c" else 0))


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int32", "bool"])
def test_integers_stay_exact(dtype):
    a = np.array([100, 27, 3, 90, 1], dtype=dtype)
    b = np.array([3, 120, 7], dtype=dtype)
    for mode in MODES:
        ref = ss.convolve(a, b, mode, method="direct")
        ours = vs.convolve(a, b, mode, method="direct")
        assert ours.dtype == ref.dtype
        np.testing.assert_array_equal(ours, ref)           # int8 wraps as SciPy's does


def test_huge_integers_are_delegated_exactly():
    a = np.array([2**40 + 1, 3, 2**41], dtype=np.int64)
    b = np.array([2**20 + 7, 5], dtype=np.int64)
    np.testing.assert_array_equal(vs.convolve(a, b, method="direct"),
                                  ss.convolve(a, b, method="direct"))
    assert vs.choose_conv_method(a, b) == "direct"


def test_valid_when_in2_is_larger():
    rng = np.random.default_rng(2)
    a, b = sample(rng, (3, 4), "complex128"), sample(rng, (6, 9), "complex128")
    for name in ("correlate", "convolve", "correlate2d", "convolve2d"):
        check(getattr(vs, name)(a, b, "valid"), getattr(ss, name)(a, b, "valid"))
    with pytest.raises(ValueError, match="at least as large"):
        vs.convolve(np.ones((2, 5)), np.ones((3, 2)), "valid")


def test_more_than_three_axes_and_folded_batch():
    rng = np.random.default_rng(3)
    a, b = sample(rng, (3, 4, 5, 6), "float32"), sample(rng, (2, 1, 3, 2), "float32")
    check(vs.convolve(a, b, "same", method="direct"), ss.convolve(a, b, "same", "direct"))
    b4 = sample(rng, (2, 2, 3, 2), "float64")
    check(vs.correlate(a.astype(np.float64), b4, method="direct"),
          ss.correlate(a.astype(np.float64), b4, method="direct"))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("method", ["direct", "fft"])
def test_axes_keyword(mode, method):
    rng = np.random.default_rng(4)
    x = sample(rng, (5, 40, 3), "float64")
    k = sample(rng, (1, 7, 3), "float64")          # one kernel per channel (last axis)
    out = vs.correlate(x, k, mode, method=method, axes=1)
    for i in range(5):
        for c in range(3):
            np.testing.assert_allclose(out[i, :, c], ss.correlate(x[i, :, c], k[0, :, c], mode),
                                       rtol=1e-12, atol=1e-12)
    bank = sample(rng, (4, 1, 7, 1), "float64")
    x2 = x[None]
    out = vs.convolve(x2, bank, mode, method=method, axes=[2])
    assert out.shape[:2] == (4, 5) and out.shape[3] == 3
    np.testing.assert_allclose(out[2, 1, :, 0], ss.convolve(x[1, :, 0], bank[2, 0, :, 0], mode),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", ["float32", "float64", "complex128"])
@pytest.mark.parametrize("method", ["direct", "fft", "auto"])
def test_filter_bank(mode, dtype, method):
    rng = np.random.default_rng(5)
    img, bank = sample(rng, (20, 17), dtype), sample(rng, (6, 5, 3), dtype)
    out = vs.correlate_bank(img, bank, mode, method=method)
    assert out.dtype == dtype and out.shape[0] == 6
    for i in range(6):
        check(out[i], ss.correlate(img, bank[i], mode, method="direct"))
    out = vs.convolve_bank(img, bank, mode, method=method)
    for i in range(6):
        check(out[i], ss.convolve(img, bank[i], mode, method="direct"))
    with pytest.raises(ValueError, match="stack"):
        vs.correlate_bank(img, bank[0])


@pytest.mark.parametrize("n1,n2", [(100, 7), (7, 100), (1000, 3), (50, 50), (1, 9)])
@pytest.mark.parametrize("mode", MODES)
def test_correlation_lags(n1, n2, mode):
    np.testing.assert_array_equal(vs.correlation_lags(n1, n2, mode),
                                  ss.correlation_lags(n1, n2, mode))


def test_oaconvolve_axes_and_blocks():
    rng = np.random.default_rng(6)
    a, b = sample(rng, (3, 2000), "float64"), sample(rng, (3, 31), "float64")
    for mode in MODES:
        check(vs.oaconvolve(a, b, mode, axes=1), ss.oaconvolve(a, b, mode, axes=1))
    a, b = sample(rng, (300, 5), "complex128"), sample(rng, (9, 200), "complex128")
    check(vs.oaconvolve(a, b), ss.oaconvolve(a, b))


def test_errors_match_scipy():
    cases = [
        (vs.convolve, ([1, 2], [1]), dict(mode="spam")),
        (vs.convolve, ([1, 2], [1]), dict(method="bacon")),
        (vs.correlate, ([1], [[2]]), {}),
        (vs.fftconvolve, ([1], [2]), dict(axes=[0, 0])),
        (vs.fftconvolve, ([1], [2]), dict(axes=[1])),
        (vs.fftconvolve, ([1], [2]), dict(axes=[])),
        (vs.fftconvolve, ([1], [2]), dict(mode="chips")),
        (vs.convolve2d, ([[1]], [[1, 2]]), dict(fillvalue=[1, 2])),
        (vs.convolve2d, ([[1]], [[1, 2]]), dict(fillvalue=[])),
        (vs.convolve2d, ([[1]], [[1, 2]]), dict(fillvalue=1j)),
        (vs.convolve2d, ([[1]], [[1, 2]]), dict(boundary="reflect")),
        (vs.correlate2d, ([1], [2]), {}),
        (vs.correlation_lags, (3, 2), dict(mode="x")),
    ]
    for f, args, kw in cases:
        ref = getattr(ss, f.__name__)
        with pytest.raises(ValueError) as theirs:
            ref(*args, **kw)
        with pytest.raises(ValueError) as ours:
            f(*args, **kw)
        # the same sentence (SciPy's auto route appends ", not mode=..." to one of them)
        assert str(ours.value)[:40] == str(theirs.value)[:40], (f.__name__, kw)


def test_scalars_and_nan_warning():
    assert vs.convolve(3, 4) == 12
    assert vs.correlate(2j, 3j) == ss.correlate(2j, 3j)
    x = np.ones(100)
    x[0] = np.nan
    with pytest.warns(RuntimeWarning, match="fft convolution"):
        vs.convolve(x, np.ones(30), method="fft")


def test_choose_conv_method_answers_scipys_vocabulary():
    rng = np.random.default_rng(7)
    assert vs.choose_conv_method(np.ones(20), np.ones(3)) == "direct"
    assert vs.choose_conv_method(rng.random((500, 500)), rng.random((101, 101))) == "fft"
    assert vs.choose_conv_method(np.ones(5, bool), np.ones(3, bool)) == "direct"
    m, times = vs.choose_conv_method(np.ones(64), np.ones(5), measure=True)
    assert m in ("direct", "fft") and set(times) == {"direct", "fft"}


def test_direct_runs_on_the_engine(monkeypatch):
    calls = []
    real = vecconv.conv

    def spy(*args, **kw):
        calls.append(kw)
        return real(*args, **kw)

    monkeypatch.setattr(vecconv, "conv", spy)
    for shape in [(50,), (20, 20), (6, 7, 8)]:
        x = np.ones(shape, np.float32)
        vs.convolve(x, np.ones((3,) * len(shape), np.float32), "same", method="direct")
    vs.convolve2d(np.ones((9, 9)), np.ones((3, 3)), boundary="wrap")
    vs.correlate(np.ones(9, complex), np.ones(3, complex), method="direct")
    assert len(calls) == 5


def test_lazy_import():
    import subprocess
    import sys
    code = ("import sys, vecconv; assert 'vecconv.signal' not in sys.modules; "
            "assert 'scipy.signal' not in sys.modules; vecconv.signal.convolve([1.0], [2.0]); "
            "assert 'scipy.signal' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_docstring_examples_run():
    import doctest
    result = doctest.testmod(vs, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 20 and result.failed == 0


@pytest.mark.parametrize("dtype", ALL + ["int8", "bool"])
def test_numpy_route_for_small_1d(dtype):
    """method='auto' takes NumPy's direct product (SciPy's own 1-D direct method) where it
    is predicted fastest: SciPy's values and dtype (float32 kept, integers exact and
    wrapping as SciPy's do), in1 shorter than in2 included."""
    rng = np.random.default_rng(3)
    dt = np.dtype(dtype)
    mk = (lambda n: rng.integers(0, 2, n).astype(bool)) if dt.kind == "b" else \
        (lambda n: sample(rng, n, dt) * (40 if dt == np.int8 else 1))
    for n1, n2 in [(200, 3), (200, 15), (5, 9), (1, 1)]:
        a, b = mk(n1), mk(n2)
        for mode in MODES:
            for name in ("correlate", "convolve"):
                ref, err = scipy_or_error(getattr(ss, name), a, b, mode, method="direct")
                if err is not None:     # bool 'same' of a shorter in1: SciPy's ND routine
                    continue
                ours = getattr(vs, name)(a, b, mode)
                assert ours.dtype == ref.dtype
                check(ours, ref)
    a, b = mk(1000), mk(3)
    assert vs._choose_route(a, b, "same", vs._numpy_ok(a, b, "same")) == "numpy"
    assert vs.choose_conv_method(a, b, "same") == "direct"


def test_numpy_route_only_where_numpy_means_scipy():
    """'same' with in1 shorter than in2 centres differently in NumPy: not that route;
    2-D inputs and axes= never take it; float16 keeps the engine."""
    a, b = np.ones(5), np.ones(9)
    assert not vs._numpy_ok(a, b, "same") and vs._numpy_ok(a, b, "full")
    assert not vs._numpy_ok(np.ones((4, 4)), np.ones((2, 2)), "full")
    assert not vs._numpy_ok(np.ones(9, np.float16), np.ones(3, np.float16), "full")
    check(vs.convolve(a, b, "same"), ss.convolve(a, b, "same", method="direct"))


def test_route_kept_per_shape_but_integer_rule_per_call():
    """A decision kept for a shape and dtype is used again; SciPy's integer rule (no FFT
    when a product could pass 2**52) still looks at each call's values."""
    n, k = 20000, 4000
    small = np.ones(n, np.int64), np.ones(k, np.int64)
    route = vs._choose_route(*small, "full", True)
    assert route in ("fft", "oa")
    big = np.full(n, 2**40, np.int64), np.full(k, 2**20, np.int64)
    assert vs._choose_route(*big, "full", True) == "numpy"
    np.testing.assert_array_equal(vs.convolve(*big), np.convolve(*big))
