"""Checkpoint files: loaded safely, foreign or broken files get a clear error naming them."""
import pytest
import torch

from slamags_core.checkpoint import REQUIRED_KEYS, load_checkpoint, load_encoder
from slamags_core.config import PretrainConfig
from slamags_core.encoders import build_encoder

CFG = PretrainConfig(encoder="tiny_cnn", width=4, crop_size=12, proj_dim=8)


def test_plain_state_dict_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(build_encoder(CFG).state_dict(), path)  # what another program would save
    with pytest.raises(ValueError) as err:
        load_encoder(path)
    msg = str(err.value)
    assert str(path) in msg and "not a checkpoint of this project" in msg
    assert all(k in msg for k in REQUIRED_KEYS) and "load_state_dict" in msg


@pytest.mark.parametrize("payload", [b"", b"garbage" * 100, b"PK\x03\x04truncated zip"])
def test_garbage_file_names_the_file_and_never_suggests_unpickling(tmp_path, payload):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(payload)
    with pytest.raises(ValueError) as err:
        load_encoder(tmp_path)
    msg = str(err.value)
    assert str(path) in msg and "weights_only=False" not in msg
    assert err.value.__cause__ is None  # PyTorch's advice to unpickle is not chained either


def test_truncated_checkpoint(tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save({"format": 1, "model": build_encoder(CFG).state_dict()}, path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_checkpoint(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "nope.pt")
