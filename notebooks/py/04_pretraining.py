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
# # 04 · Pretraining: every strategy through one loop
#
# **Goal.** Pretrain the cell encoder with each strategy of the paper's comparison — an untrained
# `random` encoder, `simclr`, the weakly supervised patch classifier `weak`, `supcon` with slide
# labels, and SLAM with the two task gradients combined by plain sum, PCGrad or **AGS** (the
# paper) — and look inside the training: both task losses, the conflict between the task
# gradients, the collapse monitor, and how linearly the abnormal cells separate in each embedding.
#
# **What you will learn.**
# - how one training loop serves every strategy (a table of loss functions, not seven loops), for
#   a budget of optimiser steps, with positives/negatives in proportion in each step;
# - how an AGS step is computed without waste, checked by hand on a real batch;
# - why each augmentation is there, and the colour shortcut that a per-slide stain invites;
# - what the similarity loss does on its own (it collapses), complete versus dimensional collapse,
#   the collapse monitor and its thresholds, and whether AGS changes SLAM's training;
# - a **linear probe** on instance labels, a diagnostic the paper lacks;
# - checkpoints, exact resume, throughput, and how to run the `paper` preset on a GPU.
#
# **Run time.** Training dominates: seven trainings (six strategies — `random` is not trained —
# and the `sim_only` demonstration), each timed in §4's table. Every training is a budget of
# `cfg.steps` optimiser steps (§1 prints it and how many passes over the training patches it
# makes). `smoke` (CI): about 1 min of CPU time (2.5 min wall with an empty cache on this
# project's 2-core machine, shared with other jobs). `laptop` (the default, bags of 1000 cells):
# **8.5 min** wall clock top to bottom with an empty cache on this project's 2-core CPU, otherwise
# idle (measured 2026-11-25 with nbconvert; each training about 35-40 s, plus §8's embeddings of
# every cell of the bag set per strategy); a machine shared with other jobs is several times
# slower. Checkpoints are cached in `data/cache/checkpoints`, so a second run (and notebooks 05-08)
# reload them instead of training. `paper` (§10 prints its step budget) is a
# batch job for one or several GPUs; its GPU time has not been measured yet —
# `benchmarks/bench_pretrain.py` measures your GPU's throughput.
#
# **Notation.** `h` the backbone feature and `z` the projection; `B_pos`, `B_neg` the patches of a
# step from slide-positive and slide-negative bags; `L_con`, `L_sim` the two SLAM losses; `θ` the
# encoder's parameters; `g_con`, `g_sim` their gradients, `g̃_con`, `g̃_sim` after PCGrad's
# projections; the std ratio and the effective rank of the collapse monitor. Every symbol of the
# course: [docs/notation.md](../docs/notation.md).
#
# **Exercises** at the end, each with an automatic check: the monitor's std ratio, the effective
# rank, and the two task losses of one SLAM step.

# %%
try:
    import slamags_core  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    import os
    import sys
    sys.path.insert(0, os.path.abspath(".."))

import copy
import dataclasses
import inspect
import tempfile
import time
import warnings

import ipywidgets as widgets
import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import torch
from IPython.display import display
from plotly.subplots import make_subplots
from torch.testing import assert_close

from slamags_core import get_device, get_preset, set_seed
from slamags_core import batching
from slamags_core import pretrain as P
from slamags_core.checkpoint import load_encoder
from slamags_core.strategies import STRATEGIES
from slamags_core import surgery
from slamags_core.augment import MEAN, STD, Augmenter
from slamags_core.config import METHODS
from slamags_core.embed import embed_images, linear_probe
from slamags_core.encoders import build_encoder
from slamags_core.losses import nt_xent, similarity_loss
from slamags_core.monitor import CollapseWarning, collapse_report
from slamags_core.pipeline import embed_bagset, get_bags, get_pretrained, run_key
from slamags_core.utils import cache_dir

preset = get_preset()
cfg = preset.pretrain
set_seed(cfg.seed)
device = get_device(cfg.device)
print(f"preset={preset.name}  seed={cfg.seed}  device={device}  threads={torch.get_num_threads()}")
print(cfg)

# %% [markdown]
# ## 1 · The two pools and the batch plan
#
# Pretraining only sees the **training** bags. Their patches form two pools: patches of
# slide-positive bags (a few percent of them are witnesses, nobody knows which) and patches of
# slide-negative bags (all normal). The pools are not copies: they are index arrays into the bag
# set's storage, a memory-mapped file on disk, so a set larger than the RAM trains all the same.
#
# The budget is a number of optimiser **steps** (`cfg.steps`), whatever the size of the pools. Every
# step holds a fixed number of patches of each pool, **in proportion to the pool sizes**, taken from
# successive shuffled **passes** over that pool: every patch once per pass, never twice in one step.
# Step `s`'s patches depend only on `(seed, s)`, which makes a resumed run continue exactly. (The
# authors' loader overlapped consecutive batches by all but one image and repeated each batch once
# per worker — both fixed here.)

# %%
bags = get_bags(preset)
pos, neg = bags.pretraining_pools()          # PatchPool views: (n_pos, H, W, 3), (n_neg, H, W, 3)
sampler = batching.BatchSampler(len(pos), len(neg), cfg.batch_size, cfg.seed)
b_pos, b_neg = sampler.shares                 # patches of each pool per step
per_pass = len(pos) // b_pos                  # steps per pass over the positive pool
seen_pos = torch.cat([sampler.batch(s)[0] for s in range(per_pass)])
assert len(set(seen_pos.tolist())) == len(seen_pos) == per_pass * b_pos  # no patch twice in a pass
print(f"witness rate {bags.witness_rate}: {len(pos)} positive-bag and {len(neg)} negative-bag "
      f"patches of {pos.shape[1]} px ({type(bags.images).__name__} storage of {len(bags.images)})")
print(f"each step: {b_pos} positive + {b_neg} negative patches; one pass = {per_pass} steps; "
      f"budget {cfg.steps} steps = {cfg.steps * cfg.batch_size / (len(pos) + len(neg)):.1f} passes")


# %% [markdown]
# ## 2 · Two views per patch, augmented on the device
#
# The paper's augmentations [authors' code], and what each is for:
#
# * **random crop** of `crop_size` (no resize): the cell is not always centred, and two crops of one
#   patch share the cell but not its exact framing — NT-Xent must match cell content, not pixels;
# * **horizontal flip** and a **90° rotation**: a cell on a slide has no "up", so orientation is
#   nuisance;
# * **colour jitter** (brightness, contrast, saturation, hue): the stain varies
#   from slide to slide (notebook 01 measured the slide-to-slide colour change against the class
#   difference). Without jitter the two views of a patch have exactly the same colour, and the
#   cheapest way for NT-Xent to pick the partner out of `2B − 1` candidates is to match colour:
#   patches of other slides have other tints. An encoder that learns the *slide's stain* instead of
#   the *cell's morphology* wins NT-Xent and tells MIL nothing about witnesses — this **colour
#   shortcut** is the central risk with a per-slide stain. Jitter only breaks it if it moves a view's
#   colour about as far as a change of slide does; the cell after the figure compares the two;
# * for patches of **negative** bags the first view is a **centre crop** only (the authors' code
#   does this; its reason is not stated).
#
# `Augmenter` does all of this batched on tensors (on the GPU when there is one), drawing every
# random number from one seeded generator; the cell prints its settings (the paper's, read from the
# authors' code, with this preset's crop size). Rows below: positive view 1, positive view 2,
# negative view 1 (centre crop), negative view 2. In a live notebook, move the slider to draw other
# views.

# %%
aug_demo = Augmenter.from_config(cfg)
print(f"random crop {aug_demo.crop_size} px of {pos.shape[1]} px patches;  flip p={aug_demo.p_flip};  "
      f"90° rotation p={aug_demo.p_rotate};  colour jitter {aug_demo.jitter} with p={aug_demo.p_jitter}")


def show_views(seed=0, k=8):
    aug = Augmenter.from_config(cfg, generator=torch.Generator().manual_seed(seed))
    p1, p2 = aug(pos[:k])
    n1, n2 = aug(neg[:k], center_first=True)
    m, s = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    rows = [(v * s + m).clamp(0, 1).permute(0, 2, 3, 1).numpy() for v in (p1, p2, n1, n2)]
    mosaic = np.concatenate([np.concatenate(list(r), axis=1) for r in rows], axis=0)
    fig = px.imshow(mosaic, title=f"views drawn with seed {seed}")
    fig.update_layout(height=330, margin=dict(l=10, r=10, t=40, b=10),
                      xaxis_visible=False, yaxis_visible=False)
    fig.show()


show_views(0)
seed_slider, redraw = widgets.IntSlider(0, 0, 20, description="seed"), widgets.Output()


def on_seed(change):  # redraw on the slider (live kernels only; nothing runs at execution time)
    with redraw:
        redraw.clear_output(wait=True)
        show_views(change["new"])


seed_slider.observe(on_seed, names="value")
display(widgets.VBox([seed_slider, redraw]))

# %% [markdown]
# *What you should see:* in the two positive rows the same cells shifted, flipped or turned and
# slightly re-tinted; the third row centred and untouched; the fourth augmented like the first two.
#
# **Measured: jitter versus stain.** The mean RGB colour of each training bag (one slide, one stain)
# against the colour change that jitter makes between the two views of one patch:

# %%
def mean_rgb(views):  # (B, 3, c, c) normalised views -> (B, 3) mean RGB in [0, 1]
    m, s = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    return (views * s + m).clamp(0, 1).mean((2, 3))


train_bags = bags.split_bags("train")
bag_colour = np.stack([bags.images[bags.bag_index == b].reshape(-1, 3).mean(0) / 255 for b in train_bags])
slide_gap = np.mean([np.linalg.norm(bag_colour[i] - bag_colour[j])
                     for i in range(len(bag_colour)) for j in range(i + 1, len(bag_colour))])
v1, v2 = Augmenter.from_config(cfg, generator=torch.Generator().manual_seed(1))(pos[:256])
jitter_gap = (mean_rgb(v1) - mean_rgb(v2)).norm(dim=1).mean().item()
print(f"mean RGB distance between two slides (bag means): {slide_gap:.3f}")
print(f"mean RGB distance between the two views of a patch: {jitter_gap:.3f}")

# %% [markdown]
# *What you should see:* check whether the second number reaches the first. If jitter moves a view
# less than a change of slide, colour still tells "same slide" from "other slide" within a batch,
# and the shortcut is weakened, not removed — one reason to look inside the embeddings (notebooks
# 05–07) rather than trust the loss.

# %% [markdown]
# ## 3 · One loop, one table of strategies
#
# Each strategy is a row of `strategies.STRATEGIES`: which forwards a step runs, which task losses it
# computes, and how their gradients are combined. `simclr`, `weak` and `supcon` forward the whole
# step at once (`all`); SLAM forwards the positive and the negative patches separately (`pos`,
# `neg`, both views of a pool in one forward). `sim_only` — the similarity loss alone — is a
# diagnostic that is not part of the paper's comparison; `deep_svdd` is a one-class competitor
# beyond the paper (Ruff et al., ICML 2018: pull the features of slide-negative patches towards a
# fixed centre; `slamags_core.deep_svdd`), which this notebook does not train.

# %%
table = pd.DataFrame([
    {"method": m, "forwards": " + ".join(s.groups) or "-", "losses": s.loss_fn.__name__[6:]
     if s.loss_fn else "- (no training)", "combine": s.surgery or "-",
     "negative view 1": "centre crop" if s.center_neg else "random", "extra head": s.head}
    for m, s in STRATEGIES.items()])
table

# %% [markdown]
# ### An AGS step by hand
#
# Why separate forwards for the two pools? The NT-Xent loss only involves the positive patches'
# projections and the similarity loss only the negatives'. With one forward per pool, each task's
# backward traverses **only its own graph**, so the two per-task gradients `g_con` and `g_sim`
# together cost about as much as one backward of the summed loss — AGS is nearly free (§9 names
# the benchmark that measures the ratio; check it on your machine). (With one forward of the
# concatenated batch, BatchNorm's batch statistics would couple the two pools and each task's
# backward would run through the whole batch.)
#
# AGS then applies PCGrad — if the two gradients conflict ($g_\text{con}\cdot g_\text{sim}<0$),
# each is projected onto the normal plane of the other — and rescales the sum to the norm of the
# plain sum $\lVert g_\text{con}+g_\text{sim}\rVert$. Below, one step on a real batch from a freshly
# initialised encoder, recomputed by hand and checked against `surgery.combine`.

# %%
def ags_step_by_hand(enc, step):
    # One SLAM step on the patches of step `step` (the sampler's batch, augmented and ordered by
    # that step's generators, as in training): both task gradients, AGS by hand and by
    # surgery.combine (checked equal); returns the two losses and combine's statistics.
    params = list(enc.parameters())
    pi, ni = sampler.batch(step)                     # global pool indices (B_pos,), (B_neg,)
    aug = Augmenter.from_config(cfg, generator=batching.augmentation_generator(cfg.seed, step))
    p1, p2 = aug(pos[pi.numpy()])                    # (B_pos, 3, c, c) each
    n1, n2 = aug(neg[ni.numpy()], center_first=True)  # (B_neg, 3, c, c) each
    _, Z_pos = enc(torch.cat([p1, p2]))              # forward 1: (2 B_pos, D_z)
    _, Z_neg = enc(torch.cat([n1, n2]))              # forward 2: (2 B_neg, D_z)
    L_con = nt_xent(*Z_pos.chunk(2), cfg.temperature)
    L_sim = similarity_loss(*Z_neg.chunk(2), cfg.temperature)
    g_con, g_sim = surgery.task_gradients([L_con, L_sim], params)   # (P,) each

    dot = g_con @ g_sim
    g_con_pc = g_con - dot.clamp(max=0) / (g_sim @ g_sim) * g_sim   # PCGrad: project on conflict
    g_sim_pc = g_sim - dot.clamp(max=0) / (g_con @ g_con) * g_con
    by_hand = g_con_pc + g_sim_pc                                   # g_pc
    if dot < 0:                                                     # AGS: rescale to |g_con + g_sim|
        by_hand = by_hand * (g_con + g_sim).norm() / by_hand.norm()
    g_ags, stats = surgery.combine([g_con, g_sim], "ags",
                                   generator=batching.surgery_generator(cfg.seed, step))
    assert_close(g_ags, by_hand)
    st = stats.to_dict()
    print(f"L_con={L_con.item():.4f}  L_sim={L_sim.item():.4f}  cos(g_con, g_sim)={st['cosine']:+.3f}  "
          f"|g_con|={st['task_norms'][0]:.3g}  |g_sim|={st['task_norms'][1]:.3g}")
    print(f"|sum|={st['norm_sum']:.4g}  |PCGrad|={st['norm_surgery']:.4g}  |AGS|={st['norm_out']:.4g}  "
          f"projected: {bool(dot < 0)}")
    return L_con, L_sim, st


torch.manual_seed(cfg.seed)
_ = ags_step_by_hand(build_encoder(cfg), step=0)   # training's first step, on a fresh encoder

# %% [markdown]
# *What you should see:* `projected: False` is possible here — at initialisation the two task
# gradients need not conflict yet (cosine ≥ 0), and then PCGrad and AGS return the plain sum (the
# three norms agree). §6 shows how often they conflict during training, and repeats this check on
# a step of the trained encoder.

# %% [markdown]
# ## 4 · Train every strategy
#
# `pipeline.get_pretrained` calls `pretrain.pretrain` with a checkpoint folder named by the data
# and config hash: a finished run is reloaded instantly (this is how notebooks 05-08 and the sweep
# reuse these encoders), an interrupted one resumes exactly. The similarity loss on its own
# (`sim_only`) goes through the same engine. Every `cfg.checkpoint_every` steps the engine writes a
# checkpoint and runs the collapse monitor; it warns (`CollapseWarning`) when the monitor flags a
# collapse. The warnings are collected here and counted, and the table also counts the flagged
# checkpoints stored in the checkpoint file (so it is the same when a run was reloaded).

# %%
results, rows = {}, []
for m in METHODS + ("sim_only",):
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CollapseWarning)
        if m in METHODS:
            results[m] = get_pretrained(preset, bags, m, seed=cfg.seed, device=device)
        else:  # the diagnostic run is not one of the sweep's methods: call the engine directly
            out = cache_dir() / "checkpoints" / run_key(preset, bags, m, cfg.seed)
            results[m] = P.pretrain(m, pos, neg, cfg, device=device, out_dir=out)
    trained = results[m].summaries[1:]  # step 0 is the initialisation
    rows.append({"method": m, "wall s (this call)": round(time.perf_counter() - t0, 1),
                 "train s": round(sum(e["time_s"] for e in trained), 1),
                 "steps": len(results[m].history),
                 "final loss": trained[-1]["loss"] if trained else None,
                 "checkpoints flagged collapsed": sum(e["z_collapsed"] or e["h_collapsed"]
                                                      for e in trained),
                 "warnings now": sum(issubclass(w.category, CollapseWarning) for w in caught)})
pd.DataFrame(rows).set_index("method")


# %% [markdown]
# ## 5 · Both task losses
#
# Left: NT-Xent (`L_con`) — on slide-positive patches for SLAM, on all patches for `simclr`.
# Right: the similarity loss (`L_sim`) on slide-negative patches. A moving average over steps
# smooths the curves.

# %%
def curve(m, key, window=max(1, per_pass // 2)):
    hist_df = pd.DataFrame(results[m].history)
    return hist_df["step"], hist_df[key].rolling(window, min_periods=1).mean()


fig = make_subplots(1, 2, subplot_titles=("L_con (NT-Xent)", "L_sim (similarity)"))
colors = dict(zip(list(results), px.colors.qualitative.Plotly))
for m in results:
    hist = results[m].history
    for col, key in ((1, "loss_con"), (2, "loss_sim")):
        if hist and key in hist[0]:
            x, y = curve(m, key)
            fig.add_trace(go.Scatter(x=x, y=y, name=m, legendgroup=m, showlegend=col == 1 or
                                     "loss_con" not in hist[0], line_color=colors[m]), 1, col)
fig.update_xaxes(title_text="step")
fig.update_yaxes(type="log", col=2)
fig.update_layout(height=380)
fig.show()


def chance(m):  # NT-Xent's chance level log(2B - 1): every step holds b_pos + b_neg patches
    b = b_pos if "pos" in STRATEGIES[m].groups else b_pos + b_neg  # SLAM: B_pos; simclr: all
    return float(np.log(2 * b - 1))


loss_table = {}
for m, r in results.items():
    hist_df = pd.DataFrame(r.history)
    # the last `per_pass` steps: one pass over the positive pool, the end of training
    last = hist_df[hist_df["step"] > hist_df["step"].max() - per_pass] if len(hist_df) else hist_df
    row = {}
    if "loss_con" in hist_df:
        row.update({"L_con chance": chance(m), "L_con step 0": hist_df["loss_con"].iloc[0],
                    "L_con last pass": last["loss_con"].mean()})
    if "loss_sim" in hist_df:
        row.update({"L_sim step 0": hist_df["loss_sim"].iloc[0],
                    "L_sim last pass": last["loss_sim"].mean()})
        row["L_sim fell by (x)"] = row["L_sim step 0"] / row["L_sim last pass"]
    if row:
        loss_table[m] = row
pd.DataFrame(loss_table).T.round(4)

# %% [markdown]
# *What you should see:* every NT-Xent curve starts near its chance level `log(2B − 1)` (the table
# sets the first step beside it; `B` is `B_pos` for SLAM, the whole step for `simclr`); compare how
# far `simclr`'s falls by the last pass (the last `per_pass` steps, §1) with how far the SLAM
# variants' fall. The similarity-loss curves (log axis) of the SLAM variants and `sim_only` fall
# by the factor in the table's last column. A falling loss says nothing yet about collapse — §7
# does.
#
# ## 6 · Gradient conflict over training
#
# For the three SLAM variants the engine logs, every step, the cosine between the two task
# gradients, whether PCGrad projected, and three norms: the plain sum, after projection, and after
# the AGS rescale. `slam_sum` computes the same statistics as a diagnostic (its update is the plain
# sum; set `PretrainConfig.surgery_stats=False` for the cheaper single backward).

# %%
slam = [m for m in ("slam_sum", "slam_pcgrad", "slam_ags") if m in results]
fig = make_subplots(1, 2, subplot_titles=("cos(g_con, g_sim) per step",
                                          "slam_ags: gradient norms per step"))
for m in slam:
    x, y = curve(m, "cosine", 1)
    fig.add_trace(go.Scatter(x=x, y=y, name=m, line_color=colors[m], mode="lines"), 1, 1)
ags_hist = pd.DataFrame(results["slam_ags"].history)
for key, dash in (("norm_sum", "solid"), ("norm_surgery", "dot"), ("norm_out", "dash")):
    fig.add_trace(go.Scatter(x=ags_hist["step"], y=ags_hist[key], name=key, line_dash=dash), 1, 2)
fig.add_hline(y=0, line_color="grey", col=1)
fig.update_yaxes(type="log", col=2)
fig.update_layout(height=380)
fig.show()
ratio = ags_hist["norm_surgery"] / ags_hist["norm_sum"]
print(f"slam_ags: |g_pc| / |g_sum| median {ratio.median():.3f} (range {ratio.min():.3f}-{ratio.max():.3f}); "
      f"|g_ags| / |g_sum| max deviation from 1: {(ags_hist['norm_out'] / ags_hist['norm_sum'] - 1).abs().max():.1e}")
pd.DataFrame({m: {"mean cosine": np.mean([r["cosine"] for r in results[m].history]),
                  "conflicting steps": np.mean([r["conflict"] for r in results[m].history]),
                  "projected steps": np.mean([r["projected"] for r in results[m].history])}
              for m in slam}).T.round(3)

# %% [markdown]
# *What you should see:* left, the cosine of every SLAM variant below zero on most steps (check the
# table's "conflicting steps"); right, `norm_out` on top of `norm_sum` (AGS keeps the sum's norm:
# the printed deviation is rounding) and `norm_surgery` (PCGrad's) off that line — above it when
# removing the conflicting components un-cancels the two tasks, below it when one task's gradient
# is much larger than the other's (notebook 03, §2); the printed median ratio says which.

# %% [markdown]
# The hand computation of §3 on one step of the **trained** `slam_ags` encoder (a copy in train
# mode, as during training; the patches of step `cfg.steps`, the step training would take next).
# Check `projected`: on a step where the gradients conflict, the assertion inside now tests the
# projection and the rescale.

# %%
trained_copy = copy.deepcopy(results["slam_ags"].encoder).cpu().train()  # results stay untouched
_ = ags_step_by_hand(trained_copy, step=cfg.steps)

# %% [markdown]
# ## 7 · Collapse monitor
#
# Every `cfg.checkpoint_every` steps the engine embeds a fixed held sample of patches and records,
# for the backbone feature `h` and the projection `z`, the std of the L2-normalised embeddings
# times $\sqrt{D}$ (the *std ratio*: about 1 when spread over the sphere, 0 when collapsed to a
# point) and the effective rank (Roy & Vetterli 2007: $\exp$ of the entropy of the normalised
# singular values `λ_k`; 1 for a single direction, at most `min(N, D)`). Step 0 is the
# initialisation.
#
# **Two kinds of collapse** (Jing, Vincent, LeCun, Tian, "Understanding Dimensional Collapse in
# Contrastive Self-supervised Learning", ICLR 2022):
#
# * **complete collapse** — every embedding is the same point: the std ratio goes to 0 and the
#   effective rank to 1. The similarity loss alone drives `z` there (`sim_only` below; compare
#   it with the untrained encoder);
# * **dimensional collapse** — the embeddings still differ, but only along a few of the `D`
#   directions: the std ratio can stay well above 0 while the effective rank falls far below `D`.
#   Jing et al. show that contrastive learning itself produces it, through strong augmentations
#   and the interplay of the layers; a few directions may carry everything a probe needs, or not.
#
# The engine flags a checkpoint as collapsed (and warns) when the std ratio falls below
# `std_ratio_min` or the effective rank below `rank_min` — the thresholds printed by the next cell,
# which also shows the three cases on toy matrices. These thresholds catch complete collapse;
# dimensional collapse is never flagged, so read it from the effective-rank curves against `D`.

# %%
thresholds = {k: v.default for k, v in inspect.signature(collapse_report).parameters.items()
              if k in ("std_ratio_min", "rank_min")}
print("collapse monitor thresholds:", thresholds)
gen_demo = torch.Generator().manual_seed(0)
D_demo = 32
toys = {
    "spread: isotropic Gaussian": torch.randn(512, D_demo, generator=gen_demo),
    "dimensional collapse: a 3-D subspace": (torch.randn(512, 3, generator=gen_demo)
                                             @ torch.randn(3, D_demo, generator=gen_demo)),
    "complete collapse: one point + 1 % noise": (torch.randn(1, D_demo, generator=gen_demo)
                                                 + 0.01 * torch.randn(512, D_demo, generator=gen_demo)),
}
pd.DataFrame({name: collapse_report(E) for name, E in toys.items()}).T[
    ["std_ratio", "erank", "collapsed"]].round(3)

# %% [markdown]
# *What you should see:* the spread matrix has a std ratio near 1 and an effective rank close to
# `D = 32`; the 3-D subspace keeps a sizeable std ratio but an effective rank of at most 3, and is
# not flagged; the collapsed one has both near their floor and is flagged.
#
# Now the real runs. `sim_only` shows what the similarity loss does on its own.

# %%
mon = pd.DataFrame([{"method": m, **e} for m, r in results.items() for e in r.summaries])
fig = make_subplots(2, 2, subplot_titles=("z: std x sqrt(D)", "z: effective rank",
                                          "h: std x sqrt(D)", "h: effective rank"))
for m, d in mon.groupby("method", sort=False):
    for (row, col), key in zip([(1, 1), (1, 2), (2, 1), (2, 2)],
                               ["z_std_ratio", "z_erank", "h_std_ratio", "h_erank"]):
        fig.add_trace(go.Scatter(x=d["step"], y=d[key], name=m, legendgroup=m,
                                 showlegend=(row, col) == (1, 1), line_color=colors[m]), row, col)
fig.update_xaxes(title_text="step", row=2)
fig.update_layout(height=600)
fig.show()
final = mon.groupby("method", sort=False).last()
print(f"D: z has {results['slam_ags'].encoder.proj_dim} dimensions, h {results['slam_ags'].encoder.feature_dim}")
final[["z_std_ratio", "z_erank", "z_collapsed", "h_std_ratio", "h_erank", "h_collapsed"]].round(3)

# %% [markdown]
# *What you should see:* for `sim_only`, `z` sits at the floor (std ratio near 0, effective rank
# near 1: flagged) while `h` keeps an effective rank well above 1 and is not flagged — check both
# in the table: the similarity loss collapses the projection it acts on, not necessarily the
# backbone. Compare with the untrained `random` encoder: if its `z` is just as narrow, the
# projection started there (to random weights, cell patches look alike) and the flag on `z` needs
# that baseline to mean anything. For the other methods compare each effective rank with `D`
# (printed above the table): a rank far below `D` with a std ratio above the threshold is
# dimensional collapse, which the flag does not report.

# %% [markdown]
# ## 8 · Linear probe on instance labels
#
# How linearly separable are the witnesses (abnormal cells) from all other cells in each frozen
# embedding? A logistic regression is fitted on the cells of the **training** bags and scored on the
# cells of the **test** bags (AUROC; balanced accuracy, because witnesses are rare). Instance labels
# are never used in pretraining — this is a diagnostic the paper does not report. Both embeddings
# are probed: the backbone feature `h` (this project's default downstream input) and the projection
# `z` (what the authors' code used).

# %%
train = np.isin(bags.bag_index, bags.split_bags("train"))
test = np.isin(bags.bag_index, bags.split_bags("test"))
y = bags.instance_labels
probe = []
for m, r in results.items():
    for which in ("h", "z"):
        key = f"{run_key(preset, bags, m, cfg.seed)}-{which}"
        if m in METHODS and which == cfg.embedding:
            E = embed_bagset(preset, bags, r, seed=cfg.seed, device=device)
        else:
            E = embed_images(r.encoder, bags.images, cfg, device=device, which=which,
                             cache_key=key)
        res = linear_probe(E[train], y[train], E[test], y[test])
        probe.append({"method": m, "embedding": which, **res})
probe = pd.DataFrame(probe)
fig = px.bar(probe, x="method", y="auroc", color="embedding", barmode="group",
             title="linear probe AUROC on test-bag cells (0.5 = chance)")
fig.update_yaxes(range=[0.4, 1.0])
fig.show()
probe.pivot(index="method", columns="embedding",
            values=["auroc", "balanced_accuracy"]).round(3)

# %% [markdown]
# *What you should see:* check that the bars stand above the 0.5 chance line, the untrained
# `random` encoder's included (random convolutions already see size and colour); read the table for
# how much each pretraining adds to `random`, and whether `h` or `z` probes better for each method.


# %% [markdown]
# ### Does AGS change anything here?
#
# The paper's claim is that AGS stabilises SLAM and prevents collapse. The cell below puts
# `slam_sum` and `slam_ags` side by side on every number this notebook measured; read it for your
# preset rather than trusting the prose. Remember that one seed at a small scale is one sample and
# gives no verdict: how far two seeds of the same method differ is something to measure, not to
# assume — rerun with `seed=1` and set the change beside the gap between the two columns
# (notebook 08 compares methods over several seeds with confidence intervals).

# %%
def summary(m):
    e, hist = results[m].summaries[-1], results[m].history
    p = probe.set_index(["method", "embedding"])
    return {"final L_con": e["loss_con"], "final L_sim": e["loss_sim"],
            "conflicting steps": np.mean([r["conflict"] for r in hist]),
            "z std x sqrt(D)": e["z_std_ratio"], "h effective rank": e["h_erank"],
            "probe AUROC (h)": p.loc[(m, "h"), "auroc"], "probe AUROC (z)": p.loc[(m, "z"), "auroc"]}


cmp = pd.DataFrame({m: summary(m) for m in slam}).round(4)
theta_sum = torch.cat([q.detach().flatten() for q in results["slam_sum"].encoder.parameters()])
theta_ags = torch.cat([q.detach().flatten() for q in results["slam_ags"].encoder.parameters()])
print(f"relative weight difference |θ_ags - θ_sum| / |θ_sum| = "
      f"{float((theta_ags - theta_sum).norm() / theta_sum.norm()):.3f}")
cmp

# %% [markdown]
# ## 9 · Checkpoints, exact resume and throughput
#
# Every `cfg.checkpoint_every` steps the engine writes `checkpoint.pt` atomically (config, method,
# step, model / optimiser / scheduler state, history; loadable with
# `torch.load(..., weights_only=True)`) and appends to `log.jsonl`. Step `s`'s patches,
# augmentations and surgery order come from generators seeded by `(seed, s)`, so a resumed run
# continues **exactly**: below, a short run stopped after 2 of 4 steps and resumed gives
# bit-identical weights to the same run done in one go (on a subsample so that it takes seconds).
# A checkpoint written with another config, method or data is refused with a `ValueError`; a
# NaN/inf loss stops training with an error naming the step and strategy while the last good
# checkpoint stays in place. (Losses stay on the device and are read every `cfg.log_every` steps,
# so on a GPU the check costs no synchronisation per step.)

# %%
ckpt = results["slam_ags"].checkpoint
print("checkpoint:", ckpt.relative_to(cache_dir()))
print("files:", sorted(p.name for p in ckpt.parent.iterdir()))
trained = results["slam_ags"].encoder                      # on `device` (embedding moved it there)
loaded = load_encoder(ckpt, cfg, device=next(trained.parameters()).device)  # same device: comparable
assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(),
                                             trained.state_dict().values()))

small = dataclasses.replace(cfg, steps=4, warmup_steps=2, checkpoint_every=2)
sub_pos, sub_neg = pos[: 2 * cfg.batch_size], neg[: 2 * cfg.batch_size]
with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
    warnings.simplefilter("ignore", CollapseWarning)
    straight = P.pretrain("slam_ags", sub_pos, sub_neg, small, device="cpu", progress=False)
    P.pretrain("slam_ags", sub_pos, sub_neg, small, device="cpu", out_dir=tmp, progress=False,
               stop_after=2)
    resumed = P.pretrain("slam_ags", sub_pos, sub_neg, small, device="cpu", out_dir=tmp,
                         progress=False)
same = all(torch.equal(a, b) for a, b in zip(straight.encoder.state_dict().values(),
                                             resumed.encoder.state_dict().values()))
print("4 steps straight == 2 steps + resume for 2 more:", same)
assert same

speed = pd.DataFrame({m: {"patches/s": np.mean([e["patches_per_s"] for e in r.summaries[1:]]),
                          "s per checkpoint period": np.mean([e["time_s"] for e in r.summaries[1:]])}
                      for m, r in results.items() if len(r.summaries) > 1}).T.round(1)
speed

# %% [markdown]
# The throughput above includes the per-step surgery statistics. A clean, interleaved
# measurement of `simclr`, `slam_sum` (single backward), `slam_sum` with statistics and `slam_ags`,
# with the ratio `step_time(slam_ags) / step_time(slam_sum)`, is
# `python benchmarks/bench_pretrain.py` (JSON output; on a CUDA machine it adds the `paper` preset,
# peak GPU memory and the model-FLOPs utilisation).
#
# ## 10 · The `paper` preset: one GPU, several GPUs, a cluster
#
# The `paper` preset is the paper's scale, printed by the next cell from `get_preset("paper")`:
# ResNet-18 from scratch with a Linear–ReLU–Linear projection head, random crops of the full-size
# patches without resize, SGD with warm-up and cosine decay, the paper's bag size, and a step
# budget equal to the paper's epochs over its training patches. The same engine runs it on CUDA
# with bfloat16 autocast and channels-last memory (optionally `torch.compile`,
# `PretrainConfig(compile=True)`), and on Apple-silicon GPUs (MPS, without autocast). The bag set
# lives on disk as memory-mapped arrays (its size and the pools' are printed below); the pools are
# copied to the GPU when they take at most `batching.POOL_FREE_FRACTION` of its free memory,
# otherwise each step's patches are read one step ahead into pinned memory.

# %%
paper = get_preset("paper")
pc, pb = paper.pretrain, paper.bags
D_h = build_encoder(pc).feature_dim  # built on the CPU, never trained here
n_train_patches = pb.n_train * pb.bag_size
patch_bytes = paper.cells.image_size ** 2 * 3  # uint8 RGB
print(f"paper preset: {pc.encoder}, h of {D_h} dims -> z of {pc.proj_dim}; crops of {pc.crop_size} px "
      f"from {paper.cells.image_size} px patches; batches of {pc.batch_size}; {pc.optimizer} lr "
      f"{pc.lr:g}, momentum {pc.momentum}, weight decay {pc.weight_decay:g}; {pc.warmup_steps} "
      f"warm-up steps of {pc.steps}; t = {pc.temperature}; bags of {pb.bag_size} cells; "
      f"seeds {paper.seeds}")
print(f"{pc.steps} steps x {pc.batch_size} patches = {pc.steps * pc.batch_size / n_train_patches:g} "
      f"passes over the {n_train_patches:,} training patches; bag set on disk "
      f"{(pb.n_train + pb.n_val + pb.n_test) * pb.bag_size * patch_bytes / 1e9:.1f} GB per witness "
      f"rate, pools {n_train_patches * patch_bytes / 1e9:.1f} GB; GPU placement if at most "
      f"{batching.POOL_FREE_FRACTION:.0%} of the free memory")

# %% [markdown]
# ```bash
# # one encoder on one GPU (checkpointed; run the same command again to continue)
# python -m slamags_core pretrain --preset paper --method slam_ags --witness-rate 0.01
# # the same encoder on 4 GPUs of one machine (DistributedDataParallel; same global batch)
# torchrun --nproc_per_node=4 -m slamags_core pretrain --preset paper --method slam_ags --witness-rate 0.01
# # the whole witness-rate experiment, spread over 8 jobs (e.g. a Slurm array), then merged
# python -m slamags_core sweep --preset paper --out runs/paper --shard 0/8   # ... up to 7/8
# python -m slamags_core merge --out runs/paper
# ```
#
# `docs/scale.md` explains the choices (BatchNorm across GPUs, the deterministic mode and its cost,
# memory) and the README gives the Slurm script.
#
# **Things to try.** Run with `seed=1` and see which differences survive; set
# `PretrainConfig(embedding="z")` for the downstream notebooks; compare `slam_pcgrad` (projection
# without the rescale) with `slam_ags`; lower the temperature and watch the conflict statistics.

# %% [markdown]
# ## Exercises
#
# Each exercise asks for one function. The cell under it calls a grader from
# `slamags_core.exercises`, which compares your function with the package on random and edge-case
# inputs and tells you which input failed, what was expected, what you returned and — if your
# answer matches a typical mistake — which one. Until you write the function, the check says *not
# attempted*. (Teachers: worked solutions are in `notebooks/solutions/`; see `docs/teaching.md`.)

# %%
from slamags_core import exercises

# %% [markdown]
# ### Exercise 1 · The monitor's std ratio
#
# Write `std_ratio(E)` for an `(N, D)` embedding matrix: L2-normalise every row, take each
# dimension's standard deviation over the `N` rows (torch's default, unbiased), average over the
# dimensions and multiply by `√D`. Then apply it to the toy matrices of §7 (`toys`): which of them
# would the `std_ratio_min` threshold flag?

# %% tags=["exercise"]
def std_ratio(E):
    # your code here
    raise NotImplementedError("exercise 1: std_ratio")


# %% tags=["exercise-check"]
exercises.check_std_ratio(std_ratio)

# %% [markdown]
# ### Exercise 2 · The effective rank, and dimensional collapse
#
# Write `effective_rank(E)`: the singular values `λ_k` of the L2-normalised rows (not centred),
# `ρ_k = λ_k / Σ λ`, and `exp(−Σ_k ρ_k log ρ_k)`. Then build a `(512, 32)` matrix whose rows span
# only 4 directions but whose std ratio is above 0.5: your two functions together tell dimensional
# from complete collapse.

# %% tags=["exercise"]
def effective_rank(E):
    # your code here
    raise NotImplementedError("exercise 2: effective_rank")


# %% tags=["exercise-check"]
exercises.check_effective_rank(effective_rank)

# %% [markdown]
# ### Exercise 3 · The two task losses of one SLAM step
#
# Write `slam_losses(encoder, pos_views, neg_views, temperature)` returning `(L_con, L_sim)` the way
# the engine computes them (§3): `encoder(x)` returns `(h, z)`; `pos_views = (x1, x2)` are the two
# views of the slide-positive patches, `neg_views` those of the slide-negative ones. The grader's
# encoders are in train mode, so BatchNorm uses the statistics of whatever batch you forward: the
# grouping of images into forwards matters.

# %% tags=["exercise"]
def slam_losses(encoder, pos_views, neg_views, temperature):
    # your code here
    raise NotImplementedError("exercise 3: slam_losses")


# %% tags=["exercise-check"]
exercises.check_slam_losses(slam_losses)
