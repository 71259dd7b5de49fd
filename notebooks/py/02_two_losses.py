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
# # 02 · The two SLAM losses
#
# **Goal.** Understand the two objectives that SLAM-AGS (Acerbis et al., ISBI 2026) trains one
# encoder with, by deriving each on tiny toy embeddings you can see:
#
# 1. **NT-Xent** (SimCLR) on patches from slide-**positive** bags: two views of the same patch
#    are pulled together, everything else is pushed apart.
# 2. The **similarity (alignment) loss** on patches from slide-**negative** bags: every negative
#    view is pulled towards every other — on its own it collapses free embeddings and a small MLP
#    to a point (in the CNN of notebook 04 it is the projection `z` that ends collapsed, while the
#    backbone feature `h` keeps some spread: check it in notebook 04, §7).
#
# **What you will learn.** The formulas step by step and checked against `slamags_core.losses`;
# what each loss does to free embeddings; how the temperature `t = 0.07` sharpens NT-Xent and, in
# the similarity loss, acts as a task weight; why textbook SupCon with a single label is
# *degenerate* (collapse and a maximally spread simplex get the same value), which is why the
# authors' code drops its denominator (the parts of the paper we could read do not say).
#
# **Run time.** About 15 s (`smoke`) to 30-40 s (`laptop`) of CPU time on a 2-core CPU: everything
# here is a toy of a few dozen vectors, optimised for a few hundred steps. No GPU needed.
#
# **Notation.** `B` patches, `2B` views `i, j`; `z_i` a projection, `u_i = z_i / ‖z_i‖`, `s_ij = u_i · u_j`
# the cosine similarity, `p(i)` the partner view, `t` the temperature, `L_con` (NT-Xent) and
# `L_sim` (similarity) the two SLAM losses, `h` and `z` the encoder's feature and projection. Every
# symbol of the course: [docs/notation.md](../docs/notation.md).
#
# **Exercises** at the end, each with an automatic check: NT-Xent and the similarity loss from
# their formulas, and one-label SupCon.

# %%
try:
    import slamags_core  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    import os
    import sys
    sys.path.insert(0, os.path.abspath(".."))

import math

import ipywidgets as widgets
from IPython.display import display
import numpy as np
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from slamags_core import get_device, get_preset, set_seed
from slamags_core.losses import nt_xent, similarity_loss, supcon

preset = get_preset()
gen = set_seed(preset.pretrain.seed)
device = get_device("cpu")  # toys: the CPU is fastest for a few dozen vectors
SMOKE = preset.name == "smoke"
STEPS = 150 if SMOKE else 400  # optimisation steps of the free-embedding toys
print(f"preset={preset.name}  seed={preset.pretrain.seed}  device={device}  "
      f"t={preset.pretrain.temperature}")

# %% [markdown]
# ## 1 · NT-Xent, derived on 4 patches in 2-D
#
# A batch of `B` patches gives `2B` views after two augmentations. Stack them as
# `U = [u_1 … u_2B]`, each L2-normalised, and let `s_ij = u_i · u_j` (cosine similarity). View
# `i`'s partner is `p(i) = i ± B`. NT-Xent is a `2B − 1`-way classification per view — find your
# partner among all other views:
#
# $$L_\text{con} = \frac{1}{2B}\sum_{i=1}^{2B} -\log
# \frac{\exp(s_{i,p(i)}/t)}{\sum_{j\ne i}\exp(s_{ij}/t)}
# = \frac{1}{2B}\sum_i \Big(\operatorname{logsumexp}_{j\ne i}(s_{ij}/t) - s_{i,p(i)}/t\Big).$$
#
# The right-hand form is what the package computes (stable for small `t`).

# %%
B = 4
angles = torch.tensor([0.0, 1.6, 3.1, 4.7], dtype=torch.float64)       # 4 patches on the circle
z1 = torch.stack([angles.cos(), angles.sin()], 1)                        # view 1  (B, 2)
jitter = torch.tensor([0.25, -0.3, 0.2, -0.15], dtype=torch.float64)
z2 = 1.7 * torch.stack([(angles + jitter).cos(), (angles + jitter).sin()], 1)  # view 2, longer
t = 0.5

U = F.normalize(torch.cat([z1, z2]), dim=1)       # (2B, 2) unit views
S = U @ U.T                                        # (2B, 2B) cosine similarities
partner = (torch.arange(2 * B) + B) % (2 * B)      # p(i)
logits = (S / t).masked_fill(torch.eye(2 * B, dtype=torch.bool), -math.inf)  # drop j = i
per_view = torch.logsumexp(logits, 1) - S[torch.arange(2 * B), partner] / t  # (2B,)
by_hand = per_view.mean()
print(f"by hand: {by_hand:.6f}   package: {nt_xent(z1, z2, t):.6f}")
assert_close(by_hand, nt_xent(z1, z2, t))

# %%
views = U.numpy()
fig = make_subplots(rows=1, cols=2, subplot_titles=("unit views (colour = patch)",
                                                    "cosine similarity s_ij"))
colours = px.colors.qualitative.Plotly
for b in range(B):
    for v, sym in ((b, "circle"), (b + B, "diamond")):
        fig.add_trace(go.Scatter(x=[views[v, 0]], y=[views[v, 1]], mode="markers+text",
                                 text=[f"{v}"], textposition="top center",
                                 marker=dict(size=13, symbol=sym, color=colours[b]),
                                 showlegend=False), 1, 1)
fig.add_trace(go.Heatmap(z=S.numpy(), colorscale="RdBu", zmid=0, zmin=-1, zmax=1), 1, 2)
fig.update_yaxes(scaleanchor="x", row=1, col=1)
fig.update_yaxes(autorange="reversed", row=1, col=2)
fig.update_layout(height=380, width=820)
fig.show()

# %% [markdown]
# *What you should see:* left, each colour's circle and diamond (the two views of one patch) sit
# close together on the unit circle; right, a bright diagonal (`s_ii = 1`) and two bright
# off-diagonals at `±B` (partners), the other entries lower.
#
# **Check against an oracle.** The package's NT-Xent is also tested against
# pytorch-metric-learning's `NTXentLoss` (same temperature convention; labels `0..B−1` twice make
# the partners the positives). Three configurations you can verify by hand: total collapse gives
# every logit the same value, so `L = log(2B − 1)` — chance level; a **reference configuration**
# (partners equal, all other patches orthogonal, which needs `D ≥ B`) gives
# `log(1 + (2B − 2) exp(−1/t))`. The reference configuration is *not* the optimum: the `B` patches
# placed on a regular simplex (pairwise cosine `−1/(B − 1)`, partners equal) score lower, because
# the other views are then pushed below orthogonal. The cell checks all three with `B = 4` in
# `D = 4`.

# %%
c = torch.ones(B, 2, dtype=torch.float64)
assert_close(nt_xent(c, c, t), torch.tensor(math.log(2 * B - 1), dtype=torch.float64))
print(f"collapsed: {nt_xent(c, c, t):.4f} = log(2B-1) = {math.log(2 * B - 1):.4f}")
eye = torch.eye(B, dtype=torch.float64)                  # B orthogonal patches in D = B
reference = nt_xent(eye, eye.clone(), t)
assert_close(reference, torch.tensor(math.log(1 + (2 * B - 2) * math.exp(-1 / t)), dtype=torch.float64))
simplex_B = F.normalize(eye - 1 / B, dim=1)              # pairwise cosine -1/(B-1)
on_simplex = nt_xent(simplex_B, simplex_B.clone(), t)
print(f"reference configuration: {reference:.4f} = log(1 + (2B-2) exp(-1/t));  "
      f"simplex: {on_simplex:.4f} (lower)")
assert on_simplex < reference


# %% [markdown]
# ## 2 · What NT-Xent does: partners aligned, everything else spread
#
# Optimise 12 free 3-D embeddings (6 patches × 2 views) with NT-Xent only. Partners meet; the
# 6 pairs spread over the sphere as far from each other as they can (Wang & Isola's
# *alignment* and *uniformity*).

# %%
def optimise(loss_fn, params, steps=STEPS, lr=0.05):
    # Adam on free tensors; returns the loss after every step
    opt = torch.optim.Adam(params, lr=lr)
    history = []
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
        history.append(loss.item())
    return history


def mean_offdiag_cos(Z):
    Uz = F.normalize(Z.detach(), dim=1)
    N = Uz.shape[0]
    return ((Uz @ Uz.T).sum() - N).item() / (N * (N - 1))


B6 = 6
free1 = torch.randn(B6, 3, generator=gen, requires_grad=True)
free2 = torch.randn(B6, 3, generator=gen, requires_grad=True)
start = F.normalize(torch.cat([free1, free2]).detach(), dim=1)
hist_con = optimise(lambda: nt_xent(free1, free2, 0.2), [free1, free2])
end = F.normalize(torch.cat([free1, free2]).detach(), dim=1)
partner_cos = (end[:B6] * end[B6:]).sum(1)
print(f"NT-Xent {hist_con[0]:.3f} -> {hist_con[-1]:.3f}; partner cosine "
      f"{partner_cos.min():.3f}..{partner_cos.max():.3f}; mean cosine of all views "
      f"{mean_offdiag_cos(end):+.3f}")
assert partner_cos.min() > 0.9           # pairs aligned
assert mean_offdiag_cos(end) < 0.2       # ... and the rest spread out


# %%
def sphere_plot(before, after, title):
    fig = make_subplots(rows=1, cols=2, specs=[[{"type": "scene"}, {"type": "scene"}]],
                        subplot_titles=("before", "after"))
    colour = [colours[i % len(colours)] for i in range(B6)] * 2
    for col, P in ((1, before), (2, after)):
        P = P.numpy()
        fig.add_trace(go.Scatter3d(x=P[:, 0], y=P[:, 1], z=P[:, 2], mode="markers",
                                   marker=dict(size=6, color=colour), showlegend=False), 1, col)
    # camera further out and thin margins: the whole cube fits its half (the default cut it off)
    eye = dict(camera=dict(eye=dict(x=1.5, y=1.5, z=1.1)))
    fig.update_layout(title=title, height=420, width=860, margin=dict(l=0, r=0, b=0, t=60),
                      scene=eye, scene2=eye)
    fig.show()


sphere_plot(start, end, "NT-Xent on free embeddings (colour = patch, both views)")

# %% [markdown]
# *What you should see:* before, the 12 points lie anywhere; after, the two points of each colour
# coincide and the six pairs are spread over the sphere (the printed partner cosines and mean
# cosine say the same in numbers).

# %% [markdown]
# ## 3 · The similarity loss: alignment of all negative views
#
# Every view of a slide-negative patch carries the same label, "negative". SLAM-AGS pulls all of
# them together:
#
# $$L_\text{sim} = \frac{t}{t_\text{base}}\cdot\frac{1 - \frac{1}{2B(2B-1)}\sum_{i\ne j} s_{ij}}{t},
# \qquad t = t_\text{base} = 0.07 ,$$
#
# over the `2B` views. Because $\sum_{i,j}s_{ij} = \lVert\sum_i u_i\rVert^2$ the package computes it
# in $O(BD)$; and since $\lVert u_i-u_j\rVert^2 = 2-2s_{ij}$ it is exactly Wang & Isola's *alignment*
# term, $L_\text{sim} = \frac{1}{2t}\,\text{mean}_{i\ne j}\lVert u_i-u_j\rVert^2$.

# %%
t = preset.pretrain.temperature
n_views = 2 * B
off = ~torch.eye(n_views, dtype=torch.bool)
by_hand = (1 - S[off].mean()) / t
alignment = torch.cdist(U, U).pow(2)[off].mean() / (2 * t)
print(f"by hand {by_hand:.5f}   alignment form {alignment:.5f}   "
      f"package {similarity_loss(z1, z2, t):.5f}")
assert_close(by_hand, similarity_loss(z1, z2, t))
assert_close(alignment, similarity_loss(z1, z2, t))

# %% [markdown]
# ### Alone, it collapses
#
# Optimise the same kind of free embeddings with the similarity loss only: every view slides to
# one point, the loss goes to 0 and the mean cosine to 1. Then a tiny encoder (an MLP on random
# "images"): its outputs for *different inputs* collapse as well — the network learns to ignore
# its input. This is the model collapse that SLAM-AGS's NT-Xent task (and AGS) must prevent. In
# the real CNN the loss acts on the projection `z`, and it is `z` that collapses; the backbone
# feature `h` below the projection head can keep its spread (notebook 04, §7, measures both).

# %%
free1 = torch.randn(B6, 3, generator=gen, requires_grad=True)
free2 = torch.randn(B6, 3, generator=gen, requires_grad=True)
start = F.normalize(torch.cat([free1, free2]).detach(), dim=1)
hist_sim = optimise(lambda: similarity_loss(free1, free2, t), [free1, free2])
end = F.normalize(torch.cat([free1, free2]).detach(), dim=1)
print(f"similarity loss {hist_sim[0]:.3f} -> {hist_sim[-1]:.5f}; mean cosine "
      f"{mean_offdiag_cos(start):+.3f} -> {mean_offdiag_cos(end):+.4f}")
assert mean_offdiag_cos(end) > 0.99
sphere_plot(start, end, "similarity loss alone on free embeddings: collapse")

# %% [markdown]
# *What you should see:* after optimisation all 12 points sit on one spot of the sphere, whatever
# their colour.

# %%
torch.manual_seed(preset.pretrain.seed)
encoder = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 16))
images = torch.randn(64, 64, generator=gen)           # 64 distinct random "patches"
noise = lambda: 0.1 * torch.randn(64, 64, generator=gen)  # noqa: E731  (a toy augmentation)
spread, sims = [], []
opt = torch.optim.SGD(encoder.parameters(), lr=0.05, momentum=0.9)
for step in range(STEPS):
    opt.zero_grad()
    loss = similarity_loss(encoder(images + noise()), encoder(images + noise()), t)
    loss.backward()
    opt.step()
    sims.append(loss.item())
    with torch.no_grad():  # per-dimension std of unit outputs: ~1/sqrt(D) healthy, 0 collapsed
        spread.append(F.normalize(encoder(images), dim=1).std(0).mean().item())
print(f"tiny encoder: loss {sims[0]:.3f} -> {sims[-1]:.5f}; output spread "
      f"{spread[0]:.4f} -> {spread[-1]:.5f} ({spread[0] / spread[-1]:.0f}x smaller; unit vectors "
      f"spread evenly over the sphere would give ~{1 / math.sqrt(16):.2f})")
assert spread[-1] < 0.1 * spread[0]

fig = make_subplots(rows=1, cols=2, subplot_titles=("similarity loss", "output spread (std)"))
fig.add_trace(go.Scatter(y=sims, name="L_sim"), 1, 1)
fig.add_trace(go.Scatter(y=spread, name="std of unit outputs"), 1, 2)
fig.update_xaxes(title="step")
fig.update_layout(height=330, width=820, showlegend=False)
fig.show()

# %% [markdown]
# *What you should see:* the loss falls towards 0 and the output spread falls by the factor
# printed above: the MLP maps 64 different inputs to nearly one output.
#
# ## 4 · Temperature
#
# `t` divides every similarity before the softmax. Small `t` (SLAM-AGS: 0.07) makes the softmax
# over the `2B − 1` candidates sharp: the loss is dominated by the *hardest* negatives (those most
# similar to the anchor). Larger `t` (SimCLR's paper used 0.1 on ImageNet and 0.5 on CIFAR-10)
# spreads the weight over more negatives. Below: the softmax weight each candidate gets for anchor
# 0 of the toy batch, and the NT-Xent loss, as a function of `t`. Move the slider (it needs a live
# kernel; the static curve below it does not).

# %%
Z1, Z2 = z1.float(), z2.float()
U32 = F.normalize(torch.cat([Z1, Z2]), dim=1)


def softmax_weights(temp):
    s = (U32[0] @ U32.T)[1:]  # anchor 0 against the 2B - 1 other views
    return torch.softmax(s / temp, 0)


def show_temperature(temp=0.07):
    w = softmax_weights(temp).numpy()
    names = [f"view {k}" + (" (partner)" if k == B else "") for k in range(1, 2 * B)]
    fig = go.Figure(go.Bar(x=names, y=w))
    fig.update_layout(title=f"t = {temp:.3f}: NT-Xent = {nt_xent(Z1, Z2, temp):.3f}, "
                            f"partner weight = {w[B - 1]:.3f}",
                      yaxis=dict(range=[0, 1], title="softmax weight (anchor 0)"),
                      height=320, width=700)
    fig.show()


slider = widgets.FloatLogSlider(value=0.07, base=10, min=-2, max=1, step=0.05,
                                description="temperature", style={"description_width": "initial"})
display(widgets.interactive(show_temperature, temp=slider))

# %% [markdown]
# *What you should see:* at `t = 0.07` one bar, the partner (view 4), holds almost all of anchor
# 0's weight (the title prints it); in a live kernel, larger `t` spreads the weight over the other
# views.

# %%
temps = np.logspace(-2, 1, 40)
fig = make_subplots(rows=1, cols=2, subplot_titles=("NT-Xent of the toy batch",
                                                    "weight on the partner (anchor 0)"))
fig.add_trace(go.Scatter(x=temps, y=[nt_xent(Z1, Z2, float(x)).item() for x in temps]), 1, 1)
fig.add_trace(go.Scatter(x=temps, y=[softmax_weights(float(x))[B - 1].item() for x in temps]),
              1, 2)
fig.update_xaxes(type="log", title="t")
fig.update_layout(height=320, width=820, showlegend=False)
fig.show()

# %% [markdown]
# *What you should see:* as `t` grows the NT-Xent value rises towards `log(2B − 1)` and the
# partner's softmax weight falls from nearly 1 towards `1 / (2B − 1)`: a large temperature stops
# telling the partner apart from the rest.
#
# **In the similarity loss, `1/t` is a task weight.** `L_sim` has no softmax, so `t` only divides
# it: `L_sim(t) = t_1 · L_sim(t_1) / t` for any two temperatures, and its gradient scales exactly as
# `1/t`. When SLAM-AGS adds `L_con` and `L_sim` on one encoder, `t` therefore also sets the ratio
# `‖g_sim‖ : ‖g_con‖` of the two task gradients — lowering `t` makes the similarity task heavier,
# on top of sharpening NT-Xent. The cell checks both on the toy batch. (The toys here use larger
# temperatures than the paper's 0.07 — 0.5 in §1, 0.2 in §2 — because with a handful of 2-D or 3-D
# points a temperature of 0.07 puts almost all the softmax weight on one view and hides what the
# figures show; Adam, which drives the free-embedding toys, takes steps that do not depend on a
# loss's overall scale, so the `1/t` weight does not change those runs.)

# %%
def grad_norms(temp):
    # norms of the gradients of L_con and L_sim with respect to the toy projections
    Zc = torch.cat([z1, z2]).clone().requires_grad_(True)
    g_con = torch.autograd.grad(nt_xent(*Zc.chunk(2), temp), Zc)[0]
    g_sim = torch.autograd.grad(similarity_loss(*Zc.chunk(2), temp), Zc)[0]
    return g_con.norm().item(), g_sim.norm().item()


for temp in (0.07, 0.2, 0.5):
    n_con, n_sim = grad_norms(temp)
    print(f"t = {temp:4}: |g_con| = {n_con:7.4f}  |g_sim| = {n_sim:7.4f}  |g_sim|/|g_con| = "
          f"{n_sim / n_con:6.2f}  t * |g_sim| = {temp * n_sim:.4f}")
assert math.isclose(0.07 * grad_norms(0.07)[1], 0.5 * grad_norms(0.5)[1], rel_tol=1e-9)
print(f"from t = 0.5 to t = 0.07 the similarity gradient grows {0.5 / 0.07:.2f}x")

# %% [markdown]
# ## 5 · Why not textbook SupCon with one label? It is degenerate
#
# SupCon (Khosla et al., NeurIPS 2020) with positives $P(i)$ and all others $A(i)$:
#
# $$L_\text{out} = \frac{1}{N}\sum_i \frac{-1}{|P(i)|}\sum_{p\in P(i)}
# \log\frac{\exp(s_{ip}/t)}{\sum_{a\in A(i)}\exp(s_{ia}/t)} .$$
#
# With **one** label, $P(i) = A(i)$ and over $2B$ views each anchor's term is
# $\operatorname{logsumexp}_a(s_{ia}/t) - \operatorname{mean}_a(s_{ia}/t) \ge \log(2B-1)$ by
# Jensen's inequality, with **equality iff all of the anchor's similarities are equal**. So:
#
# * complete collapse ($s_{ij}=1$) and the maximally spread *equiangular simplex*
#   ($s_{ij} = -1/(2B-1)$, which needs $D \ge 2B-1$) give exactly the same value $\log(2B-1)$;
# * so does every configuration in between with equal pairwise cosines;
# * configurations that are *not* equiangular (random points; 4 points on a circle — the most
#   spread set in 2-D) give strictly more.
#
# The loss has a flat valley connecting collapse to maximal spread: it does not ask for
# alignment at all. Dropping the denominator (the similarity loss) leaves only the attraction
# term, which separates the two ends of the valley: 0 at collapse, maximal at the simplex.
# (pytorch-metric-learning's `SupConLoss` sidesteps the issue differently: it returns 0 when a
# batch has no negative pair.) The cell below walks from the simplex to collapse with `2B = 6`
# views (`Nd` in the code; its printout writes `N` for `2B`).

# %%
Nd = 6
simplex = F.normalize(torch.eye(Nd, dtype=torch.float64) - 1 / Nd, dim=1)  # (N, N), s = -1/(N-1)
centre = torch.full((Nd,), Nd ** -0.5, dtype=torch.float64)                 # orthogonal to it
one_label = torch.zeros(Nd, dtype=torch.long)
betas = np.linspace(0, 1, 21)
rows = []
for beta in betas:  # equal pairwise cosine (1 - beta)(-1/(N-1)) + beta: simplex -> collapse
    Zb = math.sqrt(1 - beta) * simplex + math.sqrt(beta) * centre
    rows.append((supcon(Zb, one_label, t).item(),
                 similarity_loss(Zb[:Nd // 2], Zb[Nd // 2:], t).item()))
sup, simv = map(np.array, zip(*rows))
assert np.allclose(sup, math.log(Nd - 1))
print(f"one-label SupCon along the path: {sup.min():.6f} .. {sup.max():.6f}  "
      f"(log(N-1) = {math.log(Nd - 1):.6f});  similarity loss {simv[0]:.2f} -> "
      f"{round(simv[-1], 6) + 0.0:.2f}")
rnd = torch.randn(Nd, 3, generator=gen, dtype=torch.float64)
square = torch.tensor([[1.0, 0], [0, 1], [-1, 0], [0, -1]], dtype=torch.float64)
print(f"random points: {supcon(rnd, one_label, t):.3f} > log(N-1); square in 2-D: "
      f"{supcon(square, torch.zeros(4), t):.3f} > log(3) = {math.log(3):.3f}")

fig = go.Figure()
fig.add_trace(go.Scatter(x=betas, y=sup, name="one-label SupCon"))
fig.add_trace(go.Scatter(x=betas, y=simv, name="similarity loss", yaxis="y2"))
fig.update_layout(title="from the equiangular simplex (beta=0) to collapse (beta=1)",
                  xaxis_title="beta",   # SupCon is log(N-1) all along: a fixed axis, not rounding noise
                  yaxis=dict(title="SupCon", range=[0, 1.2 * math.log(Nd - 1)],
                             tickformat=".2f"),
                  yaxis2=dict(title="L_sim", overlaying="y", side="right", tickmode="auto",
                              showgrid=False),
                  legend=dict(x=1.1), height=360, width=760)
fig.show()

# %% [markdown]
# *What you should see:* the one-label SupCon curve is flat — the same value `log(2B − 1)` (printed
# above) from the simplex to collapse — while the similarity loss falls steadily from its maximum at
# the simplex to 0 at collapse.

# %% [markdown]
# ## Take-aways
#
# * NT-Xent = find your partner among `2B − 1` views; aligns pairs and spreads the rest; `t`
#   sets how hard it focuses on the closest negatives.
# * The similarity loss = alignment of all negative-slide views; alone it collapses what it acts on (`z`).
# * One-label SupCon cannot distinguish collapse from maximal spread — which is why SLAM-AGS
#   uses the denominator-free alignment loss, and needs NT-Xent (plus gradient surgery, notebook
#   03) to keep the representation from collapsing.

# %% [markdown]
# ## Exercises
#
# Each exercise asks for one function. The cell under it calls a grader from
# `slamags_core.exercises`, which runs your function next to the package's on random and edge-case
# inputs (different batch sizes and temperatures, unnormalised rows, collapse, float32, gradients)
# and tells you which input failed, what was expected, what you returned and — if your answer
# matches a typical mistake — which one. Until you write the function, the check says *not
# attempted*. Use torch operations only, so that autograd can differentiate your loss. (Teachers:
# worked solutions are in `notebooks/solutions/`; see `docs/teaching.md`.)

# %%
from slamags_core import exercises

# %% [markdown]
# ### Exercise 1 · NT-Xent from the formula
#
# Write `my_nt_xent(z1, z2, temperature)` for two `(B, D)` batches of projections (row `b` of `z1`
# and row `b` of `z2` are the two views of patch `b`), returning the scalar `L_con` of §1. Two things
# the grader will test: every view is an anchor (all `2B` of them), and a small temperature must
# not overflow (`exp(1 / 0.01)` does not fit in float32).

# %% tags=["exercise"]
def my_nt_xent(z1, z2, temperature):
    # your code here
    raise NotImplementedError("exercise 1: my_nt_xent")


# %% tags=["exercise-check"]
exercises.check_nt_xent(my_nt_xent)

# %% [markdown]
# ### Exercise 2 · The similarity loss
#
# Write `my_similarity_loss(z1, z2, temperature)`: `L_sim` of §3 over the `2B` stacked unit views.
# Then answer from the formula: what does `my_similarity_loss` return when all views are equal, and
# when the views sum to zero?

# %% tags=["exercise"]
def my_similarity_loss(z1, z2, temperature):
    # your code here
    raise NotImplementedError("exercise 2: my_similarity_loss")


# %% tags=["exercise-check"]
exercises.check_similarity_loss(my_similarity_loss)

# %% [markdown]
# ### Exercise 3 · One-label SupCon, and its flat valley
#
# Write `one_label_supcon(z, temperature)` for `(V, D)` stacked views that all carry the same label:
# the mean over anchors `i` of `logsumexp_{a≠i}(s_ia / t) − mean_{a≠i}(s_ia / t)` (§5). Once it
# passes, evaluate it at collapse and on the simplex of §5 (`simplex` in the cell there) and
# explain with Jensen's inequality why both give `log(V − 1)`.

# %% tags=["exercise"]
def one_label_supcon(z, temperature):
    # your code here
    raise NotImplementedError("exercise 3: one_label_supcon")


# %% tags=["exercise-check"]
exercises.check_one_label_supcon(one_label_supcon)
