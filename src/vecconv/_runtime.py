"""The engine's runtime: its private BLAS, what it reports, and threadpoolctl's view of it.

The engine runs each call on the calling thread and a small pool of worker threads of
its own (``_runtime.h``), or, where another library (PyTorch) has loaded an OpenMP
runtime, on that runtime's threads; every worker does its share end to end (im2col,
GEMM, col2im) with single-threaded GEMMs on a private OpenBLAS. Importing vecconv changes no
environment variable and no other library's thread count. The settings themselves live
in ``_config``.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys
from typing import TypedDict

from . import _config, _engine

__all__ = ["runtime_info"]


def _load_private_blas() -> bool:
    """The engine's own OpenBLAS: the scipy-openblas32 wheel's library, another file than
    SciPy's copy, so its one-thread setting is the engine's alone. Without it the engine
    uses SciPy's BLAS and runs the GEMM passes on the calling thread.

    The wheel's Python package is not imported: importing it loads the library into the
    global namespace for builds linked against it. The engine finds the file and loads it
    privately, and refuses it when something else has already loaded it (then it is not
    the engine's to hold at one thread).
    """
    if not _config.PRIVATE_BLAS:
        return False                                            # (tests of the fallback)
    try:
        spec = importlib.util.find_spec("scipy_openblas32")
    except (ImportError, ValueError):
        return False
    if spec is None or not spec.submodule_search_locations:
        return False
    for root in spec.submodule_search_locations:
        lib_dir = os.path.join(root, "lib")
        if not os.path.isdir(lib_dir):
            continue
        for name in sorted(os.listdir(lib_dir)):
            if name.startswith("libscipy_openblas") and (".so" in name or name.endswith(
                    (".dylib", ".dll"))):
                if _engine.load_private_blas(os.path.join(lib_dir, name)):
                    return True
    return False


class RuntimeInfo(TypedDict):
    """``runtime_info()``'s answer."""
    num_threads: int
    pool: bool
    private_blas: bool
    workers: int
    stalls: int
    calm_jobs: int
    openmp_jobs: int
    openmp_rests: int


def runtime_info() -> RuntimeInfo:
    """What the engine runs on: its thread setting, whether it has the worker pool and
    its private single-threaded BLAS, and how many workers are alive.

    Returns
    -------
    info : dict
        ``num_threads``: the thread setting here (``get_num_threads()``); ``pool``: whether
        the engine was built with its worker pool; ``private_blas``: whether it loaded its
        own single-threaded OpenBLAS (else SciPy's BLAS runs the GEMMs on the calling
        thread); ``workers``: how many worker threads are alive; ``stalls``: how many
        times a job waited for a worker that the machine had descheduled;
        ``calm_jobs``: the jobs run on the calling thread alone because of them (with
        VECCONV_ADAPT_THREADS=1, two stalls within 0.1 s send the next 0.2 s of jobs
        there); ``openmp_jobs``: the jobs run on the threads of the process's OpenMP
        runtime, which another library (PyTorch) loaded (-1 where this build cannot;
        VECCONV_JOIN_OPENMP=0 turns it off); ``openmp_rests``: the rests from those
        threads after two jobs within 0.1 s waited over 3.5 ms for one of them (a busy
        machine: the next jobs run on vecconv's own; a rest lasts 10 ms, twice the last
        one's length if that ended under 0.2 s before, at most 0.2 s).
    """
    stalls, calm_jobs = _engine.stall_counts()
    openmp_jobs, openmp_rests = _engine.openmp_jobs()
    return RuntimeInfo(num_threads=_config.get_num_threads(), pool=_engine.have_threads(),
                       private_blas=_engine.private_blas(),
                       workers=_engine.workers_started(), stalls=stalls,
                       calm_jobs=calm_jobs, openmp_jobs=openmp_jobs,
                       openmp_rests=openmp_rests)


# ----------------------------------------------------------------------------- threadpoolctl
_registered = False


def _register_threadpoolctl() -> None:
    """Teach threadpoolctl about vecconv (``threadpool_info()`` lists it and
    ``threadpool_limits(n)`` limits it), once, when threadpoolctl has the custom-controller
    API (3.5+). vecconv never imports threadpoolctl itself (its import sets
    KMP_DUPLICATE_LIB_OK in the environment): see ``_ThreadpoolctlWatch``."""
    global _registered
    if _registered:
        return
    threadpoolctl = sys.modules.get("threadpoolctl")
    register = getattr(threadpoolctl, "register", None)
    base = getattr(threadpoolctl, "LibController", None)
    if register is None or base is None:
        return
    _registered = True

    class VecconvController(base):  # type: ignore[misc, valid-type]
        user_api = "vecconv"
        internal_api = "vecconv"
        filename_prefixes = ("_engine",)
        check_symbols = ("vecconv_get_num_threads", "vecconv_set_num_threads")

        def get_num_threads(self) -> int:
            return int(self.dynlib.vecconv_get_num_threads())

        def set_num_threads(self, num_threads: int) -> None:
            # threadpoolctl passes any int; C would truncate it
            self.dynlib.vecconv_set_num_threads(
                max(1, min(int(num_threads), _config.MAX_THREADS)))

        def get_version(self) -> str:
            from . import __version__
            return __version__

        def set_additional_attributes(self) -> None:
            pass

    try:
        register(VecconvController)
    except Exception:           # a threadpoolctl whose API differs: do without it
        pass


class _ThreadpoolctlWatch(importlib.abc.MetaPathFinder):
    """Registers vecconv with threadpoolctl right after threadpoolctl is imported, in
    whichever order the two are imported: its ``threadpool_limits(n)`` then limits vecconv
    from its first use. The finder only wraps threadpoolctl's own loader; every other
    import passes through untouched."""

    def find_spec(self, fullname, path=None, target=None):  # type: ignore[no-untyped-def]
        if fullname != "threadpoolctl":
            return None
        sys.meta_path.remove(self)           # find the real spec, once
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        loader = spec.loader

        class _Loader(importlib.abc.Loader):
            def create_module(self, spec):  # type: ignore[no-untyped-def]
                return loader.create_module(spec)

            def exec_module(self, module):  # type: ignore[no-untyped-def]
                loader.exec_module(module)
                sys.modules[fullname] = module   # register() looks it up by name
                _unwatch()
                _register_threadpoolctl()

        spec.loader = _Loader()
        return spec


_watch = _ThreadpoolctlWatch()


def _unwatch() -> None:
    if _watch in sys.meta_path:
        sys.meta_path.remove(_watch)


_engine.set_num_threads(_config.DEFAULT_THREADS)
_engine.set_stall_policy(_config.ADAPT_THREADS)


def _multiprocessing_child() -> bool:
    """Whether this process was started by multiprocessing (its module is imported before
    any of the child's code runs): a forked one holds a copy of its parent's libgomp pool
    without its threads, so vecconv's jobs stay on its own workers there."""
    mp = sys.modules.get("multiprocessing")
    return mp is not None and mp.parent_process() is not None


_engine.set_join_openmp(_config.JOIN_OPENMP and not _multiprocessing_child())
_load_private_blas()
if "threadpoolctl" in sys.modules:
    _register_threadpoolctl()
else:
    sys.meta_path.insert(0, _watch)
