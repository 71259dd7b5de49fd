"""Graders for notebook 07 (embedding geometry): k-NN witness purity; attention rank within a bag."""
from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd

from slamags_core.exercises.grading import Case, Report, grade


def _knn_purity_ref(E, y, k):
    U = E / np.linalg.norm(E, axis=1, keepdims=True).clip(1e-12)
    S = U @ U.T
    np.fill_diagonal(S, -np.inf)
    wit = np.flatnonzero(y == 1)
    nbrs = np.argsort(-S[wit], axis=1, kind="stable")[:, :k]
    return float((y[nbrs] == 1).mean())


def check_knn_purity(fn: Callable, *, strict: bool = False, seed: int = 0) -> Report:
    """Exercise (07): k-NN witness purity in the embedding's own (cosine) geometry.

    ``fn(E, y, k) -> float``: for every witness (``y == 1``) the fraction of its k nearest
    OTHER cells by cosine similarity that are witnesses, averaged over witnesses. Compared with
    the formula written in this grader.
    """
    rng = np.random.default_rng(seed)

    def variant(E, y, k, *, self_=False, euclid=False, all_cells=False):
        X = E if euclid else E / np.linalg.norm(E, axis=1, keepdims=True)
        D = ((X[:, None] - X[None]) ** 2).sum(-1) if euclid else -(X @ X.T)
        if not self_:
            np.fill_diagonal(D, np.inf)
        rows = np.arange(len(y)) if all_cells else np.flatnonzero(y == 1)
        nbrs = np.argsort(D[rows], axis=1, kind="stable")[:, :k]
        return float((y[nbrs] == y[rows][:, None]).mean() if all_cells else (y[nbrs] == 1).mean())

    mistakes = (
        ("a cell is not its own neighbour: leave it out (ask for k + 1 neighbours and drop the first)",
         lambda E, y, k: variant(E, y, k, self_=True)),
        ("use cosine similarity (normalise the rows), the geometry the losses and the UMAP use",
         lambda E, y, k: variant(E, y, k, euclid=True)),
        ("average over the witnesses only (y == 1), counting witness neighbours",
         lambda E, y, k: variant(E, y, k, all_cells=True)),
    )
    y = (rng.random(200) < 0.15).astype(int)
    E = rng.normal(size=(200, 8)) + 1.5 * y[:, None] * rng.normal(size=8)
    lengths = np.exp(rng.normal(size=(200, 1)))
    cases = [
        Case("200 cells in D=8, 15 % witnesses, k=10", (E, y, 10)),
        Case("rows of very different lengths (cosine must ignore them), k=5", (E * lengths, y, 5)),
        Case("k=1", (E, y, 1)),
        Case("random embeddings (purity near the witness share), k=10", (rng.normal(size=(200, 8)), y, 10)),
    ]
    for c in cases:
        c.mistakes = mistakes
    return grade("k-NN purity", fn, _knn_purity_ref, cases, strict=strict, rtol=1e-9, atol=1e-12,
                  covers="k = 1 to 10, unnormalised rows, random embeddings")


def _bag_ranks(scores, bag_index, method="average"):
    """(rank - 1) / (N_b - 1) of every cell within its bag (pandas ranks; 1 = lowest)."""
    s = pd.Series(np.asarray(scores, dtype=np.float64))
    b = np.asarray(bag_index)
    rank = s.groupby(b).rank(method=method).to_numpy()
    size = np.bincount(b)[b]
    return (rank - 1) / (size - 1)


def _within_bag_rank_ref(scores, bag_index):
    return _bag_ranks(scores, bag_index)


def check_within_bag_rank(fn: Callable, *, strict: bool = False, seed: int = 0) -> Report:
    """Exercise (07): colour cells by their attention rank inside their own bag.

    ``fn(scores, bag_index) -> (n,) array``: for every cell ``(rank - 1) / (N_b - 1)`` with
    ``rank`` its rank (1 = lowest, ties get their average rank) among the ``N_b >= 2`` cells of
    its bag: 0 for the bag's lowest score, 1 for its highest, comparable across bags of any size.
    """
    rng = np.random.default_rng(seed)

    mistakes = (
        ("rank each cell among the cells of ITS bag, not among all cells",
         lambda s, b: _bag_ranks(s, np.zeros_like(b))),
        ("tied scores share their average rank (pandas' rank() and scipy's rankdata() default)",
         lambda s, b: _bag_ranks(s, b, method="first")),
    )
    b = rng.permutation(np.repeat(np.arange(4), [2, 10, 30, 8]))
    cases = [
        Case("4 bags of 2, 10, 30 and 8 cells, interleaved", (rng.random(50), b)),
        Case("attention of very different scales per bag (1/N_b)",
              (rng.random(50) / np.bincount(b)[b], b)),
        Case("ties inside a bag", (np.round(rng.random(50), 1), b)),
        Case("one bag of 5 cells", (np.array([0.3, 0.1, 0.9, 0.5, 0.2]), np.zeros(5, int))),
    ]
    for c in cases:
        c.mistakes = mistakes
    return grade("within-bag rank", fn, _within_bag_rank_ref, cases, strict=strict, rtol=1e-9,
                  atol=1e-12, covers="bags of 2 to 30 cells, different scales, ties")
