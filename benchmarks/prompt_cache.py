"""The prompt cache on the simulator: which conversation turns hit, by slots and host RAM, and
the measurement trap of an unsalted sweep.

Part 1 — three conversations taking turns (``--workload multi-turn``, 4 turns, sequential) on
one simulated Ollama (profile ``m4-mac-mini``: prefill 500 tokens/s, so prefill shows in TTFT),
with 1–4 slots and llama-server's host-RAM cache off (``cache_ram_mib=0``) or at Ollama's
default 8192 MiB. For each: theory's later-turn hit prediction
(:func:`parallel_kit.theory.predict_turn_hits`), the turns that hit (over half their prompt from
the cache, inferred from ``prompt_eval_count`` and ``prompt_eval_duration``), the server's own
cached-token count (``/sim/stats``) and TTFT by turn.

Part 2 — a 3-cell sweep of five prompts sharing a 300-token prefix on one server, unsalted and
salted: mean TTFT, inferred hit rate and the flag of each cell.

Usage: ``.venv/bin/python benchmarks/prompt_cache.py``
"""

from __future__ import annotations

import asyncio

from parallel_kit import theory
from parallel_kit.bench import compare
from parallel_kit.bench.sweep import sweep
from parallel_kit.metrics import infer_prompt_cache, ttft_by_turn
from parallel_kit.sim.profiles import load_profile
from parallel_kit.sim.server import SimulatedOllama
from parallel_kit.workload.prompts import shared_prefix_specs, turn_of

PROFILE, SCALE, CONVERSATIONS, TURNS = "m4-mac-mini", 0.05, 3, 4


async def turns(slots: int, ram: int) -> None:
    prof = load_profile(PROFILE)
    async with SimulatedOllama(PROFILE, num_parallel=slots, time_scale=SCALE,
                               cache_ram_mib=ram, keep_alive=-1) as sim:
        comp = await compare(["sequential"], n=CONVERSATIONS * TURNS, hosts=[sim.url],
                             time_scale=SCALE, num_predict=16, workload="multi-turn")
        stats = sim.stats()["prompt_cache"]
    run = comp.runs[0]
    inf = infer_prompt_cache(run.requests, prof.speed().prefill_tps)
    assert inf is not None
    later = [(r, c) for r, c in zip(run.requests, inf.cached, strict=True)
             if (turn_of(r.request_id) or 0) > 0]
    hits = sum(c is not None and c > (r.prompt_tokens or 0) / 2 for r, c in later)
    states = theory.host_cache_states(ram, prof.speed().kv_bytes_per_token,
                                      max(r.prompt_tokens or 0 for r in run.requests))
    predicted = theory.predict_turn_hits(CONVERSATIONS, slots, states)
    by_turn = ", ".join(f"t{t} {v:.2f}" for t, v in ttft_by_turn(run.requests).items())
    print(f"{slots:>5} {ram:>9} {predicted:>9.0%} {hits:>4}/{len(later):<3} "
          f"{inf.hit_rate:>8.0%} {stats['cached_tokens']:>6}/{stats['prompt_tokens']:<6} "
          f"{by_turn}")


async def trap(salt: bool) -> None:
    prompts = shared_prefix_specs(5, prefix_tokens=300)
    async with SimulatedOllama(PROFILE, time_scale=SCALE, keep_alive=-1) as sim:
        res = await sweep("sequential", [0.02, 0.03, 0.04], n=5, prompts=prompts,
                          hosts=[sim.url], time_scale=SCALE, num_predict=16, salt=salt)
    for i, r in enumerate(res.runs):
        s = r.summary
        print(f"{salt!s:>6} {i:>4} {s.offered_rps:>7.2f} {s.ttft_mean_s:>10.2f} "
              f"{(s.cache_hit_rate or 0):>9.0%} {s.cache_flagged!s:>8}")


async def main() -> None:
    print(f"profile {PROFILE}, time scale {SCALE}; {CONVERSATIONS} conversations × {TURNS} "
          f"turns, sequential")
    print("slots  RAM (MiB) predicted  hits  hit rate  server cached   TTFT by turn (model s)")
    for ram in (0, 8192):
        for slots in (1, 2, 3, 4):
            await turns(slots, ram)
    print("\nsalted cell  rate/s  TTFT mean  hit rate  flagged")
    await trap(False)
    await trap(True)


if __name__ == "__main__":
    asyncio.run(main())
