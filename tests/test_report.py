"""The report: verdicts generated from paired intervals on planted per-bag predictions with
known answers (a clear gain, an identical method, a reversed one, a growing gap, a missing
baseline), the one-seed message, collapse verdicts, and the files written."""
import json
import math

import numpy as np
import pytest

from slamags_core import claims as CL
from slamags_core import report as R
from slamags_core import stats as ST

WRS = (0.1, 0.05, 0.01, 0.005)


def base_rows(n_seeds=3, n=20, mil="abmil", seed=0):
    """slam_ags: perfect decisions, noisy but informative scores, Top-K recall around 0.6."""
    rng = np.random.default_rng(seed)
    rows = []
    for wr in WRS:
        for s in range(n_seeds):
            y = np.r_[np.ones(n, int), np.zeros(n, int)]
            score = y + rng.normal(0, 0.7, 2 * n)
            rec = np.clip(0.6 + rng.normal(0, 0.1, 2 * n), 0, 1)
            for i in range(2 * n):
                pos = y[i] == 1
                rows.append({"method": "slam_ags", "mil": mil, "witness_rate": wr, "seed": s,
                             "embedding": "h", "stain": "per_cell", "bag": i, "label": int(y[i]),
                             "score": float(score[i]), "decision": int(y[i]), "n_cells": 100,
                             "n_witnesses": int(100 * wr) if pos else 0,
                             "topk_precision": rec[i] if pos else math.nan,
                             "topk_recall": rec[i] if pos else math.nan,
                             "instance_auroc": rec[i] if pos else math.nan})
    return rows


def derive(rows, method, *, flip=lambda wr: 0, recall=lambda wr: 0.0, score=0.0):
    """A method made from slam_ags's rows: ``flip(wr)`` positive bags decided negative, Top-K
    recall moved by ``recall(wr)``, positive-bag scores moved by ``score``."""
    out = []
    for r in rows:
        if r["method"] != "slam_ags":
            continue
        q = dict(r, method=method)
        if r["label"] == 1:
            q["decision"] = 0 if r["bag"] < flip(r["witness_rate"]) else 1
            q["topk_recall"] = r["topk_recall"] + recall(r["witness_rate"])
            q["score"] = r["score"] + score
        out.append(q)
    return out


def planted(n_seeds=3):
    rows = base_rows(n_seeds)
    gap = {0.1: 0, 0.05: 4, 0.01: 10, 0.005: 16}  # simclr loses more positive bags at low WR
    return (rows
            + derive(rows, "simclr", flip=lambda wr: 2 + gap[wr],
                     recall=lambda wr: 0.1 * math.log10(wr), score=-1.0)
            + derive(rows, "weak")                                     # identical to slam_ags
            + derive(rows, "slam_sum", flip=lambda wr: -1, recall=lambda wr: 0.2, score=0.5)
            + derive(rows, "oracle", recall=lambda wr: 0.3, score=2.0))


def _claims(analysis):
    return {c["id"]: c for c in analysis["claims"]}


def test_verdicts_on_planted_predictions():
    a = CL.analyse(planted(), mil="abmil", n_boot=500)
    assert a["n_seeds"] == 3 and a["embedding"] == "h" and a["stain"] == "per_cell"
    c = _claims(a)
    assert c["C1"]["verdict"] == "reproduced"                      # clear gain over simclr
    assert c["C2"]["verdict"] == "not reproduced: no difference beyond ±0.05"  # identical
    assert c["C3"]["verdict"] == "not measured (no predictions of supcon)"
    assert c["C4"]["verdict"] == "partly reproduced"               # simclr's gap grows, weak's 0
    assert c["C5"]["verdict"].startswith("not reproduced: slam_ags is lower")  # slam_sum better
    assert c["C5"]["verdict"].endswith("not measured against slam_pcgrad")
    assert c["C6"]["verdict"] == "not measured (no collapse diagnostics of slam_ags runs)"
    assert any("vs oracle (ceiling" in line and "slam_ags lower" in line for line in a["context"])
    comp = {(x["other"], x["metric"]): x for x in a["comparisons"]}
    # the growing gap of simclr: F1 gap larger at 0.5% than at 10%, trend above 0
    f1 = comp[("simclr", "bag_f1")]
    assert f1["by_witness_rate"][-1]["estimate"] > f1["by_witness_rate"][0]["estimate"] + 0.3
    assert f1["trend_per_decade"]["class"] == "higher"
    rec = comp[("simclr", "topk_recall")]["trend_per_decade"]
    assert rec["estimate"] == pytest.approx(0.1) and rec["class"] == "higher"
    assert comp[("weak", "bag_auc")]["pooled"]["estimate"] == 0.0
    assert comp[("oracle", "bag_auc")]["role"].startswith("ceiling")


def test_one_seed_gives_no_verdict(tmp_path):
    preds = planted(n_seeds=1)
    rows = _result_rows(preds)
    analyses = R.write_report(rows, tmp_path, "smoke", predictions=preds, n_boot=200)
    for c in analyses[0]["claims"]:
        assert c["verdict"].startswith("no verdict (1 seed") or c["verdict"].startswith("not measured")
    md = (tmp_path / "results.md").read_text()
    assert "**1 seed gives no verdict.**" in md and "reproduced" not in md


def _result_rows(preds, mil="abmil"):
    rows = []
    for (m, wr, s), d in ST.select_cells(preds, mil=mil).items():
        rows.append({"method": m, "mil": mil, "witness_rate": wr, "seed": s, "embedding": "h",
                     "stain": "per_cell", **{k: ST.cell_metric(d, k) for k in ST.BOOT_METRICS},
                     "pretrain_s": 1.0, "embed_s": 0.1, "mil_s": 0.1})
    return rows


def test_report_files_and_sections(tmp_path):
    preds = planted()
    rows = _result_rows(preds)
    analyses = R.write_report(rows, tmp_path, "laptop", predictions=preds, n_boot=200)
    for name in ("results.md", "plots.html", "plots.png", "differences.html", "differences.png",
                 "claims.json"):
        assert (tmp_path / name).stat().st_size > 0, name
    md = (tmp_path / "results.md").read_text()
    assert md.index("## Verdicts") < md.index("## Per-seed results")
    assert "- **C1 — SLAM-AGS beats self-supervised pretraining (SimCLR): reproduced.**" in md
    assert "| slam_ags − | WR 10% | WR 5% | WR 1% | WR 0.5% | mean over WRs | per tenfold lower WR |" in md
    assert "| weak | +0.000 [+0.000, +0.000] |" in md
    assert "| oracle (ceiling) | **-" in md  # bold: the interval excludes 0
    saved = json.loads((tmp_path / "claims.json").read_text())
    assert saved["analyses"][0]["claims"] == analyses[0]["claims"]
    # the per-seed numbers of the tables are the per-bag metrics of the same predictions
    assert R.summarise(rows, "bag_f1")[("abmil", "slam_ags")][0.1][0] == 1.0


def _write_predictions(folder, preds):
    """Write planted per-bag predictions as the sweep does: one file per (method, WR, seed)."""
    from slamags_core.predictions import write_bag_predictions

    by_cell = {}
    for r in preds:
        by_cell.setdefault((r["method"], r["witness_rate"], r["seed"]), []).append(r)
    for (m, wr, s), rs in by_cell.items():
        write_bag_predictions(folder, method=m, mil="abmil", witness_rate=wr, seed=s,
                              embedding="h", stain="per_cell", bag_ids=[r["bag"] for r in rs],
                              labels=[r["label"] for r in rs], scores=[r["score"] for r in rs],
                              decisions=[r["decision"] for r in rs])


def test_report_reads_predictions_from_the_sweep_folder(tmp_path):
    preds = planted()
    _write_predictions(tmp_path, preds)
    analyses = R.write_report(_result_rows(preds), tmp_path, "x", n_boot=200)
    assert _claims(analyses[0])["C1"]["verdict"] == "reproduced"  # bag F1 alone (no rankings)


def test_without_predictions_the_report_says_so(tmp_path):
    rows = _result_rows(planted(n_seeds=2))
    assert R.write_report(rows, tmp_path, "x") == []
    md = (tmp_path / "results.md").read_text()
    assert "No per-bag predictions" in md and "### abmil MIL — Bag F1" in md
    assert not (tmp_path / "claims.json").exists()


@pytest.mark.parametrize("collapsed,expected", [
    ({}, "not testable here"),
    ({"slam_sum": {0, 1}}, "reproduced: slam_ags never collapsed"),
    ({"slam_sum": {0}, "slam_ags": {2}}, "not reproduced: slam_ags collapsed in 4 of 12 runs"),
])
def test_collapse_verdicts(collapsed, expected):
    runs = [{"method": m, "witness_rate": wr, "seed": s, "stain": "per_cell",
             "collapsed": int(s in collapsed.get(m, ())), "h_erank": 8.0 - 5 * (s in collapsed.get(m, ())),
             "z_erank": 6.0}
            for m in ("slam_ags", "slam_sum", "slam_pcgrad") for wr in WRS for s in range(3)]
    c6 = _claims(CL.analyse(planted(), mil="abmil", runs=runs, n_boot=200))["C6"]
    assert c6["verdict"].startswith(expected)
    assert c6["details"][0].startswith("collapsed runs (h or z flagged at the end): slam_ags")
    alone = [r for r in runs if r["method"] == "slam_ags"]
    c6 = _claims(CL.analyse(planted(), mil="abmil", runs=alone, n_boot=200))["C6"]
    assert c6["verdict"] == "not measured (no slam_sum or slam_pcgrad runs to compare with)"


def test_collapse_columns_from_an_epoch_log():
    epochs = [{"epoch": 0, "h_collapsed": False},
              {"epoch": 1, "h_std_ratio": 0.7, "h_erank": 9.0, "z_std_ratio": 0.05, "z_erank": 1.2,
               "h_collapsed": False, "z_collapsed": True, "conflict_frac": 0.4}]
    assert CL.collapse_columns(epochs) == {"h_std_ratio": 0.7, "h_erank": 9.0, "z_std_ratio": 0.05,
                                          "z_erank": 1.2, "h_collapsed": 0, "z_collapsed": 1,
                                          "collapsed": 1, "conflict_frac": 0.4}
    assert math.isnan(CL.collapse_columns(epochs[:1])["conflict_frac"])


def test_scorer_without_decisions_skips_f1_and_slam_ags_is_required():
    preds = [dict(r, decision=math.nan, mil="oneclass_knn") for r in planted()]
    a = CL.analyse(preds, mil="oneclass_knn", n_boot=200)
    assert {x["metric"] for x in a["comparisons"]} == {"bag_auc", "topk_recall"}
    with pytest.raises(ValueError, match="no predictions of 'slam_ags'"):
        CL.analyse([r for r in preds if r["method"] != "slam_ags"], mil="oneclass_knn")


def test_report_command_rewrites_a_sweep_folder(tmp_path, capsys):
    from slamags_core.__main__ import main
    from slamags_core.sweep import write_results

    preds = planted()
    write_results(_result_rows(preds), tmp_path / "results.csv")
    _write_predictions(tmp_path, preds)
    main(["report", str(tmp_path), "--n-boot", "200"])
    assert "1 scorer variant(s) with verdicts" in capsys.readouterr().out
    assert "C1 — SLAM-AGS beats self-supervised pretraining (SimCLR): reproduced" in \
        (tmp_path / "results.md").read_text()
    with pytest.raises(SystemExit, match="no results"):
        main(["report", str(tmp_path / "empty")])


def test_log_witness_rate_axes_label_every_rate():
    """Plotly's default log ticks label 0.5% as '5' next to '1': both figures name each rate."""
    preds = planted()
    figs = [R.plot_results(_result_rows(preds)),
            R.plot_differences([CL.analyse(preds, mil="abmil", n_boot=100)])]
    for fig in figs:
        axes = [a for a in fig.layout if a.startswith("xaxis")]
        assert axes
        for name in axes:
            assert tuple(fig.layout[name].ticktext) == ("0.5", "1", "5", "10"), name
