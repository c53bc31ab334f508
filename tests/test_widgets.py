"""The widget lab, headless: controls → settings and prediction, Run → a real (simulated) run.

No browser: ipywidgets objects work without a front end; ``Button.click()`` fires the same
handlers a click in Jupyter does. Runs use embedded simulators at time scale 0.01 with requests
of one model second, so each run takes a few hundredths of a second of clock.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time

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


# -- what the learner sees is what runs -------------------------------------------------------

def browser_echo(widget: object) -> dict[str, object]:
    """The state a browser sends back for ``widget`` after it renders or a slider is touched.

    The state travels as JSON; a float slider's view snaps the value to its step grid in
    float64 (``min + round((v - min) / step) * step``; a log slider does that to the exponent
    and sends ``base ** exponent``), which is how 0.02 on a log slider of step 0.1 comes back as
    0.0199526. Whole numbers, tick boxes and selection indices come back unchanged.
    """
    import json
    import math

    import ipywidgets as W

    state = json.loads(json.dumps(widget.get_state()))  # type: ignore[attr-defined]
    if isinstance(widget, W.FloatLogSlider):
        exp = math.log(widget.value, widget.base)
        snapped = widget.min + round((exp - widget.min) / widget.step) * widget.step
        state["value"] = widget.base ** snapped
    elif isinstance(widget, W.FloatSlider):
        state["value"] = widget.min + round((widget.value - widget.min) / widget.step) * widget.step
    keys = {"value", "index"} & set(state)
    return {k: state[k] for k in keys}


def test_values_set_from_python_survive_the_browsers_round_trip() -> None:
    lab = make_lab(run_in_background=False)
    select(lab, "sequential", "pool")
    lab.requests.value, lab.gpus.value, lab.slots.value = 6, 3, 2
    lab.seconds.value = 5
    lab.time_scale.value = 0.02
    chosen = lab.settings()
    for control in lab.controls():
        control.set_state(browser_echo(control))
    assert lab.settings() == chosen
    assert lab.settings()["time_scale"] == 0.02


def test_no_control_syncs_a_float_the_browser_could_snap() -> None:
    lab = make_lab(run_in_background=False)
    for control in lab.controls():
        state = control.get_state()
        synced = state.get("index", state.get("value"))
        assert isinstance(synced, (bool, int)), (control.description, synced)


def test_a_time_scale_off_the_slider_is_added_not_rounded() -> None:
    lab = ExperimentLab(time_scale=0.03, backend="sim", run_in_background=False)
    assert lab.time_scale.value == 0.03
    assert lab.time_scale.label == "0.03"
    assert lab.settings()["time_scale"] == 0.03


def test_the_run_shows_the_settings_it_ran_with() -> None:
    lab = make_lab(run_in_background=False)
    select(lab, "sequential", "pool")
    lab.requests.value, lab.seconds.value = 3, 1
    lab.run_button.click()
    assert lab.comparison is not None, lab.status.value
    ran = lab.runs[-1]
    assert ran.settings == {"modes": ["sequential", "pool"], "n": 3, "gpus": 3, "slots": 1,
                            "seconds": 1, "time_scale": TIME_SCALE}
    # the same words the sliders' readouts show
    expected = (f"sequential, pool · 3 requests × {lab.seconds.value} s · "
                f"{lab.gpus.value} GPUs × {lab.slots.value} slot · "
                f"time scale {lab.time_scale.label}")
    assert ran.caption == f"run 1: {expected}"
    assert expected in lab.status.value
    assert lab.comparison.time_scale == TIME_SCALE
    assert lab.comparison["sequential"].summary.n == 3


# -- results of a button's run are drawn -------------------------------------------------------

async def test_a_background_run_draws_its_figures_into_the_lab() -> None:
    from parallel_kit.widgets import captions

    lab = make_lab()
    select(lab, "sequential", "pool")
    for number in (1, 2):
        lab.requests.value = 2 + number
        lab.run_button.click()
        assert lab.task is not None
        assert await asyncio.wait_for(lab.task, timeout=60) is not None, lab.status.value
        outputs = lab.output.outputs
        pngs = [o for o in outputs if "image/png" in o.get("data", {})]
        assert len(pngs) == 2  # the timeline and predicted-vs-measured of this run only
        text = "\n".join(captions(outputs))
        assert f"run {number}: sequential, pool · {2 + number} requests" in text
        assert f"timeline, run {number}:" in text
        assert f"run {number - 1}:" not in text
        assert "pool" in text and f"{2 + number}/{2 + number}" in text  # the table's ok/n
    assert lab.progress.value == lab.progress.max == 8


# -- nothing long on the kernel's loop ---------------------------------------------------------

async def test_the_run_itself_is_off_the_callers_loop() -> None:
    lab = make_lab()
    select(lab, "sequential")
    threads: list[str] = []
    loop_thread = threading.current_thread().name
    lab.progress.observe(lambda _c: threads.append(threading.current_thread().name), "value")
    lab.run_button.click()
    assert lab.task is not None
    assert await asyncio.wait_for(lab.task, timeout=60) is not None
    assert threads and loop_thread not in threads


@pytest.mark.ray
@pytest.mark.slow
async def test_the_kernels_loop_keeps_running_while_ray_starts() -> None:
    ray = pytest.importorskip("ray")
    from parallel_kit.servers import raycluster

    if ray.is_initialized():  # a cluster left by another test module: start a fresh one
        raycluster.shutdown(force=True)
    lab = make_lab()
    select(lab, "ray")
    lab.requests.value, lab.gpus.value = 2, 2
    ticks: list[float] = []

    async def tick() -> None:  # stands for "another cell": it runs only if the loop is free
        while True:
            ticks.append(time.monotonic())
            await asyncio.sleep(0.005)

    ticker = asyncio.get_running_loop().create_task(tick())
    try:
        lab.run_button.click()
        assert lab.task is not None
        comparison = await asyncio.wait_for(lab.task, timeout=240)
    finally:
        ticker.cancel()
        raycluster.shutdown()
    assert comparison is not None, lab.status.value
    assert comparison["ray"].summary.ok == 2
    start = next(s for s in lab.steps if s.name == "ray cluster start")
    assert start.thread != threading.main_thread().name
    assert any(start.started < t < start.ended for t in ticks), "the loop stalled during start"


async def test_wait_returns_the_run_and_leaves_the_lab_ready() -> None:
    lab = make_lab()
    select(lab, "sequential")
    assert await lab.wait() is None  # nothing ran yet
    lab.run_button.click()
    comparison = await asyncio.wait_for(lab.wait(), timeout=60)
    assert comparison is lab.comparison is not None
    assert not lab.run_button.disabled and "done" in lab.status.value


# -- requests arriving over time ---------------------------------------------------------------

def test_the_arrival_control_round_trips_as_a_browser_sends_it() -> None:
    lab = make_lab(run_in_background=False)
    select(lab, "sequential", "pool")
    lab.seconds.value = 10
    assert lab.arrivals.label == "all at once" and "every_s" not in lab.settings()
    lab.arrivals.value = 11.0  # one every 11 s: ρ ≈ 0.91 for 10 s requests on one server
    chosen = lab.settings()
    assert chosen["every_s"] == 11 and chosen["seed"] == lab.seed
    state = lab.arrivals.get_state()
    assert isinstance(state["index"], int) and "value" not in state  # an index, never a float
    for control in lab.controls():
        control.set_state(browser_echo(control))
    assert lab.settings() == chosen
    assert lab.arrivals.label == "every 11 s"


def test_the_prediction_line_gives_rho_and_mean_latency_under_arrivals() -> None:
    lab = make_lab(run_in_background=False)
    select(lab, "sequential", "pool")
    lab.requests.value, lab.gpus.value, lab.seconds.value = 5, 3, 10
    lab.arrivals.value = 20.0
    loads = lab.load_predictions()
    # One 10 s server, Poisson arrivals one every 20 s: ρ = 0.5 and Pollaczek–Khinchine's
    # M/D/1 wait ρ·T/(2(1 − ρ)) = 5 s, so 15 s from arrival; three servers: ρ = 1/6.
    assert loads["sequential"].utilisation == pytest.approx(0.5, rel=0.01)
    assert loads["sequential"].latency_mean_s == pytest.approx(15.0, rel=0.02)
    assert loads["pool"].utilisation == pytest.approx(0.5 / 3, rel=0.01)
    assert lab.prediction_text().startswith("predicted: sequential ρ 0.50, mean latency 15 s")
    assert "pool ρ 0.17" in lab.prediction.value
    lab.arrivals.value = 0.0
    assert lab.load_predictions() == {}
    assert lab.prediction_text() == "predicted: sequential 50 s · pool 20 s (2.50×)"


def test_a_run_with_a_rate_is_open_loop_and_shows_predicted_latency() -> None:
    from parallel_kit.widgets import captions

    lab = make_lab(run_in_background=False)
    select(lab, "sequential", "pool")
    lab.requests.value, lab.seconds.value = 6, 1
    lab.arrivals.value = 2.0  # one 1 s request every 2 s on average: ρ = 0.5 on one server
    lab.run_button.click()
    assert lab.comparison is not None, lab.status.value
    ran = lab.runs[-1]
    assert ran.settings == {"modes": ["sequential", "pool"], "n": 6, "gpus": 3, "slots": 1,
                            "seconds": 1, "every_s": 2, "seed": lab.seed,
                            "time_scale": TIME_SCALE}
    assert "Poisson arrivals, one every 2 s (seed 1)" in ran.caption
    assert lab.progress.value == lab.progress.max == 12
    for run in lab.comparison.runs:
        s = run.summary
        assert s.ok == s.n == 6
        assert s.open_loop["arrivals"] == "poisson"
        assert s.offered_rps == pytest.approx(0.5)
        assert s.open_loop["seed"] == lab.seed
        assert s.predicted_latency_mean_s is not None and s.utilisation is not None
        assert s.open_loop["latency_from_arrival_mean_s"] > 0
    seq = lab.comparison["sequential"].summary
    assert seq.utilisation == pytest.approx(0.5, rel=0.01)
    assert seq.predicted_latency_mean_s == pytest.approx(
        lab.load_predictions()["sequential"].latency_mean_s)
    # the same arrivals in both modes: one schedule, drawn with the lab's seed
    times = [sorted(r.scheduled_s - min(x.scheduled_s for x in run.requests)
                    for r in run.requests) for run in lab.comparison.runs]
    assert times[0] == pytest.approx(times[1])
    text = "\n".join(captions(lab.output.outputs))
    assert f"latency vs predicted, {ran.caption}" in text
    assert "lat mean" in text and "pred" in text  # the open-loop table, not the makespan one
    assert sum("image/png" in o.get("data", {}) for o in lab.output.outputs) == 2


# -- the SLO advisor ---------------------------------------------------------------------------

def _plan_for(rate: float, slo: str, *, max_gpus: int, slots: list[int],
              modes: tuple[str, ...] = ("pool",)) -> object:
    from parallel_kit.bench import capacity as cap

    return cap.plan_capacity(cap.Traffic(rate), cap.PercentileSlo.parse(slo), profile="seed",
                             modes=modes, max_gpus=max_gpus, slots=slots)


def test_advisor_recommends_what_capacity_plans_for_the_same_inputs() -> None:
    from parallel_kit.widgets import SloAdvisor

    advisor = SloAdvisor(time_scale=TIME_SCALE, run_in_background=False)
    advisor.max_gpus.value = 4
    advisor.max_slots.value = 2
    advisor.latency_p95.value = 40.0
    advisor.ttft_p95.value = 15.0
    advisor.rate.value = 0.3
    plan = _plan_for(0.3, "latency_p95=40,ttft_p95=15", max_gpus=4, slots=[1, 2])
    assert plan.best is not None and plan.next_smaller is not None  # type: ignore[attr-defined]
    got = advisor.plan
    assert got.best.label == plan.best.label  # type: ignore[attr-defined]
    assert got.best.figures == plan.best.figures  # type: ignore[attr-defined]
    assert got.next_smaller.label == plan.next_smaller.label  # type: ignore[attr-defined]
    assert [c.label for c in got.candidates] == [c.label for c in plan.candidates]  # type: ignore[attr-defined]
    text = advisor.recommendation_text()
    best = plan.best  # type: ignore[attr-defined]
    assert text.startswith(f"recommended: {best.label} — predicted latency_p95 "
                           f"{best.figures['latency_p95']:.3g} s, ttft_p95 "
                           f"{best.figures['ttft_p95']:.3g} s")
    assert f"next smaller: {plan.next_smaller.label} misses: " in text  # type: ignore[attr-defined]
    assert plan.next_smaller.why() in text  # type: ignore[attr-defined]
    assert best.label in advisor.recommendation.value
    assert not advisor.run_button.disabled
    # Moving a slider re-plans: a slower rate needs fewer servers.
    advisor.rate.value = 0.05
    lower = _plan_for(0.05, "latency_p95=40,ttft_p95=15", max_gpus=4, slots=[1, 2])
    assert advisor.plan.best.label == lower.best.label  # type: ignore[attr-defined]
    assert lower.best.label != best.label  # type: ignore[attr-defined]


def test_advisor_names_the_closest_configuration_when_nothing_meets() -> None:
    from parallel_kit.errors import ConfigError
    from parallel_kit.widgets import SloAdvisor

    advisor = SloAdvisor(time_scale=TIME_SCALE, run_in_background=False)
    advisor.max_gpus.value = 2
    advisor.ttft_p95.value = 0.0  # off
    advisor.latency_p95.value = 5.0  # below one 10 s request alone
    plan = _plan_for(0.125, "latency_p95=5", max_gpus=2, slots=[1, 2, 4])
    with pytest.raises(ConfigError) as info:
        plan.check()  # type: ignore[attr-defined]
    assert advisor.recommendation_text() == str(info.value)
    assert f"closest: {plan.closest.label}" in advisor.recommendation_text()  # type: ignore[attr-defined]
    assert "no recommendation" in advisor.recommendation.value
    assert advisor.run_button.disabled
    advisor.run_button.click()
    assert "nothing to measure" in advisor.status.value and advisor.measurement is None
    # A rate no configuration can serve at all: capacity's message, naming the fix.
    advisor.rate.value = 5.0
    assert "at or above what the largest configuration can serve" in advisor.error
    assert "raise --max-gpus" in advisor.recommendation_text()


def test_advisor_run_measures_the_recommendation_on_the_simulator() -> None:
    from parallel_kit.metrics import percentile
    from parallel_kit.widgets import SloAdvisor

    advisor = SloAdvisor(time_scale=TIME_SCALE, run_in_background=False)
    advisor.requests.value = 20
    best = advisor.plan.best
    advisor.run_button.click()
    m = advisor.measurement
    assert m is not None, advisor.status.value
    assert (m.mode, m.servers, m.slots) == (best.mode, best.servers, best.slots)
    rows = m.run.requests
    # Every row is a request the simulated servers answered: their own durations and token
    # counts, spread over exactly the recommended number of servers.
    assert len(rows) == 20 and all(r.ok for r in rows)
    assert all(r.server_total_s is not None and r.server_total_s > 0 for r in rows)
    assert all(r.output_tokens for r in rows)
    assert len({r.worker for r in rows}) == best.servers
    assert m.run.summary.backend == "sim" and m.run.summary.time_scale == TIME_SCALE
    # The arrivals are the plan's traffic (rate, seed), n of them (the run's axis starts a
    # moment before the first arrival's offset: compare the gaps) …
    from dataclasses import replace

    schedule = replace(advisor.plan.traffic, n=20).finite()
    sent = sorted(r.scheduled_s for r in rows)
    assert [b - a for a, b in itertools.pairwise(sent)] == pytest.approx(
        [float(g) for g in schedule.gaps_s], abs=1e-6)
    # … and the measured figures are those rows' percentiles, latency from arrival.
    assert m.figures["latency_p95"] == pytest.approx(
        percentile([r.finished_s - r.scheduled_s for r in rows], 95))
    assert advisor.status.value.startswith(f"measured {best.label}: ")
    assert ("meets the SLO" if m.meets else "misses the SLO") in advisor.status.value
    assert "20 of 20 requests ok" in advisor.status.value
    assert f"{m.figures['latency_p95']:.3g}" in advisor.result.value
    assert not advisor.run_button.disabled


async def test_advisor_measures_in_the_background_and_refuses_a_second_click() -> None:
    from parallel_kit.widgets import SloAdvisor

    advisor = SloAdvisor(time_scale=TIME_SCALE)
    advisor.requests.value = 10
    advisor.run_button.click()
    assert advisor.task is not None and not advisor.task.done()
    assert advisor.run_button.disabled
    advisor.run_button.click()
    assert "already measuring" in advisor.status.value
    first = advisor.task
    m = await asyncio.wait_for(first, timeout=60)
    assert advisor.task is first
    assert m is not None and m.run.summary.ok == 10
    assert not advisor.run_button.disabled


# -- changes arriving on two threads at once ---------------------------------------------------
# ipykernel 7 handles comm messages on a kernel subshell's thread as well as the main one, so two
# slider moves can be handled at once. Here the first move's recompute is held until the second
# move has been handled to the end; what shows must then be the second (newest) move's result,
# never the first's arriving late. Before the fix the first overwrote it: in the browser the
# advisor kept advising for a rate the slider no longer showed.


def _first_finishes_last(compute_owner: object, name: str, move_first: object,
                         move_second: object) -> None:
    """Hold the first call of ``compute_owner.<name>`` (made by ``move_first`` on a thread),
    once it has computed, until ``move_second`` (on this thread) has returned; then return."""
    real = getattr(compute_owner, name)
    entered, second_done = threading.Event(), threading.Event()
    calls = itertools.count()

    def held(*args: object, **kwargs: object) -> object:
        result = real(*args, **kwargs)
        if next(calls) == 0:  # computed from the first move's values; returned last
            entered.set()
            assert second_done.wait(timeout=60), "the second move never returned"
        return result

    setattr(compute_owner, name, held)
    try:
        first = threading.Thread(target=move_first, name="subshell-like")
        first.start()
        assert entered.wait(timeout=60), "the first move never recomputed"
        move_second()  # type: ignore[operator]
        second_done.set()
        first.join(timeout=60)
        assert not first.is_alive()
    finally:
        setattr(compute_owner, name, real)


def test_the_advisor_shows_the_newest_move_when_an_older_replan_finishes_last() -> None:
    from parallel_kit.bench import capacity as cap
    from parallel_kit.widgets import SloAdvisor

    advisor = SloAdvisor(time_scale=TIME_SCALE, run_in_background=False)

    def move_first() -> None:
        advisor.rate.value = 0.15

    def move_second() -> None:
        advisor.latency_p95.value = 25.0

    _first_finishes_last(cap, "plan_capacity", move_first, move_second)
    assert (advisor.rate.value, advisor.latency_p95.value) == (0.15, 25.0)
    want = _plan_for(0.15, "latency_p95=25,ttft_p95=20", max_gpus=advisor.max_gpus.value,
                     slots=[1, 2, 4])
    assert advisor.plan.traffic.rate == 0.15  # type: ignore[attr-defined]
    assert str(advisor.plan.slo) == str(want.slo)  # type: ignore[attr-defined]
    assert advisor.plan.best.label == want.best.label  # type: ignore[attr-defined]
    assert f"SLO {want.slo}" in advisor.recommendation.value  # type: ignore[attr-defined]


def test_the_lab_shows_the_newest_move_when_an_older_prediction_finishes_last() -> None:
    lab = ExperimentLab(time_scale=TIME_SCALE, backend="sim", run_in_background=False)
    select(lab, "sequential", "pool")
    lab.requests.value, lab.gpus.value, lab.seconds.value = 5, 3, 10.0

    def move_first() -> None:
        lab.gpus.value = 5

    def move_second() -> None:
        lab.requests.value = 6

    _first_finishes_last(lab, "prediction_text", move_first, move_second)
    # 6 × 10 s: 60 s on one server, ⌈6/5⌉ = 2 rounds on five servers.
    assert lab.prediction.value == "predicted: sequential 60 s · pool 20 s (3.00×)"
