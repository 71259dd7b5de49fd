"""Bags of cells at a witness rate: the weak-supervision setting of computational cytology.

A *bag* (slide) holds ``bag_size`` single-cell patches. A negative bag holds only cells of the
negative class (lymphocytes, ``LYT``); a positive bag holds ``round(WR x bag_size)`` witnesses
(abnormal cells, e.g. blasts ``BLA``) and negatives for the rest. Only the bag label is known
to the learner. The simulator follows the paper's protocol (cells drawn without replacement,
half of the bags of each kind) and adds train / validation / test splits.

It works on any *cell source*: :class:`SyntheticSource` renders fresh cells with one stain per
slide (``stain="per_bag"``) or one per cell (``"per_cell"``, cells from many patients);
:class:`PoolSource` draws from a fixed pool of real images (see :mod:`slamags_core.realdata`)
without replacement, so no cell is ever shared between bags or splits.
"""
from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Protocol

import numpy as np

from slamags_core import synthetic
from slamags_core.config import BagConfig, CellConfig
from slamags_core.utils import atomic_savez, cache_dir, config_hash, to_jsonable
from slamags_core.validation import check_float, check_int

SPLITS: tuple[str, ...] = ("train", "val", "test")
STAIN_MODES: tuple[str, ...] = ("per_bag", "per_cell")  # CellConfig.stain
_FORMAT_VERSION = 1  # bump when the on-disk BagSet layout changes


class CellSource(Protocol):
    """Anything that can fill one slide with cells of requested classes."""

    class_names: tuple[str, ...]

    def sample_slide(
        self, counts: Mapping[str, int], rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return ``images (n, H, W, 3) uint8``, ``cell_types (n,) str``, ``cell_ids (n,) int64``."""

    def available(self) -> dict[str, int] | None:
        """Cells left per class, or ``None`` for an unlimited (generative) source."""

    def describe(self) -> dict:
        """JSON description that identifies the source's content (part of the cache key)."""


def _check_counts(counts: Mapping[str, int], class_names: tuple[str, ...]) -> dict[str, int]:
    """The counts as plain ints >= 0, after checking every class name and count."""
    for name in counts:
        if name not in class_names:
            raise ValueError(f"unknown cell class {name!r}; allowed: {list(class_names)}")
    return {name: check_int(n, f"cell count for {name!r}", ge=0) for name, n in counts.items()}


class SyntheticSource:
    """Cell source backed by the procedural renderer.

    With ``cfg.stain == "per_bag"`` a slide (bag) gets one stain vector shared by all its
    cells; with ``"per_cell"`` every cell gets its own, as when a bag is a random draw of
    single cells from a pool of many patients (the paper's protocol).

    Args:
        cfg: image size, difficulty, class names and stain mode of the synthetic cells.

    Raises:
        ValueError: for an unknown stain mode or class name.
    """

    def __init__(self, cfg: CellConfig):
        if cfg.stain not in STAIN_MODES:
            raise ValueError(f"unknown stain mode {cfg.stain!r}; allowed: {STAIN_MODES}")
        self.cfg = synthetic.check_cell_config(cfg)
        self.class_names = tuple(synthetic.CLASS_NAMES)
        _check_counts({cfg.negative_class: 0, cfg.witness_class: 0}, self.class_names)
        self._next_id = 0

    def sample_slide(self, counts, rng):
        counts = _check_counts(counts, self.class_names)
        types = np.concatenate(
            [np.full(int(n), name, dtype=f"<U{max(len(name), 1)}") for name, n in counts.items()]
        ).astype("<U16")
        if self.cfg.stain == "per_cell":  # one stain per cell: (n, STAIN_DIM)
            stain = synthetic.sample_stain(rng, len(types))
        else:  # one slide -> one stain for all its cells: (STAIN_DIM,)
            stain = synthetic.sample_stain(rng, 1)[0]
        images = synthetic.render_cells(
            list(types), image_size=self.cfg.image_size, difficulty=self.cfg.difficulty,
            rng=rng, stain=stain,
        )
        ids = np.arange(self._next_id, self._next_id + len(types), dtype=np.int64)
        self._next_id += len(types)
        return images, types, ids

    def available(self):
        return None

    def describe(self):
        # The renderer's source code is part of the identity: editing it invalidates caches.
        code = inspect.getsource(synthetic).encode()
        return {"kind": "synthetic", "cells": to_jsonable(self.cfg),
                "renderer": hashlib.sha256(code).hexdigest()[:16]}


class PoolSource:
    """Cell source over a fixed pool of images, drawn without replacement.

    Args:
        images: ``(N, H, W, 3)`` uint8 patches.
        cell_types: ``(N,)`` class name of every patch.
        name: a label for the pool (shown in errors and in the cache key).
    """

    def __init__(self, images: np.ndarray, cell_types, name: str = "pool"):
        images = np.asarray(images)
        cell_types = np.asarray(cell_types).astype("<U16")
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(
                f"pool images must be uint8 of shape (N, H, W, 3), got {images.dtype} {images.shape}")
        if len(images) == 0:
            raise ValueError(f"pool {name!r} is empty")
        if cell_types.shape != (len(images),):
            raise ValueError(
                f"pool {name!r}: {len(images)} images but cell_types has shape {cell_types.shape}")
        self.images, self.cell_types, self.name = images, cell_types, name
        self.class_names = tuple(sorted(set(cell_types.tolist())))
        self._remaining = {c: np.flatnonzero(cell_types == c) for c in self.class_names}

    def available(self):
        return {c: len(idx) for c, idx in self._remaining.items()}

    def sample_slide(self, counts, rng):
        counts = _check_counts(counts, self.class_names)
        for c, n in counts.items():
            if n > len(self._remaining[c]):
                raise ValueError(
                    f"too few {c!r} cells left in pool {self.name!r}: need {n}, "
                    f"have {len(self._remaining[c])}")
        picked = []
        for c, n in counts.items():
            pos = rng.choice(len(self._remaining[c]), size=int(n), replace=False)
            picked.append(self._remaining[c][pos])
            self._remaining[c] = np.delete(self._remaining[c], pos)
        ids = np.concatenate(picked).astype(np.int64) if picked else np.zeros(0, np.int64)
        return self.images[ids], self.cell_types[ids], ids

    def describe(self):
        step = max(1, len(self.images) // 64)
        digest = hashlib.sha256(self.images[::step].tobytes() + self.cell_types.tobytes())
        return {"kind": "pool", "name": self.name, "shape": list(self.images.shape),
                "digest": digest.hexdigest()[:16]}


def n_witnesses(bag_size: int, witness_rate: float) -> int:
    """Number of witnesses in a positive bag: ``round(WR x bag_size)`` (halves round up).

    Raises:
        ValueError: if ``witness_rate`` is outside (0, 1], ``bag_size < 1``, or the count rounds
            to zero (the bag is too small to hold a single witness at this rate).
    """
    bag_size = check_int(bag_size, "bag_size", ge=1)
    witness_rate = check_float(witness_rate, "witness_rate", gt=0, le=1)
    k = math.floor(witness_rate * bag_size + 0.5)
    if k == 0:
        need = math.ceil(0.5 / witness_rate)
        while math.floor(witness_rate * need + 0.5) == 0:  # guard against float round-off
            need += 1
        raise ValueError(
            f"witness_rate {witness_rate} x bag_size {bag_size} = {witness_rate * bag_size:g} rounds "
            f"to 0 witnesses; use bag_size >= {need} for this witness rate")
    return int(k)


def _check_bag_config(cfg: BagConfig) -> BagConfig:
    """The config with every number validated and turned into a plain int / float."""
    counts = {name: check_int(getattr(cfg, name), name, ge=0)
              for name in ("n_train", "n_val", "n_test", "seed")}
    if counts["n_train"] + counts["n_val"] + counts["n_test"] == 0:
        raise ValueError("n_train + n_val + n_test is 0: at least one bag is needed")
    return dataclasses.replace(
        cfg, **counts, bag_size=check_int(cfg.bag_size, "bag_size", ge=1),
        witness_rate=check_float(cfg.witness_rate, "witness_rate", gt=0, le=1),
        positive_fraction=check_float(cfg.positive_fraction, "positive_fraction", ge=0, le=1))


@dataclass
class BagSet:
    """All cells of all bags of one simulation, concatenated bag after bag.

    Attributes:
        images: ``(N, H, W, 3)`` uint8 patches.
        bag_index: ``(N,)`` bag id of every cell.
        instance_labels: ``(N,)`` 1 for a witness (abnormal cell), else 0.
        cell_types: ``(N,)`` class name of every cell (e.g. ``"LYT"``, ``"BLA"``).
        cell_ids: ``(N,)`` id of the cell in its source (unique across the whole set).
        bag_labels: ``(n_bags,)`` 1 for a positive (abnormal) bag.
        bag_split: ``(n_bags,)`` ``"train"``, ``"val"`` or ``"test"``.
        witness_rate: the simulated witness rate.
        config: JSON description of the source and bag config that produced the set.
    """

    images: np.ndarray
    bag_index: np.ndarray
    instance_labels: np.ndarray
    cell_types: np.ndarray
    cell_ids: np.ndarray
    bag_labels: np.ndarray
    bag_split: np.ndarray
    witness_rate: float
    config: dict

    @property
    def n_bags(self) -> int:
        return len(self.bag_labels)

    def bag_cells(self, i: int) -> np.ndarray:
        """Indices (into the cell arrays) of the cells of bag ``i``."""
        i = check_int(i, "bag id", ge=0, le=self.n_bags - 1)
        return np.flatnonzero(self.bag_index == i)

    def split_bags(self, split: str) -> np.ndarray:
        """Ids of the bags in ``split`` (``"train"``, ``"val"`` or ``"test"``)."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; allowed: {SPLITS}")
        return np.flatnonzero(self.bag_split == split)

    def pretraining_pools(self) -> tuple[np.ndarray, np.ndarray]:
        """Patches of positive and of negative *training* bags: the two SLAM pretraining pools.

        Returns:
            ``(pos_images, neg_images)``, each ``(n, H, W, 3)`` uint8.
        """
        train = np.isin(self.bag_index, self.split_bags("train"))
        pos_bag = self.bag_labels[self.bag_index] == 1
        return self.images[train & pos_bag], self.images[train & ~pos_bag]

    def pretraining_pool_labels(self) -> np.ndarray:
        """Instance labels (1 = witness) of the positive pool, aligned with
        ``pretraining_pools()[0]``. Only the ``oracle`` CEILING may use them."""
        train = np.isin(self.bag_index, self.split_bags("train"))
        pos_bag = self.bag_labels[self.bag_index] == 1
        return np.asarray(self.instance_labels[train & pos_bag], dtype=np.int64)

    def save(self, path: str | Path) -> Path:
        """Write the set to one ``.npz`` (atomically; plain arrays, no pickle)."""
        arrays = {f.name: np.asarray(getattr(self, f.name)) for f in dataclasses.fields(self)
                  if f.name != "config"}
        arrays["config"] = np.asarray(json.dumps(self.config, sort_keys=True))
        arrays["format_version"] = np.asarray(_FORMAT_VERSION)
        return atomic_savez(path, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> "BagSet":
        """Load a set written by :meth:`save` (``allow_pickle=False``)."""
        with np.load(path, allow_pickle=False) as z:
            if int(z["format_version"]) != _FORMAT_VERSION:
                raise ValueError(f"{path}: BagSet format {int(z['format_version'])}, "
                                 f"expected {_FORMAT_VERSION}")
            kw = {f.name: z[f.name] for f in dataclasses.fields(cls) if f.name != "config"}
            kw["witness_rate"] = float(kw["witness_rate"])
            kw["config"] = json.loads(str(z["config"]))
        return cls(**kw)


def build_bags(source: CellSource, cfg: BagConfig, *, negative_class: str = "LYT",
               witness_class: str = "BLA") -> BagSet:
    """Simulate train/val/test bags at ``cfg.witness_rate`` from a cell source.

    Each split holds ``round(n x positive_fraction)`` positive bags, the rest negative, in a
    shuffled order; the cells of every bag are shuffled too.

    Args:
        source: where cells come from (:class:`SyntheticSource`, :class:`PoolSource`).
        cfg: bag size, witness rate, split sizes, seed.
        negative_class: class of negative cells (lymphocytes in the paper).
        witness_class: abnormal class planted in positive bags.

    Raises:
        ValueError: bad witness rate / bag size / counts, unknown or identical classes, or a
            pool with too few cells (checked before anything is drawn).
    """
    cfg = _check_bag_config(cfg)
    k = n_witnesses(cfg.bag_size, cfg.witness_rate)
    for name in (negative_class, witness_class):
        if name not in source.class_names:
            raise ValueError(f"unknown cell class {name!r}; allowed: {list(source.class_names)}")
    if negative_class == witness_class:
        raise ValueError(f"negative_class and witness_class are both {negative_class!r}")

    rng = np.random.default_rng(cfg.seed)
    plan: list[tuple[str, int]] = []  # (split, bag label) in bag-id order
    for split, n in zip(SPLITS, (cfg.n_train, cfg.n_val, cfg.n_test)):
        n_pos = math.floor(n * cfg.positive_fraction + 0.5)
        labels = np.array([1] * n_pos + [0] * (n - n_pos))
        plan += [(split, int(y)) for y in rng.permutation(labels)]

    n_pos_bags = sum(y for _, y in plan)
    need = {negative_class: len(plan) * cfg.bag_size - n_pos_bags * k, witness_class: n_pos_bags * k}
    have = source.available()
    if have is not None:
        for c, n in need.items():
            if n > have.get(c, 0):
                raise ValueError(f"too few {c!r} cells in the source: the bags need {n}, "
                                 f"the source has {have.get(c, 0)}")

    parts: dict[str, list[np.ndarray]] = {"images": [], "types": [], "ids": [], "inst": []}
    for _, y in plan:
        counts = {negative_class: cfg.bag_size - k * y, witness_class: k * y}
        images, types, ids = source.sample_slide(counts, rng)
        order = rng.permutation(cfg.bag_size)
        parts["images"].append(images[order])
        parts["types"].append(types[order])
        parts["ids"].append(ids[order])
        parts["inst"].append((types[order] == witness_class).astype(np.int8))

    n_bags = len(plan)
    return BagSet(
        images=np.concatenate(parts["images"]),
        bag_index=np.repeat(np.arange(n_bags, dtype=np.int64), cfg.bag_size),
        instance_labels=np.concatenate(parts["inst"]),
        cell_types=np.concatenate(parts["types"]).astype("<U16"),
        cell_ids=np.concatenate(parts["ids"]),
        bag_labels=np.array([y for _, y in plan], dtype=np.int64),
        bag_split=np.array([s for s, _ in plan], dtype="<U5"),
        witness_rate=float(cfg.witness_rate),
        config={"source": source.describe(), "bags": to_jsonable(cfg),
                "negative_class": negative_class, "witness_class": witness_class},
    )


def bags_cache_path(cells: CellConfig, bags: BagConfig, source: CellSource | None = None,
                    root: str | Path | None = None) -> Path:
    """Cache file of the bag set defined by the full config (source + bags)."""
    bags = _check_bag_config(bags)  # plain numbers: 8.0 and np.int64(8) share the file of 8
    source = source if source is not None else SyntheticSource(cells)
    key = config_hash(source.describe(), bags, cells.negative_class, cells.witness_class,
                      _FORMAT_VERSION)
    return Path(root if root is not None else cache_dir() / "bags") / f"bags-{key}.npz"


def load_or_build_bags(cells: CellConfig, bags: BagConfig, *, source: CellSource | None = None,
                       cache: bool = True, root: str | Path | None = None) -> BagSet:
    """Return the bag set for this config, from the disk cache when it exists.

    The cache key covers the whole config (cell source, renderer code, bag config, classes):
    the same config reloads the same file, any change regenerates. A cache file that cannot be
    read is rebuilt (it is derived data) with a warning.

    Args:
        cells: cell config (synthetic renderer settings and the two class names).
        bags: bag simulation config.
        source: a cell source; default a :class:`SyntheticSource` built from ``cells``.
        cache: read and write the cache under ``root`` (default ``data/cache/bags``).
        root: cache folder.
    """
    source = source if source is not None else SyntheticSource(cells)
    path = bags_cache_path(cells, bags, source, root)
    if cache and path.exists():
        try:
            return BagSet.load(path)
        except (OSError, ValueError, KeyError) as err:
            warnings.warn(f"bag cache {path} unreadable ({err}); rebuilding it")
    bagset = build_bags(source, bags, negative_class=cells.negative_class,
                        witness_class=cells.witness_class)
    if cache:
        bagset.save(path)
    return bagset
