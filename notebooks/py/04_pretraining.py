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
# - what the similarity loss does on its own (it collapses), and whether AGS changes SLAM's training;
# - a **linear probe** on instance labels, a diagnostic the paper lacks;
# - checkpoints, exact resume, throughput, and how to run the `paper` preset on a GPU.
#
# **Run time.** `smoke` (CI): well under a minute on a CPU. `laptop` (the default): about 4-6
# minutes on a 2-core CPU (six trained strategies of roughly half a minute each, plus the `sim_only`
# demonstration, embeddings and probes); checkpoints are cached in `data/cache/checkpoints`, so a
# second run (and notebooks 05-08) reuse them. `paper` (37,500 steps of ResNet-18 per strategy) is
# a batch job for one or several GPUs, see the last section; its GPU time has not been measured yet.

# %%
try:
    import slamags_core  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    import os
    import sys
    sys.path.insert(0, os.path.abspath(".."))

import dataclasses
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
from slamags_core.monitor import CollapseWarning
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
# The paper's augmentations: random crop of `crop_size` (no resize), horizontal flip, colour
# jitter 0.1 (probability 0.8) and a 90° rotation (probability 0.8). For patches of **negative**
# bags the first view is a centre crop only. `Augmenter` does all of this batched on tensors (on the
# GPU when there is one), drawing every random number from one seeded generator. Rows below:
# positive view 1, positive view 2, negative view 1 (centre crop), negative view 2. In a live
# notebook, move the slider to draw other views.

# %%
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
# ## 3 · One loop, one table of strategies
#
# Each strategy is a row of `strategies.STRATEGIES`: which forwards a step runs, which task losses it
# computes, and how their gradients are combined. `simclr`, `weak` and `supcon` forward the whole
# step at once (`all`); SLAM forwards the positive and the negative patches separately (`pos`,
# `neg`, both views of a pool in one forward). `sim_only` — the similarity loss alone — is a
# diagnostic that is not part of the paper's comparison.

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
# together cost about as much as one backward of the summed loss — AGS is nearly free. (With one
# forward of the concatenated batch, BatchNorm's batch statistics would couple the two pools and
# each task's backward would run through the whole batch.)
#
# AGS then applies PCGrad — if the two gradients conflict ($g_\text{con}\cdot g_\text{sim}<0$),
# each is projected onto the normal plane of the other — and rescales the sum to the norm of the
# plain sum $\lVert g_\text{con}+g_\text{sim}\rVert$. Below, one step on a real batch from a freshly
# initialised encoder, recomputed by hand and checked against `surgery.combine`.

# %%
torch.manual_seed(cfg.seed)
enc = build_encoder(cfg)
params = list(enc.parameters())
pi, ni = sampler.batch(0)                         # the first step's patches
aug = Augmenter.from_config(cfg, generator=batching.augmentation_generator(cfg.seed, 0))
p1, p2 = aug(pos[pi.numpy()])                    # (B_pos, 3, c, c) each
n1, n2 = aug(neg[ni.numpy()], center_first=True)  # (B_neg, 3, c, c) each
_, Z_pos = enc(torch.cat([p1, p2]))              # forward 1: (2 B_pos, proj_dim)
_, Z_neg = enc(torch.cat([n1, n2]))              # forward 2: (2 B_neg, proj_dim)
L_con = nt_xent(*Z_pos.chunk(2), cfg.temperature)
L_sim = similarity_loss(*Z_neg.chunk(2), cfg.temperature)
g_con, g_sim = surgery.task_gradients([L_con, L_sim], params)   # (P,) each

dot = g_con @ g_sim
h_con = g_con - dot.clamp(max=0) / (g_sim @ g_sim) * g_sim      # PCGrad: project on conflict
h_sim = g_sim - dot.clamp(max=0) / (g_con @ g_con) * g_con
by_hand = h_con + h_sim
if dot < 0:                                                     # AGS: rescale to |g_con + g_sim|
    by_hand = by_hand * (g_con + g_sim).norm() / by_hand.norm()
g_ags, stats = surgery.combine([g_con, g_sim], "ags", generator=batching.surgery_generator(cfg.seed, 0))
assert_close(g_ags, by_hand)
s = stats.to_dict()
print(f"L_con={L_con.item():.4f}  L_sim={L_sim.item():.4f}  cos(g_con, g_sim)={s['cosine']:+.3f}  "
      f"|g_con|={s['task_norms'][0]:.3g}  |g_sim|={s['task_norms'][1]:.3g}")
print(f"|sum|={s['norm_sum']:.4g}  |PCGrad|={s['norm_surgery']:.4g}  |AGS|={s['norm_out']:.4g}")

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
    h = pd.DataFrame(results[m].history)
    return h["step"], h[key].rolling(window, min_periods=1).mean()


fig = make_subplots(1, 2, subplot_titles=("L_con (NT-Xent)", "L_sim (similarity)"))
colors = dict(zip(list(results), px.colors.qualitative.Plotly))
for m in results:
    h = results[m].history
    for col, key in ((1, "loss_con"), (2, "loss_sim")):
        if h and key in h[0]:
            x, y = curve(m, key)
            fig.add_trace(go.Scatter(x=x, y=y, name=m, legendgroup=m, showlegend=col == 1 or
                                     "loss_con" not in h[0], line_color=colors[m]), 1, col)
fig.update_xaxes(title_text="step")
fig.update_yaxes(type="log", col=2)
fig.update_layout(height=380)
fig.show()

# %% [markdown]
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
h = pd.DataFrame(results["slam_ags"].history)
for key, dash in (("norm_sum", "solid"), ("norm_surgery", "dot"), ("norm_out", "dash")):
    fig.add_trace(go.Scatter(x=h["step"], y=h[key], name=key, line_dash=dash), 1, 2)
fig.add_hline(y=0, line_color="grey", col=1)
fig.update_yaxes(type="log", col=2)
fig.update_layout(height=380)
fig.show()
pd.DataFrame({m: {"mean cosine": np.mean([r["cosine"] for r in results[m].history]),
                  "conflicting steps": np.mean([r["conflict"] for r in results[m].history]),
                  "projected steps": np.mean([r["projected"] for r in results[m].history])}
              for m in slam}).T.round(3)

# %% [markdown]
# ## 7 · Collapse monitor
#
# At every checkpoint the engine embeds a fixed held sample of patches and records, for the backbone
# feature `h` and the projection `z`, the std of the L2-normalised embeddings times $\sqrt{D}$
# (about 1 when spread over the sphere, 0 when collapsed to a point) and the effective rank
# (Roy & Vetterli 2007: $\exp$ of the entropy of the normalised singular values). Step 0 is the
# initialisation. `sim_only` shows what the similarity loss does on its own: all projections are
# pulled to one point.

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
final[["z_std_ratio", "z_erank", "z_collapsed", "h_std_ratio", "h_erank", "h_collapsed"]].round(3)

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
# ### Does AGS change anything here?
#
# The paper's claim is that AGS stabilises SLAM and prevents collapse. The cell below puts
# `slam_sum` and `slam_ags` side by side on every number this notebook measured; read it for your
# preset rather than trusting the prose. Remember that one seed at a small scale is one sample:
# differences of a few hundredths in a probe AUROC are within seed-to-seed noise (try `seed=1`).

# %%
def summary(m):
    e, hist = results[m].summaries[-1], results[m].history
    p = probe.set_index(["method", "embedding"])
    return {"final L_con": e["loss_con"], "final L_sim": e["loss_sim"],
            "conflicting steps": np.mean([r["conflict"] for r in hist]),
            "z std x sqrt(D)": e["z_std_ratio"], "h effective rank": e["h_erank"],
            "probe AUROC (h)": p.loc[(m, "h"), "auroc"], "probe AUROC (z)": p.loc[(m, "z"), "auroc"]}


cmp = pd.DataFrame({m: summary(m) for m in slam}).round(4)
w_sum = torch.cat([q.detach().flatten() for q in results["slam_sum"].encoder.parameters()])
w_ags = torch.cat([q.detach().flatten() for q in results["slam_ags"].encoder.parameters()])
print(f"relative weight difference |w_ags - w_sum| / |w_sum| = "
      f"{float((w_ags - w_sum).norm() / w_sum.norm()):.3f}")
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
# The `paper` preset is the paper's scale: ResNet-18 from scratch with the 512-512-512 projection
# head, 224 px random crops of 250 px patches, batches of 256, SGD lr 1e-3 with cosine decay after
# a warm-up, bags of 1000 cells, and a budget of 37,500 steps (the paper's 150 epochs over 64,000
# training patches). The same engine runs it on CUDA with bfloat16 autocast and channels-last
# memory (optionally `torch.compile`, `PretrainConfig(compile=True)`), and on Apple-silicon GPUs
# (MPS, without autocast). The bag set lives on disk as memory-mapped arrays (about 21 GB per
# witness rate); the pools (about 12 GB) are copied to the GPU when they take at most half of its
# free memory, otherwise each step's patches are read one step ahead into pinned memory.
#
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
