"""The README's result tables, generated from a finished sweep folder (never typed by hand).

Reads ``results.csv`` and ``claims.json`` (the report's intervals) of a sweep folder and prints
markdown: per metric a table of mean ± std over seeds (both MIL models side by side, every
witness rate), the MIL-free rankings, and the paired ``slam_ags − other`` intervals averaged
over the witness rates and at the two lowest witness rates::

    python benchmarks/readme_tables.py docs/results/laptop-3seeds-h100 > /tmp/tables.md
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from slamags_core.config import METHODS
from slamags_core.report import _ci_cell, summarise
from slamags_core.sweep import read_results

NAMES = {"bag_auc": "bag AUC", "bag_f1": "bag F1", "topk_recall": "Top-K recall",
         "instance_auroc": "instance AUROC", "probe_auroc": "instance-label probe AUROC",
         "oneclass_auroc": "one-class kNN witness AUROC"}


def _cell(mean: float, std: float, n: int) -> str:
    if n == 0 or math.isnan(mean):
        return "–"
    return f"{mean:.3f}" if n == 1 or math.isnan(std) else f"{mean:.2f} ± {std:.2f}"


def side_by_side(rows: list[dict], metric: str, scorers: tuple[str, ...]) -> str:
    """methods x (scorer, witness rate) table of ``mean ± std (n seeds if not all)``."""
    summ = summarise(rows, metric)
    wrs = sorted({float(r["witness_rate"]) for r in rows}, reverse=True)
    n_all = len({r["seed"] for r in rows})
    head = "| method | " + " | ".join(f"{s} {100 * w:g}%" for s in scorers for w in wrs) + " |"
    lines = [head, "|---" * (1 + len(scorers) * len(wrs)) + "|"]
    for m in METHODS:
        cells = []
        for s in scorers:
            for w in wrs:
                mean, std, n = summ.get((s, m), {}).get(w, (math.nan, math.nan, 0))
                c = _cell(mean, std, n)
                cells.append(c if n in (0, n_all) else f"{c} ({n})")
        if any(c != "–" for c in cells):
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def differences(claims: dict, mil: str, metrics=("bag_auc", "topk_recall")) -> str:
    """``slam_ags − other``: mean over witness rates and at WR 1% / 0.5%, 95% intervals."""
    analysis = next(a for a in claims["analyses"] if a["mil"] == mil)
    comps = {(c["other"], c["metric"]): c for c in analysis["comparisons"]}
    others = [o for o in METHODS if any((o, m) in comps for m in metrics)]
    head = "| slam_ags − | " + " | ".join(f"{NAMES[m]}: {p}" for m in metrics
                                           for p in ("mean over WRs", "WR 1%", "WR 0.5%")) + " |"
    lines = [head, "|---" * (1 + 3 * len(metrics)) + "|"]

    for o in others:
        cells = []
        for m in metrics:
            c = comps.get((o, m))
            by = {b["witness_rate"]: b for b in c["by_witness_rate"]} if c else {}
            cells += [_ci_cell(d) if d else "–" for d in
                      (c["pooled"] if c else None, by.get(0.01), by.get(0.005))]
        lines.append(f"| {o} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", type=Path)
    args = ap.parse_args(argv)
    rows = read_results(args.folder / "results.csv")
    claims = json.loads((args.folder / "claims.json").read_text())
    parts = []
    for metric in ("bag_auc", "topk_recall"):
        parts += [f"**{NAMES[metric]}** (mean ± std over seeds)", "",
                  side_by_side(rows, metric, ("prototype", "abmil")), ""]
    parts += ["**MIL-free rankings: Top-K recall** (mean ± std over seeds)", "",
              side_by_side(rows, "topk_recall", ("oneclass_knn", "svdd_distance")), ""]
    diag = [r for r in rows if r["mil"] == "oneclass_knn"]
    for metric in ("probe_auroc", "oneclass_auroc"):
        parts += [f"**{NAMES[metric]}** of the frozen encoder (mean ± std over seeds)", "",
                  side_by_side([{**r, "mil": "encoder"} for r in diag], metric, ("encoder",)), ""]
    for mil in ("prototype", "abmil"):
        parts += [f"**Paired differences, {mil}** (95% interval; bold: excludes 0)", "",
                  differences(claims, mil), ""]
    text = "\n".join(parts)
    print(text)
    return text


if __name__ == "__main__":
    main()
