"""Paired, hierarchical bootstrap confidence intervals of method differences.

A claim such as "SLAM-AGS beats SimCLR on bag AUC at WR 1%" is a statement about a
*difference* of two methods measured on the same test bags. Its uncertainty has two sources:
which test bags were drawn (bag noise) and which pretraining / MIL seeds were run (seed noise).
The bootstrap here resamples both (a two-stage or hierarchical bootstrap, Davison & Hinkley,
"Bootstrap Methods and their Application", 1997, Sec. 3.8):

1. draw ``S`` seeds with replacement from the ``S`` seeds run (the same draw at every witness
   rate: a seed is one unit, e.g. one initialisation of every encoder);
2. inside every drawn seed, draw its test bags with replacement, positives and negatives
   separately (a stratified resample keeps both classes, which bag AUC needs);
3. recompute each method's metric on the resampled bags of the seed -- bag AUC from the bag
   scores (never averaged from per-seed AUCs), bag F1 from the decisions, Top-K recall as the
   mean over positive bags -- and take the difference ``method_a - method_b`` on the SAME
   bags (paired);
4. average over the drawn seeds.

The 95% interval is the 2.5 and 97.5 percentiles of ``n_boot`` such replicates. The point
estimate is the mean over seeds of the per-seed difference on all test bags, i.e. the mean of
what ``results.csv`` reports.

Expected width (see :mod:`slamags_core.power`): with between-seed variance ``tau2`` of the
difference and within-seed (bag) variance ``v / n`` for ``n`` test bags, the replicates have
variance about ``((S - 1) tau2 + (2S - 1) v / n) / S**2``, against a true variance of the mean
of ``(tau2 + v / n) / S``: conservative when bag noise dominates (the bag noise is counted
twice), anti-conservative by ``(S - 1) / S`` when seed noise dominates. With 3 seeds it is
about right when ``tau2 = 2 v / n``. Fewer than :data:`MIN_SEEDS` seeds give no verdict.

Bag-level resampling weights make every statistic a weighted sum, so all ``n_boot``
replicates are computed at once with matrix products (no Python loop over replicates).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from slamags_core.validation import check_float, check_int

BOOT_METRICS: tuple[str, ...] = ("bag_f1", "bag_auc", "topk_recall", "topk_precision",
                                 "instance_auroc")
POSITIVE_BAG_METRICS: tuple[str, ...] = ("topk_recall", "topk_precision", "instance_auroc")
MIN_SEEDS = 3            # fewer seeds: a hint, never a verdict
DEFAULT_MARGIN = 0.05    # differences inside +-margin count as "no difference that matters"


# ----------------------------------------------------------------------------------------------
# Per-bag arrays of one grid cell
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BagArrays:
    """The test bags of one ``(method, witness_rate, seed)`` cell, sorted by bag id."""

    bag: np.ndarray            # (n,) bag ids
    label: np.ndarray          # (n,) 0/1
    score: np.ndarray          # (n,) bag score, higher = more abnormal
    decision: np.ndarray       # (n,) 0/1, NaN if the scorer has no decision rule
    values: dict = field(default_factory=dict)  # metric -> (n,) per-bag value (NaN if none)

    @classmethod
    def from_rows(cls, rows: Sequence[dict]) -> "BagArrays":
        rows = sorted(rows, key=lambda r: r["bag"])
        col = {k: np.array([r[k] for r in rows], dtype=np.float64)
               for k in ("bag", "label", "score", "decision", *POSITIVE_BAG_METRICS)}
        bag = col["bag"].astype(np.int64)
        if len(np.unique(bag)) != len(bag):
            raise ValueError(f"duplicate bag ids in one grid cell: {rows[0]['method']!r} "
                             f"WR {rows[0]['witness_rate']} seed {rows[0]['seed']}")
        return cls(bag, col["label"].astype(np.int64), col["score"], col["decision"],
                   {k: col[k] for k in POSITIVE_BAG_METRICS})


def resolve_variant(preds: Sequence[dict], *, mil: str, embedding: str | None = None,
                    stain: str | None = None) -> tuple[str, str]:
    """``(embedding, stain)`` of a scorer's predictions; ``None`` picks the only value present.

    Raises:
        ValueError: no rows for this scorer, or several values of a field left as ``None``.
    """
    mine = [r for r in preds if r["mil"] == mil]
    if not mine:
        raise ValueError(f"no predictions of scorer {mil!r}; found {sorted({r['mil'] for r in preds})}")
    out = []
    for column, wanted in (("embedding", embedding), ("stain", stain)):
        found = sorted({r[column] for r in mine})
        if wanted is None and len(found) != 1:
            raise ValueError(f"scorer {mil!r} holds several values of {column!r}: {found}; choose one")
        out.append(wanted if wanted is not None else found[0])
    return out[0], out[1]


def select_cells(preds: Sequence[dict], *, mil: str, embedding: str | None = None,
                 stain: str | None = None) -> dict[tuple[str, float, int], BagArrays]:
    """Group per-bag prediction rows of one scorer into ``{(method, WR, seed): BagArrays}``.

    Args:
        preds: rows as returned by :func:`slamags_core.predictions.read_bag_predictions`.
        mil: the scorer (``"abmil"``, ``"prototype"``, ``"oneclass_knn"``, ...).
        embedding, stain: which variant; ``None`` requires a single value in ``preds``.

    Raises:
        ValueError: no rows for this scorer, or several embeddings / stains and none chosen.
    """
    embedding, stain = resolve_variant(preds, mil=mil, embedding=embedding, stain=stain)
    groups: dict = {}
    for r in preds:
        if r["mil"] == mil and r["embedding"] == embedding and r["stain"] == stain:
            groups.setdefault((r["method"], float(r["witness_rate"]), int(r["seed"])), []).append(r)
    if not groups:
        raise ValueError(f"no predictions of scorer {mil!r} with embedding {embedding!r} and "
                         f"stain {stain!r}")
    return {k: BagArrays.from_rows(v) for k, v in groups.items()}


# ----------------------------------------------------------------------------------------------
# Metrics under bag weights: (m, n_pos) and (m, n_neg) multiplicities -> (m,) values
# ----------------------------------------------------------------------------------------------

def _weighted_metric(d: BagArrays, metric: str, Wp: np.ndarray, Wn: np.ndarray) -> np.ndarray:
    pos, neg = d.label == 1, d.label == 0
    if metric == "bag_auc":
        # Mann-Whitney with multiplicities: each positive counts the weight of the negatives
        # below it (+ half the tied ones), read off the cumulative weights of sorted negatives.
        order = np.argsort(d.score[neg], kind="stable")
        sn, sp = d.score[neg][order], d.score[pos]
        cum = np.concatenate([np.zeros((len(Wn), 1)), np.cumsum(Wn[:, order], axis=1)], 1)
        below = 0.5 * (cum[:, np.searchsorted(sn, sp, "left")]
                       + cum[:, np.searchsorted(sn, sp, "right")])  # (m, n_pos)
        return (Wp * below).sum(1) / (Wp.sum(1) * Wn.sum(1))
    if metric == "bag_f1":
        if np.isnan(d.decision).any():
            raise ValueError("bag F1 needs a decision for every bag; this scorer has none")
        tp = Wp @ d.decision[pos]
        fp = Wn @ d.decision[neg]
        fn = Wp.sum(1) - tp
        den = 2 * tp + fp + fn
        return np.where(den > 0, 2 * tp / np.where(den > 0, den, 1), 0.0)  # sklearn: 0 if 0/0
    if metric in POSITIVE_BAG_METRICS:
        v = d.values[metric][pos]
        ok = np.isfinite(v)
        num, den = Wp @ np.where(ok, v, 0.0), Wp @ ok
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)
    raise ValueError(f"unknown metric {metric!r}; allowed: {BOOT_METRICS}")


def cell_metric(d: BagArrays, metric: str) -> float:
    """The metric of one grid cell on all its test bags (what ``results.csv`` reports)."""
    ones = np.ones((1, int((d.label == 1).sum()))), np.ones((1, int((d.label == 0).sum())))
    return float(_weighted_metric(d, metric, *ones)[0])


def _check_pair(a: BagArrays, b: BagArrays, where: str) -> None:
    if not (np.array_equal(a.bag, b.bag) and np.array_equal(a.label, b.label)):
        raise ValueError(f"{where}: the two methods were scored on different test bags; a paired "
                         f"difference needs the same bags (same witness rate and seed)")


def resample_counts(rng: np.random.Generator, m: int, n: int) -> np.ndarray:
    """``(m, n)`` multiplicities of ``m`` resamples with replacement of ``n`` items (rows sum to n)."""
    if n == 0:
        return np.zeros((m, 0))
    idx = rng.integers(n, size=(m, n)) + n * np.arange(m)[:, None]  # (m, n) flat cell ids
    return np.bincount(idx.ravel(), minlength=m * n).reshape(m, n).astype(np.float64)


def bag_resampler(a: BagArrays, b: BagArrays | None, metric: str):
    """``draw(rng, m) -> (m,)``: metric(a) - metric(b) on ``m`` stratified bag resamples."""
    n_pos, n_neg = int((a.label == 1).sum()), int((a.label == 0).sum())
    if n_pos == 0 or (n_neg == 0 and metric in ("bag_auc", "bag_f1")):
        raise ValueError(f"{metric} needs positive and negative test bags; got {n_pos} / {n_neg}")

    def draw(rng: np.random.Generator, m: int) -> np.ndarray:
        Wp, Wn = resample_counts(rng, m, n_pos), resample_counts(rng, m, n_neg)
        va = _weighted_metric(a, metric, Wp, Wn)
        return va - _weighted_metric(b, metric, Wp, Wn) if b is not None else va

    return draw


# ----------------------------------------------------------------------------------------------
# The bootstrap
# ----------------------------------------------------------------------------------------------

@dataclass
class BootstrapResult:
    """Point estimates and bootstrap replicates of a (paired) metric difference per WR.

    Attributes:
        metric, method_a, method_b: ``method_a - method_b`` (``method_b`` ``None``: the metric
            of ``method_a`` itself).
        witness_rates: ``(W,)`` in decreasing order.
        seeds: the seeds used (present for both methods at every witness rate).
        n_bags: ``(W,)`` test bags per seed (mean over seeds).
        per_seed: ``(S, W)`` difference per seed on all its test bags.
        estimate: ``(W,)`` mean of ``per_seed`` over seeds.
        replicates: ``(n_boot, W)`` bootstrap replicates of ``estimate``.
        level: confidence level of the intervals.
    """

    metric: str
    method_a: str
    method_b: str | None
    witness_rates: tuple[float, ...]
    seeds: tuple[int, ...]
    n_bags: np.ndarray
    per_seed: np.ndarray
    estimate: np.ndarray
    replicates: np.ndarray
    level: float = 0.95

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)

    def _interval(self, reps: np.ndarray) -> tuple[float, float]:
        a = (1 - self.level) / 2
        reps = reps[np.isfinite(reps)]
        if reps.size == 0:
            return math.nan, math.nan
        lo, hi = np.quantile(reps, [a, 1 - a])
        return float(lo), float(hi)

    def ci(self) -> np.ndarray:
        """``(W, 2)`` percentile intervals per witness rate."""
        return np.array([self._interval(self.replicates[:, w]) for w in range(len(self.witness_rates))])

    def pooled(self) -> tuple[float, float, float]:
        """``(estimate, low, high)`` of the difference averaged over the witness rates."""
        return (float(np.mean(self.estimate)), *self._interval(self.replicates.mean(1)))

    def trend(self) -> tuple[float, float, float] | None:
        """Change of the difference per tenfold DECREASE of the witness rate.

        The least-squares slope of the difference against ``-log10(WR)`` (positive: the gap
        grows as witnesses become rarer), with its interval from the same replicates.
        ``None`` with fewer than two witness rates.
        """
        if len(self.witness_rates) < 2:
            return None
        x = -np.log10(np.asarray(self.witness_rates))
        xc = (x - x.mean()) / ((x - x.mean()) ** 2).sum()  # slope = values @ xc
        return (float(self.estimate @ xc), *self._interval(self.replicates @ xc))

    def to_dict(self) -> dict:
        """Plain-JSON summary (no replicates)."""
        ci = self.ci()
        out = {"metric": self.metric, "method_a": self.method_a, "method_b": self.method_b,
               "seeds": list(self.seeds), "level": self.level, "n_boot": len(self.replicates),
               "by_witness_rate": [
                   {"witness_rate": wr, "estimate": float(e), "low": float(lo), "high": float(hi),
                    "n_bags_per_seed": float(n)}
                   for wr, e, (lo, hi), n in zip(self.witness_rates, self.estimate, ci, self.n_bags)],
               "pooled": dict(zip(("estimate", "low", "high"), self.pooled()))}
        tr = self.trend()
        out["trend_per_decade"] = dict(zip(("estimate", "low", "high"), tr)) if tr else None
        return out


def hierarchical_bootstrap(cells: dict[tuple[str, float, int], BagArrays], method_a: str,
                           method_b: str | None = None, metric: str = "bag_auc", *,
                           witness_rates: Sequence[float] | None = None, n_boot: int = 2000,
                           level: float = 0.95, seed: int = 0) -> BootstrapResult:
    """Paired two-stage bootstrap of ``metric(method_a) - metric(method_b)`` at each WR.

    Args:
        cells: ``{(method, WR, seed): BagArrays}`` from :func:`select_cells`.
        method_a, method_b: the difference ``a - b``; ``method_b=None`` bootstraps ``a`` alone.
        metric: one of :data:`BOOT_METRICS`.
        witness_rates: which WRs (default: every WR where both methods have predictions).
        n_boot: number of replicates, >= 100.
        level: confidence level in (0, 1).
        seed: seeds the resampling (same seed, same interval).

    Returns:
        A :class:`BootstrapResult` over the seeds present for both methods at every WR.

    Raises:
        ValueError: unknown metric, bad ``n_boot`` / ``level``, no common seed, unpaired bags.
    """
    if metric not in BOOT_METRICS:
        raise ValueError(f"unknown metric {metric!r}; allowed: {BOOT_METRICS}")
    n_boot = check_int(n_boot, "n_boot", ge=100)
    level = check_float(level, "level", gt=0, lt=1)
    methods = [method_a] + ([method_b] if method_b is not None else [])
    have = {m: {(wr, s) for (mm, wr, s) in cells if mm == m} for m in methods}
    for m in methods:
        if not have[m]:
            raise ValueError(f"no predictions of method {m!r}; found {sorted({k[0] for k in cells})}")
    common = set.intersection(*have.values())
    wrs = sorted({wr for wr, _ in common} if witness_rates is None
                 else {float(w) for w in witness_rates}, reverse=True)
    seeds = sorted(set.intersection(*[{s for w, s in common if w == wr} for wr in wrs]) if wrs
                   else set())
    if not seeds:
        raise ValueError(f"no seed has predictions of {methods} at every witness rate {wrs}")
    S, W = len(seeds), len(wrs)
    rng = np.random.default_rng(seed)
    slots = rng.integers(S, size=(n_boot, S))  # the seed drawn into each slot of each replicate
    per_seed, reps, n_bags = np.empty((S, W)), np.empty((n_boot, W)), np.empty(W)
    for w, wr in enumerate(wrs):
        vals = np.empty((n_boot, S))
        sizes = []
        for i, s in enumerate(seeds):
            a = cells[(method_a, wr, s)]
            b = cells[(method_b, wr, s)] if method_b is not None else None
            if b is not None:
                _check_pair(a, b, f"WR {wr:g} seed {s}")
            draw = bag_resampler(a, b, metric)
            per_seed[i, w] = cell_metric(a, metric) - (cell_metric(b, metric) if b is not None else 0)
            mask = slots == i
            vals[mask] = draw(rng, int(mask.sum()))
            sizes.append(len(a.bag))
        reps[:, w] = vals.mean(1)
        n_bags[w] = float(np.mean(sizes))
    return BootstrapResult(metric, method_a, method_b, tuple(wrs), tuple(seeds), n_bags, per_seed,
                           per_seed.mean(0), reps, level)


def run_level_bootstrap(rows: Sequence[dict], method_a: str, method_b: str, column: str, *,
                        n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> dict:
    """Paired bootstrap over seeds of a per-run number (e.g. the final effective rank).

    Runs are paired by ``(witness_rate, seed)``; a replicate draws seeds with replacement
    (all witness rates of a seed together) and averages ``a - b`` over the drawn pairs.

    Args:
        rows: dicts with ``method``, ``witness_rate``, ``seed`` and ``column``.

    Returns:
        ``{"estimate", "low", "high", "n_seeds", "n_pairs"}`` (all NaN when no pair exists;
        ``low``/``high`` NaN with pairs from a single seed: resampling one seed gives a
        zero-width interval that would look like certainty).
    """
    n_boot = check_int(n_boot, "n_boot", ge=1)
    level = check_float(level, "level", gt=0, lt=1)
    val = {(r["method"], float(r["witness_rate"]), int(r["seed"])): float(r[column])
           for r in rows if r.get(column) is not None and np.isfinite(float(r[column]))}
    pairs = sorted({(wr, s) for (m, wr, s) in val if m == method_a}
                   & {(wr, s) for (m, wr, s) in val if m == method_b})
    if not pairs:
        return {"estimate": math.nan, "low": math.nan, "high": math.nan, "n_seeds": 0, "n_pairs": 0}
    seeds = sorted({s for _, s in pairs})
    d = {s: [val[(method_a, wr, s2)] - val[(method_b, wr, s2)] for wr, s2 in pairs if s2 == s]
         for s in seeds}
    sums = np.array([sum(d[s]) for s in seeds])
    counts = np.array([len(d[s]) for s in seeds])
    if len(seeds) < 2:
        return {"estimate": float(sums.sum() / counts.sum()), "low": math.nan, "high": math.nan,
                "n_seeds": 1, "n_pairs": len(pairs)}
    draws = np.random.default_rng(seed).integers(len(seeds), size=(n_boot, len(seeds)))
    reps = sums[draws].sum(1) / counts[draws].sum(1)
    a = (1 - level) / 2
    lo, hi = np.quantile(reps, [a, 1 - a])
    return {"estimate": float(sums.sum() / counts.sum()), "low": float(lo), "high": float(hi),
            "n_seeds": len(seeds), "n_pairs": len(pairs)}


def classify(low: float, high: float, margin: float = DEFAULT_MARGIN) -> str:
    """What an interval of a difference ``a - b`` says.

    Returns:
        ``"higher"`` (interval above 0), ``"lower"`` (below 0), ``"equivalent"`` (contains 0
        but lies inside ``(-margin, margin)``), ``"inconclusive"`` (contains 0 and reaches
        beyond the margin) or ``"undefined"`` (NaN bounds).
    """
    margin = check_float(margin, "margin", ge=0)
    if not (np.isfinite(low) and np.isfinite(high)):
        return "undefined"
    if low > 0:
        return "higher"
    if high < 0:
        return "lower"
    if -margin < low and high < margin:
        return "equivalent"
    return "inconclusive"
