"""Latency under Poisson load on a real model on this machine's CPU, beside what the calibrated
simulator's latency model predicts.

Gemma 3 270M (llama.cpp's llama-server, ``parallel_kit.sim.llama_server``) runs behind the kit's
Ollama server in a **process of its own** (``parallel-kit sim --engine llama-server``): one slot,
one llama.cpp thread (``-t 1``), the model kept loaded. The load generator (this process) drives it with the kit's
open-loop driver (``loadgen.run_open_loop``, mode ``async``: every arrival goes straight to the
server, whose own FIFO queue holds it — as a service would have it).

Why one thread, not two: on this shared 2-core machine a 2-thread llama.cpp instance stalls
whenever another process takes one of its cores (its threads meet at a barrier every layer), so
its service time varied with a coefficient of variation above 1 in a pilot at load average
2–4; one thread leaves the other core to the load generator, the server's event loop and the
rest of the machine, and varied by about 0.1. The figures below need a service time that is
nearly the same for every request, which only the 1-thread set-up gives here.

For each ρ in {0.3, 0.5, 0.7, 0.9}:

1. **Calibrate** just before the run (the machine's speed drifts with what else runs on it):
   ``probe`` with ``max_k=1`` and ``repeats`` requests alone, then ``calibrate.save_profile``
   into a temporary profile file. The calibrated solo service time S of the benchmark's request
   (fixed prompt, fixed ``num_predict``) is the profile's prefill + ``num_predict`` ÷ decode speed;
   the capacity is 1/S and the rate ρ/S. The profile also keeps the service time's
   coefficient of variation over the ``repeats`` tries (``service_cv``: the machine's jitter).
2. **Run** ``n`` Poisson arrivals at that rate (the same seed for every ρ, so each schedule is the
   same gaps scaled) against the real model; latency is measured from each request's scheduled
   arrival (``latency_from_arrival``: the response time queueing theory predicts).
3. **Predict** with the calibrated profile, its jitter included (``loadgen.fill_predictions``,
   ``theory.predict_load``: each request's service time drawn around S with the calibrated
   CV, the mean over 64 draws; the same without the jitter is recorded beside it): the
   discrete-event run
   of the simulator's latency model over *this run's arrivals* (``replay``: the target, within
   10 % up to ρ = 0.7) and the steady state at that rate (a finite run only approaches it).
4. **Explain**: each request's service time as the server measured it (prefill + decode), its
   mean ÷ the calibrated S (drift) and its coefficient of variation, and the FIFO recursion
   over the run's arrivals with these *measured* service times — the queue with no calibration
   error left, which separates a calibration miss from a queueing-model miss.

Usage::

    .venv/bin/python benchmarks/real_model_load.py [--n 100] [--num-predict 24] [--quick]

Writes ``benchmarks/results/real_model_load.json`` (``--quick``: 20 requests at ρ 0.5 and 0.9
into the git-ignored ``benchmarks/results/quick/``). About 12 minutes with the defaults.
Needs ``pip install "parallel_kit[real]"``. The load average is recorded before and after each
ρ; the script waits (up to ``--wait-quiet`` seconds) for the 1-minute load average to fall
below ``--quiet-load`` before it starts.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import PYTHON, ROOT, clean, machine, quantile, results_dir, write_result

from parallel_kit import theory
from parallel_kit.bench.loadgen import fill_predictions, run_open_loop
from parallel_kit.config import Endpoint
from parallel_kit.measure.calibrate import save_profile
from parallel_kit.measure.probe import probe
from parallel_kit.modes.base import ModeContext
from parallel_kit.modes.options import QueueOptions
from parallel_kit.records import RequestResult, RequestSpec, RunResult
from parallel_kit.servers.launcher import stop_process
from parallel_kit.sim.profiles import load_profile
from parallel_kit.theory import queueing
from parallel_kit.workload.arrivals import make_schedule

MODEL = "gemma3:270m"
RHOS = (0.3, 0.5, 0.7, 0.9)
#: The benchmark's one request (a base model continues it; ``num_predict`` cuts it).
PROMPT = ("The harbour town woke slowly that winter morning. Fishing boats rocked against the "
          "quay, gulls argued over the nets, and the baker opened her shutters while the first "
          "ferry of the day sounded its horn beyond the breakwater.")
#: Requests the async mode's task queue hands to the server at once: more than ever wait, so
#: the server's own FIFO holds the queue (its 1 slot is the only limit).
IN_FLIGHT = 64
TARGET = 0.10


@contextmanager
def real_server(threads: int) -> Iterator[str]:
    """The kit's Ollama server on llama.cpp (1 slot, ``threads`` threads) in a child process;
    yields its URL and stops it afterwards."""
    cmd = [PYTHON, "-m", "parallel_kit", "sim", "--engine", "llama-server", "--num-parallel",
           "1", "--threads", str(threads), "--port", "0", "--keep-alive", "-1"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=env,
                                cwd=ROOT)
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            found = re.search(r"listening on (\S+)", line)
            if not found:
                proc.wait(timeout=20)
                log.seek(0)
                raise RuntimeError(f"the real-model server did not start: {line}"
                                   f"{log.read()[-2000:]}")
            yield found.group(1)
        finally:
            stop_process(proc, 20.0)


def wait_for_quiet(limit: float, wait_s: float) -> dict[str, Any]:
    """Wait up to ``wait_s`` for the 1-minute load average to fall below ``limit``."""
    t0 = time.time()
    first = os.getloadavg()
    while os.getloadavg()[0] >= limit and time.time() - t0 < wait_s:
        time.sleep(5)
    last = os.getloadavg()
    return {"load_avg_at_start": [round(x, 2) for x in first],
            "load_avg_after_wait": [round(x, 2) for x in last],
            "waited_s": round(time.time() - t0, 1), "quiet_below": limit,
            "was_quiet": last[0] < limit}


async def calibrate(url: str, num_predict: int, repeats: int, path: Path, name: str
                    ) -> dict[str, Any]:
    """Probe the server (1 slot) and save it as profile ``name`` in ``path``."""
    result = await probe(url, MODEL, max_k=1, num_predict=num_predict, repeats=repeats)
    save_profile(name, result, path, output_tokens=(num_predict, num_predict))
    return result.to_dict()


def _specs(n: int, num_predict: int) -> list[RequestSpec]:
    # One prompt for all: the engine clears its cache before every request (no prefix reuse),
    # so each pays the same prefill.
    return [RequestSpec(PROMPT, model=MODEL, num_predict=num_predict, request_id=f"r{i}")
            for i in range(n)]


def _service_s(row: RequestResult) -> float:
    """The server's own time on ``row``: prefill (to the first piece) + decoding."""
    return (row.server_prompt_eval_s or 0.0) + (row.server_eval_s or 0.0)


def _figures(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "p50": quantile(values, 0.5),
            "p95": quantile(values, 0.95)}


def _explain(run: RunResult) -> dict[str, Any]:
    """Measured service times and the FIFO recursion over them (the queue without the
    calibration)."""
    rows = sorted((r for r in run.requests if r.ok), key=lambda r: r.scheduled_s)
    service = [_service_s(r) for r in rows]
    arrivals = [r.scheduled_s for r in rows]
    # Client-side time beyond the server's own (HTTP, streaming, the loop): from the moment
    # the server had the request free to start (its previous request's end, or the arrival)
    # to its end, minus its service.
    fifo = queueing.fifo_recursion(arrivals, service)
    latency = [float(f - a) for f, a in zip(fifo, arrivals, strict=True)]
    mean = statistics.fmean(service)
    return {"service_mean_s": mean, "service_cv": statistics.pstdev(service) / mean,
            "service_p50_s": quantile(service, 0.5), "service_p95_s": quantile(service, 0.95),
            "service_max_s": max(service),
            "prefill_mean_s": statistics.fmean(r.server_prompt_eval_s or 0.0 for r in rows),
            "decode_mean_s": statistics.fmean(r.server_eval_s or 0.0 for r in rows),
            "prompt_tokens": rows[0].prompt_tokens if rows else None,
            "output_tokens": sorted({r.output_tokens or 0 for r in rows}),
            "fifo_over_measured_service_s": _figures(latency)}


async def one_rho(url: str, rho: float, n: int, num_predict: int, repeats: int, seed: int,
                  tmp: Path) -> dict[str, Any]:
    """Calibrate, run ``n`` Poisson arrivals at ρ of the calibrated capacity, predict."""
    load_before = os.getloadavg()
    path = tmp / f"profiles_{rho}.json"
    name = f"cpu-1-thread-rho-{rho}"
    probed = await calibrate(url, num_predict, repeats, path, name)
    profile = load_profile(name, path)
    specs = _specs(n, num_predict)
    solo_s = theory.service_model_from_profile(profile, specs[:1]).solo_s[0]
    rate = rho / solo_s
    schedule = make_schedule(rate, n=n, seed=seed)
    ctx = ModeContext(endpoints=[Endpoint(url)], backend="sim", time_scale=1.0, model=MODEL,
                      queue=QueueOptions(concurrency=IN_FLIGHT))
    started = time.time()
    run = await run_open_loop("async", specs, schedule, ctx)
    wall = time.time() - started
    fill_predictions(run, "async", specs, schedule, profile, workers=1, slots=1,
                     concurrency=IN_FLIGHT)
    o = run.summary.open_loop
    measured = {q: o[f"latency_from_arrival_{q}_s"] for q in ("mean", "p50", "p95")}
    replay = {q: o[f"replay_latency_{q}_s"] for q in ("mean", "p50", "p95")}
    # The same prediction with the simulator's deterministic service time (no jitter): what
    # the calibrated profile's jitter changes.
    exact = theory.predict_load("async", theory.service_model_from_profile(
        dataclasses.replace(profile, service_cv=0.0), specs), schedule=schedule, slots=1,
        concurrency=IN_FLIGHT)
    deterministic = {"mean": exact.latency_mean_s, "p50": exact.latency_p50_s,
                     "p95": exact.latency_p95_s}
    steady = {"mean": run.summary.predicted_latency_mean_s,
              "p50": o["predicted_latency_p50_s"], "p95": run.summary.predicted_latency_p95_s}
    explain = _explain(run)
    over_replay = {q: measured[q] / replay[q] for q in measured}
    return {
        "rho": rho, "rate_rps": rate, "requests": n, "failed": run.summary.failed,
        "calibrated_service_s": solo_s, "capacity_rps": 1 / solo_s,
        "measured_rho": rate * explain["service_mean_s"],
        "calibrated_service_cv": profile.service_cv,
        "measured_s": measured, "replay_predicted_s": replay, "steady_predicted_s": steady,
        "replay_predicted_without_jitter_s": deterministic,
        "measured_over_replay_without_jitter": {q: measured[q] / deterministic[q]
                                                for q in measured},
        "measured_over_replay": over_replay,
        "measured_over_steady": {q: measured[q] / steady[q] for q in measured},
        "within_10pct": all(abs(over_replay[q] - 1) <= TARGET for q in ("p50", "p95")),
        "service_drift": explain["service_mean_s"] / solo_s,
        "explain": explain,
        "lag_p95_clock_ms": o["lag_p95_clock_ms"], "fell_behind": o["fell_behind"],
        "closed_form": o.get("closed_form"), "closed_form_wait_s": o.get("closed_form_wait_s"),
        "probe": {k: probed[k] for k in ("decode_tokens_per_s", "prefill_tokens_per_s",
                                         "ttft_s", "prompt_tokens", "repeats", "service_cv")
                  if k in probed},
        "wall_s": wall,
        "load_avg_before": [round(x, 2) for x in load_before],
        "load_avg_after": [round(x, 2) for x in os.getloadavg()],
    }


async def run_all(args: argparse.Namespace, rhos: list[float]) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp, real_server(args.threads) as url:
        for rho in rhos:
            row = await one_rho(url, rho, args.n, args.num_predict, args.repeats, args.seed,
                                Path(tmp))
            rows.append(row)
            r, e = row["measured_over_replay"], row["explain"]
            print(f"ρ={rho}: S {row['calibrated_service_s']:.3f} s cv "
                  f"{row['calibrated_service_cv']:.3f} (measured mean "
                  f"{e['service_mean_s']:.3f}, cv {e['service_cv']:.3f}); latency p50 "
                  f"{row['measured_s']['p50']:.3f} p95 {row['measured_s']['p95']:.3f} s; "
                  f"÷ replay p50 {r['p50']:.3f} p95 {r['p95']:.3f}; load "
                  f"{row['load_avg_after'][0]}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="20 requests at ρ 0.5 and 0.9 (about a minute)")
    parser.add_argument("--n", type=int, default=None, help="requests per ρ (default 100)")
    parser.add_argument("--rhos", default=None, help="utilisations (comma-separated)")
    parser.add_argument("--num-predict", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=10,
                        help="requests alone in each calibration (medians, and the service "
                             "time's coefficient of variation)")
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads (default 1)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quiet-load", type=float, default=1.5)
    parser.add_argument("--wait-quiet", type=float, default=120.0)
    parser.add_argument("--out", type=Path, default=None, help="folder for the result JSON")
    args = parser.parse_args(argv)
    args.n = args.n or (20 if args.quick else 100)
    rhos = ([float(x) for x in args.rhos.split(",")] if args.rhos else
            [0.5, 0.9] if args.quick else list(RHOS))

    quiet = wait_for_quiet(args.quiet_load, 0.0 if args.quick else args.wait_quiet)
    started = time.time()
    rows = asyncio.run(run_all(args, rhos))
    upto = [row for row in rows if row["rho"] <= 0.7 + 1e-9]
    result = {
        "what": "Gemma 3 270M Q4_K_M on llama.cpp (CPU) behind the kit's Ollama server, Poisson "
                "arrivals at ρ of the calibrated capacity; latency from arrival measured vs "
                "predicted by the calibrated profile",
        "settings": {"model": MODEL, "slots": 1, "threads": args.threads, "mode": "async",
                     "in_flight": IN_FLIGHT, "requests_per_rho": args.n,
                     "num_predict": args.num_predict, "prompt": PROMPT,
                     "calibration_repeats": args.repeats, "seed": args.seed},
        "quiet_check": quiet,
        "rows": rows,
        "targets": {"within_10pct_up_to_0.7": bool(upto) and all(r["within_10pct"]
                                                                  for r in upto)},
        "elapsed_s": round(time.time() - started, 1),
        "machine_at_end": machine(),
    }
    name = "real_model_load_quick" if args.quick else "real_model_load"
    path = write_result(name, clean(result), results_dir(args.quick, args.out))
    print(json.dumps(result["targets"]))
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
