"""Repository habits that CI enforces: ruff is clean, every notebook has its py:percent pair
in sync, and notebooks are stored without outputs."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import jupytext
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p for p in (ROOT / "notebooks").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def _ruff() -> list[str]:
    exe = shutil.which("ruff", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "ruff"]


def test_ruff_is_clean():
    res = subprocess.run([*_ruff(), "check", "--output-format", "concise", "."], cwd=ROOT,
                         capture_output=True, text=True)
    assert res.returncode == 0, (f"ruff found problems (fix them or run `ruff check --fix`):\n"
                                 f"{res.stdout}{res.stderr}")


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 8


def _cells(nb) -> list[tuple]:
    return [(c.cell_type, c.source.strip(), tuple(c.metadata.get("tags", ()))) for c in nb.cells]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT / "notebooks")))
def test_notebook_has_py_pair_in_sync(path):
    pair = path.parent / "py" / f"{path.stem}.py"
    assert pair.exists(), f"{path.name} has no py:percent pair {pair.relative_to(ROOT)}; run " \
                          f"`jupytext --set-formats ipynb,py//py:percent {path.relative_to(ROOT)}`"
    nb, text = jupytext.read(path), jupytext.read(pair)
    assert _cells(nb) == _cells(text), (
        f"{path.name} and {pair.relative_to(ROOT)} differ; edit the .py and run "
        f"`python3 dev.py sync {path.stem}` (or `jupytext --sync`)")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT / "notebooks")))
def test_notebook_outputs_are_stripped(path):
    nb = json.loads(path.read_text())
    dirty = [i for i, c in enumerate(nb["cells"])
             if c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count"))]
    assert not dirty, f"{path.name}: cells {dirty} keep outputs; strip them before committing"
