"""Unit tests of the course-site builder (no kernel, no browser): header parsing, figure and
widget conversion to static HTML. The built site itself is tested in tests/browser/."""
import base64
import io
import json
from pathlib import Path

import nbformat
import numpy as np
import pytest
from PIL import Image

from slamags_core import site

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_header_gives_goal_learn_and_run_time(path):
    h = site.parse_header(nbformat.read(path, as_version=4), path.stem)
    assert h.title.startswith(path.stem[:2])
    assert len(h.goal) > 40 and len(h.learn) > 20 and len(h.run_time) > 10
    assert "**" not in h.run_time[:3]


def test_parse_header_reads_sections_and_continuations():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(
        "# 09 · Toy\n\n**Goal.** Do X.\n\n1. step one\n2. step two\n\n"
        "**You will learn** why Y.\n\n**Run time.** 5 s.")])
    h = site.parse_header(nb, "09_toy")
    assert (h.title, h.run_time) == ("09 · Toy", "5 s.")
    assert h.goal == "Do X.\n\n1. step one\n2. step two"
    assert h.learn == "You will learn why Y."


def test_parse_header_names_the_notebook_and_the_missing_section():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# 09 · Toy\n\n**Goal.** X")])
    with pytest.raises(ValueError, match=r"09_toy.*What you will learn.*Run time"):
        site.parse_header(nb, "09_toy")
    with pytest.raises(ValueError, match="09_toy.*title"):
        site.parse_header(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("text")]), "09_toy")


def _spec(html: str) -> dict:
    assert html.startswith('<div class="sa-plotly"><script type="application/json">')
    return json.loads(html.split(">", 2)[2].rsplit("</script>", 1)[0])


def test_plotly_html_cannot_close_its_script_element():
    fig = {"data": [{"type": "scatter", "x": [1], "y": [2], "name": "</script><script>alert(1)"}],
           "layout": {}}
    out = site.plotly_html(fig)
    assert out.count("</script>") == 1
    assert _spec(out)["data"][0]["name"] == "</script><script>alert(1)"


def test_image_trace_pixels_become_a_png_with_the_same_pixels():
    rgb = np.random.default_rng(0).integers(0, 256, size=(6, 5, 3), dtype=np.uint8)
    typed = {"dtype": "u1", "bdata": base64.b64encode(rgb.tobytes()).decode(), "shape": "6, 5, 3"}
    for z in (rgb.tolist(), typed):
        spec = _spec(site.plotly_html({"data": [{"type": "image", "z": z}], "layout": {}}))
        trace = spec["data"][0]
        assert "z" not in trace and trace["source"].startswith("data:image/png;base64,")
        png = Image.open(io.BytesIO(base64.b64decode(trace["source"].split(",", 1)[1])))
        np.testing.assert_array_equal(np.asarray(png.convert("RGB")), rgb)


def _typed(a: np.ndarray, shape=None) -> dict:
    out = {"dtype": "f8", "bdata": base64.b64encode(a.astype("<f8").tobytes()).decode()}
    return dict(out, shape=shape) if shape else out


def _untyped(t: dict) -> np.ndarray:
    return np.frombuffer(base64.b64decode(t["bdata"]), dtype={"f4": "<f4", "f8": "<f8"}[t["dtype"]])


def test_float64_arrays_become_float32_only_where_no_drawn_value_moves():
    rng = np.random.default_rng(0)
    grid = rng.normal(size=(7, 9))                        # a heatmap's z: float32 draws it the same
    colour = np.r_[rng.uniform(0, 5, 10), np.nan]         # NaN gaps are kept
    fine = 1.0 + 1e-9 * np.arange(10)                     # differences float32 cannot hold
    fig = {"data": [{"type": "heatmap", "z": _typed(grid, "7, 9"), "x": [0.5, 1.5]},
                    {"type": "scatter", "y": _typed(fine), "marker": {"color": _typed(colour)}},
                    {"type": "scatter", "y": _typed(np.array([1.0, np.inf]))}], "layout": {}}
    data = _spec(site.plotly_html(fig))["data"]
    z, c = data[0]["z"], data[1]["marker"]["color"]
    assert (z["dtype"], z["shape"], c["dtype"]) == ("f4", "7, 9", "f4")
    np.testing.assert_allclose(_untyped(z), grid.ravel(), rtol=0, atol=1e-6 * np.ptp(grid))
    np.testing.assert_allclose(_untyped(c), colour, rtol=0, atol=1e-6 * 5)
    assert data[0]["x"] == [0.5, 1.5]                     # plain lists are left alone
    assert data[1]["y"]["dtype"] == "f8" and np.array_equal(_untyped(data[1]["y"]), fine)
    assert data[2]["y"]["dtype"] == "f8"                  # an infinity is not rounded away


def _png(color=(200, 0, 0)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 3), color).save(buf, "png")
    return buf.getvalue()


def test_widget_snapshot_renders_boxes_controls_images_and_captured_outputs():
    st = lambda name, **kw: {"model_name": name, "state": kw}  # noqa: E731
    state = {
        "box": st("VBoxModel", children=["IPY_MODEL_row", "IPY_MODEL_img", "IPY_MODEL_out"]),
        "row": st("HBoxModel", children=["IPY_MODEL_sel", "IPY_MODEL_flt", "IPY_MODEL_chk"]),
        "sel": st("SelectionSliderModel", description="witness rate", index=1,
                  _options_labels=["10%", "5%"]),
        "flt": st("FloatSliderModel", description="difficulty", value=0.2, readout_format=".2f"),
        "chk": st("CheckboxModel", description="outline", value=True),
        "img": {"model_name": "ImageModel", "state": {"format": "png", "width": "100"},
                "buffers": [{"path": ["value"], "encoding": "base64",
                             "data": base64.b64encode(_png()).decode()}]},
        "out": st("OutputModel", outputs=[
            {"output_type": "display_data", "data": {site.PLOTLY_MIME: {"data": [], "layout": {}}}},
            {"output_type": "stream", "name": "stdout", "text": "a < b"}]),
    }
    files = site.PageFiles("page")
    snap = site.WidgetSnapshot(state, files)
    out = snap.render("box")
    assert snap.interactive
    assert "witness rate" in out and ">5%<" in out and ">0.20<" in out and ">on<" in out
    assert '<img src="page_files/page_0.png" width="100"' in out
    assert files.files["page_files/page_0.png"] == _png()
    assert 'class="sa-plotly"' in out and "a &lt; b" in out


def test_static_outputs_replace_plotly_and_widget_views_and_note_the_live_version():
    nb = nbformat.v4.new_notebook()
    nb.metadata["widgets"] = {site.WIDGET_STATE_MIME: {"state": {
        "s": {"model_name": "IntSliderModel", "state": {"description": "seed", "value": 3}},
        "p": {"model_name": "FloatProgressModel", "state": {"value": 2, "max": 2}}}}}
    outs = [nbformat.v4.new_output("display_data", data={site.PLOTLY_MIME: {"data": [], "layout": {}}}),
            nbformat.v4.new_output("display_data", data={site.WIDGET_VIEW_MIME: {"model_id": "s"},
                                                         "text/plain": "IntSlider()"}),
            nbformat.v4.new_output("display_data", data={site.WIDGET_VIEW_MIME: {"model_id": "p"}})]
    nb.cells.append(nbformat.v4.new_code_cell("x", outputs=outs))
    site.static_outputs(nb, site.PageFiles("p"))
    html = [o["data"]["text/html"] for o in nb.cells[0].outputs]
    assert all(list(o["data"]) == ["text/html"] for o in nb.cells[0].outputs)
    assert 'class="sa-plotly"' in html[0]
    assert site.LIVE_NOTE in html[1] and ">3<" in html[1]
    assert site.LIVE_NOTE not in html[2] and "<progress" in html[2]   # a progress bar is no control
    assert "widgets" not in nb.metadata


def test_results_page_without_a_sweep_says_how_to_get_one(tmp_path):
    nb = site.results_notebook(tmp_path / "nothing")
    assert "python3 dev.py run" in nb.cells[0].source


def test_build_site_rejects_unknown_notebook_names(tmp_path):
    with pytest.raises(ValueError, match="not notebooks.*99_nope"):
        site.build_site(site.SiteConfig(out_dir=tmp_path, preset="smoke", only=("99_nope",)))


def test_figure_widget_snapshot_uses_the_figure_reported_by_the_kernel():
    fig = {"data": [{"type": "scatter", "x": [1, 2], "y": [3, 4]}], "layout": {"title": {"text": "t"}}}
    state = {"fw": {"model_name": "AnyModel", "state": {"_widget_data": [], "_widget_layout": {},
                                                         "_site_figure": fig, "_config": {}}}}
    snap = site.WidgetSnapshot(state, site.PageFiles("p"))
    spec = _spec(snap.render("fw"))
    assert snap.interactive and spec["data"] == fig["data"] and spec["layout"] == fig["layout"]


@pytest.mark.parametrize("text,expected", [
    ("inline $x_i$ math", True),
    ("$$L_1 = \\tfrac12 x,\\quad\nL_2 = y.$$", True),          # display math over two lines
    ("\\begin{align} a &= b \\end{align}", True),
    ("\\(a\\) and \\[b\\]", True),
    ("costs 5 dollars, no math; `echo $HOME`", False),
])
def test_has_math_finds_inline_display_and_multiline_formulas(text, expected):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(text)])
    assert site.has_math(nb) is expected


def test_every_notebook_with_a_formula_gets_mathjax():
    """A page loads MathJax exactly when its notebook's markdown holds TeX (notebook 03's only
    formula is a two-line $$...$$, which an earlier pattern missed)."""
    with_math = {p.stem for p in sorted(Path(site.ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
                 if site.has_math(nbformat.read(p, as_version=4))}
    assert {"02_two_losses", "03_gradient_surgery", "05_mil"} <= with_math


def test_mathjax_3_svg_ships_with_the_site(tmp_path):
    site.copy_assets(tmp_path)
    mj = tmp_path / "assets" / "mathjax" / site.MATHJAX_FILE
    head = mj.read_text(encoding="utf-8")[:200_000]
    assert 'VERSION="3.' in head or "3.2.2" in head
    assert not list(tmp_path.rglob("*.woff*")) and not list(tmp_path.rglob("*.otf"))  # no web fonts
