"""Pretraining checkpoints: what one holds, loading it safely, and whether it may be resumed.

A checkpoint is one ``torch.save`` dict (written atomically by rank 0 of
:mod:`slamags_core.pretrain` every ``checkpoint_every`` steps) with the keys of
:data:`REQUIRED_KEYS`, the step, the optimiser and scheduler states and the logs. It is always
read with ``weights_only=True``: tensors and plain containers only, never arbitrary pickled
objects. Format 2 counts optimiser steps; format-1 files (epoch-based) still load as encoders
(:func:`load_encoder`) but cannot be resumed.
"""
from __future__ import annotations

import dataclasses
import hashlib
import pickle
import zipfile
from pathlib import Path

import numpy as np
import torch

from slamags_core.config import PretrainConfig
from slamags_core.encoders import Encoder, build_encoder

CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "log.jsonl"
CHECKPOINT_FORMAT = 2
# may differ on resume / load: they change where and how fast, not what is computed
RUNTIME_FIELDS: tuple[str, ...] = ("device", "compile", "pool_placement", "log_every",
                                   "checkpoint_every", "deterministic")
REQUIRED_KEYS: tuple[str, ...] = ("format", "config", "method", "model", "data")


def data_fingerprint(pos, neg) -> dict:
    """Pool sizes, image shape and a digest of a strided subsample (checkpoint compatibility).

    ``pos``/``neg``: arrays, tensors or :class:`~slamags_core.bags.PatchPool` s (the same pixels
    give the same fingerprint whatever the container).
    """
    h = hashlib.sha256()
    for x in (pos, neg):
        h.update(str(tuple(int(d) for d in x.shape)).encode())
        sub = x[:: max(1, len(x) // 64)]
        sub = sub.cpu().numpy() if isinstance(sub, torch.Tensor) else np.asarray(sub)
        h.update(np.ascontiguousarray(sub).tobytes())
    return {"n_pos": int(len(pos)), "n_neg": int(len(neg)),
            "image_shape": [int(d) for d in pos.shape[1:]], "digest": h.hexdigest()[:16]}


def weights_fingerprint(module: torch.nn.Module) -> str:
    """A digest of every parameter and buffer of a module (16 hex digits).

    Caches derived from a trained encoder (its embeddings) key on it: the same run key can
    hold other weights (another sweep folder's pretraining, another thread count or device).
    """
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def load_checkpoint(path: str | Path, device=None) -> dict:
    """Load a pretraining checkpoint safely (``weights_only=True``); ``path`` may be its folder.

    Raises:
        FileNotFoundError: no checkpoint at ``path``.
        ValueError: the file is not a readable ``torch.save`` archive (truncated, corrupt,
            another format), or it is one but not a checkpoint of this project (for example a
            plain ``state_dict`` of weights); the message names the file and the keys expected.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location=device or "cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, RuntimeError, ValueError,
            OSError) as err:
        # Not re-raised with PyTorch's text: it suggests weights_only=False, which would execute
        # code from an untrusted file.
        raise ValueError(f"{path} is not a readable checkpoint (truncated, corrupt, or not a "
                         f"torch.save file): {type(err).__name__}") from None
    missing = [k for k in REQUIRED_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        found = sorted(map(str, ckpt))[:6] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(
            f"{path} is not a checkpoint of this project: expected the keys {list(REQUIRED_KEYS)}, "
            f"missing {missing} (found {found}). Raw encoder weights (a plain state_dict) can be "
            f"loaded with build_encoder(cfg).load_state_dict(torch.load(path, weights_only=True)) "
            f"when they match that architecture.")
    return ckpt


def config_diff(saved: dict, cfg: PretrainConfig) -> list[str]:
    """Fields (except :data:`RUNTIME_FIELDS`) where a checkpoint's config differs from ``cfg``."""
    cur = dataclasses.asdict(cfg)
    keys = sorted((set(saved) | set(cur)) - set(RUNTIME_FIELDS))
    return [f"{k}: checkpoint {saved.get(k)!r} != requested {cur.get(k)!r}"
            for k in keys if saved.get(k) != cur.get(k)]


def check_compatible(ckpt: dict, cfg: PretrainConfig, method: str | None, data: dict | None,
                     path: Path) -> None:
    """ValueError unless the checkpoint has this format, method, config and pools.

    ``method`` / ``data`` of ``None`` are not checked.
    """
    if ckpt.get("format") == 1:
        raise ValueError(f"{path}: checkpoint format 1 counts epochs; this version trains for a "
                         f"number of steps (format {CHECKPOINT_FORMAT}) and cannot resume it. "
                         f"load_encoder still reads its weights; retrain with resume=False")
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: unknown checkpoint format {ckpt.get('format')!r} "
                         f"(this version reads format {CHECKPOINT_FORMAT})")
    if method is not None and ckpt["method"] != method:
        raise ValueError(f"{path} holds method {ckpt['method']!r}, not {method!r}")
    diff = config_diff(ckpt["config"], cfg)
    if diff:
        raise ValueError(f"{path} was written with another config: " + "; ".join(diff))
    if data is not None and ckpt["data"] != data:
        raise ValueError(f"{path} was trained on other pools: {ckpt['data']} != {data}")


def load_encoder(path: str | Path, cfg: PretrainConfig | None = None, device=None) -> Encoder:
    """Rebuild the encoder of a checkpoint (file or its folder), in eval mode.

    Args:
        path: ``checkpoint.pt`` or the ``out_dir`` holding it.
        cfg: if given, must equal the checkpoint's config (except :data:`RUNTIME_FIELDS`).
        device: where to put the encoder (default CPU).

    Raises:
        ValueError: the file is not a checkpoint of this project (see :func:`load_checkpoint`),
            or ``cfg`` differs from the checkpoint's config.
    """
    ckpt = load_checkpoint(path, "cpu")
    if cfg is not None:
        check_compatible(ckpt, cfg, None, None, Path(path))
    names = {f.name for f in dataclasses.fields(PretrainConfig)}
    saved = PretrainConfig(**{k: v for k, v in ckpt["config"].items() if k in names})
    encoder = build_encoder(saved)
    encoder.load_state_dict(ckpt["model"])
    return encoder.to(device or "cpu").eval()
