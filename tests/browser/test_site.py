"""The course site built at the smoke preset: offline, complete, and every figure drawn in Chromium.

The site (every notebook executed at the smoke preset, plus a tiny sweep for the results page) is
built once per session; the static checks run without a browser, the page checks in Chromium.
"""
from __future__ import annotations

import re
from urllib.parse import urlparse

import pytest

from slamags_core.site import site_size

PAGES = ["index", "01_cells_and_bags", "02_two_losses", "03_gradient_surgery", "04_pretraining",
         "05_mil", "06_retrieval", "07_umap_explorer", "08_witness_rate_sweep", "results"]

# formulas on the pages with math (the markdown's $...$ / $$...$$ at the time of writing; a lower
# count means formulas went missing, e.g. MathJax not loaded on a page that needs it)
MIN_FORMULAS = {"02_two_losses": 15, "03_gradient_surgery": 1, "04_pretraining": 4, "05_mil": 21,
                "06_retrieval": 5}


def test_site_has_every_page_and_its_size_is_sensible(smoke_site):
    out, pages = smoke_site
    assert [p.name for p in pages] == PAGES
    for name in PAGES:
        assert (out / f"{name}.html").stat().st_size > 2_000, name
    assert len(list(out.rglob("plotly*.js"))) == 1, "plotly.js must be shipped once"
    size = site_size(out)
    print(f"\nsmoke site: {size / 1e6:.1f} MB, {sum(1 for f in out.rglob('*') if f.is_file())} files")
    assert size < 40e6, f"site is {size / 1e6:.1f} MB"


@pytest.mark.parametrize("name", PAGES)
def test_page_loads_nothing_from_the_network(smoke_site, name):
    out, _ = smoke_site
    html = (out / f"{name}.html").read_text()
    # every resource the page loads (scripts, styles, images, frames) is a relative file of the site
    loaded = re.findall(r'<(?:script|img|iframe|source|embed)\b[^>]*\bsrc="([^"]+)"', html)
    loaded += re.findall(r'<link\b[^>]*\bhref="([^"]+)"', html)
    remote = [u for u in loaded if urlparse(u).scheme or u.startswith("//")]
    assert not remote, f"{name}.html loads {remote}"
    for u in loaded:
        assert (out / u.split("?")[0]).exists(), f"{name}.html refers to missing {u}"
    assert "is not able to be represented" not in html
    assert "require.js" not in html and "requirejs" not in html


def test_index_is_the_course_outline(smoke_site):
    out, _ = smoke_site
    html = (out / "index.html").read_text()
    for name in PAGES[1:]:
        assert f'href="{name}.html"' in html
    assert html.count("Run time.") == 8 and html.count("Goal.") == 8


def test_results_page_shows_the_sweep(smoke_site):
    out, _ = smoke_site
    html = (out / "results.html").read_text()
    assert "<table" in html and 'class="sa-plotly"' in html
    csv = (out / "results.csv").read_text().splitlines()   # notebook 08's smoke sweep
    methods = {row.split(",")[csv[0].split(",").index("method")] for row in csv[1:]}
    assert {"random", "slam_ags"} <= methods, methods
    for m in methods:
        assert m in html, f"results page lacks method {m}"


# -------------------------------------------------------------------------------------- browser

DRAWN = """() => Array.from(document.querySelectorAll('div.sa-plotly')).map(d => {
  const plot = d.querySelector('.js-plotly-plot');
  const n = plot && plot._fullData ? plot._fullData.length : -1;
  const painted = d.querySelectorAll('.main-svg .trace, .main-svg image, canvas').length;
  return {traces: n, painted: painted,
          width: plot ? plot.getBoundingClientRect().width : 0};
})"""
# TeX left in the prose after MathJax ran (code, pre and typeset formulas taken out), and
# formulas MathJax could not typeset (an unknown macro is drawn as a red error, not thrown)
MATH = """() => {
  const left = [];
  for (const cell of document.querySelectorAll('.jp-RenderedMarkdown, .jp-RenderedHTMLCommon')) {
    const copy = cell.cloneNode(true);
    copy.querySelectorAll('code, pre, mjx-container, script, style').forEach(e => e.remove());
    const m = copy.textContent.match(/\\$[^$]+\\$|\\\\[(\\[]|\\\\begin\\{|\\\\[a-zA-Z]+\\{/g);
    if (m) left.push(...m.map(s => s.slice(0, 80)));
  }
  return {typeset: document.querySelectorAll('mjx-container').length, left: left,
          errors: Array.from(document.querySelectorAll('mjx-merror, [data-mjx-error]'))
                       .map(e => e.getAttribute('data-mjx-error') || e.textContent)};
}"""
IMAGES = """() => Array.from(document.querySelectorAll('main img')).map(
  i => ({src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0}))"""


@pytest.fixture(scope="module")
def site_tab(chromium):
    page = chromium.new_page()
    yield page
    page.close()


@pytest.mark.parametrize("name", PAGES)
def test_page_in_chromium_no_console_errors_every_figure_drawn(smoke_site, site_tab, name):
    out, _ = smoke_site
    page = site_tab
    problems: list[str] = []
    on_console = lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None  # noqa: E731
    on_error = lambda e: problems.append(f"page error: {e}")  # noqa: E731
    on_failed = lambda r: problems.append(f"request failed: {r.url}")  # noqa: E731
    on_request = lambda r: None if r.url.startswith(("file:", "data:", "blob:", "about:")) \
        else problems.append(f"network request: {r.url}")  # noqa: E731
    page.on("console", on_console)
    page.on("pageerror", on_error)
    page.on("requestfailed", on_failed)
    page.on("request", on_request)
    try:
        page.goto((out / f"{name}.html").as_uri(), wait_until="load")
        # MathJax 3: startup.promise resolves once the page's first typesetting is done
        page.wait_for_function("() => !window.MathJax || (MathJax.startup && MathJax.startup.promise)",
                               timeout=30_000)
        page.evaluate("() => window.MathJax ? MathJax.startup.promise.then(() => true) : true")
        page.wait_for_timeout(300)
        figures = page.evaluate(DRAWN)
        images = page.evaluate(IMAGES)
        math = page.evaluate(MATH)
    finally:
        for ev, fn in (("console", on_console), ("pageerror", on_error),
                       ("requestfailed", on_failed), ("request", on_request)):
            page.remove_listener(ev, fn)
    assert not problems, f"{name}: " + "\n".join(problems)
    undrawn = [i for i, f in enumerate(figures) if f["traces"] < 1 or f["painted"] < 1 or f["width"] < 50]
    assert not undrawn, f"{name}: figures {undrawn} of {len(figures)} hold no drawn plot: {figures}"
    broken = [i["src"] for i in images if not i["ok"]]
    assert not broken, f"{name}: images not displayed: {broken}"
    if name.startswith("0"):
        assert figures or images, f"{name}: a notebook page without a single figure"
    assert not math["left"], f"{name}: untypeset TeX left on the page: {math['left']}"
    assert not math["errors"], f"{name}: formulas MathJax could not typeset: {math['errors']}"
    assert math["typeset"] >= MIN_FORMULAS.get(name, 0), \
        f"{name}: {math['typeset']} formulas typeset, expected at least {MIN_FORMULAS[name]}"
