"""Batched, on-device augmentations and normalisation for pretraining.

The paper's pipeline (Acerbis et al., ISBI 2026; authors' code): random crop of ``crop_size``
from the rendered patch (no resize), horizontal flip, colour jitter 0.1 applied with
probability 0.8, a 90-degree rotation with probability 0.8; the first view of a slide-negative
patch is a centre crop only. Colour jitter follows the definitions of torchvision's
``ColorJitter(0.1, 0.1, 0.1, 0.1)`` (brightness, contrast, saturation factors in [0.9, 1.1],
hue shift in [-0.1, 0.1]) but in a fixed order and with one factor per image, vectorised over
the batch. Every random number comes from one CPU ``torch.Generator``, so a seed gives the same
views on every device. On an accelerator a view costs one host-to-device transfer (its random
numbers, drawn at once) and no synchronisation: constants live on the device.

Images enter as ``uint8`` ``(B, H, W, 3)`` (the project's image contract) and leave as
normalised float ``(B, 3, c, c)``.
"""
from __future__ import annotations

import numpy as np
import torch

from slamags_core.config import PretrainConfig
from slamags_core.validation import check_float, check_int

MEAN: tuple[float, float, float] = (0.6009, 0.5513, 0.7394)  # authors' normalisation mean
STD: tuple[float, float, float] = (0.1982, 0.2448, 0.1076)   # authors' normalisation std
_GRAY = (0.2989, 0.587, 0.114)  # ITU-R 601 luma weights, as torchvision's rgb_to_grayscale


def as_uint8_batch(images: np.ndarray | torch.Tensor, device: torch.device | str | None = None
                   ) -> torch.Tensor:
    """Validate an image batch and return it as a ``uint8`` tensor ``(B, H, W, 3)`` on ``device``.

    Raises:
        ValueError: if the array is not uint8 of shape ``(B, H, W, 3)``.
    """
    x = torch.from_numpy(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"images must be uint8 (B, H, W, 3); got {x.dtype} {tuple(x.shape)}")
    return x.to(device) if device is not None else x


def crop(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, size: int) -> torch.Tensor:
    """Per-image crops: ``x`` (B, H, W, C), ``top``/``left`` (B,) ints -> (B, size, size, C)."""
    ar = torch.arange(size, device=x.device)
    rows = top.to(x.device)[:, None] + ar  # (B, size)
    cols = left.to(x.device)[:, None] + ar  # (B, size)
    b = torch.arange(x.shape[0], device=x.device)
    return x[b[:, None, None], rows[:, :, None], cols[:, None, :]]


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """Centre crop of channels-last images ``(B, H, W, C)`` to ``(B, size, size, C)``."""
    size = _check_size(x, size)
    top, left = (x.shape[1] - size) // 2, (x.shape[2] - size) // 2
    return x[:, top:top + size, left:left + size]


def to_float(x: torch.Tensor) -> torch.Tensor:
    """``uint8`` (B, H, W, 3) -> float32 (B, 3, H, W) in [0, 1]."""
    return x.permute(0, 3, 1, 2).float().div_(255.0)


def normalize(x: torch.Tensor, mean=MEAN, std=STD) -> torch.Tensor:
    """Channel-wise ``(x - mean) / std`` for float images ``(B, 3, H, W)``.

    ``mean``/``std`` are 3-tuples or tensors broadcastable to ``(1, 3, 1, 1)`` (pass tensors
    already on ``x``'s device to avoid a host-to-device copy per call).
    """
    m = mean if isinstance(mean, torch.Tensor) else \
        torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    s = std if isinstance(std, torch.Tensor) else \
        torch.tensor(std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - m) / s


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """Luma ``(B, 1, H, W)`` of RGB images ``(B, 3, H, W)``."""
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return r * _GRAY[0] + g * _GRAY[1] + b * _GRAY[2]


def _blend(x: torch.Tensor, other: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """``clamp(f * x + (1 - f) * other, 0, 1)`` with one factor per image, ``f`` (B,)."""
    f = f.view(-1, 1, 1, 1)
    return torch.lerp(other, x, f).clamp_(0, 1) if other.shape == x.shape else \
        (x * f).add_((1 - f) * other).clamp_(0, 1)


def adjust_brightness(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Scale by ``f`` (B,), clamp to [0, 1] (torchvision ``adjust_brightness``)."""
    return (x * f.view(-1, 1, 1, 1)).clamp_(0, 1)


def adjust_contrast(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Blend with the image's mean luma (torchvision ``adjust_contrast``)."""
    mean = grayscale(x.mean(dim=(2, 3), keepdim=True))  # (B, 1, 1, 1): luma of channel means
    return _blend(x, mean, f)


def adjust_saturation(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Blend with the luma image (torchvision ``adjust_saturation``)."""
    return _blend(x, grayscale(x).expand_as(x), f)


def rgb_to_hsv(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """RGB (B, 3, H, W) in [0, 1] -> HSV with hue in [0, 1) (as Python's ``colorsys``)."""
    r, g, b = x.unbind(1)
    maxc, minc = x.amax(1), x.amin(1)
    delta = maxc - minc
    s = torch.where(maxc > 0, delta / maxc.clamp_min(eps), torch.zeros_like(maxc))
    d = delta.clamp_min(eps)
    rc, gc, bc = (maxc - r) / d, (maxc - g) / d, (maxc - b) / d
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta > 0, (h / 6.0) % 1.0, torch.zeros_like(h))
    return torch.stack([h, s, maxc], 1)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """HSV (B, 3, H, W) with hue in [0, 1) -> RGB (inverse of :func:`rgb_to_hsv`).

    Uses the closed form ``c_n = v - v * s * clamp(min(k, 4 - k), 0, 1)``,
    ``k = (n + 6 h) mod 6`` with ``n = 5, 3, 1`` for R, G, B.
    """
    h, s, v = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    k = torch.cat([(n + 6.0 * h) % 6.0 for n in (5.0, 3.0, 1.0)], dim=1)  # (B, 3, H, W)
    return v - v * s * torch.minimum(k, 4.0 - k).clamp_(0, 1)


def adjust_hue(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Rotate the hue by ``f`` (B,) in [-0.5, 0.5] (torchvision ``adjust_hue``)."""
    hsv = rgb_to_hsv(x)
    h = (hsv[:, 0] + f.view(-1, 1, 1)) % 1.0
    return hsv_to_rgb(torch.stack([h, hsv[:, 1], hsv[:, 2]], 1))


def _check_size(x: torch.Tensor, size: int) -> int:
    return check_int(size, f"crop size (images of shape {tuple(x.shape)})", ge=1,
                     le=min(x.shape[1], x.shape[2]))


class Augmenter:
    """The paper's two-view augmentation, batched on the device and seeded.

    Args:
        crop_size: side of the square crops (no resize).
        device: where the views are computed (the input batch is moved there).
        generator: CPU generator that draws every random number (seeds the views).
        jitter: colour-jitter strength (paper: 0.1 for brightness/contrast/saturation/hue).
        p_jitter: probability of applying the jitter to an image (paper: 0.8).
        p_rotate: probability of a 90-degree rotation (paper: 0.8).
        p_flip: probability of a horizontal flip (paper: 0.5, torchvision's default).

    Raises:
        ValueError: for probabilities outside [0, 1], jitter outside [0, 0.5] or crop_size < 1.
    """

    def __init__(self, crop_size: int, *, device: torch.device | str | None = None,
                 generator: torch.Generator | None = None, jitter: float = 0.1,
                 p_jitter: float = 0.8, p_rotate: float = 0.8, p_flip: float = 0.5,
                 mean=MEAN, std=STD):
        self.p_jitter, self.p_rotate, self.p_flip = (
            check_float(p, name, ge=0, le=1) for name, p in
            (("p_jitter", p_jitter), ("p_rotate", p_rotate), ("p_flip", p_flip)))
        self.jitter = check_float(jitter, "jitter", ge=0, le=0.5)
        self.crop_size = check_int(crop_size, "crop_size", ge=1)
        self.mean, self.std = tuple(mean), tuple(std)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        # normalisation constants, created on the device once (not once per view)
        self._mean = torch.tensor(self.mean, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(self.std, device=self.device).view(1, 3, 1, 1)

    @classmethod
    def from_config(cls, cfg: PretrainConfig, device=None, generator=None) -> "Augmenter":
        """Augmenter with the paper's settings and ``cfg.crop_size``."""
        return cls(cfg.crop_size, device=device, generator=generator)

    def _rand(self, *shape: int) -> torch.Tensor:
        """Uniform [0, 1) numbers from the CPU generator, sent to the device in one transfer."""
        r = torch.rand(*shape, generator=self.generator)
        if self.device.type == "cuda":
            return r.pin_memory().to(self.device, non_blocking=True)
        return r.to(self.device)

    def center_view(self, images) -> torch.Tensor:
        """Centre crop + normalisation: uint8 (B, H, W, 3) -> float (B, 3, c, c)."""
        x = as_uint8_batch(images, self.device)
        return normalize(to_float(center_crop(x, self.crop_size)), self._mean, self._std)

    def random_view(self, images) -> torch.Tensor:
        """Random crop, flip, colour jitter, 90-degree rotation, normalisation -> (B, 3, c, c)."""
        x = as_uint8_batch(images, self.device)
        _check_size(x, self.crop_size)
        n, c = x.shape[0], self.crop_size
        r = self._rand(9, n)  # every random number of this view: rows top, left, flip, jitter,
        # rotate, then the four jitter factors
        top = (r[0] * (x.shape[1] - c + 1)).long()
        left = (r[1] * (x.shape[2] - c + 1)).long()
        flip, jit, rot = r[2] < self.p_flip, r[3] < self.p_jitter, r[4] < self.p_rotate
        u = r[5:] * 2 - 1  # (4, B) in [-1, 1)
        v = to_float(crop(x, top, left, c))  # (B, 3, c, c)
        v = torch.where(flip.view(-1, 1, 1, 1), v.flip(-1), v)
        if self.jitter > 0:
            j = adjust_brightness(v, 1 + self.jitter * u[0])
            j = adjust_contrast(j, 1 + self.jitter * u[1])
            j = adjust_saturation(j, 1 + self.jitter * u[2])
            j = adjust_hue(j, self.jitter * u[3])
            v = torch.where(jit.view(-1, 1, 1, 1), j, v)
        v = torch.where(rot.view(-1, 1, 1, 1), v.rot90(1, dims=(2, 3)), v)
        return normalize(v, self._mean, self._std)

    def __call__(self, images, center_first: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Two views ``(v1, v2)`` of a batch; ``center_first`` makes ``v1`` a centre crop
        (the paper's treatment of slide-negative patches)."""
        v1 = self.center_view(images) if center_first else self.random_view(images)
        return v1, self.random_view(images)
