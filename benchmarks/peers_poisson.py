"""Requests arriving over time: GuideLLM's Poisson profile and the kit's open loop, one server.

``peers.py --sections poisson`` runs, against one simulated Ollama (profile ``rtx4090``, 4 slots,
≈ 600 prompt tokens and 32 output tokens a request — the concurrency-4 comparison's requests):

1. **GuideLLM** 0.8.1 with one worker process, scenario profile ``{"kind": "poisson", "rate": R}`` (the CLI's
   ``--profile poisson --rate R``; its ``AsyncPoissonStrategy`` draws exponential gaps with
   ``random.Random(42)``), ``max_requests`` N;
2. **the kit replaying GuideLLM's send times** — each request's ``request_start`` from GuideLLM's
   JSON, as a trace (``arrivals.Schedule(process="trace")``) through ``loadgen.run_open_loop``
   in ``async`` mode with 64 workers, so nothing waits inside the kit: *the same Poisson run*,
   measured by the kit;
3. **the kit's own Poisson schedule** at the same rate (``make_schedule(R, n=N, seed=1)``: numpy's
   exponential gaps), the way ``parallel-kit bench --rate R --arrivals poisson`` runs it;
4. **GuideLLM with its default worker processes** (10): each process runs the strategy with
   its own ``random.Random(42)``, so every gap is drawn once per process and occurs ten times
   in a row (``distinct_gap_fraction``); run 1 sets ``GUIDELLM__MAX_WORKER_PROCESSES=1`` so its
   schedule is a Poisson draw.

For each run the figures are the tool's own: mean and p50 latency and TTFT measured from the
send (GuideLLM's ``request_latency`` and ``time_to_first_token_ms``; the kit's summary), plus
what each tool reports about its own timing (GuideLLM's dispatch delay ``request_start −
targeted_start``; the kit's lag and its latency from the scheduled arrival). Beside them, the
simulator's latency model (``theory.predict_load``) run over **the send times each run
actually used** — what the server should have given that very run, free of the sampling noise
of a finite Poisson draw.

**The rate.** ρ = 0.5: half the capacity of 4 slots decoding together, as ``theory`` computes
it from the profile (8.97 requests/s on rtx4090 → R = 4.49/s): busy enough that requests
queue and share the decode batch, far enough from the knee that a short run is near its steady
state. **The count.** The mean latency of one Poisson run scatters around the steady state; the
same latency model run over 20 independent draws gives its relative standard deviation
(recorded as ``sampling_noise``): ≈ 2.6 % at N = 600. Two independent draws (GuideLLM's and the
kit's own) therefore differ by ≈ 3–4 % on average from sampling alone — the same size as the
5 % target — which is why the kit also replays GuideLLM's own send times: then both tools
measure the same arrivals, and what is left is the measurement.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import statistics
from pathlib import Path
from typing import Any

import numpy as np
from _common import PYTHON, ROOT, SimFarm
from _peers_common import (
    C4_PROFILE,
    MODEL,
    TOKENS,
    guidellm_raw,
    guidellm_stat,
    pct,
    prompt,
    prompt_lines,
    run_tool,
    signed,
    warm,
)

from parallel_kit import theory
from parallel_kit.records import RequestSpec
from parallel_kit.sim.profiles import load_profile
from parallel_kit.workload.arrivals import Schedule, make_schedule

PROFILE = C4_PROFILE
SLOTS = 4
#: the offered load, as a fraction of the server's capacity
RHO = 0.5
SEED = 1
#: requests per run (full, quick)
N_FULL, N_QUICK = 600, 40
#: independent Poisson draws for the sampling-noise estimate
NOISE_DRAWS = 20

_KIT_SNIPPET = """
import asyncio, json, sys
import numpy as np
from parallel_kit.workload.arrivals import Schedule, make_schedule
from parallel_kit.config import Endpoint
from parallel_kit.bench.loadgen import run_open_loop
from parallel_kit.modes.base import ModeContext, QueueOptions
from parallel_kit.records import RequestSpec
url, rate, n, seed, prompts, times, out, model, tokens = sys.argv[1:10]
lines = open(prompts, encoding="utf-8").read().splitlines()[: int(n)]
specs = [RequestSpec(p, num_predict=int(tokens)) for p in lines]
if times == "-":
    schedule = make_schedule(float(rate), n=int(n), seed=int(seed))
else:
    t = json.load(open(times))
    schedule = Schedule(times_s=np.asarray(t, dtype=float), process="trace", rate=float(rate),
                        source="guidellm send times")
ctx = ModeContext(endpoints=[Endpoint(url, slots=64)], queue=QueueOptions(concurrency=64),
                  model=model, api="openai")
run = asyncio.run(run_open_loop("async", specs, schedule, ctx))
json.dump(run.to_dict(), open(out, "w"))
"""


def _specs(n: int) -> list[RequestSpec]:
    return [RequestSpec(prompt(i, True), num_predict=TOKENS) for i in range(n)]


def _service(n: int) -> Any:
    return theory.service_model_from_profile(load_profile(PROFILE), _specs(n))


def capacity_rps(n: int) -> float:
    """The server's capacity for these requests (requests/s, 4 slots decoding together)."""
    return float(theory.predict_load("async", _service(n), rate=1.0, slots=SLOTS,
                                      concurrency=64).capacity_rps)


def replay(times_s: list[float], rate: float) -> dict[str, float]:
    """The simulator's latency model over these send times (seconds from the first)."""
    n = len(times_s)
    sched = Schedule(times_s=np.asarray(sorted(times_s), dtype=float), process="trace",
                     rate=rate)
    p = theory.predict_load("async", _service(n), schedule=sched, slots=SLOTS, concurrency=64)
    return {"latency_mean_s": p.latency_mean_s, "latency_p50_s": p.latency_p50_s,
            "ttft_mean_s": p.ttft_mean_s}


def sampling_noise(rate: float, n: int, draws: int = NOISE_DRAWS) -> dict[str, Any]:
    """Relative standard deviation of one run's mean latency and TTFT over independent
    Poisson draws of ``n`` arrivals at ``rate`` (the latency model; no server)."""
    svc = _service(n)
    lat, ttft = [], []
    for seed in range(draws):
        p = theory.predict_load("async", svc, schedule=make_schedule(rate, n=n, seed=100 + seed),
                                slots=SLOTS, concurrency=64)
        lat.append(p.latency_mean_s)
        ttft.append(p.ttft_mean_s)
    return {"draws": draws, "n": n,
            "latency_mean_rel_std": statistics.stdev(lat) / statistics.mean(lat),
            "ttft_mean_rel_std": statistics.stdev(ttft) / statistics.mean(ttft)}


def distinct_gap_fraction(times_s: list[float]) -> float:
    """Distinct gaps between consecutive scheduled arrivals (to 1 µs) ÷ gaps: ≈ 1 for draws of
    a continuous distribution (Poisson); 1/W when every gap is drawn W times over."""
    t = sorted(times_s)
    gaps = [round(b - a, 6) for a, b in itertools.pairwise(t)]
    return len(set(gaps)) / len(gaps) if gaps else math.nan


def run_guidellm(url: str, rate: float, n: int, folder: Path, core: int | None,
                 workers: int | None) -> dict[str, Any]:
    """GuideLLM's poisson profile at ``rate`` with ``workers`` worker processes (None: its
    default, ``max_worker_processes`` = 10); its figures and its requests' send times."""
    settings = {"GUIDELLM__MAX_WORKER_PROCESSES": str(workers)} if workers else None
    cpu, wall, b = guidellm_raw(url, n, TOKENS, folder, core, True,
                                {"kind": "poisson", "rate": rate},
                                f"poisson_{n}_{workers or 'default'}", settings)
    reqs = b["requests"]["successful"]
    timings = [r["info"]["timings"] for r in reqs]
    sends = sorted(float(t["request_start"]) for t in timings)
    # With several worker processes GuideLLM gave some requests an arrival time near 0 of the
    # Unix clock instead of one in the run (drawn, it seems, while the shared arrival clock
    # still held its initial value): they are sent at once, and their "delay" would be a Unix
    # timestamp. Counted apart; the delays are over the requests with a time in the run.
    first_send = min(float(t["request_start"]) for t in timings)
    targeted = [t for t in timings if (t.get("targeted_start") or 0.0) > first_send - 60.0]
    delay = sorted(float(t["request_start"]) - float(t["targeted_start"]) for t in targeted)
    scheduled = [float(t["request_end"]) - float(t["targeted_start"]) for t in targeted]

    def stat(name: str, key: str, scale: float = 1.0) -> float:
        return guidellm_stat(b, name, key, scale)

    return {"cpu_s": cpu, "wall_s": wall, "ok": len(reqs),
            "strategy": b["config"]["strategy"],
            "output_tokens_mean": statistics.mean(int(r["output_tokens"]) for r in reqs),
            "latency_mean_s": stat("request_latency", "mean"),
            "latency_p50_s": stat("request_latency", "p50"),
            "ttft_mean_s": stat("time_to_first_token_ms", "mean", 1e-3),
            "ttft_p50_s": stat("time_to_first_token_ms", "p50", 1e-3),
            "itl_mean_s": stat("inter_token_latency_ms", "mean", 1e-3),
            "tpot_mean_s": stat("time_per_output_token_ms", "mean", 1e-3),
            "achieved_rps": (len(sends) - 1) / (sends[-1] - sends[0]),
            "arrival_time_outside_run": len(timings) - len(targeted),
            "distinct_gap_fraction": distinct_gap_fraction(
                [float(t["targeted_start"]) for t in targeted]),
            "dispatch_delay_mean_ms": statistics.mean(delay) * 1e3 if delay else math.nan,
            "dispatch_delay_p95_ms": (delay[int(0.95 * (len(delay) - 1))] * 1e3 if delay
                                      else math.nan),
            "latency_from_scheduled_mean_s": (statistics.mean(scheduled) if scheduled
                                              else math.nan),
            "send_times_s": [t - sends[0] for t in sends]}


def run_kit(url: str, rate: float, n: int, folder: Path, core: int | None,
            times_s: list[float] | None, tag: str) -> dict[str, Any]:
    """The kit's open loop (``async`` mode, 64 workers) on its own Poisson schedule, or on
    ``times_s`` (a trace); figures from its summary, and its requests' send times."""
    out = folder / f"kit_poisson_{tag}.json"
    times_arg = "-"
    if times_s is not None:
        path = folder / f"times_{tag}.json"
        path.write_text(json.dumps(times_s))
        times_arg = str(path)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cpu, wall = run_tool([PYTHON, "-c", _KIT_SNIPPET, url, repr(rate), str(n), str(SEED),
                      str(prompt_lines(folder, n, True)), times_arg, str(out), MODEL,
                      str(TOKENS)], core, env)
    doc = json.loads(out.read_text())
    s, rows = doc["summary"], [r for r in doc["requests"] if r.get("ok")]
    ol = s["open_loop"]
    sends = sorted(float(r["submitted_s"]) for r in rows)
    return {"cpu_s": cpu, "wall_s": wall, "ok": s["ok"],
            "schedule": ol["schedule"],
            "output_tokens_mean": statistics.mean(int(r["output_tokens"]) for r in rows),
            "latency_mean_s": s["latency_mean_s"], "latency_p50_s": s["latency_p50_s"],
            "ttft_mean_s": s["ttft_mean_s"], "ttft_p50_s": s["ttft_p50_s"],
            "itl_mean_s": s["itl_mean_s"], "tpot_mean_s": s["tpot_mean_s"],
            "achieved_rps": (len(sends) - 1) / (sends[-1] - sends[0]),
            "lag_mean_ms": ol["lag_mean_clock_ms"], "lag_p95_ms": ol["lag_p95_clock_ms"],
            "distinct_gap_fraction": distinct_gap_fraction(
                [float(r["scheduled_s"]) for r in doc["requests"]]),
            "fell_behind": ol["fell_behind"],
            "latency_from_arrival_mean_s": ol["latency_from_arrival_mean_s"],
            "ttft_from_arrival_mean_s": ol["ttft_from_arrival_mean_s"],
            "send_times_s": [t - sends[0] for t in sends]}


_COMPARED = ("latency_mean_s", "ttft_mean_s", "latency_p50_s", "ttft_p50_s")


def measure(tools: list[str], quick: bool, folder: Path, pinned: bool,
            client_core: int | None) -> dict[str, Any]:
    """The poisson section (module docstring); the kit's replay of GuideLLM's send times runs
    only when GuideLLM is among ``tools``."""
    n = N_QUICK if quick else N_FULL
    capacity = capacity_rps(n)
    rate = round(RHO * capacity, 2)
    print(f"  poisson: capacity {capacity:.2f} req/s → rate {rate} req/s, {n} requests",
          flush=True)
    runs: dict[str, dict[str, Any]] = {}
    with SimFarm(1, profile=PROFILE, slots=SLOTS) as farm:
        if pinned:
            os.sched_setaffinity(farm.pid, {0})
        url = farm.urls[0]
        warm(url)
        if "guidellm" in tools:
            print("  guidellm: poisson, one worker process …", flush=True)
            runs["guidellm"] = run_guidellm(url, rate, n, folder, client_core, 1)
            if "kit" in tools:
                print("  kit: poisson, replaying GuideLLM's send times …", flush=True)
                runs["kit_same_arrivals"] = run_kit(url, rate, n, folder, client_core,
                                                    runs["guidellm"]["send_times_s"], "same")
        if "kit" in tools:
            print("  kit: poisson, its own schedule …", flush=True)
            runs["kit_own_poisson"] = run_kit(url, rate, n, folder, client_core, None, "own")
        if "guidellm" in tools:
            print("  guidellm: poisson, its default worker processes …", flush=True)
            runs["guidellm_default_workers"] = run_guidellm(url, rate, n, folder,
                                                            client_core, None)
    for fig in runs.values():
        fig["model"] = replay(fig.pop("send_times_s"), rate)
        fig["measured_vs_model"] = {k: pct(fig[k], fig["model"][k])
                                    for k in ("latency_mean_s", "ttft_mean_s")}
    agreement: dict[str, Any] = {}
    g = runs.get("guidellm")
    if g is not None:
        for key in ("kit_same_arrivals", "kit_own_poisson"):
            if key in runs:
                a = {k: pct(runs[key][k], g[k]) for k in _COMPARED}
                a["means_within_5pct"] = all(
                    a[k] is not None and abs(a[k]) <= 0.05 for k in _COMPARED[:2])
                agreement[f"{key}_vs_guidellm"] = a
    return {"profile": PROFILE, "slots": SLOTS, "prompt_tokens": "≈ 600", "tokens": TOKENS,
            "n": n, "capacity_rps": capacity, "rho": rate / capacity, "rate_rps": rate,
            "kit_seed": SEED, "sampling_noise": sampling_noise(rate, n),
            "by_run": runs, "agreement": agreement}


def table(section: dict[str, Any]) -> list[str]:
    """The poisson section as Markdown lines."""
    ms = 1000.0
    noise = section["sampling_noise"]
    lines = [f"Poisson arrivals at {section['rate_rps']} req/s (ρ = {section['rho']:.2f} of "
             f"{section['capacity_rps']:.2f} req/s), profile `{section['profile']}` "
             f"({section['slots']} slots), {section['n']} requests; one run's mean latency "
             f"scatters by {noise['latency_mean_rel_std'] * 100:.1f} % (TTFT "
             f"{noise['ttft_mean_rel_std'] * 100:.1f} %) between Poisson draws:", "",
             "| run | latency mean · p50 ms | TTFT mean · p50 ms | model over its send times: "
             "latency · TTFT mean ms | measured ÷ model − 1 | sent req/s | distinct gaps | "
             "client's own delay |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, v in section["by_run"].items():
        m = v["model"]
        if name.startswith("guidellm"):
            own = (f"dispatch delay mean {v['dispatch_delay_mean_ms']:.2f} ms, p95 "
                   f"{v['dispatch_delay_p95_ms']:.2f}; {v['arrival_time_outside_run']} with an "
                   f"arrival time outside the run")
        else:
            own = f"lag mean {v['lag_mean_ms']:.2f} ms, p95 {v['lag_p95_ms']:.2f}"
        vs = v["measured_vs_model"]
        lines.append(
            f"| {name} | {v['latency_mean_s'] * ms:.1f} · {v['latency_p50_s'] * ms:.1f} | "
            f"{v['ttft_mean_s'] * ms:.1f} · {v['ttft_p50_s'] * ms:.1f} | "
            f"{m['latency_mean_s'] * ms:.1f} · {m['ttft_mean_s'] * ms:.1f} | "
            f"{signed(vs['latency_mean_s'])} · {signed(vs['ttft_mean_s'])} | "
            f"{v['achieved_rps']:.2f} | {v['distinct_gap_fraction']:.2f} | {own} |")
    for key, a in section["agreement"].items():
        lines.append("")
        lines.append(f"{key.replace('_', ' ')}: latency mean {signed(a['latency_mean_s'])}, "
                     f"TTFT mean {signed(a['ttft_mean_s'])}, latency p50 "
                     f"{signed(a['latency_p50_s'])}, TTFT p50 {signed(a['ttft_p50_s'])} "
                     f"(kit ÷ GuideLLM − 1; means within 5 %: {a['means_within_5pct']}).")
    return lines
