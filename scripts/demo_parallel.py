#!/usr/bin/env python
"""The original demo_parallel.py, measured: sequential vs async vs batch through the HTTP API.

Sends the same prompts to the kit's API three ways and prints a comparison table:

* sequential — ``POST /inference`` one after another (each call waits for its answer);
* async      — one ``POST /inference/async`` per prompt, then polling ``GET /tasks/{id}``;
* batch      — one ``POST /inference/batch``, then polling.

Without ``--api`` it starts the API itself in front of ``OLLAMA_HOST`` or, when no Ollama
answers, an embedded simulated Ollama (seed profile: every request 10 s, one slot). Against one
single-slot Ollama the original analysis holds: async and batch accept everything in
milliseconds, and all three take ≈ 50 s — queueing does not make the server faster.

    python scripts/demo_parallel.py                      # embedded, time scale 0.02 (≈ 3 s)
    python scripts/demo_parallel.py --api http://127.0.0.1:8000
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from parallel_kit.api import ApiSettings, create_app, open_api_backend, serve_api
from parallel_kit.clients.api import ApiClient, ApiRun, format_api_table
from parallel_kit.errors import ParallelKitError
from parallel_kit.workload.prompts import make_specs, original_prompts

MODES = ("sequential", "async", "batch")


async def compare_through_api(url: str, prompts: list[str]) -> list[ApiRun]:
    """Run every mode on ``prompts`` through the API at ``url``, one mode after another."""
    async with ApiClient(url) as client:
        # Warm-up: the first request may load the model (seconds on a real Ollama); that is
        # set-up, not part of any mode's makespan. One token is enough.
        await client.infer(prompts[0], options={"num_predict": 1})
        return [await client.run_mode(mode, prompts) for mode in MODES]  # type: ignore[arg-type]


async def main_async(args: argparse.Namespace) -> int:
    prompts = [s.prompt for s in make_specs(args.n, original_prompts())]
    if args.api:
        runs = await compare_through_api(args.api, prompts)
        print(format_api_table(runs))
        return 0
    settings = ApiSettings(concurrency=args.concurrency) if args.concurrency else ApiSettings()
    async with open_api_backend(time_scale=args.time_scale, model=args.model,
                                concurrency=settings.concurrency,
                                announce=lambda m: print(m, file=sys.stderr)) as backend, \
            serve_api(create_app(backend, settings)) as url:
        print(f"API at {url}, {settings.concurrency} request(s) to Ollama at once",
              file=sys.stderr)
        runs = await compare_through_api(url, prompts)
    print(format_api_table(runs, time_scale=backend.clock.time_scale))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api", default=None, metavar="URL",
                        help="an API already running (parallel-kit serve); default: start one")
    parser.add_argument("--n", type=int, default=5, help="number of prompts (default 5)")
    parser.add_argument("--time-scale", type=float, default=0.02, metavar="F",
                        help="time scale of the embedded simulator (default 0.02)")
    parser.add_argument("--model", default=None, help="model name (default llama3.2:3b)")
    parser.add_argument("--concurrency", type=int, default=None, metavar="C",
                        help="MAX_CONCURRENT_REQUESTS of the embedded API (default 5)")
    args = parser.parse_args(argv)
    try:
        return asyncio.run(main_async(args))
    except ParallelKitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
