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
    assert {"probe_instance_auroc", "probe_pooled_bag_auc", "slide_probe_train_auc",
            "slide_probe_test_auc"} <= set(saved["probe"]["random|0.1"])
    assert "| random | 0.1 | abmil |" in (out / "mil_stability.md").read_text()
    for r in saved["rows"]:
        assert 0 <= r["bag_auc_without_witnesses"] <= 1 and 0 <= r["max_prob_change"] <= 1
    assert s["max_prob_change"]["n"] == 2
    again = mod["main"](args)  # finished rows are reused, not recomputed
    assert again["rows"] == res["rows"]


def _planted_bagset(offset: float, seed: int = 0):
    """40 train + 40 test bags of 20 cells; positive bags hold 2 witnesses far out on feature 0;
    every cell of a positive bag is shifted by ``offset`` on feature 1 (a label-linked 'stain')."""
    from slamags_core.bags import BagSet
    rng = np.random.default_rng(seed)
    n_bags, n = 80, 20
    y = np.arange(n_bags) % 2
    H = rng.normal(size=(n_bags * n, 4))
    inst = np.zeros(n_bags * n, np.int8)
    for b in np.flatnonzero(y):
        inst[b * n:b * n + 2] = 1
        H[b * n:b * n + 2, 0] += 6.0
        H[b * n:(b + 1) * n, 1] += offset
    bs = BagSet(images=np.zeros((n_bags * n, 1, 1, 3), np.uint8), bag_index=np.repeat(np.arange(n_bags), n),
                instance_labels=inst, cell_types=np.where(inst == 1, "BLA", "LYT").astype("<U16"),
                cell_ids=np.arange(n_bags * n), bag_labels=y,
                bag_split=np.array(["train"] * 40 + ["test"] * 40, dtype="<U5"), witness_rate=0.1,
                config={})
    import torch
    return bs, torch.as_tensor(H, dtype=torch.float32)


def test_slide_probe_sees_bag_content_not_witnesses():
    mod = runpy.run_path(str(ROOT / "benchmarks" / "mil_stability.py"))
    stained = mod["slide_probe"](*_planted_bagset(offset=1.0))
    assert stained["slide_probe_train_auc"] == 1.0 and stained["slide_probe_test_auc"] > 0.95
    clean = mod["slide_probe"](*_planted_bagset(offset=0.0))  # only witnesses differ: invisible
    assert clean["slide_probe_test_auc"] < 0.75
    ceiling = mod["probe_ceiling"](*_planted_bagset(offset=0.0), 0.1)
    assert ceiling["probe_pooled_bag_auc"] == 1.0  # the instance probe does find them
