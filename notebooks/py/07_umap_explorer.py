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
# # 07 · UMAP explorer — what the encoders learned
#
# **Goal.** Look at the embedding space itself: every cell of the test bags, projected to 2-D with
# UMAP, for two pretrainings side by side (SimCLR vs SLAM-AGS by default). Colour the points by
# bag label, by true cell type, by witness status or by the attention an ABMIL model gives them,
# and click a point to see the cell.
#
# **What you will learn.**
# - what "the witnesses form their own region" looks like (and when it does not), and why a bag
#   label alone hides the witnesses;
# - why a UMAP picture needs a number beside it — the *k-NN witness purity*, measured in the same
#   geometry the UMAP is fitted in (UMAP keeps neighbourhoods, not distances);
# - why attention cannot be compared across bags as it is: it sums to 1 in *every* bag, so a
#   negative bag's cells absorb their bag's attention too; colour by the rank inside the bag, or
#   by attention in positive bags only.
#
# **Run time.** Measured on this project's 2-core CPU, shared with other jobs: `smoke` 1.5 min
# wall clock (most of it UMAP's one-off JIT compilation); `laptop` (bags of 1000 cells) 2.6 min
# wall clock with the two encoders cached by notebook 05, plus about 12 min of pretraining and
# embedding when nothing is cached (notebook 05's measurement). Clicking needs a live JupyterLab; under nbval the callbacks are simply not
# triggered.
#
# **Notation.** `h_n` the frozen backbone feature of cell `n` (`H  # (N, D_h)` stacks them), `y_n`
# its label (1 = witness; never used in training), `Y` the bag label, `N` the cells of a bag,
# `a_n` ABMIL's attention weight (`Σ_n a_n = 1` in every bag), `k` the neighbours of the purity.
# Every symbol of the course: [docs/notation.md](../docs/notation.md).
#
# **Exercises** at the end, each with an automatic check: the k-NN witness purity, and the
# attention rank of each cell inside its own bag.

# %%
try:
    import slamags_core  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    import os
    import sys
    sys.path.insert(0, os.path.abspath(".."))

import io
import warnings

import ipywidgets as widgets
import numpy as np
import pandas as pd
import plotly.graph_objects as go
from IPython.display import display
from PIL import Image
from sklearn.neighbors import NearestNeighbors

from slamags_core import get_device, get_preset, set_seed
from slamags_core.mil import fit_evaluate
from slamags_core.pipeline import prepare_embeddings

preset = get_preset()                      # $SLAMAGS_PRESET (smoke in CI), default laptop
SEED = 0
set_seed(SEED)
device = get_device(preset.pretrain.device)
METHODS = ["simclr", "slam_ags"]           # the two pretrainings to compare (any of config.METHODS)
WR = preset.bags.witness_rate              # witness rate of the simulated bags
N_POINTS = 400 if preset.name == "smoke" else 4000   # cells shown (all witnesses + random others)
print(f"preset={preset.name} device={device} WR={WR} methods={METHODS}")

# %% [markdown]
# ## 1 · Embeddings and attention for each pretraining
#
# `prepare_embeddings` returns the bags and the frozen-encoder embedding `H  # (N, D)` of every
# cell, reusing the checkpoints of notebook 04 or of the sweep when they exist. An ABMIL model
# trained and evaluated by `mil.fit_evaluate` (the same call as the sweep) gives each test cell an
# attention weight.

# %%
warnings.filterwarnings("ignore", category=UserWarning)   # collapse warnings are shown in nb 04
data = {}
for method in METHODS:
    bagset, H = prepare_embeddings(preset, method, WR, SEED, device=device, progress=False)
    r = fit_evaluate("abmil", bagset, H, preset.mil, device=device)
    cells = np.concatenate([bagset.bag_cells(i) for i in r.bag_ids])
    att = np.concatenate([a * len(a) for a in r.attention])   # x bag size: 1 = uniform attention
    data[method] = dict(bagset=bagset, H=H[cells].numpy(), cells=cells, att=att)
    print(f"{method}: {len(cells)} test cells, D={H.shape[1]}")

# %% [markdown]
# ## 2 · Which cells to show
#
# All witnesses of the test bags plus a random sample of the other cells (the same cells for
# both methods), so the rare class is visible at all: a uniform sample of `N_POINTS` test cells
# would hold only the few witnesses printed below (about `N_POINTS ×` their share of the test
# cells).

# %%
ref = data[METHODS[0]]
bagset = ref["bagset"]
rng = np.random.default_rng(SEED)
inst = bagset.instance_labels[ref["cells"]]
wit = np.flatnonzero(inst == 1)
other = rng.choice(np.flatnonzero(inst == 0), size=min(N_POINTS - len(wit), int((inst == 0).sum())),
                   replace=False)
show = np.sort(np.concatenate([wit, other]))           # positions inside the test-cell arrays
cell_idx = ref["cells"][show]                          # indices into the BagSet
labels = {
    "bag label": np.where(bagset.bag_labels[bagset.bag_index[cell_idx]] == 1, "positive bag", "negative bag"),
    "cell type": bagset.cell_types[cell_idx],
    "witness": np.where(bagset.instance_labels[cell_idx] == 1, "witness", "other"),
}
print(f"{len(wit)} witnesses among {len(inst)} test cells ({inst.mean():.2%}): a uniform sample of "
      f"{N_POINTS} would hold about {N_POINTS * inst.mean():.0f}; shown: {len(show)} cells")
print({k: {str(a): int(b) for a, b in zip(*np.unique(v, return_counts=True))} for k, v in labels.items()})


# %% [markdown]
# ## 3 · One geometry for the number and the picture
#
# Every dimension of `H` is first standardised (z-scored over the shown cells, as the MIL models
# standardise their input), and similarity is the **cosine** of the standardised rows. The UMAP of
# §4 is fitted with `metric="cosine"` on exactly these rows, so the number below and the picture
# describe the same neighbourhoods.
#
# **k-NN witness purity.** For each witness, what fraction of its `k` nearest *other* cells (by
# cosine, in all `D_h` dimensions, among the shown cells) are witnesses too? Averaged over the
# witnesses. Chance level is the witness share of the shown cells (a witness's neighbours drawn
# at random). This is what an attention model can exploit, and it does not depend on UMAP's layout.

# %%
def standardise(E):
    # z-score every dimension (columns of E, (n, D)); constant dimensions stay 0
    return (E - E.mean(0)) / E.std(0).clip(1e-6)


def knn_purity(E, y, k=10, metric="cosine"):
    # share of witnesses among the k nearest other cells of each witness, averaged over witnesses
    nn = NearestNeighbors(n_neighbors=k + 1, metric=metric).fit(E)
    _, idx = nn.kneighbors(E[y == 1])          # (n_witnesses, k + 1); column 0 is the cell itself
    return float((y[idx[:, 1:]] == 1).mean())


y_show = bagset.instance_labels[cell_idx]
G = {method: standardise(data[method]["H"][show]) for method in METHODS}   # (n_shown, D_h) each
K_PURITY = 10
purity = {method: knn_purity(G[method], y_show, K_PURITY) for method in METHODS}
print(f"chance = witness share of the shown cells = {np.round(y_show.mean(), 3)}")
for method in METHODS:
    print(f"{method:10s} k-NN witness purity (k={K_PURITY}, cosine, D_h={G[method].shape[1]}) = "
          f"{np.round(purity[method], 3)}")

# %% [markdown]
# ## 4 · UMAP
#
# UMAP (McInnes et al. 2018) keeps local neighbourhoods and tears global distances; clusters'
# sizes and the gaps between them mean little. We fit it once per method on the shown cells, in
# the geometry of §3, and then measure the same purity in the 2-D layout (Euclidean there): how
# much of the neighbourhood structure the picture kept.

# %%
import umap

coords = {}
for method in METHODS:
    coords[method] = umap.UMAP(n_neighbors=15, min_dist=0.1, metric="cosine", random_state=SEED,
                               n_jobs=1).fit_transform(G[method])     # (n_shown, 2)
pd.DataFrame({method: {"purity in D_h (cosine)": purity[method],
                       "purity in the 2-D UMAP": knn_purity(coords[method], y_show, K_PURITY,
                                                            metric="euclidean"),
                       "chance": y_show.mean()}
              for method in METHODS}).T.round(3)

# %% [markdown]
# Read the table before the pictures: where the 2-D purity is far above the `D_h`-dimensional
# one, UMAP has drawn a tighter witness region than the embedding holds; where it is far below,
# the picture hides structure that is there.
#
# ## 5 · Attention cannot be pooled across bags
#
# ABMIL's attention is a softmax inside each bag: `Σ_n a_n = 1` in every bag, negative bags
# included. Shown `× N` (so 1 is the uniform weight), a cell of a negative bag — which holds no
# witness — still gets its share, and the cells the model prefers there get several times the
# uniform weight. Pooled over bags, a colour scale of `a_n × N` therefore lights up look-alike
# normal cells of negative bags as much as witnesses, and bags with peaked attention dominate
# those with diffuse attention. (The attention is also class-agnostic: it weighs cells for the
# bag decision, whichever way they push it; notebook 06 ranks cells by a signed abnormality score
# instead.) Two honest colourings: the **rank of a cell's attention inside its own bag**,
# `(rank − 1) / (N − 1)`, 0 for the bag's lowest and 1 for its highest weight; or `a_n × N`
# in **positive bags only**.

# %%
def within_bag_rank(scores, bag_index):
    # (rank - 1) / (N_b - 1) inside each bag; rank 1 = lowest, ties share their average rank
    s = pd.Series(scores)
    rank = s.groupby(bag_index).rank(method="average").to_numpy()
    size = np.bincount(bag_index)[bag_index]
    return (rank - 1) / (size - 1).clip(1)


rows = []
for method in METHODS:
    d = data[method]
    bag = bagset.bag_index[d["cells"]]                 # bag of every test cell
    d["rank"] = within_bag_rank(d["att"], bag)
    group = np.where(bagset.instance_labels[d["cells"]] == 1, "witness",
                     np.where(bagset.bag_labels[bag] == 1, "other cell, positive bag",
                              "cell of a negative bag"))
    d["group"] = group
    top = d["att"] >= np.quantile(d["att"], 0.99)     # the top 1 % of a_n x N, pooled over bags
    peak = pd.Series(d["att"], dtype=float).groupby(bag).max()   # each bag's largest a_n x N
    peak_neg = peak[bagset.bag_labels[peak.index] == 0]
    peak_pos = peak[bagset.bag_labels[peak.index] == 1]
    rows.append({"method": method,
                 "top 1 % of pooled a·N: share from negative bags": np.mean(group[top] == "cell of a negative bag"),
                 "median peak a·N, negative bags": peak_neg.median(),
                 "median peak a·N, positive bags": peak_pos.median(),
                 "witnesses' median within-bag rank": np.median(d["rank"][group == "witness"])})

fig = go.Figure()
for method in METHODS:
    d = data[method]
    for gname, colour in (("witness", "#ff7f0e"), ("other cell, positive bag", "#d62728"),
                          ("cell of a negative bag", "#1f77b4")):
        fig.add_trace(go.Box(x=np.full((d["group"] == gname).sum(), method), y=d["att"][d["group"] == gname],
                             name=gname, marker_color=colour, legendgroup=gname,
                             showlegend=method == METHODS[0], boxpoints=False))
fig.update_layout(boxmode="group", height=380, width=760, yaxis_type="log",
                  yaxis_title="attention × N (1 = uniform)",
                  title="ABMIL attention of the test cells, by group")
fig.show()
pd.DataFrame(rows).set_index("method").round(3)

# %% [markdown]
# *What you should see:* the blue boxes (cells of negative bags) are not at the bottom — their
# upper whiskers reach well above 1, because each negative bag's attention has to go somewhere;
# check in the table how large a share of the pooled top 1 % comes from negative bags and how the
# median peak of a negative bag compares with a positive bag's. If the witnesses' median
# within-bag rank is near 1, the model puts them at the top of their own bags even where their
# raw `a_n × N` is no larger than a negative bag's favourite cell.

# %% [markdown]
# ## 6 · The explorer
#
# Pick the pretraining and the colouring; click a point (in JupyterLab) to see the cell, its
# bag, its attention and its rank in the bag. `attention rank in bag` colours every cell;
# `attention × N (positive bags)` shows the raw weight for the cells of positive bags and greys
# out the negative bags.

# %%
PALETTE = {"positive bag": "#d62728", "negative bag": "#1f77b4", "witness": "#ff7f0e",
           "other": "#9aa5b1", "LYT": "#1f77b4", "BLA": "#d62728", "LYI": "#2ca02c"}
COLOURINGS = ["witness", "bag label", "cell type", "attention rank in bag",
              "attention × N (positive bags)"]


def traces(method, colour_by):
    xy = coords[method]
    if colour_by == "attention rank in bag":
        return [go.Scatter(x=xy[:, 0], y=xy[:, 1], mode="markers", name="rank in bag",
                           customdata=np.arange(len(show)),
                           marker=dict(size=5, color=data[method]["rank"][show], colorscale="Viridis",
                                       cmin=0, cmax=1, colorbar=dict(title="rank in bag")))]
    if colour_by == "attention × N (positive bags)":
        pos = labels["bag label"] == "positive bag"
        att = data[method]["att"][show]
        return [go.Scatter(x=xy[~pos, 0], y=xy[~pos, 1], mode="markers", name="negative bag",
                           customdata=np.flatnonzero(~pos), marker=dict(size=4, color="#d0d5da")),
                go.Scatter(x=xy[pos, 0], y=xy[pos, 1], mode="markers", name="positive bag",
                           customdata=np.flatnonzero(pos),
                           marker=dict(size=5, color=np.log10(att[pos].clip(1e-3)), colorscale="Viridis",
                                       colorbar=dict(title="log10 a·N")))]
    out = []
    for value in np.unique(labels[colour_by]):
        m = labels[colour_by] == value
        out.append(go.Scatter(x=xy[m, 0], y=xy[m, 1], mode="markers", name=str(value),
                              customdata=np.flatnonzero(m),
                              marker=dict(size=5 if value not in ("witness", "BLA") else 8,
                                          color=PALETTE.get(str(value)))))
    return out


fig = go.FigureWidget(layout=dict(width=720, height=560, title="UMAP of test-bag cells"))
method_dd = widgets.Dropdown(options=METHODS, value=METHODS[-1], description="encoder")
colour_dd = widgets.Dropdown(options=COLOURINGS, value="witness", description="colour by")
cell_img = widgets.Image(format="png", width=160, height=160)
cell_txt = widgets.HTML()

shown = {}   # the cell in the side panel, redrawn when the encoder changes


def show_cell(j):
    """Display shown-cell number j (an index into `show`) with the current encoder's attention."""
    shown["j"] = j
    i = cell_idx[j]
    buf = io.BytesIO()
    Image.fromarray(np.asarray(bagset.images[i])).resize((160, 160), Image.NEAREST).save(buf, "png")
    cell_img.value = buf.getvalue()
    d = data[method_dd.value]
    cell_txt.value = (f"<b>cell {i}</b><br>type {bagset.cell_types[i]}<br>bag {bagset.bag_index[i]} "
                      f"({'positive' if bagset.bag_labels[bagset.bag_index[i]] else 'negative'})"
                      f"<br>attention × N = {d['att'][show[j]]:.2f} ({method_dd.value})"
                      f"<br>rank in bag = {d['rank'][show[j]]:.2f}")


def on_click(trace, points, state):
    if points.point_inds:
        show_cell(int(trace.customdata[points.point_inds[0]]))


def redraw(*_):
    with fig.batch_update():
        fig.data = []
        for tr in traces(method_dd.value, colour_dd.value):
            fig.add_trace(tr)
        for tr in fig.data:
            tr.on_click(on_click)
        fig.layout.title = f"UMAP of test-bag cells — {method_dd.value}, coloured by {colour_dd.value}"
    if "j" in shown:
        show_cell(shown["j"])   # its attention comes from the newly chosen encoder


method_dd.observe(redraw, "value")
colour_dd.observe(redraw, "value")
redraw()
show_cell(int(np.flatnonzero(labels["witness"] == "witness")[0]))   # start on a witness
display(widgets.VBox([widgets.HBox([method_dd, colour_dd]),
                      widgets.HBox([fig, widgets.VBox([cell_img, cell_txt])])]))

# %% [markdown]
# *What you should see:* (in a live notebook) the UMAP of the chosen encoder with the witnesses
# in orange, and the first witness's image and attention on the right; switch the colouring to
# compare the witness region with the cells attention ranks highest in their bags.
#
# A static side-by-side version (it also renders where widgets do not, e.g. in the HTML
# copies), coloured by witness status and by the within-bag attention rank:

# %%
from plotly.subplots import make_subplots

static = make_subplots(rows=2, cols=len(METHODS),
                       subplot_titles=[f"{m}: witnesses" for m in METHODS]
                       + [f"{m}: attention rank in bag" for m in METHODS],
                       vertical_spacing=0.08)
for r, colour_by in enumerate(("witness", "attention rank in bag"), start=1):
    for c, method in enumerate(METHODS, start=1):
        for tr in traces(method, colour_by):
            tr.showlegend = c == 1 and r == 1
            if colour_by != "witness":
                tr.marker.showscale = c == len(METHODS)
                tr.marker.colorbar = dict(title="rank", y=0.22, len=0.45)
            static.add_trace(tr, row=r, col=c)
static.update_layout(height=840, width=420 * len(METHODS),
                     title="witnesses (orange, top) and attention rank in bag (bottom)")
static.show()

# %% [markdown]
# *What you should see:* top, check whether an encoder gathers the orange witnesses into a region
# of their own, and set that against §3's purity (the honest version of that impression); bottom,
# where the witnesses sit in a region of their own, the cells ranked highest in their bags
# (yellow) concentrate there; where they are mixed in, yellow cells are scattered over look-alike
# lymphocytes (notebook 06 counts these failures).
#
# ## What to look for
#
# * **Colour by bag label**: positive-bag cells are mostly *negative cells* (lymphocytes); a
#   bag label tells you almost nothing about an individual cell — this is why MIL is needed.
# * **Colour by witness**: does one encoder gather the witnesses into a region of their own?
#   Compare with the k-NN purity of §3, measured in the geometry the UMAP was fitted in.
# * **Colour by attention**: never by raw `a_n × N` over all bags (§5): by the rank inside the
#   bag, or by `a_n × N` within positive bags. Where the witnesses sit in their own region, the
#   top-ranked cells light up that region; where they are mixed in, attention spreads over
#   look-alike lymphocytes.
# * Try other pretrainings (`METHODS = ["random", "weak", "slam_sum"]`) and other witness rates
#   (`WR = 0.01`): the lower the WR, the fewer positive patches carry witnesses and the harder it
#   is for any slide-label-driven objective to find them.

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
# ### Exercise 1 · k-NN witness purity from the formula
#
# Write `my_knn_purity(E, y, k)` with NumPy only (no scikit-learn): `E` `(n, D)` embeddings, `y`
# `(n,)` cell labels (1 = witness), `k` the neighbours. For every witness, take the `k` other cells
# with the largest cosine similarity to it and count the witnesses among them; return the mean
# share over the witnesses. Then call it on `G[method]` and `y_show` for `k = 1, 10, 50`: does
# the purity fall towards the chance level of §3 as `k` grows, and for which encoder faster?

# %% tags=["exercise"]
def my_knn_purity(E, y, k):
    # your code here (normalise the rows; S = U @ U.T; leave out each cell's similarity to itself)
    raise NotImplementedError("exercise 1: my_knn_purity")


# %% tags=["exercise-check"]
exercises.check_knn_purity(my_knn_purity)

# %% [markdown]
# ### Exercise 2 · Attention rank inside a bag
#
# Write `my_within_bag_rank(scores, bag_index)`: `scores` `(n,)` attention weights, `bag_index`
# `(n,)` the bag of each cell (bags of at least 2 cells, in any order). Return for every cell
# `(rank − 1) / (N_b − 1)`, its rank among the `N_b` cells of **its own** bag (1 = lowest; tied
# scores share their average rank): 0 for a bag's lowest weight, 1 for its highest, whatever the
# bag's size or how peaked its attention. Then compare it with `data[METHODS[-1]]["rank"]` of §5.

# %% tags=["exercise"]
def my_within_bag_rank(scores, bag_index):
    # your code here (loop over np.unique(bag_index), or pandas' groupby(...).rank())
    raise NotImplementedError("exercise 2: my_within_bag_rank")


# %% tags=["exercise-check"]
exercises.check_within_bag_rank(my_within_bag_rank)
