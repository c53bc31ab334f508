"""Shared by the multi-endpoint tests: several simulators, and what each one saw."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from parallel_kit.backend import sim_info
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
