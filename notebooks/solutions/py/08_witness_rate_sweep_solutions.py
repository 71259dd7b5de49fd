# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py//py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Solutions · 08 · The witness-rate sweep
#
# **For teachers.** Worked solutions to the exercises at the end of `08_witness_rate_sweep.ipynb`,
# each followed by the same grader the students run, here with `strict=True`: a wrong solution
# raises, so the test suite (nbval) keeps these solutions correct. Hand students the notebooks
# without the `solutions/` folder (see `docs/teaching.md`).
#
# **Run time.** A few seconds on a CPU, any preset (the questions' answers are shown on planted
# numbers with a known answer; run the functions on the notebook's `df`, `a_bags` and `b_bags`
# for the sweep's own results).

# %%
try:
    import slamags_core  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    import os
    import sys
    sys.path.insert(0, os.path.abspath(os.path.join("..", "..")))

import warnings

import numpy as np

from slamags_core import exercises
from slamags_core.stats import hierarchical_bootstrap, select_cells

# %% [markdown]
# ## Exercise 1 · A seed summary that is honest about one seed
#
# The seeds are a sample of all the training runs one could make, so the spread is the *sample*
# standard deviation (`ddof=1`, dividing by `n − 1`). For one seed that is `0 / 0`: there is no
# spread to report, and the honest value is NaN (printed *n/a*). The typical slip the grader names
# is NumPy's default `ddof=0`, which is too small for a few seeds and exactly 0 for one.

# %%
def my_seed_summary(values):
    v = np.asarray(values, dtype=np.float64)     # (n_seeds,)
    std = float(v.std(ddof=1)) if v.size > 1 else float("nan")
    return float(v.mean()), std, int(v.size)


# %%
exercises.check_seed_summary(my_seed_summary, strict=True)

# %% [markdown]
# **The question.** `np.std([0.93])` returns 0.0 (printed below): a table that printed it would
# claim that a second training run could not give another number, when one run has simply not
# measured the spread. `ddof=1` without the special case returns NaN too, but with a
# `RuntimeWarning` (*degrees of freedom <= 0*). With several seeds the two estimates differ by
# `√((n − 1) / n)`: printed below for five seeds. On the notebook's `df`, `n` says how many seeds
# each summary rests on: the README's main job runs one seed, so there each reads
# `(mean, nan, 1)` — one seed gives no verdict.

# %%
print("np.std([0.93]) =", np.std([0.93]), "  my_seed_summary([0.93]) =", my_seed_summary([0.93]))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    plain = np.std([0.93], ddof=1)
print(f"np.std([0.93], ddof=1) = {plain} with {caught[0].category.__name__}: {caught[0].message}")
five = [0.81, 0.77, 0.9, 0.85, 0.79]
ratio = np.std(five) / my_seed_summary(five)[1]
print(f"five seeds: ddof=0 / ddof=1 = {ratio:.4f} = sqrt(4/5) = {np.sqrt(4 / 5):.4f}")
assert np.std([0.93]) == 0.0 and np.isnan(my_seed_summary([0.93])[1]) and np.isclose(ratio, np.sqrt(0.8))

# %% [markdown]
# ## Exercise 2 · A paired bootstrap confidence interval
#
# Two methods scored on the same bags give pairs `(a_i, b_i)`. Resampling the *bags* resamples the
# pairs, so the same indices serve `a` and `b` — equivalently, resample the differences
# `d_i = a_i − b_i`. Every random number comes from one `np.random.default_rng(seed)`, so the same
# seed gives the same interval.

# %%
def my_paired_bootstrap_ci(a, b, n_boot, seed):
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)   # (n,) paired differences
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(d), size=(n_boot, len(d)))                     # (n_boot, n) bags drawn
    lo, hi = np.quantile(d[idx].mean(1), [0.025, 0.975])
    return float(lo), float(hi)


# %%
exercises.check_paired_bootstrap_ci(my_paired_bootstrap_ci, strict=True)

# %% [markdown]
# **The questions**, on planted per-bag Top-K recalls of 64 positive test bags with a known answer:
# a large bag-to-bag effect shared by both methods (some bags are easy for every encoder) and a
# true difference of 0.03. Resampled independently, `a` and `b` each carry the whole bag-to-bag
# spread, the interval is several times wider and here crosses 0; paired, the shared effect
# cancels in `a − b`. And the report's own bootstrap (`slamags_core.stats.hierarchical_bootstrap`,
# what `results.md` and §3 of the notebook use), run on the same bags as one seed of one grid cell,
# resamples the positive bags just as the exercise does (negative bags hold no witnesses and do
# not enter Top-K recall): check that its interval printed below agrees with the exercise's — with
# one seed and the same generator seed it draws the same bags, so the two agree to the printed
# digits; with several seeds it also resamples the seeds and is wider.

# %%
rng = np.random.default_rng(0)
n_pos = 64
easy = rng.uniform(0.2, 0.9, n_pos)                              # (n_pos,) shared bag effect
a = np.clip(easy + 0.03 + rng.normal(0, 0.03, n_pos), 0, 1)      # "slam_ags"
b = np.clip(easy + rng.normal(0, 0.03, n_pos), 0, 1)             # "simclr"


def unpaired_ci(a, b, n_boot, seed):
    r = np.random.default_rng(seed)
    ma = a[r.integers(0, len(a), (n_boot, len(a)))].mean(1)
    mb = b[r.integers(0, len(b), (n_boot, len(b)))].mean(1)
    return tuple(np.quantile(ma - mb, [0.025, 0.975]))


paired, unpaired = my_paired_bootstrap_ci(a, b, 2000, 0), unpaired_ci(a, b, 2000, 0)

# the same bags as per-bag predictions of one grid cell (64 positive + 64 negative bags)
def planted_rows(method, recall):
    return [dict(method=method, mil="abmil", witness_rate=0.01, seed=0, embedding="h", stain="per_cell",
                 bag=i, label=int(i < n_pos), score=float(i < n_pos), decision=float(i < n_pos),
                 n_cells=1000, n_witnesses=10 if i < n_pos else 0,
                 topk_precision=np.nan, topk_recall=float(recall[i]) if i < n_pos else np.nan,
                 instance_auroc=np.nan) for i in range(2 * n_pos)]


cells = select_cells(planted_rows("slam_ags", a) + planted_rows("simclr", b), mil="abmil")
boot = hierarchical_bootstrap(cells, "slam_ags", "simclr", "topk_recall", n_boot=2000, seed=0)
report_ci = tuple(boot.ci()[0])
print(f"observed mean difference {np.mean(a - b):+.4f} (planted +0.03)")
for name, (lo, hi) in (("paired (exercise)", paired), ("report's bootstrap", report_ci),
                       ("unpaired", unpaired)):
    print(f"{name:20s} [{lo:+.4f}, {hi:+.4f}]  width {hi - lo:.4f}")
print(f"unpaired / paired width: {(unpaired[1] - unpaired[0]) / (paired[1] - paired[0]):.1f}x")
assert paired[0] > 0 and unpaired[0] < 0 < unpaired[1]
assert abs((report_ci[1] - report_ci[0]) / (paired[1] - paired[0]) - 1) < 0.15
