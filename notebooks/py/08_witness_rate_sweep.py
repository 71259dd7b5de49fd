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
# # 08 · The witness-rate sweep — the paper's experiment
#
# **Goal.** Run (or load) the experiment the paper is about: every pretraining strategy × every
# witness rate (WR 10% → 0.5%) × seeds, each followed by attention MIL on held-out test bags, and
# check honestly which of the paper's claims reproduce on our synthetic benchmark.
#
# **You will learn** how the whole pipeline (bags → pretraining → embeddings → MIL → metrics) is
# assembled by `slamags_core.sweep.run_sweep`, how to read the table the way the paper presents it,
# and how to test a claim against seeds instead of trusting one run.
#
# **Run time.** `smoke` preset: the notebook runs a tiny sweep itself (~1–2 min on 2 CPU cores).
# Default (`laptop`): it *loads* the results of the README's main command (`python3 dev.py run`,
# ≈ 30 min on 2 CPU cores) from `outputs/sweep/` — set `SLAMAGS_RESULTS` to point elsewhere. If no
# results are found, it runs a reduced sweep (2 witness rates) itself. `paper` preset: GPU hours;
# run the CLI, then open this notebook on its output folder.

# %%
import os
from pathlib import Path

import numpy as np
import pandas as pd

from slamags_core import get_device, get_preset, set_seed
from slamags_core.report import markdown_table, plot_results, summarise
from slamags_core.sweep import read_results, run_sweep

preset = get_preset()                      # $SLAMAGS_PRESET (smoke in CI), default laptop
SEED = 0
set_seed(SEED)
device = get_device(preset.pretrain.device)
RESULTS = Path(os.environ.get("SLAMAGS_RESULTS", "../outputs/sweep"))
print(f"preset={preset.name}  device={device}  results folder={RESULTS.resolve()}")

# %% [markdown]
# ## 1 · Get the results
#
# The sweep writes one row per `(method, mil, witness_rate, seed)` to `results.csv`. It is
# resumable: re-running it skips finished grid cells. In the smoke preset we run a tiny sweep
# into a scratch folder so that CI exercises the full pipeline.

# %%
if preset.name == "smoke":
    RESULTS = Path(os.environ.get("SLAMAGS_DATA_DIR", "../data")) / "cache" / "nb08-smoke-sweep"
    rows = run_sweep(preset, RESULTS, witness_rates=[0.1, 0.05], seeds=[SEED],
                     methods=["random", "simclr", "slam_sum", "slam_ags"], progress=False)
elif (RESULTS / "results.csv").exists():
    rows = read_results(RESULTS / "results.csv")
else:
    print("no results found: running a reduced sweep (2 witness rates, 1 seed) — "
          "run `python3 dev.py run` for the full one")
    RESULTS = Path("../outputs/sweep-notebook")
    rows = run_sweep(preset, RESULTS, witness_rates=[0.1, 0.01], seeds=[SEED], progress=False)
df = pd.DataFrame(rows)
print(f"{len(df)} rows: methods={sorted(df.method.unique())}, "
      f"WRs={sorted(df.witness_rate.unique(), reverse=True)}, seeds={sorted(df.seed.unique())}")
df.head()

# %% [markdown]
# ## 2 · The table, the way the paper shows it
#
# Rows are pretraining strategies, columns are witness rates; each cell is the mean ± std over
# seeds on held-out **test** bags. Bold marks the best mean per witness rate. *Bag F1* treats
# "abnormal" as the positive class (threshold 0.5); *Top-K recall* is the fraction of a positive
# bag's witnesses found among its K = 40% most-attended cells (the paper's "Top 400" of
# 1000-cell bags).

# %%
from IPython.display import Markdown, display

for mil in sorted(df.mil.unique()):
    for metric, title in (("bag_f1", "Bag F1"), ("topk_recall", "Top-K recall"),
                          ("bag_auc", "Bag AUC")):
        display(Markdown(f"**{mil} MIL — {title}**\n\n" + markdown_table(rows, metric, mil)))

# %%
fig = plot_results(rows)
fig.show()


# %% [markdown]
# ## 3 · Do the paper's claims reproduce here?
#
# We test each claim with the numbers above — not with a story. With few seeds, a difference
# smaller than the seed-to-seed spread is *not* evidence either way, so each check reports the
# margin next to the spread.
#
# **(a) SLAM-AGS beats the other pretrainings on F1 and Top-K.**

# %%
def leaderboard(metric, mil):
    s = summarise(rows, metric)
    out = []
    for wr in sorted(df.witness_rate.unique(), reverse=True):
        scores = {m: v[wr] for (mi, m), v in s.items() if mi == mil and wr in v}
        best = max(scores, key=lambda m: scores[m][0])
        others = [scores[m][0] for m in scores if m != "slam_ags"]
        ags = scores.get("slam_ags", (np.nan, np.nan, 0))
        out.append(dict(witness_rate=wr, best=best, slam_ags=round(ags[0], 3),
                        best_other=round(max(others), 3) if others else np.nan,
                        margin=round(ags[0] - max(others), 3) if others else np.nan,
                        ags_std=round(ags[1], 3)))
    return pd.DataFrame(out)

verdicts = {}
for mil in sorted(df.mil.unique()):
    for metric in ("bag_f1", "topk_recall"):
        lb = leaderboard(metric, mil)
        wins = int((lb.best == "slam_ags").sum())
        verdicts[(mil, metric)] = wins
        print(f"{mil:9s} {metric:12s}: slam_ags best at {wins}/{len(lb)} witness rates")
        display(lb)


# %% [markdown]
# **(b) The gains are largest at the lowest witness rates.** We compare SLAM-AGS with the
# plain self-supervised baseline (SimCLR) at each witness rate: the paper's claim predicts a
# margin that grows as the witness rate falls.

# %%
def margin_vs(metric, mil, baseline="simclr"):
    s = summarise(rows, metric)
    a, b = s.get((mil, "slam_ags"), {}), s.get((mil, baseline), {})
    return {wr: round(a[wr][0] - b[wr][0], 3) for wr in sorted(a, reverse=True) if wr in b}

for mil in sorted(df.mil.unique()):
    for metric in ("bag_f1", "topk_recall"):
        m = margin_vs(metric, mil)
        trend = "grows as WR falls" if len(m) > 1 and list(m.values())[-1] > list(m.values())[0] \
            else "does not grow as WR falls"
        print(f"{mil:9s} {metric:12s} slam_ags − simclr by WR: {m}  → {trend}")

# %% [markdown]
# **(c) AGS versus the plain sum.** The abstract says AGS stabilises learning and prevents
# collapse. Two observable consequences: `slam_ags` should score at least as well as
# `slam_sum`, and its embeddings should not be more collapsed. Notebook 04 shows the per-step
# gradient conflict and the collapse monitor of single runs; here we compare the downstream
# scores over every witness rate and seed.

# %%
pairs = df[df.method.isin(["slam_sum", "slam_ags"])].pivot_table(
    index=["mil", "witness_rate", "seed"], columns="method", values=["bag_f1", "topk_recall"])
if not pairs.empty and ("bag_f1", "slam_ags") in pairs.columns and ("bag_f1", "slam_sum") in pairs.columns:
    for metric in ("bag_f1", "topk_recall"):
        d = (pairs[(metric, "slam_ags")] - pairs[(metric, "slam_sum")]).dropna()
        print(f"{metric:12s}: slam_ags − slam_sum over {len(d)} paired runs: "
              f"mean {d.mean():+.3f}, ags better in {(d > 0).sum()}, equal in {(d == 0).sum()}, "
              f"worse in {(d < 0).sum()}")
else:
    print("this sweep does not contain both slam_sum and slam_ags")

# %% [markdown]
# ### What this means
#
# Read the three checks together, against the seed spread in the table. On the synthetic
# benchmark, the honest summary of the README's laptop run (3 seeds) is recorded in the README's
# *Results* section; this notebook recomputes it from whatever results folder you point it at, so
# you can check the claims for your own runs (more seeds, the `paper` preset on a GPU, or real
# data through `slamags_core.realdata`).
#
# **Why this experiment is hard to reproduce exactly.** The paper's witness-rate list, bag counts
# and witness classes could not be read; our data are synthetic (a `difficulty` knob calibrated on
# baselines only, see `docs/calibration.md`); and the laptop preset trains a small CNN for a few
# epochs instead of ResNet-18 for 150. What *can* be checked is the direction of each claim and
# whether it survives the seed-to-seed spread.
