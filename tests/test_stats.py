"""Per-bag predictions on disk and the paired hierarchical bootstrap, against hand-built inputs
with known answers: sklearn's weighted metrics, planted shifts, a seed-only spread whose
percentiles can be counted by hand, and the coverage of the interval on simulated nulls."""
import math
from statistics import NormalDist

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from slamags_core import stats as ST
from slamags_core.metrics import bag_metrics, retrieval_metrics
from slamags_core.power import simulate_predictions
from slamags_core.predictions import (COLUMNS, bag_prediction_rows, predictions_path,
                                      read_bag_predictions, write_bag_predictions)

KEY = dict(method="simclr", mil="abmil", witness_rate=0.01, seed=2, embedding="h", stain="per_cell")


def _bags(rng, n=12, size=30):
    labels = np.array([1, 0] * (n // 2))
    inst = [np.r_[np.ones(3 * y, int), np.zeros(size - 3 * y, int)] for y in labels]
    rankings = [rng.normal(size=size) + 2 * lab for lab in inst]
    return labels, inst, rankings


# ------------------------------------------------------------------ the on-disk format

def test_predictions_roundtrip_and_per_bag_retrieval(tmp_path, rng):
    labels, inst, rankings = _bags(rng)
    prob = rng.uniform(size=len(labels))
    ids = np.arange(100, 100 + len(labels))
    path = write_bag_predictions(tmp_path, **KEY, bag_ids=ids, labels=labels, scores=prob,
                                 decisions=(prob > 0.5).astype(int), rankings=rankings,
                                 instance_labels=inst, topk_fraction=0.2)
    assert path == predictions_path(tmp_path, **KEY)
    assert path.name == "simclr__abmil__wr0.01__seed2__h__per_cell.csv"
    assert path.read_text().splitlines()[0] == ",".join(COLUMNS)
    rows = read_bag_predictions(tmp_path)  # the sweep folder, its predictions/ or the file
    assert rows == read_bag_predictions(path) == read_bag_predictions(path.parent)
    assert [r["bag"] for r in rows] == ids.tolist()
    assert all(r[k] == KEY[k] for r in rows for k in KEY)
    pos = [r for r in rows if r["label"] == 1]
    assert all(math.isnan(r["topk_recall"]) for r in rows if r["label"] == 0)
    assert [r["n_witnesses"] for r in rows] == [int(x.sum()) for x in inst]
    # the mean over positive bags is what metrics.retrieval_metrics reports for the grid cell
    ref = retrieval_metrics(rankings, inst, labels, topk_fraction=0.2)
    for k in ("topk_precision", "topk_recall", "instance_auroc"):
        assert np.mean([r[k] for r in pos]) == pytest.approx(ref[k], abs=1e-9)
    # and bag F1 / AUC recomputed from the rows are metrics.bag_metrics's
    d = ST.select_cells(rows, mil="abmil")[("simclr", 0.01, 2)]
    ref = bag_metrics(labels, prob)
    assert ST.cell_metric(d, "bag_auc") == pytest.approx(ref["bag_auc"])
    assert ST.cell_metric(d, "bag_f1") == pytest.approx(ref["bag_f1"])
    assert ST.cell_metric(d, "topk_recall") == pytest.approx(np.mean([r["topk_recall"] for r in pos]))


def test_scorer_without_decisions_or_rankings(tmp_path):
    write_bag_predictions(tmp_path, **{**KEY, "mil": "oneclass_knn"}, bag_ids=[0, 1, 2, 3],
                          labels=[0, 1, 0, 1], scores=[0.1, 0.9, 0.3, 0.2])
    rows = read_bag_predictions(tmp_path)
    assert all(math.isnan(r["decision"]) and math.isnan(r["topk_recall"]) for r in rows)
    d = ST.select_cells(rows, mil="oneclass_knn")[("simclr", 0.01, 2)]
    assert ST.cell_metric(d, "bag_auc") == 0.75
    with pytest.raises(ValueError, match="decision"):
        ST.cell_metric(d, "bag_f1")


@pytest.mark.parametrize("change,match", [
    (dict(labels=[0, 1, 2]), "labels must be 0 or 1"),
    (dict(scores=[0.1, float("nan"), 0.3]), "finite"),
    (dict(scores=[0.1, 0.2]), "scores"),
    (dict(bag_ids=[1, 1, 2]), "duplicates"),
    (dict(decisions=[0, 1, 5]), "decisions must be 0 or 1"),
    (dict(method="../evil"), "plain name"),
    (dict(witness_rate=1.5), "witness_rate"),
    (dict(seed=1.5), "seed"),
    (dict(rankings=[np.zeros(3)] * 3), "instance_labels"),
])
def test_bad_predictions_are_refused(tmp_path, change, match):
    kw = {**KEY, "bag_ids": [0, 1, 2], "labels": [0, 1, 0], "scores": [0.1, 0.5, 0.3], **change}
    with pytest.raises(ValueError, match=match):
        write_bag_predictions(tmp_path, **kw)
    assert not (tmp_path / "predictions").exists() or not any((tmp_path / "predictions").iterdir())


def test_foreign_files_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_bag_predictions(tmp_path / "nothing")
    (tmp_path / "x.csv").write_text("method,bag_auc\nsimclr,0.5\n")
    with pytest.raises(ValueError, match="not a per-bag predictions file"):
        read_bag_predictions(tmp_path)
    rows = bag_prediction_rows(**KEY, bag_ids=[0, 1], labels=[0, 1], scores=[0.2, 0.4])
    assert len(rows) == 2 and rows[1]["score"] == 0.4


# ------------------------------------------------------------------ weighted metrics

def test_weighted_metrics_equal_sklearn_with_sample_weights(rng):
    y = np.r_[np.ones(30, int), np.zeros(20, int)]
    s = np.round(rng.normal(size=50) + y, 1)  # rounded: ties between positives and negatives
    dec = (s > 0.5).astype(float)
    d = ST.BagArrays(np.arange(50), y, s, dec, {k: np.zeros(50) for k in ST.POSITIVE_BAG_METRICS})
    Wp, Wn = ST.resample_counts(rng, 6, 30), ST.resample_counts(rng, 6, 20)
    assert (Wp.sum(1) == 30).all() and (Wn.sum(1) == 20).all()
    auc = ST._weighted_metric(d, "bag_auc", Wp, Wn)
    f1 = ST._weighted_metric(d, "bag_f1", Wp, Wn)
    for i in range(6):
        w = np.r_[Wp[i], Wn[i]]
        assert auc[i] == pytest.approx(roc_auc_score(y, s, sample_weight=w))
        assert f1[i] == pytest.approx(f1_score(y, dec, sample_weight=w))
    assert ST.cell_metric(d, "bag_auc") == pytest.approx(roc_auc_score(y, s))


def _cells(rows, mil="sim"):
    return ST.select_cells(rows, mil=mil)


def _shifted(rows, method, new, shift):
    """A copy of ``method``'s rows as ``new`` whose per-bag retrieval values move by shift(wr, seed)."""
    out = []
    for r in rows:
        if r["method"] == method:
            q = dict(r, method=new)
            for k in ST.POSITIVE_BAG_METRICS:
                q[k] = r[k] + shift(r["witness_rate"], r["seed"])
            out.append(q)
    return rows + out


# ------------------------------------------------------------------ known answers

def test_identical_methods_give_a_zero_interval():
    rows = simulate_predictions(n_seeds=3, n_pos=20, n_neg=20, mu={"a": 1.0}, seed=0)
    rows = _shifted(rows, "a", "b", lambda wr, s: 0.0)
    for metric in ("bag_auc", "bag_f1", "topk_recall"):
        res = ST.hierarchical_bootstrap(_cells(rows), "a", "b", metric, n_boot=200)
        assert (res.replicates == 0).all() and res.ci().tolist() == [[0.0, 0.0]]
        assert ST.classify(*res.ci()[0]) == "equivalent"


def test_same_distribution_methods_cover_zero():
    rows = simulate_predictions(n_seeds=3, n_pos=30, n_neg=30, mu={"a": 1.0, "b": 1.0}, seed=3)
    res = ST.hierarchical_bootstrap(_cells(rows), "a", "b", "bag_auc", n_boot=1000)
    lo, hi = res.ci()[0]
    assert lo < 0 < hi and ST.classify(lo, hi) == "inconclusive"


def test_planted_constant_shift_is_recovered_exactly_because_pairing():
    rows = simulate_predictions(n_seeds=3, n_pos=25, n_neg=25, mu={"a": 1.0}, seed=1)
    rows = _shifted(rows, "a", "b", lambda wr, s: -0.1)  # b retrieves 0.1 less in every bag
    res = ST.hierarchical_bootstrap(_cells(rows), "a", "b", "topk_recall", n_boot=500)
    np.testing.assert_allclose(res.replicates, 0.1, atol=1e-12)
    np.testing.assert_allclose(res.ci(), [[0.1, 0.1]], atol=1e-12)
    # unpaired, the same numbers are uncertain: each method alone has a wide interval
    alone = ST.hierarchical_bootstrap(_cells(rows), "a", None, "topk_recall", n_boot=500)
    assert np.diff(alone.ci()[0])[0] > 0.05


def test_planted_auc_difference_is_covered():
    mu_a, mu_b = 1.5, 0.5
    true = NormalDist().cdf(mu_a / 2**0.5) - NormalDist().cdf(mu_b / 2**0.5)  # 0.2174
    rows = simulate_predictions(n_seeds=3, n_pos=60, n_neg=60, mu={"a": mu_a, "b": mu_b}, seed=2)
    res = ST.hierarchical_bootstrap(_cells(rows), "a", "b", "bag_auc", n_boot=2000)
    lo, hi = res.ci()[0]
    assert lo < true < hi and lo > 0 and ST.classify(lo, hi) == "higher"
    assert res.estimate[0] == pytest.approx(res.per_seed[:, 0].mean())


def test_seed_level_resampling_counted_by_hand():
    # no bag noise (constant per-bag shifts), the difference is 0, 0.1, 0.2 in seeds 0, 1, 2:
    # a replicate is the mean of 3 seeds drawn with replacement; P(all three are seed 0) =
    # 1/27 > 2.5%, so the 95% interval is exactly [0, 0.2]
    rows = simulate_predictions(n_seeds=3, n_pos=10, n_neg=10, mu={"a": 1.0}, seed=0)
    rows = _shifted(rows, "a", "b", lambda wr, s: -0.1 * s)
    res = ST.hierarchical_bootstrap(_cells(rows), "a", "b", "topk_recall", n_boot=4000)
    assert res.estimate[0] == pytest.approx(0.1)
    np.testing.assert_allclose(res.ci(), [[0.0, 0.2]], atol=1e-12)
    assert set(np.round(res.replicates[:, 0] * 30).astype(int)) <= set(range(0, 7))


def test_trend_over_witness_rates():
    wrs = (0.1, 0.05, 0.01, 0.005)
    rows = simulate_predictions(n_seeds=3, n_pos=10, n_neg=10, mu={"a": 1.0}, witness_rates=wrs,
                                seed=0)
    # b is behind by 0.1 per decade below WR 100%: 0.1 at WR 10%, 0.2 at 1%, ...
    rows = _shifted(rows, "a", "b", lambda wr, s: 0.1 * math.log10(wr))
    res = ST.hierarchical_bootstrap(_cells(rows), "a", "b", "topk_recall", n_boot=300)
    assert res.witness_rates == wrs
    np.testing.assert_allclose(res.estimate, [-0.1 * math.log10(w) for w in wrs], atol=1e-12)
    est, lo, hi = res.trend()
    assert est == pytest.approx(0.1) and lo == pytest.approx(0.1) and hi == pytest.approx(0.1)
    summary = res.to_dict()
    assert summary["trend_per_decade"]["estimate"] == pytest.approx(0.1)
    assert [r["witness_rate"] for r in summary["by_witness_rate"]] == list(wrs)


def test_same_seed_same_interval_and_replicates_vary_with_the_seed():
    rows = simulate_predictions(n_seeds=3, n_pos=15, n_neg=15, mu={"a": 1.0, "b": 0.8}, seed=5)
    a = ST.hierarchical_bootstrap(_cells(rows), "a", "b", n_boot=300, seed=1)
    b = ST.hierarchical_bootstrap(_cells(rows), "a", "b", n_boot=300, seed=1)
    c = ST.hierarchical_bootstrap(_cells(rows), "a", "b", n_boot=300, seed=2)
    assert np.array_equal(a.replicates, b.replicates)
    assert not np.array_equal(a.replicates, c.replicates)


def _coverage(seed_sd, trials=150, n=30):
    hits = 0
    for t in range(trials):
        rows = simulate_predictions(n_seeds=3, n_pos=n, n_neg=n, mu={"a": 1.0, "b": 1.0},
                                    seed_sd=seed_sd, seed=10_000 + t)
        lo, hi = ST.hierarchical_bootstrap(_cells(rows), "a", "b", "bag_auc", n_boot=400,
                                           seed=t).ci()[0]
        hits += lo <= 0 <= hi
    return hits / trials


def test_coverage_on_simulated_nulls():
    # 3 seeds; the true difference is 0 (both methods have the same distribution). With a
    # between-seed spread near twice the bag variance the interval is about nominal; with
    # bag noise only it is conservative (the bag noise is counted twice, see stats' docstring).
    assert 0.88 <= _coverage(seed_sd=0.15) <= 0.99
    assert _coverage(seed_sd=0.0) >= 0.95


def test_run_level_bootstrap():
    rows = [{"method": m, "witness_rate": wr, "seed": s, "h_erank": base + (2.0 if m == "a" else 0)}
            for m in ("a", "b") for wr in (0.1, 0.01) for s, base in ((0, 5.0), (1, 6.0), (2, 7.0))]
    out = ST.run_level_bootstrap(rows, "a", "b", "h_erank", n_boot=200)
    assert out == {"estimate": 2.0, "low": 2.0, "high": 2.0, "n_seeds": 3, "n_pairs": 6}
    none = ST.run_level_bootstrap(rows, "a", "c", "h_erank")
    assert none["n_pairs"] == 0 and math.isnan(none["estimate"])
    one = ST.run_level_bootstrap([r for r in rows if r["seed"] == 0], "a", "b", "h_erank")
    assert one["estimate"] == 2.0 and one["n_seeds"] == 1 and one["n_pairs"] == 2
    assert math.isnan(one["low"]) and math.isnan(one["high"])  # one seed: no interval


def test_classify():
    assert ST.classify(0.01, 0.2) == "higher"
    assert ST.classify(-0.2, -0.01) == "lower"
    assert ST.classify(-0.03, 0.04) == "equivalent"
    assert ST.classify(-0.03, 0.04, margin=0.02) == "inconclusive"
    assert ST.classify(float("nan"), 0.1) == "undefined"


# ------------------------------------------------------------------ bad input

def test_bootstrap_errors():
    rows = simulate_predictions(n_seeds=2, n_pos=5, n_neg=5, mu={"a": 1.0, "b": 1.0}, seed=0)
    cells = _cells(rows)
    with pytest.raises(ValueError, match="unknown metric"):
        ST.hierarchical_bootstrap(cells, "a", "b", "accuracy")
    for bad in (10, True, 150.5):
        with pytest.raises(ValueError, match="n_boot"):
            ST.hierarchical_bootstrap(cells, "a", "b", n_boot=bad)
    same = ST.hierarchical_bootstrap(cells, "a", "b", n_boot=np.int64(200), level=np.float32(0.9))
    assert same.replicates.shape == (200, 1) and same.level == pytest.approx(0.9)
    with pytest.raises(ValueError, match="level"):
        ST.hierarchical_bootstrap(cells, "a", "b", level=95)
    with pytest.raises(ValueError, match="no predictions of method 'c'"):
        ST.hierarchical_bootstrap(cells, "a", "c")
    with pytest.raises(ValueError, match="no seed"):
        ST.hierarchical_bootstrap(cells, "a", "b", witness_rates=[0.5])
    moved = [dict(r, bag=r["bag"] + 100) if r["method"] == "b" else r for r in rows]
    with pytest.raises(ValueError, match="different test bags"):
        ST.hierarchical_bootstrap(_cells(moved), "a", "b")
    two = rows + [dict(r, embedding="z") for r in rows]
    with pytest.raises(ValueError, match="several values of 'embedding'"):
        ST.select_cells(two, mil="sim")
    assert len(ST.select_cells(two, mil="sim", embedding="z")) == 4
    with pytest.raises(ValueError, match="no predictions of scorer 'abmil'"):
        ST.select_cells(rows, mil="abmil")
