"""vecconv's settings, in one place: the workspace budget, the thread count, and every
``VECCONV_*`` environment variable.

Each setting has a process-wide default (``set_config``) and a per-context override
(``with config(...)``): the overrides are context variables, so two Python threads in
blocks of their own neither see nor undo each other's. The environment is read once, at
import; nothing here writes it.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import warnings
from collections.abc import Iterator
from typing import TypedDict

from . import _engine
from ._validate import integer

__all__ = ["config", "get_config", "set_config", "set_workspace", "get_workspace",
           "set_num_threads", "get_num_threads", "threads"]


# ----------------------------------------------------------------------------- environment
def env_int(name: str, default: int, minimum: int = 1, maximum: int = 2**62) -> int:
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
    warnings.warn(f"{name}={text!r} is not an integer from {minimum} to {maximum}; using "
                  f"{default}", RuntimeWarning, stacklevel=2)
    return default


def env_off(name: str) -> bool:
    """Whether a switch variable says off (0, false, no, off)."""
    return os.environ.get(name, "1").strip().lower() in ("0", "false", "no", "off")


#: The engine's own cap on its thread count (the C runtime clamps to the same number).
MAX_THREADS: int = _engine.MAX_THREADS


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


#: The thread count at import: the CPUs this process may run on, or VECCONV_NUM_THREADS.
DEFAULT_THREADS = env_int("VECCONV_NUM_THREADS", min(_usable_cpus(), MAX_THREADS), 1,
                          MAX_THREADS)
#: VECCONV_PRIVATE_BLAS=0 keeps the engine on SciPy's BLAS (for tests of that fallback).
PRIVATE_BLAS = not env_off("VECCONV_PRIVATE_BLAS")

#: The column buffer of one tile is written by im2col and read back by the GEMM right
#: after: sized to stay in cache between the two (measured on this machine, see bench/).
TILE_BYTES = env_int("VECCONV_TILE_BYTES", 4 * 2**20)
#: Tiles with fewer output positions per image than this stage dY/Y as one matrix and
#: make one GEMM for the whole tile (LeNet-5's C5 has one position per image).
STAGE_BELOW = env_int("VECCONV_STAGE_BELOW", 64, 0)
#: Columns (images x positions) a staged tile has at least, when the batch allows.
STAGE_WIDTH = env_int("VECCONV_STAGE_WIDTH", 32)
#: Below this many floating-point operations a convolution pass runs in the calling
#: thread alone: waking a worker costs more than it saves. Measured with bench/grain.py on
#: 2 cores: LeNet-sized forward+backward ran 0.54-0.80x as fast on 2 threads at 1-2 MFLOP
#: per pass, 1.06-1.11x at ~3.8 MFLOP, 1.42x at 15 MFLOP; beside two busy processes
#: 0.89-1.03x.
GRAIN_FLOPS = env_int("VECCONV_GRAIN_FLOPS", 4_000_000, 0)
#: Below this many window taps a pooling runs in the calling thread alone. Measured with
#: bench/pool.py.
POOL_GRAIN = env_int("VECCONV_POOL_GRAIN", 1 << 17, 0)

#: VECCONV_ADAPT_THREADS=1: after two jobs within 0.1 s whose caller waited for a
#: descheduled worker, the next 0.2 s of jobs run on the calling thread alone
#: (``_runtime.h``; the same bits for any thread count). Off by default: beside two busy
#: processes it took a LeNet-5 step from 1.92-2.27x its idle time to 1.37-1.95x, but on
#: a shared host whose other guests steal time it also fired on an idle machine, and a
#: 256-image MNIST-sized layer ran 1.5x slower.
ADAPT_THREADS = os.environ.get("VECCONV_ADAPT_THREADS", "0").strip().lower() in (
    "1", "true", "yes", "on")

#: VECCONV_JOIN_OPENMP=0: never run jobs on the process's OpenMP runtime. By default,
#: where another library (PyTorch) has loaded libgomp, vecconv's jobs run on its threads:
#: after each PyTorch call they spin for some milliseconds, and a job of vecconv's own
#: threads started meanwhile shared the cores with them (``_runtime.h``).
JOIN_OPENMP = os.environ.get("VECCONV_JOIN_OPENMP", "1").strip().lower() not in (
    "0", "false", "no", "off")

#: The column buffers' default budget.
DEFAULT_WORKSPACE = 64 * 2**20


# ----------------------------------------------------------------------------- settings
class Config(TypedDict):
    """``get_config()``'s answer."""
    workspace: int
    threads: int


_workspace = DEFAULT_WORKSPACE
_scoped_workspace: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "vecconv_workspace", default=None)
_scoped_threads: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "vecconv_threads", default=None)


def _check_workspace(nbytes: object) -> int:
    return integer("workspace", nbytes, 1)


def _check_threads(n: object) -> int:
    return integer("threads", n, 1, MAX_THREADS)


def get_workspace() -> int:
    """The workspace budget of the column buffers in effect here.

    Returns
    -------
    nbytes : int
        The innermost ``config(workspace=...)`` block's budget in the current thread,
        else the process's (64 MiB unless ``set_workspace`` changed it).
    """
    scoped = _scoped_workspace.get()
    return _workspace if scoped is None else scoped


def set_workspace(nbytes: int) -> int:
    """Set the default workspace budget (bytes) for the column buffers; returns the old one.

    The convolution is computed in tiles (groups of images, or bands of output positions
    of one image) whose column buffers, one per thread, stay within the budget. Within it
    the engine picks tiles of about 4 MiB, which stay in cache between im2col and the
    GEMM that reads them. The budget is exceeded only when a single output position's
    column is larger than it.

    Parameters
    ----------
    nbytes : int
        The new budget in bytes, at least 1. A call's ``workspace=``, or a
        ``config(workspace=...)`` block, overrides it.

    Returns
    -------
    old : int
        The budget before this call.
    """
    global _workspace
    old = _workspace
    _workspace = integer("nbytes", nbytes, 1)
    return old


def get_num_threads() -> int:
    """How many threads vecconv's engine uses here (the caller included).

    Returns
    -------
    n : int
        The innermost ``threads(n)`` or ``config(threads=n)`` block's n in the current
        thread, else the process's setting (``set_num_threads``).
    """
    scoped = _scoped_threads.get()
    return _engine.get_num_threads() if scoped is None else scoped


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


def get_config() -> Config:
    """The settings in effect here.

    Returns
    -------
    config : dict
        ``workspace``: the column buffers' byte budget (``get_workspace()``);
        ``threads``: the engine's thread count (``get_num_threads()``).
    """
    return Config(workspace=get_workspace(), threads=get_num_threads())


def set_config(*, workspace: int | None = None, threads: int | None = None) -> Config:
    """Set the process's defaults; returns the settings before the call.

    Parameters
    ----------
    workspace : int, optional
        The column buffers' byte budget (as ``set_workspace``).
    threads : int, optional
        The engine's thread count, 1 to 1024 (as ``set_num_threads``).

    Returns
    -------
    old : dict
        The process's settings before this call.
    """
    if workspace is not None:
        workspace = _check_workspace(workspace)
    if threads is not None:
        threads = _check_threads(threads)
    old = Config(workspace=_workspace, threads=_engine.get_num_threads())
    if workspace is not None:
        set_workspace(workspace)
    if threads is not None:
        set_num_threads(threads)
    return old


@contextlib.contextmanager
def config(*, workspace: int | None = None, threads: int | None = None) -> Iterator[Config]:
    """``with vecconv.config(workspace=..., threads=...):`` overrides settings in a block.

    The overrides belong to the current thread (context variables): two Python threads in
    blocks of their own do not see, or undo, each other's. Threads started inside the
    block do not inherit them. A call's own ``workspace=`` still takes precedence.

    Parameters
    ----------
    workspace : int, optional
        The column buffers' byte budget in the block.
    threads : int, optional
        The engine's thread count in the block, 1 to 1024.

    Yields
    ------
    config : dict
        The settings in effect inside the block.
    """
    tokens = []
    if workspace is not None:
        workspace = _check_workspace(workspace)
    if threads is not None:
        threads = _check_threads(threads)
    try:
        if workspace is not None:
            tokens.append((_scoped_workspace, _scoped_workspace.set(workspace)))
        if threads is not None:
            tokens.append((_scoped_threads, _scoped_threads.set(threads)))
        yield get_config()
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


@contextlib.contextmanager
def threads(n: int) -> Iterator[None]:
    """``with vecconv.threads(1): ...`` runs the block's vecconv calls on n threads.

    The same as ``config(threads=n)``: the override belongs to the current thread (a
    context variable), and threads started inside the block do not inherit it.

    Parameters
    ----------
    n : int
        The number of threads for the block's calls, 1 to 1024.

    Yields
    ------
    None
        The block runs with the override; it is undone when the block is left.
    """
    token = _scoped_threads.set(integer("n", n, 1, MAX_THREADS))
    try:
        yield
    finally:
        _scoped_threads.reset(token)
