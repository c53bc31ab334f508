import asyncio
import itertools

import pytest

from parallel_kit.bench import Comparison, compare, format_table


async def test_seed_scenario_single_server_modes_serve_one_at_a_time_as_predicted():
    c = await compare(["batch", "sequential"], n=5, time_scale=0.02, backend="sim")
    assert [r.summary.mode for r in c.runs] == ["sequential", "batch"]  # sequential first
    for run in c.runs:
        s = run.summary
        assert s.predicted_makespan_s == pytest.approx(50.0)  # theory: exact
        # From the rows: one server, one request at a time, ten model seconds each — so 50 s
        # is a floor that a busy machine can only add to (how close it stays is
        # benchmarks/fidelity.py's measure, not a test's).
        # (batch sends all five at once: they wait in the server's FIFO, so "one at a time"
        # shows in the first tokens — each a whole 10 s request after the one before.)
        rows = sorted(run.requests, key=lambda r: r.first_token_s)
        assert len(rows) == 5 and all(r.ok for r in rows)
        assert all(b.first_token_s - a.first_token_s >= 10.0 - 0.2
                   for a, b in itertools.pairwise(rows))
        assert s.makespan_s >= 50.0 - 0.05
        assert s.efficiency is not None and 0 < s.efficiency <= 1.0 + 1e-3  # never beats theory
        assert s.speedup_vs_sequential is not None and s.speedup_vs_sequential > 0
    assert c.backend == "sim" and c.time_scale == 0.02


async def test_predictions_follow_the_profile_when_slots_and_lengths_vary():
    # seed decodes 10 tokens/s: 20 and 40 tokens are 2 s and 4 s of model time.
    from parallel_kit.records import RequestSpec

    specs = [RequestSpec("a", num_predict=20), RequestSpec("b", num_predict=40)]
    c = await compare(["sequential"], specs, time_scale=0.02, backend="sim")
    assert c.runs[0].summary.predicted_makespan_s == pytest.approx(6.0)


async def test_ctrl_c_keeps_finished_rows_and_marks_the_rest_failed():
    into = Comparison()
    two_done = asyncio.Event()
    seen: list[object] = []

    def finished(row: object) -> None:
        seen.append(row)
        if len(seen) == 2:
            two_done.set()

    task = asyncio.create_task(compare(["sequential"], n=5, time_scale=0.02,
                                       backend="sim", into=into, on_result=finished))
    await two_done.wait()  # a hook, not a sleep: cancel once two requests have finished
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert into.interrupted
    run = into.runs[-1]
    assert len(run.requests) == 5
    assert 2 <= run.summary.ok < 5
    assert all(r.error == "cancelled" or r.ok for r in run.requests)
    assert "predicted" in format_table(into.runs)


def test_table_marks_missing_predictions():
    from parallel_kit.records import RunResult, summarize

    run = RunResult(summarize([], mode="pool", backend="ollama", time_scale=1.0, workers=2,
                              slots=1), [])
    text = format_table([run])
    assert "real Ollama" in text and "—" in text
