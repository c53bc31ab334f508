"""Client overhead: how fast can each client drive a server that costs nothing?

2,000 requests (``num_predict`` 1) at concurrency 32 against a zero-latency simulated Ollama
**in its own process**, three clients in the same run, interleaved, several repetitions:

* ``kit``      — the kit's async mode (``run_async``: task queue + ``OllamaClient``, streaming);
* ``httpx``    — a bare ``httpx.AsyncClient`` loop: ``gather`` + a semaphore, default limits;
* ``httpx_keepalive32`` — the same loop with ``Limits(max_keepalive_connections=32)`` (a
  diagnostic: it shows how much of the bare loop's cost is connection churn);
* ``ollama``   — the official ``ollama.AsyncClient`` with ``gather`` + a semaphore.

The figure of merit is the ratio of medians (kit ÷ the faster of httpx and ollama; target ≥ 1).

Then **TTFT accuracy**: requests one at a time to an idle simulator (profile ``seed``, time
scale 0.02: the first token is scheduled 0.1 model s = 2 ms after arrival); the error is the
kit's measured TTFT minus that schedule, in clock milliseconds (target: median < 1 ms). It
includes the loopback round trip, which a real Ollama's TTFT includes too.

Usage: ``.venv/bin/python benchmarks/client_overhead.py [--quick]``
"""

from __future__ import annotations

import argparse
import asyncio
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


def ttft_accuracy(n: int, time_scale: float = 0.02) -> dict[str, Any]:
    with SimFarm(1, profile="seed", time_scale=time_scale) as farm:
        errors = asyncio.run(_ttft(farm.urls[0], n, time_scale))
    med = median(errors)
    return {"requests": n, "time_scale": time_scale, "scheduled_first_token_model_s": 0.1,
            "error_ms_median": med, "error_ms_p90": quantile(errors, 0.9),
            "error_ms_min": min(errors), "error_ms_max": max(errors),
            "target": "median |error| < 1 ms", "met": abs(med) < 1.0}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests and repetitions")
    parser.add_argument("--n", type=int, default=None, help="requests per measurement")
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    args = parser.parse_args(argv)
    n = args.n or (500 if args.quick else 2000)
    reps = args.reps or (2 if args.quick else 4)
    with SimFarm(1, profile=ZERO_PROFILE, slots=64) as farm:
        tput = throughput(farm.urls[0], n, 32, reps)
    ttft = ttft_accuracy(20 if args.quick else 100)
    result = clean({"throughput": tput, "ttft": ttft})
    path = write_result("client_overhead" + ("_quick" if args.quick else ""), result, args.out)
    med = tput["requests_per_s_median"]
    print(f"client overhead (n={n}, concurrency 32, {reps} reps, medians, requests/s): "
          + ", ".join(f"{k} {v:,.0f}" for k, v in med.items())
          + f"; kit ÷ best other {tput['kit_vs_best_other']:.2f}")
    print(f"TTFT error: median {ttft['error_ms_median']:.3f} ms, p90 "
          f"{ttft['error_ms_p90']:.3f} ms  → {path}")
    return result


if __name__ == "__main__":
    main()
