"""One rule for every number that enters the public API, and one way to say what is wrong.

Every function and config of the package that takes a number checks it with :func:`check_int`
or :func:`check_float`, so the same value gets the same answer everywhere:

* a number is a Python ``int`` / ``float`` (or another :class:`numbers.Real`), a NumPy scalar
  (``np.float32(0.5)``, ``np.int64(8)``), a 0-d NumPy array or a 0-d torch tensor;
* a bool is *not* a number here: ``witness_rate=True`` would silently mean 1;
* where an integer is wanted, an integral float (``8.0``) is accepted as ``8``; ``8.5`` is not;
* NaN and infinity are never accepted.

Both return the value as a plain Python ``int`` / ``float``, so the caller goes on with a value
every library downstream (NumPy, PyTorch, JSON) understands. A bad value raises a
``ValueError`` that names the argument, the value and what is allowed, e.g.
``witness_rate must be a finite number in (0, 1], got 1.5``. Configs (``BagConfig``,
``PretrainConfig``, ``MILConfig``, ``CellConfig``) are checked field by field by the function
that consumes them, which then goes on with a copy holding the plain values.

Arrays of labels are not scalars and are checked where they are read (bag labels in {0, 1} in
:mod:`slamags_core.metrics` and :mod:`slamags_core.mil`, which accept bool labels; BloodMNIST
class indices in :mod:`slamags_core.realdata`).
"""
from __future__ import annotations

import math
import numbers
import sys

import numpy as np


def _unwrap(value):
    """A 0-d NumPy array / NumPy scalar / 0-d torch tensor -> the Python scalar inside it."""
    torch = sys.modules.get("torch")  # a tensor can only exist if torch was imported
    if torch is not None and isinstance(value, torch.Tensor):
        return value.item() if value.dim() == 0 else value
    if isinstance(value, (np.ndarray, np.generic)):
        return value.item() if value.ndim == 0 else value
    return value


def _fmt(bound) -> str:
    return str(bound) if isinstance(bound, int) else f"{bound:g}"


def _bounds(*, gt=None, ge=None, lt=None, le=None) -> str:
    """Human-readable allowed range: `` in (0, 1]``, `` >= 1``, `` < 5`` or ``""`` (no bound)."""
    low = ("(", gt) if gt is not None else ("[", ge) if ge is not None else None
    high = (")", lt) if lt is not None else ("]", le) if le is not None else None
    if low and high:
        return f" in {low[0]}{_fmt(low[1])}, {_fmt(high[1])}{high[0]}"
    if low:
        return f" {'>' if low[0] == '(' else '>='} {_fmt(low[1])}"
    if high:
        return f" {'<' if high[0] == ')' else '<='} {_fmt(high[1])}"
    return ""


def _real(value, name: str, wanted: str):
    """The plain real number inside ``value``, or a ValueError that says what was wanted."""
    x = _unwrap(value)
    if isinstance(x, bool):
        raise ValueError(f"{name} must be {wanted}, got {value!r} (a bool is not a number here)")
    if not isinstance(x, numbers.Real):
        raise ValueError(f"{name} must be {wanted}, got {value!r} of type {type(value).__name__}")
    return x


def check_int(value, name: str, *, ge: int | None = None, le: int | None = None) -> int:
    """Validate an integer argument and return it as a Python ``int``.

    Args:
        value: an ``int``, a NumPy integer, a 0-d array or tensor, or an integral float
            (``8.0``); never a bool.
        name: the argument's name, used in the message.
        ge: smallest allowed value (inclusive), or ``None``.
        le: largest allowed value (inclusive), or ``None``.

    Returns:
        ``value`` as an ``int``.

    Raises:
        ValueError: naming ``name``, the value and the allowed range, for a bool, a
            non-number, a non-integral or non-finite number, or a value outside ``[ge, le]``.
    """
    wanted = f"an integer{_bounds(ge=ge, le=le)}"
    x = _real(value, name, wanted)
    if isinstance(x, numbers.Integral):
        x = int(x)
    elif not math.isfinite(x):
        raise ValueError(f"{name} must be {wanted}, got {value!r} (not finite)")
    elif not float(x).is_integer():
        raise ValueError(f"{name} must be {wanted}, got {value!r} (not a whole number)")
    x = int(x)
    if (ge is not None and x < ge) or (le is not None and x > le):
        raise ValueError(f"{name} must be {wanted}, got {value!r}")
    return x


def check_float(value, name: str, *, gt: float | None = None, ge: float | None = None,
                lt: float | None = None, le: float | None = None) -> float:
    """Validate a real-valued argument and return it as a finite Python ``float``.

    Args:
        value: an ``int`` or ``float``, a NumPy scalar, a 0-d array or tensor; never a bool.
        name: the argument's name, used in the message.
        gt, ge: exclusive / inclusive lower bound (give at most one), or ``None``.
        lt, le: exclusive / inclusive upper bound (give at most one), or ``None``.

    Returns:
        ``value`` as a ``float``.

    Raises:
        ValueError: naming ``name``, the value and the allowed range, for a bool, a
            non-number, NaN, infinity, or a value outside the range.
    """
    wanted = f"a finite number{_bounds(gt=gt, ge=ge, lt=lt, le=le)}"
    x = _real(value, name, wanted)
    x = float(x) if abs(x) < 2 ** 1024 else math.inf  # a huge int has no float: out of range
    if not math.isfinite(x) or (gt is not None and not x > gt) or (ge is not None and x < ge) \
            or (lt is not None and not x < lt) or (le is not None and x > le):
        raise ValueError(f"{name} must be {wanted}, got {value!r}")
    return x
