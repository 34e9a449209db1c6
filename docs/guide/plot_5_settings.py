"""
Threads, workspace and algorithms
=================================

vecconv's settings live in one place. Each has a process-wide default and an override for
a ``with`` block that belongs to the current Python thread alone:

* ``threads``: vecconv's own worker threads (the caller included). Results are the same
  bits for any setting. ``threadpoolctl.threadpool_limits(n)`` limits them too.
* ``workspace``: the byte budget of each pass's working buffers (column buffers, or the
  transformed tiles of the FFT and Winograd routes); a call's ``workspace=`` overrides it.
* ``algorithm=`` (a keyword of the convolution functions and layers): how the passes run.
"""

# %%
# Reading and changing the settings
# ---------------------------------
import threading

import numpy as np

import vecconv

print(vecconv.get_config())
print(vecconv.runtime_info())

with vecconv.config(threads=1, workspace=8 * 2**20) as inside:
    print("inside the block:", inside)
print("after it:", vecconv.get_config())

# %%
# An override is the current thread's alone
# -----------------------------------------
seen = {}


def worker():
    seen["other thread"] = vecconv.get_config()


with vecconv.config(threads=1):
    t = threading.Thread(target=worker)
    t.start()
    t.join()
    seen["this thread"] = vecconv.get_config()
print(seen)
assert seen["other thread"]["threads"] == vecconv.get_num_threads()

# %%
# The same bits on any number of threads
# --------------------------------------
rng = np.random.default_rng(0)
x = rng.standard_normal((16, 32, 28, 28)).astype(np.float32)
w = rng.standard_normal((64, 32, 3, 3)).astype(np.float32)
results = []
for n in (1, 2, 3):
    with vecconv.threads(n):
        results.append(vecconv.conv2d(x, w, padding=1))
assert all(np.array_equal(r, results[0]) for r in results)
print("1, 2 and 3 threads: identical results")

# %%
# Choosing the algorithm
# ----------------------
# ``'auto'`` lets the planner choose; ``'im2col'`` is the derivation's patch matrix and a
# GEMM (eq. 12); ``'fft'`` transforms tiles of the maps and the kernels, for large
# kernels; ``'winograd'`` minimal filtering for 3-tap kernels at stride 1 (one GEMM per
# transformed tap); ``'direct'`` grouped convolutions map by map (depthwise layers).
# ``vecconv.conv_plan`` says what the planner chooses for each pass, computing nothing.
for name, x_shape, w_shape, opts in [
        ("31x31 filter bank", (1, 1, 512, 512), (16, 1, 31, 31), {}),
        ("5x5 layer", (8, 16, 64, 64), (16, 16, 5, 5), {}),
        ("ResNet 3x3 layer", (8, 64, 56, 56), (64, 64, 3, 3), dict(padding=1)),
        ("depthwise 3x3", (8, 64, 56, 56), (64, 1, 3, 3), dict(padding=1, groups=64))]:
    plan = vecconv.conv_plan(x_shape, w_shape, **opts)
    print(f"{name}: forward on {plan['forward']}, dx on {plan['dx']}, dw on {plan['dw']}")

image = rng.standard_normal((1, 1, 512, 512)).astype(np.float32)
bank = rng.standard_normal((16, 1, 31, 31)).astype(np.float32)
a = vecconv.conv2d(image, bank, algorithm="fft")
b = vecconv.conv2d(image, bank, algorithm="im2col")
print("FFT against im2col, largest difference relative to the largest output:",
      float(np.abs(a - b).max() / np.abs(b).max()))
