"""Latency under load: queueing theory's prediction against the simulator, and the load
generator's own limit.

1. **Predicted vs measured** at ρ ∈ {0.3, 0.5, 0.7, 0.9}: Poisson arrivals at rate ρ/10 on one
   single-slot simulated Ollama (profile ``seed``: 10 s a request), ``async`` mode (the server's
   own FIFO queue, as a service would have it), simulators in a process of their own. For each
   ρ: p50 and p95 of the latency from arrival, measured; the same from the discrete-event run
   of the simulator's latency model over **this run's arrivals** (``replay``: what these very
   arrivals should give — the target, within 5 % up to ρ = 0.7); and theory's steady state at
   that rate (Pollaczek–Khinchine for the mean, the discrete-event run for percentiles), which
   a finite run only approaches (the queue at ρ = 0.9 needs thousands of requests to settle).
2. **The generator's limit**: constant arrivals at rising rates (clock requests/s) against a
   zero-latency simulator with many slots (in its own process); for each rate the lag between
   each request's scheduled and real hand-over (p50/p95/max, clock ms), the median of the
   repetitions' p95. The limit is the highest rate whose median p95 lag stays under 1 ms with
   every lower rate under it too.

Results: ``benchmarks/results/queueing.json`` (``--quick``: the git-ignored
``benchmarks/results/quick/queueing_quick.json``).

Each part keeps the machine's load average at the time it ran (the generator's lag depends on
it: a 2-core machine with other work on it delays an event loop by milliseconds). ``--parts
generator`` re-runs one part and keeps the other's recorded figures from the existing file.

Usage: ``.venv/bin/python benchmarks/queueing.py [--quick] [--n N] [--time-scale F]
[--parts latency,generator]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import ZERO_PROFILE, SimFarm, clean, machine, results_dir, write_result

from parallel_kit import theory
from parallel_kit.bench.loadgen import run_open_loop
from parallel_kit.config import Endpoint
from parallel_kit.modes.base import ModeContext
from parallel_kit.modes.options import QueueOptions
from parallel_kit.sim.profiles import load_profile
from parallel_kit.workload.arrivals import make_schedule, specs_for

RHOS = (0.3, 0.5, 0.7, 0.9)
GENERATOR_RATES = (100, 200, 400, 800, 1600, 3200)


def _ctx(urls: list[str], scale: float, concurrency: int) -> ModeContext:
    return ModeContext(endpoints=[Endpoint(u) for u in urls], backend="sim", time_scale=scale,
                       queue=QueueOptions(concurrency=concurrency))


async def _latency_at(rho: float, n: int, scale: float, urls: list[str], seed: int
                      ) -> dict[str, Any]:
    rate = rho / 10.0
    schedule = make_schedule(rate, n=n, seed=seed)
    specs = specs_for(schedule, None)
    run = await run_open_loop("async", specs, schedule, _ctx(urls, scale, 8))
    profile = load_profile("seed")
    service = theory.service_model_from_profile(profile, specs)
    replay = theory.predict_load("async", service, schedule=schedule, concurrency=8)
    steady = theory.predict_load("async", service, rate=rate, concurrency=8, seed=seed)
    o = run.summary.open_loop
    measured = {"p50": o["latency_from_arrival_p50_s"], "p95": o["latency_from_arrival_p95_s"],
                "mean": o["latency_from_arrival_mean_s"]}
    run_pred = {"p50": replay.latency_p50_s, "p95": replay.latency_p95_s,
                "mean": replay.latency_mean_s}
    steady_pred = {"p50": steady.latency_p50_s, "p95": steady.latency_p95_s,
                   "mean": steady.latency_mean_s}
    return {
        "rho": rho, "rate_rps": rate, "requests": n, "failed": run.summary.failed,
        "measured_s": measured, "replay_predicted_s": run_pred, "steady_predicted_s": steady_pred,
        "measured_over_replay": {k: measured[k] / run_pred[k] for k in measured},
        "measured_over_steady": {k: measured[k] / steady_pred[k] for k in measured},
        "lag_p95_clock_ms": o["lag_p95_clock_ms"], "fell_behind": o["fell_behind"],
        "closed_form": steady.closed_form, "closed_form_wait_s": steady.closed_form_wait_s,
    }


async def _generator_at(rate_clock: float, seconds: float, urls: list[str]) -> dict[str, Any]:
    n = max(50, int(rate_clock * seconds))
    schedule = make_schedule(rate_clock, n=n, process="constant")
    specs = specs_for(schedule, None, num_predict=1)
    run = await run_open_loop("async", specs, schedule, _ctx(urls, 1.0, 256))
    o = run.summary.open_loop
    lags = sorted((r.submitted_s - r.scheduled_s) * 1e3 for r in run.requests)
    return {"rate_rps": rate_clock, "requests": n, "failed": run.summary.failed,
            "lag_mean_ms": o["lag_mean_clock_ms"], "lag_p50_ms": lags[len(lags) // 2],
            "lag_p95_ms": o["lag_p95_clock_ms"], "lag_max_ms": o["lag_max_clock_ms"]}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests (about a minute)")
    parser.add_argument("--n", type=int, default=None, help="requests per ρ (default 100; "
                        "quick 40)")
    parser.add_argument("--time-scale", type=float, default=0.05,
                        help="the simulator's time scale (default 0.05: a busy machine's few "
                             "ms per request weigh 2.5× less than at 0.02)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rhos", default=",".join(map(str, RHOS)),
                        help="utilisations to measure (comma-separated)")
    parser.add_argument("--generator-rates", default=",".join(map(str, GENERATOR_RATES)),
                        help="clock rates (requests/s) for the generator's limit")
    parser.add_argument("--parts", default="latency,generator",
                        help="which parts to run (the others are kept from the existing file)")
    parser.add_argument("--out", default=None, help="folder for the result JSON")
    args = parser.parse_args(argv)
    n = args.n or (40 if args.quick else 100)

    parts = {x.strip() for x in args.parts.split(",") if x.strip()}
    name = "queueing_quick" if args.quick else "queueing"
    folder = results_dir(args.quick, Path(args.out) if args.out else None)
    previous: dict[str, Any] = {}
    if (folder / f"{name}.json").exists():
        previous = json.loads((folder / f"{name}.json").read_text(encoding="utf-8"))

    latency: list[dict[str, Any]] = []
    latency_part: dict[str, Any] = previous.get("latency_part", {})
    if "latency" in parts:
        latency_part = _latency_part(args, n)
    generator_part: dict[str, Any] = previous.get("generator_part", {})
    if "generator" in parts:
        generator_part = _generator_part(args)
    latency = latency_part.get("rows", [])
    targets = {
        "within_5pct_up_to_0.7": bool(latency) and all(
            abs(row["measured_over_replay"][q] - 1) <= 0.05
            for row in latency if row["rho"] <= 0.7 for q in ("p50", "p95")),
    }
    result = {
        "latency_part": latency_part,
        "generator_part": generator_part,
        "generator_limit_rps": generator_part.get("limit_rps"),
        "targets": targets,
    }
    path = write_result(name, clean(result), folder)
    print(f"wrote {path}")
    return result


def _latency_part(args: argparse.Namespace, n: int) -> dict[str, Any]:
    latency = []
    with SimFarm(1, profile="seed", time_scale=args.time_scale, slots=1) as farm:
        for rho in (float(x) for x in args.rhos.split(",")):
            row = asyncio.run(_latency_at(rho, n, args.time_scale, farm.urls, args.seed))
            latency.append(row)
            r = row["measured_over_replay"]
            print(f"ρ={rho}: measured p50 {row['measured_s']['p50']:.2f} s, p95 "
                  f"{row['measured_s']['p95']:.2f} s; ÷ replay p50 {r['p50']:.3f}, "
                  f"p95 {r['p95']:.3f}; steady p95 {row['steady_predicted_s']['p95']:.2f} s",
                  flush=True)

    return {"settings": {"profile": "seed", "mode": "async", "slots": 1,
                         "requests_per_rho": n, "time_scale": args.time_scale,
                         "seed": args.seed},
            "machine": machine(), "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "rows": latency}


def _generator_part(args: argparse.Namespace) -> dict[str, Any]:
    generator = []
    seconds = 1.0 if args.quick else 2.0
    reps = 1 if args.quick else 3
    with SimFarm(1, profile=ZERO_PROFILE, time_scale=1.0, slots=256) as farm:
        for rate in (float(x) for x in args.generator_rates.split(",")):
            tries = [asyncio.run(_generator_at(rate, seconds, farm.urls)) for _ in range(reps)]
            p95s = sorted(t["lag_p95_ms"] for t in tries)
            row = {"rate_rps": rate, "repetitions": tries,
                   "lag_p95_ms_median": p95s[len(p95s) // 2],
                   "held": p95s[len(p95s) // 2] < 1.0}
            generator.append(row)
            print(f"generator at {rate}/s: lag p95 (median of {reps}) "
                  f"{row['lag_p95_ms_median']:.3f} ms", flush=True)
    held = []
    for g in generator:
        if not g["held"]:
            break
        held.append(g["rate_rps"])
    return {"settings": {"seconds_per_rate": seconds, "repetitions": reps,
                         "profile": ZERO_PROFILE},
            "machine": machine(), "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "rates": generator, "limit_rps": max(held) if held else None}


if __name__ == "__main__":
    main()
