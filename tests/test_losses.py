"""Tests of slamags_core.losses against independent references.

References: loop-based versions written from the papers' formulas (SimCLR NT-Xent, the SLAM-AGS
similarity loss, Khosla et al.'s L_out), pytorch-metric-learning as an oracle, gradcheck.
"""
import math

import pytest
import torch
from pytorch_metric_learning.losses import NTXentLoss, SupConLoss

from slamags_core.losses import nt_xent, similarity_loss, supcon

D64 = torch.float64


# ----------------------------------------------------------------------------- references
def _cos(a, b):
    return float(a @ b) / math.sqrt(float(a @ a) * float(b @ b))


def ref_nt_xent(z1, z2, t):
    """mean_i -log(exp(s_i,p(i)/t) / sum_{k != i} exp(s_ik/t)), plain loops."""
    Z = torch.cat([z1, z2]).double()
    N, B = Z.shape[0], z1.shape[0]
    total = 0.0
    for i in range(N):
        p = (i + B) % N
        den = sum(math.exp(_cos(Z[i], Z[k]) / t) for k in range(N) if k != i)
        total += -math.log(math.exp(_cos(Z[i], Z[p]) / t) / den)
    return total / N


def ref_similarity(z1, z2, t):
    """(1 - mean_{i != j} s_ij) / t, plain loops."""
    Z = torch.cat([z1, z2]).double()
    N = Z.shape[0]
    s = [_cos(Z[i], Z[j]) for i in range(N) for j in range(N) if i != j]
    return (1 - sum(s) / len(s)) / t


def ref_supcon(z, labels, t):
    """Khosla et al. 2020 eq. 2 (L_out), anchors without positives skipped, plain loops."""
    N = z.shape[0]
    z = z.double()
    terms = []
    for i in range(N):
        P = [p for p in range(N) if p != i and labels[p] == labels[i]]
        if not P:
            continue
        den = sum(math.exp(_cos(z[i], z[a]) / t) for a in range(N) if a != i)
        terms.append(-sum(math.log(math.exp(_cos(z[i], z[p]) / t) / den) for p in P) / len(P))
    return sum(terms) / len(terms)


def _pair(B=5, D=4, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, D, generator=g, dtype=dtype), torch.randn(B, D, generator=g, dtype=dtype)


# ----------------------------------------------------------------------------- NT-Xent
@pytest.mark.parametrize("B,D,t", [(2, 2, 0.07), (5, 3, 0.07), (7, 16, 0.5), (4, 8, 1.0)])
def test_nt_xent_matches_loop_reference(B, D, t):
    z1, z2 = _pair(B, D, seed=B, dtype=D64)
    assert nt_xent(z1, z2, t).item() == pytest.approx(ref_nt_xent(z1, z2, t), rel=1e-10)


@pytest.mark.parametrize("t", [0.07, 0.5])
def test_nt_xent_matches_pytorch_metric_learning(t):
    # PML's NTXentLoss divides cosine similarity by the same temperature; positives are the
    # pairs with equal labels (both directions, self excluded), the denominator is the positive
    # plus all different-label pairs of the anchor = all k != i, and the loss is the mean over
    # the 2B positive pairs -- SimCLR's convention, so labels (0..B-1, 0..B-1) make it an oracle.
    z1, z2 = _pair(6, 5, seed=1, dtype=D64)
    labels = torch.arange(6).repeat(2)
    oracle = NTXentLoss(temperature=t)(torch.cat([z1, z2]), labels)
    torch.testing.assert_close(nt_xent(z1, z2, t), oracle)


def test_nt_xent_perfect_pairs_low_loss_and_bounds():
    # Partners identical and all pairs orthogonal: loss = log(1 + (2B-2) e^{-1/t}) exactly.
    B, t = 3, 0.5
    e = torch.eye(2 * B, dtype=D64)[:B]
    expected = math.log(1 + (2 * B - 2) * math.exp(-1 / t))
    assert nt_xent(e, e.clone(), t).item() == pytest.approx(expected, rel=1e-12)
    # total collapse: every logit equal -> loss = log(2B - 1)
    c = torch.ones(B, 4, dtype=D64)
    assert nt_xent(c, c, t).item() == pytest.approx(math.log(2 * B - 1), rel=1e-12)


def test_nt_xent_scale_invariant_and_stable_at_tiny_temperature():
    z1, z2 = _pair(4, 3, seed=2)
    torch.testing.assert_close(nt_xent(z1, z2), nt_xent(100 * z1, 0.01 * z2))
    small = nt_xent(z1, z2, temperature=1e-4)  # logits up to 1e4: needs log-sum-exp
    assert torch.isfinite(small)
    assert small.item() == pytest.approx(nt_xent(z1.double(), z2.double(), 1e-4).item(), rel=1e-4)


# ----------------------------------------------------------------------------- similarity
@pytest.mark.parametrize("B,D,t", [(2, 2, 0.07), (5, 3, 0.07), (6, 9, 0.3)])
def test_similarity_matches_loop_reference(B, D, t):
    z1, z2 = _pair(B, D, seed=B + 10, dtype=D64)
    assert similarity_loss(z1, z2, t).item() == pytest.approx(ref_similarity(z1, z2, t), rel=1e-10)


def test_similarity_alignment_identity():
    # For unit vectors |u_i - u_j|^2 = 2 - 2 s_ij, so L = mean_{i != j} |u_i - u_j|^2 / (2t)
    # and, via sum_ij s_ij = |sum_i u_i|^2, L = N/(N-1) * (1 - |mean_i u_i|^2) / t.
    z1, z2 = _pair(5, 4, seed=3, dtype=D64)
    t = 0.07
    U = torch.nn.functional.normalize(torch.cat([z1, z2]), dim=1)
    N = U.shape[0]
    d2 = torch.cdist(U, U).pow(2)
    align = d2.sum() / (N * (N - 1)) / (2 * t)
    via_mean = N / (N - 1) * (1 - U.mean(0).pow(2).sum()) / t
    loss = similarity_loss(z1, z2, t)
    torch.testing.assert_close(loss, align)
    torch.testing.assert_close(loss, via_mean)


def test_similarity_collapse_is_zero_and_antipodal_is_max():
    t = 0.07
    v = torch.tensor([[1.0, 2.0, -1.0]]).repeat(4, 1)
    # float32: 1 - mean_off is a cancellation of O(1) terms, so ~1e-7 / t absolute error
    assert similarity_loss(v, 3 * v, t).item() == pytest.approx(0.0, abs=1e-5)
    assert similarity_loss(v.double(), 3 * v.double(), t).item() == pytest.approx(0.0, abs=1e-12)
    # half the views at +e, half at -e: the sum is zero -> maximum N / ((N - 1) t)
    e = torch.tensor([[1.0, 0.0]])
    z1 = torch.cat([e, -e])
    N = 4
    assert similarity_loss(z1, z1.clone(), t).item() == pytest.approx(N / ((N - 1) * t), rel=1e-6)


# ----------------------------------------------------------------------------- SupCon
def test_supcon_matches_loop_reference_and_pml():
    g = torch.Generator().manual_seed(4)
    z = torch.randn(10, 6, generator=g, dtype=D64)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 3, 4])  # anchors 8, 9 have no positive
    t = 0.07
    assert supcon(z, labels, t).item() == pytest.approx(ref_supcon(z, labels, t), rel=1e-10)
    # PML's SupConLoss (adapted from Khosla et al.'s code) averages over non-zero per-anchor
    # losses, i.e. over anchors that have a positive: the same convention.
    torch.testing.assert_close(supcon(z, labels, t), SupConLoss(temperature=t)(z, labels))


def test_supcon_views_equal_nt_xent_when_each_patch_is_its_own_class():
    # With labels = patch ids, P(i) = {p(i)} and SupCon reduces to NT-Xent.
    z1, z2 = _pair(5, 4, seed=5, dtype=D64)
    torch.testing.assert_close(supcon(torch.cat([z1, z2]), torch.arange(5).repeat(2)),
                               nt_xent(z1, z2))


def _simplex(N):
    """N unit vectors in R^N with all pairwise cosines -1/(N-1) (centred standard basis)."""
    E = torch.eye(N, dtype=D64) - 1.0 / N
    return torch.nn.functional.normalize(E, dim=1)


def test_one_label_supcon_degeneracy():
    # One label: each anchor's term is logsumexp(s/t) - mean(s/t) >= log(N-1) (Jensen), with
    # equality iff all its similarities are equal. Collapse (s = 1) and the equiangular simplex
    # (s = -1/(N-1), needs D >= N-1) both reach log(N-1) exactly.
    N, t = 6, 0.07
    labels = torch.zeros(N, dtype=torch.long)
    collapsed = torch.ones(N, 3, dtype=D64)
    spread = _simplex(N)
    assert torch.allclose(spread @ spread.T - torch.eye(N, dtype=D64),
                          -(1 - torch.eye(N, dtype=D64)) / (N - 1))
    minimum = math.log(N - 1)
    assert supcon(collapsed, labels, t).item() == pytest.approx(minimum, rel=1e-12)
    assert supcon(spread, labels, t).item() == pytest.approx(minimum, rel=1e-12)
    # ... but not every "spread" set is a minimiser: random points, or 4 points on a circle
    # (the most spread set in 2-D, not equiangular), give strictly more.
    rnd = torch.randn(N, 3, generator=torch.Generator().manual_seed(6), dtype=D64)
    assert supcon(rnd, labels, t).item() > minimum + 1e-3
    square = torch.tensor([[1.0, 0], [0, 1], [-1, 0], [0, -1]], dtype=D64)
    assert supcon(square, torch.zeros(4), t).item() > math.log(3) + 1e-3
    # The similarity loss tells them apart: 0 when collapsed, its maximum when spread.
    assert similarity_loss(collapsed[:3], collapsed[3:], t).item() == pytest.approx(0, abs=1e-12)
    assert similarity_loss(spread[:3], spread[3:], t).item() == pytest.approx(
        N / ((N - 1) * t), rel=1e-12)
    # PML's SupConLoss needs negative pairs: with one label it returns 0.
    assert SupConLoss(temperature=t)(spread, labels).item() == 0.0


# ----------------------------------------------------------------------------- gradients
def test_gradcheck_float64():
    z1, z2 = _pair(3, 4, seed=7, dtype=D64)
    z1.requires_grad_(True)
    z2.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: nt_xent(a, b, 0.3), (z1, z2))
    assert torch.autograd.gradcheck(lambda a, b: similarity_loss(a, b, 0.3), (z1, z2))
    labels = torch.tensor([0, 1, 0, 1, 0, 2])
    assert torch.autograd.gradcheck(lambda a: supcon(a, labels, 0.3), (torch.cat([z1, z2]),))


# ----------------------------------------------------------------------------- dtypes
def test_float32_matches_float64():
    z1, z2 = _pair(6, 5, seed=8)
    for fn in (nt_xent, similarity_loss):
        out = fn(z1, z2)
        assert out.dtype == torch.float32
        assert out.item() == pytest.approx(fn(z1.double(), z2.double()).item(), rel=1e-5)


def test_bfloat16_autocast_computes_in_float32():
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 4)
    x1, x2 = torch.randn(6, 8), torch.randn(6, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z1, z2 = head(x1), head(x2)
        assert z1.dtype == torch.bfloat16
        losses = [nt_xent(z1, z2), similarity_loss(z1, z2),
                  supcon(torch.cat([z1, z2]), torch.arange(6).repeat(2))]
    ref = [nt_xent(z1.float(), z2.float()), similarity_loss(z1.float(), z2.float())]
    for out, r in zip(losses, ref):
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, r)  # same bf16 inputs, float32 arithmetic
    sum(losses).backward()
    assert torch.isfinite(head.weight.grad).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    z1, z2 = _pair(5, 4, seed=9)
    for fn in (nt_xent, similarity_loss):
        torch.testing.assert_close(fn(z1.cuda(), z2.cuda()).cpu(), fn(z1, z2))


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("fn", [nt_xent, similarity_loss])
def test_pair_losses_validate_inputs(fn):
    z = torch.randn(4, 3)
    with pytest.raises(ValueError, match="B=1"):
        fn(z[:1], z[:1])
    with pytest.raises(ValueError, match=r"\(4, 3\) and \(3, 3\)"):
        fn(z, z[:3])
    with pytest.raises(ValueError, match="2-D"):
        fn(z[0], z[0])
    for bad in (0.0, -0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature"):
            fn(z, z, bad)


def test_supcon_validates_inputs():
    z = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"\(4,\)"):
        supcon(z, torch.zeros(3))
    with pytest.raises(ValueError, match="N=1"):
        supcon(z[:1], torch.zeros(1))
    with pytest.raises(ValueError, match="positive"):
        supcon(z, torch.arange(4))
    with pytest.raises(ValueError, match="temperature"):
        supcon(z, torch.zeros(4), temperature=0)
