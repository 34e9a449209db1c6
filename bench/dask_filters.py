"""A bank of learned filters over an image larger than the workers' memory, on Dask.

    python bench/dask_filters.py [--size 12288] [--chunk 1024] [--memory-limit 512MiB]
                                 [--workers 2] [--dir /tmp/vecconv-dask] [--json out.json]
                                 [--smoke]

1. Learns 16 7x7 filters: the first layer of a small network (Conv2D 1->16 7x7, tanh,
   4x4 max pooling, Dense) trained for two epochs on the 4,000 training digits.
2. Writes a (1, 1, size, size) float32 image to zarr on disk: a mosaic of the 1,000 test
   digits with noise, larger than the memory limit of each worker.
3. On a LocalCluster of worker processes with that memory limit, reads the image from
   zarr, applies the bank with ``vecconv.dask.conv`` (padding 'same' = 3) and writes the
   (1, 16, size, size) result back to zarr, with Dask's progress bar; then the same with
   ``dask_image.ndfilters.correlate`` applied filter by filter (mode 'constant': the same
   zero padding). Each run starts a fresh cluster and reports its workers' peak
   resident memory (``ru_maxrss``).
4. Also times both without the disk: each block reduced to its sum, so only the reading
   and the filtering remain.

The two results are compared on a few tiles; the JSON records the machine (bench/harness.py).
--smoke runs every step on a 640x640 image in chunks of 320 with one epoch of learning,
to check that the script works.
"""

import argparse
import os
import resource
import shutil

import dask
import dask.array as da
import numpy as np
import zarr
from distributed import Client, LocalCluster, progress, wait

import vecconv
import vecconv.dask as vd
from harness import machine, once, write_json


def learn_filters(seed=0, epochs=2):
    """16 7x7 filters learned on the digits (two epochs of SGD with momentum)."""
    from vecconv import nn
    from vecconv.data import load_digits
    x, y, xt, yt = load_digits(np.float32)
    rng = np.random.default_rng(seed)
    net = nn.Sequential([nn.Conv2D(1, 16, 7, padding=3, seed=seed), nn.Activation("tanh"),
                         nn.MaxPool(4), nn.Flatten(), nn.Dense(16 * 8 * 8, 10, seed=seed)])
    loss_fn, opt = nn.SoftmaxCrossEntropy(), nn.SGD(net, lr=0.02, momentum=0.9)
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for i in range(0, len(x), 32):
            idx = order[i:i + 32]
            _, delta = loss_fn(net.forward(x[idx]), y[idx])
            net.backward(delta)
            opt.step()
    acc = float((net.forward(xt).argmax(axis=1) == yt).mean())
    return net.layers[0].params["w"].copy(), acc, xt


def write_image(path, size, chunk, digits, seed=0):
    """A mosaic of digits with noise, written block by block (never whole in memory)."""
    tiles = digits[:, 0]                       # (1000, 32, 32)

    def block(block_id=None):
        i, j = block_id[2], block_id[3]
        h = min(chunk, size - i * chunk)
        w = min(chunk, size - j * chunk)
        rng = np.random.default_rng([seed, i, j])
        r0, c0 = i * chunk // 32, j * chunk // 32
        rows = []
        for r in range(-(-h // 32)):
            pick = (np.arange(-(-w // 32)) + (r0 + r) * 997 + c0) % len(tiles)
            rows.append(np.concatenate(tiles[pick], axis=1))
        img = np.concatenate(rows, axis=0)[:h, :w]
        img = img + 0.1 * rng.standard_normal(img.shape, dtype=np.float32)
        return img[None, None].astype(np.float32)

    chunks = ((1,), (1,), da.core.normalize_chunks(chunk, (size,))[0],
              da.core.normalize_chunks(chunk, (size,))[0])
    x = da.map_blocks(block, chunks=chunks, dtype=np.float32, meta=np.empty((0,) * 4, np.float32))
    z = zarr.create_array(store=path, shape=x.shape, chunks=(1, 1, chunk, chunk),
                          dtype=np.float32, compressors=None, overwrite=True)
    da.store(x, z, lock=False)
    return z


def peak_memory(client):
    """Each worker's peak resident memory since its start, in bytes."""
    return client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


def run(args, label, build, show=True):
    """One graph on a fresh LocalCluster of worker processes: (seconds, peak worker RSS)."""
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                      memory_limit=args.memory_limit, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        client.run(vecconv.set_num_threads, 1)     # one Dask thread per worker does the work

        def compute():
            future = client.compute(build())
            if show:
                print(f"{label}:", flush=True)
                progress(future)
                print(flush=True)
            wait(future)
            future.result()
        seconds, _ = once(compute)
        return seconds, max(peak_memory(client).values())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=12288)
    ap.add_argument("--chunk", type=int, default=1024)
    ap.add_argument("--memory-limit", default="512MiB")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--dir", default="/tmp/vecconv-dask")
    ap.add_argument("--json", default=None)
    ap.add_argument("--smoke", action="store_true",
                    help="a 640x640 image, one epoch: checks the script runs (no timing)")
    args = ap.parse_args()
    if args.smoke:
        args.size, args.chunk = 640, 320

    learn_s, (w, acc, digits) = once(lambda: learn_filters(epochs=1 if args.smoke else 2))
    print(f"learned 16 7x7 filters in {learn_s:.1f} s (test accuracy of the small net {acc:.3f})")
    os.makedirs(args.dir, exist_ok=True)
    src, out_vc, out_di = (os.path.join(args.dir, n) for n in ("image.zarr", "vecconv.zarr",
                                                               "dask_image.zarr"))
    write_image(src, args.size, args.chunk, digits)
    in_bytes = args.size ** 2 * 4
    out_bytes = 16 * in_bytes
    print(f"image {args.size}x{args.size} float32 = {in_bytes / 2**30:.2f} GiB on disk; "
          f"output 16 maps = {out_bytes / 2**30:.2f} GiB; worker memory limit {args.memory_limit}")

    import dask_image.ndfilters as ndf

    def image():
        return da.from_zarr(src)

    def vecconv_maps():
        return vd.conv(image(), w, padding=3)

    def dask_image_maps():
        x = image()[0, 0]
        return da.stack([ndf.correlate(x, w[i, 0], mode="constant", cval=0.0)
                         for i in range(16)])[None]

    def to_zarr(maps, path):
        def build():
            y = maps().rechunk((1, 16, args.chunk, args.chunk))
            z = zarr.create_array(store=path, shape=y.shape, chunks=(1, 16, args.chunk, args.chunk),
                                  dtype=np.float32, compressors=None, overwrite=True)
            return da.store(y, z, lock=False, compute=False)
        return build

    def sums(maps):
        return lambda: maps().map_blocks(lambda b: np.array(b.sum(dtype=np.float64))[None, None,
                                                                                    None, None],
                                         chunks=(1, 1, 1, 1), dtype=np.float64).sum()

    results = dict(machine=machine(), size=args.size, chunk=args.chunk,
                   memory_limit=args.memory_limit, workers=args.workers,
                   threads_per_worker=1, input_bytes=in_bytes, output_bytes=out_bytes,
                   learn_seconds=learn_s, small_net_test_accuracy=acc)
    for label, maps in (("vecconv.dask.conv", vecconv_maps),
                        ("dask_image.ndfilters.correlate x16", dask_image_maps)):
        path = out_vc if label.startswith("vecconv") else out_di
        seconds, peak = run(args, f"{label} zarr -> zarr", to_zarr(maps, path))
        c_seconds, c_peak = run(args, f"{label} (no disk)", sums(maps), show=False)
        results[label] = dict(zarr_seconds=seconds, peak_worker_bytes=peak,
                              megapixels_per_s=args.size ** 2 / seconds / 1e6,
                              output_gb_per_s=out_bytes / seconds / 1e9,
                              compute_seconds=c_seconds, compute_peak_worker_bytes=c_peak,
                              compute_megapixels_per_s=args.size ** 2 / c_seconds / 1e6)
        print(f"{label}: zarr->zarr {seconds:.1f} s ({args.size ** 2 / seconds / 1e6:.1f} "
              f"Mpixel/s, {out_bytes / seconds / 1e9:.2f} GB/s written), peak worker "
              f"memory {peak / 2**20:.0f} MiB; without the disk {c_seconds:.1f} s "
              f"(peak {c_peak / 2**20:.0f} MiB)", flush=True)
    a, b = zarr.open_array(out_vc, mode="r"), zarr.open_array(out_di, mode="r")
    worst = 0.0
    for i, j in ((0, 0), (args.size // 2 - 100, args.size // 3), (args.size - 300, args.size - 300)):
        pa, pb = a[0, :, i:i + 300, j:j + 300], b[0, :, i:i + 300, j:j + 300]
        worst = max(worst, float(np.abs(pa - pb).max() / max(1e-30, np.abs(pb).max())))
    results["max_relative_difference_on_tiles"] = worst
    vc, di = results["vecconv.dask.conv"], results["dask_image.ndfilters.correlate x16"]
    results["speedup_zarr"] = di["zarr_seconds"] / vc["zarr_seconds"]
    results["speedup_compute"] = di["compute_seconds"] / vc["compute_seconds"]
    print(f"vecconv.dask / dask-image: {results['speedup_zarr']:.1f}x faster zarr->zarr, "
          f"{results['speedup_compute']:.1f}x without the disk; tiles agree to {worst:.1e}")
    if args.json:
        write_json(args.json, results)
    shutil.rmtree(args.dir, ignore_errors=True)


if __name__ == "__main__":
    dask.config.set({"distributed.worker.memory.target": 0.6})
    main()
