"""The built site as a browser shows it: headless Chromium renders the landing page and the
tutorial, and these tests check the screenshots and the DOM after the scripts ran.

Run after building the site (``.ci/docs`` does both)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html
    python -m pytest docs/tests

``DOCS_HTML`` names another build directory; ``CHROMIUM`` another browser binary.
Screenshots are written to ``docs/_build/screenshots/`` (never to git).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

DOCS = Path(__file__).resolve().parent.parent
HTML = Path(os.environ.get("DOCS_HTML", DOCS / "_build" / "html")).resolve()
SHOTS = DOCS / "_build" / "screenshots"
WIDTH, HEIGHT = 1280, 2000
PAGES = {"landing": "index.html", "tutorial": "tutorial/plot_derivation.html",
         "guide-torch": "user_guide/plot_2_torch_module.html",
         "guide-signal": "user_guide/plot_3_signal.html",
         "guide-settings": "user_guide/plot_5_settings.html"}
#: figures each executed page draws at least
FIGURES = {"tutorial": 7, "guide-torch": 1, "guide-signal": 1}
# time the page's scripts get before the screenshot or the DOM dump (virtual time: the
# browser skips ahead when idle, so this is an upper bound, not a wait)
BUDGET_MS = 20000


def _browser():
    name = os.environ.get("CHROMIUM")
    for candidate in ([name] if name else ["chromium", "chromium-browser", "google-chrome"]):
        path = shutil.which(candidate)
        if path:
            return path
    pytest.fail("no Chromium on PATH (apt-get install chromium, or set CHROMIUM)")


def _run(*args):
    """Run headless Chromium on a fresh profile; returns its stdout."""
    with tempfile.TemporaryDirectory(prefix="vecconv-docs-chromium-") as profile:
        cmd = [_browser(), "--headless", "--no-sandbox", "--disable-gpu",
               "--hide-scrollbars", "--no-first-run", "--allow-file-access-from-files",
               f"--user-data-dir={profile}", f"--window-size={WIDTH},{HEIGHT}",
               f"--virtual-time-budget={BUDGET_MS}", *args]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"chromium failed ({done.returncode}): {done.stderr[-2000:]}"
    return done.stdout


def _page(name):
    path = HTML / PAGES[name]
    if not path.exists():
        pytest.fail(f"{path} does not exist: build the site first "
                    "(python -m sphinx -W --keep-going -b html docs docs/_build/html)")
    return path


def _dom(path):
    return _run("--dump-dom", path.as_uri())


class _Text(HTMLParser):
    """The prose a reader sees: not <script>, <style>, code blocks (<pre>: the tutorial's
    code writes TeX for matplotlib's labels) nor MathJax's own output."""

    SKIP = {"script", "style", "pre", "mjx-container", "mjx-assistive-mml"}

    def __init__(self):
        super().__init__()
        self.depth = 0
        self.parts = []

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP:
            self.depth += 1

    def handle_endtag(self, tag):
        if tag in self.SKIP and self.depth:
            self.depth -= 1

    def handle_data(self, data):
        if not self.depth:
            self.parts.append(data)


def _visible_text(dom):
    parser = _Text()
    parser.feed(dom)
    return "".join(parser.parts)


# ----------------------------------------------------------------------------- screenshots
@pytest.mark.parametrize("name", sorted(PAGES))
def test_screenshot_is_a_real_page(name):
    SHOTS.mkdir(parents=True, exist_ok=True)
    png = SHOTS / f"{name}.png"
    png.unlink(missing_ok=True)
    _run(f"--screenshot={png}", _page(name).as_uri())
    assert png.exists() and png.stat().st_size > 10_000
    with Image.open(png) as im:
        assert im.size == (WIDTH, HEIGHT)
        grey = np.asarray(im.convert("L"), dtype=np.float64)
    # not blank: a page of text, code and figures has many grey levels and contrast
    assert grey.std() > 20, f"{png} looks blank (std {grey.std():.1f})"
    assert len(np.unique(grey)) > 50
    # dark text on a light page: the theme's light mode, not a dark or an error page
    assert np.median(grey) > 200
    # the navigation bar is drawn: the top 60 rows are not one flat colour
    assert grey[:60].std() > 5


# ----------------------------------------------------------------------------- the DOM
@pytest.mark.parametrize("name, least", [("landing", 1), ("tutorial", 40)])
def test_mathjax_rendered_every_formula(name, least):
    path = _page(name)
    source = path.read_text()
    formulas = len(re.findall(r'class="math[ "]', source))
    assert formulas >= least, f"{name}: only {formulas} formulas in the HTML"
    dom = _dom(path)
    containers = dom.count("<mjx-container")
    assert containers >= formulas, (f"{name}: {formulas} formulas but {containers} "
                                    "rendered by MathJax (is MathJax served from _static?)")
    assert "<mjx-merror" not in dom, f"{name}: MathJax reports a TeX error"
    text = _visible_text(dom)
    for raw in ("\\(", "\\)", "\\[", "\\begin{", "\\frac", "\\mathbf"):
        assert raw not in text, f"{name}: raw TeX {raw!r} left in the page"
    # MathJax came from the site, not a CDN (none is reachable)
    assert re.search(r'<script[^>]+src="[^"]*_static/mathjax/tex-chtml\.js', source)


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_figures_present_and_loaded(name):
    path = _page(name)
    # a copy of the page beside it whose script records, once every image has loaded or
    # failed, each figure's natural size in an attribute that --dump-dom shows
    probe = path.with_name("_screenshot_probe.html")
    script = """<script>
window.addEventListener("load", function () {
  var sizes = Array.prototype.map.call(document.querySelectorAll("img.sphx-glr-single-img,"
      + " img.sphx-glr-multi-img"), function (im) {
    return (im.complete ? im.naturalWidth : 0) + "x" + (im.complete ? im.naturalHeight : 0);
  });
  document.documentElement.setAttribute("data-figures", sizes.join(" "));
});
</script></body>"""
    probe.write_text(path.read_text().replace("</body>", script, 1))
    try:
        dom = _dom(probe)
    finally:
        probe.unlink(missing_ok=True)
    found = re.search(r'data-figures="([^"]*)"', dom)
    assert found, "the probe script did not run"
    sizes = [tuple(map(int, s.split("x"))) for s in found.group(1).split()]
    # the tutorial draws vec/unvec, the patch matrix, the J flips, col2im, Table I,
    # beta-pooling and up(): seven figures; each guide page its own; every one loaded
    # with a real size
    assert len(sizes) >= FIGURES[name], f"only {len(sizes)} figures on the {name} page"
    for i, (w, h) in enumerate(sizes):
        assert w > 200 and h > 100, f"figure {i} did not load (natural size {w}x{h})"
    # and every figure file is a PNG the build wrote
    stem = re.escape(path.stem)
    srcs = re.findall(rf'<img[^>]+src="([^"]*sphx_glr_{stem}_\d+\.png)"', path.read_text())
    assert len(srcs) == len(sizes)
    for src in srcs:
        with Image.open(path.parent / src) as im:
            assert im.format == "PNG" and min(im.size) > 100


def test_landing_page_links_resolve():
    path = _page("landing")
    hrefs = re.findall(r'href="([^"#:]+\.html)', path.read_text())
    assert {"install.html", "tutorial/plot_derivation.html", "api.html",
            "benchmarks.html", "user_guide/index.html"} <= set(hrefs)
    for href in hrefs:
        assert (path.parent / href).exists(), f"broken link {href}"
