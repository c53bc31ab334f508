"""ApiClient against the served API: submit, wait, batch, errors, and the seed scenario."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from parallel_kit.api import ApiSettings, create_app, open_api_backend, serve_api
from parallel_kit.clients.api import ApiClient, ApiError, format_api_table
from parallel_kit.sim.server import SimulatedOllama

SCALE = 0.02
PROMPTS = ["What is Python?", "What is Rust?", "What is Go?", "What is Java?", "What is C?"]


@contextlib.asynccontextmanager
async def api(**settings: object) -> AsyncIterator[str]:
    cfg = ApiSettings(**{"api_key": None, **settings})  # type: ignore[arg-type]
    async with SimulatedOllama("seed", time_scale=SCALE, num_parallel=1) as sim, \
            open_api_backend([sim.url], concurrency=cfg.concurrency) as backend, \
            serve_api(create_app(backend, cfg)) as url:
        yield url


async def test_submit_then_wait_reaches_completed() -> None:
    async with api() as url, ApiClient(url) as client:
        task_id = await client.submit("What is Python?")
        assert (await client.status(task_id))["status"] in ("queued", "running")
        body = await client.wait(task_id, timeout=10)
        assert (await client.health())["status"] == "ok"
        stats = await client.stats()
    assert body["status"] == "completed" and body["result"]["response"]
    assert stats["completed"] == 1


async def test_wait_gives_up_after_its_timeout() -> None:
    async with api(concurrency=1) as url, ApiClient(url) as client:
        ids = await client.submit_batch(["a", "b", "c"])
        with pytest.raises(TimeoutError, match="still"):
            await client.wait(ids[-1], timeout=0.05)


async def test_errors_carry_the_status_and_the_field() -> None:
    async with api(max_batch=3) as url, ApiClient(url) as client:
        with pytest.raises(ApiError, match="404") as missing:
            await client.status("nope")
        with pytest.raises(ApiError, match="1 to 3 requests"):
            await client.submit_batch(["a"] * 4)
        with pytest.raises(ApiError, match="prompt"):
            await client.submit("")
    assert missing.value.status_code == 404


async def test_missing_key_says_how_to_pass_one() -> None:
    async with api(api_key="k") as url:
        async with ApiClient(url, api_key="") as anonymous:
            with pytest.raises(ApiError, match="PARALLEL_KIT_API_KEY"):
                await anonymous.stats()
        async with ApiClient(url, api_key="k") as keyed:
            assert (await keyed.stats())["completed"] == 0


async def test_no_api_at_the_address_is_a_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with ApiClient(f"http://127.0.0.1:{port}") as client:
        with pytest.raises(ApiError, match="parallel-kit serve"):
            await client.health()


async def test_sync_helpers_work_inside_a_running_loop() -> None:
    async with api() as url:
        client = ApiClient(url)
        # Called from a coroutine: run_sync uses its background loop, ours keeps serving.
        body = await asyncio.to_thread(client.infer_sync, "What is Python?")
    assert body["status"] == "completed"


async def test_seed_scenario_through_the_http_api() -> None:
    """Original analysis: sequential 50 s; async and batch accept at once, still ≈ 50 s."""
    async with api() as url, ApiClient(url) as client:
        runs = [await client.run_mode(mode, PROMPTS)
                for mode in ("sequential", "async", "batch")]
    seq, asy, bat = runs
    for run in runs:
        assert run.ok == 5, run.tasks
        # One single-slot server: 5 × 10 s is a floor; HTTP round trips on a busy machine only
        # add to it (benchmarks/fidelity.py tracks how much).
        assert run.makespan_s >= 50.0 - 0.05, (run.mode, run.makespan_s)
    assert seq.submit_s >= 0.8  # sequential waits for every answer (5 × 0.2 s on the clock)
    assert asy.submit_s < 0.5 and bat.submit_s < 0.5  # accepted in well under a second
    assert bat.submit_s < seq.submit_s / 4
    table = format_api_table(runs, time_scale=SCALE)
    assert "sequential" in table and "batch" in table and "time scale 0.02" in table


def test_demo_script_prints_the_three_modes_side_by_side() -> None:
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PARALLEL_KIT_BACKEND": "sim", "PYTHONPATH": str(root)}
    done = subprocess.run([sys.executable, str(root / "scripts" / "demo_parallel.py"),
                           "--time-scale", "0.01"], capture_output=True, text=True, env=env,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [ln.split()[0] for ln in lines[2:5]] == ["sequential", "async", "batch"]
    assert all(ln.split()[-1] == "5/5" for ln in lines[2:5])
    assert "simulated Ollama" in done.stderr
