"""Real-data adapters: cell pools for the bag simulator from files on disk.

Two formats are supported, both turned into a :class:`~slamags_core.bags.PoolSource`:

* the Bone Marrow Cytomorphology data set (Matek et al., Blood 2021; TCIA
  "Bone-Marrow-Cytomorphology_MLL_Helmholtz_Fraunhofer"): one folder per class abbreviation
  (``LYT``, ``BLA``, ``PMO``, ...) holding JPEGs, possibly in nested sub-folders such as
  ``0001-1000/``;
* MedMNIST's BloodMNIST ``.npz`` (``{split}_images`` ``(N, S, S, 3)`` uint8 and
  ``{split}_labels`` ``(N, 1)``).

Nothing is downloaded: point the loaders at files you obtained yourself. Loading is safe
(``np.load(allow_pickle=False)``; images decoded by Pillow) and every problem (missing or empty
folders, unreadable images, wrong arrays) raises a ``ValueError`` naming the file.
"""
from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image, UnidentifiedImageError

from slamags_core.bags import PoolSource
from slamags_core.validation import check_int

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")

# BloodMNIST label index -> the class abbreviation used in this project.
BLOODMNIST_CLASSES: tuple[str, ...] = (
    "BAS",  # 0 basophil
    "EOS",  # 1 eosinophil
    "EBO",  # 2 erythroblast
    "IMG",  # 3 immature granulocytes (myelocytes, metamyelocytes, promyelocytes)
    "LYT",  # 4 lymphocyte
    "MON",  # 5 monocyte
    "NGS",  # 6 neutrophil
    "PLT",  # 7 platelet
)


def _to_square(img: Image.Image, image_size: int | None) -> np.ndarray:
    """RGB, centre-cropped to a square, resized to ``image_size`` (if given) -> (S, S, 3) uint8."""
    img = img.convert("RGB")
    w, h = img.size
    s = min(w, h)
    if w != h:
        left, top = (w - s) // 2, (h - s) // 2
        img = img.crop((left, top, left + s, top + s))
    if image_size is not None and s != image_size:
        img = img.resize((image_size, image_size), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def _check_size(image_size: int | None) -> int | None:
    return None if image_size is None else check_int(image_size, "image_size", ge=8, le=1024)


def load_bone_marrow_folder(root: str | Path, classes: Iterable[str] | None = None, *,
                            image_size: int | None = 64, max_per_class: int | None = None,
                            seed: int = 0) -> PoolSource:
    """Load a Bone-Marrow-Cytomorphology style folder tree as a cell pool.

    Args:
        root: folder with one sub-folder per class abbreviation (``root/LYT/...jpg``).
        classes: class folders to load (default: every sub-folder that holds images).
        image_size: side of the square patches returned (``None`` keeps the files' size, which
            must then agree).
        max_per_class: load at most this many images per class (a seeded random subset).
        seed: seeds the subset choice.

    Returns:
        A :class:`PoolSource` over the loaded images.

    Raises:
        ValueError: missing root, unknown / empty class folders, unreadable images, or
            images of different sizes with ``image_size=None``.
    """
    image_size = _check_size(image_size)
    max_per_class = None if max_per_class is None else check_int(max_per_class, "max_per_class",
                                                                 ge=1)
    seed = check_int(seed, "seed", ge=0)
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"bone marrow data folder {str(root)!r} does not exist")
    folders = {p.name: p for p in sorted(root.iterdir()) if p.is_dir()}
    names = sorted(folders) if classes is None else list(classes)
    if not names:
        raise ValueError(f"no class folders in {str(root)!r}; expected e.g. {root}/LYT/*.jpg")
    rng = np.random.default_rng(seed)
    images, types = [], []
    for name in names:
        if name not in folders:
            raise ValueError(f"class folder {name!r} not found in {str(root)!r}; "
                             f"available: {sorted(folders)}")
        files = sorted(f for f in folders[name].rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            if classes is None:
                continue  # an unrelated folder without images
            raise ValueError(f"class folder {str(folders[name])!r} holds no images "
                             f"({', '.join(IMAGE_SUFFIXES)})")
        if max_per_class is not None and len(files) > max_per_class:
            files = [files[i] for i in sorted(rng.choice(len(files), max_per_class, replace=False))]
        for f in files:
            try:
                with Image.open(f) as img:
                    images.append(_to_square(img, image_size))
            except (UnidentifiedImageError, OSError) as err:
                raise ValueError(f"cannot read image {str(f)!r}: {err}") from err
            types.append(name)
    if not images:
        raise ValueError(f"no images found under {str(root)!r}")
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise ValueError(f"images under {str(root)!r} have different sizes {sorted(shapes)}; "
                         "pass image_size to resize them")
    return PoolSource(np.stack(images), np.array(types), name=f"bone_marrow:{root.name}")


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` archive (no pickles); the file is closed whatever happens."""
    incomplete = (f"cannot read {str(path)!r}: it is not a complete .npz archive (a truncated "
                  f"download or a corrupt file); download it again")
    try:
        with open(path, "rb") as f:
            if zipfile.is_zipfile(f):  # False when the zip directory at the end is missing
                f.seek(0)
                with np.load(f, allow_pickle=False) as z:
                    return {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, zlib.error, EOFError) as err:  # a damaged member
        raise ValueError(f"{incomplete} ({type(err).__name__}: {err})") from err
    except (OSError, ValueError) as err:  # unreadable; numpy refusing object arrays, bad headers
        raise ValueError(f"cannot read {str(path)!r} as an .npz archive of plain arrays: "
                         f"{err}") from err
    raise ValueError(incomplete)


def _class_labels(y: np.ndarray, what: str) -> np.ndarray:
    """BloodMNIST labels as int64 class indices; integral floats (4.0) pass, 4.7 does not."""
    n = len(BLOODMNIST_CLASSES)
    if y.dtype.kind not in "iuf":
        raise ValueError(f"{what} must be integers 0-{n - 1}, got dtype {y.dtype}")
    bad = ~np.isin(y, np.arange(n))
    if bad.any():
        found = np.unique(y[bad])[:5].tolist()
        raise ValueError(f"{what} outside the allowed labels (integers 0-{n - 1}); found {found}")
    return y.astype(np.int64)


def load_bloodmnist_npz(path: str | Path, split: str = "all", *,
                        image_size: int | None = None) -> PoolSource:
    """Load MedMNIST's BloodMNIST ``.npz`` as a cell pool (labels mapped to abbreviations).

    Args:
        path: the ``bloodmnist*.npz`` file.
        split: ``"train"``, ``"val"``, ``"test"`` or ``"all"`` (the three concatenated).
        image_size: resize the patches to this side (``None`` keeps the file's size).

    Raises:
        ValueError: missing file, a file that is not a complete ``.npz`` archive (truncated
            download, corrupt), pickled arrays, missing arrays, wrong shapes, or labels that
            are not integers 0-7 (e.g. 4.7). The file is always closed.
    """
    image_size = _check_size(image_size)
    path = Path(path)
    splits = ("train", "val", "test") if split == "all" else (split,)
    if split != "all" and split not in ("train", "val", "test"):
        raise ValueError(f"unknown split {split!r}; allowed: 'train', 'val', 'test', 'all'")
    if not path.is_file():
        raise ValueError(f"BloodMNIST file {str(path)!r} does not exist")
    arrays = _read_npz(path)
    images, labels = [], []
    for s in splits:
        for key in (f"{s}_images", f"{s}_labels"):
            if key not in arrays:
                raise ValueError(f"{str(path)!r} has no array {key!r}; found {sorted(arrays)}")
        x, y = arrays[f"{s}_images"], arrays[f"{s}_labels"].reshape(-1)
        if x.ndim != 4 or x.shape[-1] != 3 or x.dtype != np.uint8 or len(x) != len(y):
            raise ValueError(f"{str(path)!r}: {s}_images must be uint8 (N, S, S, 3) matching "
                             f"{len(y)} labels, got {x.dtype} {x.shape}")
        images.append(x)
        labels.append(_class_labels(y, f"{str(path)!r}: {s}_labels"))
    x = np.concatenate(images)
    if image_size is not None and x.shape[1] != image_size:
        x = np.stack([_to_square(Image.fromarray(im), image_size) for im in x])
    types = np.array(BLOODMNIST_CLASSES)[np.concatenate(labels)]
    return PoolSource(x, types, name=f"bloodmnist:{path.stem}:{split}")
