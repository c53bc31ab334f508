"""The HTTP API: shapes, the queue behind it, bad input, security, served on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from parallel_kit.api import (
    ApiBackend,
    ApiSettings,
    bind_warning,
    create_app,
    open_api_backend,
    serve_api,
)
from parallel_kit.cli import build_parser
from parallel_kit.cli.serve import run as run_serve_command
from parallel_kit.errors import ConfigError
from parallel_kit.records import RequestResult, RequestSpec
from parallel_kit.sim.faults import Faults
from parallel_kit.sim.server import SimulatedOllama
from parallel_kit.timing import ModelClock

SCALE = 0.02  # 10 model seconds = 0.2 s on the clock


class Gate:
    """A fake backend whose requests wait until the test opens the gate."""

    def __init__(self) -> None:
        self.opened = asyncio.Event()
        self.entered = asyncio.Event()  # set when a request reached the backend

    async def __call__(self, spec: RequestSpec) -> RequestResult:
        self.entered.set()
        await self.opened.wait()
        return RequestResult(request_id="", mode="async", prompt=spec.prompt, model="m",
                             ok=True, response=f"echo: {spec.prompt}", finished_s=0.0)


@contextlib.asynccontextmanager
async def fake_api(backend: Gate, **settings: object) -> AsyncIterator[httpx.AsyncClient]:
    cfg = ApiSettings(**{"api_key": None, **settings})  # type: ignore[arg-type]
    app = create_app(ApiBackend(backend, ModelClock(1.0), model="m"), cfg)
    async with serve_api(app) as url, httpx.AsyncClient(base_url=url, trust_env=False) as http:
        try:
            yield http
        finally:
            backend.opened.set()  # let accepted tasks finish, so shutdown does not wait


@contextlib.asynccontextmanager
async def sim_api(*, num_parallel: int = 1, faults: Faults | None = None,
                  **settings: object) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """The API in front of a simulated Ollama; yields (client of the API, the sim's URL)."""
    cfg = ApiSettings(**{"api_key": None, **settings})  # type: ignore[arg-type]
    async with SimulatedOllama("seed", time_scale=SCALE, num_parallel=num_parallel,
                               faults=faults) as sim, \
            open_api_backend([sim.url], concurrency=cfg.concurrency) as backend, \
            serve_api(create_app(backend, cfg)) as url, \
            httpx.AsyncClient(base_url=url, trust_env=False) as http:
        yield http, sim.url


async def poll(http: httpx.AsyncClient, task_id: str, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = (await http.get(f"/tasks/{task_id}")).json()
        if body["status"] in ("completed", "failed"):
            return body
        await asyncio.sleep(0.01)
    raise AssertionError(f"task {task_id} did not finish")


# -- behaviour against the simulator ------------------------------------------------------

async def test_async_task_is_queued_then_polling_reaches_completed_with_the_result() -> None:
    async with sim_api(concurrency=1) as (http, _):
        first = (await http.post("/inference/async", json={"prompt": "What is Python?"})).json()
        second = await http.post("/inference/async", json={"prompt": "What is Rust?"})
        assert second.status_code == 200
        body = second.json()
        assert body == {"task_id": body["task_id"], "status": "queued",
                        "message": "Task queued"}
        waiting = (await http.get(f"/tasks/{body['task_id']}")).json()
        assert waiting == {"task_id": body["task_id"], "status": "queued", "result": None,
                           "error": None}  # the first one holds the only worker
        done = await poll(http, body["task_id"])
        assert done["status"] == "completed" and done["error"] is None
        assert done["result"]["ok"] is True and done["result"]["response"]
        assert done["result"]["prompt"] == "What is Rust?"
        assert (await poll(http, first["task_id"]))["status"] == "completed"


async def test_server_never_sees_more_than_max_concurrent_requests(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_CONCURRENT_REQUESTS", "2")
    # The simulator has 8 slots: only the API's bound can hold the overlap at 2.
    async with sim_api(num_parallel=8) as (http, sim_url):
        resp = await http.post("/inference/batch",
                               json=[{"prompt": f"q{i}", "options": {"num_predict": 5}}
                                     for i in range(6)])
        for task_id in resp.json()["task_ids"]:
            assert (await poll(http, task_id))["status"] == "completed"
        stats = (await http.get("/stats")).json()
        async with httpx.AsyncClient(trust_env=False) as raw:
            sim_stats = (await raw.get(f"{sim_url}/sim/stats")).json()
    assert sim_stats["max_active"] == 2
    assert sim_stats["completed"] >= 6
    assert stats["completed"] == 6 and stats["concurrency"] == 2


async def test_batch_of_five_returns_five_ids_in_one_call() -> None:
    async with sim_api() as (http, _):
        resp = await http.post("/inference/batch", json=[{"prompt": f"p{i}"} for i in range(5)])
        assert resp.status_code == 200
        body = resp.json()
        assert body["count"] == 5 and len(set(body["task_ids"])) == 5
        assert set(body) == {"task_ids", "count"}
        bodies = [await poll(http, i) for i in body["task_ids"]]
    assert [b["result"]["prompt"] for b in bodies] == [f"p{i}" for i in range(5)]


async def test_inference_waits_and_answers_with_the_result() -> None:
    async with sim_api() as (http, _):
        resp = await http.post("/inference", json={"prompt": "What is Python?"})
    body = resp.json()
    assert resp.status_code == 200 and body["status"] == "completed"
    assert body["result"]["latency_s"] == pytest.approx(10.0, abs=2.0)  # model seconds


async def test_failing_backend_request_ends_failed_with_the_error_text() -> None:
    async with sim_api(faults=Faults(fail_fraction=1.0)) as (http, _):
        task_id = (await http.post("/inference/async", json={"prompt": "x"})).json()["task_id"]
        body = await poll(http, task_id)
    assert body["status"] == "failed"
    assert "simulated failure" in body["error"]
    assert body["result"]["ok"] is False


async def test_unknown_model_fails_the_task_naming_the_model() -> None:
    async with sim_api() as (http, _):
        resp = await http.post("/inference", json={"prompt": "x", "model": "ghost:7b"})
        stats = (await http.get("/stats")).json()
    body = resp.json()
    assert body["status"] == "failed" and "ghost:7b" in body["error"]
    assert stats["failed"] == 1


# -- bad input -----------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/inference", "/inference/async"])
async def test_body_without_prompt_is_422_naming_the_field(path: str) -> None:
    async with fake_api(Gate()) as http:
        resp = await http.post(path, json={"promt": "typo"})
    assert resp.status_code == 422
    assert ["body", "prompt"] in [d["loc"] for d in resp.json()["detail"]]


async def test_broken_json_is_a_4xx() -> None:
    async with fake_api(Gate()) as http:
        resp = await http.post("/inference/async", content=b'{"prompt": ',
                               headers={"content-type": "application/json"})
    assert 400 <= resp.status_code < 500
    assert "json" in resp.text.lower()


async def test_empty_and_oversized_batches_say_the_bound() -> None:
    async with fake_api(Gate(), max_batch=1000) as http:
        empty = await http.post("/inference/batch", json=[])
        big = await http.post("/inference/batch", json=[{"prompt": "x"}] * 1001)
        stats = (await http.get("/stats")).json()
    for resp in (empty, big):
        assert resp.status_code == 422
        assert "1 to 1000 requests" in resp.text
    assert stats["queued"] == 0  # nothing of the oversized batch was accepted


async def test_bad_item_in_a_batch_names_its_index() -> None:
    async with fake_api(Gate()) as http:
        resp = await http.post("/inference/batch", json=[{"prompt": "ok"}, {"model": "m"}])
    assert resp.status_code == 422
    assert ["body", 1, "prompt"] in [d["loc"] for d in resp.json()["detail"]]


async def test_unknown_task_is_404() -> None:
    async with fake_api(Gate()) as http:
        resp = await http.get("/tasks/no-such-task")
    assert resp.status_code == 404
    assert "no task 'no-such-task'" in resp.json()["detail"]


async def test_queue_full_is_503_with_retry_after() -> None:
    gate = Gate()
    async with fake_api(gate, concurrency=1, max_queued=1, retry_after_s=3) as http:
        await http.post("/inference/async", json={"prompt": "runs"})
        await asyncio.wait_for(gate.entered.wait(), 30)  # the worker took it: queue empty
        await http.post("/inference/async", json={"prompt": "waits"})
        resp = await http.post("/inference/async", json={"prompt": "one too many"})
        gate.opened.set()
    assert resp.status_code == 503
    assert resp.headers["retry-after"] == "3"
    assert "1 tasks waiting is its bound" in resp.json()["detail"]


async def test_prompt_over_the_length_limit_is_422() -> None:
    async with fake_api(Gate(), max_prompt_chars=10) as http:
        resp = await http.post("/inference/async", json={"prompt": "x" * 11})
    assert resp.status_code == 422
    detail = resp.json()["detail"][0]
    assert detail["loc"] == ["body", "prompt"] and "the limit is 10" in detail["msg"]


async def test_body_over_the_size_limit_is_413() -> None:
    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: sent chunked
        for part in (b'{"prompt": "', b"x" * 2000, b'"}'):
            yield part

    async with fake_api(Gate(), max_body_bytes=1000) as http:
        big = await http.post("/inference/async", json={"prompt": "x" * 2000})
        chunked = await http.post("/inference/async", content=chunks(),
                                  headers={"content-type": "application/json"})
        small = await http.post("/inference/async", json={"prompt": "x" * 100})
    assert big.status_code == chunked.status_code == 413
    assert "the limit is 1000 bytes" in big.json()["detail"]
    assert small.status_code == 200


# -- security and docs ---------------------------------------------------------------------

async def test_api_key_is_wanted_everywhere_but_health() -> None:
    async with fake_api(Gate(), api_key="s3cret") as http:
        no_key = await http.post("/inference/async", json={"prompt": "x"})
        wrong = await http.get("/stats", headers={"Authorization": "Bearer nope"})
        docs = await http.get("/docs")
        health = await http.get("/health")
        right = await http.get("/stats", headers={"Authorization": "Bearer s3cret"})
    assert no_key.status_code == wrong.status_code == docs.status_code == 401
    assert no_key.headers["www-authenticate"] == "Bearer"
    assert "PARALLEL_KIT_API_KEY" in no_key.json()["detail"]
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert right.status_code == 200


def test_api_key_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARALLEL_KIT_API_KEY", "from-env")
    assert ApiSettings().api_key == "from-env"


async def test_openapi_docs_are_served() -> None:
    async with fake_api(Gate()) as http:
        docs = await http.get("/docs")
        schema = (await http.get("/openapi.json")).json()
    assert docs.status_code == 200
    assert {"/inference", "/inference/async", "/inference/batch", "/tasks/{task_id}",
            "/stats", "/health"} <= set(schema["paths"])


def test_binding_all_interfaces_without_a_key_warns() -> None:
    assert "without a key" in (bind_warning("0.0.0.0", None) or "")
    assert bind_warning("127.0.0.1", None) is None
    assert bind_warning("::1", None) is None
    assert bind_warning("0.0.0.0", "key") is None


def test_serve_defaults_to_loopback() -> None:
    args = build_parser().parse_args(["serve"])
    assert args.bind == "127.0.0.1"


async def _five_requests_on_three_gpus(mode: str) -> tuple[list[dict], float]:
    """Five requests through the API in ``mode``; returns the rows and their span (model s)."""
    async with open_api_backend(mode=mode, gpus=3, time_scale=SCALE) as backend, \
            serve_api(create_app(backend, ApiSettings(api_key=None, mode=mode))) as url, \
            httpx.AsyncClient(base_url=url, trust_env=False) as http:
        ids = (await http.post("/inference/batch",
                               json=[{"prompt": f"p{i}"} for i in range(5)])).json()["task_ids"]
        rows = [(await poll(http, i))["result"] for i in ids]
    return rows, max(r["finished_s"] for r in rows) - min(r["submitted_s"] for r in rows)


@pytest.mark.ray
async def test_ray_mode_serves_through_one_gpu_actor_per_server() -> None:
    from parallel_kit.servers import raycluster

    try:
        rows, span = await _five_requests_on_three_gpus("ray")
    finally:
        raycluster.shutdown()  # the cluster the kit started for this test
    assert all(r["ok"] for r in rows)
    assert {r["worker"] for r in rows} == {"gpu0", "gpu1", "gpu2"}
    _assert_two_rounds(rows, span)


async def test_pool_mode_spreads_requests_over_one_server_per_gpu() -> None:
    rows, span = await _five_requests_on_three_gpus("pool")
    assert all(r["ok"] for r in rows)
    assert len({r["worker"] for r in rows}) == 3
    _assert_two_rounds(rows, span)


def _assert_two_rounds(rows: list[dict], span: float) -> None:
    """⌈5/3⌉ = 2 rounds of 10 s, from the rows: 2, 2 and 1 requests per server, and two rounds
    can never take less than 20 model s (how little more is a benchmark, not a test)."""
    workers = [r["worker"] for r in rows]
    assert sorted(workers.count(w) for w in set(workers)) == [1, 2, 2]
    assert span >= 20.0 - 0.05


def test_serve_on_a_taken_port_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = build_parser().parse_args(["serve", "--port", str(port)])
        with pytest.raises(ConfigError, match="choose another with --port"):
            run_serve_command(args)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_command_runs_the_api_until_interrupted() -> None:
    port = _free_port()
    env = {**os.environ, "PARALLEL_KIT_BACKEND": "sim", "PARALLEL_KIT_API_KEY": ""}
    proc = subprocess.Popen(
        [sys.executable, "-m", "parallel_kit", "serve", "--port", str(port),
         "--time-scale", "0.01"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/health", trust_env=False).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "serve did not start"
            time.sleep(0.1)
        body = httpx.post(f"{url}/inference", json={"prompt": "What is Python?"},
                          trust_env=False, timeout=30).json()
        assert body["status"] == "completed"
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130, out  # the CLI's exit code for Ctrl-C
    assert "Application shutdown complete" in out
    assert "simulated Ollama" in out and f"127.0.0.1:{port}" in out
