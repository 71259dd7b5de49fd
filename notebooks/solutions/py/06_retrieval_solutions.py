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
# # Solutions · 06 · Attention-guided retrieval
#
# **For teachers.** Worked solutions to the exercises at the end of `06_retrieval.ipynb`, each
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

import numpy as np

from slamags_core import exercises

# %% [markdown]
# ## Exercise 1 · Recall@K with ties
#
# Find the `k`-th highest score; every cell above it is retrieved for sure; the `s = k − (cells
# above)` slots left go to the `t` cells tied at the `k`-th value, each with probability `s / t`.
# The slips the grader names: dividing by `k` (that is precision@K), breaking ties by position
# (`argsort` puts the tied cells in index order, so a bag whose witnesses come last scores 0
# under uniform attention instead of `k / N`), sorting in ascending order.

# %%
def topk_recall(scores, labels, k):
    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels)
    kth = np.sort(scores)[::-1][k - 1]          # the k-th highest score
    above, tied = scores > kth, scores == kth
    slots = k - above.sum()                     # slots left for the tied cells
    hits = labels[above].sum() + slots * labels[tied].sum() / tied.sum()
    return float(hits / labels.sum())


# %%
exercises.check_topk_recall(topk_recall, strict=True)

# %% [markdown]
# **The question.** Uniform attention ties every cell, so recall@K is `K / N` whatever the bag:
# the paper's "Top 400 of 1000" is 0.4 with no model at all — the chance line of the notebook's
# recall curve, and the number every reported recall must be read against.

# %%
labels = np.zeros(1000, dtype=int)
labels[-5:] = 1                                  # 5 witnesses (WR 0.5 %), at the end of the bag
uniform = np.full(1000, 1 / 1000)
print(f"mean pooling, Top 400 of 1000: recall = {topk_recall(uniform, labels, 400):.3f}")
assert np.isclose(topk_recall(uniform, labels, 400), 0.4)

# %% [markdown]
# ## Exercise 2 · The within-bag instance AUROC by counting pairs
#
# Compare every witness score with every normal score by broadcasting a `(N_w, N_neg)` table of
# wins; ties count one half. This is the Mann–Whitney form of the ROC AUC, which is why it equals
# `roc_auc_score` exactly.

# %%
def instance_auroc(scores, labels):
    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels)
    w = scores[labels == 1][:, None]             # (N_w, 1)
    n = scores[labels == 0][None, :]             # (1, N_neg)
    return float(((w > n) + 0.5 * (w == n)).mean())


# %%
exercises.check_instance_auroc(instance_auroc, strict=True)

# %% [markdown]
# **The question.** Each witness is outranked by `(1 − AUROC) · N_neg` normal cells on average
# (notebook 05, §5) — here counted directly on a bag of 200 cells with 10 witnesses whose scores
# are shifted by one standard deviation.

# %%
rng = np.random.default_rng(0)
labels = np.r_[np.ones(10, int), np.zeros(190, int)]
scores = rng.normal(size=200) + labels
auc = instance_auroc(scores, labels)
counted = np.mean([(scores[labels == 0] > s).sum() for s in scores[labels == 1]])
print(f"AUROC {auc:.3f}: (1 - AUROC) x N_neg = {(1 - auc) * 190:.1f}, counted {counted:.1f} "
      f"normal cells above each of the 10 witnesses")
assert np.isclose(counted, (1 - auc) * 190)
