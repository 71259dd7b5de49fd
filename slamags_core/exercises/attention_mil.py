"""Graders for notebook 05 (attention MIL): gated attention pooling, and reading an instance
AUROC against the bag size.

The gated-attention reference is the formula written here (not the package's module, whose
name may change)."""
from __future__ import annotations

import math
from typing import Callable

import torch

from slamags_core.exercises.grading import Case, Report, grade, randn


def _gated_attention_ref(R, V_a, U_a, w_a):
    k = torch.tanh(R @ V_a.T) * torch.sigmoid(R @ U_a.T)  # (N, L_a) gated keys
    e = k @ w_a  # (N,) attention logits
    a = torch.softmax(e, 0)  # (N,)
    return a, a @ R  # (N,), (L,)


def check_gated_attention(fn: Callable, *, strict: bool = False, seed: int = 0) -> Report:
    """Exercise (05): gated attention pooling (Ilse, Tomczak, Welling, ICML 2018, eq. 9).

    ``fn(R, V_a, U_a, w_a) -> (a, r_bar)``: instance codes ``R`` (N, L), gate matrices ``V_a``
    and ``U_a`` (L_a, L), score vector ``w_a`` (L_a,) -> attention
    ``a = softmax_n(w_a^T (tanh(V_a r_n) * sigm(U_a r_n)))`` (N,) and the bag vector
    ``r_bar = sum_n a_n r_n`` (L,). Compared with the formula written in this grader.
    """
    gen = torch.Generator().manual_seed(seed)

    def variant(R, V, U, w, *, gate=True, swap=False, mean=False):
        k = torch.tanh(R @ V.T) * (torch.sigmoid(R @ U.T) if gate else 1)
        if swap:
            k = torch.sigmoid(R @ V.T) * torch.tanh(R @ U.T)
        a = torch.softmax(k @ w, 0)
        return a, (R.mean(0) if mean else a @ R)

    mistakes = (
        ("the gate is missing: multiply tanh(V_a r_n) elementwise by sigm(U_a r_n)",
         lambda *x: variant(*x, gate=False)),
        ("tanh goes with V_a, the sigmoid gate with U_a", lambda *x: variant(*x, swap=True)),
        ("the bag vector is the attention-weighted sum of the instance codes, not their mean",
         lambda *x: variant(*x, mean=True)),
        ("softmax over the N cells (dim 0 of the (N,) scores); an attention of all ones means the "
         "softmax ran over a dimension of size 1",
         lambda R, V, U, w: (torch.ones(R.shape[0], dtype=R.dtype), R.sum(0))),
    )

    def params(L, La, scale=1.0):
        return randn(gen, La, L) * scale, randn(gen, La, L) * scale, randn(gen, La) * scale

    R = randn(gen, 30, 8)
    cases = [
        Case("a bag of 30 cells, L=8, L_a=4", (R, *params(8, 4))),
        Case("a bag of one cell: its attention is 1", (randn(gen, 1, 8), *params(8, 4))),
        Case("30 identical cells: uniform attention 1/N", (randn(gen, 1, 6).repeat(30, 1), *params(6, 3))),
        Case("large scores (w_a x 1000): exp overflows unless you use torch.softmax",
              (R, *params(8, 4)[:2], 1000 * randn(gen, 4)),
              hint="torch.softmax subtracts the maximum before exponentiating; exp(e) / exp(e).sum() "
                   "overflows for scores in the hundreds"),
        Case("gradients w.r.t. R, V_a, U_a, w_a (of the sum of squares of both outputs)",
              (randn(gen, 12, 5), *params(5, 3)), grad=True),
    ]
    for c in cases:
        c.mistakes = mistakes
    return grade("gated attention", fn, _gated_attention_ref, cases, strict=strict, rtol=1e-6,
                  atol=1e-9, covers="N = 1 to 30, identical cells, large scores")


def _witness_outrankers_ref(instance_auroc, bag_size, witness_rate):
    n_w = max(1, math.floor(witness_rate * bag_size + 0.5))
    return (1.0 - instance_auroc) * (bag_size - n_w)


def check_witness_outrankers(fn: Callable, *, strict: bool = False) -> Report:
    """Exercise (05): how many negative cells outrank a witness, from an instance AUROC.

    ``fn(instance_auroc, bag_size, witness_rate) -> float``: the AUROC is the probability that
    a random witness scores above a random negative cell, so a witness is outranked on average
    by ``(1 - AUROC) x N_neg`` negatives, ``N_neg = N - round(WR x N)``.
    """
    mistakes = (
        ("only the negative cells can outrank a witness: N_neg = N - round(WR x N), not N",
         lambda auc, n, wr: (1 - auc) * n),
        ("the AUROC is the chance a witness beats a negative; the outrankers are the fraction "
         "1 - AUROC", lambda auc, n, wr: auc * (n - max(1, math.floor(wr * n + 0.5)))),
    )
    cases = [Case(f"instance AUROC {auc:g}, N={n}, WR {wr:g}", (auc, n, wr), mistakes=mistakes)
             for auc, n, wr in ((0.95, 1000, 0.005), (0.93, 200, 0.1), (1.0, 200, 0.05),
                                (0.5, 1000, 0.01), (0.99, 1000, 0.1))]
    return grade("negatives above a witness", fn, _witness_outrankers_ref, cases, strict=strict,
                  rtol=1e-9, atol=1e-9, covers="AUROC 0.5 to 1, bags of 200 and 1000 cells")
