"""
Images past memory: vecconv.dask
================================

:mod:`vecconv.dask` runs the convolutions and poolings on ``dask.array`` inputs, block by
block, with exactly the halo each block's windows need; the answer is the in-memory one
(pooling to the bit). Any chunking along the batch and spatial axes works. The tutorial
page *Data past one machine* (:doc:`/tutorial/plot_with_dask`) runs a 16-filter bank on a
zarr image and a distributed cluster; this page is the short version.
"""

import dask
import dask.array as da
import numpy as np

import vecconv
import vecconv.dask as vd

rng = np.random.default_rng(0)
image = rng.random((1, 1, 2048, 2048), dtype=np.float32)
bank = rng.standard_normal((8, 1, 7, 7)).astype(np.float32)
lazy = da.from_array(image, chunks=(1, 1, 512, 700))    # blocks that do not divide the map

# %%
# A filter bank, a pooling, and their gradients
# ---------------------------------------------
maps = vd.conv(lazy, bank, padding=3, padding_mode="reflect")
pooled = vd.max_pool(maps, 2)
print(maps.chunksize, pooled.chunksize)

with dask.config.set(scheduler="threads"):
    got = pooled.compute()
want = vecconv.max_pool(vecconv.conv2d(image, bank, padding=3, padding_mode="reflect"), 2)
np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
print("the same answer as in memory:", got.shape, got.dtype)

dy = da.ones_like(maps)
dx, dw, db = vd.conv_backward(dy, lazy, bank, padding=3, padding_mode="reflect")
rx, rw, rb = vecconv.conv2d_backward(np.ones(maps.shape, np.float32), image, bank, padding=3,
                                     padding_mode="reflect")
np.testing.assert_allclose(dw.compute(), rw, rtol=1e-4)
np.testing.assert_allclose(dx.compute(), rx, rtol=1e-4, atol=1e-4)
print("dx chunked like x:", dx.chunks == lazy.chunks)
