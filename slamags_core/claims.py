"""The paper's claims, and the verdicts that paired bootstrap intervals give them.

SLAM-AGS (Acerbis et al., ISBI 2026) claims that its pretraining beats self-supervised and
weakly supervised pretraining on bag F1 and Top-K witness retrieval, most at the lowest
witness rates, and that adaptive gradient surgery stabilises training and prevents collapse.
:data:`CLAIMS` writes these down; :func:`analyse` measures ``slam_ags - other`` for every
other method present on every metric with :func:`slamags_core.stats.hierarchical_bootstrap`
and turns the intervals into verdict sentences -- the report never hand-writes a verdict.

Vocabulary (from :func:`slamags_core.stats.classify` on a 95% interval of ``slam_ags - b``):
*reproduced* (interval above 0), *not reproduced: the opposite* (below 0), *not reproduced:
no difference beyond +-margin* (inside the equivalence margin), *inconclusive* (contains 0 and
reaches beyond the margin). Fewer than :data:`slamags_core.stats.MIN_SEEDS` seeds: no verdict.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from slamags_core.stats import (DEFAULT_MARGIN, MIN_SEEDS, classify, hierarchical_bootstrap,
                                resolve_variant, run_level_bootstrap, select_cells)

PAPER_METHOD = "slam_ags"
CLAIM_METRICS: tuple[str, ...] = ("bag_f1", "bag_auc", "topk_recall")
PRIMARY_METRICS: tuple[str, ...] = ("bag_f1", "topk_recall")  # the paper's F1 and "Top 400"
METRIC_NAMES = {"bag_f1": "bag F1", "bag_auc": "bag AUC", "topk_recall": "Top-K recall",
                "topk_precision": "Top-K precision", "instance_auroc": "within-bag AUROC"}
CONTEXT_METHODS = {"random": "floor: an untrained encoder",
                   "oracle": "ceiling: trained with instance labels no other method has",
                   "deep_svdd": "competitor: one-class Deep SVDD on slide-negative patches",
                   "deep_svdd_distance": "competitor: Deep SVDD's own distance to its centre, "
                                         "MIL-free"}
COLLAPSE_FLAGS: tuple[str, ...] = ("h_collapsed", "z_collapsed")


@dataclass(frozen=True)
class Claim:
    """One claim of the paper, as a comparison of ``slam_ags`` with other methods.

    Attributes:
        id: short label (``"C1"`` ...).
        text: the claim in words.
        others: the methods ``slam_ags`` is compared with.
        kind: ``"greater"`` (slam_ags - other > 0), ``"trend"`` (the gap grows as the witness
            rate falls) or ``"collapse"`` (AGS runs do not collapse where the others do).
        note: caveat on what the paper states.
    """

    id: str
    text: str
    others: tuple[str, ...]
    kind: str
    note: str = ""


CLAIMS: tuple[Claim, ...] = (
    Claim("C1", "SLAM-AGS beats self-supervised pretraining (SimCLR)", ("simclr",), "greater"),
    Claim("C2", "SLAM-AGS beats weakly supervised pretraining (a patch classifier on slide labels)",
          ("weak",), "greater"),
    Claim("C3", "SLAM-AGS beats supervised contrastive pretraining on slide labels (SupCon)",
          ("supcon",), "greater", "the paper may include a weakly supervised contrastive baseline; "
          "we could not confirm it"),
    Claim("C4", "The gains over the baselines are largest at the lowest witness rates",
          ("simclr", "weak"), "trend"),
    Claim("C5", "Adaptive gradient surgery beats the plain sum of the two losses (WeakSupCon's "
          "objective) and PCGrad", ("slam_sum", "slam_pcgrad"), "greater"),
    Claim("C6", "Adaptive gradient surgery prevents model collapse", ("slam_sum", "slam_pcgrad"),
          "collapse"),
)

_SAYS = {"higher": "reproduced", "lower": "not reproduced: the opposite",
         "equivalent": "not reproduced: no difference beyond ±{m:g}",
         "inconclusive": "inconclusive (the interval includes 0)",
         "undefined": "not measurable here"}
_SHORT = {"higher": "reproduced", "lower": "opposite", "equivalent": "no difference",
          "inconclusive": "inconclusive", "undefined": "n/a"}
_NEUTRAL = {"higher": "slam_ags higher", "lower": "slam_ags lower",
            "equivalent": "no difference beyond ±{m:g}", "inconclusive": "inconclusive",
            "undefined": "not measurable"}


def verdict(cls: str, n_seeds: int, margin: float = DEFAULT_MARGIN, neutral: bool = False) -> str:
    """Words for an interval class (:func:`slamags_core.stats.classify`), or "no verdict"."""
    if n_seeds < MIN_SEEDS:
        return f"no verdict ({n_seeds} seed{'s' if n_seeds != 1 else ''}: a hint, not a verdict)"
    return (_NEUTRAL if neutral else _SAYS)[cls].format(m=margin)


def _pct(wr: float) -> str:
    return f"{100 * wr:g}%"


def _fmt_ci(est: float, lo: float, hi: float) -> str:
    if not np.isfinite(est):
        return "n/a"
    if not (np.isfinite(lo) and np.isfinite(hi)):  # a single seed: no interval
        return f"{est:+.3f} [interval n/a: one seed]"
    return f"{est:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def _compare(cells, other: str, metric: str, *, method: str, n_boot: int, level: float, seed: int,
             margin: float) -> dict | None:
    try:
        res = hierarchical_bootstrap(cells, method, other, metric, n_boot=n_boot, level=level,
                                     seed=seed)
    except ValueError as err:
        if "decision" in str(err):  # a scorer without a decision rule has no bag F1
            return None
        raise
    if not np.isfinite(res.estimate).any():  # e.g. Top-K of a scorer that ranks no cells
        return None
    out = res.to_dict()
    for r in out["by_witness_rate"]:
        r["class"] = classify(r["low"], r["high"], margin)
    out["pooled"]["class"] = classify(out["pooled"]["low"], out["pooled"]["high"], margin)
    if out["trend_per_decade"] is not None:
        t = out["trend_per_decade"]
        t["class"] = classify(t["low"], t["high"], 0.0)  # no equivalence margin for a slope
    out["other"], out["n_seeds"] = other, res.n_seeds
    return out


def _greater_sentence(claim: Claim, comps: dict, n_seeds: int, margin: float) -> dict:
    lines, classes = [], []
    for other in claim.others:
        for metric in CLAIM_METRICS:
            c = comps.get((other, metric))
            if c is None:
                continue
            p = c["pooled"]
            if metric in PRIMARY_METRICS:
                classes.append(p["class"])
            by_wr = ", ".join(f"{_pct(r['witness_rate'])} {_SHORT[r['class']]}"
                              for r in c["by_witness_rate"]) if n_seeds >= MIN_SEEDS else ""
            says = f": {verdict(p['class'], n_seeds, margin)} —" if n_seeds >= MIN_SEEDS else ":"
            lines.append(f"vs {other}, {METRIC_NAMES[metric]}{says} mean over WRs "
                         f"{_fmt_ci(p['estimate'], p['low'], p['high'])}"
                         + (f"; by WR: {by_wr}" if by_wr else ""))
    missing = [o for o in claim.others if not any((o, m) in comps for m in CLAIM_METRICS)]
    if missing and not lines:
        return {"verdict": f"not measured (no predictions of {', '.join(missing)})", "details": []}
    if n_seeds < MIN_SEEDS:
        overall = verdict("undefined", n_seeds)
    elif classes and all(c == "higher" for c in classes):
        overall = "reproduced"
    elif any(c == "lower" for c in classes):
        overall = "not reproduced: slam_ags is lower on at least one of bag F1 / Top-K recall"
    elif classes and all(c == "equivalent" for c in classes):
        overall = f"not reproduced: no difference beyond ±{margin:g}"
    elif any(c == "higher" for c in classes):
        overall = "partly reproduced (higher on some of bag F1 / Top-K recall, not all)"
    else:
        overall = "inconclusive (the intervals include 0)"
    if missing:
        overall += f"; not measured against {', '.join(missing)}"
    return {"verdict": overall, "details": lines}


def _trend_sentence(claim: Claim, comps: dict, n_seeds: int) -> dict:
    lines, classes = [], []
    for other in claim.others:
        for metric in PRIMARY_METRICS:
            c = comps.get((other, metric))
            if c is None or c["trend_per_decade"] is None:
                continue
            t = c["trend_per_decade"]
            classes.append(t["class"])
            says = {"higher": "the gap grows as WR falls", "lower": "the gap shrinks as WR falls",
                    "equivalent": "no trend", "inconclusive": "inconclusive (the interval includes 0)",
                    "undefined": "not measurable"}[t["class"]]
            lines.append(f"slam_ags − {other}, {METRIC_NAMES[metric]}, change per tenfold lower WR: "
                         f"{_fmt_ci(t['estimate'], t['low'], t['high'])}"
                         + (f" — {says}" if n_seeds >= MIN_SEEDS else ""))
    if not lines:
        return {"verdict": "not measured (needs >= 2 witness rates and the baselines)", "details": []}
    if n_seeds < MIN_SEEDS:
        overall = verdict("undefined", n_seeds)
    elif all(c == "higher" for c in classes):
        overall = "reproduced"
    elif any(c == "lower" for c in classes):
        overall = "not reproduced: the gap shrinks as the witness rate falls for at least one pair"
    elif any(c == "higher" for c in classes):
        overall = "partly reproduced"
    else:
        overall = "inconclusive (the intervals include 0)"
    return {"verdict": overall, "details": lines}


def collapse_columns(epochs: Sequence[dict]) -> dict:
    """Collapse diagnostics of a finished pretraining run from its per-epoch log.

    Args:
        epochs: ``PretrainResult.summaries`` (one per checkpoint, step 0 = initialisation;
            the last one is used).

    Returns:
        ``{"h_std_ratio", "h_erank", "z_std_ratio", "z_erank", "h_collapsed", "z_collapsed",
        "collapsed", "conflict_frac"}`` (flags 0/1 at the end of training, ``collapsed`` = ``h``
        or ``z``; ``conflict_frac`` NaN for methods without two tasks).
    """
    last = dict(epochs[-1]) if epochs else {}
    out = {k: float(last.get(k, np.nan)) for k in ("h_std_ratio", "h_erank", "z_std_ratio", "z_erank")}
    for k in COLLAPSE_FLAGS:
        out[k] = int(bool(last.get(k, False)))
    out["collapsed"] = max(out[k] for k in COLLAPSE_FLAGS)
    out["conflict_frac"] = float(last.get("conflict_frac", np.nan))
    return out


def _collapse_sentence(claim: Claim, runs: Sequence[dict] | None, *, n_boot: int, level: float,
                       seed: int) -> dict:
    # one row per pretraining run (results.csv repeats a run once per MIL model)
    runs = list({(r["method"], float(r["witness_rate"]), int(r["seed"])): r
                 for r in (runs or []) if np.isfinite(float(r.get("collapsed", np.nan)))}.values())
    count = {m: (sum(int(r["collapsed"]) for r in runs if r["method"] == m),
                 sum(1 for r in runs if r["method"] == m)) for m in (PAPER_METHOD, *claim.others)}
    if count[PAPER_METHOD][1] == 0:
        return {"verdict": "not measured (no collapse diagnostics of slam_ags runs)", "details": []}
    if all(count[o][1] == 0 for o in claim.others):
        return {"verdict": f"not measured (no {' or '.join(claim.others)} runs to compare with)",
                "details": []}
    lines = ["collapsed runs (h or z flagged at the end): "
             + ", ".join(f"{m} {k}/{n}" for m, (k, n) in count.items())]
    for flag in COLLAPSE_FLAGS:
        if any(flag in r for r in runs):
            lines.append(f"{flag[0]} flagged: " + ", ".join(
                f"{m} {sum(int(r.get(flag, 0)) for r in runs if r['method'] == m)}/{n}"
                for m, (_, n) in count.items()))
    for other in claim.others:
        for col in ("h_erank", "z_erank"):
            ci = run_level_bootstrap(runs, PAPER_METHOD, other, col, n_boot=n_boot, level=level,
                                     seed=seed)
            if ci["n_pairs"]:
                lines.append(f"slam_ags − {other}, final effective rank of {col[0]}: "
                             f"{_fmt_ci(ci['estimate'], ci['low'], ci['high'])} over {ci['n_pairs']} "
                             f"paired runs")
    n_seeds = len({int(r["seed"]) for r in runs})
    ags = count[PAPER_METHOD][0]
    others_collapsed = sum(count[o][0] for o in claim.others)
    if n_seeds < MIN_SEEDS:
        overall = verdict("undefined", n_seeds)
    elif ags > 0:
        overall = f"not reproduced: slam_ags collapsed in {ags} of {count[PAPER_METHOD][1]} runs"
    elif others_collapsed == 0:
        overall = ("not testable here: no slam_sum or slam_pcgrad run collapsed, so there was no "
                   "collapse to prevent")
    else:
        overall = "reproduced: slam_ags never collapsed where the plain sum or PCGrad did"
    return {"verdict": overall, "details": lines}


def analyse(preds: Sequence[dict], *, mil: str, embedding: str | None = None,
            stain: str | None = None, runs: Sequence[dict] | None = None,
            metrics: Sequence[str] = CLAIM_METRICS, method: str = PAPER_METHOD, n_boot: int = 2000,
            level: float = 0.95, seed: int = 0, margin: float = DEFAULT_MARGIN) -> dict:
    """Every paired difference ``method - other`` and a verdict per claim, for one scorer.

    Args:
        preds: per-bag predictions (:func:`slamags_core.predictions.read_bag_predictions`).
        mil: the scorer whose predictions are compared (a MIL model or a diagnostic).
        embedding, stain: the variant (``None``: the only one present).
        runs: per-run rows with ``method, witness_rate, seed`` and :func:`collapse_columns`
            (for claim C6); ``None`` leaves C6 unmeasured.
        metrics: metrics to compare.
        method: the method under test (the paper's ``slam_ags``).
        n_boot, level, seed: bootstrap replicates, confidence level, resampling seed.
        margin: equivalence margin of :func:`slamags_core.stats.classify`.

    Returns:
        ``{"mil", "embedding", "stain", "n_seeds", "seeds", "comparisons": [...],
        "claims": [{"id", "text", "note", "verdict", "details"}, ...], "context": [...]}``
        (``context``: sentences on the floor, ceiling and competitor rows, no claim); each comparison is
        :meth:`slamags_core.stats.BootstrapResult.to_dict` plus interval classes and
        ``"other"``, ``"role"`` (``"claim"`` or the context of a floor / ceiling / competitor).

    Raises:
        ValueError: no predictions of ``method`` for this scorer.
    """
    embedding, stain = resolve_variant(preds, mil=mil, embedding=embedding, stain=stain)
    cells = select_cells(preds, mil=mil, embedding=embedding, stain=stain)
    present = sorted({k[0] for k in cells})
    if method not in present:
        raise ValueError(f"no predictions of {method!r} for scorer {mil!r}; found {present}")
    if runs is not None:  # the pretraining runs of this variant's data
        runs = [r for r in runs if r.get("stain", stain) == stain]
    claimed = {o for c in CLAIMS for o in c.others}
    comps: dict = {}
    for other in present:
        if other == method:
            continue
        for metric in metrics:
            c = _compare(cells, other, metric, method=method, n_boot=n_boot, level=level,
                         seed=seed, margin=margin)
            if c is not None:
                c["role"] = "claim" if other in claimed else CONTEXT_METHODS.get(other, "other")
                comps[(other, metric)] = c
    n_seeds = max((c["n_seeds"] for c in comps.values()), default=0)
    claims = []
    for claim in CLAIMS:
        if claim.kind == "greater":
            v = _greater_sentence(claim, comps, n_seeds, margin)
        elif claim.kind == "trend":
            v = _trend_sentence(claim, comps, n_seeds)
        else:
            v = _collapse_sentence(claim, runs, n_boot=n_boot, level=level, seed=seed)
        claims.append({"id": claim.id, "text": claim.text, "note": claim.note, **v})
    context = []
    for other, role in CONTEXT_METHODS.items():
        for metric in PRIMARY_METRICS:
            c = comps.get((other, metric))
            if c is not None:
                p = c["pooled"]
                says = (f" {verdict(p['class'], n_seeds, margin, neutral=True)} —"
                        if n_seeds >= MIN_SEEDS else "")
                context.append(f"vs {other} ({role}), {METRIC_NAMES[metric]}:{says} mean over "
                               f"WRs {_fmt_ci(p['estimate'], p['low'], p['high'])}")
    return {"mil": mil, "embedding": embedding, "stain": stain, "n_seeds": n_seeds, "context": context,
            "seeds": sorted({k[2] for k in cells}), "comparisons": list(comps.values()),
            "claims": claims}
