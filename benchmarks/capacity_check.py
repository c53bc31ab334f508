"""Capacity planning checked against measurement: does ``parallel-kit capacity`` name the right
configuration, and does its max-rate search find what a measured grid finds?

1. **Plan vs measurement** over a grid of cases — profiles × arrival shapes × SLO keys. For each
   case the traffic is 1.3× one single-slot server's capacity (40 arrivals, seeded); the SLO
   is put between the predicted figures of the first configuration that should meet it and
   every smaller one, at least 1.5× apart (the geometric mean of the two). The planner's
   recommendation and the next smaller configuration then run on the simulator (in-process,
   the default time scale: one request alone 0.2 clock s). Recorded per case: predicted
   (theory for the run's own arrivals) and measured figure of both, and whether the measured
   verdicts agree with the plan (recommended meets, next smaller misses).
2. **Max rate vs a measured grid**: the bisection (≤ 6 measured runs from theory's bracket)
   beside the highest rate of a 17-point measured grid over the same bracket meeting the SLO.
3. **Time scale vs fidelity**: one configuration measured at scales 0.005, 0.01 and 0.02:
   measured ÷ theory for its latency p95 — why measurements default to 0.2 clock s a request.

Usage: ``.venv/bin/python benchmarks/capacity_check.py [--quick]`` (about 10 minutes; quick ~2).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import clean, write_result

from parallel_kit.bench import capacity as cap
from parallel_kit.sim.profiles import load_profile

PROFILES = ("seed", "rtx4090", "m1-max")
PROCESSES = (("poisson", 1.0), ("constant", 1.0), ("gamma", 0.5))
KEYS = ("latency_p95", "ttft_p95")
MARGIN = 1.5
N = 40


def gap_case(profile: str, process: tuple[str, float], seed: int, key: str) -> Any:
    """(profile, traffic, SLO, the configuration that should be chosen), or None without a gap."""
    prof = load_profile(profile)
    service = cap.service_model(prof, cap.Traffic(1.0), None, None)
    loose = cap.PercentileSlo.parse(f"{key}=1e9")
    one = cap.predict_config("pool", 1, 1, service, cap.Traffic(1.0, n=10), loose).capacity_rps
    traffic = cap.Traffic(one * 1.3, process[0], process[1], seed, n=N)
    plan = cap.plan_capacity(traffic, loose, profile=prof, max_gpus=3, slots=[1, 2])
    values = [c.figures[key] for c in plan.candidates]
    for i in range(1, len(values)):
        below = min(values[:i])
        if values[i] > 0 and below / values[i] >= MARGIN:
            bound = math.sqrt(below * values[i]) if math.isfinite(below) else values[i] * 1.5
            return prof, traffic, cap.PercentileSlo.parse(f"{key}={bound:.6g}"), plan.candidates[i]
    return None


async def plan_cases(quick: bool) -> list[dict[str, Any]]:
    out = []
    profiles = PROFILES[:2] if quick else PROFILES
    processes = PROCESSES[:2] if quick else PROCESSES
    keys = KEYS[:1] if quick else KEYS
    for profile in profiles:
        for process in processes:
            for key in keys:
                case = gap_case(profile, process, 7, key)
                row: dict[str, Any] = {"profile": profile, "arrivals": process[0],
                                       "burstiness": process[1], "key": key}
                if case is None:
                    out.append({**row, "skipped": "no gap ≥ 1.5× between neighbours"})
                    continue
                prof, traffic, slo, expected = case
                plan = cap.plan_capacity(traffic, slo, profile=prof, max_gpus=3, slots=[1, 2])
                t0 = time.perf_counter()
                ms = await cap.measure_plan(plan, profile=prof)
                row.update({
                    "rate_rps": traffic.rate, "slo": str(slo),
                    "recommended": plan.best.label if plan.best else None,
                    "expected": expected.label,
                    "next_smaller": plan.next_smaller.label if plan.next_smaller else None,
                    "measured": [{"config": m.label, "predicted": m.predicted[key],
                                  "measured": m.figures[key],
                                  "ratio": m.figures[key] / m.predicted[key]
                                  if m.predicted[key] else None,
                                  "meets": m.meets, "failed": m.failed,
                                  "time_scale": m.run.summary.time_scale} for m in ms],
                    "agrees": bool(ms and ms[0].meets and (len(ms) < 2 or not ms[1].meets)),
                    "wall_s": time.perf_counter() - t0})
                out.append(row)
                print(f"{profile:8} {process[0]:8} {key:12} {row['recommended']:>26} "
                      f"agrees={row['agrees']}  " + "  ".join(
                          f"{x['measured']:.3g}/{x['predicted']:.3g}" for x in row["measured"]),
                      flush=True)
    return out


async def max_rate_cases(quick: bool) -> list[dict[str, Any]]:
    out = []
    configs = [("seed", 2, "latency_p95", 25.0)] + ([] if quick else [
        ("rtx4090", 1, "ttft_p95", 1.0)])
    for profile, servers, key, bound in configs:
        prof = load_profile(profile)
        traffic = cap.Traffic(0.1, "poisson", seed=3, n=N)
        slo = cap.PercentileSlo.parse(f"{key}={bound}")
        result = await cap.max_rate("pool", servers, 1, traffic, slo, profile=prof)
        lo, hi = result.bracket
        points = 9 if quick else 17
        grid = [lo + (hi - lo) * i / (points - 1) for i in range(points)]
        met = []
        for r in grid:
            m = await cap.measure_config("pool", servers, 1, traffic, slo, profile=prof,
                                         rate=r, seed=traffic.seed)
            met.append((r, m.meets, m.figures[key]))
        best = max((r for r, ok, _ in met if ok), default=None)
        row = {"profile": profile, "servers": servers, "slo": str(slo),
               "search": result.to_dict(), "grid": met, "grid_answer": best,
               "search_answer": result.rate_rps,
               "relative_difference": (result.rate_rps - best) / best if best else None,
               "grid_step": (hi - lo) / (points - 1)}
        out.append(row)
        print(f"max rate {profile} {servers}×1 {slo}: search {result.rate_rps:.4g} "
              f"({len(result.searches[0]['runs'])} runs), grid {best}", flush=True)
    return out


async def time_scales() -> list[dict[str, Any]]:
    prof = load_profile("seed")
    traffic = cap.Traffic(1 / 8, "poisson", seed=1, n=60)
    slo = cap.PercentileSlo.parse("latency_p95=30")
    out = []
    for scale in (0.005, 0.01, 0.02):
        m = await cap.measure_config("pool", 2, 1, traffic, slo, profile=prof, time_scale=scale)
        out.append({"time_scale": scale, "clock_s_per_request": 10 * scale,
                    "measured_p95": m.figures["latency_p95"],
                    "predicted_p95": m.predicted["latency_p95"],
                    "ratio": m.figures["latency_p95"] / m.predicted["latency_p95"]})
        print(f"scale {scale}: p95 {out[-1]['measured_p95']:.3g} vs theory "
              f"{out[-1]['predicted_p95']:.3g} ({out[-1]['ratio']:.3f})", flush=True)
    return out


async def main_async(quick: bool) -> dict[str, Any]:
    t0 = time.perf_counter()
    plans = await plan_cases(quick)
    rates = await max_rate_cases(quick)
    scales = await time_scales()
    done = [p for p in plans if "agrees" in p]
    return {"settings": {"profiles": PROFILES, "arrivals": PROCESSES, "keys": KEYS,
                         "margin": MARGIN, "requests_per_run": N, "quick": quick},
            "summary": {"cases": len(done), "agree": sum(p["agrees"] for p in done),
                        "skipped": len(plans) - len(done),
                        "max_rate_within_5_percent": [
                            abs(r["relative_difference"]) <= 0.05
                            if r["relative_difference"] is not None else None for r in rates],
                        "wall_s": time.perf_counter() - t0},
            "plan_cases": plans, "max_rate": rates, "time_scale": scales}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer cases (~2 min)")
    args = ap.parse_args()
    data = asyncio.run(main_async(args.quick))
    path = write_result("capacity_check_quick" if args.quick else "capacity_check", clean(data))
    print(f"{data['summary']} → {path}")


if __name__ == "__main__":
    main()
