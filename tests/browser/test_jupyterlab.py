"""Notebooks in a real JupyterLab, driven through Chromium as a student would use them.

JupyterLab runs on a free local port over a copy of the notebooks (so autosave cannot write
outputs into the repository), with the smoke preset. The tests press Run All, move a widget
and click a UMAP point, and check what a person would see.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PROMPTS = "'.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputPrompt'"  # JS, the open notebook
LAB_SETTINGS = {  # JupyterLab user settings for the test server
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {
        "windowingMode": "none", "autoStartDefaultKernel": True},
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false", "checkForUpdates": False},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory, chromium, smoke_data_dir, smoke_site):
    """URL prefix and token of a JupyterLab server on 127.0.0.1 (stopped after the module).

    It shares the smoke site's data cache (built first), so notebook 07 loads the encoders that
    notebook 04 pretrained there instead of pretraining them again, as in a student's sequence.
    """
    base = tmp_path_factory.mktemp("lab")
    nbs = base / "notebooks"
    nbs.mkdir()
    for nb in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"):
        shutil.copy2(nb, nbs / nb.name)
    settings = base / "settings"
    for rel, value in LAB_SETTINGS.items():
        (settings / rel).parent.mkdir(parents=True, exist_ok=True)
        (settings / rel).write_text(json.dumps(value))
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, SLAMAGS_PRESET="smoke", SLAMAGS_DATA_DIR=str(smoke_data_dir),
               JUPYTERLAB_SETTINGS_DIR=str(settings), JUPYTER_CONFIG_DIR=str(base / "config"),
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    log = open(base / "lab.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={nbs}", "--ServerApp.port_retries=0",
         "--allow-root",
         "--LabApp.news_url=None",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        cwd=nbs, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not start:\n{(base / 'lab.log').read_text()[-3000:]}")
                time.sleep(0.5)
        yield url, token, base
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _open(chromium, lab, name: str):
    """Open notebook `name` in JupyterLab in a new tab and wait for its kernel; network stays local."""
    url, token, _ = lab
    page = chromium.new_page()
    problems: list[str] = []
    page.on("request", lambda r: None if r.url.startswith(
        (url, "data:", "blob:", "about:", "ws://127.0.0.1")) else problems.append(f"network: {r.url}"))
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
            if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    # a workspace of its own, reset: the tab shows only this notebook (Run All applies to it)
    page.goto(f"{url}/lab/workspaces/{name}/tree/{name}.ipynb?reset&token={token}")
    page.wait_for_function(
        """() => document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell').length > 1 &&
                 document.querySelector('#jp-main-statusbar').innerText.includes('| Idle')""",
        timeout=120_000, polling=500)
    return page, problems


def _shutdown_kernels(lab) -> None:
    """Stop every kernel of the test server (a finished notebook should not hold the CPU)."""
    url, token, _ = lab
    kernels = json.loads(urllib.request.urlopen(f"{url}/api/kernels?token={token}", timeout=10).read())
    for k in kernels:
        req = urllib.request.Request(f"{url}/api/kernels/{k['id']}?token={token}", method="DELETE")
        urllib.request.urlopen(req, timeout=30)


BUSY_CELL = f"""() => {{
  const prompts = Array.from(document.querySelectorAll({PROMPTS}));
  const i = prompts.findIndex(p => p.textContent.includes('*'));
  const cell = i < 0 ? null : prompts[i].closest('.jp-CodeCell');
  const source = cell ? cell.querySelector('.jp-InputArea-editor').innerText : '';
  return {{running: i, of: prompts.length, source: source.slice(0, 300),
          unrun: prompts.filter(p => !/\\[\\d+\\]/.test(p.textContent)).length,
          status: document.querySelector('#jp-main-statusbar').innerText.replace(/\\s+/g, ' ')}};
}}"""


def _run_all(page, timeout_s: float, shots: Path) -> None:
    """Run > Run All Cells from the menu bar; wait until every code cell has run.

    Stops early when a cell fails (Run All then stops) or the kernel dies. If the notebook never
    finishes, the failure says which cell was still running, the kernel's status and the end of
    the server's log (kernel messages go there), and a screenshot goes to `shots`.
    """
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
    errors_js = """() => Array.from(document.querySelectorAll(
        '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'))
        .map(e => e.innerText).filter(t => /Traceback|^\\w+Error\\b/m.test(t))"""
    try:
        page.wait_for_function(   # every code cell numbered, or a cell failed, or the kernel died
            f"""() => {{
              const prompts = Array.from(document.querySelectorAll({PROMPTS}));""" + """
              const busy = prompts.some(p => p.textContent.includes('*'));
              const failed = document.querySelector(
                '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]');
              const status = document.querySelector('#jp-main-statusbar').innerText;
              if (/\\| (Dead|Restarting|Autorestarting)/.test(status)) return true;
              return prompts.length > 0 && !busy &&
                     (prompts.every(p => /\\[\\d+\\]/.test(p.textContent)) || failed !== null);
            }""", timeout=timeout_s * 1000, polling=500)
    except Exception as exc:
        page.screenshot(path=str(shots / "run_all_timeout.png"))
        state = page.evaluate(BUSY_CELL)
        log = (shots / "lab.log").read_text()[-3000:] if (shots / "lab.log").exists() else ""
        raise AssertionError(
            f"Run All did not finish in {timeout_s:.0f} s: code cell {state['running'] + 1} of "
            f"{state['of']} still running ({state['unrun']} not run), status bar "
            f"{state['status']!r}; its source:\n{state['source']}\n--- JupyterLab log (end):\n{log}"
            f"\n(screenshot: {shots / 'run_all_timeout.png'})") from exc
    status = page.evaluate(BUSY_CELL)["status"]
    assert not any(f"| {s}" in status for s in ("Dead", "Restarting", "Autorestarting")), \
        f"the kernel died during Run All (status bar {status!r}); JupyterLab log:\n" + \
        (shots / "lab.log").read_text()[-3000:]
    errors = page.evaluate(errors_js)
    assert not errors, "a cell raised:\n" + "\n---\n".join(errors)[:4000]
    prompts = page.evaluate(f"() => Array.from(document.querySelectorAll({PROMPTS}))"
                            ".map(p => p.textContent)")
    assert all("[" in p and p.strip("[]: \u00a0").isdigit() for p in prompts), prompts


def test_notebook01_run_all_then_slider_redraws_the_bag_mosaic(chromium, lab):
    page, problems = _open(chromium, lab, "01_cells_and_bags")
    try:
        _run_all(page, timeout_s=300, shots=lab[2])
        widget = page.locator(".jupyter-widgets.widget-vbox").filter(
            has=page.locator(".widget-image")).first
        widget.scroll_into_view_if_needed()
        img = widget.locator("img").first
        caption = widget.locator(".widget-label", has_text="witnesses /").first
        page.wait_for_function("(i) => i.complete && i.naturalWidth > 0", arg=img.element_handle())
        before_src, before_text = img.get_attribute("src"), caption.inner_text()
        handle = widget.locator(".widget-slider", has_text="witness rate").locator(".noUi-handle").first
        handle.focus()
        page.keyboard.press("ArrowRight")           # witness rate 5% -> 2%
        page.wait_for_function("([i, s]) => i.getAttribute('src') !== s",
                               arg=[img.element_handle(), before_src], timeout=60_000)
        after_text = caption.inner_text()
        widget.screenshot(path=str(lab[2] / "nb01_slider.png"))
        assert before_text.startswith("WR 5.0%"), before_text
        assert after_text.startswith("WR 2.0%"), after_text
        page.wait_for_function("(i) => i.complete && i.naturalWidth > 0", arg=img.element_handle())
        assert not problems, "\n".join(problems)
    except BaseException:
        page.screenshot(path=str(lab[2] / "nb01_failure.png"))   # what the page showed
        raise
    finally:
        page.close()
        _shutdown_kernels(lab)


def test_notebook07_run_all_click_shows_a_cell_and_encoder_switch_updates_it(chromium, lab):
    page, problems = _open(chromium, lab, "07_umap_explorer")
    try:
        _run_all(page, timeout_s=900, shots=lab[2])
        explorer = page.locator(".jupyter-widgets.widget-vbox").filter(
            has=page.locator(".js-plotly-plot")).first
        explorer.scroll_into_view_if_needed()
        panel = explorer.locator(".widget-html-content").first
        page.wait_for_function("(p) => p.innerText.includes('attention')", arg=panel.element_handle(),
                               timeout=60_000)
        first = panel.inner_text()
        # click a non-witness point (the first trace when colouring by witness is "other")
        point = explorer.locator(".scatterlayer .trace").first.locator("path.point").nth(3)
        box = point.bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.wait_for_function("([p, t]) => p.innerText !== t", arg=[panel.element_handle(), first],
                               timeout=60_000)
        clicked = panel.inner_text()
        assert clicked.split("\n")[0] != first.split("\n")[0], (first, clicked)   # another cell
        img = explorer.locator(".widget-image").first
        assert img.evaluate("i => i.complete && i.naturalWidth > 0")
        explorer.screenshot(path=str(lab[2] / "nb07_click.png"))
        # switching encoder must refresh the shown cell's attention (it used to keep the old one)
        explorer.locator("select").first.select_option("simclr")
        page.wait_for_function("(p) => p.innerText.includes('(simclr)')", arg=panel.element_handle(),
                               timeout=60_000)
        switched = panel.inner_text()
        assert switched.split("\n")[0] == clicked.split("\n")[0]   # same cell, new encoder
        explorer.screenshot(path=str(lab[2] / "nb07_switch.png"))
        assert not problems, "\n".join(problems)
    except BaseException:
        page.screenshot(path=str(lab[2] / "nb07_failure.png"))   # what the page showed
        raise
    finally:
        page.close()
        _shutdown_kernels(lab)
