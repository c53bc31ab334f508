"""Sequential mode: one request at a time, every request a row, Ctrl-C keeps partial results.

The first tests use a tiny Ollama-like server (10 model seconds a request at time scale 0.02);
the last ones run against the simulated Ollama (profile ``seed``) once it exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import itertools
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from parallel_kit.config import Endpoint
from parallel_kit.modes.base import ModeContext
from parallel_kit.modes.sequential import RunCancelled, run_sequential
from parallel_kit.records import RequestSpec
from parallel_kit.workload.prompts import original_prompts

SCALE = 0.02
REQUEST_MODEL_S = 10.0  # what the fake server takes per request, model seconds


@contextlib.asynccontextmanager
async def ten_second_ollama(stats: dict[str, int]) -> AsyncIterator[str]:
    """An Ollama-like /api/generate taking 10 model seconds a request; unknown model → 404.

    ``stats`` counts requests and the most that were in service at once.
    """
    stats.update(active=0, peak=0, requests=0)

    async def generate(request: Request) -> Response:
        body = await request.json()
        if body["model"] == "missing":
            return JSONResponse({"error": "model 'missing' not found"}, status_code=404)
        stats["requests"] += 1
        stats["active"] += 1
        stats["peak"] = max(stats["peak"], stats["active"])

        async def gen() -> AsyncIterator[bytes]:
            try:
                await asyncio.sleep(REQUEST_MODEL_S * SCALE / 2)
                yield json.dumps({"response": "tok", "done": False}).encode() + b"\n"
                await asyncio.sleep(REQUEST_MODEL_S * SCALE / 2)
                yield json.dumps({"response": "", "done": True, "eval_count": 1,
                                  "eval_duration": 5 * 10**9, "prompt_eval_count": 4,
                                  "prompt_eval_duration": 5 * 10**9,
                                  "total_duration": 10 * 10**9}).encode() + b"\n"
            finally:
                stats["active"] -= 1
        return StreamingResponse(gen(), media_type="application/x-ndjson")

    app = Starlette(routes=[Route("/api/generate", generate, methods=["POST"])])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP_NODELAY
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="error", lifespan="off",
                                           timeout_graceful_shutdown=1))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.005)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    # Warm up (first-request imports in the server) so that it does not count in the run.
    async with httpx.AsyncClient() as warm:
        await warm.post(f"{url}/api/generate", json={"model": "missing"})
    try:
        yield url
    finally:
        server.should_exit = True
        await task
        sock.close()


def context(url: str, **kw: Any) -> ModeContext:
    return ModeContext(endpoints=[Endpoint(url)], backend="sim", time_scale=SCALE, model="m",
                       **kw)


async def test_five_requests_of_ten_seconds_take_fifty_one_at_a_time() -> None:
    stats: dict[str, int] = {}
    async with ten_second_ollama(stats) as url:
        run = await run_sequential(original_prompts(), context(url, progress=True))
    s = run.summary
    assert (s.mode, s.n, s.ok, s.failed, s.workers, s.slots) == ("sequential", 5, 5, 0, 1, 1)
    assert stats["peak"] == 1 and stats["requests"] == 5  # the server's own count
    assert s.makespan_s >= 50.0 - 0.05  # five whole requests; a busy machine only adds
    assert s.wall_s == pytest.approx(s.makespan_s * SCALE, rel=0.1)
    assert (s.backend, s.time_scale, s.model) == ("sim", SCALE, "m")
    rows = run.requests
    assert [r.request_id for r in rows] == ["r0", "r1", "r2", "r3", "r4"]
    # One after another: each starts after the previous one finished.
    for before, after in itertools.pairwise(rows):
        assert after.started_s >= before.finished_s
    assert all(r.server_total_s == pytest.approx(10.0) for r in rows)
    assert all(r.worker == Endpoint(url).label for r in rows)


async def test_a_failed_request_keeps_its_row_and_the_run_goes_on() -> None:
    specs = [RequestSpec("a"), RequestSpec("b", model="missing"), RequestSpec("c")]
    async with ten_second_ollama({}) as url:
        run = await run_sequential(specs, context(url))
    assert [r.ok for r in run.requests] == [True, False, True]
    assert "model 'missing' not found" in (run.requests[1].error or "")
    assert (run.summary.n, run.summary.failed) == (3, 1)


async def test_cancelling_keeps_finished_rows_and_marks_the_one_in_flight() -> None:
    async with ten_second_ollama({}) as url:
        task = asyncio.create_task(run_sequential(original_prompts(), context(url)))
        await asyncio.sleep(2.5 * REQUEST_MODEL_S * SCALE)  # two done, the third running
        task.cancel()
        with pytest.raises(RunCancelled) as stop:
            await task
    partial = stop.value.partial
    assert isinstance(stop.value, asyncio.CancelledError)
    assert [r.ok for r in partial.requests] == [True, True, False]
    assert partial.requests[2].error == "cancelled"
    assert partial.summary.n == 3 and partial.summary.ok == 2
    assert "cancelled: 2 of 5 requests finished" in partial.summary.notes


async def test_an_empty_run_is_an_empty_result_not_a_crash() -> None:
    run = await run_sequential([], context("http://127.0.0.1:9"))
    assert run.summary.n == 0 and run.requests == []


# -- against the simulated Ollama ---------------------------------------------------------------
needs_sim = pytest.mark.skipif(importlib.util.find_spec("parallel_kit.sim.server") is None,
                               reason="parallel_kit.sim.server is not written yet")


@needs_sim
async def test_original_five_prompts_on_the_seed_profile_take_fifty_seconds() -> None:
    from parallel_kit.sim.server import simulated_ollama

    scale = 0.02
    async with simulated_ollama(profile="seed", time_scale=scale) as url:
        ctx = ModeContext(endpoints=[Endpoint(url)], backend="sim", time_scale=scale)
        run = await run_sequential(original_prompts(), ctx)
    assert run.summary.ok == 5, [r.error for r in run.requests]
    rows = sorted(run.requests, key=lambda r: r.started_s)
    assert all(b.started_s >= a.finished_s - 1e-6 for a, b in itertools.pairwise(rows))
    assert run.summary.makespan_s >= 50.0 - 0.05  # the speed is benchmarks/fidelity.py's
    for row in run.requests:
        assert row.server_total_s is not None and row.server_eval_s is not None
        assert row.output_tokens is not None and row.prompt_tokens is not None
