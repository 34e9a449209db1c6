"""``scipy.signal``'s convolution functions, computed by vecconv's engine.

Replacing ``scipy.signal`` by ``vecconv.signal`` in an import is all a user does::

    from vecconv.signal import correlate, convolve, correlate2d, convolve2d, fftconvolve

The functions take SciPy's arguments and give SciPy's output shapes, dtypes and errors:
``correlate``, ``convolve`` (any rank, ``mode='full'|'valid'|'same'``,
``method='auto'|'direct'|'fft'``, and ``'oa'``), ``correlate2d``, ``convolve2d``
(``boundary='fill'|'wrap'|'symm'``, ``fillvalue``), ``fftconvolve``, ``oaconvolve``
(``axes=``), ``choose_conv_method`` and ``correlation_lags``.

Routes
~~~~~~
``method='direct'``
    vecconv's engine (im2col + one GEMM per image and group, vecconv's threads, the GIL
    released): ``vecconv.conv`` with the padding that the mode means. Every real
    float32/float64 input of 1 to 3 axes runs here; float32 stays float32. Axes where the
    kernel has length 1 become the batch axis, so ``in2`` of shape ``(1, k)`` filters every
    row of ``in1`` in one call.
``method='fft'``
    ``fftconvolve``: real or complex FFTs of ``scipy.fft`` at next fast lengths, on
    ``vecconv.get_num_threads()`` workers for transforms of 2**17 entries or more (one
    worker below that, where a second costs more than it saves).
``method='oa'`` (vecconv's route)
    ``oaconvolve``, the overlap-add method, for a kernel much shorter than the signal.
``method='auto'``
    The route of least predicted time (``choose_conv_method``), from a cost model whose
    constants were measured on this project's machine (``bench/signal_methods.py
    --fit``; ``_COSTS`` and ``_NUMPY_COSTS``), not from SciPy's operation counts. The
    candidates:

    * NumPy's direct product, ``numpy.correlate``/``numpy.convolve`` (what SciPy's own
      direct method is in 1-D), when both inputs are 1-D, not empty, of float32, float64,
      complex64, complex128, integer or bool result dtype, and, for 'same', ``in1`` is at
      least as long as ``in2`` (NumPy centres 'same' on the longer input). Its result is
      SciPy's to the bit: NumPy's result dtype (float32 stays float32), integers exact and
      wrapping as SciPy's do. It wins for short signals and short kernels, where the fixed
      cost of a call decides (a few microseconds against the engine's tens), and it keeps
      a near tie: another route replaces it only when predicted at 0.85 of its time or
      less (``_TIE``);
    * vecconv's engine (as ``'direct'``): 2-D and 3-D inputs with small kernels, long 1-D
      signals with kernels up to some tens of taps, batches (a length-1 axis of a kernel,
      ``axes=``) and filter banks, which are one engine call;
    * FFTs (as ``'fft'``) for large kernels, and overlap-add (as ``'oa'``) for 1-D signals
      much longer than a large kernel (on 2-D images the model ranked it above one FFT
      where it ran 1.5x slower, so it is not a candidate there). A near tie between the
      engine and a frequency route goes to the frequency route, whose predictions are
      the closer ones (the engine must be predicted at 0.85 of its time or less).

    Integer inputs take no FFT when a product could pass float64's exact range (SciPy's
    rule, checked on every call); bool inputs, extended precision and object arrays take
    a direct route. The model's answer for a shape and dtype is kept, so a repeated call
    costs a dictionary look-up to decide.

Complex inputs
~~~~~~~~~~~~~~
Supported by every route. The direct route splits each complex input into its real and
imaginary parts, stacked as two channels of ``x`` and two output channels of ``w``: one
engine call makes the four real convolutions, which are then combined
(``(a+ib)(c+id) = (ac-bd) + i(ad+bc)``). A real input with a complex one takes two.

Where SciPy itself does the work
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
``scipy.signal`` is imported only then, and only for:

* the direct route of more than 3 convolution axes (the engine has 1 to 3), where no axis
  of ``in2`` has length 1 to fold into the batch;
* dtypes the engine has no exact or faithful counterpart for: object, ``longdouble`` and
  ``clongdouble``, and integer inputs whose exact result could pass 2**53 (below that the
  engine computes in float64 and the result is rounded and cast back, which is exact,
  wrapping included);
* empty inputs on the direct route.

Beyond SciPy
~~~~~~~~~~~~
* ``axes=`` on ``correlate`` and ``convolve`` (keyword only): convolve along those axes;
  along the others the inputs must have equal lengths or a length of 1 and broadcast.
  A length-1 axis of ``in2`` is a batch of ``in1``; a length-1 axis of ``in1`` applies
  ``in2``'s entries along it to the same ``in1`` (a filter bank); equal lengths pair
  entry with entry (vecconv's ``groups``). 'same' keeps ``in1``'s length along the
  convolution axes and the broadcast length along the others.
* ``correlate_bank(in1, kernels, mode)`` and ``convolve_bank``: a stack of kernels
  ``(K, *k)`` applied to one ``in1``, giving ``(K, *out)`` from one engine call (one GEMM
  with K output channels, the patch matrix of ``in1`` made once).
* ``method='oa'`` on ``correlate``/``convolve``.

Differences from SciPy, all documented: bool and float16 inputs of 2 or more axes, which
SciPy's direct route refuses ("Unsupported type"), are computed (float16 in float32, bool
as "any product"); float16 results of the direct route are rounded from float32 sums.
"""

from __future__ import annotations

import math
import numbers
import operator
import timeit
import warnings
from collections.abc import Sequence
from typing import Any, Literal, Union, overload

import numpy as np
import scipy.fft as _fft
from numpy.typing import NDArray

import vecconv
from vecconv._typing import ArrayInput

#: the ``mode`` of every function here
Mode = Literal["full", "valid", "same"]
#: ``method`` of ``correlate``/``convolve``: SciPy's three and vecconv's overlap-add
Method = Literal["auto", "direct", "fft", "oa"]
#: ``boundary`` of ``correlate2d``/``convolve2d``, with SciPy's synonyms
Boundary = Literal["fill", "pad", "wrap", "circular", "symm", "symmetric"]
#: ``axes``: one axis or several
Axes = Union[int, Sequence[int], None]

__all__ = ["correlate", "convolve", "correlate2d", "convolve2d", "fftconvolve", "oaconvolve",
           "choose_conv_method", "correlation_lags", "correlate_bank", "convolve_bank"]

_MODES = ("valid", "same", "full")
_METHODS = ("auto", "direct", "fft", "oa")
_BOUNDARIES = {"fill": "fill", "pad": "fill", "wrap": "wrap", "circular": "wrap",
               "symm": "symm", "symmetric": "symm"}
_EXACT = 2 ** 53          # integers below this are exact in float64
_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)

#: Cost model of ``method='auto'`` (seconds), measured on this project's machine by
#: ``python bench/signal_methods.py --fit`` (see there and bench/results/
#: signal_methods.json for the machine, the samples and the fit).
#: vecconv's routes: ``t = c0 + c1 * work + c2 * work * max(0, 1 - _BIG_BYTES / nbytes)``:
#: a unit of work costs c1 while the data it streams stays in the caches, and more (c2)
#: for the share past ``_BIG_BYTES``. ``direct`` work is output entries x kernel taps of one
#: real pass, its data the patch matrix; ``fft`` work is the sum over the three transforms
#: of N log2 N, N the product of the fast lengths, its data 4 N entries (inputs, spectra,
#: output); ``oa`` the same for the overlap-add blocks (1-D only). The direct route has a
#: fourth constant, a cost per output entry (its patch matrix's rows: what a 3-tap kernel
#: pays). Keys: (route, itemsize of the working real dtype, 1 for 1-D else 2).
_COSTS = {
    ("direct", 4, 1): (3.03e-05, 1.86e-10, 1.06e-10, 4.34e-12),
    ("direct", 4, 2): (3.1e-05, 2.27e-10, 0, 4.22e-11),
    ("direct", 8, 1): (3.3e-05, 3.51e-10, 3.08e-11, 6.75e-10),
    ("direct", 8, 2): (2.31e-05, 3.03e-10, 0, 1.52e-09),
    ("fft", 4, 1): (4.91e-05, 4.21e-10, 1.46e-11),
    ("fft", 4, 2): (4.89e-05, 1.86e-10, 1.53e-12),
    ("fft", 8, 1): (5.29e-05, 4.95e-10, 3.31e-10),
    ("fft", 8, 2): (4.97e-05, 2.91e-10, 1.13e-10),
    ("oa", 4, 1): (0.000105, 3.37e-10, 0),
    ("oa", 8, 1): (0.000119, 5.87e-10, 2.94e-10),
}
#: NumPy's 1-D direct product (``numpy.convolve``/``numpy.correlate``, SciPy's own direct
#: method in 1-D): ``t = c0 + out * (c_out + c_tap * k)``, out the output entries and k the
#: shorter input's length. Keys: (result dtype's kind and itemsize, or "int" for integers
#: and bools; whether k <= ``_NP_SMALL_KERNEL``).
_NUMPY_COSTS = {
    ("c16", False): (6.65e-07, 1.81e-08, 2.94e-10),
    ("c16", True): (1.13e-06, 1.78e-08, 2.47e-10),
    ("c8", False): (1.2e-06, 9.17e-09, 1.39e-10),
    ("c8", True): (1.24e-06, 5.82e-09, 5.22e-10),
    ("f4", False): (1.46e-06, 6.76e-09, 5.04e-11),
    ("f4", True): (1.3e-06, 2.3e-10, 1.45e-10),
    ("f8", False): (1.16e-06, 5.83e-09, 9.32e-11),
    ("f8", True): (1.29e-06, 0, 1.82e-10),
    ("int", False): (1.05e-06, 4.08e-10, 5.25e-10),
    ("int", True): (1.26e-06, 8.82e-10, 4.8e-10),
}
#: past this many bytes a route's data falls out of the caches (2 MiB of L2 per core and
#: 32 MiB of L3 shared with other jobs here) and its work costs more (measured: the direct
#: route's 0.2-0.3 ns per float32 tap on 256**2 images, 0.4-0.9 ns on 1024**2; overlap-add
#: of 2**20 float64 samples at 4x the time of float32)
_BIG_BYTES = 8 << 20
#: a near tie: a route replaces NumPy's 1-D product, and the direct route replaces the
#: frequency routes, only when predicted at this fraction of their time or less (the
#: model's median errors are 5-20%)
_TIE = 0.85
#: NumPy's correlate runs kernels of at most this many taps by unrolled loops
#: (``small_correlate``: float32 or float64); longer ones by one dot product per output
_NP_SMALL_KERNEL = 11


# ----------------------------------------------------------------------------- helpers
def _scipy_signal():
    """scipy.signal, imported on first use (it takes most of a second)."""
    import scipy.signal
    return scipy.signal


def _check_mode(mode, lower=False):
    if not isinstance(mode, str) or mode not in _MODES:
        if lower:       # fftconvolve and oaconvolve spell it so
            raise ValueError("acceptable mode flags are 'valid', 'same', or 'full'")
        raise ValueError("Acceptable mode flags are 'valid', 'same', or 'full'.")
    return mode


def _check_method(method):
    if not isinstance(method, str) or method not in _METHODS:
        raise ValueError("Acceptable method flags are 'auto', 'direct', or 'fft' "
                         "(or vecconv's 'oa').")
    return method


def _swap_needed(mode, s1, s2, axes=None):
    """True when 'valid' needs in2 as the larger input (SciPy's gh-5897 rule)."""
    if mode != "valid" or not s1:
        return False
    axes = range(len(s1)) if axes is None else axes
    first = all(s1[i] >= s2[i] for i in axes)
    second = all(s2[i] >= s1[i] for i in axes)
    if not (first or second):
        raise ValueError("For 'valid' mode, one must be at least as large as the other in "
                         "every dimension")
    return not first


def _norm_axes(axes, ndim):
    """``axes`` as a list of distinct non-negative ints (fftconvolve's checks)."""
    if axes is None:
        return list(range(ndim))
    try:
        seq = [axes] if np.ndim(axes) == 0 else list(np.asarray(axes).ravel()) \
            if np.ndim(axes) == 1 else None
    except (TypeError, ValueError):
        seq = None
    if seq is None or not all(isinstance(a, (numbers.Integral, np.integer))
                              and not isinstance(a, (bool, np.bool_)) for a in seq):
        raise ValueError("axes must be a scalar or iterable of integers")
    seq = [operator.index(a) for a in seq]
    if not seq:
        raise ValueError("when provided, axes cannot be empty")
    if any(a >= ndim or a < -ndim for a in seq):
        raise ValueError("axes exceeds dimensionality of input")
    seq = [a % ndim for a in seq]
    if len(set(seq)) != len(seq):
        raise ValueError("all axes must be unique")
    return seq


def _reverse(a, axes):
    sl = [slice(None)] * a.ndim
    for ax in axes:
        sl[ax] = slice(None, None, -1)
    return a[tuple(sl)]


def _reverse_conj(a, axes=None):
    r = _reverse(a, range(a.ndim) if axes is None else axes)
    return r.conj() if r.dtype.kind == "c" else r


def _centred(a, shape):
    start = [(n - m) // 2 for n, m in zip(a.shape, shape)]
    return a[tuple(slice(s, s + m) for s, m in zip(start, shape))]


def _work_dtype(rt):
    """(real working dtype, how the result is made) for a result dtype, or None when the
    engine has no faithful counterpart (object, extended precision)."""
    k, size = rt.kind, rt.itemsize
    if k == "f":
        if size == 8:
            return _F64, "float"
        if size == 4:
            return _F32, "float"
        if size == 2:
            return _F32, "float"
    elif k == "c":
        if size == 16:
            return _F64, "complex"
        if size == 8:
            return _F32, "complex"
    elif k in "biu":
        return _F64, "int"
    return None, None


def _absmax(a):
    """The largest magnitude in a, as a Python int (no integer overflow of abs)."""
    m = np.max(np.abs(a.astype(np.float64) if a.dtype.kind in "biu" else a))
    return int(math.ceil(float(m))) if np.isfinite(m) else _EXACT


def _int_exact(a, b):
    """Whether every partial sum of an integer convolution of a and b is below 2**53."""
    if a.size == 0 or b.size == 0:
        return True
    return _absmax(a) * _absmax(b) * min(a.size, b.size) < _EXACT


def _finish(y, rt, kind):
    """Cast a float result to the result dtype SciPy gives."""
    if kind == "int":
        if rt.kind == "b":
            return y > 0.5
        return np.rint(y).astype(np.int64).astype(rt)
    return y.astype(rt, copy=False)


# ----------------------------------------------------------------------------- geometry
def _pads(n, k, mode, before_rule):
    """(before, after) padding of one axis; ``before_rule(k)`` is 'same''s before."""
    if mode == "valid":
        return (0, 0)
    if mode == "full":
        return (k - 1, k - 1)
    before = before_rule(k)
    return (before, k - 1 - before)


def _same_nd(k):        # correlate/convolve of any rank, and convolve2d
    return k // 2


def _same_corr2d(k):    # correlate2d: SciPy centres its window one entry earlier
    return (k - 1) // 2


def _engine_real(x, w, mode, flip, conv_axes, same_rule=_same_nd, boundary="fill",
                 fill=0.0, algorithm="im2col"):
    """Real correlation (flip=False) or convolution (flip=True) of float arrays x and w
    (same ndim) along ``conv_axes``, the others broadcast; by vecconv.conv. The
    direct route of ``convolve``/``correlate`` asks for its im2col and GEMM (direct sums:
    the engine's own FFT algorithm would be a second frequency route, slower than
    ``fftconvolve`` where the model would want it); ``convolve2d``/``correlate2d``, which
    have no FFT route, leave the algorithm to the engine.

    x is the input being padded; the caller made sure that in 'valid' mode x is at least
    as long as w along every convolution axis. Returns the float result in x's order of
    axes, or None when the engine cannot take the shape (more than 3 convolution axes).
    """
    nd = x.ndim
    if nd <= 3 and len(conv_axes) == nd and boundary == "fill" and fill == 0 and \
            1 not in w.shape:
        # every axis a convolution axis: one image, one channel, one kernel
        pads = tuple(_pads(n, k, mode, same_rule) for n, k in zip(x.shape, w.shape))
        return vecconv.conv(x[None, None], w[None, None], padding=pads, flip=flip,
                            algorithm=algorithm)[0, 0]
    # a convolution axis of kernel length 1 is a batch axis (every mode keeps its length)
    conv = [ax for ax in conv_axes if w.shape[ax] != 1]
    others = [ax for ax in range(nd) if ax not in conv]
    A = [ax for ax in others if w.shape[ax] == 1 and x.shape[ax] != 1]      # batch
    C = [ax for ax in others if w.shape[ax] == x.shape[ax] and x.shape[ax] != 1]  # paired
    B = [ax for ax in others if x.shape[ax] == 1 and w.shape[ax] != 1]      # bank
    ones = [ax for ax in others if x.shape[ax] == 1 and w.shape[ax] == 1]
    if len(A) + len(B) + len(C) + len(ones) != len(others):
        raise ValueError(f"incompatible shapes for in1 and in2: {x.shape} and {w.shape}")
    d = len(conv)
    pads = [_pads(x.shape[ax], w.shape[ax], mode, same_rule) for ax in conv]
    mode_pad = {"fill": "constant", "wrap": "circular", "symm": "symmetric"}[boundary]
    if boundary == "fill" and fill == 0:
        mode_pad = "zeros"
    if boundary == "wrap" and any(max(p) > x.shape[ax] for p, ax in zip(pads, conv)) or (
            d == 0 and any(p != (0, 0) for p in pads)):
        # the engine wraps at most once around an axis; a kernel longer than that needs
        # the periodic extension made here (numpy.pad's 'wrap' repeats as SciPy does)
        widths = [(0, 0)] * nd
        for p, ax in zip(pads, conv):
            widths[ax] = p
        x = np.pad(x, widths, mode="wrap")
        pads = [(0, 0)] * d
        mode_pad = "zeros"
    if d == 0:
        return x * w
    if d > 3:
        return None
    lA = [x.shape[ax] for ax in A]
    lC = [x.shape[ax] for ax in C]
    lB = [w.shape[ax] for ax in B]
    nA, nC, nB = math.prod(lA), math.prod(lC), math.prod(lB)
    xs = np.transpose(x, A + C + B + ones + conv).reshape((nA, nC) + tuple(
        x.shape[ax] for ax in conv))
    ws = np.transpose(w, A + C + B + ones + conv).reshape((nC * nB, 1) + tuple(
        w.shape[ax] for ax in conv))
    kwargs = {}
    if mode_pad == "constant":
        kwargs["fill_value"] = float(fill)
    y = vecconv.conv(xs, ws, padding=tuple(pads), groups=nC, flip=flip, algorithm=algorithm,
                     padding_mode=mode_pad, **kwargs)
    out_conv = y.shape[2:]
    y = y.reshape(tuple(lA) + tuple(lC) + tuple(lB) + (1,) * len(ones) + out_conv)
    order = A + C + B + ones + conv
    return np.transpose(y, np.argsort(order))


def _engine(x, w, mode, flip, conv_axes, same_rule=_same_nd, boundary="fill", fill=0,
            algorithm="im2col"):
    """``_engine_real`` for real or complex x and w (already conjugated as needed):
    complex parts are stacked on two new axes, one engine call for all of them."""
    cx, cw = x.dtype.kind == "c", w.dtype.kind == "c"
    if not (cx or cw) and not isinstance(fill, complex):
        return _engine_real(x, w, mode, flip, conv_axes, same_rule, boundary, fill,
                            algorithm)
    fill = complex(fill)
    if boundary != "fill" or fill != 0:
        # each part would need its own fill: make the padding here, then 'valid'
        pads = [(0, 0)] * x.ndim
        for ax in conv_axes:
            if w.shape[ax] != 1:
                pads[ax] = _pads(x.shape[ax], w.shape[ax], mode, same_rule)
        npmode = {"fill": "constant", "wrap": "wrap", "symm": "symmetric"}[boundary]
        kw = {"constant_values": fill if cx or fill.imag else fill.real} \
            if npmode == "constant" else {}
        x = np.pad(x if cx or not fill.imag else x.astype(np.result_type(x, 1j)),
                   pads, mode=npmode, **kw)
        cx = x.dtype.kind == "c"
        mode, boundary, fill = "valid", "fill", 0
    xs = np.stack([x.real, x.imag]) if cx else x[None]
    ws = np.stack([w.real, w.imag]) if cw else w[None]
    axes = [ax + 2 for ax in conv_axes]
    y = _engine_real(xs[:, None], ws[None], mode, flip, axes, same_rule,
                     algorithm=algorithm)
    if y is None:
        return None
    if cx and cw:
        return (y[0, 0] - y[1, 1]) + 1j * (y[0, 1] + y[1, 0])
    if cx:
        return y[0, 0] + 1j * y[1, 0]
    return y[0, 0] + 1j * y[0, 1]


def _direct(in1, in2, mode, correlate_, conv_axes, rt=None):
    """The direct route: (result, True), or (None, False) when the engine cannot take it.

    ``conv_axes`` are the convolution axes (all of them when SciPy's functions are called
    SciPy's way). Follows SciPy's 'valid' rule: when in2 is the larger along the
    convolution axes, the roles swap.
    """
    rt = np.result_type(in1, in2) if rt is None else rt
    work, kind = _work_dtype(rt)
    if work is None or in1.size == 0 or in2.size == 0:
        return None, False
    if kind == "int" and not _int_exact(in1, in2):
        return None, False
    a = in1.astype(work, copy=False) if in1.dtype.kind != "c" else \
        in1.astype(np.result_type(work, np.complex64), copy=False)
    b = in2.astype(work, copy=False) if in2.dtype.kind != "c" else \
        in2.astype(np.result_type(work, np.complex64), copy=False)
    swap = _swap_needed(mode, a.shape, b.shape, conv_axes)
    if correlate_:
        # correlate(a, b) is convolve(a, reverse(conj(b))); the swap uses that form
        if swap:
            x, w, flip = _reverse_conj(b, conv_axes), a, True
        else:
            x, w, flip = a, (b.conj() if b.dtype.kind == "c" else b), False
    else:
        x, w, flip = (b, a, True) if swap else (a, b, True)
    y = _engine(x, w, mode, flip, conv_axes)
    if y is None:
        return None, False
    if kind == "complex" or y.dtype.kind == "c":
        return y.astype(rt, copy=False), True
    return _finish(y, rt, kind), True


# ----------------------------------------------------------------------------- FFT
def _fft_axes(a, b, mode, axes):
    """fftconvolve's axes: validated, length-1 axes dropped, shapes checked, and the
    inputs swapped when 'valid' needs it."""
    noaxes = axes is None
    axes = _norm_axes(axes, a.ndim)
    if not noaxes and not axes:
        raise ValueError("when provided, axes cannot be empty")
    axes = [ax for ax in axes if a.shape[ax] != 1 and b.shape[ax] != 1]
    if not all(a.shape[i] == b.shape[i] or a.shape[i] == 1 or b.shape[i] == 1
               for i in range(a.ndim) if i not in axes):
        raise ValueError(f"incompatible shapes for in1 and in2: {a.shape} and {b.shape}")
    if _swap_needed(mode, a.shape, b.shape, axes):
        a, b = b, a
    return a, b, axes


#: Below this many entries per transform scipy.fft's worker threads cost more than they
#: save (measured: a 80x80 rfftn takes 29 us on one worker, 119 us on two).
_FFT_THREADS_MIN = 1 << 17


def _workers(fshape, batch=1):
    """scipy.fft's workers: vecconv's thread setting, for transforms big enough."""
    return vecconv.get_num_threads() if math.prod(fshape) * batch >= _FFT_THREADS_MIN else 1


def _fft_full(a, b, axes):
    """The full linear convolution along ``axes`` (the others broadcast) by FFTs of next
    fast lengths, in the precision scipy.fft gives the inputs."""
    if not axes:
        return a * b
    full = [a.shape[ax] + b.shape[ax] - 1 for ax in axes]
    cplx = a.dtype.kind == "c" or b.dtype.kind == "c"
    fshape = [_fft.next_fast_len(n, not cplx) for n in full]
    if a.dtype.kind in "biu":
        a = a.astype(np.float64)
    if b.dtype.kind in "biu":
        b = b.astype(np.float64)
    nw = _workers(fshape, max(a.size // max(math.prod(a.shape[ax] for ax in axes), 1), 1))
    if cplx:
        spec = _fft.fftn(a, fshape, axes=axes, workers=nw)
        spec = spec * _fft.fftn(b, fshape, axes=axes, workers=nw)
        ret = _fft.ifftn(spec, fshape, axes=axes, workers=nw)
    else:
        spec = _fft.rfftn(a, fshape, axes=axes, workers=nw)
        spec = spec * _fft.rfftn(b, fshape, axes=axes, workers=nw)
        ret = _fft.irfftn(spec, fshape, axes=axes, workers=nw)
    sl = [slice(None)] * ret.ndim
    for ax, n in zip(axes, full):
        sl[ax] = slice(0, n)
    return ret[tuple(sl)]


def _apply_mode(ret, s1, s2, mode, axes, broadcast_same=False):
    """The 'full' result cut to the mode (SciPy's centring). With ``broadcast_same``,
    'same' keeps the broadcast length along axes that are not convolved (vecconv's
    ``axes=``), where SciPy's fftconvolve centres on in1's length there too."""
    if mode == "full":
        return ret.copy()
    if mode == "same":
        shape = [s1[i] if (i in axes or not broadcast_same) else ret.shape[i]
                 for i in range(ret.ndim)]
        return _centred(ret, shape).copy()
    shape = [s1[i] - s2[i] + 1 if i in axes else ret.shape[i] for i in range(ret.ndim)]
    return _centred(ret, shape).copy()


def fftconvolve(in1: ArrayInput, in2: ArrayInput, mode: Mode = "full",
                axes: Axes = None) -> NDArray[Any]:
    """Convolve two N-dimensional arrays using FFTs (``scipy.signal.fftconvolve``).

    Real inputs take real FFTs, complex ones complex FFTs, at ``scipy.fft``'s next fast
    lengths, on ``vecconv.get_num_threads()`` workers.

    Parameters
    ----------
    in1, in2 : array_like
        The inputs, of the same number of dimensions.
    mode : {'full', 'valid', 'same'}, optional
        'full': the whole linear convolution; 'valid': only the entries that need no zero
        padding (either input may be the larger, as in SciPy); 'same': in1's shape,
        centred on 'full'.
    axes : int or sequence of ints, optional
        The axes to convolve along (default all). Along the others the inputs must have
        equal lengths or length 1, and they broadcast.

    Returns
    -------
    out : ndarray
        The convolution: float32/complex64 for float32/complex64 inputs, float64 or
        complex128 for other real or complex ones.

    Examples
    --------
    >>> import numpy as np
    >>> from vecconv.signal import fftconvolve
    >>> np.round(fftconvolve([1.0, 2.0, 3.0], [0.0, 1.0, 0.5]), 12) + 0.0
    array([0. , 1. , 2.5, 4. , 1.5])
    >>> fftconvolve(np.ones((2, 5), np.float32), np.ones((1, 3), np.float32), 'valid', axes=1)
    array([[3., 3., 3.],
           [3., 3., 3.]], dtype=float32)
    """
    a, b = np.asarray(in1), np.asarray(in2)
    if a.ndim == b.ndim == 0:
        return a * b
    if a.ndim != b.ndim:
        raise ValueError("in1 and in2 should have the same dimensionality")
    if a.size == 0 or b.size == 0:
        return np.array([])
    _check_mode(mode, lower=True)
    a, b, axes = _fft_axes(a, b, mode, axes)
    return _apply_mode(_fft_full(a, b, axes), a.shape, b.shape, mode, axes)


def _oa_block(big, small):
    """Overlap-add FFT length for one axis, or None when one block is as good.

    The cost per output entry of a block of FFT length F is about F log2(2F) / (F - K),
    K = small - 1 (the overlap); the best F among fast lengths up to big is taken."""
    if small <= 1 or 2 * small > big:
        return None
    K = small - 1
    best, best_cost = None, math.inf
    f = _fft.next_fast_len(2 * K + 1, True)
    while f < big:
        cost = f * math.log2(2 * f) / (f - K)
        if cost < best_cost:
            best, best_cost = f, cost
        elif f > 8 * K:
            break
        f = _fft.next_fast_len(f + 1, True)
    return best


def oaconvolve(in1: ArrayInput, in2: ArrayInput, mode: Mode = "full",
               axes: Axes = None) -> NDArray[Any]:
    """Convolve two N-dimensional arrays by overlap-add (``scipy.signal.oaconvolve``).

    The longer input is cut into blocks along every axis where the other is at most half
    as long; each block is convolved by FFTs of one fast length and the overlapping tails
    are added. With no axis to cut, this is ``fftconvolve``.

    Parameters
    ----------
    in1, in2 : array_like
        The inputs, of the same number of dimensions.
    mode : {'full', 'valid', 'same'}, optional
        As in ``fftconvolve``.
    axes : int or sequence of ints, optional
        The axes to convolve along (default all); the others broadcast.

    Returns
    -------
    out : ndarray
        The convolution, as ``fftconvolve`` gives it.

    Examples
    --------
    >>> import numpy as np
    >>> from vecconv.signal import oaconvolve
    >>> x = np.arange(1000.0); h = np.array([1.0, -1.0])
    >>> y = oaconvolve(x, h, 'valid')
    >>> y.shape, bool(np.allclose(y, 1.0))
    ((999,), True)
    """
    return _oaconvolve(in1, in2, mode, axes)


def _oaconvolve(in1, in2, mode, axes):
    """The body of ``oaconvolve``."""
    a, b = np.asarray(in1), np.asarray(in2)
    if a.ndim == b.ndim == 0:
        return a * b
    if a.ndim != b.ndim:
        raise ValueError("in1 and in2 should have the same dimensionality")
    if a.size == 0 or b.size == 0:
        return np.array([])
    _check_mode(mode, lower=True)
    if a.shape == b.shape:
        return fftconvolve(a, b, mode=mode, axes=axes)
    a, b, axes = _fft_axes(a, b, mode, axes)
    s1, s2 = a.shape, b.shape
    if not axes:
        return _apply_mode(a * b, s1, s2, mode, axes)
    plan = {}
    for ax in axes:
        big, small = max(s1[ax], s2[ax]), min(s1[ax], s2[ax])
        f = _oa_block(big, small)
        if f is not None:
            plan[ax] = (f, f - small + 1, 0 if s1[ax] >= s2[ax] else 1)
    if not plan:
        return fftconvolve(a, b, mode=mode, axes=axes)
    cplx = a.dtype.kind == "c" or b.dtype.kind == "c"
    if a.dtype.kind in "biu":
        a = a.astype(np.float64)
    if b.dtype.kind in "biu":
        b = b.astype(np.float64)
    # each axis becomes (blocks, length): the cut input has nb blocks of ``step`` entries
    # (zero padded), the other one block; FFTs along the length axes, of length F
    ops = [a, b]
    fshape, faxes = [], []
    shapes = [[], []]
    full = {ax: s1[ax] + s2[ax] - 1 for ax in axes}
    for ax in range(a.ndim):
        for i in (0, 1):
            n = (s1 if i == 0 else s2)[ax]
            if ax in plan and plan[ax][2] == i:
                f, step, _ = plan[ax]
                nb = -(-n // step)
                shapes[i].append((nb, step, nb * step - n))
            else:
                shapes[i].append((1, n, 0))
    for i in (0, 1):
        pads = [(0, extra) for _, _, extra in shapes[i]]
        arr = np.pad(ops[i], pads) if any(p[1] for p in pads) else ops[i]
        new = []
        for nb, ln, _ in shapes[i]:
            new += [nb, ln]
        ops[i] = arr.reshape(new)
    for ax in axes:
        faxes.append(2 * ax + 1)
        fshape.append(plan[ax][0] if ax in plan else
                      _fft.next_fast_len(full[ax], not cplx))
    nw = _workers(fshape, ops[0].size // max(math.prod(ops[0].shape[ax] for ax in faxes), 1))
    if cplx:
        spec = _fft.fftn(ops[0], fshape, axes=faxes, workers=nw)
        spec = spec * _fft.fftn(ops[1], fshape, axes=faxes, workers=nw)
        ret = _fft.ifftn(spec, fshape, axes=faxes, workers=nw)
    else:
        spec = _fft.rfftn(ops[0], fshape, axes=faxes, workers=nw)
        spec = spec * _fft.rfftn(ops[1], fshape, axes=faxes, workers=nw)
        ret = _fft.irfftn(spec, fshape, axes=faxes, workers=nw)
    # overlap-add, one axis at a time: (nb, F) -> nb*step + F - step entries
    for ax in range(a.ndim):
        bax, lax = 2 * ax, 2 * ax + 1
        moved = np.moveaxis(ret, (bax, lax), (-2, -1))
        nb, F = moved.shape[-2:]
        if ax in plan:
            step = plan[ax][1]
            out = np.zeros(moved.shape[:-2] + ((nb + 1) * step + F,), ret.dtype)
            head = out[..., :nb * step].reshape(moved.shape[:-2] + (nb, step))
            head += moved[..., :step]
            tail_len = F - step
            pos = step
            while tail_len > 0:     # the tail may span more than one following block
                m = min(step, tail_len)
                seg = out[..., pos:pos + nb * step].reshape(moved.shape[:-2] + (nb, step))
                seg[..., :m] += moved[..., F - tail_len:F - tail_len + m]
                tail_len -= m
                pos += step
            moved = out[..., None, :full[ax]]
        elif ax in axes:
            moved = moved[..., :full[ax]]
        ret = np.moveaxis(moved, (-2, -1), (bax, lax))
    ret = ret.reshape([ret.shape[2 * i] * ret.shape[2 * i + 1] for i in range(a.ndim)])
    return _apply_mode(ret, s1, s2, mode, axes)


# ----------------------------------------------------------------------------- choosing
def _out_size(sa, sb, mode):
    """Entries of the result along the convolution axes of lengths sa (in1), sb (in2)."""
    if mode == "full":
        return math.prod(n + k - 1 for n, k in zip(sa, sb))
    if mode == "valid":
        return math.prod(abs(n - k) + 1 for n, k in zip(sa, sb))
    return math.prod(sa)


def _engine_work(sa, sb, mode):
    """The direct route's work: output entries x kernel taps of one real pass (the kernel
    is in2, or the smaller input when 'valid' swaps them); its data is as many entries."""
    na, nb = math.prod(sa), math.prod(sb)
    work = _out_size(sa, sb, mode) * (min(na, nb) if mode == "valid" else nb)
    return work, work


def _fft_work(sa, sb, real=True):
    """The FFT route's work: the three transforms' N log2 N, N the product of the fast
    lengths of the full convolution; and its data, 4 N entries."""
    n = math.prod(_fft.next_fast_len(a + b - 1, real) for a, b in zip(sa, sb))
    return 3 * n * math.log2(max(n, 2)), 4 * n


def _oa_work(n1, n2):
    """Overlap-add's work along one axis (the blocks of the cut input forward and back,
    the other input once) and its data (4 entries per block entry), or None when no cut
    pays (``_oa_block``)."""
    big, small = max(n1, n2), min(n1, n2)
    f = _oa_block(big, small)
    if f is None:
        return None
    blocks = -(-big // (f - small + 1))
    return (2 * blocks + 1) * f * math.log2(max(f, 2)), 4 * blocks * f


def _excess(work, nbytes):
    """The share of ``work`` whose data is past ``_BIG_BYTES``."""
    return work * (1.0 - _BIG_BYTES / nbytes) if nbytes > _BIG_BYTES else 0.0


def _cost(key, work, entries, out=0):
    """Predicted seconds of vecconv's route ``key`` = (route, itemsize, rank); ``out``
    output entries for the direct route's per-entry term."""
    c = _COSTS[key]
    t = c[0] + c[1] * work + c[2] * _excess(work, entries * key[1])
    return t + c[3] * out if len(c) > 3 else t


def _numpy_key(rt):
    """Key of ``_NUMPY_COSTS`` for a result dtype, or None when NumPy's direct product is
    not a candidate (float16, extended precision, object: those keep their routes)."""
    k, size = rt.kind, rt.itemsize
    if k == "f" and size in (4, 8) or k == "c" and size in (8, 16):
        return f"{k}{size}"
    if k in "biu":
        return "int"
    return None


def _numpy_time(n, k, mode, key):
    """Predicted seconds of ``numpy.convolve``/``numpy.correlate`` of lengths n and k."""
    small = min(n, k)
    c0, c_out, c_tap = _NUMPY_COSTS[(key, small <= _NP_SMALL_KERNEL)]
    return c0 + _out_size((n,), (k,), mode) * (c_out + c_tap * small)


def _model_route(a, b, mode, numpy_ok):
    """The route of least predicted time for convolve(a, b, mode), from shapes and dtypes
    alone ('direct', 'fft', 'oa', or 'numpy' when ``numpy_ok``)."""
    ka, kb = a.dtype.kind, b.dtype.kind
    direct = "numpy" if numpy_ok else "direct"
    if ka == "b" and kb == "b":
        return direct             # SciPy's rule: no FFT for booleans
    if ka not in "buifc" or kb not in "buifc":
        return direct
    rt = np.result_type(a, b)
    if rt.itemsize > (16 if rt.kind == "c" else 8):
        return direct             # extended precision: FFTs would lose it
    nd = a.ndim
    if nd == 0 or a.size == 0 or b.size == 0:
        return direct
    sa, sb = a.shape, b.shape
    conv = [ax for ax in range(nd) if sb[ax] != 1 and sa[ax] != 1]
    if len(conv) > 3:
        # SciPy's direct route would run: let SciPy's own model decide
        return _scipy_signal().choose_conv_method(a, b, mode=mode)
    if not conv:
        return direct
    if len(conv) < nd:
        batch = math.prod(max(sa[ax], sb[ax]) for ax in range(nd) if ax not in conv)
        sa, sb = [sa[ax] for ax in conv], [sb[ax] for ax in conv]
    else:
        batch = 1
    size = _F64.itemsize if rt.kind in "biu" else _work_dtype(rt)[0].itemsize
    rank = 1 if len(conv) == 1 else 2
    cplx = ka == "c" or kb == "c"
    parts = (2 if ka == "c" else 1) * (2 if kb == "c" else 1)
    # the batch: the direct route makes one engine call for all of it; FFTs scale with it
    work, entries = _engine_work(sa, sb, mode)
    times = {"direct": _cost(("direct", size, rank), work * parts * batch,
                             entries * parts * batch, _out_size(sa, sb, mode) * batch)}
    cf = 2.0 if cplx else 1.0
    work, entries = _fft_work(sa, sb, not cplx)
    times["fft"] = _cost(("fft", size, rank), work * cf * batch, entries * cf * batch)
    if rank == 1:
        # measured: overlap-add of 2-D images ran 1.5x slower than one FFT where this
        # model expected it faster (its overlap-add passes are not in the model)
        oa = _oa_work(sa[0], sb[0])
        if oa is not None:
            times["oa"] = _cost(("oa", size, 1), oa[0] * cf * batch, oa[1] * cf * batch)
    best = min(times, key=times.__getitem__)
    if best == "direct":
        # a near tie goes to the frequency route: its predictions are the closer ones
        # (median errors 4-9% against the direct route's 12-22%), and it is SciPy's choice
        # wherever SciPy's direct route is slow (2-D, 3-D)
        freq = min((r for r in times if r != "direct"), key=times.__getitem__)
        if times["direct"] > _TIE * times[freq]:
            best = freq
    if numpy_ok:
        # NumPy's product gives SciPy's result to the bit and is the best predicted of all:
        # another route must be predicted clearly faster to replace it
        t_numpy = _numpy_time(sa[0], sb[0], mode, _numpy_key(rt))
        if times[best] > _TIE * t_numpy:
            return "numpy"
    return best


#: recent decisions: (shapes, dtype chars, mode, numpy_ok) -> route
_ROUTES: dict = {}
_ROUTES_KEPT = 512


def _choose_route(a, b, mode, numpy_ok=False):
    """'numpy' (NumPy's 1-D direct product; only when ``numpy_ok``), 'direct' (vecconv's
    engine), 'fft' or 'oa' (overlap-add) for convolve(a, b, mode).

    The model's answer depends on shapes and dtypes only and is kept for the calls that
    repeat them; SciPy's integer rule (no FFT when a product could pass float64's exact
    range) depends on the values and is checked on every call."""
    key = (a.shape, b.shape, a.dtype.char, b.dtype.char, mode, numpy_ok)
    route = _ROUTES.get(key)
    if route is None:
        route = _model_route(a, b, mode, numpy_ok)
        if len(_ROUTES) >= _ROUTES_KEPT:
            _ROUTES.clear()
        _ROUTES[key] = route
    if (route == "fft" or route == "oa") and (a.dtype.kind in "ui" or b.dtype.kind in "ui"):
        top = _absmax(a) * _absmax(b) * min(a.size, b.size)
        if top > 2 ** np.finfo(np.float64).nmant - 1:
            return "numpy" if numpy_ok else "direct"
    return route


def _numpy_ok(a, b, mode):
    """Whether NumPy's 1-D ``convolve``/``correlate`` gives SciPy's result here: 1-D
    inputs, and for 'same' in1 at least as long as in2 (NumPy centres 'same' on the
    longer input); dtypes with a measured cost (``_numpy_key``)."""
    if a.ndim != 1 or not a.size or not b.size:
        return False
    if mode == "same" and a.size < b.size:
        return False
    da, db = a.dtype, b.dtype
    if da.kind not in "biufc" or db.kind not in "biufc":
        return False
    return _numpy_key(da if da == db else np.result_type(da, db)) is not None


def _timeit_fast(f):
    """Best seconds of one call of f, over enough calls to take some milliseconds."""
    timer = timeit.Timer(f)
    number = 1
    while True:
        t = timer.timeit(number)
        if t >= 5e-4 or number >= 10 ** 6:
            break
        number *= 10
    if t > 1:
        return t / number
    return min(timer.repeat(3, number)) / number


@overload
def choose_conv_method(in1: ArrayInput, in2: ArrayInput, mode: Mode = ...,
                       measure: Literal[False] = ...) -> Literal["direct", "fft"]: ...
@overload
def choose_conv_method(in1: ArrayInput, in2: ArrayInput, mode: Mode = ..., *,
                       measure: Literal[True]) -> tuple[Literal["direct", "fft"],
                                                        dict[str, float]]: ...
@overload
def choose_conv_method(in1: ArrayInput, in2: ArrayInput, mode: Mode,
                       measure: Literal[True]) -> tuple[Literal["direct", "fft"],
                                                        dict[str, float]]: ...
@overload
def choose_conv_method(in1: ArrayInput, in2: ArrayInput, mode: Mode = ...,
                       measure: bool = ...) -> Union[Literal["direct", "fft"], tuple[
                           Literal["direct", "fft"], dict[str, float]]]: ...
def choose_conv_method(in1: ArrayInput, in2: ArrayInput, mode: Mode = "full",
                       measure: bool = False) -> Union[Literal["direct", "fft"], tuple[
                           Literal["direct", "fft"], dict[str, float]]]:
    """The faster method, 'direct' or 'fft', for ``convolve``/``correlate`` of these
    inputs (``scipy.signal.choose_conv_method``).

    The prediction is a cost model of the routes ``method='auto'`` chooses among,
    measured on this machine's kind by ``bench/signal_methods.py``: NumPy's direct product
    (1-D), vecconv's engine (on its threads), FFTs and overlap-add. 'direct' stands for
    either direct route, 'fft' for either frequency route. SciPy's rules that force
    'direct' are kept: bool inputs, integers whose product could pass float64's exact
    range, and dtypes FFTs do not support.

    Parameters
    ----------
    in1, in2 : array_like
        The arguments that would be passed to ``convolve``.
    mode : {'full', 'valid', 'same'}, optional
        The mode that would be passed.
    measure : bool, optional
        Time both methods on these inputs and return the faster, with the times.

    Returns
    -------
    method : str
        'direct' or 'fft'.
    times : dict, optional
        Seconds per call for 'fft' and 'direct', when ``measure`` is True.

    Examples
    --------
    >>> import numpy as np
    >>> from vecconv.signal import choose_conv_method
    >>> choose_conv_method(np.ones(50), np.ones(3))
    'direct'
    >>> choose_conv_method(np.ones(100_000), np.ones(10_000))
    'fft'
    """
    a, b = np.asarray(in1), np.asarray(in2)
    if measure:
        times = {m: _timeit_fast(lambda m=m: convolve(a, b, mode=mode, method=m))
                 for m in ("fft", "direct")}
        return ("fft" if times["fft"] < times["direct"] else "direct"), times
    route = _choose_route(a, b, mode, a.ndim == 1 and _numpy_ok(a, b, mode))
    return "fft" if route == "oa" else "direct" if route == "numpy" else route


# ----------------------------------------------------------------------------- N-d
def _prepare(in1, in2, name):
    a, b = np.asarray(in1), np.asarray(in2)
    if a.ndim == b.ndim == 0:
        return a, b, True
    if a.ndim != b.ndim:
        raise ValueError(name)
    return a, b, False


def _nan_warning(out):
    if out.size:
        first = out.reshape(-1)[0]
        if np.isnan(first) or np.isinf(first):
            warnings.warn("Use of fft convolution on input with NAN or inf results in NAN "
                          "or inf output. Consider using method='direct' instead.",
                          category=RuntimeWarning, stacklevel=3)


def _convolve_nd(a, b, mode, method, axes, correlate_):
    """The body of ``convolve`` and ``correlate`` after the scalar/rank checks."""
    if type(mode) is not str or mode not in _MODES:
        _check_mode(mode)
    if type(method) is not str or method not in _METHODS:
        _check_method(method)
    nd = a.ndim
    if axes is None:
        conv_axes = list(range(nd))
    else:
        conv_axes = _norm_axes(axes, nd)
    if method == "auto":
        numpy_ok = nd == 1 and _numpy_ok(a, b, mode)
        method = _choose_route(a, b, mode, numpy_ok)
        if method == "numpy":
            # SciPy's own direct method in 1-D: the dtype is NumPy's result_type (float32
            # stays float32, integers are exact and wrap as SciPy's do)
            return np.correlate(a, b, mode) if correlate_ else np.convolve(a, b, mode)
        if axes is not None and method == "oa":
            method = "fft"
    rt = np.result_type(a, b)
    # SciPy's 'valid' check (and, for convolve, its swap) on every route
    swap = axes is None and _swap_needed(mode, a.shape, b.shape) and not correlate_
    if method == "fft" or method == "oa":
        # correlate(a, b) = convolve(a, reverse(conj(b))) for the frequency routes
        b_conv = _reverse_conj(b, conv_axes) if correlate_ else b
        if axes is None:
            if swap:
                a, b_conv = b, a
            f = fftconvolve if method == "fft" else oaconvolve
            out = f(a, b_conv, mode=mode)
        else:
            x, y, fax = _fft_axes(a, b_conv, mode, conv_axes)
            out = _apply_mode(_fft_full(x, y, fax), x.shape, y.shape, mode, fax,
                              broadcast_same=True)
        if rt.kind in "biu":
            out = np.rint(out.real if out.dtype.kind == "c" else out)
            out = out > 0.5 if rt.kind == "b" else out.astype(np.int64)
        _nan_warning(out)
        return out.astype(rt, copy=False)
    if swap:
        a, b = b, a
    y, ok = _direct(a, b, mode, correlate_, conv_axes, rt)
    if ok:
        return y
    if axes is not None:
        raise NotImplementedError(
            "vecconv.signal: the direct route along more than 3 axes, or of this dtype, "
            "with axes= is not available; use method='fft'")
    sig = _scipy_signal()
    f = sig.correlate if correlate_ else sig.convolve
    return f(a, b, mode=mode, method="direct")


def correlate(in1: ArrayInput, in2: ArrayInput, mode: Mode = "full", method: Method = "auto",
              *, axes: Axes = None) -> NDArray[Any]:
    """Cross-correlate two N-dimensional arrays (``scipy.signal.correlate``).

    ``z[k] = sum_l in1[l] * conj(in2[l - k + K])``, K the offset of the mode, as in SciPy.

    Parameters
    ----------
    in1, in2 : array_like
        The inputs, of the same number of dimensions.
    mode : {'full', 'valid', 'same'}, optional
        'full' (default): every lag; 'valid': only lags that need no zero padding (either
        input may be the larger); 'same': in1's shape, centred on 'full'.
    method : {'auto', 'direct', 'fft', 'oa'}, optional
        'direct': vecconv's engine; 'fft': ``fftconvolve``; 'oa': ``oaconvolve``
        (vecconv's addition); 'auto' (default): ``choose_conv_method``.
    axes : int or sequence of ints, optional, keyword only
        vecconv's addition: correlate along these axes only; along the others the inputs
        broadcast (equal lengths, or length 1). See the module's documentation.

    Returns
    -------
    out : ndarray
        The correlation, of ``np.result_type(in1, in2)``: float32 stays float32, complex
        stays complex, integers stay integers (exactly).

    Examples
    --------
    >>> import numpy as np
    >>> from vecconv.signal import correlate
    >>> correlate([1, 2, 3], [0, 1, 0.5])
    array([0.5, 2. , 3.5, 3. , 0. ])
    >>> correlate(np.ones((3, 4), np.float32), np.ones((1, 2), np.float32), 'valid')
    array([[2., 2., 2.],
           [2., 2., 2.],
           [2., 2., 2.]], dtype=float32)
    >>> correlate([1j, 2], [1j])
    array([1.+0.j, 0.-2.j])
    """
    a, b, scalar = _prepare(in1, in2, "in1 and in2 should have the same dimensionality")
    if scalar:
        return a * (b.conj() if b.dtype.kind == "c" else b)
    return _convolve_nd(a, b, mode, method, axes, True)


def convolve(in1: ArrayInput, in2: ArrayInput, mode: Mode = "full", method: Method = "auto",
             *, axes: Axes = None) -> NDArray[Any]:
    """Convolve two N-dimensional arrays (``scipy.signal.convolve``).

    Parameters
    ----------
    in1, in2 : array_like
        The inputs, of the same number of dimensions.
    mode : {'full', 'valid', 'same'}, optional
        'full' (default): the whole linear convolution; 'valid': only the entries that
        need no zero padding (either input may be the larger); 'same': in1's shape,
        centred on 'full'.
    method : {'auto', 'direct', 'fft', 'oa'}, optional
        'direct': vecconv's engine; 'fft': ``fftconvolve``; 'oa': ``oaconvolve``
        (vecconv's addition); 'auto' (default): ``choose_conv_method``.
    axes : int or sequence of ints, optional, keyword only
        vecconv's addition: convolve along these axes only; along the others the inputs
        broadcast (equal lengths, or length 1). See the module's documentation.

    Returns
    -------
    out : ndarray
        The convolution, of ``np.result_type(in1, in2)``.

    Warns
    -----
    RuntimeWarning
        When an FFT route gives NaN or inf (a NaN or inf input spreads everywhere there).

    Examples
    --------
    >>> import numpy as np
    >>> from vecconv.signal import convolve
    >>> convolve([1, 2, 3], [0, 1, 0.5])
    array([0. , 1. , 2.5, 4. , 1.5])
    >>> convolve([3, 4, 5, 6, 5, 4], [1, 2, 3])          # integers stay integers
    array([ 3, 10, 22, 28, 32, 32, 23, 12])
    >>> rows = np.ones((4, 100), np.float32)              # 4 signals, one call
    >>> convolve(rows, np.ones((1, 5), np.float32), 'same').shape
    (4, 100)
    """
    a, b, scalar = _prepare(in1, in2, "volume and kernel should have the same "
                                      "dimensionality")
    if scalar:
        return a * b
    return _convolve_nd(a, b, mode, method, axes, False)


# ----------------------------------------------------------------------------- 2-D
def _boundary(boundary):
    if boundary == "reflect":      # a name SciPy knows but its 2-D routine refuses
        raise ValueError("Incorrect boundary value.")
    try:
        return _BOUNDARIES[boundary]
    except (KeyError, TypeError):
        raise ValueError("Acceptable boundary flags are 'fill', 'circular' (or 'wrap'), "
                         "and 'symmetric' (or 'symm').") from None


def _fillvalue(fillvalue, rt):
    """SciPy's rules: a scalar or one-element array, cast to the output dtype (complex
    to real only when the imaginary part is 0)."""
    fv = np.asarray(fillvalue)
    if fv.size == 0:
        raise ValueError("`fillvalue` cannot be an empty array.")
    if fv.size != 1:
        raise ValueError("`fillvalue` must be scalar or an array with one element.")
    c = complex(fv.reshape(-1)[0])
    lost = rt.kind != "c" and c.imag != 0
    if rt.kind in "iu" and math.isfinite(c.real):     # truncated, and then in range
        info = np.iinfo(rt)
        lost = lost or not info.min <= math.trunc(c.real) <= info.max
    if lost:
        raise ValueError("could not cast `fillvalue` directly to the output type (it was "
                         "first converted to complex).")
    if rt.kind == "c":
        return c
    with np.errstate(invalid="ignore", over="ignore"):    # a C cast, as SciPy's
        return np.asarray(c.real).astype(rt).item()


def _two_d(in1, in2, mode, boundary, fillvalue, correlate_, name):
    a, b = np.asarray(in1), np.asarray(in2)
    if not a.ndim == b.ndim == 2:
        raise ValueError(f"{name} inputs must both be 2-D arrays")
    if (a.size == 0 or b.size == 0) and _boundary(boundary) != "fill":
        # SciPy's routine divides by the empty axis here and the process dies (SIGFPE)
        raise ValueError(f"{name} with boundary={boundary!r} needs non-empty inputs (it "
                         f"wraps or mirrors them), got shapes {a.shape} and {b.shape}")
    swap = _swap_needed(mode, a.shape, b.shape)
    _check_mode(mode)
    bd = _boundary(boundary)
    rt = np.result_type(a, b)
    # SciPy casts the fill value only where a fill is read: 'wrap' and 'symm' read none
    fill = _fillvalue(fillvalue, rt) if bd == "fill" else 0
    work, kind = _work_dtype(rt)
    if work is None or a.size == 0 or b.size == 0 or (
            kind == "int" and not _int_exact(a, b)) or (
            kind == "int" and fill != 0 and abs(fill) * np.abs(b.astype(float)).sum()
            >= _EXACT):
        sig = _scipy_signal()
        f = sig.correlate2d if correlate_ else sig.convolve2d
        return f(a, b, mode=mode, boundary=boundary, fillvalue=fillvalue)
    if swap:
        a, b = b, a
    conv_dt = np.result_type(work, np.complex64) if rt.kind == "c" else work
    x = a.astype(conv_dt if a.dtype.kind == "c" else work, copy=False)
    w = b.astype(conv_dt if b.dtype.kind == "c" else work, copy=False)
    if correlate_:
        if w.dtype.kind == "c":
            w = w.conj()
        y = _engine(x, w, mode, False, [0, 1], _same_corr2d, bd, fill, "auto")
        if swap:
            y = y[::-1, ::-1]
    else:
        y = _engine(x, w, mode, True, [0, 1], _same_nd, bd, fill, "auto")
    if rt.kind == "c":
        return np.ascontiguousarray(y.astype(rt, copy=False))
    return np.ascontiguousarray(_finish(y.real if y.dtype.kind == "c" else y, rt, kind))


def convolve2d(in1: ArrayInput, in2: ArrayInput, mode: Mode = "full",
               boundary: Boundary = "fill", fillvalue: complex | ArrayInput = 0) -> NDArray[Any]:
    """Convolve two 2-D arrays (``scipy.signal.convolve2d``), by vecconv's engine.

    Parameters
    ----------
    in1, in2 : array_like
        2-D inputs.
    mode : {'full', 'valid', 'same'}, optional
        As in ``convolve``; 'same' centres as SciPy's ``convolve2d`` does.
    boundary : {'fill', 'wrap', 'symm'}, optional
        The input's extension: ``fillvalue`` ('fill', also 'pad'), periodic ('wrap', also
        'circular'), mirrored with the edge ('symm', also 'symmetric'); kernels longer
        than the input repeat the extension, as in SciPy.
    fillvalue : scalar, optional
        The value of 'fill', cast to the output dtype.

    Returns
    -------
    out : ndarray
        2-D, of ``np.result_type(in1, in2)``.

    Examples
    --------
    >>> import numpy as np
    >>> from vecconv.signal import convolve2d
    >>> convolve2d([[1, 2, 3], [3, 4, 5]], [[2, 3, 4], [4, 5, 6]], 'valid')
    array([[62]])
    >>> img = np.arange(16, dtype=np.float32).reshape(4, 4)
    >>> convolve2d(img, np.ones((3, 3), np.float32) / 9, 'same', boundary='symm')[0]
    array([1.6666667, 2.3333335, 3.3333333, 4.       ], dtype=float32)
    """
    return _two_d(in1, in2, mode, boundary, fillvalue, False, "convolve2d")


def correlate2d(in1: ArrayInput, in2: ArrayInput, mode: Mode = "full",
                boundary: Boundary = "fill", fillvalue: complex | ArrayInput = 0) -> NDArray[Any]:
    """Cross-correlate two 2-D arrays (``scipy.signal.correlate2d``), by vecconv's engine.

    Parameters
    ----------
    in1, in2 : array_like
        2-D inputs.
    mode : {'full', 'valid', 'same'}, optional
        As in ``correlate``; for even kernels 'same' centres as SciPy's ``correlate2d``
        (one entry earlier than ``correlate``).
    boundary : {'fill', 'wrap', 'symm'}, optional
        As in ``convolve2d``.
    fillvalue : scalar, optional
        The value of 'fill', cast to the output dtype.

    Returns
    -------
    out : ndarray
        2-D, of ``np.result_type(in1, in2)``.

    Examples
    --------
    >>> import numpy as np
    >>> from vecconv.signal import correlate2d
    >>> img = np.zeros((5, 5)); img[1, 3] = 1.0
    >>> template = np.array([[0.0, 1.0], [0.0, 0.0]])
    >>> out = correlate2d(img, template, 'same')
    >>> [int(i) for i in np.unravel_index(np.argmax(out), out.shape)]
    [1, 2]
    """
    return _two_d(in1, in2, mode, boundary, fillvalue, True, "correlate2d")


# ----------------------------------------------------------------------------- lags, banks
def correlation_lags(in1_len: int, in2_len: int,
                     mode: Mode = "full") -> NDArray[np.signedinteger[Any]]:
    """The lags of a 1-D ``correlate(in1, in2, mode)`` (``scipy.signal.correlation_lags``).

    Parameters
    ----------
    in1_len, in2_len : int
        The lengths of the inputs.
    mode : {'full', 'valid', 'same'}, optional
        The mode of the correlation.

    Returns
    -------
    lags : ndarray of int
        ``lags[i]`` is the shift of in2 against in1 at output entry i.

    Examples
    --------
    >>> import numpy as np
    >>> from vecconv.signal import correlate, correlation_lags
    >>> x = np.array([0.0, 0.0, 1.0, 0.0]); y = np.array([1.0, 0.0])
    >>> correlation_lags(4, 2)
    array([-1,  0,  1,  2,  3])
    >>> int(correlation_lags(4, 2)[np.argmax(correlate(x, y))])
    2
    """
    n, m = int(in1_len), int(in2_len)
    if mode == "full":
        return np.arange(1 - m, n)
    if mode == "same":
        start = (n + m - 1) // 2 - n // 2     # SciPy centres on the middle of 'full'
        return np.arange(1 - m, n)[start:start + n]
    if mode == "valid":
        d = n - m
        return np.arange(d + 1) if d >= 0 else np.arange(d, 1)
    raise ValueError(f"Mode {mode} is invalid")


def _bank(in1, kernels, mode, method, correlate_):
    a, k = np.asarray(in1), np.asarray(kernels)
    if k.ndim != a.ndim + 1:
        raise ValueError(f"kernels must be a stack (K, *kernel) of kernels with in1's "
                         f"{a.ndim} dimensions, got shape {k.shape}")
    f = correlate if correlate_ else convolve
    return f(a[None], k, mode=mode, method=method, axes=list(range(1, a.ndim + 1)))


def correlate_bank(in1: ArrayInput, kernels: ArrayInput, mode: Mode = "full",
                   method: Method = "auto") -> NDArray[Any]:
    """Correlate one input with each kernel of a stack: a filter bank in one call.

    ``correlate_bank(x, k)[i]`` is ``correlate(x, k[i])``; the direct route makes it one
    engine call with ``K`` output channels (the patch matrix of x made once, one GEMM).

    Parameters
    ----------
    in1 : array_like
        The input, of 1 or more dimensions.
    kernels : array_like, shape ``(K, *kernel)``
        K kernels of in1's number of dimensions.
    mode : {'full', 'valid', 'same'}, optional
        As in ``correlate`` ('valid' needs in1 at least as large as a kernel).
    method : {'auto', 'direct', 'fft', 'oa'}, optional
        As in ``correlate``.

    Returns
    -------
    out : ndarray, shape ``(K, *out)``
        The K correlations, of ``np.result_type(in1, kernels)``.

    Examples
    --------
    >>> import numpy as np
    >>> from vecconv.signal import correlate_bank, correlate2d
    >>> img = np.random.default_rng(0).random((32, 32), dtype=np.float32)
    >>> bank = np.stack([np.ones((3, 3)), np.eye(3), [[1, 0, -1]] * 3]).astype(np.float32)
    >>> out = correlate_bank(img, bank, 'same')
    >>> out.shape, out.dtype
    ((3, 32, 32), dtype('float32'))
    >>> bool(np.allclose(out[2], correlate2d(img, bank[2], 'same'), atol=1e-5))
    True
    """
    return _bank(in1, kernels, mode, method, True)


def convolve_bank(in1: ArrayInput, kernels: ArrayInput, mode: Mode = "full",
                  method: Method = "auto") -> NDArray[Any]:
    """Convolve one input with each kernel of a stack: a filter bank in one call.

    ``convolve_bank(x, k)[i]`` is ``convolve(x, k[i])``.

    Parameters
    ----------
    in1 : array_like
        The input, of 1 or more dimensions.
    kernels : array_like, shape ``(K, *kernel)``
        K kernels of in1's number of dimensions.
    mode : {'full', 'valid', 'same'}, optional
        As in ``convolve`` ('valid' needs in1 at least as large as a kernel).
    method : {'auto', 'direct', 'fft', 'oa'}, optional
        As in ``convolve``.

    Returns
    -------
    out : ndarray, shape ``(K, *out)``
        The K convolutions, of ``np.result_type(in1, kernels)``.

    Examples
    --------
    >>> import numpy as np
    >>> from vecconv.signal import convolve_bank
    >>> convolve_bank(np.arange(5.0), [[1.0, 1.0], [1.0, -1.0]], 'valid')
    array([[1., 3., 5., 7.],
           [1., 1., 1., 1.]])
    """
    return _bank(in1, kernels, mode, method, False)
