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
# one seed; its run time on 2 CPU cores is in the README's *Results* section) from
# `outputs/sweep/` — set `SLAMAGS_RESULTS` to point elsewhere. If no results are found, it runs a
# reduced sweep itself (2 of the 4 witness rates: about half the main job). `paper` preset: GPU hours;
# run the CLI, then open this notebook on its output folder.

# %%
import os
from pathlib import Path

import pandas as pd

from slamags_core import get_device, get_preset, set_seed
from slamags_core.report import markdown_table, plot_results
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
# The sweep writes one row per `(method, mil, witness_rate, seed, embedding, stain)` to
# `results.csv` and, per row, the scores of every test bag to `predictions/` (what the
# confidence intervals of section 3 resample). It is resumable: re-running it skips finished
# grid cells. In the smoke preset we run a tiny sweep
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

headline = (preset.pretrain.embedding, preset.cells.stain)
main_rows = [r for r in rows if (r["embedding"], r["stain"]) == headline]
for mil in [m for m in ("prototype", "abmil") if m in df.mil.unique()]:
    for metric, title in (("bag_f1", "Bag F1"), ("topk_recall", "Top-K recall"),
                          ("bag_auc", "Bag AUC")):
        display(Markdown(f"**{mil} MIL — {title}**\n\n" + markdown_table(main_rows, metric, mil)))

# %% [markdown]
# Every row also carries MIL-free diagnostics of the frozen encoder on the same test bags: the
# instance-label linear-probe AUROC (a *ceiling*: it uses labels no method has) and the
# one-class witness AUROC (a cell's mean cosine distance to its 5 nearest cells of slide-negative
# training bags, ranked within each positive test bag).

# %%
for metric, title in (("probe_auroc", "instance-label probe AUROC (ceiling)"),
                      ("oneclass_auroc", "one-class kNN witness AUROC")):
    display(Markdown(f"**{title}**\n\n" + markdown_table(main_rows, metric, "oneclass_knn")))

# %%
fig = plot_results(rows, headline=headline)
fig.show()


# %% [markdown]
# ## 3 · Do the paper's claims reproduce here?
#
# A claim is a *paired difference* `slam_ags − other` on the same test bags. The report code
# (`slamags_core.report`, the same that writes `results.md`) gives each a 95% confidence
# interval from a two-stage bootstrap — seeds, then test bags within seeds — and turns the
# intervals into a verdict per claim: *reproduced* (the interval lies above 0), *no
# difference* (inside ±0.05), *inconclusive* (it contains 0 and reaches beyond ±0.05). No
# verdict is written by hand, and **one seed gives no verdict**: with fewer than 3 seeds the
# intervals cover only test-bag noise, not the training run's own luck.

# %%
from slamags_core.predictions import read_bag_predictions
from slamags_core.report import analyse_predictions, differences_table, plot_differences
from slamags_core.stats import MIN_SEEDS

preds = read_bag_predictions(RESULTS)
headline = (preset.pretrain.embedding, preset.cells.stain)
analyses = analyse_predictions(preds, rows, n_boot=200 if preset.name == "smoke" else 2000,
                               headline=headline)
n_seeds = max(a["n_seeds"] for a in analyses)
if n_seeds < MIN_SEEDS:
    print(f"{n_seeds} seed(s): one seed gives no verdict — the verdicts below read 'no verdict' "
          f"and the intervals cover test-bag noise only. Run {MIN_SEEDS} or more seeds.")
verdicts = pd.DataFrame([{"claim": f"{c['id']} {c['text']}", "scorer": f"{a['mil']} ({a['embedding']}, {a['stain']})",
                          "verdict": c["verdict"]} for a in analyses for c in a["claims"]])
verdicts.pivot(index="claim", columns="scorer", values="verdict")

# %% [markdown]
# **(a) SLAM-AGS against every other method** on bag F1, bag AUC and Top-K recall, per witness
# rate and averaged over witness rates (headline variant, each MIL model and the MIL-free
# one-class kNN score). Bold: the interval excludes 0.
#
# **(b) The gains are largest at the lowest witness rates**: the last column is the change of
# the difference per tenfold lower witness rate, with its interval (claim C4).

# %%
main = [a for a in analyses if (a["embedding"], a["stain"]) == headline]
for a in main:
    for metric, title in (("bag_f1", "bag F1"), ("bag_auc", "bag AUC"), ("topk_recall", "Top-K recall")):
        table = differences_table(a, metric)
        if table:
            display(Markdown(f"**{a['mil']} — {title}, slam_ags − other** "
                             f"({a['n_seeds']} seed{'s' if a['n_seeds'] != 1 else ''})\n\n{table}"))

# %%
plot_differences(main).show()

# %% [markdown]
# **(c) AGS versus the plain sum (WeakSupCon's objective) and PCGrad, and collapse.** Claims C5
# and C6: the paired differences against `slam_sum` / `slam_pcgrad` are rows of the tables
# above; the collapse diagnostics (effective rank and collapse flags of `h` and `z` at the end
# of pretraining, per run) come from `results.csv`.

# %%
for a in main[:1]:
    for c in a["claims"]:
        if c["id"] in ("C5", "C6"):
            print(f"{c['id']} — {c['text']}: {c['verdict']}")
            for line in c["details"]:
                print("   ", line)
runs = df[df.mil == df.mil.iloc[0]].drop_duplicates(["method", "witness_rate", "seed", "stain"])
runs.groupby("method")[["h_erank", "z_erank", "h_collapsed", "z_collapsed", "conflict_frac"]].mean()

# %% [markdown]
# ### What this means
#
# Read the verdicts together with their intervals. The README's *Results* section records the
# laptop run and says over how many seeds; this notebook recomputes the verdicts from whatever
# results folder you point it at, so you can check the claims for your own runs (more seeds, the `paper` preset on a GPU, or real
# data through `slamags_core.realdata`).
#
# **Why this experiment is hard to reproduce exactly.** The paper's witness-rate list, bag counts
# and witness classes could not be read; our data are synthetic (a `difficulty` knob calibrated on
# baselines only, see `docs/calibration.md`); and the laptop preset trains a small CNN for a few
# epochs instead of ResNet-18 for 150. What *can* be checked is the direction of each claim and
# whether it survives the seed-to-seed spread.
