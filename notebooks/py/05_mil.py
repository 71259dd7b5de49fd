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
#   ABMIL (Ilse, Tomczak & Welling, ICML 2018) and the paper's prototype-aware attention
#   (PAMIL-style, Liu et al., MICCAI 2024), with the ABMIL formula re-derived by hand and checked
#   against the package;
# - a training recipe that makes MIL reliable on a few dozen bags (`slamags_core.mil`): padded
#   mini-batches of bags, instance dropout, a warm-up + cosine schedule, several restarts and
#   **model selection on validation bags** (the authors' code selected on training accuracy, which
#   rewards overfitting) — all behind one call, `fit_evaluate`;
# - why attention is *unsigned* and how the package orients it into an abnormality score;
# - bag F1 / AUC for embeddings from two pretrainings (`simclr` vs the paper's `slam_ags`);
# - where the attention goes in positive vs negative bags.
#
# **Run time.** `smoke`: well under a minute on a CPU. `laptop` (the default): a few minutes on a
# CPU if the pretrained encoders are cached (notebook 04 or the sweep), plus the pretraining time
# otherwise; MIL training itself takes seconds per model. On a GPU: pretraining dominates, MIL is instant.

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
# A bag is a matrix of cell embeddings $X \in \mathbb{R}^{N\times D}$ (one row per cell). Every
# aggregator (a subclass of `aggregators.MILAggregator`) first maps each cell to
# $h_n = \mathrm{ReLU}(W x_n)$ (after z-scoring the embeddings with training-cell statistics), then
# pools:
#
# | aggregator | bag vector / logits | "attention" $a_n$ (sums to 1) |
# |---|---|---|
# | `mean` | $z = \frac1N\sum_n h_n$, logits $= Cz$ | $1/N$ — blind |
# | `max` | instance score $s_n = c^\top h_n$, logits $=(0, \max_n s_n)$ | $\mathrm{softmax}_n(s_n)$ |
# | `abmil` | $z = \sum_n a_n h_n$, logits $= Cz$ | $\mathrm{softmax}_n\big(w^\top(\tanh(Vh_n)\odot\sigma(Uh_n))\big)$ |
# | `prototype` | per class $c$: $z_c = \sum_n a_{c,n} h_n$, $\mathrm{logit}_c = g_c\, v_c^\top z_c/\lVert v_c\rVert$ | $a_{c,n} = \mathrm{softmax}_n\big(\max_m p_{c,m}^\top(\tanh(Vh_n)\odot\sigma(Uh_n))\big)$ |
#
# In ABMIL the $\tanh$ branch proposes, the sigmoid branch *gates*, and a single learned query
# $w$ scores every cell. The prototype model replaces $w$ by $M$ learnable prototypes per class,
# gives each class its own attention, uses weight-normalised heads, and adds small clustering
# losses (cells a class attends to sit near one of its prototypes; prototypes of the two classes
# point apart). Its reported attention is the **abnormal** class's $a_{1,n}$.
#
# ABMIL and the prototype model share one module for the gated scores,
# `aggregators.GatedAttention`: $g_n = \tanh(Vh_n)\odot\sigma(Uh_n)$ and one score per query
# ($w$ for ABMIL, the prototypes for PAMIL). By default ABMIL's query starts at **zero**, so
# training starts from mean pooling and the attention has to *earn* its focus; below we start it
# at random (`query_init`) so that the hand computation has something to check.
#
# Below, ABMIL's attention is recomputed by hand from a random model's weights and compared with
# the package.

# %%
toy_cfg = preset.mil.__class__(hidden_dim=6, query_init=0.5)
torch.manual_seed(0)
toy = build_mil("abmil", in_dim=4, cfg=toy_cfg).eval()
X = torch.randn(5, 4)                                   # a bag of 5 cells, 4-d embeddings
gate = toy.attention                                    # the shared GatedAttention module
with torch.no_grad():
    h = torch.relu(toy.embed[0]((X - toy.mu) / toy.sigma))                        # (N, L)
    e = gate.w(torch.tanh(gate.V(h)) * torch.sigmoid(gate.U(h))).squeeze(-1)      # (N,)
    a = torch.exp(e) / torch.exp(e).sum()                                         # softmax over cells
    logits = toy.classifier(a @ h)                                                # (2,)
    out = toy(X)
assert_close(out.attention, a)
assert_close(out.logits, logits)
# permutation invariance: shuffling the cells permutes the attention and keeps the logits
perm = torch.randperm(5)
assert_close(toy(X[perm]).logits, out.logits)
print("attention by hand :", a.numpy().round(3))
print("attention package :", out.attention.detach().numpy().round(3))
for name in AGGREGATORS:
    att = build_mil(name, 4, toy_cfg).eval()(X).attention.detach()
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
for method, (bagset, H) in data.items():
    tr = np.isin(bagset.bag_index, bagset.split_bags("train"))
    te = np.isin(bagset.bag_index, bagset.split_bags("test"))
    X, lab = H.cpu().numpy(), bagset.instance_labels
    print(f"{method:>9}: instance-supervised linear probe AUROC = "
          f"{linear_probe(X[tr], lab[tr], X[te], lab[te])['auroc']:.3f}")


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
# **Reading the table.** `bag_f1` and `bag_auc` are computed on the held-out test bags
# (abnormal = positive class). `topk_recall` and `instance_auroc` score the **abnormality**
# ranking inside positive test bags (K = 40% of the bag; see notebook 06 for the definitions); the
# `attention_` columns score raw attention. Why two rankings? Attention is *unsigned*: it says
# where the model looks, not whether what it sees is abnormal. The prototype model has one
# attention per class and often lets the **normal** class's attention find the witnesses (its head
# then votes "not normal"), leaving the abnormal class's attention on ordinary cells — a perfect
# classifier whose reported attention is inverted. After training, each model scores its
# candidate instance scores (`ranking` column: `+e1`/`-e1`/`+e0`/`-e0` for the prototype model,
# `+e`/`-e` for ABMIL, `s` for max pooling) by how well their per-bag **maximum** separates
# positive from negative *training* bags — no cell label is used — and reports the best as its
# abnormality. Mean pooling has uniform attention, so its attention columns are exactly chance
# (recall = 0.4), while its abnormality (the classifier's value of each cell) is not.
#
# With few witnesses, averaging dilutes their signal by the witness rate, which is
# why attention pooling should win at low witness rates — *if* the encoder separates the
# witnesses: the aggregator can only find cells that the embedding separates (compare with the
# probe above). With a weak embedding and a few dozen training bags, the validation loss may never
# drop below ln 2 ≈ 0.69; model selection then keeps a nearly untrained model and reports honest
# chance-level numbers instead of an overfit one.
#
# **A trap at low witness rates: the slide's stain.** Every bag here is one slide with one stain,
# drawn independently of its label. With 48 training bags, some stain direction separates the
# training labels by chance, and a flexible model finds it faster than two witnesses in 200 cells.
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
# ## Takeaways
#
# - The bag label only says *some* cells are abnormal; attention pooling lets the model find them,
#   mean pooling cannot (its attention is uniform by construction), max pooling bets everything on
#   a single cell and is brittle with few bags.
# - Model selection on validation loss (star in the curves) over several restarts guards against
#   the overfitting that selecting on training accuracy would reward, and against an unlucky
#   initialisation; mini-batches and instance dropout make each run steadier.
# - Attention is unsigned: read retrieval from the abnormality ranking, which the model orients
#   with bag labels only (the prototype model's abnormal-class attention is often inverted).
# - Read bag F1/AUC against the probe AUROC: when even an instance-supervised probe separates
#   witnesses only moderately, bag-level MIL with ~50 training bags stays near chance — the
#   bottleneck is the pretraining, which is exactly what SLAM-AGS sets out to improve.
# - Compare the two pretrainings row by row in the table: the aggregator is the same, only the
#   embedding changes. Notebook 06 looks at the retrieved cells themselves; notebook 08 runs every
#   pretraining × witness rate.
