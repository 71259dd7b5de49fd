"""Bag simulation: witness counts, no shared cells, splits, pools, cache, bad input."""
import dataclasses

import numpy as np
import pytest

from slamags_core import bags as bags_module
from slamags_core.bags import (BagSet, PoolSource, SyntheticSource, bags_cache_path, build_bags,
                               load_or_build_bags, n_witnesses)
from slamags_core.config import BagConfig, CellConfig


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
    back = BagSet.load(bs.save(tmp_path / "b.npz"))
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
