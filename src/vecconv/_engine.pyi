# Type stub of the compiled engine (_engine.pyx + _pool.pxi): what each kernel takes and
# returns, for type checkers. The kernels assume clean input (C-contiguous, one float
# dtype for every array of a call, sizes already checked); vecconv's Python layer makes it.
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray


# the planner-kernel contract (declared in _engine.pxd)
class Geometry:
    channels: int
    size: tuple[int, int, int]
    kernel: tuple[int, int, int]
    stride: tuple[int, int, int]
    dilation: tuple[int, int, int]
    pad: tuple[int, int, int]
    out: tuple[int, int, int]
    mode: int
    fill: float
    def __init__(self, channels: int, size: tuple[int, ...], kernel: tuple[int, ...],
                 stride: tuple[int, ...], dilation: tuple[int, ...], pad: tuple[int, ...],
                 out: tuple[int, ...], mode: int = ..., fill: float = ...) -> None: ...
    @property
    def taps(self) -> int: ...
    @property
    def positions(self) -> int: ...
    def replace(self, **changes: Any) -> Geometry: ...

class Schedule:
    pointwise: bool
    staged: bool
    tile_images: int
    tile_positions: int
    n_tiles: int
    round_tiles: int
    n_acc: int
    dx_images: int
    dx_span: int
    dx_cblock: int
    dx_pieces: int
    dx_round: int
    buf_elems: int
    max_slots: int
    def __init__(self, pointwise: bool, staged: bool, tile_images: int, tile_positions: int,
                 n_tiles: int, round_tiles: int, n_acc: int, dx_images: int, dx_span: int,
                 dx_cblock: int, dx_pieces: int, dx_round: int, buf_elems: int,
                 max_slots: int) -> None: ...

class PoolAxis:
    n: int
    dilation: int
    first: NDArray[np.int64]
    count: NDArray[np.int64]
    div: NDArray[np.int64]
    def __init__(self, n: int, dilation: int, first: NDArray[np.int64],
                 count: NDArray[np.int64], div: NDArray[np.int64]) -> None: ...

class PoolInterior:
    kw: int
    sw: int
    pw: int
    lo: int
    hi: int
    def __init__(self, kw: int, sw: int, pw: int, lo: int, hi: int) -> None: ...

MAX_THREADS: int

# one float dtype per call: Cython's fused `floating`
_F = TypeVar("_F", np.float32, np.float64)

def load_private_blas(path: str) -> bool: ...
def private_blas() -> bool: ...
def have_threads() -> bool: ...
def workers_started() -> int: ...
def get_num_threads() -> int: ...
def set_num_threads(n: int) -> None: ...
def gemm_into(a: NDArray[_F], b: NDArray[_F], c: NDArray[_F], trans_a: bool = ...,
              trans_b: bool = ..., count: int = ..., a_step: int = ..., b_step: int = ...,
              c_step: int = ..., beta: float = ..., threads: int = ...) -> None: ...
def conv_forward(x: NDArray[_F], w2: NDArray[_F], bias: NDArray[_F], y: NDArray[_F],
                 has_bias: bool, geometry: Geometry, sched: Schedule, N: int, cout: int,
                 groups: int, threads: int, slots: int) -> None: ...
def conv_backward(dy: NDArray[_F], x: NDArray[_F], w2: NDArray[_F], dx: NDArray[_F],
                  acc: NDArray[_F], need_dx: bool, need_dw: bool, geometry: Geometry,
                  sched: Schedule, N: int, cout: int, groups: int, threads: int,
                  slots: int) -> None: ...
def unfold(src: NDArray[_F], dst: NDArray[_F], geometry: Geometry, N: int, cblock: int,
           threads: int, scatter: bool) -> None: ...
def pool_forward(x: NDArray[_F], y: NDArray[_F], idx: NDArray[np.int64],
                 tables: tuple[PoolAxis, ...], inner: PoolInterior, maps: int, is_max: bool,
                 override: float, rows_per_unit: int,
                 threads: int) -> None: ...
def pool_backward(dy: NDArray[_F], dx: NDArray[_F], idx: NDArray[np.int64],
                  tables: tuple[PoolAxis, ...], inner: PoolInterior, maps: int, is_max: bool,
                  override: float, maps_per_unit: int,
                  threads: int) -> bool: ...
