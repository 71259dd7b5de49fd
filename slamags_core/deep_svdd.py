"""Deep SVDD: one-class pretraining on slide-negative patches (Ruff et al., ICML 2018).

The strongest known competitor at low witness rates is not a multiple-instance method at all:
model what normal cells look like and call everything far from it abnormal. One-class Deep
SVDD trains a network ``phi`` so that the features of normal data fall close to a fixed centre
``c``,

    min_W  1/n sum_i || phi(x_i; W) - c ||^2   (+ weight decay),

here on the patches of slide-NEGATIVE training bags only (every one of their cells is
normal). A cell's abnormality score is its squared distance ``|| phi(x) - c ||^2``: it ranks
the cells of a bag directly, and the features ``phi`` also feed the MIL models like any
other pretrained encoder's. The method is a row of :data:`slamags_core.strategies.STRATEGIES`
and runs in the shared loop of :mod:`slamags_core.pretrain`.

Hypersphere collapse. The objective has a trivial minimum -- map everything to ``c`` -- and
Ruff et al. (Sec. 3.3) show which network properties make it reachable: (1) a trainable or
all-zero centre, (2) bias terms, since a network can then output a constant, (3) bounded
activations that can saturate. Our choices:

* ``phi`` is the backbone feature ``h`` (conv layers without biases, ReLU, global average
  pooling). The projection head (with biases) is not trained; use ``embedding="h"``.
* BatchNorm's affine shift ``beta`` IS a bias term (and ``gamma = 0`` would make the output
  the constant ``beta``): its affine parameters are frozen at their initial values
  ``gamma = 1, beta = 0``, i.e. BatchNorm without affine, as in Ruff's reference
  implementation. In training mode such a BatchNorm standardises every channel over the batch,
  so a channel cannot be constant across images.
* ``c`` is a buffer, never trained: the mean of ``h`` of the initial network over the
  negative patches (centre crops), computed with BatchNorm in training mode (batch statistics,
  as during the training steps; a fresh network's running statistics are meaningless) on a
  copy, so the encoder itself is untouched. Coordinates below ``eps = 0.1`` are raised to
  ``eps`` (``h >= 0`` after ReLU, so a dead channel would otherwise sit at 0).
* ReLU is unbounded above.

The centre lives in the strategy's "head" module (:class:`SVDDCentre`), so it is saved in
every checkpoint and restored on resume exactly. What remains possible is a spatial pattern
that is the same in every image, which average pooling maps to one point; the per-epoch
collapse monitor (:mod:`slamags_core.monitor`) would show it.

Augmentation: the loop gives this method both views of every negative patch, the centre crop
(Ruff's un-augmented input) and an augmented view (same augmentations as every other method);
both are pulled to ``c``.
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from torch import nn

from slamags_core.augment import Augmenter, as_uint8_batch
from slamags_core.checkpoint import load_checkpoint
from slamags_core.config import PretrainConfig
from slamags_core.embed import embed_images
from slamags_core.encoders import Encoder, autocast, uses_amp
from slamags_core.validation import check_float

CENTRE_EPS = 0.1  # smallest centre coordinate (Ruff et al.'s reference implementation: 0.1)
METHOD = "deep_svdd"


class SVDDCentre(nn.Module):
    """Holds the fixed centre ``c  # (D,)`` as a buffer (saved with the checkpoint, not trained)."""

    def __init__(self, c: torch.Tensor):
        super().__init__()
        self.register_buffer("c", c.detach().float().clone())


def batchnorm_affine_parameters(encoder: Encoder) -> list[nn.Parameter]:
    """The affine ``gamma, beta`` of every BatchNorm layer of the backbone."""
    return [p for m in encoder.backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            for p in m.parameters(recurse=False)]


def freeze_batchnorm_affine(encoder: Encoder) -> None:
    """Make every backbone BatchNorm affine-free: ``gamma, beta`` stay at their values (1, 0)."""
    for p in batchnorm_affine_parameters(encoder):
        p.requires_grad_(False)


@torch.no_grad()
def init_centre(encoder: Encoder, neg_images, cfg: PretrainConfig, device=None, *,
                eps: float = CENTRE_EPS) -> torch.Tensor:
    """``c``: mean backbone feature of the negative patches under the initial network.

    Centre crops in batches of ``cfg.batch_size``, BatchNorm in training mode (batch
    statistics) on a copy of the encoder; coordinates below ``eps`` are set to ``eps``.

    Returns:
        ``(feature_dim,)`` float32 tensor on ``device``.
    """
    eps = check_float(eps, "eps", gt=0)
    device = torch.device(device) if device is not None else next(encoder.parameters()).device
    if len(neg_images) == 0:
        raise ValueError("Deep SVDD needs slide-negative patches to place its centre; got none")
    net = copy.deepcopy(encoder).to(device).train()
    aug, amp = Augmenter.from_config(cfg, device), uses_amp(cfg, device)
    total, n = torch.zeros(encoder.feature_dim, device=device), 0
    for start in range(0, len(neg_images), cfg.batch_size):  # chunks: a memory-mapped pool
        chunk = as_uint8_batch(np.asarray(neg_images[start:start + cfg.batch_size])  # is streamed
                               if not isinstance(neg_images, torch.Tensor) else
                               neg_images[start:start + cfg.batch_size])
        with autocast(amp):
            h, _ = net(aug.center_view(chunk.to(device)))
        total += h.float().sum(0)
        n += len(chunk)
    return (total / n).clamp_min(eps)


def setup(encoder: Encoder, neg_images, cfg: PretrainConfig, device) -> SVDDCentre:
    """The strategy hook (:class:`slamags_core.strategies.Strategy.setup`): freeze the
    BatchNorm affine parameters, then place the centre with the initial network."""
    freeze_batchnorm_affine(encoder)
    return SVDDCentre(init_centre(encoder, neg_images, cfg, device)).to(device)


def svdd_loss(h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """One-class Deep SVDD loss ``mean_i || h_i - c ||^2``; h: (B, D), c: (D,)."""
    return ((h - c) ** 2).sum(1).mean()


def svdd_scores(H, c) -> np.ndarray:
    """Abnormality score of every row: ``|| H_i - c ||^2``; H: (N, D), c: (D,) -> (N,)."""
    H = torch.as_tensor(H, dtype=torch.float64)
    c = torch.as_tensor(c, dtype=torch.float64)
    if H.dim() != 2 or c.shape != (H.shape[1],):
        raise ValueError(f"need H (N, D) and c (D,), got {tuple(H.shape)} and {tuple(c.shape)}")
    return ((H - c) ** 2).sum(1).numpy()


def load_centre(path: str | Path) -> torch.Tensor:
    """The centre ``c`` saved in a Deep SVDD checkpoint (file or folder).

    Raises:
        ValueError: the checkpoint holds another method.
    """
    ckpt = load_checkpoint(path, "cpu")
    if ckpt["method"] != METHOD:
        raise ValueError(f"{path} holds method {ckpt['method']!r}, not {METHOD!r}: no centre")
    return ckpt["head"]["c"]


def cell_scores(encoder: Encoder, c: torch.Tensor, images, cfg: PretrainConfig, *, device=None,
                batch_size: int = 512) -> np.ndarray:
    """Deep SVDD abnormality score of every patch (centre crop, eval mode): ``(N,)``.

    Higher = farther from the centre of normal (slide-negative) cells; rank the cells of a bag
    with it, e.g. through :func:`slamags_core.diagnostics.rank_within_bags`.
    """
    H = embed_images(encoder, images, cfg, device=device, batch_size=batch_size, which="h")
    return svdd_scores(H, c.cpu())
