"""The two SLAM-AGS pretraining losses and supervised contrastive learning.

* :func:`nt_xent` — SimCLR's NT-Xent (Chen et al., ICML 2020), task 1 of SLAM-AGS, applied to
  two augmented views of patches from slide-POSITIVE bags.
* :func:`similarity_loss` — SLAM-AGS task 2 (Acerbis et al., ISBI 2026), applied to two views
  of patches from slide-NEGATIVE bags: a pure alignment loss that pulls all views together.
* :func:`supcon` — the supervised contrastive loss ``L_out`` (Khosla et al., NeurIPS 2020), for
  the ``supcon`` baseline and to show why one-label SupCon is degenerate.

All losses work on cosine similarities of L2-normalised embeddings, accept any floating dtype
and device, and compute in float32 (autocast disabled) when given float16/bfloat16 inputs, so
they can sit inside a ``torch.autocast`` region. Notation (docs/notation.md): B = patches in the
batch, 2B stacked views (two per patch), D = embedding width, s_ij = cosine similarity,
t = temperature; V = number of views in :func:`supcon`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from slamags_core.validation import check_float

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _check_floating(**tensors) -> None:
    """ValueError unless every argument is a floating-point torch tensor (names the dtype)."""
    for name, t in tensors.items():
        if not isinstance(t, Tensor):
            raise ValueError(f"{name} must be a torch tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor (embeddings), got {t.dtype}; "
                             f"convert it with {name}.float()")


def _check_pair(z1: Tensor, z2: Tensor) -> None:
    _check_floating(z1=z1, z2=z2)
    if z1.dim() != 2 or z2.dim() != 2:
        raise ValueError(f"z1 and z2 must be 2-D (B, D); got shapes {tuple(z1.shape)} "
                         f"and {tuple(z2.shape)}")
    if z1.shape != z2.shape:
        raise ValueError(f"z1 and z2 must have the same shape; got {tuple(z1.shape)} "
                         f"and {tuple(z2.shape)}")
    if z1.shape[0] < 2:
        raise ValueError(f"batch size B must be >= 2, got B={z1.shape[0]}")


def _unit_views(*zs: Tensor) -> Tensor:
    """Stack views and L2-normalise rows, upcasting half precision to float32."""
    Z = torch.cat(zs, dim=0)  # (N, D)
    if Z.dtype in _LOW_PRECISION:
        Z = Z.float()
    return F.normalize(Z, dim=1)


def nt_xent(z1: Tensor, z2: Tensor, temperature: float = 0.07) -> Tensor:
    """SimCLR NT-Xent loss over the 2B views of a batch.

    For stacked unit views u_1..u_2B, anchor i and its partner p(i) (the other view of the same
    patch)::

        L = mean_i -log( exp(s_i,p(i) / t) / sum_{k != i} exp(s_ik / t) )

    computed as ``logsumexp_{k != i}(s_ik / t) - s_i,p(i) / t`` (numerically stable).
    SLAM-AGS uses t = 0.07 (SimCLR's paper used 0.1 on ImageNet and 0.5 on CIFAR-10).

    Reference: Chen, Kornblith, Norouzi, Hinton, "A Simple Framework for Contrastive Learning
    of Visual Representations", ICML 2020; Acerbis et al., SLAM-AGS, ISBI 2026 (task 1).

    Args:
        z1: (B, D) projections of the first views.
        z2: (B, D) projections of the second views (row b pairs with row b of ``z1``).
        temperature: t > 0.

    Returns:
        Scalar loss (float32 for half-precision inputs, the input dtype otherwise).

    Raises:
        ValueError: for B < 2, a temperature that is not a finite number > 0, shapes that are
            not (B, D) and equal, or tensors that are not floating point.

    NaN or inf inside the embeddings is not checked (that would cost a host sync per step): the
    loss is then NaN, as PyTorch's own losses are; :func:`~slamags_core.pretrain.pretrain` stops
    with ``NonFiniteLossError`` when that happens.
    """
    _check_pair(z1, z2)
    temperature = check_float(temperature, "temperature", gt=0)
    B = z1.shape[0]
    with torch.autocast(device_type=z1.device.type, enabled=False):
        U = _unit_views(z1, z2)  # (2B, D)
        S = U @ U.T / temperature  # (2B, 2B) logits s_ik / t
        self_mask = torch.eye(2 * B, dtype=torch.bool, device=U.device)
        S = S.masked_fill(self_mask, float("-inf"))  # exclude k = i
        idx = torch.arange(2 * B, device=U.device)
        partner = (idx + B) % (2 * B)  # p(i)
        return (torch.logsumexp(S, dim=1) - S[idx, partner]).mean()


def similarity_loss(z1: Tensor, z2: Tensor, temperature: float = 0.07) -> Tensor:
    """SLAM-AGS weakly supervised task: alignment of all slide-negative views.

    Over the 2B stacked unit views::

        L_sim = (t / t_base) * (1 - mean_{i != j} s_ij) / t,   with t = t_base (factor 1)

    All views from slide-negative bags share one label ("negative"), so this is SupCon with a
    single label WITHOUT the log-sum-exp denominator: only the attraction term is left. That
    matters: textbook one-label SupCon is degenerate (collapse and a maximally spread simplex
    give the same value, see :func:`supcon`), whereas this loss has a unique kind of minimum —
    every view at the same point (L = 0). Alone it therefore collapses the encoder; SLAM-AGS
    pairs it with NT-Xent on the positive slides to prevent that.

    Since ``sum_{i,j} s_ij = |sum_i u_i|^2`` the mean is computed in O(B D), and equivalently
    ``L_sim = mean_{i != j} |u_i - u_j|^2 / (2 t)`` (the alignment form, Wang & Isola 2020).

    Reference: Acerbis et al., SLAM-AGS, ISBI 2026 (task 2; authors' code).

    Args:
        z1: (B, D) projections of the first views of negative patches.
        z2: (B, D) projections of the second views.
        temperature: t > 0 (paper: 0.07).

    Returns:
        Scalar loss in [0, 2B / ((2B - 1) t)]: 0 at complete collapse, the maximum when the
        views sum to zero (mean off-diagonal cosine -1/(2B - 1)).

    Raises:
        ValueError: for B < 2, a temperature that is not a finite number > 0, mismatched
            shapes, or tensors that are not floating point.

    NaN or inf inside the embeddings is not checked (that would cost a host sync per step): the
    loss is then NaN, as PyTorch's own losses are; :func:`~slamags_core.pretrain.pretrain` stops
    with ``NonFiniteLossError`` when that happens.
    """
    _check_pair(z1, z2)
    temperature = check_float(temperature, "temperature", gt=0)
    with torch.autocast(device_type=z1.device.type, enabled=False):
        U = _unit_views(z1, z2)  # (N, D)
        N = U.shape[0]
        total = U.sum(dim=0).pow(2).sum()  # sum_{i,j} s_ij
        diag = U.pow(2).sum()  # sum_i s_ii (= N unless a row is zero)
        mean_off = (total - diag) / (N * (N - 1))
        return (1.0 - mean_off) / temperature


def supcon(z: Tensor, labels: Tensor, temperature: float = 0.07) -> Tensor:
    """Supervised contrastive loss ``L_out`` (Khosla et al. 2020) over stacked views.

    For anchor i with positives P(i) = {p != i : y_p = y_i} and A(i) = {a != i}::

        L = mean_{i : |P(i)| > 0} -1/|P(i)| sum_{p in P(i)} log( exp(s_ip/t)
                                                                  / sum_{a in A(i)} exp(s_ia/t) )

    Anchors without any positive are left out of the mean. The (t / t_base) factor of the
    reference code is 1 here (t = t_base).

    With ONE label (P(i) = A(i)) each anchor's term is ``logsumexp_a(s_ia/t) - mean_a(s_ia/t)
    >= log(V - 1)`` (Jensen), with equality iff all of anchor i's similarities are equal. So
    complete collapse (all s = 1) and an equiangular simplex (all s = -1/(V-1), needs
    D >= V - 1) both reach the minimum log(V - 1): the loss cannot tell them apart. This is why
    the authors' code drops the denominator (:func:`similarity_loss`).

    Reference: Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020, eq. 2.

    Args:
        z: (V, D) embeddings, all V views stacked (e.g. ``torch.cat([z1, z2])``, V = 2B).
        labels: (V,) integer labels.
        temperature: t > 0.

    Returns:
        Scalar loss.

    Raises:
        ValueError: for V < 2, temperature <= 0, mismatched shapes, or (labels on the CPU) no
            anchor with a positive. On an accelerator that last check is skipped to avoid a host
            sync, and such a batch gives NaN. Also for a ``z`` that is not floating point.

    NaN or inf inside the embeddings is not checked (that would cost a host sync per step): the
    loss is then NaN, as PyTorch's own losses are; :func:`~slamags_core.pretrain.pretrain` stops
    with ``NonFiniteLossError`` when that happens.
    """
    _check_floating(z=z)
    if not isinstance(labels, Tensor):
        raise ValueError(f"labels must be a torch tensor, got {type(labels).__name__}")
    if z.dim() != 2:
        raise ValueError(f"z must be 2-D (N, D), got shape {tuple(z.shape)}")
    if labels.dim() != 1 or labels.shape[0] != z.shape[0]:
        raise ValueError(f"labels must have shape ({z.shape[0]},), got {tuple(labels.shape)}")
    if z.shape[0] < 2:
        raise ValueError(f"number of views N must be >= 2, got N={z.shape[0]}")
    temperature = check_float(temperature, "temperature", gt=0)
    if labels.device.type == "cpu" and labels.unique().numel() == labels.numel():
        raise ValueError("supcon needs at least one anchor with a positive (two equal labels)")
    with torch.autocast(device_type=z.device.type, enabled=False):
        U = _unit_views(z)  # (N, D)
        N = U.shape[0]
        S = U @ U.T / temperature  # (N, N)
        self_mask = torch.eye(N, dtype=torch.bool, device=U.device)
        log_prob = S - torch.logsumexp(S.masked_fill(self_mask, float("-inf")), dim=1,
                                       keepdim=True)  # (N, N)
        pos = (labels[:, None] == labels[None, :]) & ~self_mask  # (N, N) P(i)
        n_pos = pos.sum(dim=1)  # (N,)
        has_pos = (n_pos > 0).to(log_prob.dtype)  # (N,)
        per_anchor = -(log_prob * pos).sum(dim=1) / n_pos.clamp(min=1)  # (N,)
        return (per_anchor * has_pos).sum() / has_pos.sum()
