"""vecconv's parallelism: one setting, vecconv's own threads, nothing process-wide.

The engine runs each call on the calling thread and a small pool of worker threads of
its own (``_runtime.h``); every worker does its share end to end (im2col, GEMM, col2im)
with single-threaded GEMMs on a private OpenBLAS. Importing vecconv changes no
environment variable and no other library's thread count.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import sys
from collections.abc import Iterator
from typing import TypedDict

from . import _engine
from ._args import integer

__all__ = ["set_num_threads", "get_num_threads", "threads", "runtime_info"]

#: More threads than this is surely a mistake (and the pool would create them).
MAX_THREADS = 1024


def env_int(name, default, minimum=1, maximum=2**62):
    """An integer knob from the environment; a value that is not one (or out of range)
    is ignored with a warning, never an import error."""
    text = os.environ.get(name)
    if not text:
        return default
    try:
        value = int(text)
        if minimum <= value <= maximum:
            return value
    except ValueError:
        pass
    import warnings
    warnings.warn(f"{name}={text!r} is not an integer from {minimum} to {maximum}; using "
                  f"{default}", RuntimeWarning, stacklevel=2)
    return default


def _usable_cpus():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _default_threads():
    return env_int("VECCONV_NUM_THREADS", min(_usable_cpus(), MAX_THREADS), 1, MAX_THREADS)


def _load_private_blas():
    """The engine's own OpenBLAS: the scipy-openblas32 wheel's library, another file than
    SciPy's copy, so its one-thread setting is the engine's alone. Without it the engine
    uses SciPy's BLAS and runs the GEMM passes on the calling thread.

    The wheel's Python package is not imported: importing it loads the library into the
    global namespace for builds linked against it. The engine finds the file and loads it
    privately, and refuses it when something else has already loaded it (then it is not
    the engine's to hold at one thread).
    """
    if os.environ.get("VECCONV_PRIVATE_BLAS", "1").strip().lower() in ("0", "false", "no", "off"):
        return False                                            # (tests of the fallback)
    import importlib.util
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


#: threads(n) blocks: a per-context (so per-Python-thread) override of the setting
_scoped: contextvars.ContextVar[int | None] = contextvars.ContextVar("vecconv_threads",
                                                                  default=None)


def set_num_threads(n: int) -> int:
    """Set how many threads vecconv's engine uses (the caller included); returns the old
    setting.

    This is the process's default; ``with vecconv.threads(n):`` overrides it for the code
    in the block alone. Only vecconv is affected: no environment variable and no other
    library's thread count is changed. The default is the number of CPUs this process may
    run on, or ``VECCONV_NUM_THREADS`` when set. Results are bit-for-bit the same for any
    setting.

    Parameters
    ----------
    n : int
        The number of threads, 1 to 1024; 1 runs every call on the calling thread.

    Returns
    -------
    old : int
        The setting before this call.
    """
    old = _engine.get_num_threads()
    _engine.set_num_threads(integer("n", n, 1, MAX_THREADS))
    return old


def get_num_threads() -> int:
    """How many threads vecconv's engine uses here (the caller included): the innermost
    ``threads(n)`` block's n, else the process's setting.

    Returns
    -------
    n : int
        The innermost ``threads(n)`` block's n in the current thread, else the process's
        setting (``set_num_threads``).
    """
    if not _registered and "threadpoolctl" in sys.modules:
        _register_threadpoolctl()
    scoped = _scoped.get()
    return _engine.get_num_threads() if scoped is None else scoped


@contextlib.contextmanager
def threads(n: int) -> Iterator[None]:
    """``with vecconv.threads(1): ...`` runs the block's vecconv calls on n threads.

    The override belongs to the current thread (a context variable): two Python threads
    in blocks of their own do not see, or undo, each other's. Threads started inside the
    block do not inherit it.

    Parameters
    ----------
    n : int
        The number of threads for the block's calls, 1 to 1024.

    Yields
    ------
    None
        The block runs with the override; it is undone when the block is left.
    """
    token = _scoped.set(integer("n", n, 1, MAX_THREADS))
    try:
        yield
    finally:
        _scoped.reset(token)


def runtime_info() -> RuntimeInfo:
    """What the engine runs on: its thread setting, whether it has the worker pool and
    its private single-threaded BLAS, and how many workers are alive.

    Returns
    -------
    info : dict
        ``num_threads``: the thread setting here (``get_num_threads()``); ``pool``: whether
        the engine was built with its worker pool; ``private_blas``: whether it loaded its
        own single-threaded OpenBLAS (else SciPy's BLAS runs the GEMMs on the calling
        thread); ``workers``: how many worker threads are alive.
    """
    return dict(num_threads=get_num_threads(), pool=_engine.have_threads(),
                private_blas=_engine.private_blas(), workers=_engine.workers_started())


_registered = False


def _register_threadpoolctl():
    """Teach threadpoolctl about vecconv (``threadpool_info()`` lists it and
    ``threadpool_limits(n)`` limits it) once threadpoolctl is imported and has the
    custom-controller API (3.5+). vecconv never imports it itself: its import sets
    KMP_DUPLICATE_LIB_OK in the environment. So vecconv registers at its own import when
    threadpoolctl is already there, else at its first call after threadpoolctl arrives."""
    global _registered
    _registered = True
    threadpoolctl = sys.modules.get("threadpoolctl")
    register = getattr(threadpoolctl, "register", None)
    base = getattr(threadpoolctl, "LibController", None)
    if register is None or base is None:
        return

    class VecconvController(base):
        user_api = "vecconv"
        internal_api = "vecconv"
        filename_prefixes = ("_engine",)
        check_symbols = ("vecconv_get_num_threads", "vecconv_set_num_threads")

        def get_num_threads(self):
            return self.dynlib.vecconv_get_num_threads()

        def set_num_threads(self, num_threads):
            # threadpoolctl passes any int; C would truncate it
            self.dynlib.vecconv_set_num_threads(max(1, min(int(num_threads), MAX_THREADS)))

        def get_version(self):
            from . import __version__
            return __version__

        def set_additional_attributes(self):
            pass

    try:
        register(VecconvController)
    except Exception:           # a threadpoolctl whose API differs: do without it
        pass


_engine.set_num_threads(_default_threads())
_load_private_blas()
if "threadpoolctl" in sys.modules:
    _register_threadpoolctl()
