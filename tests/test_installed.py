"""The tests exercise the installed wheel, not the source tree."""

import os

import vecconv
from vecconv import _engine


def test_imported_from_an_installation_not_the_source_tree():
    path = os.path.realpath(vecconv.__file__)
    assert "site-packages" in path or "dist-packages" in path, path
    assert os.path.realpath(_engine.__file__).endswith((".so", ".pyd")), _engine.__file__


def test_runtime_probe():
    """A build without the worker pool or without the private BLAS cannot pass unnoticed
    where both are expected (Linux, this CI): vecconv would then run serially."""
    info = vecconv.runtime_info()
    assert isinstance(info["num_threads"], int) and info["num_threads"] >= 1
    if os.environ.get("VECCONV_EXPECT_RUNTIME", "1" if os.environ.get("CI") else "0") == "1":
        assert info["pool"], "vecconv was built without its worker pool: every call is serial"
        assert info["private_blas"], "the engine found no private BLAS (scipy-openblas32)"


def test_version_is_written_once():
    """meson.build's project() version is the one the metadata and the package report."""
    import re
    from importlib.metadata import version
    with open(os.path.join(os.path.dirname(__file__), "..", "meson.build")) as fh:
        written = re.search(r"version:\s*'([^']+)'", fh.read()).group(1)
    assert vecconv.__version__ == version("vecconv") == written


def test_license_is_installed():
    """The distribution carries its license (PEP 639): METADATA's License-Expression and
    License-File, and the file itself under dist-info/licenses/, listed in RECORD, the
    source tree's text. An editable install has the same metadata, so nothing is skipped."""
    from importlib.metadata import distribution
    dist = distribution("vecconv")
    assert dist.metadata["License-Expression"] == "BSD-3-Clause"
    assert dist.metadata.get_all("License-File") == ["LICENSE"]
    recorded = [str(f) for f in dist.files or ()]
    assert any(f.endswith(".dist-info/licenses/LICENSE") for f in recorded), \
        "RECORD lists no dist-info/licenses/LICENSE"
    with open(os.path.join(os.path.dirname(__file__), "..", "LICENSE")) as fh:
        assert dist.read_text("licenses/LICENSE") == fh.read()
