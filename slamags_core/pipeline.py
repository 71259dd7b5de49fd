"""The pipeline glue: bags -> pretrained encoder -> embeddings of every cell, all cached.

Notebooks 05-08 and the sweep share these functions, so a checkpoint trained once (by
notebook 04 or by the sweep) is reused everywhere that asks for the same configuration.
Cache keys cover the full configuration (preset stages, witness rate, seed, method).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from slamags_core.bags import BagSet, load_or_build_bags
from slamags_core.checkpoint import RUNTIME_FIELDS, weights_fingerprint
from slamags_core.config import BagConfig, METHODS, Preset, PretrainConfig
from slamags_core.embed import embed_images
from slamags_core.pretrain import PretrainResult, pretrain
from slamags_core.utils import cache_dir, config_hash


# Patches per forward when embedding whole bag sets. Inference of the small CNNs is overhead-bound
# on a CPU: 4096 runs 3.5x faster than 512 (16,384 laptop cells, 2 shared cores: ~3,900 vs
# ~1,100 cells/s); ResNet-18 at 224 px keeps 512 (activation memory).
EMBED_BATCH: dict[str, int] = {"tiny_cnn": 4096, "small_cnn": 4096, "resnet18": 512}


def bag_config(preset: Preset, witness_rate: float | None = None, seed: int = 0) -> BagConfig:
    """The preset's bag config at a witness rate and seed (``None`` keeps the preset's WR)."""
    wr = preset.bags.witness_rate if witness_rate is None else witness_rate
    return dataclasses.replace(preset.bags, witness_rate=wr, seed=seed)


def pretrain_config(preset: Preset, seed: int = 0) -> PretrainConfig:
    """The preset's pretraining config with its seed set."""
    return dataclasses.replace(preset.pretrain, seed=seed)


def get_bags(preset: Preset, witness_rate: float | None = None, seed: int = 0) -> BagSet:
    """Simulated train/val/test bags for this preset, witness rate and seed (disk-cached)."""
    return load_or_build_bags(preset.cells, bag_config(preset, witness_rate, seed))


def run_key(preset: Preset, bagset: BagSet, method: str, seed: int) -> str:
    """Identity of one pretraining run: data (the bag set's config), method and config (except
    the fields that only change where and how fast it runs, ``checkpoint.RUNTIME_FIELDS``)."""
    cfg = {k: v for k, v in dataclasses.asdict(pretrain_config(preset, seed)).items()
           if k not in RUNTIME_FIELDS}
    return f"{method}-{config_hash(bagset.config, method, cfg)}"


def get_pretrained(preset: Preset, bagset: BagSet, method: str, seed: int = 0, *,
                   device: torch.device | str | None = None, root: str | Path | None = None,
                   progress: bool = True, resume: bool = True,
                   stop_after: int | None = None) -> PretrainResult:
    """Pretrain ``method`` on the bag set's pools, or resume / reload its checkpoint.

    Under ``torchrun`` every process calls this and the pretraining is data-parallel.

    Args:
        preset: the stage configs.
        bagset: bags whose *training* split provides the two pretraining pools.
        method: one of :data:`slamags_core.config.METHODS`.
        seed: pretraining seed.
        device: compute device (default: the config's choice).
        root: checkpoint folder (default ``data/cache/checkpoints``).
        progress: show progress bars.
        resume: continue or reload an existing checkpoint (``False``: start afresh).
        stop_after: stop after this many steps (see :func:`~slamags_core.pretrain.pretrain`).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; allowed: {METHODS}")
    root = Path(root) if root is not None else cache_dir() / "checkpoints"
    pos, neg = bagset.pretraining_pools()  # index views (+ instance labels, for oracle)
    return pretrain(method, pos, neg, pretrain_config(preset, seed), device=device,
                    out_dir=root / run_key(preset, bagset, method, seed), resume=resume,
                    progress=progress, stop_after=stop_after)


def embed_bagset(preset: Preset, bagset: BagSet, result: PretrainResult, seed: int = 0, *,
                 device: torch.device | str | None = None, which: str | None = None
                 ) -> torch.Tensor:
    """Embeddings ``H  # (N, D)`` of every cell of the bag set with the frozen encoder (cached).

    ``which``: ``"h"`` (backbone) or ``"z"`` (projection); default the preset's
    ``pretrain.embedding``. Both come from the same pretraining run.
    """
    which = preset.pretrain.embedding if which is None else which
    # the weights, not only the run's identity: another folder's (or thread count's) pretraining
    # of the same run may differ in the last bits, and must not reuse these embeddings
    key = f"{run_key(preset, bagset, result.method, seed)}-{weights_fingerprint(result.encoder)}-{which}"
    return embed_images(result.encoder, bagset.images, pretrain_config(preset, seed),
                        device=device, cache_key=key, which=which,
                        batch_size=EMBED_BATCH.get(preset.pretrain.encoder, 512))


def prepare_embeddings(preset: Preset, method: str, witness_rate: float | None = None,
                       seed: int = 0, *, device: torch.device | str | None = None,
                       progress: bool = True) -> tuple[BagSet, torch.Tensor]:
    """Bags + frozen-encoder embeddings of every cell, for one method, witness rate and seed.

    Returns:
        ``(bagset, H)`` with ``H  # (N, D)`` aligned with ``bagset``'s cells.
    """
    bagset = get_bags(preset, witness_rate, seed)
    result = get_pretrained(preset, bagset, method, seed, device=device, progress=progress)
    return bagset, embed_bagset(preset, bagset, result, seed, device=device)
