"""Collapse diagnostics for embedding matrices.

Two numbers per embedding matrix ``E`` (N, D):

- the std of the L2-normalised embeddings, averaged over dimensions (Chen & He, "Exploring
  Simple Siamese Representation Learning", CVPR 2021): about ``1/sqrt(D)`` when the unit
  vectors spread over the sphere, 0 when every embedding is the same point (complete collapse);
- the effective rank (Roy & Vetterli, "The effective rank: a measure of effective
  dimensionality", EUSIPCO 2007): ``exp(H(p))`` with ``p_k = s_k / sum s`` the normalised
  singular values; 1 for a rank-one matrix, ``min(N, D)`` for equal singular values. It also
  catches *dimensional* collapse (Jing et al., ICLR 2022).
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F


class CollapseWarning(UserWarning):
    """Raised (as a warning) when an embedding matrix looks collapsed."""


def _check_matrix(E: torch.Tensor) -> torch.Tensor:
    if E.dim() != 2 or E.shape[0] < 2 or E.shape[1] < 1:
        raise ValueError(f"embeddings must be (N >= 2, D >= 1), got shape {tuple(E.shape)}")
    return E.detach().float()


def embedding_std(E: torch.Tensor) -> float:
    """Mean over dimensions of the per-dimension std of the L2-normalised rows of ``E`` (N, D).

    Healthy: about ``1/sqrt(D)``; collapsed: 0.
    """
    U = F.normalize(_check_matrix(E), dim=1)  # (N, D)
    return float(U.std(dim=0).mean())


def effective_rank(E: torch.Tensor, eps: float = 1e-12) -> float:
    """Effective rank ``exp(-sum_k p_k log p_k)``, ``p = s / ||s||_1`` (Roy & Vetterli 2007).

    Computed on the L2-normalised rows of ``E`` (N, D) (scale-free, uncentred). Returns a value
    in ``[1, min(N, D)]``.
    """
    U = F.normalize(_check_matrix(E), dim=1)  # (N, D)
    s = torch.linalg.svdvals(U.double())  # (min(N, D),)
    p = s / s.sum().clamp_min(eps)
    entropy = -(p * torch.log(p.clamp_min(eps))).sum()
    return float(torch.exp(entropy))


def collapse_report(E: torch.Tensor, *, std_ratio_min: float = 0.1, rank_min: float = 1.5,
                    prefix: str = "") -> dict[str, float | bool]:
    """Both diagnostics plus a verdict.

    Args:
        E: (N, D) embeddings.
        std_ratio_min: collapse if ``embedding_std * sqrt(D)`` falls below this (healthy ~ 1).
        rank_min: collapse if the effective rank falls below this (1 = a single direction).
        prefix: prepended to every key (e.g. ``"z_"``).

    Returns:
        ``{prefix+"std", prefix+"std_ratio", prefix+"erank", prefix+"collapsed"}``.
    """
    std = embedding_std(E)
    ratio = std * E.shape[1] ** 0.5
    erank = effective_rank(E)
    collapsed = bool(ratio < std_ratio_min or erank < rank_min)
    return {f"{prefix}std": std, f"{prefix}std_ratio": ratio, f"{prefix}erank": erank,
            f"{prefix}collapsed": collapsed}


def warn_if_collapsed(report: dict, where: str) -> bool:
    """Emit a :class:`CollapseWarning` naming ``where`` if any ``*collapsed`` entry is True."""
    bad = sorted(k for k, v in report.items() if k.endswith("collapsed") and v)
    if bad:
        details = ", ".join(f"{k}={v:.4g}" for k, v in report.items()
                            if isinstance(v, float))
        warnings.warn(f"embedding collapse detected at {where} ({', '.join(bad)}): {details}",
                      CollapseWarning, stacklevel=2)
    return bool(bad)
