"""The installed package's type hints: complete on the public API, accepted by mypy, and
strict enough that a wrong call is flagged.

Everything here checks the *installed* vecconv (its py.typed, its annotations and the
engine's ``_engine.pyi``), never the source tree: mypy runs in a scratch directory where
only the installed package can be found.
"""

import inspect
import os
import re
import subprocess
import sys
import textwrap
import typing

import pytest

import vecconv
import vecconv.nn
import vecconv.signal

if os.environ.get("CI"):
    import mypy  # noqa: F401  (the test extra has it: in CI a missing mypy is a failure)
else:
    pytest.importorskip("mypy")

PACKAGE_DIR = os.path.dirname(os.path.realpath(vecconv.__file__))

# What the package itself must pass: every annotated function's body is checked, an
# annotated signature must be complete, and no ignore comment may be stale.
PACKAGE_CONFIG = """\
[mypy]
disallow_incomplete_defs = True
no_implicit_optional = True
strict_equality = True
warn_redundant_casts = True
warn_unused_ignores = True
warn_unused_configs = True

[mypy-tqdm.*]
ignore_missing_imports = True

# SciPy ships no type hints (vecconv.signal and the FFT route import it)
[mypy-scipy.*]
ignore_missing_imports = True
"""

# What a user's strictly checked code sees.
USER_CONFIG = """\
[mypy]
strict = True
"""


@pytest.fixture(scope="module")
def mypy_run(tmp_path_factory):
    """mypy in a scratch directory (so only the installed vecconv is on its path), with one
    cache for the whole module (NumPy's and PyTorch's stubs are read once)."""
    root = tmp_path_factory.mktemp("mypy")
    cache = root / "cache"

    def run(config, *args, files=None):
        work = root / f"run{len(list(root.iterdir()))}"
        work.mkdir()
        (work / "mypy.ini").write_text(config)
        for name, text in (files or {}).items():
            (work / name).write_text(textwrap.dedent(text))
        env = {k: v for k, v in os.environ.items() if k not in ("MYPYPATH", "PYTHONPATH")}
        proc = subprocess.run(
            [sys.executable, "-m", "mypy", "--config-file", "mypy.ini", "--cache-dir",
             str(cache), "--no-error-summary", "--show-error-codes", "--no-pretty",
             "--python-executable", sys.executable, *args],
            cwd=work, env=env, capture_output=True, text=True, timeout=600)
        return proc.returncode, proc.stdout + proc.stderr

    return run


# ----------------------------------------------------------------------------- the wheel
def test_the_wheel_is_typed():
    """PEP 561: py.typed marks the package as typed; the compiled engine has its stub."""
    assert os.path.isfile(os.path.join(PACKAGE_DIR, "py.typed"))
    assert os.path.isfile(os.path.join(PACKAGE_DIR, "_engine.pyi"))


def _public_callables():
    """(label, function) for every function of vecconv.__all__, every public class and
    method of vecconv.nn (inherited ones included: Conv2D's come from a private base), and
    vecconv.torch's functions when PyTorch is installed."""
    out = []
    for name in vecconv.__all__:
        obj = getattr(vecconv, name)
        if callable(obj):
            out.append((f"vecconv.{name}", obj))
    for name in vecconv.nn.__all__:
        obj = getattr(vecconv.nn, name)
        if inspect.isclass(obj):
            for attr, member in inspect.getmembers(obj):
                if attr.startswith("_") and attr not in ("__init__", "__call__"):
                    continue
                if isinstance(inspect.getattr_static(obj, attr), property):
                    member = inspect.getattr_static(obj, attr).fget
                if not inspect.isfunction(member) or not member.__module__.startswith("vecconv"):
                    continue
                out.append((f"vecconv.nn.{name}.{attr}", member))
        elif inspect.isfunction(obj):
            out.append((f"vecconv.nn.{name}", obj))
    out += [(f"vecconv.signal.{name}", getattr(vecconv.signal, name))
            for name in vecconv.signal.__all__]
    try:
        import vecconv.torch as vt
    except ImportError:
        pass
    else:
        out += [(f"vecconv.torch.{name}", getattr(vt, name)) for name in vt.__all__]
    return out


PUBLIC = _public_callables()


@pytest.mark.parametrize("label, func", PUBLIC, ids=[label for label, _ in PUBLIC])
def test_every_public_signature_is_annotated(label, func):
    """Every parameter (but self) and the result; and the annotations resolve at run time
    (typing.get_type_hints evaluates them in the module they were written in)."""
    sig = inspect.signature(func)
    missing = [p.name for i, p in enumerate(sig.parameters.values())
               if p.annotation is inspect.Parameter.empty and not (i == 0 and p.name == "self")]
    assert not missing, f"{label}: parameters without a type: {missing}"
    assert sig.return_annotation is not inspect.Signature.empty, f"{label}: no return type"
    hints = typing.get_type_hints(func)
    assert "return" in hints


def test_the_survey_of_the_public_api_is_not_empty():
    """The parametrised test above must really see the API (a broken survey would pass)."""
    labels = {label for label, _ in PUBLIC}
    for expected in ("vecconv.conv2d", "vecconv.max_pool3d", "vecconv.threads",
                     "vecconv.nn.Conv2D.forward", "vecconv.nn.Conv2D.__init__",
                     "vecconv.nn.Sequential.save", "vecconv.nn.Layer.params",
                     "vecconv.signal.convolve", "vecconv.signal.choose_conv_method"):
        assert expected in labels
    assert len(PUBLIC) > 100


# ----------------------------------------------------------------------------- mypy
def test_mypy_accepts_the_installed_package(mypy_run):
    modules = ["vecconv", "vecconv.nn", "vecconv.matrix", "vecconv.data", "vecconv.train",
               "vecconv._engine", "vecconv.signal"]
    try:
        import torch  # noqa: F401
        modules.append("vecconv.torch")
    except ImportError:
        pass
    args = [a for m in modules for a in ("-m", m)]
    code, out = mypy_run(PACKAGE_CONFIG, "--verbose", *args)
    report = "\n".join(line for line in out.splitlines() if ": error:" in line or
                       ": note:" in line)
    assert code == 0, report or out[-3000:]
    # it read the installed files (the ones this test imports), not some other copy
    assert re.search(re.escape(os.path.join(PACKAGE_DIR, "_engine.pyi")), out), out[-3000:]


GOOD_USE = '''
    from typing import Any

    import numpy as np
    from numpy.typing import NDArray

    import vecconv
    import vecconv.nn as nn

    x = np.zeros((2, 3, 8, 8), np.float32)
    w = np.ones((4, 3, 3, 3), np.float32)
    y: NDArray[np.floating[Any]] = vecconv.conv2d(x, w, padding=1, padding_mode="reflect")
    dx, dw, db = vecconv.conv2d_backward(y, x, w, padding=1, padding_mode="reflect")
    cols = vecconv.im2col([[[[1.0, 2.0], [3.0, 4.0]]]], 1)
    p = vecconv.max_pool2d(y, 2)
    p2, idx = vecconv.max_pool(y, (2, 2), return_indices=True)
    g = vecconv.max_pool_backward(p2, y, kernel_size=2, indices=idx)
    a = vecconv.avg_pool1d(np.zeros((1, 2, 6)), 3, stride=1) + vecconv.vec(np.eye(2)).sum()
    old: int = vecconv.set_num_threads(1)
    with vecconv.threads(2):
        n: int = vecconv.get_num_threads()
    info = vecconv.runtime_info()
    flag: bool = info["private_blas"]

    net = nn.lenet5(seed=0, pooling="max")
    out = net.forward(np.zeros((1, 1, 32, 32), np.float32))
    loss, delta = nn.SoftmaxCrossEntropy()(out, np.array([3]))
    net.backward(delta)
    nn.SGD(net, lr=0.1).step()
    layer = nn.Conv2D(1, 2, 3, padding="same", dtype=np.float64)
    shape: tuple[int, ...] = layer.output_shape((1, 1, 5, 5))
    labels: NDArray[np.intp] = net.predict(np.zeros((3, 1, 32, 32), np.float32))
    print(y.shape, dx, dw, db, cols.T, p.ndim, g, a, old, n, flag, loss, shape, labels)

    import vecconv.signal as vs
    s1: NDArray[Any] = vs.convolve(np.ones(50), [1.0, 2.0], "same", method="auto")
    s2 = vs.correlate2d(np.ones((8, 8)), np.eye(3), boundary="symm", fillvalue=0.5)
    s3 = vs.fftconvolve(np.ones((2, 9)), np.ones((1, 3)), "valid", axes=1)
    s4 = vs.correlate_bank(np.ones((8, 8)), np.ones((4, 3, 3)), "same", method="direct")
    m: str = vs.choose_conv_method(np.ones(9), np.ones(3))
    m2, times = vs.choose_conv_method(np.ones(9), np.ones(3), measure=True)
    secs: float = times["fft"]
    lags = vs.correlation_lags(9, 3, "valid") + vs.oaconvolve(s1, s1).size
    print(s2, s3, s4, m, m2, secs, lags)
'''

GOOD_TORCH_USE = '''
    import torch

    import vecconv.torch as vt

    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    w = torch.randn(4, 3, 3, 3)
    y: torch.Tensor = vt.conv(x, w, padding=1, padding_mode="circular")
    m, idx = vt.max_pool(y, 2, return_indices=True)
    z = vt.avg_pool(m, 2, ceil_mode=True) + vt.conv_transpose(y, w.transpose(0, 1)).sum()
    print(idx.shape, z.requires_grad)
'''


def test_mypy_strict_accepts_user_code(mypy_run):
    files = {"use.py": GOOD_USE}
    try:
        import torch  # noqa: F401
        files["use_torch.py"] = GOOD_TORCH_USE
    except ImportError:
        pass
    code, out = mypy_run(USER_CONFIG, *files, files=files)
    assert code == 0, out


# line -> the error code mypy must report on it (each line is one mistake)
BAD_USE = {
    "vecconv.conv2d('an image', np.ones((1, 1, 3, 3)))": "arg-type",
    "vecconv.conv(x, x, padding_mode='mirror')": "arg-type",
    "vecconv.conv(x, x, paddng=1)": "call-arg",
    "vecconv.conv(x, x, padding='half')": "arg-type",
    "vecconv.im2col(x, 2.5)": "arg-type",
    "vecconv.max_pool2d(x, 2, return_indices=True).shape": "attr-defined",
    "vecconv.set_num_threads('4')": "arg-type",
    "vecconv.vec('abc')": "arg-type",
    "nn.Activation('tanhh')": "arg-type",
    "nn.Conv2D(1, 2, 3, padding_mode='wrap')": "arg-type",
    "nn.lenet5(pooling='min')": "arg-type",
    "int_result: int = vecconv.conv(x, x)": "assignment",
    "vs.convolve(x, x, mode='half')": "arg-type",
    "vs.correlate(x, x, method='fastest')": "arg-type",
    "vs.convolve2d(x, x, boundary='reflect')": "arg-type",
    "vs.convolve(x, x, 'same', 'auto', (0, 1))": "call-arg",
}
BAD_TORCH_USE = {
    "vt.conv(t, t, paddin=1)": "call-arg",
    "vt.avg_pool(t, 2, dilation=2)": "call-arg",
    "vt.conv(np.zeros((1, 1, 3, 3)), t)": "arg-type",
}


@pytest.mark.parametrize("torch_too", [False, True], ids=["numpy", "torch"])
def test_mypy_flags_wrong_use(mypy_run, torch_too):
    """Each line of the snippet is one mistake; mypy must report each on its own line, with
    the expected error code. (A str where an array belongs is one of them: the input type
    is narrower than numpy.typing.ArrayLike, which admits strings.)"""
    cases = dict(BAD_USE)
    header = ["import numpy as np", "import vecconv", "import vecconv.nn as nn",
              "import vecconv.signal as vs", "x = np.zeros((1, 1, 4, 4))"]
    if torch_too:
        pytest.importorskip("torch")
        cases = dict(BAD_TORCH_USE)
        header += ["import torch", "import vecconv.torch as vt", "t = torch.zeros(1, 1, 4, 4)"]
    lines = header + list(cases)
    code, out = mypy_run(USER_CONFIG, "bad.py", files={"bad.py": "\n".join(lines) + "\n"})
    assert code == 1, out
    for number, line in enumerate(lines, start=1):
        found = re.findall(rf"^bad\.py:{number}: error: .*\[([a-z-]+)\]$", out, re.M)
        if line in cases:
            assert cases[line] in found, f"line {number} {line!r}: expected [{cases[line]}]\n{out}"
        else:
            assert not found, f"line {number} {line!r} is correct code\n{out}"
