"""probe: load time, speeds, and how many requests a server really runs at once."""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import socket
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from parallel_kit.cli.probe import run as run_probe_command
from parallel_kit.errors import ConfigError, ModelNotFound, OllamaUnavailable
from parallel_kit.measure.probe import (
    ProbeResult,
    aggregate_decode_tokens_per_s,
    decoding_span,
    decoding_together,
    probe,
    working_span,
)
from parallel_kit.records import RequestResult

SCALE = 0.05


def row(first_token_s: float, finished_s: float, eval_s: float | None = None) -> RequestResult:
    return RequestResult("r", "probe", "p", "m", submitted_s=0.0, first_token_s=first_token_s,
                         finished_s=finished_s, ok=True, server_eval_s=eval_s)


def test_requests_that_take_turns_are_not_counted_together() -> None:
    # One slot: each decodes after the previous one finished (a little jitter at the seams).
    turns = [row(0.1, 3.2), row(3.25, 6.4), row(6.38, 9.6)]
    assert decoding_together(turns) == 1


def test_requests_decoding_side_by_side_are_counted_together() -> None:
    together = [row(0.1, 8.5), row(0.12, 8.52), row(0.11, 8.49), row(0.13, 8.6)]
    assert decoding_together(together) == 4
    # Two slots, four requests: two pairs one after the other.
    pairs = [row(0.1, 4.0), row(0.1, 4.0), row(4.1, 8.0), row(4.1, 8.0)]
    assert decoding_together(pairs) == 2


def test_rows_without_a_first_token_count_for_nothing() -> None:
    assert decoding_together([row(math.nan, 1.0)]) == 0


def test_server_durations_win_over_bursty_streaming() -> None:
    # Tokens arrived in one burst at the end (first token ≈ finish): the client cannot see the
    # overlap, Ollama's eval_duration can.
    burst = [row(3.9, 4.0, eval_s=3.8), row(3.95, 4.0, eval_s=3.8)]
    assert decoding_together(burst) == 2
    assert working_span(burst[0]) == pytest.approx((0.2, 4.0))


def test_probe_result_json_has_the_contract_fields() -> None:
    result = ProbeResult(host="http://h:1", model="m", time_scale=1.0, load_s=1.5,
                         prefill_tokens_per_s=None, decode_tokens_per_s=40.0, ttft_s=0.2,
                         effective_slots=2, speedup={1: 1.0, 2: 1.4}, concurrent={1: 1, 2: 2},
                         max_k=2, num_predict=32)
    doc = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    for key in ("effective_slots", "decode_tokens_per_s", "prefill_tokens_per_s", "load_s",
                "ttft_s", "speedup"):
        assert key in doc
    assert doc["speedup"] == {"1": 1.0, "2": 1.4} and doc["prefill_tokens_per_s"] is None
    assert "effective slots" in result.table() and "1.40×" in result.table()


async def test_bad_probe_arguments_name_the_flag() -> None:
    with pytest.raises(ConfigError, match="--max-k"):
        await probe("http://127.0.0.1:9", max_k=0)
    with pytest.raises(ConfigError, match="--num-predict"):
        await probe("http://127.0.0.1:9", num_predict=2)


async def test_probe_of_a_closed_port_says_no_ollama_answers() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(OllamaUnavailable, match=f"no Ollama answers at http://127.0.0.1:{port}"):
        await probe(f"127.0.0.1:{port}")


# -- against the simulated Ollama ---------------------------------------------------------------
needs_sim = pytest.mark.skipif(importlib.util.find_spec("parallel_kit.sim.server") is None,
                               reason="parallel_kit.sim.server is not written yet")


@needs_sim
async def test_default_simulator_runs_one_request_at_a_time() -> None:
    from parallel_kit.sim.server import simulated_ollama

    async with simulated_ollama(profile="seed", time_scale=SCALE) as url:
        result = await probe(url, max_k=3, num_predict=16, time_scale=SCALE)
    assert result.effective_slots == 1
    assert result.concurrent == {1: 1, 2: 1, 3: 1}
    # seed profile: 10 tokens/s decoding; one slot gives no speed-up.
    assert result.decode_tokens_per_s == pytest.approx(10.0, rel=0.05)
    assert all(s == pytest.approx(1.0, rel=0.1) for s in result.speedup.values())
    assert result.load_s is not None and result.load_s >= 0
    # Streamed: the first token comes before the 1.6 s answer could have finished.
    assert result.ttft_s is not None and 0 < result.ttft_s < 1.6


@needs_sim
async def test_simulator_with_four_slots_is_seen_running_four_at_once() -> None:
    from parallel_kit.sim.server import simulated_ollama

    async with simulated_ollama(profile="seed", time_scale=SCALE, num_parallel=4) as url:
        result = await probe(url, max_k=4, num_predict=16, time_scale=SCALE)
    assert result.effective_slots == 4
    assert result.concurrent == {1: 1, 2: 2, 3: 3, 4: 4}
    # seed profile: S(4) = 1.5 (docs/OLLAMA_BEHAVIOUR.md: ~1.4–1.6× at 4 slots).
    assert result.speedup[4] == pytest.approx(1.5, rel=0.1)
    assert any("larger --max-k" in n for n in result.notes)


@needs_sim
async def test_probe_of_a_model_the_server_lacks_lists_what_it_has() -> None:
    from parallel_kit.sim.server import simulated_ollama

    async with simulated_ollama(profile="seed", time_scale=SCALE) as url:
        with pytest.raises(ModelNotFound, match="ollama pull nope"):
            await probe(url, "nope", time_scale=SCALE)


@needs_sim
def test_probe_command_prints_a_table_and_writes_json(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from parallel_kit.sim.server import SimulatedOllama

    sim = SimulatedOllama("seed", time_scale=SCALE, num_parallel=2)
    url = sim.start_in_thread()
    try:
        out = tmp_path / "probe.json"
        args = argparse.Namespace(host=[url], model=None, json=str(out), time_scale=None,
                                  max_k=2, num_predict=16, repeats=2)
        assert run_probe_command(args) == 0
        assert sim.stats()["completed"] == 2 + 1 + 2  # 2 alone, then k = 1 and k = 2
    finally:
        sim.stop()
    doc = json.loads(out.read_text())
    assert doc["effective_slots"] == 2 and set(doc["speedup"]) == {"1", "2"}
    assert doc["repeats"] == 2 and doc["service_cv"] == pytest.approx(0.0, abs=1e-6)
    assert doc["time_scale"] == pytest.approx(SCALE)  # read from the simulator itself
    printed = capsys.readouterr().out
    assert "effective slots" in printed and f"wrote {out}" in printed


@needs_sim
async def test_repeated_probe_times_the_request_alone_that_many_times() -> None:
    from parallel_kit.sim.profiles import load_profile
    from parallel_kit.sim.server import SimulatedOllama

    async with SimulatedOllama("seed", time_scale=SCALE) as sim:
        result = await probe(sim.url, max_k=1, num_predict=8, time_scale=SCALE, repeats=3)
        completed = sim.stats()["completed"]
    # 3 alone (the medians) + k = 1 of the S(k) series; the loads are empty prompts.
    assert completed == 4 and result.repeats == 3
    assert result.decode_tokens_per_s == pytest.approx(10.0, rel=0.05)
    # The server's own count of the probe prompt's tokens, and the prompt's size, are kept.
    assert result.prompt_bytes is not None and result.prompt_bytes > 100
    assert result.prompt_tokens == load_profile("seed").prompt_tokens("x" * result.prompt_bytes)
    assert result.to_dict()["prompt_tokens"] == result.prompt_tokens
    # The simulator takes its model time every time: no jitter between the three tries.
    assert result.service_cv == pytest.approx(0.0, abs=1e-6)
    assert result.to_dict()["service_cv"] == result.service_cv
    assert "service time CV" in result.table()


def test_service_cv_is_the_sample_cv_of_the_servers_durations() -> None:
    from parallel_kit.measure.probe import _cv, _service_s

    rows = [RequestResult(request_id=f"r{i}", mode="probe", prompt="p", model="m",
                          queued_s=0.0, submitted_s=0.0, finished_s=9.0, ok=True,
                          server_prompt_eval_s=1.0, server_eval_s=e)
            for i, e in enumerate((3.0, 4.0, 5.0))]
    assert [_service_s(r) for r in rows] == [4.0, 5.0, 6.0]  # not the 9 s latency
    assert _cv([4.0, 5.0, 6.0]) == pytest.approx(0.2)  # stdev 1 (n − 1) ÷ mean 5
    assert _cv([4.0]) is None


async def test_probe_refuses_zero_repeats() -> None:
    with pytest.raises(ConfigError, match="repeats"):
        await probe("http://127.0.0.1:9", repeats=0)


def test_decoding_span_leaves_the_prompt_out() -> None:
    # Ollama's durations: 0.5 s of prompt, then 3 s of decoding, finished at 4 s.
    timed = RequestResult("r", "probe", "p", "m", submitted_s=0.0, first_token_s=0.6,
                          finished_s=4.0, ok=True, server_eval_s=3.0, server_prompt_eval_s=0.5)
    assert working_span(timed) == pytest.approx((0.5, 4.0))
    assert decoding_span(timed) == pytest.approx((1.0, 4.0))
    # No durations: first token to last, as the client saw them.
    assert decoding_span(row(0.6, 4.0)) == pytest.approx((0.6, 4.0))
    assert decoding_span(row(math.nan, math.nan)) is None


@given(st.lists(st.tuples(st.floats(0.0, 5.0), st.floats(0.01, 5.0), st.floats(0.0, 10.0),
                          st.integers(1, 500)), min_size=1, max_size=8))
def test_decode_rate_is_tokens_over_the_decoding_window_whatever_the_prompts(
        reqs: list[tuple[float, float, float, int]]) -> None:
    # S(k)'s numerator: the prompt times change the working spans, never the decode rate.
    rows = [RequestResult("r", "probe", "p", "m", submitted_s=0.0, first_token_s=end - dec,
                          finished_s=end, ok=True, server_eval_s=dec, server_prompt_eval_s=pre,
                          output_tokens=tok)
            for pre, dec, end, tok in ((p, d, e + d, t) for p, d, e, t in reqs)]
    window = max(r.finished_s for r in rows) - min(r.finished_s - (r.server_eval_s or 0.0)
                                                    for r in rows)
    expected = sum(t for *_, t in reqs) / window
    assert aggregate_decode_tokens_per_s(rows) == pytest.approx(expected)
