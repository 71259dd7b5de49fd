"""Real-data adapters on small fixture files written by the tests themselves."""
import numpy as np
import pytest
from PIL import Image

from slamags_core.bags import build_bags
from slamags_core.config import BagConfig
from slamags_core.realdata import BLOODMNIST_CLASSES, load_bloodmnist_npz, load_bone_marrow_folder


def write_bone_marrow(root, counts, size=50, nested=True):
    rng = np.random.default_rng(0)
    for cls, n in counts.items():
        folder = root / cls / ("0001-1000" if nested else "")
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(arr).save(folder / f"{cls}_{i:05d}.jpg", quality=95)


def test_bone_marrow_folder_layout(tmp_path):
    write_bone_marrow(tmp_path, {"LYT": 40, "BLA": 6, "PMO": 2})
    pool = load_bone_marrow_folder(tmp_path, image_size=32)
    assert pool.class_names == ("BLA", "LYT", "PMO")
    assert pool.images.shape == (48, 32, 32, 3) and pool.images.dtype == np.uint8
    assert pool.available() == {"BLA": 6, "LYT": 40, "PMO": 2}
    bs = build_bags(pool, BagConfig(bag_size=10, witness_rate=0.2, n_train=2, n_val=0, n_test=2))
    assert bs.instance_labels.sum() == 4 and len(np.unique(bs.cell_ids)) == 40


def test_bone_marrow_subset_and_native_size(tmp_path):
    write_bone_marrow(tmp_path, {"LYT": 10, "BLA": 5}, size=40, nested=False)
    pool = load_bone_marrow_folder(tmp_path, ["LYT"], image_size=None, max_per_class=4)
    assert pool.images.shape == (4, 40, 40, 3) and pool.class_names == ("LYT",)


def test_bone_marrow_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_bone_marrow_folder(tmp_path / "missing")
    with pytest.raises(ValueError, match="no class folders"):
        load_bone_marrow_folder(tmp_path)
    (tmp_path / "LYT").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        load_bone_marrow_folder(tmp_path, ["LYT"])
    with pytest.raises(ValueError, match=r"class folder 'BLA' not found.*available: \['LYT'\]"):
        load_bone_marrow_folder(tmp_path, ["BLA"])
    (tmp_path / "LYT" / "LYT_00001.jpg").write_bytes(b"\xff\xd8 truncated jpeg")
    with pytest.raises(ValueError, match="cannot read image .*LYT_00001.jpg"):
        load_bone_marrow_folder(tmp_path)


def write_bloodmnist(path, n=(12, 4, 6), size=28):
    rng = np.random.default_rng(0)
    arrays = {}
    for s, k in zip(("train", "val", "test"), n):
        arrays[f"{s}_images"] = rng.integers(0, 256, (k, size, size, 3), dtype=np.uint8)
        arrays[f"{s}_labels"] = (np.arange(k) % 8).reshape(-1, 1).astype(np.uint8)
    np.savez(path, **arrays)
    return arrays


def test_bloodmnist_npz(tmp_path):
    arrays = write_bloodmnist(tmp_path / "bloodmnist.npz")
    pool = load_bloodmnist_npz(tmp_path / "bloodmnist.npz", "train")
    np.testing.assert_array_equal(pool.images, arrays["train_images"])
    assert list(pool.cell_types[:8]) == list(BLOODMNIST_CLASSES)
    full = load_bloodmnist_npz(tmp_path / "bloodmnist.npz", image_size=32)
    assert full.images.shape == (22, 32, 32, 3)


def test_bloodmnist_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_bloodmnist_npz(tmp_path / "nope.npz")
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot read"):
        load_bloodmnist_npz(tmp_path / "bad.npz")
    np.savez(tmp_path / "partial.npz", train_images=np.zeros((2, 28, 28, 3), np.uint8))
    with pytest.raises(ValueError, match="no array 'train_labels'"):
        load_bloodmnist_npz(tmp_path / "partial.npz", "train")
    np.savez(tmp_path / "labels.npz", train_images=np.zeros((2, 28, 28, 3), np.uint8),
             train_labels=np.array([[0], [9]]))
    with pytest.raises(ValueError, match="labels outside"):
        load_bloodmnist_npz(tmp_path / "labels.npz", "train")
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        load_bloodmnist_npz(tmp_path / "labels.npz", "dev")
    np.savez(tmp_path / "obj.npz", train_images=np.array([{"a": 1}], dtype=object),
             train_labels=np.zeros((1, 1)))
    with pytest.raises(ValueError, match="cannot read"):  # pickled arrays are refused
        load_bloodmnist_npz(tmp_path / "obj.npz", "train")
