"""The rayserve mode: one Ray Serve replica per GPU, each bound to its own Ollama.

Behaviour is read from the servers' own records (``/sim/stats``) and from real process kills,
never from wall-clock ratios. One Ray cluster and one Serve application are shared by the
session (``serve_session`` in conftest).
"""

from __future__ import annotations

import asyncio
import os
import signal

import pytest
from _ray import MODULE_TIMEOUT_S
from _sims import server_stats, sims
from conftest import SERVE_TIME_SCALE

from parallel_kit.config import Endpoint
from parallel_kit.errors import ConfigError
from parallel_kit.modes.base import ModeContext, ServerOptions, get_mode
from parallel_kit.modes.rayserve import run_on_app, run_rayserve
from parallel_kit.modes.stack_options import check_max_ongoing
from parallel_kit.records import RequestSpec
from parallel_kit.servers.backend import sim_info

pytest.importorskip("ray.serve")
pytestmark = [pytest.mark.ray, pytest.mark.timeout(MODULE_TIMEOUT_S)]


def specs(n: int, prefix: str = "r") -> list[RequestSpec]:
    return [RequestSpec(f"prompt {i}", request_id=f"{prefix}{i}") for i in range(n)]


async def test_seed_scenario_three_given_servers_serve_two_two_one_never_two_at_once(
        serve_session) -> None:
    serve_session.cluster()
    async with sims(3, time_scale=SERVE_TIME_SCALE) as servers:
        ctx = ModeContext([Endpoint(s.url, slots=s.num_parallel) for s in servers],
                          backend="sim", time_scale=SERVE_TIME_SCALE, gpus=3)
        run = await run_rayserve(specs(5), ctx)
        stats = await server_stats(servers)
    assert run.summary.ok == 5 and run.summary.n == 5 and run.summary.mode == "rayserve"
    assert sorted(s["completed"] for s in stats) == [1, 2, 2]  # ⌈5/3⌉ = 2 rounds
    assert [s["max_active"] for s in stats] == [1, 1, 1]  # max_ongoing = slots = 1
    assert len({r.worker for r in run.requests}) == 3  # three GPUs (ids depend on the cluster)
    assert len({r.replica for r in run.requests}) == 3 and all(r.node for r in run.requests)
    # Serve's start-up is set-up, reported apart from the makespan.
    assert run.summary.setup_s is not None and run.summary.setup_s > 0
    for r in run.requests:
        # accepted by the driver → entered the replica → sent to Ollama → answered
        assert r.queued_s <= r.hops["replica_entered"] <= r.started_s < r.finished_s


async def test_a_request_that_finds_every_replica_full_goes_to_the_one_that_frees_first(
        serve_session) -> None:
    """Serve's router with the kit's FreedSlotRouter: two replicas of one slot, three unequal
    requests at once — the one that waits runs on the replica whose request ended first."""
    import importlib

    from parallel_kit.modes.rayserve import ROUTER_CLASS_PATH
    from parallel_kit.modes.serve_router import FreedSlotRouter

    module, _, name = ROUTER_CLASS_PATH.partition(":")
    assert getattr(importlib.import_module(module), name) is FreedSlotRouter
    serve_session.cluster()
    lengths = {"long": 200, "short": 10, "mid": 40}  # tokens: 20 s, 1 s, 4 s alone
    unequal = [RequestSpec(f"prompt {k}", num_predict=t, request_id=k) for k, t in lengths.items()]
    async with sims(2, time_scale=SERVE_TIME_SCALE) as servers:
        ctx = ModeContext([Endpoint(s.url, slots=1) for s in servers], backend="sim",
                          time_scale=SERVE_TIME_SCALE, gpus=2)
        run = await run_rayserve(unequal, ctx)
        stats = await server_stats(servers)
    assert run.summary.ok == 3
    assert [s["max_active"] for s in stats] == [1, 1]  # never two at one Ollama
    assert sorted(s["completed"] for s in stats) == [1, 2]
    rows = sorted(run.requests, key=lambda r: r.started_s)
    first_round, waited = rows[:2], rows[2]
    freed_first = min(first_round, key=lambda r: r.finished_s)
    # It went to the replica that freed first, not to the one still busy with its request.
    assert waited.worker == freed_first.worker and waited.replica == freed_first.replica
    assert waited.started_s >= freed_first.started_s


def test_max_ongoing_below_one_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"--max-ongoing 0 must be a whole number ≥ 1"):
        check_max_ongoing(0)
    assert check_max_ongoing(None) is None and check_max_ongoing(3) == 3


def test_rayserve_is_a_registered_mode() -> None:
    assert get_mode("rayserve") is run_rayserve


async def test_replica_killed_mid_request_is_restarted_and_its_request_retried(
        serve_session) -> None:
    from test_production import _describe_all

    app = serve_session.shared_app()
    await _wait_for_replicas(app, 3)
    victim = (await asyncio.to_thread(_describe_all, app))[0]
    ctx = ModeContext([], backend="sim", time_scale=SERVE_TIME_SCALE, gpus=3,
                      servers=ServerOptions(launch="sim"))

    async def kill_victim_once_busy() -> None:
        while ((await sim_info(victim["url"])) or {}).get("active", 0) < 1:
            await asyncio.sleep(0.005)
        os.kill(victim["pid"], signal.SIGKILL)  # the replica's process, mid-request

    killer = asyncio.create_task(kill_victim_once_busy())
    run = await run_on_app(app, specs(3, "kill"), ctx)
    await asyncio.wait_for(killer, 10)
    assert run.summary.n == 3 and run.summary.ok == 3  # nothing lost
    assert run.summary.retries >= 1 and run.summary.lost_workers
    assert victim["replica"] not in {r.replica for r in run.requests if r.retries}
    # Serve's controller brings a replacement up: three replicas answer again.
    await _wait_for_replicas(app, 3)


async def _wait_for_replicas(app, n: int, timeout_s: float = 60.0) -> None:
    from ray import serve

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        status = serve.status().applications[app.name].deployments["ollama"]
        if status.replica_states.get("RUNNING", 0) == n and str(status.status).endswith(
                "HEALTHY"):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"Serve did not bring {n} replicas back: {status}")
