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
# # Solutions · 05 · Attention MIL
#
# **For teachers.** Worked solutions to the exercises at the end of `05_mil.ipynb`, each followed
# by the same grader the students run, here with `strict=True`: a wrong solution raises, so the
# test suite (nbval) keeps these solutions correct. Hand students the notebooks without the
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

from slamags_core import exercises

# %% [markdown]
# ## Exercise 1 · Gated attention pooling
#
# Three matrix products and a softmax over the cells (dim 0). `torch.softmax` subtracts the
# largest logit before exponentiating, so large logits do not overflow (one of the grader's cases
# multiplies `w_a` by 1000). The typical slips: the gate left out, `tanh` and the sigmoid swapped
# between `V_a` and `U_a`, the mean instead of the attention-weighted sum, a softmax over the wrong
# dimension.

# %%
def gated_attention(R, V_a, U_a, w_a):
    kappa = torch.tanh(R @ V_a.T) * torch.sigmoid(R @ U_a.T)   # κ_n: (N, D_a)
    e = kappa @ w_a                                            # e_n: (N,)
    a = torch.softmax(e, dim=0)                                # (N,), sums to 1
    return a, a @ R                                            # r̄ = Σ_n a_n r_n: (D_r,)


# %%
exercises.check_gated_attention(gated_attention, strict=True)

# %% [markdown]
# **The questions.** With `w_a = 0` every logit is 0, so `a = 1/N` and `r̄` is the mean of the
# instance codes: ABMIL starts as **mean pooling** and has to learn where to look. Scaling `w_a`
# by 10 scales every logit by 10: the softmax sharpens towards the highest-scoring cell (towards
# max pooling), the ranking of the cells unchanged.

# %%
gen = torch.Generator().manual_seed(0)
R = torch.randn(6, 4, generator=gen, dtype=torch.float64)            # (N, D_r)
V_a, U_a = torch.randn(2, 3, 4, generator=gen, dtype=torch.float64)  # (D_a, D_r) each
w_a = torch.randn(3, generator=gen, dtype=torch.float64)
a0, r0 = gated_attention(R, V_a, U_a, torch.zeros(3, dtype=torch.float64))
torch.testing.assert_close(a0, torch.full((6,), 1 / 6, dtype=torch.float64))
torch.testing.assert_close(r0, R.mean(0))
a1, _ = gated_attention(R, V_a, U_a, w_a)
a10, _ = gated_attention(R, V_a, U_a, 10 * w_a)
assert torch.equal(a1.argsort(), a10.argsort()) and a10.max() > a1.max()
print("w_a = 0:     ", a0.numpy().round(3))
print("w_a:         ", a1.numpy().round(3))
print("10 w_a:      ", a10.numpy().round(3))

# %% [markdown]
# ## Exercise 2 · How many normal cells outrank a witness?
#
# The AUROC is the share of (witness, normal cell) pairs that the witness wins, so a witness loses
# to `(1 − AUROC) · N_neg` normal cells on average. Only normal cells count: dividing by `N`
# instead of `N_neg` is the slip the grader names first. `round` halves up here
# (`floor(x + 0.5)`), unlike Python's `round`, which rounds halves to even.

# %%
def witness_outrankers(instance_auroc, bag_size, witness_rate):
    n_w = max(1, math.floor(witness_rate * bag_size + 0.5))    # N_w
    return (1 - instance_auroc) * (bag_size - n_w)             # (1 − AUROC) · N_neg


# %%
exercises.check_witness_outrankers(witness_outrankers, strict=True)

# %% [markdown]
# **The question.** Fewer outrankers than witnesses needs `(1 − AUROC) · N_neg < N_w`, i.e.
# `AUROC > 1 − N_w / N_neg`. At `N = 1000`: WR 0.5 % (`N_w = 5`) needs an AUROC above 0.995;
# WR 10 % (`N_w = 100`) is satisfied by any AUROC above 0.889. An AUROC of 0.95 — a good probe by
# most standards — leaves 45 to 50 normal cells above each witness in both cases (printed below):
# fewer than the 100 witnesses at WR 10 %, ten times the 5 witnesses at WR 0.5 %.

# %%
for wr in (0.005, 0.1):
    n_w = max(1, math.floor(wr * 1000 + 0.5))
    needed = 1 - n_w / (1000 - n_w)
    print(f"WR {wr:g}: N_w = {n_w}, AUROC needed > {needed:.4f}; "
          f"at AUROC 0.95: {witness_outrankers(0.95, 1000, wr):.1f} normal cells above each witness")
    assert witness_outrankers(needed + 1e-6, 1000, wr) < n_w < witness_outrankers(needed - 1e-3, 1000, wr)
assert round(1 - 5 / 995, 3) == 0.995 and round(1 - 100 / 900, 3) == 0.889
