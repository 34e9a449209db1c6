# The contract between the planner (Python) and the kernels, declared once: the planner
# builds these objects (vecconv._plan, vecconv._pool_plan), the kernels read their typed
# fields directly. Python sees every field as a read-only attribute.

cdef class Geometry:
    """One convolution's geometry over three spatial axes (D, H, W); 1-D and 2-D
    convolutions have leading axes of size 1."""
    cdef readonly Py_ssize_t channels   # input channels C
    cdef readonly tuple size            # input size per axis
    cdef readonly tuple kernel          # kernel size per axis
    cdef readonly tuple stride
    cdef readonly tuple dilation
    cdef readonly tuple pad             # padding before each axis (after is implied by out)
    cdef readonly tuple out             # output size per axis
    cdef readonly int mode              # how a padded tap reads: _options.PADDING_MODES
    cdef readonly double fill           # the value of a constant pad


cdef class Schedule:
    """How a convolution's work is cut into units for the thread pool."""
    cdef readonly bint pointwise        # route POINTWISE: the GEMMs read x itself
    cdef readonly bint staged           # route STAGED: one GEMM per tile over a staged matrix
    cdef readonly Py_ssize_t tile_images     # whole images per tile, or 0: bands of one image
    cdef readonly Py_ssize_t tile_positions  # output positions per band (tile_images == 0)
    cdef readonly Py_ssize_t n_tiles
    cdef readonly Py_ssize_t round_tiles     # tiles per round (forward and dW)
    cdef readonly Py_ssize_t n_acc           # dW chunks per round, each with its accumulator
    cdef readonly Py_ssize_t dx_images       # whole images per dx piece, or 0: spans of one
    cdef readonly Py_ssize_t dx_span         # output positions per dx piece (dx_images == 0)
    cdef readonly Py_ssize_t dx_cblock       # input channels per dx unit (within a group)
    cdef readonly Py_ssize_t dx_pieces
    cdef readonly Py_ssize_t dx_round        # dx pieces per round
    cdef readonly Py_ssize_t buf_elems       # elements of one column buffer
    cdef readonly Py_ssize_t max_slots       # column buffers the budget allows (one per thread)


cdef class PoolAxis:
    """One axis of a pooling: its size n, the dilation, and per window (output index) the
    first tap inside x, the number of taps inside x, and the divisor (int64 arrays)."""
    cdef readonly Py_ssize_t n
    cdef readonly Py_ssize_t dilation
    cdef readonly object first
    cdef readonly object count
    cdef readonly object div


cdef class PoolInterior:
    """The last axis's interior: window kw, stride sw, padding pw, and the outputs
    [lo, hi) whose windows lie wholly inside x (walked tap by tap, without tables)."""
    cdef readonly Py_ssize_t kw, sw, pw, lo, hi
