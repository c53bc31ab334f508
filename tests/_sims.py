"""Shared by the multi-endpoint tests: several simulators, and what each one saw."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator
from typing import Any

from parallel_kit.records import RequestResult
from parallel_kit.servers.backend import sim_info
from parallel_kit.sim.faults import Faults
from parallel_kit.sim.server import SimulatedOllama


@contextlib.asynccontextmanager
async def sims(n: int, faults: dict[int, Faults] | None = None, *,
               time_scale: float = 0.02) -> AsyncIterator[list[SimulatedOllama]]:
    """``n`` seed-profile simulators in this loop; ``faults`` by server index."""
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(
            SimulatedOllama("seed", time_scale=time_scale, faults=(faults or {}).get(i)))
            for i in range(n)]


async def server_stats(servers: list[SimulatedOllama]) -> list[dict[str, Any]]:
    """Each server's own count (``/sim/stats``): what ran there, and how many at once."""
    return [await sim_info(s.url) or {} for s in servers]


def assert_two_rounds_one_at_a_time(rows: list[RequestResult]) -> None:
    """The seed scenario's shape from the rows: ⌈5/3⌉ = 2 rounds, one request per server at a
    time. How close the makespan comes to 20 s is a benchmark (benchmarks/fidelity.py), not a
    test: on a busy machine it drifts, the shape does not."""
    by_worker: dict[str | None, list[RequestResult]] = {}
    for r in rows:
        by_worker.setdefault(r.worker, []).append(r)
    assert sorted(len(v) for v in by_worker.values()) == [1, 2, 2]
    for lane in by_worker.values():
        lane.sort(key=lambda r: r.started_s)
        for first, second in itertools.pairwise(lane):
            assert second.started_s >= first.finished_s - 1e-6  # one slot: never two at once
    # Ten model seconds each, so two rounds can never take less than 20.
    assert max(r.finished_s for r in rows) >= 20.0 - 0.05
