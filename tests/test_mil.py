"""MIL aggregators and training: paper formulas, invariances, retrieval of planted witnesses."""
import dataclasses

import numpy as np
import pytest
import torch

from slamags_core.config import MILConfig, get_preset
from slamags_core.metrics import retrieval_metrics, topk_hits
from slamags_core.mil import AGGREGATORS, MILOutput, build_mil, predict_bags, train_mil

CFG = MILConfig(epochs=30, hidden_dim=16, n_prototypes=2, patience=30, lr=3e-3)


def _bags(n, N=24, D=8, n_wit=3, shift=4.0, seed=0):
    """Gaussian bags; positive bags (odd index) hold ``n_wit`` witnesses shifted by ``shift``."""
    g = torch.Generator().manual_seed(seed)
    bags, inst = [], []
    for i in range(n):
        H = torch.randn(N, D, generator=g)
        lab = np.zeros(N, dtype=int)
        if i % 2:
            idx = torch.randperm(N, generator=g)[:n_wit]
            H[idx, :2] += shift
            lab[idx.numpy()] = 1
        bags.append((H, i % 2))
        inst.append(lab)
    return bags, inst


def _model(name, D=8):
    torch.manual_seed(0)
    m = build_mil(name, D, CFG)
    m.standardize.mu.normal_()  # non-trivial standardisation is part of every formula
    m.standardize.sigma.uniform_(0.5, 2.0)
    return m.eval()


@pytest.mark.parametrize("name", AGGREGATORS)
def test_permutation_invariance_and_attention_simplex(name):
    m = _model(name)
    H = torch.randn(17, 8)
    perm = torch.randperm(17)
    out, out_p = m(H, y=1), m(H[perm], y=1)
    assert isinstance(out, MILOutput) and out.logits.shape == (2,) and out.attention.shape == (17,)
    torch.testing.assert_close(out_p.logits, out.logits)
    torch.testing.assert_close(out_p.attention, out.attention[perm])
    torch.testing.assert_close(out_p.aux_loss, out.aux_loss)
    assert (out.attention >= 0).all()
    torch.testing.assert_close(out.attention.sum(), torch.tensor(1.0))


def _x(m, H):
    return torch.relu(m.embed[0]((H - m.standardize.mu) / m.standardize.sigma))


def test_mean_and_max_formulas():
    H = torch.randn(9, 8)
    m = _model("mean")
    with torch.no_grad():
        out = m(H)
        torch.testing.assert_close(out.logits, m.classifier(_x(m, H).mean(0)))
        torch.testing.assert_close(out.attention, torch.full((9,), 1 / 9))
        m = _model("max")
        s = m.score(_x(m, H)).squeeze(-1)
        out = m(H)
    torch.testing.assert_close(out.logits, torch.stack([torch.tensor(0.0), s.max()]))
    torch.testing.assert_close(out.attention, torch.exp(s) / torch.exp(s).sum())


def test_abmil_matches_ilse_gated_attention():
    """a = softmax(w^T (tanh(V h) * sigm(U h))) written out in NumPy (Ilse et al. 2018, eq. 9)."""
    m = _model("abmil")
    H = torch.randn(11, 8)
    with torch.no_grad():
        h = _x(m, H).double().numpy()
        V, bV = m.V.weight.double().numpy(), m.V.bias.double().numpy()
        U, bU = m.U.weight.double().numpy(), m.U.bias.double().numpy()
        w, bw = m.w.weight.double().numpy()[0], m.w.bias.double().numpy()[0]
        out = m(H)
    e = (np.tanh(h @ V.T + bV) * (1 / (1 + np.exp(-(h @ U.T + bU))))) @ w + bw
    a = np.exp(e - e.max()) / np.exp(e - e.max()).sum()
    z = a @ h
    logits = z @ m.classifier.weight.detach().double().numpy().T + m.classifier.bias.detach().double().numpy()
    np.testing.assert_allclose(out.attention.numpy(), a, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(out.logits.numpy(), logits, rtol=1e-5, atol=1e-6)


def test_prototype_model_matches_written_formulas():
    m = _model("prototype")
    H = torch.randn(13, 8)
    with torch.no_grad():
        h = _x(m, H).double()
        g = torch.tanh(m.V(h.float())).double() * torch.sigmoid(m.U(h.float())).double()  # (N, L)
        P = m.prototypes.double()  # (C, M, L)
        A = torch.stack([torch.softmax(torch.stack([g @ P[c, j] for j in range(P.shape[1])]).max(0).values, 0)
                         for c in range(2)])  # (C, N)
        logits = torch.stack([m.head_g[c] * (m.head_v[c] @ (A[c] @ h).float()) / m.head_v[c].norm()
                              + m.head_b[c]
                              for c in range(2)])
        cos = lambda a, b: (a @ b) / (a.norm() * b.norm())  # noqa: E731
        dist1 = torch.stack([1 - max(cos(g[n], P[1, j]) for j in range(P.shape[1])) for n in range(13)])
        sep = np.mean([max(0.0, float(cos(P[0, i], P[1, j]))) for i in range(2) for j in range(2)])
        out = m(H, y=1)
        # weight norm: rescaling v_c leaves the logits unchanged
        m.head_v.mul_(3.0)
        logits_scaled = m(H).logits
    torch.testing.assert_close(out.attention.double(), A[1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.logits, logits.float(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.aux_loss.double(), (A[1] * dist1).sum() + sep, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logits_scaled, out.logits)


@pytest.mark.parametrize("name", ["abmil", "prototype"])
def test_planted_witnesses_are_retrieved_first(name):
    train, _ = _bags(16, seed=0)
    val, _ = _bags(8, seed=1)
    test, inst = _bags(8, seed=2)
    model, hist = train_mil(name, train, val, CFG, progress=False)
    prob, att = predict_bags(model, [H for H, _ in test])
    y = np.array([y for _, y in test])
    assert prob[y == 1].min() > prob[y == 0].max()
    for i in np.flatnonzero(y == 1):  # the most attended cell of every positive bag is a witness
        assert topk_hits(att[i], inst[i], 1) == 1
    m = retrieval_metrics(att, inst, y, k=6)  # K = twice the number of witnesses
    assert m["topk_recall"] >= 0.9 and m["instance_auroc"] > 0.9


def test_model_selection_on_validation_loss_and_determinism():
    train, _ = _bags(8, seed=0)
    val, _ = _bags(4, seed=1)
    cfg = dataclasses.replace(CFG, epochs=6, patience=2)
    m1, h1 = train_mil("abmil", train, val, cfg, progress=False)
    m2, h2 = train_mil("abmil", train, val, cfg, progress=False)
    assert [h["val_loss"] for h in h1] == [h["val_loss"] for h in h2]
    for (k, v1), v2 in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(v1, v2), k
    best = int(np.argmin([h["val_loss"] for h in h1]))
    assert h1[best]["best"] and len(h1) <= best + 1 + cfg.patience
    # the restored state is the best epoch's: its validation loss is the minimum
    prob, _ = predict_bags(m1, [H for H, _ in val])
    yv = np.array([y for _, y in val])
    ce = -np.mean(np.log(np.where(yv == 1, prob, 1 - prob)))
    assert ce == pytest.approx(h1[best]["val_loss"], rel=1e-4)
    _, h3 = train_mil("abmil", train, val, dataclasses.replace(cfg, seed=1), progress=False)
    assert [h["val_loss"] for h in h3] != [h["val_loss"] for h in h1]


def test_standardizer_uses_training_statistics():
    train, _ = _bags(4, seed=0)
    val, _ = _bags(2, seed=1)
    model, _ = train_mil("mean", train, val, dataclasses.replace(CFG, epochs=1), progress=False)
    X = torch.cat([H for H, _ in train])
    torch.testing.assert_close(model.standardize.mu, X.mean(0))
    torch.testing.assert_close(model.standardize.sigma, X.std(0, unbiased=False))


def test_smoke_preset_mil_config_is_usable():
    cfg = get_preset("smoke").mil
    train, _ = _bags(4, seed=0)
    val, _ = _bags(2, seed=1)
    model, hist = train_mil("prototype", train, val, cfg, progress=False)
    assert 1 <= len(hist) <= cfg.epochs


def _bad(kind):
    good = [(torch.randn(5, 4), 0), (torch.randn(6, 4), 1)]
    return {
        "no bags": [],
        "empty bag": [(torch.randn(0, 4), 0), (torch.randn(6, 4), 1)],
        "sizes differ": [(torch.randn(5, 4), 0), (torch.randn(6, 3), 1)],
        "label 2": [(torch.randn(5, 4), 2), (torch.randn(6, 4), 1)],
        "label -1": [(torch.randn(5, 4), -1), (torch.randn(6, 4), 1)],
        "label 0.5": [(torch.randn(5, 4), 0.5), (torch.randn(6, 4), 1)],
        "nan": [(torch.full((5, 4), float("nan")), 0), (torch.randn(6, 4), 1)],
        "1-d bag": [(torch.randn(5), 0), (torch.randn(6, 4), 1)],
    }.get(kind, good)


@pytest.mark.parametrize("kind", ["no bags", "empty bag", "sizes differ", "label 2", "label -1", "label 0.5",
                                  "nan", "1-d bag"])
def test_train_mil_bad_bags(kind):
    with pytest.raises(ValueError):
        train_mil("abmil", _bad(kind), _bad("good"), CFG, progress=False)
    with pytest.raises(ValueError):
        train_mil("abmil", _bad("good"), _bad(kind), CFG, progress=False)


def test_error_messages_name_the_problem():
    with pytest.raises(ValueError, match="bag 1 has embedding size 3 but bag 0 has 4"):
        train_mil("abmil", _bad("sizes differ"), _bad("good"), CFG, progress=False)
    with pytest.raises(ValueError, match="bag 0 is empty"):
        predict_bags(build_mil("abmil", 4, CFG), [torch.randn(0, 4)])
    with pytest.raises(ValueError, match="val_bags have embedding size 3"):
        train_mil("abmil", _bad("good"), [(torch.randn(5, 3), 0)], CFG, progress=False)
    with pytest.raises(ValueError, match="allowed labels: 0, 1"):
        train_mil("abmil", _bad("label 2"), _bad("good"), CFG, progress=False)


def test_other_errors():
    with pytest.raises(ValueError, match="unknown MIL aggregator"):
        build_mil("transmil", 4, CFG)
    with pytest.raises(ValueError):
        train_mil("abmil", _bad("good"), _bad("good"), dataclasses.replace(CFG, epochs=0), progress=False)
    with pytest.raises(ValueError):
        build_mil("prototype", 4, dataclasses.replace(CFG, n_prototypes=0))
    m = build_mil("abmil", 4, CFG)
    with pytest.raises(ValueError):
        predict_bags(m, [])
    with pytest.raises(ValueError):
        m(torch.randn(5, 3))  # wrong embedding size for this model


def test_non_finite_loss_during_training_is_reported(monkeypatch):
    import slamags_core.mil as mil_mod

    real = mil_mod._bag_loss

    def diverges(model, H, y, w):
        loss, out = real(model, H, y, w)
        return loss * float("nan"), out

    monkeypatch.setattr(mil_mod, "_bag_loss", diverges)
    bags = [(torch.randn(5, 4), 1), (torch.randn(5, 4), 0)]
    with pytest.raises(FloatingPointError, match="non-finite MIL loss nan at epoch 0, training bag"):
        train_mil("abmil", bags, [(torch.randn(5, 4), 0)], MILConfig(epochs=1), progress=False)
