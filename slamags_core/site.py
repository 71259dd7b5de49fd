"""The course site: every notebook executed at a preset and published as one static, offline site.

``python -m slamags_core site --out outputs/site`` runs each ``notebooks/NN_*.ipynb`` in a fresh
kernel and converts it with nbconvert and this package's template (``site_template/slamags``,
JupyterLab's ``lab`` template with local assets and a course navigation). The site has an index
page (the course outline, read from each notebook's header cell), one page per notebook and the
results page of a witness-rate sweep, and works offline from ``file://`` or any static server:

- plotly figures are drawn by one copy of plotly.js in ``assets/`` (shipped with the ``plotly``
  package); image traces given as pixel arrays become PNGs, so a figure is a few kB of JSON;
- math is typeset in the browser by MathJax 3 (``tex-svg-full.js`` from the PyPI package
  ``sphinx-mathjax-offline``) as SVG: glyphs are paths, so no web font is needed (Chromium
  will not load fonts from ``file://``) and formulas look alike in every browser;
- images are PNG/JPEG files beside the page, not inline base64;
- an ipywidgets output becomes a static snapshot of the widget's first state (its pictures,
  figures and control values) with a line saying the live version needs JupyterLab.

See docs/site.md for why nbconvert (and not Jupyter Book or mkdocs-jupyter).
"""
from __future__ import annotations

import base64
import dataclasses
import html
import io
import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Callable, Sequence

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE_BASE = Path(__file__).resolve().parent / "site_template"
TEMPLATE_NAME = "slamags"
PLOTLY_MIME = "application/vnd.plotly.v1+json"
WIDGET_VIEW_MIME = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE_MIME = "application/vnd.jupyter.widget-state+json"
SITE_TITLE = "SLAM-AGS, step by step"
LIVE_NOTE = ("Static snapshot of an interactive widget, as it first appeared. Its controls need a "
             "running Python kernel: open the notebook in JupyterLab to use them.")
MATHJAX_DIST = "sphinx-mathjax-offline"   # PyPI package holding MathJax 3.2.2's es5 build
MATHJAX_DIR = "sphinx-mathjax-offline/static/mathjax"
MATHJAX_FILE = "tex-svg-full.js"           # TeX input (every extension) + SVG output, one file


@dataclasses.dataclass
class SiteConfig:
    """What to build and where (``python -m slamags_core site`` fills it from its flags)."""

    out_dir: Path                                  # the site folder; index.html at its root
    preset: str | None = None                      # kernels' preset; None: $SLAMAGS_PRESET or laptop
    sweep_dir: Path | None = None                  # sweep folder (results.csv) for the results page
    notebooks_dir: Path = ROOT / "notebooks"       # where the numbered notebooks live
    only: Sequence[str] = ()                       # notebook stems to build; () = all of them
    timeout: int = 3600                            # seconds a cell may run
    env: dict[str, str] = dataclasses.field(default_factory=dict)  # extra kernel environment


@dataclasses.dataclass
class Header:
    """What a notebook's header cell says: the course outline is made of these."""

    name: str       # file stem, e.g. "01_cells_and_bags"
    title: str      # the cell's first heading, e.g. "01 · Cells and bags"
    goal: str       # markdown of the "Goal." paragraph
    learn: str      # markdown of the "What you will learn." part
    run_time: str   # markdown of the "Run time." paragraph


@dataclasses.dataclass
class PageResult:
    """One built page: where it is and how long its notebook took to run."""

    name: str
    path: Path
    seconds: float


# ------------------------------------------------------------------------------------------------
# header cells -> course outline


def parse_header(nb, name: str) -> Header:
    """Read title, goal, what-you-will-learn and run time from a notebook's first markdown cell.

    The header is a heading followed by paragraphs that start with a bold lead-in:
    ``**Goal.**``, ``**What you will learn.**`` (or ``**You will learn** ...``) and
    ``**Run time.**``; paragraphs without a lead-in belong to the section above them.

    Raises:
        ValueError: no markdown cell, no heading, or a section missing (naming the notebook).
    """
    cell = next((c for c in nb.cells if c.cell_type == "markdown"), None)
    if cell is None:
        raise ValueError(f"{name}: no markdown header cell (title, Goal, What you will learn, Run time)")
    lines = cell.source.strip().splitlines()
    if not lines or not lines[0].startswith("# "):
        raise ValueError(f"{name}: the header cell must start with a '# title' line, got {lines[:1]}")
    title = lines[0][2:].strip()
    sections: dict[str, list[str]] = {}
    current = None
    for block in re.split(r"\n\s*\n", "\n".join(lines[1:]).strip()):
        m = re.match(r"\*\*(?P<lead>[^*]+)\*\*\s*(?P<rest>.*)", block, flags=re.S)
        if m:
            lead = m["lead"].strip().rstrip(".:").lower()
            key = "goal" if "goal" in lead else "learn" if "learn" in lead else (
                "run_time" if "run time" in lead or "runtime" in lead else None)
            if key is not None:
                current = key
                rest = m["rest"].strip()
                # "**You will learn** what ..." keeps its words; "**What you will learn.**" is a label
                if key == "learn" and not m["lead"].strip().endswith((".", ":")):
                    rest = f"{m['lead'].strip()} {rest}"
                sections[key] = [rest] if rest else []
                continue
        if current is not None:
            sections[current].append(block)
    missing = [k for k in ("goal", "learn", "run_time") if not sections.get(k)]
    if missing:
        labels = {"goal": "**Goal.**", "learn": "**What you will learn.**", "run_time": "**Run time.**"}
        raise ValueError(f"{name}: header cell lacks {', '.join(labels[k] for k in missing)} "
                         f"(every notebook starts with its goal, what it teaches and its run time)")
    return Header(name, title, *("\n\n".join(sections[k]) for k in ("goal", "learn", "run_time")))


def outline_markdown(headers: Sequence[Header], preset: str, has_results: bool,
                     seconds: dict[str, float] | None = None) -> str:
    """The index page: one section per notebook (goal, what it teaches, run time), linked.

    ``seconds`` (stem -> seconds) adds how long each notebook took to run for this site.
    """
    seconds = seconds or {}
    parts = [f"# {SITE_TITLE}",
             "",
             "A notebook-first reproduction of **SLAM-AGS** (slide-label aware multi-task pretraining "
             "with adaptive gradient surgery, Acerbis et al., ISBI 2026) for computational cytology. "
             "Each page below is one notebook of the course, executed at the "
             f"`{preset}` preset; read them in order. To run them yourself, open `notebooks/` in "
             "JupyterLab (see the repository's README): the interactive widgets need a live kernel.",
             ""]
    for h in headers:
        parts += [f"## [{h.title}]({h.name}.html)", "", f"**Goal.** {h.goal}", "",
                  f"**What you will learn.** {h.learn}" if not h.learn.lstrip().startswith(("-", "*", "1."))
                  else f"**What you will learn.**\n\n{h.learn}", "", f"**Run time.** {h.run_time}"
                  + (f" *(This site's copy ran in {seconds[h.name]:.0f} s at the `{preset}` preset.)*"
                     if h.name in seconds else ""), ""]
    if has_results:
        parts += ["## [Results of the witness-rate sweep](results.html)", "",
                  "The tables and plots of the sweep that the main job ran (`python3 dev.py run`).", ""]
    return "\n".join(parts)


# ------------------------------------------------------------------------------------------------
# execution


def execute_notebook(path: Path, *, env: dict[str, str], timeout: int):
    """Run a notebook top to bottom in a fresh kernel started in its folder; returns the notebook.

    Cells tagged ``skip-execution`` or ``nbval-skip`` (or starting with ``# NBVAL_SKIP``) are
    left as they are, as under nbval; a cell tagged ``raises-exception`` or
    ``nbval-raises-exception`` (or holding ``# NBVAL_RAISES_EXCEPTION``) may raise. Any other
    error stops the build with nbclient's ``CellExecutionError`` (the cell and its traceback).
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.output_widget import OutputWidget

    class _OutputWidget(OutputWidget):
        # nbclient mirrors an Output widget's captured outputs back to the kernel on the shell
        # channel while it waits for the cell's reply there; with `interactive` that stalls the
        # next cell for the whole cell timeout. The kernel never reads them back: keep them here.
        def sync_state(self) -> None:
            pass

    class _Client(NotebookClient):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.widget_registry = {"@jupyter-widgets/output": {"OutputModel": _OutputWidget}}

        async def async_execute_cell(self, cell, cell_index, execution_count=None, store_history=True):
            tags = set(cell.get("metadata", {}).get("tags", []))
            if cell.cell_type == "code" and ("nbval-skip" in tags or
                                             cell.source.lstrip().startswith("# NBVAL_SKIP")):
                return cell
            if cell.cell_type == "code" and ("# NBVAL_RAISES_EXCEPTION" in cell.source or
                                             "nbval-raises-exception" in tags):
                cell.metadata["tags"] = sorted(tags | {"raises-exception"})
            return await super().async_execute_cell(cell, cell_index, execution_count, store_history)

    nb = nbformat.read(path, as_version=4)
    # A plotly FigureWidget sends its traces as messages, which the stored widget state does not
    # add up; one last cell asks the kernel for each such figure as it stands after the run.
    nb.cells.append(nbformat.v4.new_code_cell(_FIGURE_WIDGETS_PROBE))
    client = _Client(nb, timeout=timeout, kernel_name="python3", store_widget_state=True,
                     resources={"metadata": {"path": str(path.parent)}})
    client.execute(env=env)
    probe = nb.cells.pop()
    text = "".join(o.get("text", "") for o in probe.outputs if o.get("name") == "stdout")
    figures = json.loads(text) if text.strip() else {}
    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE_MIME, {}).get("state", {})
    for model_id, fig in figures.items():
        if model_id in state:
            state[model_id].setdefault("state", {})["_site_figure"] = fig
    return nb


_FIGURE_WIDGETS_PROBE = """\
import json as _json, sys as _sys
if "plotly.basewidget" in _sys.modules:
    from ipywidgets.widgets.widget import _instances as _widgets
    from plotly.basewidget import BaseFigureWidget as _FW
    print(_json.dumps({k: _json.loads(w.to_json()) for k, w in _widgets.items() if isinstance(w, _FW)}))
"""


# ------------------------------------------------------------------------------------------------
# outputs -> static HTML


class PageFiles:
    """Files a page refers to (images), named ``<page>_files/<n>.<ext>``; written with the page."""

    def __init__(self, page: str):
        self.page = page
        self.files: dict[str, bytes] = {}

    def add(self, data: bytes, ext: str) -> str:
        name = f"{self.page}_files/{self.page}_{len(self.files)}.{ext}"
        self.files[name] = data
        return name


def _json_for_script(obj) -> str:
    """JSON that is safe inside a ``<script>`` element (no ``</script>``, no ``<!--``)."""
    return (json.dumps(obj, separators=(",", ":"), allow_nan=False)
            .replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


def _decode_array(value):
    """numpy array from plotly's JSON: a nested list or a typed array ``{dtype, bdata, shape}``."""
    import numpy as np

    if isinstance(value, dict) and "bdata" in value:
        arr = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        shape = value.get("shape")
        if isinstance(shape, str):
            shape = [int(s) for s in shape.split(",")]
        return arr.reshape(shape) if shape else arr
    return np.asarray(value)


def _image_traces_as_png(fig: dict) -> dict:
    """Replace pixel arrays of ``image`` traces (``z``, JSON numbers) by PNG ``source`` URIs."""
    import numpy as np
    from PIL import Image

    for trace in fig.get("data", []):
        if trace.get("type") != "image" or "z" not in trace or "source" in trace:
            continue
        z = _decode_array(trace["z"])
        if z.ndim != 3 or z.shape[-1] not in (3, 4) or trace.get("colormodel", "rgb") not in ("rgb", "rgba"):
            continue  # only plain 8-bit RGB(A) pictures are converted; anything else stays as is
        zmax = trace.get("zmax")
        if zmax is not None and list(zmax)[:3] != [255, 255, 255]:
            continue
        buf = io.BytesIO()
        Image.fromarray(np.clip(z, 0, 255).astype(np.uint8)).save(buf, "png", optimize=True)
        trace["source"] = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
        del trace["z"]
    return fig


# a float64 array is stored as float32 when that moves no value by more than this share of the
# array's range: far below a pixel on any axis or colour scale, and half the bytes
F32_TOLERANCE = 1e-6


def _float64_as_float32(node):
    """Halve the float64 typed arrays (``{dtype: "f8", bdata}``) in a figure where float32 is exact
    enough to draw them (see ``F32_TOLERANCE``); other values are left as they are."""
    import numpy as np

    if isinstance(node, list):
        return [_float64_as_float32(v) for v in node]
    if not isinstance(node, dict):
        return node
    if node.get("dtype") == "f8" and isinstance(node.get("bdata"), str):
        a = np.frombuffer(base64.b64decode(node["bdata"]), dtype="<f8")
        finite = a[np.isfinite(a)]
        if len(finite) == len(a) - np.isnan(a).sum():   # NaN gaps are fine, infinities are not
            b = a.astype("<f4")
            span = float(finite.max() - finite.min()) if len(finite) else 0.0
            err = float(np.nanmax(np.abs(b.astype("<f8") - a))) if len(finite) else 0.0
            if np.all(np.isfinite(b[np.isfinite(a)])) and err <= F32_TOLERANCE * span:
                return dict(node, dtype="f4", bdata=base64.b64encode(b.tobytes()).decode())
        return node
    return {k: _float64_as_float32(v) for k, v in node.items()}


def plotly_html(fig: dict) -> str:
    """A plotly figure (``{data, layout, config}``) as a div that ``assets/site.js`` draws.

    Image traces given as pixel arrays become PNGs, and float64 arrays become float32 where that
    changes no drawn value (see ``F32_TOLERANCE``): a figure is a few kB to a few hundred kB.
    """
    fig = _image_traces_as_png(json.loads(json.dumps(fig)))
    fig["data"] = _float64_as_float32(fig.get("data", []))
    return (f'<div class="sa-plotly"><script type="application/json">{_json_for_script(fig)}'
            f"</script></div>")


def _image_html(data: bytes, ext: str, files: PageFiles, width=None, height=None) -> str:
    src = files.add(data, ext)
    size = "".join(f' {k}="{html.escape(str(v))}"' for k, v in (("width", width), ("height", height)) if v)
    return f'<img src="{src}"{size} alt="">'


def output_html(output: dict, files: PageFiles) -> str | None:
    """Static HTML for one output kept by an Output widget (None: nothing to show)."""
    from nbconvert.filters import markdown2html

    if output.get("output_type") == "stream":
        return f'<pre class="sa-stream">{html.escape(output.get("text", ""))}</pre>'
    if output.get("output_type") == "error":
        return f'<pre class="sa-stream">{html.escape(output.get("ename", ""))}: ' \
               f'{html.escape(output.get("evalue", ""))}</pre>'
    data = output.get("data", {})
    if PLOTLY_MIME in data:
        return plotly_html(data[PLOTLY_MIME])
    for mime, ext in (("image/png", "png"), ("image/jpeg", "jpeg")):
        if mime in data:
            return _image_html(base64.b64decode(data[mime]), ext, files)
    if "text/html" in data:
        return "".join(data["text/html"])
    if "text/markdown" in data:
        return markdown2html("".join(data["text/markdown"]))
    if "text/plain" in data:
        return f'<pre class="sa-stream">{html.escape("".join(data["text/plain"]))}</pre>'
    return None


class WidgetSnapshot:
    """Static HTML of an ipywidgets tree from the widget state that nbclient stored.

    Boxes keep their layout, pictures become image files, plotly ``FigureWidget``s become drawn
    figures, Output widgets show what they captured, and each control shows its value.
    """

    BOXES = {"VBoxModel": "sa-vbox", "BoxModel": "sa-vbox", "HBoxModel": "sa-hbox",
             "GridBoxModel": "sa-hbox", "AccordionModel": "sa-vbox", "TabModel": "sa-vbox",
             "StackModel": "sa-vbox"}
    INTERACTIVE = ("Slider", "Dropdown", "Checkbox", "Toggle", "RadioButtons", "Select", "Text",
                   "Button", "Picker", "Play", "Combobox", "Password")

    def __init__(self, state: dict, files: PageFiles):
        self.state, self.files = state, files
        self.interactive = False   # does the tree hold a control a reader would try to move?

    def render(self, model_id: str) -> str:
        entry = self.state.get(model_id)
        if entry is None:
            return '<span class="sa-control">(widget state not saved)</span>'
        name, s = entry.get("model_name", ""), entry.get("state", {})
        if name in self.BOXES:
            kids = "".join(self.render(c.removeprefix("IPY_MODEL_")) for c in s.get("children", []))
            return f'<div class="sa-box {self.BOXES[name]}">{kids}</div>'
        if name == "OutputModel":
            parts = [output_html(o, self.files) for o in s.get("outputs", [])]
            return '<div class="sa-output">' + "".join(p for p in parts if p) + "</div>"
        if name == "ImageModel":
            data = self._buffer(entry, "value")
            if not data:
                return ""
            return _image_html(data, s.get("format", "png").replace("jpg", "jpeg"), self.files,
                               s.get("width"), s.get("height"))
        if name == "LabelModel":
            return f'<span class="sa-label">{html.escape(str(s.get("value", "")))}</span>'
        if name in ("HTMLModel", "HTMLMathModel"):
            return f'<div class="sa-html">{s.get("value", "")}</div>'
        if name in ("FloatProgressModel", "IntProgressModel"):
            return (f'<progress class="sa-progressbar" value="{s.get("value", 0)}" '
                    f'max="{s.get("max", 100)}"></progress>')
        if "_site_figure" in s or "_widget_data" in s:          # plotly FigureWidget
            self.interactive = True
            fig = s.get("_site_figure") or {"data": s.get("_widget_data", []),
                                            "layout": s.get("_widget_layout", {})}
            return plotly_html(dict(fig, config=s.get("_config", {})))
        if any(k in name for k in self.INTERACTIVE):
            self.interactive = True
            return self._control(name, s)
        return f'<span class="sa-control">({html.escape(name or "widget")}: JupyterLab only)</span>'

    @staticmethod
    def _buffer(entry: dict, key: str) -> bytes | None:
        for b in entry.get("buffers", []):
            if b.get("path") == [key]:
                return base64.b64decode(b["data"]) if b.get("encoding", "base64") == "base64" \
                    else b["data"].encode()
        value = entry.get("state", {}).get(key)
        return value.encode() if isinstance(value, str) else None

    @staticmethod
    def _control(name: str, s: dict) -> str:
        labels = s.get("_options_labels")
        if "index" in s and labels is not None:
            idx = s["index"]
            value = ", ".join(labels[i] for i in idx) if isinstance(idx, (list, tuple)) else (
                labels[idx] if idx is not None else "–")
        elif "Checkbox" in name or "ToggleButtonModel" in name:
            value = "on" if s.get("value") else "off"
        elif "Log" in name and isinstance(s.get("value"), float):
            value = f"{s['value']:.3g}"
        elif isinstance(s.get("value"), float):
            fmt = s.get("readout_format", ".2f")
            try:
                value = format(s["value"], fmt)
            except (ValueError, TypeError):
                value = f"{s['value']:g}"
        elif isinstance(s.get("value"), (list, tuple)):
            value = " – ".join(str(v) for v in s["value"])
        else:
            value = s.get("value", "")
        desc = s.get("description", "")
        label = f'<span class="sa-control-label">{html.escape(desc)}</span> ' if desc else ""
        return (f'<span class="sa-control">{label}'
                f'<span class="sa-control-value">{html.escape(str(value))}</span></span>')


def static_outputs(nb, files: PageFiles) -> None:
    """Turn plotly and widget outputs of an executed notebook into static ``text/html``."""
    state = (nb.metadata.get("widgets", {}).get(WIDGET_STATE_MIME, {}).get("state", {}))
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if PLOTLY_MIME in data:
                out["data"] = {"text/html": plotly_html(data[PLOTLY_MIME])}
            elif WIDGET_VIEW_MIME in data:
                snap = WidgetSnapshot(state, files)
                body = snap.render(data[WIDGET_VIEW_MIME]["model_id"])
                note = f'<div class="sa-widget-note">{LIVE_NOTE}</div>' if snap.interactive else ""
                out["data"] = {"text/html": f'<div class="sa-widget">{note}{body}</div>'}
    nb.metadata.pop("widgets", None)   # the snapshots replace the widget manager's state


# ------------------------------------------------------------------------------------------------
# pages and assets


def _exporter():
    from nbconvert import HTMLExporter
    from traitlets.config import Config

    c = Config()
    c.ExtractOutputPreprocessor.enabled = True   # image outputs -> files beside the page
    c.TagRemovePreprocessor.remove_input_tags = {"remove_input"}   # generated cells show outputs only
    return HTMLExporter(config=c, template_name=TEMPLATE_NAME,
                        extra_template_basedirs=[str(TEMPLATE_BASE)])


MATH_RE = re.compile(r"\$\$.+?\$\$|\$[^$\n]+\$|\\\(|\\\[|\\begin\{", re.S)


def has_math(nb) -> bool:
    """Does the notebook's markdown (cells and markdown outputs) hold TeX math?

    ``$...$``, ``$$...$$`` (also over several lines), ``\\(...\\)``, ``\\[...\\]`` or
    ``\\begin{env}``: pages without math do not load MathJax.
    """
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    text += "\n".join("".join(o.get("data", {}).get("text/markdown", ""))
                      for c in nb.cells for o in c.get("outputs", []))
    return bool(MATH_RE.search(text))


def write_page(nb, name: str, out_dir: Path, site: dict, files: PageFiles | None = None) -> Path:
    """Convert one (executed) notebook to ``out_dir/<name>.html`` with its image files."""
    files = files or PageFiles(name)
    static_outputs(nb, files)
    html_outputs = ("".join(o.get("data", {}).get("text/html", ""))
                    for c in nb.cells for o in c.get("outputs", []))
    resources = {"metadata": {"name": name}, "output_files_dir": f"{name}_files",
                 "unique_key": name,
                 "site": dict(site, current=f"{name}.html", has_math=has_math(nb),
                              has_plotly=any('class="sa-plotly"' in h for h in html_outputs))}
    body, resources = _exporter().from_notebook_node(nb, resources=resources)
    for rel, data in {**resources.get("outputs", {}), **files.files}.items():
        dest = out_dir / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
    css = resources.get("inlining", {}).get("css", [])
    if css and not (out_dir / "assets" / "pygments.css").exists():
        (out_dir / "assets" / "pygments.css").write_text("\n".join(css))
    path = out_dir / f"{name}.html"
    path.write_text(body, encoding="utf-8")
    return path


def mathjax_path() -> Path:
    """MathJax 3's ``tex-svg-full.js`` inside the installed ``sphinx-mathjax-offline`` package.

    That package is a plain copy of MathJax 3.2.2's ``es5/`` folder (byte-identical to the npm
    package ``mathjax@3.2.2``); it is used for its files only, never imported.

    Raises:
        FileNotFoundError: the package is missing (it is in the ``dev`` extra) or lacks the file.
    """
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        path = Path(distribution(MATHJAX_DIST).locate_file(f"{MATHJAX_DIR}/{MATHJAX_FILE}"))
    except PackageNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise FileNotFoundError(
            f"MathJax 3 ({MATHJAX_FILE}) not found: the site needs the PyPI package "
            f"{MATHJAX_DIST!r} (pip install -e '.[dev]', or pip install {MATHJAX_DIST})")
    return path


def copy_assets(out_dir: Path) -> None:
    """plotly.js, MathJax, JupyterLab's notebook CSS and the site's own CSS/JS -> ``assets/``."""
    import plotly
    from nbconvert import HTMLExporter

    assets = out_dir / "assets"
    assets.mkdir(parents=True, exist_ok=True)
    shutil.copy2(Path(plotly.__file__).parent / "package_data" / "plotly.min.js", assets)
    (assets / "mathjax").mkdir(exist_ok=True)
    shutil.copy2(mathjax_path(), assets / "mathjax" / MATHJAX_FILE)
    lab = next(Path(p) / "lab" / "static" for p in HTMLExporter().template_paths
               if (Path(p) / "lab" / "static" / "index.css").exists())
    lab_css = "\n".join((lab / f).read_text() for f in ("index.css", "theme-light.css"))
    (assets / "lab.css").write_text(lab_css)
    for f in (TEMPLATE_BASE / TEMPLATE_NAME / "static").iterdir():
        shutil.copy2(f, assets / f.name)


def _markdown_notebook(*cells: str):
    import nbformat

    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(c) for c in cells])


def results_notebook(sweep_dir: Path | None):
    """The results page: the sweep's ``results.md`` and its figure (or how to get them)."""
    import nbformat

    from slamags_core.report import plot_results, results_markdown
    from slamags_core.sweep import read_results

    csv = sweep_dir / "results.csv" if sweep_dir else None
    if csv is None or not csv.exists():
        where = f"`{sweep_dir}`" if sweep_dir else "no sweep folder was given"
        return _markdown_notebook(
            "# Results of the witness-rate sweep\n\n"
            f"No sweep results were found ({where}). Run the main job, `python3 dev.py run`, which "
            "runs the sweep into `outputs/sweep/`, then `python3 dev.py site`, which builds this "
            "site with its results, or pass `--sweep DIR` to `python -m slamags_core site`.")
    rows = read_results(csv)
    md_path = sweep_dir / "results.md"
    preset = json.loads((sweep_dir / "config.json").read_text()).get("preset", {}).get("name", "") \
        if (sweep_dir / "config.json").exists() else ""
    md = md_path.read_text() if md_path.exists() else results_markdown(rows, preset)
    head, _, tables = md.partition("\n## ")
    fig = json.loads(plot_results(rows).to_json())
    plot = nbformat.v4.new_code_cell("", metadata={"tags": ["remove_input"]}, outputs=[
        nbformat.v4.new_output("display_data", data={PLOTLY_MIME: fig})])
    nb = _markdown_notebook(
        head.strip() + "\n\n"
        f"{len(rows)} rows from `{sweep_dir.name}/results.csv` "
        "([download](results.csv)); one row per (method, MIL model, witness rate, seed). Notebook "
        "08 reads the same file and checks the paper's claims against it.")
    nb.cells.append(plot)
    nb.cells.append(nbformat.v4.new_markdown_cell("## " + tables if tables else ""))
    return nb


def build_site(cfg: SiteConfig, log: Callable[[str], None] = print) -> list[PageResult]:
    """Execute the notebooks and write the whole site to ``cfg.out_dir``; returns the pages.

    Raises:
        ValueError: a name in ``cfg.only`` is not a notebook, or a header cell lacks a section.
        nbclient.exceptions.CellExecutionError: a cell failed (its traceback names it).
    """
    import nbformat

    from slamags_core.config import get_preset

    preset = get_preset(cfg.preset).name
    paths = sorted(Path(cfg.notebooks_dir).glob("[0-9][0-9]_*.ipynb"))
    if cfg.only:
        unknown = sorted(set(cfg.only) - {p.stem for p in paths})
        if unknown:
            raise ValueError(f"not notebooks in {cfg.notebooks_dir}: {unknown}; "
                             f"allowed: {[p.stem for p in paths]}")
        paths = [p for p in paths if p.stem in cfg.only]
    if not paths:
        raise ValueError(f"no notebooks NN_*.ipynb found in {cfg.notebooks_dir}")
    headers = [parse_header(nbformat.read(p, as_version=4), p.stem) for p in paths]
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    copy_assets(out)
    sweep = Path(cfg.sweep_dir).resolve() if cfg.sweep_dir else None
    env = dict(os.environ, SLAMAGS_PRESET=preset, **cfg.env)
    if sweep is not None:
        env.setdefault("SLAMAGS_RESULTS", str(sweep))   # notebook 08 reads the same sweep

    pages = [{"href": "index.html", "title": "Course outline", "short": "Outline"}]
    pages += [{"href": f"{h.name}.html", "title": h.title, "short": h.name[:2]} for h in headers]
    pages += [{"href": "results.html", "title": "Sweep results", "short": "Results"}]
    stamp = time.strftime("%Y-%m-%d %H:%M")

    def site(i: int, banner: str = "") -> dict:
        return {"site_title": SITE_TITLE, "pages": pages, "banner": banner,
                "page_title": f"{pages[i]['title']} · {SITE_TITLE}",
                "prev": pages[i - 1] if i > 0 else None,
                "next": pages[i + 1] if i + 1 < len(pages) else None,
                "footer": f"Built {stamp} with nbconvert at the {preset} preset by "
                          "<code>python -m slamags_core site</code>. Works offline."}

    results = []
    for i, (path, header) in enumerate(zip(paths, headers), start=1):
        t0 = time.perf_counter()
        nb = execute_notebook(path, env=env, timeout=cfg.timeout)
        dt = time.perf_counter() - t0
        banner = (f"Executed at the <code>{preset}</code> preset in {dt:.0f} s. Source: "
                  f"<code>notebooks/{path.name}</code>.")
        results.append(PageResult(path.stem, write_page(nb, path.stem, out, site(i, banner)), dt))
        log(f"{path.name}: executed in {dt:.1f} s -> {results[-1].path}")
    # the results page shows the sweep folder as it stands after the notebooks ran (a notebook
    # may have written it: at the smoke preset notebook 08 runs a small sweep of its own)
    has_results = bool(sweep and (sweep / "results.csv").exists())
    if has_results:
        shutil.copy2(sweep / "results.csv", out / "results.csv")
    results.append(PageResult("results", write_page(results_notebook(sweep), "results", out,
                                                     site(len(pages) - 1)), 0.0))
    outline = outline_markdown(headers, preset, has_results, {r.name: r.seconds for r in results})
    results.insert(0, PageResult("index", write_page(_markdown_notebook(outline), "index", out,
                                                     site(0)), 0.0))
    log(f"site: {len(results)} pages, {site_size(out) / 1e6:.1f} MB in {out} "
        f"(open {out / 'index.html'})")
    return results


def site_size(out_dir: Path) -> int:
    """Total bytes of the files under ``out_dir``."""
    return sum(f.stat().st_size for f in Path(out_dir).rglob("*") if f.is_file())
