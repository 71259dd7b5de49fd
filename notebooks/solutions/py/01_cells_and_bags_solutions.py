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
# # Solutions · 01 · Cells and bags
#
# **For teachers.** Worked solutions to the exercises at the end of `01_cells_and_bags.ipynb`, each
# followed by the same grader the students run, here with `strict=True`: a wrong solution raises,
# so the test suite (nbval) keeps these solutions correct. Hand students the notebooks without the
# `solutions/` folder (see `docs/teaching.md`).
#
# **Run time.** A few seconds on a CPU, any preset.

# %%
try:
    import slamags_core  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    import os
    import sys
    sys.path.insert(0, os.path.abspath(os.path.join("..", "..")))

import math
from statistics import NormalDist

import numpy as np

from slamags_core import exercises, get_preset
from slamags_core.synthetic import sample_factors

cells_cfg = get_preset().cells

# %% [markdown]
# ## Exercise 1 · From cell scores to bag scores
#
# `np.bincount` sums the scores of each bag in one pass (and counts its cells); `np.maximum.at`
# keeps a running maximum per bag. The maximum must start from −∞: starting from 0 (a common
# slip) turns the maximum of a bag whose scores are all negative into 0, and the grader's
# "all scores negative" case catches it.

# %%
def pool_bags(scores, bag_index, how):
    scores, bag_index = np.asarray(scores, dtype=np.float64), np.asarray(bag_index)
    n_bags = int(bag_index.max()) + 1
    if how == "mean":
        return np.bincount(bag_index, weights=scores, minlength=n_bags) / np.bincount(bag_index, minlength=n_bags)
    if how == "max":
        out = np.full(n_bags, -np.inf)
        np.maximum.at(out, bag_index, scores)
        return out
    raise ValueError(f"how must be 'mean' or 'max', got {how!r}")


# %%
exercises.check_bag_pooling(pool_bags, strict=True)

# %% [markdown]
# ## Exercise 2 · What mean pooling can reach
#
# A negative bag's mean `m_0` has expectation `μ` and standard deviation `σ/√N`; a positive bag's
# mean `m_1` has expectation `μ + WR · Δ` and (to first order) the same spread. The AUC is
# `P(m_1 > m_0)`; `m_1 − m_0` is Gaussian with mean `WR · Δ` and standard deviation `σ √(2/N)`, so
#
# $$\text{AUC} = \Phi\Big(\frac{WR\cdot\Delta}{\sigma\sqrt{2/N}}\Big) = \Phi\Big(\frac{\text{SNR}}{\sqrt 2}\Big),
# \qquad \text{SNR} = \frac{WR\cdot\Delta\cdot\sqrt N}{\sigma}.$$
#
# Forgetting the `√2` (using `Φ(SNR)`) is the usual mistake: it forgets that the negative bag's
# mean varies too.

# %%
def mean_pool_auc(witness_rate, gap, sigma, bag_size):
    snr = witness_rate * gap * math.sqrt(bag_size) / sigma
    return NormalDist().cdf(snr / math.sqrt(2))


# %%
exercises.check_mean_pool_auc(mean_pool_auc, strict=True)

# %% [markdown]
# ## Exercise 3 · How large must a bag be?
#
# Solve `Φ(WR · Δ · √N / (σ √2)) ≥ target` for `N`: `N ≥ 2 (σ Φ⁻¹(target) / (WR · Δ))²`, rounded up
# (and at least 1). The loop after the formula guards against floating-point rounding at the
# boundary.

# %%
def bag_size_for_auc(target_auc, witness_rate, gap, sigma):
    z = NormalDist().inv_cdf(target_auc)
    n = max(1, math.ceil(2 * (sigma * z / (witness_rate * gap)) ** 2))
    while n > 1 and mean_pool_auc(witness_rate, gap, sigma, n - 1) >= target_auc:
        n -= 1
    while mean_pool_auc(witness_rate, gap, sigma, n) < target_auc:
        n += 1
    return n


# %%
exercises.check_bag_size_for_auc(bag_size_for_auc, strict=True)

# %% [markdown]
# **The questions.** With the notebook's feature (minus chromatin coarseness, measured on 20,000
# cells per class exactly as in §5 of the notebook):

# %%
feat = {c: -sample_factors([c] * 20000, cells_cfg.difficulty, np.random.default_rng(7))[
    "chromatin_coarseness"].astype(np.float64) for c in (cells_cfg.negative_class, cells_cfg.witness_class)}
gap = feat[cells_cfg.witness_class].mean() - feat[cells_cfg.negative_class].mean()
sigma = feat[cells_cfg.negative_class].std()
need = bag_size_for_auc(0.9, 0.005, gap, sigma)
print(f"difficulty {cells_cfg.difficulty}: Δ = {gap:.3f}, σ = {sigma:.3f}")
print(f"mean pooling needs N = {need} cells per bag for AUC 0.9 at WR 0.5 %; "
      f"with the paper's N = 1000 it reaches AUC {mean_pool_auc(0.005, gap, sigma, 1000):.3f}")

# %% [markdown]
# What students should conclude: bags of 1000 cells are several times too small for mean pooling
# at WR 0.5 % (check the printed `N`), even with a perfect, stain-free cell feature. An aggregator
# must single out the few witnesses (attention or max pooling), and it can only do so if the
# encoder makes witnesses stand out from *every* normal cell — the motivation for SLAM-AGS's
# pretraining and for attention MIL.
