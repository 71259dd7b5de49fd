"""Combining per-task gradients: plain sum, PCGrad and Adaptive Gradient Surgery (AGS).

SLAM-AGS (Acerbis et al., ISBI 2026) trains one encoder on two losses. Per step it takes the
gradient of each loss over all trainable parameters, flattened into one vector ``g_i``  # (P,)

* ``"sum"``: ``g = sum_i g_i`` (ordinary multi-task training).
* ``"pcgrad"``: PCGrad (Yu et al., "Gradient Surgery for Multi-Task Learning", NeurIPS 2020).
  Each task's copy ``g_i'`` visits the other tasks j in a random order and, when
  ``<g_i', g_j> < 0``, loses its component along the ORIGINAL ``g_j``:
  ``g_i' <- g_i' - <g_i', g_j> / (|g_j|^2 + eps) * g_j``. Then ``g = sum_i g_i'``.
* ``"ags"``: PCGrad, then the "adaptive" rescale to the norm of the unmodified sum:
  ``g <- g * |sum_i g_i| / (|g| + eps)``.

With no conflicting pair every method returns exactly the plain sum.

Implementation: the projections only need inner products, so they run on the T x T Gram
matrix ``G G^T`` (one per parameter tensor in per-tensor mode) and keep ``g_i'`` as weights
over the original gradients, ``g_i' = sum_l W[i, l] g_l``. The P-sized work is one Gram matrix
and one weighted sum; no Python loop over elements and no host sync (the random order is drawn
on the CPU from ``generator``). The Gram matrix is computed in float64: dot products over
millions of float32 values lose about 1e-3 relative accuracy when TF32 matmuls are enabled.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from slamags_core.validation import check_float, check_int

METHODS = ("sum", "pcgrad", "ags")


@dataclass
class SurgeryStats:
    """Diagnostics of one :func:`combine` call (tensors on the gradients' device).

    Attributes:
        cosine: (T, T) pairwise cosine between the ORIGINAL task gradients (0 where a gradient
            is zero); for two tasks ``cosine[0, 1]`` is the scalar of interest.
        projected: (T,) bool, task i's gradient was projected at least once.
        task_norms: (T,) ``|g_i|``.
        norm_sum: ``|sum_i g_i|``.
        norm_surgery: ``|combined|`` after projection, before the AGS rescale.
        norm_out: ``|returned gradient|``.
        segment_cosine: (S, T, T) cosine per parameter tensor when ``sizes`` was given (the
            per-layer view), else ``None``.
    """

    cosine: Tensor
    projected: Tensor
    task_norms: Tensor
    norm_sum: Tensor
    norm_surgery: Tensor
    norm_out: Tensor
    segment_cosine: Tensor | None = None

    def to_dict(self) -> dict[str, float | list]:
        """Plain Python values for logs (one host sync).

        ``cosine`` is the scalar ``cosine[0, 1]`` for two tasks and the smallest pairwise
        cosine for more; ``cosine_matrix`` is the full (T, T) list; ``conflict`` is True when
        some pair of task gradients has a negative cosine.
        """
        cos = self.cosine.detach().float().cpu()
        T = cos.shape[0]
        off = cos[~torch.eye(T, dtype=torch.bool)]
        out: dict[str, float | list] = {
            "cosine": float(cos[0, 1]) if T == 2 else float(off.min()),
            "cosine_matrix": cos.tolist(),
            "conflict": bool((off < 0).any()),
            "projected": self.projected.cpu().tolist(),
            "task_norms": self.task_norms.detach().float().cpu().tolist(),
            "norm_sum": float(self.norm_sum),
            "norm_surgery": float(self.norm_surgery),
            "norm_out": float(self.norm_out),
        }
        if self.segment_cosine is not None:
            out["segment_cosine"] = self.segment_cosine.detach().float().cpu().tolist()
        return out


def _check_inputs(grads: Sequence[Tensor], method: str, eps: float) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; allowed: {METHODS}")
    if len(grads) < 2:
        raise ValueError(f"need T >= 2 task gradients, got T={len(grads)}")
    check_float(eps, "eps", ge=0)
    g0 = grads[0]
    for i, g in enumerate(grads):
        if g.dim() != 1 or g.shape != g0.shape:
            raise ValueError(f"task gradients must be flat and of equal shape; grads[0] has "
                             f"shape {tuple(g0.shape)}, grads[{i}] has {tuple(g.shape)}")
        if not g.is_floating_point() or g.dtype != g0.dtype or g.device != g0.device:
            raise ValueError(f"grads[{i}] is {g.dtype} on {g.device}; all must share grads[0]'s "
                             f"floating dtype {g0.dtype} and device {g0.device}")


def _check_sizes(sizes: Sequence[int], P: int) -> list[int]:
    sizes = [check_int(s, f"sizes[{i}]", ge=1) for i, s in enumerate(sizes)]
    if not sizes or sum(sizes) != P:
        raise ValueError(f"sizes must be positive and sum to the gradient length P={P}; got "
                         f"{len(sizes)} sizes summing to {sum(sizes)} "
                         f"(min {min(sizes, default=0)})")
    return sizes


def _gram(G: Tensor, sizes: list[int] | None) -> Tensor:
    """Per-segment Gram matrices ``<g_i, g_j>``  # (S, T, T); S = 1 for the global version."""
    if sizes is None:
        return (G @ G.T)[None]
    return torch.stack([part @ part.T for part in torch.split(G, sizes, dim=1)])


def _cosine(gram: Tensor) -> Tensor:
    """Cosine from a Gram matrix (..., T, T); 0 where a gradient is zero."""
    norms = torch.diagonal(gram, dim1=-2, dim2=-1).clamp_min(0).sqrt()  # (..., T)
    denom = norms[..., :, None] * norms[..., None, :]
    return torch.where(denom > 0, gram / denom.clamp_min(torch.finfo(gram.dtype).tiny),
                       torch.zeros_like(gram))


def pcgrad_weights(gram: Tensor, order: Sequence[int], eps: float = 1e-12) -> Tensor:
    """PCGrad on Gram matrices: weights W with ``g_i' = sum_l W[s, i, l] g_l`` per segment s.

    Args:
        gram: (S, T, T) Gram matrices of the original task gradients.
        order: the order (a permutation of range(T)) in which every task visits the others.
        eps: added to ``|g_j|^2`` in the projection denominator.

    Returns:
        (S, T, T) weights; the identity where no projection happened.
    """
    S, T, _ = gram.shape
    W = torch.eye(T, dtype=gram.dtype, device=gram.device).expand(S, T, T).clone()
    not_self = ~torch.eye(T, dtype=torch.bool, device=gram.device)  # (T, T)
    for j in order:
        inner = (W @ gram[:, :, j:j + 1]).squeeze(-1)  # (S, T): <g_i', g_j>
        conflict = (inner < 0) & not_self[:, j]  # (S, T)
        coef = torch.where(conflict, inner / (gram[:, j, j:j + 1] + eps), torch.zeros_like(inner))
        W[:, :, j] -= coef
    return W


def combine(grads: Sequence[Tensor] | Tensor, method: str = "ags", *,
            generator: torch.Generator | None = None, sizes: Sequence[int] | None = None,
            eps: float = 1e-12) -> tuple[Tensor, SurgeryStats]:
    """Combine T task gradients by plain sum, PCGrad or AGS (SLAM-AGS, Acerbis et al. 2026).

    Args:
        grads: T >= 2 flat task gradients of equal shape (P,), same dtype and device, or one
            stacked (T, P) tensor (as :func:`stacked_task_gradients` returns; no copy).
        method: ``"sum"``, ``"pcgrad"`` or ``"ags"`` (the paper).
        generator: CPU generator for the random task order ``torch.randperm(T)``; ``None``
            uses torch's global RNG. One order is shared by all tasks; with T = 2 the order
            cannot change the result.
        sizes: optional per-parameter-tensor sizes summing to P: project per parameter tensor
            instead of over the whole vector (the default, as in the paper). The AGS rescale
            always uses the global norms.
        eps: guards the projection and rescale denominators.

    Returns:
        ``(combined, stats)``: the (P,) gradient to write back and :class:`SurgeryStats`.

    Raises:
        ValueError: for an unknown method, T < 2, unequal shapes/dtypes/devices, bad sizes or
            eps < 0.
    """
    stacked = isinstance(grads, Tensor) and grads.dim() == 2
    _check_inputs(list(grads.unbind(0)) if stacked else grads, method, eps)
    G = grads if stacked else torch.stack(list(grads))  # (T, P)
    T, P = G.shape
    sizes = None if sizes is None else _check_sizes(sizes, P)
    acc = torch.promote_types(G.dtype, torch.float32)
    Ga = G.to(acc)
    gram = _gram(G.to(torch.float64), sizes)  # (S, T, T), float64 whatever the input
    gram_total = gram.sum(dim=0)  # (T, T)
    g_sum = Ga.sum(dim=0)  # (P,)
    norm_sum = g_sum.norm()
    if method == "sum":
        projected = torch.zeros(T, dtype=torch.bool, device=G.device)
        combined = g_sum
    else:
        order = torch.randperm(T, generator=generator).tolist()
        W = pcgrad_weights(gram, order, eps)  # (S, T, T)
        eye = torch.eye(T, dtype=torch.bool, device=G.device)
        projected = ((W != 0) & ~eye).any(dim=2).any(dim=0)  # (T,)
        delta = (W.sum(dim=1) - 1.0).to(acc)  # (S, T): combined = g_sum + sum_l delta_l g_l
        if sizes is None:
            combined = g_sum + (delta[0][:, None] * Ga).sum(0)  # elementwise: no TF32 matmul
        else:
            sizes_t = torch.tensor(sizes, device=G.device)
            combined = g_sum + (torch.repeat_interleave(delta.T, sizes_t, dim=1) * Ga).sum(0)
    norm_surgery = combined.norm()
    out = combined
    if method == "ags":
        scale = torch.where(projected.any(), norm_sum / (norm_surgery + eps),
                            torch.ones_like(norm_sum))
        out = combined * scale
    stats = SurgeryStats(
        cosine=_cosine(gram_total),
        projected=projected,
        task_norms=torch.diagonal(gram_total).clamp_min(0).sqrt(),
        norm_sum=norm_sum,
        norm_surgery=norm_surgery,
        norm_out=out.norm(),
        segment_cosine=None if sizes is None else _cosine(gram),
    )
    return out.to(G.dtype), stats


def param_sizes(params: Sequence[torch.nn.Parameter]) -> list[int]:
    """Number of elements of each parameter tensor (the ``sizes`` for per-tensor surgery)."""
    return [p.numel() for p in params]


def task_gradients(losses: Sequence[Tensor], params: Sequence[torch.nn.Parameter], *,
                   retain_graph: bool | None = None) -> list[Tensor]:
    """One flat (P,) gradient per loss via ``torch.autograd.grad``.

    Parameters a loss does not reach get zeros.

    Args:
        losses: scalar losses sharing (part of) one graph.
        params: the parameters to differentiate, in the order of the flat layout.
        retain_graph: ``None`` keeps the graph for all but the last loss (losses that share a
            graph); ``False`` frees each loss's graph after its backward, which is right when
            the graphs are disjoint (SLAM's two forwards) and is what ``torch.compile``'d graphs
            with donated buffers need.

    Returns:
        A list of T tensors of shape (P,), P = sum of ``p.numel()`` (rows of one (T, P) buffer).
    """
    return list(stacked_task_gradients(losses, params, retain_graph=retain_graph).unbind(0))


def stacked_task_gradients(losses: Sequence[Tensor], params: Sequence[torch.nn.Parameter], *,
                           retain_graph: bool | None = None) -> Tensor:
    """The task gradients of :func:`task_gradients` written into one (T, P) tensor.

    One buffer can be all-reduced across processes in one call and passed to :func:`combine`
    without another copy.
    """
    params = list(params)
    if not params:
        raise ValueError("params is empty; need at least one parameter")
    if len(losses) < 1:
        raise ValueError("losses is empty; need at least one loss")
    sizes = param_sizes(params)
    G = torch.empty(len(losses), sum(sizes), dtype=params[0].dtype, device=params[0].device)
    for k, loss in enumerate(losses):
        keep = k < len(losses) - 1 if retain_graph is None else retain_graph
        gs = torch.autograd.grad(loss, params, retain_graph=keep, allow_unused=True)
        for dst, g, p in zip(torch.split(G[k], sizes), gs, params):
            if g is None:
                dst.zero_()
            else:
                dst.view_as(p).copy_(g)  # logical (NCHW) order whatever g's memory format
    return G


def assign_gradients(params: Sequence[torch.nn.Parameter], flat: Tensor) -> None:
    """Write a flat (P,) gradient back into ``p.grad`` of each parameter (layout of ``params``)."""
    params = list(params)
    sizes = param_sizes(params)
    if flat.dim() != 1 or flat.numel() != sum(sizes):
        raise ValueError(f"flat must have shape ({sum(sizes)},) to match params, "
                         f"got {tuple(flat.shape)}")
    for p, chunk in zip(params, torch.split(flat, sizes)):
        if p.grad is None or p.grad.stride() != p.stride():
            # laid out like the parameter (channels_last stays channels_last), so the
            # optimiser keeps its multi-tensor (foreach) path
            p.grad = torch.empty_like(p)
        p.grad.copy_(chunk.view_as(p))
