"""The documentation runs: every docstring example, and the README's tour."""

import doctest
import pathlib
import re

import pytest

import vecconv
import vecconv.functional.convolution
import vecconv.functional.unfold
import vecconv.matrix
import vecconv.nn


@pytest.mark.parametrize("module", [vecconv.functional.convolution, vecconv.functional.unfold,
                                    vecconv.matrix, vecconv.nn])
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{module.__name__} has no examples"
    assert result.failed == 0


def test_readme_tour_runs():
    readme = pathlib.Path(__file__).resolve().parent.parent / "README.md"
    if not readme.exists():
        pytest.skip("README.md is not beside the tests (running from an sdist?)")
    blocks = re.findall(r"```python\n(.*?)```", readme.read_text(), flags=re.S)
    assert blocks, "the README has no python example"
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {})
