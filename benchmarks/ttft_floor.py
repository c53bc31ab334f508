"""What an idle server's TTFT error is made of: the loopback HTTP round trip is its floor.

``client_overhead.py`` measures the TTFT error on an idle simulator (time scale 0.02, seed
profile: the first token is due one decode step, 0.1 model s = 2 clock ms, after the request
arrives): median 1.15 ms with the simulator's h11 parser, 1.05 ms with httptools (target
< 1 ms). This script splits it, interleaving, on one keep-alive connection to the same
simulator process:

* ``round_trip`` — ``GET /api/version`` over a raw socket (no HTTP client library at all):
  the request written, uvicorn parses it, the app answers, the client reads the answer. Any
  TTFT measured from outside the server contains at least this (the request must reach the
  server and the first token must come back).
* ``ttft_error`` — the kit's client (``OllamaClient.run``) measuring TTFT of a 2-token
  generation minus the 2 ms the simulator schedules.

If the TTFT error's median is close to the round trip's, nothing in the kit's client or in
the simulator's schedule is left to remove: what remains is the machine passing bytes between
two processes and waking two event loops.

Usage: ``.venv/bin/python benchmarks/ttft_floor.py [--n 200]``
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SimFarm, machine, median, quantile, write_result
from client_overhead import _ttft

TIME_SCALE = 0.02


async def _round_trips(url: str, n: int) -> list[float]:
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    request = f"GET /api/version HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n".encode()
    out: list[float] = []
    try:
        for i in range(n + 3):
            t0 = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            await reader.readexactly(length)
            if i >= 3:
                out.append((time.perf_counter() - t0) * 1000)
            await asyncio.sleep(0.005)
    finally:
        writer.close()
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200, help="requests per batch (4 batches each)")
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    args = parser.parse_args(argv)
    load_before = machine()["load_avg_1_5_15"]
    rt: list[float] = []
    err: list[float] = []
    with SimFarm(1, profile="seed", time_scale=TIME_SCALE) as farm:
        url = farm.urls[0]
        for _ in range(4):  # interleaved, so both see the same machine
            rt += asyncio.run(_round_trips(url, args.n // 4))
            err += asyncio.run(_ttft(url, args.n // 4, TIME_SCALE))
    result = {
        "time_scale": TIME_SCALE, "requests_each": len(rt), "load_before": load_before,
        "round_trip_ms": {"median": median(rt), "p10": quantile(rt, 0.1),
                          "p90": quantile(rt, 0.9)},
        "ttft_error_ms": {"median": median(err), "p10": quantile(err, 0.1),
                          "p90": quantile(err, 0.9)},
        "ttft_error_minus_round_trip_ms": median(err) - median(rt),
        "target": "TTFT error median < 1 ms",
    }
    for k in ("round_trip_ms", "ttft_error_ms"):
        v = result[k]
        print(f"{k:15s} median {v['median']:.3f}  p10 {v['p10']:.3f}  p90 {v['p90']:.3f}")
    print(f"error − round trip: {result['ttft_error_minus_round_trip_ms']:.3f} ms; load before "
          f"{load_before}")
    print(f"wrote {write_result('ttft_floor', result, args.out)}")
    return result


if __name__ == "__main__":
    main()
