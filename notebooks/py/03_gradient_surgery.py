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
# # 03 · Gradient conflict and Adaptive Gradient Surgery
#
# **Goal.** See *why* SLAM-AGS needs gradient surgery: its two tasks (NT-Xent on slide-positive
# patches, the similarity loss on slide-negative patches, notebook 02) pull the shared encoder in
# nearly opposite directions. Compare three ways of combining the two task gradients
# `g_con` (of NT-Xent, `L_con`) and `g_sim` (of the similarity loss, `L_sim`):
#
# * **sum** — `g_sum = g_con + g_sim`;
# * **PCGrad** (Yu et al., NeurIPS 2020) — when `<g_con, g_sim> < 0`, drop from each gradient its
#   component along the *other* task's original gradient (giving `g̃_con`, `g̃_sim`), then sum:
#   `g_pc = g̃_con + g̃_sim`;
# * **AGS** (Acerbis et al., ISBI 2026) — PCGrad, then rescale to the norm of the sum:
#   `g_ags = g_pc · ‖g_sum‖ / ‖g_pc‖`.
#
# **What you will learn.** (1) On a 2-D toy: trajectories of the three methods on a contour plot
# and where gradients conflict. (2) On the real encoder and synthetic cytology batches: the
# per-step cosine between the two task gradients, how often they conflict, the norms before and
# after surgery, a per-layer view, and loss curves with and without AGS. When AGS changes
# nothing, and what the norm rescale buys.
#
# **Run time.** `smoke`: under a minute. `laptop` (default, bags of 1000 cells): 2.4 min wall
# clock with an empty cache on this project's 2-core CPU, otherwise idle (measured 2026-11-25,
# top to bottom with nbconvert): rendering the bag set and two short pretraining runs (§2 prints
# their step budget) dominate.
#
# **Notation.** `θ` the parameters, `g_i = ∇_θ L_i` the gradient of task `i` (SLAM's two tasks are
# *con* and *sim*; the 2-D toy's are numbered 1 and 2), `g̃_i` after PCGrad's projections, `g_sum`,
# `g_pc`, `g_ags` the three combined updates, `T` the number of tasks. Every symbol of the course:
# [docs/notation.md](../docs/notation.md).
#
# **Exercises** at the end, each with an automatic check: PCGrad for two tasks, PCGrad for `T`
# tasks in a given order, and AGS.

# %%
try:
    import slamags_core  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    import os
    import sys
    sys.path.insert(0, os.path.abspath(".."))

import copy
import dataclasses
import math
import warnings

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots
import torch
from torch.testing import assert_close

from slamags_core import get_device, get_preset, set_seed
from slamags_core.augment import Augmenter
from slamags_core.bags import load_or_build_bags
from slamags_core.batching import batch_shares
from slamags_core.losses import nt_xent, similarity_loss
from slamags_core.pretrain import pretrain
from slamags_core.surgery import combine, param_sizes, task_gradients

preset = get_preset()
gen = set_seed(preset.pretrain.seed)
device = get_device(preset.pretrain.device)
print(f"preset={preset.name}  seed={preset.pretrain.seed}  device={device}")

# %% [markdown]
# ## 1 · A 2-D toy with two conflicting losses
#
# Parameters `θ = (θ_1, θ_2)`, two tasks numbered 1 and 2 (a toy, not SLAM) with gradients `g_1`,
# `g_2`. Task 1 is a steep, elongated quadratic bowl centred at `θ*_1 = (2, 0)`; task 2 a shallow,
# slowly saturating bowl centred at `θ*_2 = (−2, 0)`:
#
# $$L_1(\theta) = \tfrac12(\theta-\theta^*_1)^\top A\,(\theta-\theta^*_1),\quad
# L_2(\theta) = 3\log\!\big(1 + \tfrac12\lVert\theta-\theta^*_2\rVert^2\big).$$
#
# Between the two minima lies the *Pareto set*: points where no step can lower one loss without
# raising the other (the two gradients are exactly opposite there). Task 1's gradient is much
# larger than task 2's almost everywhere — the setting in which the plain sum lets one task
# dominate.

# %%
DT = torch.float64
rot = 0.5
R = torch.tensor([[math.cos(rot), -math.sin(rot)], [math.sin(rot), math.cos(rot)]], dtype=DT)
A = R @ torch.diag(torch.tensor([1.0, 12.0], dtype=DT)) @ R.T  # curvature of task 1
opt1, opt2 = torch.tensor([2.0, 0.0], dtype=DT), torch.tensor([-2.0, 0.0], dtype=DT)  # θ*_1, θ*_2


def L1(p):  # p (..., 2)
    d = p - opt1
    return 0.5 * torch.einsum("...i,ij,...j->...", d, A, d)


def L2(p):
    return 3 * torch.log1p(0.5 * (p - opt2).pow(2).sum(-1))


def descend(method, start, lr=0.03, steps=300, seed=0):
    # plain gradient descent on theta with the two task gradients combined by `method`
    theta = torch.nn.Parameter(torch.tensor(start, dtype=DT))
    order_gen = torch.Generator().manual_seed(seed)
    path, losses, cosines = [theta.detach().clone()], [], []
    for _ in range(steps):
        grads = task_gradients([L1(theta), L2(theta)], [theta])  # 2 x (2,)
        g, stats = combine(grads, method, generator=order_gen)
        if method == "ags":  # the defining property: AGS keeps the plain sum's norm
            assert_close(g.norm(), (grads[0] + grads[1]).norm())
        with torch.no_grad():
            theta -= lr * g
        path.append(theta.detach().clone())
        losses.append((L1(theta).item(), L2(theta).item()))
        cosines.append(stats.cosine[0, 1].item())
    return torch.stack(path).numpy(), np.array(losses), np.array(cosines)


starts = [(0.0, 2.5), (1.0, -2.5), (-3.0, 2.0)]
methods = ("sum", "pcgrad", "ags")
runs = {(m, s): descend(m, s) for m in methods for s in starts}
for s in starts:
    print(f"start {s}: " + "   ".join(
        f"{m}: end ({runs[m, s][0][-1, 0]:+.2f}, {runs[m, s][0][-1, 1]:+.2f}) "
        f"L1={runs[m, s][1][-1, 0]:.2f} L2={runs[m, s][1][-1, 1]:.2f}" for m in methods))

# %%
xs, ys = np.linspace(-4, 4, 161), np.linspace(-3.5, 3.5, 141)
grid = torch.tensor(np.stack(np.meshgrid(xs, ys), -1), dtype=DT).requires_grad_(True)
l1, l2 = L1(grid), L2(grid)
G1 = torch.autograd.grad(l1.sum(), grid, retain_graph=True)[0]
G2 = torch.autograd.grad(l2.sum(), grid)[0]
cos_map = torch.nn.functional.cosine_similarity(G1, G2, dim=-1).numpy()
total = (l1 + l2).detach().numpy()

style = {"sum": dict(color="black", dash="dot"), "pcgrad": dict(color="royalblue"),
         "ags": dict(color="crimson")}
fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.08,
                    subplot_titles=("trajectories on L1 + L2", "cosine(g_1, g_2): red = conflict"))
fig.add_trace(go.Contour(x=xs, y=ys, z=np.log(total), colorscale="Greys", showscale=False,
                         contours=dict(showlabels=False), opacity=0.6), 1, 1)
fig.add_trace(go.Heatmap(x=xs, y=ys, z=cos_map, colorscale="RdBu", zmid=0, zmin=-1, zmax=1,
                         colorbar=dict(x=1.02, len=0.8)), 1, 2)
for s in starts:
    for m in methods:
        path = runs[m, s][0]
        for col in (1, 2):
            fig.add_trace(go.Scatter(x=path[:, 0], y=path[:, 1], mode="lines", line=style[m],
                                     name=m, legendgroup=m, showlegend=(s == starts[0] and col == 1)),
                          1, col)
    fig.add_trace(go.Scatter(x=[s[0]], y=[s[1]], mode="markers", marker=dict(color="green", size=9),
                             showlegend=False), 1, 1)
fig.add_trace(go.Scatter(x=[2, -2], y=[0, 0], mode="markers+text", text=["min L1", "min L2"],
                         textposition="bottom center", marker=dict(symbol="x", size=10, color="orange"),
                         showlegend=False), 1, 1)
fig.update_layout(height=460, width=1000)
fig.show()

# %% [markdown]
# *What you should see:* left, from each green start the three paths (sum dotted black, PCGrad
# blue, AGS red) leave together and split where they meet the band between the two minima; right,
# that band is where the cosine is red (the gradients conflict) — wherever it is blue the three
# paths coincide.

# %%
start = starts[1]
fig = make_subplots(rows=1, cols=3, subplot_titles=(f"L1 from {start}", f"L2 from {start}",
                                                    "cosine(g_1, g_2) along the path"))
for m in methods:
    _, losses, cosines = runs[m, start]
    fig.add_trace(go.Scatter(y=losses[:, 0], line=style[m], name=m, legendgroup=m), 1, 1)
    fig.add_trace(go.Scatter(y=losses[:, 1], line=style[m], name=m, legendgroup=m,
                             showlegend=False), 1, 2)
    fig.add_trace(go.Scatter(y=cosines, line=style[m], name=m, legendgroup=m,
                             showlegend=False), 1, 3)
fig.update_xaxes(title="step", type="log")
fig.update_layout(height=330, width=1000)
fig.show()

# %% [markdown]
# *What you should see:* `L_1` falls fast for all three methods; `L_2` (middle) behaves
# differently for each; the cosine (right) drops towards −1 once the paths reach the conflict band.
# The cell below puts numbers on what the reading that follows claims.

# %%
K_EARLY = 10  # by about this step every path has reached the conflict band
for st in starts:
    for m in methods:
        path, losses, cosines = runs[m, st]
        early, end = losses[K_EARLY - 1], losses[-1]
        print(f"start {str(st):12s} {m:7s} step {K_EARLY} -> end:  L_1 {early[0]:6.2f} -> {end[0]:6.2f}   "
              f"L_2 {early[1]:5.2f} -> {end[1]:5.2f}   moved {np.linalg.norm(path[-1] - path[K_EARLY]):4.2f} "
              f"after step {K_EARLY}   conflicting steps {np.mean(cosines < 0):4.0%}")
pc_end, ags_end = runs["pcgrad", starts[2]][1][-1], runs["ags", starts[2]][1][-1]
print(f"from {starts[2]}: PCGrad ends at L_1 = {pc_end[0]:.1f}, AGS at L_1 = {ags_end[0]:.1f}")

# %% [markdown]
# **Reading the toy** (check each point against the numbers printed above).
#
# * **sum** follows the dominant task 1 and then creeps to the minimum of `L1 + L2` near task 1's
#   minimum; on the way task 2's loss goes *up* once the path has reached the conflict band (middle
#   panel, start (1, −2.5): compare its `L_2` at step 10 with the end): one task is sacrificed to
#   the other.
# * **PCGrad** removes the conflicting components, so — to first order — its step lowers *both*
#   losses. Its update shrinks to zero as the two gradients become exactly opposite, so it stops
#   on the Pareto set close to where it first reaches it (it barely moves after step 10: see
#   "moved"): different starts, different trade-offs.
# * **AGS** moves in PCGrad's direction but with the *sum's* step length. Near the Pareto set
#   PCGrad's direction runs along the set while `‖g_1 + g_2‖` stays large (the two gradients do not
#   cancel when their sizes differ), so AGS does not stop where it reaches the set: it keeps
#   sliding along it (zig-zagging across it, with a finite step; compare "moved" with PCGrad's).
#   From the start at (−3, 2)
#   PCGrad stops at a point that almost ignores task 1 (its final `L_1` is printed above), while
#   AGS slides on to a far more balanced trade-off (a much smaller `L_1`). Its only true fixed
#   point is where `g_1 + g_2 = 0` (or where the projected gradients vanish exactly); how far it
#   travels depends on the step size — a property of this toy, not a theorem.
# * Wherever the gradients do not conflict (blue in the right panel), all three methods take
#   exactly the same step.

# %% [markdown]
# ## 2 · The real encoder on synthetic cytology batches
#
# Now the actual SLAM-AGS setting: the package's encoder (`preset.pretrain`), the two losses and
# the paper's augmentations, on the synthetic bags of notebook 01. We run the package's
# pretraining loop twice with the same seed, initial weights and batches — once with the plain sum
# (`slam_sum`) and once with AGS (`slam_ags`) — for a short run, and read the per-step surgery
# statistics it logs (`result.history`).

# %%
bagset = load_or_build_bags(preset.cells, preset.bags)
pos, neg = bagset.pretraining_pools()
two_passes = 2 * math.ceil((len(pos) + len(neg)) / preset.pretrain.batch_size)  # steps
steps = min(preset.pretrain.steps, two_passes)
cfg = dataclasses.replace(preset.pretrain, steps=steps,
                          warmup_steps=min(preset.pretrain.warmup_steps, steps))
print(f"pools: {len(pos)} positive-slide and {len(neg)} negative-slide patches "
      f"{pos.shape[1:]};  encoder={cfg.encoder} width={cfg.width} crop={cfg.crop_size} "
      f"batch={cfg.batch_size} steps={cfg.steps} "
      f"({cfg.steps * cfg.batch_size / (len(pos) + len(neg)):.1f} passes over the pools)")
results = {}
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # the collapse monitor may warn during so short a run
    for method in ("slam_sum", "slam_ags"):
        results[method] = pretrain(method, pos, neg, cfg, device=device, progress=False)
hist = {m: r.history for m, r in results.items()}
print({m: len(h) for m, h in hist.items()}, "steps")


# %%
def series(method, key):
    return np.array([rec[key] for rec in hist[method]], dtype=float)


for m in hist:
    cos = series(m, "cosine")
    print(f"{m:9s} conflicting steps: {np.mean(cos < 0):.0%}   cosine median {np.median(cos):+.3f} "
          f"(range {cos.min():+.3f} .. {cos.max():+.3f})")

fig = make_subplots(rows=1, cols=2, subplot_titles=("cosine(g_con, g_sim) per step",
                                                    "norms per step (slam_ags)"))
for m, colour in (("slam_sum", "black"), ("slam_ags", "crimson")):
    fig.add_trace(go.Scatter(y=series(m, "cosine"), name=m, line=dict(color=colour)), 1, 1)
fig.add_hline(y=0, line=dict(color="grey", dash="dash"), row=1, col=1)
for key, colour in (("norm_con", "seagreen"), ("norm_sim", "darkorange"), ("norm_sum", "black"),
                    ("norm_surgery", "royalblue"), ("norm_out", "crimson")):
    fig.add_trace(go.Scatter(y=series("slam_ags", key), name=key, line=dict(color=colour)), 1, 2)
fig.update_xaxes(title="step")
fig.update_yaxes(type="log", row=1, col=2)
fig.update_layout(height=360, width=1000)
fig.show()

# %% [markdown]
# *What you should see:* left, the per-step cosine of both runs below the dashed zero line on
# (nearly) every step (the printed share of conflicting steps says how many); right, the two task
# norms `norm_con` and `norm_sim` above the sum's `norm_sum`, and AGS's `norm_out` on top of
# `norm_sum`.
#
# **What the norms say.** The cell below prints, per step (median), how much larger `‖g_con‖` and
# `‖g_sim‖` are than `‖g_con + g_sim‖`: ratios well above 1 mean the two tasks largely cancel.
# PCGrad's combined gradient (`norm_surgery`) is larger than the sum's when the cancelling
# components are removed (with a milder conflict and very unequal task norms it can also be
# smaller; check the printed ratio); AGS brings it back to `norm_out = norm_sum`. So AGS =
# *PCGrad's direction at the plain sum's step size*: the learning rate and schedule mean the same
# as for `slam_sum`, while PCGrad alone would silently take larger steps exactly when the tasks
# fight hardest. And on a step without conflict (cosine ≥ 0) AGS changes nothing at all — it
# returns the plain sum exactly (asserted below for every such step):

# %%
ags_hist = hist["slam_ags"]
calm = [r for r in ags_hist if r["cosine"] >= 0]
for r in calm:
    assert r["norm_out"] == r["norm_sum"] == r["norm_surgery"] and not r["projected"]
for r in ags_hist:  # AGS always keeps the sum's norm
    assert math.isclose(r["norm_out"], r["norm_sum"], rel_tol=1e-4)
norm_sum = series("slam_ags", "norm_sum")
print(f"median ‖g_con‖ / ‖g_sum‖ = {np.median(series('slam_ags', 'norm_con') / norm_sum):.2f}, "
      f"‖g_sim‖ / ‖g_sum‖ = {np.median(series('slam_ags', 'norm_sim') / norm_sum):.2f}")
ratio = series("slam_ags", "norm_surgery") / norm_sum
print(f"{len(calm)} of {len(ags_hist)} AGS steps had no conflict (identical to the sum there); "
      f"PCGrad alone would have stepped {np.median(ratio):.2f}x the sum's norm (median)")


# %% [markdown]
# ### Which layers fight? A per-layer view
#
# The global cosine hides *where* the conflict lives. `combine(..., sizes=param_sizes(params))`
# computes the Gram matrix per parameter tensor as well (`stats.segment_cosine`; the same
# numbers drive the per-tensor variant of the surgery). Below: the cosine between the two task
# gradients for every weight tensor of the encoder, averaged over a few batches, at
# initialisation and after the two short runs, with a summary per column printed under the
# heatmap.

# %%
def layer_cosines(encoder, n_batches=3, seed=123):
    # per-weight-tensor cosine(g_con, g_sim), averaged over a few SLAM batches
    enc = copy.deepcopy(encoder).to(device).train()  # train mode as in pretraining; a copy
    named = [(n, p) for n, p in enc.named_parameters() if p.dim() > 1]  # conv/linear weights
    names, params = zip(*named)
    gen = torch.Generator().manual_seed(seed)
    aug = Augmenter.from_config(cfg, device, generator=gen)
    half = cfg.batch_size // 2
    rows = []
    for _ in range(n_batches):
        xp = pos[torch.randperm(len(pos), generator=gen)[:half].numpy()]
        xn = neg[torch.randperm(len(neg), generator=gen)[:half].numpy()]
        _, zp = enc(torch.cat(aug(xp)))
        _, zn = enc(torch.cat(aug(xn, center_first=True)))
        losses = [nt_xent(*zp.chunk(2), cfg.temperature),
                  similarity_loss(*zn.chunk(2), cfg.temperature)]
        _, stats = combine(task_gradients(losses, params), "sum", sizes=param_sizes(params))
        rows.append(stats.segment_cosine[:, 0, 1].cpu())
    return list(names), torch.stack(rows).mean(0).numpy()


from slamags_core.encoders import build_encoder  # noqa: E402

torch.manual_seed(cfg.seed)
init = build_encoder(cfg)
cols = {"init": init, "after slam_sum": results["slam_sum"].encoder,
        "after slam_ags": results["slam_ags"].encoder}
layer_cos = {}
for label, enc in cols.items():
    names, layer_cos[label] = layer_cosines(enc)
Z = np.stack([layer_cos[c] for c in cols], 1)  # (layers, 3)
fig = go.Figure(go.Heatmap(z=Z, x=list(cols), y=names, colorscale="RdBu", zmid=0, zmin=-1, zmax=1,
                           text=np.round(Z, 2), texttemplate="%{text}"))
fig.update_yaxes(autorange="reversed")
fig.update_layout(title="cosine(g_con, g_sim) per weight tensor", height=120 + 28 * len(names),
                  width=700)
fig.show()
for j, label in enumerate(cols):
    worst = int(np.argmin(Z[:, j]))
    print(f"{label:15s} tensors in conflict: {np.mean(Z[:, j] < 0):4.0%}   median cosine "
          f"{np.median(Z[:, j]):+.2f}   strongest conflict {Z[worst, j]:+.2f} ({names[worst]})")

# %% [markdown]
# *What you should see:* mostly red cells, i.e. weight tensors whose two task gradients point
# against each other; compare the three columns' printed shares and medians to see whether the
# short runs deepened the conflict and where (backbone or projection head) it is strongest.

# %%
fig = make_subplots(rows=1, cols=3, subplot_titles=("NT-Xent (slide-positive)",
                                                    "similarity loss (slide-negative)",
                                                    "collapse monitor: std of unit z"))
for m, colour in (("slam_sum", "black"), ("slam_ags", "crimson")):
    fig.add_trace(go.Scatter(y=series(m, "loss_con"), name=m, legendgroup=m,
                             line=dict(color=colour)), 1, 1)
    fig.add_trace(go.Scatter(y=series(m, "loss_sim"), name=m, legendgroup=m, showlegend=False,
                             line=dict(color=colour)), 1, 2)
    ep = results[m].summaries
    fig.add_trace(go.Scatter(x=[e["step"] for e in ep], y=[e["z_std"] for e in ep], name=m,
                             legendgroup=m, showlegend=False, mode="lines+markers",
                             line=dict(color=colour)), 1, 3)
fig.update_xaxes(title="step", row=1, col=1)
fig.update_xaxes(title="step", row=1, col=2)
fig.update_xaxes(title="step", row=1, col=3)
fig.update_yaxes(type="log", row=1, col=2)
fig.update_layout(height=340, width=1000)
fig.show()
for m, r in results.items():
    e = r.summaries[-1]
    print(f"{m:9s} final NT-Xent {series(m, 'loss_con')[-1]:.3f}  similarity "
          f"{series(m, 'loss_sim')[-1]:.4f}  z_std {e['z_std']:.4f}  h_std {e['h_std']:.4f}  "
          f"(std ratios: z {e['z_std_ratio']:.3f}, h {e['h_std_ratio']:.3f})")
b_pos, _ = batch_shares(len(pos), len(neg), cfg.batch_size)  # positives per step
print(f"NT-Xent at chance, log(2 B_pos - 1) with B_pos = {b_pos}: {math.log(2 * b_pos - 1):.3f}")

# %% [markdown]
# *What you should see:* the similarity loss (log axis) falls by orders of magnitude in both runs,
# while NT-Xent stays close to its chance level `log(2B_pos − 1)` (printed above next to the final
# values) and the spread of the unit projections `z` (right, step 0 = initialisation) stays near
# 0. Check the printed std ratios: if `z`'s is far below 1 from the start, the untrained encoder
# already maps all patches to nearly one direction, and a run this short — with or without AGS —
# does not spread them. Notebook 04 follows full runs and monitors `h` as well as `z`.

# %% [markdown]
# ## Take-aways
#
# * The two SLAM tasks conflict on (nearly) every step of the real encoder: the similarity loss
#   pulls all negative-slide embeddings together, NT-Xent pushes patches apart, and both act on
#   the same shared weights. Check the share of conflicting steps and the median cosine printed in
#   §2.
# * PCGrad removes the conflicting components; AGS keeps that direction but restores the plain
#   sum's norm, so the optimiser's learning rate keeps its meaning. When the gradients do not
#   conflict, AGS is exactly the plain sum.
# * Runs of at most two passes over the pools are far too short to compare the
#   *representations* — that is the job of notebooks 04–08 (pretraining, MIL, retrieval, the
#   witness-rate sweep).

# %% [markdown]
# ## Exercises
#
# Each exercise asks for one function of flat gradient tensors. The cell under it calls a grader
# from `slamags_core.exercises`, which compares your function with `surgery.combine` on random and
# edge-case gradients (agreeing, opposite, orthogonal, very unequal norms, float32) and tells you
# which input failed, what was expected, what you returned and — if your answer matches a typical
# mistake — which one. Until you write the function, the check says *not attempted*. (Teachers:
# worked solutions are in `notebooks/solutions/`; see `docs/teaching.md`.)

# %%
from slamags_core import exercises

# %% [markdown]
# ### Exercise 1 · PCGrad for SLAM's two tasks
#
# Write `pcgrad_two(g_con, g_sim)` returning `g_pc = g̃_con + g̃_sim`: when the two gradients
# conflict, each loses its component along the *other task's original* gradient; otherwise both
# stay as they are.

# %% tags=["exercise"]
def pcgrad_two(g_con, g_sim):
    # your code here
    raise NotImplementedError("exercise 1: pcgrad_two")


# %% tags=["exercise-check"]
exercises.check_pcgrad_two_tasks(pcgrad_two)

# %% [markdown]
# ### Exercise 2 · PCGrad for `T` tasks
#
# With three or more tasks the order matters. Write `pcgrad(grads, order)`: `grads` a list of `T`
# flat gradients, `order` a permutation of `range(T)`. Each task `i` starts from a copy
# `g̃_i = g_i` and visits the other tasks `j` in `order`; whenever `<g̃_i, g_j> < 0` it loses its
# component along the original `g_j`. Return `Σ_i g̃_i`. Then build three gradients in 3-D for which
# two different orders give different results.

# %% tags=["exercise"]
def pcgrad(grads, order):
    # your code here
    raise NotImplementedError("exercise 2: pcgrad")


# %% tags=["exercise-check"]
exercises.check_pcgrad(pcgrad)

# %% [markdown]
# ### Exercise 3 · Adaptive Gradient Surgery
#
# Write `ags(g_con, g_sim)`: PCGrad's `g_pc`, rescaled to the norm of the plain sum
# `‖g_con + g_sim‖`. What must happen when `g_pc` is zero (try `g_sim = −g_con`)? Then explain in
# one sentence why AGS, unlike PCGrad, keeps the meaning of the learning rate.

# %% tags=["exercise"]
def ags(g_con, g_sim):
    # your code here
    raise NotImplementedError("exercise 3: ags")


# %% tags=["exercise-check"]
exercises.check_ags(ags)
