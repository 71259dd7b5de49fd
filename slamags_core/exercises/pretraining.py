"""Graders for notebook 04 (pretraining): the collapse monitor's two numbers and the two task
losses of one SLAM step."""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from slamags_core import losses, monitor
from slamags_core.exercises.grading import Case, Report, grade, randn


def _std_ratio_ref(E):
    return monitor.embedding_std(E) * math.sqrt(E.shape[1])


def check_std_ratio(fn: Callable, *, strict: bool = False, seed: int = 0) -> Report:
    """Exercise (04): the collapse monitor's spread, ``std of the unit rows x sqrt(D)``.

    ``fn(E)``: (N, D) embeddings -> float: L2-normalise every row, take each dimension's std
    over the N rows (torch's default, unbiased), average over dimensions, multiply by
    ``sqrt(D)``. About 1 when the rows spread over the sphere, 0 at complete collapse.
    Compared with ``monitor.embedding_std(E) * sqrt(D)``.
    """
    gen = torch.Generator().manual_seed(seed)

    def variant(E, *, normalise=True, dim=0, unbiased=True, scale=True):
        U = F.normalize(E.double(), dim=1) if normalise else E.double()
        s = U.std(dim=dim, unbiased=unbiased).mean()
        return float(s * (math.sqrt(E.shape[1]) if scale else 1))

    mistakes = (
        ("L2-normalise every row first (the monitor measures directions, not lengths)",
         lambda E: variant(E, normalise=False)),
        ("take the std of each DIMENSION over the rows (dim=0), not of each row",
         lambda E: variant(E, dim=1)),
        ("use the unbiased std (torch's default, divide by N - 1), as the monitor does",
         lambda E: variant(E, unbiased=False)),
        ("multiply by sqrt(D) so that a healthy embedding scores about 1",
         lambda E: variant(E, scale=False)),
    )
    point = randn(gen, 1, 16)
    lengths = torch.logspace(-2, 2, 64, dtype=torch.float64)[:, None]
    cases = [
        Case("isotropic Gaussian, N=256, D=16 (healthy: about 1)", (randn(gen, 256, 16),)),
        Case("complete collapse: 64 copies of one point plus 1e-4 noise (about 0)",
              (point + 1e-4 * randn(gen, 64, 16),)),
        Case("rows of lengths 0.01 to 100, N=64, D=8", (randn(gen, 64, 8) * lengths,)),
        Case("a 2-D subspace of D=32 (dimensional collapse), N=128",
              (randn(gen, 128, 2) @ randn(gen, 2, 32),)),
        Case("four rows, D=3", (randn(gen, 4, 3),)),
    ]
    for c in cases:
        c.mistakes = mistakes
    return grade("std ratio", fn, _std_ratio_ref, cases, strict=strict, rtol=1e-5, atol=1e-6,
                  covers="healthy, collapsed, unnormalised, low-rank and tiny inputs")


def check_effective_rank(fn: Callable, *, strict: bool = False, seed: int = 0) -> Report:
    """Exercise (04): effective rank (Roy & Vetterli 2007), compared with ``monitor.effective_rank``.

    ``fn(E)``: (N, D) embeddings -> float ``exp(-sum_k p_k log p_k)`` with ``p = s / sum(s)``,
    ``s`` the singular values of the L2-normalised rows (not centred).
    """
    gen = torch.Generator().manual_seed(seed)

    def variant(E, *, normalise=True, square=False, centre=False, base2=False):
        U = F.normalize(E.double(), dim=1) if normalise else E.double()
        U = U - U.mean(0) if centre else U
        s = torch.linalg.svdvals(U)
        s = s ** 2 if square else s
        p = s / s.sum()
        H = -(p * torch.log(p.clamp_min(1e-12))).sum()
        return float(2 ** (H / math.log(2)) if not base2 else 2 ** H)

    mistakes = (
        ("L2-normalise every row first", lambda E: variant(E, normalise=False)),
        ("p_k = s_k / sum(s) uses the singular values themselves, not their squares (the "
         "eigenvalues)", lambda E: variant(E, square=True)),
        ("do not centre the rows: the monitor measures the uncentred unit vectors",
         lambda E: variant(E, centre=True)),
        ("exp of the entropy in nats: use the natural log and exp (or log2 and 2**)",
         lambda E: variant(E, base2=True)),
    )
    q, _ = torch.linalg.qr(randn(gen, 6, 6))
    cases = [
        Case("isotropic Gaussian, N=200, D=8", (randn(gen, 200, 8),)),
        Case("rank one (every row a multiple of one vector): the answer is 1",
              (randn(gen, 50, 1).abs() @ randn(gen, 1, 10),)),
        Case("6 orthonormal rows in D=6: the answer is 6", (q,)),
        Case("fewer rows than dimensions, N=3, D=10", (randn(gen, 3, 10),)),
        Case("rows of lengths 0.01 to 100",
             (randn(gen, 40, 5) * torch.logspace(-2, 2, 40, dtype=torch.float64)[:, None],)),
        Case("a 2-D subspace of D=16 (dimensional collapse)", (randn(gen, 100, 2) @ randn(gen, 2, 16),)),
    ]
    for c in cases:
        c.mistakes = mistakes
    return grade("effective rank", fn, monitor.effective_rank, cases, strict=strict, rtol=1e-5,
                  atol=1e-7, covers="full rank, rank one, orthonormal, N < D, unnormalised, low-rank")


def _slam_losses_ref(encoder, pos_views, neg_views, temperature):
    _, Z_pos = encoder(torch.cat(list(pos_views)))
    _, Z_neg = encoder(torch.cat(list(neg_views)))
    return (losses.nt_xent(*Z_pos.chunk(2), temperature),
            losses.similarity_loss(*Z_neg.chunk(2), temperature))


def _slam_variant(encoder, pos_views, neg_views, t, *, how):
    p1, p2 = pos_views
    n1, n2 = neg_views
    if how == "one_forward":
        h, z = encoder(torch.cat([p1, p2, n1, n2]))
        zp1, zp2, zn1, zn2 = torch.split(z, [len(p1), len(p2), len(n1), len(n2)])
    elif how == "four_forwards":
        zp1, zp2, zn1, zn2 = (encoder(v)[1] for v in (p1, p2, n1, n2))
    elif how == "h":
        hp, _ = encoder(torch.cat([p1, p2]))
        hn, _ = encoder(torch.cat([n1, n2]))
        (zp1, zp2), (zn1, zn2) = hp.chunk(2), hn.chunk(2)
    else:  # swapped tasks
        _, zn = encoder(torch.cat([p1, p2]))
        _, zp = encoder(torch.cat([n1, n2]))
        (zp1, zp2), (zn1, zn2) = zp.chunk(2), zn.chunk(2)
    return losses.nt_xent(zp1, zp2, t), losses.similarity_loss(zn1, zn2, t)


def check_slam_losses(fn: Callable, *, strict: bool = False, seed: int = 0) -> Report:
    """Exercise (04): the two SLAM task losses of one step, as the pretraining engine computes them.

    ``fn(encoder, pos_views, neg_views, temperature) -> (L_con, L_sim)``: ``encoder(x)`` returns
    ``(h, z)``; ``pos_views = (x1, x2)`` are the two augmented views (B_pos, 3, c, c) of the
    slide-positive patches, ``neg_views`` those of the slide-negative patches. One forward per
    pool (both views of the pool concatenated), NT-Xent on the positive projections ``z``, the
    similarity loss on the negative ones. The encoder is in train mode (BatchNorm uses batch
    statistics), so how the images are grouped into forwards changes the numbers.
    """
    from slamags_core.config import PretrainConfig
    from slamags_core.encoders import build_encoder

    gen = torch.Generator().manual_seed(seed)
    mistakes = (
        ("you ran one forward over both pools: in train mode BatchNorm's batch statistics then mix "
         "positive and negative patches. Forward the positive views (x1 and x2 concatenated) and "
         "the negative views separately", lambda e, p, n, t: _slam_variant(e, p, n, t, how="one_forward")),
        ("forward both views of a pool together (torch.cat([x1, x2])): BatchNorm's batch "
         "statistics depend on what is in the batch", lambda e, p, n, t: _slam_variant(e, p, n, t,
                                                                                       how="four_forwards")),
        ("the losses act on the projections z (the second output of the encoder), not on h",
         lambda e, p, n, t: _slam_variant(e, p, n, t, how="h")),
        ("NT-Xent goes with the slide-POSITIVE views, the similarity loss with the slide-NEGATIVE "
         "ones", lambda e, p, n, t: _slam_variant(e, p, n, t, how="swap")),
    )
    cases = []
    for b_pos, b_neg, t in ((6, 10, 0.07), (8, 8, 0.5), (3, 13, 0.2), (2, 2, 1.0)):
        with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG untouched
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
            enc = build_encoder(PretrainConfig(encoder="tiny_cnn", width=4, proj_dim=8,
                                               crop_size=16)).double()
        enc.train()
        views = [randn(gen, b, 3, 16, 16) for b in (b_pos, b_pos, b_neg, b_neg)]
        cases.append(Case(f"tiny CNN in train mode, B_pos={b_pos}, B_neg={b_neg}, t={t}",
                           (enc, tuple(views[:2]), tuple(views[2:]), t), mistakes=mistakes))
    return grade("SLAM task losses", fn, _slam_losses_ref, cases, strict=strict, rtol=1e-6,
                  atol=1e-8, covers="unequal, equal and the smallest pools, t = 0.07 to 1")
