"""The pool mode and its dispatcher: least outstanding, slots respected, lost workers survived."""

from __future__ import annotations

import asyncio
import contextlib
import math
import subprocess
import sys
import time
from collections.abc import Callable

import httpx
import pytest
from _sims import assert_two_rounds_one_at_a_time, server_stats, sims

from parallel_kit.config import Endpoint
from parallel_kit.errors import AllWorkersLost, ConfigError, OllamaUnavailable, WorkerLost
from parallel_kit.modes.base import ModeContext
from parallel_kit.modes.pool import Dispatcher, EndpointPool, PoolWorker, run_pool
from parallel_kit.records import RequestResult, RequestSpec
from parallel_kit.servers.launcher import free_port, stop_process
from parallel_kit.sim.faults import Faults
from parallel_kit.sim.server import SimulatedOllama
from parallel_kit.timing import ModelClock

SCALE = 0.02


def specs(n: int) -> list[RequestSpec]:
    return [RequestSpec(f"prompt {i}", request_id=f"r{i}") for i in range(n)]


class FakeWorker:
    """A worker whose requests take ``hold`` clock seconds — or, given a ``gate``, last until
    the test opens it; records what ran at once."""

    def __init__(self, name: str, hold: float = 0.02, die_on: int | None = None,
                 gate: asyncio.Event | None = None) -> None:
        self.name = name
        self.hold = hold
        self.gate = gate
        self.die_on = die_on
        self.active = 0
        self.max_active = 0
        self.calls: list[str] = []

    async def send(self, spec: RequestSpec, submitted_s: float) -> RequestResult:
        self.calls.append(spec.request_id)
        if self.die_on is not None and len(self.calls) >= self.die_on:
            raise WorkerLost(self.name, "stopped answering")
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            if self.gate is not None:
                await self.gate.wait()
            else:
                await asyncio.sleep(self.hold)
        finally:
            self.active -= 1
        return RequestResult(spec.request_id, "pool", spec.prompt, "m", worker=self.name,
                             submitted_s=submitted_s, ok=True)


async def until(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    """Yield to the loop until ``condition()`` holds (a hook, not a fixed sleep)."""
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0)
    await asyncio.wait_for(poll(), timeout_s)


def dispatcher(fakes: list[FakeWorker], slots: int = 1) -> Dispatcher:
    workers = [PoolWorker(f.name, slots, f.send) for f in fakes]
    return Dispatcher(workers, clock=ModelClock(SCALE), mode="pool", model="m")


async def test_requests_spread_evenly_and_never_exceed_slots() -> None:
    fakes = [FakeWorker(f"w{i}") for i in range(3)]
    d = dispatcher(fakes, slots=2)
    rows = await asyncio.gather(*(d.run(s) for s in specs(12)))
    assert all(r.ok for r in rows)
    assert [len(f.calls) for f in fakes] == [4, 4, 4]
    assert max(f.max_active for f in fakes) == 2


async def test_fourth_request_waits_for_a_free_slot_then_goes_first_come_first_served() -> None:
    gate_a, gate_b = asyncio.Event(), asyncio.Event()
    fakes = [FakeWorker("a", gate=gate_a), FakeWorker("b", gate=gate_b)]
    d = dispatcher(fakes)
    tasks = [asyncio.create_task(d.run(s)) for s in specs(4)]
    await until(lambda: len(fakes[0].calls) + len(fakes[1].calls) == 2)
    assert fakes[0].calls == ["r0"] and fakes[1].calls == ["r1"]
    gate_a.set()  # "a" frees first
    await until(lambda: len(fakes[0].calls) == 3)
    gate_b.set()
    await asyncio.gather(*tasks)
    # "a" frees first and takes the oldest waiting request, then the next one.
    assert fakes[0].calls == ["r0", "r2", "r3"]


async def test_lost_worker_request_is_retried_on_another() -> None:
    fakes = [FakeWorker("a"), FakeWorker("b", die_on=2), FakeWorker("c")]
    d = dispatcher(fakes)
    rows = await asyncio.gather(*(d.run(s) for s in specs(9)))
    assert all(r.ok for r in rows)
    assert sum(r.retries for r in rows) == 1
    assert [w["worker"] for w in d.lost_workers] == ["b"]
    assert not any(r.worker == "b" for r in rows if r.request_id not in ("r1",))
    assert len(fakes[1].calls) == 2


async def test_every_worker_lost_raises_with_a_row_per_request() -> None:
    from parallel_kit.modes.pool import dispatch_all

    fakes = [FakeWorker("a", die_on=1), FakeWorker("b", die_on=2)]
    d = dispatcher(fakes)
    with pytest.raises(AllWorkersLost) as info:
        await dispatch_all(d, specs(5))
    partial = info.value.partial
    assert [r.request_id for r in partial] == [f"r{i}" for i in range(5)]
    assert sum(r.ok for r in partial) == 1  # b served one before it died
    assert all(r.error for r in partial if not r.ok)


async def test_cancelled_waiter_does_not_leak_a_slot() -> None:
    gate = asyncio.Event()
    fakes = [FakeWorker("a", gate=gate)]
    d = dispatcher(fakes)
    first = asyncio.create_task(d.run(specs(1)[0]))
    waiting = asyncio.create_task(d.run(RequestSpec("x", request_id="x")))
    await until(lambda: fakes[0].calls == ["r0"])
    waiting.cancel()
    gate.set()
    with contextlib.suppress(asyncio.CancelledError):
        await waiting
    await first
    assert d.workers[0].outstanding == 0
    assert (await d.run(RequestSpec("y", request_id="y"))).ok


def ctx_for(servers: list[SimulatedOllama]) -> ModeContext:
    return ModeContext([Endpoint(s.url, slots=s.num_parallel, name=f"gpu{i}", gpu=str(i))
                        for i, s in enumerate(servers)], backend="sim", time_scale=SCALE)


async def test_six_requests_on_three_one_slot_endpoints_put_two_on_each() -> None:
    async with sims(3) as servers:
        run = await run_pool(specs(6), ctx_for(servers))
        stats = await server_stats(servers)
    assert run.summary.ok == 6
    assert [s["completed"] for s in stats] == [2, 2, 2]
    assert [s["max_active"] for s in stats] == [1, 1, 1]
    assert sorted(r.worker for r in run.requests) == ["gpu0"] * 2 + ["gpu1"] * 2 + ["gpu2"] * 2


@pytest.fixture(scope="module")
def sim_processes():
    """Three `parallel-kit sim` processes: one Ollama per GPU, each in its own process."""
    ports = [free_port() for _ in range(3)]
    procs = [subprocess.Popen([sys.executable, "-m", "parallel_kit", "sim", "--port", str(p),
                               "--time-scale", str(SCALE)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for p in ports]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    try:
        deadline = time.monotonic() + 30
        for url in urls:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(url + "/", trust_env=False).status_code == 200:
                        break
                assert time.monotonic() < deadline, f"simulator at {url} did not start"
                time.sleep(0.05)
        yield urls
    finally:
        for p in procs:
            stop_process(p, 10.0)


async def test_seed_scenario_on_three_endpoints_runs_two_rounds(sim_processes) -> None:
    ctx = ModeContext([Endpoint(u, name=f"gpu{i}") for i, u in enumerate(sim_processes)],
                      backend="sim", time_scale=SCALE)
    run = await run_pool(specs(5), ctx)
    assert run.summary.ok == 5
    assert_two_rounds_one_at_a_time(run.requests)
    assert run.summary.workers == 3 and run.summary.setup_s is not None


async def test_endpoint_that_stops_after_one_request_loses_nothing() -> None:
    async with sims(3, {1: Faults(stop_after=1)}) as servers:
        run = await run_pool(specs(6), ctx_for(servers))
    assert run.summary.ok == 6 and run.summary.failed == 0
    assert run.summary.retries >= 1
    assert [w["worker"] for w in run.summary.lost_workers] == ["gpu1"]
    assert not math.isnan(run.summary.lost_workers[0]["at_s"])
    assert sum(r.worker == "gpu1" for r in run.requests) == 1


async def test_all_endpoints_stopping_raises_with_partial_results() -> None:
    async with sims(2, {0: Faults(stop_after=1), 1: Faults(stop_after=1)}) as servers:
        with pytest.raises(AllWorkersLost) as info:
            await run_pool(specs(5), ctx_for(servers))
    partial = info.value.partial
    assert partial.summary.n == 5 and partial.summary.ok == 2
    assert len(partial.summary.lost_workers) == 2


async def test_host_that_does_not_answer_is_named() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    async with sims(1) as servers:
        ctx = ModeContext([Endpoint(servers[0].url), Endpoint(dead)], time_scale=SCALE)
        with pytest.raises(OllamaUnavailable, match=dead.replace(".", r"\.")):
            await run_pool(specs(2), ctx)


async def test_endpoint_pool_is_a_backend_callable() -> None:
    async with sims(2) as servers:
        clock = ModelClock(SCALE)
        eps = [Endpoint(s.url, name=f"gpu{i}") for i, s in enumerate(servers)]
        async with EndpointPool(eps, clock=clock) as pool:
            rows = await asyncio.gather(pool(RequestSpec("a")), pool(RequestSpec("b")))
    assert {r.worker for r in rows} == {"gpu0", "gpu1"} and all(r.ok for r in rows)


async def test_prefetch_lets_a_worker_hold_one_request_beyond_its_slots() -> None:
    gate = asyncio.Event()
    fakes = [FakeWorker("a", gate=gate), FakeWorker("b", gate=gate)]
    workers = [PoolWorker(f.name, 1, f.send) for f in fakes]
    d = Dispatcher(workers, clock=ModelClock(SCALE), prefetch=1)
    tasks = [asyncio.create_task(d.run(s)) for s in specs(5)]
    await until(lambda: len(fakes[0].calls) + len(fakes[1].calls) == 4)
    for _ in range(10):
        await asyncio.sleep(0)  # room for a wrong fifth dispatch to show
    # Two per worker at once (1 slot + 1 prefetched), least outstanding first; the fifth waits.
    assert fakes[0].calls == ["r0", "r2"] and fakes[1].calls == ["r1", "r3"]
    gate.set()
    await asyncio.gather(*tasks)
    assert max(f.max_active for f in fakes) == 2


@pytest.mark.parametrize("bad", [-1, 1.5, "1", True])
def test_prefetch_must_be_a_whole_number(bad) -> None:
    with pytest.raises(ConfigError, match="prefetch"):
        Dispatcher([PoolWorker("a", 1, FakeWorker("a").send)], clock=ModelClock(SCALE),
                   prefetch=bad)


async def test_pool_opens_a_connection_per_slot_before_the_first_request() -> None:
    async with sims(2) as servers:
        eps = [Endpoint(s.url, name=f"gpu{i}", slots=1) for i, s in enumerate(servers)]
        async with EndpointPool(eps, clock=ModelClock(SCALE)) as pool:
            assert [len(c._lanes._all) for c in pool.clients] == [0, 0]
            await pool.warm_up()
            assert [len(c._lanes._all) for c in pool.clients] == [1, 1]
            rows = await asyncio.gather(pool(RequestSpec("a")), pool(RequestSpec("b")))
            # The requests reused the warm connections: no new lane (connection) was opened.
            assert [len(c._lanes._all) for c in pool.clients] == [1, 1]
    assert all(r.ok for r in rows)
