"""``parallel-kit`` (also ``python -m parallel_kit``): demo | bench | sim | serve | probe.

This module only parses arguments; each command's work lives in its own module. An expected
error (:class:`~parallel_kit.errors.ParallelKitError`) prints one line, ``error: …``, and exits 2;
Ctrl-C exits 130 after the command has written what it finished.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from .errors import ParallelKitError

__all__ = ["build_parser", "main"]

#: command → "module:function" taking the parsed Namespace and returning an exit code.
_HANDLERS = {
    "demo": "parallel_kit.demo:run_demo_command",
    "bench": "parallel_kit.bench:run_bench_command",
    "sim": "parallel_kit.sim.server:run_sim_command",
    "serve": "parallel_kit.api:run_serve_command",
    "probe": "parallel_kit.probe:run_probe_command",
}


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} must be between 0 and 1")
    return value


def _add_time_scale(p: argparse.ArgumentParser, help_extra: str = "") -> None:
    p.add_argument(
        "--time-scale", type=_positive_float, default=None, metavar="F",
        help="clock seconds per model second of the simulator (0.02 turns 10 s into 0.2 s); "
             "default PARALLEL_KIT_TIME_SCALE or 1" + help_extra,
    )


def _add_engine(p: argparse.ArgumentParser) -> None:
    from .sim.registry import engine_info, engine_names

    p.add_argument("--engine", choices=engine_names(), default="sim",
                   help="what produces the tokens of an embedded server: " + "; ".join(
                       f"{n} = {engine_info(n).description}" for n in engine_names()))
    p.add_argument("--gguf", default=None, metavar="PATH",
                   help="GGUF model file for --engine llama-cpp (default: the Gemma 3 270M "
                        "package when installed)")
    p.add_argument("--threads-per-slot", type=_positive_int, default=None, metavar="T",
                   help="CPU threads per slot for --engine llama-cpp")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="parallel-kit",
        description="Where does parallelism in LLM serving come from, and how much do you get? "
                    "Run the same prompts through sequential, async, batch, pool and Ray modes "
                    "against Ollama (real or simulated) and compare with theory.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    # demo ---------------------------------------------------------------------------------
    p = sub.add_parser("demo", help="the 50 s vs 20 s scenario in every mode, with plots",
                       description="Run 5 requests of 10 s each in every mode (sequential, "
                                   "async, batch on one server; pool and ray on 3 GPUs), print "
                                   "predicted vs measured, write results.json, requests.csv "
                                   "and PNG plots.")
    _add_time_scale(p)
    p.add_argument("--out", default="results", metavar="DIR", help="output folder (results/)")
    p.add_argument("--host", action="append", default=None, metavar="URL",
                   help="an Ollama server; give it 3 times for one per GPU (default: "
                        "OLLAMA_HOST, or embedded simulators)")
    p.add_argument("--model", default=None, help="model name (default llama3.2:3b)")
    p.add_argument("--modes", default=None, metavar="M[,M…]",
                   help="modes to run (default: all five)")
    p.add_argument("--gpus", type=_positive_int, default=3, metavar="W",
                   help="GPUs (servers) for pool and ray (default 3)")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="an existing Ray cluster (default RAY_ADDRESS, else a local one)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    _add_engine(p)

    # bench --------------------------------------------------------------------------------
    p = sub.add_parser("bench", help="run chosen modes on chosen prompts and servers")
    p.add_argument("--mode", required=True, metavar="M[,M…]",
                   help="sequential, async, batch, pool, ray (comma-separated)")
    p.add_argument("--host", action="append", default=None, metavar="URL",
                   help="an Ollama server; several = one Ollama per GPU")
    p.add_argument("--gpus", type=_positive_int, default=None, metavar="W",
                   help="GPUs (servers) for pool/ray when the kit starts them (default: number "
                        "of --host, else 3)")
    p.add_argument("--slots", type=_positive_int, default=None, metavar="K",
                   help="slots per server (OLLAMA_NUM_PARALLEL of the servers; default 1)")
    p.add_argument("--concurrency", type=_positive_int, default=None, metavar="C",
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
    _add_time_scale(p, "; with --host it tells the scale of a simulator the kit did not start")
    p.add_argument("--json", default=None, metavar="FILE", help="write the runs as JSON")
    p.add_argument("--csv", default=None, metavar="FILE", help="write one row per request")
    p.add_argument("--plot", default=None, metavar="FILE", help="write a timeline PNG")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="an existing Ray cluster (default RAY_ADDRESS, else a local one)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_engine(p)

    # sim ----------------------------------------------------------------------------------
    p = sub.add_parser("sim", help="a simulated Ollama in the foreground")
    p.add_argument("--bind", default=None, metavar="ADDR",
                   help="address to listen on (default 127.0.0.1, or OLLAMA_HOST's)")
    p.add_argument("--port", type=int, default=None,
                   help="port (default 11434, or OLLAMA_HOST's; 0 = any free port)")
    p.add_argument("--profile", default="seed", metavar="NAME",
                   help="latency profile (seed = every request 10 s, 1 slot)")
    p.add_argument("--num-parallel", type=_positive_int, default=None, metavar="K",
                   help="slots per model (default OLLAMA_NUM_PARALLEL or 1)")
    p.add_argument("--max-queue", type=_non_negative_int, default=None, metavar="Q",
                   help="requests that may wait for a loading model before 503 (default "
                        "OLLAMA_MAX_QUEUE or 512)")
    _add_time_scale(p)
    p.add_argument("--models", default=None, metavar="A,B",
                   help="models the server has (default: the profile's)")
    p.add_argument("--keep-alive", default=None, metavar="DUR",
                   help="how long a model stays loaded after use: 5m, 24h, 3600 (seconds), "
                        "-1 (forever) or 0 (default OLLAMA_KEEP_ALIVE or 5m)")
    p.add_argument("--max-loaded-models", type=_non_negative_int, default=None, metavar="N",
                   help="models loaded at once (default OLLAMA_MAX_LOADED_MODELS, else 3 per "
                        "GPU of the profile)")
    p.add_argument("--context-length", type=_non_negative_int, default=None, metavar="T",
                   help="default num_ctx (default OLLAMA_CONTEXT_LENGTH, else by the "
                        "profile's GPU memory: 4096 without one)")
    p.add_argument("--fail-fraction", type=_fraction, default=0.0, metavar="P",
                   help="fail this fraction of requests (fault lesson)")
    p.add_argument("--jitter", type=_fraction, default=0.0, metavar="J",
                   help="random speed variation, as a fraction (fault lesson)")
    p.add_argument("--stop-after", type=_positive_int, default=None, metavar="N",
                   help="stop answering after N requests (fault lesson)")
    _add_engine(p)

    # serve --------------------------------------------------------------------------------
    p = sub.add_parser("serve", help="the original demo's HTTP API (/inference, /tasks/{id})")
    p.add_argument("--bind", default="127.0.0.1", metavar="ADDR",
                   help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--host", action="append", default=None, metavar="URL",
                   help="the Ollama server(s) behind the API (default OLLAMA_HOST or embedded)")
    p.add_argument("--model", default=None, help="default model (llama3.2:3b)")
    p.add_argument("--mode", choices=["async", "pool", "ray"], default="async",
                   help="one server with a queue (async), several servers (pool), or Ray")
    p.add_argument("--concurrency", type=_positive_int, default=None, metavar="C",
                   help="requests sent to Ollama at once (default MAX_CONCURRENT_REQUESTS=5)")
    p.add_argument("--gpus", type=_positive_int, default=None, metavar="W",
                   help="embedded servers to start for pool/ray when no --host is given")
    p.add_argument("--profile", default=None, metavar="NAME",
                   help="simulator profile for embedded servers")
    _add_time_scale(p)
    p.add_argument("--ray-address", default=None, metavar="ADDR")

    # probe --------------------------------------------------------------------------------
    p = sub.add_parser("probe", help="measure a server: tokens/s, load time, real slots")
    p.add_argument("--host", action="append", default=None, metavar="URL",
                   help="the Ollama server (default OLLAMA_HOST, or an embedded simulator)")
    p.add_argument("--model", default=None, help="model name (default llama3.2:3b)")
    p.add_argument("--max-k", type=_positive_int, default=4, metavar="K",
                   help="try up to K overlapping requests (default 4)")
    p.add_argument("--num-predict", type=_positive_int, default=None, metavar="T",
                   help="tokens per probe request")
    _add_time_scale(p)
    p.add_argument("--json", default=None, metavar="FILE", help="write the measurements")
    p.add_argument("--save-profile", default=None, metavar="NAME",
                   help="write a simulator profile calibrated from the measurements")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``parallel-kit``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    module_name, func_name = _HANDLERS[args.command].split(":")
    try:
        handler = getattr(importlib.import_module(module_name), func_name)
        return int(handler(args) or 0)
    except ParallelKitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
