"""Sweep results -> a table (mean ± std over seeds, best per witness rate in bold) and plots."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np

from slamags_core.config import METHODS
from slamags_core.utils import atomic_write_text

METRIC_TITLES = {"bag_f1": "Bag F1", "bag_auc": "Bag AUC", "topk_precision": "Top-K precision",
                 "topk_recall": "Top-K recall", "instance_auroc": "Instance AUROC"}


def summarise(rows: Sequence[dict], metric: str) -> dict[tuple[str, str], dict[float, tuple]]:
    """``{(mil, method): {witness_rate: (mean, std, n_seeds)}}`` for one metric (NaNs ignored)."""
    acc: dict = defaultdict(lambda: defaultdict(list))
    for r in rows:
        acc[(r["mil"], r["method"])][float(r["witness_rate"])].append(float(r[metric]))
    out = {}
    for key, by_wr in acc.items():
        out[key] = {}
        for wr, vals in by_wr.items():
            v = np.array(vals, dtype=float)
            v = v[~np.isnan(v)]
            out[key][wr] = ((float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0, len(v))
                            if len(v) else (float("nan"), float("nan"), 0))
    return out


def _order(methods) -> list[str]:
    return sorted(methods, key=lambda m: METHODS.index(m) if m in METHODS else len(METHODS))


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
            txt = f"{mean:.3f} ± {std:.3f}" if n > 1 else f"{mean:.3f}"
            cells.append(f"**{txt}**" if np.isclose(mean, best[wr]) else txt)
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def results_markdown(rows: Sequence[dict], preset_name: str = "") -> str:
    """The full ``results.md``: one table per (MIL model, metric)."""
    seeds = sorted({int(r["seed"]) for r in rows})
    parts = [f"# Witness-rate sweep ({preset_name} preset)", "",
             f"Mean ± std over {len(seeds)} seed(s) {seeds} (std with ddof=1); best mean per "
             "witness rate in bold. Metrics on held-out test bags; Top-K with K = 40% of the bag.",
             ""]
    for mil in sorted({r["mil"] for r in rows}):
        for metric in ("bag_f1", "bag_auc", "topk_recall", "topk_precision", "instance_auroc"):
            parts += [f"## {mil} MIL — {METRIC_TITLES[metric]}", "",
                      markdown_table(rows, metric, mil), ""]
    return "\n".join(parts)


def plot_results(rows: Sequence[dict], metrics: Sequence[str] = ("bag_f1", "topk_recall")):
    """Plotly figure: one panel per (metric, MIL model), metric against witness rate per method."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    mils = sorted({r["mil"] for r in rows})
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


def _plot_png(rows: Sequence[dict], path: Path, metrics=("bag_f1", "topk_recall")) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mils = sorted({r["mil"] for r in rows})
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


def write_report(rows: Sequence[dict], out_dir: str | Path, preset_name: str = "") -> None:
    """Write ``results.md``, ``plots.html`` (interactive, self-contained) and ``plots.png``."""
    out_dir = Path(out_dir)
    if not rows:
        return
    atomic_write_text(results_markdown(rows, preset_name), out_dir / "results.md")
    plot_results(rows).write_html(out_dir / "plots.html", include_plotlyjs=True)
    _plot_png(rows, out_dir / "plots.png")
