"""Modes async and batch: a queue in front of one Ollama, measured against the simulator."""

from __future__ import annotations

import httpx
import pytest

from parallel_kit.config import Endpoint
from parallel_kit.modes.base import ModeContext, get_mode
from parallel_kit.modes.options import QueueOptions
from parallel_kit.prompts import make_specs
from parallel_kit.records import RequestSpec
from parallel_kit.sim.server import SimulatedOllama

SCALE = 0.02


def context(sim: SimulatedOllama, concurrency: int = 5) -> ModeContext:
    return ModeContext(endpoints=[Endpoint(sim.url, slots=sim.num_parallel)], backend="sim",
                       time_scale=SCALE, queue=QueueOptions(concurrency=concurrency))


@pytest.mark.parametrize("mode", ["async", "batch"])
async def test_seed_scenario_accepts_at_once_and_takes_fifty_seconds(mode: str) -> None:
    async with SimulatedOllama("seed", time_scale=SCALE, num_parallel=1) as sim:
        run = await get_mode(mode)(make_specs(5), context(sim))
    s = run.summary
    assert s.mode == mode and s.n == 5 and s.ok == 5
    assert s.submit_s is not None and s.submit_s < 0.1  # clock seconds, never scaled
    # One slot: 5 × 10 s whatever the queue — a floor a busy machine only adds to (how close
    # it stays is benchmarks/fidelity.py's measure).
    assert s.makespan_s >= 50.0 - 0.05
    rows = run.requests
    assert [r.request_id for r in rows] == ["r0", "r1", "r2", "r3", "r4"]
    assert all(r.mode == mode for r in rows)
    assert max(r.submitted_s for r in rows) < 5.0  # all accepted near the start (model s)
    # 5 workers, 1 slot: all five are sent at once and wait in Ollama's own FIFO, so the
    # last one's first token comes only after four have run.
    assert max(r.started_s for r in rows) < 5.0
    assert max(r.first_token_s for r in rows) >= 39.0
    assert rows[-1].latency_s == pytest.approx(rows[-1].finished_s - rows[-1].submitted_s)


async def test_concurrency_bounds_what_the_server_sees() -> None:
    async with SimulatedOllama("seed", time_scale=SCALE, num_parallel=8) as sim:
        run = await get_mode("batch")(make_specs(6), context(sim, concurrency=2))
        async with httpx.AsyncClient(trust_env=False) as http:
            stats = (await http.get(f"{sim.url}/sim/stats")).json()
    assert stats["max_active"] == 2  # measured by the server, not the queue
    assert run.summary.ok == 6


async def test_a_failed_request_is_a_failed_row_not_a_missing_one() -> None:
    specs = [RequestSpec("fine", request_id="a"), RequestSpec("x", model="ghost:7b",
                                                              request_id="b")]
    async with SimulatedOllama("seed", time_scale=SCALE) as sim:
        run = await get_mode("async")(specs, context(sim))
    assert [r.request_id for r in run.requests] == ["a", "b"]
    bad = run.requests[1]
    assert not bad.ok and "ghost:7b" in (bad.error or "")
    assert run.summary.failed == 1 and run.summary.ok == 1
