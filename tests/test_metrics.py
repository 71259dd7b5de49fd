"""Bag and retrieval metrics against hand-computed values and scikit-learn."""
import math

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from slamags_core.metrics import bag_metrics, retrieval_metrics, topk_hits


def test_bag_metrics_hand_computed():
    # predictions at 0.5: [0, 1, 0, 1] -> TP=1, FP=1, FN=1 -> F1 = 2/(2+1+1) = 0.5
    # AUC: positive/negative pairs (0.4>0.1 yes, 0.4>0.6 no, 0.9>0.1 yes, 0.9>0.6 yes) = 3/4
    m = bag_metrics([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9])
    assert m == {"bag_f1": pytest.approx(0.5), "bag_auc": pytest.approx(0.75)}


def test_bag_metrics_match_sklearn_and_threshold():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 50)
    p = rng.random(50)
    m = bag_metrics(y, p, threshold=0.3)
    assert m["bag_f1"] == pytest.approx(f1_score(y, p > 0.3))
    assert m["bag_auc"] == pytest.approx(roc_auc_score(y, p))


def test_bag_metrics_tie_and_single_class():
    assert bag_metrics([1, 0], [0.5, 0.2])["bag_f1"] == 0.0  # 0.5 is not > 0.5: argmax picks "negative"
    m = bag_metrics([1, 1], [0.9, 0.7])
    assert m["bag_f1"] == 1.0 and math.isnan(m["bag_auc"])


@pytest.mark.parametrize("y, p, kw", [
    ([0, 2], [0.1, 0.2], {}),           # label outside {0, 1}
    ([0, 1], [0.1, 1.2], {}),           # probability outside [0, 1]
    ([0, 1], [0.1, float("nan")], {}),  # non-finite probability
    ([0, 1, 1], [0.1, 0.2], {}),        # lengths differ
    ([], [], {}),                       # empty
    ([0, 1], [0.1, 0.2], {"threshold": 1.0}),
])
def test_bag_metrics_errors(y, p, kw):
    with pytest.raises(ValueError):
        bag_metrics(y, p, **kw)


def test_topk_hits_hand_computed():
    a = np.array([0.1, 0.4, 0.2, 0.3])
    lab = np.array([0, 1, 0, 1])
    assert topk_hits(a, lab, 1) == 1
    assert topk_hits(a, lab, 2) == 2
    assert topk_hits(a, lab, 3) == 2
    assert topk_hits(np.array([0.5, 0.5, 0.0]), np.array([0, 1, 0]), 1) == 0  # tie: lower index first


@pytest.mark.parametrize("a, lab, k", [
    ([0.5, 0.5], [0, 1], 3),   # K larger than the bag
    ([0.5, 0.5], [0, 1], 0),   # K < 1
    ([0.5, 0.5], [0, 2], 1),   # label outside {0, 1}
    ([0.5, 0.5], [0, 1, 0], 1),  # shapes differ
    ([], [], 1),               # empty bag
])
def test_topk_hits_errors(a, lab, k):
    with pytest.raises(ValueError):
        topk_hits(np.array(a), np.array(lab), k)


def test_retrieval_metrics_hand_computed():
    att = [np.array([0.4, 0.3, 0.2, 0.1, 0.0]),   # positive, witnesses at 0 and 3
           np.array([0.1, 0.6, 0.3, 0.0, 0.0]),   # negative bag: ignored
           np.array([0.05, 0.05, 0.5, 0.2, 0.2])]  # positive, witness at 1
    lab = [np.array([1, 0, 0, 1, 0]), np.zeros(5, int), np.array([0, 1, 0, 0, 0])]
    m = retrieval_metrics(att, lab, [1, 0, 1], k=2)
    # bag 0: top2 = {0, 1} -> 1 hit: P = 1/2, R = 1/2; AUROC: witness scores {.4,.1} vs {.3,.2,0}: 4/6
    # bag 2: top2 = {2, 3 or 4} -> 0 hits: P = 0, R = 0; AUROC: .05 vs {.05,.5,.2,.2}: 0.5/4
    assert m["topk_precision"] == pytest.approx((0.5 + 0.0) / 2)
    assert m["topk_recall"] == pytest.approx((0.5 + 0.0) / 2)
    assert m["instance_auroc"] == pytest.approx((4 / 6 + 0.125) / 2)
    # per-bag AUROC agrees with sklearn
    assert m["instance_auroc"] == pytest.approx(np.mean([roc_auc_score(lab[i], att[i]) for i in (0, 2)]))
    # fraction: round(0.4 * 5) = 2 -> the same K
    assert retrieval_metrics(att, lab, [1, 0, 1]) == m


def test_uniform_attention_scores_chance_and_ties_are_expected_counts():
    lab = np.zeros(10, int)
    lab[:3] = 1  # witnesses first: a stable tie-break would wrongly find all of them
    m = retrieval_metrics([np.full(10, 0.1)], [lab], [1], k=4)
    assert m["topk_precision"] == pytest.approx(0.3)   # = witness rate
    assert m["topk_recall"] == pytest.approx(0.4)      # = K / N
    assert m["instance_auroc"] == pytest.approx(0.5)
    # partial tie at the K-th value: 1 above (a witness), 2 of 4 tied slots, 1 witness among tied
    a = np.array([0.9, 0.2, 0.2, 0.2, 0.2, 0.0])
    lab = np.array([1, 1, 0, 0, 0, 0])
    m = retrieval_metrics([a], [lab], [1], k=3)
    assert m["topk_precision"] == pytest.approx((1 + 2 * 1 / 4) / 3)


def test_retrieval_all_witness_bag_skipped_for_auroc():
    att = [np.array([0.5, 0.5]), np.array([0.7, 0.3])]
    lab = [np.array([1, 1]), np.array([0, 1])]
    m = retrieval_metrics(att, lab, [1, 1], k=1)
    assert m["instance_auroc"] == pytest.approx(0.0)  # only bag 1 counts
    assert m["topk_recall"] == pytest.approx((0.5 + 0.0) / 2)


@pytest.mark.parametrize("att, lab, y, kw", [
    ([np.ones(3) / 3], [np.array([0, 1, 0])], [1], {"k": 4}),              # K larger than the bag
    ([np.ones(3) / 3], [np.array([0, 1, 0])], [1], {"topk_fraction": 0.0}),
    ([np.ones(3) / 3], [np.array([0, 1, 0])], [1], {"topk_fraction": 1.5}),
    ([np.ones(3) / 3], [np.array([0, 0, 0])], [1], {}),                     # positive bag, no witness
    ([np.ones(3) / 3], [np.array([0, 0, 0])], [0], {}),                     # no positive bag
    ([np.ones(3) / 3], [np.array([0, 1, 0])], [2], {}),                     # bag label outside {0, 1}
    ([np.ones(3) / 3], [np.array([0, 1, 0])], [1, 0], {}),                  # lengths differ
    ([np.ones(2) / 2], [np.array([0, 1, 0])], [1], {}),                     # shapes differ
    ([np.array([])], [np.array([])], [1], {}),                              # empty bag
])
def test_retrieval_metrics_errors(att, lab, y, kw):
    with pytest.raises(ValueError):
        retrieval_metrics(att, lab, y, **kw)
