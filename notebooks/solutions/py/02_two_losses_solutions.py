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
# # Solutions · 02 · The two SLAM losses
#
# **For teachers.** Worked solutions to the exercises at the end of `02_two_losses.ipynb`, each
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

import torch
import torch.nn.functional as F

from slamags_core import exercises

# %% [markdown]
# ## Exercise 1 · NT-Xent from the formula
#
# Stack and normalise the views, divide the similarities by `t`, mask the diagonal with `−∞` (a
# view is not its own candidate), and take `logsumexp` over each row minus the partner's logit.
# `torch.logsumexp` subtracts the row maximum before exponentiating, which is what keeps
# `t = 0.01` finite in float32. Typical mistakes the grader names: the diagonal left in, no
# normalisation, only the `B` anchors of `z1`, a sum instead of a mean, the partner dropped from
# the denominator.

# %%
def my_nt_xent(z1, z2, temperature):
    U = F.normalize(torch.cat([z1, z2]), dim=1)   # (2B, D) unit views u_i
    n, B = U.shape[0], z1.shape[0]
    logits = (U @ U.T / temperature).masked_fill(torch.eye(n, dtype=torch.bool, device=U.device),
                                                 -math.inf)  # (2B, 2B) s_ij / t, j != i
    i = torch.arange(n, device=U.device)
    partner = (i + B) % n                          # p(i)
    return (torch.logsumexp(logits, dim=1) - logits[i, partner]).mean()


# %%
exercises.check_nt_xent(my_nt_xent, strict=True)

# %% [markdown]
# ## Exercise 2 · The similarity loss
#
# `1 − mean_{i≠j} s_ij`, divided by `t`. The `O(BD)` form uses `Σ_{i,j} s_ij = ‖Σ_i u_i‖²` and
# removes the diagonal `Σ_i s_ii = 2B`. Answers: all views equal gives `s_ij = 1`, so `L_sim = 0`
# (the minimum); views that sum to zero give `Σ_{i≠j} s_ij = 0 − 2B`, so the mean is
# `−1/(2B − 1)` and `L_sim = 2B / ((2B − 1) t)`, the maximum.

# %%
def my_similarity_loss(z1, z2, temperature):
    U = F.normalize(torch.cat([z1, z2]), dim=1)   # (2B, D)
    n = U.shape[0]
    off_diagonal = U.sum(0).pow(2).sum() - U.pow(2).sum()  # sum_{i != j} s_ij
    return (1 - off_diagonal / (n * (n - 1))) / temperature


# %%
exercises.check_similarity_loss(my_similarity_loss, strict=True)

# %% [markdown]
# ## Exercise 3 · One-label SupCon, and its flat valley
#
# With one label every other view is a positive, so each anchor's term is a log-sum-exp minus a
# mean over the same `V − 1` values `x_a = s_ia / t`. Jensen: `log mean exp(x) ≥ mean x`, i.e.
# `logsumexp(x) − mean(x) ≥ log(V − 1)`, with equality iff all `x_a` are equal — at collapse
# (all `s = 1`) and on the equiangular simplex (all `s = −1/(V − 1)`) alike.

# %%
def one_label_supcon(z, temperature):
    U = F.normalize(z, dim=1)                       # (V, D)
    n = U.shape[0]
    S = U @ U.T / temperature
    others = ~torch.eye(n, dtype=torch.bool, device=U.device)
    lse = torch.logsumexp(S.masked_fill(~others, -math.inf), dim=1)        # (V,)
    mean_others = (S * others).sum(1) / (n - 1)                              # (V,)
    return (lse - mean_others).mean()


# %%
exercises.check_one_label_supcon(one_label_supcon, strict=True)

n_views, t = 6, 0.07
collapse = torch.ones(n_views, 3, dtype=torch.float64)
simplex = F.normalize(torch.eye(n_views, dtype=torch.float64) - 1 / n_views, dim=1)
print(f"collapse: {one_label_supcon(collapse, t):.6f}  simplex: {one_label_supcon(simplex, t):.6f}  "
      f"log(V - 1) = {math.log(n_views - 1):.6f}")
