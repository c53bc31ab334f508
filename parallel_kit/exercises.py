"""Predict-then-measure exercises in the notebooks: compare a learner's prediction with a result.

Each notebook asks a learner to write a number down before a cell runs (``MY_MAKESPAN = None``,
say), and afterwards calls :func:`check` with the measured (or computed) number::

    from parallel_kit.exercises import check

    check("makespan on 3 GPUs, model s", MY_MAKESPAN, run.summary.makespan_s, rel=0.05)

which prints one line:

* ``✓ makespan on 3 GPUs, model s: you predicted 20, measured 20.4 — within ±5 %``
* ``✗ makespan on 3 GPUs, model s: you predicted 30, measured 20.4 — off by +47 %, more than
  the ±5 % allowed``
* ``· makespan on 3 GPUs, model s: no prediction yet — measured 20.4 (within ±5 % counts)``
  when the prediction is still ``None`` (the notebooks ship that way, so they run unattended);
* ``· …: not measured here (…)`` when the measurement was skipped (``measured`` is ``None``).

The worked solutions are kept apart from the notebooks, in ``notebooks/solutions/``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Check", "check", "evaluate"]


@dataclass(frozen=True)
class Check:
    """The outcome of one :func:`check`.

    ``passed`` is ``True`` (within tolerance), ``False`` (outside it) or ``None`` (no
    prediction yet, or nothing measured); ``line`` is what :func:`check` prints.
    """

    name: str
    predicted: float | None
    measured: float | None
    rel: float
    abs_tol: float
    passed: bool | None
    line: str

    def __bool__(self) -> bool:
        return bool(self.passed)


def _fmt(x: float) -> str:
    return f"{x:.3g}" if abs(x) < 1000 else f"{x:,.0f}"


def _tolerance(rel: float, abs_tol: float) -> str:
    parts = []
    if rel:
        parts.append(f"±{rel:.0%}" if rel * 100 == round(rel * 100) else f"±{rel:.1%}")
    if abs_tol:
        parts.append(f"±{_fmt(abs_tol)}")
    return " or ".join(parts)


def evaluate(name: str, predicted: float | None, measured: float | None, *, rel: float = 0.10,
             abs_tol: float = 0.0, note: str = "") -> Check:
    """Compare a prediction with a measurement; :func:`check` prints the result's ``line``.

    Args:
        name: what was predicted, with its unit (``"makespan, model s"``).
        predicted: the learner's number; ``None`` means no prediction yet: the line then
            shows the measurement and the tolerance, and nothing fails.
        measured: the number the notebook measured or computed; ``None`` when the
            measurement was skipped (``note`` may say why).
        rel: relative tolerance, as a fraction of ``measured`` (0.10 = ±10 %); 0 with
            ``abs_tol`` 0 asks for the exact number (a count of GPUs, say).
        abs_tol: absolute tolerance in the unit of ``measured``; the prediction passes when
            it is within either tolerance.
        note: appended to the line (a hint, or why nothing was measured).

    Returns:
        A :class:`Check` (truthy when the prediction was within tolerance).

    Raises:
        ValueError: a negative tolerance, or a prediction or measurement that is not a
            finite number.
    """
    if rel < 0 or abs_tol < 0:
        raise ValueError(f"tolerances must be ≥ 0, got rel={rel!r}, abs_tol={abs_tol!r}")
    for label, value in (("prediction", predicted), ("measurement", measured)):
        if value is not None and not (isinstance(value, (int, float))
                                      and not isinstance(value, bool)
                                      and math.isfinite(value)):
            raise ValueError(f"{name}: the {label} must be a finite number or None, got "
                             f"{value!r} — write a number such as 20 or 2.5")
    tol = _tolerance(rel, abs_tol)
    tail = f" ({note})" if note else ""
    passed: bool | None
    if measured is None:
        passed = None
        line = f"· {name}: not measured here{tail}"
    elif predicted is None:
        passed = None
        wanted = f"a prediction within {tol} counts" if tol else "the exact number counts"
        line = f"· {name}: no prediction yet — measured {_fmt(measured)}; {wanted}{tail}"
    else:
        passed = abs(predicted - measured) <= max(rel * abs(measured), abs_tol)
        said = f"you predicted {_fmt(predicted)}, measured {_fmt(measured)}"
        if passed:
            line = f"✓ {name}: {said} — {'within ' + tol if tol else 'exactly right'}{tail}"
        else:
            off = (f"off by {(predicted - measured) / measured:+.0%}" if measured and tol
                   else f"off by {predicted - measured:+.3g}")
            allowed = f"more than the {tol} allowed" if tol else "the exact number is wanted"
            line = f"✗ {name}: {said} — {off}, {allowed}{tail}"
    return Check(name, predicted, measured, rel, abs_tol, passed, line)


def check(name: str, predicted: float | None, measured: float | None, *, rel: float = 0.10,
          abs_tol: float = 0.0, note: str = "") -> None:
    """Print one ✓/✗ line comparing a prediction with a measurement, naming the tolerance.

    The arguments are :func:`evaluate`'s; nothing is returned, so a notebook cell that ends
    with a check shows only the line (:func:`evaluate` gives the :class:`Check`).

    Raises:
        ValueError: as :func:`evaluate`.
    """
    print(evaluate(name, predicted, measured, rel=rel, abs_tol=abs_tol, note=note).line)
