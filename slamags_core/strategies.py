"""What each pretraining method optimises: one row per method in :data:`STRATEGIES`.

This is the heart of the paper in one table. SLAM-AGS (Acerbis et al., ISBI 2026) trains an
encoder with two tasks per step: NT-Xent (Chen et al., SimCLR, ICML 2020) over two views of
patches from slide-POSITIVE bags, and the similarity (alignment) loss over two views of patches
from slide-NEGATIVE bags, the task gradients combined by plain sum, PCGrad (Yu et al., NeurIPS
2020) or AGS (PCGrad + rescale to the norm of the plain sum). The baselines are rows of the same
table and run in the same loop (:mod:`slamags_core.pretrain`) on the same batches, and so does
the one-class competitor Deep SVDD (Ruff et al., ICML 2018; :mod:`slamags_core.deep_svdd`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from slamags_core import deep_svdd
from slamags_core.config import METHODS
from slamags_core.losses import nt_xent, similarity_loss, supcon

DIAGNOSTIC_METHODS: tuple[str, ...] = ("sim_only",)  # similarity loss alone: shows collapse
COMPETITOR_METHODS: tuple[str, ...] = ("deep_svdd",)  # beyond the paper (a sweep row: METHODS)
ENGINE_METHODS: tuple[str, ...] = METHODS + tuple(
    m for m in COMPETITOR_METHODS + DIAGNOSTIC_METHODS if m not in METHODS)


# A loss function maps the forward outputs of the step's groups
# to named task losses. ``out[g] = (h, z)`` holds both views of group g stacked: rows [:n] are
# view 1, rows [n:] view 2. ``y`` are the slide labels of the "all" group (1 = positive bag),
# or, for a strategy with ``instance_labels`` (the oracle ceiling), the cells' own labels.

def _halves(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    n = t.shape[0] // 2
    return t[:n], t[n:]


def _loss_simclr(out, y, cfg, head):
    return {"con": nt_xent(*_halves(out["all"][1]), cfg.temperature)}


def _loss_weak(out, y, cfg, head):
    logits = head(out["all"][0].float())  # (2B, 2)
    # cross-entropy written out: CUDA's NLLLoss has no deterministic implementation
    return {"cls": -F.log_softmax(logits, dim=1).gather(1, torch.cat([y, y])[:, None]).mean()}


def _loss_supcon(out, y, cfg, head):
    return {"supcon": supcon(out["all"][1], torch.cat([y, y]), cfg.temperature)}


def _loss_slam(out, y, cfg, head):
    return {"con": nt_xent(*_halves(out["pos"][1]), cfg.temperature),
            "sim": similarity_loss(*_halves(out["neg"][1]), cfg.temperature)}


def _loss_sim_only(out, y, cfg, head):
    return {"sim": similarity_loss(*_halves(out["neg"][1]), cfg.temperature)}


def _loss_oracle(out, y, cfg, head):
    """CEILING, not a method: a patch classifier on ``h`` trained with the INSTANCE labels.

    ``y`` here are the cells' own labels (1 = witness, 0 = any other cell), which no other
    method sees. Class-balanced per batch (mean of the two classes' mean cross-entropies), as
    witnesses are rare; a batch without witnesses uses the negatives' term alone.
    """
    logits = head(out["all"][0].float())  # (2B, 2)
    y2 = torch.cat([y, y])
    ce = F.cross_entropy(logits, y2, reduction="none")
    return {"cls": torch.stack([ce[y2 == c].mean() for c in (0, 1) if (y2 == c).any()]).mean()}


def _loss_deep_svdd(out, y, cfg, head):
    return {"svdd": deep_svdd.svdd_loss(out["neg"][0].float(), head.c)}  # both views -> c


@dataclass(frozen=True)
class Strategy:
    """How one pretraining method uses the shared loop."""

    groups: tuple[str, ...]     # forwards per step: "all" (pos+neg together), "pos", "neg"
    loss_fn: Callable | None    # (out, y, cfg, head) -> {task: scalar loss}; None = no training
    surgery: str | None = None  # surgery.combine method for the SLAM task pair
    center_neg: bool = False    # the first view of a negative patch is a centre crop (SLAM)
    head: bool = False          # train a linear head on h (weak: slide labels; oracle: cell labels)
    instance_labels: bool = False  # y = the cells' own labels, not slide labels (oracle CEILING)
    setup: Callable | None = None  # (encoder, neg_images, cfg, device) -> head module, run on
                                   # the initial encoder (deep_svdd: freeze BN affine, centre c)


STRATEGIES: dict[str, Strategy] = {
    "random": Strategy((), None),
    "simclr": Strategy(("all",), _loss_simclr),
    "weak": Strategy(("all",), _loss_weak, head=True),
    "supcon": Strategy(("all",), _loss_supcon),
    "slam_sum": Strategy(("pos", "neg"), _loss_slam, "sum", center_neg=True),
    "slam_pcgrad": Strategy(("pos", "neg"), _loss_slam, "pcgrad", center_neg=True),
    "slam_ags": Strategy(("pos", "neg"), _loss_slam, "ags", center_neg=True),
    "sim_only": Strategy(("neg",), _loss_sim_only, center_neg=True),
    # A ceiling that uses labels no other method has (the instance labels of the training
    # bags' cells): the test bed for MIL, where a failure cannot be blamed on the encoder.
    "oracle": Strategy(("all",), _loss_oracle, head=True, instance_labels=True),
    "deep_svdd": Strategy(("neg",), _loss_deep_svdd, center_neg=True, setup=deep_svdd.setup),
}
