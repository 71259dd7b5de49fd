#!/usr/bin/env python3
"""Plain entry point for the project: set up the environment, run the main job, run the tests.

    python3 dev.py run     # set up .venv, run the witness-rate sweep (laptop preset, one seed)
    python3 dev.py test    # set up .venv, then pytest on tests/ + nbval over notebooks/ (smoke)
    python3 dev.py site    # build the course site (every notebook, laptop preset) + the sweep
    python3 dev.py sync    # regenerate every notebooks/*.ipynb from its notebooks/py/*.py pair

Needs only Python 3.10+ with pip and venv. Extra arguments after ``run``/``test``/``site`` are
passed to the sweep CLI / to pytest / to the site builder. ``python3 dev.py setup`` only builds
the environment.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PY = VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
STAMP = VENV / ".slamags-installed"


def sh(*cmd: str | Path, env: dict | None = None) -> None:
    print("+", " ".join(map(str, cmd)), flush=True)
    rc = subprocess.call([str(c) for c in cmd], cwd=ROOT, env=env)
    if rc:
        sys.exit(rc)


def setup() -> None:
    """Create ``.venv`` and install the package with its dev extra (skipped when up to date)."""
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == want and PY.exists():
        return
    if not PY.exists():
        print(f"+ creating virtual environment {VENV}", flush=True)
        venv.create(VENV, with_pip=True)
    sh(PY, "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    sh(PY, "-m", "pip", "install", "--quiet", "-e", ".[dev]")
    STAMP.write_text(want)


def run(args: list[str]) -> None:
    """The main job: the witness-rate sweep at the laptop preset (one seed, every method).

    One worker process per core (at most 4), each with its share of the threads
    (``sweep --workers``). Results in outputs/sweep; ``python3 dev.py site`` then builds the
    course site, whose results page and notebook 08 show this sweep.
    """
    workers = str(max(1, min(4, os.cpu_count() or 1)))
    sh(PY, "-m", "slamags_core", "sweep",
       *(args or ["--preset", "laptop", "--out", "outputs/sweep", "--workers", workers]))
    if not args:
        print("results: outputs/sweep/results.md; the course site with them: python3 dev.py site",
              flush=True)


def site(args: list[str]) -> None:
    """The course site: every notebook executed at the laptop preset, plus outputs/sweep."""
    sh(PY, "-m", "slamags_core", "site", "--out", "outputs/site", "--preset", "laptop",
       "--sweep", "outputs/sweep", *args)


def test(args: list[str]) -> None:
    """pytest over tests/ and nbval (lax: errors only) over every notebook, in the smoke preset."""
    env = dict(os.environ, SLAMAGS_PRESET="smoke", PYTHONHASHSEED="0")
    sh(PY, "-m", "pytest", "--nbval-lax", "-q", "--durations=15", *(args or ["tests", "notebooks"]),
       env=env)


def sync(args: list[str]) -> None:
    """Regenerate each notebook from its py:percent pair (the text file is the one to edit).

    Outputs are not kept (notebooks are stored stripped); cell ids and metadata come from the
    text file, so the .ipynb is a pure function of notebooks/py/*.py.
    """
    pairs = sorted((ROOT / "notebooks").glob("**/py/*.py"))
    if args:
        pairs = [p for p in pairs if p.stem in args]
    for py in pairs:
        ipynb = py.parent.parent / f"{py.stem}.ipynb"
        sh(VENV / "bin" / "jupytext", "--quiet", "--update", "--to", "ipynb", "--output", ipynb, py)


def main() -> None:
    cmd, args = (sys.argv[1], sys.argv[2:]) if len(sys.argv) > 1 else ("", [])
    commands = {"setup": lambda a: None, "run": run, "test": test, "site": site, "sync": sync}
    if cmd not in commands:
        sys.exit(__doc__)
    setup()
    commands[cmd](args)


if __name__ == "__main__":
    main()
