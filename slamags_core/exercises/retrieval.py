"""Graders for notebook 06 (retrieval): recall@K with ties; the within-bag instance AUROC."""
from __future__ import annotations

from typing import Callable

import numpy as np
from sklearn.metrics import roc_auc_score

from slamags_core import metrics
from slamags_core.exercises.grading import Case, Report, grade


def _topk_recall_ref(scores, labels, k):
    return metrics.retrieval_metrics([np.asarray(scores)], [np.asarray(labels)], [1], k=k)["topk_recall"]


def check_topk_recall(fn: Callable, *, strict: bool = False, seed: int = 0) -> Report:
    """Exercise (06): recall@K of one positive bag, ties counted by their expectation.

    ``fn(scores, labels, k) -> float``: the fraction of the bag's witnesses among the K cells
    with the highest scores. Cells tied at the K-th score share the remaining slots equally
    (expected count under a random order), so uniform scores give K / N. Compared with
    ``metrics.retrieval_metrics(..., k=k)["topk_recall"]``.
    """
    rng = np.random.default_rng(seed)

    def naive(s, y, k, asc=False, precision=False):
        order = np.argsort(s if asc else -s, kind="stable")[:k]
        hits = y[order].sum()
        return hits / k if precision else hits / y.sum()

    mistakes = (
        ("that is precision@K (hits / K); recall@K divides by the number of witnesses",
         lambda s, y, k: _topk_recall_ref(s, y, k) * y.sum() / k),
        ("tied scores: cells tied at the K-th value share the remaining slots; count each tied "
         "witness as (slots left) / (number tied)", lambda s, y, k: naive(s, y, k)),
        ("take the K HIGHEST scores (sort in descending order)", lambda s, y, k: naive(s, y, k, asc=True)),
    )
    labels = np.zeros(200, dtype=int)
    labels[rng.choice(200, 10, replace=False)] = 1
    late = np.zeros(100, dtype=int)
    late[-5:] = 1
    one = np.zeros(50, dtype=int)
    one[17] = 1
    cases = [
        Case("200 cells, 10 witnesses, K=80", (rng.normal(size=200) + 2 * labels, labels, 80)),
        Case("a single witness among 50, K=5", (rng.normal(size=50) + one, one, 5)),
        Case("K = N: recall is 1", (rng.normal(size=200), labels, 200)),
        Case("uniform scores (mean pooling): recall = K / N, witnesses at the end",
              (np.full(100, 0.01), late, 40)),
        Case("half the scores tied at the K-th value", (np.r_[np.linspace(1, 2, 50), np.zeros(50)],
                                                         np.r_[np.zeros(45, int), np.ones(10, int),
                                                               np.zeros(45, int)], 60)),
    ]
    for c in cases:
        c.mistakes = mistakes
    return grade("recall@K", fn, _topk_recall_ref, cases, strict=strict, rtol=1e-9, atol=1e-12,
                  covers="one to ten witnesses, K up to N, ties")


def check_instance_auroc(fn: Callable, *, strict: bool = False, seed: int = 0) -> Report:
    """Exercise (06): the within-bag instance AUROC by counting pairs (Mann-Whitney).

    ``fn(scores, labels) -> float``: the fraction of (witness, negative) pairs in which the
    witness scores higher, ties counting one half. Compared with sklearn's ``roc_auc_score``.
    """
    rng = np.random.default_rng(seed)

    def pairs(s, y, tie=0.5, flip=False):
        w, n = s[y == 1][:, None], s[y == 0][None, :]
        auc = ((w > n) + tie * (w == n)).mean()
        return 1 - auc if flip else auc

    mistakes = (
        ("a tie between a witness and a negative counts one half", lambda s, y: pairs(s, y, tie=0.0)),
        ("count pairs in which the WITNESS scores higher", lambda s, y: pairs(s, y, flip=True)),
    )
    y = (rng.random(300) < 0.1).astype(int)
    cases = [
        Case("300 cells, about 30 witnesses", (rng.normal(size=300) + y, y)),
        Case("one witness among 20", (rng.normal(size=20), np.eye(20, dtype=int)[3])),
        Case("scores on a coarse grid (many ties)", (np.round(rng.normal(size=300) + y), y)),
        Case("all scores equal: 0.5", (np.zeros(40), np.r_[np.ones(4, int), np.zeros(36, int)])),
        Case("perfect ranking: 1", (np.arange(10.0), np.r_[np.zeros(7, int), np.ones(3, int)])),
    ]
    for c in cases:
        c.mistakes = mistakes
    return grade("instance AUROC", fn, lambda s, y: float(roc_auc_score(y, s)), cases, strict=strict,
                  rtol=1e-9, atol=1e-12, covers="one to 30 witnesses, ties, constant and perfect scores")
