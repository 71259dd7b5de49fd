"""Tests of slamags_core.viz.mosaic against hand-built layouts."""
import numpy as np
import pytest

from slamags_core.viz import mosaic


def _solid(values, h=4, w=5):
    """One solid-colour tile per value: tile i is filled with (v, v, v)."""
    return np.stack([np.full((h, w, 3), v, dtype=np.uint8) for v in values])


def test_layout_matches_hand_built_grid():
    imgs = _solid([10, 20, 30])
    out = mosaic(imgs, ncols=2, pad=1)
    assert out.shape == (2 * 6, 2 * 7, 3) and out.dtype == np.uint8
    # tile 0 at (row 0, col 0), tile 1 at (0, 1), tile 2 at (1, 0), tile 3 missing -> white
    assert (out[1:5, 1:6] == 10).all()
    assert (out[1:5, 8:13] == 20).all()
    assert (out[7:11, 1:6] == 30).all()
    assert (out[6:12, 7:14] == 255).all()
    assert (out[0] == 255).all() and (out[:, 0] == 255).all()   # padding is white


def test_outline_frames_only_marked_cells():
    imgs = _solid([10, 20])
    out = mosaic(imgs, ncols=2, outline=np.array([False, True]), color=(1, 2, 3), pad=2)
    tile1 = out[:, 9:18]                                          # second tile, 4+4 by 5+4
    assert (tile1[:2] == (1, 2, 3)).all() and (tile1[-2:] == (1, 2, 3)).all()
    assert (tile1[:, :2] == (1, 2, 3)).all() and (tile1[:, -2:] == (1, 2, 3)).all()
    assert (tile1[2:6, 2:7] == 20).all()                          # the cell itself untouched
    tile0 = out[:, :9]
    assert not (tile0 == (1, 2, 3)).all(axis=-1).any()


def test_zero_pad_frame_draws_over_border():
    imgs = _solid([50])
    out = mosaic(imgs, ncols=1, outline=[True], color=(255, 0, 0), pad=0)
    assert out.shape == (4, 5, 3)
    assert (out[0] == (255, 0, 0)).all() and (out[1:3, 1:4] == 50).all()


def test_input_not_modified():
    imgs = _solid([10, 20])
    copy = imgs.copy()
    mosaic(imgs, ncols=1, outline=[True, True])
    np.testing.assert_array_equal(imgs, copy)


@pytest.mark.parametrize("kw, match", [
    ({"ncols": 0}, "ncols"), ({"pad": -1}, "pad"), ({"outline": [True]}, "outline"),
])
def test_bad_arguments(kw, match):
    args = {"ncols": 2}
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        mosaic(_solid([1, 2]), **args)


def test_bad_images():
    with pytest.raises(ValueError, match="uint8"):
        mosaic(np.zeros((2, 4, 4, 3), dtype=np.float32), ncols=1)
    with pytest.raises(ValueError, match="uint8"):
        mosaic(np.zeros((0, 4, 4, 3), dtype=np.uint8), ncols=1)
