"""One self-contained HTML report of a run, a sweep or a capacity plan — readable offline.

:func:`write_html_report` writes a single file: the figures are matplotlib SVG inlined into the
page (:func:`svg_of`: glyphs drawn as paths, so no font is fetched; the XML prolog, DOCTYPE and
RDF metadata — the only places matplotlib writes URLs — are removed), the style is inline, and
there is no script, no ``src=``/``href=`` to anything outside the file. It stays under
:data:`MAX_REPORT_BYTES` (1 MB): a timeline with many requests drops its labels, and a report
that would still be larger raises rather than truncating silently.

The page is a Jinja2 template (``report.html.j2`` beside this module): Jinja2 escapes every
value put into the page (command lines, prompts, error texts) by default, which a hand-built
string would have to get right everywhere; it is a small, well-kept library and already comes
with Jupyter, which the notebooks need.

Contents, where the data exists: what produced the numbers (backend, engine, version, time
scale, command line, machine); the SLO verdict; predicted against measured; speed-up; the
request timeline; latency, TTFT and goodput against load with theory's curves.
"""

from __future__ import annotations

import datetime as _dt
import io
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError

__all__ = ["MAX_REPORT_BYTES", "render_html_report", "svg_of", "write_html_report"]

#: The largest report written (bytes).
MAX_REPORT_BYTES = 1_000_000

_PROLOG = re.compile(r"<\?xml[^>]*\?>\s*|<!DOCTYPE[^>]*>\s*", re.S)
_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.S)
_XMLNS = re.compile(r'\s+xmlns(:\w+)?="[^"]*"')


def svg_of(fig: Any, *, close: bool = True) -> str:
    """A matplotlib figure as inline SVG markup with no URL in it (see the module doc)."""
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    with plt.rc_context({"svg.fonttype": "path", "svg.hashsalt": "parallel-kit"}):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    if close:
        plt.close(fig)
    text = _METADATA.sub("", _PROLOG.sub("", buf.getvalue()))
    # Inline SVG in HTML5 needs no namespace declarations (and xlink:href becomes href).
    text = _XMLNS.sub("", text).replace("xlink:href", "href")
    return text.strip()


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "—"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        if math.isnan(x):
            return "—"
        if math.isinf(x):
            return "∞"
        return f"{x:.{digits}g}"
    return str(x)


def _section(title: str, *, text: Sequence[str] = (), table: dict[str, Any] | None = None,
             figures: Sequence[tuple[str, str]] = (), verdict: str | None = None
             ) -> dict[str, Any]:
    return {"title": title, "text": list(text), "table": table,
            "figures": [{"svg": s, "caption": c} for s, c in figures], "verdict": verdict}


# -- runs (bench, demo) ----------------------------------------------------------------------
def _run_sections(runs: Sequence[Any]) -> list[dict[str, Any]]:
    from .. import plots

    out = []
    rows = []
    for r in runs:
        s = r.summary
        rows.append([s.mode, f"{s.workers}×{s.slots}", _fmt(s.predicted_makespan_s),
                     _fmt(s.makespan_s), _fmt(s.efficiency),
                     _fmt(s.speedup_vs_sequential) + ("×" if s.speedup_vs_sequential else ""),
                     _fmt(s.predicted_latency_p95_s), _fmt(s.latency_p95_s),
                     _fmt(s.ttft_p95_s), f"{s.ok}/{s.n}"])
    out.append(_section(
        "Predicted vs measured", table={"head": [
            "mode", "servers×slots", "predicted makespan s", "measured makespan s",
            "efficiency (pred ÷ meas)", "speed-up vs sequential", "predicted latency p95 s",
            "measured latency p95 s", "TTFT p95 s", "ok/n"], "rows": rows},
        text=["Model seconds (clock ÷ time scale). Efficiency = predicted ÷ measured makespan; "
              "speed-up = the sequential run's makespan ÷ this one's, where a sequential run "
              "is in the comparison."]))
    figs = []
    if any(r.summary.predicted_makespan_s for r in runs) or len(runs) > 1:
        figs.append((svg_of(plots.predicted_vs_measured(list(runs))),
                     "Makespan per mode, predicted beside measured, with speed-ups"))
    if figs:
        out.append(_section("Speed-up", figures=figs))
    total = sum(len(r.requests) for r in runs)
    tl = plots.timeline(list(runs), show_labels=total <= 60)
    out.append(_section("Request timeline", figures=[(svg_of(tl), (
        "Each request from when the server began it to its last token (solid), the wait "
        "before it (light); failed requests red and hatched"))]))
    slo_runs = [r for r in runs if r.summary.slo]
    if slo_runs:
        rows = []
        for r in slo_runs:
            s, o = r.summary, r.summary.open_loop or {}
            rows.append([s.mode, s.slo, f"{o.get('slo_met', '—')}/{s.n}",
                         _fmt(s.goodput_rps), _fmt(s.offered_rps), _fmt(s.throughput_rps)])
        out.append(_section("SLO verdict", table={"head": [
            "mode", "SLO (per request)", "met/n", "goodput req/s", "offered req/s",
            "throughput req/s"], "rows": rows}))
    load_runs = [r for r in runs if r.summary.open_loop]
    if load_runs:
        rows = []
        for r in load_runs:
            s, o = r.summary, r.summary.open_loop
            rows.append([s.mode, _fmt(s.offered_rps), _fmt(s.utilisation),
                         _fmt(o.get("latency_from_arrival_p95_s")),
                         _fmt(o.get("replay_latency_p95_s")), _fmt(s.predicted_latency_p95_s),
                         _fmt(o.get("ttft_from_arrival_p95_s")),
                         _fmt(o.get("predicted_ttft_p95_s"))])
        out.append(_section("Under load", table={"head": [
            "mode", "offered req/s", "ρ", "latency p95 s (measured)",
            "latency p95 s (theory, this run)", "latency p95 s (theory, steady)",
            "TTFT p95 s (measured)", "TTFT p95 s (theory, steady)"], "rows": rows},
            text=["Latency and TTFT from each request's arrival. A single rate: run `parallel-kit "
                  "sweep` for the curves against load."]))
    return out


# -- sweeps ----------------------------------------------------------------------------------
def _sweep_sections(sweep: Any) -> list[dict[str, Any]]:
    from ..plots import load as plots_load

    figs = [(svg_of(plots_load.latency_vs_load(sweep)),
             "Latency and TTFT against offered load: points measured, lines theory"),
            (svg_of(plots_load.throughput_vs_load(sweep)),
             "Throughput and goodput against offered load")]
    return [_section("Latency, TTFT and goodput against load", figures=figs,
                     text=[sweep.table()])]


# -- capacity plans --------------------------------------------------------------------------
def plan_figure(plan: Any) -> Any:
    """Each configuration of a capacity plan against its SLO: one panel per bound (up to
    three), a bar per configuration (its predicted percentile, model seconds from arrival;
    green meets, red misses, ∞ where no steady state), the bound as a dashed line, and ◆ for
    a measured configuration.

    Args:
        plan: a :class:`~parallel_kit.bench.capacity.CapacityPlan`.

    Returns:
        A matplotlib ``Figure`` (the capacity report's first figure).
    """
    from matplotlib.figure import Figure

    keys = plan.slo.keys[:3]
    # Not pyplot's: a notebook shows the returned figure once, and nothing stays registered.
    fig = Figure(figsize=(max(6.0, 4.2 * len(keys)), 3.8))
    axes = fig.subplots(1, len(keys), squeeze=False)
    cands = plan.candidates
    labels = [f"{c.servers}×{c.slots}" + ("" if len(plan.modes) == 1 else f"\n{c.mode}")
              for c in cands]
    measured = {(m.mode, m.servers, m.slots): m for m in plan.measurements}
    for ax, key in zip(axes[0], keys, strict=False):
        bound = dict(plan.slo.bounds)[key]
        vals = [c.figures[key] for c in cands]
        finite = [v for v in vals if math.isfinite(v)]
        top = max([*finite, bound]) * 1.3
        shown = [v if math.isfinite(v) else top for v in vals]
        colours = ["#31a354" if c.meets else "#de2d26" for c in cands]
        ax.bar(range(len(cands)), shown, color=colours, alpha=0.75, label="predicted")
        for i, v in enumerate(vals):
            if not math.isfinite(v):
                ax.text(i, top, "∞", ha="center", va="bottom", fontsize=9)
        xs = [i for i, c in enumerate(cands) if (c.mode, c.servers, c.slots) in measured]
        ys = [measured[(cands[i].mode, cands[i].servers, cands[i].slots)].figures[key]
              for i in xs]
        if xs:
            ax.plot(xs, ys, "D", color="black", label="measured")
        ax.axhline(bound, color="#333", ls="--", lw=1, label=f"SLO {bound:g} s")
        ax.set_xticks(range(len(cands)), labels, fontsize=7, rotation=90 if len(cands) > 12
                      else 0)
        ax.set_xlabel("servers × slots")
        ax.set_ylabel(f"{key} (model s, from arrival)")
        ax.set_title(key)
        ax.legend(fontsize=7)
    fig.suptitle("Each configuration against the SLO (green meets, red misses)")
    fig.tight_layout()
    return fig


def plan_curve(plan: Any) -> Any | None:
    """The recommended and the next smaller configuration against load: theory's percentile
    curves (model seconds, log scale) over offered load (requests per model second), the SLO
    and the plan's rate as lines, ◆ for measured points.

    Args:
        plan: a :class:`~parallel_kit.bench.capacity.CapacityPlan`.

    Returns:
        A matplotlib ``Figure``, or None when there is no recommendation, no server profile
        or the traffic is a trace (no rate to vary).
    """
    from matplotlib.figure import Figure

    from ..bench.capacity import service_model
    from ..bench.sweep import predicted_curve

    prof = getattr(plan, "server_profile", None)
    if prof is None or plan.best is None or plan.traffic.process == "trace":
        return None
    service = service_model(prof, plan.traffic, plan.model, None)
    keys = [k for k in plan.slo.keys if not k.startswith("tpot")][:2] or ["latency_p95"]
    fig = Figure(figsize=(5.5 * len(keys), 3.8))
    axes = fig.subplots(1, len(keys), squeeze=False)
    for c, colour in ((plan.best, "#31a354"), (plan.next_smaller, "#de2d26")):
        if c is None:
            continue
        _, curve = predicted_curve(c.mode, service, workers=c.servers, slots=c.slots,
                                   process=plan.traffic.process,
                                   burstiness=plan.traffic.burstiness, requests=2000,
                                   fractions=[f / 20 for f in range(1, 20)])
        for ax, key in zip(axes[0], keys, strict=False):
            ax.plot([p["rate_rps"] for p in curve], [p[f"{key}_s"] for p in curve], "-",
                    color=colour, label=f"{c.label} (theory)")
    meas = {(m.mode, m.servers, m.slots): m for m in plan.measurements}
    for ax, key in zip(axes[0], keys, strict=False):
        for m in meas.values():
            ax.plot([m.rate], [m.figures[key]], "D", color="black")
        ax.axhline(dict(plan.slo.bounds).get(key, math.nan), color="#333", ls="--", lw=1,
                   label="SLO")
        ax.axvline(plan.traffic.rate, color="#3182bd", ls=":", lw=1, label="the traffic")
        ax.set_yscale("log")
        ax.set_xlabel("offered load (req per model s)")
        ax.set_ylabel(f"{key} (model s)")
        ax.legend(fontsize=7)
    fig.suptitle("Against load: theory's curves, measured points (◆)")
    fig.tight_layout()
    return fig


def _plan_sections(plan: Any) -> list[dict[str, Any]]:
    keys = plan.slo.keys
    if plan.best is not None:
        verdict = (f"Smallest configuration meeting {plan.slo}: {plan.best.servers} server(s) "
                   f"× {plan.best.slots} slot(s) — mode(s) "
                   f"{', '.join(c.mode for c in plan.recommended)}.")
        text = ["Predicted: " + ", ".join(f"{k} {_fmt(plan.best.figures[k])} s" for k in keys)]
        if plan.next_smaller is not None:
            text.append(f"Next smaller: {plan.next_smaller.label} — {plan.next_smaller.why()}.")
        text.append(f"Measure both: {plan.measure_command()}")
    else:
        c = plan.closest
        verdict = (f"No configuration up to {plan.max_gpus} server(s) meets {plan.slo}" +
                   (f"; closest: {c.label} — {c.why()}" if c is not None else "") + ".")
        text = []
    text.insert(0, f"Traffic: {plan.traffic.describe()}. Server: profile {plan.profile}, "
                   f"model {plan.model}.")
    out = [_section("SLO verdict", verdict=verdict, text=text)]
    rows = [[c.label, _fmt(c.capacity_rps), _fmt(c.utilisation),
             *[_fmt(c.figures[k]) for k in keys], "meets" if c.meets else c.why()]
            for c in plan.candidates]
    out.append(_section("Every configuration, predicted", table={
        "head": ["configuration", "capacity req/s", "ρ", *[f"{k} s" for k in keys],
                 "verdict"], "rows": rows},
        figures=[(svg_of(plan_figure(plan)), "Predicted figure per configuration; ◆ measured")],
        text=["Theory: a discrete-event run of the simulator's latency model "
              "(theory.predict_load); latency and TTFT from arrival; TPOT is the full-batch "
              "bound K ÷ (decode tokens/s × S(K))."]))
    if plan.measurements:
        rows = []
        for m in plan.measurements:
            rows.append([m.label, *[f"{_fmt(m.figures[k])} ({_fmt(m.predicted[k])})"
                                    for k in keys],
                         f"{m.run.summary.ok}/{m.run.summary.n}",
                         "meets" if m.meets else "misses: " + "; ".join(
                             x.describe() for x in m.misses)])
        out.append(_section("Predicted vs measured", table={
            "head": ["configuration", *[f"{k} s measured (theory, this run)" for k in keys],
                     "ok/n", "verdict"], "rows": rows}))
        out += [s for s in _run_sections([m.run for m in plan.measurements])
                if s["title"] == "Request timeline"]
    curve = plan_curve(plan)
    if curve is not None:
        out.append(_section("Against load", figures=[(svg_of(curve), (
            "Theory's steady-state curves of the recommended (green) and next smaller (red) "
            "configuration; the dotted line is the planned traffic"))]))
    return out


def _max_rate_sections(result: Any) -> list[dict[str, Any]]:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.0, 3.6))
    for s in result.searches:
        for i, (r, ok) in enumerate(s["runs"]):
            ax.plot([i + 1], [r], "o" if ok else "x", color="#31a354" if ok else "#de2d26")
        ax.plot(range(1, len(s["runs"]) + 1), [r for r, _ in s["runs"]], "-", color="#999",
                lw=0.8)
    ax.axhline(result.predicted_rps, color="#3182bd", ls="--", lw=1, label="theory")
    ax.axhline(result.rate_rps, color="black", lw=1, label="answer")
    if result.ci95:
        ax.axhspan(*result.ci95, color="#bbb", alpha=0.4, label="95 % CI")
    ax.set_xlabel("measured run")
    ax.set_ylabel("offered rate (req per model s)")
    ax.legend(fontsize=7)
    ax.set_title("Bisection: ● within the SLO, × not")
    rows = [[s["seed"], ", ".join(f"{r:.4g}{' ✓' if ok else ' ✗'}" for r, ok in s["runs"]),
             _fmt(s["answer"], 4), _fmt(s["predicted_rps"], 4), _fmt(s["at_edge"])]
            for s in result.searches]
    return [_section("SLO verdict", verdict=result.report().splitlines()[0],
                     text=result.report().splitlines()[1:2]),
            _section("The search", table={"head": ["seed", "runs (rate, met)", "answer req/s",
                                                   "theory req/s", "at bracket edge"],
                                          "rows": rows},
                     figures=[(svg_of(fig), "Each search's measured runs")])]


# -- the page --------------------------------------------------------------------------------
def _provenance(runs: Sequence[Any], command: str | None, extra: dict[str, Any]) -> list[list[str]]:
    from ..bench.sweep import machine_description
    from ..config import VERSION

    rows = [["parallel_kit version", VERSION]]
    if runs:
        s = runs[0].summary
        rows += [["backend", "simulated Ollama" if s.backend == "sim" else "real Ollama"],
                 ["engine", str(getattr(s, "engine", "") or "—")],
                 ["model", str(getattr(s, "model", "") or "—")],
                 ["time scale", f"{s.time_scale:g} (clock seconds per model second)"]]
    rows += [[k, _fmt(v)] for k, v in extra.items() if v is not None]
    rows.append(["command line", command or "— (called from Python)"])
    m = machine_description()
    rows.append(["machine", f"{m['platform']}, {m['cpus']} CPUs, Python {m['python']}, load "
                            f"average {m['load_average']}"])
    rows.append(["written", _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")])
    return rows


def render_html_report(*, title: str = "parallel_kit report", runs: Any = None,
                       sweep: Any = None, plan: Any = None, max_rate: Any = None,
                       command: str | None = None) -> str:
    """The report's HTML text (see :func:`write_html_report`)."""
    import jinja2

    run_list = list(getattr(runs, "runs", runs) or [])
    sections: list[dict[str, Any]] = []
    extra: dict[str, Any] = {}
    if plan is not None:
        sections += _plan_sections(plan)
        run_list = run_list or [m.run for m in plan.measurements]
        extra = {"profile": plan.profile, "SLO": str(plan.slo),
                 "traffic": plan.traffic.describe()}
        command = command or plan.command
    if max_rate is not None:
        sections += _max_rate_sections(max_rate)
        run_list = run_list or [m.run for m in max_rate.runs if getattr(m, "run", None)]
    if sweep is not None:
        sections += _sweep_sections(sweep)
        run_list = run_list or list(sweep.runs)
        command = command or sweep.meta.get("command")
    elif runs is not None:
        sections += _run_sections(run_list)
    if not sections:
        raise ConfigError("nothing to report — give runs, a sweep, a plan or a max-rate result")
    env = jinja2.Environment(loader=jinja2.PackageLoader("parallel_kit", "report"),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    page = env.get_template("report.html.j2").render(
        title=title, sections=sections, provenance=_provenance(run_list, command, extra))
    return page


def write_html_report(path: str | os.PathLike[str], *, title: str = "parallel_kit report",
                      runs: Any = None, sweep: Any = None, plan: Any = None,
                      max_rate: Any = None, command: str | None = None) -> Path:
    """Write one self-contained HTML report; returns its path.

    Args:
        path: the file to write (its folder is created).
        runs: a :class:`~parallel_kit.bench.Comparison` or a list of
            :class:`~parallel_kit.records.RunResult` (``bench``, ``demo``).
        sweep: a :class:`~parallel_kit.bench.sweep.Sweep`.
        plan: a :class:`~parallel_kit.bench.capacity.CapacityPlan` (with its measurements).
        max_rate: a :class:`~parallel_kit.bench.capacity.MaxRateResult`.
        command: the command line that produced the numbers.

    Raises:
        ConfigError: nothing to report; a report larger than :data:`MAX_REPORT_BYTES`; the
            file cannot be written.
    """
    html = render_html_report(title=title, runs=runs, sweep=sweep, plan=plan,
                              max_rate=max_rate, command=command)
    data = html.encode("utf-8")
    if len(data) > MAX_REPORT_BYTES:
        raise ConfigError(f"the HTML report would be {len(data) / 1e6:.2f} MB, over the "
                          f"{MAX_REPORT_BYTES / 1e6:g} MB limit — report fewer runs or requests")
    p = Path(path).expanduser()
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    except OSError as exc:
        raise ConfigError(f"cannot write --html {p} ({exc.strerror or exc}) — choose another "
                          f"path") from None
    return p
