"""MIL-free diagnostics on planted embeddings with known answers: kNN distances against brute
force, a one-class score that finds planted witnesses (and is at chance when there is nothing
to find), the per-bag pooling, and the instance-probe ceiling."""
import math

import numpy as np
import pytest

from slamags_core import diagnostics as D
from slamags_core.bags import PoolSource, build_bags
from slamags_core.config import BagConfig


def bagset(n_train=8, n_test=16, bag_size=50, wr=0.1, seed=0):
    n = (n_train + n_test) * bag_size  # negatives enough for every cell, witnesses for a fifth
    rng = np.random.default_rng(seed)
    pool = PoolSource(rng.integers(0, 255, (n + n // 5, 4, 4, 3), dtype=np.uint8),
                      np.array(["LYT"] * n + ["BLA"] * (n // 5)))
    return build_bags(pool, BagConfig(bag_size=bag_size, witness_rate=wr, n_train=n_train,
                                      n_val=0, n_test=n_test, seed=seed))


def planted(bs, gap, d=16, seed=0):
    """Negatives around one direction, witnesses shifted by ``gap`` along another."""
    rng = np.random.default_rng(seed)
    H = rng.normal(0, 0.3, (len(bs.bag_index), d))
    H[:, 0] += 4.0
    H[:, 1] += gap * bs.instance_labels
    return H


def test_knn_distance_against_brute_force(rng):
    Q, R = rng.normal(size=(37, 6)), rng.normal(size=(23, 6))
    cos = (Q / np.linalg.norm(Q, axis=1, keepdims=True)) @ (R / np.linalg.norm(R, axis=1,
                                                                             keepdims=True)).T
    for k in (1, 5):
        ref = (1 - np.sort(cos, axis=1)[:, ::-1][:, :k]).mean(1)
        np.testing.assert_allclose(D.knn_distance(Q, R, k=k), ref, atol=1e-6)
        np.testing.assert_allclose(D.knn_distance(Q, R, k=k, chunk=4), ref, atol=1e-6)
    assert D.knn_distance(R[:3], R, k=1) == pytest.approx(0.0, abs=1e-6)  # itself is nearest
    with pytest.raises(ValueError, match="k must be"):
        D.knn_distance(Q, R, k=0)
    with pytest.raises(ValueError, match="reference rows"):
        D.knn_distance(Q, R[:3], k=5)


def test_euclidean_knn_distance_against_sklearn(rng):
    """metric="euclidean" = scikit-learn's brute-force k nearest neighbours, averaged; unlike
    cosine it sees norms: a query twice as long as a reference row is far from it."""
    from sklearn.neighbors import NearestNeighbors

    Q, R = rng.normal(size=(41, 5)), rng.normal(size=(29, 5))
    for k in (1, 4):
        dist, _ = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(R).kneighbors(Q)
        np.testing.assert_allclose(D.knn_distance(Q, R, k=k, metric="euclidean"), dist.mean(1),
                                   rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(D.knn_distance(Q, R, k=k, chunk=3, metric="euclidean"),
                                   dist.mean(1), rtol=1e-6, atol=1e-6)
    long = 2 * R[:1]
    assert D.knn_distance(long, R, k=1) == pytest.approx(0.0, abs=1e-6)
    assert D.knn_distance(long, R, k=1, metric="euclidean")[0] > 0.5 * np.linalg.norm(R[0])
    with pytest.raises(ValueError, match="unknown metric 'manhattan'"):
        D.knn_distance(Q, R, metric="manhattan")


def test_oneclass_score_finds_planted_witnesses():
    bs = bagset()
    out = D.frozen_encoder_diagnostics(bs, planted(bs, gap=3.0))
    assert out["oneclass_auroc"] > 0.95 and out["oneclass_bag_auc"] > 0.95
    assert out["probe_auroc"] > 0.95
    ranked = out["oneclass"]
    assert list(ranked["bag_ids"]) == list(bs.split_bags("test"))
    assert [len(r) for r in ranked["rankings"]] == [50] * 16
    assert [int(x.sum()) for x in ranked["instance_labels"]] == [5 * y for y in ranked["labels"]]


def test_oneclass_score_is_at_chance_without_a_difference():
    bs = bagset(n_test=40)
    out = D.frozen_encoder_diagnostics(bs, planted(bs, gap=0.0))
    assert abs(out["oneclass_auroc"] - 0.5) < 0.08
    assert abs(out["probe_auroc"] - 0.5) < 0.08


def test_pooling_top_minus_median_known_answer():
    bs = bagset(n_train=2, n_test=4, bag_size=200)
    scores = np.zeros(len(bs.bag_index))
    scores[bs.instance_labels == 1] = 1.0        # witnesses score 1, everything else 0
    scores += 0.5 * np.isin(bs.bag_index, bs.split_bags("test")[:1])  # a bag-level offset
    ranked = D.rank_within_bags(bs, scores, top_fraction=0.01)  # top 2 of 200 cells
    pos = ranked["labels"] == 1
    np.testing.assert_allclose(ranked["bag_scores"][pos], 1.0)  # top-2 mean 1 - median 0
    np.testing.assert_allclose(ranked["bag_scores"][~pos], 0.0)  # the offset cancels
    assert ranked["witness_auroc"] == 1.0 and ranked["bag_auc"] == 1.0
    assert ranked["topk_recall"] == 1.0


def test_probe_subsample_keeps_every_witness(monkeypatch):
    bs = bagset()
    seen = {}

    def spy(Xtr, ytr, Xte, yte, C):
        seen.update(n=len(ytr), pos=int(np.sum(ytr)), n_test=len(yte))
        return {"auroc": 0.5}

    monkeypatch.setattr(D, "linear_probe", spy)
    D.instance_probe(bs, planted(bs, 1.0), max_train_cells=100)
    train = np.isin(bs.bag_index, bs.split_bags("train"))
    assert seen == {"n": 100, "pos": int(bs.instance_labels[train].sum()),
                    "n_test": int(np.isin(bs.bag_index, bs.split_bags("test")).sum())}


def test_bad_input():
    bs = bagset(n_train=2, n_test=2)
    H = planted(bs, 1.0)
    with pytest.raises(ValueError, match="one row per cell"):
        D.frozen_encoder_diagnostics(bs, H[:-1])
    bad = H.copy()
    bad[0, 0] = math.nan
    with pytest.raises(ValueError, match="NaN"):
        D.oneclass_scores(bs, bad)
    with pytest.raises(ValueError, match="top_fraction"):
        D.rank_within_bags(bs, np.zeros(len(H)), top_fraction=0)
    all_pos = bagset(n_train=2, n_test=2)
    all_pos.bag_labels[:] = 1
    with pytest.raises(ValueError, match="slide-negative training bags"):
        D.oneclass_scores(all_pos, H)
