"""MIL-free diagnostics of a frozen encoder, measured on the test bags.

A MIL number mixes two things: how well the encoder separates witnesses from negatives, and
how well an aggregator learns to find them from bag labels alone. These diagnostics measure
the first without any MIL training, on the embeddings ``H  # (N, D)`` of every cell:

* **instance-label linear probe** (a *ceiling*: it uses the instance labels of the training
  bags' cells, which no method has): logistic regression on training cells, ROC AUC on the
  test cells (:func:`slamags_core.embed.linear_probe`).
* **one-class witness score** (uses only what a method may use, the slide labels): a cell's
  score is its mean cosine distance to its ``k = 5`` nearest cells of slide-NEGATIVE training
  bags -- a kNN novelty score (cf. Bergman, Cohen & Hoshen, "Deep nearest neighbor anomaly
  detection", 2020). It is ranked *within* each positive test bag (mean of the within-bag ROC
  AUCs, as retrieval works inside a slide) and pooled per bag -- mean of the top 1% of the
  bag's scores minus the bag median -- into a bag score (bag AUC without MIL).

Any per-cell score (e.g. a Deep SVDD distance, :mod:`slamags_core.deep_svdd`) goes through
the same :func:`rank_within_bags`; its output feeds
:func:`slamags_core.predictions.write_bag_predictions` as a MIL-free scorer.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from slamags_core.embed import linear_probe
from slamags_core.metrics import retrieval_metrics
from slamags_core.validation import check_float, check_int

ONECLASS_SCORER = "oneclass_knn"  # its name in the per-bag predictions (the ``mil`` column)


def _check(bagset, H) -> np.ndarray:
    E = H.detach().cpu().numpy() if isinstance(H, torch.Tensor) else np.asarray(H)
    if E.ndim != 2 or len(E) != len(bagset.bag_index):
        raise ValueError(f"embeddings have shape {E.shape}; expected ({len(bagset.bag_index)}, D), "
                         f"one row per cell of the bag set")
    if not np.isfinite(E).all():
        raise ValueError("embeddings contain NaN or infinite values")
    return E


def _split_cells(bagset, split: str) -> np.ndarray:
    return np.flatnonzero(np.isin(bagset.bag_index, bagset.split_bags(split)))


def instance_probe(bagset, H, *, max_train_cells: int = 20000, C: float = 1.0,
                   seed: int = 0) -> dict[str, float]:
    """Instance-label linear probe: training-bag cells -> test-bag cells (a ceiling).

    Args:
        bagset: the bag set (:class:`slamags_core.bags.BagSet`).
        H: ``(N, D)`` embeddings of its cells.
        max_train_cells: cap on training cells; every witness is kept, negatives are drawn
            (seeded) to fill the rest.
        C: inverse L2 strength of the logistic regression.
        seed: seeds the subsample.

    Returns:
        :func:`slamags_core.embed.linear_probe`'s dict (``auroc``, ``balanced_accuracy``, ...).

    Raises:
        ValueError: mismatched embeddings, or a split without witnesses or without negatives.
    """
    E = _check(bagset, H)
    max_train_cells = check_int(max_train_cells, "max_train_cells", ge=2)
    train, test = _split_cells(bagset, "train"), _split_cells(bagset, "test")
    y = np.asarray(bagset.instance_labels).astype(int)
    if len(train) > max_train_cells:
        wit, neg = train[y[train] == 1], train[y[train] == 0]
        keep = np.random.default_rng(seed).choice(neg, size=max(0, max_train_cells - len(wit)),
                                                  replace=False)
        train = np.sort(np.concatenate([wit, keep]))
    return linear_probe(E[train], y[train], E[test], y[test], C=C)


KNN_METRICS: tuple[str, ...] = ("cosine", "euclidean")


@torch.no_grad()
def knn_distance(query, reference, k: int = 5, chunk: int = 4096, metric: str = "cosine"
                 ) -> np.ndarray:
    """Mean distance of each query row to its ``k`` nearest reference rows.

    Args:
        query: ``(m, D)``; reference: ``(r, D)`` with ``r >= k``.
        k: neighbours, >= 1.
        chunk: query rows per matrix product (memory ``chunk x r``).
        metric: ``"cosine"`` (``1 - cos``: the direction only, the issue's diagnostic) or
            ``"euclidean"`` (``||q - r||``: norms count too).

    Returns:
        ``(m,)`` float64 scores (cosine: in [0, 2]); larger = farther from the reference.
    """
    k, chunk = check_int(k, "k", ge=1), check_int(chunk, "chunk", ge=1)
    if metric not in KNN_METRICS:
        raise ValueError(f"unknown metric {metric!r}; allowed: {list(KNN_METRICS)}")
    R = torch.as_tensor(np.asarray(reference), dtype=torch.float32)  # (r, D)
    Q = torch.as_tensor(np.asarray(query), dtype=torch.float32)      # (m, D)
    if len(R) < k:
        raise ValueError(f"need at least k={k} reference rows, got {len(R)}")
    if metric == "cosine":
        R, Q = F.normalize(R, dim=1), F.normalize(Q, dim=1)
        out = [1.0 - (q @ R.T).topk(k, dim=1).values.mean(1) for q in torch.split(Q, chunk)]
    else:
        R = R.double()  # once, not per chunk
        out = [torch.cdist(q.double(), R).topk(k, dim=1, largest=False).values.mean(1)
               for q in torch.split(Q, chunk)]
    return torch.cat(out).double().numpy() if out else np.zeros(0)


def rank_within_bags(bagset, cell_scores, *, split: str = "test", top_fraction: float = 0.01,
                     topk_fraction: float = 0.4) -> dict:
    """Judge a per-cell abnormality score on a split's bags, without MIL.

    Args:
        bagset: the bag set.
        cell_scores: ``(N,)`` score of every cell (higher = more abnormal); only the split's
            cells are read.
        split: which bags (``"test"``).
        top_fraction: the bag score is the mean of the top ``ceil(top_fraction * n)`` cell
            scores minus the bag's median score.
        topk_fraction: K of the retrieval metrics.

    Returns:
        ``{"witness_auroc"`` (mean within-bag ROC AUC over positive bags), ``"topk_recall"``,
        ``"topk_precision"``, ``"bag_auc"`` (of the pooled bag scores), ``"bag_ids"``,
        ``"labels"``, ``"bag_scores"``, ``"rankings"`` and ``"instance_labels"`` (per bag:
        what :func:`slamags_core.predictions.write_bag_predictions` takes)``}``.
    """
    s = np.asarray(cell_scores, dtype=np.float64)
    if s.shape != (len(bagset.bag_index),) or not np.isfinite(s[_split_cells(bagset, split)]).all():
        raise ValueError(f"cell_scores must be ({len(bagset.bag_index)},) and finite on the "
                         f"{split} cells, got shape {s.shape}")
    top_fraction = check_float(top_fraction, "top_fraction", gt=0, le=1)
    ids = bagset.split_bags(split)
    labels = np.asarray(bagset.bag_labels)[ids].astype(int)
    rankings, inst, pooled = [], [], []
    for i in ids:
        cells = bagset.bag_cells(int(i))
        r = s[cells]
        top = np.sort(r)[::-1][:max(1, math.ceil(top_fraction * len(r)))]
        rankings.append(r)
        inst.append(np.asarray(bagset.instance_labels)[cells].astype(int))
        pooled.append(float(top.mean() - np.median(r)))
    retrieval = retrieval_metrics(rankings, inst, labels, topk_fraction=topk_fraction)
    bag_auc = float(roc_auc_score(labels, pooled)) if len(set(labels)) == 2 else math.nan
    return {"witness_auroc": retrieval["instance_auroc"], "topk_recall": retrieval["topk_recall"],
            "topk_precision": retrieval["topk_precision"],
            "bag_auc": bag_auc, "bag_ids": ids, "labels": labels,
            "bag_scores": np.array(pooled), "rankings": rankings, "instance_labels": inst}


def oneclass_scores(bagset, H, *, k: int = 5, max_reference: int = 20000, seed: int = 0,
                    split: str = "test", metric: str = "cosine") -> np.ndarray:
    """One-class kNN score of the split's cells against slide-negative training cells.

    Returns:
        ``(N,)`` scores (NaN outside ``split``): mean distance (``metric``, see
        :func:`knn_distance`; the sweep's column uses cosine) to the ``k`` nearest of at most
        ``max_reference`` (seeded subsample) cells of negative training bags.

    Raises:
        ValueError: mismatched embeddings, or no negative training bag.
    """
    E = _check(bagset, H)
    max_reference = check_int(max_reference, "max_reference", ge=1)
    neg_bags = [b for b in bagset.split_bags("train") if bagset.bag_labels[b] == 0]
    ref = np.flatnonzero(np.isin(bagset.bag_index, neg_bags))
    if len(ref) == 0:
        raise ValueError("the one-class score needs slide-negative training bags; there are none")
    if len(ref) > max_reference:
        ref = np.sort(np.random.default_rng(seed).choice(ref, size=max_reference, replace=False))
    cells = _split_cells(bagset, split)
    out = np.full(len(E), np.nan)
    out[cells] = knn_distance(E[cells], E[ref], k=k, metric=metric)
    return out


def frozen_encoder_diagnostics(bagset, H, *, k: int = 5, max_reference: int = 20000,
                               max_train_cells: int = 20000, seed: int = 0) -> dict:
    """Both diagnostics on the test bags; the numbers the sweep adds to a result row.

    Returns:
        ``{"probe_auroc"`` (instance-label probe, a ceiling), ``"oneclass_auroc"`` (mean
        within-bag ROC AUC of the one-class score over positive test bags),
        ``"oneclass_bag_auc"`` (bag AUC of its pooled bag score), ``"oneclass"`` (the full
        :func:`rank_within_bags` output, for the per-bag predictions)``}``.
    """
    ranked = rank_within_bags(bagset, oneclass_scores(bagset, H, k=k, max_reference=max_reference,
                                                      seed=seed))
    probe = instance_probe(bagset, H, max_train_cells=max_train_cells, seed=seed)
    return {"probe_auroc": probe["auroc"], "oneclass_auroc": ranked["witness_auroc"],
            "oneclass_bag_auc": ranked["bag_auc"], "oneclass": ranked}
