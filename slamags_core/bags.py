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

Storage: a bag set lives on disk as a folder of plain ``.npy`` arrays plus ``manifest.json``
(:meth:`BagSet.save`, :func:`build_bags` with ``out=``). The images are written bag by bag while
they are rendered and opened memory-mapped, so a set larger than the RAM trains from the page
cache; the pretraining pools (:class:`PatchPool`) are index arrays into that storage, not copies.
A folder is written under a temporary name and renamed when complete: a crash never leaves a
set that loads as complete.
"""
from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import math
import os
import shutil
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Protocol

import numpy as np

from slamags_core import synthetic
from slamags_core.config import BagConfig, CellConfig
from slamags_core.utils import cache_dir, config_hash, to_jsonable
from slamags_core.validation import check_float, check_int

SPLITS: tuple[str, ...] = ("train", "val", "test")
STAIN_MODES: tuple[str, ...] = ("per_bag", "per_cell")  # CellConfig.stain
_FORMAT_VERSION = 2  # 2: folder of .npy + manifest.json (memory-mapped); 1: one .npz (in RAM)
MANIFEST = "manifest.json"
ARRAYS: tuple[str, ...] = ("images", "bag_index", "instance_labels", "cell_types", "cell_ids",
                           "bag_labels", "bag_split")  # one .npy file each


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


class PatchPool:
    """Patches of a bag set chosen by index, read lazily from its (memory-mapped) storage.

    Behaves like a read-only ``(n, H, W, 3)`` uint8 array for ``len``, ``shape``, ``dtype``,
    indexing (``pool[i]``, ``pool[a:b]``, ``pool[int_array]`` return NumPy arrays) and
    ``np.asarray(pool)`` (reads everything: only for small pools). Reads touch the storage rows
    in ascending order (sequential on disk) and return them in the requested order.

    Args:
        images: the storage, ``(N, H, W, 3)`` uint8 (an ``np.memmap`` or an array).
        index: ``(n,)`` rows of ``images`` that form the pool.
        labels: ``(n,)`` instance labels of those rows (1 = witness) or ``None``. No weakly
            supervised method reads them; they serve instance-supervised ceilings and diagnostics.

    Raises:
        ValueError: for storage that is not uint8 ``(N, H, W, 3)``, indices out of range, or
            labels of another length.
    """

    def __init__(self, images: np.ndarray, index, labels=None):
        index = np.asarray(index, dtype=np.int64)
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"pool storage must be uint8 (N, H, W, 3), got {images.dtype} "
                             f"{tuple(images.shape)}")
        if index.ndim != 1 or (len(index) and (index.min() < 0 or index.max() >= len(images))):
            raise ValueError(f"pool index must be a 1-D array of rows in [0, {len(images)})")
        if labels is not None:
            labels = np.asarray(labels)
            if labels.shape != index.shape:
                raise ValueError(f"labels have shape {labels.shape}, index {index.shape}")
        self.images, self.index, self.labels = images, index, labels

    def __len__(self) -> int:
        return len(self.index)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.index), *self.images.shape[1:])

    @property
    def dtype(self) -> np.dtype:
        return self.images.dtype

    ndim = 4

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.images.itemsize

    def read(self, positions, out: np.ndarray | None = None) -> np.ndarray:
        """Patches at ``positions`` (ints into the pool) as a ``(k, H, W, 3)`` array.

        Args:
            positions: ``(k,)`` positions in the pool.
            out: optional ``(k, H, W, 3)`` uint8 array to fill (e.g. pinned memory).
        """
        rows = self.index[np.asarray(positions, dtype=np.int64)]
        order = np.argsort(rows, kind="stable")
        if out is None:
            out = np.empty((len(rows), *self.images.shape[1:]), dtype=self.images.dtype)
        out[order] = self.images[rows[order]]  # ascending rows: sequential reads of the file
        return out

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return np.asarray(self.images[self.index[key]])
        return self.read(np.arange(len(self.index))[key])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self.read(np.arange(len(self.index)))
        return out if dtype is None else out.astype(dtype)

    def __repr__(self) -> str:
        return f"PatchPool({len(self)} patches of {tuple(self.images.shape[1:])} from storage " \
               f"of {len(self.images)})"


@dataclass
class BagSet:
    """All cells of all bags of one simulation, concatenated bag after bag.

    Attributes:
        images: ``(N, H, W, 3)`` uint8 patches; a read-only ``np.memmap`` when loaded from disk.
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

    def pretraining_pools(self) -> tuple[PatchPool, PatchPool]:
        """Patches of positive and of negative *training* bags: the two SLAM pretraining pools.

        Returns:
            ``(pos, neg)``: :class:`PatchPool` views (index arrays into :attr:`images`, no
            copy), each behaving like an ``(n, H, W, 3)`` uint8 array; ``pool.labels`` holds
            the instance labels of its patches.
        """
        train = np.isin(self.bag_index, self.split_bags("train"))
        pos_bag = self.bag_labels[self.bag_index] == 1
        pos, neg = np.flatnonzero(train & pos_bag), np.flatnonzero(train & ~pos_bag)
        return (PatchPool(self.images, pos, self.instance_labels[pos]),
                PatchPool(self.images, neg, self.instance_labels[neg]))

    def save(self, path: str | Path) -> Path:
        """Write the set as a folder of ``.npy`` arrays + ``manifest.json`` (atomically).

        Raises:
            FileExistsError: if ``path`` already holds a complete bag set.
        """
        writer = _StorageWriter(path, len(self.images))
        try:
            for start in range(0, len(self.images), 1024):
                writer.add_images(np.asarray(self.images[start:start + 1024]))
            return writer.finish(self)
        except BaseException:
            writer.abort()
            raise

    @classmethod
    def load(cls, path: str | Path, *, mmap: bool = True) -> "BagSet":
        """Open a set written by :meth:`save` (``allow_pickle=False``).

        Args:
            path: the set's folder.
            mmap: memory-map the images (default); ``False`` reads them into RAM.

        Raises:
            ValueError: the path is an old single-file (``.npz``, format 1) cache, a folder
                without a manifest (incomplete), of another format version, or an array whose
                shape or dtype differs from the manifest (truncated or replaced).
        """
        path = Path(path)
        if path.is_file():
            raise ValueError(
                f"{path} is a single-file bag set (format 1, read whole into memory); this "
                f"version reads format-{_FORMAT_VERSION} folders of memory-mapped arrays. It is "
                f"derived data: delete it, or let load_or_build_bags rebuild it")
        manifest = path / MANIFEST
        if not manifest.is_file():
            raise ValueError(f"{path} is not a complete bag set (no {MANIFEST})")
        meta = json.loads(manifest.read_text())
        if meta.get("format_version") != _FORMAT_VERSION:
            raise ValueError(f"{path}: BagSet format {meta.get('format_version')!r}, expected "
                             f"{_FORMAT_VERSION}")
        kw = {}
        for name in ARRAYS:
            arr = np.load(path / f"{name}.npy", allow_pickle=False,
                          mmap_mode="r" if (mmap and name == "images") else None)
            spec = meta["arrays"][name]
            if list(arr.shape) != spec["shape"] or arr.dtype.str != spec["dtype"]:
                raise ValueError(f"{path / (name + '.npy')}: {arr.dtype.str} {list(arr.shape)} "
                                 f"but the manifest says {spec['dtype']} {spec['shape']}")
            kw[name] = arr
        return cls(**kw, witness_rate=float(meta["witness_rate"]), config=meta["config"])


class _StorageWriter:
    """Writes a bag-set folder: images chunk by chunk into a memory-mapped ``.npy`` inside a
    temporary folder, the small arrays and the manifest at the end, then one rename."""

    def __init__(self, path: str | Path, n_cells: int):
        self.path = Path(path)
        if (self.path / MANIFEST).exists():
            raise FileExistsError(f"{self.path} already holds a bag set")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.parent / f".{self.path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.tmp.mkdir()
        self.n_cells, self.filled, self.images = int(n_cells), 0, None

    def add_images(self, images: np.ndarray) -> None:
        """Append ``(k, H, W, 3)`` uint8 images (the next ``k`` cells)."""
        if self.images is None:  # the patch shape is known once the first cells exist
            self.images = np.lib.format.open_memmap(
                self.tmp / "images.npy", mode="w+", dtype=np.uint8,
                shape=(self.n_cells, *images.shape[1:]))
        self.images[self.filled:self.filled + len(images)] = images
        self.filled += len(images)

    def finish(self, bagset: BagSet) -> Path:
        """Write the other arrays and the manifest, then rename the folder into place."""
        if self.filled != self.n_cells:
            raise ValueError(f"{self.filled} images written, {self.n_cells} expected")
        if self.images is None:
            np.save(self.tmp / "images.npy", np.zeros((0, 1, 1, 3), np.uint8))
        else:
            self.images.flush()
            self.images = None  # close the map
        arrays = {}
        for name in ARRAYS:
            if name != "images":
                arr = np.asarray(getattr(bagset, name))
                if arr.dtype == object:
                    raise ValueError(f"array {name!r} has dtype object; only plain dtypes")
                np.save(self.tmp / f"{name}.npy", arr, allow_pickle=False)
            arr = np.load(self.tmp / f"{name}.npy", mmap_mode="r", allow_pickle=False)
            arrays[name] = {"shape": list(arr.shape), "dtype": arr.dtype.str}
            del arr
        meta = {"format_version": _FORMAT_VERSION, "witness_rate": float(bagset.witness_rate),
                "n_cells": self.n_cells, "n_bags": int(len(bagset.bag_labels)),
                "config": bagset.config, "arrays": arrays}
        with open(self.tmp / MANIFEST, "w") as f:  # written last: its presence = complete
            f.write(json.dumps(meta, indent=1, sort_keys=True))
            f.flush()
            os.fsync(f.fileno())
        try:
            os.rename(self.tmp, self.path)
        except OSError:
            if not (self.path / MANIFEST).exists():  # not a concurrent writer's finished set
                raise
            self.abort()  # another process finished the same set first: keep theirs
        return self.path

    def abort(self) -> None:
        """Remove the temporary folder (nothing at ``path`` is touched)."""
        self.images = None
        shutil.rmtree(self.tmp, ignore_errors=True)


def build_bags(source: CellSource, cfg: BagConfig, *, negative_class: str = "LYT",
               witness_class: str = "BLA", out: str | Path | None = None) -> BagSet:
    """Simulate train/val/test bags at ``cfg.witness_rate`` from a cell source.

    Each split holds ``round(n x positive_fraction)`` positive bags, the rest negative, in a
    shuffled order; the cells of every bag are shuffled too.

    Args:
        source: where cells come from (:class:`SyntheticSource`, :class:`PoolSource`).
        cfg: bag size, witness rate, split sizes, seed.
        negative_class: class of negative cells (lymphocytes in the paper).
        witness_class: abnormal class planted in positive bags.
        out: a folder: write the set there bag by bag while rendering (peak memory: one
            slide) and return it opened memory-mapped. ``None`` keeps everything in RAM.

    Raises:
        ValueError: bad witness rate / bag size / counts, unknown or identical classes, or a
            pool with too few cells (checked before anything is drawn).
        FileExistsError: ``out`` already holds a complete bag set.
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

    writer = _StorageWriter(out, len(plan) * cfg.bag_size) if out is not None else None
    parts: dict[str, list[np.ndarray]] = {"images": [], "types": [], "ids": [], "inst": []}
    try:
        for _, y in plan:
            counts = {negative_class: cfg.bag_size - k * y, witness_class: k * y}
            images, types, ids = source.sample_slide(counts, rng)
            order = rng.permutation(cfg.bag_size)
            if writer is not None:
                writer.add_images(images[order])  # to disk now: RAM holds one slide at a time
            else:
                parts["images"].append(images[order])
            parts["types"].append(types[order])
            parts["ids"].append(ids[order])
            parts["inst"].append((types[order] == witness_class).astype(np.int8))

        bagset = _assemble(parts, plan, cfg, source, negative_class, witness_class)
        if writer is None:
            return bagset
        return BagSet.load(writer.finish(bagset))
    except BaseException:
        if writer is not None:
            writer.abort()
        raise


def _assemble(parts: dict[str, list[np.ndarray]], plan: list[tuple[str, int]], cfg: BagConfig,
              source: CellSource, negative_class: str, witness_class: str) -> BagSet:
    """The :class:`BagSet` of the simulated parts (``images`` empty when written to disk)."""
    n_bags = len(plan)
    return BagSet(
        images=np.concatenate(parts["images"]) if parts["images"] else
        np.zeros((0, 1, 1, 3), np.uint8),
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


def _cache_key(cells: CellConfig, bags: BagConfig, source: CellSource, version: int) -> str:
    return config_hash(source.describe(), bags, cells.negative_class, cells.witness_class, version)


def bags_cache_path(cells: CellConfig, bags: BagConfig, source: CellSource | None = None,
                    root: str | Path | None = None) -> Path:
    """Cache folder of the bag set defined by the full config (source + bags + format)."""
    bags = _check_bag_config(bags)  # plain numbers: 8.0 and np.int64(8) share the folder of 8
    source = source if source is not None else SyntheticSource(cells)
    key = _cache_key(cells, bags, source, _FORMAT_VERSION)
    return Path(root if root is not None else cache_dir() / "bags") / f"bags-{key}"


def load_or_build_bags(cells: CellConfig, bags: BagConfig, *, source: CellSource | None = None,
                       cache: bool = True, root: str | Path | None = None) -> BagSet:
    """Return the bag set for this config, from the disk cache when it exists.

    The cache key covers the whole config (cell source, renderer code, bag config, classes,
    storage format): the same config reloads the same folder (images memory-mapped), any change
    regenerates. A cached set that cannot be read, and an old single-file cache of the same
    config (format 1), are rebuilt (they are derived data) with a warning; the old file is
    deleted once the new set is complete.

    Args:
        cells: cell config (synthetic renderer settings and the two class names).
        bags: bag simulation config.
        source: a cell source; default a :class:`SyntheticSource` built from ``cells``.
        cache: read and write the cache under ``root`` (default ``data/cache/bags``); ``False``
            builds the set in RAM.
        root: cache folder.
    """
    source = source if source is not None else SyntheticSource(cells)
    if not cache:
        return build_bags(source, bags, negative_class=cells.negative_class,
                          witness_class=cells.witness_class)
    path = bags_cache_path(cells, bags, source, root)
    if path.exists():
        try:
            return BagSet.load(path)
        except (OSError, ValueError, KeyError) as err:
            warnings.warn(f"bag cache {path} unreadable ({err}); rebuilding it")
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    legacy = path.with_name(f"bags-{_cache_key(cells, bags, source, 1)}.npz")
    if legacy.exists():
        warnings.warn(f"bag cache {legacy} has the old single-file format (read whole into "
                      f"RAM); rebuilding it as {path}")
    bagset = build_bags(source, bags, negative_class=cells.negative_class,
                        witness_class=cells.witness_class, out=path)
    legacy.unlink(missing_ok=True)
    return bagset
