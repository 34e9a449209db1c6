"""SciPy's own convolution tests, run against ``vecconv.signal``.

The installed SciPy's ``scipy/signal/tests/test_signaltools.py`` is run where SciPy put it
(nothing of it is copied into this project), in a pytest subprocess with SciPy's conftest
(its ``xp`` fixture: NumPy only, since ``SCIPY_ARRAY_API`` is unset) and
``tests/scipy_suite_plugin.py``, which puts ``vecconv.signal``'s functions in place of the
names the test module imported from ``scipy.signal``. The selection is every test class
and function of that file about convolution and correlation; the exclusions are
``scipy_suite_plugin.EXCLUDED``, each with its reason.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

#: The tests of test_signaltools.py that exercise the functions vecconv.signal provides.
SELECTED = ["TestConvolve", "TestConvolve2d", "TestFFTConvolve", "TestOAConvolve",
            "TestAllFreqConvolves", "test_convolve_longdtype_input", "TestCorrelateReal",
            "TestCorrelate", "test_correlation_lags", "test_correlation_lags_invalid_mode",
            "TestCorrelateComplex", "TestCorrelate2d", "test_choose_conv_method",
            "test_choose_conv_method_2"]


def _scipy_test_file():
    scipy = pytest.importorskip("scipy")
    path = Path(scipy.__file__).parent / "signal" / "tests" / "test_signaltools.py"
    if not path.exists():
        pytest.skip(f"this SciPy ({scipy.__version__}) was installed without its tests")
    return path


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    path = _scipy_test_file()
    report = tmp_path_factory.mktemp("scipy-suite") / "report.json"
    env = dict(os.environ, VECCONV_SCIPY_SUITE_REPORT=str(report),
               PYTHONPATH=os.pathsep.join([str(Path(__file__).parent)]
                                          + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    env.pop("SCIPY_ARRAY_API", None)
    # SciPy's suite under its own (empty) configuration: not vecconv's pyproject.toml,
    # which pytest would find above a virtual environment made inside the checkout (as
    # .ci/run makes it), and no conftest.py above SciPy's test folder (scipy.conftest is
    # loaded once, as the plugin below)
    ini = report.parent / "pytest.ini"
    ini.write_text("[pytest]\n")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", str(ini),
           "--rootdir", str(report.parent), "--confcutdir", str(path.parent),
           "-p", "scipy.conftest", "-p", "scipy_suite_plugin",
           *[f"{path}::{name}" for name in SELECTED]]
    proc = subprocess.run(cmd, env=env, cwd=report.parent, capture_output=True, text=True)
    if not report.exists():
        pytest.fail(f"SciPy's suite did not run:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    result = json.loads(report.read_text())
    result["returncode"] = proc.returncode
    result["tail"] = proc.stdout[-3000:]
    return result


def test_scipy_signaltools_suite(suite):
    c = suite["counts"]
    summary = (f"SciPy's test_signaltools.py against vecconv.signal: {c['passed']} passed, "
               f"{c['failed']} failed, {c['error']} errors, {c['skipped']} skipped, "
               f"{c['xfailed']} xfailed, {suite['excluded']} excluded")
    print(summary)
    assert c["failed"] == 0 and c["error"] == 0, summary + "\n" + "\n".join(
        suite["failures"]) + "\n" + suite["tail"]
    # the selection ran (11,722 tests with SciPy 1.17.1), not an empty set
    assert c["passed"] > 1000, summary


def test_exclusions_have_reasons():
    sys.path.insert(0, str(Path(__file__).parent))
    try:
        import scipy_suite_plugin
    finally:
        sys.path.pop(0)
    for name, reason in scipy_suite_plugin.EXCLUDED.items():
        assert isinstance(reason, str) and len(reason) > 20, name
