"""The widget lab, headless: controls → settings and prediction, Run → a real (simulated) run.

No browser: ipywidgets objects work without a front end; ``Button.click()`` fires the same
handlers a click in Jupyter does. Runs use embedded simulators at time scale 0.01 with requests
of one model second, so each run takes a few hundredths of a second of clock.
"""

from __future__ import annotations

import asyncio

import pytest

from parallel_kit.widgets import ExperimentLab

TIME_SCALE = 0.01


def make_lab(**kwargs: object) -> ExperimentLab:
    lab = ExperimentLab(time_scale=TIME_SCALE, backend="sim", **kwargs)  # type: ignore[arg-type]
    lab.seconds.value = 1.0
    lab.requests.value = 3
    lab.gpus.value = 3
    return lab


def select(lab: ExperimentLab, *modes: str) -> None:
    for name, box in lab.mode_boxes.items():
        box.value = name in modes


def test_settings_follow_the_sliders() -> None:
    lab = make_lab(run_in_background=False)
    lab.requests.value = 7
    lab.gpus.value = 2
    lab.slots.value = 4
    lab.seconds.value = 12.0
    select(lab, "sequential", "pool")
    settings = lab.settings()
    assert settings == {"modes": ["sequential", "pool"], "n": 7, "gpus": 2, "slots": 4,
                        "num_predict": 120, "time_scale": pytest.approx(TIME_SCALE)}


def test_prediction_line_redraws_when_a_slider_moves() -> None:
    lab = ExperimentLab(time_scale=TIME_SCALE, backend="sim", run_in_background=False)
    select(lab, "sequential", "pool")
    lab.requests.value, lab.gpus.value, lab.seconds.value = 5, 3, 10.0
    # The original analysis: 5 × 10 s on one server, ⌈5/3⌉ = 2 rounds on three.
    assert lab.prediction_text() == "predicted: sequential 50 s · pool 20 s (2.50×)"
    assert "pool 20 s" in lab.prediction.value
    lab.gpus.value = 5
    assert "pool 10 s (5.00×)" in lab.prediction.value


def test_prediction_counts_slots_through_the_profiles_speedup() -> None:
    lab = make_lab(run_in_background=False)
    select(lab, "async")
    lab.requests.value, lab.slots.value, lab.seconds.value = 4, 4, 10.0
    # Four at once on one server decode at S(4) = 1.5× in total: 4 × 10 s / 1.5.
    assert lab.predictions()["async"].makespan_s == pytest.approx(40 / 1.5)


def test_run_without_modes_says_to_choose_one() -> None:
    lab = make_lab(run_in_background=False)
    select(lab)
    lab.run_button.click()
    assert "choose at least one mode" in lab.status.value
    assert lab.comparison is None
    assert lab.prediction_text() == "no mode selected"


def test_click_runs_the_selected_modes_and_fills_the_progress_bar() -> None:
    lab = make_lab(run_in_background=False)
    select(lab, "sequential", "pool")
    lab.run_button.click()
    assert lab.comparison is not None, lab.status.value
    assert [r.summary.mode for r in lab.comparison.runs] == ["sequential", "pool"]
    assert lab.progress.max == 6
    assert lab.progress.value == lab.progress.max
    assert lab.progress.bar_style == "success"
    assert not lab.run_button.disabled
    assert "simulated Ollama" in lab.status.value
    pool = lab.comparison["pool"].summary
    assert pool.ok == 3 and pool.workers == 3
    # Three one-second requests on three servers: one round — each on its own server, and no
    # beating theory (how close it stays is a benchmark, not a test).
    assert pool.predicted_makespan_s == pytest.approx(1.0)
    assert len({r.worker for r in lab.comparison["pool"].requests}) == 3
    assert pool.makespan_s >= 0.97


async def test_second_click_while_running_is_refused() -> None:
    lab = make_lab()  # in the background, on this test's event loop
    select(lab, "sequential")
    lab.run_button.click()
    assert lab.task is not None and not lab.task.done()
    assert lab.run_button.disabled
    lab.run_button.click()
    assert "already running" in lab.status.value
    first = lab.task
    comparison = await asyncio.wait_for(first, timeout=30)
    assert lab.task is first  # the refused click started nothing
    assert comparison is not None and comparison.runs[0].summary.ok == 3
    assert lab.progress.value == lab.progress.max == 3


async def test_a_failed_run_is_shown_and_the_lab_stays_usable() -> None:
    # A host that refuses connections: the run fails with a message, not a traceback.
    lab = ExperimentLab(time_scale=TIME_SCALE, hosts=["http://127.0.0.1:9"],
                        run_in_background=True)
    select(lab, "sequential")
    lab.requests.value, lab.seconds.value = 1, 1.0
    lab.run_button.click()
    assert lab.task is not None
    assert await asyncio.wait_for(lab.task, timeout=30) is None
    assert "failed" in lab.status.value
    assert lab.progress.bar_style == "danger"
    assert not lab.run_button.disabled
