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
# # 05 · Attention MIL: from cell embeddings to a slide diagnosis
#
# **Goal.** Turn the frozen embeddings of every cell of a slide (a *bag*) into one bag-level
# prediction, with only slide labels for training — multiple-instance learning (MIL) — and see
# why *attention* pooling matters when only a few percent of the cells are abnormal.
#
# **What you will learn.**
# - four aggregators from `slamags_core.aggregators`: mean pooling, max pooling, gated-attention
#   ABMIL (Ilse, Tomczak & Welling, ICML 2018) and **this project's reading of PAMIL**
#   (prototype-aware attention, Liu et al., MICCAI 2024; the SLAM-AGS paper names it but does not
#   specify it, so details here are this project's choices), with the ABMIL formula re-derived by
#   hand and checked against the package;
# - a training recipe that makes MIL reliable on a few dozen bags (`slamags_core.mil`): padded
#   mini-batches of bags, instance dropout, a warm-up + cosine schedule, several restarts and
#   **model selection on validation bags** (the authors' code selected on training accuracy, which
#   rewards overfitting) — all behind one call, `fit_evaluate`;
# - why attention is *unsigned* and how the package orients it into an abnormality score;
# - bag F1 / AUC for embeddings from two pretrainings (`simclr` vs the paper's `slam_ags`);
# - where the attention goes in positive vs negative bags;
# - how to read an instance AUROC against the bag: about `(1 − AUROC) · N_neg` normal cells
#   outrank each witness, which decides whether a probe AUROC of 0.9 is good enough for MIL.
#
# **Run time.** Measured on this project's 2-core CPU, shared with other jobs: `smoke` about a
# minute; `laptop` (the default, bags of 1000 cells) 14 min wall clock with an empty cache — two
# pretrainings and the embeddings of 128,000 cells (§2 prints each encoder's time) dominate; the
# MIL fits took 10-30 s per model with three restarts (the table's `seconds`; the laptop preset
# uses one restart since 2026-11-26, a third of that). With the encoders
# cached by notebook 04 or the sweep it is a few minutes. On a GPU: pretraining dominates, MIL is
# instant.
#
# **Notation.** A bag's frozen embeddings `H  # (N, D_h)` (one row `h_n` per cell), the instance
# code `r_n = ReLU(W_r h_n)`, gated-attention parameters `V_a`, `U_a`, `w_a`, gated key `κ_n`,
# attention `a_n` (`Σ_n a_n = 1`), bag vector `r̄`, prototypes `q_{c,m}`, the instance
# abnormality score `o_n`, `p̂` the predicted `P(Y = 1)`; `N_w` witnesses and `N_neg` normal cells
# in a positive bag. Every symbol of the course: [docs/notation.md](../docs/notation.md).
#
# **Exercises** at the end, each with an automatic check: gated attention pooling, and how many
# normal cells outrank a witness at a given instance AUROC.

# %%
try:
    import slamags_core  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    import os
    import sys
    sys.path.insert(0, os.path.abspath(".."))

import time

import ipywidgets as widgets
import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import torch
from IPython.display import display
from torch.testing import assert_close

from slamags_core import get_device, get_preset, set_seed
from slamags_core.aggregators import AGGREGATORS, build_mil
from slamags_core.embed import linear_probe
from slamags_core.mil import fit_evaluate, split_bags, witness_ablation
from slamags_core.pipeline import prepare_embeddings

preset = get_preset()
set_seed(preset.mil.seed)
device = get_device(preset.pretrain.device)
METHODS = ("simclr", "slam_ags")        # two pretrainings to compare
WR = preset.bags.witness_rate           # witness rate of this notebook's bags
print(f"preset={preset.name}  seed={preset.mil.seed}  device={device}  witness rate={WR}")
print(preset.mil)

# %% [markdown]
# ## 1 · Four ways to pool a bag
#
# A bag is the matrix of its cells' frozen embeddings $H \in \mathbb{R}^{N\times D_h}$ (one row
# $h_n$ per cell). Every aggregator (a subclass of `aggregators.MILAggregator`) first maps each
# cell to an instance code $r_n = \mathrm{ReLU}(W_r h_n)$ (after z-scoring the embeddings with
# training-cell statistics), then pools ($W_c$ is a linear bag classifier with a bias, $w_o$ a
# vector):
#
# | aggregator | bag vector / logits | "attention" $a_n$ (sums to 1) |
# |---|---|---|
# | `mean` | $\bar r = \frac1N\sum_n r_n$, logits $= W_c\bar r$ | $1/N$ — blind |
# | `max` | instance score $o_n = w_o^\top r_n$, logits $=(0, \max_n o_n)$ | $\mathrm{softmax}_n(o_n)$ |
# | `abmil` | $\bar r = \sum_n a_n r_n$, logits $= W_c\bar r$ | $\mathrm{softmax}_n(w_a^\top\kappa_n)$, $\kappa_n = \tanh(V_a r_n)\odot\mathrm{sigm}(U_a r_n)$ |
# | `prototype` | per class $c$: $\bar r_c = \sum_n a_{c,n} r_n$, $\mathrm{logit}_c = \gamma_c\, v_c^\top \bar r_c/\lVert v_c\rVert + b_c$ | $a_{c,n} = \mathrm{softmax}_n\big(\max_m q_{c,m}^\top\kappa_n\big)$ |
#
# In ABMIL the $\tanh$ branch proposes, the sigmoid branch *gates*, and a single learned query
# $w_a$ scores every cell. Note what the query is *not*: ABMIL has one attention for the bag,
# shared by both classes — it weighs cells by how much they inform the decision, in either
# direction, so it is **class-agnostic** (notebook 06 ranks by an abnormality score instead). The
# prototype model (this project's reading of PAMIL) replaces $w_a$ by $M$ learnable prototypes
# $q_{c,m}$ per class,
# gives each class its own attention, uses weight-normalised heads, and adds small clustering
# losses (cells a class attends to sit near one of its prototypes; prototypes of the two classes
# point apart). Its reported attention is the **abnormal** class's $a_{1,n}$.
#
# ABMIL and the prototype model share one module for the gated keys,
# `aggregators.GatedAttention`: $\kappa_n = \tanh(V_a r_n)\odot\mathrm{sigm}(U_a r_n)$ and one
# score per query ($w_a$ for ABMIL, the prototypes $q_{c,m}$ for the prototype model). By default ABMIL's query starts at **zero**, so
# training starts from mean pooling and the attention has to *earn* its focus; below we start it
# at random (`query_init`) so that the hand computation has something to check.
#
# Below, ABMIL's attention is recomputed by hand from a random model's weights and compared with
# the package.

# %%
toy_cfg = preset.mil.__class__(hidden_dim=6, query_init=0.5)
torch.manual_seed(0)
toy = build_mil("abmil", in_dim=4, cfg=toy_cfg).eval()
H_toy = torch.randn(5, 4)                               # a bag of N = 5 cells, D_h = 4: (N, D_h)
gate = toy.attention                                    # the shared GatedAttention module
with torch.no_grad():
    R = torch.relu(toy.embed[0]((H_toy - toy.mu) / toy.sigma))                    # r_n: (N, D_r)
    kappa = torch.tanh(gate.V(R)) * torch.sigmoid(gate.U(R))                      # κ_n: (N, D_a)
    e = gate.w(kappa).squeeze(-1)                                                 # e_n: (N,)
    a = torch.exp(e) / torch.exp(e).sum()                                         # softmax over cells
    logits = toy.classifier(a @ R)                                                # W_c r̄: (2,)
    out = toy(H_toy)
assert_close(out.attention, a)
assert_close(out.logits, logits)
# permutation invariance: shuffling the cells permutes the attention and keeps the logits
perm = torch.randperm(5)
assert_close(toy(H_toy[perm]).logits, out.logits)
print("attention by hand :", a.numpy().round(3))
print("attention package :", out.attention.detach().numpy().round(3))
for name in AGGREGATORS:
    att = build_mil(name, 4, toy_cfg).eval()(H_toy).attention.detach()
    print(f"{name:>9}: attention {att.numpy().round(3)}  sum={float(att.sum()):.3f}")

# %% [markdown]
# ## 2 · Bags and embeddings from two pretrainings
#
# `prepare_embeddings` simulates the bags at the witness rate, pretrains the encoder with the
# chosen strategy (or reloads its cached checkpoint) and embeds every cell with the frozen encoder.
# Both pretrainings see **the same bags**, so any difference below comes from the encoder.

# %%
data = {}
for method in METHODS:
    t0 = time.perf_counter()
    bagset, H = prepare_embeddings(preset, method, WR, seed=0, device=device, progress=False)
    data[method] = (bagset, H)
    print(f"{method:>9}: {bagset.n_bags} bags, {len(H)} cells, embeddings {tuple(H.shape)}  "
          f"({time.perf_counter() - t0:.1f} s)")
for split in ("train", "val", "test"):
    ids = bagset.split_bags(split)
    print(f"{split:>5}: {len(ids)} bags, {int(bagset.bag_labels[ids].sum())} positive")
n_wit = bagset.instance_labels[bagset.bag_cells(int(np.flatnonzero(bagset.bag_labels == 1)[0]))].sum()
print(f"a positive bag holds {n_wit} witnesses among {len(bagset.bag_cells(0))} cells")

# %% [markdown]
# **How separable are the witnesses at all?** MIL never sees cell labels. A logistic-regression
# probe that *does* (trained on the cells of the training bags with their true labels, scored on
# the test bags' cells) tells us how well each embedding separates witnesses from lymphocytes — a
# ceiling for what attention can retrieve. 0.5 = no separation, 1 = perfect.

# %%
probe_auroc = {}
for method, (bagset, H) in data.items():
    tr = np.isin(bagset.bag_index, bagset.split_bags("train"))
    te = np.isin(bagset.bag_index, bagset.split_bags("test"))
    H_np, lab = H.cpu().numpy(), bagset.instance_labels
    probe_auroc[method] = linear_probe(H_np[tr], lab[tr], H_np[te], lab[te])["auroc"]
    print(f"{method:>9}: instance-supervised linear probe AUROC = {probe_auroc[method]:.3f}")


# %% [markdown]
# ## 3 · Train the four aggregators, select on validation loss
#
# `mil.fit_evaluate(name, bagset, H, cfg)` is the one train-and-evaluate call of the project (the
# sweep, the benchmarks and notebooks 06-07 use it too). Inside, `train_mil`:
#
# - trains on **mini-batches of `batch_bags` bags**, padded to the longest bag with a mask, with
#   Adam under a linear warm-up and cosine decay (the authors' code: one bag per step, constant lr);
# - hides a random share `instance_dropout` of every training bag's cells at each step, so the
#   model cannot rest on the few easiest witnesses and has to score *all* of them;
# - evaluates the validation bags' cross-entropy after every epoch, keeps the best state, stops
#   after `patience` epochs without improvement — and does all this for `restarts` independent
#   initialisations, keeping the one with the lowest validation loss;
# - draws every random number from generators seeded by `cfg.seed`: the notebook's global RNGs
#   are untouched, and the same seed gives the same numbers.
#
# The test bags are touched only once, for the table. `docs/mil.md` explains with measurements
# why each piece is there.

# %%
print(preset.mil)
rows, runs = [], {}
for method, (bagset, H) in data.items():
    for name in AGGREGATORS:
        r = fit_evaluate(name, bagset, H, preset.mil, device=device)
        runs[method, name] = r
        rows.append(dict(method=method, mil=name, epochs=len(r.history), seconds=r.seconds,
                         ranking=r.model.ranking_name,
                         **{k: r.metrics[k] for k in ("bag_f1", "bag_auc", "topk_recall",
                                                      "instance_auroc", "attention_topk_recall",
                                                      "attention_instance_auroc")}))
table = pd.DataFrame(rows).set_index(["method", "mil"])
table.round(3)

# %%
fig = go.Figure()
for (method, name), r in runs.items():
    sel = next(h for h in r.history if h["selected"])
    hist = [h for h in r.history if h["restart"] == sel["restart"]]   # the selected restart
    fig.add_scatter(y=[h["val_loss"] for h in hist], mode="lines", name=f"{method} · {name}",
                    line=dict(dash="solid" if method == METHODS[-1] else "dot"))
    fig.add_scatter(x=[sel["epoch"]], y=[sel["val_loss"]], mode="markers",
                    marker=dict(size=9, symbol="star"), showlegend=False, hoverinfo="skip")
fig.update_layout(title="Validation cross-entropy per epoch of the selected restart "
                        "(star = restored state)",
                  xaxis_title="epoch", yaxis_title="validation CE", height=400)
fig.show()

# %% [markdown]
# *What you should see:* one validation-loss curve per encoder × aggregator for the restart that
# was kept, with a star where its best state was restored; check how many epochs each needed (the
# table's `epochs`) and whether a curve ever falls below ln 2 ≈ 0.69, the loss of a constant
# prediction of 1/2 — a curve that never does belongs to a model that learnt nothing that
# generalises to the validation bags.
#
# **Reading the table.** `bag_f1` and `bag_auc` are computed on the held-out test bags
# (abnormal = positive class). `topk_recall` and `instance_auroc` score the **abnormality**
# ranking inside positive test bags (K = 40% of the bag; see notebook 06 for the definitions); the
# `attention_` columns score raw attention. Why two rankings? Attention is *unsigned*: it says
# where the model looks, not whether what it sees is abnormal. The prototype model has one
# attention per class and often lets the **normal** class's attention find the witnesses (its head
# then votes "not normal"), leaving the abnormal class's attention on ordinary cells — a perfect
# classifier whose reported attention is inverted. After training, each model scores its
# candidate instance scores (`ranking` column: each cell's vote `+v`/`-v` under the bag
# classifier, then the attention logits `+e1`/`-e1`/`+e0`/`-e0` for the prototype model or
# `+e`/`-e` for ABMIL; `s` for max pooling) by how well their per-bag **maximum** separates
# positive from negative *training* bags — no cell label is used — and reports the best as its
# abnormality. Mean pooling has uniform attention, so its attention columns are exactly chance
# (recall = K / N = `topk_fraction`, instance AUROC = 0.5; check both in the table), while its
# abnormality (the classifier's value of each cell) is not.
#
# With few witnesses, averaging dilutes their signal by the witness rate, which is
# why attention pooling should win at low witness rates — *if* the encoder separates the
# witnesses: the aggregator can only find cells that the embedding separates (compare with the
# probe above; §5 shows how to read a probe AUROC against the bag). With a weak embedding and a
# few dozen training bags, the validation loss may never drop below ln 2 ≈ 0.69; model selection
# then keeps a nearly untrained model and reports honest chance-level numbers instead of an
# overfit one.
#
# **A trap at low witness rates: the slide's stain.** Every bag here is one slide with one stain,
# drawn independently of its label. With a few dozen training bags (§2 prints how many), some
# stain direction separates the training labels by chance, and a flexible model finds it faster
# than a handful of witnesses among hundreds of cells.
# The test bags have their own chance stain–label association, so every MIL seed on every encoder
# of the same bags lands on the same side of 0.5 — below chance, on some bag seeds. `docs/mil.md`
# measures this; `MILConfig.bag_center=True` subtracts each bag's median embedding before anything
# else, so a slide-wide offset cannot be read any more.

# %% [markdown]
# **Does a decision rest on the witnesses?** Delete every witness from the test bags and ask the
# same trained model again (`mil.witness_ablation`). A model that found the witnesses loses its
# positive bags (bag AUC falls towards 0.5, `P(abnormal)` moves a lot); a model that reads
# bag-level content (the stain, the mix of ordinary cells) does not notice.

# %%
ablation = pd.DataFrame([
    dict(method=method, mil=name, bag_auc=r.metrics["bag_auc"],
         **witness_ablation(r.model, split_bags(data[method][0], data[method][1], "test")[1],
                            r.y, r.instance_labels, device=device))
    for (method, name), r in runs.items()]).set_index(["method", "mil"])
ablation.round(3)

# %% [markdown]
# ## 4 · Where does the attention go?
#
# Multiply each cell's attention by the bag size, so that **1 = uniform**. Cells fall in three
# groups: cells of negative bags, ordinary cells of positive bags, and the witnesses. A useful
# attention model puts witnesses far above 1 and keeps everything else at or below 1.

# %%
recs = []
for (method, name), r in runs.items():
    if name not in ("abmil", "prototype"):
        continue
    for a, lab, yb in zip(r.attention, r.instance_labels, r.y):
        group = np.where(lab == 1, "witness", "other cell, positive bag" if yb else "negative bag")
        recs.append(pd.DataFrame(dict(model=f"{method} · {name}", group=group, scaled=a * len(a))))
att_df = pd.concat(recs, ignore_index=True)
fig = px.box(att_df, x="model", y="scaled", color="group", log_y=True, points=False,
             title="attention × bag size (1 = uniform), test bags")
fig.update_layout(height=420)
fig.show()
att_df.groupby(["model", "group"])["scaled"].median().unstack().round(2)

# %% [markdown]
# *What you should see:* for each attention model, three boxes on a log axis with 1 = uniform;
# the table gives their medians. Check whether the witnesses' box sits above the other two, and
# note that the negative bags' cells are not all below 1: their bag's attention sums to 1 as well
# and has to go somewhere (notebook 07 returns to this).

# %%
recs = []
for (method, name), r in runs.items():
    if name in ("abmil", "prototype"):
        for i, (a, yb) in enumerate(zip(r.attention, r.y)):
            ent = float(-(a * np.log(a + 1e-12)).sum() / np.log(len(a)))
            recs.append(dict(model=f"{method} · {name}", bag=i, label="positive" if yb else "negative",
                             entropy=ent, p_abnormal=r.prob[i]))
ent_df = pd.DataFrame(recs)
fig = px.strip(ent_df, x="model", y="entropy", color="label", hover_data=["bag", "p_abnormal"],
               title="normalised attention entropy per test bag (1 = uniform, 0 = one cell)")
fig.update_layout(height=380)
fig.show()
n_w_bag = int(bagset.instance_labels[bagset.bag_cells(int(np.flatnonzero(bagset.bag_labels == 1)[0]))].sum())
print(f"entropy of uniform attention over the N_w = {n_w_bag} witnesses of a bag of "
      f"N = {len(bagset.bag_cells(0))}: {np.log(n_w_bag) / np.log(len(bagset.bag_cells(0))):.3f}")
ent_df.groupby(["model", "label"])["entropy"].median().unstack().round(3)

# %% [markdown]
# *What you should see:* one dot per test bag. An attention that has found `N_w` witnesses and
# ignores the rest has entropy about `log N_w / log N` in positive bags (printed below the
# table); check whether the positive bags (the table's medians) come near it and sit lower than
# the negative ones, or whether both stay near 1 (attention close to uniform, as ABMIL's zero
# initial query starts it).


# %% [markdown]
# ### Explore one bag
#
# Pick a model and a test bag: the bars are the bag's cells sorted by attention, witnesses in red.
# (The first view is drawn right away; move a widget to redraw.)

# %%
def bag_figure(model_name, j):
    method, name = model_name.split(" · ")
    r = runs[method, name]
    a, lab = r.attention[j], r.instance_labels[j]
    order = np.argsort(-a)
    fig = go.Figure(go.Bar(y=a[order] * len(a), marker_color=np.where(lab[order] == 1, "crimson", "steelblue")))
    fig.update_layout(title=f"{model_name} · bag {j} (label {r.y[j]}, P(abnormal)={r.prob[j]:.2f})",
                      xaxis_title="cells sorted by attention", yaxis_title="attention × N", height=320)
    return fig

options = [f"{m} · {n}" for (m, n) in runs if n in ("abmil", "prototype", "max")]
y_test = next(iter(runs.values())).y
first_pos = int(np.flatnonzero(y_test == 1)[0])
bag_figure(options[-1], first_pos).show()   # static view (the widget below redraws on change only)

model_dd = widgets.Dropdown(options=options, value=options[-1], description="model")
bag_sl = widgets.IntSlider(value=first_pos, min=0, max=len(y_test) - 1, description="test bag")
out = widgets.Output()

def redraw(*_):
    out.clear_output(wait=True)
    with out:
        bag_figure(model_dd.value, bag_sl.value).show()

model_dd.observe(redraw, "value")
bag_sl.observe(redraw, "value")
display(widgets.VBox([widgets.HBox([model_dd, bag_sl]), out]))

# %% [markdown]
# *What you should see:* the first positive test bag's cells as bars sorted by `a_n × N`, the
# witnesses in red. A model that found them puts the red bars first; count how many blue bars
# come before the first red one — §5 predicts that number from an AUROC.

# %% [markdown]
# ## 5 · Reading an instance AUROC against the bag
#
# An instance AUROC — the probe's of §2 or a MIL model's `instance_auroc` — is the probability that
# a random witness scores above a random normal cell. In a positive bag of `N` cells with
# `N_w = round(WR · N)` witnesses and `N_neg = N − N_w` normal cells, each witness is therefore
# outranked, on average, by
#
# $$(1 - \mathrm{AUROC}) \cdot N_\text{neg}$$
#
# normal cells. What matters for finding the witnesses is that number **against `N_w`**: when
# more normal cells than witnesses sit above a typical witness, the top of the bag is mostly
# normal look-alikes, attention that follows the score spreads over them, and the witnesses'
# evidence is diluted. Fewer outrankers than witnesses needs `AUROC > 1 − N_w / N_neg`, which is
# about `1 − WR`: the lower the witness rate, the closer to 1 an AUROC must be. Check it in the
# second table below: at the paper's bag size an AUROC of 0.95 leaves fewer normal cells above a
# witness than there are witnesses at WR 10 %, and several times more at WR 1 %.

# %%
n_bag = len(bagset.bag_cells(0))
n_w = n_w_bag
n_neg = n_bag - n_w
rows = []
for method, auc in probe_auroc.items():
    rows.append({"embedding": method, "probe AUROC": auc, "N": n_bag, "N_w": n_w, "N_neg": n_neg,
                 "normal cells above each witness": (1 - auc) * n_neg,
                 "AUROC needed for fewer than N_w": 1 - n_w / n_neg})
print(f"this notebook's bags: N = {n_bag}, WR = {WR}, N_w = {n_w}, N_neg = {n_neg}")
pd.DataFrame(rows).set_index("embedding").round(3)

# %%
# the same reading at the paper's bag size, for the paper preset's witness rates
paper = get_preset("paper")
N_paper = paper.bags.bag_size
grid = {}
for wr in paper.witness_rates:
    nw = max(1, int(wr * N_paper + 0.5))
    grid[f"WR {wr:g} (N_w = {nw})"] = {f"AUROC {auc:g}": (1 - auc) * (N_paper - nw)
                                       for auc in (0.9, 0.95, 0.99, 0.999)}
print(f"normal cells above each witness in a bag of N = {N_paper} cells (the paper preset):")
pd.DataFrame(grid).T.round(1)

# %% [markdown]
# The formula is exact for the within-bag AUROC: counting, in every positive test bag, the normal
# cells that score above each witness (ties count one half) gives `(1 − AUROC_b) · N_neg` for
# that bag. Below, the count on the trained models' abnormality scores next to the formula.

# %%
from sklearn.metrics import roc_auc_score

check = []
for (method, name), r in runs.items():
    counted, predicted = [], []
    for o, lab, yb in zip(r.abnormality, r.instance_labels, r.y):
        if not yb:
            continue
        w_scores, n_scores = o[lab == 1], o[lab == 0]
        above = (n_scores[None, :] > w_scores[:, None]).sum(1) + 0.5 * (n_scores[None, :] == w_scores[:, None]).sum(1)
        counted.append(above.mean())
        predicted.append((1 - roc_auc_score(lab, o)) * len(n_scores))
    assert np.allclose(counted, predicted)
    check.append({"model": f"{method} · {name}", "instance AUROC": r.metrics["instance_auroc"],
                  "normal cells above a witness (counted)": np.mean(counted),
                  "(1 − AUROC) · N_neg": (1 - r.metrics["instance_auroc"]) * n_neg, "N_w": n_w})
pd.DataFrame(check).set_index("model").round(2)

# %% [markdown]
# Read the three tables together: if the probe's outrankers already exceed `N_w`, a MIL model
# at chance does not contradict a "good" probe AUROC — at this witness rate an AUROC of that size
# is not enough. The second table shows how fast the bar rises with the paper's bag size and
# lower witness rates; the third, that the MIL models' own instance AUROCs read the same way.

# %% [markdown]
# ## Takeaways
#
# - The bag label only says *some* cells are abnormal; attention pooling lets the model find them,
#   mean pooling cannot (its attention is uniform by construction), max pooling bets everything on
#   a single cell and is brittle with few bags.
# - Model selection on validation loss (star in the curves) guards against the overfitting that
#   selecting on training accuracy would reward; restarts (3 in the `paper` preset, 1 in `laptop`,
#   where a second and third changed bag AUC by <= 0.012: docs/mil.md) guard against an unlucky
#   initialisation; mini-batches and instance dropout make each run steadier.
# - Attention is unsigned: read retrieval from the abnormality ranking, which the model orients
#   with bag labels only (the prototype model's abnormal-class attention is often inverted).
# - Read bag F1/AUC against the probe AUROC **and the bag** (§5): an instance AUROC leaves about
#   `(1 − AUROC) · N_neg` normal cells above each witness. When that is more than `N_w`, even a
#   probe AUROC above 0.9 is not enough for attention to single the witnesses out, and MIL near
#   chance is what to expect — it does not contradict the probe, and it does not by itself say
#   that the pretraining is the bottleneck: the probe sees cell labels, MIL a few dozen slide
#   labels. Whether a better encoder would help is measured (outrankers against `N_w`, the
#   witness ablation of §3, `docs/mil.md`), not assumed.
# - Compare the two pretrainings row by row in the table: the aggregator is the same, only the
#   embedding changes. Notebook 06 looks at the retrieved cells themselves; notebook 08 runs every
#   pretraining × witness rate.

# %% [markdown]
# ## Exercises
#
# Each exercise asks for one function. The cell under it calls a grader from
# `slamags_core.exercises`, which runs your function next to the right answer on random and
# edge-case inputs and tells you which input failed, what was expected, what you returned and — if
# your answer matches a typical mistake — which one. Until you write the function, the check says
# *not attempted*. (Teachers: worked solutions are in `notebooks/solutions/`; see
# `docs/teaching.md`.)

# %%
from slamags_core import exercises

# %% [markdown]
# ### Exercise 1 · Gated attention pooling
#
# Write `gated_attention(R, V_a, U_a, w_a)` for one bag: `R` `(N, D_r)` the instance codes
# `r_n`, `V_a` and `U_a` `(D_a, D_r)`, `w_a` `(D_a,)`. Return the attention
# `a = softmax_n(w_aᵀ κ_n)` with `κ_n = tanh(V_a r_n) ⊙ sigm(U_a r_n)`, shape `(N,)`, and the bag
# vector `r̄ = Σ_n a_n r_n`, shape `(D_r,)`, in torch (the check also differentiates it). (The
# package's layers add a bias inside `tanh` and `sigm`; the exercise leaves them out.) Then call
# it with `w_a = 0`, the package's initial query (§1): what are `a` and `r̄`, and which of the
# four aggregators is ABMIL at the start of training? What does scaling `w_a` by 10 do to `a`?

# %% tags=["exercise"]
def gated_attention(R, V_a, U_a, w_a):
    # your code here (torch.tanh, torch.sigmoid, torch.softmax over dim 0)
    raise NotImplementedError("exercise 1: gated_attention")


# %% tags=["exercise-check"]
exercises.check_gated_attention(gated_attention)

# %% [markdown]
# ### Exercise 2 · How many normal cells outrank a witness?
#
# Write `witness_outrankers(instance_auroc, bag_size, witness_rate)`: the expected number of
# normal cells that score above a witness in a positive bag, `(1 − AUROC) · N_neg` with
# `N_neg = N − N_w` and `N_w = round(WR · N)` (at least 1; round halves up). Then use it at the
# paper's scale, `N = 1000`: which AUROC leaves fewer normal cells above each witness than there
# are witnesses at WR 0.5 %, and at WR 10 %?

# %% tags=["exercise"]
def witness_outrankers(instance_auroc, bag_size, witness_rate):
    # your code here
    raise NotImplementedError("exercise 2: witness_outrankers")


# %% tags=["exercise-check"]
exercises.check_witness_outrankers(witness_outrankers)
