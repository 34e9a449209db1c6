"""
For SciPy's users: vecconv.signal
=================================

:mod:`vecconv.signal` has :mod:`scipy.signal`'s convolution functions with their
signatures and semantics (``correlate``, ``convolve``, ``correlate2d``, ``convolve2d``,
``fftconvolve``, ``oaconvolve``, ``choose_conv_method``, ``correlation_lags``): changing
the import is all a SciPy user does. SciPy's own test classes for these functions run
against it in vecconv's test suite. What it adds: float32 stays float32, the work runs on
vecconv's engine with the GIL released and its own threads, ``axes=`` on the direct
functions, and a filter bank in one call.
"""

# %%
# The same answers
# ----------------
import time

import matplotlib.pyplot as plt
import numpy as np
import scipy.signal

import vecconv.signal as vs

rng = np.random.default_rng(0)
image = rng.random((512, 512), dtype=np.float32)
edge = np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], dtype=np.float32)    # Sobel

for name in ("correlate2d", "convolve2d"):
    for boundary in ("fill", "wrap", "symm"):
        a = getattr(vs, name)(image, edge, mode="same", boundary=boundary)
        b = getattr(scipy.signal, name)(image, edge, mode="same", boundary=boundary)
        assert a.dtype == np.float32 and a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)
print("correlate2d/convolve2d agree with scipy.signal for every boundary; dtype", a.dtype)

# %%
# A filter bank on an image
# -------------------------
# Sixteen oriented Gabor-like kernels of 31 x 31: SciPy convolves them one at a time,
# ``vs.correlate_bank`` takes the stack in one call (the image's transforms or patches
# made once). Timed here, on the machine that built this page, the best of three runs.
size = 31
yy, xx = np.mgrid[-(size // 2):size // 2 + 1, -(size // 2):size // 2 + 1]
bank = np.stack([np.cos(0.4 * (np.cos(t) * xx + np.sin(t) * yy))
                 * np.exp(-(xx ** 2 + yy ** 2) / 60.0)
                 for t in np.linspace(0, np.pi, 16, endpoint=False)]).astype(np.float32)
image = rng.random((1024, 1024), dtype=np.float32)


def best_of(f, repeats=3):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = f()
        times.append(time.perf_counter() - t)
    return min(times), out


t_vc, maps = best_of(lambda: vs.correlate_bank(image, bank, mode="valid"))
t_sp, ref = best_of(lambda: np.stack([scipy.signal.correlate(image, k, mode="valid")
                                      for k in bank]))
np.testing.assert_allclose(maps, ref, rtol=1e-3, atol=2e-2)
print(f"16 kernels of 31x31 on a 1024x1024 float32 image: vecconv.signal.correlate_bank "
      f"{t_vc * 1e3:.0f} ms, scipy.signal.correlate looped {t_sp * 1e3:.0f} ms "
      f"({t_sp / t_vc:.1f}x); dtypes {maps.dtype} and {ref.dtype}")

fig, axes = plt.subplots(2, 4, figsize=(10, 5), layout="constrained")
for k, ax in enumerate(axes.flat):
    top = float(np.abs(maps[2 * k]).max()) or 1.0
    ax.imshow(maps[2 * k, :256, :256], cmap="RdBu_r", vmin=-top, vmax=top)
    ax.set_title(f"orientation {2 * k}", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
fig.suptitle("a filter bank by vecconv.signal.correlate_bank (256 x 256 corner)")
plt.show()

# %%
# Along chosen axes of a batch
# ----------------------------
# ``axes=`` on the direct functions convolves along some axes and broadcasts over the
# others, as a batch: here 8 signals of 10,000 samples by one kernel, in one call.
signals = rng.standard_normal((8, 10_000)).astype(np.float32)
kernel = np.hanning(65).astype(np.float32)
smooth = vs.convolve(signals, kernel[None, :], mode="same", axes=1)
ref = np.stack([scipy.signal.convolve(s, kernel, mode="same") for s in signals])
np.testing.assert_allclose(smooth, ref, rtol=1e-4, atol=1e-3)
print("axes=1:", smooth.shape, smooth.dtype)

# %%
# How ``method='auto'`` decides
# -----------------------------
# ``choose_conv_method`` answers as SciPy's does, from a cost model measured on vecconv's
# own routes.
for n, k in ((1000, 3), (100_000, 255), (10_000, 15)):
    print(n, k, vs.choose_conv_method(np.ones(n), np.ones(k)),
          scipy.signal.choose_conv_method(np.ones(n), np.ones(k)))
