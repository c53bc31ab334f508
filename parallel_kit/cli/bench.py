"""``parallel-kit bench``: run chosen modes on chosen prompts and servers."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ..modes.registry import mode_names
from ._args import (
    HTML_HELP,
    PROFILE_HELP,
    add_engine,
    add_flags,
    add_stack_args,
    add_time_scale,
    engine_options,
    ranged,
    serve_options,
    stack_options,
    unique_hosts,
)
from ._load import add_arrival_flags, add_rate_flags, arrivals_from_args

__all__ = ["add_hygiene_flags", "add_parser", "hygiene_kwargs", "run"]


def add_hygiene_flags(p: argparse.ArgumentParser) -> None:
    """``--salt S | --no-salt`` and ``--workload`` (bench and sweep)."""
    from ..workload.prompts import WORKLOADS

    group = p.add_mutually_exclusive_group()
    group.add_argument("--salt", default=None, metavar="S",
                       help="salt that makes each run's prompts new to the server's prompt "
                            "cache (default: a fresh random one; give S to repeat a run)")
    group.add_argument("--no-salt", action="store_true",
                       help="send the prompts as they are: a server that saw them before "
                            "answers from its prompt cache (such runs are flagged)")
    p.add_argument("--workload", choices=WORKLOADS, default=None,
                   help="prompts that share prefixes on purpose, to show the prompt cache: "
                        "a long system prompt (shared-prefix) or growing conversations "
                        "(multi-turn, 3 of them; TTFT by turn in the summary notes)")


def hygiene_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """``salt`` and ``workload`` for :func:`~parallel_kit.bench.compare` from the flags."""
    given = getattr(args, "salt", None)
    salt: str | bool = False if getattr(args, "no_salt", False) else (
        True if given is None else given)  # an empty --salt is refused by compare
    return {"salt": salt, "workload": getattr(args, "workload", None)}


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "bench", help="run chosen modes on chosen prompts and servers")
    p.add_argument("--mode", required=True, metavar="M[,M…]",
                   help=f"{', '.join(mode_names())} (comma-separated)")
    p.add_argument("--host", action="append", default=None, metavar="URL",
                   help="a server (Ollama; with --api openai any OpenAI-compatible one); "
                        "several = one server per GPU")
    add_flags(p, {
        "--gpus": "GPUs (servers) for the multi-server modes when the kit starts them "
                  "(default: number of --host, else 3)",
        "--slots": "slots per server (OLLAMA_NUM_PARALLEL, llama-server -np). Embedded "
                   "servers: default the profile's; a real server: default what it reports "
                   "(llama-server /props), else measured by a short scan",
        "--concurrency": "workers of the async/batch queue (default MAX_CONCURRENT_REQUESTS=5)"})
    p.add_argument("--n", type=ranged("--n"), default=None, metavar="N",
                   help="number of requests, cycling over the prompts (default: one per "
                        "prompt of --prompts, else 5)")
    add_flags(p, {
        "--prompts": ".jsonl (prompt, model, num_predict, options) or .txt, or a built-in "
                     "set: original, workshop; with --n, cycled",
        "--model": "model name (default llama3.2:3b)",
        "--num-predict": "maximum output tokens per request (default: the prompt file's; on a "
                         "real engine 128 when neither says)",
        "--profile": PROFILE_HELP})
    p.add_argument("--api", choices=["generate", "chat", "openai"], default="generate",
                   help="which API to call: native generate/chat or OpenAI-compatible /v1")
    add_time_scale(p, "; with --host it tells the scale of a simulator the kit did not start")
    add_flags(p, {"--json": "write the runs as JSON", "--csv": "write one row per request",
                  "--plot": "write a timeline PNG", "--html": HTML_HELP})
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
    add_hygiene_flags(p)
    return p


def run(args: argparse.Namespace) -> int:
    """Run the modes, print the table, write what was asked.

    Exit status: 0 done (failed rows included, unless ``--fail-on-error``: then 1); 130 cut
    short by Ctrl-C, 143 by SIGTERM (both after writing what finished); 2 for an error
    (:class:`~parallel_kit.errors.ParallelKitError`), also after writing the runs that
    finished before it.
    """
    from ._signals import shutdown_path

    with shutdown_path() as stop:
        return _run(args, stop)


def _run(args: argparse.Namespace, stop: Any) -> int:
    from ..bench import Comparison, compare, write_outputs
    from ..errors import ParallelKitError
    from ..modes.options import QueueOptions, RayOptions, ServerOptions
    from ..outputs import check_writable

    # Outputs first: a bad path must not cost the run.
    check_writable([("--json", args.json), ("--csv", args.csv),
                    ("--html", getattr(args, "html", None))], figures=[("--plot", args.plot)])
    from ..metrics import Slo

    hosts = unique_hosts(args.host)
    arrivals = arrivals_from_args(args)
    slo = Slo.parse(args.slo) if args.slo else None
    servers = ServerOptions(count=args.gpus, slots=args.slots, profile=args.profile,
                            engine=args.engine, engine_options=engine_options(args))
    queue = QueueOptions(concurrency=args.concurrency) if args.concurrency else None
    comparison = Comparison()
    error: ParallelKitError | None = None
    try:
        _, interrupted = stop.run(compare(
            args.mode, args.prompts, n=args.n, hosts=hosts, model=args.model,
            num_predict=args.num_predict, time_scale=args.time_scale, api=args.api,
            servers=servers, queue=queue,
            ray=RayOptions(address=args.ray_address or os.environ.get("RAY_ADDRESS")),
            serve=serve_options(args), stack=stack_options(args),
            progress=not args.no_progress,
            announce=lambda m: print(m, file=sys.stderr), into=comparison,
            arrivals=arrivals, slo=slo, **hygiene_kwargs(args)))
    except ParallelKitError as exc:
        if len(comparison.runs) <= 1 and not any(r.summary.ok for r in comparison.runs):
            raise  # nothing had finished: the error alone says it all
        error, interrupted = exc, False
    with stop.deferred():  # a signal now must not cost the finished rows
        print(comparison.table())
        if arrivals is not None:
            from ..bench.loadgen import format_load_table

            print(format_load_table(comparison.runs))
        write_outputs(comparison, json_path=args.json, csv_path=args.csv,
                      plot_path=args.plot)
        if getattr(args, "html", None) and comparison.runs:
            import shlex

            from ..report import write_html_report

            page = write_html_report(args.html, title="parallel-kit bench", runs=comparison,
                                     command="parallel-kit " + " ".join(
                                         map(shlex.quote, sys.argv[1:])))
            print(f"wrote {page}", file=sys.stderr)
    if error is not None:
        raise error  # after the finished runs were printed and written
    if interrupted:
        print("interrupted: the table and files hold what finished (unfinished = failed rows)",
              file=sys.stderr)
        return int(stop.exit_code) or 130
    fatal = [w for r in comparison.runs for w in r.summary.lost_workers if w.get("fatal")]
    if fatal:  # the run's infrastructure itself went (the production stack's Redis)
        failed = sum(r.summary.failed for r in comparison.runs)
        print(f"error: {fatal[0]['error']} — {failed} request(s) are failed rows; the table "
              f"and files hold every row", file=sys.stderr)
        return 2
    failed = sum(r.summary.failed for r in comparison.runs)
    if failed:
        print(f"{failed} request(s) failed — see the 'error' column", file=sys.stderr)
        if args.fail_on_error:
            return 1
    return 0
