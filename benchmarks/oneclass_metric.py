"""Is the one-class diagnostic's verdict a property of the features or of the cosine metric?

The sweep's one-class kNN witness AUROC (``oneclass_auroc``) ranks test cells by their mean
*cosine* distance to the 5 nearest slide-negative training cells, as the issue specifies.
Cosine ignores norms; an encoder that separates witnesses by their norm (the instance-supervised
``oracle`` does) scores below chance on it although its instance probe is near 1. This benchmark
reloads every encoder of a finished sweep (its ``checkpoints/``; nothing is retrained when they
are complete) and measures, on the same test bags, the within-bag witness AUROC of

* the cosine kNN score (must equal the sweep's column: checked and printed),
* the Euclidean kNN score (``diagnostics.knn_distance(metric="euclidean")``), and
* the norm ``||h||`` alone (AUROC < 0.5: witnesses have the *smaller* norms),

then prints the mean over the seeds per method and witness rate::

    python benchmarks/oneclass_metric.py outputs/sweep --out outputs/oneclass_metric

Run it with the ``SLAMAGS_DATA_DIR`` of the sweep (its bag sets and cached embeddings).
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from slamags_core.config import get_preset, with_n_test
from slamags_core.diagnostics import oneclass_scores, rank_within_bags
from slamags_core.pipeline import embed_bagset, get_bags, get_pretrained
from slamags_core.sweep import read_results, variant_preset

SCORES = ("cosine", "euclidean", "norm")


def measure(sweep: Path, methods: list[str] | None) -> list[dict]:
    """One row per (method, witness rate, seed) of the sweep's headline variant."""
    cfg = json.loads((sweep / "config.json").read_text())["preset"]
    preset = with_n_test(get_preset(cfg["name"]), cfg["bags"]["n_test"])
    stain = cfg["cells"]["stain"]
    vp = variant_preset(preset, stain)
    d = preset.diagnostics
    rows = [r for r in read_results(sweep / "results.csv")
            if r["embedding"] == "h" and r["stain"] == stain and r["mil"] == "oneclass_knn"
            and (methods is None or r["method"] in methods)]
    out = []
    for r in sorted(rows, key=lambda r: (r["witness_rate"], r["seed"], r["method"])):
        wr, seed = float(r["witness_rate"]), int(r["seed"])
        bags = get_bags(vp, wr, seed)
        result = get_pretrained(vp, bags, r["method"], seed, device="cpu",
                                root=sweep / "checkpoints", progress=False)
        H = embed_bagset(vp, bags, result, seed, device="cpu", which="h").numpy()
        got = {"method": r["method"], "witness_rate": wr, "seed": seed,
               "sweep_cosine": float(r["oneclass_auroc"])}
        for metric in ("cosine", "euclidean"):
            s = oneclass_scores(bags, H, k=d.k, max_reference=d.max_reference, seed=seed,
                                metric=metric)
            got[metric] = float(rank_within_bags(bags, s)["witness_auroc"])
        got["norm"] = float(rank_within_bags(bags, np.linalg.norm(H, axis=1))["witness_auroc"])
        print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                       for k, v in got.items()), flush=True)
        out.append(got)
    return out


def markdown(rows: list[dict]) -> str:
    wrs = sorted({r["witness_rate"] for r in rows}, reverse=True)
    methods = list(dict.fromkeys(r["method"] for r in rows))
    lines = ["| method | " + " | ".join(f"WR {100 * w:g}%: cosine / Euclidean / norm" for w in wrs)
             + " |", "|---" * (1 + len(wrs)) + "|"]
    for m in methods:
        cells = []
        for w in wrs:
            sel = [r for r in rows if r["method"] == m and r["witness_rate"] == w]
            cells.append(" / ".join(f"{np.mean([r[s] for r in sel]):.2f}" for s in SCORES)
                         + (f" ({len(sel)})" if len(sel) != 3 else ""))
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep", type=Path, help="a finished sweep folder with its checkpoints/")
    p.add_argument("--methods", nargs="+", default=None)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    rows = measure(args.sweep, args.methods)
    worst = max((abs(r["cosine"] - r["sweep_cosine"]) for r in rows), default=math.nan)
    md = markdown(rows) + (f"\n\nMean over seeds; `(n)`: n seeds. Cosine recomputed vs the "
                           f"sweep's column: largest difference {worst:.1e} (CSV rounding).")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "oneclass_metric.json").write_text(json.dumps(rows, indent=1))
    (args.out / "oneclass_metric.md").write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
