"""The witness-rate sweep: a smoke run over every method at two witness rates, resume, report."""
import json
import math

import pytest

from slamags_core import sweep as sweep_mod
from slamags_core.__main__ import main
from slamags_core.config import METHODS, MIL_MODELS, get_preset
from slamags_core.predictions import write_bag_predictions
from slamags_core.report import markdown_table, summarise
from slamags_core.sweep import COLUMNS, merge_results, read_results, run_sweep, write_results
from slamags_core.utils import to_jsonable


@pytest.fixture(scope="module")
def smoke_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    mp = pytest.MonkeyPatch()
    mp.setenv("SLAMAGS_DATA_DIR", str(out / "data"))
    rows = run_sweep(get_preset("smoke"), out, witness_rates=[0.1, 0.05], seeds=[0],
                     progress=False)
    mp.undo()
    return out, rows


def test_smoke_sweep_all_methods_two_witness_rates(smoke_sweep):
    out, rows = smoke_sweep
    assert len(rows) == len(METHODS) * len(MIL_MODELS) * 2
    on_disk = read_results(out / "results.csv")
    assert {(r["method"], r["mil"], r["witness_rate"]) for r in on_disk} == {
        (m, mil, wr) for m in METHODS for mil in MIL_MODELS for wr in (0.1, 0.05)}
    header = (out / "results.csv").read_text().splitlines()[0].split(",")
    assert tuple(header) == COLUMNS
    for r in on_disk:
        for k in ("bag_f1", "topk_precision", "topk_recall"):
            assert 0.0 <= r[k] <= 1.0, (k, r)
        for k in ("bag_auc", "instance_auroc"):
            assert math.isnan(r[k]) or 0.0 <= r[k] <= 1.0
    for name in ("results.md", "plots.html", "plots.png", "config.json", "sweep.log"):
        assert (out / name).stat().st_size > 0, name
    assert "**" in (out / "results.md").read_text()


def test_finished_sweep_is_skipped_on_restart(smoke_sweep, monkeypatch):
    out, rows = smoke_sweep
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
    assert [r["method"] for r in first] == ["random"]  # whole rows only
    monkeypatch.setattr(sweep_mod, "fit_evaluate", real)
    rows = run_sweep(preset, tmp_path, **grid)
    assert sorted(r["method"] for r in rows) == ["random", "simclr"]
    assert read_results(tmp_path / "results.csv")[0] == first[0]


def test_other_config_in_same_folder_is_refused(tmp_path):
    run_sweep(get_preset("smoke"), tmp_path, methods=["random"], mil_models=["abmil"],
              witness_rates=[0.1], seeds=[0], progress=False)
    with pytest.raises(ValueError, match="another configuration"):
        run_sweep(get_preset("laptop"), tmp_path, methods=["random"], witness_rates=[0.1],
                  seeds=[0], progress=False)


@pytest.mark.parametrize("kw,match", [(dict(methods=["byol"]), "unknown method 'byol'"),
                                      (dict(mil_models=["transmil"]), "unknown MIL model"),
                                      (dict(witness_rates=[1.5]), r"witness_rates\[0\] .*got 1.5")])
def test_bad_grid(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        run_sweep(get_preset("smoke"), tmp_path, progress=False, **kw)


def _row(method, wr, seed, f1):
    return {"method": method, "mil": "abmil", "witness_rate": wr, "seed": seed, "bag_f1": f1,
            "bag_auc": f1, "topk_precision": 0.1, "topk_recall": 0.5, "instance_auroc": 0.7,
            "pretrain_s": 1.0, "embed_s": 0.1, "mil_s": 0.2}


def test_summary_and_table_by_hand(tmp_path):
    rows = [_row("simclr", 0.1, 0, 0.6), _row("simclr", 0.1, 1, 0.8),
            _row("slam_ags", 0.1, 0, 0.9), _row("slam_ags", 0.1, 1, 0.5),
            _row("simclr", 0.01, 0, 0.4), _row("slam_ags", 0.01, 0, 0.45)]
    s = summarise(rows, "bag_f1")
    mean, std, n = s[("abmil", "simclr")][0.1]
    assert (mean, n) == (pytest.approx(0.7), 2) and std == pytest.approx(0.1414214, rel=1e-6)
    table = markdown_table(rows, "bag_f1", "abmil").splitlines()
    assert table[0] == "| method | WR 10% | WR 1% |"
    assert table[2] == "| simclr | **0.700 ± 0.141** | 0.400 |"
    assert table[3] == "| slam_ags | **0.700 ± 0.283** | **0.450** |"
    write_results(rows, tmp_path / "r.csv")
    back = read_results(tmp_path / "r.csv")
    assert sorted((r["method"], r["witness_rate"], r["seed"], r["bag_f1"]) for r in back) == \
        sorted((r["method"], r["witness_rate"], r["seed"], r["bag_f1"]) for r in rows)


# ------------------------------------------------------------------ shards and merge

GRID = dict(methods=["random", "simclr"], mil_models=["abmil"], witness_rates=[0.1], seeds=[0],
            progress=False)


def test_sharded_sweep_merges_to_the_same_results_as_one_run(smoke_sweep, tmp_path):
    """Two shards of a grid, merged, equal the same cells of the one-process smoke sweep."""
    one, _ = smoke_sweep
    preset = get_preset("smoke")
    for k in (1, 0):  # any order, as array jobs finish
        part = run_sweep(preset, tmp_path, shard=(k, 2), **GRID)
        assert [r["method"] for r in part] == [GRID["methods"][k]]
    assert sorted(p.name for p in tmp_path.glob("results.shard-*")) == [
        "results.shard-0-of-2.csv", "results.shard-0-of-2.json",
        "results.shard-1-of-2.csv", "results.shard-1-of-2.json"]
    assert not (tmp_path / "results.md").exists()  # the report is the merge's job
    main(["merge", "--out", str(tmp_path)])
    merged = {sweep_mod._key(r): r for r in read_results(tmp_path / "results.csv")}
    single = {sweep_mod._key(r): r for r in read_results(one / "results.csv")
              if r["method"] in GRID["methods"] and r["mil"] == "abmil" and r["witness_rate"] == 0.1}
    assert merged.keys() == single.keys() and len(merged) == 2
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
