"""Pictures (this package): runs and predictions here; ``load`` for open-loop sweeps.

Pictures of runs and predictions (matplotlib, no display needed).

Every function builds its figure with ``matplotlib.figure.Figure`` (not pyplot), so it works
headless (Agg), leaves no global state behind, and shows once in a notebook when it is the last
expression of a cell. Each takes an optional ``ax`` to draw into a figure of your own, returns the
Figure, and writes a footer saying what produced the numbers — real Ollama or the simulator, at
what time scale — because a picture of a benchmark without its source is not honest.

``timeline``               Gantt chart of every request, one lane per worker slot
``predicted_vs_measured``  makespan per mode, theory beside measurement, speed-up labels
``speedup_vs_gpus``        the ⌈N/W⌉ staircase against the ideal line
``speedup_vs_slots``       what ``OLLAMA_NUM_PARALLEL`` buys: S(k)
``latency_percentiles``    p50 / p95 / max latency per mode
``save``                   a PNG (or any format matplotlib knows) at a modest DPI

Times on every axis are model seconds (clock ÷ time scale), as in the records.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.layout_engine import ConstrainedLayoutEngine
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from .. import theory
from ..errors import ConfigError
from ..modes.registry import BASELINE
from ..records import RequestResult, RunResult, percentile

__all__ = [
    "FOOTER_GID",
    "assign_lanes",
    "footer_text",
    "latency_percentiles",
    "predicted_vs_measured",
    "save",
    "speedup_vs_gpus",
    "speedup_vs_slots",
    "timeline",
]

#: The ``gid`` of the footer text, so tests and callers can find (or replace) it.
FOOTER_GID = "parallel_kit-footer"
DPI = 100
SAVE_DPI = 110
# Colour-blind-safe defaults (matplotlib's tab10); failures are always red and hatched.
_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
            "#bcbd22", "#17becf")
_FAILED = "#d62728"
_PREDICTED = "#9ecae1"
_MEASURED = "#1f77b4"
#: A request starting within this fraction of the run's span of another's end reuses its lane:
#: the service start is reconstructed from the server's durations and can land a few
#: milliseconds before the previous request's measured finish; that is not a second slot.
_LANE_OVERLAP = 0.01

Runs = RunResult | Sequence[RunResult]


# ---------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------

def _as_runs(run_or_runs: Runs) -> list[RunResult]:
    if isinstance(run_or_runs, RunResult):
        return [run_or_runs]
    runs = list(run_or_runs)
    for r in runs:
        if not isinstance(r, RunResult):
            raise ConfigError(
                f"expected RunResult objects, got {type(r).__name__} — pass what a mode or "
                f"bench.compare() returned, or records.read_json(path)"
            )
    return runs


def _backend_phrase(backend: str, time_scale: float, engine: str = "") -> str:
    from ..sim.registry import engine_info

    if engine not in ("", "sim", "ollama"):
        try:
            label = engine_info(engine).label
        except ConfigError:
            label = f"engine {engine}"
        return f"{label} behind the kit's Ollama API (clock seconds)"
    if backend == "sim":
        return f"simulated Ollama, time scale {time_scale:g} (model seconds shown)"
    if backend == "ollama":
        if time_scale == 1:
            return "real Ollama (clock seconds)"
        return f"real Ollama, time scale {time_scale:g} (model seconds shown)"
    return f"backend {backend!r}, time scale {time_scale:g} (model seconds shown)"


def _is_clock(backend: str, time_scale: float, engine: str = "") -> bool:
    """Whether a run's times are clock seconds (a real engine, or a real Ollama at scale 1)."""
    return engine in ("llama-server", "llama-cpp") or (backend == "ollama" and time_scale == 1)


def seconds_unit(runs: Runs) -> str:
    """The unit of the runs' times for an axis label: model or clock seconds, or both."""
    clock = [_is_clock(r.summary.backend, r.summary.time_scale, r.summary.engine)
             for r in _as_runs(runs)]
    if clock and all(clock):
        return "clock seconds"
    if any(clock):
        return "seconds: clock for real runs, model for simulated ones"
    return "model seconds"


def footer_text(runs: Runs) -> str:
    """What produced the numbers, e.g. ``simulated Ollama, time scale 0.02 (model seconds shown)``.

    Runs from several backends or scales list each once, in order.
    """
    phrases: list[str] = []
    for r in _as_runs(runs):
        phrase = _backend_phrase(r.summary.backend, r.summary.time_scale, r.summary.engine)
        if phrase not in phrases:
            phrases.append(phrase)
    return "; ".join(phrases) if phrases else "no runs"


def _measured_phrase(backend: str | None, time_scale: float | None) -> str:
    if backend is None:
        return "measured points: source not given"
    return "measured: " + _backend_phrase(backend, 1.0 if time_scale is None else time_scale)


def new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    # Keep the bottom 0.3 inch free for the footer, which constrained layout does not see.
    engine = fig.get_layout_engine()
    if isinstance(engine, ConstrainedLayoutEngine):
        engine.set(rect=(0.0, 0.3 / height, 1.0, 1.0 - 0.3 / height))
    return fig


def _figure_and_axes(ax: Axes | None, width: float, height: float) -> tuple[Figure, Axes]:
    if ax is not None:
        return _root_figure(ax), ax
    fig = new_figure(width, height)
    return fig, fig.add_subplot()


def _root_figure(ax: Axes) -> Figure:
    """The top-level Figure an Axes lives in (a SubFigure's ``.figure`` is its root)."""
    fig: Any = ax.figure
    return getattr(fig, "figure", None) or fig  # type: ignore[no-any-return]


def set_footer(fig: Figure, text: str) -> None:
    """One footer per figure: replaced, not stacked, when a figure is drawn into twice."""
    for t in fig.texts:
        if t.get_gid() == FOOTER_GID:
            t.set_text(text)
            return
    fig.text(0.005, 0.005, text, ha="left", va="bottom", fontsize=8, color="0.35",
             gid=FOOTER_GID)


def _empty(ax: Axes, message: str, *, keep_x: bool = False) -> None:
    """A message in place of data. ``keep_x``: the x axis is shared with panels that have data
    (clearing its ticks would clear theirs too)."""
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes,
            fontsize=11, color="0.4")
    if not keep_x:
        ax.set_xticks([])
    ax.set_yticks([])


def _finite(x: float | None) -> bool:
    return x is not None and not math.isnan(x) and not math.isinf(x)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _short_worker(worker: str) -> str:
    """``http://127.0.0.1:54321`` → ``127.0.0.1:54321``; empty → ``(no worker)``."""
    if not worker:
        return "(no worker)"
    return re.sub(r"^https?://", "", worker).rstrip("/")


def _natural_key(text: str) -> list[Any]:
    # gpu2 before gpu10.
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text)]


# ---------------------------------------------------------------------------------------------
# Timeline
# ---------------------------------------------------------------------------------------------

def service_start(r: RequestResult) -> float:
    """When the server began working on ``r`` (model seconds), as best the row can tell.

    ``started_s`` is when the request was *sent*; a server with one slot may then hold it in its
    own queue. The server's own compute durations (prompt eval + eval) counted back from the
    finish show when it really ran; without them, the first token is the next best sign.
    Real Ollama's ``total_duration`` is not used: it includes the time spent waiting for a slot.
    """
    sent = r.started_s if _finite(r.started_s) else r.submitted_s
    if r.ok and _finite(r.finished_s) and r.server_eval_s is not None:
        work = (r.server_prompt_eval_s or 0.0) + r.server_eval_s
        if work > 0:
            return max(sent, r.finished_s - work) if _finite(sent) else r.finished_s - work
    return sent


def _arrived(r: RequestResult) -> float:
    """When ``r`` reached the kit: ``queued_s``, else ``submitted_s`` (model seconds)."""
    return r.queued_s if _finite(r.queued_s) else r.submitted_s


def _span(r: RequestResult) -> tuple[float, float] | None:
    """(start, end) of the bar a request gets, or None when it has no time at all."""
    start = service_start(r)
    if not _finite(start):
        return None
    end = r.finished_s if _finite(r.finished_s) else start
    return start, max(end, start)


def assign_lanes(requests: Sequence[RequestResult]) -> tuple[list[tuple[str, int]], list[int | None]]:
    """Lay requests out in lanes: one per slot each worker actually used.

    A worker gets as many lanes as it ran requests at once (its peak concurrency, found by
    interval colouring: each request, by start time, takes the lowest lane free by then).

    Returns:
        ``lanes`` — ``(worker, slot)`` per lane, workers in natural order; and for each request
        (input order) the index of its lane, or ``None`` for a request with no timestamps.
    """
    by_worker: dict[str, list[int]] = {}
    for i, r in enumerate(requests):
        if _span(r) is not None:
            by_worker.setdefault(r.worker, []).append(i)
    lanes: list[tuple[str, int]] = []
    lane_of: list[int | None] = [None] * len(requests)
    spans = [sp for sp in (_span(r) for r in requests) if sp is not None]
    eps = _LANE_OVERLAP * (max(e for _, e in spans) - min(b for b, _ in spans)) if spans else 0.0
    eps = max(eps, 1e-9)
    for worker in sorted(by_worker, key=_natural_key):
        order = sorted(by_worker[worker], key=lambda i: (_span(requests[i]), i))
        ends: list[float] = []  # end time of the last bar in each of this worker's lanes
        first = len(lanes)
        for i in order:
            start, end = _span(requests[i])  # type: ignore[misc]
            slot = next((j for j, e in enumerate(ends) if e <= start + eps), None)
            if slot is None:
                slot = len(ends)
                ends.append(end)
                lanes.append((worker, slot))
            else:
                ends[slot] = end
            lane_of[i] = first + slot
    return lanes, lane_of


def _draw_timeline(ax: Axes, run: RunResult, *, show_labels: bool) -> None:
    reqs = run.requests
    s = run.summary
    lanes, lane_of = assign_lanes(reqs)
    if not lanes:
        _empty(ax, "no requests to show" if not reqs else f"{len(reqs)} requests without times",
               keep_x=True)
        ax.set_title(f"{s.mode}: no timed requests", loc="left", fontsize=10)
        return
    workers = sorted({w for w, _ in lanes}, key=_natural_key)
    colour = {w: _PALETTE[i % len(_PALETTE)] for i, w in enumerate(workers)}
    untimed = 0
    for r, lane in zip(reqs, lane_of, strict=True):
        if lane is None:
            untimed += 1
            continue
        start, end = _span(r)  # type: ignore[misc]
        c = colour[r.worker] if r.ok else _FAILED
        # Queue wait as a thin strip under the bar: in a busy lane it overlaps earlier bars,
        # which is the point — it shows who was waiting while the slot worked.
        came = _arrived(r)
        if _finite(came) and start > came:
            ax.broken_barh([(came, start - came)], (lane + 0.27, 0.2),
                           facecolors=c, alpha=0.45, linewidth=0)
        ax.broken_barh([(start, max(end - start, 0.0))], (lane - 0.35, 0.6),
                       facecolors=c if r.ok else "#f4b6b6", edgecolors=c if not r.ok else "white",
                       hatch=None if r.ok else "///", linewidth=0.8)
        if show_labels and end > start:
            ax.text((start + end) / 2, lane - 0.05, r.request_id or "", ha="center", va="center",
                    fontsize=7, color="white" if r.ok else "#7f0000", clip_on=True)
    ax.set_yticks(range(len(lanes)))
    many = {w: sum(1 for lw, _ in lanes if lw == w) > 1 for w in workers}
    ax.set_yticklabels([f"{_short_worker(w)} · slot {j + 1}" if many[w] else _short_worker(w)
                        for w, j in lanes], fontsize=8)
    ax.set_ylim(len(lanes) - 0.5, -0.6)  # first lane on top
    ax.grid(axis="x", color="0.9")
    ax.set_axisbelow(True)

    first = min((_arrived(r) for r in reqs if _finite(_arrived(r))), default=0.0)
    if s.predicted_makespan_s is not None and _finite(s.predicted_makespan_s):
        ax.axvline(first + s.predicted_makespan_s, color="0.2", linestyle="--", linewidth=1)
    pieces = [f"{s.mode}: {_plural(s.n, 'request')} on {_plural(len(workers), 'server')}"
              f" × {_plural(s.slots, 'slot')}"]
    if _finite(s.makespan_s):
        pieces.append(f"makespan {s.makespan_s:.3g} s")
    if s.predicted_makespan_s is not None and _finite(s.predicted_makespan_s):
        pieces.append(f"predicted {s.predicted_makespan_s:.3g} s")
    if s.failed:
        pieces.append(f"{s.failed} failed")
    if untimed:
        pieces.append(f"{untimed} without times not drawn")
    ax.set_title(", ".join(pieces), loc="left", fontsize=10)


def timeline(run_or_runs: Runs, *, ax: Axes | Sequence[Axes] | None = None,
             title: str | None = None, show_labels: bool | None = None) -> Figure:
    """Gantt chart of every request: one row per worker slot, model seconds across.

    A solid bar runs from when the server began working on the request (:func:`service_start`)
    to ``finished_s``; a thin light strip under it from ``queued_s`` (when the request reached
    the kit; ``submitted_s`` when it has none) is the time it waited —
    in the kit's queue or in the server's; failed requests are red and
    hatched. A dashed line marks the predicted makespan. Several runs get one panel each with a
    shared time axis — five 10 s bars in a row beside two rounds on three GPUs.

    Args:
        run_or_runs: one ``RunResult`` or several.
        ax: an Axes (one run) or one Axes per run to draw into; default a new figure.
        title: figure title (default "Request timeline").
        show_labels: write request ids on the bars (default: when there are at most 60).
    """
    runs = _as_runs(run_or_runs)
    panels = max(len(runs), 1)
    if ax is None:
        heights = [max(len(assign_lanes(r.requests)[0]), 1) + 1.2 for r in runs] or [2.0]
        fig = new_figure(9.0, min(1.0 + 0.32 * sum(heights), 14.0))
        axes = list(fig.subplots(panels, 1, sharex=True, squeeze=False,
                                 height_ratios=heights)[:, 0])
    else:
        axes = [ax] if isinstance(ax, Axes) else list(ax)
        if len(axes) != panels:
            raise ConfigError(f"timeline got {len(axes)} axes for {panels} runs — pass one per run")
        fig = _root_figure(axes[0])
    if not runs:
        _empty(axes[0], "no runs to show")
    for a, run in zip(axes, runs, strict=False):
        labels = show_labels if show_labels is not None else len(run.requests) <= 60
        _draw_timeline(a, run, show_labels=labels)
    axes[-1].set_xlabel(f"time since the run started ({seconds_unit(runs)})")
    heading = title or "Request timeline"
    if any(r.requests for r in runs):
        # Bars take their worker's colour, so the legend's patches are neutral grey.
        handles: list[Artist] = [
            Patch(facecolor="0.45", label="served (server working on it; colour = server)"),
            Patch(facecolor="0.45", alpha=0.45, label="waiting (queued anywhere)"),
                   Patch(facecolor="#f4b6b6", edgecolor=_FAILED, hatch="///", label="failed")]
        if any(r.summary.predicted_makespan_s is not None for r in runs):
            handles.append(Line2D([], [], color="0.2", linestyle="--", label="predicted makespan"))
        # Outside the panels, so it never hides a bar; the heading rides on it as its title
        # because constrained layout stacks a suptitle over an outside legend.
        fig.legend(handles=handles, fontsize=8, loc="outside upper center",
                   ncol=len(handles), frameon=False, title=heading, title_fontsize=12)
    else:
        fig.suptitle(heading, fontsize=12)
    set_footer(fig, footer_text(runs))
    return fig


# ---------------------------------------------------------------------------------------------
# Predicted vs measured
# ---------------------------------------------------------------------------------------------

def _speedups(runs: Sequence[RunResult]) -> list[float | None]:
    """Each run's speed-up over sequential: the summary's, else against a sequential run here."""
    seq = next((r.summary.makespan_s for r in runs
                if r.summary.mode == BASELINE and _finite(r.summary.makespan_s)), None)
    out: list[float | None] = []
    for r in runs:
        s = r.summary
        if s.speedup_vs_sequential is not None and _finite(s.speedup_vs_sequential):
            out.append(s.speedup_vs_sequential)
        elif seq is not None and _finite(s.makespan_s) and s.makespan_s > 0:
            out.append(seq / s.makespan_s)
        else:
            out.append(None)
    return out


def predicted_vs_measured(runs: Runs, *, ax: Axes | None = None,
                          title: str | None = None) -> Figure:
    """Makespan per mode: predicted (light, hatched) beside measured, with speed-up labels.

    The label over a measured bar gives its makespan and ``×`` its speed-up over sequential
    (``summary.speedup_vs_sequential``, or computed against a sequential run in ``runs``).
    """
    runs = _as_runs(runs)
    fig, ax = _figure_and_axes(ax, max(5.0, 1.4 * len(runs) + 2.5), 4.2)
    if not runs:
        _empty(ax, "no runs to show")
    else:
        xs = range(len(runs))
        width = 0.38
        predicted = [math.nan if r.summary.predicted_makespan_s is None
                     else r.summary.predicted_makespan_s for r in runs]
        measured = [r.summary.makespan_s for r in runs]
        ax.bar([x - width / 2 for x in xs], [p if _finite(p) else 0.0 for p in predicted],
               width, color=_PREDICTED, hatch="//", edgecolor="white", label="predicted")
        ax.bar([x + width / 2 for x in xs], [m if _finite(m) else 0.0 for m in measured],
               width, color=_MEASURED, label="measured")
        top = max([v for v in [*predicted, *measured] if _finite(v)] or [1.0])
        for x, p, m, sp, r in zip(xs, predicted, measured, _speedups(runs), runs, strict=True):
            if _finite(p):
                ax.text(x - width / 2, p + 0.01 * top, f"{p:.3g} s", ha="center", va="bottom",
                        fontsize=8)
            else:
                ax.text(x - width / 2, 0.01 * top, "no\nprediction", ha="center", va="bottom",
                        fontsize=7, color="0.4")
            label = f"{m:.3g} s" if _finite(m) else "no data"
            if sp is not None:
                label += f"\n×{sp:.2f}"
            if r.summary.failed:
                label += f"\n{r.summary.failed} failed"
            ax.text(x + width / 2, (m if _finite(m) else 0.0) + 0.01 * top, label, ha="center",
                    va="bottom", fontsize=8, color=_FAILED if r.summary.failed else "black")
        ax.set_xticks(list(xs))
        ax.set_xticklabels([f"{r.summary.mode}\n{_plural(r.summary.workers, 'server')} × "
                            f"{_plural(r.summary.slots, 'slot')}" for r in runs], fontsize=8)
        ax.set_ylim(0, top * 1.3)
        ax.legend(fontsize=8, loc="upper right")
    ax.set_ylabel(f"makespan ({seconds_unit(runs)})")
    ax.set_title(title or "Predicted vs measured makespan", fontsize=11)
    set_footer(fig, footer_text(runs))
    return fig


# ---------------------------------------------------------------------------------------------
# Speed-up curves
# ---------------------------------------------------------------------------------------------

def _measured_points(measured: Mapping[int, float] | Sequence[RunResult] | None,
                     x_field: str) -> tuple[list[tuple[int, float]], list[RunResult]]:
    """(x, value) pairs from a mapping, or (x from the summary, run) from RunResults."""
    if measured is None:
        return [], []
    if isinstance(measured, Mapping):
        return sorted((int(k), float(v)) for k, v in measured.items()), []
    runs = _as_runs(measured)
    return [(int(getattr(r.summary, x_field)), r.summary.makespan_s) for r in runs], runs


def speedup_vs_gpus(n: int, t: float, workers: int | Iterable[int],
                    measured: Mapping[int, float] | Sequence[RunResult] | None = None, *,
                    ax: Axes | None = None, backend: str | None = None,
                    time_scale: float | None = None) -> Figure:
    """The ⌈N/W⌉ staircase: speed-up of N equal requests of t seconds on W single-slot GPUs.

    Args:
        n, t: the workload (requests, model seconds each).
        workers: the largest W to draw, or the W values.
        measured: measured makespans (model seconds) by W, or RunResults (W from
            ``summary.workers``); drawn as speed-up ``n·t ÷ makespan``.
        backend, time_scale: where a ``measured`` mapping came from, for the footer
            (RunResults say it themselves).
    """
    ws = list(range(1, workers + 1)) if isinstance(workers, int) else sorted(set(workers))
    if not ws:
        raise ConfigError("speedup_vs_gpus needs at least one worker count — e.g. workers=6")
    curve = theory.speedup_vs_workers(n, t, ws)
    fig, ax = _figure_and_axes(ax, 6.0, 4.2)
    ax.plot(ws, ws, linestyle=":", color="0.5", label="ideal (W×)")
    ax.step([p.x for p in curve], [p.speedup for p in curve], where="post", color=_MEASURED,
            alpha=0.5)
    ax.plot([p.x for p in curve], [p.speedup for p in curve], "o", color=_MEASURED,
            label=f"theory: {n}·t ÷ (⌈{n}/W⌉·t)")
    points, runs = _measured_points(measured, "workers")
    ideal = n * t
    if points:
        xs = [x for x, m in points if _finite(m) and m > 0]
        ys = [ideal / m for _, m in points if _finite(m) and m > 0]
        ax.plot(xs, ys, "s", color="#ff7f0e", markersize=8, label="measured (n·t ÷ makespan)")
    ax.set_xlabel("GPUs W (one single-slot Ollama each)")
    ax.set_ylabel("speed-up over one GPU (×)")
    ax.set_title(f"{n} requests of {t:.3g} s: speed-up rises in ⌈N/W⌉ steps", fontsize=11)
    _finish_curve(fig, ax, ws, "theory (model seconds)", runs, bool(points), backend, time_scale)
    return fig


def _finish_curve(fig: Figure, ax: Axes, xticks: Sequence[int], theory_source: str,
                  runs: Sequence[RunResult], has_points: bool, backend: str | None,
                  time_scale: float | None) -> None:
    """Ticks, grid, legend and the footer shared by the speed-up curves: where the theory
    and (when there are any) the measured points came from."""
    ax.set_xticks(list(xticks))
    ax.grid(color="0.92")
    ax.legend(fontsize=8, loc="upper left")
    source = (footer_text(runs) if runs else _measured_phrase(backend, time_scale)
              if has_points else "no measurement")
    set_footer(fig, f"{theory_source}; {source}")


def speedup_vs_slots(speedup: theory.SpeedupFn | Any, ks: int | Iterable[int],
                     measured: Mapping[int, float] | Sequence[RunResult] | None = None, *,
                     ax: Axes | None = None, backend: str | None = None,
                     time_scale: float | None = None) -> Figure:
    """What K slots on one server buy: the aggregate decode speed-up S(K).

    Args:
        speedup: S(k) as a function, or a sim Profile (its ``.S``).
        ks: the largest K to draw, or the K values.
        measured: measured throughput gains by K, or RunResults (K from ``summary.slots``;
            gain = throughput ÷ the throughput of the run with one slot, which must be there).
        backend, time_scale: where a ``measured`` mapping came from, for the footer.
    """
    kk = list(range(1, ks + 1)) if isinstance(ks, int) else sorted(set(ks))
    if not kk:
        raise ConfigError("speedup_vs_slots needs at least one slot count — e.g. ks=8")
    curve = theory.speedup_vs_slots(speedup, kk)
    fig, ax = _figure_and_axes(ax, 6.0, 4.2)
    ax.plot(kk, kk, linestyle=":", color="0.5", label="ideal (K×)")
    ax.axhline(1.0, color="0.7", linewidth=1, label="no gain (1×)")
    ax.plot([p.x for p in curve], [p.speedup for p in curve], "o-", color=_MEASURED,
            label="S(K): tokens/s vs one slot")
    points: list[tuple[int, float]] = []
    runs: list[RunResult] = []
    if isinstance(measured, Mapping):
        points = sorted((int(k), float(v)) for k, v in measured.items())
    elif measured is not None:
        runs = _as_runs(measured)
        base = next((r.summary.throughput_rps for r in runs if r.summary.slots == 1), None)
        if base is None or not _finite(base) or base <= 0:
            raise ConfigError(
                "measured runs need one with slots=1 (and a throughput) to compare against — "
                "add a run at OLLAMA_NUM_PARALLEL=1, or pass a mapping {slots: gain}"
            )
        points = [(r.summary.slots, r.summary.throughput_rps / base) for r in runs
                  if _finite(r.summary.throughput_rps)]
    if points:
        ax.plot([x for x, _ in points], [y for _, y in points], "s", color="#ff7f0e",
                markersize=8, label="measured throughput gain")
    name = getattr(speedup, "name", None)
    ax.set_title("What more slots buy" + (f" ({name})" if isinstance(name, str) else "")
                 + "\neach request slows, the server speeds up", fontsize=11)
    ax.set_xlabel("slots per server K (OLLAMA_NUM_PARALLEL)")
    ax.set_ylabel("throughput vs one slot (×)")
    _finish_curve(fig, ax, kk, "theory: S(K) from the profile", runs, bool(points), backend,
                  time_scale)
    return fig


# ---------------------------------------------------------------------------------------------
# Latency
# ---------------------------------------------------------------------------------------------

def latency_percentiles(runs: Runs, *, ax: Axes | None = None,
                        title: str | None = None) -> Figure:
    """p50, p95 and max latency (submitted → finished) of the successful requests, per mode.

    Queueing shows here even when the makespan does not change: an async API frees the caller
    at once, yet the fifth request still waits four service times for the one slot.
    """
    runs = _as_runs(runs)
    fig, ax = _figure_and_axes(ax, max(5.0, 1.4 * len(runs) + 2.5), 4.2)
    stats = [("p50", 50.0, "#9ecae1"), ("p95", 95.0, "#3182bd"), ("max", 100.0, "#08519c")]
    if not runs:
        _empty(ax, "no runs to show")
    else:
        width = 0.8 / len(stats)
        top = 0.0
        for j, (name, q, colour) in enumerate(stats):
            values = [percentile([r.latency_s for r in run.requests if r.ok], q) for run in runs]
            xs = [i + (j - 1) * width for i in range(len(runs))]
            ax.bar(xs, [v if _finite(v) else 0.0 for v in values], width, color=colour,
                   label=name)
            top = max([top, *[v for v in values if _finite(v)]])
        for i, run in enumerate(runs):
            if not any(r.ok for r in run.requests):
                ax.text(i, 0, "no successful\nrequests", ha="center", va="bottom", fontsize=8,
                        color=_FAILED)
        ax.set_xticks(range(len(runs)))
        ax.set_xticklabels([f"{r.summary.mode}\n{r.summary.ok}/{r.summary.n} ok" for r in runs],
                           fontsize=8)
        ax.set_ylim(0, (top or 1.0) * 1.15)
        ax.legend(fontsize=8, loc="upper right")
    ax.set_ylabel(f"latency, submitted → finished ({seconds_unit(runs)})")
    ax.set_title(title or "Request latency per mode", fontsize=11)
    set_footer(fig, footer_text(runs))
    return fig


# ---------------------------------------------------------------------------------------------
# Saving
# ---------------------------------------------------------------------------------------------

def save(fig: Figure, path: str | os.PathLike[str], *, dpi: int = SAVE_DPI) -> Path:
    """Write the figure (format from the suffix, PNG by default) and return the path.

    Creates missing parent folders.

    Raises:
        ConfigError: the suffix is not a format matplotlib writes.
    """
    from ..outputs import check_figure_format

    check_figure_format("figure path", path)
    p = Path(path)
    if not p.suffix:
        p = p.with_suffix(".png")
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=dpi, facecolor="white")
    return p
