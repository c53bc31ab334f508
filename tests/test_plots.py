"""Figures: they build for typical and edge inputs, say what produced them, and save."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure

from parallel_kit import plots, theory
from parallel_kit.errors import ConfigError
from parallel_kit.records import RequestResult, RunResult, summarize

SIM_FOOTER = "simulated Ollama, time scale 0.02 (model seconds shown)"


def make_run(mode: str, rows: Sequence[tuple[str, float, float, float, bool]], *,
             workers: int = 1, slots: int = 1, backend: str = "sim", time_scale: float = 0.02,
             predicted: float | None = None) -> RunResult:
    """A RunResult from (worker, submitted_s, started_s, finished_s, ok) tuples."""
    requests = [
        RequestResult(f"r{i}", mode, "prompt", "m", worker=w, submitted_s=sub, started_s=start,
                      first_token_s=start, finished_s=end, ok=ok,
                      error=None if ok else "server busy", output_tokens=10 if ok else None
                      ).finalize()
        for i, (w, sub, start, end, ok) in enumerate(rows)
    ]
    summary = summarize(requests, mode=mode, backend=backend, time_scale=time_scale,
                        workers=workers, slots=slots, predicted_makespan_s=predicted)
    return RunResult(summary, requests)


def from_schedule(mode: str, schedule: theory.PredictedSchedule, **kw: object) -> RunResult:
    rows = [(f"gpu{e.server}", 0.0, e.start_s, e.finish_s, True) for e in schedule.entries]
    return make_run(mode, rows, workers=schedule.workers, slots=schedule.slots,
                    predicted=schedule.makespan_s, **kw)  # type: ignore[arg-type]


@pytest.fixture
def sequential() -> RunResult:
    return from_schedule("sequential", theory.list_schedule([10.0] * 5, 1))


@pytest.fixture
def ray() -> RunResult:
    return from_schedule("ray", theory.list_schedule([10.0] * 5, 3))


@pytest.fixture
def empty() -> RunResult:
    return make_run("async", [])


@pytest.fixture
def all_failed() -> RunResult:
    return make_run("batch", [("gpu0", 0.0, 0.0, 1.0, False), ("gpu0", 0.0, 1.0, 2.0, False)])


def footer_of(fig: Figure) -> str:
    texts = [t.get_text() for t in fig.texts if t.get_gid() == plots.FOOTER_GID]
    assert len(texts) == 1, f"expected exactly one footer, found {texts}"
    return texts[0]


def bar_collections(fig: Figure) -> list[PolyCollection]:
    return [c for ax in fig.axes for c in ax.collections if isinstance(c, PolyCollection)]


# --- lanes ------------------------------------------------------------------------------------

def test_lanes_are_workers_times_their_peak_concurrency() -> None:
    # Two workers with two slots each: four lanes, whatever the order of the rows.
    sched = theory.simulate_processor_sharing([10, 4, 8, 10, 6, 3, 9], workers=2, slots=2,
                                              speedup=lambda k: k**0.6)
    run = from_schedule("pool", sched)
    lanes, lane_of = plots.assign_lanes(run.requests)
    assert lanes == [("gpu0", 0), ("gpu0", 1), ("gpu1", 0), ("gpu1", 1)]
    assert all(lane is not None for lane in lane_of)
    fig = plots.timeline(run)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == [
        "gpu0 · slot 1", "gpu0 · slot 2", "gpu1 · slot 1", "gpu1 · slot 2"]


def test_back_to_back_requests_share_one_lane(sequential: RunResult) -> None:
    lanes, lane_of = plots.assign_lanes(sequential.requests)
    assert lanes == [("gpu0", 0)]
    assert lane_of == [0] * 5


def test_three_gpus_give_three_lanes(ray: RunResult) -> None:
    lanes, _ = plots.assign_lanes(ray.requests)
    assert [w for w, _ in lanes] == ["gpu0", "gpu1", "gpu2"]


def test_workers_sort_naturally_and_urls_are_shortened() -> None:
    run = make_run("pool", [("gpu10", 0, 0, 1, True), ("gpu2", 0, 0, 1, True),
                            ("http://127.0.0.1:5000", 0, 0, 1, True)], workers=3)
    fig = plots.timeline(run)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == [
        "gpu2", "gpu10", "127.0.0.1:5000"]


# --- timeline ---------------------------------------------------------------------------------

def test_timeline_panels_share_model_time(sequential: RunResult, ray: RunResult) -> None:
    fig = plots.timeline([sequential, ray])
    top, bottom = fig.axes[:2]
    assert top.get_shared_x_axes().joined(top, bottom)
    assert "model seconds" in bottom.get_xlabel()
    assert "makespan 50 s, predicted 50 s" in top.get_title(loc="left")
    assert "makespan 20 s, predicted 20 s" in bottom.get_title(loc="left")
    assert footer_of(fig) == SIM_FOOTER


def test_failed_requests_are_hatched_and_waits_are_drawn(all_failed: RunResult) -> None:
    rows = [("gpu0", 0.0, 0.0, 10.0, True), ("gpu0", 0.0, 10.0, 20.0, False)]
    fig = plots.timeline(make_run("sequential", rows))
    hatched = [c for c in bar_collections(fig) if c.get_hatch() == "///"]
    assert len(hatched) == 1
    # Two service bars plus the second request's wait strip (0 → 10 s).
    assert len(bar_collections(fig)) == 3
    fig = plots.timeline(all_failed)
    assert len([c for c in bar_collections(fig) if c.get_hatch() == "///"]) == 2
    assert "2 failed" in fig.axes[0].get_title(loc="left")


def test_request_without_times_is_counted_not_dropped_silently() -> None:
    rows = [("gpu0", 0.0, 0.0, 5.0, True), ("", math.nan, math.nan, math.nan, False)]
    fig = plots.timeline(make_run("ray", rows))
    assert "1 without times not drawn" in fig.axes[0].get_title(loc="left")


@pytest.mark.parametrize("which", ["empty", "all_failed", "sequential"])
def test_timeline_builds_for_edge_runs(which: str, request: pytest.FixtureRequest) -> None:
    run = request.getfixturevalue(which)
    fig = plots.timeline(run)
    assert isinstance(fig, Figure)
    assert footer_of(fig) == SIM_FOOTER


def test_an_empty_panel_keeps_the_shared_time_ticks(ray: RunResult, empty: RunResult) -> None:
    fig = plots.timeline([ray, empty])
    assert len(fig.axes[0].get_xticks()) > 1
    assert any("no requests" in t.get_text() for t in fig.axes[1].texts)


def test_timeline_of_no_runs_says_so() -> None:
    fig = plots.timeline([])
    assert footer_of(fig) == "no runs"
    assert any("no runs" in t.get_text() for t in fig.axes[0].texts)


def test_timeline_draws_into_given_axes(ray: RunResult) -> None:
    fig = Figure()
    ax = fig.add_subplot()
    assert plots.timeline(ray, ax=ax) is fig
    assert len(ax.get_yticks()) == 3
    with pytest.raises(ConfigError, match="one per run"):
        plots.timeline([ray, ray], ax=ax)


# --- footers ----------------------------------------------------------------------------------

def test_footer_names_real_ollama_and_mixed_sources(sequential: RunResult) -> None:
    real = make_run("sequential", [("gpu0", 0, 0, 3, True)], backend="ollama", time_scale=1.0)
    assert plots.footer_text(real) == "real Ollama (clock seconds)"
    assert plots.footer_text([sequential, real, sequential]) == (
        SIM_FOOTER + "; real Ollama (clock seconds)")


def test_drawing_twice_into_a_figure_keeps_one_footer(ray: RunResult) -> None:
    fig = plots.timeline(ray)
    plots.latency_percentiles(ray, ax=fig.axes[0])
    assert footer_of(fig) == SIM_FOOTER


FIGURES: dict[str, Callable[[Sequence[RunResult]], Figure]] = {
    "timeline": plots.timeline,
    "predicted_vs_measured": plots.predicted_vs_measured,
    "latency_percentiles": plots.latency_percentiles,
}


@pytest.mark.parametrize("name", FIGURES)
@pytest.mark.parametrize("which", [["sequential", "ray"], ["empty"], ["all_failed"], ["ray"]])
def test_run_figures_build_with_a_footer(name: str, which: list[str],
                                         request: pytest.FixtureRequest) -> None:
    runs = [request.getfixturevalue(w) for w in which]
    fig = FIGURES[name](runs)
    assert footer_of(fig) == SIM_FOOTER
    assert all(ax.get_title() or ax.get_title(loc="left") for ax in fig.axes)


# --- comparisons and curves -------------------------------------------------------------------

def test_predicted_vs_measured_labels_the_speedup(sequential: RunResult, ray: RunResult) -> None:
    fig = plots.predicted_vs_measured([sequential, ray])
    labels = [t.get_text() for t in fig.axes[0].texts]
    assert "20 s\n×2.50" in labels
    assert "50 s\n×1.00" in labels
    assert fig.axes[0].get_ylabel() == "makespan (model seconds)"


def test_predicted_vs_measured_marks_a_missing_prediction(empty: RunResult) -> None:
    fig = plots.predicted_vs_measured(empty)
    labels = [t.get_text() for t in fig.axes[0].texts]
    assert "no\nprediction" in labels and "no data" in labels


def test_speedup_vs_gpus_plots_the_staircase_and_measured_points(ray: RunResult) -> None:
    fig = plots.speedup_vs_gpus(5, 10.0, 6, measured=[ray])
    by_label = {line.get_label(): line for line in fig.axes[0].get_lines()}
    theory_line = by_label["theory: 5·t ÷ (⌈5/W⌉·t)"]
    assert list(theory_line.get_ydata()) == pytest.approx([1, 5 / 3, 2.5, 2.5, 5, 5])
    measured = by_label["measured (n·t ÷ makespan)"]
    assert list(measured.get_xdata()) == [3]
    assert list(measured.get_ydata()) == pytest.approx([2.5])
    assert footer_of(fig) == "theory (model seconds); " + SIM_FOOTER


def test_speedup_vs_gpus_says_when_a_measurement_has_no_source() -> None:
    fig = plots.speedup_vs_gpus(5, 10.0, [1, 3], measured={3: 21.0})
    assert footer_of(fig).endswith("measured points: source not given")
    fig = plots.speedup_vs_gpus(5, 10.0, [1, 3])
    assert footer_of(fig).endswith("no measurement")


def test_speedup_vs_slots_reads_a_profile_and_measured_runs() -> None:
    class Profile:
        name = "laptop"

        def S(self, k: int) -> float:
            return {1: 1.0, 2: 1.3, 4: 1.5}[k]

    one = make_run("ray", [("gpu0", 0, 0, 10, True), ("gpu0", 0, 10, 20, True)], slots=1)
    four = make_run("ray", [("gpu0", 0, 0, 10, True), ("gpu0", 0, 0, 10, True)], slots=4)
    fig = plots.speedup_vs_slots(Profile(), [1, 2, 4], measured=[one, four])
    by_label = {line.get_label(): line for line in fig.axes[0].get_lines()}
    assert list(by_label["S(K): tokens/s vs one slot"].get_ydata()) == [1.0, 1.3, 1.5]
    assert list(by_label["measured throughput gain"].get_ydata()) == pytest.approx([1.0, 2.0])
    assert "(laptop)" in fig.axes[0].get_title()
    assert footer_of(fig).endswith(SIM_FOOTER)


def test_speedup_vs_slots_needs_a_one_slot_run_to_compare_with() -> None:
    four = make_run("ray", [("gpu0", 0, 0, 10, True)], slots=4)
    with pytest.raises(ConfigError, match="slots=1"):
        plots.speedup_vs_slots(lambda k: 1.0, 4, measured=[four])


def test_latency_percentiles_reports_p50_p95_and_max(sequential: RunResult) -> None:
    fig = plots.latency_percentiles(sequential)
    heights = {c.get_label(): [p.get_height() for p in c.patches]
               for c in fig.axes[0].containers}  # type: ignore[attr-defined]
    assert heights["p50"] == pytest.approx([30.0])
    assert heights["p95"] == pytest.approx([48.0])
    assert heights["max"] == pytest.approx([50.0])


def test_non_runs_are_refused_with_the_fix() -> None:
    with pytest.raises(ConfigError, match="expected RunResult"):
        plots.predicted_vs_measured([{"mode": "ray"}])  # type: ignore[list-item]


# --- saving -----------------------------------------------------------------------------------

def test_save_writes_a_png(tmp_path: Path, sequential: RunResult, ray: RunResult) -> None:
    path = plots.save(plots.timeline([sequential, ray]), tmp_path / "out" / "timeline")
    assert path == tmp_path / "out" / "timeline.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 5_000
