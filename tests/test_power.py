"""The power calculation on simulated binormal bag scores with known AUC: DeLong against Monte
Carlo and the null formula, the variance components, the half-width formula against the report's
bootstrap, and required bag counts that do reach the target."""
import math
from statistics import NormalDist

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from slamags_core import power as PW
from slamags_core import stats as ST


def _cell(rows, method, wr=0.1, seed=0):
    return ST.select_cells(rows, mil="sim")[(method, wr, seed)]


def test_delong_against_monte_carlo_and_the_null_formula():
    n, diffs, var_diff, var_a, aucs = 40, [], [], [], []
    for t in range(300):
        rows = PW.simulate_predictions(n_seeds=1, n_pos=n, n_neg=n, mu={"a": 0.0, "b": 1.0},
                                       rho=0.5, seed=t)
        a, b = _cell(rows, "a"), _cell(rows, "b")
        out = PW.delong(a.label, a.score, b.score)
        assert out["auc_a"] == pytest.approx(roc_auc_score(a.label, a.score))
        diffs.append(out["auc_a"] - out["auc_b"])
        aucs.append(out["auc_b"])
        var_diff.append(out["var_diff"])
        var_a.append(out["var_a"])
    assert np.mean(aucs) == pytest.approx(NormalDist().cdf(1 / 2**0.5), abs=0.01)  # 0.760
    assert np.mean(var_diff) == pytest.approx(np.var(diffs), rel=0.2)
    # method a is at chance: Var(AUC) = (m + n + 1) / (12 m n) (Hanley & McNeil 1982)
    assert np.mean(var_a) == pytest.approx((2 * n + 1) / (12 * n * n), rel=0.1)
    with pytest.raises(ValueError, match="DeLong needs"):
        PW.delong([1, 0, 0], [0.1, 0.2, 0.3])


def test_bag_bootstrap_variance_agrees_with_delong():
    rows = PW.simulate_predictions(n_seeds=1, n_pos=50, n_neg=50, mu={"a": 1.2, "b": 0.6}, seed=4)
    a, b = _cell(rows, "a"), _cell(rows, "b")
    boot = PW.within_variance(a, b, "bag_auc", n_boot=4000)
    assert boot == pytest.approx(PW.delong(a.label, a.score, b.score)["var_diff"], rel=0.15)


def test_components_recover_the_simulated_variances():
    mu, sd, n = 1.0, 0.2, 40
    rows = PW.simulate_predictions(n_seeds=40, n_pos=n, n_neg=n, mu={"oracle": mu, "simclr": mu},
                                   seed_sd=sd, seed=0)
    comp = PW.estimate_components(rows, "oracle", "simclr", mil="sim", witness_rate=0.1,
                                  n_boot=500)
    # the seed shift moves each AUC by about pdf(mu/sqrt2)/sqrt2 * u: Var(diff) = 2 (that * sd)^2
    slope = NormalDist().pdf(mu / 2**0.5) / 2**0.5
    assert comp.tau2 == pytest.approx(2 * (slope * sd) ** 2, rel=0.5)
    one = PW.simulate_predictions(n_seeds=1, n_pos=n, n_neg=n, mu={"oracle": mu, "simclr": mu},
                                  seed=0)
    a, b = _cell(one, "oracle"), _cell(one, "simclr")
    assert comp.v == pytest.approx(2 * n * PW.delong(a.label, a.score, b.score)["var_diff"], rel=0.25)
    assert comp.n_bags == 2 * n and comp.n_seeds == 40
    single = PW.estimate_components(one, "oracle", "simclr", mil="sim", witness_rate=0.1)
    assert math.isnan(single.tau2)


def test_half_width_formula_predicts_the_report_bootstrap():
    for seed_sd in (0.0, 0.15):
        widths, pilot = [], PW.simulate_predictions(
            n_seeds=40, n_pos=30, n_neg=30, mu={"a": 1.0, "b": 1.0}, seed_sd=seed_sd, seed=99)
        comp = PW.estimate_components(pilot, "a", "b", mil="sim", witness_rate=0.1, n_boot=500)
        for t in range(40):
            rows = PW.simulate_predictions(n_seeds=3, n_pos=30, n_neg=30, mu={"a": 1.0, "b": 1.0},
                                           seed_sd=seed_sd, seed=t)
            lo, hi = ST.hierarchical_bootstrap(ST.select_cells(rows, mil="sim"), "a", "b",
                                               n_boot=500, seed=t).ci()[0]
            widths.append((hi - lo) / 2)
        assert np.mean(widths) == pytest.approx(PW.half_width(comp.v, comp.tau2, 60, 3), rel=0.15)


def test_required_bags_closed_form():
    z = NormalDist().inv_cdf(0.975)
    req = PW.required_bags(0.3, 0.0, target=0.05, min_seeds=3, max_seeds=5)
    assert [r["n_seeds"] for r in req] == [3, 4, 5]
    n3 = math.ceil(5 * 0.3 / (9 * (0.05 / z) ** 2) / 2) * 2  # (2S-1) v / (S^2 (t/z)^2), even
    assert req[0]["n_bags"] == n3 == 258
    for r in req:
        assert r["half_width"] <= 0.05 < PW.half_width(0.3, 0.0, r["n_bags"] - 2, r["n_seeds"])
    assert req[0]["n_bags"] > req[1]["n_bags"] > req[2]["n_bags"]  # more seeds, fewer bags each
    assert req[0]["seed_share"] == 0.0
    some = PW.required_bags(0.3, 0.001, min_seeds=3, max_seeds=3)[0]
    assert some["n_bags"] == 390 and some["seed_share"] == pytest.approx(0.001 / (0.3 / 390))
    # seed noise alone above the target: no bag count helps with 3 seeds, more seeds do
    tau2 = (0.05 / z) ** 2 * 9 / 2 * 1.01
    hopeless = PW.required_bags(0.3, tau2, min_seeds=3, max_seeds=8)
    assert hopeless[0]["n_bags"] is None and hopeless[-1]["n_bags"] is not None
    with pytest.raises(ValueError, match="target"):
        PW.required_bags(0.3, 0.0, target=0)
    with pytest.raises(ValueError, match="max_seeds"):
        PW.required_bags(0.3, 0.0, min_seeds=4, max_seeds=3)
    with pytest.raises(ValueError, match="n_bags"):
        PW.half_width(0.3, 0.0, 0, 3)
    with pytest.raises(ValueError, match="tau2"):
        PW.half_width(0.3, -0.1, 10, 3)
    assert PW.half_width(0.3, float("nan"), 10, 3) == PW.half_width(0.3, 0.0, 10, 3)  # unknown


def test_required_bags_reach_the_target_in_simulation():
    mu = {"oracle": 1.6, "simclr": 0.8}
    pilot = PW.simulate_predictions(n_seeds=3, n_pos=16, n_neg=16, mu=mu, seed=1)
    table = PW.power_table(pilot, "oracle", "simclr", mil="sim", target=0.05, max_seeds=4, n_boot=500)
    n = table["required"][0]["n_bags"]  # 3 seeds
    assert table["required"][0]["n_seeds"] == 3 and n > 32
    widths = []
    for t in range(6):
        rows = PW.simulate_predictions(n_seeds=3, n_pos=n // 2, n_neg=n // 2, mu=mu, seed=100 + t)
        lo, hi = ST.hierarchical_bootstrap(ST.select_cells(rows, mil="sim"), "oracle", "simclr",
                                           n_boot=500, seed=t).ci()[0]
        widths.append((hi - lo) / 2)
    assert np.mean(widths) <= 0.05 * 1.15  # the pilot's 16+16 bags estimate v to ~ +-25%


def test_power_table_takes_the_worst_witness_rate():
    pilot = (PW.simulate_predictions(n_seeds=2, n_pos=20, n_neg=20, mu={"oracle": 2.0, "simclr": 1.5},
                                     witness_rates=(0.1,), seed=0)
             + PW.simulate_predictions(n_seeds=2, n_pos=20, n_neg=20, mu={"oracle": 0.3, "simclr": 0.0},
                                       witness_rates=(0.01,), seed=1))
    table = PW.power_table(pilot, "oracle", "simclr", mil="sim", tau2=0.0, n_boot=300)
    by = {r["witness_rate"]: r for r in table["by_witness_rate"]}
    n_hi, n_lo = by[0.1]["required"][0]["n_bags"], by[0.01]["required"][0]["n_bags"]
    assert n_lo > n_hi  # near chance an AUC is noisier
    assert table["required"][0] == {"n_seeds": 3, "n_bags": max(n_hi, n_lo)}
    pooled = PW.power_table(pilot, "oracle", "simclr", mil="sim", n_boot=300)
    raws = [r["tau2_raw"] for r in pooled["by_witness_rate"]]
    assert pooled["tau2_pooled"] == max(0.0, np.mean(raws))
    assert all(r["tau2_used"] == pooled["tau2_pooled"] for r in pooled["by_witness_rate"])
    with pytest.raises(ValueError, match="tau2 must be"):
        PW.power_table(pilot, "oracle", "simclr", mil="sim", tau2="max")


@pytest.mark.parametrize("method", ["slam_ags", "slam_sum", "sim_only"])
def test_never_calibrated_on_a_slam_score(method):
    rows = PW.simulate_predictions(n_seeds=2, n_pos=5, n_neg=5, mu={"oracle": 1.0, method: 1.0})
    with pytest.raises(ValueError, match="never on a SLAM score"):
        PW.estimate_components(rows, "oracle", method, mil="sim", witness_rate=0.1)


def test_required_seeds_by_hand():
    """With tau2 = 0.027 and v = 0.26 at 446 bags (the powered H200 run's oracle - simclr),
    the half-width z sqrt(((S-1) tau2 + (2S-1) v / n) / S^2) first reaches 0.05 at the
    returned S, checked against the formula written out here; more bags cannot replace seeds."""
    z = NormalDist().inv_cdf(0.975)

    def hw(S, v=0.26, t=0.027, n=446):
        return z * math.sqrt(((S - 1) * t + (2 * S - 1) * v / n) / S**2)

    S = PW.required_seeds(0.26, 0.027, 446)
    assert hw(S) <= 0.05 < hw(S - 1) and 35 <= S <= 50
    assert PW.required_seeds(0.26, 0.027, 10**9) >= 35  # bags do not buy down the seed term
    assert PW.required_seeds(0.3, 0.0, 258) == 3  # tau2 = 0: the bag table's 258 bags suffice
    assert PW.required_seeds(0.3, 0.0, 100) > 3
    assert PW.required_seeds(0.26, 0.027, 446, max_seeds=10) is None
    for kw in (dict(target=0), dict(min_seeds=1), dict(max_seeds=2)):
        with pytest.raises(ValueError):
            PW.required_seeds(0.26, 0.027, 446, **kw)
