"""Pictures of a load sweep: latency and TTFT against offered load, throughput and goodput.

Like :mod:`parallel_kit.plots`, every function builds a ``matplotlib.figure.Figure`` (headless,
no pyplot state), returns it, and writes a footer naming what produced the numbers.

``latency_vs_load``     latency and TTFT p50/p95/p99 (from arrival) against offered load,
                        measured points beside theory's curves
``throughput_vs_load``  achieved throughput and goodput against offered load, with the
                        capacity and the ideal line (everything offered is served)

The x axis is the offered rate in requests per model second; with a capacity known, a second
axis on top shows it as a fraction of capacity (the load, ρ for the servers as a whole).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from matplotlib.figure import Figure

from . import footer_text, new_figure, set_footer

if TYPE_CHECKING:  # a sweep is drawn, never run, here: bench imports plots, not back
    from ..bench.sweep import Sweep

__all__ = ["latency_vs_load", "self_replay", "throughput_vs_load"]

_QUANTILES = (("p50", "-", "o"), ("p95", "--", "s"), ("p99", ":", "^"))
_COLOURS = {"latency": "#1f77b4", "ttft": "#ff7f0e"}


def _footer(fig: Figure, sweep: Sweep) -> None:
    text = footer_text(sweep.runs) if sweep.runs else "no runs"
    if sweep.predicted:
        text += "; curves: theory (discrete-event run of the profile's latency model)"
    set_footer(fig, text)


def _load_axis(ax: Any, capacity: float | None) -> None:
    if capacity:
        top = ax.secondary_xaxis("top", functions=(lambda r: r / capacity,
                                                   lambda f: f * capacity))
        top.set_xlabel("offered load (fraction of capacity)")


def self_replay(sweep: Sweep, index: int, q: str) -> float:
    """Run ``index``'s replay figure (theory over its own arrivals), NaN when absent."""
    value = sweep.runs[index].summary.open_loop.get(f"replay_latency_{q}_s")
    return float(value) if value is not None else math.nan


def latency_vs_load(sweep: Sweep, *, width: float = 11.0, height: float = 4.4) -> Figure:
    """Two panels — request latency and TTFT, p50/p95/p99 — against the offered rate.

    Points are the runs (latency and TTFT from each request's arrival, model seconds), lines
    theory's steady-state curve when the sweep has one, and grey crosses theory for each run's
    own arrivals (the discrete-event replay), which a short run should match. The y axis is logarithmic: past the knee
    latency grows by orders of magnitude.
    """
    fig = new_figure(width, height)
    axes = fig.subplots(1, 2)
    frame = sweep.frame() if sweep.runs else None
    pred = sweep.predicted_frame() if sweep.predicted else None
    for ax, metric, title in ((axes[0], "latency", "request latency"),
                              (axes[1], "ttft", "time to first token")):
        colour = _COLOURS[metric]
        for q, style, marker in _QUANTILES:
            if frame is not None and len(frame):
                ax.plot(frame["rate_rps"], frame[f"{metric}_{q}_s"], linestyle="none",
                        marker=marker, color=colour, label=f"measured {q}")
            if pred is not None and len(pred):
                ax.plot(pred["rate_rps"], pred[f"{metric}_{q}_s"], linestyle=style,
                        color="#555555", label=f"theory, steady state {q}")
        if metric == "latency" and frame is not None and len(frame):
            # Theory for each run's own arrivals: a short run starts from an empty server and
            # stays below the steady state near capacity; this is what it should measure.
            for q, marker in (("p50", "x"), ("p95", "+")):
                col = [self_replay(sweep, i, q) for i in range(len(sweep.runs))]
                ax.plot(frame["rate_rps"], col, linestyle="none", marker=marker,
                        color="#555555", markersize=8, label=f"theory for these runs {q}")
        ax.set_yscale("log")
        ax.set_xlabel("offered rate (requests per model second)")
        ax.set_ylabel("seconds (model time), from arrival")
        ax.set_title(f"{title} — {sweep.mode}")
        if sweep.capacity_rps:
            ax.axvline(sweep.capacity_rps, color="#d62728", linewidth=0.8)
        _load_axis(ax, sweep.capacity_rps)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    _footer(fig, sweep)
    return fig


def throughput_vs_load(sweep: Sweep, *, width: float = 6.5, height: float = 4.4) -> Figure:
    """Achieved throughput and goodput (requests per model second) against the offered rate."""
    fig = new_figure(width, height)
    ax = fig.subplots()
    frame = sweep.frame() if sweep.runs else None
    if frame is not None and len(frame):
        top = max(float(frame["rate_rps"].max()), 1e-9)
        ax.plot([0, top], [0, top], color="#999999", linewidth=0.8, label="offered = served")
        ax.plot(frame["rate_rps"], frame["throughput_rps"], "o-", color="#1f77b4",
                label="throughput (finished ÷ makespan)")
        good = frame["goodput_rps"]
        if good.notna().any():
            slo = sweep.meta.get("slo") or (sweep.runs[0].summary.open_loop.get("slo"))
            ax.plot(frame["rate_rps"], good, "s-", color="#2ca02c",
                    label=f"goodput (SLO {slo})")
    if sweep.capacity_rps and math.isfinite(sweep.capacity_rps):
        ax.axhline(sweep.capacity_rps, color="#d62728", linewidth=0.8,
                   label=f"capacity {sweep.capacity_rps:.3g}/s")
    ax.set_xlabel("offered rate (requests per model second)")
    ax.set_ylabel("requests per model second")
    ax.set_title(f"throughput and goodput — {sweep.mode}")
    _load_axis(ax, sweep.capacity_rps)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    _footer(fig, sweep)
    return fig
