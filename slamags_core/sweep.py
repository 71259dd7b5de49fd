"""The paper's experiment: every pretraining method x every witness rate x seeds.

For each stain mode, witness rate and seed the sweep simulates train / validation / test bags,
pretrains every method on the training bags' pools, embeds every cell with the frozen encoder
(the backbone ``h`` and/or the projection ``z``, from the same run), measures the encoder's
MIL-free diagnostics on the test bags, trains each MIL aggregator (model selection on the
validation bags) and evaluates it on the held-out test bags
(:func:`slamags_core.mil.fit_evaluate`). The retrieval columns (``topk_*``,
``instance_auroc``) rank cells by the model's *abnormality* score, not by raw attention.

Outputs in ``DIR``:

* ``results.csv``: one row per ``(method, mil, witness_rate, seed, embedding, stain)`` with the
  metrics of :data:`METRICS`, the frozen encoder's diagnostics (:data:`DIAGNOSTICS`: the
  instance-label probe AUROC -- a ceiling, it uses labels no method has -- and the one-class
  kNN witness AUROC), the pretraining run's collapse diagnostics (:data:`COLLAPSE`) and the
  stage times. Besides the MIL models, ``mil`` holds the MIL-free scorers: ``oneclass_knn``
  (every method: the kNN novelty score ranks the cells, pooled into a bag score) and
  ``svdd_distance`` (``deep_svdd`` only: its distance to the centre of normal cells).
* ``predictions/``: per test bag, one file per row (:mod:`slamags_core.predictions`); what
  the report's paired bootstrap intervals and verdicts resample.
* ``results.md``, ``plots.*``, ``differences.*``, ``claims.json`` (:mod:`slamags_core.report`).

The sweep is resumable: rows are written atomically (the whole CSV is rewritten to a temporary
file and renamed), a restarted sweep skips finished grid cells, and an interrupted pretraining
resumes from its last checkpoint under ``DIR/checkpoints``.

Scale-out: ``shard=(K, N)`` runs every N-th grid cell starting at K (e.g. one Slurm array task
each) and writes ``results.shard-K-of-N.csv`` (+ a ``.json`` naming its grid) atomically;
:func:`merge_results` (``python -m slamags_core merge``) combines the shards and refuses results
of different configurations or grids. Under ``torchrun`` every process runs the sweep: each
pretraining is data-parallel over all of them, and rank 0 alone embeds, trains the MIL models
and writes files.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import time
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from slamags_core import deep_svdd
from slamags_core import distributed as D
from slamags_core.bags import STAIN_MODES, n_witnesses
from slamags_core.claims import collapse_columns
from slamags_core.config import METHODS, MIL_MODELS, Preset
from slamags_core.diagnostics import (ONECLASS_SCORER, instance_probe, oneclass_scores,
                                      rank_within_bags)
from slamags_core.embed import EMBEDDINGS
from slamags_core.mil import fit_evaluate
from slamags_core.pipeline import embed_bagset, get_bags, get_pretrained
from slamags_core.predictions import PREDICTIONS_DIR, write_bag_predictions
from slamags_core.report import write_report
from slamags_core.utils import atomic_write_text, get_device, to_jsonable
from slamags_core.validation import check_float, check_int

SVDD_SCORER = "svdd_distance"  # deep_svdd's own cell score (distance to its centre), MIL-free
MIL_FREE_SCORERS: tuple[str, ...] = (ONECLASS_SCORER, SVDD_SCORER)
METRICS: tuple[str, ...] = ("bag_f1", "bag_auc", "topk_precision", "topk_recall", "instance_auroc")
DIAGNOSTICS: tuple[str, ...] = ("probe_auroc", "oneclass_auroc", "oneclass_bag_auc")
COLLAPSE: tuple[str, ...] = ("h_std_ratio", "h_erank", "z_std_ratio", "z_erank", "h_collapsed",
                             "z_collapsed", "collapsed", "conflict_frac")
KEY: tuple[str, ...] = ("method", "mil", "witness_rate", "seed", "embedding", "stain")
COLUMNS: tuple[str, ...] = (*KEY, *METRICS, *DIAGNOSTICS, *COLLAPSE, "n_test_bags",
                            "pretrain_s", "embed_s", "diagnostics_s", "mil_s")
_TEXT = ("method", "mil", "embedding", "stain")


def _key(row: dict) -> tuple:
    return (row["method"], row["mil"], float(row["witness_rate"]), int(row["seed"]),
            row["embedding"], row["stain"])


def read_results(path: str | Path) -> list[dict]:
    """Rows of a ``results.csv`` (numbers parsed); an empty list when the file does not exist.

    Raises:
        ValueError: a file without the columns of :data:`COLUMNS` (e.g. written by an older
            version of the sweep).
    """
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise ValueError(f"{path} lacks the columns {missing} (an older sweep's results?); "
                             f"use another output folder")
        for r in reader:
            rows.append({k: (v if k in _TEXT else int(v) if k == "seed" else
                             float(v) if v != "" else math.nan) for k, v in r.items()})
    return rows


def _sort_key(r: dict) -> tuple:
    return (r["stain"], r["embedding"], -r["witness_rate"], r["seed"],
            METHODS.index(r["method"]) if r["method"] in METHODS else 99, r["mil"])


def _cell(v) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return str(v)


def write_results(rows: Sequence[dict], path: str | Path) -> None:
    """Write all rows atomically (temporary file + rename): never half a row on disk.

    A row must hold every column of :data:`KEY`; a missing number is written empty (NaN).
    """
    for r in rows:
        missing = [k for k in KEY if k not in r]
        if missing:
            raise ValueError(f"a result row lacks the key columns {missing}: {r}")
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in sorted(rows, key=_sort_key):
        w.writerow({k: _cell(r.get(k, math.nan)) for k in COLUMNS})
    atomic_write_text(buf.getvalue(), path)


def _check_grid(preset: Preset, methods, mil_models, witness_rates, seeds, embeddings, stains
                ) -> tuple[list[str], list[str], list[float], list[int], list[str], list[str]]:
    """The whole grid validated before any work starts, with plain float rates and int seeds.

    Every witness rate must give at least one witness in a bag of the preset's size; otherwise
    the error names the rate, the bag size and the smallest bag size that would work.
    """
    if not (methods and mil_models and witness_rates and seeds and embeddings and stains):
        raise ValueError("methods, MIL models, witness rates, seeds, embeddings and stains must "
                         "all be non-empty")
    for what, values, allowed in (("method", methods, METHODS), ("MIL model", mil_models, MIL_MODELS),
                                  ("embedding", embeddings, EMBEDDINGS),
                                  ("stain", stains, STAIN_MODES)):
        for v in values:
            if v not in allowed:
                raise ValueError(f"unknown {what} {v!r}; allowed: {tuple(allowed)}")
    rates = [check_float(wr, f"witness_rates[{i}]", gt=0, le=1)
             for i, wr in enumerate(witness_rates)]
    seeds = [check_int(s, f"seeds[{i}]", ge=0) for i, s in enumerate(seeds)]
    for wr in rates:
        try:
            n_witnesses(preset.bags.bag_size, wr)
        except ValueError as err:
            raise ValueError(f"sweep grid of preset {preset.name!r}: {err}") from err
    uniq = lambda xs: list(dict.fromkeys(xs))  # noqa: E731  (order kept, duplicates dropped)
    return (uniq(methods), uniq(mil_models), uniq(rates), uniq(seeds), uniq(embeddings),
            uniq(stains))


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` -> ``(K, N)`` with ``0 <= K < N`` (Slurm: ``$SLURM_ARRAY_TASK_ID/N``).

    Raises:
        ValueError: for anything else.
    """
    try:
        k, n = (int(x) for x in str(text).split("/"))
    except ValueError:
        raise ValueError(f"shard must look like K/N (e.g. 0/4), got {text!r}") from None
    if not 0 <= k < n:
        raise ValueError(f"shard K/N needs 0 <= K < N, got {text!r}")
    return k, n


def shard_name(shard: tuple[int, int] | None) -> str:
    """File stem of a shard's results (``results`` for the whole grid)."""
    return "results" if shard is None else f"results.shard-{shard[0]}-of-{shard[1]}"


def _check_config(out_dir: Path, preset: Preset) -> None:
    """Refuse to mix results of different presets in one folder; record the preset."""
    path = out_dir / "config.json"
    mine = to_jsonable(preset.to_dict())
    for grid_field in ("witness_rates", "methods", "mil_models", "seeds"):
        mine.pop(grid_field)
    if path.exists():
        theirs = json.loads(path.read_text())["preset"]
        if theirs != mine:
            raise ValueError(f"{out_dir} holds results of another configuration "
                             f"(preset {theirs.get('name')!r}); use another --out folder")
    else:
        atomic_write_text(json.dumps({"preset": mine}, indent=2), path)


def variant_preset(preset: Preset, stain: str) -> Preset:
    """The preset with its cells' stain mode set (the bag data of one stain variant)."""
    return preset.replace(cells=dataclasses.replace(preset.cells, stain=stain))


def _mil_free_row(ranked: dict) -> dict:
    """Metrics of a MIL-free scorer (:func:`slamags_core.diagnostics.rank_within_bags`): no
    decision rule, so no bag F1."""
    return {"bag_f1": math.nan, "bag_auc": ranked["bag_auc"],
            "topk_precision": ranked["topk_precision"], "topk_recall": ranked["topk_recall"],
            "instance_auroc": ranked["witness_auroc"]}


def _diagnose(preset: Preset, bagset, H, seed: int) -> tuple[dict, dict]:
    """The frozen encoder's MIL-free diagnostics on the test bags and the one-class ranking."""
    cfg = preset.diagnostics
    ranked = rank_within_bags(bagset, oneclass_scores(bagset, H, k=cfg.k,
                                                      max_reference=cfg.max_reference, seed=seed),
                              top_fraction=cfg.top_fraction, topk_fraction=preset.mil.topk_fraction)
    probe = instance_probe(bagset, H, max_train_cells=cfg.max_train_cells, seed=seed)
    return {"probe_auroc": float(probe["auroc"]), "oneclass_auroc": float(ranked["witness_auroc"]),
            "oneclass_bag_auc": float(ranked["bag_auc"])}, ranked


def _resolve_grid(preset: Preset, methods, mil_models, witness_rates, seeds, embeddings,
                  stains) -> tuple:
    """The grid with the preset's defaults filled in, validated by :func:`_check_grid`."""
    return _check_grid(preset, methods or preset.methods, mil_models or preset.mil_models,
                       witness_rates or preset.witness_rates,
                       seeds if seeds is not None else preset.seeds,
                       embeddings or (preset.pretrain.embedding,), stains or (preset.cells.stain,))


def scorers(method: str, embedding: str, mil_models: Sequence[str]) -> list[str]:
    """The rows one (method, embedding) grid cell writes: every MIL model, the one-class kNN
    ranking and, for ``deep_svdd`` on ``h``, its own distance ranking."""
    extra = [SVDD_SCORER] if method == deep_svdd.METHOD and embedding == "h" else []
    return [*mil_models, ONECLASS_SCORER, *extra]


def check_sweep(preset: Preset, out_dir: str | Path, *, methods=None, mil_models=None,
                witness_rates=None, seeds=None, embeddings=None, stains=None) -> dict:
    """Validate a grid and the output folder as :func:`run_sweep` does, before any work.

    Returns:
        The grid with the preset's defaults filled in: ``{"methods", "mil_models",
        "witness_rates", "seeds", "embeddings", "stains"}``.

    Raises:
        ValueError: as :func:`run_sweep` (a bad grid, or ``out_dir`` holding results of
            another configuration).
    """
    grid = _resolve_grid(preset, methods, mil_models, witness_rates, seeds, embeddings, stains)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    _check_config(Path(out_dir), preset)
    return dict(zip(("methods", "mil_models", "witness_rates", "seeds", "embeddings", "stains"),
                    grid))


def run_sweep(preset: Preset, out_dir: str | Path, *, methods: Sequence[str] | None = None,
              mil_models: Sequence[str] | None = None,
              witness_rates: Sequence[float] | None = None, seeds: Sequence[int] | None = None,
              embeddings: Sequence[str] | None = None, stains: Sequence[str] | None = None,
              device: str | None = None, progress: bool = True, report: bool = True,
              shard: tuple[int, int] | None = None, render_only: bool = False) -> list[dict]:
    """Run (or resume) the witness-rate sweep and write results, predictions, report and logs.

    Args:
        preset: stage configs (``smoke``, ``laptop`` or ``paper``).
        out_dir: output folder: ``results.csv``, ``predictions/``, ``results.md``,
            ``plots.html``/``.png``, ``differences.html``/``.png``, ``claims.json``,
            ``config.json``, ``sweep.log`` and ``checkpoints/``.
        methods, mil_models, witness_rates, seeds: the grid (default: the preset's).
        embeddings: downstream features, ``"h"`` and/or ``"z"`` (default: the preset's
            ``pretrain.embedding``); every one comes from the same pretraining run.
        stains: stain modes of the bag data, ``"per_cell"`` and/or ``"per_bag"`` (default: the
            preset's ``cells.stain``); every one is its own data set and pretraining.
        device: ``"auto"``, ``"cuda"``, ``"mps"`` or ``"cpu"`` (default: the preset's).
        progress: show a bar over the grid and per-stage bars.
        report: write the report (tables, intervals, verdicts, plots) at the end.
        shard: ``(K, N)``: only grid cells K, K + N, K + 2N, ... (cells are (stain, witness
            rate, seed, method) in this order); rows go to ``results.shard-K-of-N.csv`` and no
            report is written (:func:`merge_results` does).
        render_only: only render (or load) the grid's bag sets into the cache and return, so
            that several processes can then share them (``benchmarks/parallel_sweep.sh``).

    Returns:
        All rows of this run's results file (earlier ones included).

    Raises:
        ValueError: a bad grid (unknown method, MIL model, embedding or stain, a witness rate
            outside (0, 1] or too small to give one witness at the preset's bag size, a seed
            that is not an integer >= 0) or shard, checked before any work starts; or
            ``out_dir`` holding results of another configuration.
    """
    methods, mil_models, witness_rates, seeds, embeddings, stains = _resolve_grid(
        preset, methods, mil_models, witness_rates, seeds, embeddings, stains)
    if shard is not None:
        shard = parse_shard(f"{shard[0]}/{shard[1]}")
    ctx = D.current()
    dev = D.device_for(ctx, get_device(device or preset.pretrain.device))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with D.main_first(ctx):
        _check_config(out_dir, preset)
    stem = shard_name(shard)
    csv_path, log_path = out_dir / f"{stem}.csv", out_dir / "sweep.log"
    grid_spec = {"methods": methods, "mil_models": mil_models, "witness_rates": witness_rates,
                 "seeds": seeds, "embeddings": embeddings, "stains": stains}
    if shard is not None and ctx.is_main:
        atomic_write_text(json.dumps({"shard": list(shard), "grid": grid_spec}, indent=1),
                          out_dir / f"{stem}.json")
    rows = read_results(csv_path)
    done = {_key(r) for r in rows}
    if shard is not None:  # cells a whole-grid run (or an earlier merge) finished are done too
        done |= {_key(r) for r in read_results(out_dir / "results.csv")}

    def log(msg: str) -> None:
        if ctx.is_main:
            with open(log_path, "a") as f:
                f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}\n")

    def bags_of(stain: str, wr: float, seed: int):
        """The (stain, witness rate, seed) bag set: rank 0 renders it, the others open it."""
        tb = time.perf_counter()
        with D.main_first(ctx):
            bs = get_bags(variant_preset(preset, stain), wr, seed)
        log(f"bags stain={stain} witness_rate={wr:g} seed={seed}: {bs.n_bags} bags, "
            f"{len(bs.images)} cells, rendered or loaded in {time.perf_counter() - tb:.1f} s")
        return bs

    log(f"start preset={preset.name} device={dev} processes={ctx.world_size} methods={methods} "
        f"mil={mil_models} witness_rates={witness_rates} seeds={seeds} embeddings={embeddings} "
        f"stains={stains} shard={shard} ({len(done)} rows already done)")
    grid = [(st, wr, s, m) for st in stains for wr in witness_rates for s in seeds for m in methods]
    if shard is not None:
        grid = grid[shard[0]::shard[1]]
    if render_only:
        for stain, wr, seed in dict.fromkeys((st, wr, s) for st, wr, s, _ in grid):
            bags_of(stain, wr, seed)
        return rows
    bar = tqdm(total=sum(len(scorers(m, e, mil_models)) for (_, _, _, m) in grid
                         for e in embeddings),
               desc="sweep", disable=not progress or not ctx.is_main)
    loaded: tuple = (None, None)  # ((stain, witness_rate, seed), BagSet) of the current cell
    for stain, wr, seed, method in grid:
        todo = {e: [sc for sc in scorers(method, e, mil_models)
                    if (method, sc, wr, seed, e, stain) not in done] for e in embeddings}
        bar.update(sum(len(scorers(method, e, mil_models)) - len(t) for e, t in todo.items()))
        if not any(todo.values()):
            continue
        bar.set_postfix_str(f"{stain} WR={wr:g} seed={seed} {method}")
        vp = variant_preset(preset, stain)
        if loaded[0] != (stain, wr, seed):  # consecutive methods share one bag set: load once
            loaded = ((stain, wr, seed), bags_of(stain, wr, seed))
        bagset = loaded[1]
        t0 = time.perf_counter()
        result = get_pretrained(vp, bagset, method, seed, device=dev,
                                root=out_dir / "checkpoints", progress=progress)
        pretrain_s = time.perf_counter() - t0
        if not ctx.is_main:  # embedding, diagnostics and MIL are cheap: rank 0 alone
            continue
        run = collapse_columns(result.summaries)  # the last checkpoint summary
        n_test = len(bagset.split_bags("test"))
        for embedding, todo_e in todo.items():
            if not todo_e:
                continue
            t1 = time.perf_counter()
            H = embed_bagset(vp, bagset, result, seed, device=dev, which=embedding)
            t2 = time.perf_counter()
            diag, ranked = _diagnose(vp, bagset, H, seed)
            diagnostics_s = time.perf_counter() - t2
            key = {"method": method, "witness_rate": wr, "seed": seed, "embedding": embedding,
                   "stain": stain}
            common = {**diag, **run, "n_test_bags": n_test, "pretrain_s": pretrain_s,
                      "embed_s": t2 - t1, "diagnostics_s": diagnostics_s}
            for scorer in todo_e:
                t3 = time.perf_counter()
                if scorer in mil_models:
                    # rankings = the model's abnormality score, not raw attention (fit_evaluate)
                    fit = fit_evaluate(scorer, bagset, H, dataclasses.replace(preset.mil, seed=seed),
                                       device=dev)
                    metrics = fit.metrics
                    prob = np.asarray(fit.prob, dtype=np.float64)
                    write_bag_predictions(
                        out_dir, **key, mil=scorer, bag_ids=fit.bag_ids, labels=np.asarray(fit.y),
                        scores=prob, decisions=(prob > 0.5).astype(int),
                        rankings=fit.abnormality, instance_labels=fit.instance_labels,
                        topk_fraction=preset.mil.topk_fraction)
                else:
                    if scorer == SVDD_SCORER:  # Deep SVDD's distance to its centre ranks cells
                        cells = deep_svdd.svdd_scores(H, result.head.c.cpu())
                        scored = rank_within_bags(bagset, cells,
                                                  top_fraction=preset.diagnostics.top_fraction,
                                                  topk_fraction=preset.mil.topk_fraction)
                    else:
                        scored = ranked
                    metrics = _mil_free_row(scored)
                    write_bag_predictions(
                        out_dir, **key, mil=scorer, bag_ids=scored["bag_ids"],
                        labels=scored["labels"], scores=scored["bag_scores"],
                        rankings=scored["rankings"], instance_labels=scored["instance_labels"],
                        topk_fraction=preset.mil.topk_fraction)
                row = {**key, "mil": scorer, **{k: float(metrics[k]) for k in METRICS},
                       **common, "mil_s": time.perf_counter() - t3}
                rows.append(row)
                done.add(_key(row))
                write_results(rows, csv_path)
                log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                             for k, v in row.items()))
                bar.update(1)
    bar.close()
    D.barrier(ctx)
    if report and shard is None and ctx.is_main:
        write_report(rows, out_dir, preset_name=preset.name,
                     headline=(preset.pretrain.embedding, preset.cells.stain))
    log(f"done: {len(rows)} rows")
    return rows


def _result_files(src: Path) -> list[Path]:
    return sorted(src.glob("results.shard-*-of-*.csv")) + \
        ([src / "results.csv"] if (src / "results.csv").exists() else [])


def merge_results(sources: Sequence[str | Path], out_dir: str | Path, *,
                  allow_partial: bool = False) -> list[dict]:
    """Combine the results of sharded (or separate) sweeps into ``out_dir/results.csv`` + report.

    Args:
        sources: sweep folders; each holds ``config.json`` and ``results.shard-K-of-N.csv``
            files (several shards may share a folder) and/or a ``results.csv``.
        out_dir: where ``results.csv``, ``results.md``, the plots and ``config.json`` go (may be
            one of the sources).
        allow_partial: merge even when shards of the grid are missing.

    Raises:
        ValueError: folders of different configurations (presets), shards of different grids
            or shard counts, missing shards (unless ``allow_partial``), no results at all, or
            one grid cell with different values in two files.
    """
    sources = [Path(s) for s in sources]
    config, config_src = None, None
    grid, n_shards, present = None, None, set()
    rows: dict[tuple, tuple[dict, Path]] = {}
    for src in sources:
        cfg_path = src / "config.json"
        if not cfg_path.exists():
            raise ValueError(f"{src} holds no sweep (no config.json)")
        theirs = json.loads(cfg_path.read_text())["preset"]
        if config is None:
            config, config_src = theirs, src
        elif theirs != config:
            diff = sorted(k for k in set(config) | set(theirs) if config.get(k) != theirs.get(k))
            raise ValueError(f"{src} and {config_src} hold results of different configurations "
                             f"(differ in {diff}); merge only shards of one sweep")
        for path in _result_files(src):
            meta_path = path.with_suffix(".json")
            if path.name != "results.csv" and meta_path.exists():
                meta = json.loads(meta_path.read_text())
                if grid is None:
                    grid, n_shards = meta["grid"], meta["shard"][1]
                elif meta["grid"] != grid or meta["shard"][1] != n_shards:
                    raise ValueError(f"{path} belongs to another grid or shard count "
                                     f"({meta['shard'][1]} shards of {meta['grid']}) than the "
                                     f"others ({n_shards} shards of {grid})")
                present.add(meta["shard"][0])
            for r in read_results(path):
                k = _key(r)
                if k in rows and any(_differs(rows[k][0][m], r[m]) for m in METRICS):
                    raise ValueError(f"grid cell {k} has different results in {rows[k][1]} "
                                     f"and {path}")
                rows.setdefault(k, (r, path))
    if not rows:
        raise ValueError(f"no results found in {[str(s) for s in sources]}")
    missing = sorted(set(range(n_shards)) - present) if n_shards else []
    if missing and not allow_partial:
        raise ValueError(f"shards {missing} of {n_shards} are missing; run them or pass "
                         f"allow_partial=True (--partial)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if (out_dir / "config.json").exists():
        if json.loads((out_dir / "config.json").read_text())["preset"] != config:
            raise ValueError(f"{out_dir} holds results of another configuration; merge into "
                             f"another folder")
    else:
        atomic_write_text(json.dumps({"preset": config}, indent=2), out_dir / "config.json")
    _merge_predictions(sources, out_dir)
    merged = [r for r, _ in rows.values()]
    write_results(merged, out_dir / "results.csv")
    headline = ((config["pretrain"]["embedding"], config["cells"]["stain"])
                if "pretrain" in config and "stain" in config.get("cells", {}) else None)
    write_report(merged, out_dir, preset_name=config.get("name", ""), headline=headline)
    return merged


def _merge_predictions(sources: Sequence[Path], out_dir: Path) -> None:
    """Copy the per-bag prediction files of other folders into ``out_dir`` (one file per cell)."""
    dest = out_dir / PREDICTIONS_DIR
    for src in sources:
        folder = src / PREDICTIONS_DIR
        if not folder.is_dir() or folder.resolve() == dest.resolve():
            continue
        for f in sorted(folder.glob("*.csv")):
            target = dest / f.name
            if target.exists() and target.read_bytes() != f.read_bytes():
                raise ValueError(f"{f} and {target} hold different predictions of one grid cell")
            if not target.exists():
                atomic_write_text(f.read_text(), target)


def _differs(a: float, b: float) -> bool:
    return not (a == b or (np.isnan(a) and np.isnan(b)))
