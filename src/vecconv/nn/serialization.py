"""Saving and loading networks: the architecture as JSON and the parameters as arrays,
in one .npz file.

The architecture is the ``__spec__`` member: ``{"format": "vecconv.nn.Sequential",
"version": 2, "layers": [{"type", "name", "config"}, ...], "input_shape"}``. vecconv 0.1
wrote a bare list of layers (version 1), where ``AvgPool`` was LeCun's trainable layer, now
``Subsampling``; such files still load. Parameter ``k`` of layer ``i`` is the member
``p{i}_{k}``.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import stat
import zipfile
import zlib
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import numpy as np
from numpy.lib import format as npformat

from .._validate import check_fits, integer, layer_dtype

from .activation import Activation
from .container import Sequential
from .conv import Conv1D, Conv2D, Conv3D, ConvTranspose1D, ConvTranspose2D, ConvTranspose3D
from .linear import Dense, Flatten
from .parameter import Layer
from .pooling import (AvgPool, AvgPool1D, AvgPool2D, AvgPool3D, MaxPool, MaxPool1D, MaxPool2D,
                      MaxPool3D, Subsampling)

__all__ = ["save", "load"]

#: the layer types a file may name, by the name it stores
LAYER_TYPES: dict[str, type[Layer]] = {c.__name__: c for c in (
    Conv1D, Conv2D, Conv3D, ConvTranspose1D, ConvTranspose2D, ConvTranspose3D, MaxPool,
    MaxPool1D, MaxPool2D, MaxPool3D, AvgPool, AvgPool1D, AvgPool2D, AvgPool3D, Subsampling,
    Dense, Flatten, Activation)}
#: the format this vecconv writes, and the versions it reads
FORMAT, VERSION = "vecconv.nn.Sequential", 2
#: vecconv 0.1's names (format version 1) that now mean another class
_VERSION_1_TYPES = {"AvgPool": Subsampling}


def plain_json(value: Any) -> Any:
    """A configuration as JSON can hold it: numpy scalars and tuples become Python values."""
    if isinstance(value, dict):
        return {k: plain_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_json(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return plain_json(value.tolist())
    return value


def _npz_path(path: str | os.PathLike[str]) -> str:
    path = os.fsdecode(path)
    return path if path.endswith(".npz") else path + ".npz"


def save(net: Sequential, path: str | os.PathLike[str]) -> str:
    """Write ``net``'s architecture (JSON) and parameters in one .npz file.

    Parameters
    ----------
    net : Sequential
        The network.
    path : str or os.PathLike
        Where to write; ``.npz`` is appended when missing (as ``numpy.savez`` does).

    Returns
    -------
    str
        The path written (with ``.npz``).
    """
    path = _npz_path(path)
    arrays: dict[str, Any] = {}
    items = []
    for i, layer in enumerate(net.layers):
        config = _savable(i, layer)
        arrays.update({f"p{i}_{k}": v for k, v in layer.checked_params().items()})
        items.append(dict(type=type(layer).__name__, name=layer.name, config=config))
    spec = dict(format=FORMAT, version=VERSION, layers=items,
                input_shape=None if net.input_shape is None else list(net.input_shape))
    np.savez(path, __spec__=np.array(json.dumps(spec)), **arrays)
    return path


def _savable(i: int, layer: Layer) -> dict[str, Any]:
    """Layer i's configuration as JSON, once it is sure that ``load`` can rebuild the
    layer from it: the class name is its own (not a built-in layer's), ``config()`` fits
    its constructor, and ``param_shapes()`` is defined when it has parameters."""
    cls = type(layer)
    kind = cls.__name__
    builtin = LAYER_TYPES.get(kind)
    if builtin is not None and builtin is not cls:
        raise ValueError(f"layer {i} is a {cls.__module__}.{cls.__qualname__}, which has the "
                         f"name of the built-in vecconv.nn.{kind}: a file names layers by "
                         "their class, so give your class a name of its own")
    try:
        layer.param_shapes()
    except NotImplementedError as exc:
        raise TypeError(f"layer {i} ({kind}) cannot be saved: {exc}") from None
    config = layer.config()
    if not isinstance(config, dict) or not all(isinstance(k, str) for k in config):
        raise TypeError(f"layer {i} ({kind}): config() must return a dict of keyword "
                        f"arguments, got {config!r}")
    if builtin is None:
        try:
            inspect.signature(cls).bind(**config)
        except TypeError as exc:
            raise TypeError(f"layer {i} ({kind}) cannot be saved: {kind}(**config()) would "
                            f"fail ({exc}); define config() to return the keyword arguments "
                            "that rebuild the layer") from None
    return plain_json(config)


def load(path: str | os.PathLike[str], *,
         layers: Iterable[type[Layer]] | Mapping[str, type[Layer]] = ()) -> Sequential:
    """Rebuild a network saved by ``Sequential.save``; it predicts the same outputs.

    Everything in the file is checked before it is used, and before anything large is
    allocated: it must be a vecconv model (an .npz holding ``__spec__``); every layer
    type and configuration must be valid; and the parameter arrays must be exactly the
    ones the configurations imply (no missing or extra arrays, each of its layer's shape
    and float dtype, in either byte order). The arrays' headers are compared with the
    configuration before any array is read, and no layer draws initial weights. A path
    without ``.npz`` is read with the suffix added when only that file exists (as
    ``save`` writes it). Every problem with the file is a ValueError naming the file
    (and the member, for a member's problem).

    A file names each layer by its class; ``load`` builds the built-in layers of
    ``vecconv.nn`` and the classes given in ``layers``, and nothing else: no name read
    from a file is imported or called. A layer class of your own is rebuilt as
    ``cls(**config)`` from its ``config()``, then given the stored arrays its
    ``param_shapes()`` asks for (of its ``dtype``, when it has one).

    Parameters
    ----------
    path : str or os.PathLike
        A file written by ``Sequential.save``.
    layers : iterable of Layer subclasses, or a mapping of name to subclass
        Your own layer classes the file may name (by ``cls.__name__``, or by the
        mapping's keys).

    Returns
    -------
    Sequential
        The network, its layers configured and their parameters set as saved.
    """
    custom = _layer_classes(layers)
    path = os.fsdecode(path)
    if not os.path.exists(path) and os.path.exists(_npz_path(path)):
        path = _npz_path(path)
    with _open(path) as archive:
        members = _members(path, archive)
        if "__spec__" not in members:
            raise ValueError(f"{path} is an .npz but not a vecconv model: it has no __spec__")
        text = _read_member(path, archive, members["__spec__"], "__spec__", None)
        try:
            spec = json.loads(str(text[()]))
        except (ValueError, RecursionError) as exc:
            raise ValueError(f"{path}: the model's __spec__ is not valid: {exc}") from None
        version, items = _layer_items(path, spec)
        input_shape = spec.get("input_shape") if version > 1 else None
        types = dict(LAYER_TYPES, **_VERSION_1_TYPES) if version == 1 else dict(LAYER_TYPES)
        types.update(custom)
        # every layer configured and every header checked before any array is read
        built: list[Layer] = []
        wanted: list[dict[str, Any]] = []
        for i, item in enumerate(items):
            layer = _configured(path, i, item, version, types, custom)
            kind = type(layer).__name__
            stored = {}
            for k, shape in _param_shapes(path, i, layer).items():
                key = f"p{i}_{k}"
                what = f"parameter {key!r} of layer {i} ({kind})"
                if key not in members:
                    raise ValueError(f"{path}: {what} is missing")
                stored[k] = (key, what, _Expected(shape, _float_dtype(layer)))
                _read_member(path, archive, members[key], what, stored[k][2], header_only=True)
            built.append(layer)
            wanted.append(stored)
        expected = {key for stored in wanted for key, _, _ in stored.values()}
        extra = set(members) - expected - {"__spec__"}
        if extra:
            raise ValueError(f"{path}: arrays that no layer has: {sorted(extra)}")
        check_fits(sum(e.nbytes for stored in wanted for _, _, e in stored.values()),
                   f"the parameters stored in {path}")
        for layer, stored in zip(built, wanted):
            layer._restore({k: _read_member(path, archive, members[key], what, e)
                            for k, (key, what, e) in stored.items()})
    try:
        return Sequential(built, input_shape=input_shape)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: the model's __spec__ is not valid: {exc}") from None


def _layer_classes(layers: object) -> dict[str, type[Layer]]:
    """load's ``layers``: {name: class}, each a Layer subclass not named as a built-in."""
    if isinstance(layers, Mapping):
        pairs = list(layers.items())
    elif isinstance(layers, (str, bytes)) or not isinstance(layers, Iterable):
        raise TypeError(f"layers must be Layer subclasses (a list, or a dict by name), got "
                        f"{type(layers).__name__}")
    else:
        pairs = [(getattr(c, "__name__", None), c) for c in layers]
    custom: dict[str, type[Layer]] = {}
    for name, cls in pairs:
        if not (isinstance(cls, type) and issubclass(cls, Layer)):
            raise TypeError(f"layers must be subclasses of vecconv.nn.Layer, got {cls!r}")
        if not isinstance(name, str):
            raise TypeError(f"layers: the name of {cls!r} must be a str, got {name!r}")
        if name in LAYER_TYPES and LAYER_TYPES[name] is not cls:
            raise ValueError(f"layers: {cls.__qualname__} is given the name {name!r} of a "
                             "built-in vecconv.nn layer; rename it")
        custom[name] = cls
    return custom


def _param_shapes(path: str, i: int, layer: Layer) -> dict[str, tuple[int, ...]]:
    """Layer i's ``param_shapes()``, checked: names and shapes of non-negative ints."""
    kind = type(layer).__name__
    try:
        shapes = layer.param_shapes()
    except NotImplementedError as exc:
        raise TypeError(f"{path}: layer {i} ({kind}) cannot be loaded: {exc}") from None
    if not isinstance(shapes, dict):
        raise TypeError(f"{path}: layer {i} ({kind}): param_shapes() must return a dict "
                        f"{{name: shape}}, got {type(shapes).__name__}")
    out = {}
    for k, shape in shapes.items():
        try:
            if not isinstance(k, str):
                raise TypeError("a name that is not a str")
            out[k] = tuple(integer("shape entry", n, 0) for n in shape)
        except TypeError as exc:
            raise TypeError(f"{path}: layer {i} ({kind}): param_shapes() must return "
                            f"{{name: tuple of ints}}, got {k!r}: {shape!r} ({exc})") from None
    return out


def _float_dtype(layer: Layer) -> np.dtype[Any] | None:
    """The dtype a layer's stored arrays must have: its float32/float64 ``dtype``, or
    None (either) for a layer of your own without one."""
    dtype = getattr(layer, "dtype", None)
    try:
        return None if dtype is None else layer_dtype(dtype)
    except TypeError:
        return None


def _configured(path: str, i: int, item: dict[str, Any], version: int,
                types: dict[str, type[Layer]], custom: dict[str, type[Layer]]) -> Layer:
    """Layer i of a file, its configuration checked; a built-in layer's parameters not
    yet made, one of yours built by its constructor."""
    kind = item.get("type")
    if not isinstance(kind, str) or kind not in types:
        hint = ("; a class of your own is loaded with load(path, layers=[YourLayer])"
                if isinstance(kind, str) else "")
        raise ValueError(f"{path}: layer {i} has unknown type {kind!r}; known: "
                         f"{sorted(types)}{hint}")
    config = item.get("config", {})
    if not isinstance(config, dict):
        raise ValueError(f"{path}: layer {i} ({kind}) has no valid config")
    if version == 1 and kind in ("AvgPool", "MaxPool") and "size" in config \
            and "kernel_size" not in config:
        config = dict(config)
        config["kernel_size"] = config.pop("size")          # vecconv 0.1 files
    if {"seed", "rng"} & set(config):
        raise ValueError(f"{path}: layer {i} ({kind}) has an invalid config: "
                         "a saved layer carries no random source")
    name = item.get("name")
    if name is not None and not isinstance(name, str):
        raise ValueError(f"{path}: layer {i} ({kind}) has a name that is not a "
                         f"string: {name!r}")
    cls = types[kind]
    try:
        layer = cls(**config) if kind in custom else cls._blank(config)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: layer {i} ({kind}) has an invalid config: "
                         f"{exc}") from None
    layer.name = name
    return layer


# ----------------------------------------------------------------------------- members
class _Expected(NamedTuple):
    """What a parameter's array must be: its shape, and a float dtype of its itemsize
    (either byte order; None: float32 or float64)."""
    shape: tuple[int, ...]
    dtype: np.dtype[Any] | None

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * (8 if self.dtype is None else self.dtype.itemsize)


#: what reading a damaged member may raise (zip, zlib and .npy header errors)
_READ_ERRORS = (ValueError, TypeError, OSError, EOFError, SyntaxError, RecursionError,
                zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError)


def _open(path: str) -> zipfile.ZipFile:
    """The .npz archive at ``path``; a ValueError when it is no zip archive (a FileNotFoundError
    or IsADirectoryError when there is no file)."""
    try:
        # a model is a regular file: /dev/zero or a fifo would never end (or never open)
        if os.path.exists(path) and not stat.S_ISREG(os.stat(path).st_mode):
            raise ValueError(f"{path} is not a regular file, so not a vecconv model (an "
                             f".npz saved by Sequential.save)")
        with open(path, "rb") as f:
            magic = f.read(len(npformat.MAGIC_PREFIX))
        if magic == npformat.MAGIC_PREFIX:
            raise ValueError(f"{path} holds a single array (.npy), not a vecconv model (an "
                             ".npz saved by Sequential.save)")
        return zipfile.ZipFile(path)
    except FileNotFoundError:
        raise
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError,
            RuntimeError) as exc:
        raise ValueError(f"{path} is not a vecconv model (an .npz saved by "
                         f"Sequential.save): {exc}") from None


def _members(path: str, archive: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """{name without .npy: entry} of the archive; a name twice is refused."""
    members: dict[str, zipfile.ZipInfo] = {}
    for info in archive.infolist():
        key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
        if key in members:
            raise ValueError(f"{path}: member {key!r} is stored twice")
        members[key] = info
    return members


#: The largest ``__spec__`` (the JSON description) a file may hold: read into memory
#: before anything else is checked, so it is bounded first (LeNet-5's is about 2 kB).
SPEC_MAX = 16 * 2**20


def _read_member(path: str, archive: zipfile.ZipFile, info: zipfile.ZipInfo, what: str,
                 expected: _Expected | None, header_only: bool = False) -> np.ndarray:
    """The array of one member, its .npy header read and checked first: against
    ``expected`` (a parameter), or as a 0-d string (``__spec__``). A copy in native byte
    order and C order; with ``header_only``, an empty array once the header passed."""
    try:
        with archive.open(info) as fh:
            version = npformat.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = npformat.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, fortran, dtype = npformat.read_array_header_2_0(fh)
            else:
                raise ValueError(f"its .npy format version {version} is not one NumPy writes "
                                 "for numbers")
            shape = tuple(shape)
            problem = _header_problem(shape, dtype, expected)
            nbytes = math.prod(shape) * dtype.itemsize
            if problem is None and nbytes > 1100 * max(info.compress_size, 1) + 4096:
                # deflate shrinks at most about 1032:1: a member declaring more than its
                # compressed bytes could hold is forged
                problem = (f"declares {nbytes} bytes of data in {info.compress_size} "
                           f"compressed bytes, more than any compression holds")
            if problem is None and expected is None and nbytes > SPEC_MAX:
                problem = (f"declares a description of {nbytes} bytes, more than the "
                           f"{SPEC_MAX} any network's needs")
            if problem is None and fh.tell() + nbytes != info.file_size:
                problem = (f"holds {info.file_size - fh.tell()} bytes of data where its "
                           f"header declares {nbytes}")
            if problem is not None:
                raise _Refused(problem)
            if header_only:
                return np.empty(0)
            a = np.empty(shape, dtype=dtype, order="F" if fortran else "C")
            view = memoryview(a.reshape(-1, order="A")).cast("B")  # type: ignore[arg-type]
            done = 0
            while done < nbytes:
                got = fh.readinto(view[done:])  # type: ignore[attr-defined]
                if not got:
                    raise ValueError(f"its data ends after {done} of {nbytes} bytes")
                done += got
            fh.read()                     # to the end: the archive checks the CRC there
    except _Refused as exc:
        raise ValueError(f"{path}: member {info.filename!r}, {what}, {exc}") from None
    except _READ_ERRORS as exc:
        raise ValueError(f"{path}: member {info.filename!r}, {what}, cannot be read: "
                         f"{exc}") from None
    return a.astype(dtype.newbyteorder("="), order="C", copy=False)


class _Refused(Exception):
    """A member that was read but is not what the configuration implies."""


def _header_problem(shape: tuple[int, ...], dtype: np.dtype[Any],
                    expected: _Expected | None) -> str | None:
    """What is wrong with a member whose .npy header declares ``shape`` and ``dtype``."""
    if expected is None:                                       # __spec__: one JSON string
        if dtype.kind != "U" or shape != ():
            return f"must be a 0-d unicode string, got {dtype} of shape {shape}"
        return None
    ok = dtype.kind == "f" and dtype.names is None and dtype.subdtype is None and (
        dtype.itemsize in (4, 8) if expected.dtype is None
        else dtype.itemsize == expected.dtype.itemsize)
    if shape == expected.shape and ok:
        return None
    want = "float32 or float64" if expected.dtype is None else expected.dtype.name
    got = dtype.name if dtype.kind == "f" and dtype.subdtype is None else str(dtype)
    return f"must be {want} of shape {expected.shape}, got {got} of shape {shape}"


def _layer_items(path: str, spec: Any) -> tuple[int, list[dict[str, Any]]]:
    """(format version, the layers' entries) of a parsed ``__spec__``."""
    version: Any
    items: Any
    if isinstance(spec, list):                  # vecconv 0.1: a bare list of layers
        version, items = 1, spec
    elif isinstance(spec, dict) and spec.get("format") == FORMAT:
        version, items = spec.get("version"), spec.get("layers")
        if not isinstance(version, int) or isinstance(version, bool) or version < 2:
            raise ValueError(f"{path}: the model's __spec__ is not valid: version "
                             f"{version!r}")
        if version > VERSION:
            raise ValueError(f"{path} was written by a newer vecconv (format version "
                             f"{version}); this one reads versions 1 to {VERSION}")
    else:
        raise ValueError(f"{path}: the model's __spec__ is not valid: not a vecconv "
                         f"network ({FORMAT!r}) nor a list of layers")
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise ValueError(f"{path}: the model's __spec__ is not valid: not a list of layers")
    return version, items
