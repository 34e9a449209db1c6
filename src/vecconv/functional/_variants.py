"""How the fixed-rank variants (conv2d from conv, max_pool3d from max_pool, ...) get
their names and docstrings: generated once from the general function's."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any


def named(f: Callable[..., Any], name: str, doc: str, module: str) -> Callable[..., Any]:
    """A generated public function, under its own name (conv2d, conv_transpose3d, ...)."""
    f.__doc__ = doc
    f.__name__ = f.__qualname__ = name
    f.__module__ = module
    return f


def sections(doc: str | None, examples: bool = True) -> str:
    """The Parameters section onwards of a public function's docstring (dedented), for
    the docstrings of its fixed-rank variants; without Examples when ``examples`` is
    False (they call the general function)."""
    text = inspect.cleandoc(doc or "")
    text = text[text.index("Parameters\n----------"):]
    if not examples and "Examples\n--------" in text:
        text = text[:text.index("Examples\n--------")].rstrip() + "\n"
    return text
