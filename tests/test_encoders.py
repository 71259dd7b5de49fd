"""Tests of slamags_core.encoders: shapes, the paper's ResNet-18 + projection head, seeding."""
import pytest
import torch
import torchvision
from torch import nn

from slamags_core.config import PretrainConfig
from slamags_core.encoders import ENCODERS, Encoder, build_encoder


@pytest.mark.parametrize("name,width,feat", [("tiny_cnn", 4, 16), ("small_cnn", 4, 32),
                                             ("resnet18", 4, 512)])
def test_shapes(name, width, feat):
    enc = build_encoder(PretrainConfig(encoder=name, width=width, proj_dim=7))
    assert isinstance(enc, Encoder) and enc.feature_dim == feat and enc.proj_dim == 7
    h, z = enc(torch.randn(3, 3, 32, 32))
    assert h.shape == (3, feat) and z.shape == (3, 7)
    # z is the projection head applied to h
    torch.testing.assert_close(z, enc.projector(h))


def test_resnet18_is_the_paper_architecture():
    enc = build_encoder(PretrainConfig(encoder="resnet18", proj_dim=512))
    ref = torchvision.models.resnet18(weights=None)
    n_ref = sum(p.numel() for n, p in ref.named_parameters() if not n.startswith("fc."))
    assert sum(p.numel() for p in enc.backbone.parameters()) == n_ref
    assert isinstance(enc.backbone.fc, nn.Identity)
    lin = [m for m in enc.projector if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in lin] == [(512, 512), (512, 512)]
    assert isinstance(enc.projector[1], nn.ReLU)


def test_seeded_init_is_reproducible():
    cfg = PretrainConfig(encoder="tiny_cnn", width=4)
    torch.manual_seed(3)
    a = build_encoder(cfg).state_dict()
    torch.manual_seed(3)
    b = build_encoder(cfg).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("kw", [{"encoder": "vit"}, {"width": 0}, {"proj_dim": 0}])
def test_bad_config(kw):
    with pytest.raises(ValueError):
        build_encoder(PretrainConfig(**{"encoder": "tiny_cnn", **kw}))


def test_encoder_names():
    assert set(ENCODERS) == {"tiny_cnn", "small_cnn", "resnet18"}
