"""Client overhead: how fast can each client drive a server that costs nothing?

2,000 requests (``num_predict`` 1) at concurrency 32 against a zero-latency simulated Ollama
**in its own process**, three clients in the same run, interleaved, several repetitions:

* ``kit``      — the kit's async mode (``run_async``: task queue + ``OllamaClient``, streaming);
* ``httpx``    — a bare ``httpx.AsyncClient`` loop: ``gather`` + a semaphore, default limits;
* ``httpx_keepalive32`` — the same loop with ``Limits(max_keepalive_connections=32)`` (a
  diagnostic: it shows how much of the bare loop's cost is connection churn);
* ``ollama``   — the official ``ollama.AsyncClient`` with ``gather`` + a semaphore.

The figure of merit is the ratio of medians (kit ÷ the faster of httpx and ollama; target ≥ 1).

Then **CPU per request at concurrency 64**: the simulator's process pinned to one core, this
process (the client) to another, and the client's own CPU time (``time.process_time``) divided
by the requests, for answers of 1 and of 16 streamed tokens:

* ``kit``     — ``run_async`` at concurrency 64 (task queue + ``OllamaClient``'s hot path);
* ``aiohttp`` — a bare ``aiohttp.ClientSession`` loop reading the NDJSON stream line by line, the
  HTTP stack of servebench (the lightest peer measured: 0.41 ms per request in one side-by-side
  sitting); ``benchmarks/peers.py`` measures servebench itself;
* ``httpx``   — a bare ``httpx.AsyncClient`` streaming loop.

Target: the kit's CPU per request at or below aiohttp's.

Then **TTFT accuracy**: requests one at a time to an idle simulator (profile ``seed``, time
scale 0.02: the first token is scheduled 0.1 model s = 2 ms after arrival); the error is the
kit's measured TTFT minus that schedule, in clock milliseconds (target: median < 1 ms). It
includes the loopback round trip, which a real Ollama's TTFT includes too.

Usage: ``.venv/bin/python benchmarks/client_overhead.py [--quick]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ZERO_PROFILE, SimFarm, clean, interleaved, median, quantile, write_result

from parallel_kit.config import Endpoint
from parallel_kit.modes.base import ModeContext
from parallel_kit.modes.options import QueueOptions
from parallel_kit.modes.queued import run_async
from parallel_kit.records import RequestSpec
from parallel_kit.servers.launcher import stop_process

MODEL = "llama3.2:3b"
PROMPT = "Why is the sky blue?"


async def _kit(url: str, n: int, concurrency: int) -> float:
    specs = [RequestSpec(PROMPT, num_predict=1) for _ in range(n)]
    ctx = ModeContext(endpoints=[Endpoint(url, slots=64)],
                      queue=QueueOptions(concurrency=concurrency), model=MODEL)
    t0 = time.perf_counter()
    run = await run_async(specs, ctx)
    wall = time.perf_counter() - t0
    if run.summary.failed:
        raise RuntimeError(f"kit: {run.summary.failed} requests failed: "
                           f"{next(r.error for r in run.requests if not r.ok)}")
    return n / wall


async def _httpx(url: str, n: int, concurrency: int, limits: httpx.Limits | None) -> float:
    body = {"model": MODEL, "prompt": PROMPT, "stream": False, "options": {"num_predict": 1}}
    kwargs: dict[str, Any] = {"timeout": 60.0}
    if limits is not None:
        kwargs["limits"] = limits
    sem = asyncio.Semaphore(concurrency)
    t0 = time.perf_counter()
    async with httpx.AsyncClient(**kwargs) as client:
        async def one() -> None:
            async with sem:
                r = await client.post(f"{url}/api/generate", json=body)
                r.raise_for_status()
                r.json()
        await asyncio.gather(*(one() for _ in range(n)))
    return n / (time.perf_counter() - t0)


async def _ollama(url: str, n: int, concurrency: int) -> float:
    import ollama

    sem = asyncio.Semaphore(concurrency)
    t0 = time.perf_counter()
    client = ollama.AsyncClient(host=url)

    async def one() -> None:
        async with sem:
            await client.generate(model=MODEL, prompt=PROMPT, options={"num_predict": 1})
    await asyncio.gather(*(one() for _ in range(n)))
    return n / (time.perf_counter() - t0)


def throughput(url: str, n: int, concurrency: int, reps: int) -> dict[str, Any]:
    """Requests/s of every client, ``reps`` interleaved repetitions (plus one warm-up each)."""
    def variants(count: int) -> dict[str, Callable[[], float]]:
        keep32 = httpx.Limits(max_connections=100, max_keepalive_connections=32)
        return {
            "kit": lambda: asyncio.run(_kit(url, count, concurrency)),
            "httpx": lambda: asyncio.run(_httpx(url, count, concurrency, None)),
            "httpx_keepalive32": lambda: asyncio.run(_httpx(url, count, concurrency, keep32)),
            "ollama": lambda: asyncio.run(_ollama(url, count, concurrency)),
        }
    interleaved(1, variants(min(n, 200)))  # warm-up, discarded: imports, page cache
    samples = interleaved(reps, variants(n))
    med = {k: median(v) for k, v in samples.items()}
    best_other = max(med["httpx"], med["ollama"])
    return {"n": n, "concurrency": concurrency, "repetitions": reps,
            "requests_per_s_samples": samples, "requests_per_s_median": med,
            "kit_vs_best_other": med["kit"] / best_other,
            "kit_vs_httpx": med["kit"] / med["httpx"],
            "kit_vs_ollama": med["kit"] / med["ollama"],
            "target": "kit ≥ the faster of httpx and ollama (ratio ≥ 1)",
            "met": med["kit"] >= best_other}


async def _ttft(url: str, n: int, time_scale: float) -> list[float]:
    from parallel_kit.clients import OllamaClient
    from parallel_kit.sim.profiles import load_profile
    from parallel_kit.timing import ModelClock

    speed = load_profile("seed").speed(MODEL)
    scheduled_model_s = 1.0 / speed.decode_tps  # idle server, instant prompt: one decode step
    errors_ms: list[float] = []
    clock = ModelClock(time_scale).start()
    async with OllamaClient(url, max_connections=1) as client:
        for i in range(n + 3):
            row = await client.run(RequestSpec(PROMPT, num_predict=2), clock=clock, mode="ttft")
            if not row.ok:
                raise RuntimeError(f"ttft request failed: {row.error}")
            if i >= 3:  # the first ones open the connection
                errors_ms.append((row.ttft_s - scheduled_model_s) * time_scale * 1000)
            await asyncio.sleep(0.005)  # let the instance go idle again
    return errors_ms


# -- CPU per request at concurrency 64 --------------------------------------------------------
CPU_CONCURRENCY = 64


async def _cpu_kit(url: str, n: int, tokens: int) -> dict[str, Any]:
    specs = [RequestSpec(PROMPT, num_predict=tokens) for _ in range(n)]
    ctx = ModeContext(endpoints=[Endpoint(url, slots=CPU_CONCURRENCY)],
                      queue=QueueOptions(concurrency=CPU_CONCURRENCY), model=MODEL)
    run = await run_async(specs, ctx)
    if run.summary.failed:
        raise RuntimeError(f"kit: {run.summary.failed} requests failed: "
                           f"{next(r.error for r in run.requests if not r.ok)}")
    return {"achieved_concurrency": run.summary.achieved_concurrency}


async def _cpu_aiohttp(url: str, n: int, tokens: int) -> dict[str, Any]:
    import aiohttp

    body = {"model": MODEL, "prompt": PROMPT, "stream": True, "options": {"num_predict": tokens}}
    sem = asyncio.Semaphore(CPU_CONCURRENCY)
    connector = aiohttp.TCPConnector(limit=CPU_CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def one() -> None:
            async with sem, session.post(f"{url}/api/generate", json=body) as resp:
                resp.raise_for_status()
                async for line in resp.content:
                    if line.strip():
                        json.loads(line)
        await asyncio.gather(*(one() for _ in range(n)))
    return {}


async def _cpu_httpx(url: str, n: int, tokens: int) -> dict[str, Any]:
    body = {"model": MODEL, "prompt": PROMPT, "stream": True, "options": {"num_predict": tokens}}
    sem = asyncio.Semaphore(CPU_CONCURRENCY)
    limits = httpx.Limits(max_connections=CPU_CONCURRENCY,
                          max_keepalive_connections=CPU_CONCURRENCY)
    async with httpx.AsyncClient(timeout=60.0, limits=limits) as client:
        async def one() -> None:
            async with sem, client.stream("POST", f"{url}/api/generate", json=body) as resp:
                resp.raise_for_status()
                async for line in resp.aiter_lines():
                    if line.strip():
                        json.loads(line)
        await asyncio.gather(*(one() for _ in range(n)))
    return {}


_CPU_VARIANTS = {"kit": _cpu_kit, "aiohttp": _cpu_aiohttp, "httpx": _cpu_httpx}


def _cpu_once(name: str, url: str, n: int, tokens: int) -> dict[str, Any]:
    c0, t0 = time.process_time(), time.perf_counter()
    extra = asyncio.run(_CPU_VARIANTS[name](url, n, tokens))
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    return {"cpu_ms_per_request": cpu / n * 1000, "requests_per_s": n / wall, **extra}


def cpu_per_request(n: int, reps: int, token_counts: tuple[int, ...] = (1, 16)
                    ) -> dict[str, Any]:
    """CPU ms per request of each client at concurrency 64, server and client on separate
    cores (when the machine has two); medians over ``reps`` interleaved repetitions."""
    pinned = hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2
    before = os.sched_getaffinity(0) if pinned else None
    out: dict[str, Any] = {"concurrency": CPU_CONCURRENCY, "n": n, "repetitions": reps,
                           "pinned_to_separate_cores": pinned, "by_tokens": {}}
    with SimFarm(1, profile=ZERO_PROFILE, slots=CPU_CONCURRENCY) as farm:
        if pinned:
            os.sched_setaffinity(farm.pid, {0})
            os.sched_setaffinity(0, {1})
        try:
            url = farm.urls[0]
            for tokens in token_counts:
                samples: dict[str, list[dict[str, Any]]] = {k: [] for k in _CPU_VARIANTS}
                for name in _CPU_VARIANTS:  # warm-up, discarded
                    _cpu_once(name, url, min(n, 200), tokens)
                names = list(_CPU_VARIANTS)
                for r in range(reps):
                    for i in range(len(names)):
                        name = names[(r + i) % len(names)]
                        samples[name].append(_cpu_once(name, url, n, tokens))
                med = {k: median([s["cpu_ms_per_request"] for s in v])
                       for k, v in samples.items()}
                out["by_tokens"][str(tokens)] = {
                    "samples": samples, "cpu_ms_per_request_median": med,
                    "requests_per_s_median": {k: median([s["requests_per_s"] for s in v])
                                              for k, v in samples.items()},
                    "kit_achieved_concurrency_median": median(
                        [s["achieved_concurrency"] for s in samples["kit"]]),
                    "kit_vs_aiohttp_cpu": med["kit"] / med["aiohttp"],
                    "met": med["kit"] <= med["aiohttp"]}
        finally:
            if before is not None:
                os.sched_setaffinity(0, before)
    out["target"] = "kit CPU per request ≤ aiohttp's (servebench's HTTP stack), both token counts"
    out["met"] = all(v["met"] for v in out["by_tokens"].values())
    return out


def ttft_accuracy(n: int, time_scale: float = 0.02) -> dict[str, Any]:
    with SimFarm(1, profile="seed", time_scale=time_scale) as farm:
        errors = asyncio.run(_ttft(farm.urls[0], n, time_scale))
    med = median(errors)
    return {"requests": n, "time_scale": time_scale, "scheduled_first_token_model_s": 0.1,
            "error_ms_median": med, "error_ms_p90": quantile(errors, 0.9),
            "error_ms_min": min(errors), "error_ms_max": max(errors),
            "target": "median |error| < 1 ms", "met": abs(med) < 1.0}


# The simulator as shipped reads requests with uvicorn's h11 (pure Python); the same simulator
# with uvicorn's httptools parser shows what the server side of the TTFT error costs.
_SERVE_WITH_PARSER = """
import asyncio, sys, uvicorn
parser = sys.argv[1]
original = uvicorn.Config.__init__
def with_parser(self, *args, **kwargs):
    kwargs["http"] = parser
    original(self, *args, **kwargs)
uvicorn.Config.__init__ = with_parser
sys.path.insert(0, sys.argv[2])
import _common
asyncio.run(_common._serve(1, "seed", float(sys.argv[3]), None))
"""


def ttft_by_sim_parser(n: int, reps: int = 2, time_scale: float = 0.02) -> dict[str, Any]:
    """TTFT error with the simulator's HTTP parser forced to h11 and to httptools, interleaved."""
    import subprocess

    errors: dict[str, list[float]] = {"h11": [], "httptools": []}
    for _ in range(reps):
        for parser in errors:
            proc = subprocess.Popen(
                [sys.executable, "-c", _SERVE_WITH_PARSER, parser,
                 str(Path(__file__).resolve().parent), repr(time_scale)],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            try:
                assert proc.stdout is not None
                url = proc.stdout.readline().split()[1]
                errors[parser] += asyncio.run(_ttft(url, n, time_scale))
            finally:
                stop_process(proc, 10.0)
    return {p: {"requests": len(e), "error_ms_median": median(e),
                "error_ms_p90": quantile(e, 0.9)} for p, e in errors.items()}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests and repetitions")
    parser.add_argument("--n", type=int, default=None, help="requests per measurement")
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    parser.add_argument("--ttft-parsers", action="store_true",
                        help="only the TTFT error with the simulator on h11 vs httptools "
                             "→ results/client_overhead_ttft_parsers.json")
    args = parser.parse_args(argv)
    if args.ttft_parsers:
        by_parser = clean(ttft_by_sim_parser(20 if args.quick else 100))
        path = write_result("client_overhead_ttft_parsers" + ("_quick" if args.quick else ""),
                            {"ttft_by_sim_parser": by_parser}, args.out)
        print(", ".join(f"{p}: median {v['error_ms_median']:.3f} ms, p90 "
                        f"{v['error_ms_p90']:.3f} ms" for p, v in by_parser.items())
              + f" → {path}")
        return by_parser
    n = args.n or (500 if args.quick else 2000)
    reps = args.reps or (2 if args.quick else 4)
    with SimFarm(1, profile=ZERO_PROFILE, slots=64) as farm:
        tput = throughput(farm.urls[0], n, 32, reps)
    cpu = cpu_per_request(n, reps)
    ttft = ttft_accuracy(20 if args.quick else 100)
    result = clean({"throughput": tput, "cpu_per_request": cpu, "ttft": ttft})
    path = write_result("client_overhead" + ("_quick" if args.quick else ""), result, args.out)
    med = tput["requests_per_s_median"]
    print(f"client overhead (n={n}, concurrency 32, {reps} reps, medians, requests/s): "
          + ", ".join(f"{k} {v:,.0f}" for k, v in med.items())
          + f"; kit ÷ best other {tput['kit_vs_best_other']:.2f}")
    for tokens, v in cpu["by_tokens"].items():
        print(f"CPU per request at concurrency 64, {tokens} token(s) (ms, medians): "
              + ", ".join(f"{k} {x:.3f}" for k, x in v["cpu_ms_per_request_median"].items())
              + f"; kit achieved concurrency {v['kit_achieved_concurrency_median']:.1f}")
    print(f"TTFT error: median {ttft['error_ms_median']:.3f} ms, p90 "
          f"{ttft['error_ms_p90']:.3f} ms  → {path}")
    return result


if __name__ == "__main__":
    main()
