import asyncio

import pytest

from parallel_kit.bench import Comparison, compare, format_table


async def test_seed_scenario_single_server_modes_take_fifty_seconds():
    c = await compare(["batch", "sequential"], n=5, time_scale=0.02, backend="sim")
    assert [r.summary.mode for r in c.runs] == ["sequential", "batch"]  # sequential first
    for run in c.runs:
        s = run.summary
        assert s.predicted_makespan_s == pytest.approx(50.0)
        assert s.makespan_s == pytest.approx(50.0, rel=0.03)
        assert s.efficiency == pytest.approx(1.0, rel=0.03)
        assert s.speedup_vs_sequential == pytest.approx(1.0, rel=0.05)
    assert c["batch"].summary.submit_s < 0.5  # clock seconds to accept all five
    assert c.backend == "sim" and c.time_scale == 0.02


async def test_predictions_follow_the_profile_when_slots_and_lengths_vary():
    # seed decodes 10 tokens/s: 20 and 40 tokens are 2 s and 4 s of model time.
    from parallel_kit.records import RequestSpec

    specs = [RequestSpec("a", num_predict=20), RequestSpec("b", num_predict=40)]
    c = await compare(["sequential"], specs, time_scale=0.02, backend="sim")
    assert c.runs[0].summary.predicted_makespan_s == pytest.approx(6.0)


async def test_ctrl_c_keeps_finished_rows_and_marks_the_rest_failed():
    into = Comparison()
    task = asyncio.create_task(compare(["sequential"], n=5, time_scale=0.02,
                                       backend="sim", into=into))
    await asyncio.sleep(0.5)  # ≈ 2 of the 5 requests (0.2 s each on the clock)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert into.interrupted
    run = into.runs[-1]
    assert len(run.requests) == 5
    assert 1 <= run.summary.ok < 5
    assert all(r.error == "cancelled" or r.ok for r in run.requests)
    assert "predicted" in format_table(into.runs)


def test_table_marks_missing_predictions():
    from parallel_kit.records import RunResult, summarize

    run = RunResult(summarize([], mode="pool", backend="ollama", time_scale=1.0, workers=2,
                              slots=1), [])
    text = format_table([run])
    assert "real Ollama" in text and "—" in text
