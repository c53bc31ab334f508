"""``parallel-kit demo``: the 50 s vs 20 s scenario in every mode, with plots."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ._args import add_engine, add_time_scale, engine_options, model_name, ranged, unique_hosts

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "demo", help="the 50 s vs 20 s scenario in every mode, with plots",
        description="Run 5 requests of 10 s each in every mode (the single-server ones on one "
                    "server; pool and ray on 3 GPUs), print predicted vs measured, write "
                    "results.json, requests.csv and PNG plots.")
    add_time_scale(p)
    p.add_argument("--out", default="results", metavar="DIR", help="output folder (results/)")
    p.add_argument("--host", action="append", default=None, metavar="URL",
                   help="an Ollama server; give it 3 times for one per GPU (default: "
                        "OLLAMA_HOST, or embedded simulators)")
    p.add_argument("--model", type=model_name, default=None,
                   help="model name (default llama3.2:3b)")
    p.add_argument("--modes", default=None, metavar="M[,M…]",
                   help="modes to run (default: all)")
    p.add_argument("--gpus", type=ranged("--gpus"), default=3, metavar="W",
                   help="GPUs (servers) for the multi-server modes (default 3)")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="an existing Ray cluster (default RAY_ADDRESS, else a local one)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--html", default=None, metavar="FILE",
                   help="also write one self-contained HTML report (no network)")
    p.add_argument("--redis", default=None, metavar="URL",
                   help="production: an existing Redis (default PARALLEL_KIT_REDIS_URL, else "
                        "the kit starts one for the run)")
    add_engine(p)
    return p


def run(args: argparse.Namespace) -> int:
    """Run the demo, print the table, write the files; 130 when Ctrl-C cut it short."""
    from ._signals import shutdown_path

    with shutdown_path() as stop:
        return _run(args, stop)


def _run(args: argparse.Namespace, stop: Any) -> int:
    from ..bench import Comparison
    from ..bench.demo import run_demo, write_demo_outputs
    from ..config import time_scale_from_env
    from ..errors import ParallelKitError
    from ..outputs import check_writable

    check_writable([("--html", getattr(args, "html", None))],
                   folders=[("--out", args.out)])  # before the run, not after it
    scale = args.time_scale if args.time_scale is not None else (
        None if args.host else time_scale_from_env(1.0))
    comparison = Comparison()
    error: ParallelKitError | None = None
    try:
        _, interrupted = stop.run(run_demo(
            into=comparison, time_scale=scale, hosts=unique_hosts(args.host),
            model=args.model, modes=args.modes, gpus=args.gpus,
            ray_address=args.ray_address or os.environ.get("RAY_ADDRESS"),
            engine=args.engine, engine_options=engine_options(args), progress=True,
            announce=lambda m: print(m, file=sys.stderr), redis=args.redis))
    except ParallelKitError as exc:
        if len(comparison.runs) <= 1 and not any(r.summary.ok for r in comparison.runs):
            raise
        error, interrupted = exc, False
    with stop.deferred():  # a signal now must not cost the finished rows
        print(comparison.table())
        for path in write_demo_outputs(comparison, args.out, plots=not args.no_plots):
            print(f"wrote {path}")
        if getattr(args, "html", None) and comparison.runs:
            import shlex

            from ..report import write_html_report

            command = "parallel-kit " + " ".join(map(shlex.quote, sys.argv[1:]))
            page = write_html_report(args.html, title="parallel-kit demo", runs=comparison,
                                     command=command)
            print(f"wrote {page}")
    if error is not None:
        raise error
    if interrupted:
        print("interrupted: the files hold what finished (unfinished = failed rows)",
              file=sys.stderr)
        return int(stop.exit_code) or 130
    return 0
