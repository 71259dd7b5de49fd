"""Frozen-encoder embeddings of every cell, optionally cached on disk.

After pretraining, the encoder is frozen and each cell's patch is mapped to one vector, the
input of the MIL aggregator (Ilse et al., ICML 2018). The paper's code uses the projection
``z``; the backbone feature ``h`` is the common choice (Chen et al., SimCLR, ICML 2020) and
the project's default (``PretrainConfig.embedding``).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from slamags_core.augment import MEAN, STD, center_crop, normalize, to_float
from slamags_core.config import PretrainConfig
from slamags_core.encoders import Encoder, autocast, uses_amp
from slamags_core.utils import atomic_torch_save, cache_dir
from slamags_core.validation import check_float, check_int

EMBEDDINGS = ("h", "z")


def embedding_cache_path(cache_key: str) -> Path:
    """``cache_dir()/"embeddings"/f"{cache_key}.pt"``.

    Raises:
        ValueError: for an empty key or one containing a path separator.
    """
    if not cache_key or "/" in cache_key or "\\" in cache_key or cache_key.startswith("."):
        raise ValueError(f"cache_key must be a plain file stem, got {cache_key!r}")
    return cache_dir() / "embeddings" / f"{cache_key}.pt"


def _check_images(images) -> None:
    """ValueError unless ``images`` is a uint8 ``(N, H, W, 3)`` array, tensor or pool view."""
    dtype = images.dtype
    ok = dtype == torch.uint8 if isinstance(images, torch.Tensor) else np.dtype(dtype) == np.uint8
    if not ok or len(images.shape) != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be uint8 (B, H, W, 3); got {dtype} {tuple(images.shape)}")


def _chunks(images, batch_size: int):
    """uint8 tensors of ``batch_size`` images; the next chunk is read while this one is embedded
    (a memory-mapped set is streamed from disk, never loaded whole)."""
    def read(start: int) -> torch.Tensor:
        part = images[start:start + batch_size]
        return part if isinstance(part, torch.Tensor) else torch.from_numpy(np.array(part))

    starts = list(range(0, len(images), batch_size))
    if not starts:
        return
    with ThreadPoolExecutor(1, thread_name_prefix="embed-read") as pool:
        ahead = pool.submit(read, starts[0])
        for nxt in starts[1:] + [None]:
            chunk = ahead.result()
            if nxt is not None:
                ahead = pool.submit(read, nxt)
            yield chunk


@torch.no_grad()
def _embed(encoder: Encoder, images, cfg: PretrainConfig, device: torch.device,
           batch_size: int, which: str) -> torch.Tensor:
    was_training = encoder.training
    encoder.eval()
    amp = uses_amp(cfg, device)
    mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=device).view(1, 3, 1, 1)
    out = []
    try:
        for chunk in _chunks(images, batch_size):
            x = normalize(to_float(center_crop(chunk.to(device), cfg.crop_size)), mean, std)
            with autocast(amp):
                h, z = encoder(x)
            out.append((h if which == "h" else z).float().cpu())
    finally:
        encoder.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, encoder.feature_dim if which == "h"
                                                  else encoder.proj_dim)


def embed_images(encoder: Encoder, images: np.ndarray, cfg: PretrainConfig, *, device=None,
                 batch_size: int = 512, which: str | None = None,
                 cache_key: str | None = None) -> torch.Tensor:
    """Embed uint8 patches with a frozen encoder: centre crop to ``cfg.crop_size``, normalise.

    Args:
        encoder: a (pretrained) :class:`~slamags_core.encoders.Encoder`; its train/eval mode is
            restored afterwards.
        images: ``(N, H, W, 3)`` uint8: an array (a memory-mapped one is streamed chunk by
            chunk), a tensor or a :class:`~slamags_core.bags.PatchPool`.
        cfg: gives ``crop_size``, ``amp`` and the default ``embedding``.
        device: where to run; the encoder is moved there and stays (default: where it is).
        batch_size: patches per forward, >= 1.
        which: ``"h"`` (backbone feature) or ``"z"`` (projection); default ``cfg.embedding``.
        cache_key: if given, load ``cache_dir()/"embeddings"/f"{cache_key}.pt"`` when it holds
            embeddings of the same kind and count, else compute and save them there. The key
            must identify the encoder and the images (e.g. include a config hash).

    Returns:
        ``(N, D)`` float32 CPU tensor, row i for image i.

    Raises:
        ValueError: for bad images, batch_size < 1, an unknown ``which`` or a bad cache key.
    """
    which = cfg.embedding if which is None else which
    if which not in EMBEDDINGS:
        raise ValueError(f"which must be one of {EMBEDDINGS}, got {which!r}")
    batch_size = check_int(batch_size, "batch_size", ge=1)
    _check_images(images)
    path = embedding_cache_path(cache_key) if cache_key is not None else None
    if path is not None and path.exists():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved.get("which") == which and saved["embeddings"].shape[0] == len(images):
            return saved["embeddings"]
    if device is None:
        device = next(encoder.parameters()).device
    device = torch.device(device)
    encoder.to(device)
    E = _embed(encoder, images, cfg, device, batch_size, which)  # (N, D)
    if path is not None:
        atomic_torch_save({"embeddings": E, "which": which, "n": len(images)}, path)
    return E


def linear_probe(E_train: torch.Tensor | np.ndarray, y_train: np.ndarray,
                 E_test: torch.Tensor | np.ndarray, y_test: np.ndarray, *, C: float = 1.0,
                 max_iter: int = 2000) -> dict[str, float]:
    """Linear probe: logistic regression on frozen embeddings, scored on held-out cells.

    A diagnostic the paper lacks (cf. the linear evaluation protocol of SimCLR, Chen et al.
    2020): how linearly separable are witnesses from other cells in the embedding? Features are
    z-scored with training statistics; classes are weighted to balance (witnesses are rare).

    Args:
        E_train: (n, D) training embeddings; y_train: (n,) 0/1 instance labels.
        E_test: (m, D) test embeddings; y_test: (m,) 0/1 instance labels.
        C: inverse L2 regularisation strength (> 0).
        max_iter: solver iterations.

    Returns:
        ``{"auroc", "balanced_accuracy", "accuracy", "n_train", "n_test", "test_positives"}``.

    Raises:
        ValueError: for mismatched lengths, C <= 0, or a split without both classes.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score
    from sklearn.preprocessing import StandardScaler

    Xtr, Xte = np.asarray(E_train, dtype=np.float64), np.asarray(E_test, dtype=np.float64)
    ytr, yte = np.asarray(y_train).astype(int), np.asarray(y_test).astype(int)
    if len(Xtr) != len(ytr) or len(Xte) != len(yte):
        raise ValueError(f"embeddings and labels differ in length: {len(Xtr)}/{len(ytr)}, "
                         f"{len(Xte)}/{len(yte)}")
    C = check_float(C, "C", gt=0)
    max_iter = check_int(max_iter, "max_iter", ge=1)
    for name, y in (("train", ytr), ("test", yte)):
        if set(np.unique(y)) != {0, 1}:
            raise ValueError(f"{name} labels must contain both 0 and 1, got {np.unique(y)}")
    scaler = StandardScaler().fit(Xtr)
    clf = LogisticRegression(C=C, max_iter=max_iter, class_weight="balanced")
    clf.fit(scaler.transform(Xtr), ytr)
    score = clf.decision_function(scaler.transform(Xte))  # (m,)
    pred = (score > 0).astype(int)
    return {"auroc": float(roc_auc_score(yte, score)),
            "balanced_accuracy": float(balanced_accuracy_score(yte, pred)),
            "accuracy": float((pred == yte).mean()), "n_train": int(len(ytr)),
            "n_test": int(len(yte)), "test_positives": int(yte.sum())}
