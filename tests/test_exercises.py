"""parallel_kit.exercises.check: the ✓/✗ line of the notebooks' predict-then-measure exercises."""

from __future__ import annotations

import math

import pytest

from parallel_kit.exercises import check, evaluate


def test_a_prediction_within_the_tolerance_passes_and_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    assert check("makespan, model s", 20, 20.6, rel=0.05) is None  # a cell shows the line only
    line = capsys.readouterr().out.strip()
    result = evaluate("makespan, model s", 20, 20.6, rel=0.05)
    assert result.passed is True and bool(result) and result.line == line
    assert line.startswith("✓ makespan, model s: you predicted 20, measured 20.6")
    assert "±5 %" in line or "±5%" in line


def test_a_prediction_outside_the_tolerance_fails_with_how_far(capsys: pytest.CaptureFixture[str]) -> None:
    check("makespan, model s", 30, 20.0, rel=0.05)
    line = capsys.readouterr().out.strip()
    assert evaluate("makespan, model s", 30, 20.0, rel=0.05).passed is False
    assert line.startswith("✗") and "+50%" in line and "allowed" in line


def test_the_tolerance_is_relative_to_the_measurement_or_absolute() -> None:
    assert evaluate("x", 11, 10, rel=0.10).passed is True
    assert evaluate("x", 9, 10, rel=0.10).passed is True
    assert evaluate("x", 8.9, 10, rel=0.10).passed is False
    assert evaluate("slots", 1, 1, rel=0).passed is True
    assert evaluate("slots", 2, 1, rel=0).passed is False
    assert evaluate("wait, s", 0.4, 0.0, rel=0.1, abs_tol=0.5).passed is True
    assert "±0.5" in evaluate("wait, s", 3, 0.0, rel=0, abs_tol=0.5).line


def test_no_prediction_yet_shows_the_answer_and_fails_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    check("S(4)", None, 1.49, rel=0.1)
    line = capsys.readouterr().out.strip()
    assert evaluate("S(4)", None, 1.49, rel=0.1).passed is None
    assert line.startswith("·") and "no prediction yet" in line and "1.49" in line


def test_nothing_measured_says_so_with_the_reason(capsys: pytest.CaptureFixture[str]) -> None:
    check("S(4)", 2.0, None, note="no real engine here")
    assert evaluate("S(4)", 2.0, None).passed is None
    assert "not measured here (no real engine here)" in capsys.readouterr().out


@pytest.mark.parametrize("bad", ["20", math.nan, math.inf, True, [20]])
def test_a_prediction_that_is_not_a_number_is_one_clear_error(bad: object) -> None:
    with pytest.raises(ValueError, match="finite number or None"):
        check("makespan", bad, 20.0)  # type: ignore[arg-type]


def test_a_negative_tolerance_is_refused() -> None:
    with pytest.raises(ValueError, match="tolerances must be"):
        check("makespan", 20, 20, rel=-0.1)


def test_an_exact_answer_is_asked_for_in_words(capsys: pytest.CaptureFixture[str]) -> None:
    check("GPUs", None, 2, rel=0)
    check("GPUs", 2, 2, rel=0)
    check("GPUs", 3, 2, rel=0)
    out = capsys.readouterr().out.splitlines()
    assert out == ["· GPUs: no prediction yet — measured 2; the exact number counts",
                   "✓ GPUs: you predicted 2, measured 2 — exactly right",
                   "✗ GPUs: you predicted 3, measured 2 — off by +1, the exact number is wanted"]
