"""Fault injection with real processes: servers killed (SIGKILL), frozen (SIGSTOP) and restarted
mid-run, in every mode.

What every test asserts: one row per request (nothing lost), every failed row labelled with its
cause, and a run that ends within ``BOUND_S`` clock seconds — generous on purpose (a busy 2-core
machine), yet far below the client's 600 s read timeout a frozen server used to cost. When a
fault happens is decided from the servers' own counters (``/sim/stats``), never a sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from _procs import SimProcess
from _ray import MODULE_TIMEOUT_S, init_local

from parallel_kit.clients import OllamaClient
from parallel_kit.config import Endpoint
from parallel_kit.errors import AllWorkersLost, ConfigError
from parallel_kit.modes.base import ModeContext, get_mode
from parallel_kit.modes.options import QueueOptions, RayOptions
from parallel_kit.modes.pool import EndpointPool, HealthPolicy, dispatch_all
from parallel_kit.records import RequestResult, RequestSpec, RunResult
from parallel_kit.servers.raycluster import check_reachable
from parallel_kit.timing import ModelClock

pytestmark = pytest.mark.timeout(MODULE_TIMEOUT_S)

SCALE = 0.05  # the seed profile's 10 s requests take 0.5 s of clock
#: Clock seconds any faulty run here must finish within.
BOUND_S = 60.0
#: Quick health checks for the tests (the defaults find a frozen server within ~11 s).
QUICK = HealthPolicy(interval_s=0.2, timeout_s=2.0, misses=2, readmit_after=1)


def specs(n: int) -> list[RequestSpec]:
    return [RequestSpec(f"prompt {i}", request_id=f"r{i}") for i in range(n)]


@pytest.fixture(scope="module")
def servers() -> Iterator[list[SimProcess]]:
    procs = [SimProcess(SCALE).start() for _ in range(3)]
    try:
        yield procs
    finally:
        for p in procs:
            p.stop()


@pytest.fixture
def fleet(servers: list[SimProcess]) -> Iterator[list[SimProcess]]:
    """The module's servers, each running and thawed again after the test."""
    yield servers
    for p in servers:
        p.thaw()
        if p.proc is None or p.proc.poll() is not None or not p.answers(5.0):
            p.restart()


def endpoints(procs: list[SimProcess]) -> list[Endpoint]:
    return [Endpoint(p.url, name=f"gpu{i}", gpu=str(i)) for i, p in enumerate(procs)]


async def until(predicate, what: str, timeout_s: float = BOUND_S) -> None:
    """Poll ``predicate()`` (sync or async) every 20 ms until true."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def requests_seen(proc: SimProcess) -> int:
    """Generation requests ``proc`` has received so far (its own count)."""
    async with httpx.AsyncClient(trust_env=False, timeout=5) as c:
        return int((await c.get(proc.url + "/sim/stats")).json()["requests"])


async def started(proc: SimProcess) -> bool:
    """Whether ``proc`` received a request since :func:`mark` (its own count)."""
    return await requests_seen(proc) > proc.mark


async def mark(procs: list[SimProcess]) -> None:
    """Remember each server's count, so :func:`started` sees this run's requests only."""
    for p in procs:
        p.mark = await requests_seen(p)


def assert_complete(rows: list[RequestResult], n: int) -> None:
    """n rows, one per request id, and every failure says why."""
    assert sorted(r.request_id for r in rows) == sorted(f"r{i}" for i in range(n))
    for r in rows:
        assert r.ok or (r.error and len(r.error) > 20), r


# -- pool: frozen, killed and restarted endpoints ----------------------------------------------
async def test_pool_moves_the_request_of_a_frozen_endpoint_to_another(fleet) -> None:
    t0 = time.perf_counter()
    ctx = ModeContext(endpoints(fleet), time_scale=SCALE, queue=QueueOptions(health=QUICK))
    await mark(fleet)
    run = asyncio.create_task(get_mode("pool")(specs(9), ctx))
    await until(lambda: started(fleet[1]), "gpu1's first request")
    fleet[1].freeze()
    result: RunResult = await run
    assert time.perf_counter() - t0 < BOUND_S
    assert_complete(result.requests, 9)
    assert result.summary.ok == 9 and result.summary.retries >= 1
    lost = result.summary.lost_workers
    assert [w["worker"] for w in lost] == ["gpu1"]
    assert "stopped answering health checks" in lost[0]["reason"]


async def test_pool_takes_back_a_frozen_endpoint_once_it_answers_again(fleet) -> None:
    clock = ModelClock(SCALE)
    async with EndpointPool(endpoints(fleet), clock=clock, health=QUICK) as pool:
        clock.start()
        await mark(fleet)
        run = asyncio.create_task(dispatch_all(pool, specs(60)))
        await until(lambda: started(fleet[1]), "gpu1's first request")
        fleet[1].freeze()
        await until(lambda: pool.lost_workers, "gpu1 marked lost")
        assert pool.status == "degraded"
        fleet[1].thaw()
        await until(lambda: pool.readmitted, "gpu1 taken back")
        rows, _ = await run
        assert pool.status == "ok"
    assert_complete(rows, 60)
    back_at = pool.readmitted[0]["at_s"]
    assert any(r.worker == "gpu1" and r.started_s > back_at and r.ok for r in rows)


async def test_pool_takes_back_a_killed_endpoint_restarted_on_its_port(fleet) -> None:
    clock = ModelClock(SCALE)
    async with EndpointPool(endpoints(fleet), clock=clock, health=QUICK) as pool:
        clock.start()
        await mark(fleet)
        run = asyncio.create_task(dispatch_all(pool, specs(60)))
        await until(lambda: started(fleet[2]), "gpu2's first request")
        fleet[2].kill()
        await until(lambda: pool.lost_workers, "gpu2 marked lost")
        await asyncio.to_thread(fleet[2].start)
        await until(lambda: pool.readmitted, "gpu2 taken back")
        rows, _ = await run
    assert_complete(rows, 60)
    # only gpu2 was ever out (a second outage right after its restart may be seen too)
    assert {w["worker"] for w in pool.lost_workers} == {"gpu2"}, pool.lost_workers
    assert any(r.worker == "gpu2" and r.started_s > pool.readmitted[0]["at_s"] for r in rows)


async def test_pool_with_every_endpoint_down_reports_down_then_recovers(fleet) -> None:
    clock = ModelClock(SCALE)
    async with EndpointPool(endpoints(fleet[:2]), clock=clock, health=QUICK) as pool:
        clock.start()
        for p in fleet[:2]:
            p.kill()
        await until(lambda: pool.status == "down", "both endpoints lost")
        with pytest.raises(AllWorkersLost):  # at once, not a hang (the API answers 503)
            await pool(RequestSpec("x", request_id="r0"))
        for p in fleet[:2]:
            await asyncio.to_thread(p.start)
        await until(lambda: pool.status == "ok", "both endpoints taken back")
        row = await pool(RequestSpec("y", request_id="r1"))
    assert row.ok


# -- the single-server modes: killed, frozen then thawed, restarted ---------------------------
@pytest.mark.parametrize("mode", ["sequential", "async", "batch"])
async def test_single_server_killed_mid_run_gives_labelled_failed_rows(fleet, mode) -> None:
    t0 = time.perf_counter()
    ctx = ModeContext(endpoints(fleet[:1]), time_scale=SCALE,
                      queue=QueueOptions(concurrency=2))
    await mark(fleet)
    run = asyncio.create_task(get_mode(mode)(specs(5), ctx))
    await until(lambda: started(fleet[0]), "the first request")
    fleet[0].kill()
    result = await run
    assert time.perf_counter() - t0 < BOUND_S
    assert_complete(result.requests, 5)
    failed = [r for r in result.requests if not r.ok]
    assert failed and all("no Ollama answers" in r.error or "connection" in r.error
                          for r in failed), [r.error for r in failed]


@pytest.mark.parametrize("mode", ["sequential", "async", "batch"])
async def test_single_server_frozen_then_thawed_loses_nothing(fleet, mode) -> None:
    ctx = ModeContext(endpoints(fleet[:1]), time_scale=SCALE,
                      queue=QueueOptions(concurrency=2))
    await mark(fleet)
    run = asyncio.create_task(get_mode(mode)(specs(4), ctx))
    await until(lambda: started(fleet[0]), "the first request")
    fleet[0].freeze()
    # frozen for real: it no longer answers (while the run waits on it)
    assert not await asyncio.to_thread(fleet[0].answers, 0.5)
    fleet[0].thaw()
    result = await asyncio.wait_for(run, BOUND_S)
    assert_complete(result.requests, 4)
    assert result.summary.ok == 4


@pytest.mark.parametrize("mode", ["sequential", "async", "batch"])
async def test_single_server_killed_then_restarted_serves_the_next_run(fleet, mode) -> None:
    """Killed mid-run and restarted on its port: the requests sent while it was down are
    failed rows naming the cause (one server: nowhere to move them), and the next run on the
    same context — no connection kept to the dead process — is all ok."""
    ctx = ModeContext(endpoints(fleet[:1]), time_scale=SCALE,
                      queue=QueueOptions(concurrency=2))
    await mark(fleet)
    run = asyncio.create_task(get_mode(mode)(specs(5), ctx))
    await until(lambda: started(fleet[0]), "the first request")
    fleet[0].kill()
    await asyncio.to_thread(fleet[0].start)
    first = await asyncio.wait_for(run, BOUND_S)
    assert_complete(first.requests, 5)
    after = await asyncio.wait_for(get_mode(mode)(specs(3), ctx), BOUND_S)
    assert_complete(after.requests, 3)
    assert after.summary.ok == 3


# -- deadlines ---------------------------------------------------------------------------------
async def test_a_stream_that_stalls_mid_answer_is_given_up_after_the_chunk_deadline() -> None:
    """A server that sends its headers and one chunk, then nothing, with the socket open."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\n"
                     b"transfer-encoding: chunked\r\n\r\n")
        line = b'{"response":"a","done":false}\n'
        writer.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
        await writer.drain()
        await asyncio.sleep(3600)

    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with OllamaClient(f"127.0.0.1:{port}", timeout=600) as client:
            client.chunk_timeout = 0.5
            client.retry = client.retry.__class__(max_retries=0)
            t0 = time.perf_counter()
            row = await client.run(RequestSpec("x"), clock=ModelClock(1.0).start(), mode="t")
    finally:
        server.close()
    assert time.perf_counter() - t0 < 30
    assert not row.ok and "stalled" in row.error and "0.5 s" in row.error


def test_client_deadlines_are_set_by_what_they_wait_for() -> None:
    client = OllamaClient("127.0.0.1:1", timeout=600)
    timeouts = client._extensions["timeout"]
    assert timeouts["connect"] == 10.0 and timeouts["read"] == 600.0
    assert client.chunk_timeout == 60.0


def test_unreachable_ray_address_fails_fast_naming_the_cause() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match="connection refused"):
        check_reachable(f"127.0.0.1:{port}")
    with pytest.raises(ConfigError, match="does not resolve"):
        check_reachable("no-such-host.invalid:6379")
    # a black-holed address (TEST-NET-1, RFC 5737): bounded by the deadline
    with pytest.raises(ConfigError, match="cannot join"):
        check_reachable("192.0.2.1:6379", timeout_s=0.5)
    assert time.perf_counter() - t0 < 20


# -- ray: frozen endpoints and actors, killed actors --------------------------------------------
@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[object]:
    ray = pytest.importorskip("ray")
    init_local(num_gpus=3)
    yield ray
    ray.shutdown()


def ray_ctx(procs: list[SimProcess], prefix: str) -> ModeContext:
    return ModeContext(endpoints(procs), time_scale=SCALE, gpus=len(procs),
                       queue=QueueOptions(health=QUICK),
                       ray=RayOptions(actor_name_prefix=prefix))


@pytest.mark.ray
@pytest.mark.parametrize("fault", ["freeze", "kill"])
async def test_ray_moves_the_request_of_a_lost_endpoint_and_takes_it_back(
        fleet, ray_cluster, fault) -> None:
    """gpu1's endpoint frozen (found by the actor's health probe), or killed: marked lost, its
    request moved; thawed, or restarted on its port: taken back, later requests run on it."""
    from parallel_kit.modes.ray_gpu import open_ray_dispatcher

    async with open_ray_dispatcher(ray_ctx(fleet, f"r{fault}")) as dispatcher:
        await mark(fleet)
        run = asyncio.create_task(dispatch_all(dispatcher, specs(60)))
        await until(lambda: started(fleet[1]), "gpu1's first request")
        if fault == "freeze":
            fleet[1].freeze()
            await until(lambda: dispatcher.lost_workers, "gpu1 marked lost")
            fleet[1].thaw()
        else:
            fleet[1].kill()
            await until(lambda: dispatcher.lost_workers, "gpu1 marked lost")
            await asyncio.to_thread(fleet[1].start)
        await until(lambda: dispatcher.readmitted, "gpu1 taken back")
        rows, _ = await asyncio.wait_for(run, BOUND_S)
    assert_complete(rows, 60)
    assert all(r.ok for r in rows)
    lost = dispatcher.lost_workers
    assert [w["worker"] for w in lost] == ["gpu1"]
    if fault == "freeze":  # no request error says so: only the probe finds it
        assert "stopped answering health checks" in lost[0]["reason"]
    assert any(r.worker == "gpu1" and r.started_s > dispatcher.readmitted[0]["at_s"]
               for r in rows)


@pytest.mark.ray
@pytest.mark.parametrize("fault", ["SIGSTOP", "SIGKILL"])
async def test_ray_loses_nothing_when_an_actor_process_is_frozen_or_killed(
        fleet, ray_cluster, fault) -> None:
    import os
    import signal

    ray = ray_cluster
    prefix = f"ractor{fault.lower()}"
    t0 = time.perf_counter()
    await mark(fleet)
    run = asyncio.create_task(get_mode("ray")(specs(9), ray_ctx(fleet, prefix)))
    await until(lambda: started(fleet[1]), "gpu1's first request")
    actor = ray.get_actor(f"{prefix}-w1")  # type: ignore[attr-defined]
    pid = (await actor.stats.remote())["pid"]
    os.kill(pid, getattr(signal, fault))
    try:
        result = await asyncio.wait_for(run, BOUND_S)
    finally:
        if fault == "SIGSTOP":
            os.kill(pid, signal.SIGCONT)
    assert time.perf_counter() - t0 < BOUND_S
    assert_complete(result.requests, 9)
    assert result.summary.ok == 9
    assert [w["worker"] for w in result.summary.lost_workers] == ["gpu1"]


# -- end to end, default health checks -----------------------------------------------------------
def test_bench_pool_with_a_server_frozen_mid_run_finishes_with_every_row_ok(fleet,
                                                                            tmp_path) -> None:
    """The CLI with the default health policy (1 s interval, 5 s deadline, 2 misses)."""
    import json
    import os
    import subprocess
    import sys

    from _procs import REPO

    out = tmp_path / "r.json"
    base = int(fleet[1].stats()["requests"])
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "parallel_kit", "bench", "--mode", "pool",
         *[a for p in fleet for a in ("--host", p.url)], "--n", "12",
         "--time-scale", str(SCALE), "--json", str(out), "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": REPO})
    try:
        deadline = time.monotonic() + BOUND_S
        while int(fleet[1].stats()["requests"]) <= base:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr
            time.sleep(0.02)
        fleet[1].freeze()
        _, err = proc.communicate(timeout=BOUND_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert time.perf_counter() - t0 < BOUND_S
    assert proc.returncode == 0, err
    doc = json.loads(out.read_text())
    rows = doc["runs"][0]["requests"]
    assert len(rows) == 12 and all(r["ok"] for r in rows)
    lost = doc["runs"][0]["summary"]["lost_workers"]
    assert [w["worker"] for w in lost] == [f"127.0.0.1:{fleet[1].port}"]


# -- the stack modes: a server killed, frozen or restarted under its Serve replica ----------------
#: Clock seconds a stack mode may take to come up (Ray Serve, and for production Redis and
#: Celery workers) before its first request; the fault's bound starts at the fault.
STACK_SETUP_S = 180.0

@pytest.mark.ray
@pytest.mark.parametrize("mode", ["rayserve", "production"])
@pytest.mark.parametrize("fault", ["kill", "freeze", "restart"])
async def test_a_server_fault_under_a_stack_mode_loses_no_row(fleet, ray_cluster, mode,
                                                               fault) -> None:
    """An Ollama behind one of three Serve replicas, mid-run: killed (the replica's request
    finds it gone), frozen (only the replica's health probe finds it: Serve replaces the
    replica) or killed and restarted on its port. The driver sends the lost request again:
    every request ends ok, within the bound, and the lost replica is named."""
    pytest.importorskip("ray.serve")
    if mode == "production":
        pytest.importorskip("celery")
    ctx = ModeContext(endpoints(fleet), backend="sim", time_scale=SCALE, gpus=len(fleet))
    await mark(fleet)
    run = asyncio.create_task(get_mode(mode)(specs(9), ctx))
    try:
        # the stack's set-up (Redis, Serve, workers) is not part of the bound
        await until(lambda: started(fleet[1]), "gpu1's first request", STACK_SETUP_S)
        if fault == "freeze":
            t0 = time.perf_counter()
            fleet[1].freeze()
        else:
            t0 = time.perf_counter()
            fleet[1].kill()
            if fault == "restart":
                fleet[1].start()
        result = await asyncio.wait_for(run, BOUND_S)
    finally:
        fleet[1].thaw()
        if not run.done():
            run.cancel()
    assert time.perf_counter() - t0 < BOUND_S
    assert_complete(result.requests, 9)
    assert result.summary.ok == 9, [(r.worker, r.retries, r.error) for r in result.requests]
    assert result.summary.retries >= 1
    if mode == "rayserve":  # the driver sees the lost replica (production: a Celery worker)
        assert result.summary.lost_workers


@pytest.mark.ray
@pytest.mark.parametrize("mode", ["rayserve", "production"])
async def test_a_frozen_serve_replica_is_replaced_and_its_request_sent_again(
        fleet, ray_cluster, mode) -> None:
    """SIGSTOP of a replica's process with a request inside: Serve's health checks time out
    (``ServeOptions.health_check_timeout_s``, a few in a row), Serve replaces the replica,
    and its request is sent again — every request ends ok within the bound."""
    import signal

    if mode == "production":
        pytest.importorskip("celery")
    ctx = ModeContext(endpoints(fleet), backend="sim", time_scale=SCALE, gpus=len(fleet))
    await mark(fleet)
    run = asyncio.create_task(get_mode(mode)(specs(30), ctx))
    pid = None
    try:
        # the stack's set-up (Redis, Serve, workers) is not part of the bound
        await until(lambda: started(fleet[1]), "gpu1's first request", STACK_SETUP_S)
        await until(lambda: _busy(fleet[1]), "a request inside gpu1's replica", STACK_SETUP_S)
        pid = _client_of(fleet[1])
        t0 = time.perf_counter()
        os.kill(pid, signal.SIGSTOP)
        result = await asyncio.wait_for(run, BOUND_S + 30)
    finally:
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        if not run.done():
            run.cancel()
    assert time.perf_counter() - t0 < BOUND_S + 30
    assert_complete(result.requests, 30)
    assert result.summary.ok == 30, [(r.worker, r.retries, r.error) for r in result.requests]
    assert result.summary.retries >= 1


def _client_of(proc: SimProcess) -> int:
    """The process (a Serve replica) holding a connection to ``proc``'s port, from the
    process table (psutil): the replica that streams gpu1's request."""
    import psutil

    assert proc.proc is not None
    mine = {os.getpid(), proc.proc.pid}
    pids = {c.pid for c in psutil.net_connections("tcp")
            if c.raddr and c.raddr.port == proc.port and c.status == psutil.CONN_ESTABLISHED
            and c.pid and c.pid not in mine}
    assert len(pids) == 1, pids
    return pids.pop()


async def _busy(proc: SimProcess) -> bool:
    """Whether ``proc`` is generating for a request now (its own count)."""
    async with httpx.AsyncClient(trust_env=False, timeout=5) as c:
        return int((await c.get(proc.url + "/sim/stats")).json().get("active", 0)) > 0
