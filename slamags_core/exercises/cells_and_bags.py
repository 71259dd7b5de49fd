"""Graders for notebook 01 (cells and bags): pooling cell scores into bag scores, and what
mean pooling can reach at a witness rate."""
from __future__ import annotations

import math
from statistics import NormalDist
from typing import Callable

import numpy as np

from slamags_core.exercises.grading import Case, Report, grade, show


def _pool_ref(scores, bag_index, how):
    s, b = np.asarray(scores, dtype=np.float64), np.asarray(bag_index)
    n_bags = int(b.max()) + 1
    if how == "mean":
        return np.bincount(b, weights=s, minlength=n_bags) / np.bincount(b, minlength=n_bags)
    out = np.full(n_bags, -np.inf)
    np.maximum.at(out, b, s)
    return out


def check_bag_pooling(fn: Callable, *, strict: bool = False, seed: int = 0) -> Report:
    """Exercise (01): pool cell scores into bag scores.

    ``fn(scores, bag_index, how)``: ``scores`` (n,) floats, ``bag_index`` (n,) ints in
    ``0 .. n_bags - 1`` (every bag has at least one cell, cells of a bag need not be adjacent),
    ``how`` in {"mean", "max"} -> (n_bags,) array, entry b the mean / max score of bag b.
    """
    rng = np.random.default_rng(seed)
    sorted_idx = np.repeat(np.arange(5), 20)
    shuffled = rng.permutation(sorted_idx)
    uneven = rng.permutation(np.repeat(np.arange(4), [1, 3, 50, 7]))
    mistakes = (
        ("a running maximum that starts at 0 ignores bags whose scores are all negative: start "
         "from -inf (or use the maximum of each bag's own scores)",
         lambda s, b, how: np.maximum(_pool_ref(s, b, how), 0.0)),
        ("you cut the cells into equal consecutive chunks; cells of a bag are the ones with "
         "bag_index == b, wherever they are (np.bincount or a boolean mask per bag)",
         lambda s, b, how: np.array([getattr(np, how)(c) for c in np.array_split(s, b.max() + 1)])),
        ("you pooled over all cells instead of per bag",
         lambda s, b, how: np.full(b.max() + 1, getattr(np, how)(s))),
    )
    cases = [
        Case("5 bags of 20 cells, cells sorted by bag, mean",
              (rng.normal(size=100), sorted_idx, "mean"), mistakes=mistakes),
        Case("5 bags of 20 cells, cells sorted by bag, max",
              (rng.normal(size=100), sorted_idx, "max"), mistakes=mistakes),
        Case("cells of the 5 bags interleaved (shuffled bag_index), mean",
              (rng.normal(size=100), shuffled, "mean"), mistakes=mistakes),
        Case("all scores negative, max", (-rng.random(100) - 0.5, shuffled, "max"),
              mistakes=mistakes),
        Case("uneven bags of 1, 3, 50 and 7 cells, mean", (rng.normal(size=61), uneven, "mean"),
              mistakes=mistakes),
        Case("uneven bags of 1, 3, 50 and 7 cells, max", (rng.normal(size=61), uneven, "max"),
              mistakes=mistakes),
        Case("a single bag of 3 cells, max", (np.array([0.2, -1.0, 0.7]), np.zeros(3, int), "max"),
              mistakes=mistakes),
    ]
    return grade("bag pooling", fn, _pool_ref, cases, strict=strict, rtol=1e-9, atol=1e-12,
                  covers="mean and max, sorted and interleaved bags, negative scores, bags of 1 cell")


def _phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _mean_pool_auc_ref(witness_rate, gap, sigma, bag_size):
    snr = witness_rate * gap * math.sqrt(bag_size) / sigma
    return _phi(snr / math.sqrt(2.0))


def check_mean_pool_auc(fn: Callable, *, strict: bool = False) -> Report:
    """Exercise (01): the bag AUC that mean pooling of a Gaussian cell feature can reach.

    ``fn(witness_rate, gap, sigma, bag_size) -> float``: witnesses shift a cell feature by
    ``gap``, every cell has within-class std ``sigma``; mean pooling gives
    ``SNR = WR x gap x sqrt(N) / sigma`` and ``AUC = Phi(SNR / sqrt(2))``.
    """
    def snr_only(wr, gap, s, n):
        return wr * gap * math.sqrt(n) / s

    mistakes = (
        ("you returned Phi(SNR): a positive and a negative bag mean both vary (std sigma/sqrt(N) "
         "each), so their difference has std sigma*sqrt(2/N): AUC = Phi(SNR / sqrt(2))",
         lambda wr, gap, s, n: _phi(snr_only(wr, gap, s, n))),
        ("you returned the SNR itself; the AUC is Phi(SNR / sqrt(2)) (Phi = normal CDF)", snr_only),
        ("the mean of N cells has std sigma / sqrt(N), not sigma / N",
         lambda wr, gap, s, n: _phi(wr * gap * n / s / math.sqrt(2))),
        ("divide by the std sigma, not by the variance sigma**2",
         lambda wr, gap, s, n: _phi(wr * gap * math.sqrt(n) / s ** 2 / math.sqrt(2))),
    )
    hint = "SNR = WR * gap * sqrt(N) / sigma; AUC = Phi(SNR / sqrt(2)); Phi(x) = 0.5 * (1 + erf(x / sqrt(2)))"
    cases = [Case(f"WR {wr:g}, gap {gap:g}, sigma {s:g}, N {n}", (wr, gap, s, n), hint=hint,
                   mistakes=mistakes)
             for wr, gap, s, n in ((0.05, 0.54, 0.12, 200), (0.005, 0.54, 0.12, 200),
                                   (0.005, 0.54, 0.12, 1000), (0.1, 0.3, 0.2, 50),
                                   (0.0, 0.5, 0.1, 200), (0.1, 1.0, 0.1, 1000))]
    return grade("mean-pooling AUC", fn, _mean_pool_auc_ref, cases, strict=strict, rtol=1e-6,
                  atol=1e-9, covers="WR 0 to 10 %, bags of 50 to 1000 cells")


def _bag_size_ref(target_auc, witness_rate, gap, sigma):
    z = NormalDist().inv_cdf(target_auc)
    need = 2.0 * (z * sigma / (witness_rate * gap)) ** 2
    n = max(1, math.ceil(need - 1e-9))
    while n > 1 and _mean_pool_auc_ref(witness_rate, gap, sigma, n - 1) >= target_auc:
        n -= 1
    while _mean_pool_auc_ref(witness_rate, gap, sigma, n) < target_auc:
        n += 1
    return n


def check_bag_size_for_auc(fn: Callable, *, strict: bool = False) -> Report:
    """Exercise (01): the smallest bag size at which mean pooling reaches a target AUC.

    ``fn(target_auc, witness_rate, gap, sigma) -> int``: the smallest integer ``N >= 1`` with
    ``Phi(WR x gap x sqrt(N) / (sigma sqrt(2))) >= target_auc`` (invert the formula of the
    mean-pooling exercise).
    """
    def compare(expected, got, args):
        if isinstance(got, (bool, np.bool_)) or not isinstance(got, (int, np.integer)):
            if isinstance(got, (float, np.floating)) and float(got).is_integer():
                got = int(got)
            else:
                return f"expected an int (a number of cells), got {show(got)}: round up with math.ceil"
        if int(got) != expected:
            t, wr, gap, s = args
            auc = _mean_pool_auc_ref(wr, gap, s, max(int(got), 1))
            return (f"expected N = {expected}, got {int(got)} (which gives AUC {auc:.4f} "
                    f"against the target {t})")
        return None

    mistakes = (
        ("you forgot the factor 2: N = 2 * (sigma * z / (WR * gap))**2 with z = Phi^-1(target) "
         "(the difference of two bag means has variance 2 sigma^2 / N)",
         lambda t, wr, gap, s: max(1, math.ceil((NormalDist().inv_cdf(t) * s / (wr * gap)) ** 2))),
    )
    cases = [Case(f"target AUC {t:g} at WR {wr:g}, gap {gap:g}, sigma {s:g}", (t, wr, gap, s),
                   compare=compare, mistakes=mistakes,
                   hint="solve Phi(WR*gap*sqrt(N)/(sigma*sqrt(2))) = target for N "
                        "(statistics.NormalDist().inv_cdf is Phi^-1), then round up")
             for t, wr, gap, s in ((0.9, 0.005, 0.54, 0.12), (0.99, 0.01, 0.54, 0.12),
                                   (0.8, 0.1, 0.3, 0.2), (0.95, 0.05, 0.54, 0.12),
                                   (0.5, 0.01, 0.5, 0.1))]
    return grade("bag size for a target AUC", fn, _bag_size_ref, cases, strict=strict,
                  covers="targets 0.5 to 0.99, WR 0.5 to 10 %")
