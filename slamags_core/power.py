"""The power calculation: how many test bags and seeds a paired bag-AUC difference needs.

The report (:mod:`slamags_core.stats`) gives every difference ``a - b`` between two methods a
95% interval from a two-stage bootstrap over seeds and test bags. Its half-width depends on
two variance components of the per-seed difference ``d_s`` (Searle, Casella & McCulloch,
"Variance Components", 1992, one-way random effects):

* ``v / n`` -- the *within-seed* (bag) variance with ``n`` test bags per seed: how much
  ``d_s`` moves when other test bags are drawn. For an AUC difference it is the DeLong
  variance (DeLong, DeLong & Clarke-Pearson, Biometrics 1988), ``~ 1 / n`` at a fixed share of
  positive bags, so ``v`` (a per-bag unit variance) does not depend on ``n``;
* ``tau2`` -- the *between-seed* variance: how much the difference itself moves with the
  pretraining / MIL seed. More test bags do not shrink it; only more seeds do.

The bootstrap's replicates have variance about ``((S - 1) tau2 + (2S - 1) v / n) / S**2`` for
``S`` seeds (the module docstring of :mod:`slamags_core.stats` derives it), so the expected
half-width is ``z * sqrt(that)`` with ``z = 1.96`` at 95%. :func:`required_bags` inverts it.

The components are measured on pilot per-bag predictions of two methods that are NOT the
ones under test (the project rule: calibrate on baselines and ceilings, e.g. ``oracle`` and
``simclr``, never on a SLAM score); :func:`estimate_components` refuses a SLAM method. Test
this module on :func:`simulate_predictions`, binormal scores with a known AUC
``Phi(mu / sqrt(2))`` (Hanley & McNeil, Radiology 1982).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Sequence

import numpy as np

from slamags_core.stats import BagArrays, bag_resampler, cell_metric, select_cells
from slamags_core.validation import check_float, check_int

REFUSED_PREFIXES: tuple[str, ...] = ("slam", "sim_only")  # never calibrate on these


def delong(labels, score_a, score_b=None) -> dict:
    """AUCs and their DeLong (co)variances (DeLong et al., Biometrics 1988).

    For positives ``X_i`` (m) and negatives ``Y_j`` (n), ``psi = 1[X > Y] + 0.5 1[X = Y]``;
    the structural components ``V10_i = mean_j psi(X_i, Y_j)`` and ``V01_j = mean_i psi``
    give ``Var(AUC) = s10 / m + s01 / n`` with ``s10``, ``s01`` their sample (co)variances.

    Returns:
        ``{"auc_a", "var_a"}`` and, with ``score_b``, ``"auc_b", "var_b", "cov", "var_diff"``
        (the variance of ``AUC_a - AUC_b`` on the same bags).
    """
    y = np.asarray(labels).astype(int)
    scores = [np.asarray(score_a, float)] + ([np.asarray(score_b, float)] if score_b is not None
                                              else [])
    m, n = int((y == 1).sum()), int((y == 0).sum())
    if m < 2 or n < 2:
        raise ValueError(f"DeLong needs >= 2 positive and >= 2 negative bags, got {m} / {n}")
    v10, v01 = [], []
    for s in scores:
        x, z = s[y == 1], s[y == 0]
        psi = (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])  # (m, n)
        v10.append(psi.mean(1))
        v01.append(psi.mean(0))
    S10, S01 = np.atleast_2d(np.cov(np.array(v10))), np.atleast_2d(np.cov(np.array(v01)))
    cov = S10 / m + S01 / n
    out = {"auc_a": float(v10[0].mean()), "var_a": float(cov[0, 0])}
    if score_b is not None:
        out.update(auc_b=float(v10[1].mean()), var_b=float(cov[1, 1]), cov=float(cov[0, 1]),
                   var_diff=float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]))
    return out


@dataclass(frozen=True)
class VarianceComponents:
    """Variance components of a paired per-seed difference at one witness rate.

    Attributes:
        v: within-seed variance times test bags per seed (``Var_within(n) = v / n``).
        tau2: between-seed variance, floored at 0 (``nan`` when unknown, e.g. one pilot seed).
        tau2_raw: the method-of-moments value before flooring (can be negative; average these
            over witness rates to pool, then floor).
        difference: pilot estimate of the difference (mean over pilot seeds).
        n_bags: pilot test bags per seed; n_seeds: pilot seeds.
    """

    metric: str
    method_a: str
    method_b: str
    witness_rate: float
    v: float
    tau2: float
    tau2_raw: float
    difference: float
    n_bags: float
    n_seeds: int


def _check_calibration_method(name: str) -> None:
    if name.startswith(REFUSED_PREFIXES):
        raise ValueError(
            f"method {name!r} may not calibrate the benchmark: bag counts are chosen on baselines "
            f"and ceilings (e.g. 'oracle', 'simclr'), never on a SLAM score")


def within_variance(a: BagArrays, b: BagArrays, metric: str = "bag_auc", *, n_boot: int = 2000,
                    seed: int = 0) -> float:
    """Variance of ``metric(a) - metric(b)`` over stratified bag resamples of one seed.

    The same resampling as the report's bootstrap (one seed, bags only); for bag AUC it agrees
    with :func:`delong`'s ``var_diff``.
    """
    draws = bag_resampler(a, b, metric)(np.random.default_rng(seed), n_boot)
    return float(np.var(draws[np.isfinite(draws)], ddof=1))


def estimate_components(preds: Sequence[dict], method_a: str, method_b: str, *, mil: str,
                        witness_rate: float, metric: str = "bag_auc", embedding: str | None = None,
                        stain: str | None = None, n_boot: int = 2000,
                        seed: int = 0) -> VarianceComponents:
    """Measure ``v`` and ``tau2`` on pilot per-bag predictions of two calibration methods.

    ``v`` is the mean over pilot seeds of ``within_variance * n_bags``; ``tau2`` is the sample
    variance of the per-seed differences minus the mean within-seed variance (method of
    moments, floored at 0), ``nan`` with a single pilot seed.

    Raises:
        ValueError: a SLAM method (see the module docstring), or no pilot seed with both.
    """
    for m in (method_a, method_b):
        _check_calibration_method(m)
    cells = select_cells(preds, mil=mil, embedding=embedding, stain=stain)
    wr = float(witness_rate)
    seeds = sorted(s for (m, w, s) in cells if m == method_a and w == wr
                   and (method_b, w, s) in cells)
    if not seeds:
        raise ValueError(f"no pilot seed has predictions of both {method_a!r} and {method_b!r} "
                         f"at WR {wr:g}")
    within, diffs, sizes = [], [], []
    for s in seeds:
        a, b = cells[(method_a, wr, s)], cells[(method_b, wr, s)]
        within.append(within_variance(a, b, metric, n_boot=n_boot, seed=seed + s))
        diffs.append(cell_metric(a, metric) - cell_metric(b, metric))
        sizes.append(len(a.bag))
    within, sizes = np.array(within), np.array(sizes, float)
    raw = float(np.var(diffs, ddof=1) - within.mean()) if len(seeds) > 1 else math.nan
    return VarianceComponents(metric, method_a, method_b, wr, float(np.mean(within * sizes)),
                              max(0.0, raw) if len(seeds) > 1 else math.nan, raw,
                              float(np.mean(diffs)), float(sizes.mean()), len(seeds))


def _z(level: float) -> float:
    return NormalDist().inv_cdf(0.5 + check_float(level, "level", gt=0, lt=1) / 2)


def _tau2(tau2) -> float:
    """The between-seed variance to plan with: NaN (unknown) counts as 0, else >= 0."""
    if isinstance(tau2, float) and math.isnan(tau2):
        return 0.0
    return check_float(tau2, "tau2", ge=0)


def half_width(v: float, tau2: float, n_bags: float, n_seeds: int, level: float = 0.95) -> float:
    """Expected half-width of the report's bootstrap interval of a paired difference.

    ``z * sqrt(((S - 1) tau2 + (2S - 1) v / n) / S**2)`` for ``S = n_seeds`` seeds of
    ``n = n_bags`` test bags each (see the module docstring); ``tau2`` NaN counts as 0.

    Raises:
        ValueError: ``n_bags <= 0``, ``n_seeds < 1``, negative variances.
    """
    n_bags = check_float(n_bags, "n_bags", gt=0)
    S = check_int(n_seeds, "n_seeds", ge=1)
    v, t = check_float(v, "v", ge=0), _tau2(tau2)
    return _z(level) * math.sqrt(((S - 1) * t + (2 * S - 1) * v / n_bags) / S**2)


def required_bags(v: float, tau2: float, *, target: float = 0.05, min_seeds: int = 3,
                  max_seeds: int = 10, level: float = 0.95, multiple: int = 2) -> list[dict]:
    """Smallest test-bag count per seed that brings the half-width to ``<= target``, per S.

    Solves ``half_width(v, tau2, n, S) <= target`` for ``n``:
    ``n >= (2S - 1) v / (S**2 (target / z)**2 - (S - 1) tau2)``, rounded up to a multiple of
    ``multiple`` (2 keeps half of the bags positive). Impossible when the seed term alone
    reaches the target: then ``n_bags`` is ``None`` -- only more seeds help.

    Returns:
        ``[{"n_seeds", "n_bags", "total_bags", "half_width", "seed_share"}, ...]`` for
        ``S = min_seeds .. max_seeds``; ``seed_share = tau2 / (v / n)``. Above about 2 the
        between-seed variance dominates and the few-seed bootstrap interval covers less than
        its nominal rate (docs/power.md measures it): prefer more seeds to more bags there.
    """
    target = check_float(target, "target", gt=0)
    min_seeds = check_int(min_seeds, "min_seeds", ge=1)
    max_seeds = check_int(max_seeds, "max_seeds", ge=min_seeds)
    multiple = check_int(multiple, "multiple", ge=1)
    v = check_float(v, "v", ge=0)
    z, t = _z(level), _tau2(tau2)
    out = []
    for S in range(min_seeds, max_seeds + 1):
        room = S**2 * (target / z) ** 2 - (S - 1) * t
        if room <= 0:
            out.append({"n_seeds": S, "n_bags": None, "total_bags": None, "half_width": None,
                        "seed_share": None})
            continue
        n = max(multiple, math.ceil((2 * S - 1) * v / room / multiple - 1e-12) * multiple)
        out.append({"n_seeds": S, "n_bags": n, "total_bags": n * S,
                    "half_width": half_width(v, t, n, S, level),
                    "seed_share": t / (v / n) if v > 0 else math.inf})
    return out


def required_seeds(v: float, tau2: float, n_bags: float, *, target: float = 0.05,
                   level: float = 0.95, min_seeds: int = 3, max_seeds: int = 10_000) -> int | None:
    """Smallest number of seeds (from ``min_seeds``, the report's minimum for a verdict) whose
    expected half-width (:func:`half_width`) is ``<= target`` with ``n_bags`` test bags per
    seed; ``None`` when ``max_seeds`` do not reach it. For ``S >= 2`` the half-width falls as
    ``S`` grows, so the first ``S`` that reaches the target is found by bisection.

    When the between-seed variance ``tau2`` is the larger term, more test bags cannot help
    (:func:`required_bags` says "impossible") and this is the number that matters.

    Raises:
        ValueError: as :func:`half_width`, or ``target <= 0``, ``min_seeds < 2``,
            ``max_seeds < min_seeds``.
    """
    target = check_float(target, "target", gt=0)
    min_seeds = check_int(min_seeds, "min_seeds", ge=2)
    max_seeds = check_int(max_seeds, "max_seeds", ge=min_seeds)
    if half_width(v, tau2, n_bags, max_seeds, level) > target:
        return None
    lo, hi = min_seeds, max_seeds
    while lo < hi:
        mid = (lo + hi) // 2
        if half_width(v, tau2, n_bags, mid, level) <= target:
            hi = mid
        else:
            lo = mid + 1
    return lo


def power_table(preds: Sequence[dict], method_a: str, method_b: str, *, mil: str,
                metric: str = "bag_auc", target: float = 0.05, min_seeds: int = 3,
                max_seeds: int = 10, tau2: float | str = "pooled", **kw) -> dict:
    """Components and required test bags at every witness rate of the pilot, and the maximum.

    Args:
        preds: pilot per-bag predictions (calibration methods only).
        tau2: the between-seed variance to plan with: ``"pooled"`` (default) averages the
            unfloored per-WR estimates, then floors at 0 -- with 3 pilot seeds each per-WR
            estimate has only 2 degrees of freedom, the pool of W rates has ``2W``;
            ``"per_wr"`` uses each WR's own (floored) estimate; a number overrides both (e.g.
            an assumed value when the pilot has one seed). NaN counts as 0.
        kw: passed to :func:`estimate_components` (``embedding``, ``stain``, ``n_boot``, ``seed``).

    Returns:
        ``{"by_witness_rate": [{components..., "tau2_used", "required": [...],
        "seeds_at_pilot_bags"}], "required": [...], "tau2_pooled"}`` (``seeds_at_pilot_bags``:
        :func:`required_seeds` with the pilot's own test-bag count) where the top-level
        ``required`` takes, per seed count, the largest ``n_bags`` over the witness rates
        (powered at every witness rate).
    """
    wrs = sorted({float(r["witness_rate"]) for r in preds if r["mil"] == mil
                  and r["method"] == method_a}, reverse=True)
    comps = [estimate_components(preds, method_a, method_b, mil=mil, witness_rate=wr,
                                 metric=metric, **kw) for wr in wrs]
    raws = [c.tau2_raw for c in comps if not math.isnan(c.tau2_raw)]
    pooled = max(0.0, float(np.mean(raws))) if raws else math.nan
    if isinstance(tau2, str) and tau2 not in ("pooled", "per_wr"):
        raise ValueError(f"tau2 must be 'pooled', 'per_wr' or a number, got {tau2!r}")
    per_wr, need = [], {}
    for comp in comps:
        t = pooled if tau2 == "pooled" else comp.tau2 if tau2 == "per_wr" else float(tau2)
        req = required_bags(comp.v, t, target=target, min_seeds=min_seeds, max_seeds=max_seeds)
        per_wr.append({**asdict(comp), "tau2_used": t, "required": req,
                       "seeds_at_pilot_bags": required_seeds(comp.v, t, comp.n_bags,
                                                             target=target)})
        for r in req:
            prev = need.get(r["n_seeds"], 0)
            need[r["n_seeds"]] = None if prev is None or r["n_bags"] is None else max(prev, r["n_bags"])
    return {"by_witness_rate": per_wr, "tau2_pooled": pooled,
            "required": [{"n_seeds": S, "n_bags": n} for S, n in sorted(need.items())]}


def simulate_predictions(*, n_seeds: int, n_pos: int, n_neg: int, mu: dict[str, float],
                         rho: float = 0.5, seed_sd: float = 0.0,
                         witness_rates: Sequence[float] = (0.1,), mil: str = "sim",
                         embedding: str = "h", stain: str = "per_cell", seed: int = 0) -> list[dict]:
    """Binormal per-bag predictions with known AUCs, in the format of :mod:`predictions`.

    Bag scores of method ``m``: ``mu_m y + u_ms + sqrt(rho) c_i + sqrt(1 - rho) e_mi`` with
    ``c, e ~ N(0, 1)`` (``c`` shared by all methods: ``rho`` is their correlation on a bag) and
    a per-(method, seed) shift ``u_ms ~ N(0, seed_sd)`` of the positive bags. Without
    ``seed_sd`` each method's AUC is ``Phi(mu_m / sqrt(2))``. Decisions threshold the score at
    ``mu_m / 2``; the retrieval columns hold ``Phi(score)`` of positive bags, a stand-in in
    [0, 1] correlated with the bag score.

    Returns:
        Rows (dicts with :data:`slamags_core.predictions.COLUMNS`).
    """
    rho = check_float(rho, "rho", ge=0, le=1)
    seed_sd = check_float(seed_sd, "seed_sd", ge=0)
    n_seeds, n_pos, n_neg = (check_int(x, name, ge=1) for x, name in
                             ((n_seeds, "n_seeds"), (n_pos, "n_pos"), (n_neg, "n_neg")))
    rng = np.random.default_rng(seed)
    phi = np.vectorize(NormalDist().cdf)
    rows = []
    for wr in witness_rates:
        for s in range(n_seeds):
            y = rng.permutation(np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)])
            c = rng.standard_normal(len(y))
            for method, m in mu.items():
                u = rng.normal(0.0, seed_sd) if seed_sd > 0 else 0.0
                score = (m + u) * y + math.sqrt(rho) * c + math.sqrt(1 - rho) * rng.standard_normal(len(y))
                rec = phi(score)
                for i in range(len(y)):
                    pos = y[i] == 1
                    rows.append({"method": method, "mil": mil, "witness_rate": float(wr), "seed": s,
                                 "embedding": embedding, "stain": stain, "bag": i, "label": int(y[i]),
                                 "score": float(score[i]), "decision": int(score[i] > m / 2),
                                 "n_cells": -1, "n_witnesses": -1,
                                 "topk_precision": float(rec[i]) if pos else math.nan,
                                 "topk_recall": float(rec[i]) if pos else math.nan,
                                 "instance_auroc": float(rec[i]) if pos else math.nan})
    return rows
