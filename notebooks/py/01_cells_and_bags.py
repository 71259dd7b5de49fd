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
# # 01 · Cells and bags
#
# **Goal.** See the data SLAM-AGS (Acerbis et al., ISBI 2026) learns from: single-cell patches
# of bone-marrow smears stained with May-Grünwald-Giemsa, grouped into *bags* (slides) of which
# only the slide label is known. Because the real Bone Marrow Cytomorphology data set (Matek et
# al., 2021) cannot be downloaded here, the package renders look-alike cells procedurally.
#
# **What you will learn.**
# - what a lymphocyte (`LYT`, the negative class) and a blast (`BLA`, the abnormal *witness*)
#   look like in the synthetic generator, and which of their factors are *class-defining*
#   (size, nucleus/cell ratio, chromatin, nucleoli, cytoplasm colour) and which are *nuisance*
#   (rotation, eccentricity, position, blur, red cells, the per-slide stain);
# - how the `difficulty` knob shrinks the class gap while the nuisance stays;
# - what a positive bag looks like at witness rates (WR) of 10 %, 5 %, 1 % and 0.5 %, and why
#   low WR is hard.
#
# **Run time.** About 10 s on a 2-core CPU in both presets (`smoke` and `laptop`); no GPU needed.

# %%
try:
    import slamags_core  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    import os
    import sys
    sys.path.insert(0, os.path.abspath(".."))

import dataclasses
import io

import numpy as np
import plotly.graph_objects as go
import ipywidgets as widgets
from IPython.display import Image as IPImage, display
from PIL import Image
from plotly.subplots import make_subplots

from slamags_core import get_device, get_preset, set_seed
from slamags_core.bags import SyntheticSource, build_bags
from slamags_core.config import BagConfig
from slamags_core.synthetic import CELL_CLASSES, CLASS_NAMES, render_cells, sample_stain
from slamags_core.viz import mosaic

preset = get_preset()
SEED = preset.bags.seed
set_seed(SEED)
device = get_device(preset.pretrain.device)
cells_cfg = preset.cells
print(f"preset={preset.name}  seed={SEED}  device={device}")
print(f"cells: {cells_cfg}")


def show(img: np.ndarray, width: int = 900) -> None:
    # Display a uint8 RGB image (JPEG keeps saved notebooks small), upscaled with nearest
    # neighbour so small patches stay crisp.
    scale = max(1, width // img.shape[1])
    pil = Image.fromarray(img).resize((img.shape[1] * scale, img.shape[0] * scale), Image.NEAREST)
    buf = io.BytesIO()
    pil.save(buf, format="JPEG", quality=88)
    display(IPImage(data=buf.getvalue(), format="jpeg"))


# %% [markdown]
# ## 1 · The cell classes
#
# The renderer draws every cell from latent factors and paints it with three dyes
# (Beer-Lambert absorption): a violet nuclear dye, a blue cytoplasmic dye and pink eosin for the
# red blood cells and the plasma film. The classes live in a small registry; `LYT` is the
# reference and every other class is an *offset* of its class-defining factors. Adding a class
# means adding one entry.

# %%
for name, cls in CELL_CLASSES.items():
    print(f"{name}: {cls.description}\n     offsets at difficulty 0: {dict(cls.offsets)}")

# %% [markdown]
# Below: each row is one **slide** with its own stain (dye amounts, dye hues, illumination,
# drawn by `sample_stain`), 6 cells of each class side by side — lymphocytes, blasts and the
# subtler immature lymphocytes (`LYI`). Cells are rendered at 96 px here so you can see the
# chromatin; the pipeline uses the preset's size (40 px for `laptop`, 250 px like the real data
# for `paper`). Notice that the slide-to-slide colour change is about as large as the class
# difference in colour — which is why the stain must never be correlated with the label.

# %%
rng = np.random.default_rng(SEED)
per_class, n_slides, size = 6, 3, 96
rows = []
for stain in sample_stain(rng, n_slides):
    types = [c for c in ("LYT", "BLA", "LYI") for _ in range(per_class)]
    rows.append(render_cells(types, image_size=size, difficulty=cells_cfg.difficulty,
                             rng=rng, stain=stain))
gallery = mosaic(np.concatenate(rows), ncols=3 * per_class, pad=2)
print(f"columns: {per_class} x LYT | {per_class} x BLA | {per_class} x LYI;  "
      f"rows: {n_slides} slides;  difficulty = {cells_cfg.difficulty}")
show(gallery, width=1400)

# %% [markdown]
# ## 2 · The `difficulty` knob
#
# `difficulty` in [0, 1] scales each class-defining offset by `(1 - difficulty) ** p`: global
# cues (cell size, nucleus/cell ratio, dye amounts; `p = 2`) fade first, the subtle morphology
# haematologists rely on (chromatin pattern, nucleoli; `p = 0.5`) last. The nuisance spread
# never changes, so at `difficulty = 1` a blast *is* a lymphocyte. The renderer draws its random
# numbers independently of class and difficulty, so with the same seed we can watch **the same
# blasts** turn into lymphocytes as the difficulty rises (top row: the lymphocytes drawn from the
# same random numbers).

# %%
grid = (0.0, 0.25, 0.5, cells_cfg.difficulty, 0.75, 1.0)
grid = tuple(sorted(set(grid)))
n_show, size = 8, 64
stain = sample_stain(np.random.default_rng(SEED + 1), 1)[0]
rows = [render_cells(["LYT"] * n_show, image_size=size, difficulty=0.0,
                     rng=np.random.default_rng(SEED), stain=stain)]
rows += [render_cells(["BLA"] * n_show, image_size=size, difficulty=d,
                      rng=np.random.default_rng(SEED), stain=stain) for d in grid]
print("rows: LYT (reference), then BLA at difficulty", grid)
show(mosaic(np.concatenate(rows), ncols=n_show, pad=2), width=800)

# %% [markdown]
# ## 3 · Class-defining versus nuisance factors
#
# `render_cells(..., return_factors=True)` also returns every cell's latent factors. Left: a
# **nuisance** factor (the cell's eccentricity) has the same distribution in every class. Right:
# a **class-defining** factor (chromatin coarseness: clumped in lymphocytes, fine and "lacy" in
# blasts) separates the classes — by less as the difficulty rises. Click a class in the legend
# to hide it.

# %%
n_per = 300
factors = {}
for i, c in enumerate(CLASS_NAMES):
    _, f = render_cells([c] * n_per, image_size=32, difficulty=cells_cfg.difficulty,
                        rng=np.random.default_rng(100 + i), return_factors=True)
    factors[c] = f
colors = {"LYT": "#6a51a3", "BLA": "#e6550d", "LYI": "#31a354"}
fig = make_subplots(rows=1, cols=2, subplot_titles=(
    "nuisance: eccentricity", "class-defining: chromatin coarseness"))
for c, f in factors.items():
    for col, key in ((1, "eccentricity"), (2, "chromatin_coarseness")):
        fig.add_trace(go.Histogram(x=f[key], name=c, legendgroup=c, showlegend=col == 1,
                                   marker_color=colors.get(c), opacity=0.6, nbinsx=30),
                      row=1, col=col)
fig.update_layout(barmode="overlay", height=360,
                  title=f"latent factors per class at difficulty {cells_cfg.difficulty}")
fig.show()
for c, f in factors.items():
    print(f"{c}: eccentricity {f['eccentricity'].mean():.3f}  "
          f"chromatin {f['chromatin_coarseness'].mean():.3f}  "
          f"cell radius {f['cell_radius'].mean():.3f}  nucleoli/cell {f['nucleoli'].mean():.2f}")

# %% [markdown]
# ## 4 · Bags at a witness rate
#
# A **bag** is one slide: `bag_size` cells, all with that slide's stain. A negative bag holds
# only lymphocytes; a positive bag holds `round(WR x bag_size)` blasts (the *witnesses*) and
# lymphocytes for the rest, shuffled. The learner only sees the bag label. We build one positive
# bag of 200 cells per WR with `slamags_core.bags.build_bags` — 200 cells make WR 0.5 % honest:
# exactly **one** witness (the paper's bags hold 1000 cells: 5 witnesses at 0.5 %). Witnesses
# are outlined in gold. Try to find them without the outline.

# %%
BAG_SIZE, NCOLS = 200, 25
source = SyntheticSource(cells_cfg)


def positive_bag(wr: float, difficulty: float, seed: int = SEED):
    # One positive bag of BAG_SIZE cells at witness rate wr: (images, instance labels).
    src = source if difficulty == cells_cfg.difficulty else SyntheticSource(
        dataclasses.replace(cells_cfg, difficulty=difficulty))
    cfg = BagConfig(bag_size=BAG_SIZE, witness_rate=wr, n_train=1, n_val=0, n_test=0,
                    positive_fraction=1.0, seed=seed)
    bags = build_bags(src, cfg, negative_class=cells_cfg.negative_class,
                      witness_class=cells_cfg.witness_class)
    idx = bags.bag_cells(0)
    return bags.images[idx], bags.instance_labels[idx].astype(bool)


for wr in (0.10, 0.05, 0.01, 0.005):
    images, witness = positive_bag(wr, cells_cfg.difficulty)
    print(f"WR {wr:.1%}: {witness.sum()} witnesses among {len(witness)} cells")
    show(mosaic(images, ncols=NCOLS, outline=witness, pad=2), width=1000)


# %% [markdown]
# ### Explore: witness rate and difficulty
#
# Move the sliders to redraw the bag in a live kernel (JupyterLab); a saved or exported copy
# shows the static bags above.

# %%
def png_bytes(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


wr_slider = widgets.SelectionSlider(
    options=[("10%", 0.10), ("5%", 0.05), ("2%", 0.02), ("1%", 0.01), ("0.5%", 0.005)],
    value=0.05, description="witness rate")
d_slider = widgets.FloatSlider(value=cells_cfg.difficulty, min=0.0, max=1.0, step=0.1,
                               description="difficulty")
outline_box = widgets.Checkbox(value=True, description="outline witnesses")
caption = widgets.Label()
picture = widgets.Image(format="png", width=1000)


def redraw(_change=None) -> None:
    # Re-render the bag for the current slider values into the Image widget.
    wr, d = wr_slider.value, round(d_slider.value, 2)
    images, witness = positive_bag(wr, d)
    picture.value = png_bytes(mosaic(images, ncols=NCOLS, pad=2,
                                     outline=witness if outline_box.value else None))
    caption.value = f"WR {wr:.1%}, difficulty {d:.1f}: {witness.sum()} witnesses / {len(witness)}"


for w in (wr_slider, d_slider, outline_box):
    w.observe(redraw, names="value")
redraw()
display(widgets.VBox([widgets.HBox([wr_slider, d_slider, outline_box]), caption, picture]))

# %% [markdown]
# ## 5 · Why a low witness rate is hard
#
# At WR 10 % a positive bag holds 20 blasts in 200 cells; at 0.5 % it holds one. A slide-level
# learner gets **one bit per bag** and has to find out which cells carry it. Give it even a
# *perfect* per-cell feature — here the true chromatin coarseness that the renderer drew, no
# stain, no noise — and compare two ways to turn cell scores into a bag score:
#
# * **mean pooling** (what averaging models and slide-level patch classifiers effectively do):
#   the witnesses move the bag mean by `WR x gap`, while the bag-to-bag spread of the mean does
#   not shrink with WR — the signal drowns;
# * **max pooling** (single out the most blast-like cell): it works while the one blast is more
#   extreme than the most extreme of ~200 lymphocytes, and fails as soon as the cell-level
#   classes overlap — which they do as the difficulty rises.
#
# A useful model therefore needs an embedding in which the rare abnormal cells stand out from
# *all* the normal ones, and an aggregator that attends to them: attention MIL on top of a
# pretrained encoder, which is what SLAM-AGS's slide-label-aware pretraining tries to improve.

# %%
from sklearn.metrics import roc_auc_score

from slamags_core.synthetic import sample_factors


def pooled_auc(wr: float, difficulty: float, n_bags: int = 150, bag_size: int = BAG_SIZE,
               seed: int = SEED) -> tuple[float, float]:
    # Bag AUC of mean- and max-pooled "blast-ness" (minus the true chromatin coarseness).
    rng = np.random.default_rng(seed)
    k = max(1, round(wr * bag_size))
    labels = np.repeat([0, 1], n_bags)
    types = np.where(np.arange(bag_size) < k, cells_cfg.witness_class, cells_cfg.negative_class)
    types = np.concatenate([np.full(bag_size, cells_cfg.negative_class)] * n_bags + [types] * n_bags)
    score = -sample_factors(types, difficulty, rng)["chromatin_coarseness"].reshape(2 * n_bags, -1)
    return roc_auc_score(labels, score.mean(1)), roc_auc_score(labels, score.max(1))


wrs = (0.10, 0.05, 0.02, 0.01, 0.005)
fig = go.Figure()
for d in sorted({cells_cfg.difficulty, 0.8}):
    res = np.array([pooled_auc(wr, d) for wr in wrs])
    for j, pool in enumerate(("mean", "max")):
        fig.add_trace(go.Scatter(x=[100 * w for w in wrs], y=res[:, j], mode="lines+markers",
                                 name=f"{pool} pooling, difficulty {d}",
                                 line_dash="solid" if pool == "max" else "dot"))
    print(f"difficulty {d}: " + "  ".join(
        f"WR {w:.1%}: mean {m:.2f} / max {x:.2f}" for w, (m, x) in zip(wrs, res)))
fig.update_xaxes(type="log", title="witness rate (%)",   # one labelled tick per witness rate
                 tickvals=[100 * w for w in wrs], ticktext=[f"{100 * w:g}" for w in wrs])
fig.update_layout(yaxis_title="bag AUC",
                  yaxis_range=[0.4, 1.02], height=380,
                  title=f"bags of {BAG_SIZE} cells, a perfect per-cell feature")
fig.show()
