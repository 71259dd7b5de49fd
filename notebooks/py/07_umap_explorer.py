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
# **You will learn** what "the witnesses form their own region" looks like (and when it does not),
# why a bag label alone hides the witnesses, how attention relates to the embedding's geometry, and
# why a UMAP picture needs a number beside it (UMAP distorts distances; the *k-NN witness purity*
# below is measured in the original space).
#
# **Run time.** `smoke`: ~1 min on 2 CPU cores (most of it is UMAP's one-off JIT compilation).
# `laptop`: ~2–4 min on CPU, less when notebook 04 or the sweep has already cached the encoders.
# GPU: the same minus the pretraining. Clicking needs a live JupyterLab; under nbval the
# callbacks are simply not triggered.

# %%
import io
import warnings

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go
from PIL import Image
from sklearn.neighbors import NearestNeighbors

from slamags_core import get_device, get_preset, set_seed
from slamags_core.mil import predict_bags, train_mil
from slamags_core.pipeline import bags_of, prepare_embeddings

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
# trained on the training bags gives each test cell an attention weight.

# %%
warnings.filterwarnings("ignore", category=UserWarning)   # collapse warnings are shown in nb 04
data = {}
for method in METHODS:
    bagset, H = prepare_embeddings(preset, method, WR, SEED, device=device, progress=False)
    train, val = bags_of(bagset, H, "train"), bags_of(bagset, H, "val")
    model, _ = train_mil("abmil", list(zip(*train)), list(zip(*val)), preset.mil,
                         device=device, progress=False)
    test_ids = bagset.split_bags("test")
    test_H, _ = bags_of(bagset, H, "test")
    _, attention = predict_bags(model, test_H, device=device)
    cells = np.concatenate([bagset.bag_cells(i) for i in test_ids])
    att = np.concatenate([a * len(a) for a in attention])   # x bag size: 1 = uniform attention
    data[method] = dict(bagset=bagset, H=H[cells].numpy(), cells=cells, att=att)
    print(f"{method}: {len(cells)} test cells, D={H.shape[1]}")

# %% [markdown]
# ## 2 · Which cells to show
#
# All witnesses of the test bags plus a random sample of the other cells (the same cells for
# both methods), so the rare class is visible at all: at WR 5% a uniform sample of 400 cells would
# hold only a handful of witnesses from the positive half of the bags.

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
print({k: {str(a): int(b) for a, b in zip(*np.unique(v, return_counts=True))} for k, v in labels.items()})


# %% [markdown]
# ## 3 · A number first: k-NN witness purity
#
# For each witness, what fraction of its k nearest neighbours (cosine distance, in the full
# D-dimensional embedding, among the shown cells) are witnesses too? Chance level is the witness
# share of the shown cells. This is what MIL attention can exploit, and it does not depend on
# UMAP's layout.

# %%
def knn_purity(E, y, k=10):
    E = E / np.linalg.norm(E, axis=1, keepdims=True).clip(1e-12)
    nn = NearestNeighbors(n_neighbors=k + 1, metric="cosine").fit(E)
    _, idx = nn.kneighbors(E[y == 1])
    return float((y[idx[:, 1:]] == 1).mean())

y_show = bagset.instance_labels[cell_idx]
print(f"chance = {y_show.mean():.3f}")
for method in METHODS:
    E = data[method]["H"][show]
    print(f"{method:10s} k-NN witness purity (k=10) = {knn_purity(E, y_show):.3f}")

# %% [markdown]
# ## 4 · UMAP
#
# UMAP (McInnes et al. 2018) keeps local neighbourhoods and tears global distances; clusters'
# sizes and the gaps between them mean little. We fit it once per method on the shown cells.

# %%
import umap

coords = {}
for method in METHODS:
    E = data[method]["H"][show]
    E = (E - E.mean(0)) / E.std(0).clip(1e-6)
    coords[method] = umap.UMAP(n_neighbors=15, min_dist=0.1, random_state=SEED,
                               n_jobs=1).fit_transform(E)
print({m: c.shape for m, c in coords.items()})

# %% [markdown]
# ## 5 · The explorer
#
# Pick the pretraining and the colouring; click a point (in JupyterLab) to see the cell, its
# bag and its attention. Attention is shown × bag size, so 1 means "uniform" and 20 means twenty
# times the uniform weight.

# %%
PALETTE = {"positive bag": "#d62728", "negative bag": "#1f77b4", "witness": "#ff7f0e",
           "other": "#9aa5b1", "LYT": "#1f77b4", "BLA": "#d62728", "LYI": "#2ca02c"}

def traces(method, colour_by):
    xy = coords[method]
    if colour_by == "attention":
        att = data[method]["att"][show]
        return [go.Scatter(x=xy[:, 0], y=xy[:, 1], mode="markers", name="attention",
                           customdata=np.arange(len(show)),
                           marker=dict(size=5, color=np.log10(att.clip(1e-3)), colorscale="Viridis",
                                       colorbar=dict(title="log10 att×n")))]
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
colour_dd = widgets.Dropdown(options=["witness", "bag label", "cell type", "attention"],
                             value="witness", description="colour by")
cell_img = widgets.Image(format="png", width=160, height=160)
cell_txt = widgets.HTML()

shown = {}   # the cell in the side panel, redrawn when the encoder changes


def show_cell(j):
    """Display shown-cell number j (an index into `show`) with the current encoder's attention."""
    shown["j"] = j
    i = cell_idx[j]
    buf = io.BytesIO()
    Image.fromarray(bagset.images[i]).resize((160, 160), Image.NEAREST).save(buf, "png")
    cell_img.value = buf.getvalue()
    att = data[method_dd.value]["att"][show[j]]
    cell_txt.value = (f"<b>cell {i}</b><br>type {bagset.cell_types[i]}<br>bag {bagset.bag_index[i]} "
                      f"({'positive' if bagset.bag_labels[bagset.bag_index[i]] else 'negative'})"
                      f"<br>attention × n = {att:.2f} ({method_dd.value})")

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
widgets.VBox([widgets.HBox([method_dd, colour_dd]),
              widgets.HBox([fig, widgets.VBox([cell_img, cell_txt])])])

# %% [markdown]
# A static side-by-side version (it also renders where widgets do not, e.g. in the HTML
# copies):

# %%
from plotly.subplots import make_subplots

static = make_subplots(rows=1, cols=len(METHODS), subplot_titles=METHODS)
for c, method in enumerate(METHODS, start=1):
    for tr in traces(method, "witness"):
        tr.showlegend = c == 1
        static.add_trace(tr, row=1, col=c)
static.update_layout(height=420, width=420 * len(METHODS), title="witnesses (orange) in each embedding")
static.show()

# %% [markdown]
# ## What to look for
#
# * **Colour by bag label**: positive-bag cells are mostly *negative cells* (lymphocytes); a
#   bag label tells you almost nothing about an individual cell — this is why MIL is needed.
# * **Colour by witness**: does one encoder gather the witnesses into a region of their own?
#   Compare with the k-NN purity above, which is the honest version of that impression.
# * **Colour by attention**: where the witnesses sit in their own region, ABMIL's attention
#   lights up that region; where they are mixed in, attention spreads over look-alike
#   lymphocytes (see notebook 06 for the failure cases).
# * Try other pretrainings (`METHODS = ["random", "weak", "slam_sum"]`) and other witness rates
#   (`WR = 0.01`): the lower the WR, the fewer positive patches carry witnesses and the harder it
#   is for any slide-label-driven objective to find them.
