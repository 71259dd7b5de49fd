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
# **Run time.** About 10-15 s on a 2-core CPU in both presets (`smoke` and `laptop`); no GPU needed.
#
# **Notation.** `N` cells per bag, `WR` the witness rate, `N_w = round(WR · N)` witnesses per
# positive bag, `y_n` a cell's label (1 = witness; never seen in training), `Y` the bag label, `Δ`
# and `σ` the class gap and the within-class spread of a cell feature, `Φ` the standard normal CDF.
# Every symbol of the course: [docs/notation.md](../docs/notation.md).
#
# **Exercises** at the end, each with an automatic check: pool cell scores into bag scores, predict
# the bag AUC that mean pooling can reach, and find how large a bag must be for it.

# %%
try:
    import slamags_core  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    import os
    import sys
    sys.path.insert(0, os.path.abspath(".."))

import dataclasses
import io
import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import ipywidgets as widgets
from IPython.display import Image as IPImage, display
from PIL import Image
from plotly.subplots import make_subplots

from slamags_core import get_device, get_preset, set_seed
from slamags_core.bags import SyntheticSource, build_bags, n_witnesses
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
# for `paper`). Compare the colour change from slide to slide with the colour difference between
# the classes: the cell after the gallery measures both. If the stain were correlated with the
# label, a model could read the label from the colour alone — so it never is.

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
# *What you should see:* in every row the blasts (middle block) are larger, with paler, finer
# chromatin and a rim of deeper-blue cytoplasm; the immature lymphocytes (right) lie in between;
# each row has its own tint.
#
# **Measured: stain versus class.** The mean RGB colour of a cell (patch) over 40 cells per class on
# each of 6 slides: how far apart are the slide averages of one class, and how far apart are the two
# classes on one slide?

# %%
n_per, n_slides = 40, 6
colour = {}  # (slide, class) -> mean RGB of its cells, in [0, 1]
for k, stain in enumerate(sample_stain(np.random.default_rng(SEED + 7), n_slides)):
    for c in ("LYT", "BLA"):
        imgs = render_cells([c] * n_per, image_size=32, difficulty=cells_cfg.difficulty,
                            rng=np.random.default_rng(1000 * k + len(c)), stain=stain)
        colour[k, c] = imgs.reshape(-1, 3).mean(0) / 255
between_slides = np.mean([np.linalg.norm(colour[a, "LYT"] - colour[b, "LYT"])
                          for a in range(n_slides) for b in range(a + 1, n_slides)])
between_classes = np.mean([np.linalg.norm(colour[k, "BLA"] - colour[k, "LYT"]) for k in range(n_slides)])
print(f"mean RGB distance between slides (lymphocytes only): {between_slides:.3f}")
print(f"mean RGB distance between the classes (same slide):   {between_classes:.3f}")

# %% [markdown]
# *What you should see:* check that the first number (slide to slide) is larger than the second
# (class to class): a cell's colour says more about its slide than about its type.

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
print("difficulty 1 renders the very same pixels as the lymphocyte row:",
      np.array_equal(rows[0], rows[-1]))

# %% [markdown]
# *What you should see:* going down, each blast shrinks, darkens and loses its nucleoli until the
# last row (difficulty 1) is the lymphocyte row pixel for pixel (printed above); size and
# nucleus/cell ratio fade early, chromatin and nucleoli late.

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
# *What you should see:* on the left the three classes' histograms lie on top of each other
# (nuisance); on the right the blasts' chromatin sits lower (finer) than the lymphocytes', with the
# immature lymphocytes in between, and the histograms overlap — compare the printed means.

# %% [markdown]
# ## 4 · Bags at a witness rate
#
# A **bag** is one slide: `bag_size` cells, all with that slide's stain. A negative bag holds
# only lymphocytes; a positive bag holds `round(WR x bag_size)` blasts (the *witnesses*) and
# lymphocytes for the rest, shuffled. The learner only sees the bag label. We build one positive
# bag of 200 cells per WR with `slamags_core.bags.build_bags` — 200 cells make WR 0.5 % honest:
# exactly **one** witness (the paper's bags hold 1000 cells; the count at 0.5 % is printed below).
# Witnesses are outlined in gold. Try to find them without the outline.

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
print(f"the paper's bags of 1000 cells hold {n_witnesses(1000, 0.005)} witnesses at WR 0.5 %")

# %% [markdown]
# *What you should see:* the printed witness counts fall from 20 to 1; the gold outlines are easy to
# follow at 10 %, and at 1 % and 0.5 % the blasts are hard to spot without them — each slide's
# tint is shared by all its cells, so colour gives nothing away.


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
# *What you should see:* the caption's count follows the witness rate; raising the difficulty makes
# the outlined blasts look more and more like their neighbours.

# %% [markdown]
# ## 5 · Why a low witness rate is hard
#
# At WR 10 % a positive bag holds 20 blasts in 200 cells; at 0.5 % it holds one. A slide-level
# learner gets **one bit per bag** and has to find out which cells carry it. Give it even a
# *perfect* per-cell feature — here the true chromatin coarseness that the renderer drew, no
# stain, no noise — and compare two ways to turn cell scores into a bag score:
#
# * **mean pooling** (what averaging models and slide-level patch classifiers effectively do):
#   the witnesses move the bag mean by `WR · Δ` (`Δ` the class gap of the feature), while the
#   bag-to-bag spread of the mean, `σ / √N` for cells of spread `σ`, does not shrink with WR — the
#   signal drowns. Its signal-to-noise ratio is `SNR = WR · Δ · √N / σ`, and the bag AUC it can
#   reach is `Φ(SNR / √2)` (the `√2` because a positive and a negative bag mean both vary); the
#   cell after the figure computes both and checks them against the simulation;
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

# %% [markdown]
# *What you should see:* max pooling (solid) stays near 1 down to the lowest WR at the default
# difficulty and drops at difficulty 0.8; mean pooling (dotted) falls towards 0.5 as the WR falls,
# at both difficulties — compare the printed AUCs.
#
# ### The mean-pooling SNR, and what bags of 1000 cells change
#
# Measure `Δ` and `σ` of the feature (minus chromatin coarseness) on many cells, compute
# `SNR = WR · Δ · √N / σ` and the predicted AUC `Φ(SNR / √2)`, and set them beside the simulated
# mean-pooling AUC, for this notebook's bags of 200 cells and the paper's bags of 1000. (The
# prediction treats the feature as Gaussian; chromatin coarseness is clipped to [0, 1], so expect
# small deviations.) Bags of 1000 cells multiply the SNR by `√(1000/200)`; for max pooling they
# add witnesses (5 instead of 1 at WR 0.5 %) but also five times as many lymphocytes, one of which
# may look more blast-like than the blasts.

# %%
from statistics import NormalDist

SMOKE = preset.name == "smoke"
n_bags_sim = 60 if SMOKE else 150  # bags per class per point (fewer in CI)
feat = {c: -sample_factors([c] * 20000, cells_cfg.difficulty, np.random.default_rng(7))[
    "chromatin_coarseness"].astype(np.float64) for c in (cells_cfg.negative_class, cells_cfg.witness_class)}
gap = feat[cells_cfg.witness_class].mean() - feat[cells_cfg.negative_class].mean()
sigma = feat[cells_cfg.negative_class].std()
print(f"difficulty {cells_cfg.difficulty}: gap Δ = {gap:.3f}, spread σ = {sigma:.3f} "
      f"(lymphocytes), Δ/σ = {gap / sigma:.2f};  √(1000/200) = {math.sqrt(1000 / 200):.2f}")
rows_snr, sim = [], {}
for n in (BAG_SIZE, 1000):
    sim[n] = np.array([pooled_auc(wr, cells_cfg.difficulty, n_bags=n_bags_sim, bag_size=n) for wr in wrs])
    for w, (m_auc, x_auc) in zip(wrs, sim[n]):
        snr = w * gap * math.sqrt(n) / sigma
        rows_snr.append(dict(N=n, WR=f"{w:.1%}", witnesses=n_witnesses(n, w), SNR=round(snr, 2),
                             predicted_mean_AUC=round(NormalDist().cdf(snr / math.sqrt(2)), 3),
                             simulated_mean_AUC=round(m_auc, 3), simulated_max_AUC=round(x_auc, 3)))
snr_table = pd.DataFrame(rows_snr).set_index(["N", "WR"])
snr_table

# %%
fig = go.Figure()
for n, dash in ((BAG_SIZE, "dot"), (1000, "solid")):
    for j, pool in enumerate(("mean", "max")):
        fig.add_trace(go.Scatter(x=[100 * w for w in wrs], y=sim[n][:, j], mode="lines+markers",
                                 name=f"{pool} pooling, N = {n}", line_dash=dash,
                                 line_color="#1f77b4" if pool == "mean" else "#d62728"))
fig.update_layout(xaxis=dict(title="witness rate (%)", type="log", tickvals=[100 * w for w in wrs],
                             ticktext=[f"{100 * w:g}" for w in wrs]),
                  yaxis_title="bag AUC", yaxis_range=[0.4, 1.02], height=380,
                  title=f"bags of {BAG_SIZE} versus 1000 cells, difficulty {cells_cfg.difficulty}")
fig.show()

# %% [markdown]
# *What you should see:* in the table, the predicted and simulated mean-pooling AUCs agree to a few
# hundredths (check it row by row) and both fall with the SNR; with 1000 cells (solid) mean pooling
# keeps a higher AUC at every WR than with 200 (dotted), because its SNR is `√5` times larger.
# Compare the two max-pooling curves at the lowest WR to see whether the extra lymphocytes or the
# extra witnesses win at this difficulty.

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
# ### Exercise 1 · From cell scores to bag scores
#
# In §5 the scores came as a `(bags, N)` matrix. Real slides hold different numbers of cells, so
# cells usually come as one flat array with a bag index. Write `pool_bags(scores, bag_index, how)`:
# `scores` `(n,)` floats, `bag_index` `(n,)` ints in `0 … n_bags − 1` (the cells of a bag need not
# be adjacent), `how` `"mean"` or `"max"`; return an `(n_bags,)` array whose entry `b` pools the
# scores of bag `b`.

# %% tags=["exercise"]
def pool_bags(scores, bag_index, how):
    # your code here (np.bincount, np.maximum.at or a boolean mask per bag all work)
    raise NotImplementedError("exercise 1: pool_bags")


# %% tags=["exercise-check"]
exercises.check_bag_pooling(pool_bags)

# %% [markdown]
# ### Exercise 2 · What mean pooling can reach
#
# Write `mean_pool_auc(witness_rate, gap, sigma, bag_size)`: the bag AUC of mean pooling when the
# witnesses' feature is shifted by `Δ = gap` and every cell's feature has spread `σ = sigma`.
# Derive it: a bag mean of `N` cells has standard deviation `σ / √N`, the witnesses shift a
# positive bag's mean by `WR · Δ`, and the AUC is the probability that a positive bag's mean exceeds
# a negative bag's. Then compare your function with the table of §5 (`gap` and `sigma` are defined
# there).

# %% tags=["exercise"]
def mean_pool_auc(witness_rate, gap, sigma, bag_size):
    # your code here (math.erf or statistics.NormalDist().cdf give Φ)
    raise NotImplementedError("exercise 2: mean_pool_auc")


# %% tags=["exercise-check"]
exercises.check_mean_pool_auc(mean_pool_auc)

# %% [markdown]
# ### Exercise 3 · How large must a bag be?
#
# Invert exercise 2: write `bag_size_for_auc(target_auc, witness_rate, gap, sigma)`, the smallest
# whole number of cells `N ≥ 1` at which mean pooling reaches `target_auc`. Use it with this
# notebook's `gap` and `sigma`: how many cells would a bag need for AUC 0.9 at WR 0.5 %? Is the
# paper's 1000 enough for mean pooling, and what does that tell you about the aggregator SLAM-AGS
# needs?

# %% tags=["exercise"]
def bag_size_for_auc(target_auc, witness_rate, gap, sigma):
    # your code here (statistics.NormalDist().inv_cdf is Φ⁻¹; round up with math.ceil)
    raise NotImplementedError("exercise 3: bag_size_for_auc")


# %% tags=["exercise-check"]
exercises.check_bag_size_for_auc(bag_size_for_auc)
