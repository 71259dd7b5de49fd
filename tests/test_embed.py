"""Tests of slamags_core.embed: shapes, a hand computation, batch invariance, the disk cache."""
import numpy as np
import pytest
import torch

from slamags_core.augment import MEAN, STD
from slamags_core.config import PretrainConfig
from slamags_core.embed import embed_images, embedding_cache_path
from slamags_core.encoders import build_encoder

CFG = PretrainConfig(encoder="tiny_cnn", width=4, crop_size=10, proj_dim=6)


@pytest.fixture
def enc():
    torch.manual_seed(0)
    e = build_encoder(CFG)
    e(torch.randn(8, 3, 10, 10))  # move the BatchNorm running stats away from the defaults
    return e


def _imgs(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 14, 14, 3), dtype=np.uint8)


def test_shapes_and_hand_computation(enc):
    imgs = _imgs(7)
    H = embed_images(enc, imgs, CFG)
    Z = embed_images(enc, imgs, CFG, which="z")
    assert H.shape == (7, enc.feature_dim) and Z.shape == (7, 6)
    assert H.dtype == torch.float32 and H.device.type == "cpu"
    x = (imgs[:, 2:12, 2:12].astype(np.float32) / 255 - np.array(MEAN, np.float32)) \
        / np.array(STD, np.float32)
    enc.eval()
    with torch.no_grad():
        h, z = enc(torch.from_numpy(x).permute(0, 3, 1, 2))
    torch.testing.assert_close(H, h)
    torch.testing.assert_close(Z, z)


def test_default_is_config_embedding_and_batches_do_not_matter(enc):
    imgs = _imgs(9)
    enc.train()
    a = embed_images(enc, imgs, CFG, batch_size=2)
    b = embed_images(enc, imgs, CFG, which="h", batch_size=9)
    torch.testing.assert_close(a, b)
    assert enc.training  # mode restored
    z_cfg = PretrainConfig(**{**CFG.__dict__, "embedding": "z"})
    assert embed_images(enc, imgs, z_cfg).shape == (9, 6)


def test_cache_is_written_and_reused(enc):
    imgs = _imgs(5)
    a = embed_images(enc, imgs, CFG, cache_key="demo")
    path = embedding_cache_path("demo")
    assert path.exists()
    with torch.no_grad():
        for p in enc.parameters():
            p.add_(1.0)
    b = embed_images(enc, imgs, CFG, cache_key="demo")  # reused, not recomputed
    assert torch.equal(a, b)
    c = embed_images(enc, _imgs(6), CFG, cache_key="demo")  # other count: recomputed
    assert c.shape == (6, enc.feature_dim)
    saved = torch.load(path, weights_only=True)
    assert torch.equal(saved["embeddings"], c)


@pytest.mark.parametrize("kw", [{"which": "y"}, {"batch_size": 0}, {"cache_key": "a/b"},
                                {"cache_key": ""}])
def test_bad_arguments(enc, kw):
    with pytest.raises(ValueError):
        embed_images(enc, _imgs(2), CFG, **kw)


def test_bad_images(enc):
    with pytest.raises(ValueError, match="uint8"):
        embed_images(enc, _imgs(2).astype(np.float32), CFG)


def test_linear_probe_separable_and_random():
    from slamags_core.embed import linear_probe
    rng = np.random.default_rng(0)
    y = (rng.random(400) < 0.1).astype(int)
    y[:2] = [0, 1]
    X = rng.normal(size=(400, 5))
    sep = X.copy()
    sep[:, 0] += 6 * y  # class shift along one axis: linearly separable
    good = linear_probe(sep[:200], y[:200], sep[200:], y[200:])
    assert good["auroc"] > 0.99 and good["balanced_accuracy"] > 0.95
    assert good["n_test"] == 200 and good["test_positives"] == int(y[200:].sum())
    noise = linear_probe(X[:200], y[:200], X[200:], y[200:])
    assert 0.3 < noise["auroc"] < 0.7  # no signal
    with pytest.raises(ValueError, match="both"):
        linear_probe(X[:10], np.zeros(10), X[10:20], y[10:20])


def test_memory_mapped_images_are_streamed_in_chunks(enc, tmp_path):
    imgs = _imgs(11)
    np.save(tmp_path / "x.npy", imgs)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    torch.testing.assert_close(embed_images(enc, mapped, CFG, batch_size=4),
                               embed_images(enc, imgs, CFG, batch_size=11))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_encoder_is_moved_to_the_requested_device(enc):
    imgs = _imgs(3)
    H = embed_images(enc, imgs, CFG, device="cuda")
    assert next(enc.parameters()).is_cuda and H.device.type == "cpu"
    torch.testing.assert_close(H, embed_images(enc.cpu(), imgs, CFG), rtol=1e-4, atol=1e-4)


def test_bagset_embeddings_cache_keys_on_the_weights(tmp_path, monkeypatch):
    """Two pretrainings of one run key (another sweep folder, thread count or device) can
    differ in the last bits: the second must not reuse the first one's cached embeddings."""
    from slamags_core.config import get_preset
    from slamags_core.pipeline import embed_bagset, get_bags, get_pretrained

    monkeypatch.setenv("SLAMAGS_DATA_DIR", str(tmp_path / "data"))
    preset = get_preset("smoke")
    bags = get_bags(preset, 0.1, 0)
    result = get_pretrained(preset, bags, "random", 0, root=tmp_path / "ck", progress=False)
    first = embed_bagset(preset, bags, result, 0, device="cpu")
    assert torch.equal(embed_bagset(preset, bags, result, 0, device="cpu"), first)  # cached
    with torch.no_grad():
        next(result.encoder.parameters()).mul_(1.5)  # the same run key, other weights
    again = embed_bagset(preset, bags, result, 0, device="cpu")
    assert not torch.equal(again, first)
    with torch.no_grad():
        want = embed_images(result.encoder, bags.images, preset.pretrain, device="cpu")
    torch.testing.assert_close(again, want)
