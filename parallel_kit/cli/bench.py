"""``parallel-kit bench``: run chosen modes on chosen prompts and servers."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ..modes.registry import mode_names
from ._args import (
    add_engine,
    add_stack_args,
    add_time_scale,
    engine_options,
    model_name,
    ranged,
    serve_options,
    stack_options,
)
from ._load import add_arrival_flags, add_rate_flags, arrivals_from_args

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "bench", help="run chosen modes on chosen prompts and servers")
    p.add_argument("--mode", required=True, metavar="M[,M…]",
                   help=f"{', '.join(mode_names())} (comma-separated)")
    p.add_argument("--host", action="append", default=None, metavar="URL",
                   help="an Ollama server; several = one Ollama per GPU")
    p.add_argument("--gpus", type=ranged("--gpus"), default=None, metavar="W",
                   help="GPUs (servers) for the multi-server modes when the kit starts them "
                        "(default: number of --host, else 3)")
    p.add_argument("--slots", type=ranged("--slots"), default=None, metavar="K",
                   help="slots per server (OLLAMA_NUM_PARALLEL of the servers; default 1)")
    p.add_argument("--concurrency", type=ranged("--concurrency"), default=None, metavar="C",
                   help="workers of the async/batch queue (default MAX_CONCURRENT_REQUESTS=5)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--n", type=ranged("--n"), default=None, metavar="N",
                       help="number of requests (cycling over the prompts; default 5)")
    group.add_argument("--prompts", default=None, metavar="FILE",
                       help=".jsonl (prompt, model, num_predict, options) or .txt, or a "
                            "built-in set: original, workshop")
    p.add_argument("--model", type=model_name, default=None,
                   help="model name (default llama3.2:3b)")
    p.add_argument("--num-predict", type=ranged("--num-predict"), default=None, metavar="T",
                   help="maximum output tokens per request (default: the prompt file's; on a "
                        "real engine 128 when neither says)")
    p.add_argument("--profile", default=None, metavar="NAME",
                   help="simulator profile for embedded servers (default seed)")
    p.add_argument("--api", choices=["generate", "chat", "openai"], default="generate",
                   help="which API to call: native generate/chat or OpenAI-compatible /v1")
    add_time_scale(p, "; with --host it tells the scale of a simulator the kit did not start")
    p.add_argument("--json", default=None, metavar="FILE", help="write the runs as JSON")
    p.add_argument("--csv", default=None, metavar="FILE", help="write one row per request")
    p.add_argument("--plot", default=None, metavar="FILE", help="write a timeline PNG")
    p.add_argument("--html", default=None, metavar="FILE",
                   help="write one self-contained HTML report (no network)")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="an existing Ray cluster (default RAY_ADDRESS, else a local one)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress (a bar on a terminal, else a line every few seconds)")
    p.add_argument("--fail-on-error", action="store_true",
                   help="exit 1 when any request failed (default: 0 for a run that completed, "
                        "failed rows included) — for CI"),
    add_stack_args(p)
    add_engine(p)
    add_rate_flags(p)
    add_arrival_flags(p)
    return p


def run(args: argparse.Namespace) -> int:
    """Run the modes, print the table, write what was asked.

    Exit status: 0 done (failed rows included, unless ``--fail-on-error``: then 1); 130 cut
    short by Ctrl-C, 143 by SIGTERM (both after writing what finished); 2 for an error
    (:class:`~parallel_kit.errors.ParallelKitError`), also after writing the runs that
    finished before it.
    """
    from ..bench import Comparison, compare, run_interruptibly, write_outputs
    from ..errors import ParallelKitError
    from ..modes.options import QueueOptions, RayOptions, ServerOptions
    from ..outputs import check_writable
    from ._signals import sigterm_as_interrupt

    # Outputs first: a bad path must not cost the run.
    check_writable([("--json", args.json), ("--csv", args.csv), ("--plot", args.plot),
                    ("--html", getattr(args, "html", None))])
    from ..metrics import Slo

    arrivals = arrivals_from_args(args)
    slo = Slo.parse(args.slo) if args.slo else None
    servers = ServerOptions(count=args.gpus, slots=args.slots, profile=args.profile,
                            engine=args.engine, engine_options=engine_options(args))
    queue = QueueOptions(concurrency=args.concurrency) if args.concurrency else None
    comparison = Comparison()
    error: ParallelKitError | None = None
    with sigterm_as_interrupt() as term:
        try:
            interrupted = run_interruptibly(compare(
                args.mode, args.prompts, n=args.n, hosts=args.host, model=args.model,
                num_predict=args.num_predict, time_scale=args.time_scale, api=args.api,
                servers=servers, queue=queue,
                ray=RayOptions(address=args.ray_address or os.environ.get("RAY_ADDRESS")),
                serve=serve_options(args), stack=stack_options(args),
                progress=not args.no_progress,
                announce=lambda m: print(m, file=sys.stderr), into=comparison,
                arrivals=arrivals, slo=slo))
        except ParallelKitError as exc:
            if len(comparison.runs) <= 1 and not any(r.summary.ok for r in comparison.runs):
                raise  # nothing had finished: the error alone says it all
            error, interrupted = exc, False
    print(comparison.table())
    if arrivals is not None:
        from ..loadgen import format_load_table

        print(format_load_table(comparison.runs))
    write_outputs(comparison, json_path=args.json, csv_path=args.csv, plot_path=args.plot)
    if getattr(args, "html", None) and comparison.runs:
        import shlex

        from ..report import write_html_report

        write_html_report(args.html, title="parallel-kit bench", runs=comparison,
                          command="parallel-kit " + " ".join(map(shlex.quote, sys.argv[1:])))
    if error is not None:
        raise error  # after the finished runs were printed and written
    if interrupted:
        print("interrupted: the table and files hold what finished (unfinished = failed rows)",
              file=sys.stderr)
        return 143 if term.terminated else 130
    failed = sum(r.summary.failed for r in comparison.runs)
    if failed:
        print(f"{failed} request(s) failed — see the 'error' column", file=sys.stderr)
        if args.fail_on_error:
            return 1
    return 0
