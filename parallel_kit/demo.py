"""``parallel-kit demo``: the original analysis, measured.

Five requests of ten seconds each (simulator profile ``seed``, or a real Ollama), run in every
mode: sequential, async and batch against one server (≈ 50 s: the API stops blocking, the
server does not get faster), pool and ray over three servers, one per GPU (⌈5/3⌉ = 2 rounds,
20 s, 2.5×). Prints predicted vs measured and writes ``results.json``, ``requests.csv`` and
PNG plots to ``--out``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .bench import Comparison, compare, engine_options_from_args, run_interruptibly
from .config import time_scale_from_env
from .modes.base import MODE_NAMES
from .records import write_csv, write_json

__all__ = ["run_demo", "run_demo_command", "write_demo_outputs"]

DEMO_REQUESTS = 5


async def run_demo(*, into: Comparison | None = None, time_scale: float | None = None, hosts: list[str] | None = None,
                   model: str | None = None, modes: str | None = None, gpus: int = 3,
                   ray_address: str | None = None, engine: str = "sim",
                   engine_options: dict | None = None, progress: bool = False,
                   announce=None) -> Comparison:
    """Run the demo scenario and return the comparison (nothing written)."""
    return await compare(modes or ",".join(MODE_NAMES), "original", n=DEMO_REQUESTS,
                         hosts=hosts, gpus=gpus, model=model, time_scale=time_scale,
                         profile="seed", ray_address=ray_address, engine=engine,
                         engine_options=engine_options, progress=progress, announce=announce,
                         into=into)


def write_demo_outputs(comparison: Comparison, out: str | os.PathLike[str],
                       plots: bool = True) -> list[Path]:
    """``results.json``, ``requests.csv`` and (optionally) the PNG plots in ``out``."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    written = [write_json(folder / "results.json", comparison.runs),
               write_csv(folder / "requests.csv", comparison.runs)]
    if plots:
        from . import plots as P

        runs = comparison.runs
        written.append(P.save(P.timeline(runs), folder / "timeline.png"))
        written.append(P.save(P.predicted_vs_measured(runs), folder / "predicted_vs_measured.png"))
        seq = next((r for r in runs if r.summary.mode == "sequential"), None)
        # The per-request time the scenario is built on (predicted), not a measured average.
        span = seq.summary.predicted_makespan_s if seq else None
        t = span / max(seq.summary.n, 1) if seq and span else 10.0
        n = runs[0].summary.n if runs else DEMO_REQUESTS
        written.append(P.save(P.speedup_vs_gpus(n, t, range(1, 9), measured=runs),
                              folder / "speedup_vs_gpus.png"))
    return written


def run_demo_command(args: argparse.Namespace) -> int:
    scale = args.time_scale if args.time_scale is not None else (
        None if args.host else time_scale_from_env(1.0))
    comparison = Comparison()
    interrupted = run_interruptibly(run_demo(
        into=comparison, time_scale=scale, hosts=args.host, model=args.model, modes=args.modes, gpus=args.gpus,
        ray_address=args.ray_address or os.environ.get("RAY_ADDRESS"), engine=args.engine,
        engine_options=engine_options_from_args(args), progress=sys.stderr.isatty(),
        announce=lambda m: print(m, file=sys.stderr)))
    print(comparison.table())
    for p in write_demo_outputs(comparison, args.out, plots=not args.no_plots):
        print(f"wrote {p}")
    if interrupted:
        print("interrupted: the files hold what finished (unfinished = failed rows)",
              file=sys.stderr)
        return 130
    return 0
