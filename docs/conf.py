"""Sphinx configuration of vecconv's documentation site.

Build it (from the repository's root, with the ``docs`` extra installed next to vecconv):

    python -m sphinx -W --keep-going -b html docs docs/_build/html

Everything the pages show is made by the build: the API reference from the installed
package's docstrings, the tutorial's figures by running ``docs/examples/`` against vecconv,
the benchmark table and chart from ``bench/results/*.json``. Nothing is fetched from the
network: MathJax is served from the site itself (sphinx-mathjax-offline).
"""

import os
import sys
from pathlib import Path

import vecconv

HERE = Path(__file__).resolve().parent

# autosummary ends a summary at the first ". ": the derivation's "eq. 12" is not the end of
# a sentence (16 of the API summaries were cut there)
import sphinx.ext.autosummary as _autosummary  # noqa: E402
_autosummary.WELL_KNOWN_ABBREVIATIONS = (tuple(_autosummary.WELL_KNOWN_ABBREVIATIONS)
                                         + ("eq.", "eqs.", "Eq.", "Eqs."))
sys.path.insert(0, str(HERE / "_ext"))

project = "vecconv"
author = "the vecconv developers"
copyright = "the vecconv developers, BSD-3-Clause"
release = vecconv.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
    "sphinx-mathjax-offline",   # sets mathjax_path to a copy of MathJax inside _static
    "myst_parser",              # the Markdown pages (engine, performance, reliability)
    "benchpage",                # docs/_ext/benchpage.py: the benchmark page's table and chart
]

exclude_patterns = ["_build", "_generated", "README.md", "tests", "examples", "guide"]
templates_path = ["_templates"]
html_static_path = ["_static"]
html_css_files = ["vecconv.css"]

# ----------------------------------------------------------------------------- API pages
autosummary_generate = True
autosummary_imported_members = False
autodoc_typehints = "none"           # numpydoc's Parameters section says the types
numpydoc_show_class_members = False  # the class template lists the members itself
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
# What every public docstring must have: every parameter described, nothing
# described that is not a parameter, a Returns section (with descriptions) wherever a value
# is returned, and a docstring at all. Under -W any of these fails the build.
numpydoc_validation_checks = {"PR01", "PR02", "PR07", "RT01", "RT03", "GL08"}
# A layer's overrides of Layer's methods carry Layer's docstring (autodoc inherits it, and
# the class pages show inherited members), so they are checked once, on Layer; ``name`` is
# a class attribute documented by a #: comment, which numpydoc cannot see.
numpydoc_validation_exclude = {
    r"^vecconv\.nn\.(?!Layer\.)\w+\.(config|param_shapes|forward|backward|output_shape|describe)$",
    r"^vecconv\.nn\.\w+\.name$",
}

# ----------------------------------------------------------------------------- examples
sphinx_gallery_conf = {
    "examples_dirs": ["examples", "guide"],
    "gallery_dirs": ["tutorial", "user_guide"],
    "filename_pattern": r"/plot_",     # run every plot_*.py: the executed docs are a test
    "abort_on_example_error": True,
    "only_warn_on_example_error": False,
    "remove_config_comments": True,
    "download_all_examples": False,
    "within_subsection_order": "FileNameSortKey",
    "matplotlib_animations": False,
    "image_scrapers": ("matplotlib",),
    "reset_modules": ("matplotlib",),
    "min_reported_time": 1e9,           # no timings on the pages (the machine is shared)
    "show_memory": False,
    "show_signature": False,
    "write_computation_times": False,   # no page of timings either
}

# ----------------------------------------------------------------------------- HTML
html_theme = "pydata_sphinx_theme"
html_title = f"vecconv {release}"
html_theme_options = {
    "navbar_end": ["navbar-icon-links"],   # no theme switcher: one look, checked by the tests
    "secondary_sidebar_items": ["page-toc"],
    "show_prev_next": False,
    "footer_start": ["copyright"],
    "footer_end": [],
    "navigation_with_keys": False,
}
html_context = {"default_mode": "light"}
# no left sidebar (the section navigation) but on the API pages: the tutorial's code cells
# get the whole width of the text column
html_sidebars = {page: [] for page in ("index", "install", "tutorial/*", "benchmarks",
                                        "references")}
html_show_sourcelink = False

# math: the MathJax that sphinx-mathjax-offline bundles, no CDN. $...$ is not math here.
mathjax3_config = {"tex": {"inlineMath": [["\\(", "\\)"]], "displayMath": [["\\[", "\\]"]]}}

# the gallery's scripts and the benchmark extension find the repository root here
os.environ.setdefault("VECCONV_REPO", str(HERE.parent))
