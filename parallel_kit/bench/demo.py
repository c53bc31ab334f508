"""``parallel-kit demo``: the original analysis, measured.

Five requests of ten seconds each (simulator profile ``seed``, or a real Ollama), run in every
mode: sequential, async and batch against one server (≈ 50 s: the API stops blocking, the
server does not get faster), pool and ray over three servers, one per GPU (⌈5/3⌉ = 2 rounds,
20 s, 2.5×). Prints predicted vs measured and writes ``results.json``, ``requests.csv`` and
PNG plots to ``--out``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..modes.registry import BASELINE, mode_names
from ..modes.stack_options import StackOptions
from ..records import write_csv, write_json
from . import Comparison, compare

__all__ = ["DEMO_REQUESTS", "run_demo", "write_demo_outputs"]

DEMO_REQUESTS = 5


async def run_demo(*, into: Comparison | None = None, time_scale: float | None = None,
                   hosts: list[str] | None = None, model: str | None = None,
                   modes: str | None = None, gpus: int = 3, ray_address: str | None = None,
                   engine: str = "sim", engine_options: dict[str, Any] | None = None,
                   progress: bool = False, announce: Callable[[str], None] | None = None,
                   redis: str | None = None) -> Comparison:
    """Run the demo scenario and return the comparison (nothing written).

    Every registered mode unless ``modes`` names some (a mode whose extra or service cannot be
    had — e.g. no Redis for ``production`` — is skipped with one line); five requests of the ``original``
    prompts on the ``seed`` profile (10 model seconds each); ``gpus`` servers for the
    multi-server modes.
    """
    return await compare(modes or ",".join(mode_names()), "original", n=DEMO_REQUESTS,
                         hosts=hosts, gpus=gpus, model=model, time_scale=time_scale,
                         profile="seed", ray_address=ray_address, engine=engine,
                         engine_options=engine_options, progress=progress, announce=announce,
                         into=into, skip_unavailable=True, stack=StackOptions(redis=redis))


def write_demo_outputs(comparison: Comparison, out: str | os.PathLike[str],
                       plots: bool = True) -> list[Path]:
    """``results.json``, ``requests.csv`` and (optionally) the PNG plots in ``out``."""
    from ..outputs import write_or_rescue

    folder = Path(out)
    runs = comparison.runs
    # Each file is rescued to the temporary folder if it cannot be written (and said where).
    written = [write_or_rescue(folder / "results.json", lambda p: write_json(p, runs)),
               write_or_rescue(folder / "requests.csv", lambda p: write_csv(p, runs))]
    if plots and runs:
        from .. import plots as P

        written.append(write_or_rescue(folder / "timeline.png",
                                       lambda p: P.save(P.timeline(runs), p)))
        written.append(write_or_rescue(folder / "predicted_vs_measured.png",
                                       lambda p: P.save(P.predicted_vs_measured(runs), p)))
        seq = next((r for r in runs if r.summary.mode == BASELINE), None)
        # The per-request time the scenario is built on (predicted), not a measured average.
        span = seq.summary.predicted_makespan_s if seq else None
        t = span / max(seq.summary.n, 1) if seq and span else 10.0
        n = runs[0].summary.n if runs else DEMO_REQUESTS
        written.append(write_or_rescue(
            folder / "speedup_vs_gpus.png",
            lambda p: P.save(P.speedup_vs_gpus(n, t, range(1, 9), measured=runs), p)))
    return written
