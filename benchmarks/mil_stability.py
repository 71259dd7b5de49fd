"""Is MIL trustworthy on fixed embeddings? Each aggregator over many MIL seeds, plus a ceiling.

For every pretraining method (encoder) and witness rate, the bags (bag seed ``--bag-seed``) and
the frozen-encoder embeddings are fixed; each aggregator is trained and evaluated with
``slamags_core.mil.fit_evaluate`` under ``--mil-seeds`` MIL seeds. Per (method, WR, aggregator)
it reports mean, min and max over the MIL seeds of the test bags' AUC and F1, Top-K recall and
the within-bag AUROC of the reported ranking (abnormality) and of raw attention, and how many
seeds reach bag AUC >= 0.90 and ranking AUROC >= 0.5. Beside them, the *instance-probe ceiling*
of the embeddings: a logistic regression trained on the training cells' TRUE instance labels
(labels MIL never sees), scored on the test cells (instance AUROC, mean within-bag AUROC over
positive test bags) and pooled per test bag as "mean of the top-k scores minus the bag median"
with k = the witnesses per positive bag (bag AUC). A *slide probe*: logistic regression on
each bag's mean non-witness embedding (witness-blind; train and test bag AUC). And a *witness
ablation* per fit (``slamags_core.mil.witness_ablation``): the test bags predicted again with every witness
deleted (bag AUC without witnesses, largest change of ``P(abnormal)``); a model that classifies
by bag-level content instead of the witnesses does not notice.

Writes ``OUT/mil_stability.json`` (settings, per-seed rows, summaries) and
``OUT/mil_stability.md`` (the table). Rows already in the JSON (same settings) are skipped, so
an interrupted run resumes. Example (the issue's "done when")::

    python benchmarks/mil_stability.py --preset laptop --methods oracle simclr slam_ags \
        --witness-rates 0.1 0.01 --mil abmil prototype --mil-seeds 10 --out outputs/mil_stability

``--set key=value`` overrides a ``MILConfig`` field for an ablation (e.g. ``--set restarts=1``).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from tqdm.auto import tqdm

from slamags_core.aggregators import AGGREGATORS
from slamags_core.config import METHODS, get_preset
from slamags_core.metrics import auroc
from slamags_core.mil import fit_evaluate, split_bags, witness_ablation
from slamags_core.pipeline import prepare_embeddings
from slamags_core.utils import atomic_write_text, get_device, to_jsonable

METRICS = ("bag_auc", "bag_f1", "topk_recall", "instance_auroc",
           "attention_topk_recall", "attention_instance_auroc")
ABLATION = ("bag_auc_without_witnesses", "max_prob_change")  # mil.witness_ablation on the test bags
TARGET_AUC, TARGET_RANK = 0.90, 0.5


def probe_ceiling(bagset, H: torch.Tensor, witness_rate: float) -> dict:
    """Instance-label logistic-regression probe (a CEILING: it uses the cells' true labels)."""
    cells = {s: np.concatenate([bagset.bag_cells(i) for i in bagset.split_bags(s)])
             for s in ("train", "test")}
    X = H.numpy().astype(np.float64)
    mu, sd = X[cells["train"]].mean(0), X[cells["train"]].std(0) + 1e-6
    clf = LogisticRegression(max_iter=3000, class_weight="balanced")
    clf.fit((X[cells["train"]] - mu) / sd, bagset.instance_labels[cells["train"]])
    score = clf.decision_function((X - mu) / sd)  # (N,) every cell
    lab = bagset.instance_labels
    ids = bagset.split_bags("test")
    y = bagset.bag_labels[ids]
    k = max(1, int(round(witness_rate * len(bagset.bag_cells(int(ids[0]))))))
    pooled, within = [], []
    for i, yi in zip(ids, y):
        s = score[bagset.bag_cells(i)]
        pooled.append(np.sort(s)[-k:].mean() - np.median(s))
        if yi == 1:
            within.append(auroc(lab[bagset.bag_cells(i)], s))
    return {"probe_instance_auroc": float(roc_auc_score(lab[cells["test"]], score[cells["test"]])),
            "probe_within_bag_auroc": float(np.mean(within)),
            "probe_pooled_bag_auc": float(roc_auc_score(y, pooled))}


def slide_probe(bagset, H: torch.Tensor) -> dict:
    """Witness-blind bag classifier: logistic regression on each bag's mean NON-witness embedding.

    It cannot see a single witness, so whatever it learns from the training bags is bag-level
    content (a slide's stain, the mix of ordinary cells). Its training AUC says how easily the
    training labels are separated without witnesses; its test AUC how much of that carries over.
    """
    X = H.numpy().astype(np.float64)
    lab = np.asarray(bagset.instance_labels)
    feats = {}
    for split in ("train", "test"):
        ids = bagset.split_bags(split)
        cells = [bagset.bag_cells(int(i)) for i in ids]
        feats[split] = (np.stack([X[c[lab[c] == 0]].mean(0) for c in cells]),
                        np.asarray(bagset.bag_labels)[ids])
    mu, sd = feats["train"][0].mean(0), feats["train"][0].std(0) + 1e-6
    clf = LogisticRegression(max_iter=5000).fit((feats["train"][0] - mu) / sd, feats["train"][1])
    return {f"slide_probe_{split}_auc": float(roc_auc_score(yb, clf.decision_function((F - mu) / sd)))
            for split, (F, yb) in feats.items()}


def summarise(rows: list[dict]) -> dict:
    """Mean/min/max per metric over MIL seeds and the target counts."""
    out = {"n_seeds": len(rows)}
    for m in METRICS + ABLATION:  # rows written before the ablation existed lack its keys
        v = np.array([r.get(m, np.nan) for r in rows], dtype=float)
        ok = v[np.isfinite(v)]
        stats = (ok.mean(), ok.min(), ok.max()) if ok.size else (np.nan,) * 3
        out[m] = {**dict(zip(("mean", "min", "max"), map(float, stats))), "n": int(ok.size)}
    out["n_bag_auc_ge_0.90"] = int(sum(r["bag_auc"] >= TARGET_AUC for r in rows))
    out["n_rank_auroc_ge_0.5"] = int(sum(r["instance_auroc"] >= TARGET_RANK for r in rows))
    out["rankings"] = sorted({r["ranking"] for r in rows})
    return out


def markdown(results: dict) -> str:
    def f(s: dict, n: int | None = None) -> str:
        if s.get("n", n) == 0:
            return "—"
        extra = f" ({s['n']} seeds)" if n is not None and s.get("n", n) != n else ""
        return f"{s['mean']:.3f} [{s['min']:.3f}, {s['max']:.3f}]{extra}"

    lines = [f"MIL stability: mean [min, max] over MIL seeds; preset `{results['preset']}`, "
             f"bag seed {results['bag_seed']}; reported ranking = abnormality (the candidate score, "
             f"a cell's vote or an attention logit, that orient() picks from training bag "
             f"labels). Probe = instance-label ceiling.", "",
             "| method | WR | MIL | bag AUC | #AUC>=0.9 | Top-K recall | ranking AUROC | #AUROC>=0.5 "
             "| attention Top-K recall | attention AUROC | bag AUC w/o witnesses | max dP w/o witnesses "
             "| probe inst. AUROC | probe pooled bag AUC | slide probe train / test AUC |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, s in results["summary"].items():
        method, wr, mil = key.split("|")
        p = results["probe"][f"{method}|{wr}"]
        n = s["n_seeds"]
        lines.append(f"| {method} | {float(wr):g} | {mil} | {f(s['bag_auc'])} | {s['n_bag_auc_ge_0.90']}/{n} "
                     f"| {f(s['topk_recall'])} | {f(s['instance_auroc'])} | {s['n_rank_auroc_ge_0.5']}/{n} "
                     f"| {f(s['attention_topk_recall'])} | {f(s['attention_instance_auroc'])} "
                     f"| {f(s['bag_auc_without_witnesses'], n)} | {f(s['max_prob_change'], n)} "
                     f"| {p['probe_instance_auroc']:.3f} | {p['probe_pooled_bag_auc']:.3f} "
                     f"| {p.get('slide_probe_train_auc', np.nan):.3f} / "
                     f"{p.get('slide_probe_test_auc', np.nan):.3f} |")
    return "\n".join(lines) + "\n"


def _parse_set(items: list[str]) -> dict:
    out = {}
    fields = {f.name: f.type for f in dataclasses.fields(get_preset("smoke").mil)}
    for item in items:
        key, _, value = item.partition("=")
        if key not in fields or not value:
            raise SystemExit(f"--set {item!r}: expected key=value with key in {sorted(fields)}")
        out[key] = json.loads(value.lower() if value.lower() in ("true", "false") else value)
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="laptop")
    ap.add_argument("--methods", nargs="+", default=["oracle", "simclr", "slam_ags"], choices=METHODS)
    ap.add_argument("--witness-rates", nargs="+", type=float, default=[0.1])
    ap.add_argument("--mil", nargs="+", default=["abmil", "prototype"], choices=AGGREGATORS)
    ap.add_argument("--mil-seeds", type=int, default=10)
    ap.add_argument("--bag-seed", type=int, default=0, help="bags and pretraining seed")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="MILConfig overrides")
    ap.add_argument("--out", default="outputs/mil_stability")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the CPU is shared)")
    ap.add_argument("--device", default="cpu", help="pretraining, embedding and MIL: cpu | cuda | auto")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*collapse.*")
    preset = get_preset(args.preset)
    device = get_device(args.device)
    cfg = dataclasses.replace(preset.mil, **_parse_set(args.set))
    out = Path(args.out)
    path = out / "mil_stability.json"
    settings = {"preset": preset.name, "bag_seed": args.bag_seed, "mil_config": to_jsonable(cfg)}
    results = {**settings, "rows": [], "probe": {}, "summary": {}}
    if path.exists():
        old = json.loads(path.read_text())
        if all(old.get(k) == v for k, v in settings.items()):
            results = old
    done = {(r["method"], r["witness_rate"], r["mil"], r["mil_seed"]) for r in results["rows"]}
    grid = [(m, wr) for wr in args.witness_rates for m in args.methods]
    bar = tqdm(total=len(grid) * len(args.mil) * args.mil_seeds, desc="mil_stability")
    for method, wr in grid:
        bagset, H = prepare_embeddings(preset, method, wr, args.bag_seed, device=device,
                                         progress=False)
        H = H.cpu()
        probe = results["probe"].setdefault(f"{method}|{wr}", {})
        if "probe_instance_auroc" not in probe:
            probe.update(probe_ceiling(bagset, H, wr))
        if "slide_probe_test_auc" not in probe:
            probe.update(slide_probe(bagset, H))
        for mil in args.mil:
            for seed in range(args.mil_seeds):
                bar.update(1)
                if (method, wr, mil, seed) in done:
                    continue
                t0 = time.perf_counter()
                r = fit_evaluate(mil, bagset, H, dataclasses.replace(cfg, seed=seed), device=device)
                ablation = witness_ablation(r.model, split_bags(bagset, H, "test")[1], r.y,
                                            r.instance_labels, device=device)
                results["rows"].append({"method": method, "witness_rate": wr, "mil": mil,
                                        "mil_seed": seed, "ranking": r.model.ranking_name,
                                        "epochs": len(r.history), "seconds": time.perf_counter() - t0,
                                        **{m: float(r.metrics[m]) for m in METRICS}, **ablation})
                atomic_write_text(json.dumps(results, indent=1), path)
            rows = [x for x in results["rows"]
                    if (x["method"], x["witness_rate"], x["mil"]) == (method, wr, mil)]
            results["summary"][f"{method}|{wr}|{mil}"] = summarise(rows)
    bar.close()
    atomic_write_text(json.dumps(results, indent=1), path)
    atomic_write_text(markdown(results), out / "mil_stability.md")
    print(markdown(results))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
