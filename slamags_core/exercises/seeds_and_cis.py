"""Graders for notebook 08 (the sweep): a summary over seeds that is honest about one seed, and
a paired bootstrap confidence interval."""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from slamags_core.exercises.grading import Case, Report, close, clone, grade, show


def _seed_summary_ref(values):
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), (float(v.std(ddof=1)) if v.size > 1 else math.nan), int(v.size)


def check_seed_summary(fn: Callable, *, strict: bool = False) -> Report:
    """Exercise (08): mean, sample std and count of a metric over seeds, honest about one seed.

    ``fn(values) -> (mean, std, n)``: ``std`` is the sample std (``ddof=1``) and NaN for a single
    seed (one seed has no spread to report; std 0.0 would claim there is no noise).
    """
    def compare(expected, got, args):
        if not isinstance(got, (tuple, list)) or len(got) != 3:
            return f"expected a tuple (mean, std, n), got {show(got)}"
        m, s, n = got
        one_seed_ok = s is None or (isinstance(s, (float, np.floating)) and math.isnan(s))
        if expected[2] == 1 and not one_seed_ok:
            return (f"with one seed the std must be NaN or None (printed n/a), got {show(s)}: a std "
                    f"of 0.0 claims there is no seed-to-seed noise")
        for what, e, g in (("mean", expected[0], m), ("std", expected[1], s), ("n", expected[2], n)):
            if not (math.isnan(e) and one_seed_ok):
                problem = close(float(e), g, 1e-9, 1e-12, what)
                if problem:
                    return problem
        return None

    mistakes = (("use the sample std (ddof=1): the seeds are a sample of all the seeds you could run",
                 lambda v: (float(np.mean(v)), float(np.std(v)), len(v))),)
    cases = [Case(desc, (vals,), compare=compare, mistakes=mistakes) for desc, vals in (
        ("five seeds", [0.81, 0.77, 0.9, 0.85, 0.79]), ("two seeds", [0.5, 0.7]),
        ("one seed", [0.93]), ("three equal values", [0.6, 0.6, 0.6]))]
    return grade("seed summary", fn, _seed_summary_ref, cases, strict=strict,
                  covers="one to five seeds")


def _bootstrap_ref(a, b, n_boot, seed, level=0.95):
    rng = np.random.default_rng(seed)
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    idx = rng.integers(0, len(d), size=(n_boot, len(d)))
    means = d[idx].mean(1)
    return tuple(np.quantile(means, [(1 - level) / 2, (1 + level) / 2]))


def check_paired_bootstrap_ci(fn: Callable, *, strict: bool = False, seed: int = 0) -> Report:
    """Exercise (08): a paired bootstrap 95% CI for ``mean(a - b)`` (method A minus method B).

    ``fn(a, b, n_boot, seed) -> (lo, hi)``: resample the PAIRS (the same indices for ``a`` and
    ``b``: they are two methods scored on the same test bags / seeds) ``n_boot`` times with
    replacement, and return the 2.5 and 97.5 percentiles of the resampled mean differences.
    A bootstrap is random, so the grader checks properties against its own 20,000-resample
    reference: the interval holds the observed difference, its width is within 20% and its
    centre within 20% of the width of the reference's, a constant shift gives a zero-width
    interval, and the same seed gives the same interval.
    """
    rng = np.random.default_rng(seed)

    def compare(expected, got, args):
        a, b, n_boot, s = args
        if not isinstance(got, (tuple, list, np.ndarray)) or len(got) != 2:
            return f"expected (lo, hi), got {show(got)}"
        lo, hi = float(got[0]), float(got[1])
        d = float(np.mean(np.asarray(a) - np.asarray(b)))
        ref_lo, ref_hi = expected
        width = ref_hi - ref_lo
        if not lo <= hi:
            return f"lo = {lo:.4g} is above hi = {hi:.4g}"
        if width < 1e-12:
            if abs(lo - d) > 1e-9 or abs(hi - d) > 1e-9:
                return (f"a (b + constant) has no uncertainty: expected the interval [{d:.4g}, {d:.4g}], "
                        f"got [{lo:.4g}, {hi:.4g}]")
            return None
        if not lo <= d <= hi:
            return f"the interval [{lo:.4g}, {hi:.4g}] does not contain the observed difference {d:.4g}"
        if not 0.8 <= (hi - lo) / width <= 1.2:
            return (f"width {hi - lo:.4g}, the reference's is {width:.4g} (ratio {(hi - lo) / width:.2f}, "
                    f"allowed 0.8 to 1.2)")
        if abs((lo + hi) / 2 - (ref_lo + ref_hi) / 2) > 0.2 * width:
            return f"centre {(lo + hi) / 2:.4g}, the reference's is {(ref_lo + ref_hi) / 2:.4g}"
        again = fn(*clone(args))
        if tuple(map(float, again)) != (lo, hi):
            return ("two calls with the same seed gave different intervals: draw every random number "
                    "from np.random.default_rng(seed)")
        return None

    def unpaired(a, b, n_boot, s):
        r = np.random.default_rng(s)
        ia = r.integers(0, len(a), (n_boot, len(a)))
        ib = r.integers(0, len(b), (n_boot, len(b)))
        diffs = np.asarray(a)[ia].mean(1) - np.asarray(b)[ib].mean(1)
        return tuple(np.quantile(diffs, [0.025, 0.975]))

    def same_width(wrong, got):  # a bootstrap is random: a mistake shows in the width
        w_wrong, w_got = wrong[1] - wrong[0], float(got[1]) - float(got[0])
        return w_wrong > 0 and abs(w_got / w_wrong - 1) < 0.2

    shared = rng.normal(0.8, 0.1, 64)
    a = shared + rng.normal(0.02, 0.01, 64)
    b = shared + rng.normal(0.0, 0.01, 64)
    hint = ("draw indices idx = rng.integers(0, n, size=(n_boot, n)) ONCE and use them for both a and b "
            "(equivalently resample d = a - b), then np.quantile(mean differences, [0.025, 0.975])")
    unpaired_hint = ("you resampled a and b independently: the two methods were scored on the same bags, "
                     "so resample the PAIRS (the same indices for a and b); the shared bag-to-bag "
                     "variation then cancels and the interval is much narrower")
    mistakes = ((unpaired_hint, unpaired),)
    cases = [Case(desc, args, compare=compare, hint=hint, mistakes=mistakes, match=same_width)
             for desc, args in (
                 ("64 paired scores sharing a large bag effect (std 0.1), true difference 0.02",
                  (a, b, 2000, 1)),
                 ("a = b + 0.05 exactly (a constant shift)", (b + 0.05, b, 2000, 2)),
                 ("12 independent pairs (small sample)",
                  (rng.normal(0.7, 0.05, 12), rng.normal(0.68, 0.05, 12), 2000, 3)),
                 ("500 pairs, skewed differences", (rng.exponential(0.1, 500), np.zeros(500), 1000, 4)))]
    return grade("paired bootstrap CI", fn, lambda a, b, n, s: _bootstrap_ref(a, b, 20000, s + 100),
                  cases, strict=strict, covers="shared bag effects, a constant shift, 12 to 500 pairs")
