"""Bag simulation: witness counts, no shared cells, splits, pools, cache, bad input."""
import dataclasses

import numpy as np
import pytest

from slamags_core import bags as bags_module
from slamags_core.bags import (ARRAYS, MANIFEST, BagSet, PatchPool, PoolSource, SyntheticSource,
                               bags_cache_path, build_bags, load_or_build_bags, n_witnesses)
from slamags_core.config import BagConfig, CellConfig
from slamags_core.utils import config_hash


def make_pool(n_lyt=400, n_bla=60, size=8, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n_lyt + n_bla, size, size, 3), dtype=np.uint8)
    types = np.array(["LYT"] * n_lyt + ["BLA"] * n_bla)
    return PoolSource(images, types, name="fixture")


CFG = BagConfig(bag_size=20, witness_rate=0.1, n_train=6, n_val=2, n_test=4, seed=3)


@pytest.mark.parametrize("bag_size,wr,k", [(1000, 0.1, 100), (1000, 0.005, 5), (200, 0.005, 1),
                                           (20, 0.1, 2), (10, 1.0, 10), (3, 0.5, 2)])
def test_n_witnesses_known_values(bag_size, wr, k):
    assert n_witnesses(bag_size, wr) == k


def test_exact_witness_counts_and_labels():
    bs = build_bags(make_pool(), CFG)
    assert bs.n_bags == 12
    for i in range(bs.n_bags):
        cells = bs.bag_cells(i)
        assert len(cells) == CFG.bag_size
        n_wit = int(bs.instance_labels[cells].sum())
        assert n_wit == (2 if bs.bag_labels[i] else 0)
        assert set(bs.cell_types[cells][bs.instance_labels[cells] == 1]) <= {"BLA"}
        assert set(bs.cell_types[cells][bs.instance_labels[cells] == 0]) == {"LYT"}
    for split, n in (("train", 6), ("val", 2), ("test", 4)):
        ids = bs.split_bags(split)
        assert len(ids) == n and bs.bag_labels[ids].sum() == n // 2  # half positive


def test_no_cell_shared_between_bags_or_splits():
    bs = build_bags(make_pool(), CFG)
    assert len(np.unique(bs.cell_ids)) == len(bs.cell_ids)
    pool = make_pool()
    # each cell's pixels come from its pool index
    np.testing.assert_array_equal(bs.images, pool.images[bs.cell_ids])


def test_cells_are_shuffled_within_bags():
    bs = build_bags(make_pool(n_lyt=600), dataclasses.replace(CFG, bag_size=50, witness_rate=0.2))
    pos = [i for i in range(bs.n_bags) if bs.bag_labels[i]]
    first = [np.flatnonzero(bs.instance_labels[bs.bag_cells(i)])[0] for i in pos]
    assert max(first) > 0  # witnesses are not all packed at the start


def test_pools_are_train_bags_by_label():
    bs = build_bags(make_pool(), CFG)
    pos, neg = bs.pretraining_pools()
    train = bs.split_bags("train")
    n_pos = int(bs.bag_labels[train].sum())
    assert len(pos) == n_pos * CFG.bag_size and len(neg) == (len(train) - n_pos) * CFG.bag_size
    assert pos.dtype == np.uint8 and pos.shape[1:] == bs.images.shape[1:]


def test_seed_determinism():
    a, b = build_bags(make_pool(), CFG), build_bags(make_pool(), CFG)
    np.testing.assert_array_equal(a.cell_ids, b.cell_ids)
    c = build_bags(make_pool(), dataclasses.replace(CFG, seed=4))
    assert not np.array_equal(a.cell_ids, c.cell_ids)


def test_save_load_roundtrip(tmp_path):
    bs = build_bags(make_pool(), CFG)
    back = BagSet.load(bs.save(tmp_path / "b"))
    for f in dataclasses.fields(BagSet):
        va, vb = getattr(bs, f.name), getattr(back, f.name)
        if isinstance(va, np.ndarray):
            np.testing.assert_array_equal(va, vb)
        else:
            assert va == vb


def test_synthetic_source_bags_share_one_stain_per_slide():
    cells = CellConfig(image_size=32, difficulty=0.3)
    bs = build_bags(SyntheticSource(cells), BagConfig(bag_size=10, witness_rate=0.2, n_train=2,
                                                      n_val=0, n_test=2, seed=0))
    assert bs.images.shape == (40, 32, 32, 3) and bs.images.dtype == np.uint8
    assert len(np.unique(bs.cell_ids)) == 40
    assert bs.instance_labels.sum() == 2 * 2


@pytest.mark.parametrize("mode,distinct", [("per_bag", 1), ("per_cell", 30)])
def test_stain_per_bag_or_per_cell(monkeypatch, mode, distinct):
    # what the renderer is given: one stain vector per slide, or one per cell
    seen = []
    real = bags_module.synthetic.render_cells

    def spy(cell_types, **kw):
        seen.append(np.atleast_2d(kw["stain"]))
        return real(cell_types, **kw)

    monkeypatch.setattr(bags_module.synthetic, "render_cells", spy)
    cells = CellConfig(image_size=32, stain=mode)
    bs = build_bags(SyntheticSource(cells), BagConfig(bag_size=30, witness_rate=0.1, n_train=4,
                                                      n_val=0, n_test=2, seed=0))
    assert len(seen) == bs.n_bags == 6
    assert all(len(np.unique(s, axis=0)) == distinct for s in seen)
    # and what the images show: the colour spread inside a bag is the spread of the whole set
    # with per-cell stain, much smaller with one stain per bag
    colour = bs.images.reshape(len(bs.images), -1, 3).mean(1)  # (N, 3) mean colour per cell
    within = np.mean([colour[bs.bag_index == b].var(0).sum() for b in range(bs.n_bags)])
    share = within / colour.var(0).sum()
    assert (share < 0.6) if mode == "per_bag" else (share > 0.8)


def test_unknown_stain_mode():
    with pytest.raises(ValueError, match="stain mode 'per_patient'.*per_bag"):
        SyntheticSource(CellConfig(stain="per_patient"))


def test_cache_hit_and_invalidation(tmp_path):
    cells = CellConfig(image_size=32)
    bags = BagConfig(bag_size=10, witness_rate=0.1, n_train=2, n_val=0, n_test=2, seed=1)
    a = load_or_build_bags(cells, bags, root=tmp_path)
    path = bags_cache_path(cells, bags, root=tmp_path)
    assert path.exists()
    mtime = path.stat().st_mtime_ns
    b = load_or_build_bags(cells, bags, root=tmp_path)
    assert path.stat().st_mtime_ns == mtime  # reloaded, not rebuilt
    np.testing.assert_array_equal(a.images, b.images)
    for change in (dict(bags=dataclasses.replace(bags, witness_rate=0.2)),
                   dict(bags=dataclasses.replace(bags, seed=2)),
                   dict(cells=dataclasses.replace(cells, difficulty=0.9)),
                   dict(cells=dataclasses.replace(cells, stain="per_cell"))):
        c2, b2 = change.get("cells", cells), change.get("bags", bags)
        assert bags_cache_path(c2, b2, root=tmp_path) != path


def test_corrupt_cache_is_rebuilt(tmp_path):
    cells = CellConfig(image_size=32)
    bags = BagConfig(bag_size=10, witness_rate=0.1, n_train=2, n_val=0, n_test=0, seed=1)
    path = bags_cache_path(cells, bags, root=tmp_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not an npz")
    with pytest.warns(UserWarning, match="unreadable"):
        bs = load_or_build_bags(cells, bags, root=tmp_path)
    assert bs.n_bags == 2 and BagSet.load(path).n_bags == 2


@pytest.mark.parametrize("wr", [0, -0.1, 1.5, float("nan")])
def test_bad_witness_rate(wr):
    with pytest.raises(ValueError, match="witness_rate"):
        build_bags(make_pool(), dataclasses.replace(CFG, witness_rate=wr))


def test_bag_too_small_for_a_witness():
    with pytest.raises(ValueError, match="rounds to 0 witnesses; use bag_size >= 100"):
        build_bags(make_pool(), dataclasses.replace(CFG, witness_rate=0.005))


@pytest.mark.parametrize("field,value", [("bag_size", 0), ("n_train", -1), ("n_test", 1.5),
                                         ("positive_fraction", 1.2)])
def test_bad_counts(field, value):
    with pytest.raises(ValueError, match=field):
        build_bags(make_pool(), dataclasses.replace(CFG, **{field: value}))


def test_too_few_cells_is_checked_before_drawing():
    pool = make_pool(n_lyt=100, n_bla=60)
    with pytest.raises(ValueError, match=r"too few 'LYT' cells in the source: the bags need 228"):
        build_bags(pool, CFG)
    assert pool.available() == {"BLA": 60, "LYT": 100}  # nothing consumed


def test_unknown_class_names():
    with pytest.raises(ValueError, match=r"unknown cell class 'PLM'"):
        build_bags(make_pool(), CFG, witness_class="PLM")
    with pytest.raises(ValueError, match="both 'LYT'"):
        build_bags(make_pool(), CFG, witness_class="LYT")


def test_pool_source_validates_input():
    with pytest.raises(ValueError, match="uint8"):
        PoolSource(np.zeros((3, 4, 4, 3), np.float32), ["LYT"] * 3)
    with pytest.raises(ValueError, match="empty"):
        PoolSource(np.zeros((0, 4, 4, 3), np.uint8), [])
    with pytest.raises(ValueError, match="cell_types"):
        PoolSource(np.zeros((3, 4, 4, 3), np.uint8), ["LYT"] * 2)


# ------------------------------------------------------------------ storage on disk (format 2)

def test_set_written_to_disk_equals_the_in_memory_one_and_is_memory_mapped(tmp_path):
    mem = build_bags(make_pool(), CFG)
    disk = build_bags(make_pool(), CFG, out=tmp_path / "set")
    assert isinstance(disk.images, np.memmap) and not disk.images.flags.writeable
    for f in dataclasses.fields(BagSet):
        va, vb = getattr(mem, f.name), getattr(disk, f.name)
        if isinstance(va, np.ndarray):
            np.testing.assert_array_equal(va, vb)
            assert va.dtype == vb.dtype
        else:
            assert va == vb
    files = sorted(p.name for p in (tmp_path / "set").iterdir())
    assert files == sorted([f"{a}.npy" for a in ARRAYS] + [MANIFEST])
    assert not list(tmp_path.glob(".set.tmp-*"))  # the temporary folder was renamed


def test_pools_are_index_views_into_the_storage(tmp_path):
    bs = build_bags(make_pool(), CFG, out=tmp_path / "set")
    pos, neg = bs.pretraining_pools()
    assert isinstance(pos, PatchPool) and pos.images is bs.images  # no copy of the pixels
    train = np.isin(bs.bag_index, bs.split_bags("train"))
    is_pos = bs.bag_labels[bs.bag_index] == 1
    np.testing.assert_array_equal(np.asarray(pos), bs.images[train & is_pos])
    np.testing.assert_array_equal(np.asarray(neg), bs.images[train & ~is_pos])
    np.testing.assert_array_equal(pos.labels, bs.instance_labels[train & is_pos])
    assert neg.labels.sum() == 0 and pos.labels.sum() > 0
    assert pos.shape == (len(pos), 8, 8, 3) and pos.dtype == np.uint8
    assert pos.nbytes == len(pos) * 8 * 8 * 3


def test_patch_pool_reads_in_the_requested_order():
    storage = np.arange(10, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    pool = PatchPool(storage, [7, 2, 9, 4], labels=[1, 0, 0, 1])
    assert pool.read([3, 0, 0, 2])[:, 0, 0, 0].tolist() == [4, 7, 7, 9]
    assert pool[1:3][:, 0, 0, 0].tolist() == [2, 9] and int(pool[0][0, 0, 0]) == 7
    with pytest.raises(ValueError, match="rows in"):
        PatchPool(storage, [10])
    with pytest.raises(ValueError, match="labels"):
        PatchPool(storage, [1, 2], labels=[1])


class _Failing:
    """A source that dies while the third slide is rendered."""

    def __init__(self):
        self.inner, self.calls = make_pool(), 0
        self.class_names = self.inner.class_names

    def sample_slide(self, counts, rng):
        self.calls += 1
        if self.calls == 3:
            raise KeyboardInterrupt
        return self.inner.sample_slide(counts, rng)

    def available(self):
        return self.inner.available()

    def describe(self):
        return self.inner.describe()


def test_interrupted_write_leaves_no_set_that_loads(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        build_bags(_Failing(), CFG, out=tmp_path / "set")
    assert list(tmp_path.iterdir()) == []  # neither the set nor its temporary folder
    (tmp_path / "half").mkdir()  # e.g. a copy that stopped before the manifest was written
    np.save(tmp_path / "half" / "images.npy", np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="not a complete bag set"):
        BagSet.load(tmp_path / "half")


def test_truncated_or_replaced_array_is_detected_and_the_cache_rebuilt(tmp_path):
    cells = CellConfig(image_size=32)
    bags = BagConfig(bag_size=10, witness_rate=0.1, n_train=2, n_val=0, n_test=2, seed=1)
    good = load_or_build_bags(cells, bags, root=tmp_path)
    good_images = np.array(good.images)  # a copy: the file under the map is damaged below
    del good.images
    path = bags_cache_path(cells, bags, root=tmp_path)
    np.save(path / "cell_ids.npy", np.zeros(3, np.int64))  # wrong length
    with pytest.raises(ValueError, match="cell_ids.npy.*manifest"):
        BagSet.load(path)
    img = path / "images.npy"
    img.write_bytes(img.read_bytes()[:-100])
    with pytest.raises(ValueError):
        BagSet.load(path)
    with pytest.warns(UserWarning, match="unreadable"):
        again = load_or_build_bags(cells, bags, root=tmp_path)
    np.testing.assert_array_equal(again.images, good_images)
    np.testing.assert_array_equal(again.cell_ids, good.cell_ids)


def test_old_single_file_cache_is_rebuilt_not_misread(tmp_path):
    cells = CellConfig(image_size=32)
    bags = BagConfig(bag_size=10, witness_rate=0.1, n_train=2, n_val=0, n_test=2, seed=1)
    ref = build_bags(SyntheticSource(cells), bags)
    # what version 1 wrote: one .npz, keyed with format version 1, holding *other* pixels here
    legacy = tmp_path / f"bags-{config_hash(SyntheticSource(cells).describe(), bags, 'LYT', 'BLA', 1)}.npz"
    arrays = {f.name: np.asarray(getattr(ref, f.name)) for f in dataclasses.fields(BagSet)
              if f.name != "config"}
    arrays["images"] = np.zeros_like(ref.images)
    np.savez(legacy, **arrays, config=np.asarray("{}"), format_version=np.asarray(1))
    with pytest.raises(ValueError, match="single-file bag set"):
        BagSet.load(legacy)
    with pytest.warns(UserWarning, match="old single-file format"):
        bs = load_or_build_bags(cells, bags, root=tmp_path)
    np.testing.assert_array_equal(bs.images, ref.images)
    assert not legacy.exists() and bags_cache_path(cells, bags, root=tmp_path).is_dir()


def test_a_second_writer_of_the_same_set_keeps_the_first(tmp_path):
    a = build_bags(make_pool(), CFG, out=tmp_path / "set")
    with pytest.raises(FileExistsError):
        build_bags(make_pool(), CFG, out=tmp_path / "set")
    with pytest.raises(FileExistsError):
        a.save(tmp_path / "set")
    assert BagSet.load(tmp_path / "set").n_bags == a.n_bags
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]
