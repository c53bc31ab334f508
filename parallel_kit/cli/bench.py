"""``parallel-kit bench``: run chosen modes on chosen prompts and servers."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ..errors import ConfigError
from ..modes.registry import mode_names
from ._args import add_engine, add_time_scale, engine_options, positive_int

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "bench", help="run chosen modes on chosen prompts and servers")
    p.add_argument("--mode", required=True, metavar="M[,M…]",
                   help=f"{', '.join(mode_names())} (comma-separated)")
    p.add_argument("--host", action="append", default=None, metavar="URL",
                   help="an Ollama server; several = one Ollama per GPU")
    p.add_argument("--gpus", type=positive_int, default=None, metavar="W",
                   help="GPUs (servers) for the multi-server modes when the kit starts them "
                        "(default: number of --host, else 3)")
    p.add_argument("--slots", type=positive_int, default=None, metavar="K",
                   help="slots per server (OLLAMA_NUM_PARALLEL of the servers; default 1)")
    p.add_argument("--concurrency", type=positive_int, default=None, metavar="C",
                   help="workers of the async/batch queue (default MAX_CONCURRENT_REQUESTS=5)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--n", type=int, default=None, metavar="N",
                       help="number of requests (cycling over the prompts; default 5)")
    group.add_argument("--prompts", default=None, metavar="FILE",
                       help=".jsonl (prompt, model, num_predict, options) or .txt, or a "
                            "built-in set: original, workshop")
    p.add_argument("--model", default=None, help="model name (default llama3.2:3b)")
    p.add_argument("--num-predict", type=int, default=None, metavar="T",
                   help="maximum output tokens per request")
    p.add_argument("--profile", default=None, metavar="NAME",
                   help="simulator profile for embedded servers (default seed)")
    p.add_argument("--api", choices=["generate", "chat", "openai"], default="generate",
                   help="which API to call: native generate/chat or OpenAI-compatible /v1")
    add_time_scale(p, "; with --host it tells the scale of a simulator the kit did not start")
    p.add_argument("--json", default=None, metavar="FILE", help="write the runs as JSON")
    p.add_argument("--csv", default=None, metavar="FILE", help="write one row per request")
    p.add_argument("--plot", default=None, metavar="FILE", help="write a timeline PNG")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="an existing Ray cluster (default RAY_ADDRESS, else a local one)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_engine(p)
    return p


def run(args: argparse.Namespace) -> int:
    """Run the modes, print the table, write what was asked; 130 when cut short by Ctrl-C."""
    from ..bench import Comparison, compare, run_interruptibly, write_outputs
    from ..modes.options import QueueOptions, RayOptions, ServerOptions

    if args.n is not None and args.n < 1:
        raise ConfigError(f"--n must be a whole number of requests ≥ 1, got {args.n}")
    if args.num_predict is not None and args.num_predict < 1:
        raise ConfigError(f"--num-predict must be ≥ 1, got {args.num_predict}")
    servers = ServerOptions(count=args.gpus, slots=args.slots, profile=args.profile,
                            engine=args.engine, engine_options=engine_options(args))
    queue = QueueOptions(concurrency=args.concurrency) if args.concurrency else None
    comparison = Comparison()
    interrupted = run_interruptibly(compare(
        args.mode, args.prompts, n=args.n, hosts=args.host, model=args.model,
        num_predict=args.num_predict, time_scale=args.time_scale, api=args.api,
        servers=servers, queue=queue,
        ray=RayOptions(address=args.ray_address or os.environ.get("RAY_ADDRESS")),
        progress=not args.no_progress and sys.stderr.isatty(),
        announce=lambda m: print(m, file=sys.stderr), into=comparison))
    print(comparison.table())
    write_outputs(comparison, json_path=args.json, csv_path=args.csv, plot_path=args.plot)
    if interrupted:
        print("interrupted: the table and files hold what finished (unfinished = failed rows)",
              file=sys.stderr)
        return 130
    failed = sum(r.summary.failed for r in comparison.runs)
    if failed:
        print(f"{failed} request(s) failed — see the 'error' column", file=sys.stderr)
    return 0
