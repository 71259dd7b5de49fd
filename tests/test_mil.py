"""MIL training, prediction and evaluation: planted bags with known answers, model selection,
determinism without global reseeding, padding, a planted slide-level confounder, bad input."""
import dataclasses
import random

import numpy as np
import pytest
import torch

from slamags_core.aggregators import AGGREGATORS
from slamags_core.bags import BagSet
from slamags_core.config import MILConfig, get_preset
from slamags_core.metrics import bag_metrics, retrieval_metrics, topk_hits
from slamags_core.mil import (MILResult, check_bags, fit_evaluate, pad_bags, predict_bags,
                              split_bags, train_mil, witness_ablation)

CFG = MILConfig(epochs=30, hidden_dim=16, n_prototypes=2, patience=30, lr=3e-3, batch_bags=4,
                restarts=1, warmup_epochs=1)


def _bags(n, N=24, D=8, n_wit=3, shift=4.0, seed=0, sizes=None, offset=None):
    """Gaussian bags; positive bags (odd index) hold ``n_wit`` witnesses shifted by ``shift`` on
    the first two features. ``offset(i, y)`` adds a per-bag vector to every cell (a 'stain')."""
    g = torch.Generator().manual_seed(seed)
    bags, inst = [], []
    for i in range(n):
        n_i = N if sizes is None else sizes[i % len(sizes)]
        H = torch.randn(n_i, D, generator=g)
        lab = np.zeros(n_i, dtype=int)
        y = i % 2
        if y:
            idx = torch.randperm(n_i, generator=g)[:n_wit]
            H[idx, :2] += shift
            lab[idx.numpy()] = 1
        if offset is not None:
            H += offset(i, y)
        bags.append((H, y))
        inst.append(lab)
    return bags, inst


@pytest.mark.parametrize("name", ["abmil", "prototype", "max"])
def test_planted_witnesses_are_retrieved_first(name):
    train, _ = _bags(16, seed=0)
    val, _ = _bags(8, seed=1)
    test, inst = _bags(8, seed=2)
    cfg = dataclasses.replace(CFG, lr=1e-2) if name == "max" else CFG  # one cell per bag learns
    model, hist = train_mil(name, train, val, cfg, progress=False)
    prob, att, abn = predict_bags(model, [H for H, _ in test])
    y = np.array([y for _, y in test])
    assert prob[y == 1].min() > prob[y == 0].max()
    for i in np.flatnonzero(y == 1):  # the most abnormal cell of every positive bag is a witness
        assert topk_hits(abn[i], inst[i], 1) == 1
    m = retrieval_metrics(abn, inst, y, k=6)  # K = twice the number of witnesses
    assert m["topk_recall"] >= 0.9 and m["instance_auroc"] > 0.9


def test_variable_bag_sizes_train_and_predict_like_single_bags():
    train, _ = _bags(12, sizes=[10, 24, 17], seed=0)
    val, _ = _bags(6, sizes=[9, 30], seed=1)
    model, _ = train_mil("abmil", train, val, dataclasses.replace(CFG, epochs=3), progress=False)
    bags = [H for H, _ in val]
    prob, att, abn = predict_bags(model, bags)
    for H, p, a, s in zip(bags, prob, att, abn):
        with torch.no_grad():
            out = model(H)
        assert p == pytest.approx(float(torch.softmax(out.logits, 0)[1]), rel=1e-5)
        np.testing.assert_allclose(a, out.attention.numpy(), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(s, out.abnormality.numpy(), rtol=1e-5, atol=1e-6)


def test_selection_over_restarts_restores_the_lowest_validation_loss():
    train, _ = _bags(8, seed=0)
    val, _ = _bags(4, seed=1)
    cfg = dataclasses.replace(CFG, epochs=6, patience=2, restarts=3)
    model, hist = train_mil("abmil", train, val, cfg, progress=False)
    assert {h["restart"] for h in hist} == {0, 1, 2}
    chosen = [h for h in hist if h["selected"]]
    assert len(chosen) == 1 and chosen[0]["val_loss"] == min(h["val_loss"] for h in hist)
    for r in range(3):  # early stopping per restart
        best = min((h for h in hist if h["restart"] == r), key=lambda h: h["val_loss"])
        assert len([h for h in hist if h["restart"] == r]) <= best["epoch"] + 1 + cfg.patience
    prob, _, _ = predict_bags(model, [H for H, _ in val])
    yv = np.array([y for _, y in val])
    ce = -np.mean(np.log(np.where(yv == 1, prob, 1 - prob)))
    assert ce == pytest.approx(chosen[0]["val_loss"], rel=1e-4)


def test_same_seed_same_model_and_global_rngs_untouched():
    train, _ = _bags(8, seed=0)
    val, _ = _bags(4, seed=1)
    cfg = dataclasses.replace(CFG, epochs=4, restarts=2, instance_dropout=0.3)
    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    states = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    m1, h1 = train_mil("prototype", train, val, cfg, progress=False)
    assert torch.equal(torch.get_rng_state(), states[0])
    assert np.array_equal(np.random.get_state()[1], states[1]) and random.getstate() == states[2]
    m2, h2 = train_mil("prototype", train, val, cfg, progress=False)
    assert [h["val_loss"] for h in h1] == [h["val_loss"] for h in h2]
    for (k, v1), v2 in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(v1, v2), k
    _, h3 = train_mil("prototype", train, val, dataclasses.replace(cfg, seed=1), progress=False)
    assert [h["val_loss"] for h in h3] != [h["val_loss"] for h in h1]


def test_instance_dropout_keeps_every_bag_non_empty():
    import slamags_core.mil as M

    mask = torch.tensor([[True] * 5 + [False] * 3, [True] + [False] * 7])
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        kept = M._drop_instances(mask, 0.9, g)
        assert kept.any(1).all() and not (kept & ~mask).any()
    assert torch.equal(M._drop_instances(mask, 0.0, g), mask)


@pytest.mark.parametrize("name", sorted(AGGREGATORS))
def test_compacting_hidden_cells_leaves_the_loss_and_gradients_unchanged(name):
    import slamags_core.mil as M

    torch.manual_seed(0)
    X = torch.randn(3, 9, 6)
    mask = torch.tensor([[True] * 9, [True] * 4 + [False] * 5, [True] * 7 + [False] * 2])
    hidden = M._drop_instances(mask, 0.5, torch.Generator().manual_seed(1))
    Xc, Mc = M._compact(X, hidden)
    assert Xc.shape[1] == int(hidden.sum(1).max()) < 9
    for b in range(3):  # each bag keeps exactly its real cells, in order, padding at the end
        k = int(hidden[b].sum())
        assert torch.equal(Xc[b, :k], X[b][hidden[b]]) and Mc[b, :k].all() and not Mc[b, k:].any()
    y = torch.tensor([1, 0, 1])
    model = M._init_model(name, 6, dataclasses.replace(CFG, hidden_dim=8), 0)
    losses, grads = [], []
    for args in ((X, hidden), (Xc, Mc)):
        model.zero_grad()
        loss = M._loss(model, *args, y, 0.1)
        loss.backward()
        losses.append(loss.detach())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    torch.testing.assert_close(losses[0], losses[1])
    torch.testing.assert_close(grads[0], grads[1])
    assert M._compact(X, mask[:1].expand(3, -1))[0] is X  # nothing hidden: the batch as is


def test_standardizer_uses_training_statistics():
    train, _ = _bags(4, seed=0)
    val, _ = _bags(2, seed=1)
    model, _ = train_mil("mean", train, val, dataclasses.replace(CFG, epochs=1), progress=False)
    X = torch.cat([H for H, _ in train])
    torch.testing.assert_close(model.mu, X.mean(0))
    torch.testing.assert_close(model.sigma, X.std(0, unbiased=False))


def _confounded(n, seed, sign):
    """Every bag carries a slide offset of +-3 on feature 3 that equals the label's sign in
    training and validation (sign=+1) and the opposite in the test bags (sign=-1)."""
    return _bags(n, seed=seed, n_wit=4, shift=3.0,
                 offset=lambda i, y: torch.tensor([0, 0, 0, sign * (6.0 * y - 3.0), 0, 0, 0, 0]))


def test_bag_centring_removes_a_planted_slide_confounder():
    """A slide-level offset perfectly correlated with the label in training and reversed in the
    test bags: bag centring ignores it and finds the witnesses instead."""
    train, _ = _confounded(16, 0, +1)
    val, _ = _confounded(8, 1, +1)
    test, inst = _confounded(12, 2, -1)
    y = np.array([y for _, y in test])
    cfg = dataclasses.replace(CFG, bag_center=True)
    model, _ = train_mil("abmil", train, val, cfg, progress=False)
    prob, _, abn = predict_bags(model, [H for H, _ in test])
    assert prob[y == 1].min() > prob[y == 0].max()
    assert retrieval_metrics(abn, inst, y, k=4)["instance_auroc"] > 0.9
    model, _ = train_mil("abmil", train, val, dataclasses.replace(cfg, bag_center=False),
                         progress=False)
    prob, _, _ = predict_bags(model, [H for H, _ in test])
    assert prob[y == 1].mean() < prob[y == 0].mean()  # without it the shortcut wins and inverts


def _bagset(bags, inst, splits):
    """A BagSet around planted embeddings (images are 1-px placeholders)."""
    H = torch.cat([b for b, _ in bags])
    sizes = [len(b) for b, _ in bags]
    n = len(H)
    bs = BagSet(images=np.zeros((n, 1, 1, 3), np.uint8),
                bag_index=np.repeat(np.arange(len(bags)), sizes),
                instance_labels=np.concatenate(inst).astype(np.int8),
                cell_types=np.where(np.concatenate(inst) == 1, "BLA", "LYT").astype("<U16"),
                cell_ids=np.arange(n), bag_labels=np.array([y for _, y in bags]),
                bag_split=np.array(splits, dtype="<U5"), witness_rate=0.125, config={})
    return bs, H


def test_fit_evaluate_on_a_planted_bag_set():
    tr, itr = _bags(16, seed=0)
    va, iva = _bags(8, seed=1)
    te, ite = _bags(8, seed=2)
    bs, H = _bagset(tr + va + te, itr + iva + ite, ["train"] * 16 + ["val"] * 8 + ["test"] * 8)
    cfg = dataclasses.replace(CFG, topk_fraction=0.25)
    r = fit_evaluate("prototype", bs, H, cfg)
    assert isinstance(r, MILResult)
    np.testing.assert_array_equal(r.bag_ids, np.arange(24, 32))
    # Ranking of bags is perfect; the 0.5 threshold is not asserted (a 30-epoch toy with instance
    # dropout leaves the negatives' P(abnormal) near 0.5), only that F1 is computed from prob.
    assert r.metrics["bag_auc"] == 1.0
    assert r.metrics["bag_f1"] == bag_metrics(r.y, r.prob)["bag_f1"]
    assert r.prob[r.y == 1].min() > r.prob[r.y == 0].max()
    assert r.metrics["topk_recall"] >= 0.9 and r.metrics["instance_auroc"] > 0.9
    for key in ("topk_precision", "topk_recall", "instance_auroc"):
        assert r.metrics[key] == r.metrics[f"abnormality_{key}"]
        assert f"attention_{key}" in r.metrics
    assert r.ranking("attention") is r.attention and r.ranking() is r.abnormality
    assert r.model.ranking_name in r.model.candidate_names
    again = fit_evaluate("prototype", bs, H, cfg)
    assert again.metrics == r.metrics  # same seed, same numbers
    with pytest.raises(ValueError, match="rows but the bag set has"):
        fit_evaluate("abmil", bs, H[:-1], cfg)
    with pytest.raises(ValueError, match="unknown ranking"):
        r.ranking("gradcam")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", sorted(AGGREGATORS))
def test_fit_evaluate_on_cuda_matches_the_planted_answer(name):
    # regression: the standardiser was fitted on CUDA bags while the model was still on the CPU
    tr, itr = _bags(16, seed=0)
    va, iva = _bags(8, seed=1)
    te, ite = _bags(8, seed=2)
    bs, H = _bagset(tr + va + te, itr + iva + ite, ["train"] * 16 + ["val"] * 8 + ["test"] * 8)
    r = fit_evaluate(name, bs, H, dataclasses.replace(CFG, topk_fraction=0.25), device="cuda")
    assert r.metrics["bag_auc"] == 1.0
    assert next(r.model.parameters()).device.type == "cuda" and r.model.mu.device.type == "cuda"
    ablation = witness_ablation(r.model, split_bags(bs, H, "test")[1], r.y, r.instance_labels,
                                device="cuda")
    assert ablation["max_prob_change"] > 0


def test_smoke_preset_mil_config_is_usable():
    cfg = get_preset("smoke").mil
    train, _ = _bags(4, seed=0)
    val, _ = _bags(2, seed=1)
    model, hist = train_mil("prototype", train, val, cfg, progress=False)
    assert 1 <= len(hist) <= cfg.epochs * cfg.restarts


def _bad(kind):
    good = [(torch.randn(5, 4), 0), (torch.randn(6, 4), 1)]
    return {
        "no bags": [],
        "empty bag": [(torch.randn(0, 4), 0), (torch.randn(6, 4), 1)],
        "sizes differ": [(torch.randn(5, 4), 0), (torch.randn(6, 3), 1)],
        "label 2": [(torch.randn(5, 4), 2), (torch.randn(6, 4), 1)],
        "label -1": [(torch.randn(5, 4), -1), (torch.randn(6, 4), 1)],
        "label 0.5": [(torch.randn(5, 4), 0.5), (torch.randn(6, 4), 1)],
        "label True": [(torch.randn(5, 4), True), (torch.randn(6, 4), 0)],
        "nan": [(torch.full((5, 4), float("nan")), 0), (torch.randn(6, 4), 1)],
        "inf": [(torch.full((5, 4), float("inf")), 0), (torch.randn(6, 4), 1)],
        "1-d bag": [(torch.randn(5), 0), (torch.randn(6, 4), 1)],
    }.get(kind, good)


BAD = ["no bags", "empty bag", "sizes differ", "label 2", "label -1", "label 0.5", "label True",
       "nan", "inf", "1-d bag"]


@pytest.mark.parametrize("kind", BAD)
def test_train_mil_bad_bags(kind):
    with pytest.raises(ValueError):
        train_mil("abmil", _bad(kind), _bad("good"), CFG, progress=False)
    with pytest.raises(ValueError):
        train_mil("abmil", _bad("good"), _bad(kind), CFG, progress=False)


def test_error_messages_name_the_problem():
    with pytest.raises(ValueError, match="bag 1 has embedding size 3 but bag 0 has 4"):
        train_mil("abmil", _bad("sizes differ"), _bad("good"), CFG, progress=False)
    with pytest.raises(ValueError, match="bag 0 is empty"):
        predict_bags(train_mil("abmil", _bad("good"), _bad("good"), dataclasses.replace(CFG, epochs=1),
                               progress=False)[0], [torch.randn(0, 4)])
    with pytest.raises(ValueError, match="val_bags have embedding size 3"):
        train_mil("abmil", _bad("good"), [(torch.randn(5, 3), 0)], CFG, progress=False)
    with pytest.raises(ValueError, match="allowed labels: 0, 1"):
        train_mil("abmil", _bad("label 2"), _bad("good"), CFG, progress=False)
    with pytest.raises(ValueError, match="bag 0 contains NaN"):
        check_bags([H for H, _ in _bad("nan")])


@pytest.mark.parametrize("change", [dict(epochs=0), dict(patience=0), dict(lr=0.0), dict(batch_bags=0),
                                    dict(restarts=0), dict(instance_dropout=1.0),
                                    dict(warmup_epochs=-1), dict(weight_decay=-1.0),
                                    dict(query_init=-0.1)])
def test_invalid_config(change):
    (name,) = change
    with pytest.raises(ValueError, match=f"{name} must be"):
        train_mil("abmil", _bad("good"), _bad("good"), dataclasses.replace(CFG, **change),
                  progress=False)


def test_training_needs_both_labels_for_orientation():
    one_class = [(torch.randn(5, 4), 0), (torch.randn(6, 4), 0)]
    with pytest.raises(ValueError, match="positive and negative"):
        train_mil("abmil", one_class, _bad("good"), dataclasses.replace(CFG, epochs=1), progress=False)


def test_non_finite_loss_during_training_is_reported(monkeypatch):
    import slamags_core.mil as mil_mod

    real = mil_mod._loss
    monkeypatch.setattr(mil_mod, "_loss", lambda *a: real(*a) * float("nan"))
    bags = [(torch.randn(5, 4), 1), (torch.randn(5, 4), 0)]
    with pytest.raises(FloatingPointError, match="non-finite MIL loss nan at epoch 0, restart 0"):
        train_mil("abmil", bags, [(torch.randn(5, 4), 0)], MILConfig(epochs=1), progress=False)


def test_pad_bags():
    X, mask = pad_bags([torch.ones(2, 3), torch.ones(4, 3)])
    assert X.shape == (2, 4, 3) and mask.tolist() == [[True, True, False, False], [True] * 4]
    assert X[0, 2:].abs().sum() == 0


@pytest.mark.parametrize("name", AGGREGATORS)
def test_every_aggregator_trains_on_the_smoke_config(name):
    train, _ = _bags(6, seed=0)
    val, _ = _bags(4, seed=1)
    model, _ = train_mil(name, train, val, dataclasses.replace(CFG, epochs=2), progress=False)
    prob, att, abn = predict_bags(model, [H for H, _ in val])
    assert prob.shape == (4,) and all(np.isfinite(a).all() for a in abn)


def test_witness_ablation_on_planted_bags():
    """A model trained on planted witnesses loses its positive bags when they are deleted;
    negative bags (no witnesses) are predicted exactly as before."""
    tr, _ = _bags(16, seed=0)
    te, ite = _bags(8, seed=2)
    model, _ = train_mil("abmil", tr, tr[:8], CFG, progress=False)
    bags, y = [H for H, _ in te], [yi for _, yi in te]
    full = predict_bags(model, bags)[0]
    out = witness_ablation(model, bags, y, ite)
    assert bag_metrics(np.array(y), full)["bag_auc"] == 1.0
    assert out["bag_auc_without_witnesses"] < 0.8 and out["max_prob_change"] > 0.2
    neg = [(H, lab) for (H, yi), lab in zip(te, ite) if yi == 0]
    assert witness_ablation(model, [H for H, _ in neg], [0] * len(neg),
                            [lab for _, lab in neg])["max_prob_change"] == 0.0
    with pytest.raises(ValueError, match="must match"):
        witness_ablation(model, bags, y[:-1], ite)
    with pytest.raises(ValueError, match="bag 0"):
        witness_ablation(model, bags, y, [np.zeros(3, int)] + list(ite[1:]))
