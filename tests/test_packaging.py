"""Packaging: environment.yml and pyproject.toml name the same packages; presets are sane."""
import re
import tomllib
from pathlib import Path

import pytest

from slamags_core.config import PRESETS, get_preset

ROOT = Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        wanted |= {_name(r) for r in extra}
    lines = (ROOT / "environment.yml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "- pip:")
    pip_reqs = [ln.strip()[2:] for ln in lines[start + 1:] if ln.strip().startswith("- ")]
    conda = {_name(r) for r in pip_reqs if not r.startswith("-e")}
    assert conda == wanted
    assert any(r.startswith("-e .") for r in pip_reqs), "environment.yml must install the package"


def test_no_cpu_only_torch_pin():
    text = (ROOT / "pyproject.toml").read_text() + (ROOT / "environment.yml").read_text()
    assert "+cpu" not in text and "download.pytorch.org" not in text


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_load_and_roundtrip(name):
    p = get_preset(name)
    assert p.name == name
    assert p.to_dict()["bags"]["bag_size"] == p.bags.bag_size


def test_preset_from_environment(monkeypatch):
    monkeypatch.setenv("SLAMAGS_PRESET", "smoke")
    assert get_preset().name == "smoke"
    monkeypatch.setenv("SLAMAGS_PRESET", "nope")
    with pytest.raises(ValueError, match="nope"):
        get_preset()


def test_every_witness_rate_fits_its_preset_bags():
    from slamags_core.bags import n_witnesses

    for name in PRESETS:
        p = get_preset(name)
        for wr in p.witness_rates:
            assert n_witnesses(p.bags.bag_size, wr) >= 1
