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
# witness rate `WR` × seeds, each followed by attention MIL on held-out test bags, and check
# honestly which of the paper's claims reproduce on our synthetic benchmark.
#
# **What you will learn.**
# - how the whole pipeline (bags → pretraining → embeddings → MIL → metrics) is assembled by
#   `slamags_core.sweep.run_sweep`, and what it writes;
# - how to read the table the way the paper presents it, and why a mean without its spread over
#   seeds is only half a number — and why **one seed gives no verdict**: its spread is *n/a*, not
#   0;
# - how a claim becomes a *paired difference* `slam_ags − other` on the same test bags with a 95 %
#   bootstrap interval (CI), and how the report code turns the intervals into verdicts — the same
#   code and settings that write `results.md`, from which the README's *Results* section comes.
#
# **Run time.** `smoke` preset: the notebook runs a tiny sweep itself (4 methods, the preset's 2
# witness rates, 1 seed); check §1's printout for the grid. Measured on this project's 2-core
# CPU, shared with other jobs: about half a minute wall clock for the whole notebook. Default
# (`laptop`): it *loads* the results of the README's main command (`python3 dev.py run`, one
# seed) from `outputs/sweep/` — set `SLAMAGS_RESULTS` to point elsewhere, e.g. to the README's
# 3-seed results untarred from `docs/results/laptop-3seeds-h100/` — and only recomputes the
# intervals: 19 s wall clock on those 282 rows (2-core CPU, 2026-11-25). The main job's own run
# time on 2 CPU cores is stated in the
# README (*Results* and *The main job*). If no results are found, the notebook runs a reduced
# sweep itself: 2 of the 4 witness rates and 1 seed, about half of the main job's grid. `paper`
# preset: meant for GPUs (not timed here; README, *The `paper` preset*); run the CLI, then open
# this notebook on its output folder.
#
# **Notation.** `WR` witness rate, `N` cells per bag, `N_w` witnesses in a positive bag, `Y` the
# bag label, `p̂` a bag's predicted `P(Y = 1)`, AUC the bag-level ROC AUC of `p̂`, `K` the cells
# retrieved per positive bag (recall@K, here *Top-K recall*), AUROC a within-bag instance ROC
# AUC, CI a paired bootstrap 95 % confidence interval. Every symbol of the course:
# [docs/notation.md](../docs/notation.md).
#
# **Exercises** at the end, each with an automatic check: a summary over seeds that is honest
# about one seed, and a paired bootstrap confidence interval over test bags.

# %%
try:
    import slamags_core  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    import os
    import sys
    sys.path.insert(0, os.path.abspath(".."))

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from slamags_core import get_device, get_preset, set_seed
from slamags_core.config import METHODS
from slamags_core.monitor import CollapseWarning
from slamags_core.predictions import read_bag_predictions
from slamags_core.report import (analyse_predictions, differences_table, markdown_table,
                                 plot_differences, plot_results)
from slamags_core.stats import DEFAULT_MARGIN, MIN_SEEDS
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
# confidence intervals of §3 resample), then the report (`results.md`, `claims.json`, plots). It
# is resumable: re-running it skips finished grid cells. In the smoke preset we run a tiny sweep
# into a scratch folder so that CI exercises the full pipeline. The collapse monitor's warnings
# during pretraining are silenced here (notebook 04 shows them); its end-of-run flags are columns of
# `results.csv`, read in §3.

# %%
warnings.simplefilter("ignore", CollapseWarning)
if preset.name == "smoke":
    RESULTS = Path(os.environ.get("SLAMAGS_DATA_DIR", "../data")) / "cache" / "nb08-smoke-sweep"
    rows = run_sweep(preset, RESULTS, witness_rates=list(preset.witness_rates), seeds=[SEED],
                     methods=["random", "simclr", "slam_sum", "slam_ags"], progress=False)
elif (RESULTS / "results.csv").exists():
    rows = read_results(RESULTS / "results.csv")
else:
    print("no results found: running a reduced sweep (2 witness rates, 1 seed) — "
          "run `python3 dev.py run` for the full one")
    RESULTS = Path("../outputs/sweep-notebook")
    rows = run_sweep(preset, RESULTS, witness_rates=[0.1, 0.01], seeds=[SEED], progress=False)
df = pd.DataFrame(rows)
preds = read_bag_predictions(RESULTS)                    # one dict per test bag and grid cell
config_file = RESULTS / "config.json"                    # the preset the sweep ran with
config = json.loads(config_file.read_text())["preset"] if config_file.exists() else preset.to_dict()
headline = (config["pretrain"]["embedding"], config["cells"]["stain"])   # the report's first variant
main_rows = [r for r in rows if (r["embedding"], r["stain"]) == headline]
seeds = sorted(int(s) for s in df.seed.unique())
n_seeds = len(seeds)
one = main_rows[0]                                       # one grid cell: its test bags
first = [r for r in preds if all(r[k] == one[k] for k in
                                 ("method", "mil", "witness_rate", "seed", "embedding", "stain"))]
n_pos = sum(r["label"] == 1 for r in first)
n_neg = len(first) - n_pos
print(f"{len(df)} rows: methods={sorted(df.method.unique())}")
print(f"witness rates={sorted(map(float, df.witness_rate.unique()), reverse=True)}, "
      f"scorers={sorted(df.mil.unique())}, bags of N = {config['bags']['bag_size']} cells; "
      f"{n_pos} positive + {n_neg} negative test bags per (WR, seed)")
if n_seeds == 1:
    print(f"1 seed {seeds}: one seed gives no verdict — a spread over seeds is n/a (not 0: one "
          f"number has no spread), and the report needs {MIN_SEEDS} or more seeds for verdicts")
elif n_seeds < MIN_SEEDS:
    print(f"{n_seeds} seeds {seeds}: fewer than {MIN_SEEDS} give no verdict; their std is a rough hint")
else:
    print(f"{n_seeds} seeds {seeds}: enough for the report's verdicts (it needs {MIN_SEEDS})")
df[["method", "mil", "witness_rate", "seed", "embedding", "stain", "bag_f1", "bag_auc", "topk_recall",
    "probe_auroc", "oneclass_auroc"]].head()

# %% [markdown]
# ## 2 · The table, the way the paper shows it
#
# Rows are pretraining strategies, columns are witness rates; each cell is the mean ± std over
# seeds on held-out **test** bags (with one seed, the seed's value alone), best mean per witness
# rate in bold — the same tables as `results.md`. *Bag F1* treats "abnormal" as the positive class
# (threshold 0.5); *Top-K recall* is the share of a positive bag's `N_w` witnesses found among
# its `K` highest-scoring cells, with `K` a fixed share of the bag (the paper's "Top 400" of
# 1000-cell bags; the code prints this preset's `K`).

# %%
bag_size, k_share = config["bags"]["bag_size"], config["mil"]["topk_fraction"]
print(f"headline variant: embedding {headline[0]}, stain {headline[1]}; K = {k_share:.0%} of the "
      f"cells = {round(k_share * bag_size)} of {bag_size}; cells: "
      + (f"mean ± std over {n_seeds} seeds" if n_seeds > 1 else "the one seed's value (std n/a)"))
# a scorer that ranks bags at random: bag AUC 0.5 on average, with this std on n_pos + n_neg bags
# (the null variance of the Mann-Whitney U statistic, divided by (n_pos n_neg)^2)
auc_noise = np.sqrt((n_pos + n_neg + 1) / (12 * n_pos * n_neg))
print(f"chance bag AUC on {n_pos} + {n_neg} test bags: 0.5 ± {auc_noise:.2f} (std of a random ranking)")
MILS = [m for m in ("prototype", "abmil") if m in df.mil.unique()]
for mil in MILS:
    for metric, title in (("bag_f1", "Bag F1"), ("topk_recall", "Top-K recall"),
                          ("bag_auc", "Bag AUC")):
        display(Markdown(f"**{mil} MIL — {title}**\n\n" + markdown_table(main_rows, metric, mil)))

# %% [markdown]
# *What you should see:* one table per MIL model and metric, the methods in the course's order
# (`random` first: an untrained encoder, the floor). Check whether `slam_ags` holds the bold
# entries and whether its lead grows towards the low witness rates — and then remember that a
# bold entry is only the largest *mean*: whether the gap is larger than the noise is what §3
# answers. At the `smoke` preset (a few test bags, a few pretraining steps) the numbers exercise
# the code, not the science. Check a bag AUC below 0.5 against the chance std printed above: one
# entry a std or so below 0.5 is what a random ranking of so few bags gives; a method below 0.5 in
# every entry is a pattern — a bug or an artefact until shown otherwise, not a finding.
#
# The same numbers with their spread spelled out, for one metric: the sample std over seeds
# (`ddof=1`, the seeds being a sample of all the seeds one could run) is undefined for one seed,
# and pandas returns NaN, printed here as *n/a*. NumPy's default `np.std` would print 0.0 — a
# claim that the seed-to-seed noise is zero (Exercise 1).

# %%
def mean_std_n(values):
    # "mean ± std (n)" over seeds; the std of one seed is n/a, never 0
    v = pd.Series(values, dtype=float).dropna()
    std = f"{v.std():.3f}" if len(v) > 1 else "n/a"          # pandas: ddof=1
    return f"{v.mean():.3f} ± {std} ({len(v)})"


spread = (df[(df.mil == MILS[0]) & (df.embedding == headline[0]) & (df.stain == headline[1])]
          .groupby(["method", "witness_rate"]).bag_auc.agg(mean_std_n).unstack("witness_rate"))
order = sorted(spread.index, key=lambda m: METHODS.index(m) if m in METHODS else len(METHODS))
spread = spread.loc[order, sorted(spread.columns, reverse=True)]   # the course's order, WR 10% first
spread.columns = [f"WR {100 * w:g}%" for w in spread.columns]
print(f"{MILS[0]} MIL, bag AUC: mean ± std (seeds)")
spread

# %% [markdown]
# Every row also carries MIL-free diagnostics of the frozen encoder on the same test bags: the
# instance-label linear-probe AUROC (a *ceiling*: it uses labels no method has) and the
# one-class witness AUROC (a cell's mean cosine distance to its `k` nearest cells of
# slide-negative training bags, ranked within each positive test bag).

# %%
print(f"one-class kNN: k = {config['diagnostics']['k']} nearest slide-negative training cells")
for metric, title in (("probe_auroc", "instance-label probe AUROC (ceiling)"),
                      ("oneclass_auroc", "one-class kNN witness AUROC")):
    display(Markdown(f"**{title}**\n\n" + markdown_table(main_rows, metric, "oneclass_knn")))

# %% [markdown]
# *What you should see:* AUROCs between 0.5 (chance) and 1; check whether the probe's, which
# sees the labels, lies above the one-class AUROC. Set them against the MIL tables: an encoder
# whose witnesses a probe separates well can still leave MIL near chance, because in a bag of `N`
# cells about `(1 − AUROC) · N_neg` normal cells outrank each witness (notebook 05).

# %%
fig = plot_results(rows, headline=headline)   # one seed: its std is NaN, so no error bar is drawn
if n_seeds == 1:
    fig.update_layout(title=fig.layout.title.text + " — 1 seed: no error bars (spread n/a)")
fig.show()

# %% [markdown]
# *What you should see:* one panel per metric and MIL model, each method's mean against the
# witness rate on a log axis, `slam_ags` drawn thicker. Check whether its line lies above the
# others and whether the gap widens to the left (rarer witnesses), as the paper claims. With 3 or
# more seeds the error bars are the std over seeds; with one seed there are none, because one
# seed has no spread to show — so nothing in this figure is a finding on its own.

# %% [markdown]
# ## 3 · Do the paper's claims reproduce here?
#
# A claim is a *paired difference* `slam_ags − other` on the same test bags. The report code
# (`slamags_core.report` and `slamags_core.claims`, the same that writes `results.md` and
# `claims.json`) gives each a 95 % interval from a two-stage bootstrap — seeds, then test bags
# within seeds — and turns the intervals into a verdict per claim: *reproduced* (the interval
# lies above 0), *no difference* (inside ± a margin the code prints), *inconclusive* (it contains
# 0 and reaches beyond the margin). No verdict is written by hand, and **one seed gives no
# verdict**: with fewer than `MIN_SEEDS` seeds the intervals cover only test-bag noise, not the
# training run's own luck. The notebook recomputes the analysis with the settings the sweep saved
# in `claims.json` and checks that its verdicts are the ones `results.md` (and so the README)
# reports.

# %%
saved = json.loads((RESULTS / "claims.json").read_text()) if (RESULTS / "claims.json").exists() else None
N_BOOT, BOOT_SEED = (saved["n_boot"], saved["seed"]) if saved else (2000, 0)   # write_report's defaults
analyses = analyse_predictions(preds, rows, n_boot=N_BOOT, seed=BOOT_SEED, headline=headline)
print(f"{len(preds)} test-bag predictions; bootstrap: {N_BOOT} replicates, seed {BOOT_SEED}; "
      f"margin ±{DEFAULT_MARGIN:g}; verdicts need {MIN_SEEDS} or more seeds")
if saved is not None:
    ours = [(a["mil"], c["id"], c["verdict"]) for a in analyses for c in a["claims"]]
    theirs = [(a["mil"], c["id"], c["verdict"]) for a in saved["analyses"] for c in a["claims"]]
    print("verdicts " + ("identical to" if ours == theirs else "DIFFERENT from")
          + f" {RESULTS / 'claims.json'} (what results.md reports)")
n_boot_seeds = max(a["n_seeds"] for a in analyses)
if n_boot_seeds < MIN_SEEDS:
    print(f"{n_boot_seeds} seed(s): " + ("one seed gives no verdict" if n_boot_seeds == 1 else
                                         f"fewer than {MIN_SEEDS} seeds give no verdict")
          + " — no claim below gets one, and the intervals cover test-bag noise only")
verdicts = pd.DataFrame([{"claim": f"{c['id']} {c['text']}",
                          "scorer": f"{a['mil']} ({a['embedding']}, {a['stain']})",
                          "verdict": c["verdict"]} for a in analyses for c in a["claims"]])
verdicts.pivot(index="claim", columns="scorer", values="verdict")

# %% [markdown]
# **(a) SLAM-AGS against every other method** on bag F1, bag AUC and Top-K recall, per witness
# rate and averaged over witness rates (headline variant, each MIL model and the MIL-free
# one-class kNN score). Each entry is `estimate [low, high]`; bold: the interval excludes 0.
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
widths = [r["high"] - r["low"] for a in main for c in a["comparisons"] for r in c["by_witness_rate"]
          if np.isfinite(r["high"] - r["low"])]
print(f"median width of the per-WR intervals above: {np.median(widths):.2f} "
      f"(on {n_pos} + {n_neg} test bags, {n_boot_seeds} seed(s))")

# %% [markdown]
# *What you should see:* one table per scorer and metric, one row per other method. A positive
# estimate favours `slam_ags`; only a bold entry (its interval excludes 0) is evidence, and with
# one seed even a bold entry is evidence about these test bags, not about the method. Check the
# median width the code prints against the differences you hope to see: at the `smoke` preset's
# few test bags it is large. An entry `+0.000 [+0.000, +0.000]` means the two methods scored every
# test bag alike on that metric (e.g. the same decisions, for bag F1), not a difference measured
# to be zero with certainty.

# %%
plot_differences(main).show()

# %% [markdown]
# *What you should see:* the tables above as a picture: per metric and scorer, each line is
# `slam_ags − other` against the witness rate with its 95 % interval, and a dashed zero line. A
# claim of the paper looks like lines above zero that rise to the left; an interval that crosses
# the zero line is no evidence either way.
#
# **(c) AGS versus the plain sum (WeakSupCon's objective) and PCGrad, and collapse.** Claims C5
# and C6: the paired differences against `slam_sum` / `slam_pcgrad` are rows of the tables
# above; the collapse diagnostics (effective rank and collapse flags of `h` and `z` at the end
# of pretraining, per run) come from `results.csv` and are compared run by run, paired by witness
# rate and seed, with a bootstrap over seeds.

# %%
for a in main[:1]:
    for c in a["claims"]:
        if c["id"] in ("C5", "C6"):
            print(f"{c['id']} — {c['text']}: {c['verdict']}")
            for line in c["details"]:
                print("   ", line)
runs = (df[df.mil == df.mil.iloc[0]].drop_duplicates(["method", "witness_rate", "seed", "stain"])
        .groupby("method"))
runs.agg(runs=("seed", "size"), h_erank=("h_erank", "mean"), z_erank=("z_erank", "mean"),
         h_flagged=("h_collapsed", "mean"), z_flagged=("z_collapsed", "mean"),
         conflict_frac=("conflict_frac", "mean")).round(3)

# %% [markdown]
# The table averages over the pretraining runs of each method (`runs`: one per witness rate and
# seed); `h_flagged` / `z_flagged` are the shares of runs the collapse monitor flagged at the end
# (notebook 04), `conflict_frac` the share of the last logging interval's steps in which the two
# task gradients conflicted, `cos(g_con, g_sim) < 0` (NaN for the methods without two tasks).
#
# ### What this means
#
# Read the verdicts together with their intervals. The README's *Results* section says which
# runs have been made and over how many seeds; this notebook recomputes the verdicts from whatever
# results folder you point it at, with the settings saved next to them, so you can check the
# claims for your own runs (more seeds, the `paper` preset on a GPU, or real data through
# `slamags_core.realdata`).
#
# **Why this experiment is hard to reproduce exactly.** The paper's witness-rate list, bag counts
# and witness classes could not be read; our data are synthetic (a `difficulty` knob calibrated on
# baselines only, see `docs/calibration.md`); and the laptop preset trains a small CNN on a short
# step budget (notebook 04) instead of ResNet-18 for 150 epochs. What *can* be checked is the
# direction of each claim and whether it survives the seed-to-seed spread.
#
# ### One interval by hand
#
# Exercise 2 rebuilds one of §3's intervals. Its input: the Top-K recall of every positive test
# bag of seed `SEED`, for `slam_ags` and for one other method, at the lowest witness rate, paired
# by bag (the same bags, scored by two encoders).

# %%
OTHER = "simclr" if "simclr" in df.method.unique() else sorted(set(df.method) - {"slam_ags"})[0]
WR_LOW = min(float(w) for w in df.witness_rate.unique())


def per_bag(method, column="topk_recall", mil=MILS[0], wr=WR_LOW, seed=SEED):
    # {bag id: value} of the positive test bags of one grid cell of the headline variant
    return {r["bag"]: r[column] for r in preds
            if (r["method"], r["mil"], r["witness_rate"], r["seed"]) == (method, mil, wr, seed)
            and (r["embedding"], r["stain"]) == headline and r["label"] == 1}


ours, other = per_bag("slam_ags"), per_bag(OTHER)
bag_ids = sorted(ours)                                  # the same positive test bags for both
a_bags = np.array([ours[b] for b in bag_ids])           # (n_pos,) slam_ags
b_bags = np.array([other[b] for b in bag_ids])          # (n_pos,) the other method
analysis = next(a for a in main if a["mil"] == MILS[0])
ref = next(c for c in analysis["comparisons"] if c["metric"] == "topk_recall" and c["other"] == OTHER)
row = next(r for r in ref["by_witness_rate"] if r["witness_rate"] == WR_LOW)
print(f"{MILS[0]}, WR {WR_LOW:g}, seed {SEED}: {len(bag_ids)} positive test bags; mean Top-K recall "
      f"slam_ags {a_bags.mean():.3f}, {OTHER} {b_bags.mean():.3f}, "
      f"difference {np.mean(a_bags - b_bags):+.3f}")
what = ("this difference" if analysis["n_seeds"] == 1 else
        f"the difference averaged over {analysis['n_seeds']} seeds (not seed {SEED}'s alone)")
print(f"the report's interval for {what} (N_BOOT = {N_BOOT} replicates, BOOT_SEED = {BOOT_SEED}): "
      f"{row['estimate']:+.3f} [{row['low']:+.3f}, {row['high']:+.3f}]")

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
# ### Exercise 1 · A seed summary that is honest about one seed
#
# Write `my_seed_summary(values)` with NumPy: `values` the metric of one method at one witness
# rate, one value per seed. Return `(mean, std, n)`: the mean, the **sample** standard deviation
# (`ddof=1`: the seeds are a sample of all the seeds you could run) and the number of seeds — and
# for a single seed `std = NaN` (print it as *n/a*). Then answer: what does `np.std([0.93])`
# return, and what would a table that printed it claim? Call your function on the `bag_auc` of
# `slam_ags` at each witness rate in `df` (rows with `mil == MILS[0]`): how many seeds does each
# summary rest on?

# %% tags=["exercise"]
def my_seed_summary(values):
    # your code here (np.mean, np.std(..., ddof=1); handle len(values) == 1 first)
    raise NotImplementedError("exercise 1: my_seed_summary")


# %% tags=["exercise-check"]
exercises.check_seed_summary(my_seed_summary)

# %% [markdown]
# ### Exercise 2 · A paired bootstrap confidence interval
#
# Write `my_paired_bootstrap_ci(a, b, n_boot, seed)`: `a`, `b` `(n,)` the scores of two methods
# on the **same** `n` test bags. Draw `n_boot` resamples of the `n` bags with replacement from
# `np.random.default_rng(seed)` — the same bag indices for `a` and `b`, because a bag is scored by
# both — and return the 2.5 and 97.5 percentiles of the resampled mean differences
# `mean(a − b)` as `(lo, hi)`. Then call it on `a_bags`, `b_bags` of §3 with `n_boot=N_BOOT` and
# `seed=BOOT_SEED`, the report's settings: does your interval agree with the report's, printed
# there? (With one seed the report resamples the same positive bags from a generator seeded the
# same way; with several seeds it also resamples the seeds.) Resample `a` and `b` independently
# instead: how much wider is the interval, and why?

# %% tags=["exercise"]
def my_paired_bootstrap_ci(a, b, n_boot, seed):
    # your code here (idx = rng.integers(0, n, size=(n_boot, n)); d = a - b; np.quantile)
    raise NotImplementedError("exercise 2: my_paired_bootstrap_ci")


# %% tags=["exercise-check"]
exercises.check_paired_bootstrap_ci(my_paired_bootstrap_ci)
