"""A pytest plugin that runs SciPy's own convolution tests against ``vecconv.signal``.

Loaded (``-p scipy_suite_plugin``) into a pytest run of the installed SciPy's
``scipy/signal/tests/test_signaltools.py`` by ``tests/test_signal_scipy_suite.py``. Once
the test module is imported, every name it took from ``scipy.signal`` that
``vecconv.signal`` implements is replaced by vecconv's function, and its ``signal`` is a
namespace that answers those names with vecconv's (and ``signal._signaltools`` with
``vecconv.signal``, so a test that patches ``fftconvolve`` there patches vecconv's). The
test file itself is read where SciPy installed it: nothing of it is copied here.
"""

import json
import os
import types


import vecconv.signal as vsignal

#: Tests of the selected classes that are not run, each with its reason.
EXCLUDED = {
}

_patched = set()


class _SignalProxy(types.ModuleType):
    """scipy.signal, with vecconv.signal's functions in place of SciPy's."""

    def __init__(self, scipy_signal):
        super().__init__("scipy.signal(vecconv)")
        self._scipy = scipy_signal

    def __getattr__(self, name):
        if name == "_signaltools":
            return vsignal
        if name in vsignal.__all__:
            return getattr(vsignal, name)
        return getattr(self._scipy, name)


def _patch(module):
    if id(module) in _patched:
        return
    _patched.add(id(module))
    for name in vsignal.__all__:
        if name in vars(module):
            setattr(module, name, getattr(vsignal, name))
    if isinstance(vars(module).get("signal"), types.ModuleType):
        module.signal = _SignalProxy(module.signal)


def pytest_collection_modifyitems(config, items):
    keep, drop = [], []
    for item in items:
        reason = next((r for key, r in EXCLUDED.items() if key in item.nodeid), None)
        if reason is None:
            keep.append(item)
            _patch(item.module)
        else:
            drop.append(item)
    items[:] = keep
    config.hook.pytest_deselected(items=drop)
    config._vecconv_excluded = len(drop)


_counts = {"passed": 0, "failed": 0, "skipped": 0, "xfailed": 0, "xpassed": 0, "error": 0}
_failures = []


def pytest_runtest_logreport(report):
    if report.when == "call" or report.outcome != "passed":
        if hasattr(report, "wasxfail"):
            key = "xfailed" if report.skipped else "xpassed"
        elif report.when != "call" and report.failed:
            key = "error"
        else:
            key = report.outcome
        _counts[key] += 1
        if report.failed:
            _failures.append(report.nodeid.split("::", 1)[-1])


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("VECCONV_SCIPY_SUITE_REPORT")
    if path:
        with open(path, "w") as f:
            json.dump({"counts": _counts,
                       "excluded": getattr(session.config, "_vecconv_excluded", 0),
                       "failures": _failures[:200]}, f)
