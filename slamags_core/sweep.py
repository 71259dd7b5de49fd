"""The paper's experiment: every pretraining method x every witness rate x seeds.

For each witness rate and seed the sweep simulates train / validation / test bags, pretrains
every method on the training bags' pools, embeds every cell with the frozen encoder, trains each
MIL aggregator (model selection on the validation bags) and evaluates it on the held-out test
bags (:func:`slamags_core.mil.fit_evaluate`). The retrieval columns (``topk_*``,
``instance_auroc``) rank cells by the model's *abnormality* score, not by raw attention.
One row per ``(method, mil, witness_rate, seed)`` goes to ``DIR/results.csv``.

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
import time
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from slamags_core import distributed as D
from slamags_core.bags import n_witnesses
from slamags_core.config import METHODS, MIL_MODELS, Preset
from slamags_core.mil import fit_evaluate
from slamags_core.pipeline import embed_bagset, get_bags, get_pretrained
from slamags_core.predictions import PREDICTIONS_DIR
from slamags_core.report import write_report
from slamags_core.utils import atomic_write_text, get_device, to_jsonable
from slamags_core.validation import check_float, check_int

METRICS: tuple[str, ...] = ("bag_f1", "bag_auc", "topk_precision", "topk_recall", "instance_auroc")
COLUMNS: tuple[str, ...] = ("method", "mil", "witness_rate", "seed", *METRICS,
                            "pretrain_s", "embed_s", "mil_s")
KEY: tuple[str, ...] = ("method", "mil", "witness_rate", "seed")


def _key(row: dict) -> tuple:
    return (row["method"], row["mil"], float(row["witness_rate"]), int(row["seed"]))


def read_results(path: str | Path) -> list[dict]:
    """Rows of a ``results.csv`` (numbers parsed); an empty list when the file does not exist."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            rows.append({k: (v if k in ("method", "mil") else
                             int(v) if k == "seed" else float(v)) for k, v in r.items()})
    return rows


def write_results(rows: Sequence[dict], path: str | Path) -> None:
    """Write all rows atomically (temporary file + rename): never half a row on disk."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in sorted(rows, key=lambda r: (-r["witness_rate"], r["seed"], METHODS.index(r["method"])
                                         if r["method"] in METHODS else 99, r["mil"])):
        w.writerow({k: (f"{r[k]:.6g}" if isinstance(r[k], float) else r[k]) for k in COLUMNS})
    atomic_write_text(buf.getvalue(), path)


def _check_grid(preset: Preset, methods, mil_models, witness_rates, seeds
                ) -> tuple[list[str], list[str], list[float], list[int]]:
    """The whole grid validated before any work starts, with plain float rates and int seeds.

    Every witness rate must give at least one witness in a bag of the preset's size; otherwise
    the error names the rate, the bag size and the smallest bag size that would work.
    """
    if not (methods and mil_models and witness_rates and seeds):
        raise ValueError("methods, MIL models, witness rates and seeds must all be non-empty")
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"unknown method {m!r}; allowed: {METHODS}")
    for m in mil_models:
        if m not in MIL_MODELS:
            raise ValueError(f"unknown MIL model {m!r}; allowed: {MIL_MODELS}")
    rates = [check_float(wr, f"witness_rates[{i}]", gt=0, le=1)
             for i, wr in enumerate(witness_rates)]
    seeds = [check_int(s, f"seeds[{i}]", ge=0) for i, s in enumerate(seeds)]
    for wr in rates:
        try:
            n_witnesses(preset.bags.bag_size, wr)
        except ValueError as err:
            raise ValueError(f"sweep grid of preset {preset.name!r}: {err}") from err
    return list(methods), list(mil_models), rates, seeds


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


def run_sweep(preset: Preset, out_dir: str | Path, *, methods: Sequence[str] | None = None,
              mil_models: Sequence[str] | None = None,
              witness_rates: Sequence[float] | None = None, seeds: Sequence[int] | None = None,
              device: str | None = None, progress: bool = True,
              shard: tuple[int, int] | None = None) -> list[dict]:
    """Run (or resume) the witness-rate sweep and write results, table, plots and logs.

    Args:
        preset: stage configs (``smoke``, ``laptop`` or ``paper``).
        out_dir: output folder: ``results.csv``, ``results.md``, ``plots.html``/``.png``,
            ``config.json``, ``sweep.log`` and ``checkpoints/``.
        methods, mil_models, witness_rates, seeds: the grid (default: the preset's).
        device: ``"auto"``, ``"cuda"``, ``"mps"`` or ``"cpu"`` (default: the preset's).
        progress: show a bar over the grid and per-stage bars.
        shard: ``(K, N)``: only grid cells K, K + N, K + 2N, ... (cells are (witness rate,
            seed, method) in this order); rows go to ``results.shard-K-of-N.csv`` and no report
            is written (:func:`merge_results` does).

    Returns:
        All rows of this run's results file (earlier ones included).

    Raises:
        ValueError: a bad grid (unknown method or MIL model, a witness rate outside (0, 1] or
            too small to give one witness at the preset's bag size, a seed that is not an
            integer >= 0) or shard, checked before any work starts; or ``out_dir`` holding
            results of another configuration.
    """
    methods, mil_models, witness_rates, seeds = _check_grid(
        preset, methods or preset.methods, mil_models or preset.mil_models,
        witness_rates or preset.witness_rates, seeds if seeds is not None else preset.seeds)
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
                 "seeds": seeds}
    if shard is not None and ctx.is_main:
        atomic_write_text(json.dumps({"shard": list(shard), "grid": grid_spec}, indent=1),
                          out_dir / f"{stem}.json")
    rows = read_results(csv_path)
    done = {_key(r) for r in rows}

    def log(msg: str) -> None:
        if ctx.is_main:
            with open(log_path, "a") as f:
                f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}\n")

    log(f"start preset={preset.name} device={dev} processes={ctx.world_size} methods={methods} "
        f"mil={mil_models} witness_rates={witness_rates} seeds={seeds} shard={shard} "
        f"({len(done)} rows already done)")
    grid = [(wr, s, m) for wr in witness_rates for s in seeds for m in methods]
    if shard is not None:
        grid = grid[shard[0]::shard[1]]
    bar = tqdm(total=len(grid) * len(mil_models), desc="sweep",
               disable=not progress or not ctx.is_main)
    loaded: tuple = (None, None)  # ((witness_rate, seed), BagSet) of the current grid cell
    for wr, seed, method in grid:
        todo = [m for m in mil_models if (method, m, wr, seed) not in done]
        bar.update(len(mil_models) - len(todo))
        if not todo:
            continue
        bar.set_postfix_str(f"WR={wr:g} seed={seed} {method}")
        if loaded[0] != (wr, seed):  # consecutive methods share one bag set: load it once
            with D.main_first(ctx):  # rank 0 renders it, the others open the finished set
                loaded = ((wr, seed), get_bags(preset, wr, seed))
        bagset = loaded[1]
        t0 = time.perf_counter()
        result = get_pretrained(preset, bagset, method, seed, device=dev,
                                root=out_dir / "checkpoints", progress=progress)
        t1 = time.perf_counter()
        if not ctx.is_main:  # embedding and MIL are cheap: rank 0 alone
            continue
        H = embed_bagset(preset, bagset, result, seed, device=dev)
        t2 = time.perf_counter()
        for mil in todo:
            t3 = time.perf_counter()
            scores = fit_evaluate(mil, bagset, H, dataclasses.replace(preset.mil, seed=seed),
                                  device=dev).metrics  # Top-K / AUROC: the abnormality ranking
            row = {"method": method, "mil": mil, "witness_rate": wr, "seed": seed,
                   **{k: float(v) for k, v in scores.items() if k in METRICS},
                   "pretrain_s": t1 - t0, "embed_s": t2 - t1, "mil_s": time.perf_counter() - t3}
            rows.append(row)
            done.add(_key(row))
            write_results(rows, csv_path)
            log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                         for k, v in row.items()))
            bar.update(1)
    bar.close()
    D.barrier(ctx)
    if shard is None and ctx.is_main:
        write_report(rows, out_dir, preset_name=preset.name)
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
    write_report(merged, out_dir, preset_name=config.get("name", ""))
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
