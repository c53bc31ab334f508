"""The simulator's engine: slots, FIFO queue, loading, keep-alive and the latency model."""

from __future__ import annotations

import asyncio
import math
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parallel_kit.errors import ConfigError
from parallel_kit.sim.engine import (
    BusyError,
    Done,
    EngineError,
    GenerateRequest,
    ModelNotFoundError,
    SimEngine,
    _sleep_until,
    canonical_name,
    parse_keep_alive,
)
from parallel_kit.sim.faults import Faults
from parallel_kit.sim.profiles import load_profile

SEED = load_profile("seed")
MODEL = "llama3.2:3b"


async def generate(engine: SimEngine, prompt: str = "What is Python?", **kw):
    """Run one request; returns (clock time of each token, final Done)."""
    loop = asyncio.get_running_loop()
    times: list[float] = []
    async for item in engine.generate(GenerateRequest(model=MODEL, prompt=prompt, **kw)):
        if isinstance(item, Done):
            return times, item
        times.append(loop.time())
    raise AssertionError("no Done")


@pytest.mark.parametrize(("value", "seconds"), [
    ("5m", 300.0), ("1h30m", 5400.0), ("10s", 10.0), ("250ms", 0.25), ("0", 0.0), (0, 0.0),
    (30, 30.0), (-1, math.inf), ("-1m", math.inf),
])
def test_keep_alive_accepts_ollamas_forms(value, seconds):
    assert parse_keep_alive(value) == seconds


@pytest.mark.parametrize("value", ["5 minutes", "300", True, [1]])
def test_keep_alive_rejects_other_forms(value):
    with pytest.raises(ConfigError):
        parse_keep_alive(value)


def test_name_without_tag_means_latest():
    assert canonical_name("llama3.2") == "llama3.2:latest"
    assert canonical_name("llama3.2:3b") == "llama3.2:3b"


async def test_seed_request_reports_ten_seconds_of_model_time():
    engine = SimEngine(SEED, time_scale=0.01)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    times, done = await generate(engine)
    assert done.eval_count == 100 and len(times) == 100
    assert done.eval_duration == pytest.approx(10e9, rel=1e-6)
    assert done.total_duration == pytest.approx(10e9, rel=1e-3)
    # Paced on the clock at the time scale: never sooner; later only by a busy machine's
    # late wake-up, which the absolute deadlines keep from adding up.
    assert 0.1 * (1 - 1e-3) <= loop.time() - t0 < 0.1 + 1.0
    assert done.done_reason == "stop"


async def test_num_predict_sets_the_length_and_done_reason():
    engine = SimEngine(SEED, time_scale=0.01)
    times, done = await generate(engine, num_predict=7)
    assert len(times) == done.eval_count == 7 and done.done_reason == "length"
    assert done.eval_duration == pytest.approx(0.7e9, rel=1e-6)


async def test_fourth_request_waits_for_a_free_slot():
    engine = SimEngine(SEED, num_parallel=3, time_scale=0.01)
    results = await asyncio.gather(*(generate(engine, f"p{i}", num_predict=10) for i in range(4)))
    totals = sorted(done.total_duration for _, done in results)
    # Three decode together (each at S(3)/3 of alone speed); the fourth starts when one ends.
    together = 10 * 3 / (10 * SEED.S(3))
    # (They arrive microseconds apart; the batch starts when the last is ready.)
    # The engine's own record: never more than three at once. Its durations are lower bounds
    # on a busy machine (a sleep is never shorter than asked, only longer), so the fourth's
    # total holds its wait for a free slot plus its own second of decoding alone.
    assert engine.stats()["max_active"] == 3
    assert all(t >= together * 1e9 * (1 - 1e-3) for t in totals[:3])
    assert totals[3] >= (together + 1.0) * 1e9 * (1 - 1e-3)
    assert totals[3] > max(totals[:3])


async def test_unknown_model_is_not_found():
    engine = SimEngine(SEED, time_scale=0.01)
    with pytest.raises(ModelNotFoundError, match="model 'nope' not found"):
        await _gen_model(engine, "nope")


async def _gen_model(engine: SimEngine, model: str) -> None:
    async for _ in engine.generate(GenerateRequest(model=model, prompt="x")):
        pass


async def test_fail_fraction_fails_an_exact_share_of_requests():
    engine = SimEngine(SEED, time_scale=0.001, faults=Faults(fail_fraction=0.3))
    outcomes = []
    for i in range(10):
        try:
            await generate(engine, f"p{i}", num_predict=1)
            outcomes.append(True)
        except EngineError as exc:
            assert exc.status == 500
            outcomes.append(False)
    assert outcomes.count(False) == 3
    assert engine.stats()["failed"] == 3


async def test_jitter_varies_speed_repeatably():
    async def durations():
        engine = SimEngine(SEED, time_scale=0.001, faults=Faults(jitter=0.3, seed=7))
        return [(await generate(engine, "p", num_predict=5))[1].eval_duration for _ in range(4)]
    first = await durations()
    assert first == await durations()
    assert len(set(first)) > 1
    assert all(0.5e9 * 0.69 <= d <= 0.5e9 * 1.31 + 1e9 for d in first)


async def test_busy_past_max_queue_while_loading():
    profile = load_profile("rtx4090")  # 0.6 s load for llama3.2:3b
    engine = SimEngine(profile, max_queue=2, time_scale=0.05)
    tasks = [asyncio.ensure_future(generate(engine, f"p{i}", num_predict=1)) for i in range(4)]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    busy = [r for r in results if isinstance(r, BusyError)]
    assert len(busy) == 2  # two may wait for the load; the third and fourth are turned away
    assert engine.stats()["busy"] == 2


async def test_cancelled_request_frees_its_slot():
    engine = SimEngine(SEED, time_scale=0.01)
    first = asyncio.ensure_future(generate(engine, "long"))
    await asyncio.sleep(0.02)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    _, done = await generate(engine, "next", num_predict=2)
    # Two tokens of 0.1 s, after waiting at most one step (0.1 s) for the batch to take it.
    assert 0.2e9 * 0.99 <= done.total_duration <= 0.3e9 * 1.05
    assert engine.stats()["cancelled"] == 1 and engine.stats()["active"] == 0


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 4), slots=st.integers(1, 3),
       lengths=st.lists(st.integers(1, 12), min_size=4, max_size=4),
       profile=st.sampled_from(["seed", "m1-max", "rtx4090"]))
def test_more_at_once_never_finishes_earlier_and_tokens_move_forward(n, slots, lengths, profile):
    prof = load_profile(profile)

    async def scenario():
        engine = SimEngine(prof, num_parallel=slots, time_scale=0.0005)
        await engine.load(MODEL)  # leave load time out of the comparison
        return await asyncio.gather(*(generate(engine, f"p{i}", num_predict=lengths[i])
                                      for i in range(n)))

    # Durations are read off the loop's float clock and divided by the time scale: a few ulps
    # of a clock that has run for days, scaled up, is the rounding each bound must allow.
    slack_ns = 8 * math.ulp(time.monotonic()) / 0.0005 * 1e9 + 2
    for i, (times, done) in enumerate(asyncio.run(scenario())):
        alone = prof.service_time_s(done.prompt_eval_count, lengths[i], 1, MODEL)
        assert done.total_duration >= alone * 1e9 - slack_ns
        assert done.eval_duration >= lengths[i] / prof.speed(MODEL).decode_tps * 1e9 - slack_ns
        assert len(times) == lengths[i]
        assert times == sorted(times)


@given(k=st.integers(1, 64), tokens=st.integers(1, 2000),
       profile=st.sampled_from(["seed", "m1-max", "rtx4090", "rtx-a4000"]))
def test_each_of_k_together_is_never_faster_than_alone_but_all_together_are(k, tokens, profile):
    prof = load_profile(profile)
    alone = prof.service_time_s(10, tokens, 1)
    together = prof.service_time_s(10, tokens, k)
    assert together >= alone - 1e-9
    # ... while the k of them finish no later than one after another.
    assert together <= k * alone + 1e-9


async def test_precise_sleep_wakes_at_the_deadline_not_a_whole_millisecond_late() -> None:
    # The loop's own timers wake 0–1 ms late (epoll rounds up to whole ms); the engine sleeps
    # to a request's first and last token with the precise timer. Median of 15, so that a
    # busy machine's odd stall does not decide; 0.6 ms leaves room for a loaded 2-core box.
    loop = asyncio.get_running_loop()
    late = []
    for _ in range(15):
        deadline = loop.time() + 0.0023
        await _sleep_until(deadline, precise=True)
        late.append(loop.time() - deadline)
    late.sort()
    assert late[0] >= 0.0  # never early
    assert late[len(late) // 2] < 0.0006
