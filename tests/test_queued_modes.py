"""Modes async and batch: a queue in front of one Ollama, measured against the simulator."""

from __future__ import annotations

import itertools

import httpx
import pytest

from parallel_kit.config import Endpoint
from parallel_kit.modes.base import ModeContext, get_mode
from parallel_kit.modes.options import QueueOptions
from parallel_kit.records import RequestSpec
from parallel_kit.sim.profiles import profile_from_dict
from parallel_kit.sim.server import SimulatedOllama
from parallel_kit.workload.prompts import make_specs

SCALE = 0.02

#: a server with 64 slots and perfect batching: two tokens at 0.08 tokens/s per stream, so one
#: request holds its slot 25 model s (0.5 s on the clock at SCALE), far longer than the client
#: needs to send the next, even with both cores busy
SLOW64 = profile_from_dict("slow64", {
    "num_parallel": 64, "scaling": {"points": [[1, 1.0], [64, 64.0]]},
    "models": {"llama3.2:3b": {"decode_tps": 0.08, "prefill_tps": None, "load_s": 0.0,
                               "output_tokens": [2, 2]}}})


def context(sim: SimulatedOllama, concurrency: int = 5) -> ModeContext:
    return ModeContext(endpoints=[Endpoint(sim.url, slots=sim.num_parallel)], backend="sim",
                       time_scale=SCALE, queue=QueueOptions(concurrency=concurrency))


@pytest.mark.parametrize("mode", ["async", "batch"])
async def test_seed_scenario_accepts_at_once_and_takes_fifty_seconds(mode: str) -> None:
    async with SimulatedOllama("seed", time_scale=SCALE, num_parallel=1) as sim:
        run = await get_mode(mode)(make_specs(5), context(sim))
    s = run.summary
    assert s.mode == mode and s.n == 5 and s.ok == 5
    assert s.submit_s is not None and s.submit_s < 0.1  # clock seconds, never scaled
    # One slot: 5 × 10 s whatever the queue — a floor a busy machine only adds to (how close
    # it stays is benchmarks/fidelity.py's measure).
    assert s.makespan_s >= 50.0 - 0.05
    rows = run.requests
    assert [r.request_id for r in rows] == ["r0", "r1", "r2", "r3", "r4"]
    assert all(r.mode == mode for r in rows)
    assert max(r.queued_s for r in rows) < 5.0  # all accepted near the start (model s)
    # 5 workers, 1 slot: all five are sent at once and wait in Ollama's own FIFO, so the
    # last one's first token comes only after four have run.
    assert max(r.started_s for r in rows) < 5.0
    assert max(r.first_token_s for r in rows) >= 39.0
    assert rows[-1].latency_s == pytest.approx(rows[-1].finished_s - rows[-1].submitted_s)


async def test_concurrency_bounds_what_the_server_sees() -> None:
    async with SimulatedOllama("seed", time_scale=SCALE, num_parallel=8) as sim:
        run = await get_mode("batch")(make_specs(6), context(sim, concurrency=2))
        async with httpx.AsyncClient(trust_env=False) as http:
            stats = (await http.get(f"{sim.url}/sim/stats")).json()
    assert stats["max_active"] == 2  # measured by the server, not the queue
    assert run.summary.ok == 6


async def test_a_failed_request_is_a_failed_row_not_a_missing_one() -> None:
    specs = [RequestSpec("fine", request_id="a"), RequestSpec("x", model="ghost:7b",
                                                              request_id="b")]
    async with SimulatedOllama("seed", time_scale=SCALE) as sim:
        run = await get_mode("async")(specs, context(sim))
    assert [r.request_id for r in run.requests] == ["a", "b"]
    bad = run.requests[1]
    assert not bad.ok and "ghost:7b" in (bad.error or "")
    assert run.summary.failed == 1 and run.summary.ok == 1


@pytest.mark.parametrize("mode", ["async", "batch"])
async def test_latency_and_ttft_count_from_the_send_and_queue_wait_apart(mode: str) -> None:
    # one worker, one slot: each request waits in the kit's queue for those before it
    async with SimulatedOllama("seed", time_scale=SCALE, num_parallel=1) as sim:
        run = await get_mode(mode)(make_specs(3), context(sim, concurrency=1))
    rows, s = run.requests, run.summary
    assert s.ok == 3
    for before, after in itertools.pairwise(rows):
        assert after.submitted_s >= before.finished_s  # sent only when the worker was free
        assert after.queued_s <= before.submitted_s    # but accepted at the start
    for r in rows:
        assert r.latency_s == pytest.approx(r.finished_s - r.submitted_s)
        assert r.ttft_s == pytest.approx(r.first_token_s - r.submitted_s)
        assert r.queue_wait_s == pytest.approx(r.submitted_s - r.queued_s)
    assert rows[2].queue_wait_s >= rows[0].latency_s + rows[1].latency_s
    # the headline is one request's time at the server, not the time behind others in the kit
    assert s.latency_p50_s == pytest.approx(sorted(r.latency_s for r in rows)[1])
    assert s.latency_p99_s <= max(r.latency_s for r in rows)
    assert s.latency_p50_s < s.makespan_s / 2
    assert s.queue_wait_mean_s == pytest.approx(sum(r.queue_wait_s for r in rows) / 3)
    assert s.ttft_p50_s < s.latency_p50_s
    assert s.requested_concurrency == 1 and s.offered_rps is None and s.goodput_rps is None


async def test_itl_comes_from_the_streamed_gaps_and_agrees_with_tpot() -> None:
    async with SimulatedOllama("seed", time_scale=SCALE, num_parallel=1) as sim:
        run = await get_mode("async")(make_specs(2), context(sim, concurrency=2))
    s = run.summary
    # 100 tokens per request: ITL averaged over the 2 × 99 gaps is the decode time over them
    decode = sum(r.latency_s - r.ttft_s for r in run.requests)
    assert s.itl_mean_s == pytest.approx(decode / 198, rel=0.05)
    assert s.tpot_mean_s == pytest.approx(s.itl_mean_s, rel=0.05)
    assert s.itl_p50_s <= s.itl_p99_s


@pytest.mark.parametrize("mode", ["async", "batch"])
async def test_closed_loop_holds_64_in_flight(mode: str) -> None:
    async with SimulatedOllama(SLOW64, time_scale=SCALE, num_parallel=64) as sim:
        run = await get_mode(mode)(make_specs(320), context(sim, concurrency=64))
        async with httpx.AsyncClient(trust_env=False) as http:
            stats = (await http.get(f"{sim.url}/sim/stats")).json()
    assert run.summary.ok == 320
    assert stats["max_active"] == 64  # the server's own count: all 64 were there at once
    assert run.summary.requested_concurrency == 64
    rows = sorted(run.requests, key=lambda r: r.submitted_s)
    first_end = min(r.finished_s for r in rows)
    # order, not a clock ratio: the first 64 all went out before any came back (a trickle
    # of submissions would not), and every later one only after one had come back
    assert all(r.submitted_s < first_end for r in rows[:64])
    assert all(r.submitted_s >= first_end for r in rows[64:])
    # at every later send, no more than 64 were out at the client
    for r in rows[64:]:
        out = sum(1 for o in rows if o.submitted_s <= r.submitted_s < o.finished_s)
        assert out <= 64
    assert 0 < run.summary.achieved_concurrency <= 64.0
