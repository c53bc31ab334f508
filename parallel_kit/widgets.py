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
10 s = 100 tokens); with a real Ollama the length depends on the model.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import ipywidgets as W

from .bench import Comparison, compare
from .modes.base import MODE_NAMES
from .records import RequestResult

__all__ = ["ExperimentLab"]

#: Tokens per model second of the ``seed`` profile (every default request: 100 tokens, 10 s).
SEED_TOKENS_PER_S = 10


class ExperimentLab:
    """Interactive experiment: choose the workload and resources, run modes, see the result.

    Args:
        time_scale: clock seconds per model second for the embedded simulators.
        hosts: Ollama URLs to use instead of simulators (one per GPU).
        run_in_background: True (the default) schedules runs on the running loop; False runs
            them to completion inside ``click()`` (for tests and plain scripts).
    """

    def __init__(self, *, time_scale: float = 0.05, hosts: list[str] | None = None,
                 run_in_background: bool = True) -> None:
        self.hosts = hosts
        self.run_in_background = run_in_background
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
        self.mode_boxes = {m: W.Checkbox(value=m != "ray", description=m, indent=False,
                                         layout=W.Layout(width="110px")) for m in MODE_NAMES}
        self.run_button = W.Button(description="Run", button_style="primary", icon="play")
        self.progress = W.IntProgress(value=0, min=0, max=1, description="0 / 0")
        self.status = W.HTML("")
        self.output = W.Output()
        self.comparison: Comparison | None = None
        self.task: asyncio.Task[Any] | None = None
        self.run_button.on_click(self._on_click)
        for w in (self.requests, self.gpus, self.slots, self.seconds):
            w.observe(self._show_prediction, names="value")
        self._show_prediction()

    # -- what the reader sees -------------------------------------------------------------
    @property
    def widget(self) -> W.Widget:
        modes = W.HBox(list(self.mode_boxes.values()))
        return W.VBox([self.requests, self.gpus, self.slots, self.seconds, self.time_scale,
                       modes, W.HBox([self.run_button, self.progress]), self.status,
                       self.output])

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

    def _show_prediction(self, _change: Any = None) -> None:
        import math

        n, w, t = self.requests.value, self.gpus.value, self.seconds.value
        rounds = math.ceil(n / w)
        self.status.value = (f"one server: {n} × {t:g} s = <b>{n * t:g} s</b>; "
                             f"{w} GPUs: ⌈{n}/{w}⌉ = {rounds} rounds = <b>{rounds * t:g} s</b> "
                             f"({n * t / (rounds * t):.2f}×) with one slot each")

    # -- running ------------------------------------------------------------------------------
    def _on_click(self, _button: Any = None) -> None:
        if self.task is not None and not self.task.done():
            self.status.value = "already running — wait for it to finish"
            return
        settings = self.settings()
        if not settings["modes"]:
            self.status.value = "<b>choose at least one mode</b>"
            return
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

        try:
            self.comparison = await compare(
                modes, n=n, gpus=gpus, slots=slots, num_predict=num_predict,
                time_scale=time_scale, hosts=self.hosts, profile="seed", on_result=finished)
        except Exception as exc:  # shown in the lab; the kernel stays usable
            self.progress.bar_style = "danger"
            self.status.value = f"<b>failed:</b> {type(exc).__name__}: {exc}"
            return None
        finally:
            self.run_button.disabled = False
        self.progress.bar_style = "success"
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
