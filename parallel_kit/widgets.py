"""The widget lab: sliders and a Run button for experiments in a notebook.

>>> from parallel_kit.widgets import ExperimentLab
>>> lab = ExperimentLab(time_scale=0.05)
>>> lab            # shows the controls; Run starts the experiment without blocking the kernel

Controls: requests, GPUs (servers), slots per server, seconds per request, how requests arrive
(all at once, or at random — Poisson — one every so many model seconds on average), which modes,
and the time scale. Three rules keep the lab honest in a real browser:

* **What the learner sees is what runs.** Every control syncs a whole number, a tick box or an
  index into a fixed list — never a float. A browser slider snaps a float to its own step grid
  and sends the snapped value back (a ``FloatLogSlider`` set to 0.02 with step 0.1 comes back as
  10^-1.7 = 0.0199526), so a float control can run a value nobody chose. The time scale is
  therefore a :class:`ipywidgets.SelectionSlider` over fixed values, seconds per request an
  :class:`ipywidgets.IntSlider`, the arrival rate a :class:`ipywidgets.SelectionSlider` over
  fixed mean gaps (:data:`ARRIVAL_GAPS`). Run takes a snapshot of the controls when it is pressed and
  prints that snapshot in the run's caption and figure title.
* **Nothing long runs on the kernel's event loop.** Run hands the experiment to the kit's
  background event loop (a thread, :mod:`parallel_kit._sync`); a Ray cluster start, which blocks
  for seconds, goes to a worker thread of its own. The kernel stays free: other cells run and
  widgets respond while a run — or a cluster start — is in progress.
* **Results are drawn wherever the run was started from.** Figures and the table are written
  into the lab's :class:`ipywidgets.Output` as data (its ``outputs``, like
  ``Output.append_display_data``), not printed inside ``with output:`` — a ``with`` block only
  captures output produced while a cell executes, so a run started by the button would never
  draw.

Seconds per request are set through ``num_predict`` on the ``seed`` profile (10 tokens/s, so
10 s = 100 tokens); with a real Ollama the length depends on the model, so the prediction line
(from :mod:`parallel_kit.theory` and the seed profile's S(k)) only holds for the simulator — the
comparison after a run predicts from the measured sequential run instead.

**Requests arriving over time.** With "requests arrive" set to *every G s*, a run sends its
requests open loop at Poisson arrivals of rate 1/G per model second (seed :attr:`ExperimentLab.seed`,
``compare(arrivals=Arrivals(rate=1/G, seed=…))``, :mod:`parallel_kit.bench.loadgen`); the prediction line
shows each mode's utilisation ρ and its predicted mean latency from arrival
(:func:`parallel_kit.theory.predict_load` on the seed profile's latency model), and the run draws
measured mean latency beside the predicted one — theory's steady state, and theory for this run's
own arrivals (a few requests are a small sample of a random process).

**The SLO advisor** (:class:`SloAdvisor`, ``slo_advisor()``) asks the other question: not
"how long does this batch take" but "how many servers and slots does this *traffic* need to meet
a latency SLO". Its sliders (arrival rate, latency/TTFT/TPOT p95 targets, profile, modes, max
GPUs, slots) re-plan with :func:`parallel_kit.bench.capacity.plan_capacity` — the planning function of
``parallel-kit capacity``, not a copy — and its Run button measures the recommendation with
:func:`parallel_kit.bench.capacity.measure_config` in the background, as the lab runs. It is a widget
of its own, shown beside the lab in notebook 06 rather than a tab inside it: a plan costs about a
second of theory, which the lab should not pay each time it is built, and the lab's own controls
stay as they were.

Headless use (tests, scripts): ``ExperimentLab(run_in_background=False)`` runs inside
``run_button.click()``; or set the controls and ``await lab.run(**lab.settings())``.
"""

from __future__ import annotations

import asyncio
import base64
import html
import io
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import ipywidgets as W

from . import theory
from .bench import Comparison, compare
from .bench.loadgen import format_load_table
from .config import DEFAULT_MODEL, max_concurrent_from_env
from .modes.registry import get_info, mode_names
from .records import RequestResult, RunResult
from .workload.arrivals import Arrivals

__all__ = ["ADVISOR_RATES", "ARRIVAL_GAPS", "SLO_TARGETS", "TIME_SCALES", "TPOT_TARGETS",
           "ExperimentLab", "LabRun", "SloAdvisor", "Step", "slo_advisor"]

#: Tokens per model second of the ``seed`` profile (every default request: 100 tokens, 10 s).
SEED_TOKENS_PER_S = 10
#: The simulator profile the lab runs (its S(k) drives the prediction line).
LAB_PROFILE = "seed"
#: The time scales the slider offers (clock seconds per model second); a value given to the lab
#: that is not here is added, so the lab always shows exactly the scale it runs.
TIME_SCALES: tuple[float, ...] = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
#: The mean gaps between arrivals the "requests arrive" slider offers (model seconds; rate = 1/gap
#: requests per model second). 0 means a burst: every request at once, as a closed-loop run.
#: 20 and 11 are the original scenario's: 10 s requests on one server at ρ = 0.5 and ≈ 0.9.
ARRIVAL_GAPS: tuple[float, ...] = (0, 60, 40, 30, 25, 20, 15, 12, 11, 10, 8, 6, 5, 4, 3, 2.5, 2,
                                   1.5, 1, 0.5, 0.2)
#: The seed of the lab's arrival schedules (the same seed gives the same arrivals).
ARRIVAL_SEED = 1


@dataclass(frozen=True, slots=True)
class Step:
    """One long step of a run (e.g. the Ray cluster start) and where it ran.

    Attributes:
        name: what the step did; thread: the name of the thread it ran on;
        started/ended: ``time.monotonic()`` clock seconds.
    """

    name: str
    thread: str
    started: float
    ended: float


@dataclass(frozen=True, slots=True)
class LabRun:
    """A run the lab made: its number, the settings it ran with and the caption it drew."""

    number: int
    settings: dict[str, Any]
    caption: str


def _whole(x: float) -> float | int:
    return int(x) if float(x).is_integer() else round(x, 3)


def _time_scale_label(value: float) -> str:
    return f"{value:g}"


def _gap_label(gap: float) -> str:
    return "all at once" if gap == 0 else f"every {gap:g} s"


def describe_arrivals(settings: dict[str, Any]) -> str:
    """How a run's requests arrived, e.g. ``Poisson arrivals, one every 20 s (seed 1)``;
    empty for a burst."""
    gap = settings.get("every_s", 0)
    if not gap:
        return ""
    return f"Poisson arrivals, one every {gap:g} s (seed {settings.get('seed', ARRIVAL_SEED)})"


def describe(settings: dict[str, Any]) -> str:
    """Settings as the caption shows them, e.g.
    ``sequential, pool · 6 requests × 5 s · 3 GPUs × 1 slot · time scale 0.02``, with
    ``· Poisson arrivals, one every 20 s (seed 1)`` before the time scale when requests arrived
    over time."""
    slots = settings["slots"]
    arrivals = describe_arrivals(settings)
    return (f"{', '.join(settings['modes'])} · {settings['n']} requests × "
            f"{settings['seconds']} s · {settings['gpus']} GPUs × {slots} "
            f"slot{'s' if slots != 1 else ''}" + (f" · {arrivals}" if arrivals else "") +
            f" · time scale {_time_scale_label(settings['time_scale'])}")


class _Interactive:
    """What the lab and the advisor share: controls whose every move recomputes what is shown,
    a Run button, and the run it starts — off the kernel's loop, or to the end without one.

    A control's change can arrive on more than one thread at once: ipykernel 7 handles comm
    messages on a kernel subshell's thread as well as on the main one (so that widgets answer
    while a cell runs; ipykernel's ``shell_main`` and JupyterLab's widget manager), and a
    slow recompute started by an earlier change could then finish last and show advice for
    values the controls no longer hold. So each change takes a number under :attr:`_guard`,
    computes from the controls as they are then (:meth:`_compute`), and is shown only if no
    later change has taken a number meanwhile (:meth:`_show`); the newest change is always
    shown. A click claims the run under the same guard, so two clicks start one run.
    """

    run_button: W.Button
    run_in_background: bool
    task: asyncio.Task[Any] | None
    _running: bool

    def controls(self) -> list[W.ValueWidget]:
        raise NotImplementedError

    @property
    def widget(self) -> W.Widget:
        raise NotImplementedError

    def _on_click(self, _button: Any = None) -> None:
        raise NotImplementedError

    def _compute(self) -> Any:
        """What the controls' values give (called on any thread; no widget is written)."""
        raise NotImplementedError

    def _show(self, computed: Any) -> None:
        """Show what :meth:`_compute` gave (called under :attr:`_guard`)."""
        raise NotImplementedError

    def _ipython_display_(self) -> None:  # pragma: no cover - notebook display hook
        from IPython.display import display

        display(self.widget)

    def _wire(self) -> None:
        """Nothing running yet; Run and every control connected; what they give shown once."""
        self.task = None
        self._running = False
        self._guard = threading.RLock()
        self._changes = 0
        self.run_button.on_click(self._on_click)
        for w in self.controls():
            w.observe(self._changed, names="value")
        self._changed()

    def _changed(self, _change: Any = None) -> None:
        """A control moved (or the first showing): recompute, and show it unless outdated."""
        with self._guard:
            self._changes += 1
            mine = self._changes
        computed = self._compute()
        with self._guard:
            if mine == self._changes:
                self._show(computed)

    def _start(self, coro: Any) -> None:
        """Run ``coro`` as :attr:`task` on the kit's background loop when running in the
        background under a running loop (a kernel's); otherwise to the end, here."""
        if self.run_in_background:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            if loop is not None:
                self.task = loop.create_task(self._off_the_loop(coro))
                return
        from ._sync import run_sync

        run_sync(coro)

    @staticmethod
    async def _off_the_loop(coro: Any) -> Any:
        """Run ``coro`` on the kit's background loop; this loop only waits for the result."""
        from ._sync import background_loop

        future = asyncio.run_coroutine_threadsafe(coro, background_loop())
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.cancel()
            raise


class ExperimentLab(_Interactive):
    """Interactive experiment: choose the workload and resources, run modes, see the result.

    Args:
        time_scale: clock seconds per model second for the embedded simulators (added to the
            slider's values when it is not one of :data:`TIME_SCALES`).
        hosts: Ollama URLs to use instead of simulators (one per GPU).
        backend: ``auto`` | ``ollama`` | ``sim`` (default ``PARALLEL_KIT_BACKEND``, else auto:
            a real Ollama at ``OLLAMA_HOST`` when it answers, simulators otherwise).
        run_in_background: True (the default) runs off the kernel's loop and returns at once;
            False runs to completion inside ``click()`` (for tests and plain scripts).
        seed: seed of the Poisson arrival schedules (:data:`ARRIVAL_SEED`).

    Attributes:
        prediction: HTML line with the theory's makespan per selected mode (model seconds).
        status: HTML line with messages (running, nothing selected, failures, what ran).
        output: where each run draws its caption, timeline, predicted-vs-measured and table.
        comparison: the last run's :class:`~parallel_kit.bench.Comparison` (None before).
        runs: every run started, with the settings it used (:class:`LabRun`).
        steps: the long steps of the runs and the thread each ran on (:class:`Step`).
        task: the background run in progress, an :class:`asyncio.Task` on the caller's loop
            (None before the first background run); ``await lab.task`` gives the Comparison.
    """

    def __init__(self, *, time_scale: float = 0.05, hosts: list[str] | None = None,
                 backend: str | None = None, run_in_background: bool = True,
                 seed: int = ARRIVAL_SEED) -> None:
        from .sim.profiles import load_profile

        if not time_scale > 0:
            raise ValueError(f"time_scale must be > 0 clock s per model s, got {time_scale}")
        self.hosts = hosts
        self.backend = backend
        self.run_in_background = run_in_background
        self.seed = seed
        self._profile = load_profile(LAB_PROFILE)
        style = {"description_width": "150px"}
        layout = W.Layout(width="420px")
        self.requests = W.IntSlider(5, min=1, max=40, description="requests",
                                    style=style, layout=layout)
        self.gpus = W.IntSlider(3, min=1, max=8, description="GPUs (servers)",
                                style=style, layout=layout)
        self.slots = W.IntSlider(1, min=1, max=8, description="slots per server",
                                 style=style, layout=layout)
        self.seconds = W.IntSlider(10, min=1, max=30, description="seconds per request",
                                   style=style, layout=layout)
        self.arrivals = W.SelectionSlider(
            options=[(_gap_label(g), float(g)) for g in ARRIVAL_GAPS], index=0,
            description="requests arrive", style=style, layout=layout)
        scales = sorted({*TIME_SCALES, float(time_scale)})
        self.time_scale = W.SelectionSlider(
            options=[(_time_scale_label(s), s) for s in scales], value=float(time_scale),
            description="time scale", style=style, layout=layout)
        # Modes that need an optional extra (Ray) are off by default: slow to bring up.
        self.mode_boxes = {m: W.Checkbox(value=not get_info(m).needs, description=m,
                                         indent=False, layout=W.Layout(width="110px"))
                           for m in mode_names()}
        self.run_button = W.Button(description="Run", button_style="primary", icon="play")
        self.progress = W.IntProgress(value=0, min=0, max=1, description="0 / 0")
        self.prediction = W.HTML("")
        self.status = W.HTML("ready — press Run")
        self.output = W.Output()
        self.comparison: Comparison | None = None
        self.runs: list[LabRun] = []
        self.steps: list[Step] = []
        self._wire()

    # -- what the reader sees -------------------------------------------------------------
    def controls(self) -> list[W.ValueWidget]:
        """Every control whose value a run uses (sliders and mode boxes)."""
        return [self.requests, self.gpus, self.slots, self.seconds, self.arrivals,
                self.time_scale, *self.mode_boxes.values()]

    @property
    def widget(self) -> W.Widget:
        modes = W.HBox(list(self.mode_boxes.values()))
        return W.VBox([self.requests, self.gpus, self.slots, self.seconds, self.arrivals,
                       self.time_scale,
                       modes, self.prediction, W.HBox([self.run_button, self.progress]),
                       self.status, self.output])

    def selected_modes(self) -> list[str]:
        return [m for m, box in self.mode_boxes.items() if box.value]

    def settings(self) -> dict[str, Any]:
        """The experiment the controls describe (what Run will do); seconds are model seconds.

        When requests arrive over time, ``every_s`` is the mean gap between Poisson arrivals
        and ``seed`` the arrival schedule's seed; a burst (all at once) has neither key.
        """
        settings: dict[str, Any] = {
            "modes": self.selected_modes(), "n": self.requests.value,
            "gpus": self.gpus.value, "slots": self.slots.value,
            "num_predict": max(1, round(self.seconds.value * SEED_TOKENS_PER_S))}
        if self.arrivals.value:
            settings.update(every_s=_whole(self.arrivals.value), seed=self.seed)
        settings["time_scale"] = self.time_scale.value
        return settings

    def predictions(self) -> dict[str, theory.Prediction]:
        """What theory expects of each selected mode for the controls' workload (model seconds).

        Equal requests of ``seconds`` each; single-server modes use one server, pool and ray
        ``GPUs`` servers; every server has ``slots`` slots sharing the seed profile's S(k).
        """
        times = [float(self.seconds.value)] * self.requests.value
        return {m: theory.predict(m, times, workers=self.gpus.value, slots=self.slots.value,
                                  speedup=self._profile)
                for m in self.selected_modes()}

    def load_predictions(self) -> dict[str, theory.LoadPrediction]:
        """Theory for each selected mode when requests arrive over time (empty for a burst).

        Poisson arrivals at rate 1/``every_s`` per model second on the seed profile's latency
        model (:func:`theory.service_model_from_profile` of the requests the run sends), with
        the same steady-state call a run's summary gets (:func:`loadgen.fill_predictions`):
        utilisation ρ and mean latency from arrival, model seconds.
        """
        gap = float(self.arrivals.value)
        modes = self.selected_modes()
        if not gap or not modes:
            return {}
        service = theory.service_model_from_profile(self._profile, self._specs())
        return {m: theory.predict_load(m, service, rate=1.0 / gap, workers=self.gpus.value,
                                       slots=self.slots.value,
                                       concurrency=max_concurrent_from_env(), seed=self.seed)
                for m in modes}

    def _specs(self) -> list[Any]:
        from .workload.prompts import make_specs

        settings = self.settings()
        return make_specs(settings["n"], None, model=DEFAULT_MODEL,
                          num_predict=settings["num_predict"])

    def prediction_text(self) -> str:
        """The prediction line as plain text, e.g. ``sequential 50 s · pool 20 s (2.50×)``;
        under arrivals ``sequential ρ 0.50, mean latency 15 s · …``."""
        preds = self.predictions()
        if not preds:
            return "no mode selected"
        loads = self.load_predictions()
        if loads:
            return "predicted: " + " · ".join(
                f"{m} ρ {p.utilisation:.2f}, mean latency "
                + (f"{p.latency_mean_s:.3g} s" if math.isfinite(p.latency_mean_s)
                   else "∞ (past capacity)")
                for m, p in loads.items())
        base = float(self.seconds.value) * self.requests.value
        parts = [f"{m} {p.makespan_s:.3g} s" + (f" ({base / p.makespan_s:.2f}×)"
                                                  if p.makespan_s > 0 and get_info(m).multi_server
                                                  else "")
                 for m, p in preds.items()]
        return "predicted: " + " · ".join(parts)

    def _compute(self) -> str:
        return self.prediction_text()

    def _show(self, computed: str) -> None:
        self.prediction.value = html.escape(computed)

    # -- running ------------------------------------------------------------------------------
    def _on_click(self, _button: Any = None) -> None:
        with self._guard:
            if self.run_button.disabled or self._running:
                self.status.value = "already running — wait for it to finish"
                return
            settings = self.settings()
            if not settings["modes"]:
                self.status.value = "<b>choose at least one mode</b>"
                return
            # Disabled at once, not when the run first gets going: a second click is refused.
            self.run_button.disabled = True
            self.status.value = "starting…"
        self._start(self.run(**settings))

    async def wait(self) -> Comparison | None:
        """Wait for the background run (if any) and return the last result.

        Then re-send every widget's state from the waiting cell. A browser already has it;
        a headless runner (nbclient, ``make notebooks``) only keeps updates sent while a cell
        executes, and the run's updates came from another thread — without this, a saved
        notebook would show the lab as it was when Run was pressed ("starting…", Run disabled).
        """
        result = await self.task if self.task is not None else self.comparison
        for w in (*self.controls(), self.run_button, self.progress, self.prediction,
                  self.status):
            w.send_state()
        # Only what the Output shows: its msg_id (capture target) is not ours to re-send.
        self.output.send_state(key="outputs")
        return result

    async def _step(self, name: str, fn: Any, *args: Any) -> Any:
        """Run a blocking ``fn(*args)`` in a worker thread and record it as a :class:`Step`."""
        where: list[str] = []

        def call() -> Any:
            where.append(threading.current_thread().name)
            return fn(*args)

        t0 = time.monotonic()
        try:
            return await asyncio.to_thread(call)
        finally:
            self.steps.append(Step(name, where[0] if where else "?", t0, time.monotonic()))

    async def run(self, *, modes: list[str], n: int, gpus: int, slots: int, num_predict: int,
                  time_scale: float, every_s: float = 0, seed: int = ARRIVAL_SEED
                  ) -> Comparison | None:
        """Run the experiment, update the progress bar, draw the results into ``output``.

        ``every_s`` > 0: requests arrive open loop, Poisson with mean gap ``every_s`` model
        seconds, drawn with ``seed``; 0 sends them all at once.

        Returns the :class:`~parallel_kit.bench.Comparison`, or None when the run failed (the
        status line says why; the kernel stays usable).
        """
        with self._guard:
            if self._running:
                raise RuntimeError("the lab is already running an experiment — await lab.task")
            self._running = True
        try:
            return await self._run(modes=modes, n=n, gpus=gpus, slots=slots,
                                   num_predict=num_predict, time_scale=time_scale,
                                   every_s=every_s, seed=seed)
        finally:
            self._running = False

    async def _run(self, *, modes: list[str], n: int, gpus: int, slots: int,
                   num_predict: int, time_scale: float, every_s: float,
                   seed: int) -> Comparison | None:
        settings: dict[str, Any] = {"modes": list(modes), "n": n, "gpus": gpus, "slots": slots,
                                    "seconds": _whole(num_predict / SEED_TOKENS_PER_S)}
        if every_s:
            settings.update(every_s=_whole(every_s), seed=seed)
        settings["time_scale"] = time_scale
        number = len(self.runs) + 1
        self.runs.append(LabRun(number, settings, f"run {number}: {describe(settings)}"))
        self.run_button.disabled = True
        self.progress.max = n * len(modes)
        self.progress.value = 0
        self.progress.description = f"0 / {self.progress.max}"
        self.progress.bar_style = ""

        def finished(_row: RequestResult) -> None:
            self.progress.value += 1
            self.progress.description = f"{self.progress.value} / {self.progress.max}"

        try:
            if not self.hosts and any("ray" in get_info(m).needs for m in modes):
                from .servers import raycluster

                self.status.value = f"run {number}: starting Ray ({gpus} GPUs)…"
                await self._step("ray cluster start", raycluster.connect, gpus)
            self.status.value = f"run {number}: running…"
            self.comparison = await compare(
                modes, n=n, gpus=gpus, slots=slots, num_predict=num_predict,
                time_scale=time_scale, hosts=self.hosts, profile=LAB_PROFILE,
                backend=self.backend, on_result=finished,
                arrivals=Arrivals(rate=1.0 / every_s, seed=seed) if every_s else None)
        except Exception as exc:  # shown in the lab; the kernel stays usable
            self.progress.bar_style = "danger"
            self.status.value = (f"<b>run {number} failed:</b> "
                                 f"{html.escape(f'{type(exc).__name__}: {exc}')}")
            return None
        finally:
            self.run_button.disabled = False
        self.progress.bar_style = "success"
        where = "simulated Ollama" if self.comparison.backend == "sim" else "real Ollama"
        self.status.value = f"run {number} done on {where}: {html.escape(describe(settings))}"
        self._draw(self.runs[-1], self.comparison)
        return self.comparison

    def _draw(self, lab_run: LabRun, comparison: Comparison) -> None:
        """Replace the output area's contents with this run's caption, figures and table."""
        import matplotlib.pyplot as plt

        from . import plots

        open_loop = any(r.summary.open_loop for r in comparison.runs)
        fig1 = plots.timeline(comparison.runs, title=f"Request timeline — {lab_run.caption}")
        fig2 = (latency_vs_predicted(comparison.runs, title=lab_run.caption) if open_loop
                else plots.predicted_vs_measured(comparison.runs))
        what = "latency vs predicted" if open_loop else "predicted vs measured"
        table = format_load_table(comparison.runs) if open_loop else comparison.table()
        try:
            outputs = [_html_output(f"<b>{html.escape(lab_run.caption)}</b>"),
                       _figure_output(fig1, f"timeline, {lab_run.caption}"),
                       _figure_output(fig2, f"{what}, {lab_run.caption}"),
                       {"output_type": "stream", "name": "stdout", "text": table + "\n"}]
        finally:
            plt.close(fig1)
            plt.close(fig2)
        self.output.outputs = tuple(outputs)


def latency_vs_predicted(runs: Sequence[RunResult], *, title: str = "") -> Any:
    """Mean latency from arrival per mode: measured beside theory (model seconds).

    Three bars a mode: theory's steady state at the offered rate (``predicted_latency_mean_s``),
    theory for this run's own arrivals (``open_loop["replay_latency_mean_s"]``) and the measured
    mean (``open_loop["latency_from_arrival_mean_s"]``); ρ under the mode's name. A bar past
    capacity (∞) is drawn at the top and marked.
    """
    from . import plots

    fig = plots.new_figure(max(5.0, 1.6 * len(runs) + 2.5), 4.2)
    ax = fig.subplots()
    series = [("predicted (steady state)", "#c6dbef", lambda r: r.summary.predicted_latency_mean_s),
              ("predicted (these arrivals)", "#6baed6",
               lambda r: r.summary.open_loop.get("replay_latency_mean_s")),
              ("measured", "#08519c",
               lambda r: r.summary.open_loop.get("latency_from_arrival_mean_s"))]
    values = [[_num(get(r)) for r in runs] for _name, _c, get in series]
    finite = [v for row in values for v in row if math.isfinite(v)]
    top = max(finite or [1.0])
    width = 0.8 / len(series)
    for j, ((name, colour, _get), row) in enumerate(zip(series, values, strict=True)):
        xs = [i + (j - 1) * width for i in range(len(runs))]
        heights = [v if math.isfinite(v) else (top * 1.1 if v > 0 else 0.0) for v in row]
        ax.bar(xs, heights, width, color=colour, label=name)
        for x, v, h in zip(xs, row, heights, strict=True):
            text = f"{v:.3g}" if math.isfinite(v) else ("∞" if v > 0 else "—")
            ax.text(x, h + 0.01 * top, text, ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(runs)))
    ax.set_xticklabels([f"{r.summary.mode}\nρ = {_num(r.summary.utilisation):.2f}"
                        for r in runs], fontsize=8)
    ax.set_ylim(0, top * 1.35)
    ax.set_ylabel(f"mean latency from arrival ({plots.seconds_unit(runs)})")
    ax.set_title(f"Latency under load — {title}" if title else "Latency under load",
                 fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    plots.set_footer(fig, plots.footer_text(runs))
    return fig


def _num(x: Any) -> float:
    return math.nan if x is None else float(x)


def _html_output(markup: str) -> dict[str, Any]:
    return {"output_type": "display_data", "metadata": {},
            "data": {"text/html": markup, "text/plain": html.unescape(markup)}}


def _figure_output(fig: Any, alt: str) -> dict[str, Any]:
    """A figure as a ``display_data`` output (PNG), as ``Output.append_display_data`` adds."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    return {"output_type": "display_data", "metadata": {},
            "data": {"image/png": base64.b64encode(buf.getvalue()).decode("ascii"),
                     "text/plain": f"<Figure: {alt}>"}}


def captions(outputs: Sequence[dict[str, Any]]) -> list[str]:
    """The plain-text parts of an Output's ``outputs`` (for tests and scripts)."""
    return [o.get("data", {}).get("text/plain", "") or o.get("text", "") for o in outputs]


# ---------------------------------------------------------------------------------------------
# The SLO advisor
# ---------------------------------------------------------------------------------------------
#: Arrival rates the advisor's slider offers (requests per model second; the seed profile's
#: 10 s requests: one server × one slot finishes 0.1 req/s).
ADVISOR_RATES: tuple[float, ...] = (0.01, 0.02, 0.05, 0.08, 0.1, 0.125, 0.15, 0.2, 0.25, 0.3,
                                    0.4, 0.5, 0.6, 0.8, 1.0, 1.5, 2.0, 3.0, 5.0)
#: SLO targets the latency and TTFT sliders offer (model seconds; 0 = no bound, TTFT only).
SLO_TARGETS: tuple[float, ...] = (0.5, 1, 2, 3, 5, 8, 10, 12, 15, 20, 25, 30, 40, 50, 60, 90,
                                  120)
#: TPOT p95 targets (model seconds per output token; 0 = no bound). The seed profile decodes
#: 10 tokens/s: 0.1 s a token on a server with one slot busy.
TPOT_TARGETS: tuple[float, ...] = (0.02, 0.05, 0.1, 0.12, 0.15, 0.2, 0.3, 0.5, 1.0)
#: Slot counts offered ("slots per server up to K" considers each of these ≤ K).
ADVISOR_SLOTS: tuple[int, ...] = (1, 2, 4, 8)


def _target_label(seconds: float) -> str:
    return "off" if seconds == 0 else f"{seconds:g} s"


class SloAdvisor(_Interactive):
    """Which configuration meets a latency SLO for a traffic — predicted, then measured.

    Sliders set the traffic (Poisson arrivals at a rate, steady state) and the SLO (latency
    p95, TTFT p95, optional TPOT p95, model seconds); the choices are the server profile, the
    modes, the most servers (GPUs) and the most slots per server. Every change re-plans with
    :func:`parallel_kit.bench.capacity.plan_capacity` (the same call as ``parallel-kit capacity``,
    ≈ 1 s of theory on the kernel, so sliders update when released) and shows the smallest
    configuration meeting the SLO with its predicted latency and TTFT p95, and the next
    smaller one and why it misses — or, when nothing meets, what the command line says (the
    closest configuration and by how much; a rate no configuration can serve at all).

    **Run on simulator** measures the recommended configuration with
    :func:`parallel_kit.bench.capacity.measure_config` — embedded simulated servers, ``requests
    measured`` open-loop Poisson arrivals at the rate (seed :attr:`seed`) — in the background
    as :class:`ExperimentLab` runs (the kit's event loop in another thread; the kernel stays
    free), then shows measured beside predicted figures and the SLO verdict.

    Args:
        time_scale: clock seconds per model second of the measurement; None picks
            :func:`parallel_kit.bench.capacity.auto_time_scale` (``PARALLEL_KIT_TIME_SCALE`` when set,
            else one request alone takes 0.2 clock seconds).
        run_in_background: as :class:`ExperimentLab`'s.
        seed: seed of the arrivals, planned and measured (``capacity --seed``; default 0).

    Attributes:
        plan: the current :class:`~parallel_kit.bench.capacity.CapacityPlan` (None when the inputs
            have no plan: ``error`` says why).
        error: the one-line reason there is no plan or no recommendation, else "".
        recommendation: HTML of :meth:`recommendation_text`.
        status, result: the measurement's progress line and its table (HTML).
        measurement: the last :class:`~parallel_kit.bench.capacity.Measurement` (None before).
        measured_plan: the plan the last measurement measured the recommendation of.
        task: the background measurement (``await advisor.wait()``).
    """

    def __init__(self, *, time_scale: float | None = None, run_in_background: bool = True,
                 seed: int = 0) -> None:
        from .bench.capacity import DEFAULT_MAX_GPUS, MEASURE_N
        from .sim.profiles import list_profiles

        if time_scale is not None and not time_scale > 0:
            raise ValueError(f"time_scale must be > 0 clock s per model s, got {time_scale}")
        self.run_in_background = run_in_background
        self.seed = seed
        style = {"description_width": "190px"}
        layout = W.Layout(width="460px")

        def choice(description: str, options: list[tuple[str, Any]], value: Any) -> Any:
            return W.SelectionSlider(options=options, value=value, description=description,
                                     continuous_update=False, style=style, layout=layout)

        self.rate = choice("arrival rate (req/s)",
                           [(f"{r:g}", r) for r in ADVISOR_RATES], 0.125)
        self.latency_p95 = choice("latency p95 target",
                                  [(_target_label(s), float(s)) for s in SLO_TARGETS], 30.0)
        self.ttft_p95 = choice("TTFT p95 target", [(_target_label(s), float(s))
                                                   for s in (0, *SLO_TARGETS)], 20.0)
        self.tpot_p95 = choice("TPOT p95 target", [(_target_label(s), float(s))
                                                   for s in (0, *TPOT_TARGETS)], 0.0)
        self.max_gpus = W.IntSlider(DEFAULT_MAX_GPUS, min=1, max=8, description="max GPUs",
                                    continuous_update=False, style=style, layout=layout)
        self.max_slots = choice("slots per server up to",
                                [(str(k), k) for k in ADVISOR_SLOTS], 4)
        self.profile = W.Dropdown(options=list_profiles(), value=LAB_PROFILE,
                                  description="server profile", style=style, layout=layout)
        # Modes that need an optional extra (Ray, Ray Serve) are left out: measuring them needs
        # a cluster; `parallel-kit capacity --modes` plans for them.
        self.modes = W.SelectMultiple(
            options=[m for m in mode_names() if not get_info(m).needs], value=("pool",),
            rows=4, description="modes", style=style, layout=layout)
        self.requests = W.IntSlider(MEASURE_N, min=10, max=400, step=10,
                                    description="requests measured", continuous_update=False,
                                    style=style, layout=layout)
        scales = sorted({*TIME_SCALES, *([float(time_scale)] if time_scale else [])})
        self.time_scale = choice("measure at time scale",
                                 [("auto", 0.0), *((_time_scale_label(s), s) for s in scales)],
                                 float(time_scale or 0.0))
        self.recommendation = W.HTML("")
        self.run_button = W.Button(description="Run on simulator", button_style="primary",
                                   icon="play")
        self.status = W.HTML("")
        self.result = W.HTML("")
        self.plan: Any = None
        self.error = ""
        self.measurement: Any = None
        self.measured_plan: Any = None
        self._wire()

    # -- what the reader sees -------------------------------------------------------------
    def controls(self) -> list[W.ValueWidget]:
        """Every control the plan or the measurement uses."""
        return [self.rate, self.latency_p95, self.ttft_p95, self.tpot_p95, self.profile,
                self.modes, self.max_gpus, self.max_slots, self.requests, self.time_scale]

    @property
    def widget(self) -> W.Widget:
        return W.VBox([W.HTML("<b>SLO advisor</b> — the smallest configuration meeting a "
                              "latency SLO (parallel-kit capacity)"),
                       self.rate, self.latency_p95, self.ttft_p95, self.tpot_p95,
                       self.profile, self.modes, self.max_gpus, self.max_slots,
                       self.recommendation, self.requests, self.time_scale,
                       self.run_button, self.status, self.result])

    def inputs(self) -> dict[str, Any]:
        """What the controls ask for, as :func:`parallel_kit.bench.capacity.plan_capacity`'s
        arguments: ``traffic``, ``slo``, ``profile``, ``modes``, ``max_gpus``, ``slots``.

        Raises:
            ConfigError: no mode selected (the fix is named).
        """
        from .bench.capacity import PercentileSlo, Traffic
        from .errors import ConfigError

        if not self.modes.value:
            raise ConfigError("no mode selected — select at least one mode (e.g. pool)")
        bounds = [(k, float(w.value)) for k, w in (("latency_p95", self.latency_p95),
                                                   ("ttft_p95", self.ttft_p95),
                                                   ("tpot_p95", self.tpot_p95)) if w.value]
        return {"traffic": Traffic(rate=float(self.rate.value), seed=self.seed),
                "slo": PercentileSlo(tuple(bounds)), "profile": self.profile.value,
                "modes": list(self.modes.value), "max_gpus": int(self.max_gpus.value),
                "slots": [k for k in ADVISOR_SLOTS if k <= self.max_slots.value]}

    def recommendation_text(self) -> str:
        """The advice as plain text, one line each: the recommended configuration and its
        predicted figures; the next smaller one and why it misses. Without a recommendation,
        the reason (``capacity``'s message: the closest configuration and by how much)."""
        plan = self.plan
        if plan is None or plan.best is None:
            return self.error
        best = plan.best
        keys = list(dict.fromkeys(["latency_p95", "ttft_p95", *plan.slo.keys]))
        lines = [f"recommended: {best.label} — predicted "
                 + ", ".join(f"{k} {best.figures[k]:.3g} s" for k in keys)
                 + f" (SLO {plan.slo}, {plan.traffic.describe()})"]
        others = [c.mode for c in plan.recommended[1:]]
        if others:
            lines.append(f"also meets at this size: {', '.join(others)}")
        if plan.next_smaller is not None:
            lines.append(f"next smaller: {plan.next_smaller.label} misses: "
                         f"{plan.next_smaller.why()}")
        else:
            lines.append("next smaller: none (this is the smallest configuration offered)")
        return "\n".join(lines)

    def _compute(self) -> tuple[Any, str]:
        """The plan for the controls' values and the reason there is none (``(None, why)``)."""
        from .bench.capacity import plan_capacity
        from .errors import ConfigError

        try:
            plan = plan_capacity(**self.inputs())
            plan.check()
        except ConfigError as exc:
            return None, str(exc)
        return plan, ""

    def _show(self, computed: tuple[Any, str]) -> None:
        self.plan, self.error = computed
        text = self.recommendation_text()
        markup = "<br>".join(html.escape(line) for line in text.splitlines())
        self.recommendation.value = (markup if self.plan is not None and self.plan.best
                                     else f"<b>no recommendation:</b> {markup}")
        self.run_button.disabled = self._running or self.plan is None or self.plan.best is None
        if not self._running:
            self.status.value = ("press Run on simulator to measure the recommendation"
                                 if not self.run_button.disabled else "nothing to measure")

    # -- measuring --------------------------------------------------------------------------
    def _on_click(self, _button: Any = None) -> None:
        with self._guard:
            if self._running:
                self.status.value = "already measuring — wait for it to finish"
                return
            plan = self.plan
            if plan is None or plan.best is None:
                self.status.value = f"<b>nothing to measure:</b> {html.escape(self.error)}"
                return
            self.run_button.disabled = True
            self._running = True
            self.status.value = "starting…"
        time_scale = float(self.time_scale.value) or None
        self._start(self.measure(plan, requests=int(self.requests.value),
                                 time_scale=time_scale))

    async def wait(self) -> Any:
        """Wait for the background measurement (if any) and return the last
        :class:`~parallel_kit.bench.capacity.Measurement`; re-send the widgets' state (as
        :meth:`ExperimentLab.wait`, for headless runners)."""
        result = await self.task if self.task is not None else self.measurement
        for w in (*self.controls(), self.recommendation, self.run_button, self.status,
                  self.result):
            w.send_state()
        return result

    async def measure(self, plan: Any, *, requests: int, time_scale: float | None = None
                      ) -> Any:
        """Measure ``plan``'s recommended configuration on embedded simulated servers:
        ``requests`` arrivals of the plan's traffic (same process, rate and seed), judged
        against its SLO; the table goes to ``result``.

        Returns the :class:`~parallel_kit.bench.capacity.Measurement`, or None when the run failed
        (``status`` says why).
        """
        from dataclasses import replace

        from .bench.capacity import measure_config

        self._running = True
        self.run_button.disabled = True
        best = plan.best
        traffic = replace(plan.traffic, n=requests)
        self.status.value = html.escape(
            f"measuring {best.label}: {requests} requests, {traffic.describe()}…")
        try:
            m = await measure_config(best.mode, best.servers, best.slots, traffic, plan.slo,
                                     profile=plan.server_profile, model=plan.model,
                                     time_scale=time_scale)
        except Exception as exc:  # shown in the advisor; the kernel stays usable
            self.status.value = (f"<b>measurement failed:</b> "
                                 f"{html.escape(f'{type(exc).__name__}: {exc}')}")
            return None
        finally:
            with self._guard:
                self._running = False
                self.run_button.disabled = self.plan is None or self.plan.best is None
        self.measurement, self.measured_plan = m, plan
        self.status.value = html.escape(self.verdict_text(m))
        self.result.value = self._table(plan, m)
        return m

    @staticmethod
    def verdict_text(m: Any) -> str:
        """The measured verdict, e.g. ``measured 2 servers × 1 slot (pool): meets the SLO —
        100 of 100 requests ok on 2 simulated servers, time scale 0.02``."""
        s = m.run.summary
        servers = len({r.worker for r in m.run.requests if r.worker})
        verdict = ("meets the SLO" if m.meets else "misses the SLO: "
                   + "; ".join(x.describe() for x in m.misses)
                   + (f"; {m.failed} request(s) failed" if m.failed else ""))
        return (f"measured {m.label}: {verdict} — {s.ok} of {s.n} requests ok on {servers} "
                f"simulated server{'s' if servers != 1 else ''}, time scale "
                f"{s.time_scale:.3g}")

    @staticmethod
    def _table(plan: Any, m: Any) -> str:
        keys = list(dict.fromkeys(["latency_p95", "ttft_p95", *plan.slo.keys]))
        bounds = dict(plan.slo.bounds)
        best = plan.best
        pad = "style='padding: 2px 12px; text-align: right'"
        rows = []
        for k in keys:
            bound = bounds.get(k)
            ok = "—" if bound is None else ("✓" if m.figures[k] <= bound else "✗")
            cells = [k, "—" if bound is None else f"{bound:g}",
                     f"{best.figures[k]:.3g}", f"{m.predicted[k]:.3g}", f"{m.figures[k]:.3g}",
                     ok]
            rows.append("<tr>" + "".join(f"<td {pad}>{html.escape(c)}</td>" for c in cells)
                        + "</tr>")
        head = "<tr>" + "".join(f"<th {pad}>{h}</th>" for h in (
            "figure (model s)", "SLO", "predicted (steady state)", "predicted (these arrivals)",
            "measured", "meets")) + "</tr>"
        return ("<table class='slo-advisor-result' style='border-collapse: collapse'>" + head
                + "".join(rows) + "</table>")


def slo_advisor(**kwargs: Any) -> SloAdvisor:
    """A :class:`SloAdvisor` (keyword arguments as its constructor's)."""
    return SloAdvisor(**kwargs)
