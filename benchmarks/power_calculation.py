"""The benchmark's power calculation (docs/power.md), in three modes.

``simulate`` checks the method on binormal bag scores with known AUC (no encoder, seconds):
for 3 and 5 seeds and three between-seed spreads it measures how often the report's 95%
hierarchical-bootstrap interval of a paired bag-AUC difference covers the true difference
(0: both methods have the same distribution) and compares its mean half-width with
:func:`slamags_core.power.half_width`::

    python benchmarks/power_calculation.py simulate --trials 300 --out outputs/power_sim

``pilot`` reads the per-bag predictions of a pilot sweep of two CALIBRATION methods (the
ceiling ``oracle`` and the baseline ``simclr``; a SLAM method is refused) and prints, per
witness rate, the variance components and the test bags per seed needed for a half-width
<= 0.05 over 3..6 seeds::

    python benchmarks/power_calculation.py pilot outputs/pilot --a oracle --b simclr --mil abmil

``pairs`` does the same for several calibration pairs against one baseline and prints the
pooled between-seed variance and the seeds needed at the pilot's own bag count (the powered
run's table in docs/power.md)::

    python benchmarks/power_calculation.py pairs docs/results/laptop-powered-h200 --out outputs/power

All write ``power.json`` and ``power.md`` to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from statistics import NormalDist

import numpy as np

from slamags_core import power as PW
from slamags_core import stats as ST
from slamags_core.predictions import read_bag_predictions


def simulate(trials: int, n_bags: int, mu: float, n_boot: int) -> list[dict]:
    slope = NormalDist().pdf(mu / 2**0.5) / 2**0.5  # dAUC / dmu of a binormal AUC
    out = []
    for n_seeds in (3, 5):
        for seed_sd in (0.0, 0.15, 0.3):
            t0, hits, widths = time.time(), 0, []
            pilot = PW.simulate_predictions(n_seeds=40, n_pos=n_bags // 2, n_neg=n_bags // 2,
                                            mu={"a": mu, "b": mu}, seed_sd=seed_sd, seed=12345)
            comp = PW.estimate_components(pilot, "a", "b", mil="sim", witness_rate=0.1, n_boot=500)
            for t in range(trials):
                rows = PW.simulate_predictions(n_seeds=n_seeds, n_pos=n_bags // 2,
                                               n_neg=n_bags // 2, mu={"a": mu, "b": mu},
                                               seed_sd=seed_sd, seed=t)
                lo, hi = ST.hierarchical_bootstrap(ST.select_cells(rows, mil="sim"), "a", "b",
                                                   n_boot=n_boot, seed=t).ci()[0]
                hits += lo <= 0 <= hi
                widths.append((hi - lo) / 2)
            within = comp.v / n_bags
            out.append({"n_seeds": n_seeds, "seed_sd": seed_sd, "n_bags": n_bags,
                        "auc": NormalDist().cdf(mu / 2**0.5),
                        "tau2_model": 2 * (slope * seed_sd) ** 2, "tau2_measured": comp.tau2,
                        "within_var": within, "coverage": hits / trials,
                        "half_width_measured": float(np.mean(widths)),
                        "half_width_predicted": PW.half_width(comp.v, comp.tau2, n_bags, n_seeds),
                        "trials": trials, "seconds": round(time.time() - t0, 1)})
            print(json.dumps(out[-1]), flush=True)
    return out


def simulate_markdown(res: list[dict]) -> str:
    lines = ["| seeds | seed sd | tau2 / (v/n) | coverage of 0 | half-width measured | predicted |",
             "|---|---|---|---|---|---|"]
    for r in res:
        ratio = r["tau2_measured"] / r["within_var"]
        lines.append(f"| {r['n_seeds']} | {r['seed_sd']:g} | {ratio:.2f} | {r['coverage']:.3f} | "
                     f"{r['half_width_measured']:.4f} | {r['half_width_predicted']:.4f} |")
    return "\n".join(lines)


def pilot(path: Path, a: str, b: str, mil: str, target: float, tau2) -> dict:
    preds = read_bag_predictions(path)
    return PW.power_table(preds, a, b, mil=mil, target=target, min_seeds=3, max_seeds=6, tau2=tau2)


def pilot_markdown(table: dict) -> str:
    seeds = [r["n_seeds"] for r in table["required"]]
    lines = ["| WR | pilot diff | v | tau2 (this WR, unfloored) | tau2 used | pilot bags/seed | "
             "seeds needed at the pilot's bags/seed | "
             + " | ".join(f"bags/seed for {s} seeds" for s in seeds) + " |",
             "|---" * (7 + len(seeds)) + "|"]
    for r in table["by_witness_rate"]:
        need = " | ".join(str(x["n_bags"]) if x["n_bags"] else "impossible" for x in r["required"])
        lines.append(f"| {100 * r['witness_rate']:g}% | {r['difference']:+.3f} | {r['v']:.3f} | "
                     f"{r['tau2_raw']:.5f} | {r['tau2_used']:.5f} | {r['n_bags']:g} | "
                     f"{r['seeds_at_pilot_bags'] or '> 10000'} | {need} |")
    lines.append("| every WR | | | | | | | " + " | ".join(
        str(x["n_bags"]) if x["n_bags"] else "impossible" for x in table["required"]) + " |")
    return "\n".join(lines)


def pairs(path: Path, methods: list[str], b: str, mils: list[str], target: float) -> dict:
    """tau2 and the seeds needed at the pilot's bag count for every ``method - b`` pair."""
    preds = read_bag_predictions(path)
    out = {}
    for a in methods:
        for mil in mils:
            t = PW.power_table(preds, a, b, mil=mil, target=target, min_seeds=3, max_seeds=6)
            out[f"{a}|{mil}"] = t
    return out


def pairs_markdown(res: dict, b: str) -> str:
    lines = [f"| pair (a − {b}) | MIL | v by WR | τ² pooled | seeds for ±0.05 at the pilot's "
             "bags/seed, by WR |", "|---|---|---|---|---|"]
    for key, t in res.items():
        a, mil = key.split("|")
        w = t["by_witness_rate"]
        lines.append(f"| {a} | {mil} | {' / '.join(format(r['v'], '.3f') for r in w)} | "
                     f"{t['tau2_pooled']:.4f} | "
                     f"{' / '.join(str(r['seeds_at_pilot_bags'] or '> 10000') for r in w)} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("simulate")
    s.add_argument("--trials", type=int, default=300)
    s.add_argument("--n-bags", type=int, default=60, help="test bags per seed (half positive)")
    s.add_argument("--mu", type=float, default=1.0, help="binormal separation (AUC Phi(mu/sqrt2))")
    s.add_argument("--n-boot", type=int, default=500)
    s.add_argument("--out", type=Path, required=True)
    q = sub.add_parser("pilot")
    q.add_argument("predictions", type=Path, help="sweep folder or its predictions/")
    q.add_argument("--a", default="oracle")
    q.add_argument("--b", default="simclr")
    q.add_argument("--mil", default="abmil")
    q.add_argument("--target", type=float, default=0.05)
    q.add_argument("--tau2", default="pooled",
                   help="'pooled' (over witness rates, default), 'per_wr' or a number")
    q.add_argument("--out", type=Path, required=True)
    r = sub.add_parser("pairs", help="tau2 and seeds needed for several calibration pairs")
    r.add_argument("predictions", type=Path, help="sweep folder or its predictions/")
    r.add_argument("--a", nargs="+", default=["oracle", "weak", "supcon", "random", "deep_svdd"])
    r.add_argument("--b", default="simclr")
    r.add_argument("--mil", nargs="+", default=["prototype", "abmil"])
    r.add_argument("--target", type=float, default=0.05)
    r.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.cmd == "simulate":
        res = simulate(args.trials, args.n_bags, args.mu, args.n_boot)
        md = simulate_markdown(res)
    elif args.cmd == "pairs":
        res = pairs(args.predictions, args.a, args.b, args.mil, args.target)
        md = pairs_markdown(res, args.b)
    else:
        tau2 = args.tau2 if args.tau2 in ("pooled", "per_wr") else float(args.tau2)
        res = pilot(args.predictions, args.a, args.b, args.mil, args.target, tau2)
        md = pilot_markdown(res)
    (args.out / "power.json").write_text(json.dumps(res, indent=1, default=float))
    (args.out / "power.md").write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
