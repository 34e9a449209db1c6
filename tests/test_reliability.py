"""Threads, interrupts, non-finite values, leaks, and sizes past 2**31."""

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import vecconv as vc
from reference import assert_close


def _work(seed, dtype):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((4, 6, 23, 19)).astype(dtype)
    w = rng.standard_normal((8, 6, 3, 5)).astype(dtype)
    b = rng.standard_normal(8).astype(dtype)
    opts = dict(padding=((1, 1), (2, 2)), stride=(1, 2), workspace=4000 + 100 * seed)  # many tiles
    y = vc.conv2d(x, w, b, **opts)
    return (y,) + vc.conv2d_backward(np.cos(y), x, w, **opts)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_eight_threads_give_the_serial_results(dtype):
    """The GIL is released, so 8 threads really share the engine at once."""
    seeds = list(range(16))
    serial = [_work(s, dtype) for s in seeds]
    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(3):
            concurrent = list(pool.map(lambda s: _work(s, dtype), seeds))
            for got, ref in zip(concurrent, serial):
                for a, b in zip(got, ref):
                    assert_close(a, b, dtype, against="regrouped")


def test_threads_with_single_threaded_blas_are_bit_identical():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with threadpoolctl.threadpool_limits(1, user_api="blas"):
        serial = [_work(s, np.float64) for s in range(8)]
        with ThreadPoolExecutor(max_workers=8) as pool:
            concurrent = list(pool.map(lambda s: _work(s, np.float64), range(8)))
    for got, ref in zip(concurrent, serial):
        for a, b in zip(got, ref):
            np.testing.assert_array_equal(a, b)


def test_ctrl_c_interrupts_a_long_call_and_the_next_call_works():
    """SIGINT during a call of many tiles raises KeyboardInterrupt out of the engine's
    loop; no crash, nothing stuck, and the next call works."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are delivered to the main thread only")
    x = np.ones((2000, 3, 64, 64), dtype=np.float32)      # seconds of work at workspace=1
    w = np.ones((8, 3, 3, 3), dtype=np.float32)
    fired, sent = [], []

    def one_shot(signum, frame):       # raise once; a late duplicate signal is ignored
        if not fired:
            fired.append(True)
            raise KeyboardInterrupt
    done = threading.Event()

    def sender():                      # keep asking until the call has stopped
        time.sleep(0.3)
        for _ in range(50):
            if done.is_set():
                return
            sent.append(time.perf_counter())
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
            time.sleep(0.2)
    old = signal.signal(signal.SIGINT, one_shot)
    t = threading.Thread(target=sender)
    try:
        t.start()
        with pytest.raises(KeyboardInterrupt) as info:
            vc.conv2d(x, w, workspace=1)
        stopped = time.perf_counter()
    finally:
        done.set()
        t.join()
        signal.signal(signal.SIGINT, old)
    # raised from inside the call (the engine's tile loop), not around it
    assert any("vecconv" in str(entry.path) for entry in info.traceback), info.traceback
    print(f"stopped {stopped - sent[0]:.3f} s after the first SIGINT ({len(sent)} sent)")
    y = vc.conv2d(x[:2], w)
    np.testing.assert_allclose(y, 27.0)


def test_nan_and_inf_propagate_only_where_they_touch(rng):
    x = rng.standard_normal((3, 2, 12, 12))
    w = rng.standard_normal((4, 2, 3, 3))
    clean = vc.conv2d(x, w, padding=1)
    xn = x.copy()
    xn[1, 0, 5, 7] = np.nan
    y = vc.conv2d(xn, w, padding=1)
    touched = np.zeros(y.shape, dtype=bool)
    touched[1, :, 4:7, 6:9] = True                     # the 3x3 outputs whose window holds it
    assert np.isnan(y[touched]).all()
    np.testing.assert_array_equal(y[~touched], clean[~touched])
    # an inf in one kernel poisons that output map only
    wi = w.copy()
    wi[2, 1, 0, 0] = np.inf
    y = vc.conv2d(x, wi, padding=1)
    assert not np.isfinite(y[:, 2, 1:, 1:]).any()
    np.testing.assert_array_equal(np.delete(y, 2, axis=1), np.delete(clean, 2, axis=1))
    # backward: a NaN in dy reaches dx only through the kernel's footprint
    dy = rng.standard_normal(clean.shape)
    dy[0, 3, 6, 6] = np.nan
    dx, dw, db = vc.conv2d_backward(dy, x, w, padding=1)
    assert np.isnan(dx[0, :, 5:8, 5:8]).all()
    assert np.isfinite(dx[1:]).all() and np.isfinite(np.delete(dx[0], np.s_[5:8], axis=1)).all()
    assert np.isnan(dw[3]).all() and np.isfinite(dw[:3]).all()
    assert np.isnan(db[3]) and np.isfinite(db[:3]).all()


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
def test_no_leaks_over_ten_thousand_calls(rng):
    x = rng.standard_normal((2, 3, 12, 12)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    for _ in range(300):
        y = vc.conv2d(x, w, b, padding=1)
        vc.conv2d_backward(y, x, w, padding=1)
    before = _rss_bytes()
    for i in range(10_000):
        y = vc.conv2d(x, w, b, padding=1, workspace=2000 if i % 2 else None)
        vc.conv2d_backward(y, x, w, padding=1)
    growth = _rss_bytes() - before
    print(f"RSS growth over 10,000 conv2d + conv2d_backward calls: {growth / 2**20:.2f} MiB")
    assert growth < 10 * 2**20


def _sampled_reference(x, k, rows, cols):
    kh, kw = k.shape
    return np.array([np.sum(x[r:r + kh, c:c + kw].astype(np.float64) * k) for r, c in zip(rows, cols)])


@pytest.mark.slow
def test_column_matrix_past_two_to_the_31():
    """(1, 1, 4100, 4100) with a 23x23 kernel: 8.8e9 column entries, far past 2**31, in a
    64 MiB workspace; checked against the definition at sampled output positions."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 1, 4100, 4100)).astype(np.float32)
    k = rng.standard_normal((23, 23)).astype(np.float32)
    ho = 4100 - 22
    assert ho * ho * 23 * 23 > 2**33
    y = vc.conv2d(x, k[None, None])
    assert y.shape == (1, 1, ho, ho)
    rows = np.concatenate([rng.integers(0, ho, 200), [0, ho - 1, ho - 1, 0]])
    cols = np.concatenate([rng.integers(0, ho, 200), [0, ho - 1, 0, ho - 1]])
    np.testing.assert_allclose(y[0, 0, rows, cols], _sampled_reference(x[0, 0], k, rows, cols),
                               rtol=1e-4, atol=1e-3)
    import scipy.signal as ss
    # and a full band of rows against scipy.signal
    band = ss.correlate2d(x[0, 0, 2000:2030].astype(np.float64), k.astype(np.float64), "valid")
    np.testing.assert_allclose(y[0, 0, 2000:2008], band, rtol=1e-4, atol=1e-3)
    dx, dw, db = vc.conv2d_backward(np.ones_like(y), x, k[None, None])
    # with dy = 1, dw[p, q] is the sum of the input block that tap (p, q) reads
    for p, q in [(0, 0), (22, 22), (11, 5)]:
        assert dw[0, 0, p, q] == pytest.approx(x[0, 0, p:p + ho, q:q + ho].astype(np.float64).sum(),
                                               rel=1e-3, abs=5.0)


@pytest.mark.parametrize("workspace", [1, 300])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tiles_narrower_than_the_padding(rng, workspace, dtype):
    """A one-position tile whose whole patch lies in the padding: the zero fill stays
    inside the tile (found by AddressSanitizer: it once wrote past the column buffer;
    tools/sanitize.sh runs this)."""
    x = rng.standard_normal((9, 1, 6)).astype(dtype)
    w = rng.standard_normal((1, 1, 1)).astype(dtype)
    y = vc.conv1d(x, w, padding=((2, 2),), workspace=workspace)
    ref = np.pad(x * w[0, 0, 0], ((0, 0), (0, 0), (2, 2)))
    np.testing.assert_allclose(y, ref, rtol=1e-6)


@pytest.mark.slow
def test_3d_column_matrix_past_two_to_the_31():
    """A 130^3 volume with an 11^3 kernel: the column matrix would hold 2.3e9 entries
    (past 2**31), run in the 64 MiB workspace. Sampled outputs against a direct sum, and
    the kernel gradient for dy = 1 against the sums of the blocks each tap reads."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 1, 130, 130, 130)).astype(np.float32)
    k = rng.standard_normal((11, 11, 11)).astype(np.float32)
    y = vc.conv3d(x, k[None, None])
    o = 130 - 10
    assert y.shape == (1, 1, o, o, o) and o**3 * 11**3 > 2**31
    x64, k64 = x[0, 0].astype(np.float64), k.astype(np.float64)
    picks = rng.integers(0, o, (60, 3)).tolist() + [[0, 0, 0], [o - 1, o - 1, o - 1]]
    for a, b, c in picks:
        ref = (x64[a:a + 11, b:b + 11, c:c + 11] * k64).sum()
        assert y[0, 0, a, b, c] == pytest.approx(ref, rel=1e-3, abs=2e-2)
    _, dw, db = vc.conv3d_backward(np.ones_like(y), x, k[None, None], input_grad=False)
    for p, q, r in [(0, 0, 0), (10, 10, 10), (5, 2, 7)]:
        assert dw[0, 0, p, q, r] == pytest.approx(x64[p:p + o, q:q + o, r:r + o].sum(),
                                                  rel=1e-3, abs=5.0)
    assert db[0] == pytest.approx(o**3, rel=1e-6)
