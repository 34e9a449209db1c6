"""Saving and loading networks: the architecture as JSON and the parameters as arrays,
in one .npz file.

The architecture is the ``__spec__`` member: ``{"format": "vecconv.nn.Sequential",
"version": 2, "layers": [{"type", "name", "config"}, ...]}``. vecconv 0.1 wrote a bare
list of layers (version 1), where ``AvgPool`` was LeCun's trainable layer, now
``Subsampling``; such files still load. Parameter ``k`` of layer ``i`` is the member
``p{i}_{k}``.
"""

from __future__ import annotations

import json
import os
import zipfile
from typing import Any

import numpy as np

from .activation import Activation
from .container import Sequential
from .conv import Conv1D, Conv2D, Conv3D, ConvTranspose1D, ConvTranspose2D, ConvTranspose3D
from .linear import Dense, Flatten
from .pooling import (AvgPool, AvgPool1D, AvgPool2D, AvgPool3D, MaxPool, MaxPool1D, MaxPool2D,
                      MaxPool3D, Subsampling)

__all__ = ["save", "load"]

#: the layer types a file may name, by the name it stores
LAYER_TYPES = {c.__name__: c for c in (
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
    path = os.fspath(path)
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
    arrays: dict[str, Any] = {f"p{i}_{k}": v for i, layer in enumerate(net.layers)
                              for k, v in layer.checked_params().items()}
    spec = dict(format=FORMAT, version=VERSION,
                layers=[dict(type=type(layer).__name__, name=layer.name,
                             config=plain_json(layer.config())) for layer in net.layers])
    np.savez(path, __spec__=np.array(json.dumps(spec)), **arrays)
    return path


def load(path: str | os.PathLike[str]) -> Sequential:
    """Rebuild a network saved by ``Sequential.save``; it predicts the same outputs.

    Everything in the file is checked before it is used: it must be a vecconv model
    (an .npz holding ``__spec__``), every layer type and configuration must be valid, and
    the parameter arrays must be exactly the ones the configuration implies (no missing
    or extra arrays; each of the layer's shape and dtype). A path without ``.npz`` is
    read with the suffix added when only that file exists (as ``save`` writes it).

    Parameters
    ----------
    path : str or os.PathLike
        A file written by ``Sequential.save``.

    Returns
    -------
    Sequential
        The network, its layers configured and their parameters set as saved.
    """
    path = os.fspath(path)
    if not os.path.exists(path) and os.path.exists(_npz_path(path)):
        path = _npz_path(path)
    try:
        f = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        if isinstance(exc, (FileNotFoundError, IsADirectoryError)):
            raise
        raise ValueError(f"{path} is not a vecconv model (an .npz saved by "
                         f"Sequential.save): {exc}") from None
    if not isinstance(f, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} holds a single array (.npy), not a vecconv model (an .npz "
                         "saved by Sequential.save)")
    with f:
        if "__spec__" not in f.files:
            raise ValueError(f"{path} is an .npz but not a vecconv model: it has no __spec__")
        try:
            spec = json.loads(str(f["__spec__"]))
        except (ValueError, RecursionError) as exc:
            raise ValueError(f"{path}: the model's __spec__ is not valid: {exc}") from None
        version, items = _layer_items(path, spec)
        types = dict(LAYER_TYPES, **_VERSION_1_TYPES) if version == 1 else LAYER_TYPES
        layers, expected = [], set()
        for i, item in enumerate(items):
            kind = item.get("type")
            if not isinstance(kind, str) or kind not in types:
                raise ValueError(f"{path}: layer {i} has unknown type {kind!r}; known: "
                                 f"{sorted(types)}")
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
            try:
                layer = types[kind](**config)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{path}: layer {i} ({kind}) has an invalid config: "
                                 f"{exc}") from None
            layer.name = name
            for k, shape in layer.param_shapes().items():
                key = f"p{i}_{k}"
                expected.add(key)
                if key not in f.files:
                    raise ValueError(f"{path}: parameter {key!r} of layer {i} ({kind}) is missing")
                a = f[key]
                if a.shape != tuple(shape) or a.dtype != layer.dtype:
                    raise ValueError(f"{path}: parameter {key!r} of layer {i} ({kind}) must be "
                                     f"{layer.dtype.name} of shape {tuple(shape)}, got "
                                     f"{a.dtype.name} of shape {a.shape}")
                layer.params[k] = np.array(a, order="C")
            layers.append(layer)
        extra = set(f.files) - expected - {"__spec__"}
        if extra:
            raise ValueError(f"{path}: arrays that no layer has: {sorted(extra)}")
    return Sequential(layers)


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
