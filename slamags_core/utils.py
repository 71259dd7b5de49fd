"""Small shared helpers: seeding, device choice, config hashing, atomic file writes, paths."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slamags_core.validation import check_int

DATA_ENV = "SLAMAGS_DATA_DIR"


def set_seed(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (CPU and CUDA); return a CPU generator seeded the same.

    This is the project's single seeding entry point.

    Raises:
        ValueError: if ``seed`` is not an integer (a bool, 2.5, a string).
    """
    seed = check_int(seed, "seed")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def get_device(preference: str = "auto") -> torch.device:
    """Pick the compute device once: ``"auto"`` prefers CUDA, then MPS, then CPU.

    Raises:
        ValueError: for an unknown preference or a device that is not available.
    """
    allowed = ("auto", "cuda", "mps", "cpu")
    if preference not in allowed:
        raise ValueError(f"unknown device {preference!r}; allowed: {allowed}")
    mps = getattr(torch.backends, "mps", None)
    mps_ok = bool(mps is not None and mps.is_available())
    if preference == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if mps_ok else torch.device("cpu")
    if preference == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available")
    if preference == "mps" and not mps_ok:
        raise ValueError("device 'mps' requested but MPS is not available")
    return torch.device(preference)


def to_jsonable(obj: Any) -> Any:
    """Turn dataclasses, tuples, paths and numpy scalars into plain JSON values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def config_hash(*objs: Any, length: int = 16) -> str:
    """Stable hex digest of one or more configs (dataclasses / dicts / scalars)."""
    blob = json.dumps(to_jsonable(list(objs)), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def _atomic(path: Path, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file then rename, so a crash never leaves half a file."""
    return _atomic(Path(path), lambda tmp: torch.save(obj, tmp))


def atomic_write_text(text: str, path: str | os.PathLike) -> Path:
    """Write text atomically (temporary file + rename)."""
    return _atomic(Path(path), lambda tmp: Path(tmp).write_text(text))


def atomic_savez(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    """``np.savez`` atomically; arrays must be plain (no object dtype, loadable without pickle)."""
    for k, v in arrays.items():
        if np.asarray(v).dtype == object:
            raise ValueError(f"array {k!r} has dtype object; only plain dtypes can be saved")

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    return _atomic(Path(path), write)


def data_dir() -> Path:
    """Root of generated data: ``$SLAMAGS_DATA_DIR`` or the repository's ``data/`` folder."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env)
    repo_data = Path(__file__).resolve().parents[1] / "data"
    return repo_data if repo_data.is_dir() else Path.cwd() / "data"


def cache_dir() -> Path:
    """``data/cache``: git-ignored home of generated bags, embeddings and checkpoints."""
    return data_dir() / "cache"
