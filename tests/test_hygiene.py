"""Measurement hygiene against the prompt cache: salted prompts, inferred hit rates, flags.

A real Ollama (≥ 0.30) reuses every prompt prefix it has seen, so a benchmark that sends the
same prompts twice measures the cache. These tests run sweeps and comparisons against one
simulated Ollama that stays up between runs — as a real server does — and read the answer from
the runs' own records (the servers' ``prompt_eval_*`` fields, ``/sim/stats``)."""

from __future__ import annotations

import asyncio
import itertools
import math
import string
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parallel_kit import theory
from parallel_kit.bench import compare
from parallel_kit.bench.sweep import sweep
from parallel_kit.errors import ConfigError
from parallel_kit.metrics import infer_prompt_cache, ttft_by_turn
from parallel_kit.records import RequestResult, RequestSpec
from parallel_kit.sim.profiles import load_profile
from parallel_kit.sim.server import SimulatedOllama
from parallel_kit.workload.prompts import (
    make_specs,
    multi_turn_specs,
    salt_specs,
    shared_prefix_specs,
    turn_of,
    unsalted,
)

SCALE = 0.0005
RTX = load_profile("rtx4090")


def _run(coro: Any) -> Any:
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


async def _sweep_on_one_server(prompts: list[RequestSpec], salt: str | bool,
                               **sim: Any) -> tuple[list[bool], list[float | None],
                                                    dict[str, Any]]:
    # keep_alive forever: the model must not unload between cells (at this time scale Ollama's
    # 5 minutes are 0.15 s of clock), which would empty its caches as a real unload does.
    async with SimulatedOllama("rtx4090", time_scale=SCALE, keep_alive=-1, **sim) as server:
        result = await sweep("sequential", [0.05, 0.06, 0.07], n=len(prompts), prompts=prompts,
                             hosts=[server.url], time_scale=SCALE, num_predict=8, salt=salt)
        async with httpx.AsyncClient(trust_env=False) as c:
            stats = (await c.get(f"{server.url}/sim/stats")).json()
    return ([r.summary.cache_flagged for r in result.runs],
            [r.summary.cache_hit_rate for r in result.runs], stats)


# Prompts that share no prefix with one another (distinct first letters), 3+ tokens each.
_prompt_sets = st.lists(st.text(alphabet=string.ascii_lowercase + " ?", min_size=12,
                                max_size=80), min_size=2, max_size=5).map(
    lambda texts: [RequestSpec(prompt=f"{string.ascii_uppercase[i]}{t}")
                   for i, t in enumerate(texts)])


@settings(max_examples=4, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(prompts=_prompt_sets)
def test_unsalted_sweep_is_flagged_on_every_cell_after_the_first(
        prompts: list[RequestSpec]) -> None:
    flagged, rates, stats = _run(_sweep_on_one_server(prompts, salt=False))
    assert flagged == [False, True, True]
    assert rates[0] == 0.0 and all(r is not None and r > 0.5 for r in rates[1:])
    # The server's own count agrees: the later cells' prompts came from its cache.
    assert stats["prompt_cache"]["cached_tokens"] > 0


@settings(max_examples=4, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(prompts=_prompt_sets)
def test_salted_sweep_is_flagged_on_no_cell(prompts: list[RequestSpec]) -> None:
    flagged, rates, _ = _run(_sweep_on_one_server(prompts, salt=True))
    assert flagged == [False, False, False]
    assert all(r is not None and r <= 0.1 for r in rates)


def test_the_original_prompts_unsalted_then_salted() -> None:
    """The kit's own five prompts (two begin "What is "): unsalted, the first cell is clean and
    the later ones measured the cache; salted, none did."""
    prompts = make_specs(5)
    flagged, _, _ = _run(_sweep_on_one_server(prompts, salt=False))
    assert flagged == [False, True, True]
    flagged, _, _ = _run(_sweep_on_one_server(prompts, salt="fixed-1"))
    assert flagged == [False, False, False]


def test_modes_of_one_comparison_on_one_server_get_their_own_salts() -> None:
    async def main(salt: str | bool) -> list[Any]:
        async with SimulatedOllama("rtx4090", time_scale=SCALE, keep_alive=-1) as server:
            comp = await compare(["sequential", "async"], n=5, hosts=[server.url],
                                 time_scale=SCALE, num_predict=8, salt=salt)
        return [r.summary for r in comp.runs]

    salted = _run(main("abc"))
    assert [s.salt for s in salted] == ["abc-sequential", "abc-async"]
    assert not any(s.cache_flagged for s in salted)
    unsalted_runs = _run(main(False))
    assert [s.salt for s in unsalted_runs] == [None, None]
    assert [s.cache_flagged for s in unsalted_runs] == [False, True]
    assert any("prompt cache" in n for n in unsalted_runs[1].notes)


@pytest.mark.parametrize("bad", ["", "a b", "x/y", "ü!"])
def test_a_bad_salt_is_one_clear_error(bad: str) -> None:
    with pytest.raises(ConfigError, match="--salt"):
        _run(compare(["sequential"], n=1, salt=bad, backend="sim"))


@settings(max_examples=50, deadline=None)
@given(prompt=st.text(max_size=60), system=st.none() | st.text(min_size=1, max_size=30),
       salt=st.text(alphabet=string.ascii_letters + string.digits, min_size=1, max_size=10),
       per_request=st.booleans())
def test_salt_specs_changes_only_the_start_and_unsalted_undoes_it(
        prompt: str, system: str | None, salt: str, per_request: bool) -> None:
    specs = [RequestSpec(prompt=prompt, system=system, request_id=f"r{i}") for i in range(3)]
    out = salt_specs(specs, salt, per_request=per_request)
    for s, o in zip(specs, out, strict=True):
        first, orig = (o.system, s.system) if system else (o.prompt, s.prompt)
        assert first is not None and unsalted(first) == orig
        assert first != orig
    lines = {(o.system or o.prompt).split(" ", 1)[0] for o in out}
    assert len(lines) == (3 if per_request else 1)


def test_salt_keeps_the_simulated_workload() -> None:
    """A salt tag changes what the server has seen, not the answer lengths it draws."""
    specs = make_specs(5)
    salted = salt_specs(specs, "s1")
    for a, b in zip(specs, salted, strict=True):
        assert RTX.output_tokens(a.prompt) == RTX.output_tokens(b.prompt)


# -- inference --------------------------------------------------------------------------------
@settings(max_examples=100, deadline=None)
@given(rows=st.lists(st.tuples(st.integers(1, 5000), st.floats(0, 1)), min_size=1,
                     max_size=20),
       rate=st.floats(10, 1e5))
def test_inference_recovers_cached_tokens_from_ollamas_fields(
        rows: list[tuple[int, float]], rate: float) -> None:
    """prompt_eval_count = cached + new, prompt_eval_duration = new ÷ rate (Ollama's counting):
    given the rate, every row's cached tokens come back (within rounding)."""
    made = []
    for i, (count, frac) in enumerate(rows):
        cached = int(count * frac)
        made.append(RequestResult(request_id=f"r{i}", mode="m", prompt="", model="x", ok=True,
                                  prompt_tokens=count,
                                  server_prompt_eval_s=(count - cached) / rate))
    inf = infer_prompt_cache(made, rate)
    assert inf is not None
    for (count, frac), got in zip(rows, inf.cached, strict=True):
        assert got is not None and abs(got - int(count * frac)) <= 1
    # Without the rate: the slowest row sets it; a run with an uncached row is exact.
    made.append(RequestResult(request_id="z", mode="m", prompt="", model="x", ok=True,
                              prompt_tokens=100, server_prompt_eval_s=100 / rate))
    own = infer_prompt_cache(made)
    assert own is not None and math.isclose(own.prefill_tokens_per_s, rate, rel_tol=1e-9)


def test_no_prefill_time_means_no_inference() -> None:
    rows = [RequestResult(request_id="r0", mode="m", prompt="", model="x", ok=True,
                          prompt_tokens=10, server_prompt_eval_s=0.0)]
    assert infer_prompt_cache(rows) is None
    failed = [RequestResult(request_id="r0", mode="m", prompt="", model="x", ok=False)]
    assert infer_prompt_cache(failed) is None


# -- workloads that share on purpose ----------------------------------------------------------
def test_multi_turn_ids_turns_and_growth() -> None:
    specs = multi_turn_specs(3, 4, prefix_tokens=50)
    assert [s.request_id for s in specs[:4]] == ["c0.t0", "c1.t0", "c2.t0", "c0.t1"]
    assert [turn_of(s.request_id) for s in specs] == [t for t in range(4) for _ in range(3)]
    by_conv: dict[str, list[str]] = {}
    for s in specs:
        by_conv.setdefault(s.request_id.split(".")[0], []).append(s.prompt)
    for prompts in by_conv.values():
        for a, b in itertools.pairwise(prompts):
            assert b.startswith(a) and len(b) > len(a)  # each turn extends the last
    assert turn_of("r3") is None


def test_shared_prefix_requests_share_their_system_prompt() -> None:
    specs = shared_prefix_specs(4, prefix_tokens=200)
    head = specs[0].prompt[:800]
    assert all(s.prompt.startswith(head) for s in specs) and len(head) == 800
    with pytest.raises(ConfigError):
        shared_prefix_specs(2, prefix_tokens=0)


@pytest.mark.parametrize(("slots", "ram"), [(1, 0), (2, 0), (4, 0), (1, 8192)])
def test_predicted_turn_hits_match_the_simulator(slots: int, ram: int) -> None:
    """Three conversations taking turns, sequentially: theory's hit prediction (slots and host
    states) against the simulator's own count, and TTFT by turn from the rows."""
    conversations, turns = 3, 4

    async def main() -> tuple[Any, dict[str, Any]]:
        async with SimulatedOllama("rtx4090", num_parallel=slots, time_scale=SCALE,
                                   cache_ram_mib=ram, keep_alive=-1) as server:
            comp = await compare(["sequential"], n=conversations * turns, hosts=[server.url],
                                 time_scale=SCALE, num_predict=8, workload="multi-turn")
            async with httpx.AsyncClient(trust_env=False) as c:
                stats = (await c.get(f"{server.url}/sim/stats")).json()
        return comp.runs[0], stats

    run, stats = _run(main())
    assert run.summary.workload == "multi-turn" and not run.summary.cache_flagged
    host_states = theory.host_cache_states(ram, RTX.speed().kv_bytes_per_token,
                                           max(r.prompt_tokens or 0 for r in run.requests))
    predicted = theory.predict_turn_hits(conversations, slots, host_states)
    prefill = RTX.speed().prefill_tps
    inf = infer_prompt_cache(run.requests, prefill)
    assert inf is not None
    # A later turn "hits" when the cache gave it over half its prompt (its history); the
    # salt tag all of a run's conversations share gives a few tokens, never that much.
    later = [(r, c) for r, c in zip(run.requests, inf.cached, strict=True)
             if (turn_of(r.request_id) or 0) > 0]
    hits = [c is not None and c > (r.prompt_tokens or 0) / 2 for r, c in later]
    assert sum(hits) == round(predicted * len(later))
    assert stats["prompt_cache"]["cached_tokens"] == inf.cached_tokens
    by_turn = ttft_by_turn(run.requests)
    assert sorted(by_turn) == list(range(turns))


# -- the command line --------------------------------------------------------------------------
@pytest.mark.parametrize("args", [["--salt", ""], ["--salt", "a b"], ["--salt", "x/y"]])
@pytest.mark.parametrize("command", ["bench", "sweep"])
def test_a_bad_salt_at_the_cli_is_one_error_line_and_exit_2(
        capsys: pytest.CaptureFixture[str], command: str, args: list[str]) -> None:
    from parallel_kit.cli import main

    extra = ["--rates", "0.1"] if command == "sweep" else []
    code = main([command, "--mode", "sequential", "--n", "2", "--time-scale", "0.01",
                 *extra, *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error:") and "--salt" in err[0]
    assert "--no-salt" in err[0]  # the fix


def test_salt_and_no_salt_together_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    from parallel_kit.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["bench", "--mode", "sequential", "--salt", "a", "--no-salt"])
    assert exc.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_workload_and_trace_together_are_refused(capsys: pytest.CaptureFixture[str],
                                                 tmp_path: Any) -> None:
    from parallel_kit.cli import main

    trace = tmp_path / "t.jsonl"
    trace.write_text('{"timestamp_s": 0, "prompt": "hi"}\n{"timestamp_s": 1, "prompt": "yo"}\n')
    code = main(["bench", "--mode", "sequential", "--trace", str(trace), "--workload",
                 "multi-turn", "--time-scale", "0.01"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error:") and "--workload" in err[-1]
