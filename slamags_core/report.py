"""Sweep results -> tables, plots and the verdicts on the paper's claims.

Two inputs: the per-run rows of ``results.csv`` (tables of mean ± std over seeds, best per
witness rate in bold) and, when the sweep wrote them, the per-test-bag predictions
(:mod:`slamags_core.predictions`). From the latter :mod:`slamags_core.claims` computes every
paired difference ``slam_ags - other`` with a 95% hierarchical-bootstrap interval and the
verdict of every claim; this module renders them (markdown, plotly HTML, PNG, JSON). A verdict
is never written by hand, and fewer than three seeds give none.
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np

from slamags_core.claims import CLAIM_METRICS, METRIC_NAMES, PAPER_METHOD, analyse
from slamags_core.config import METHODS, MIL_MODELS
from slamags_core.predictions import PREDICTIONS_DIR, read_bag_predictions
from slamags_core.stats import DEFAULT_MARGIN, MIN_SEEDS
from slamags_core.utils import atomic_write_text

METRIC_TITLES = {"bag_f1": "Bag F1", "bag_auc": "Bag AUC", "topk_precision": "Top-K precision",
                 "topk_recall": "Top-K recall", "instance_auroc": "Instance AUROC",
                 "probe_auroc": "instance-label probe AUROC (a ceiling)",
                 "oneclass_auroc": "one-class kNN witness AUROC (within positive bags)"}
ONECLASS_SCORER = "oneclass_knn"    # :data:`slamags_core.diagnostics.ONECLASS_SCORER`
SVDD_SCORER = "svdd_distance"       # :data:`slamags_core.sweep.SVDD_SCORER`
SVDD_COMPETITOR = "deep_svdd_distance"  # its name beside the kNN scores in the MIL-free analysis
MIL_FREE_TITLES = {ONECLASS_SCORER: "one-class kNN score, MIL-free",
                   SVDD_SCORER: "Deep SVDD distance, MIL-free"}


def summarise(rows: Sequence[dict], metric: str) -> dict[tuple[str, str], dict[float, tuple]]:
    """``{(mil, method): {witness_rate: (mean, std, n_seeds)}}`` for one metric (NaNs ignored).

    ``std`` (ddof=1) is NaN for a single seed: one seed says nothing about the seed-to-seed spread
    (plots leave its error bar out, tables print the mean alone)."""
    acc: dict = defaultdict(lambda: defaultdict(list))
    for r in rows:
        acc[(r["mil"], r["method"])][float(r["witness_rate"])].append(float(r[metric]))
    out = {}
    for key, by_wr in acc.items():
        out[key] = {}
        for wr, vals in by_wr.items():
            v = np.array(vals, dtype=float)
            v = v[~np.isnan(v)]
            out[key][wr] = ((float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else math.nan, len(v))
                            if len(v) else (float("nan"), float("nan"), 0))
    return out


def _rank(method: str) -> int:
    return METHODS.index(method) if method in METHODS else len(METHODS)


def _order(methods) -> list[str]:
    return sorted(methods, key=_rank)


def markdown_table(rows: Sequence[dict], metric: str, mil: str) -> str:
    """One markdown table: methods x witness rates, ``mean ± std``, best mean per column bold."""
    summ = {m: v for (mi, m), v in summarise(rows, metric).items() if mi == mil}
    if not summ:
        return ""
    wrs = sorted({wr for v in summ.values() for wr in v}, reverse=True)
    best = {wr: max((v[wr][0] for v in summ.values() if wr in v and not np.isnan(v[wr][0])),
                    default=np.nan) for wr in wrs}
    head = "| method | " + " | ".join(f"WR {100 * wr:g}%" for wr in wrs) + " |"
    lines = [head, "|---" * (len(wrs) + 1) + "|"]
    for method in _order(summ):
        cells = []
        for wr in wrs:
            if wr not in summ[method]:
                cells.append("–")
                continue
            mean, std, n = summ[method][wr]
            if n == 0:
                cells.append("–")
                continue
            txt = f"{mean:.3f} ± {std:.3f}" if n > 1 else f"{mean:.3f}"
            cells.append(f"**{txt}**" if np.isclose(mean, best[wr]) else txt)
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _pct(wr: float) -> str:
    return f"{100 * wr:g}%"


def _ci_cell(r: dict) -> str:
    if not np.isfinite(r["estimate"]):
        return "–"
    txt = f"{r['estimate']:+.3f} [{r['low']:+.3f}, {r['high']:+.3f}]"
    return f"**{txt}**" if r.get("class") in ("higher", "lower") else txt


def differences_table(analysis: dict, metric: str) -> str:
    """Markdown: one row per other method, ``slam_ags - other`` with its 95% interval per WR,
    averaged over WRs, and its change per tenfold lower WR; intervals excluding 0 in bold."""
    comps = [c for c in analysis["comparisons"] if c["metric"] == metric]
    if not comps:
        return ""
    wrs = sorted({r["witness_rate"] for c in comps for r in c["by_witness_rate"]}, reverse=True)
    lines = ["| slam_ags − | " + " | ".join(f"WR {_pct(w)}" for w in wrs)
             + " | mean over WRs | per tenfold lower WR |", "|---" * (len(wrs) + 3) + "|"]
    for c in sorted(comps, key=lambda c: _rank(c["other"])):
        by = {r["witness_rate"]: r for r in c["by_witness_rate"]}
        cells = [_ci_cell(by[w]) if w in by else "–" for w in wrs]
        trend = _ci_cell(c["trend_per_decade"]) if c["trend_per_decade"] else "–"
        role = "" if c["role"] == "claim" else f" ({c['role'].split(':')[0]})"
        lines.append(f"| {c['other']}{role} | " + " | ".join(cells)
                     + f" | {_ci_cell(c['pooled'])} | {trend} |")
    return "\n".join(lines)


def _group_title(a: dict) -> str:
    return f"{a['mil']} — embedding {a['embedding']}, stain {a['stain']}"


def claims_markdown(analyses: Sequence[dict]) -> str:
    """The verdicts and difference tables of :func:`slamags_core.claims.analyse` results."""
    if not analyses:
        return ""
    n = max(a["n_seeds"] for a in analyses)
    parts = ["## Verdicts on the paper's claims (generated from the intervals)", ""]
    if n < MIN_SEEDS:
        parts += [f"**{n} seed{'s' if n != 1 else ''} give{'s' if n == 1 else ''} no verdict.** "
                  f"A difference measured on one training run is a hint: the intervals below "
                  f"cover only test-bag noise{' and ' + str(n) + ' seeds' if n > 1 else ''}. "
                  f"Run {MIN_SEEDS} or more seeds for verdicts.", ""]
    parts += [f"Paired differences `slam_ags − other` on the same test bags; 95% intervals "
              f"from a two-stage bootstrap (seeds, then test bags within seeds; bag AUC "
              f"recomputed on every resample). *Reproduced*: the interval lies above 0; "
              f"*no difference*: it lies inside ±{DEFAULT_MARGIN:g}; *inconclusive*: it "
              f"contains 0 and reaches beyond ±{DEFAULT_MARGIN:g}.", ""]
    for a in analyses:
        parts += [f"### {_group_title(a)} ({a['n_seeds']} seed{'s' if a['n_seeds'] != 1 else ''})", ""]
        for c in a["claims"]:
            note = f" *(Note: {c['note']}.)*" if c["note"] else ""
            parts.append(f"- **{c['id']} — {c['text']}: {c['verdict']}.**{note}")
            parts += [f"  - {line}" for line in c["details"]]
        if a.get("context"):
            parts.append("- Beyond the paper (no claim):")
            parts += [f"  - {line}" for line in a["context"]]
        parts.append("")
        for metric in CLAIM_METRICS:
            table = differences_table(a, metric)
            if table:
                parts += [f"#### {_group_title(a)}: {METRIC_NAMES[metric]}, slam_ags − other", "",
                          table, ""]
    return "\n".join(parts)


def variants(rows: Sequence[dict], headline: tuple[str, str] | None = None) -> list[tuple[str, str]]:
    """The ``(embedding, stain)`` variants present, the headline first (rows without these
    columns count as one variant ``("", "")``)."""
    found = sorted({(r.get("embedding", ""), r.get("stain", "")) for r in rows})
    return sorted(found, key=lambda v: (v != tuple(headline or ()), v))


def _of_variant(rows: Sequence[dict], variant: tuple[str, str]) -> list[dict]:
    return [r for r in rows if (r.get("embedding", ""), r.get("stain", "")) == variant]


def _mil_order(mil: str) -> tuple:
    return (MIL_MODELS.index(mil) if mil in MIL_MODELS else len(MIL_MODELS), mil)


def _has_values(rows: Sequence[dict], metric: str, mil: str) -> bool:
    return any(r["mil"] == mil and metric in r and np.isfinite(float(r[metric])) for r in rows)


def _variant_title(variant: tuple[str, str], headline: tuple[str, str] | None) -> str:
    if variant == ("", ""):
        return ""
    tag = " (headline)" if headline and variant == tuple(headline) else ""
    return f" — embedding {variant[0]}, stain {variant[1]}{tag}"


def results_markdown(rows: Sequence[dict], preset_name: str = "",
                     analyses: Sequence[dict] = (),
                     headline: tuple[str, str] | None = None) -> str:
    """The full ``results.md``: verdicts and paired differences (when per-bag predictions
    exist), then per ``(embedding, stain)`` variant one table per (scorer, metric) of
    mean ± std over seeds and the frozen encoders' MIL-free diagnostics."""
    seeds = sorted({int(r["seed"]) for r in rows})
    parts = [f"# Witness-rate sweep ({preset_name} preset)", ""]
    if analyses:
        parts += [claims_markdown(analyses), ""]
    else:
        parts += [f"No per-bag predictions (`{PREDICTIONS_DIR}/`): no confidence intervals and no "
                  f"verdicts, only the per-seed means below.", ""]
    for variant in variants(rows, headline):
        vrows = _of_variant(rows, variant)
        parts += [f"## Per-seed results{_variant_title(variant, headline)}", "",
                  f"Mean ± std over {len(seeds)} seed(s) {seeds} (std with ddof=1); best mean per "
                  "witness rate in bold. Metrics on held-out test bags; Top-K with K = 40% of the "
                  "bag. MIL-free scorers rank the cells without any MIL training and have no "
                  "decision rule (no bag F1).", ""]
        for mil in sorted({r["mil"] for r in vrows}, key=_mil_order):
            kind = (f"{mil} MIL" if mil in MIL_MODELS else MIL_FREE_TITLES.get(mil, mil))
            for metric in ("bag_f1", "bag_auc", "topk_recall", "topk_precision", "instance_auroc"):
                if _has_values(vrows, metric, mil):
                    parts += [f"### {kind} — {METRIC_TITLES[metric]}", "",
                              markdown_table(vrows, metric, mil), ""]
        diag_mil = ONECLASS_SCORER if any(r["mil"] == ONECLASS_SCORER for r in vrows) else None
        for metric in ("probe_auroc", "oneclass_auroc"):
            if diag_mil and _has_values(vrows, metric, diag_mil):
                parts += [f"### Frozen encoder — {METRIC_TITLES[metric]}", "",
                          markdown_table(vrows, metric, diag_mil), ""]
    return "\n".join(parts)


def plot_results(rows: Sequence[dict], metrics: Sequence[str] = ("bag_f1", "topk_recall"),
                 headline: tuple[str, str] | None = None):
    """Plotly figure: one panel per (metric, MIL model), metric against witness rate per method
    (mean ± std over seeds), for the headline ``(embedding, stain)`` variant."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    rows = _of_variant(rows, variants(rows, headline)[0])
    mils = sorted({r["mil"] for r in rows if r["mil"] in MIL_MODELS} or {r["mil"] for r in rows})
    fig = make_subplots(rows=len(metrics), cols=len(mils), shared_xaxes=True,
                        subplot_titles=[f"{METRIC_TITLES[m]} — {mil}" for m in metrics for mil in mils])
    ticks = [100 * w for w in sorted({float(r["witness_rate"]) for r in rows})]  # one label per WR
    palette = ["#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a", "#19d3f3", "#ff6692"]
    for i, metric in enumerate(metrics):
        summ = summarise(rows, metric)
        for j, mil in enumerate(mils):
            for k, method in enumerate(_order({m for (mi, m) in summ if mi == mil})):
                by_wr = summ[(mil, method)]
                wrs = sorted(by_wr)
                fig.add_trace(go.Scatter(
                    x=[100 * w for w in wrs], y=[by_wr[w][0] for w in wrs],
                    error_y=dict(type="data", array=[by_wr[w][1] for w in wrs]),
                    mode="lines+markers", name=method, legendgroup=method,
                    showlegend=(i == 0 and j == 0),
                    line=dict(color=palette[k % len(palette)],
                              width=3 if method == "slam_ags" else 1.5)), row=i + 1, col=j + 1)
            fig.update_xaxes(type="log", title_text="witness rate (%)", row=i + 1, col=j + 1,
                             tickvals=ticks, ticktext=[f"{t:g}" for t in ticks])
    fig.update_layout(height=320 * len(metrics), width=480 * len(mils) + 120,
                      title="Bag F1 and Top-K recall against witness rate")
    return fig


def _plot_png(rows: Sequence[dict], path: Path, metrics=("bag_f1", "topk_recall"),
              headline: tuple[str, str] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _of_variant(rows, variants(rows, headline)[0])
    mils = sorted({r["mil"] for r in rows if r["mil"] in MIL_MODELS} or {r["mil"] for r in rows})
    fig, axes = plt.subplots(len(metrics), len(mils), figsize=(5 * len(mils), 3.6 * len(metrics)),
                             squeeze=False)
    for i, metric in enumerate(metrics):
        summ = summarise(rows, metric)
        for j, mil in enumerate(mils):
            ax = axes[i][j]
            for method in _order({m for (mi, m) in summ if mi == mil}):
                by_wr = summ[(mil, method)]
                wrs = sorted(by_wr)
                ax.errorbar([100 * w for w in wrs], [by_wr[w][0] for w in wrs],
                            yerr=[by_wr[w][1] for w in wrs], marker="o", capsize=3, label=method,
                            linewidth=2.5 if method == "slam_ags" else 1.2)
            ax.set_xscale("log")
            ax.set_xlabel("witness rate (%)")
            ax.set_title(f"{METRIC_TITLES[metric]} — {mil}")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _errors(by_wr: Sequence[dict]) -> np.ndarray:
    """``(2, W)`` error-bar lengths below / above each estimate (a percentile interval may
    miss its own point estimate, e.g. a skewed F1: the bar then stops at the estimate)."""
    return np.maximum(0.0, np.array([[r["estimate"] - r["low"] for r in by_wr],
                                     [r["high"] - r["estimate"] for r in by_wr]]))


def _dodge(k: int, n: int) -> float:
    """Multiplicative x offset of line ``k`` of ``n`` on a log axis (error bars side by side)."""
    return 10 ** (0.025 * (k - (n - 1) / 2))


def plot_differences(analyses: Sequence[dict], metrics: Sequence[str] = CLAIM_METRICS):
    """Plotly figure: ``slam_ags - other`` against witness rate with 95% error bars; one panel
    per (metric, scorer variant), one line per other method, a dashed zero line."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=len(metrics), cols=len(analyses), shared_xaxes=True,
                        subplot_titles=[f"{METRIC_NAMES[m]} — {_group_title(a)}"
                                        for m in metrics for a in analyses])
    others = _order({c["other"] for a in analyses for c in a["comparisons"]})
    palette = ["#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a", "#19d3f3", "#ff6692",
               "#b6e880", "#ff97ff"]
    colour = {o: palette[i % len(palette)] for i, o in enumerate(others)}
    ticks = sorted({100 * r["witness_rate"] for a in analyses for c in a["comparisons"]
                    for r in c["by_witness_rate"]})  # one label per WR (log axis)
    for i, metric in enumerate(metrics):
        for j, a in enumerate(analyses):
            for c in a["comparisons"]:
                if c["metric"] != metric:
                    continue
                by, dx = c["by_witness_rate"], _dodge(others.index(c["other"]), len(others))
                fig.add_trace(go.Scatter(
                    x=[100 * r["witness_rate"] * dx for r in by], y=[r["estimate"] for r in by],
                    error_y=dict(type="data", symmetric=False, array=_errors(by)[1],
                                 arrayminus=_errors(by)[0]),
                    mode="lines+markers", name=f"slam_ags − {c['other']}", legendgroup=c["other"],
                    showlegend=(i == 0 and j == 0), line=dict(color=colour[c["other"]])),
                    row=i + 1, col=j + 1)
            fig.add_hline(y=0, line_dash="dash", line_color="grey", row=i + 1, col=j + 1)
            fig.update_xaxes(type="log", title_text="witness rate (%)", row=i + 1, col=j + 1,
                             tickvals=ticks, ticktext=[f"{t:g}" for t in ticks])
    fig.update_layout(height=320 * len(metrics), width=480 * len(analyses) + 160,
                      title="Paired differences slam_ags − other with 95% bootstrap intervals")
    return fig


def _plot_differences_png(analyses: Sequence[dict], path: Path,
                          metrics: Sequence[str] = CLAIM_METRICS) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(metrics), len(analyses),
                             figsize=(5 * len(analyses), 3.6 * len(metrics)), squeeze=False)
    for i, metric in enumerate(metrics):
        for j, a in enumerate(analyses):
            ax = axes[i][j]
            comps = sorted((c for c in a["comparisons"] if c["metric"] == metric),
                           key=lambda c: _rank(c["other"]))
            wrs = sorted({r["witness_rate"] for c in comps for r in c["by_witness_rate"]})
            for k, c in enumerate(comps):
                by = c["by_witness_rate"]
                est = np.array([r["estimate"] for r in by])
                err = _errors(by)
                ax.errorbar([100 * r["witness_rate"] * _dodge(k, len(comps)) for r in by], est,
                            yerr=err, marker="o", markersize=4, capsize=2, linewidth=1.2,
                            label=c["other"])
            ax.axhline(0, color="grey", linestyle="--", linewidth=1)
            ax.set_xscale("log")
            ax.set_xticks([100 * w for w in wrs], [f"{100 * w:g}" for w in wrs])
            ax.minorticks_off()
            ax.set_xlabel("witness rate (%)")
            ax.set_title(f"slam_ags − other: {METRIC_NAMES[metric]}\n{_group_title(a)}", fontsize=9)
    axes[0][0].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def mil_free_competitors(predictions: Sequence[dict]) -> list[dict]:
    """The per-bag predictions with Deep SVDD's own distance (scorer ``svdd_distance``) also
    entered in the one-class kNN analysis as the method ``deep_svdd_distance``: both are
    MIL-free witness scores, so ``slam_ags``'s kNN score is compared with the one-class
    competitor's own score on the same test bags."""
    extra = [dict(r, mil=ONECLASS_SCORER, method=SVDD_COMPETITOR) for r in predictions
             if r["mil"] == SVDD_SCORER]
    return [*predictions, *extra] if extra else list(predictions)


def analyse_predictions(predictions: Sequence[dict], runs: Sequence[dict] | None = None, *,
                        n_boot: int = 2000, seed: int = 0,
                        headline: tuple[str, str] | None = None) -> list[dict]:
    """:func:`slamags_core.claims.analyse` for every (scorer, embedding, stain) variant that
    holds ``slam_ags`` predictions: the headline ``(embedding, stain)`` first, in it the MIL
    models first, then the MIL-free scorers (see :func:`mil_free_competitors`)."""
    predictions = mil_free_competitors(predictions)
    groups = sorted({(r["mil"], r["embedding"], r["stain"]) for r in predictions
                     if r["method"] == PAPER_METHOD},
                    key=lambda g: ((g[1], g[2]) != tuple(headline or ()), g[1:], _mil_order(g[0])))
    return [analyse(predictions, mil=m, embedding=e, stain=s, runs=runs, n_boot=n_boot, seed=seed)
            for m, e, s in groups]


def write_report(rows: Sequence[dict], out_dir: str | Path, preset_name: str = "", *,
                 predictions: Sequence[dict] | None = None, runs: Sequence[dict] | None = None,
                 n_boot: int = 2000, seed: int = 0,
                 headline: tuple[str, str] | None = None) -> list[dict]:
    """Write ``results.md``, ``plots.html`` (interactive, self-contained) and ``plots.png``;
    with per-bag predictions also ``differences.html`` / ``.png`` and ``claims.json``.

    Args:
        rows: the rows of ``results.csv``.
        out_dir: the sweep folder.
        preset_name: shown in the title.
        predictions: per-bag predictions; ``None`` reads ``out_dir/predictions/`` if present.
        runs: per-run collapse diagnostics (:func:`slamags_core.claims.collapse_columns`
            plus ``method, witness_rate, seed``); ``None`` uses ``rows`` when they hold a
            ``collapsed`` column.
        n_boot, seed: bootstrap replicates and resampling seed.
        headline: the ``(embedding, stain)`` variant shown first and plotted (default: the
            first present).

    Returns:
        The analyses (:func:`analyse_predictions`), empty without predictions.
    """
    out_dir = Path(out_dir)
    if not rows:
        return []
    if predictions is None and (out_dir / PREDICTIONS_DIR).is_dir():
        predictions = read_bag_predictions(out_dir / PREDICTIONS_DIR)
    if runs is None and "collapsed" in rows[0]:
        runs = rows
    analyses = (analyse_predictions(predictions, runs, n_boot=n_boot, seed=seed,
                                    headline=headline) if predictions else [])
    atomic_write_text(results_markdown(rows, preset_name, analyses, headline),
                      out_dir / "results.md")
    plot_results(rows, headline=headline).write_html(out_dir / "plots.html",
                                                     include_plotlyjs=True)
    _plot_png(rows, out_dir / "plots.png", headline=headline)
    if analyses:
        plot_differences(analyses).write_html(out_dir / "differences.html", include_plotlyjs=True)
        _plot_differences_png(analyses, out_dir / "differences.png")
        atomic_write_text(json.dumps({"n_boot": n_boot, "seed": seed, "margin": DEFAULT_MARGIN,
                                      "headline": list(headline) if headline else None,
                                      "analyses": analyses}, indent=1, default=float),
                          out_dir / "claims.json")
    return analyses
