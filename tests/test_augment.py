"""Tests of slamags_core.augment: torchvision's colour functions as oracles, hand-made crops,
rotations and normalisation, determinism of the seeded views."""
import colorsys

import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from slamags_core import augment as A
from slamags_core.config import PretrainConfig


def _imgs(n=5, size=12, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _unnorm(v):
    m = torch.tensor(A.MEAN).view(1, 3, 1, 1)
    s = torch.tensor(A.STD).view(1, 3, 1, 1)
    return v * s + m


@pytest.mark.parametrize("ours,theirs,lo,hi", [
    (A.adjust_brightness, TF.adjust_brightness, 0.9, 1.1),
    (A.adjust_contrast, TF.adjust_contrast, 0.9, 1.1),
    (A.adjust_saturation, TF.adjust_saturation, 0.9, 1.1),
    (A.adjust_hue, TF.adjust_hue, -0.1, 0.1),
])
def test_colour_ops_match_torchvision(ours, theirs, lo, hi):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 7, 7, generator=g)
    f = lo + (hi - lo) * torch.rand(6, generator=g)
    ref = torch.stack([theirs(x[i], float(f[i])) for i in range(6)])
    torch.testing.assert_close(ours(x, f), ref, atol=2e-6, rtol=0)


def test_hsv_matches_colorsys():
    x = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    hsv = A.rgb_to_hsv(x)
    for i in range(4):
        for j in range(4):
            ref = colorsys.rgb_to_hsv(*x[0, :, i, j].tolist())
            torch.testing.assert_close(hsv[0, :, i, j], torch.tensor(ref), atol=1e-6, rtol=0)
    torch.testing.assert_close(A.hsv_to_rgb(hsv), x, atol=1e-6, rtol=0)


def test_center_view_by_hand():
    imgs = _imgs(2, 10)
    v = A.Augmenter(6).center_view(imgs)
    ref = (imgs[:, 2:8, 2:8].astype(np.float32) / 255 - np.array(A.MEAN, np.float32)) \
        / np.array(A.STD, np.float32)
    torch.testing.assert_close(v, torch.from_numpy(ref).permute(0, 3, 1, 2))


def test_random_crop_without_other_augmentations_is_a_valid_crop():
    imgs = _imgs(8, 10)
    aug = A.Augmenter(7, generator=torch.Generator().manual_seed(0), jitter=0.0,
                      p_rotate=0.0, p_flip=0.0)
    v = (_unnorm(aug.random_view(imgs)) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
    offsets = set()
    for b in range(8):
        hits = [(t, x0) for t in range(4) for x0 in range(4)
                if np.array_equal(v[b].numpy(), imgs[b, t:t + 7, x0:x0 + 7])]
        assert hits, f"view {b} is not a 7x7 crop of its image"
        offsets.add(hits[0])
    assert len(offsets) > 1  # the offsets are random


def test_rotation_and_flip():
    imgs = _imgs(3, 8)
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255
    rot = A.Augmenter(8, jitter=0.0, p_rotate=1.0, p_flip=0.0)
    torch.testing.assert_close(_unnorm(rot.random_view(imgs)), x.rot90(1, dims=(2, 3)))
    flip = A.Augmenter(8, jitter=0.0, p_rotate=0.0, p_flip=1.0)
    torch.testing.assert_close(_unnorm(flip.random_view(imgs)), x.flip(-1))


def test_views_shapes_and_determinism():
    imgs = _imgs(6, 12)
    cfg = PretrainConfig(crop_size=9)
    a = A.Augmenter.from_config(cfg, generator=torch.Generator().manual_seed(5))
    b = A.Augmenter.from_config(cfg, generator=torch.Generator().manual_seed(5))
    c = A.Augmenter.from_config(cfg, generator=torch.Generator().manual_seed(6))
    (a1, a2), (b1, b2), (c1, c2) = a(imgs), b(imgs), c(imgs)
    assert a1.shape == a2.shape == (6, 3, 9, 9) and a1.dtype == torch.float32
    assert torch.equal(a1, b1) and torch.equal(a2, b2)
    assert not torch.equal(a1, c1) and not torch.equal(a2, c2)
    assert not torch.equal(a1, a2)


def test_negative_first_view_is_centre_crop():
    imgs = _imgs(4, 12)
    aug = A.Augmenter(8, generator=torch.Generator().manual_seed(0))
    v1, v2 = aug(imgs, center_first=True)
    assert torch.equal(v1, A.Augmenter(8).center_view(imgs))
    assert not torch.equal(v1, v2)


def test_jitter_probability():
    """With p_jitter=0.8 about 80% of the images change colour (crop, flip, rotation off)."""
    imgs = _imgs(400, 6)
    aug = A.Augmenter(6, generator=torch.Generator().manual_seed(0), p_rotate=0.0, p_flip=0.0)
    changed = (aug.random_view(imgs) - aug.center_view(imgs)).abs().amax(dim=(1, 2, 3)) > 1e-6
    assert 0.72 < changed.float().mean().item() < 0.88


@pytest.mark.parametrize("bad", [np.zeros((2, 8, 8, 3), np.float32), np.zeros((8, 8, 3), np.uint8),
                                 np.zeros((2, 8, 8, 1), np.uint8)])
def test_bad_images(bad):
    with pytest.raises(ValueError):
        A.Augmenter(4).random_view(bad)


def test_bad_arguments():
    with pytest.raises(ValueError):
        A.Augmenter(9).random_view(_imgs(1, 8))
    with pytest.raises(ValueError):
        A.Augmenter(4, p_rotate=1.5)
    with pytest.raises(ValueError):
        A.Augmenter(4, jitter=0.9)
