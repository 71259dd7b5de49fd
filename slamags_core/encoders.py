"""Encoders: a backbone giving the feature ``h`` and a projection head giving ``z``.

The paper (Acerbis et al., ISBI 2026) trains a ResNet-18 from scratch (He et al., CVPR 2016)
whose 512-d pooled feature ``h`` feeds a projection head Linear(512, 512)-ReLU-Linear(512, 512)
giving ``z``, the space where the contrastive losses act (Chen et al., SimCLR, ICML 2020).
For CPU presets two small CNNs for 28-40 px patches are provided.
"""
from __future__ import annotations

import contextlib

import torch
import torchvision
from torch import nn

from slamags_core.config import PretrainConfig
from slamags_core.validation import check_int

ENCODERS: tuple[str, ...] = ("tiny_cnn", "small_cnn", "resnet18")


class Encoder(nn.Module):
    """Backbone + projection head.

    Attributes:
        backbone: maps normalised images ``(B, 3, h, w)`` to features ``(B, feature_dim)``.
        projector: maps features to projections ``(B, proj_dim)``.
        feature_dim: width of ``h``.
        proj_dim: width of ``z``.
    """

    def __init__(self, backbone: nn.Module, feature_dim: int, proj_dim: int):
        super().__init__()
        self.backbone = backbone
        self.feature_dim = int(feature_dim)
        self.proj_dim = int(proj_dim)
        self.projector = nn.Sequential(
            nn.Linear(feature_dim, feature_dim), nn.ReLU(inplace=True),
            nn.Linear(feature_dim, proj_dim),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(h, z)``: feature ``(B, feature_dim)`` and projection ``(B, proj_dim)``."""
        h = self.backbone(x)  # (B, feature_dim)
        z = self.projector(h)  # (B, proj_dim)
        return h, z


class GlobalAvgPool(nn.Module):
    """``(B, C, H, W) -> (B, C)``: the mean over space.

    Equal to ``AdaptiveAvgPool2d(1)`` + ``Flatten``, whose CUDA backward has no deterministic
    implementation (it raises under ``torch.use_deterministic_algorithms``); a mean does.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


def _conv_bn(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


def _small_cnn(width: int) -> tuple[nn.Module, int]:
    """Five 3x3 conv-BN-ReLU blocks (strides 2, 2, 1, 2, 1) and global average pooling.

    For a 32 px crop the maps are 16 -> 8 -> 8 -> 4 -> 4 px; features ``8 * width``. The
    early strides keep it fast on a laptop CPU.
    """
    w = width
    layers = (_conv_bn(3, w, 2) + _conv_bn(w, 2 * w, 2) + _conv_bn(2 * w, 2 * w, 1)
              + _conv_bn(2 * w, 4 * w, 2) + _conv_bn(4 * w, 8 * w, 1))
    return nn.Sequential(*layers, GlobalAvgPool()), 8 * w


def _tiny_cnn(width: int) -> tuple[nn.Module, int]:
    """Three strided conv-BN-ReLU blocks and global average pooling (smoke tests); ``4 * width``."""
    w = width
    layers = _conv_bn(3, w, 2) + _conv_bn(w, 2 * w, 2) + _conv_bn(2 * w, 4 * w, 2)
    return nn.Sequential(*layers, GlobalAvgPool()), 4 * w


def _resnet18() -> tuple[nn.Module, int]:
    """torchvision ResNet-18, random init (no pretrained weights), classifier removed: 512-d.

    The average pool is :class:`GlobalAvgPool` (same values, deterministic backward on CUDA).
    """
    net = torchvision.models.resnet18(weights=None)
    net.avgpool, net.fc = GlobalAvgPool(), nn.Identity()  # torchvision flattens after avgpool
    return net, 512


def build_encoder(cfg: PretrainConfig) -> Encoder:
    """Build the encoder named by ``cfg.encoder`` with a projection head to ``cfg.proj_dim``.

    Initialisation uses the global torch RNG; seed it first (the pretraining engine does).

    Args:
        cfg: ``encoder`` in ``ENCODERS``; ``width`` (small CNNs only) and ``proj_dim`` >= 1.

    Returns:
        An :class:`Encoder`. ``"resnet18"`` follows the paper: 512-d ``h`` and the head
        Linear(512, 512)-ReLU-Linear(512, proj_dim).

    Raises:
        ValueError: for an unknown encoder name or a non-positive width / proj_dim.
    """
    if cfg.encoder not in ENCODERS:
        raise ValueError(f"unknown encoder {cfg.encoder!r}; allowed: {ENCODERS}")
    width = check_int(cfg.width, "width", ge=1)
    proj_dim = check_int(cfg.proj_dim, "proj_dim", ge=1)
    if cfg.encoder == "resnet18":
        backbone, dim = _resnet18()
    elif cfg.encoder == "small_cnn":
        backbone, dim = _small_cnn(width)
    else:
        backbone, dim = _tiny_cnn(width)
    return Encoder(backbone, dim, proj_dim)


def uses_amp(cfg: PretrainConfig, device: torch.device) -> bool:
    """The project's AMP policy: bfloat16 autocast when ``cfg.amp`` and the device is CUDA."""
    return bool(cfg.amp) and torch.device(device).type == "cuda"


def autocast(enabled: bool):
    """bfloat16 CUDA autocast when ``enabled`` (see :func:`uses_amp`), else a no-op context."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if enabled else contextlib.nullcontext()
