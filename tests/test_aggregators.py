"""MIL aggregators: paper formulas written out independently, invariances, masking, orientation."""
import numpy as np
import pytest
import torch

from slamags_core.aggregators import (AGGREGATORS, GatedAttention, MILAggregator, MILOutput,
                                      build_mil, masked_median, masked_softmax)
from slamags_core.config import MILConfig

CFG = MILConfig(hidden_dim=16, n_prototypes=2, query_init=0.3)


def _model(name, D=8, cfg=CFG):
    torch.manual_seed(0)
    m = build_mil(name, D, cfg)
    m.mu.normal_()  # a non-trivial standardisation is part of every formula
    m.sigma.uniform_(0.5, 2.0)
    return m.eval()


def _h(m, X):
    return torch.relu(m.embed[0]((X - m.mu) / m.sigma))


@pytest.mark.parametrize("name", AGGREGATORS)
def test_permutation_invariance_and_attention_simplex(name):
    m = _model(name)
    X = torch.randn(17, 8)
    perm = torch.randperm(17)
    out, out_p = m(X, y=1), m(X[perm], y=1)
    assert isinstance(out, MILOutput) and out.logits.shape == (2,) and out.attention.shape == (17,)
    assert out.abnormality.shape == (17,) and out.candidates.shape == (len(m.candidate_names), 17)
    torch.testing.assert_close(out_p.logits, out.logits)
    torch.testing.assert_close(out_p.attention, out.attention[perm])
    torch.testing.assert_close(out_p.abnormality, out.abnormality[perm])
    torch.testing.assert_close(out_p.aux_loss, out.aux_loss)
    assert (out.attention >= 0).all()
    torch.testing.assert_close(out.attention.sum(), torch.tensor(1.0))


@pytest.mark.parametrize("name", AGGREGATORS)
@pytest.mark.parametrize("bag_center", [False, True])
def test_padded_batch_equals_bags_one_by_one(name, bag_center):
    """Padding never leaks: a batch of bags of sizes 5, 9, 3 gives each bag's own outputs."""
    m = _model(name, cfg=MILConfig(hidden_dim=16, n_prototypes=2, bag_center=bag_center))
    bags = [torch.randn(n, 8) for n in (5, 9, 3)]
    X = torch.full((3, 9, 8), 1e3)  # garbage in the padding
    mask = torch.zeros(3, 9, dtype=torch.bool)
    for i, H in enumerate(bags):
        X[i, :len(H)], mask[i, :len(H)] = H, True
    y = torch.tensor([0, 1, 1])
    out = m(X, mask, y=y)
    aux = []
    for i, H in enumerate(bags):
        one = m(H, y=int(y[i]))
        n = len(H)
        torch.testing.assert_close(out.logits[i], one.logits, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out.attention[i, :n], one.attention, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(out.abnormality[i, :n], one.abnormality, rtol=1e-5, atol=1e-5)
        assert (out.attention[i, n:] == 0).all() and torch.isneginf(out.abnormality[i, n:]).all()
        aux.append(one.aux_loss)
    torch.testing.assert_close(out.aux_loss, torch.stack(aux).mean(), rtol=1e-5, atol=1e-6)


def test_mean_and_max_formulas():
    X = torch.randn(9, 8)
    m = _model("mean")
    with torch.no_grad():
        out = m(X)
        h = _h(m, X)
        torch.testing.assert_close(out.logits, m.classifier(h.mean(0)))
        torch.testing.assert_close(out.attention, torch.full((9,), 1 / 9))
        v = h @ (m.classifier.weight[1] - m.classifier.weight[0])
        torch.testing.assert_close(out.abnormality, v)  # before orientation: "+v"
        m = _model("max")
        s = m.score(_h(m, X)).squeeze(-1)
        out = m(X)
    torch.testing.assert_close(out.logits, torch.stack([torch.tensor(0.0), s.max()]))
    torch.testing.assert_close(out.attention, torch.exp(s) / torch.exp(s).sum())
    torch.testing.assert_close(out.abnormality, s)


def test_abmil_matches_ilse_gated_attention():
    """a = softmax(w^T (tanh(V h) * sigm(U h))) written out in NumPy (Ilse et al. 2018, eq. 9)."""
    m = _model("abmil")
    X = torch.randn(11, 8)
    att = m.attention
    with torch.no_grad():
        h = _h(m, X).double().numpy()
        V, bV = att.V.weight.double().numpy(), att.V.bias.double().numpy()
        U, bU = att.U.weight.double().numpy(), att.U.bias.double().numpy()
        w, bw = att.w.weight.double().numpy()[0], att.w.bias.double().numpy()[0]
        out = m(X)
    e = (np.tanh(h @ V.T + bV) * (1 / (1 + np.exp(-(h @ U.T + bU))))) @ w + bw
    a = np.exp(e - e.max()) / np.exp(e - e.max()).sum()
    C, b = m.classifier.weight.detach().double().numpy(), m.classifier.bias.detach().double().numpy()
    logits = a @ h @ C.T + b
    np.testing.assert_allclose(out.attention.numpy(), a, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(out.logits.numpy(), logits, rtol=1e-5, atol=1e-6)
    v = h @ (C[1] - C[0])  # each cell's vote for "abnormal" under the bag classifier
    np.testing.assert_allclose(out.candidates.numpy(), np.stack([v, -v, e, -e]), rtol=1e-5, atol=1e-6)
    # the votes decompose the logit difference: logit_1 - logit_0 = sum_n a_n v_n + (b_1 - b_0)
    np.testing.assert_allclose(logits[1] - logits[0], a @ v + b[1] - b[0], rtol=1e-9)


def test_abmil_starts_as_mean_pooling():
    """With the default query_init = 0 the attention is uniform at initialisation."""
    m = build_mil("abmil", 8, MILConfig(hidden_dim=16))
    out = m(torch.randn(7, 8))
    torch.testing.assert_close(out.attention, torch.full((7,), 1 / 7))


def test_prototype_model_matches_written_formulas():
    m = _model("prototype")
    X = torch.randn(13, 8)
    with torch.no_grad():
        h = _h(m, X).double()
        at = m.attention
        g = torch.tanh(at.V(h.float())).double() * torch.sigmoid(at.U(h.float())).double()  # (N, L)
        P = m.prototypes.double()  # (C, M, L)
        E = torch.stack([torch.stack([g @ P[c, j] for j in range(P.shape[1])]).max(0).values
                         for c in range(2)])  # (C, N)
        A = torch.softmax(E, 1)
        logits = torch.stack([m.head_g[c] * (m.head_v[c] @ (A[c] @ h).float()) / m.head_v[c].norm()
                              + m.head_b[c] for c in range(2)])
        cos = lambda a, b: (a @ b) / (a.norm() * b.norm())  # noqa: E731
        dist1 = torch.stack([1 - max(cos(g[n], P[1, j]) for j in range(P.shape[1])) for n in range(13)])
        sep = np.mean([max(0.0, float(cos(P[0, i], P[1, j]))) for i in range(2) for j in range(2)])
        out = m(X, y=1)
        W = m.head_g.unsqueeze(1) * m.head_v / m.head_v.norm(dim=1, keepdim=True)  # (C, L)
        v = h @ (W[1] - W[0]).double()  # (N,) each cell's vote for "abnormal"
        m.head_v.mul_(3.0)  # weight norm: rescaling v_c leaves the logits unchanged
        logits_scaled = m(X).logits
    torch.testing.assert_close(out.attention.double(), A[1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.logits, logits.float(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.aux_loss.double(), (A[1] * dist1).sum() + sep, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.candidates.double(),
                               torch.stack([v, -v, E[1], -E[1], E[0], -E[0]]), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits_scaled, out.logits)


@pytest.mark.parametrize("name", AGGREGATORS)
def test_bag_centring_ignores_a_slide_offset(name):
    """With bag_center, adding one vector to every cell of a bag (a stain) changes nothing."""
    m = _model(name, cfg=MILConfig(hidden_dim=16, n_prototypes=2, bag_center=True))
    X = torch.randn(10, 8)
    a, b = m(X), m(X + 3.0 * torch.randn(8))
    torch.testing.assert_close(b.logits, a.logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(b.attention, a.attention, rtol=1e-4, atol=1e-6)


def test_masked_helpers():
    e = torch.tensor([[1.0, 2.0, 50.0], [0.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, False], [True, True, True]])
    torch.testing.assert_close(masked_softmax(e, mask),
                               torch.tensor([[1 / (1 + np.e), np.e / (1 + np.e), 0.0], [1 / 3] * 3]))
    x = torch.tensor([[3.0, 1.0, 100.0, 2.0], [4.0, 5.0, 6.0, 7.0]])
    m = torch.tensor([[True, True, False, True], [True, True, True, True]])
    torch.testing.assert_close(masked_median(x, m), torch.tensor([[2.0], [5.0]]))  # lower median


class _FeatureScore(MILAggregator):
    """A hand-built 'model' whose candidate scores are the first feature and its negative."""

    candidate_names = ("+x", "-x")

    def pool(self, h, mask, y):
        x = self._raw[..., 0]
        return torch.zeros(len(x), 2), masked_softmax(x, mask), torch.stack([x, -x], 1), x.new_zeros(())

    def forward(self, X, mask=None, y=None):
        self._raw = X if X.dim() == 3 else X.unsqueeze(0)
        return super().forward(X, mask, y)


def test_orient_picks_the_score_whose_bag_maximum_separates_the_labels():
    """Positive bags hold one cell with a very NEGATIVE first feature: '-x' must be chosen."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(12, 6, 3, generator=g)
    y = torch.tensor([0, 1] * 6)
    X[y == 1, 0, 0] = -10.0
    m = _FeatureScore(3, MILConfig(hidden_dim=4))
    aucs = m.orient(X, torch.ones(12, 6, dtype=torch.bool), y)
    assert aucs["-x"] == 1.0 and aucs["+x"] < 1.0
    assert m.ranking_name == "-x"
    torch.testing.assert_close(m(X[1]).abnormality, -X[1, :, 0])
    with pytest.raises(ValueError, match="positive and negative"):
        m.orient(X, torch.ones(12, 6, dtype=torch.bool), torch.ones(12))


def test_gated_attention_module():
    ga = GatedAttention(4, 6, n_queries=3, query_init=0.5)
    h = torch.randn(2, 5, 4)
    e, g = ga(h)
    assert e.shape == (2, 5, 3) and g.shape == (2, 5, 6)
    torch.testing.assert_close(g, torch.tanh(ga.V(h)) * torch.sigmoid(ga.U(h)))
    torch.testing.assert_close(e, ga.w(g))
    assert (GatedAttention(4, 6)(h)[0] == 0).all()  # query_init = 0: every score equal


def test_shape_and_mask_errors():
    m = build_mil("abmil", 4, CFG)
    with pytest.raises(ValueError, match="expected a non-empty bag"):
        m(torch.randn(5, 3))
    with pytest.raises(ValueError, match="expected a non-empty bag"):
        m(torch.randn(0, 4))
    with pytest.raises(ValueError, match="mask"):
        m(torch.randn(2, 5, 4), torch.zeros(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="unknown MIL aggregator"):
        build_mil("transmil", 4, CFG)
    with pytest.raises(ValueError, match="n_prototypes"):
        build_mil("prototype", 4, MILConfig(n_prototypes=0))
    with pytest.raises(ValueError, match="hidden_dim"):
        build_mil("abmil", 4, MILConfig(hidden_dim=0))
