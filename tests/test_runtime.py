"""vecconv's own parallel runtime: same bits for any thread count, fork safety, nothing
process-wide (environment, other libraries' thread counts), import-order independence."""

import contextlib
import json
import multiprocessing
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import scipy.signal as ss
from hypothesis import given, settings
from hypothesis import strategies as st

import vecconv as vc
from vecconv._options import conv_options
from reference import assert_close, peak
from strategies import dtypes, per_axis, same_at_stride_one

threadpoolctl = pytest.importorskip("threadpoolctl")

# shapes that reach every way the planner cuts work: whole-image tiles, staged tiny maps,
# bands of one image, pointwise, groups, channel blocks of dx (several rounds: big_grain)
CASES = {
    "whole-images": ((16, 3, 12, 11), (12, 3, 3, 2), dict(padding=1)),
    "whole-images-staged": ((16, 3, 12, 11), (5, 3, 3, 2), dict(padding=1)),
    "staged": ((40, 4, 5, 5), (6, 4, 3, 3), dict()),
    "bands": ((2, 5, 40, 33), (7, 5, 5, 4), dict(stride=(2, 1), padding=((2, 2), (1, 2)),
                                                   workspace=5000)),
    "pointwise": ((3, 8, 9, 10), (6, 8, 1, 1), dict()),
    "pointwise-batch": ((12, 8, 9, 10), (10, 8, 1, 1), dict()),
    "groups": ((9, 6, 10, 9), (20, 3, 3, 3), dict(groups=2, dilation=(1, 2))),
    "groups-bands": ((2, 6, 21, 19), (20, 3, 3, 3), dict(groups=2, padding=2, workspace=3000)),
    "one-image": ((1, 16, 48, 48), (16, 16, 3, 3), dict(padding=1)),
    "wide-staged": ((10, 128, 6, 6), (256, 128, 3, 3), dict(padding=1)),
}


def test_large_weights_on_small_maps_stage_wide_tiles(monkeypatch):
    """ResNet's 7 x 7 stage: a weight matrix of WIDE_WEIGHTS entries or more on maps of
    few positions is staged in tiles of at least WIDE_STAGE columns (fewer tiles than
    MIN_UNITS), and gives what per-image tiles give."""
    from vecconv import _plan
    xs, ws, opts = CASES["wide-staged"]
    plan = _plan.plan_conv(xs, ws, None, np.float64, conv_options(2, padding=1), None)
    s = plan.schedule
    assert plan.route is _plan.Route.STAGED and s.tile_images * 36 >= _plan.WIDE_STAGE
    assert s.n_tiles < _plan.MIN_UNITS
    wide = _run("wide-staged", np.float64)
    monkeypatch.setattr(_plan, "WIDE_WEIGHTS", 2**62)
    narrow_plan = _plan.plan_conv(xs, ws, None, np.float64, conv_options(2, padding=1), None)
    assert narrow_plan.schedule.tile_images * 36 < _plan.WIDE_STAGE
    for a, r in zip(wide, _run("wide-staged", np.float64)):
        np.testing.assert_allclose(a, r, rtol=1e-12, atol=1e-12 * np.abs(r).max())


def _run(case, dtype, seed=0):
    xs, ws, opts = CASES[case]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    y = vc.conv2d(x, w, b, **opts)
    return (y,) + vc.conv2d_backward(np.cos(y), x, w, **opts)


@pytest.fixture
def big_grain(monkeypatch):
    """Make every call parallel, however small (the grain size otherwise keeps small
    calls on the calling thread), and cut it into several rounds (so the round offsets
    and the dW accumulators reused across rounds run on the pool too)."""
    from vecconv import _config, _plan
    monkeypatch.setattr(_config, "GRAIN_FLOPS", 0)
    monkeypatch.setattr(_plan, "ROUND_ELEMS", 2000)


@pytest.mark.parametrize("join", [False, True], ids=["own-workers", "openmp"])
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_results_are_bit_identical_for_any_thread_count(case, dtype, big_grain, join):
    """How the work is cut does not depend on the thread count, and dW's chunks are
    added in a fixed order: 1, 2 and 5 threads give the same bits, on vecconv's own
    workers and on PyTorch's OpenMP threads."""
    with vc.threads(1):
        ref = _run(case, dtype)
    for n in (2, 5):
        with vc.threads(n), _joining(join):
            for _ in range(3):
                for a, r in zip(_run(case, dtype), ref):
                    np.testing.assert_array_equal(a, r)


def test_parallel_results_match_scipy(big_grain, rng):
    x = rng.standard_normal((3, 4, 31, 29))
    w = rng.standard_normal((5, 4, 4, 3))
    with vc.threads(2):
        y = vc.conv2d(x, w, padding="full", workspace=3000)
    for n in range(3):
        for j in range(5):
            ref = sum(ss.correlate2d(x[n, i], w[j, i], "full") for i in range(4))
            np.testing.assert_allclose(y[n, j], ref, rtol=1e-12, atol=1e-11)


def test_set_num_threads_api():
    old = vc.get_num_threads()
    assert old >= 1
    assert vc.set_num_threads(3) == old
    assert vc.get_num_threads() == 3
    with vc.threads(1):
        assert vc.get_num_threads() == 1
    assert vc.get_num_threads() == 3
    with pytest.raises(RuntimeError):
        with vc.threads(2):
            raise RuntimeError("inside")
    assert vc.get_num_threads() == 3
    vc.set_num_threads(old)
    for bad, exc in ((0, ValueError), (-2, ValueError), (1.5, TypeError), (True, TypeError),
                     ("2", TypeError), (None, TypeError)):
        with pytest.raises(exc, match="n must be"):
            vc.set_num_threads(bad)
    assert vc.get_num_threads() == old


def _blas_counts():
    return sorted((i["filepath"], i["num_threads"]) for i in threadpoolctl.threadpool_info()
                  if i["user_api"] == "blas")


def test_other_libraries_thread_counts_are_never_touched(big_grain):
    """SciPy's and NumPy's BLAS keep their thread counts while vecconv runs in other
    threads, and a threadpool_limits entered and left meanwhile restores exactly what it
    found (vecconv <= 0.1 switched SciPy's BLAS to 1 thread for the whole process)."""
    before = _blas_counts()
    stop = threading.Event()
    seen = []

    def busy():
        while not stop.is_set():
            _run("bands", np.float32)

    workers = [threading.Thread(target=busy) for _ in range(2)]
    for t in workers:
        t.start()
    try:
        for _ in range(20):
            seen.append(_blas_counts())
            with threadpoolctl.threadpool_limits(1, user_api="blas"):
                time.sleep(0.002)
            seen.append(_blas_counts())
    finally:
        stop.set()
        for t in workers:
            t.join()
    assert all(s == before for s in seen), (before, [s for s in seen if s != before][:2])
    assert _blas_counts() == before


def test_threadpoolctl_sees_and_limits_vecconv():
    info = [i for i in threadpoolctl.threadpool_info() if i["user_api"] == "vecconv"]
    if not hasattr(threadpoolctl, "register"):
        pytest.skip("this threadpoolctl has no custom-controller API")
    assert len(info) == 1 and info[0]["num_threads"] == vc.get_num_threads()
    old = vc.get_num_threads()
    with threadpoolctl.threadpool_limits(1):
        assert vc.get_num_threads() == 1
    assert vc.get_num_threads() == old


def test_private_blas_is_put_back_to_one_thread(big_grain):
    """threadpoolctl sets every OpenBLAS it finds, the engine's private one included; the
    engine puts it back to one thread before its next call."""
    if not vc.runtime_info()["private_blas"]:
        pytest.skip("no private BLAS")
    with threadpoolctl.threadpool_limits(4, user_api="blas"):
        ref = _run("whole-images", np.float64)
        private = [i for i in threadpoolctl.threadpool_info()
                   if i["user_api"] == "blas" and i["filepath"].endswith("libscipy_openblas.so")]
        assert private and all(i["num_threads"] == 1 for i in private)
    with vc.threads(1):
        for a, r in zip(_run("whole-images", np.float64), ref):
            np.testing.assert_array_equal(a, r)


@pytest.mark.parametrize("join", [False, True], ids=["own-workers", "openmp"])
def test_two_python_threads_share_the_engine(big_grain, join):
    """Two callers at once: one gets the workers, the other runs its job alone; both
    give the serial answer."""
    with vc.threads(1):
        refs = {c: _run(c, np.float64) for c in CASES}
    with _joining(join), ThreadPoolExecutor(max_workers=2) as pool:
        for _ in range(3):
            got = list(pool.map(lambda c: (c, _run(c, np.float64)), list(CASES) * 2))
            for c, res in got:
                for a, r in zip(res, refs[c]):
                    np.testing.assert_array_equal(a, r)


# ----------------------------------------------------------------------------- fork
def _child_result(queue):
    before = vc.runtime_info()["openmp_jobs"]
    res = [a.tolist() for a in _run("one-image", np.float64)]
    queue.put((res, vc.runtime_info()["openmp_jobs"] - before))


@contextlib.contextmanager
def _joining(join):
    """Jobs on the process's OpenMP runtime (PyTorch's libgomp, loaded here) or on
    vecconv's own workers."""
    from vecconv import _config, _engine
    torch, before = None, None
    if join:
        torch = pytest.importorskip("torch")
        # libgomp's setting must allow vecconv's threads (Dask's workers, threadpoolctl
        # or OMP_NUM_THREADS may have left it at 1 here; vecconv then keeps to its own)
        before = torch.get_num_threads()
        torch.set_num_threads(max(before, 5))
        torch.ones(4, 4).sum()
    # (ends a rest that a real stall began; this test process is no forked child, though
    # started in the background by a shell that has exited it looks orphaned)
    _engine.set_join_openmp(join, 0.0, trust=True)
    try:
        yield
    finally:
        _engine.set_join_openmp(_config.JOIN_OPENMP)
        if torch is not None:
            torch.set_num_threads(before)


def _parent_used(join, before):
    """The parent's job ran where ``join`` says."""
    info = vc.runtime_info()
    if not (info["pool"] and info["private_blas"]):
        return
    if join:
        assert info["openmp_jobs"] > before
    else:
        assert info["workers"] >= 1 and info["openmp_jobs"] == before


def _check_child(res, ref):
    for a, r in zip(res, ref):
        np.testing.assert_array_equal(np.asarray(a), r)


def test_a_busy_machine_sends_jobs_to_the_calling_thread_alone(big_grain):
    """After stalls (a worker descheduled while the caller waited: forced here), the
    jobs of the calm period run on the calling thread alone, with the same bits; turned
    off (the default; VECCONV_ADAPT_THREADS=1 turns it on), the thread setting holds."""
    from vecconv import _config, _engine
    if not vc.runtime_info()["pool"]:
        pytest.skip("a build without the worker pool runs every job alone")
    with vc.threads(2):
        ref = _run("one-image", np.float64)
        try:
            _engine.set_stall_policy(True, 30.0)
            before = vc.runtime_info()["calm_jobs"]
            got = _run("one-image", np.float64)
            assert vc.runtime_info()["calm_jobs"] > before
            _engine.set_stall_policy(False)
            before = vc.runtime_info()["calm_jobs"]
            again = _run("one-image", np.float64)
            assert vc.runtime_info()["calm_jobs"] == before
        finally:
            _engine.set_stall_policy(_config.ADAPT_THREADS, 0.0)
    for a, r in zip(got + again, ref + ref):
        np.testing.assert_array_equal(a, r)


def test_the_busy_machine_policy_is_turned_on_by_the_environment():
    code = ("import vecconv, vecconv._config as c, vecconv._engine as e; "
            "e.set_stall_policy(c.ADAPT_THREADS, 30.0); import numpy as np; "
            "vecconv.set_num_threads(2); x = np.ones((8, 64, 40, 40)); "
            "vecconv.conv2d(x, np.ones((64, 64, 3, 3))); "
            "print(c.ADAPT_THREADS, vecconv.runtime_info()['calm_jobs'])")
    for value, want in (("0", "False 0"), ("1", "True")):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env=dict(os.environ, VECCONV_ADAPT_THREADS=value), check=True)
        assert out.stdout.strip().startswith(want), out.stdout
        if value == "1" and vc.runtime_info()["pool"]:
            assert int(out.stdout.split()[1]) > 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
@pytest.mark.parametrize("join", [False, True], ids=["own-workers", "openmp"])
def test_multiprocessing_fork_child_computes(big_grain, join):
    """A child forked after the parent's workers ran (multiprocessing's default start
    method on Linux) computes the right answer; vecconv <= 0.1 hung here forever. After
    a parent whose jobs ran on PyTorch's OpenMP threads, the child never uses them
    (libgomp's pool hangs in a forked child)."""
    with vc.threads(2), _joining(join):
        before = vc.runtime_info()["openmp_jobs"]
        ref = _run("one-image", np.float64)
        _parent_used(join, before)
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        procs = [ctx.Process(target=_child_result, args=(queue,)) for _ in range(2)]
        for p in procs:
            p.start()
        results = [queue.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(timeout=60)
            assert p.exitcode == 0
    for res, openmp_jobs in results:
        _check_child(res, ref)
        assert openmp_jobs == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
@pytest.mark.parametrize("join", [False, True], ids=["own-workers", "openmp"])
def test_os_fork_child_computes_and_starts_its_own_workers(big_grain, tmp_path, join):
    out_path = tmp_path / "child.json"
    with vc.threads(2), _joining(join):
        jobs = vc.runtime_info()["openmp_jobs"]
        ref = _run("one-image", np.float64)
        _parent_used(join, jobs)
        pid = os.fork()
        if pid == 0:            # the child: no parent workers here; compute, report, exit
            try:
                before = vc.runtime_info()["workers"]
                jobs = vc.runtime_info()["openmp_jobs"]
                res = [a.tolist() for a in _run("one-image", np.float64)]
                after = vc.runtime_info()["workers"]
                out_path.write_text(json.dumps(dict(
                    res=res, before=before, after=after,
                    openmp_jobs=vc.runtime_info()["openmp_jobs"] - jobs)))
            finally:
                os._exit(0)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.05)
        else:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung")
    assert os.waitstatus_to_exitcode(status) == 0
    out = json.loads(out_path.read_text())
    assert out["before"] == 0                     # the parent's workers are not the child's
    assert out["openmp_jobs"] == 0                # nor, in a child, libgomp's
    if vc.runtime_info()["pool"] and vc.runtime_info()["private_blas"]:
        assert out["after"] >= 1                  # it started workers of its own
    _check_child(out["res"], ref)


# ----------------------------------------------------------------------------- process-wide state
_PROBE = r"""
import json, os, sys
first = sys.argv[1]
before = dict(os.environ)
if first == "torch":
    import torch
import numpy as np
import vecconv as vc
from vecconv import _config
_config.GRAIN_FLOPS = 0
changed = {k: os.environ.get(k) for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k)}
rng = np.random.default_rng(1)
x = rng.standard_normal((2, 5, 40, 33)); w = rng.standard_normal((7, 5, 5, 4))
y = vc.conv2d(x, w, padding=2, stride=(2, 1))
dx, dw, db = vc.conv2d_backward(np.cos(y), x, w, padding=2, stride=(2, 1))
maps = open("/proc/self/maps").read() if os.path.exists("/proc/self/maps") else ""
def _auxv(pid):
    try:
        with open(f"/proc/{pid}/auxv", "rb") as f:
            return f.read()
    except OSError as e:
        return repr(e)
aux = (_auxv("self"), _auxv(os.getppid()))
print(json.dumps(dict(changed=changed, gomp="libgomp" in maps, info=vc.runtime_info(),
                      auxv=[a if isinstance(a, str) else len(a) for a in aux] + [aux[0] == aux[1]],
                      tpc="threadpoolctl" in sys.modules,
                      sums=[float(a.sum()) for a in (y, dx, dw, db)])))
"""


#: the environment when this module was collected: Dask's distributed, once it has run in
#: this process, sets OMP_NUM_THREADS=1 (and more) in os.environ for the processes it
#: starts, and every subprocess started later would inherit them
_START_ENV = dict(os.environ)


def _clean_env(**extra):
    """The environment of a fresh process, without what this test process's own imports
    put there (threadpoolctl's import sets KMP_DUPLICATE_LIB_OK; Dask's distributed sets
    OMP_NUM_THREADS=1, under which libgomp's setting is one thread)."""
    env = {k: v for k, v in _START_ENV.items() if k != "KMP_DUPLICATE_LIB_OK"}
    env.update(extra)
    return env


def _probe(first, **env):
    # a process group of its own, whose leader (the probe) lives: the check at import
    # takes a process whose group's leader is gone for an orphan of a fork
    group = dict(process_group=0) if sys.version_info >= (3, 11) else dict(
        preexec_fn=os.setpgrp)
    out = subprocess.run([sys.executable, "-c", _PROBE, first], capture_output=True,
                         text=True, timeout=300, env=_clean_env(**env), **group)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_changes_no_environment_and_loads_no_openmp():
    res = _probe("vecconv")
    assert res["changed"] == {}, res["changed"]
    assert not res["gomp"], "vecconv pulled an OpenMP runtime into the process"
    assert not res["tpc"], "vecconv imported threadpoolctl (which sets an environment variable)"


def test_threadpoolctl_imported_after_vecconv_still_sees_it():
    code = ("import numpy as np, vecconv as vc, threadpoolctl\n"
            "vc.conv2d(np.ones((1, 1, 3, 3)), np.ones((1, 1, 2, 2)))\n"
            "print([i['user_api'] for i in threadpoolctl.threadpool_info()].count('vecconv'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, env=_clean_env())
    assert out.returncode == 0, out.stderr
    expected = "1" if hasattr(threadpoolctl, "register") else "0"
    assert out.stdout.strip() == expected


@pytest.mark.parametrize("name, value", [("VECCONV_NUM_THREADS", "99999999999"),
                                         ("VECCONV_NUM_THREADS", "garbage"),
                                         ("VECCONV_NUM_THREADS", "0"),
                                         ("VECCONV_GRAIN_FLOPS", "abc"),
                                         ("VECCONV_TILE_BYTES", "1e6")])
def test_bad_environment_knobs_warn_and_never_break_import(name, value):
    code = "import vecconv as vc; print(vc.get_num_threads())"
    out = subprocess.run([sys.executable, "-W", "always", "-c", code], capture_output=True,
                         text=True, timeout=300, env=_clean_env(**{name: value}))
    assert out.returncode == 0, out.stderr
    assert name in out.stderr and "RuntimeWarning" in out.stderr
    # a bad thread count falls back to the CPUs this process may use (capped at 1024);
    # the other knobs leave the default thread count as it is
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count()
    assert int(out.stdout) == min(cpus, 1024)


def test_threadpoolctl_cannot_make_the_private_blas_multithreaded_mid_call(big_grain):
    """Another thread's threadpool_limits(blas) sets every OpenBLAS, the engine's private
    one included, while calls run; every GEMM puts it back to one thread first."""
    if not vc.runtime_info()["private_blas"]:
        pytest.skip("no private BLAS")
    stop = threading.Event()

    def meddle():
        while not stop.is_set():
            with threadpoolctl.threadpool_limits(2, user_api="blas"):
                time.sleep(0.001)
    t = threading.Thread(target=meddle)
    t.start()
    try:
        with vc.threads(1):
            ref = _run("groups", np.float64)
        for _ in range(20):
            with vc.threads(2):
                for a, r in zip(_run("groups", np.float64), ref):
                    np.testing.assert_array_equal(a, r)
    finally:
        stop.set()
        t.join()


def test_import_order_does_not_matter():
    """With PyTorch (and its OpenMP runtime) imported first, vecconv's jobs run on that
    runtime's threads (VECCONV_JOIN_OPENMP=0: on its own workers) and give the same
    numbers as when imported alone."""
    pytest.importorskip("torch")
    alone = _probe("vecconv")
    after_torch = _probe("torch")
    own = _probe("torch", VECCONV_JOIN_OPENMP="0")
    assert after_torch["sums"] == alone["sums"] == own["sums"]
    assert alone["info"]["openmp_jobs"] == own["info"]["openmp_jobs"] == 0
    assert own["info"]["workers"] > 0
    assert after_torch["info"]["openmp_jobs"] > 0, after_torch
    assert isinstance(after_torch["info"]["openmp_rests"], int)
    assert 0 <= after_torch["info"]["openmp_rests"] <= after_torch["info"]["openmp_jobs"]
    assert after_torch["changed"] == {}


def test_after_a_stall_jobs_rest_on_vecconvs_own_workers(big_grain):
    """On a busy machine libgomp's calling thread waits for team threads the scheduler has
    not run; after such stalls (a rest forced here) the jobs run on vecconv's own
    workers, with the same bits, and then on libgomp's threads again."""
    with vc.threads(1):
        ref = _run("one-image", np.float64)
    with vc.threads(2), _joining(True):
        from vecconv import _engine
        try:
            _engine.set_join_openmp(True, 30.0)
            before = vc.runtime_info()["openmp_jobs"]
            resting = _run("one-image", np.float64)
            _parent_used(False, before)
        finally:
            _engine.set_join_openmp(True, 0.0)
        before = vc.runtime_info()["openmp_jobs"]
        joined = _run("one-image", np.float64)
        _parent_used(True, before)
    for a, b, r in zip(resting, joined, ref):
        np.testing.assert_array_equal(a, r)
        np.testing.assert_array_equal(b, r)


def test_jobs_on_pytorchs_openmp_threads_give_the_same_bits(big_grain):
    """With PyTorch's libgomp in the process: every case on its threads, on vecconv's
    own, and on one thread, the same bits; also two Python threads at once."""
    with vc.threads(1):
        refs = {c: _run(c, np.float64) for c in CASES}
    with vc.threads(2), _joining(True):
        before = vc.runtime_info()["openmp_jobs"]
        for c, ref in refs.items():
            for a, r in zip(_run(c, np.float64), ref):
                np.testing.assert_array_equal(a, r)
        _parent_used(True, before)
        with ThreadPoolExecutor(max_workers=2) as pool:
            got = list(pool.map(lambda c: (c, _run(c, np.float64)), list(CASES) * 2))
        for c, res in got:
            for a, r in zip(res, refs[c]):
                np.testing.assert_array_equal(a, r)


def test_without_the_private_blas_results_are_the_same():
    """The fallback (SciPy's BLAS, GEMM passes on the calling thread) gives the same
    numbers to rounding."""
    out = subprocess.run([sys.executable, "-c", _PROBE, "vecconv"], capture_output=True,
                         text=True, timeout=300, env=_clean_env(VECCONV_PRIVATE_BLAS="0"))
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["info"]["private_blas"] is False
    ref = _probe("vecconv")
    np.testing.assert_allclose(res["sums"], ref["sums"], rtol=1e-10)


def test_cases_reach_every_way_of_cutting_the_work():
    """The CASES above really do reach each schedule (a planner change could silently
    route them all one way)."""
    from vecconv import _plan
    seen = set()
    for xs, ws, opts in CASES.values():
        groups = opts.get("groups", 1)
        options = conv_options(2, stride=opts.get("stride", 1), padding=opts.get("padding", 0),
                               dilation=opts.get("dilation", 1), groups=groups)
        plan = _plan.plan_conv(xs, ws, None, np.float64, options, opts.get("workspace"))
        s = plan.schedule
        seen.add(("pointwise" if s.pointwise else "staged" if s.staged else "columns",
                  "images" if s.tile_images else "bands", "dx-spans" if not s.dx_images else "dx-images",
                  "channel-blocks" if s.dx_cblock < xs[1] // groups else "all-channels"))
    kinds = {k for t in seen for k in t}
    assert {"pointwise", "staged", "columns", "images", "bands", "dx-spans", "dx-images",
            "channel-blocks", "all-channels"} <= kinds, seen


@st.composite
def _geometries(draw):
    n = draw(st.sampled_from([1, 2, 3, 8, 11]))
    groups = draw(st.sampled_from([1, 1, 2]))
    c = groups * draw(st.integers(1, 3))
    cout = groups * draw(st.sampled_from([1, 2, 5, 9]))
    k = draw(per_axis(2, 1, 4))
    size = draw(per_axis(2, 4, 14))
    stride = draw(per_axis(2, 1, 2))
    padding = same_at_stride_one(draw(st.sampled_from([0, 1, "same", "full"])), stride, k,
                                 (1, 1), False)
    workspace = draw(st.sampled_from([None, 3000, 20000]))
    return (n, c) + size, (cout, c // groups) + k, dict(stride=stride, padding=padding,
                                                        groups=groups, workspace=workspace)


@settings(max_examples=60, deadline=None)
@given(case=_geometries(), dtype=dtypes())
def test_random_geometries_on_the_pool_are_bit_identical_for_any_thread_count(case, dtype):
    """Every random geometry on the pool (grain 0, small rounds), with 1, 2 and 3 threads:
    the same bits, and scipy's answer."""
    from vecconv import _config, _plan
    xs, ws, opts = case
    old = _config.GRAIN_FLOPS, _plan.ROUND_ELEMS
    _config.GRAIN_FLOPS, _plan.ROUND_ELEMS = 0, 3000
    try:
        rng = np.random.default_rng(0)
        x = rng.standard_normal(xs).astype(dtype)
        w = rng.standard_normal(ws).astype(dtype)
        results = []
        for n in (1, 2, 3):
            with vc.threads(n):
                y = vc.conv2d(x, w, **opts)
                results.append((y,) + vc.conv2d_backward(np.cos(y), x, w, **opts))
    finally:
        _config.GRAIN_FLOPS, _plan.ROUND_ELEMS = old
    for other in results[1:]:
        for a, r in zip(other, results[0]):
            np.testing.assert_array_equal(a, r)
    from reference import ref_conv2d
    ref = ref_conv2d(x.astype(np.float64), w.astype(np.float64), None, **{
        k: v for k, v in opts.items() if k != "workspace"}, dilation=1, connections=None,
        flip=False)
    tight = {np.float32: 1e-4}                     # float32: tighter than the table's
    assert_close(results[0][0], ref, dtype, scale=peak(ref), rtol=tight, atol=tight)


def test_a_layer_follows_the_thread_setting_after_its_first_call(big_grain):
    """The thread count is decided when a pass runs, not when its plan was made (a layer
    caches its plan)."""
    layer = vc.nn.Conv2D(16, 16, 3, padding=1, dtype=np.float64, seed=0)
    x = np.random.default_rng(0).standard_normal((1, 16, 48, 48))
    with vc.threads(1):
        ref = layer.forward(x)
    plan = layer._plan_for(x.shape)
    with vc.threads(1):
        assert plan.threads() == 1
    with vc.threads(3):
        info = vc.runtime_info()      # a build without the pool (-Dserial=true) runs serially
        assert plan.threads() == (3 if info["private_blas"] and info["pool"] else 1)
        np.testing.assert_array_equal(layer.forward(x), ref)


def test_threads_blocks_belong_to_their_own_python_thread():
    """Two Python threads in threads(n) blocks of their own neither see nor undo each
    other's setting; the process's setting is untouched."""
    before = vc.get_num_threads()
    barrier = threading.Barrier(2)
    seen = {}

    def body(n):
        with vc.threads(n):
            barrier.wait()
            seen[n] = [vc.get_num_threads()]
            barrier.wait()
        seen[n].append(vc.get_num_threads())
    ts = [threading.Thread(target=body, args=(n,)) for n in (1, 3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert seen == {1: [1, before], 3: [3, before]}
    assert vc.get_num_threads() == before
    with pytest.raises(ValueError, match="n must be"):
        with vc.threads(0):
            pass


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_fork_while_another_thread_is_inside_a_call(big_grain, tmp_path):
    """The case the fork handlers exist for: the parent's workers busy in another
    thread's job at the moment of fork. Every child computes the right answer."""
    with vc.threads(2):
        ref = _run("one-image", np.float64)
        stop = threading.Event()

        def busy():
            while not stop.is_set():
                _run("bands", np.float64)
        t = threading.Thread(target=busy)
        t.start()
        try:
            for i in range(8):
                out = tmp_path / f"child{i}.npy"
                pid = os.fork()
                if pid == 0:
                    try:
                        np.save(out, _run("one-image", np.float64)[1])
                    finally:
                        os._exit(0)
                deadline = time.monotonic() + 60
                while True:
                    done, status = os.waitpid(pid, os.WNOHANG)
                    if done:
                        break
                    if time.monotonic() > deadline:
                        os.kill(pid, 9)
                        os.waitpid(pid, 0)
                        pytest.fail("a child forked during a call hung")
                    time.sleep(0.02)
                assert os.waitstatus_to_exitcode(status) == 0
                np.testing.assert_array_equal(np.load(out), ref[1])
        finally:
            stop.set()
            t.join()


@pytest.mark.parametrize("xs, ws", [((8, 64, 256, 256), (64, 64, 3, 3)),
                                    ((1, 3, 224, 224), (64, 3, 7, 7)),
                                    ((64, 6, 14, 14), (16, 6, 5, 5)),
                                    ((2, 1, 512, 512), (8, 1, 5, 5)),
                                    ((32, 256, 28, 28), (64, 256, 1, 1))])
def test_every_round_has_units_to_share(xs, ws):
    """Each pass is cut so that a round has MIN_UNITS units whenever the shapes allow
    (found by a hostile test: a batch of 8 large images ran dx one image per round, so
    serially). The planner's arithmetic, checked for each job kind."""
    from vecconv import _plan
    plan = _plan.plan_conv(xs, ws, None, np.float32, conv_options(2, padding=1))
    s = plan.schedule
    want = _plan.MIN_UNITS
    forward_units = min(s.round_tiles, s.n_tiles)
    dw_units = min(s.n_acc, s.n_tiles)
    cblocks = -(-xs[1] // s.dx_cblock)
    dx_units = min(s.dx_round, s.dx_pieces) * cblocks
    assert forward_units >= min(want, s.n_tiles)
    assert dw_units >= min(want, s.n_tiles)
    # dx: single-channel spans of one image are the documented exception
    if s.dx_images or xs[1] > 1:
        assert dx_units >= min(want, s.dx_pieces * xs[1]), s


def test_the_dense_layers_product_gives_the_same_bits_for_any_thread_count(big_grain):
    """_run.matmul (the Dense layer's product) cuts its rows by the shapes alone: cut by
    the thread count, float64 rows moved by 1e-14 between 1 and 2 threads."""
    from vecconv import _run
    rng = np.random.default_rng(5)
    for trans_a in (False, True):
        a = rng.standard_normal((517, 300) if trans_a else (300, 517))
        b = rng.standard_normal((517, 301))
        results = []
        for n in (1, 2, 3):
            with vc.threads(n):
                results.append(_run.matmul(a, b, trans_a=trans_a))
        for got in results[1:]:
            np.testing.assert_array_equal(got, results[0])
        np.testing.assert_allclose(results[0], (a.T if trans_a else a) @ b, rtol=1e-12,
                                   atol=1e-12)


_FORK_LATE = r"""
import os, signal, sys
import torch
torch.set_num_threads(2)
torch.nn.functional.conv2d(torch.ones(2, 8, 64, 64), torch.ones(8, 8, 3, 3)).sum()
out = sys.argv[2]
pid = os.fork()
if pid == 0:                     # the child imports vecconv only now: no fork handler ran
    signal.alarm(60)
    if sys.argv[1] == "dataloader":
        torch.set_num_threads(1)     # as PyTorch's DataLoader does in its workers
    if sys.argv[1] == "daemon":      # double fork: a new session, the middle one exits
        os.setsid()
        if os.fork() != 0:
            os._exit(0)
        import time
        time.sleep(0.5)              # orphaned: its group's leader is gone
    import numpy as np
    import vecconv as vc
    from vecconv import _config
    _config.GRAIN_FLOPS = 0
    vc.set_num_threads(2)
    y = vc.conv2d(np.ones((4, 8, 40, 40)), np.ones((8, 8, 3, 3)))
    ok = float(y.sum()) == 4 * 8 * 38 * 38 * 72.0
    with open(out, "w") as f:
        f.write("0" if ok and vc.runtime_info()["openmp_jobs"] == 0 else "3")
    os._exit(0)
os.waitpid(pid, 0)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
@pytest.mark.parametrize("how", ["fork", "dataloader", "daemon"])
def test_a_child_forked_before_vecconv_was_imported_never_uses_the_parents_openmp(
        how, tmp_path):
    """A parent that ran PyTorch forks before importing vecconv; the child imports it:
    no fork handler of vecconv's ran, and libgomp's pool there is the parent's copy
    without its threads (a job on it hangs). vecconv sees that the pool has no threads in
    this process (and, in a DataLoader worker, PyTorch's one-thread setting) and computes
    on its own workers."""
    pytest.importorskip("torch")
    result = tmp_path / "child"
    out = subprocess.run([sys.executable, "-c", _FORK_LATE, how, str(result)],
                         capture_output=True, text=True, timeout=180, env=_clean_env())
    assert out.returncode == 0, out.stderr
    deadline = time.monotonic() + 90            # (the daemon outlives its parent)
    while not result.exists() or not result.read_text():
        assert time.monotonic() < deadline, "the child hung (or died)"
        time.sleep(0.1)
    assert result.read_text() == "0"


def _mp_child(queue):
    import vecconv
    from vecconv import _config
    _config.GRAIN_FLOPS = 0
    y = vecconv.conv2d(np.ones((4, 8, 40, 40)), np.ones((8, 8, 3, 3)))
    queue.put((float(y.sum()), vecconv.runtime_info()["openmp_jobs"]))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_multiprocessing_child_keeps_to_vecconvs_own_workers():
    """Checked at import: a process that multiprocessing started never joins libgomp (a
    forked one's pool may be its parent's)."""
    code = ("import multiprocessing as mp, sys\n"
            "sys.path.insert(0, %r)\n"
            "import torch\n"
            "torch.nn.functional.conv2d(torch.ones(2, 8, 64, 64), torch.ones(8, 8, 3, 3))\n"
            "from test_runtime import _mp_child\n"
            "ctx = mp.get_context('fork'); q = ctx.Queue()\n"
            "p = ctx.Process(target=_mp_child, args=(q,)); p.start()\n"
            "print(q.get(timeout=120)); p.join(60)\n") % os.path.dirname(__file__)
    pytest.importorskip("torch")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=180, env=_clean_env())
    assert out.returncode == 0, out.stderr
    total, jobs = eval(out.stdout.strip().splitlines()[-1])
    assert total == 4 * 8 * 38 * 38 * 72.0 and jobs == 0


@pytest.mark.parametrize("join", [False, True], ids=["own-workers", "openmp"])
def test_every_thread_computes_in_the_callers_floating_point_environment(big_grain, join):
    """Flush-to-zero set by the caller (PyTorch's set_flush_denormal) holds on every
    participant, also threads made before it was set: 1 and 2 threads, the same bits."""
    torch = pytest.importorskip("torch")
    x = np.full((4, 8, 24, 24), 1e-300) * np.arange(1, 5).reshape(4, 1, 1, 1)
    w = np.full((8, 8, 3, 3), 1e-10)
    with vc.threads(2), _joining(join):
        vc.conv2d(x, w)                 # threads exist before the setting changes
        if not torch.set_flush_denormal(True):
            pytest.skip("no flush-to-zero on this CPU")
        try:
            with vc.threads(1):
                ref = vc.conv2d(x, w)
            got = vc.conv2d(x, w)
        finally:
            torch.set_flush_denormal(False)
    assert not ref.any()                # flushed: subnormal products are zero
    np.testing.assert_array_equal(got, ref)
