"""What a bag protocol costs: the main job's measured stage times, and what other designs cost.

Reads a finished sweep folder (``results.csv``, ``sweep.log``, ``config.json``) -- e.g. the main
job's ``outputs/sweep`` -- and prints

1. the measured wall-clock time per stage (bag rendering, pretraining, embedding, diagnostics,
   MIL) summed over the folder's grid, and per witness rate and seed;
2. unit costs: seconds per rendered cell, per embedded cell, per diagnosed test cell, per
   MIL training bag (per model) and per pretraining run (per method);
3. the predicted time of one seed of the preset's grid for other ``(n_train, n_val, n_test)``
   designs, next to the expected half-width of a paired bag-AUC interval over 3 seeds for the
   given variance components (:func:`slamags_core.power.half_width`).

The prediction is a linear cost model fitted on ONE measured run (rendering, embedding and the
diagnostics scale with the cells, MIL with the training + validation bags, pretraining is a
fixed step budget); it is an estimate, and docs/power.md says so wherever it uses it::

    python benchmarks/protocol_cost.py outputs/sweep --designs 64,32,64 64,32,128 64,32,256 \\
        --v 0.15 0.30 0.667 --out outputs/protocol_cost
"""
from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path

from slamags_core import power as PW
from slamags_core.config import MIL_MODELS
from slamags_core.sweep import read_results

_BAGS = re.compile(r"bags stain=\S+ witness_rate=\S+ seed=\d+: (\d+) bags, (\d+) cells, "
                   r"rendered or loaded in ([0-9.]+) s")


def measured(folder: Path) -> dict:
    """Stage totals and unit costs of one sweep folder."""
    rows = read_results(folder / "results.csv")
    preset = json.loads((folder / "config.json").read_text())["preset"]
    bags = preset["bags"]
    n_cells = (bags["n_train"] + bags["n_val"] + bags["n_test"]) * bags["bag_size"]
    n_test_cells = bags["n_test"] * bags["bag_size"]
    render = [(int(m[2]), float(m[3])) for m in _BAGS.finditer((folder / "sweep.log").read_text())]
    runs = {}  # one entry per (method, wr, seed, stain): pretraining
    embeds = {}  # one per (method, wr, seed, stain, embedding): embedding + diagnostics
    mil = defaultdict(list)
    for r in rows:
        run = (r["method"], r["witness_rate"], r["seed"], r["stain"])
        runs[run] = r["pretrain_s"]
        embeds[run + (r["embedding"],)] = (r["embed_s"], r["diagnostics_s"])
        mil[r["mil"]].append(r["mil_s"])
    per_method = defaultdict(list)
    for (m, *_), s in runs.items():
        per_method[m].append(s)
    total = {"render_s": sum(s for _, s in render), "pretrain_s": sum(runs.values()),
             "embed_s": sum(e for e, _ in embeds.values()),
             "diagnostics_s": sum(d for _, d in embeds.values()),
             "mil_s": sum(sum(v) for v in mil.values())}
    total["sum_s"] = sum(total.values())
    train_bags = bags["n_train"] + bags["n_val"]
    return {
        "folder": str(folder), "preset": preset.get("name"), "rows": len(rows),
        "bag_size": bags["bag_size"], "design": [bags["n_train"], bags["n_val"], bags["n_test"]],
        "grid_cells": len({(w, s, st) for (_, w, s, st) in runs}), "total": total,
        "unit": {
            "render_s_per_cell": (sum(s for _, s in render) / sum(c for c, _ in render)
                                  if render else 0.0),  # 0: no "bags ..." line in the log
            "embed_s_per_cell": total["embed_s"] / (len(embeds) * n_cells),
            "diagnostics_s_per_test_cell": total["diagnostics_s"] / (len(embeds) * n_test_cells),
            "mil_s_per_train_bag": {k: sum(v) / (len(v) * train_bags) for k, v in mil.items()
                                    if k in MIL_MODELS},
            "mil_free_s_per_run": {k: sum(v) / len(v) for k, v in mil.items()
                                   if k not in MIL_MODELS},
            "pretrain_s_per_run": {m: sum(v) / len(v) for m, v in per_method.items()},
        },
    }


def predict(m: dict, design: tuple[int, int, int], n_wr: int) -> float:
    """Seconds of one seed of ``n_wr`` witness rates x the measured methods for ``design``."""
    u, B = m["unit"], m["bag_size"]
    n_tr, n_va, n_te = design
    cells, test_cells = (n_tr + n_va + n_te) * B, n_te * B
    methods = u["pretrain_s_per_run"]
    per_wr = u["render_s_per_cell"] * cells
    for method, p in methods.items():
        per_wr += p + u["embed_s_per_cell"] * cells + u["diagnostics_s_per_test_cell"] * test_cells
        per_wr += sum(s * (n_tr + n_va) for s in u["mil_s_per_train_bag"].values())
        per_wr += u["mil_free_s_per_run"].get("oneclass_knn", 0.0)
    return per_wr * n_wr


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", type=Path, help="a finished sweep folder")
    p.add_argument("--designs", nargs="*", default=[],
                   help="n_train,n_val,n_test designs to predict (one seed)")
    p.add_argument("--n-wr", type=int, default=4, help="witness rates per seed")
    p.add_argument("--v", nargs="*", type=float, default=[0.15, 0.30, 0.667],
                   help="within-seed unit variances v of a paired bag-AUC difference")
    p.add_argument("--tau2", type=float, default=0.0, help="between-seed variance")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    m = measured(args.folder)
    print(json.dumps(m, indent=1))
    lines = ["| n_train / n_val / n_test | predicted s per seed | min per seed | "
             + " | ".join(f"half-width, v = {v:g}, {args.seeds} seeds" for v in args.v) + " |",
             "|---" * (3 + len(args.v)) + "|"]
    for d in [tuple(m["design"])] + [tuple(int(x) for x in s.split(",")) for s in args.designs]:
        t = predict(m, d, args.n_wr)
        hw = [PW.half_width(v, args.tau2, d[2], args.seeds) for v in args.v]
        lines.append(f"| {d[0]} / {d[1]} / {d[2]} | {t:.0f} | {t / 60:.1f} | "
                     + " | ".join(f"{h:.3f}" for h in hw) + " |")
    md = "\n".join(lines)
    print(md)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "protocol_cost.json").write_text(json.dumps(m, indent=1))
        (args.out / "protocol_cost.md").write_text(md + "\n")


if __name__ == "__main__":
    main()
