"""Model files a user did not write: every problem is a ValueError naming the file and
the member, found before anything large is allocated; any byte order loads."""

import io
import json
import tracemalloc
import zipfile

import numpy as np
import pytest
from numpy.lib import format as npformat

import vecconv.nn as nn


@pytest.fixture
def saved(tmp_path):
    net = nn.Sequential([nn.Conv2D(1, 2, 3, seed=0), nn.Activation("tanh"), nn.Flatten(),
                         nn.Dense(2 * 4 * 4, 3, seed=1)])
    return net, net.save(tmp_path / "net")


def _rewrite(src, dst, **members):
    """Copy the archive src to dst with members replaced by raw bytes (None: removed)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            key = info.filename[:-4]
            if key in members:
                continue
            zout.writestr(info.filename, zin.read(info))
        for key, data in members.items():
            if data is not None:
                zout.writestr(key + ".npy", data)
    return dst


def _npy(shape, descr="<f4", data=b"", fortran=False):
    """The bytes of a .npy member whose header declares ``shape``, followed by ``data``."""
    f = io.BytesIO()
    npformat.write_array_header_1_0(f, {"descr": descr, "fortran_order": fortran,
                                        "shape": tuple(shape)})
    return f.getvalue() + data


def _array_bytes(a):
    f = io.BytesIO()
    np.save(f, a)
    return f.getvalue()


def _peak_bytes(f):
    tracemalloc.start()
    try:
        f()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_a_member_of_bytes_that_are_not_an_array(saved, tmp_path):
    _, path = saved
    bad = _rewrite(path, tmp_path / "bad.npz", p0_b=b"these bytes are not an array")
    with pytest.raises(ValueError, match=r"bad\.npz: member 'p0_b\.npy'.*cannot be read"):
        nn.load(bad)


def test_one_flipped_byte_is_a_value_error_naming_the_member(saved, tmp_path):
    net, path = saved
    raw = bytearray(open(path, "rb").read())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("p3_w.npy")
    # the member's data begins after its local header (30 bytes, the name, the extra field)
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    raw[start + info.file_size - 7] ^= 0x10                    # inside the weights
    bad = tmp_path / "flipped.npz"
    bad.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"flipped\.npz: member 'p3_w\.npy'.*CRC"):
        nn.load(bad)


def test_any_flipped_byte_loads_or_is_a_value_error(saved, tmp_path):
    net, path = saved
    raw = open(path, "rb").read()
    x = np.random.default_rng(0).standard_normal((2, 1, 6, 6)).astype(np.float32)
    bad = tmp_path / "flipped.npz"
    for pos in range(0, len(raw), 37):
        flipped = bytearray(raw)
        flipped[pos] ^= 0x04
        bad.write_bytes(bytes(flipped))
        try:
            again = nn.load(bad)
        except ValueError as exc:
            assert str(bad) in str(exc), (pos, exc)
        else:                      # a byte no reader checks (a date, an unused field)
            np.testing.assert_array_equal(again.forward(x), net.forward(x))


@pytest.mark.parametrize("order", [">", "<", "="])
def test_any_byte_order_loads(saved, tmp_path, order):
    net, path = saved
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    for k in arrays:
        if k != "__spec__":
            arrays[k] = arrays[k].astype(order + "f4")
    np.savez(tmp_path / "swapped.npz", **arrays)
    again = nn.load(tmp_path / "swapped.npz")
    x = np.random.default_rng(1).standard_normal((2, 1, 6, 6)).astype(np.float32)
    np.testing.assert_array_equal(again.forward(x), net.forward(x))
    for _, p in again.named_parameters():
        assert p.data.dtype == np.float32 and p.data.dtype.isnative
        assert p.data.flags.c_contiguous and p.data.flags.writeable


def test_fortran_ordered_arrays_load(saved, tmp_path):
    net, path = saved
    with np.load(path) as f:
        arrays = {k: f[k] if k == "__spec__" else np.asfortranarray(f[k]) for k in f.files}
    np.savez(tmp_path / "f.npz", **arrays)
    again = nn.load(tmp_path / "f.npz")
    np.testing.assert_array_equal(again.layers[3].params["w"], net.layers[3].params["w"])
    assert again.layers[3].params["w"].flags.c_contiguous


def test_a_huge_header_in_a_small_file_is_refused_before_reading(saved, tmp_path):
    """A 1 MB file whose header declares a 2**26-entry bias: refused by its header."""
    _, path = saved
    bad = _rewrite(path, tmp_path / "huge.npz",
                   p0_b=_npy((2**26,), data=bytes(2**20)))
    peak = _peak_bytes(lambda: pytest.raises(ValueError, nn.load, bad))
    with pytest.raises(ValueError, match=r"member 'p0_b\.npy'.*shape \(2,\), got float32 "
                                         r"of shape \(67108864,\)"):
        nn.load(bad)
    assert peak < 8 * 2**20, peak


def test_a_header_that_promises_more_data_than_the_member_holds(tmp_path):
    """Configuration and header agree on 256 MiB of weights; the member holds 1 KB."""
    spec = dict(format="vecconv.nn.Sequential", version=2,
                layers=[dict(type="Dense", name=None,
                             config=dict(in_features=8192, out_features=8192))])
    arrays = {"__spec__": _array_bytes(np.array(json.dumps(spec))),
              "p0_w": _npy((8192, 8192), data=bytes(1024)),
              "p0_b": _array_bytes(np.zeros(8192, np.float32))}
    bad = tmp_path / "short.npz"
    with zipfile.ZipFile(bad, "w") as z:
        for k, v in arrays.items():
            z.writestr(k + ".npy", v)
    peak = _peak_bytes(lambda: pytest.raises(ValueError, nn.load, bad))
    with pytest.raises(ValueError, match=r"member 'p0_w\.npy'.*declares 268435456"):
        nn.load(bad)
    assert peak < 8 * 2**20, peak


@pytest.mark.parametrize("n", [4000, 40000])
def test_no_layer_draws_weights_before_the_file_is_checked(tmp_path, n):
    """A few-KB configuration declaring Dense(n, n): refused by the stored (2, 2) weight
    before any weight of that size is drawn (40000: 12 GB in vecconv 0.1)."""
    spec = dict(format="vecconv.nn.Sequential", version=2,
                layers=[dict(type="Dense", name=None,
                             config=dict(in_features=n, out_features=n))])
    path = tmp_path / "dense.npz"
    np.savez(path, __spec__=np.array(json.dumps(spec)), p0_w=np.zeros((2, 2), np.float32),
             p0_b=np.zeros(n, np.float32))
    peak = _peak_bytes(lambda: pytest.raises(ValueError, nn.load, path))
    with pytest.raises(ValueError, match=rf"dense\.npz: member 'p0_w\.npy'.*shape \({n}, {n}\)"):
        nn.load(path)
    assert peak < 8 * 2**20, peak


def test_members_past_their_header_or_twice_are_refused(saved, tmp_path):
    _, path = saved
    longer = _rewrite(path, tmp_path / "long.npz",
                      p0_b=_npy((2,), data=bytes(8 + 4)))
    with pytest.raises(ValueError, match=r"member 'p0_b\.npy'.*12 bytes of data"):
        nn.load(longer)
    twice = tmp_path / "twice.npz"
    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(twice, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info))
        with pytest.warns(UserWarning, match="Duplicate"):
            zout.writestr("p0_b.npy", zin.read("p0_b.npy"))
    with pytest.raises(ValueError, match="'p0_b' is stored twice"):
        nn.load(twice)


@pytest.mark.parametrize("member, data, match", [
    ("__spec__", _npy((), descr="<f8", data=bytes(8)), "0-d unicode string"),
    ("__spec__", b"\x93NUMPY\x03\x00", "cannot be read"),
    ("p0_w", _npy((2, 1, 3, 3), descr="<i4", data=bytes(72)), "float32 of shape.*got int32"),
    ("p0_w", _npy((2, 1, 3, 3), descr="<f8", data=bytes(144)), "float32 of shape.*got float64"),
    ("p0_w", _npy((2, 1, 3, 3), descr=[("a", "<f4")], data=bytes(72)), "float32 of shape"),
    ("p0_w", b"\x93NUMPY\x01\x00\x10\x00{'descr': nope}", "cannot be read"),
])
def test_every_damaged_member_names_the_file_and_the_member(saved, tmp_path, member, data,
                                                            match):
    _, path = saved
    bad = _rewrite(path, tmp_path / "bad.npz", **{member: data})
    with pytest.raises(ValueError, match=rf"bad\.npz: member '{member}\.npy'.*{match}"):
        nn.load(bad)


def test_a_huge_declared_description_is_refused_before_it_is_read(tmp_path):
    """A deflated __spec__ member may declare gigabytes in a few kB of file: refused by
    its header, naming the file and the member."""
    import zipfile
    from numpy.lib import format as npformat
    path = tmp_path / "huge.npz"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        with z.open("__spec__.npy", "w", force_zip64=True) as fh:
            npformat.write_array_header_1_0(
                fh, {"descr": "<U268435456", "fortran_order": False, "shape": ()})
            chunk = b"\0" * (1 << 20)
            for _ in range(1024):           # 1 GiB of zeros, a few MB deflated
                fh.write(chunk)
    with pytest.raises(ValueError, match=r"huge\.npz.*__spec__.*more than"):
        nn.load(path)


@pytest.mark.parametrize("make", ["dev_zero", "fifo", "directory"])
def test_a_path_that_is_no_regular_file_is_refused_at_once(tmp_path, make):
    """/dev/zero never ends and a fifo never opens: refused by their kind, naming them."""
    import os
    path = {"dev_zero": "/dev/zero", "fifo": str(tmp_path / "f"),
            "directory": str(tmp_path)}[make]
    if make == "fifo":
        os.mkfifo(path)
    with pytest.raises(ValueError, match="is not a regular file"):
        nn.load(path)


def test_a_forged_member_size_and_an_odd_compression_are_value_errors(tmp_path):
    import struct
    net = nn.Sequential([nn.Dense(3, 2, seed=0)])
    path = net.save(tmp_path / "m")
    raw = bytearray(open(path, "rb").read())
    cd = raw.find(b"PK\x01\x02")
    for offset, value in ((8, 1), (10, 99)):       # "encrypted" flag; unknown method
        bad = bytearray(raw)
        struct.pack_into("<H", bad, cd + offset, value)
        target = tmp_path / f"bad{offset}.npz"
        target.write_bytes(bytes(bad))
        with pytest.raises(ValueError, match=r"bad\d+\.npz"):
            nn.load(target)
