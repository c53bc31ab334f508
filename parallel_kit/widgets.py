"""The widget lab: sliders and a Run button for experiments in a notebook.

>>> from parallel_kit.widgets import ExperimentLab
>>> lab = ExperimentLab(time_scale=0.05)
>>> lab            # shows the controls; Run starts the experiment without blocking the kernel

Controls: requests, GPUs (servers), slots per server, seconds per request, which modes, and the
time scale. *Run* schedules the experiment as a task on the notebook's running event loop, so
the kernel stays free (other cells run, widgets respond) while a progress bar counts finished
requests. When it ends, the lab redraws the timeline and the predicted-vs-measured comparison,
and keeps the result in ``lab.comparison``.

Seconds per request are set through ``num_predict`` on the ``seed`` profile (10 tokens/s, so
10 s = 100 tokens); with a real Ollama the length depends on the model, so the prediction line
(from :mod:`parallel_kit.theory` and the seed profile's S(k)) only holds for the simulator — the
comparison after a run predicts from the measured sequential run instead.

Headless use (tests, scripts): ``ExperimentLab(run_in_background=False)`` runs inside
``run_button.click()``; or set the controls and ``await lab.run(**lab.settings())``.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import ipywidgets as W

from . import theory
from .bench import Comparison, compare
from .modes.registry import get_info, mode_names
from .records import RequestResult

__all__ = ["ExperimentLab"]

#: Tokens per model second of the ``seed`` profile (every default request: 100 tokens, 10 s).
SEED_TOKENS_PER_S = 10
#: The simulator profile the lab runs (its S(k) drives the prediction line).
LAB_PROFILE = "seed"


class ExperimentLab:
    """Interactive experiment: choose the workload and resources, run modes, see the result.

    Args:
        time_scale: clock seconds per model second for the embedded simulators.
        hosts: Ollama URLs to use instead of simulators (one per GPU).
        backend: ``auto`` | ``ollama`` | ``sim`` (default ``PARALLEL_KIT_BACKEND``, else auto:
            a real Ollama at ``OLLAMA_HOST`` when it answers, simulators otherwise).
        run_in_background: True (the default) schedules runs on the running loop; False runs
            them to completion inside ``click()`` (for tests and plain scripts).

    Attributes:
        prediction: HTML line with the theory's makespan per selected mode (model seconds).
        status: HTML line with messages (running, nothing selected, failures).
        comparison: the last run's :class:`~parallel_kit.bench.Comparison` (None before).
        task: the background run in progress (None before the first background run).
    """

    def __init__(self, *, time_scale: float = 0.05, hosts: list[str] | None = None,
                 backend: str | None = None, run_in_background: bool = True) -> None:
        from .sim.profiles import load_profile

        self.hosts = hosts
        self.backend = backend
        self.run_in_background = run_in_background
        self._profile = load_profile(LAB_PROFILE)
        style = {"description_width": "150px"}
        layout = W.Layout(width="420px")
        self.requests = W.IntSlider(5, min=1, max=40, description="requests",
                                    style=style, layout=layout)
        self.gpus = W.IntSlider(3, min=1, max=8, description="GPUs (servers)",
                                style=style, layout=layout)
        self.slots = W.IntSlider(1, min=1, max=8, description="slots per server",
                                 style=style, layout=layout)
        self.seconds = W.FloatSlider(10.0, min=1.0, max=30.0, step=1.0,
                                     description="seconds per request", style=style,
                                     layout=layout)
        self.time_scale = W.FloatLogSlider(time_scale, base=10, min=-3, max=0, step=0.1,
                                           description="time scale", style=style, layout=layout)
        # Modes that need an optional extra (Ray) are off by default: slow to bring up.
        self.mode_boxes = {m: W.Checkbox(value=not get_info(m).needs,
                                         description=m, indent=False,
                                         layout=W.Layout(width="110px")) for m in mode_names()}
        self.run_button = W.Button(description="Run", button_style="primary", icon="play")
        self.progress = W.IntProgress(value=0, min=0, max=1, description="0 / 0")
        self.prediction = W.HTML("")
        self.status = W.HTML("")
        self.output = W.Output()
        self.comparison: Comparison | None = None
        self.task: asyncio.Task[Any] | None = None
        self.run_button.on_click(self._on_click)
        for w in (self.requests, self.gpus, self.slots, self.seconds,
                  *self.mode_boxes.values()):
            w.observe(self._show_prediction, names="value")
        self._show_prediction()

    # -- what the reader sees -------------------------------------------------------------
    @property
    def widget(self) -> W.Widget:
        modes = W.HBox(list(self.mode_boxes.values()))
        return W.VBox([self.requests, self.gpus, self.slots, self.seconds, self.time_scale,
                       modes, self.prediction, W.HBox([self.run_button, self.progress]),
                       self.status, self.output])

    def _ipython_display_(self) -> None:  # pragma: no cover - notebook display hook
        from IPython.display import display

        display(self.widget)

    def selected_modes(self) -> list[str]:
        return [m for m, box in self.mode_boxes.items() if box.value]

    def settings(self) -> dict[str, Any]:
        """The experiment the controls describe (what Run will do)."""
        return {"modes": self.selected_modes(), "n": self.requests.value,
                "gpus": self.gpus.value, "slots": self.slots.value,
                "num_predict": max(1, round(self.seconds.value * SEED_TOKENS_PER_S)),
                "time_scale": self.time_scale.value}

    def predictions(self) -> dict[str, theory.Prediction]:
        """What theory expects of each selected mode for the controls' workload (model seconds).

        Equal requests of ``seconds`` each; single-server modes use one server, pool and ray
        ``GPUs`` servers; every server has ``slots`` slots sharing the seed profile's S(k).
        """
        times = [float(self.seconds.value)] * self.requests.value
        return {m: theory.predict(m, times, workers=self.gpus.value, slots=self.slots.value,
                                  speedup=self._profile)
                for m in self.selected_modes()}

    def prediction_text(self) -> str:
        """The prediction line as plain text, e.g. ``sequential 50 s · pool 20 s (2.50×)``."""
        preds = self.predictions()
        if not preds:
            return "no mode selected"
        base = sum([float(self.seconds.value)] * self.requests.value)
        parts = [f"{m} {p.makespan_s:.3g} s" + (f" ({base / p.makespan_s:.2f}×)"
                                                  if p.makespan_s > 0 and get_info(m).multi_server
                                                  else "")
                 for m, p in preds.items()]
        return "predicted: " + " · ".join(parts)

    def _show_prediction(self, _change: Any = None) -> None:
        import html

        self.prediction.value = html.escape(self.prediction_text())

    # -- running ------------------------------------------------------------------------------
    def _on_click(self, _button: Any = None) -> None:
        if self.task is not None and not self.task.done():
            self.status.value = "already running — wait for it to finish"
            return
        settings = self.settings()
        if not settings["modes"]:
            self.status.value = "<b>choose at least one mode</b>"
            return
        # Disabled at once, not when the task first runs: a second click in between is refused.
        self.run_button.disabled = True
        self.status.value = "starting…"
        coro = self.run(**settings)
        if self.run_in_background:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            if loop is not None:
                self.task = loop.create_task(coro)
                return
        from ._sync import run_sync

        run_sync(coro)

    async def run(self, *, modes: list[str], n: int, gpus: int, slots: int, num_predict: int,
                  time_scale: float) -> Comparison | None:
        """Run the experiment, update the progress bar, redraw the plots."""
        self.run_button.disabled = True
        self.progress.max = n * len(modes)
        self.progress.value = 0
        self.progress.description = f"0 / {self.progress.max}"
        self.progress.bar_style = ""

        def finished(_row: RequestResult) -> None:
            self.progress.value += 1
            self.progress.description = f"{self.progress.value} / {self.progress.max}"

        self.status.value = "running…"
        try:
            self.comparison = await compare(
                modes, n=n, gpus=gpus, slots=slots, num_predict=num_predict,
                time_scale=time_scale, hosts=self.hosts, profile=LAB_PROFILE,
                backend=self.backend, on_result=finished)
        except Exception as exc:  # shown in the lab; the kernel stays usable
            self.progress.bar_style = "danger"
            self.status.value = f"<b>failed:</b> {type(exc).__name__}: {exc}"
            return None
        finally:
            self.run_button.disabled = False
        self.progress.bar_style = "success"
        where = "simulated Ollama" if self.comparison.backend == "sim" else "real Ollama"
        self.status.value = f"done on {where} (time scale {self.comparison.time_scale:g})"
        self._redraw(self.comparison)
        return self.comparison

    def _redraw(self, comparison: Comparison) -> None:
        import matplotlib.pyplot as plt

        from . import plots

        self.output.clear_output(wait=True)
        with self.output:
            fig1 = plots.timeline(comparison.runs)
            fig2 = plots.predicted_vs_measured(comparison.runs)
            with contextlib.suppress(Exception):
                from IPython.display import display

                display(fig1)
                display(fig2)
                print(comparison.table())
            plt.close(fig1)
            plt.close(fig2)
