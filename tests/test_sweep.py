"""The witness-rate sweep: a smoke run over every method at two witness rates (MIL models,
MIL-free scorers, diagnostics, per-bag predictions consistent with the rows), a 3-seed run with
both embeddings (one pretraining serves h and z; verdicts appear), resume, report, shards and
merge."""
import json
import math

import numpy as np
import pytest
import torch

from slamags_core import stats as ST
from slamags_core import sweep as sweep_mod
from slamags_core.__main__ import main
from slamags_core.config import METHODS, MIL_MODELS, get_preset
from slamags_core.pipeline import get_bags
from slamags_core.predictions import predictions_path, read_bag_predictions, write_bag_predictions
from slamags_core.report import markdown_table, summarise
from slamags_core.sweep import (COLUMNS, KEY, SVDD_SCORER, merge_results, read_results, run_sweep,
                                variant_preset, write_results)
from slamags_core.utils import to_jsonable

ONECLASS = "oneclass_knn"
SLAM = ("slam_sum", "slam_pcgrad", "slam_ags")


@pytest.fixture(scope="module")
def smoke_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    mp = pytest.MonkeyPatch()
    mp.setenv("SLAMAGS_DATA_DIR", str(out / "data"))
    rows = run_sweep(get_preset("smoke"), out, witness_rates=[0.1, 0.05], seeds=[0],
                     progress=False)
    bagsets = {wr: get_bags(get_preset("smoke"), wr, 0) for wr in (0.1, 0.05)}
    mp.undo()
    return out, rows, bagsets


def _scorers(method):
    return [*MIL_MODELS, ONECLASS] + ([SVDD_SCORER] if method == "deep_svdd" else [])


def test_smoke_sweep_all_methods_two_witness_rates(smoke_sweep):
    out, rows, _ = smoke_sweep
    stain = get_preset("smoke").cells.stain
    expected = {(m, sc, wr) for m in METHODS for sc in _scorers(m) for wr in (0.1, 0.05)}
    assert len(rows) == len(expected)
    on_disk = read_results(out / "results.csv")
    assert {(r["method"], r["mil"], r["witness_rate"]) for r in on_disk} == expected
    header = (out / "results.csv").read_text().splitlines()[0].split(",")
    assert tuple(header) == COLUMNS
    for r in on_disk:
        assert (r["embedding"], r["stain"], r["seed"], r["n_test_bags"]) == ("h", stain, 0, 8)
        for k in ("topk_precision", "topk_recall", "probe_auroc"):
            assert 0.0 <= r[k] <= 1.0, (k, r)
        for k in ("bag_auc", "instance_auroc", "oneclass_auroc", "oneclass_bag_auc"):
            assert math.isnan(r[k]) or 0.0 <= r[k] <= 1.0, (k, r)
        if r["mil"] in MIL_MODELS:
            assert 0.0 <= r["bag_f1"] <= 1.0
        else:  # MIL-free scorers have no decision rule
            assert math.isnan(r["bag_f1"])
        assert r["collapsed"] in (0, 1) and r["collapsed"] == max(r["h_collapsed"], r["z_collapsed"])
        assert r["h_erank"] >= 1.0 and r["pretrain_s"] >= 0 and r["diagnostics_s"] > 0
        # two-task methods log their gradient conflict; single-task ones have none
        assert np.isfinite(r["conflict_frac"]) == (r["method"] in SLAM), r
    for name in ("results.md", "plots.html", "plots.png", "config.json", "sweep.log",
                 "differences.html", "differences.png", "claims.json"):
        assert (out / name).stat().st_size > 0, name
    assert "**" in (out / "results.md").read_text()


def test_diagnostics_are_one_per_encoder(smoke_sweep):
    """The frozen-encoder columns belong to the pretraining run: identical on every scorer row
    of one (method, WR, seed); the one-class kNN row's instance AUROC is the diagnostic."""
    _, rows, _ = smoke_sweep
    by_run = {}
    for r in rows:
        by_run.setdefault((r["method"], r["witness_rate"]), []).append(r)
    for run, rs in by_run.items():
        for k in ("probe_auroc", "oneclass_auroc", "oneclass_bag_auc", "h_erank", "pretrain_s"):
            vals = {r[k] for r in rs}
            assert len(vals) == 1 or all(map(math.isnan, vals)), (run, k, vals)
        knn = next(r for r in rs if r["mil"] == ONECLASS)
        assert knn["instance_auroc"] == pytest.approx(knn["oneclass_auroc"], abs=1e-5)
        assert knn["bag_auc"] == pytest.approx(knn["oneclass_bag_auc"], abs=1e-5)
    # the untrained encoder is not collapsed in h; Deep SVDD's own score only for deep_svdd
    assert {r["method"] for r in rows if r["mil"] == SVDD_SCORER} == {"deep_svdd"}


def test_predictions_match_rows_and_bag_sets(smoke_sweep):
    """One predictions file per row, one line per test bag of the bag set (ids, labels, cell and
    witness counts from the bag set), and the row's metrics recomputed from the file."""
    out, rows, bagsets = smoke_sweep
    preds = read_bag_predictions(out)
    assert len(list((out / "predictions").glob("*.csv"))) == len(rows)
    cfg = get_preset("smoke").bags
    for r in rows:
        path = predictions_path(out, **{k: r[k] for k in KEY})
        assert path.exists(), path
        mine = [p for p in preds if all(p[k] == r[k] for k in KEY)]
        bs = bagsets[r["witness_rate"]]
        test = bs.split_bags("test")
        assert sorted(p["bag"] for p in mine) == sorted(int(i) for i in test)
        assert len(mine) == r["n_test_bags"] == cfg.n_test
        n_wit = round(r["witness_rate"] * cfg.bag_size)
        for p in mine:
            assert p["label"] == bs.bag_labels[p["bag"]]
            assert p["n_cells"] == cfg.bag_size
            assert p["n_witnesses"] == (n_wit if p["label"] == 1 else 0)
            if r["mil"] in MIL_MODELS:
                assert 0.0 <= p["score"] <= 1.0 and p["decision"] == int(p["score"] > 0.5)
        d = ST.BagArrays.from_rows(mine)
        for k in ("bag_auc", "topk_recall", "topk_precision"):
            assert ST.cell_metric(d, k) == pytest.approx(r[k], abs=1e-5, nan_ok=True), (r, k)
        if r["mil"] in MIL_MODELS:
            assert ST.cell_metric(d, "bag_f1") == pytest.approx(r["bag_f1"], abs=1e-5)


def test_one_seed_report_says_no_verdict(smoke_sweep):
    out, _, _ = smoke_sweep
    md = (out / "results.md").read_text()
    assert "1 seed gives no verdict" in md
    assert "no verdict (1 seed: a hint, not a verdict)" in md
    for verdict in (": reproduced", ": not reproduced", ": inconclusive"):
        assert verdict not in md
    assert "### oneclass_knn" in md and "deep_svdd_distance (competitor)" in md
    assert "Frozen encoder — instance-label probe AUROC" in md


@pytest.fixture(scope="module")
def three_seed_sweep(tmp_path_factory):
    """Two methods, 3 seeds, both embeddings, the per-cell stain: verdicts are generated."""
    out = tmp_path_factory.mktemp("sweep3")
    mp = pytest.MonkeyPatch()
    mp.setenv("SLAMAGS_DATA_DIR", str(out / "data"))
    rows = run_sweep(get_preset("smoke"), out, methods=["simclr", "slam_ags"],
                     mil_models=["abmil"], witness_rates=[0.1], seeds=[0, 1, 2],
                     embeddings=["h", "z"], stains=["per_cell"], progress=False)
    mp.undo()
    return out, rows


def test_both_embeddings_share_one_pretraining(three_seed_sweep):
    out, rows = three_seed_sweep
    assert {(r["embedding"], r["stain"]) for r in rows} == {("h", "per_cell"), ("z", "per_cell")}
    assert len(rows) == 2 * 3 * 2 * 2  # methods x seeds x embeddings x (abmil + one-class)
    assert len([p for p in (out / "checkpoints").iterdir() if p.is_dir()]) == 2 * 3
    for r in rows:
        twin = next(q for q in rows if q["embedding"] != r["embedding"] and
                    all(q[k] == r[k] for k in ("method", "mil", "seed")))
        assert twin["pretrain_s"] == r["pretrain_s"] and twin["h_erank"] == r["h_erank"]
        assert 0.0 <= r["probe_auroc"] <= 1.0
    h = {(r["method"], r["seed"]): r["probe_auroc"] for r in rows if r["embedding"] == "h"}
    z = {(r["method"], r["seed"]): r["probe_auroc"] for r in rows if r["embedding"] == "z"}
    assert h != z  # different features, different probes


def test_three_seeds_give_verdicts_headline_first(three_seed_sweep):
    out, _ = three_seed_sweep
    md = (out / "results.md").read_text()
    assert "gives no verdict" not in md
    c1 = [line for line in md.splitlines() if line.startswith("- **C1")]
    assert len(c1) == 4  # (abmil, one-class kNN) x (h, z)
    assert all("no verdict" not in line and "not measured" not in line for line in c1)
    # the preset's embedding (h) comes first; the smoke preset's headline stain is per_bag, so
    # no variant of this run is tagged as the headline
    assert md.index("embedding h, stain per_cell (3 seeds)") < md.index("embedding z, stain per_cell")
    assert md.index("## Per-seed results — embedding h, stain per_cell\n") < \
        md.index("## Per-seed results — embedding z, stain per_cell\n")
    assert "(headline)" not in md
    per_bag = read_bag_predictions(out)
    assert {p["stain"] for p in per_bag} == {"per_cell"}
    assert len(per_bag) == 2 * 3 * 2 * 2 * get_preset("smoke").bags.n_test


def test_per_cell_variant_renders_other_bags(tmp_path, monkeypatch):
    """A stain variant is its own data set: same config otherwise, different images."""
    monkeypatch.setenv("SLAMAGS_DATA_DIR", str(tmp_path))
    smoke = get_preset("smoke")
    a = get_bags(variant_preset(smoke, "per_cell"), 0.1, 0)
    b = get_bags(variant_preset(smoke, "per_bag"), 0.1, 0)
    assert a.images.shape == b.images.shape and not np.array_equal(a.images, b.images)


def test_finished_sweep_is_skipped_on_restart(smoke_sweep, monkeypatch):
    out, rows, _ = smoke_sweep
    before = (out / "results.csv").read_text()

    def boom(*a, **k):
        raise AssertionError("a finished grid cell was recomputed")

    monkeypatch.setattr(sweep_mod, "fit_evaluate", boom)
    monkeypatch.setattr(sweep_mod, "get_pretrained", boom)
    again = run_sweep(get_preset("smoke"), out, witness_rates=[0.1, 0.05], seeds=[0],
                      progress=False)
    assert len(again) == len(rows)
    assert (out / "results.csv").read_text() == before


def test_interrupted_sweep_resumes_missing_cells(tmp_path, monkeypatch):
    preset = get_preset("smoke")
    grid = dict(methods=["random", "simclr"], mil_models=["abmil"], witness_rates=[0.1],
                seeds=[0], progress=False)
    calls = {"n": 0}
    real = sweep_mod.fit_evaluate

    def dies_on_second(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(sweep_mod, "fit_evaluate", dies_on_second)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(preset, tmp_path, **grid)
    first = read_results(tmp_path / "results.csv")
    assert [(r["method"], r["mil"]) for r in first] == [("random", "abmil"), ("random", ONECLASS)]
    monkeypatch.setattr(sweep_mod, "fit_evaluate", real)
    rows = run_sweep(preset, tmp_path, **grid)
    assert sorted((r["method"], r["mil"]) for r in rows) == [
        ("random", "abmil"), ("random", ONECLASS), ("simclr", "abmil"), ("simclr", ONECLASS)]
    assert read_results(tmp_path / "results.csv")[:2] == first


def test_other_config_in_same_folder_is_refused(tmp_path):
    run_sweep(get_preset("smoke"), tmp_path, methods=["random"], mil_models=["abmil"],
              witness_rates=[0.1], seeds=[0], progress=False)
    with pytest.raises(ValueError, match="another configuration"):
        run_sweep(get_preset("laptop"), tmp_path, methods=["random"], witness_rates=[0.1],
                  seeds=[0], progress=False)


@pytest.mark.parametrize("kw,match", [(dict(methods=["byol"]), "unknown method 'byol'"),
                                      (dict(mil_models=["transmil"]), "unknown MIL model"),
                                      (dict(witness_rates=[1.5]), r"witness_rates\[0\] .*got 1.5"),
                                      (dict(embeddings=["x"]), "unknown embedding 'x'"),
                                      (dict(stains=["per_slide"]), "unknown stain 'per_slide'")])
def test_bad_grid(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        run_sweep(get_preset("smoke"), tmp_path, progress=False, **kw)


def _row(method, wr, seed, f1):
    return {"method": method, "mil": "abmil", "witness_rate": wr, "seed": seed, "embedding": "h",
            "stain": "per_cell", "bag_f1": f1,
            "bag_auc": f1, "topk_precision": 0.1, "topk_recall": 0.5, "instance_auroc": 0.7,
            "pretrain_s": 1.0, "embed_s": 0.1, "mil_s": 0.2}


def test_summary_and_table_by_hand(tmp_path):
    rows = [_row("simclr", 0.1, 0, 0.6), _row("simclr", 0.1, 1, 0.8),
            _row("slam_ags", 0.1, 0, 0.9), _row("slam_ags", 0.1, 1, 0.5),
            _row("simclr", 0.01, 0, 0.4), _row("slam_ags", 0.01, 0, 0.45)]
    s = summarise(rows, "bag_f1")
    mean, std, n = s[("abmil", "simclr")][0.1]
    assert (mean, n) == (pytest.approx(0.7), 2) and std == pytest.approx(0.1414214, rel=1e-6)
    assert s[("abmil", "simclr")][0.01][2] == 1 and np.isnan(s[("abmil", "simclr")][0.01][1])
    table = markdown_table(rows, "bag_f1", "abmil").splitlines()
    assert table[0] == "| method | WR 10% | WR 1% |"
    assert table[2] == "| simclr | **0.700 ± 0.141** | 0.400 |"
    assert table[3] == "| slam_ags | **0.700 ± 0.283** | **0.450** |"
    write_results(rows, tmp_path / "r.csv")
    back = read_results(tmp_path / "r.csv")
    assert sorted((r["method"], r["witness_rate"], r["seed"], r["bag_f1"]) for r in back) == \
        sorted((r["method"], r["witness_rate"], r["seed"], r["bag_f1"]) for r in rows)


def test_old_results_file_is_refused(tmp_path):
    (tmp_path / "results.csv").write_text("method,mil,witness_rate,seed,bag_f1\nrandom,abmil,0.1,0,0.5\n")
    with pytest.raises(ValueError, match=r"lacks the columns \['embedding', 'stain'"):
        read_results(tmp_path / "results.csv")
    with pytest.raises(ValueError, match="lacks the key columns"):
        write_results([{"method": "random", "mil": "abmil", "witness_rate": 0.1, "seed": 0}],
                      tmp_path / "r.csv")
# ------------------------------------------------------------------ shards and merge

GRID = dict(methods=["random", "simclr"], mil_models=["abmil"], witness_rates=[0.1], seeds=[0],
            progress=False)


def test_sharded_sweep_merges_to_the_same_results_as_one_run(smoke_sweep, tmp_path):
    """Two shards of a grid, merged, equal the same cells of the one-process smoke sweep."""
    one, _, _ = smoke_sweep
    preset = get_preset("smoke")
    for k in (1, 0):  # any order, as array jobs finish
        part = run_sweep(preset, tmp_path, shard=(k, 2), **GRID)
        assert {r["method"] for r in part} == {GRID["methods"][k]}
    assert sorted(p.name for p in tmp_path.glob("results.shard-*")) == [
        "results.shard-0-of-2.csv", "results.shard-0-of-2.json",
        "results.shard-1-of-2.csv", "results.shard-1-of-2.json"]
    assert not (tmp_path / "results.md").exists()  # the report is the merge's job
    main(["merge", "--out", str(tmp_path)])
    merged = {sweep_mod._key(r): r for r in read_results(tmp_path / "results.csv")}
    single = {sweep_mod._key(r): r for r in read_results(one / "results.csv")
              if r["method"] in GRID["methods"] and r["mil"] in ("abmil", ONECLASS)
              and r["witness_rate"] == 0.1}
    assert merged.keys() == single.keys() and len(merged) == 4  # (abmil, one-class) x 2 methods
    for k, row in merged.items():
        for m in sweep_mod.METRICS:
            assert row[m] == single[k][m] or (math.isnan(row[m]) and math.isnan(single[k][m]))
    assert (tmp_path / "results.md").stat().st_size > 0


def _fake_shard(folder, k, n, rows, preset="smoke", grid=None):
    folder.mkdir(parents=True, exist_ok=True)
    cfg = get_preset(preset).to_dict()
    for f in ("witness_rates", "methods", "mil_models", "seeds"):
        cfg.pop(f)
    (folder / "config.json").write_text(json.dumps({"preset": to_jsonable(cfg)}))
    stem = sweep_mod.shard_name((k, n))
    write_results(rows, folder / f"{stem}.csv")
    (folder / f"{stem}.json").write_text(json.dumps({"shard": [k, n], "grid": grid or {"g": 1}}))


def test_merge_refuses_mixed_configurations_grids_and_missing_shards(tmp_path):
    _fake_shard(tmp_path / "a", 0, 2, [_row("simclr", 0.1, 0, 0.6)])
    _fake_shard(tmp_path / "b", 1, 2, [_row("slam_ags", 0.1, 0, 0.7)], preset="laptop")
    with pytest.raises(ValueError, match="different configurations"):
        merge_results([tmp_path / "a", tmp_path / "b"], tmp_path / "out")
    _fake_shard(tmp_path / "c", 1, 3, [_row("slam_ags", 0.1, 0, 0.7)])
    with pytest.raises(ValueError, match="another grid or shard count"):
        merge_results([tmp_path / "a", tmp_path / "c"], tmp_path / "out")
    with pytest.raises(ValueError, match=r"shards \[1\] of 2 are missing"):
        merge_results([tmp_path / "a"], tmp_path / "out")
    assert len(merge_results([tmp_path / "a"], tmp_path / "out", allow_partial=True)) == 1
    _fake_shard(tmp_path / "d", 1, 2, [_row("simclr", 0.1, 0, 0.9)])  # same cell, other value
    with pytest.raises(ValueError, match="different results"):
        merge_results([tmp_path / "a", tmp_path / "d"], tmp_path / "out2")
    _fake_shard(tmp_path / "e", 1, 2, [_row("slam_ags", 0.1, 0, 0.7)])
    rows = merge_results([tmp_path / "a", tmp_path / "e"], tmp_path / "out3")
    assert sorted(r["method"] for r in rows) == ["simclr", "slam_ags"]


def test_merge_command_refuses_mixed_configurations_with_a_message(tmp_path, capsys):
    _fake_shard(tmp_path / "a", 0, 2, [_row("simclr", 0.1, 0, 0.6)])
    _fake_shard(tmp_path / "b", 1, 2, [_row("slam_ags", 0.1, 0, 0.7)], preset="laptop")
    with pytest.raises(SystemExit, match="merge refused: .*different configurations"):
        main(["merge", "--out", str(tmp_path / "out"), str(tmp_path / "a"), str(tmp_path / "b")])
    assert not (tmp_path / "out" / "results.csv").exists()
    main(["merge", "--out", str(tmp_path / "out"), str(tmp_path / "a"), "--partial"])
    assert "merged 1 rows" in capsys.readouterr().out


@pytest.mark.parametrize("text", ["2/2", "1", "a/b", "-1/3"])
def test_bad_shard(text):
    with pytest.raises(ValueError, match="K/N"):
        sweep_mod.parse_shard(text)


def test_merge_gathers_the_per_bag_predictions_of_separate_folders(tmp_path):
    files = {}
    for k, (folder, method) in enumerate((("a", "simclr"), ("b", "slam_ags"))):
        _fake_shard(tmp_path / folder, k, 2, [_row(method, 0.1, 0, 0.6)])
        files[folder] = write_bag_predictions(
            tmp_path / folder, method=method, mil="abmil", witness_rate=0.1, seed=0,
            embedding="h", stain="per_bag", bag_ids=[0, 1], labels=[0, 1], scores=[0.2, 0.9])
    merge_results([tmp_path / "a", tmp_path / "b"], tmp_path / "out", allow_partial=True)
    got = sorted(p.name for p in (tmp_path / "out" / "predictions").iterdir())
    assert got == sorted(f.name for f in files.values())
    files["b"].rename(files["b"].with_name(files["a"].name))  # same cell, other content
    with pytest.raises(ValueError, match="different predictions"):
        merge_results([tmp_path / "a", tmp_path / "b"], tmp_path / "out", allow_partial=True)


def test_protocol_cost_benchmark_reads_a_sweep(smoke_sweep):
    """benchmarks/protocol_cost.py: stage totals of a finished sweep, and a cost model that gives
    back the measured total for the measured design."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "protocol_cost.py"
    spec = importlib.util.spec_from_file_location("protocol_cost", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out, rows, _ = smoke_sweep
    m = mod.measured(out)
    assert m["rows"] == len(rows) and m["grid_cells"] == 2 and m["bag_size"] == 40
    assert set(m["unit"]["pretrain_s_per_run"]) == set(METHODS)
    assert m["unit"]["render_s_per_cell"] > 0 and m["total"]["embed_s"] > 0
    predicted = mod.predict(m, tuple(m["design"]), n_wr=2)
    svdd = sum(r["mil_s"] for r in rows if r["mil"] == SVDD_SCORER)  # not in the model
    assert predicted == pytest.approx(m["total"]["sum_s"] - svdd, rel=0.05)
    bigger = mod.predict(m, (m["design"][0], m["design"][1], 4 * m["design"][2]), n_wr=2)
    assert bigger > predicted


def test_oneclass_metric_benchmark_reproduces_the_sweep_column(smoke_sweep, monkeypatch):
    """benchmarks/oneclass_metric.py reloads a finished sweep's encoders (nothing retrained):
    its cosine AUROC equals the sweep's ``oneclass_auroc`` column, and it adds the Euclidean
    and norm-only rankings (AUROCs in [0, 1])."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "oneclass_metric.py"
    spec = importlib.util.spec_from_file_location("oneclass_metric", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out, rows, _ = smoke_sweep
    monkeypatch.setenv("SLAMAGS_DATA_DIR", str(out / "data"))
    stamps = {p: p.stat().st_mtime_ns for p in (out / "checkpoints").rglob("checkpoint.pt")}
    assert stamps
    got = mod.measure(out, ["simclr", "oracle"])
    assert len(got) == 4  # 2 methods x 2 witness rates
    for g in got:
        assert g["cosine"] == pytest.approx(g["sweep_cosine"], abs=1e-5)
        assert all(0 <= g[s] <= 1 for s in mod.SCORES)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # no pretraining ran again
    assert "cosine / Euclidean / norm" in mod.markdown(got)


def test_n_test_option_renders_more_test_bags_and_refuses_mixing(tmp_path, monkeypatch):
    """``--n-test`` (the powered design of docs/power.md) changes the test split only, is
    recorded in config.json, and a folder of the preset's design refuses it."""
    monkeypatch.setenv("SLAMAGS_DATA_DIR", str(tmp_path / "data"))
    out = tmp_path / "powered"
    main(["sweep", "--preset", "smoke", "--out", str(out), "--methods", "random", "--mil",
          "abmil", "--witness-rates", "0.1", "--seeds", "0", "--n-test", "12", "--no-report",
          "--no-progress"])
    rows = read_results(out / "results.csv")
    assert {int(r["n_test_bags"]) for r in rows} == {12}
    assert json.loads((out / "config.json").read_text())["preset"]["bags"]["n_test"] == 12
    preds = read_bag_predictions(predictions_path(out, method="random", mil="abmil",
                                                  witness_rate=0.1, seed=0, embedding="h",
                                                  stain=get_preset("smoke").cells.stain))
    assert len(preds) == 12 and sum(p["label"] for p in preds) == 6
    with pytest.raises(ValueError, match="another configuration"):
        run_sweep(get_preset("smoke"), out, methods=["random"], mil_models=["abmil"],
                  witness_rates=[0.1], seeds=[0], progress=False, report=False)
    with pytest.raises(ValueError, match="n_test must be an integer >= 2, got 1"):
        main(["sweep", "--preset", "smoke", "--out", str(tmp_path / "x"), "--n-test", "1"])


def test_render_only_caches_the_bag_sets_and_writes_no_rows(tmp_path, monkeypatch):
    """``--render-only`` renders every (witness rate, seed) bag set of the grid once; a later
    sweep of the same grid loads them (benchmarks/parallel_sweep.sh's method groups)."""
    monkeypatch.setenv("SLAMAGS_DATA_DIR", str(tmp_path / "data"))
    main(["sweep", "--preset", "smoke", "--out", str(tmp_path / "r"), "--witness-rates", "0.1",
          "0.05", "--seeds", "0", "1", "--render-only", "--no-progress"])
    assert not (tmp_path / "r" / "results.csv").exists()
    caches = sorted((tmp_path / "data").rglob("manifest.json"))
    assert len(caches) == 4
    log = (tmp_path / "r" / "sweep.log").read_text()
    assert log.count("bags stain=") == 4
    stamps = [c.stat().st_mtime_ns for c in caches]
    bs = get_bags(get_preset("smoke"), 0.05, 1)  # read back from the cache, not rendered again
    assert bs.witness_rate == 0.05 and bs.n_bags == 20
    assert sorted((tmp_path / "data").rglob("manifest.json")) == caches
    assert [c.stat().st_mtime_ns for c in caches] == stamps


def test_workers_give_the_results_of_one_process(tmp_path, monkeypatch):
    """``--workers 2`` (bag sets rendered in parallel, then two shards, merged) writes the rows
    and per-bag predictions of one process with as many threads (1 each here)."""
    monkeypatch.setenv("SLAMAGS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    grid = dict(methods=["random", "weak", "deep_svdd"], witness_rates=[0.1, 0.05], seeds=[0])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_sweep(get_preset("smoke"), tmp_path / "one", progress=False, **grid)
    finally:
        torch.set_num_threads(threads)
    par = tmp_path / "par"
    main(["sweep", "--preset", "smoke", "--out", str(par), "--methods", *grid["methods"],
          "--witness-rates", "0.1", "0.05", "--seeds", "0", "--workers", "2", "--no-progress"])
    got = {sweep_mod._key(r): r for r in read_results(par / "results.csv")}
    want = {sweep_mod._key(r): r for r in read_results(tmp_path / "one" / "results.csv")}
    assert got.keys() == want.keys() and len(got) == 2 * (3 * 3 + 1)
    for k, r in want.items():
        for m in sweep_mod.METRICS:
            assert got[k][m] == r[m] or (math.isnan(got[k][m]) and math.isnan(r[m])), (k, m)
    names = sorted(p.name for p in (tmp_path / "one" / "predictions").glob("*.csv"))
    assert names == sorted(p.name for p in (par / "predictions").glob("*.csv"))
    assert all((par / "predictions" / n).read_bytes() ==
               (tmp_path / "one" / "predictions" / n).read_bytes() for n in names)
    assert (par / "results.md").exists() and (par / "worker-1.log").exists()


@pytest.mark.parametrize("extra,match", [(["--workers", "0"], "workers must be an integer >= 1"),
                                         (["--workers", "2", "--shard", "0/2"], "not with --shard")])
def test_bad_workers(tmp_path, extra, match):
    with pytest.raises((SystemExit, ValueError), match=match):
        main(["sweep", "--preset", "smoke", "--out", str(tmp_path / "o"), *extra])
