"""The production stack and Ray Serve: what each request pays per hop, and what start-up costs.

Three zero-latency simulated Ollama servers (8 slots each, so that the servers never hold a
request back) in their own process; the same requests go through

* ``pool`` — the kit's dispatcher straight to the servers (one process, no cluster);
* ``rayserve`` — a Ray Serve ``DeploymentHandle`` → one replica per server;
* ``production`` — Redis (a real ``redis-server``) → a Celery worker process → the same Serve
  application.

Figures (clock milliseconds, medians):

* **sequential latency**: ``n`` requests one after another (concurrency 1): each one's whole
  cost is overhead, since the server answers at once; ratios to ``pool``.
* **burst overhead**: ``n`` requests submitted at once; ``(wall(mode) − wall(pool)) ÷ n`` — what
  the mode adds to a run per request (as ``ray_dispatch.py`` does for ``ray``).
* **hops** (production and rayserve rows): the medians of the gaps between the per-layer
  timestamps — accepted → picked up by a worker → entered the replica → sent to Ollama →
  answered → worker done → seen by the caller.
* **start-up**: the Serve application (replicas and their warm-up) and the whole stack (Redis,
  Serve, worker process and its Ray connection), with the Ray cluster already up.

Usage: ``.venv/bin/python benchmarks/stack_overhead.py [--quick]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import itertools
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ZERO_PROFILE, SimFarm, clean, median, write_result

from parallel_kit.config import Endpoint
from parallel_kit.modes.base import ModeContext, QueueOptions, StackOptions
from parallel_kit.records import RequestResult, RequestSpec
from parallel_kit.timing import ModelClock

SERVERS = 3
SLOTS = 8
HOPS = ("accepted", "picked_up", "replica_entered", "started_s", "replica_done", "worker_done",
        "done")


def _specs(n: int, tag: str) -> list[RequestSpec]:
    return [RequestSpec("Why is the sky blue?", num_predict=1, request_id=f"{tag}{i}")
            for i in range(n)]


def _hop_gaps(rows: list[RequestResult]) -> dict[str, float]:
    """Median milliseconds between consecutive hops present in every row."""
    out: dict[str, float] = {}
    for a, b in itertools.pairwise(HOPS):
        gaps = []
        for r in rows:
            ta = r.started_s if a == "started_s" else r.hops.get(a)
            tb = r.started_s if b == "started_s" else r.hops.get(b)
            if ta is not None and tb is not None:
                gaps.append((tb - ta) * 1000)
        if len(gaps) == len(rows) and gaps:
            out[f"{a}→{b}"] = statistics.median(gaps)
    return out


async def _measure(n_seq: int, n_burst: int, urls: list[str]) -> dict[str, Any]:
    from parallel_kit.modes.pool import EndpointPool, run_pool
    from parallel_kit.modes.rayserve import call_app, open_serve_app, run_on_app
    from parallel_kit.production.mode import run_on_stack
    from parallel_kit.production.stack import open_stack

    ctx = ModeContext([Endpoint(u, slots=SLOTS) for u in urls], backend="sim", time_scale=1.0,
                      gpus=len(urls), queue=QueueOptions(concurrency=SLOTS))
    res: dict[str, Any] = {}

    # pool: sequential, then a burst
    clock = ModelClock(1.0).start()
    async with EndpointPool(ctx.endpoints, clock=clock) as pool:
        await pool.warm_up()
        lat = []
        for spec in _specs(n_seq, "ps"):
            t = time.perf_counter()
            await pool(spec)
            lat.append((time.perf_counter() - t) * 1000)
    res["pool"] = {"sequential_ms_median": median(lat)}
    burst = await run_pool(_specs(n_burst, "pb"), ctx)
    res["pool"]["burst_wall_s"] = burst.summary.wall_s

    # rayserve: the application alone
    async with open_serve_app(ctx) as app:
        res["rayserve"] = {"setup_s": app.setup_s}
        clock = ModelClock(1.0).start()
        epoch = time.time() - clock.wall()
        lat, rows = [], []
        for spec in _specs(n_seq, "rs"):
            t = time.perf_counter()
            rows.append(await call_app(app, spec, submitted_s=clock.now(), epoch=epoch,
                                       clock=clock))
            lat.append((time.perf_counter() - t) * 1000)
        res["rayserve"].update(sequential_ms_median=median(lat), hops_ms=_hop_gaps(rows))
        burst = await run_on_app(app, _specs(n_burst, "rb"), ctx)
        res["rayserve"]["burst_wall_s"] = burst.summary.wall_s

    # production: Redis + a Celery worker process + the Serve application
    async with open_stack(ctx, StackOptions(workers=1)) as stack:
        res["production"] = {"setup_s": stack.setup_s}
        lat, rows = [], []
        for spec in _specs(n_seq, "qs"):  # each: accept into Redis, wait via pub/sub
            t = time.perf_counter()
            one = await run_on_stack(stack, [spec], ctx)
            lat.append((time.perf_counter() - t) * 1000)
            rows.extend(one.requests)
        res["production"].update(sequential_ms_median=median(lat), hops_ms=_hop_gaps(rows))
        burst = await run_on_stack(stack, _specs(n_burst, "qb"), ctx)
        res["production"]["burst_wall_s"] = burst.summary.wall_s
        res["production"]["burst_failed"] = burst.summary.failed
    base_seq = res["pool"]["sequential_ms_median"]
    base_wall = res["pool"]["burst_wall_s"]
    for mode in ("rayserve", "production"):
        r = res[mode]
        r["sequential_vs_pool"] = r["sequential_ms_median"] / base_seq
        r["burst_overhead_ms_per_request"] = (r["burst_wall_s"] - base_wall) / n_burst * 1000
    return res


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests")
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    args = parser.parse_args(argv)
    n_seq, n_burst = (20, 100) if args.quick else (100, 500)
    os.environ.pop("CUDA_VISIBLE_DEVICES", None)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from parallel_kit.servers import raycluster

    result: dict[str, Any] = {"servers": SERVERS, "slots_per_server": SLOTS,
                              "sequential_requests": n_seq, "burst_requests": n_burst}
    t0 = time.perf_counter()
    raycluster.connect(SERVERS)
    result["ray_cluster_start_s"] = time.perf_counter() - t0
    try:
        with SimFarm(SERVERS, profile=ZERO_PROFILE, slots=SLOTS) as farm, \
                contextlib.redirect_stderr(io.StringIO()):
            result.update(asyncio.run(_measure(n_seq, n_burst, farm.urls)))
    finally:
        raycluster.shutdown()
    result = clean(result)
    path = write_result("stack_overhead" + ("_quick" if args.quick else ""), result, args.out)
    p, rs, pr = result["pool"], result["rayserve"], result["production"]
    print(f"sequential ms/request: pool {p['sequential_ms_median']:.2f} · rayserve "
          f"{rs['sequential_ms_median']:.2f} ({rs['sequential_vs_pool']:.1f}×) · production "
          f"{pr['sequential_ms_median']:.2f} ({pr['sequential_vs_pool']:.1f}×)")
    print(f"burst overhead over pool, ms/request: rayserve "
          f"{rs['burst_overhead_ms_per_request']:.2f} · production "
          f"{pr['burst_overhead_ms_per_request']:.2f}")
    print(f"start-up: Ray {result['ray_cluster_start_s']:.1f} s · Serve app "
          f"{rs['setup_s']:.1f} s · whole stack {pr['setup_s']:.1f} s")
    print(f"production hops (ms): {pr['hops_ms']}")
    print(f"→ {path}")
    return result


if __name__ == "__main__":
    main()
