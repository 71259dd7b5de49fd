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
# # Solutions · 04 · Pretraining
#
# **For teachers.** Worked solutions to the exercises at the end of `04_pretraining.ipynb`, each
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

import inspect
import math

import torch
import torch.nn.functional as F

from slamags_core import exercises
from slamags_core.losses import nt_xent, similarity_loss
from slamags_core.monitor import collapse_report

# %% [markdown]
# ## Exercise 1 · The monitor's std ratio
#
# Normalising first makes the number about directions, not lengths; `std(dim=0)` is the spread of
# each dimension over the rows. Unit vectors spread evenly over the sphere have per-dimension std
# about `1/√D`, hence the factor `√D`.

# %%
def std_ratio(E):
    U = F.normalize(E, dim=1)                   # (N, D) unit rows
    return float(U.std(dim=0).mean() * math.sqrt(E.shape[1]))


# %%
exercises.check_std_ratio(std_ratio, strict=True)

# %% [markdown]
# **Which toy matrix of §7 does `std_ratio_min` flag?** The same three matrices, built as in §7:
# only the complete collapse falls below the threshold; the 3-D subspace keeps a std ratio near
# that of the spread matrix, so the std ratio alone cannot see dimensional collapse.

# %%
std_ratio_min = inspect.signature(collapse_report).parameters["std_ratio_min"].default
gen_demo = torch.Generator().manual_seed(0)
D_demo = 32
toys = {
    "spread": torch.randn(512, D_demo, generator=gen_demo),
    "3-D subspace": torch.randn(512, 3, generator=gen_demo) @ torch.randn(3, D_demo, generator=gen_demo),
    "one point + 1 % noise": (torch.randn(1, D_demo, generator=gen_demo)
                              + 0.01 * torch.randn(512, D_demo, generator=gen_demo)),
}
flagged = {name: std_ratio(E) < std_ratio_min for name, E in toys.items()}
for name, E in toys.items():
    print(f"{name:>22}: std ratio {std_ratio(E):.3f}  below std_ratio_min = {std_ratio_min}: {flagged[name]}")
assert flagged == {"spread": False, "3-D subspace": False, "one point + 1 % noise": True}

# %% [markdown]
# ## Exercise 2 · The effective rank, and dimensional collapse
#
# The effective rank is the exponential of the entropy of the singular-value distribution: `D`
# equal singular values give `D`, one dominant direction gives 1. The matrix below lies in a 4-D
# subspace of 32 dimensions: its effective rank is at most 4, yet its std ratio is far from 0 —
# dimensional, not complete, collapse, and the monitor's flag (std ratio below its threshold or
# effective rank below its threshold) stays silent.

# %%
def effective_rank(E):
    U = F.normalize(E.double(), dim=1)
    s = torch.linalg.svdvals(U)                  # λ_k
    p = s / s.sum()                              # ρ_k
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


# %%
exercises.check_effective_rank(effective_rank, strict=True)

gen = torch.Generator().manual_seed(0)
four_directions = torch.randn(512, 4, generator=gen) @ torch.randn(4, 32, generator=gen)
print(f"4-D subspace of 32 dims: std ratio {std_ratio(four_directions):.2f}, effective rank "
      f"{effective_rank(four_directions):.2f}, flagged: {collapse_report(four_directions)['collapsed']}")
assert std_ratio(four_directions) > 0.5 and effective_rank(four_directions) <= 4

# %% [markdown]
# ## Exercise 3 · The two task losses of one SLAM step
#
# One forward per pool, both views of the pool concatenated, and the losses on the projections
# `z`. One forward over both pools would let BatchNorm's batch statistics mix positive and negative
# patches (and make each task's backward traverse the whole batch); four forwards (one per view)
# would give each view its own statistics. Either changes the numbers, which is how the grader
# tells them apart.

# %%
def slam_losses(encoder, pos_views, neg_views, temperature):
    _, Z_pos = encoder(torch.cat(pos_views))     # (2 B_pos, D_z)
    _, Z_neg = encoder(torch.cat(neg_views))     # (2 B_neg, D_z)
    return (nt_xent(*Z_pos.chunk(2), temperature),
            similarity_loss(*Z_neg.chunk(2), temperature))


# %%
exercises.check_slam_losses(slam_losses, strict=True)
