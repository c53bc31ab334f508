"""Theory and the simulator share one latency model: the same inputs, the same schedule.

The simulator's engine (``parallel_kit.sim.engine.SimEngine``) is run as it is, on an event
loop whose clock is virtual: the loop's ``time()`` jumps to the next timer instead of waiting
for it, so the engine's step rules play out exactly and at once, whatever the machine's load.
Only the engine's sub-millisecond wake-up thread is swapped for the loop's own timers (that
thread exists to beat epoll's whole-millisecond waits on a real clock; on a virtual clock the
loop's timers are exact). Prompt speeds are chosen so that a prompt never ends exactly on a
step boundary: at such a tie the engine's order is the event loop's (equal timers) and so is
not defined. The engine's reported durations and the time each token is handed
out are then compared with :func:`parallel_kit.theory.queueing.simulate` and with
:func:`parallel_kit.theory.predict` on the same prompts, lengths, slots and S(k).
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parallel_kit import theory
from parallel_kit.sim import timer as timer_module
from parallel_kit.sim.engine import Done, GenerateRequest, SimEngine
from parallel_kit.sim.profiles import Profile, load_profile
from parallel_kit.sim.virtual_clock import VirtualClockLoop, loop_timer
from parallel_kit.theory import queueing
from parallel_kit.topology import Topology

SEED = load_profile("seed")
MODEL = SEED.default_model
TOL_S = 1e-6  # the engine reports whole nanoseconds; float steps add crumbs


@pytest.fixture
def virtual_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(timer_module.TIMER, "wait_until", loop_timer)


def _profile(decode_tps: float, prefill_tps: float | None, scaling: list[float]) -> Profile:
    speed = replace(SEED.speed(), decode_tps=decode_tps, prefill_tps=prefill_tps)
    points = tuple((k, s) for k, s in enumerate([1.0, *scaling], start=1))
    return replace(SEED, models={speed.name: speed}, scaling=points)


def run_engine(profile: Profile, slots: int, prompts: list[str], tokens: list[int],
               arrivals: list[float]) -> tuple[list[float], list[float], list[Done]]:
    """Each request's first-token time, last-token time (from its arrival, model s) and Done."""

    async def main() -> tuple[list[float], list[float], list[Done]]:
        loop = asyncio.get_running_loop()
        # Theory models no prompt cache: the engine's is off here (tests/test_sim_cache.py).
        engine = SimEngine(profile, num_parallel=slots, keep_alive_s=math.inf,
                           prompt_cache=False)
        await engine.load(MODEL)
        t0 = loop.time()

        async def one(i: int) -> tuple[float, float, Done]:
            await asyncio.sleep(arrivals[i])
            start = loop.time()
            first = last = math.nan
            async for item in engine.generate(
                    GenerateRequest(model=MODEL, prompt=prompts[i], num_predict=tokens[i])):
                if isinstance(item, Done):
                    return first - start, last - start, item
                if math.isnan(first):
                    first = loop.time()
                last = loop.time()
            raise AssertionError("the engine ended a stream without Done")

        out = await asyncio.gather(*(one(i) for i in range(len(prompts))))
        await engine.aclose()
        assert loop.time() >= t0
        return [o[0] for o in out], [o[1] for o in out], [o[2] for o in out]

    loop = VirtualClockLoop()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


def _inputs(profile: Profile, lengths: list[int]) -> tuple[list[str], list[float]]:
    prompts = [f"request {i}: " + "tell me about parallel inference " * (1 + 3 * (i % 4))
               for i in range(len(lengths))]
    prefill = [profile.prefill_s(profile.prompt_tokens(p)) for p in prompts]
    return prompts, prefill


def test_virtual_clock_engine_gives_the_headline_schedule(virtual_timer: None) -> None:
    # Five requests of 100 tokens at 10 tokens/s on one slot: 10, 20, …, 50 s.
    _, last, done = run_engine(SEED, 1, ["hi"] * 5, [100] * 5, [0.0] * 5)
    assert [round(d.total_duration / 1e9, 6) for d in done] == [10.0, 20.0, 30.0, 40.0, 50.0]
    assert last == pytest.approx([10.0, 20.0, 30.0, 40.0, 50.0], abs=TOL_S)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(
    slots=st.integers(1, 5),
    lengths=st.lists(st.integers(1, 30), min_size=1, max_size=9),
    scaling=st.lists(st.floats(0.6, 4.0), min_size=4, max_size=4),
    prefill_tps=st.sampled_from([None, 21.7, 203.3]),
    decode_tps=st.sampled_from([10.0, 37.0]),
    spread=st.sampled_from([0.0, 0.5, 3.0]),
    data=st.data(),
)
def test_engine_step_rules_equal_queueing_simulate(
        virtual_timer: None, slots: int, lengths: list[int], scaling: list[float],
        prefill_tps: float | None, decode_tps: float, spread: float, data: Any) -> None:
    profile = _profile(decode_tps, prefill_tps, scaling)
    prompts, prefill = _inputs(profile, lengths)
    drawn = sorted(data.draw(st.lists(st.floats(0.0, spread), min_size=len(lengths),
                                      max_size=len(lengths))))
    # Simultaneous arrivals have no defined order in an event loop (equal timers): keep them
    # apart, except all at 0 (started in order in one pass).
    arrivals = [a + i * 1e-4 for i, a in enumerate(drawn)] if spread else drawn
    first, last, done = run_engine(profile, slots, prompts, lengths, arrivals)
    sim = queueing.simulate(arrivals, lengths, decode_tps=decode_tps, prefill_s=prefill,
                            slots=slots, speedup=profile.S)
    assert first == pytest.approx(list(sim.ttft_s), abs=TOL_S)
    assert last == pytest.approx(list(sim.latency_s), abs=TOL_S)
    assert [d.total_duration / 1e9 for d in done] == pytest.approx(list(sim.latency_s),
                                                                   abs=TOL_S)
    assert [d.prompt_eval_duration / 1e9 for d in done] == pytest.approx(prefill, abs=TOL_S)
    assert [d.eval_count for d in done] == lengths


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(
    slots=st.integers(2, 5),
    concurrency=st.integers(1, 6),
    lengths=st.lists(st.integers(1, 40), min_size=1, max_size=10),
    scaling=st.lists(st.floats(0.6, 4.0), min_size=4, max_size=4),
    prefill_tps=st.sampled_from([None, 15.3, 119.1]),
)
def test_predict_makespan_equals_the_engines_last_finish(
        virtual_timer: None, slots: int, concurrency: int, lengths: list[int],
        scaling: list[float], prefill_tps: float | None) -> None:
    # A closed loop of `concurrency` in flight on one server with `slots` slots.
    profile = _profile(10.0, prefill_tps, scaling)
    prompts, _ = _inputs(profile, lengths)
    busy = min(slots, concurrency)
    _, last, _ = run_engine(profile, busy, prompts, lengths, [0.0] * len(lengths))
    service = theory.service_model_from_profile(
        profile, [_Spec(p, n) for p, n in zip(prompts, lengths, strict=True)])
    pred = theory.predict(Topology(servers=1, slots=slots, in_flight=concurrency),
                          service=service)
    assert pred.makespan_s == pytest.approx(max(last), abs=TOL_S)


class _Spec:
    """A request as ``bench`` hands it to theory: a prompt and its num_predict."""

    def __init__(self, prompt: str, num_predict: int) -> None:
        self.prompt = prompt
        self.num_predict = num_predict
        self.options: dict[str, Any] = {}


def test_prefill_runs_at_full_speed_not_slowed_by_s_of_k(virtual_timer: None) -> None:
    # Long prompts, 4 slots, S(4) = 2: the engine processes each prompt at full speed, so
    # the step-rule prediction matches it and processor sharing of whole service times
    # (which slows the prompt by S(k)/k too) predicts longer.
    profile = _profile(10.0, 20.0, [1.5, 1.8, 2.0, 2.0])
    prompts, prefill = _inputs(profile, [40] * 4)
    assert min(prefill) > 0.5
    _, last, _ = run_engine(profile, 4, prompts, [40] * 4, [0.0] * 4)
    service = theory.service_model_from_profile(
        profile, [_Spec(p, 40) for p in prompts])
    topo = Topology(servers=1, slots=4)
    steps = theory.predict(topo, service=service).makespan_s
    fluid = theory.predict(topo, service.solo_s, speedup=profile.S).makespan_s
    assert steps == pytest.approx(max(last), abs=TOL_S)
    assert fluid > max(last) + 0.1
    assert np.isfinite(steps)
