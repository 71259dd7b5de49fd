"""The notebooks' teaching standard (issue 13) that a test can check: every figure is followed by a
"What you should see" line, and every course notebook has a header with a goal, a run time and a
link to the shared notation table.

A code cell *draws a figure* when a top-level statement calls ``.show()`` or ``display(...)``, or
calls a function defined in the notebook whose body does (``show_views(0)``, ``sphere_plot(...)``).
The first markdown cell after it must say what the reader should see.
"""
import ast
import re
from pathlib import Path

import jupytext
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks" / "py").glob("[0-9][0-9]_*.py"))


def _draws(node: ast.AST, drawing: set[str]) -> bool:
    """Does this statement call .show(), display() or a drawing function of the notebook?"""
    for call in (n for n in ast.walk(node) if isinstance(n, ast.Call)):
        f = call.func
        if isinstance(f, ast.Attribute) and f.attr == "show":
            return True
        if isinstance(f, ast.Name) and (f.id == "display" or f.id in drawing):
            return True
    return False


def figure_cells(py: Path) -> list[tuple[int, str, str | None]]:
    """(cell index, first line, the next markdown cell's text) for every cell that draws."""
    cells = jupytext.read(py).cells
    drawing: set[str] = set()
    out = []
    for k, cell in enumerate(cells):
        if cell.cell_type != "code":
            continue
        tree = ast.parse(cell.source)
        draws = False
        for stmt in tree.body:
            if isinstance(stmt, ast.FunctionDef):
                if any(_draws(s, drawing) for s in stmt.body):
                    drawing.add(stmt.name)
            elif _draws(stmt, drawing):
                draws = True
        if draws:
            nxt = next((c.source for c in cells[k + 1:] if c.cell_type == "markdown"), None)
            out.append((k, cell.source.strip().splitlines()[0], nxt))
    return out


def test_the_figure_finder_finds_the_figures_it_should():
    # notebook 02's helper sphere_plot() draws; its setup cell only imports `display`
    found = {first for _, first, _ in figure_cells(ROOT / "notebooks" / "py" / "02_two_losses.py")}
    assert "def sphere_plot(before, after, title):" in found
    assert not any(first.startswith("try:") for first in found)
    assert len(found) >= 6


@pytest.mark.parametrize("py", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_figure_has_a_what_you_should_see_line(py):
    missing = [f"cell {k} ({first!r})" for k, first, nxt in figure_cells(py)
               if nxt is None or "what you should see" not in nxt.lower()]
    assert not missing, (f"{py.name}: no 'What you should see' line in the first markdown cell after "
                         f"these figures: {missing}")


@pytest.mark.parametrize("py", NOTEBOOKS, ids=lambda p: p.stem)
def test_header_states_goal_run_time_and_links_the_notation(py):
    header = jupytext.read(py).cells[0].source
    for part in ("**Goal.**", "**Run time.**"):
        assert part in header, f"{py.name}: the header cell has no {part}"
    assert "docs/notation.md" in header, f"{py.name}: the header does not link docs/notation.md"
    assert re.search(r"\*\*Exercises\*\*", header), f"{py.name}: the header does not announce the exercises"
