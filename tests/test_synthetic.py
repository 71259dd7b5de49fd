"""Tests of the synthetic MGG cell renderer (slamags_core.synthetic)."""
import numpy as np
import pytest

from slamags_core import synthetic as syn
from slamags_core.synthetic import CLASS_NAMES, STAIN_DIM, render_cells, sample_stain


def _render(types, size=32, difficulty=0.5, seed=0, **kw):
    return render_cells(types, image_size=size, difficulty=difficulty,
                        rng=np.random.default_rng(seed), **kw)


def _blueness(images):
    """Per-image mean of (blue - red): high for basophilic cytoplasm, low for pink plasma."""
    x = images.astype(np.float32) / 255
    return (x[..., 2] - x[..., 0]).mean(axis=(1, 2))


def test_registry_has_negative_and_abnormal_classes():
    assert {"LYT", "BLA"} <= set(CLASS_NAMES)
    assert len(CLASS_NAMES) >= 3                      # a second, subtler abnormal class
    assert syn.CELL_CLASSES["LYT"].offsets == {}      # LYT is the reference
    for cls in syn.CELL_CLASSES.values():
        assert set(cls.offsets) <= set(syn.CLASS_FACTORS)


@pytest.mark.parametrize("size", [32, 40, 64, 250, 256])
def test_shape_dtype_range(size):
    imgs = _render(["LYT", "BLA", "LYI"], size=size)
    assert imgs.shape == (3, size, size, 3) and imgs.dtype == np.uint8
    assert 0 < imgs.min() and imgs.max() < 255        # no saturated black/white
    assert imgs.std() > 10                            # not blank


def test_every_size_in_range_works():
    for size in range(32, 257, 7):
        assert _render(["BLA"], size=size).shape == (1, size, size, 3)


def test_empty_input():
    assert _render([], size=40).shape == (0, 40, 40, 3)


def test_deterministic_and_seed_dependent():
    types = ["LYT", "BLA"] * 3
    a, b, c = _render(types, seed=3), _render(types, seed=3), _render(types, seed=4)
    assert a.tobytes() == b.tobytes()
    assert np.abs(a.astype(int) - c).mean() > 5


def test_factors_returned_and_consistent():
    imgs, f = _render(["LYT"] * 5 + ["BLA"] * 5, return_factors=True, difficulty=0.0)
    assert len(imgs) == 10
    for key in ("cell_radius", "nc_ratio", "eccentricity", "rotation",
                "chromatin_coarseness", "nucleoli", "cytoplasm_blueness"):
        assert f[key].shape == (10,)
    assert f["cell_radius"][5:].mean() > f["cell_radius"][:5].mean()


def test_difficulty_one_makes_classes_identical():
    """Same generator state: at difficulty 1 a blast is rendered byte-identical to a lymphocyte."""
    lyt = _render(["LYT"] * 8, difficulty=1.0, seed=5)
    bla = _render(["BLA"] * 8, difficulty=1.0, seed=5)
    assert lyt.tobytes() == bla.tobytes()


def test_negative_class_does_not_depend_on_difficulty():
    assert _render(["LYT"] * 4, difficulty=0.0).tobytes() == \
        _render(["LYT"] * 4, difficulty=0.9).tobytes()


def test_class_gap_shrinks_monotonically_with_difficulty():
    """Paired (same draws) pixel gap and an effect size on a fixed statistic both shrink."""
    n, grid = 120, [0.0, 0.25, 0.5, 0.75, 1.0]
    lyt = _render(["LYT"] * n, seed=11)
    lyt_ind = _render(["LYT"] * n, seed=12)
    paired, effect = [], []
    for d in grid:
        bla = _render(["BLA"] * n, difficulty=d, seed=11)
        paired.append(np.abs(bla.astype(np.float32) - lyt).mean())
        x, y = _blueness(bla), _blueness(lyt_ind)
        effect.append((x.mean() - y.mean()) / np.sqrt((x.var() + y.var()) / 2))
    assert all(a > b for a, b in zip(paired, paired[1:])) and paired[-1] == 0
    assert all(a > b for a, b in zip(effect, effect[1:]))
    assert effect[0] > 1.5 and abs(effect[-1]) < 0.4


def test_subtle_class_lies_between():
    n = 150
    b = {c: _blueness(_render([c] * n, difficulty=0.0, seed=21 + i)).mean()
         for i, c in enumerate(("LYT", "LYI", "BLA"))}
    assert b["LYT"] < b["LYI"] < b["BLA"]


def test_stain_shape_and_independence_of_label():
    rng = np.random.default_rng(0)
    s = sample_stain(rng, 7)
    assert s.shape == (7, STAIN_DIM) and s.dtype == np.float32
    assert sample_stain(rng, 0).shape == (0, STAIN_DIM)
    # The stain changes colours, never the cells' latent factors.
    _, f0 = _render(["BLA", "LYT"] * 3, return_factors=True, seed=2)
    _, f1 = _render(["BLA", "LYT"] * 3, return_factors=True, seed=2, stain=s[0])
    for key in f0:
        np.testing.assert_array_equal(f0[key], f1[key])


def test_stain_shared_within_a_slide():
    stain = sample_stain(np.random.default_rng(1), 1)[0]
    types = ["LYT", "BLA"] * 4
    one = _render(types, stain=stain, seed=7)
    per_cell = _render(types, stain=np.tile(stain, (8, 1)), seed=7)
    assert one.tobytes() == per_cell.tobytes()
    # The same stain shifts the mean colour of two different sets of cells the same way.
    shifts = []
    for seed in (30, 31):
        neutral = _render(types, seed=seed).astype(np.float32).mean(axis=(0, 1, 2))
        stained = _render(types, seed=seed, stain=stain).astype(np.float32).mean(axis=(0, 1, 2))
        shifts.append(stained - neutral)
    assert np.abs(shifts[0]).max() > 2
    np.testing.assert_allclose(shifts[0], shifts[1], atol=2.0)


def test_different_stains_give_different_colours():
    stains = sample_stain(np.random.default_rng(4), 2)
    a = _render(["LYT"] * 8, stain=stains[0], seed=9).astype(np.float32).mean(axis=(0, 1, 2))
    b = _render(["LYT"] * 8, stain=stains[1], seed=9).astype(np.float32).mean(axis=(0, 1, 2))
    assert np.abs(a - b).max() > 2


def test_colour_statistics_near_real_data():
    """Per-channel mean/std near the Bone Marrow Cytomorphology normalisation constants."""
    rng = np.random.default_rng(0)
    x = np.concatenate([
        render_cells(["LYT", "BLA"] * 16, image_size=64, difficulty=0.5, rng=rng,
                     stain=sample_stain(rng, 1)[0]) for _ in range(4)]).astype(np.float32) / 255
    mean, std = x.mean(axis=(0, 1, 2)), x.std(axis=(0, 1, 2))
    np.testing.assert_allclose(mean, [0.60, 0.55, 0.74], atol=0.12)
    np.testing.assert_allclose(std, [0.20, 0.24, 0.11], atol=0.07)
    assert mean[2] > mean[0] > mean[1]                # violet-pink overall: B > R > G


@pytest.mark.parametrize("kw, match", [
    ({"image_size": 31}, "image_size"), ({"image_size": 257}, "image_size"),
    ({"image_size": 40.5}, "image_size"), ({"difficulty": -0.1}, "difficulty"),
    ({"difficulty": 1.5}, "difficulty"), ({"types": ["LYT", "XYZ"]}, "XYZ.*allowed.*LYT"),
    ({"stain": np.zeros(STAIN_DIM + 1)}, "stain"), ({"stain": np.zeros((3, STAIN_DIM))}, "stain"),
])
def test_bad_inputs_raise(kw, match):
    args = {"image_size": 32, "difficulty": 0.5, "types": ["LYT", "BLA"], "stain": None}
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        render_cells(args.pop("types"), rng=np.random.default_rng(0), **args)


def test_sample_stain_bad_n():
    with pytest.raises(ValueError, match="n must be"):
        sample_stain(np.random.default_rng(0), -1)


@pytest.mark.parametrize("difficulty", [0.0, 0.4, 1.0])
def test_factor_means_follow_the_gap_formula(difficulty):
    """Mean of a class factor = LYT mean + (1 - d) ** power x offset (written out by hand)."""
    n = 4000
    f = syn.sample_factors(["BLA"] * n, difficulty, np.random.default_rng(0))
    expected = {"cell_radius": 0.24 + 0.085 * (1 - difficulty) ** 2,
                "chromatin_coarseness": 0.80 - 0.6 * (1 - difficulty) ** 0.5,
                "nucleoli_rate": 0.02 + 0.6 * (1 - difficulty) ** 0.5}
    for key, mu in expected.items():
        sd = syn.CLASS_FACTORS[key][1]
        assert abs(f[key].mean() - mu) < 4 * sd / np.sqrt(n) + 0.01, key
    assert abs(f["nucleoli"].mean() - 3 * expected["nucleoli_rate"]) < 0.06


def test_sample_factors_bad_difficulty():
    with pytest.raises(ValueError, match="difficulty"):
        syn.sample_factors(["LYT"], 1.2, np.random.default_rng(0))
