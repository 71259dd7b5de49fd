"""Bag classification metrics and witness retrieval metrics of a per-cell ranking.

Bag level (abnormal = positive class, scikit-learn): F1 of the thresholded
``P(abnormal)`` and the ROC AUC of ``P(abnormal)``.

Instance level, over POSITIVE bags only (a negative bag has no witness to find). A *ranking*
is one score per cell, higher = retrieved first: an MIL model's attention or its abnormality
score (:mod:`slamags_core.aggregators`). For a positive bag with ``N`` cells, ``W >= 1``
witnesses and ``K`` retrieved cells (the ``K`` highest scores):

- ``precision@K = (witnesses among the top K) / K``;
- ``recall@K    = (witnesses among the top K) / W``;
- ``instance AUROC`` = ROC AUC of the scores against the instance labels *within the bag*.

Each is averaged over positive bags (macro average: every slide counts once, as in the
paper's per-bag "Top 400" count; 400 of 1000 cells is ``topk_fraction = 0.4``). The instance
AUROC is the per-bag mean rather than pooled over bags because attention is normalised per
bag (``sum_n a_n = 1``): its absolute value depends on the bag's size and on how many
witnesses share the mass, so comparing scores across bags mixes bag composition into
what should measure the ranking *inside* a slide — which is what retrieval uses.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import f1_score, roc_auc_score

from slamags_core.validation import check_float, check_int


def _binary(values, what: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{what} must be a non-empty 1-D array, got shape {arr.shape}")
    if not np.isin(arr, (0, 1)).all():
        bad = np.unique(arr[~np.isin(arr, (0, 1))])[:5]
        raise ValueError(f"{what} must be 0 or 1; found {bad.tolist()}")
    return arr.astype(np.int64)


def bag_metrics(y_true, prob, threshold: float = 0.5) -> dict:
    """Bag-level F1 and ROC AUC with abnormal (label 1) as the positive class.

    A bag is predicted abnormal when ``prob > threshold`` (with the default 0.5 this is the
    argmax of the two class probabilities used by the paper; a tie goes to "negative").

    Args:
        y_true: bag labels in {0, 1}, shape ``(n,)``.
        prob: ``P(abnormal)`` in [0, 1], shape ``(n,)``.
        threshold: decision threshold in (0, 1).

    Returns:
        ``{"bag_f1": sklearn f1_score (0 when nothing is predicted or present abnormal),
        "bag_auc": sklearn roc_auc_score, NaN if only one class is present}``.

    Raises:
        ValueError: labels outside {0, 1}, probabilities outside [0, 1] or non-finite,
            mismatched lengths, empty input, threshold outside (0, 1).
    """
    y = _binary(y_true, "y_true")
    p = np.asarray(prob, dtype=np.float64)
    if p.shape != y.shape:
        raise ValueError(f"prob has shape {p.shape} but y_true has shape {y.shape}")
    if not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise ValueError("prob must be finite probabilities in [0, 1]")
    threshold = check_float(threshold, "threshold", gt=0, lt=1)
    f1 = float(f1_score(y, (p > threshold).astype(np.int64), pos_label=1, zero_division=0))
    auc = float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else math.nan
    return {"bag_f1": f1, "bag_auc": auc}


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC of 0/1 ``labels`` by ``scores`` via the Mann-Whitney U statistic (ties count 1/2).

    The same number as ``sklearn.metrics.roc_auc_score`` without its per-call overhead (it runs
    once per positive bag and ranking). Inputs are assumed checked; both classes present.
    """
    r = rankdata(scores)  # average ranks for ties
    n1 = int(labels.sum())
    n0 = labels.size - n1
    return float((r[labels == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _check_bag(scores, instance_labels, i: int | str = "") -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(scores, dtype=np.float64)
    lab = _binary(instance_labels, f"instance_labels of bag {i}")
    if a.shape != lab.shape:
        raise ValueError(f"bag {i}: scores have shape {a.shape} but instance_labels {lab.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"bag {i}: scores contain NaN or infinite values")
    return a, lab


def topk_hits(scores: np.ndarray, instance_labels: np.ndarray, k: int) -> int:
    """Number of witnesses among the ``k`` cells with the highest scores (e.g. attention).

    Ties are broken by the lower cell index (a stable sort), so the count is deterministic;
    :func:`retrieval_metrics` uses the tie-aware expected count instead.

    Raises:
        ValueError: empty bag, mismatched shapes, labels outside {0, 1}, ``k`` outside
            ``[1, N]``.
    """
    a, lab = _check_bag(scores, instance_labels)
    k = check_int(k, f"k (bag of {a.size} cells)", ge=1, le=a.size)
    order = np.argsort(-a, kind="stable")
    return int(lab[order[:k]].sum())


def _expected_hits(a: np.ndarray, lab: np.ndarray, k: int) -> float:
    """Witnesses in the top ``k``, averaged over random orders of tied scores."""
    kth = np.sort(a)[::-1][k - 1]
    above, tied = a > kth, a == kth
    hits_above = lab[above].sum()
    slots = k - above.sum()
    return float(hits_above + slots * lab[tied].sum() / tied.sum())


def retrieval_metrics(
    scores: Sequence[np.ndarray],
    instance_labels: Sequence[np.ndarray],
    bag_labels,
    *,
    topk_fraction: float = 0.4,
    k: int | None = None,
) -> dict:
    """Witness retrieval by a per-cell ranking over the positive bags (module docstring).

    ``K`` is ``k`` when given, else ``max(1, round(topk_fraction * N))`` per bag. Cells whose
    score ties at the K-th value are counted by their expectation under a random order,
    so uniform attention (mean pooling) scores exactly chance: precision@K = witness rate.

    Args:
        scores: one ``(N_i,)`` ranking array per bag (attention or abnormality; finite).
        instance_labels: one ``(N_i,)`` array per bag, 1 = witness.
        bag_labels: ``(n_bags,)`` in {0, 1}; only bags with label 1 are scored.
        topk_fraction: K as a fraction of the bag size, in (0, 1].
        k: a fixed K for every bag (overrides ``topk_fraction``).

    Returns:
        ``{"topk_precision", "topk_recall", "instance_auroc"}``: means over positive bags
        of precision@K, recall@K and the within-bag ROC AUC (bags made only of witnesses have
        no AUROC and are skipped; NaN if none is left).

    Raises:
        ValueError: mismatched lengths or shapes, labels outside {0, 1}, empty bags, no
            positive bag, a positive bag without witnesses, K larger than a bag or < 1.
    """
    y = _binary(bag_labels, "bag_labels")
    if not len(scores) == len(instance_labels) == len(y):
        raise ValueError(f"got {len(scores)} score arrays, {len(instance_labels)} instance label "
                         f"arrays and {len(y)} bag labels; they must match")
    if k is None:
        topk_fraction = check_float(topk_fraction, "topk_fraction", gt=0, le=1)
    else:
        k = check_int(k, "k", ge=1)
    if not (y == 1).any():
        raise ValueError("retrieval needs at least one positive bag (bag_labels == 1)")
    precision, recall, aurocs = [], [], []
    for i in np.flatnonzero(y == 1):
        a, lab = _check_bag(scores[i], instance_labels[i], int(i))
        kk = k if k is not None else max(1, int(round(topk_fraction * a.size)))
        if not 1 <= kk <= a.size:
            raise ValueError(f"K must be in [1, {a.size}] (the size of bag {i}), got {kk}")
        n_wit = int(lab.sum())
        if n_wit == 0:
            raise ValueError(f"positive bag {i} has no witness (all instance labels are 0)")
        hits = _expected_hits(a, lab, kk)
        precision.append(hits / kk)
        recall.append(hits / n_wit)
        if n_wit < a.size:
            aurocs.append(auroc(lab, a))
    return {
        "topk_precision": float(np.mean(precision)),
        "topk_recall": float(np.mean(recall)),
        "instance_auroc": float(np.mean(aurocs)) if aurocs else math.nan,
    }
