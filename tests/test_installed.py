"""The tests exercise the installed wheel, not the source tree."""

import os

import vecconv
from vecconv import _engine


def test_imported_from_an_installation_not_the_source_tree():
    path = os.path.realpath(vecconv.__file__)
    assert "site-packages" in path or "dist-packages" in path, path
    assert os.path.realpath(_engine.__file__).endswith((".so", ".pyd")), _engine.__file__


def test_openmp_probe():
    """A serial build cannot pass unnoticed where OpenMP is expected (gcc, this CI)."""
    n = vecconv.openmp_threads()
    assert isinstance(n, int) and n >= 0
    if os.environ.get("VECCONV_EXPECT_OPENMP", "1" if os.environ.get("CI") else "0") == "1":
        assert n >= 1, "vecconv was built without OpenMP: the im2col/col2im loops are serial"
