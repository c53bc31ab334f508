"""Requests that arrive over time through ``rayserve`` and ``production`` (their open-loop
sessions, :mod:`parallel_kit.production.sessions`).

That requests reached the servers spread over time is read from the servers' own counters
(``/sim/stats``: how many ran at once), never from wall-clock ratios. One Serve application on
three simulators with four slots each is shared by this module — brought up by the mode's own
session opener — and the production test sends through the session's Redis and Celery worker
(``production_stack`` in conftest) to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

import pytest
from _ray import MODULE_TIMEOUT_S

from parallel_kit.bench.loadgen import run_open_loop
from parallel_kit.config import Endpoint
from parallel_kit.modes.base import ModeContext
from parallel_kit.modes.registry import modes
from parallel_kit.production import sessions as stack_sessions
from parallel_kit.records import RequestSpec
from parallel_kit.sim.server import SimulatedOllama
from parallel_kit.workload.arrivals import make_schedule

pytest.importorskip("ray.serve")
pytestmark = [pytest.mark.ray, pytest.mark.timeout(MODULE_TIMEOUT_S)]

TIME_SCALE = 0.02
SLOTS = 4
#: Eight Poisson arrivals, one every 20 model seconds on average, of 10 s requests, on 3 × 4
#: slots: a burst of the same eight would have all eight at the servers at once.
N, RATE, SEED = 8, 0.05, 3


@pytest.fixture(scope="module")
def roomy(serve_session):
    """(session, servers, ctx): ``rayserve_session`` over three 4-slot simulators."""
    serve_session.cluster()
    servers = [SimulatedOllama("seed", time_scale=TIME_SCALE, num_parallel=SLOTS)
               for _ in range(3)]
    urls = [s.start_in_thread() for s in servers]
    ctx = ModeContext([Endpoint(u, slots=SLOTS) for u in urls], backend="sim",
                      time_scale=TIME_SCALE, gpus=3)
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    opened = stack_sessions.rayserve_session(ctx)
    try:
        session = asyncio.run_coroutine_threadsafe(opened.__aenter__(), loop).result(180)
        yield session, servers, ctx
        asyncio.run_coroutine_threadsafe(opened.__aexit__(None, None, None), loop).result(60)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        for s in servers:
            s.stop()


def _use(monkeypatch: pytest.MonkeyPatch, opener: str, session_cm) -> None:
    """The mode's opener yields an already opened session (its bring-up is the fixture's)."""
    monkeypatch.setattr(stack_sessions, opener, lambda ctx: session_cm)


@contextlib.asynccontextmanager
async def _opened(session):
    yield session


def _specs(prefix: str) -> list[RequestSpec]:
    return [RequestSpec(f"prompt {i}", request_id=f"{prefix}{i}") for i in range(N)]


def _assert_open_loop_rows(run, schedule) -> None:
    rows = sorted(run.requests, key=lambda r: r.scheduled_s)
    failed = [(r.request_id, r.error, r.hops) for r in rows if not r.ok]
    assert run.summary.n == N and len(rows) == N
    assert not failed, failed
    for r, t in zip(rows, schedule.times_s, strict=True):
        # The schedule's arrivals, on the run's axis (its origin is the driver's start).
        assert r.scheduled_s - rows[0].scheduled_s == pytest.approx(t - schedule.times_s[0])
        # Handed over at or after its arrival, never before; sent to Ollama after that.
        assert r.queued_s >= r.scheduled_s - 1e-9 and r.submitted_s >= r.queued_s
        assert r.replica and r.worker.startswith("gpu") and r.node
        assert r.queued_s <= r.hops["replica_entered"] <= r.submitted_s < r.finished_s
    o = run.summary.open_loop
    assert o["requests"] == N and o["lag_mean_s"] >= 0 and o["lag_max_s"] >= 0
    assert "lag_p95_clock_ms" in o and o["arrivals"] == "poisson"


def _assert_spread_at_servers(servers, before: list[int]) -> None:
    stats = [s.stats() for s in servers]
    assert sum(st["completed"] for st in stats) - sum(before) == N  # each one ran once
    # Had they come at once, all eight would have been at the servers together.
    assert sum(st["max_active"] for st in stats) < N


async def test_rayserve_open_loop_sends_each_arrival_through_the_handle_as_it_comes(
        roomy, monkeypatch: pytest.MonkeyPatch) -> None:
    session, servers, ctx = roomy
    _use(monkeypatch, "rayserve_session", _opened(session))
    before = [s.stats()["completed"] for s in servers]
    schedule = make_schedule(RATE, n=N, seed=SEED)
    run = await run_open_loop("rayserve", _specs("ol"), schedule, ctx)
    _assert_open_loop_rows(run, schedule)
    assert all(r.mode == "rayserve" for r in run.requests)
    assert run.summary.setup_s == session.setup_s > 0  # Serve's start-up, outside the run
    _assert_spread_at_servers(servers, before)


async def test_production_open_loop_puts_each_arrival_on_the_celery_queue_as_it_comes(
        roomy, production_stack, monkeypatch: pytest.MonkeyPatch) -> None:
    from parallel_kit.production.stack import Stack

    rayserve, servers, ctx = roomy
    # The session's Redis and Celery worker, calling this module's application.
    stack = Stack(production_stack.redis_url, rayserve.app, production_stack.workers,
                  production_stack.settings, setup_s=1.0)
    _use(monkeypatch, "production_session", stack_sessions.stack_session(stack, ctx))
    before = [s.stats()["completed"] for s in servers]
    schedule = make_schedule(RATE, n=N, seed=SEED + 1)
    run = await run_open_loop("production", _specs("op"), schedule, ctx)
    _assert_open_loop_rows(run, schedule)
    for r in run.requests:
        assert r.mode == "production"
        h = r.hops
        # Put on the queue at queued_s; the time in Celery's queue is a hop, and latency and
        # TTFT run from the send to Ollama, never from the queue.
        assert r.queued_s == pytest.approx(h["accepted"])
        assert h["accepted"] <= h["picked_up"] <= h["replica_entered"] <= r.submitted_s
        assert r.queue_wait_s >= h["picked_up"] - h["accepted"]
        assert r.latency_s == pytest.approx(r.finished_s - r.submitted_s)
        assert r.ttft_s == pytest.approx(r.first_token_s - r.submitted_s)
    assert run.summary.setup_s == 1.0
    _assert_spread_at_servers(servers, before)


def test_every_mode_runs_requests_over_time() -> None:
    assert [m.name for m in modes() if m.session is None] == []


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from parallel_kit.cli import main

    code = main(argv)
    return code, capsys.readouterr().err


def test_rate_with_production_and_a_dead_redis_is_the_bursts_one_line(
        capsys: pytest.CaptureFixture[str]) -> None:
    from parallel_kit.servers.launcher import free_port

    dead = f"redis://127.0.0.1:{free_port()}/0"
    code, err = _cli(["bench", "--mode", "production", "--rate", "0.5", "--n", "2",
                      "--redis", dead, "--time-scale", "0.005", "--no-progress"], capsys)
    assert code == 2
    assert f"error: no Redis answers at {dead}" in err and "Traceback" not in err


def test_rate_with_rayserve_and_max_ongoing_zero_is_the_bursts_one_line(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _cli(["bench", "--mode", "rayserve", "--rate", "0.5", "--n", "1",
                      "--max-ongoing", "0"], capsys)
    assert code == 2
    assert err.strip().startswith("error: --max-ongoing 0 must be a whole number ≥ 1")
    assert len(err.strip().splitlines()) == 1
