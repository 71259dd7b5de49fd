"""Shared fixtures: every test writes its caches to a temporary data folder."""
import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _isolated_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SLAMAGS_DATA_DIR", str(tmp_path / "data"))


@pytest.fixture
def rng():
    return np.random.default_rng(0)
