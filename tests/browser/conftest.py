"""Fixtures for the browser tests: Debian's Chromium driven by Playwright, the smoke-preset site.

Chromium is never downloaded (no ``playwright install``): the tests use the system browser
(``apt-get install chromium``; ``.ci/run`` installs it) or ``$SLAMAGS_CHROMIUM``. Without one the
browser tests are skipped with the reason; under CI (``CI=true``) a missing browser fails them,
since ``.ci/run`` installs it.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def find_chromium() -> str | None:
    """Path of a system Chromium: $SLAMAGS_CHROMIUM, /usr/bin/chromium or one on PATH."""
    for cand in (os.environ.get("SLAMAGS_CHROMIUM"), "/usr/bin/chromium",
                 shutil.which("chromium"), shutil.which("chromium-browser")):
        if cand and Path(cand).exists():
            return cand
    return None


def _unavailable(reason: str):
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} — .ci/run installs it, so under CI this is a failure, not a skip")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium(tmp_path_factory):
    """A headless system Chromium context with a fresh profile (one per test session)."""
    exe = find_chromium()
    if exe is None:
        _unavailable("no Chromium found (apt-get install chromium, or set SLAMAGS_CHROMIUM); "
                     "browser tests need a real browser")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install playwright; never `playwright install`)")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(profile), executable_path=exe, headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1300, "height": 900})
        yield ctx
        ctx.close()


@pytest.fixture(scope="session")
def smoke_data_dir(tmp_path_factory):
    """One data cache for the browser tests: encoders pretrained by one notebook run are reused."""
    return tmp_path_factory.mktemp("smoke-data")


# where notebook 08 writes its small sweep at the smoke preset (notebooks/py/08_witness_rate_sweep.py)
NB08_SMOKE_SWEEP = Path("cache") / "nb08-smoke-sweep"


@pytest.fixture(scope="session")
def smoke_site(tmp_path_factory, smoke_data_dir):
    """The course site built at the smoke preset, once per session: every notebook executed.

    Its results page shows the sweep that notebook 08 runs at the smoke preset (4 methods, 2
    witness rates): the site build executes notebook 08 anyway, so no second sweep is run here.
    """
    from slamags_core.site import SiteConfig, build_site

    base = tmp_path_factory.mktemp("site")
    pages = build_site(SiteConfig(out_dir=base / "out", preset="smoke",
                                  sweep_dir=smoke_data_dir / NB08_SMOKE_SWEEP, timeout=900,
                                  env={"SLAMAGS_DATA_DIR": str(smoke_data_dir)}))
    return base / "out", pages
