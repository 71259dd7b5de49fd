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
# # Solutions · 03 · Gradient conflict and Adaptive Gradient Surgery
#
# **For teachers.** Worked solutions to the exercises at the end of `03_gradient_surgery.ipynb`,
# each followed by the same grader the students run, here with `strict=True`: a wrong solution
# raises, so the test suite (nbval) keeps these solutions correct. Hand students the notebooks
# without the `solutions/` folder (see `docs/teaching.md`).
#
# **Run time.** A few seconds on a CPU, any preset.

# %%
try:
    import slamags_core  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    import os
    import sys
    sys.path.insert(0, os.path.abspath(os.path.join("..", "..")))

import torch

from slamags_core import exercises

# %% [markdown]
# ## Exercise 1 · PCGrad for SLAM's two tasks
#
# Both projections use the *original* gradients: `g̃_con = g_con − <g_con, g_sim>/‖g_sim‖² g_sim`
# and symmetrically. The classic slip projects `g_sim` against the already projected `g̃_con`;
# since `g̃_con ⟂ g_sim`, the second test then often finds no conflict and `g_sim` is kept whole.

# %%
def pcgrad_two(g_con, g_sim):
    dot = g_con @ g_sim
    if dot >= 0:                       # no conflict: the plain sum
        return g_con + g_sim
    g_con_pc = g_con - dot / (g_sim @ g_sim) * g_sim
    g_sim_pc = g_sim - dot / (g_con @ g_con) * g_con
    return g_con_pc + g_sim_pc


# %%
exercises.check_pcgrad_two_tasks(pcgrad_two, strict=True)

# %% [markdown]
# ## Exercise 2 · PCGrad for `T` tasks
#
# Each task keeps a running copy `g̃_i`; the inner products are taken with the running copy (it
# may have stopped conflicting after an earlier projection), the projections always onto the
# original `g_j`.

# %%
def pcgrad(grads, order):
    projected = []
    for i, g in enumerate(grads):
        g_i = g.clone()
        for j in order:
            if j == i:
                continue
            dot = g_i @ grads[j]
            if dot < 0:
                g_i = g_i - dot / (grads[j] @ grads[j]) * grads[j]
        projected.append(g_i)
    return torch.stack(projected).sum(0)


# %%
exercises.check_pcgrad(pcgrad, strict=True)

# %% [markdown]
# **Order matters.** Three gradients in 3-D with a cycle of conflicts (each pair's inner product
# is negative): two orders give different updates.

# %%
grads = [torch.tensor(v, dtype=torch.float64) for v in ([1.0, 0.2, 0.0], [-0.8, 1.0, 0.3],
                                                        [-0.3, -0.9, 1.0])]
print("pairwise inner products:", [round(float(grads[i] @ grads[j]), 2) for i, j in ((0, 1), (0, 2), (1, 2))])
first, second = pcgrad(grads, [0, 1, 2]), pcgrad(grads, [2, 1, 0])
print("order 0, 1, 2:", first.numpy().round(3), "  order 2, 1, 0:", second.numpy().round(3))
assert not torch.allclose(first, second)

# %% [markdown]
# ## Exercise 3 · Adaptive Gradient Surgery
#
# Rescale `g_pc` to `‖g_con + g_sim‖`. When `g_pc = 0` (exactly opposite gradients: PCGrad removes
# everything) there is no direction to rescale, and `0 · 0 / 0` would give NaN: return the zero
# vector (the package divides by `‖g_pc‖ + 1e-12`). Why AGS keeps the meaning of the learning rate:
# its step has the plain sum's length, so `lr` scales the same quantity with or without surgery;
# PCGrad's `g_pc` can be several times longer than `g_sum` exactly when the tasks fight.

# %%
def ags(g_con, g_sim):
    g_pc = pcgrad_two(g_con, g_sim)
    norm_pc = g_pc.norm()
    if norm_pc == 0:
        return g_pc
    return g_pc * (g_con + g_sim).norm() / norm_pc


# %%
exercises.check_ags(ags, strict=True)
