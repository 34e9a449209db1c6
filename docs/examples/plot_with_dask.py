"""
Images larger than memory: ``vecconv.dask``
===========================================

:mod:`vecconv.dask` runs the same convolutions and pooling on ``dask.array``\\ s, block by
block, so an image stored on disk (zarr) can be filtered on a machine, or a cluster, whose
memory would not hold it. This page runs a small version of that job, a bank of 16 learned
7×7 filters over an image read from zarr and written back to zarr. It checks every step
against the in-memory functions, and draws how the blocks find their data.

The whole job at scale (an image larger than the workers' memory limit, on a
``LocalCluster`` of worker processes, against ``dask_image.ndfilters.correlate``) is
``bench/dask_filters.py``; its figures are on the :doc:`../benchmarks` page.
"""

# %%
# An image on disk
# ----------------
# A mosaic of noisy squares, 1 × 1 × 1200 × 1600 float32, written to a zarr store in
# chunks of 256 × 320 entries. Dask reads it lazily: nothing is in memory yet.

import tempfile

import dask
import dask.array as da
import matplotlib.pyplot as plt
import numpy as np
import zarr
from dask.diagnostics import ProgressBar

import vecconv
import vecconv.dask as vd

rng = np.random.default_rng(7)
tmp = tempfile.mkdtemp()
image = np.kron(rng.random((12, 16)), np.ones((100, 100))).astype(np.float32)
image += 0.05 * rng.standard_normal(image.shape).astype(np.float32)
zarr.create_array(store=f"{tmp}/image.zarr", data=image[None, None], chunks=(1, 1, 256, 320))

x = da.from_zarr(f"{tmp}/image.zarr")
print(x)

# %%
# The filters, and the lazy result
# --------------------------------
# Sixteen 7×7 filters: oriented edges and striped blobs, the shapes a first layer
# typically learns. ``vd.conv`` takes the same keywords as :func:`vecconv.conv`;
# ``padding=3`` keeps the size. The result is a lazy ``dask.array`` with one output chunk
# per input chunk along the image axes, holding the windows that start in it. The padding
# moves the first and last edges by 3 entries.

yy, xx = np.mgrid[-3:4, -3:4]
bank = []
for angle in np.linspace(0, np.pi, 8, endpoint=False):
    u = xx * np.cos(angle) + yy * np.sin(angle)
    bank.append(u * np.exp(-(xx ** 2 + yy ** 2) / 8))                 # an oriented edge
    bank.append(np.cos(1.2 * u) * np.exp(-(xx ** 2 + yy ** 2) / 6))    # a striped blob
w = np.array(bank, dtype=np.float32)[:, None]                          # (16, 1, 7, 7)

y = vd.conv(x, w, padding=3)
assert y.dtype == np.float32 and y.shape == (1, 16, 1200, 1600)
print(y.chunks[2:])

# %%
# Computed and written back to zarr, with Dask's progress bar
# -----------------------------------------------------------
# On one machine Dask's threaded scheduler runs the blocks; on a cluster the same graph
# goes to ``client.compute``. Here the maps are rechunked to the zarr chunks and stored.

out = zarr.create_array(store=f"{tmp}/maps.zarr", shape=y.shape, dtype=np.float32,
                        chunks=(1, 16, 256, 320))
with ProgressBar():
    da.store(y.rechunk((1, 16, 256, 320)), out, lock=False)

maps = out[...]
np.testing.assert_allclose(maps, vecconv.conv(image[None, None], w, padding=3),
                           rtol=2e-4, atol=2e-4)

# %%
# How a block finds its data
# --------------------------
# A window belongs to the chunk where it starts, so a block needs the input it owns plus a
# halo on its right and below of ``dilation·(k−1)`` = 6 entries, which
# ``dask.array.map_overlap`` attaches. The padding is made once on the Dask array. On the
# left, the chunk grid of the image with one block's halo; on the right, four of the 16 maps.

fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
axes[0].imshow(image, cmap="gray")
for edge in np.cumsum(x.chunks[2])[:-1]:
    axes[0].axhline(edge - 0.5, color="tab:orange", lw=1)
for edge in np.cumsum(x.chunks[3])[:-1]:
    axes[0].axvline(edge - 0.5, color="tab:orange", lw=1)
axes[0].add_patch(plt.Rectangle((320 - 0.5, 256 - 0.5), 320 + 6, 256 + 6, fill=False,
                                ec="tab:red", lw=2, label="block (1, 1) with its halo"))
axes[0].legend(loc="lower left", fontsize=8)
axes[0].set_title("zarr chunks of the image")
tiles = np.concatenate([np.concatenate([maps[0, 2 * i + j] for j in (0, 1)], axis=1)
                        for i in (0, 3)], axis=0)
# centred on zero, clipped at the 99th percentile of |response| (a few strong edges would
# otherwise wash every other response out to white)
top = float(np.percentile(np.abs(tiles), 99)) or 1.0
shown = axes[1].imshow(tiles, cmap="RdBu_r", vmin=-top, vmax=top)
fig.colorbar(shown, ax=axes[1], shrink=0.8, label="filter response")
axes[1].set_title("maps 0, 1, 6, 7 of the bank")
for ax in axes:
    ax.set_xticks([])
    ax.set_yticks([])
plt.show()

# %%
# The backward pass, and pooling
# ------------------------------
# :func:`vecconv.dask.conv_backward` gives ``dx`` chunked like ``x`` (the full convolution
# of eq. 16–18, each block gathering the deltas of every window that covers it) and ``dw``,
# ``db`` summed over the blocks in a tree, never all in one task. Pooling blocks run a slice
# of the whole pooling's window tables, so they give the very same bits.

dy = da.ones_like(y)
dx, dw, db = vd.conv_backward(dy, x, w, padding=3)
assert dx.chunks == x.chunks
rx, rw, rb = vecconv.conv_backward(np.ones((1, 16, 1200, 1600), np.float32),
                                   image[None, None], w, padding=3)
gx, gw, gb = dask.compute(dx, dw, db)
np.testing.assert_allclose(gx, rx, rtol=2e-4, atol=2e-3)
np.testing.assert_allclose(gw, rw, rtol=2e-4)
np.testing.assert_allclose(gb, rb, rtol=2e-4)

pooled = vd.max_pool(y, 3, stride=2, padding=1).compute()
assert np.array_equal(pooled, vecconv.max_pool(maps, 3, stride=2, padding=1))

# %%
# On a cluster
# ------------
# The same graphs run on ``dask.distributed``: start a cluster, give each worker process
# one vecconv thread (Dask's worker threads already use the cores), and compute::
#
#    from distributed import Client, LocalCluster, progress
#    import vecconv
#
#    cluster = LocalCluster(n_workers=2, threads_per_worker=1, memory_limit="512MiB")
#    client = Client(cluster)
#    client.run(vecconv.set_num_threads, 1)
#    job = client.compute(da.store(y.rechunk((1, 16, 256, 320)), out, lock=False,
#                                  compute=False))
#    progress(job)
