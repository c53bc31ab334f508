"""The API under bad input, too much input, lost servers and shutdown.

Limits in bytes, tokens and time (each refusal a 4xx naming the limit), bodies that are not what
they claim, ``/health`` that tells a degraded pool from a healthy one, tasks that say where they
live, and a shutdown that is bounded, quiet and answers the clients still waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from _procs import REPO, SimProcess

from parallel_kit.api import ApiBackend, ApiSettings, create_app, open_api_backend, serve_api
from parallel_kit.errors import ConfigError
from parallel_kit.modes.taskqueue import TaskQueue, TooMuchHeld
from parallel_kit.records import RequestResult, RequestSpec
from parallel_kit.servers.launcher import free_port
from parallel_kit.timing import ModelClock

pytestmark = pytest.mark.timeout(120)


class Gate:
    """A backend whose requests wait until the test opens the gate."""

    def __init__(self, response: str = "ok") -> None:
        self.opened = asyncio.Event()
        self.response = response

    async def __call__(self, spec: RequestSpec) -> RequestResult:
        await self.opened.wait()
        return RequestResult(request_id="", mode="async", prompt=spec.prompt, model="m",
                             ok=True, response=self.response, finished_s=0.0)


@contextlib.asynccontextmanager
async def api(backend: Gate, **settings: object) -> AsyncIterator[httpx.AsyncClient]:
    cfg = ApiSettings(**{"api_key": None, **settings})  # type: ignore[arg-type]
    app = create_app(ApiBackend(backend, ModelClock(1.0), model="m"), cfg)
    async with serve_api(app) as url, httpx.AsyncClient(base_url=url, trust_env=False) as http:
        try:
            yield http
        finally:
            backend.opened.set()


# -- bodies ------------------------------------------------------------------------------------
@pytest.mark.parametrize("prompt", ["", "   ", "\n\t"])
async def test_blank_prompt_is_refused(prompt: str) -> None:
    async with api(Gate()) as http:
        resp = await http.post("/inference/async", json={"prompt": prompt})
    assert resp.status_code == 422 and resp.json()["detail"][0]["loc"] == ["body", "prompt"]


async def test_unknown_field_is_refused_naming_it() -> None:
    async with api(Gate()) as http:
        resp = await http.post("/inference/async", json={"prompt": "hi", "num_predict": 5})
    assert resp.status_code == 422
    assert resp.json()["detail"][0]["loc"] == ["body", "num_predict"]


async def test_body_that_is_not_json_says_which_content_type_to_send() -> None:
    async with api(Gate()) as http:
        resp = await http.post("/inference/async", data={"prompt": "hi"})
    assert resp.status_code == 415
    assert "application/json" in resp.json()["detail"]


@pytest.mark.parametrize("value", [4097, 10**9, -1, -2, 0, "5", 2.5])
async def test_num_predict_beyond_the_limit_is_refused_naming_it(value: object) -> None:
    async with api(Gate(), max_num_predict=4096) as http:
        resp = await http.post("/inference/async",
                               json={"prompt": "hi", "options": {"num_predict": value}})
    assert resp.status_code == 422
    detail = resp.json()["detail"][0]
    assert detail["loc"] == ["body", "options", "num_predict"] and "4096" in detail["msg"]


async def test_num_predict_within_the_limit_is_sent() -> None:
    async with api(Gate(), max_num_predict=64) as http:
        resp = await http.post("/inference/async",
                               json={"prompt": "hi", "options": {"num_predict": 64}})
    assert resp.status_code == 200


# -- bytes held and kept -----------------------------------------------------------------------
async def test_prompts_held_past_the_byte_limit_are_refused_with_429() -> None:
    big = "x" * 4000
    async with api(Gate(), max_held_bytes=16_000) as http:
        codes = [(await http.post("/inference/async", json={"prompt": big})).status_code
                 for _ in range(3)]
        refused = await http.post("/inference/async", json={"prompt": big})
        stats = (await http.get("/stats")).json()
    assert codes == [200, 200, 200]
    assert refused.status_code == 429 and refused.headers["retry-after"]
    assert "16000 bytes" in refused.json()["detail"] and "--max-held-mb" in refused.json()["detail"]
    assert stats["held_bytes"] <= 16_000


async def test_one_prompt_larger_than_the_byte_limit_is_413() -> None:
    async with api(Gate(), max_held_bytes=2_000) as http:
        resp = await http.post("/inference/async", json={"prompt": "x" * 5000})
    assert resp.status_code == 413 and "send shorter prompts" in resp.json()["detail"]


async def test_finished_tasks_are_forgotten_oldest_first_past_the_kept_bytes() -> None:
    gate = Gate(response="y" * 3000)
    gate.opened.set()
    async with TaskQueue(gate, concurrency=1, max_kept_bytes=10_000) as queue:
        ids = [queue.submit(RequestSpec(f"p{i}")) for i in range(6)]
        for task_id in ids:
            await queue.result(task_id)
        stats = queue.stats()
        assert stats["kept_bytes"] <= 10_000 and stats["retained"] < 6
        queue.status(ids[-1])  # the newest is kept
        with pytest.raises(LookupError, match="memory"):
            queue.status(ids[0])


async def test_a_request_past_the_time_limit_fails_naming_it() -> None:
    async with TaskQueue(Gate(), concurrency=1, max_request_s=0.2) as queue:
        row = await queue.result(queue.submit(RequestSpec("forever")), timeout=30)
    assert not row.ok and "0.2 s" in row.error and "--max-request-s" in row.error


def test_queue_bounds_are_checked() -> None:
    with pytest.raises(ConfigError, match="max_held_bytes"):
        TaskQueue(Gate(), max_held_bytes=0)
    with pytest.raises(ConfigError, match="max_request_s"):
        TaskQueue(Gate(), max_request_s=-1)
    with pytest.raises(ConfigError, match="max_num_predict"):
        ApiSettings(max_num_predict=0, api_key=None)


def test_too_much_held_names_the_limit() -> None:
    assert "--max-held-mb" in str(TooMuchHeld(10, 20, 25))


# -- where tasks live --------------------------------------------------------------------------
async def test_unknown_task_and_health_say_tasks_live_in_memory() -> None:
    async with api(Gate()) as http:
        missing = await http.get("/tasks/nope")
        health = (await http.get("/health")).json()
    assert missing.status_code == 404
    for text in (missing.json()["detail"], health["tasks"]):
        assert "memory" in text and "production" in text and "Redis" in text


# -- /health of a pool with lost servers -------------------------------------------------------
async def test_health_reports_degraded_then_down_then_ok_as_servers_go_and_come_back() -> None:
    procs = [SimProcess(0.02).start() for _ in range(2)]
    try:
        async with open_api_backend([p.url for p in procs], mode="pool") as backend, \
                serve_api(create_app(backend, ApiSettings(api_key=None))) as url, \
                httpx.AsyncClient(base_url=url, trust_env=False) as http:

            async def health_is(status: str) -> httpx.Response:
                deadline = time.monotonic() + 60
                while True:
                    resp = await http.get("/health")
                    if resp.json()["status"] == status:
                        return resp
                    assert time.monotonic() < deadline, f"/health never said {status}"
                    await asyncio.sleep(0.1)

            await health_is("ok")
            procs[0].kill()
            body = (await health_is("degraded")).json()
            assert [w["state"] for w in body["workers"]] == ["lost", "ok"]
            procs[1].kill()
            down = await health_is("down")
            assert down.status_code == 503
            failed = await http.post("/inference", json={"prompt": "hi"}, timeout=30)
            assert failed.json()["status"] == "failed"
            assert "every worker was lost" in failed.json()["error"]
            for p in procs:
                await asyncio.to_thread(p.start)
            await health_is("ok")  # probed and taken back, no restart of the API
            done = await http.post("/inference", json={"prompt": "hi"}, timeout=30)
            assert done.json()["status"] == "completed"
    finally:
        for p in procs:
            p.stop()


# -- shutdown ----------------------------------------------------------------------------------
def _start_serve(port: int) -> subprocess.Popen[str]:
    env = {**os.environ, "PARALLEL_KIT_BACKEND": "sim", "PARALLEL_KIT_API_KEY": "",
           "PYTHONPATH": REPO}
    # time scale 1: every request takes 10 s, so clients are still waiting at the signal
    proc = subprocess.Popen([sys.executable, "-m", "parallel_kit", "serve", "--port",
                             str(port), "--time-scale", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    deadline = time.monotonic() + 60
    while True:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"http://127.0.0.1:{port}/health", trust_env=False).status_code == 200:
                return proc
        assert proc.poll() is None and time.monotonic() < deadline, "serve did not start"
        time.sleep(0.1)


async def _waiting_clients(port: int, n: int) -> list[asyncio.Task[httpx.Response]]:
    http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", trust_env=False, timeout=60)
    tasks = [asyncio.create_task(http.post("/inference", json={"prompt": f"p{i}"}))
             for i in range(n)]
    deadline = time.monotonic() + 30
    while (await http.get("/stats")).json()["running"] + \
            (await http.get("/stats")).json()["queued"] < n:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    return tasks


@pytest.mark.parametrize("signals", [1, 2])
async def test_shutdown_answers_waiting_clients_and_ends_quietly(signals: int) -> None:
    port = free_port()
    proc = _start_serve(port)
    try:
        clients = await _waiting_clients(port, 3)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        answers = await asyncio.wait_for(asyncio.gather(*clients), 30)
        if signals == 2:
            proc.send_signal(signal.SIGINT)
        out, _ = await asyncio.to_thread(proc.communicate, timeout=60)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for resp in answers:
        assert resp.status_code == 503 and resp.json()["task_id"]
        assert "shutting down" in resp.json()["detail"]
    assert "Traceback" not in out and "CancelledError" not in out, out
    assert proc.returncode == 130
    # the bound: shutdown_timeout_s (10 s) for the accepted tasks, plus slack for a busy
    # machine; a second Ctrl-C does not wait for them (the server says it cancelled them)
    assert took < 40, took
    if signals == 2:
        assert "accepted task(s) cancelled at shutdown (a second Ctrl-C)" in out, out
