"""The number checks every public function uses (slamags_core.validation)."""
from fractions import Fraction

import numpy as np
import pytest
import torch

from slamags_core.validation import check_float, check_int


@pytest.mark.parametrize("value", [8, 8.0, np.int64(8), np.uint8(8), np.float32(8.0), np.array(8),
                                   torch.tensor(8), torch.tensor(8.0), Fraction(16, 2)])
def test_int_accepts_every_spelling_of_eight(value):
    out = check_int(value, "bag_size", ge=1)
    assert out == 8 and type(out) is int


@pytest.mark.parametrize("value,why", [
    (True, "a bool is not a number"), (np.bool_(False), "a bool is not a number"),
    (torch.tensor(True), "a bool is not a number"), (8.5, "not a whole number"),
    (float("nan"), "not finite"), (float("inf"), "not finite"), ("8", "type str"),
    (None, "type NoneType"), (torch.tensor([8]), "type Tensor"), (np.array([8]), "type ndarray"),
    (1 + 0j, "type complex"),
])
def test_int_rejects_non_integers_naming_the_value(value, why):
    with pytest.raises(ValueError, match="bag_size must be an integer >= 1, got .*") as err:
        check_int(value, "bag_size", ge=1)
    assert repr(value) in str(err.value) and why in str(err.value)


@pytest.mark.parametrize("value,allowed", [(0, "an integer >= 1"), (-3, "an integer >= 1")])
def test_int_range(value, allowed):
    with pytest.raises(ValueError, match=f"k must be {allowed}, got {value}$"):
        check_int(value, "k", ge=1)
    with pytest.raises(ValueError, match=r"image_size must be an integer in \[8, 1024\], got 2000"):
        check_int(2000, "image_size", ge=8, le=1024)
    with pytest.raises(ValueError, match=r"n must be an integer <= 3, got 4"):
        check_int(4, "n", le=3)
    assert check_int(-5, "offset") == -5


@pytest.mark.parametrize("value", [0.5, np.float32(0.5), np.float64(0.5), np.array(0.5),
                                   torch.tensor(0.5), torch.tensor(0.5, dtype=torch.bfloat16),
                                   torch.tensor(0.5, requires_grad=True), Fraction(1, 2)])
def test_float_accepts_numpy_and_0d_tensors(value):
    out = check_float(value, "witness_rate", gt=0, le=1)
    assert out == 0.5 and type(out) is float


def test_float_accepts_ints_as_floats():
    out = check_float(1, "witness_rate", gt=0, le=1)
    assert out == 1.0 and type(out) is float


@pytest.mark.parametrize("value", [True, False, 0, 1.5, -0.1, float("nan"), float("inf"),
                                   10 ** 400, "0.5", None, np.array([0.5]), torch.ones(2)])
def test_float_rejects_naming_value_and_range(value):
    with pytest.raises(ValueError, match=r"witness_rate must be a finite number in \(0, 1\], "
                                         r"got ") as err:
        check_float(value, "witness_rate", gt=0, le=1)
    assert repr(value) in str(err.value)


@pytest.mark.parametrize("bounds,text,bad", [
    (dict(gt=0), "> 0", 0), (dict(ge=0), ">= 0", -1e-9), (dict(lt=1), "< 1", 1),
    (dict(le=0.5), "<= 0.5", 0.75), (dict(ge=0, lt=1), r"in \[0, 1\)", 1.0),
])
def test_float_bounds_are_spelled_out(bounds, text, bad):
    with pytest.raises(ValueError, match=f"t must be a finite number {text}, got {bad!r}"):
        check_float(bad, "t", **bounds)
