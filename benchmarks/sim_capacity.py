"""Simulator capacity: the simulated Ollama must never be the bottleneck it stands in for.

The simulator runs in its own process (one core); the load comes from another:

1. **Non-streamed requests/s** (zero-latency profile, 64 slots, ``num_predict`` 1): with ``wrk``
   (C, POST with a Lua script, 32 connections) and with the kit's client (async mode,
   concurrency 32), interleaved, medians. Target: the simulator serves ≥ 2× what the kit's
   client can drive on this machine (``sim_vs_kit`` ≥ 2).
2. **Streamed tokens/s**: ``wrk`` with 64 connections, each a streamed request of 200 tokens
   (zero-latency profile: the server formats and writes tokens as fast as it can). Target ≥ 20,000.
3. **Added delay at 64 streams**: 64 concurrent streams on a profile with a fixed plan (100
   tokens/s per stream: a token every 10 ms), read by a minimal raw-socket reader; each token's
   arrival minus its stream's planned grid (aligned on the stream's most punctual token), p50
   and p99 in ms. Target p99 < 5 ms.

Without ``wrk`` (``apt-get install wrk``) parts 1–2 record that and go on.

Usage: ``.venv/bin/python benchmarks/sim_capacity.py [--quick]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    STEADY_PROFILE,
    ZERO_PROFILE,
    SimFarm,
    clean,
    interleaved,
    median,
    quantile,
    write_result,
)
from client_overhead import _kit

MODEL = "llama3.2:3b"
WRK_MISSING = "wrk not installed — apt-get install wrk"


def _lua(stream: bool, num_predict: int) -> str:
    body = json.dumps({"model": MODEL, "prompt": "Why is the sky blue?", "stream": stream,
                       "options": {"num_predict": num_predict}})
    return (f'wrk.method = "POST"\nwrk.body = {json.dumps(body)}\n'
            f'wrk.headers["Content-Type"] = "application/json"\n')


def wrk(url: str, *, connections: int, seconds: float, stream: bool, num_predict: int
        ) -> dict[str, Any]:
    """One ``wrk`` run (1 thread); requests/s and errors, parsed from its report."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(_lua(stream, num_predict))
        script = f.name
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "-s", script,
           f"{url}/api/generate"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30).stdout
    Path(script).unlink(missing_ok=True)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    done = re.search(r"(\d+) requests in", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: (.*)", out)
    if rps is None:
        raise RuntimeError(f"could not read wrk's report:\n{out}")
    return {"requests_per_s": float(rps.group(1)), "requests": int(done.group(1)) if done else 0,
            "non_2xx": int(errors.group(1)) if errors else 0,
            "socket_errors": sock.group(1) if sock else ""}


def request_rate(quick: bool) -> dict[str, Any]:
    reps = 2 if quick else 3
    seconds = 2.0 if quick else 4.0
    n_kit = 500 if quick else 2000
    have_wrk = shutil.which("wrk") is not None
    with SimFarm(1, profile=ZERO_PROFILE, slots=64) as farm:
        url = farm.urls[0]
        variants = {"kit": lambda: asyncio.run(_kit(url, n_kit, 32))}
        wrk_runs: list[dict[str, Any]] = []
        if have_wrk:
            def run_wrk() -> float:
                r = wrk(url, connections=32, seconds=seconds, stream=False, num_predict=1)
                wrk_runs.append(r)
                return float(r["requests_per_s"])
            variants["wrk"] = run_wrk
        interleaved(1, variants)  # warm-up
        wrk_runs.clear()
        samples = interleaved(reps, variants)
        stream_runs = []
        if have_wrk:
            for _ in range(reps):
                stream_runs.append(wrk(url, connections=64, seconds=seconds, stream=True,
                                       num_predict=200))
    out: dict[str, Any] = {"repetitions": reps, "kit_requests": n_kit,
                           "kit_requests_per_s_samples": samples["kit"],
                           "kit_requests_per_s_median": median(samples["kit"])}
    if not have_wrk:
        out["wrk"] = WRK_MISSING
        out["streamed"] = WRK_MISSING
        return out
    sim_rps = median(samples["wrk"])
    out.update({
        "wrk_requests_per_s_samples": samples["wrk"], "wrk_requests_per_s_median": sim_rps,
        "wrk_runs": wrk_runs, "sim_vs_kit": sim_rps / out["kit_requests_per_s_median"],
        "target_sim_vs_kit": "≥ 2", "met_sim_vs_kit": sim_rps >= 2 * out["kit_requests_per_s_median"],
    })
    tokens = [r["requests_per_s"] * 200 for r in stream_runs]
    out["streamed"] = {"connections": 64, "tokens_per_request": 200, "runs": stream_runs,
                       "tokens_per_s_samples": tokens, "tokens_per_s_median": median(tokens),
                       "target": "≥ 20,000 tokens/s", "met": median(tokens) >= 20_000}
    return out


async def _stream(host: str, port: int, body: bytes, arrivals: list[float]) -> None:
    """One streamed request over a raw socket; appends the arrival time of each token line."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"POST /api/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    await writer.drain()
    while True:
        line = await reader.readline()
        if not line:
            break
        if line.startswith(b"{"):
            if b'"done":true' in line:
                break
            arrivals.append(time.perf_counter())
    writer.close()


async def _delays(url: str, streams: int, tokens: int, step_s: float) -> dict[str, Any]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    body = json.dumps({"model": MODEL, "prompt": "steady", "options":
                       {"num_predict": tokens}}).encode()
    per_stream: list[list[float]] = [[] for _ in range(streams)]
    t0 = time.perf_counter()
    await asyncio.gather(*(_stream(host, int(port), body, a) for a in per_stream))
    wall = time.perf_counter() - t0
    delays_ms: list[float] = []
    for arrivals in per_stream:
        offsets = [a - i * step_s for i, a in enumerate(arrivals)]
        best = min(offsets)
        delays_ms.extend((o - best) * 1000 for o in offsets)
    got = sum(len(a) for a in per_stream)
    return {"streams": streams, "tokens_per_stream": tokens, "planned_step_ms": step_s * 1000,
            "tokens_received": got, "wall_s": wall,
            "added_delay_ms_p50": quantile(delays_ms, 0.5),
            "added_delay_ms_p99": quantile(delays_ms, 0.99),
            "added_delay_ms_max": max(delays_ms) if delays_ms else float("nan")}


def added_delay(quick: bool) -> dict[str, Any]:
    tokens = 100 if quick else 300
    reps = 1 if quick else 3
    runs = []
    with SimFarm(1, profile=STEADY_PROFILE, slots=64) as farm:
        for _ in range(reps):
            runs.append(asyncio.run(_delays(farm.urls[0], 64, tokens, 0.01)))
    p99 = median([r["added_delay_ms_p99"] for r in runs])
    return {"runs": runs, "added_delay_ms_p99_median": p99,
            "added_delay_ms_p50_median": median([r["added_delay_ms_p50"] for r in runs]),
            "method": "arrival − (stream's most punctual offset + i × 10 ms planned step)",
            "target": "p99 < 5 ms at 64 streams", "met": p99 < 5.0}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs, fewer repetitions")
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    args = parser.parse_args(argv)
    rate = request_rate(args.quick)
    delay = added_delay(args.quick)
    result = clean({"requests": rate, "added_delay_64_streams": delay})
    path = write_result("sim_capacity" + ("_quick" if args.quick else ""), result, args.out)
    if isinstance(rate.get("streamed"), dict):
        print(f"simulator: wrk {rate['wrk_requests_per_s_median']:,.0f} req/s vs kit client "
              f"{rate['kit_requests_per_s_median']:,.0f} (×{rate['sim_vs_kit']:.2f}); streamed "
              f"{rate['streamed']['tokens_per_s_median']:,.0f} tokens/s")
    else:
        print(f"simulator: {WRK_MISSING}; kit client {rate['kit_requests_per_s_median']:,.0f} req/s")
    print(f"added delay at 64 streams: p50 {delay['added_delay_ms_p50_median']:.2f} ms, p99 "
          f"{delay['added_delay_ms_p99_median']:.2f} ms  → {path}")
    return result


if __name__ == "__main__":
    main()
