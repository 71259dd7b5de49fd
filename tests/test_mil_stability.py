"""benchmarks/mil_stability.py runs end to end on the smoke preset and writes its JSON and table."""
import json
import runpy
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def test_mil_stability_smoke(tmp_path, monkeypatch):
    mod = runpy.run_path(str(ROOT / "benchmarks" / "mil_stability.py"))
    monkeypatch.setattr(sys, "argv", ["x"])
    out = tmp_path / "ms"
    args = ["--preset", "smoke", "--methods", "random", "--mil", "abmil", "--mil-seeds", "2",
            "--set", "epochs=2", "--out", str(out)]
    res = mod["main"](args)
    saved = json.loads((out / "mil_stability.json").read_text())
    assert saved["mil_config"]["epochs"] == 2 and len(saved["rows"]) == 2
    s = saved["summary"]["random|0.1|abmil"]
    aucs = [r["bag_auc"] for r in saved["rows"]]
    assert s["bag_auc"]["min"] == min(aucs) and s["bag_auc"]["mean"] == np.mean(aucs)
    assert 0 <= s["n_bag_auc_ge_0.90"] <= 2
    assert {"probe_instance_auroc", "probe_pooled_bag_auc"} <= set(saved["probe"]["random|0.1"])
    assert "| random | 0.1 | abmil |" in (out / "mil_stability.md").read_text()
    for r in saved["rows"]:
        assert 0 <= r["bag_auc_without_witnesses"] <= 1 and 0 <= r["max_prob_change"] <= 1
    assert s["max_prob_change"]["n"] == 2
    again = mod["main"](args)  # finished rows are reused, not recomputed
    assert again["rows"] == res["rows"]
