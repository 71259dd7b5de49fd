"""Graders for notebook 03 (gradient surgery): PCGrad for two and for T tasks, AGS."""
from __future__ import annotations

from typing import Callable

import torch

from slamags_core import surgery
from slamags_core.exercises.grading import Case, Report, grade, randn


def _project(gi, gj):
    """``gi`` minus its component along ``gj`` when they conflict (``<gi, gj> < 0``)."""
    dot = gi @ gj
    return gi - dot / (gj @ gj + 1e-12) * gj if dot < 0 else gi


def _two(g_con, g_sim, method):
    # with two tasks the visiting order cannot change the result; a private generator keeps the
    # caller's global RNG untouched
    return surgery.combine([g_con, g_sim], method, generator=torch.Generator().manual_seed(0))[0]


def _pcgrad_two_ref(g_con, g_sim):
    return _two(g_con, g_sim, "pcgrad")


def check_pcgrad_two_tasks(fn: Callable, *, strict: bool = False, seed: int = 0) -> Report:
    """Exercise (03): PCGrad for SLAM's two tasks, compared with ``surgery.combine(.., "pcgrad")``.

    ``fn(g_con, g_sim)``: two flat (P,) task gradients -> the combined (P,) update
    ``g̃_con + g̃_sim``, where each gradient loses its component along the OTHER task's
    ORIGINAL gradient when the two conflict.
    """
    gen = torch.Generator().manual_seed(seed)
    mistakes = (
        ("you projected g_sim onto the normal plane of the MODIFIED g̃_con; PCGrad projects each "
         "gradient against the other task's ORIGINAL gradient",
         lambda a, b: _project(a, b) + _project(b, _project(a, b))),
        ("project only when the gradients conflict (<g_con, g_sim> < 0); otherwise keep both",
         lambda a, b: (a - (a @ b) / (b @ b) * b) + (b - (a @ b) / (a @ a) * a)),
        ("both gradients are projected, not only g_con", lambda a, b: _project(a, b) + b),
        ("return the sum of the two projected gradients, not the sum of the originals",
         lambda a, b: a + b),
    )
    g = randn(gen, 20)
    conflict_b = -0.5 * g + 0.3 * randn(gen, 20)
    cases = [
        Case("conflicting gradients, P=20", (g, conflict_b)),
        Case("agreeing gradients (cosine > 0): the answer is the plain sum",
              (g, 0.7 * g + 0.3 * randn(gen, 20))),
        Case("exactly opposite gradients, g_sim = -g_con: the answer is 0", (g, -g)),
        Case("orthogonal gradients (dot = 0): no projection",
             (torch.tensor([1.0, 0.0, 0.0]).double(), torch.tensor([0.0, 2.0, 0.0]).double())),
        Case("very unequal norms (|g_sim| = 100 |g_con|), conflicting", (g, 100 * conflict_b)),
        Case("random P=1000, float32", (randn(gen, 1000, dtype=torch.float32),
                                         -randn(gen, 1000, dtype=torch.float32) - 0.05)),
    ]
    for c in cases:
        c.mistakes = mistakes
    return grade("PCGrad (two tasks)", fn, _pcgrad_two_ref, cases, strict=strict, rtol=1e-4,
                  atol=1e-6, covers="conflict, agreement, opposite and orthogonal gradients, unequal "
                                    "norms, float32")


def _order_for(T: int, seed: int) -> list[int]:
    return torch.randperm(T, generator=torch.Generator().manual_seed(seed)).tolist()


def _pcgrad_ref_seeded(seed: int):
    def ref(grads, order):
        out, _ = surgery.combine(list(grads), "pcgrad", generator=torch.Generator().manual_seed(seed))
        return out
    return ref


def _pcgrad_variant(grads, order, *, modified=False, fixed_order=False, simultaneous=False):
    originals = [g.clone() for g in grads]
    current = [g.clone() for g in grads]
    out = []
    for i in range(len(grads)):
        gi = originals[i].clone()
        for j in (range(len(grads)) if fixed_order else order):
            if j == i:
                continue
            against = current[j] if modified else originals[j]
            dot = (originals[i] if simultaneous else gi) @ against
            if dot < 0:
                gi = gi - dot / (against @ against + 1e-12) * against
        current[i] = gi
        out.append(gi)
    return torch.stack(out).sum(0)


def check_pcgrad(fn: Callable, *, strict: bool = False, seed: int = 0) -> Report:
    """Exercise (03): PCGrad for T tasks in a given order (Yu et al., NeurIPS 2020).

    ``fn(grads, order)``: a list of T flat (P,) task gradients and a permutation ``order`` of
    ``range(T)`` -> the combined (P,) update ``sum_i g̃_i``. Each task i starts from a copy
    ``g̃_i = g_i`` and visits the other tasks j in ``order``; when ``<g̃_i, g_j> < 0`` it loses
    its component along the ORIGINAL ``g_j``. Compared with ``surgery.combine(grads, "pcgrad")``
    given a generator that draws the same order.
    """
    gen = torch.Generator().manual_seed(seed)
    mistakes = (
        ("you projected against the other tasks' MODIFIED gradients g̃_j; project against the "
         "ORIGINAL g_j (keep the inputs unchanged, work on copies)",
         lambda gs, o: _pcgrad_variant(gs, o, modified=True)),
        ("visit the other tasks in the given `order`, not in 0, 1, 2, ...: with three or more "
         "tasks the order changes the result",
         lambda gs, o: _pcgrad_variant(gs, o, fixed_order=True)),
        ("recompute <g̃_i, g_j> with the running (already projected) g̃_i before each projection, "
         "not with the original g_i", lambda gs, o: _pcgrad_variant(gs, o, simultaneous=True)),
        ("project only on conflict; without any conflict PCGrad is the plain sum",
         lambda gs, o: torch.stack([g - sum((g @ h) / (h @ h) * h for h in gs if h is not g)
                                    for g in gs]).sum(0)),
    )
    cases = []
    for k, (T, P, desc) in enumerate(((2, 10, "two conflicting tasks"), (3, 12, "three random tasks"),
                                      (3, 3, "three tasks in 3-D, a cycle of conflicts"),
                                      (4, 50, "four random tasks"), (3, 8, "three agreeing tasks"))):
        case_seed = seed * 100 + k
        order = _order_for(T, case_seed)
        if "cycle" in desc:
            grads = [torch.tensor(v, dtype=torch.float64) for v in
                     ([1.0, 0.2, 0.0], [-0.8, 1.0, 0.3], [-0.3, -0.9, 1.0])]
        elif "agreeing" in desc:
            base = randn(gen, P)
            grads = [base + 0.2 * randn(gen, P) for _ in range(T)]
        else:
            grads = [randn(gen, P) for _ in range(T)]
            grads[1] = grads[1] - 1.2 * grads[0]
        cases.append(Case(f"{desc}, T={T}, P={P}, order={order}", (grads, order), mistakes=mistakes,
                           reference=_pcgrad_ref_seeded(case_seed)))
    return grade("PCGrad (T tasks)", fn, None, cases, strict=strict, rtol=1e-6, atol=1e-9,
                  covers="T = 2 to 4, orders that matter, agreeing tasks")


def _ags_ref(g_con, g_sim):
    return _two(g_con, g_sim, "ags")


def check_ags(fn: Callable, *, strict: bool = False, seed: int = 0) -> Report:
    """Exercise (03): Adaptive Gradient Surgery, compared with ``surgery.combine(.., "ags")``.

    ``fn(g_con, g_sim)`` -> PCGrad's combined gradient rescaled to the norm of the plain sum,
    ``g_ags = g_pc * |g_con + g_sim| / |g_pc|`` (``g_pc = g̃_con + g̃_sim``); a zero ``g_pc``
    stays zero.
    """
    gen = torch.Generator().manual_seed(seed)
    pc = _pcgrad_two_ref

    def rescale(to):
        return lambda a, b: pc(a, b) * to(a, b) / pc(a, b).norm()

    mistakes = (
        ("you returned PCGrad's gradient: AGS rescales it to the norm of the plain sum |g_con + g_sim|",
         pc),
        ("rescale to |g_con + g_sim| (the norm of the sum), not |g_con| + |g_sim|",
         rescale(lambda a, b: a.norm() + b.norm())),
        ("rescale to |g_con + g_sim|, not to the larger task norm",
         rescale(lambda a, b: torch.maximum(a.norm(), b.norm()))),
        ("rescale to |g_con + g_sim|, not to the mean task norm",
         rescale(lambda a, b: (a.norm() + b.norm()) / 2)),
        ("the direction must be PCGrad's (g̃_con + g̃_sim), only the length is the sum's",
         lambda a, b: (a + b)),
    )
    g = randn(gen, 20)
    conflict_b = -0.5 * g + 0.3 * randn(gen, 20)
    cases = [
        Case("conflicting gradients, P=20", (g, conflict_b)),
        Case("agreeing gradients: the answer is the plain sum", (g, 0.5 * g + 0.2 * randn(gen, 20))),
        Case("very unequal norms (|g_sim| = 100 |g_con|), conflicting", (g, 100 * conflict_b)),
        Case("exactly opposite gradients: PCGrad gives 0, so does AGS (0 / 0 must not give NaN)", (g, -g),
              hint="g_pc = 0 here: guard the division (the package divides by |g_pc| + 1e-12)"),
        Case("random P=1000, float32", (randn(gen, 1000, dtype=torch.float32),
                                         -randn(gen, 1000, dtype=torch.float32) - 0.05)),
    ]
    for c in cases:
        c.mistakes = mistakes
    return grade("AGS", fn, _ags_ref, cases, strict=strict, rtol=1e-4, atol=1e-6,
                  covers="conflict, agreement, unequal norms, opposite gradients, float32")
