"""Ray: what the cluster costs to start and stop, and what each request pays to go through it.

* **Start-up**: a local cluster (``raycluster.connect`` with W logical GPUs), then W GPU actors
  bound to endpoints (the ``setup_s`` of the ray mode, cluster already up); **shutdown** of the
  cluster. Clock seconds, one each (they are paid once per run, not per request).
* **Dispatch overhead**: 1,000 requests to 4 zero-latency simulated servers (8 slots each, in
  their own process), once through ``pool`` (one process, no Ray) and once through ``ray`` (one
  actor per server), interleaved, medians. The overhead per request is
  ``(ray wall − pool wall) ÷ requests`` — what Ray adds to the run per request. (Request
  latencies are not compared: all 1,000 are submitted at once, so they are mostly queueing.)
  Target ≤ 2 ms per request.

Usage: ``.venv/bin/python benchmarks/ray_dispatch.py [--quick]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ZERO_PROFILE, SimFarm, clean, interleaved, median, write_result

from parallel_kit.config import Endpoint
from parallel_kit.modes.base import ModeContext, get_mode
from parallel_kit.modes.options import QueueOptions
from parallel_kit.records import RequestSpec

WORKERS = 4
SLOTS = 8
TARGET_MS = 2.0


def _run(mode: str, urls: list[str], n: int, record: list[dict[str, Any]]) -> float:
    """One run of ``mode``; returns clock seconds of the makespan (and records the details)."""
    ctx = ModeContext(endpoints=[Endpoint(u, slots=SLOTS) for u in urls],
                      queue=QueueOptions(concurrency=SLOTS), gpus=len(urls), time_scale=1.0)
    specs = [RequestSpec("Why is the sky blue?", num_predict=1) for _ in range(n)]
    with contextlib.redirect_stderr(io.StringIO()):
        run = asyncio.run(get_mode(mode)(specs, ctx))
    s = run.summary
    if s.failed:
        raise RuntimeError(f"{mode}: {s.failed} of {s.n} requests failed: "
                           f"{next(r.error for r in run.requests if not r.ok)}")
    record.append({"mode": mode, "wall_s": s.wall_s, "setup_s": s.setup_s,
                   "submit_s": s.submit_s})
    return float(s.wall_s)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests and repetitions")
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    args = parser.parse_args(argv)
    n = 300 if args.quick else 1000
    reps = 2 if args.quick else 3
    os.environ.pop("CUDA_VISIBLE_DEVICES", None)  # Ray refuses logical GPUs when it is set
    from parallel_kit.servers import raycluster

    result: dict[str, Any] = {"requests": n, "workers": WORKERS, "slots_per_server": SLOTS,
                              "repetitions": reps}
    t0 = time.perf_counter()
    info = raycluster.connect(WORKERS)
    result["cluster_start_s"] = time.perf_counter() - t0
    result["cluster_started_here"] = info.started_here
    try:
        with SimFarm(WORKERS, profile=ZERO_PROFILE, slots=SLOTS) as farm:
            runs: list[dict[str, Any]] = []
            _run("ray", farm.urls, 20, runs)  # warm-up (worker processes, imports)
            _run("pool", farm.urls, 20, runs)
            result["actors_start_s"] = runs[0]["setup_s"]
            runs.clear()
            samples = interleaved(reps, {
                "pool": lambda: _run("pool", farm.urls, n, runs),
                "ray": lambda: _run("ray", farm.urls, n, runs)})
    finally:
        t0 = time.perf_counter()
        raycluster.shutdown()
        result["shutdown_s"] = time.perf_counter() - t0
    pool_wall, ray_wall = median(samples["pool"]), median(samples["ray"])
    per_request_ms = (ray_wall - pool_wall) / n * 1000
    result.update({
        "wall_s_samples": samples, "pool_wall_s_median": pool_wall,
        "ray_wall_s_median": ray_wall, "ray_vs_pool_wall": ray_wall / pool_wall,
        "dispatch_overhead_ms_per_request": per_request_ms,
        "ray_actor_setup_s_median": median([r["setup_s"] for r in runs if r["mode"] == "ray"]),
        "runs": runs, "target": f"dispatch ≤ {TARGET_MS} ms per request",
        "met": per_request_ms <= TARGET_MS})
    result = clean(result)
    path = write_result("ray_dispatch" + ("_quick" if args.quick else ""), result, args.out)
    print(f"ray: cluster start {result['cluster_start_s']:.1f} s, actors "
          f"{result['actors_start_s']:.1f} s, shutdown {result['shutdown_s']:.1f} s; dispatch "
          f"{per_request_ms:.2f} ms/request over pool (wall {ray_wall:.2f} vs {pool_wall:.2f} s)"
          f"  → {path}")
    return result


if __name__ == "__main__":
    main()
