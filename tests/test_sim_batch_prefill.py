"""Prompts processed inside the decode batch (``prefill_in_batch``, as llama-server's
``update_slots`` builds one batch of decode and prompt tokens): numbers from the engine's own
reported durations, never the clock. The engine-only tests play on a virtual clock
(``sim.virtual_clock``): on the real one, at time scale 0.002, a busy machine's late wake-up
of a few milliseconds is whole model seconds, and a request meant to arrive mid-decode could
arrive after the other had finished."""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parallel_kit.sim import timer as timer_module
from parallel_kit.sim.engine import N_BATCH, Done, GenerateRequest, SimEngine
from parallel_kit.sim.profiles import ModelSpeed, Profile, load_profile, profile_from_dict
from parallel_kit.sim.virtual_clock import VirtualClockLoop, loop_timer

MODEL = "m:1b"
SCALE = 0.002
NS = 1e9


def _profile(in_batch: bool, prefill_tps: float = 100.0, decode_tps: float = 10.0,
             scaling: tuple[tuple[int, float], ...] = ((1, 1.0), (2, 1.6), (4, 2.0))) -> Profile:
    speed = ModelSpeed(name=MODEL, decode_tps=decode_tps, prefill_tps=prefill_tps)
    return Profile(name="t", models={MODEL: speed}, default_model=MODEL, scaling=scaling,
                   num_parallel=4, prefill_in_batch=in_batch)


async def _run(profile: Profile, jobs: list[tuple[float | tuple[int, int], str, int]],
               slots: int) -> list[Done]:
    """Each job: (start, prompt, num_predict). A start is model seconds after the run begins,
    or ``(job, k)``: once job number ``job`` has streamed ``k`` tokens, an order the engine's
    own stream fixes (a clock offset would let a busy machine reorder the two)."""
    engine = SimEngine(profile, num_parallel=slots, time_scale=SCALE)
    await engine.load(MODEL)
    streamed = [0] * len(jobs)
    progress = asyncio.Condition()

    async def one(i: int, start: float | tuple[int, int], prompt: str, n: int) -> Done:
        if isinstance(start, tuple):
            job, k = start
            async with progress:
                await progress.wait_for(lambda: streamed[job] >= k)
        else:
            await asyncio.sleep(start * SCALE)
        async for item in engine.generate(GenerateRequest(model=MODEL, prompt=prompt,
                                                          num_predict=n)):
            if isinstance(item, Done):
                return item
            async with progress:
                streamed[i] += 1
                progress.notify_all()
        raise AssertionError("no Done")

    return list(await asyncio.gather(*(one(i, *j) for i, j in enumerate(jobs))))


def _play(profile: Profile, jobs: list[tuple[float | tuple[int, int], str, int]],
          slots: int) -> list[Done]:
    """:func:`_run` on a virtual clock: the engine's schedule plays out exactly, whatever the
    machine's load."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(timer_module.TIMER, "wait_until", loop_timer)
        loop = VirtualClockLoop()
        try:
            return loop.run_until_complete(_run(profile, jobs, slots))
        finally:
            loop.close()


def _slack(model_s: float = 0.0) -> float:
    """ns of rounding the float clock, scaled, can add (see test_sim_engine)."""
    return 8 * math.ulp(time.monotonic()) / SCALE * NS + 2 + model_s * 1e-9


def test_two_prompts_at_once_share_one_batch_and_the_decode_follows() -> None:
    prompt = "abcd" * 10  # 10 simulator tokens: 0.1 s alone at 100 tok/s
    pair = [(0, "A" + prompt, 5), (0, "B" + prompt, 5)]  # no common prefix to reuse
    done = _play(_profile(True), pair, slots=2)
    # One step takes both prompts; each request waits for the whole step. (The step starts
    # when the later prompt is handed over: the earlier one may count the clock's few µs
    # between the two, time-scaled, on top.)
    tokens = [d.prompt_eval_count for d in done]
    both = sum(tokens) / 100
    durations = sorted(d.prompt_eval_duration for d in done)
    assert durations[0] == pytest.approx(both * NS, abs=_slack())
    assert durations[1] >= both * NS - _slack()
    for d in done:
        # then five steps of two decoding at once: 2 / (10 × 1.6) s each
        assert d.eval_duration == pytest.approx(5 * 2 / 16 * NS, abs=_slack())
    apart = _play(_profile(False), pair, slots=2)
    assert [d.prompt_eval_duration for d in apart] == pytest.approx(
        [t / 100 * NS for t in tokens], abs=_slack())


def test_a_prompt_lengthens_the_step_of_the_request_decoding() -> None:
    long_prompt = "x" * 400  # 100 tokens: 1 s of prefill
    # The second arrives while the first decodes: once it has streamed 5 of its 20 tokens.
    jobs: list[tuple[float | tuple[int, int], str, int]] = [(0, "abcd", 20),
                                                            ((0, 5), long_prompt, 1)]
    done = _play(_profile(True), jobs, slots=2)
    assert [d.cached_tokens for d in done] == [0, 0]
    first, second = done
    alone = 0.01 + 20 / 10  # its own prompt (1 token), then 20 tokens alone
    # The second prompt rode in one of the first request's steps: that step took 1 s more,
    # and the steps after it decode two requests at once.
    assert first.total_duration >= (alone + 1.0) * NS - _slack()
    # The second waited for the step under way (≤ one decode step, 0.1 s), then the step of
    # its prompt and the first's next token (1 s + 0.1 s).
    assert 1.1 * NS - _slack() <= second.prompt_eval_duration <= 1.2 * NS + _slack()
    without = _play(_profile(False), jobs, slots=2)
    assert first.total_duration > without[0].total_duration + 0.9 * NS


def test_a_prompt_longer_than_n_batch_takes_several_steps_and_the_same_prefill_time() -> None:
    prompt = "y" * (4 * (N_BATCH + 10))
    (done,) = _play(_profile(True, prefill_tps=10_000), [(0, prompt, 1)], slots=1)
    assert done.prompt_eval_duration == pytest.approx((N_BATCH + 10) / 10_000 * NS,
                                                      abs=_slack())


def test_the_flag_round_trips_through_the_profile_file() -> None:
    prof = replace(load_profile("seed"), prefill_in_batch=True)
    again = profile_from_dict(prof.name, prof.to_dict())
    assert again.prefill_in_batch and not load_profile("seed").prefill_in_batch
    assert "prefill_in_batch" not in load_profile("seed").to_dict()


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(jobs=st.lists(st.tuples(st.floats(0, 2), st.integers(1, 60), st.integers(1, 8)),
                     min_size=1, max_size=5),
       slots=st.integers(1, 4))
def test_prompts_never_overlap_and_nobody_is_faster_than_alone(jobs, slots) -> None:
    profile = _profile(True)
    specs = [(start, chr(65 + i) + "p" * (4 * tokens - 1), n)
             for i, (start, tokens, n) in enumerate(jobs)]
    done = _play(profile, specs, slots)
    for d, (_, _, n) in zip(done, specs, strict=True):
        alone = profile.service_time_s(d.prompt_eval_count - d.cached_tokens, n, 1, MODEL)
        assert d.total_duration >= alone * NS - _slack(alone)
        assert d.eval_count == n
    # One batch at a time: the prompts' processing never overlaps, so the last request ends
    # no earlier than every prompt's prefill laid end to end after the first arrival.
    first = min(s for s, _, _ in specs)
    last_end = max(s + d.total_duration / NS for (s, _, _), d in zip(specs, done, strict=True))
    prefill = sum(profile.prefill_s(d.prompt_eval_count - d.cached_tokens, MODEL)
                  for d in done)
    assert last_end - first >= prefill - 1e-6


# -- the server's prompts, measured and reproduced ------------------------------------------
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(template=st.integers(0, 40), per_token=st.floats(2.5, 6.0),
       tps=st.floats(200, 20_000), overhead=st.floats(0, 0.2), in_batch=st.booleans())
def test_measured_prompts_are_the_profiles_own(template: int, per_token: float, tps: float,
                                               overhead: float, in_batch: bool) -> None:
    """A simulator told to count and process prompts like a given server is measured back by
    ``calibrate.measure_prompts`` (within whole tokens and the clock's rounding)."""
    from parallel_kit.measure.calibrate import measure_prompts
    from parallel_kit.sim.server import SimulatedOllama

    base = load_profile("rtx4090")
    speed = replace(base.speed("llama3.2:3b"), prefill_tps=tps, prefill_overhead_s=overhead)
    prof = replace(base, template_tokens=template, bytes_per_token=per_token,
                   prefill_in_batch=in_batch, models={"llama3.2:3b": speed})
    again = profile_from_dict(prof.name, prof.to_dict())
    assert again.prompt_tokens("x" * 1000) == template + math.ceil(1000 / per_token)
    assert again.prefill_s(100, "llama3.2:3b") == pytest.approx(overhead + 100 / tps)

    async def main() -> object:
        async with SimulatedOllama(prof, time_scale=0.001) as sim:
            return await measure_prompts(sim.url, "llama3.2:3b", repeats=1, time_scale=0.001)

    fit = asyncio.run(main())
    assert abs(fit.template_tokens - template) <= 1
    assert fit.bytes_per_token == pytest.approx(per_token, rel=0.02)
    assert fit.prefill_tps == pytest.approx(tps, rel=0.02)
    assert fit.prefill_overhead_s == pytest.approx(overhead, abs=0.02 * overhead + 2e-3)


# -- the time a request takes outside the server's own timings -----------------------------
@pytest.mark.parametrize("overhead", [0.0, 0.05, 0.3])
def test_a_requests_own_overhead_holds_its_slot_and_is_measured_back(overhead: float) -> None:
    """The simulator spends ``request_overhead_s`` before the prompt, outside the durations
    it reports; ``probe`` (on the clock) measures it back as latency minus those durations,
    and a profile saved from the probe carries it. Bounds from below are exact; from above
    they allow the client's own milliseconds on a busy machine."""
    from parallel_kit.measure.calibrate import profile_from_probe
    from parallel_kit.measure.probe import probe
    from parallel_kit.sim.server import SimulatedOllama

    base = _profile(False, prefill_tps=1000.0, decode_tps=200.0)
    prof = replace(base, models={MODEL: replace(base.speed(MODEL),
                                                request_overhead_s=overhead)})
    assert prof.service_time_s(10, 4, 1, MODEL) == pytest.approx(overhead + 0.01 + 0.02)
    assert profile_from_dict("t", prof.to_dict()).speed(MODEL).request_overhead_s == overhead

    async def main() -> object:
        async with SimulatedOllama(prof, time_scale=1.0, models=[MODEL]) as sim:
            return await probe(sim.url, MODEL, max_k=1, num_predict=8, repeats=3)

    found = asyncio.run(main())
    assert overhead <= found.request_overhead_s <= overhead + 0.25, found
    saved = profile_from_probe("x", found.to_dict())
    assert saved.speed(MODEL).request_overhead_s == pytest.approx(found.request_overhead_s)
    scaled = profile_from_probe("y", {**found.to_dict(), "time_scale": 0.01})
    assert scaled.speed(MODEL).request_overhead_s == 0.0
