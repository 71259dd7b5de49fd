"""Graders for notebook 02 (the two SLAM losses): NT-Xent, the similarity loss, one-label SupCon."""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from slamags_core import losses
from slamags_core.exercises.grading import Case, Report, grade, randn


def _views(*zs):
    return torch.cat(zs)


def _ntx_variant(z1, z2, t, *, diag=False, normalise=True, anchors="all", temp=True,
                 reduce="mean", partner_in_denominator=True):
    U = _views(z1, z2)
    U = F.normalize(U, dim=1) if normalise else U
    n, B = U.shape[0], z1.shape[0]
    S = U @ U.T / (t if temp else 1.0)
    idx = torch.arange(n)
    partner = (idx + B) % n
    mask = torch.zeros(n, n, dtype=torch.bool) if diag else torch.eye(n, dtype=torch.bool)
    if not partner_in_denominator:
        mask = mask.clone()
        mask[idx, partner] = True
    per = torch.logsumexp(S.masked_fill(mask, -math.inf), 1) - S[idx, partner]
    per = per[:B] if anchors == "first" else per
    return per.sum() if reduce == "sum" else per.mean()


def check_nt_xent(fn: Callable, *, strict: bool = False, seed: int = 0) -> Report:
    """Exercise (02): NT-Xent from the formula, compared with :func:`losses.nt_xent`.

    ``fn(z1, z2, temperature)``: two (B, D) batches of projections (row b of ``z1`` pairs with
    row b of ``z2``) -> scalar tensor, differentiable w.r.t. ``z1`` and ``z2``.
    """
    gen = torch.Generator().manual_seed(seed)
    mistakes = (
        ("your denominator includes j = i (each view compared with itself, s_ii = 1): mask the "
         "diagonal with -inf before the logsumexp", lambda a, b, t: _ntx_variant(a, b, t, diag=True)),
        ("L2-normalise the views first (s_ij is a cosine similarity)",
         lambda a, b, t: _ntx_variant(a, b, t, normalise=False)),
        ("average over all 2B anchors: the views of z2 are anchors too, not only those of z1",
         lambda a, b, t: _ntx_variant(a, b, t, anchors="first")),
        ("divide the similarities by the temperature t",
         lambda a, b, t: _ntx_variant(a, b, t, temp=False)),
        ("take the mean over the 2B anchors, not the sum",
         lambda a, b, t: _ntx_variant(a, b, t, reduce="sum")),
        ("the denominator sums over every j != i, the partner included",
         lambda a, b, t: _ntx_variant(a, b, t, partner_in_denominator=False)),
    )
    near = randn(gen, 6, 8, dtype=torch.float32)
    scale = torch.logspace(-2, 2, 5, dtype=torch.float64)[:, None]
    collapsed = torch.ones(3, 4, dtype=torch.float64)
    cases = [
        Case("random B=4, D=2, t=0.5 (the notebook's toy size)", (randn(gen, 4, 2), randn(gen, 4, 2), 0.5)),
        Case("random B=8, D=16, t=0.07", (randn(gen, 8, 16), randn(gen, 8, 16), 0.07)),
        Case("the smallest batch, B=2, D=3, t=1.0", (randn(gen, 2, 3), randn(gen, 2, 3), 1.0)),
        Case("rows of lengths 0.01 to 100 (B=5, D=4, t=0.2)",
              (randn(gen, 5, 4) * scale, randn(gen, 5, 4) * scale.flip(0), 0.2)),
        Case("all views equal (collapse): the answer is log(2B - 1)", (collapsed, collapsed.clone(), 0.1),
              hint="at collapse every s_ij = 1, so each term is log(2B - 1)"),
        Case("float32, t=0.01, partners almost equal: exp(s/t) overflows float32",
              (near, near + 1e-3 * randn(gen, 6, 8, dtype=torch.float32), 0.01),
              hint="exp(1/0.01) = e^100 overflows float32: compute logsumexp(s_ij / t) - s_i,p(i) / t "
                   "(torch.logsumexp) instead of log(exp(.) / sum exp(.))"),
        Case("gradients w.r.t. z1 and z2 (B=5, D=4, t=0.2)", (randn(gen, 5, 4), randn(gen, 5, 4), 0.2),
              grad=True),
    ]
    for c in cases:
        c.mistakes = c.mistakes or mistakes
    return grade("NT-Xent", fn, losses.nt_xent, cases, strict=strict, rtol=1e-4, atol=1e-5,
                  covers="B = 2 to 8, t = 0.01 to 1, unnormalised rows, collapse, float32, gradients")


def _sim_variant(z1, z2, t, *, diag=False, normalise=True, temp=True, cross=False):
    if cross:
        u1, u2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
        return (1 - (u1 @ u2.T).mean()) / t
    U = _views(z1, z2)
    U = F.normalize(U, dim=1) if normalise else U
    n = U.shape[0]
    S = U @ U.T
    mean = S.mean() if diag else S[~torch.eye(n, dtype=torch.bool)].mean()
    return (1 - mean) / (t if temp else 1.0)


def check_similarity_loss(fn: Callable, *, strict: bool = False, seed: int = 0) -> Report:
    """Exercise (02): SLAM's similarity loss, compared with :func:`losses.similarity_loss`.

    ``fn(z1, z2, temperature)``: two (B, D) batches of projections of slide-negative patches
    -> ``(1 - mean_{i != j} s_ij) / t`` over the 2B stacked unit views (scalar tensor).
    """
    gen = torch.Generator().manual_seed(seed)
    mistakes = (
        ("leave out the diagonal: the mean runs over pairs i != j (s_ii = 1 would pull the mean up)",
         lambda a, b, t: _sim_variant(a, b, t, diag=True)),
        ("L2-normalise the views first (s_ij is a cosine similarity)",
         lambda a, b, t: _sim_variant(a, b, t, normalise=False)),
        ("divide by the temperature t", lambda a, b, t: _sim_variant(a, b, t, temp=False)),
        ("compare every view with every other view (all 2B stacked), not only z1 against z2",
         lambda a, b, t: _sim_variant(a, b, t, cross=True)),
    )
    collapsed = randn(gen, 1, 5).repeat(4, 1)
    v = F.normalize(randn(gen, 1, 3), dim=1)
    cases = [
        Case("random B=4, D=2, t=0.07", (randn(gen, 4, 2), randn(gen, 4, 2), 0.07)),
        Case("random B=16, D=32, t=0.5", (randn(gen, 16, 32), randn(gen, 16, 32), 0.5)),
        Case("the smallest batch, B=2, D=3, t=1.0", (randn(gen, 2, 3), randn(gen, 2, 3), 1.0)),
        Case("rows of lengths 0.01 to 100 (B=5, D=4, t=0.2)",
              (randn(gen, 5, 4) * torch.logspace(-2, 2, 5, dtype=torch.float64)[:, None],
               randn(gen, 5, 4), 0.2)),
        Case("all views equal (collapse): the answer is 0", (collapsed, collapsed.clone(), 0.07)),
        Case("views that sum to zero (B=2, both views v and -v): the maximum 2B/((2B-1) t)",
              (torch.cat([v, -v]), torch.cat([v, -v]).clone(), 0.1)),
        Case("gradients w.r.t. z1 and z2 (B=5, D=4, t=0.2)", (randn(gen, 5, 4), randn(gen, 5, 4), 0.2),
              grad=True),
    ]
    for c in cases:
        c.mistakes = mistakes
    return grade("similarity loss", fn, losses.similarity_loss, cases, strict=strict, rtol=1e-5,
                  atol=1e-6, covers="B = 2 to 16, t = 0.07 to 1, unnormalised rows, collapse, "
                                    "the maximum, gradients")


def _one_label_supcon_ref(z, t):
    return losses.supcon(z, torch.zeros(z.shape[0], dtype=torch.long), t)


def _supcon_variant(z, t, *, diag_den=False, diag_num=False, normalise=True):
    U = F.normalize(z, dim=1) if normalise else z
    n = U.shape[0]
    S = U @ U.T / t
    eye = torch.eye(n, dtype=torch.bool)
    lse = torch.logsumexp(S if diag_den else S.masked_fill(eye, -math.inf), 1)
    mean_pos = S.mean(1) if diag_num else S.masked_fill(eye, 0).sum(1) / (n - 1)
    return (lse - mean_pos).mean()


def check_one_label_supcon(fn: Callable, *, strict: bool = False, seed: int = 0) -> Report:
    """Exercise (02): SupCon's ``L_out`` when every view has the same label.

    ``fn(z, temperature)``: (V, D) stacked views, all with one label -> scalar tensor
    ``mean_i [ logsumexp_{a != i}(s_ia / t) - mean_{a != i}(s_ia / t) ]``; compared with
    :func:`losses.supcon` with all labels equal.
    """
    gen = torch.Generator().manual_seed(seed)
    mistakes = (
        ("leave out a = i in the denominator (mask the diagonal before the logsumexp)",
         lambda z, t: _supcon_variant(z, t, diag_den=True)),
        ("the positives of anchor i are all OTHER views: leave out a = i in the mean too",
         lambda z, t: _supcon_variant(z, t, diag_num=True)),
        ("L2-normalise the views first", lambda z, t: _supcon_variant(z, t, normalise=False)),
    )
    n_views = 6
    simplex = F.normalize(torch.eye(n_views, dtype=torch.float64) - 1 / n_views, dim=1)
    cases = [
        Case("random, 6 views in D=3, t=0.07", (randn(gen, 6, 3), 0.07)),
        Case("random, 8 views in D=16, t=0.5", (randn(gen, 8, 16), 0.5)),
        Case("two views, t=1.0 (the answer is 0)", (randn(gen, 2, 4), 1.0)),
        Case("rows of lengths 0.01 to 100, t=0.2",
              (randn(gen, 5, 4) * torch.logspace(-2, 2, 5, dtype=torch.float64)[:, None], 0.2)),
        Case("collapse (all views equal): log(V - 1)", (torch.ones(6, 3, dtype=torch.float64), 0.1)),
        Case("the equiangular simplex of 6 views: log(V - 1) again", (simplex, 0.1)),
        Case("gradient w.r.t. z (7 views, D=5, t=0.3)", (randn(gen, 7, 5), 0.3), grad=True),
    ]
    for c in cases:
        c.mistakes = mistakes
    return grade("one-label SupCon", fn, _one_label_supcon_ref, cases, strict=strict, rtol=1e-5,
                  atol=1e-6, covers="2 to 8 views, collapse and simplex, unnormalised rows, gradients")
