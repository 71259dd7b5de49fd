"""Per-test-bag predictions on disk: what the statistics of the report resample.

A result row of the sweep (``results.csv``) holds one bag AUC per ``(method, mil, witness_rate,
seed)``; a confidence interval over test bags needs the bags themselves. Every scorer of the
test bags (a MIL aggregator, or a MIL-free diagnostic such as the one-class kNN score) writes
one plain CSV per grid cell::

    DIR/predictions/<method>__<mil>__wr<witness_rate>__seed<seed>__<embedding>__<stain>.csv

with one row per test bag and the columns of :data:`COLUMNS`:

=================  ==============================================================================
``method`` ...     the grid key (:data:`KEY_COLUMNS`), repeated on every row: files concatenate
``bag``            bag id inside the bag set of ``(witness_rate, seed)``; it pairs methods
``label``          bag label, 1 = positive (abnormal)
``score``          bag score, higher = more abnormal (a MIL model: ``P(abnormal)``); bag AUC
``decision``       predicted label 0/1 (bag F1); empty for a scorer without a decision rule
``n_cells``        cells in the bag
``n_witnesses``    witnesses (abnormal cells) in the bag
``topk_precision`` retrieval of the bag's witnesses by its cell ranking (:mod:`metrics`); empty
``topk_recall``    for negative bags and for scorers without a cell ranking
``instance_auroc`` within-bag ROC AUC of the cell ranking (empty if undefined)
=================  ==============================================================================

Bag F1, bag AUC and Top-K recall of a grid cell are recomputed from these rows (bag AUC from
``score`` and ``label``, F1 from ``decision``, Top-K as the mean over positive bags), so the
statistics can resample bags; :mod:`slamags_core.stats` does that.
"""
from __future__ import annotations

import csv
import io
import math
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from slamags_core.metrics import retrieval_metrics
from slamags_core.utils import atomic_write_text
from slamags_core.validation import check_float, check_int

PREDICTIONS_DIR = "predictions"
KEY_COLUMNS: tuple[str, ...] = ("method", "mil", "witness_rate", "seed", "embedding", "stain")
BAG_COLUMNS: tuple[str, ...] = ("bag", "label", "score", "decision", "n_cells", "n_witnesses",
                                "topk_precision", "topk_recall", "instance_auroc")
COLUMNS: tuple[str, ...] = KEY_COLUMNS + BAG_COLUMNS
_TEXT = ("method", "mil", "embedding", "stain")
_INT = ("seed", "bag", "label", "n_cells", "n_witnesses")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def predictions_path(out_dir: str | Path, *, method: str, mil: str, witness_rate: float,
                     seed: int, embedding: str, stain: str) -> Path:
    """``out_dir/predictions/<method>__<mil>__wr<WR>__seed<seed>__<embedding>__<stain>.csv``.

    Raises:
        ValueError: a name that is empty or holds characters other than letters, digits,
            ``_ . -`` (it becomes part of a file name).
    """
    for what, name in (("method", method), ("mil", mil), ("embedding", embedding),
                       ("stain", stain)):
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"{what} must be a plain name (letters, digits, _ . -), got {name!r}")
    wr, seed = check_float(witness_rate, "witness_rate", gt=0, le=1), check_int(seed, "seed", ge=0)
    stem = f"{method}__{mil}__wr{wr:g}__seed{seed}__{embedding}__{stain}"
    return Path(out_dir) / PREDICTIONS_DIR / f"{stem}.csv"




def _as_01(values, what: str, n: int) -> np.ndarray:
    arr = np.asarray(values)
    if arr.shape != (n,):
        raise ValueError(f"{what} has shape {arr.shape}, expected ({n},) like bag_ids")
    if not np.isin(arr, (0, 1)).all():
        raise ValueError(f"{what} must be 0 or 1; found {np.unique(arr[~np.isin(arr, (0, 1))])[:5]}")
    return arr.astype(np.int64)


def bag_prediction_rows(*, method: str, mil: str, witness_rate: float, seed: int, embedding: str,
                        stain: str, bag_ids, labels, scores, decisions=None,
                        rankings: Sequence[np.ndarray] | None = None,
                        instance_labels: Sequence[np.ndarray] | None = None,
                        topk_fraction: float = 0.4) -> list[dict]:
    """The rows of one predictions file (see the module docstring); nothing is written.

    Args:
        method, mil, witness_rate, seed, embedding, stain: the grid key.
        bag_ids: ``(n,)`` ids of the test bags in their bag set.
        labels: ``(n,)`` bag labels in {0, 1}.
        scores: ``(n,)`` finite bag scores, higher = more abnormal.
        decisions: ``(n,)`` predicted labels in {0, 1}, or ``None`` (no decision rule); for
            a MIL model ``prob > 0.5``, the decision of :func:`slamags_core.metrics.bag_metrics`.
        rankings: one ``(n_i,)`` array of cell scores per bag (attention or an abnormality
            score; higher = retrieved first), or ``None``.
        instance_labels: one ``(n_i,)`` 0/1 array per bag (1 = witness); needed for
            ``n_witnesses`` and, with ``rankings``, for the retrieval columns.
        topk_fraction: K as a fraction of the bag (:func:`slamags_core.metrics.retrieval_metrics`).

    Raises:
        ValueError: mismatched lengths, labels or decisions outside {0, 1}, non-finite scores,
            duplicate bag ids, ``rankings`` without ``instance_labels``, a bad grid key.
    """
    witness_rate = check_float(witness_rate, "witness_rate", gt=0, le=1)
    seed = check_int(seed, "seed", ge=0)
    topk_fraction = check_float(topk_fraction, "topk_fraction", gt=0, le=1)
    predictions_path(".", method=method, mil=mil, witness_rate=witness_rate, seed=seed,
                     embedding=embedding, stain=stain)  # validates the names
    ids = np.asarray(bag_ids)
    if ids.ndim != 1 or ids.size == 0:
        raise ValueError(f"bag_ids must be a non-empty 1-D array, got shape {ids.shape}")
    if len(np.unique(ids)) != len(ids):
        raise ValueError("bag_ids contain duplicates")
    n = len(ids)
    y = _as_01(labels, "labels", n)
    s = np.asarray(scores, dtype=np.float64)
    if s.shape != (n,) or not np.isfinite(s).all():
        raise ValueError(f"scores must be {n} finite numbers, got shape {s.shape}"
                         + ("" if s.shape != (n,) else " with NaN or inf"))
    d = _as_01(decisions, "decisions", n) if decisions is not None else None
    if rankings is not None and instance_labels is None:
        raise ValueError("rankings need instance_labels to score retrieval")
    for what, per_bag in (("rankings", rankings), ("instance_labels", instance_labels)):
        if per_bag is not None and len(per_bag) != n:
            raise ValueError(f"{what} has {len(per_bag)} bags but bag_ids has {n}")
    rows = []
    for i in range(n):
        inst = np.asarray(instance_labels[i]) if instance_labels is not None else None
        retrieval = {"topk_precision": math.nan, "topk_recall": math.nan,
                     "instance_auroc": math.nan}
        if rankings is not None and y[i] == 1:
            retrieval = retrieval_metrics([rankings[i]], [inst], [1], topk_fraction=topk_fraction)
        rows.append({"method": method, "mil": mil, "witness_rate": float(witness_rate),
                     "seed": int(seed), "embedding": embedding, "stain": stain,
                     "bag": int(ids[i]), "label": int(y[i]), "score": float(s[i]),
                     "decision": int(d[i]) if d is not None else math.nan,
                     "n_cells": len(inst) if inst is not None else -1,
                     "n_witnesses": int(inst.sum()) if inst is not None else -1,
                     **{k: float(v) for k, v in retrieval.items()}})
    return rows


def _fmt(v) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.10g}"
    return str(v)


def write_bag_predictions(out_dir: str | Path, **kw) -> Path:
    """Write one grid cell's per-test-bag predictions (atomically) and return the file.

    Takes the keyword arguments of :func:`bag_prediction_rows`; the file goes to
    :func:`predictions_path` under ``out_dir`` and replaces an earlier one of the same key.
    ``n_cells`` / ``n_witnesses`` are ``-1`` when no cell information was given.
    """
    rows = bag_prediction_rows(**kw)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _fmt(r[k]) for k in COLUMNS})
    key = {k: kw[k] for k in KEY_COLUMNS}
    return atomic_write_text(buf.getvalue(), predictions_path(out_dir, **key))


def _parse(row: dict, where: str) -> dict:
    out = {}
    for k in COLUMNS:
        v = row[k]
        try:
            out[k] = v if k in _TEXT else int(v) if k in _INT else (float(v) if v != "" else math.nan)
        except ValueError:
            raise ValueError(f"{where}: column {k!r} holds {v!r}, not a number") from None
    return out


def read_bag_predictions(path: str | Path) -> list[dict]:
    """Rows of one predictions CSV, or of every ``*.csv`` in a folder (sorted by name).

    ``path`` may be the sweep's output folder (its ``predictions/`` is read), the
    ``predictions/`` folder, or one file. Empty cells read as NaN.

    Raises:
        FileNotFoundError: nothing at ``path``.
        ValueError: a file whose header is not :data:`COLUMNS` or that holds a non-number.
    """
    path = Path(path)
    if path.is_dir() and (path / PREDICTIONS_DIR).is_dir():
        path = path / PREDICTIONS_DIR
    if path.is_dir():
        files = sorted(path.glob("*.csv"))
    elif path.is_file():
        files = [path]
    else:
        raise FileNotFoundError(f"no predictions at {path}")
    rows = []
    for f in files:
        with open(f, newline="") as fh:
            reader = csv.DictReader(fh)
            if tuple(reader.fieldnames or ()) != COLUMNS:
                raise ValueError(f"{f} is not a per-bag predictions file: columns "
                                 f"{reader.fieldnames}, expected {list(COLUMNS)}")
            rows += [_parse(r, f"{f} line {i + 2}") for i, r in enumerate(reader)]
    return rows
