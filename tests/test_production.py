"""The production stack for real: a Redis server, Celery worker processes, Ray Serve replicas.

Failures are real process kills (SIGKILL); behaviour is read from Redis, the rows and the
simulators' own records — never from wall-clock ratios. One Redis + worker + Serve application
is shared by the session (``production_stack`` in conftest).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest
from _ray import MODULE_TIMEOUT_S
from conftest import SERVE_TIME_SCALE

from parallel_kit.errors import ConfigError
from parallel_kit.modes.base import ModeContext, ServerOptions, get_mode
from parallel_kit.production.mode import run_on_stack, run_production
from parallel_kit.production.redis_server import RedisServer, check_redis, open_redis
from parallel_kit.records import RequestSpec
from parallel_kit.servers.backend import sim_info
from parallel_kit.servers.launcher import free_port

pytest.importorskip("celery")
pytest.importorskip("ray.serve")
pytestmark = [pytest.mark.ray, pytest.mark.timeout(MODULE_TIMEOUT_S)]

HOP_ORDER = ("accepted", "picked_up", "replica_entered", "replica_done", "worker_done", "done")


def specs(n: int, prefix: str) -> list[RequestSpec]:
    return [RequestSpec(f"prompt {i}", request_id=f"{prefix}{i}") for i in range(n)]


def ctx() -> ModeContext:
    return ModeContext([], backend="sim", time_scale=SERVE_TIME_SCALE, gpus=3,
                       servers=ServerOptions(launch="sim"))


# -- Redis -----------------------------------------------------------------------------------

def test_kit_starts_a_real_redis_and_stops_it() -> None:
    with open_redis(None) as url:
        check_redis(url)  # answers PING
    with pytest.raises(ConfigError, match="no Redis answers"):
        check_redis(url)


def test_redis_url_pointing_at_nothing_is_one_clear_line() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(ConfigError) as err, open_redis(url):
        pass
    assert str(err.value).startswith(f"no Redis answers at {url}")
    assert "\n" not in str(err.value) and "--redis" in str(err.value)


def test_redis_url_pointing_at_an_http_server_says_it_is_not_redis() -> None:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"redis://127.0.0.1:{server.server_address[1]}/0"
        with pytest.raises(ConfigError, match=r"answered, but not as Redis"):
            check_redis(url)
    finally:
        server.shutdown()


class _Quiet(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def test_production_is_a_registered_mode() -> None:
    assert get_mode("production") is run_production


# -- through the stack -----------------------------------------------------------------------

async def test_rows_come_back_through_redis_with_a_timestamp_per_layer(production_stack) -> None:
    run = await run_on_stack(production_stack, specs(5, "layers"), ctx())
    assert run.summary.mode == "production" and run.summary.n == 5 and run.summary.ok == 5
    assert sorted(r.request_id for r in run.requests) == [f"layers{i}" for i in range(5)]
    for r in run.requests:
        times = [r.hops[h] for h in HOP_ORDER]
        assert times == sorted(times), r.hops
        assert r.hops["replica_entered"] <= r.started_s <= r.first_token_s <= r.hops[
            "replica_done"]
        assert r.replica and r.worker.startswith("gpu") and r.node
    assert run.summary.setup_s is not None


async def test_worker_killed_mid_task_is_replaced_its_tasks_handed_back_and_completed(
        production_stack) -> None:
    """kill -9 of a real worker mid-run: the supervisor sees it, hands its tasks back at once
    (kombu's restore_by_tag, not the visibility timeout) and starts a replacement; every
    request is a row; /health counts the restart, then says degraded once restarts run out."""
    from test_rayserve import _wait_for_replicas

    from parallel_kit.production.api import create_production_app
    from parallel_kit.production.supervisor import WorkerSupervisor
    from parallel_kit.production.tasks import TaskClient
    from parallel_kit.production.worker import wait_for_workers

    stack = production_stack
    await _wait_for_replicas(stack.app, 3)
    sims = [d["url"] for d in await asyncio.to_thread(_describe_all, stack.app)]
    victim = stack.workers[-1]
    client = TaskClient(stack.redis_url, stack.app.name, SERVE_TIME_SCALE, time.time())
    supervisor = WorkerSupervisor(stack, max_restarts=1).start()
    stack.supervisor = supervisor
    app = create_production_app(client, health=stack.health)
    try:
        ids = [client.submit(s) for s in specs(3, "wkill")]
        # Kill the worker once one of its requests is inside an Ollama (the servers' own
        # count): the request has reached Ollama, and will reach it again — at least once.
        while sum([((await sim_info(u)) or {}).get("active", 0) for u in sims]) < 1:
            await asyncio.sleep(0.005)
        victim.kill()
        done = await client.wait(ids, timeout_s=90)
        assert [done[i]["status"] for i in ids] == ["completed"] * 3  # nothing lost
        [event] = supervisor.events
        assert event.worker == victim.name and event.exit_code == -signal.SIGKILL
        assert event.replacement and event.replacement != victim.name
        rows = [done[i]["result"] for i in ids]
        redelivered = [r for r in rows if r["hops"].get("deliveries", 1) > 1]
        assert redelivered and all(r["retries"] >= 1 for r in redelivered)  # counted
        # handed back by the supervisor: each redelivered task was one the dead worker held
        by_request = dict(zip([f"wkill{i}" for i in range(3)], ids, strict=True))
        assert {by_request[r["request_id"]] for r in redelivered} <= set(event.tasks_back)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://api") as http:
            body = (await http.get("/health")).json()
            assert body["status"] == "ok" and body["workers"] == 1
            assert body["worker_restarts"] == 1
            # the replacement dies too: restarts used up, nothing can serve → degraded
            stack.workers[-1].kill()
            while len(supervisor.events) < 2:
                await asyncio.sleep(0.05)
            resp = await http.get("/health")
            assert resp.status_code == 503 and resp.json()["status"] == "degraded"
            assert "no Celery worker" in resp.json()["problem"]
            assert supervisor.events[1].replacement is None
        # a run on a stack with no worker left ends at once, each request a failed row
        run = await run_on_stack(stack, specs(2, "noworker"), ctx())
        assert run.summary.n == 2 and run.summary.ok == 0
        assert all("no Celery worker is left" in r.error for r in run.requests)
    finally:
        supervisor.stop()
        stack.supervisor = None
        if not stack.workers:  # the session's stack gets its worker back
            stack.start_worker()
            await asyncio.to_thread(wait_for_workers, stack.workers)
        # the queued tasks of the run above are run by it; the next test starts from none
        deadline = time.monotonic() + 60
        while client.stats()["unfinished"] and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        client.close()


async def test_worker_frozen_mid_task_is_killed_by_its_heartbeat_and_replaced(
        production_stack) -> None:
    """SIGSTOP of the only worker mid-run: alive to ``poll``, but its heartbeat stops; the
    supervisor kills it after STALL_S of silence, hands its tasks back and starts a
    replacement, which completes every request."""
    from test_rayserve import _wait_for_replicas

    from parallel_kit.production.supervisor import STALL_S, WorkerSupervisor
    from parallel_kit.production.tasks import TaskClient

    stack = production_stack
    await _wait_for_replicas(stack.app, 3)
    sims = [d["url"] for d in await asyncio.to_thread(_describe_all, stack.app)]
    [victim] = stack.workers
    client = TaskClient(stack.redis_url, stack.app.name, SERVE_TIME_SCALE, time.time())
    supervisor = WorkerSupervisor(stack, max_restarts=1).start()
    stack.supervisor = supervisor
    try:
        ids = [client.submit(s) for s in specs(3, "wfreeze")]
        while sum([((await sim_info(u)) or {}).get("active", 0) for u in sims]) < 1:
            await asyncio.sleep(0.005)
        os.kill(victim.pid, signal.SIGSTOP)
        done = await client.wait(ids, timeout_s=120)
        assert [done[i]["status"] for i in ids] == ["completed"] * 3  # nothing lost
        [event] = supervisor.events
        assert event.worker == victim.name and event.exit_code == -signal.SIGKILL
        assert event.stalled_s is not None and event.stalled_s > STALL_S
        assert event.replacement and [w.name for w in stack.workers] == [event.replacement]
        assert not victim.alive()
    finally:
        supervisor.stop()
        stack.supervisor = None
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim.pid, signal.SIGKILL)
        client.close()


def test_an_api_only_process_counts_the_workers_by_their_heartbeats(production_stack) -> None:
    """``/health`` of ``--serve-app`` reads the heartbeat keys in Redis (no ping broadcast to
    time out under load): the stack's worker is there while it beats."""
    from parallel_kit.production.api import celery_health
    from parallel_kit.production.celery_app import beating_workers

    names = [w.name for w in production_stack.workers]
    deadline = time.monotonic() + 30
    while not set(names) <= set(beating_workers()):
        assert time.monotonic() < deadline, (names, beating_workers())
        time.sleep(0.1)
    body = celery_health()
    assert body["workers"] >= len(names) and body["problem"] is None


async def test_replica_killed_mid_request_completes_on_a_replica(production_stack) -> None:
    from test_rayserve import _wait_for_replicas

    app = production_stack.app
    await _wait_for_replicas(app, 3)
    victim = (await asyncio.to_thread(_describe_all, app))[0]

    async def kill_victim_once_busy() -> None:
        while ((await sim_info(victim["url"])) or {}).get("active", 0) < 1:
            await asyncio.sleep(0.005)
        os.kill(victim["pid"], signal.SIGKILL)

    killer = asyncio.create_task(kill_victim_once_busy())
    run = await run_on_stack(production_stack, specs(3, "rkill"), ctx())
    await asyncio.wait_for(killer, 30)
    assert run.summary.n == 3 and run.summary.ok == 3
    assert run.summary.retries >= 1
    await _wait_for_replicas(app, 3)


def _describe_all(app) -> list[dict]:
    seen: dict[str, dict] = {}
    for _ in range(30):
        d = app.handle.describe.remote().result(timeout_s=30)
        seen[d["replica"]] = d
        if len(seen) == app.workers:
            break
    return sorted(seen.values(), key=lambda d: d["rank"])


# -- the HTTP API ----------------------------------------------------------------------------

def _start_api(stack, port: int, *extra: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "parallel_kit", "serve", "--mode", "production",
         "--workers", "0", "--redis", stack.redis_url, "--serve-app", stack.app.name,
         "--port", str(port), "--time-scale", str(SERVE_TIME_SCALE), *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read().decode() if proc.stderr else "API exited")
        time.sleep(0.05)
    raise AssertionError("the API process did not come up")


@pytest.mark.parametrize("fault", ["SIGKILL", "SIGSTOP"])
def test_api_killed_or_frozen_another_api_process_completes_every_accepted_task(
        production_stack, fault) -> None:
    """The tasks live in Redis, not in the API process: after the API that accepted them is
    killed (or frozen: its clients time out), another API process (a restart, or a second
    one) answers for every one of them."""
    port = free_port()
    first = _start_api(production_stack, port)
    try:
        resp = httpx.post(f"http://127.0.0.1:{port}/inference/batch",
                          json=[{"prompt": f"p{i}"} for i in range(6)], timeout=10)
        assert resp.status_code == 200
        ids = resp.json()["task_ids"]
        assert len(ids) == 6
    finally:
        os.kill(first.pid, getattr(signal, fault))  # right after accepting
    if fault == "SIGSTOP":  # frozen for real: its clients get no answer
        with pytest.raises(httpx.TimeoutException):
            httpx.get(f"http://127.0.0.1:{port}/tasks/{ids[0]}", timeout=1)
    second = _start_api(production_stack, free_port())
    base = f"http://127.0.0.1:{_port_of(second)}"
    try:
        deadline = time.monotonic() + 60
        bodies: dict[str, dict] = {}
        while len(bodies) < 6 and time.monotonic() < deadline:
            for i in ids:
                body = httpx.get(f"{base}/tasks/{i}", timeout=5).json()
                if body["status"] in ("completed", "failed"):
                    bodies[i] = body
            time.sleep(0.05)
        assert [bodies[i]["status"] for i in ids] == ["completed"] * 6
        assert httpx.get(f"{base}/tasks/never-accepted", timeout=5).status_code == 404
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(first.pid, signal.SIGKILL)
        first.wait(10)


def _port_of(proc: subprocess.Popen[bytes]) -> int:
    return int(proc.args[proc.args.index("--port") + 1])  # type: ignore[union-attr,index]


async def test_redis_unreachable_api_answers_503_naming_redis_and_accepts_nothing(
        production_stack) -> None:
    from parallel_kit.production.api import create_production_app
    from parallel_kit.production.tasks import TaskClient

    redis = RedisServer.start()
    client = TaskClient(redis.url, production_stack.app.name, SERVE_TIME_SCALE, time.time())
    app = create_production_app(client)
    redis.stop()  # Redis goes away under a running API
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://api") as http_client:
            resp = await http_client.post("/inference/async", json={"prompt": "hi"})
            assert resp.status_code == 503
            detail = resp.json()["detail"]
            assert "Redis" in detail and "--redis" in detail and "nothing was accepted" in detail
            assert "Traceback" not in resp.text
            assert (await http_client.get("/health")).status_code == 503
            assert (await http_client.get("/tasks/abc")).status_code == 503
    finally:
        client.close()


async def test_unknown_task_is_404_and_expired_result_is_410(production_stack) -> None:
    from parallel_kit.production.api import create_production_app
    from parallel_kit.production.tasks import TaskClient

    stack = production_stack
    client = TaskClient(stack.redis_url, stack.app.name, SERVE_TIME_SCALE, time.time())
    app = create_production_app(client)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://api") as http_client:
            assert (await http_client.get("/tasks/no-such-id")).status_code == 404
            task_id = (await http_client.post("/inference/async",
                                              json={"prompt": "hi"})).json()["task_id"]
            await client.wait([task_id], timeout_s=30)
            # The worker marks the task finished right after Celery stored its result.
            while not client._redis.hexists(f"parallel_kit:task:{task_id}", "finished"):
                await asyncio.sleep(0.005)
            body = (await http_client.get(f"/tasks/{task_id}")).json()
            assert body["status"] == "completed" and body["result"]["ok"]
            # The result expires from Redis (as result_expires makes it): 410, never "queued".
            client._redis.delete(f"celery-task-meta-{task_id}")
            assert (await http_client.get(f"/tasks/{task_id}")).status_code == 410
    finally:
        client.close()


async def test_serve_limits_apply_and_a_request_past_the_timeout_is_cancelled_at_ollama(
        production_stack) -> None:
    """--max-num-predict → 422; --max-queued / --max-held-mb decided in Redis → 503 / 429 /
    413; a request past the request timeout is a failed task saying so, and its Ollama
    cancelled it (the simulator's own count) — the replica is free again."""
    from test_rayserve import _wait_for_replicas

    from parallel_kit.api import ApiSettings
    from parallel_kit.production.api import create_production_app
    from parallel_kit.production.tasks import TaskClient

    stack = production_stack
    await _wait_for_replicas(stack.app, 3)
    sims = [d["url"] for d in await asyncio.to_thread(_describe_all, stack.app)]
    client = TaskClient(stack.redis_url, stack.app.name, SERVE_TIME_SCALE, time.time())
    before = client.stats()
    cancelled_before = sum([((await sim_info(u)) or {}).get("cancelled", 0) for u in sims])
    long_prompt = "x" * 50
    settings = ApiSettings(mode="production", max_num_predict=10**9,
                           max_queued=before["unfinished"] + 1,
                           max_held_bytes=before["held_bytes"] + 60)
    app = create_production_app(client, settings, health=stack.health)
    strict = create_production_app(client, ApiSettings(mode="production", max_num_predict=64))
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://api") as http, \
                httpx.AsyncClient(transport=httpx.ASGITransport(app=strict),
                                  base_url="http://api") as http_strict:
            resp = await http_strict.post("/inference/async", json={
                "prompt": "hi", "options": {"num_predict": 10**9}})
            assert resp.status_code == 422 and "--max-num-predict" in resp.text
            health = (await http.get("/health")).json()
            assert health["status"] == "ok" and health["workers"] >= 1
            assert health["replicas"] == 3
            # one request that would run for ever holds the one place in the queue bound
            resp = await http.post("/inference/async", json={
                "prompt": long_prompt, "options": {"num_predict": 10**9}})
            assert resp.status_code == 200
            long_id = resp.json()["task_id"]
            full = await http.post("/inference/async", json={"prompt": "hi"})
            assert full.status_code == 503 and full.headers["Retry-After"]
            assert "max_queued" in full.json()["detail"]
            batch = await http.post("/inference/batch", json=[{"prompt": "hi"}])
            assert batch.status_code == 503 and batch.json()["accepted_task_ids"] == []
            assert client.stats()["accepted"] == before["accepted"] + 1  # nothing else
            # held bytes: 50 held, 60 the bound
            app_bytes = create_production_app(client, ApiSettings(
                mode="production", max_held_bytes=before["held_bytes"] + 60))
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app_bytes),
                                         base_url="http://api") as http_bytes:
                assert (await http_bytes.post("/inference/async",
                                              json={"prompt": "y" * 20})).status_code == 429
                assert (await http_bytes.post("/inference/async",
                                              json={"prompt": "y" * 100})).status_code == 413
            done = await client.wait([long_id], timeout_s=60)
    finally:
        client.close()
    body = done[long_id]
    assert body["status"] == "failed" and "request timeout" in body["error"]
    assert "cancelled at its replica" in body["error"]
    # Ollama (the simulator) saw the request cancelled: its slot is free again
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        infos = [(await sim_info(u)) or {} for u in sims]
        if sum(i.get("cancelled", 0) for i in infos) > cancelled_before and \
                sum(i.get("active", 0) for i in infos) == 0:
            break
        await asyncio.sleep(0.05)
    assert sum(i.get("cancelled", 0) for i in infos) == cancelled_before + 1
    assert sum(i.get("active", 0) for i in infos) == 0
    after = TaskClient(stack.redis_url, stack.app.name, SERVE_TIME_SCALE, time.time())
    try:
        stats = after.stats()
    finally:
        after.close()
    assert stats["held_bytes"] == before["held_bytes"]  # the worker gave the bytes back


def test_sigterm_answers_a_waiting_client_and_stops_within_the_shutdown_bound(
        production_stack) -> None:
    """An API process with a client waiting on a request that would run for ever: SIGTERM →
    the client is answered 503 naming its task, and the process exits (130)."""
    port = free_port()
    proc = _start_api(production_stack, port, "--shutdown-timeout-s", "1",
                      "--max-num-predict", "131072")
    answer: list[httpx.Response] = []
    unfinished = httpx.get(f"http://127.0.0.1:{port}/stats", timeout=5).json()["unfinished"]

    def wait_for_answer() -> None:
        answer.append(httpx.post(f"http://127.0.0.1:{port}/inference", json={
            "prompt": "forever", "options": {"num_predict": 131072}}, timeout=60))

    waiter = threading.Thread(target=wait_for_answer)
    try:
        waiter.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the request is accepted and unfinished
            stats = httpx.get(f"http://127.0.0.1:{port}/stats", timeout=5).json()
            if stats["unfinished"] > unfinished:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        waiter.join(60)
        assert proc.wait(60) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    [resp] = answer
    assert resp.status_code == 503
    assert "shutting down" in resp.json()["detail"] and resp.json()["task_id"]


# -- bad input at the command line: one line, exit 2, nothing started ---------------------------

def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from parallel_kit.cli import main

    code = main(argv)
    return code, capsys.readouterr().err


def test_cli_max_ongoing_zero_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _cli(["bench", "--mode", "rayserve", "--max-ongoing", "0", "--n", "1"], capsys)
    assert code == 2
    assert err.strip().startswith("error: --max-ongoing 0 must be a whole number ≥ 1")
    assert len(err.strip().splitlines()) == 1


def test_cli_redis_pointing_at_nothing_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    code, err = _cli(["bench", "--mode", "production", "--redis", dead, "--n", "1",
                      "--time-scale", "0.005", "--no-progress"], capsys)
    assert code == 2
    assert f"error: no Redis answers at {dead}" in err and "Traceback" not in err


def test_cli_production_without_the_extra_names_the_install(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "celery", None)
    code, err = _cli(["bench", "--mode", "production", "--n", "1", "--time-scale", "0.005",
                      "--no-progress"], capsys)
    assert code == 2
    assert 'pip install "parallel_kit[production]"' in err and "Traceback" not in err


async def test_demo_without_a_redis_binary_says_so_in_one_line_and_runs_the_rest(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from parallel_kit.bench.demo import run_demo
    from parallel_kit.production import redis_server

    monkeypatch.delenv("PARALLEL_KIT_REDIS_URL", raising=False)
    monkeypatch.setattr(redis_server, "find_redis_server", lambda: None)
    said: list[str] = []
    comparison = await run_demo(time_scale=0.005, modes="sequential,production",
                                announce=said.append)
    assert [r.summary.mode for r in comparison.runs] == ["sequential"]
    skipped = [m for m in said if m.startswith("production: skipped")]
    assert len(skipped) == 1 and "parallel_kit[production]" in skipped[0]


# -- Redis faults under `bench --mode production` (a real redis-server the kit started) --------

async def test_a_waiting_caller_gives_up_a_redis_gone_past_the_outage_bound_and_a_lost_task(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A task whose record is not in Redis (Redis restarted without its data) ends at once as
    TaskLost; a Redis that stops while a caller waits is RedisUnavailable once redis-py's
    Retry has ridden out the outage bound — never a wait for the whole budget."""
    import redis

    from parallel_kit.production.tasks import RedisUnavailable, wait_for_meta

    monkeypatch.setenv("PARALLEL_KIT_REDIS_OUTAGE_S", "1")
    server = RedisServer.start()
    try:
        lost = await wait_for_meta(server.url, ["gone"], timeout_s=30, check_records=True)
        assert lost["gone"]["status"] == "FAILURE"
        assert "no longer in Redis" in lost["gone"]["result"]["exc_message"]
        redis.Redis.from_url(server.url).hset("parallel_kit:task:held", "spec", "{}")
        waiting = asyncio.create_task(wait_for_meta(server.url, ["held"], timeout_s=60,
                                                    check_records=True))
        await asyncio.sleep(0)  # the caller is waiting (or subscribing) when the server goes
        await asyncio.to_thread(server.stop)
        with pytest.raises(RedisUnavailable, match=r"is unreachable .* given up"):
            await waiting
    finally:
        server.stop()


def _redis_child(parent: int) -> tuple[int, str]:
    """The pid and URL of the redis-server that process ``parent`` started (its own record:
    its process title names the port; its working folder holds the 0600 config file the kit
    wrote, with the password)."""
    import re

    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().decode().split("\0")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == parent and argv and "redis-server" in argv[0]:
            port = re.search(r"127\.0\.0\.1:(\d+)", " ".join(argv))
            if port is None:
                continue
            with open(os.path.join(os.readlink(f"/proc/{entry}/cwd"), "redis.conf")) as f:
                password = f.read().split("requirepass", 1)[1].split()[0]
            return int(entry), f"redis://:{password}@127.0.0.1:{port.group(1)}/0"
    raise LookupError("no redis-server child yet")


def test_bench_rides_out_a_frozen_redis_and_writes_every_row_when_redis_dies(tmp_path) -> None:
    """SIGSTOP of the run's Redis past every socket timeout, SIGCONT: the run resumes (Redis's
    own counter goes on). Then SIGKILL: every request is a row (ok, or failed naming Redis),
    the results file is written, and the exit is 2 with one line naming Redis."""
    import json

    import redis

    out = tmp_path / "run.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "parallel_kit", "bench", "--mode", "production", "--n", "60",
         "--time-scale", "0.02", "--gpus", "3", "--no-progress", "--json", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
        env={**os.environ, "PARALLEL_KIT_REDIS_OUTAGE_S": "8"})
    try:
        deadline = time.monotonic() + 180
        pid = url = None
        while pid is None and time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(LookupError, OSError):
                pid, url = _redis_child(proc.pid)
            time.sleep(0.05)
        assert pid is not None and url is not None, (
            f"the run's Redis was not found: {proc.stderr.read().decode()[-2000:]}"
            if proc.poll() is not None and proc.stderr else "the run's Redis was not found")
        r = redis.Redis.from_url(url, socket_timeout=5)

        def completed() -> int:
            return int(r.hget("parallel_kit:stats", "completed") or 0)

        while completed() < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(pid, signal.SIGSTOP)
        time.sleep(7)  # the fault's length: past the 5 s socket timeouts of every client
        os.kill(pid, signal.SIGCONT)
        resumed_from = completed()
        while completed() < resumed_from + 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert completed() >= resumed_from + 3  # the run went on after the freeze
        before_kill = completed()
        os.kill(pid, signal.SIGKILL)
        _, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    text = err.decode()
    assert proc.returncode == 2, text[-2000:]
    assert "Traceback" not in text
    last = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(last) == 1 and "Redis at" in last[0] and "unreachable" in last[0]
    rows = json.loads(out.read_text())["runs"][0]["requests"]
    assert len(rows) == 60  # every request a row
    ok = [r for r in rows if r["ok"]]
    failed = [r for r in rows if not r["ok"]]
    assert len(ok) >= before_kill and failed
    assert all("Redis" in r["error"] for r in failed)


def test_a_process_that_moves_between_stacks_publishes_to_the_redis_configured_now(
        production_stack) -> None:
    """configure() to another Redis and back (a sweep, a notebook, the tests): the app's
    connections follow; returning to a URL reuses kombu's pool for it, never a closed one."""
    from conftest import STACK_REQUEST_TIMEOUT_S, STACK_VISIBILITY_TIMEOUT_S

    from parallel_kit.production.celery_app import app, configure

    here = production_stack.redis_url
    gone = f"redis://127.0.0.1:{free_port()}/0"
    settings = {"request_timeout_s": STACK_REQUEST_TIMEOUT_S,
                "visibility_timeout_s": STACK_VISIBILITY_TIMEOUT_S}
    try:
        configure(gone, **settings)
        with app.connection_or_acquire() as conn:
            assert conn.as_uri().split("@")[-1].endswith(gone.split("//")[1])
        configure(here, **settings)
        with app.connection_or_acquire() as conn:  # not the pool dropped above, not closed
            conn.ensure_connection(max_retries=1)
        assert app.control.ping(timeout=2.0)  # the session's worker answers through it
    finally:
        configure(here, **settings)
