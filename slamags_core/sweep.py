"""The paper's experiment: every pretraining method x every witness rate x seeds.

For each witness rate and seed the sweep simulates train / validation / test bags, pretrains
every method on the training bags' pools, embeds every cell with the frozen encoder, trains each
MIL aggregator (model selection on the validation bags) and evaluates it on the held-out test
bags (:func:`slamags_core.mil.fit_evaluate`). The retrieval columns (``topk_*``,
``instance_auroc``) rank cells by the model's *abnormality* score, not by raw attention.
One row per ``(method, mil, witness_rate, seed)`` goes to ``DIR/results.csv``.

The sweep is resumable: rows are written atomically (the whole CSV is rewritten to a temporary
file and renamed), a restarted sweep skips finished grid cells, and an interrupted pretraining
resumes from its last epoch checkpoint under ``DIR/checkpoints``.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import time
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from slamags_core.bags import n_witnesses
from slamags_core.config import METHODS, MIL_MODELS, Preset
from slamags_core.mil import fit_evaluate
from slamags_core.pipeline import embed_bagset, get_bags, get_pretrained
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
              device: str | None = None, progress: bool = True) -> list[dict]:
    """Run (or resume) the witness-rate sweep and write results, table, plots and logs.

    Args:
        preset: stage configs (``smoke``, ``laptop`` or ``paper``).
        out_dir: output folder: ``results.csv``, ``results.md``, ``plots.html``/``.png``,
            ``config.json``, ``sweep.log`` and ``checkpoints/``.
        methods, mil_models, witness_rates, seeds: the grid (default: the preset's).
        device: ``"auto"``, ``"cuda"``, ``"mps"`` or ``"cpu"`` (default: the preset's).
        progress: show a bar over the grid and per-stage bars.

    Returns:
        All rows of ``results.csv`` (earlier ones included).

    Raises:
        ValueError: a bad grid (unknown method or MIL model, a witness rate outside (0, 1] or
            too small to give one witness at the preset's bag size, a seed that is not an
            integer >= 0), checked before any work starts; or ``out_dir`` holding results of
            another configuration.
    """
    methods, mil_models, witness_rates, seeds = _check_grid(
        preset, methods or preset.methods, mil_models or preset.mil_models,
        witness_rates or preset.witness_rates, seeds if seeds is not None else preset.seeds)
    dev = get_device(device or preset.pretrain.device)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_config(out_dir, preset)
    csv_path, log_path = out_dir / "results.csv", out_dir / "sweep.log"
    rows = read_results(csv_path)
    done = {_key(r) for r in rows}

    def log(msg: str) -> None:
        with open(log_path, "a") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}\n")

    log(f"start preset={preset.name} device={dev} methods={methods} mil={mil_models} "
        f"witness_rates={witness_rates} seeds={seeds} ({len(done)} rows already done)")
    grid = [(wr, s, m) for wr in witness_rates for s in seeds for m in methods]
    bar = tqdm(total=len(grid) * len(mil_models), desc="sweep", disable=not progress)
    loaded: tuple = (None, None)  # ((witness_rate, seed), BagSet) of the current grid cell
    for wr, seed, method in grid:
        todo = [m for m in mil_models if (method, m, wr, seed) not in done]
        bar.update(len(mil_models) - len(todo))
        if not todo:
            continue
        bar.set_postfix_str(f"WR={wr:g} seed={seed} {method}")
        if loaded[0] != (wr, seed):  # consecutive methods share one bag set: load it once
            loaded = ((wr, seed), get_bags(preset, wr, seed))
        bagset = loaded[1]
        t0 = time.perf_counter()
        result = get_pretrained(preset, bagset, method, seed, device=dev,
                                root=out_dir / "checkpoints", progress=progress)
        t1 = time.perf_counter()
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
    write_report(rows, out_dir, preset_name=preset.name)
    log(f"done: {len(rows)} rows")
    return rows
