"""The grading engine shared by every exercise (see :mod:`slamags_core.exercises`).

A grader is a list of :class:`Case` s and a reference; :func:`grade` calls the reference and the
student's function on copies of each case's inputs, stops at the first disagreement and prints
which input failed, expected versus got, and a hint (the hint of a typical mistake when the
student's output equals that mistake's output).
"""
from __future__ import annotations

import copy
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch


class ExerciseFailed(AssertionError):
    """A grader called with ``strict=True`` found a wrong or missing solution."""


@dataclass
class Report:
    """Outcome of one grader call.

    Attributes:
        exercise: the exercise's name.
        status: ``"passed"``, ``"failed"`` or ``"not attempted"``.
        n_passed: cases passed before the first failure (all of them when passed).
        n_cases: number of cases.
        message: the text the grader printed.
        case: name of the failing case (``None`` when passed).
        inputs: arguments of the failing case: ``fn(*report.inputs)`` reproduces it.
        expected: the reference's output on the failing case.
        got: the student's output on the failing case.
    """

    exercise: str
    status: str
    n_passed: int
    n_cases: int
    message: str
    case: str | None = None
    inputs: tuple | None = None
    expected: Any = None
    got: Any = None
    _printed_in: int | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:
        return f"<{self.exercise}: {self.status}, {self.n_passed}/{self.n_cases} cases>"

    def _ipython_display_(self) -> None:
        """How a notebook shows a report: a check cell ends with the grader's call, whose message
        the grader has just printed in that same cell, so nothing more; shown in a later cell
        (``report`` on its own line), the message again."""
        if self._printed_in is None or self._printed_in != _cell_number():
            print(self.message)


@dataclass
class Case:
    """One input of a grader, with what to say when the student's function fails on it."""

    name: str                     # what the input is, in words (printed when it fails)
    args: tuple                   # positional arguments of the student's function
    hint: str = ""                # printed when this case fails and no known mistake matches
    grad: bool = False            # compare gradients w.r.t. the tensor arguments instead
    compare: Callable | None = None  # custom (expected, got, args) -> problem text or None
    mistakes: Sequence[tuple[str, Callable]] = field(default_factory=tuple)  # (hint, wrong fn)
    reference: Callable | None = None  # this case's own reference (else the grader's)
    match: Callable | None = None     # (wrong output, got) -> bool; default: numerically equal


def describe(x: Any) -> str:
    """An input in words: shape and dtype of arrays, values of small ones."""
    if isinstance(x, torch.Tensor):
        if x.numel() <= 6:
            return f"tensor({[round(v, 4) for v in x.detach().double().flatten().tolist()]}, " \
                   f"shape {tuple(x.shape)}, {str(x.dtype).replace('torch.', '')})"
        return f"tensor of shape {tuple(x.shape)} ({str(x.dtype).replace('torch.', '')})"
    if isinstance(x, np.ndarray):
        if x.size <= 6:
            return f"array({x.tolist()}, {x.dtype})"
        return f"array of shape {x.shape} ({x.dtype})"
    if isinstance(x, (list, tuple)) and x and all(isinstance(v, (torch.Tensor, np.ndarray)) for v in x):
        return f"{type(x).__name__} of {len(x)} × " + describe(x[0])
    if isinstance(x, torch.nn.Module):
        return f"{type(x).__name__} ({sum(p.numel() for p in x.parameters())} parameters, " \
               f"{'train' if x.training else 'eval'} mode)"
    if isinstance(x, float):
        return f"{x:.6g}"
    return repr(x)


def show(x: Any) -> str:
    """An output in words (scalars as numbers)."""
    if isinstance(x, torch.Tensor):
        x = x.detach()
        return f"{float(x):.6g}" if x.numel() == 1 and x.dim() == 0 else describe(x)
    if isinstance(x, np.ndarray):
        return describe(x) if x.size > 6 else np.array2string(x, precision=5)
    if isinstance(x, (float, np.floating)):
        return f"{float(x):.6g}"
    if isinstance(x, tuple):
        return "(" + ", ".join(show(v) for v in x) + ")"
    return repr(x)


def clone(x: Any) -> Any:
    """A fresh copy of every argument, so that one call cannot change another's input."""
    if isinstance(x, torch.Tensor):
        return x.detach().clone()
    if isinstance(x, (list, tuple)):
        return type(x)(clone(v) for v in x)
    if isinstance(x, (np.ndarray, torch.nn.Module)):
        return copy.deepcopy(x)
    return x


def _as_array(x: Any) -> np.ndarray | None:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy()
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return arr


def close(expected: Any, got: Any, rtol: float = 1e-5, atol: float = 1e-6, what: str = "output"
          ) -> str | None:
    """Describe how ``got`` differs from ``expected`` (None when they agree)."""
    if isinstance(expected, tuple):
        if not isinstance(got, (tuple, list)) or len(got) != len(expected):
            return f"expected a tuple of {len(expected)} values, got {describe(got)}"
        for i, (e, g) in enumerate(zip(expected, got)):
            problem = close(e, g, rtol, atol, f"{what}[{i}]")
            if problem:
                return problem
        return None
    if isinstance(expected, torch.Tensor) and not isinstance(got, (torch.Tensor, float, int, np.generic)):
        return f"{what}: expected a torch tensor, got {type(got).__name__}"
    if got is None:
        return f"{what}: your function returned None (did you forget `return`?)"
    e, g = _as_array(expected), _as_array(got)
    if g is None:
        return f"{what}: expected numbers, got {type(got).__name__}"
    if e.shape != g.shape:
        if g.size == 1 and e.size == 1:
            return (f"{what}: expected shape {e.shape}, got shape {g.shape} (a scalar is wanted: "
                    f"reduce with .mean() / .sum() or .squeeze())")
        return f"{what}: expected shape {e.shape}, got shape {g.shape}"
    bad = ~np.isfinite(g) & np.isfinite(e)
    if bad.any():
        return f"{what}: got NaN or inf where the answer is finite ({int(bad.sum())} of {g.size} values)"
    err = np.abs(g - e)
    tol = atol + rtol * np.abs(e)
    if not (err <= tol).all() or (np.isnan(g) != np.isnan(e)).any():
        worst = int(np.nanargmax(np.where(np.isnan(err), np.inf, err - tol)))
        index = [int(i) for i in np.unravel_index(worst, e.shape)]
        where = "" if e.size == 1 else f" at index {index if len(index) > 1 else index[0]}"
        return (f"{what}: values differ{where}: expected {e.flat[worst]:.6g}, got {g.flat[worst]:.6g} "
                f"(abs. error {err.flat[worst]:.3g}, tolerance {tol.flat[worst]:.3g})")
    return None


def _gradients(fn: Callable, args: tuple) -> tuple:
    """``fn(*args)`` backpropagated to every floating tensor argument; returns the gradients."""
    args = tuple(a.detach().clone().requires_grad_(True)
                 if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)
    out = fn(*args)
    if isinstance(out, (tuple, list)):  # several outputs: differentiate the sum of their squares
        if not all(isinstance(o, torch.Tensor) and o.grad_fn is not None for o in out):
            raise _NotDifferentiable
        out = sum((o * o).sum() for o in out)
    if not isinstance(out, torch.Tensor) or out.grad_fn is None:
        raise _NotDifferentiable
    leaves = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    grads = torch.autograd.grad(out, leaves, allow_unused=True)
    return tuple(torch.zeros_like(a) if g is None else g for a, g in zip(leaves, grads))


class _NotDifferentiable(Exception):
    pass


def grade(exercise: str, fn: Callable, reference: Callable | None, cases: Sequence[Case], *,
          strict: bool, rtol: float = 1e-5, atol: float = 1e-6, covers: str = "") -> Report:
    """Run every case; stop at the first failure; print and return the report.

    Args:
        exercise: the exercise's name, as printed.
        fn: the student's function.
        reference: the right answer's function (a case's own ``reference`` wins).
        cases: the inputs, easy ones first.
        strict: raise :class:`ExerciseFailed` unless every case passes.
        rtol, atol: tolerances of :func:`close` (custom ``compare`` functions ignore them).
        covers: what the cases cover, printed with a pass.
    """
    name = getattr(fn, "__name__", "your function")
    n = len(cases)
    for i, case in enumerate(cases):
        ref = case.reference or reference
        call_ref = (lambda *a: _gradients(ref, a)) if case.grad else ref
        call_fn = (lambda *a: _gradients(fn, a)) if case.grad else fn
        expected = call_ref(*clone(case.args))
        try:
            got = call_fn(*clone(case.args))
        except NotImplementedError as exc:
            if i == 0:
                msg = (f"… {exercise}: not attempted yet — `{name}` raises NotImplementedError "
                       f"({exc}). Write your solution in the cell above and run this cell again.")
                return _finish(Report(exercise, "not attempted", 0, n, msg), strict)
            got, problem = None, f"`{name}` raised NotImplementedError: {exc}"
        except _NotDifferentiable:
            got, problem = None, (f"`{name}` must return a tensor that autograd can differentiate "
                                  f"w.r.t. the inputs: use torch operations only (no .item(), "
                                  f".numpy(), torch.tensor(...) or float(...) on intermediate values)")
        except Exception as exc:  # the student's code may raise anything; report it, do not crash
            got, problem = None, f"`{name}` raised {type(exc).__name__}: {exc}"
        else:
            problem = (case.compare(expected, got, case.args) if case.compare
                       else close(expected, got, rtol, atol, "gradient" if case.grad else "output"))
        if problem:
            hint = _diagnose(case, got) or case.hint
            lines = [f"✗ {exercise}: case {i + 1} of {n} failed — {case.name}",
                     "  input:    " + ", ".join(describe(a) for a in case.args),
                     f"  problem:  {problem}"]
            if got is not None:
                lines += [f"  expected: {show(expected)}", f"  got:      {show(got)}"]
            if hint:
                lines.append(f"  hint:     {hint}")
            check = sys._getframe(1).f_code.co_name  # the check_* function that called grade()
            lines.append(f"  rerun:    report = exercises.{check}({name}) keeps this input; "
                         f"{name}(*report.inputs) repeats it ({i} earlier case(s) passed)")
            return _finish(Report(exercise, "failed", i, n, "\n".join(lines), case.name,
                                  clone(case.args), expected, got), strict)
    msg = f"✓ {exercise}: all {n} cases passed" + (f" ({covers})" if covers else "")
    return _finish(Report(exercise, "passed", n, n, msg), strict)


def _diagnose(case: Case, got: Any) -> str:
    """The hint of the first typical mistake whose output equals the student's."""
    if got is None:
        return ""
    for hint, wrong in case.mistakes:
        try:
            out = (_gradients(wrong, clone(case.args)) if case.grad
                   else wrong(*clone(case.args)))
        except Exception:  # a mistake model that does not apply to this input
            continue
        if (case.match(out, got) if case.match else close(out, got, 1e-4, 1e-6) is None):
            return hint
    return ""


def _cell_number() -> int | None:
    """The IPython cell being run (its execution count); None outside IPython."""
    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    return getattr(shell, "execution_count", None)


def _finish(report: Report, strict: bool) -> Report:
    print(report.message)
    report._printed_in = _cell_number()
    if strict and not report.passed:
        raise ExerciseFailed(report.message)
    return report


def randn(gen: torch.Generator, *shape: int, dtype=torch.float64) -> torch.Tensor:
    """Seeded standard normal tensor (float64 unless told)."""
    return torch.randn(*shape, generator=gen, dtype=dtype)
