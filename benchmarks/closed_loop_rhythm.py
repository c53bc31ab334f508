"""Why two clients at the same concurrency see different latencies from one simulator.

``benchmarks/peers.py`` measured, at concurrency 4 on the rtx4090 profile (4 slots, ≈ 600
prompt tokens, 32 output tokens), latency p50 447 ms and ITL 11.9 ms with the kit and 417 ms
and 11.1 ms with GuideLLM — yet both ask for the same 32 tokens (GuideLLM sends
``max_completion_tokens: 32`` and ``ignore_eos``; the simulator honours it) and both report ≈ 74 ms
TTFT. The difference is the rhythm of the closed loop, not a definition: in the simulator's
latency model a request's prompt is processed in its slot without slowing the decode batch,
and each decode step takes ``k / (decode_tps·S(k))`` for the k requests decoding. A client that
sends the next request the instant one finishes keeps its four streams in lockstep: they
prefill together, then decode four at a time (k = 4: 12.2 ms a token). A client whose
turnaround varies from request to request (GuideLLM's is several milliseconds of Python per
request, 8.7 ms CPU at concurrency 64) lets the streams drift apart, so one prefills while
three decode (k = 3: 10.2 ms a token): lower ITL, lower latency, more requests/s.

This script runs the simulator's own engine on a virtual clock
(:mod:`parallel_kit.sim.virtual_clock`: the engine's step rules, exactly, whatever the machine's
load) with four closed-loop streams and a client turnaround between one answer and the next
request drawn from: nothing; a constant; an exponential with the same mean (the turnaround
means are what ``peers.json`` implies: 4 ÷ requests/s − mean latency). Model seconds = clock
seconds here (time scale 1).

The same five cases run again on ``bench-linear-rtx4090`` (rtx4090's single-stream speeds with
S(k) = k, ``peers.py``'s ``c4_linear`` section): there a step takes 4.4 ms whatever k is, so the
rhythm can move only the phase of the step grid a finished prompt joins — what makes that
profile the fair ground for comparing clients.

Usage: ``.venv/bin/python benchmarks/closed_loop_rhythm.py``
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import LINEAR_PROFILE, clean, median, write_result, zero_profile_file
from _peers_common import C4_PROFILE, TOKENS, prompt

from parallel_kit.sim import timer as timer_module
from parallel_kit.sim.engine import Done, GenerateRequest, SimEngine
from parallel_kit.sim.profiles import load_profile
from parallel_kit.sim.virtual_clock import VirtualClockLoop, loop_timer

N = 100
STREAMS = 4


def run(gap: Callable[[random.Random], float], seed: int = 1,
        profile_name: str = C4_PROFILE) -> dict[str, float]:
    """N requests through STREAMS closed-loop streams on ``profile_name`` (a packaged profile
    or one of the benchmarks' own); figures in milliseconds."""
    profile = load_profile(profile_name, path=zero_profile_file())
    model = profile.default_model
    rng = random.Random(seed)
    rows: list[tuple[float, float, float, int]] = []  # send, first token, last token, tokens

    async def main() -> float:
        loop = asyncio.get_running_loop()
        engine = SimEngine(profile, num_parallel=STREAMS, keep_alive_s=math.inf)
        await engine.load(model)
        todo = iter(range(N))

        async def stream() -> None:
            for i in todo:
                send = loop.time()
                first = last = math.nan
                count = 0
                async for item in engine.generate(GenerateRequest(
                        model=model, prompt=prompt(i, True), num_predict=TOKENS)):
                    if isinstance(item, Done):
                        break
                    count += 1
                    last = loop.time()
                    if count == 1:
                        first = last
                rows.append((send, first, last, count))
                await asyncio.sleep(gap(rng))

        t0 = loop.time()
        await asyncio.gather(*(stream() for _ in range(STREAMS)))
        span = max(r[2] for r in rows) - t0
        await engine.aclose()
        return span

    # The engine's sub-millisecond waker runs on the real clock; on a virtual clock the
    # loop's own timers are exact.
    original = timer_module.TIMER.wait_until
    timer_module.TIMER.wait_until = loop_timer  # type: ignore[method-assign]
    loop = VirtualClockLoop()
    try:
        span = loop.run_until_complete(main())
    finally:
        loop.close()
        timer_module.TIMER.wait_until = original  # type: ignore[method-assign]
    itl = [(last - first) / (n - 1) for _, first, last, n in rows if n > 1]
    return {"latency_p50_ms": median([r[2] - r[0] for r in rows]) * 1e3,
            "ttft_p50_ms": median([r[1] - r[0] for r in rows]) * 1e3,
            "itl_mean_ms": sum(itl) / len(itl) * 1e3,
            "requests_per_s": len(rows) / span}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    args = parser.parse_args(argv)
    # Turnarounds peers.json implies (4 ÷ req/s − mean latency): kit ≈ 6 ms, GuideLLM ≈ 10 ms.
    cases: dict[str, Callable[[random.Random], float]] = {
        "no turnaround (lockstep)": lambda r: 0.0,
        "constant 6 ms": lambda r: 0.006,
        "constant 10 ms": lambda r: 0.010,
        "exponential, mean 6 ms": lambda r: r.expovariate(1 / 0.006),
        "exponential, mean 10 ms": lambda r: r.expovariate(1 / 0.010),
    }
    out = {name: run(gap) for name, gap in cases.items()}
    # The same streams on S(k) = k (peers.py's c4_linear section): only the phase of the decode
    # grid a request joins depends on the rhythm.
    linear = {name: run(gap, profile_name=LINEAR_PROFILE) for name, gap in cases.items()}
    for title, table in ((C4_PROFILE, out), (LINEAR_PROFILE, linear)):
        print(title)
        for name, fig in table.items():
            print(f"  {name:26s} latency p50 {fig['latency_p50_ms']:6.1f} ms  TTFT p50 "
                  f"{fig['ttft_p50_ms']:5.1f} ms  ITL {fig['itl_mean_ms']:5.2f} ms  "
                  f"{fig['requests_per_s']:5.2f} req/s")
    result = {"profile": C4_PROFILE, "slots": STREAMS, "concurrency": STREAMS, "requests": N,
              "output_tokens": TOKENS, "prompt_tokens": "≈ 600",
              "clock": "virtual (engine step rules, exact; machine load irrelevant)",
              "cases": out, "linear_profile": LINEAR_PROFILE, "linear_cases": linear}
    path = write_result("closed_loop_rhythm", clean(result), args.out)
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
