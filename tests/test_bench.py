import asyncio

import pytest

from parallel_kit.bench import Comparison, compare, format_table


async def test_seed_scenario_single_server_modes_serve_one_at_a_time_as_predicted():
    from parallel_kit.sim.server import SimulatedOllama

    async with SimulatedOllama("seed", time_scale=0.02) as sim:
        c = await compare(["batch", "sequential"], n=5, hosts=[sim.url], time_scale=0.02)
        stats = sim.stats()
    assert [r.summary.mode for r in c.runs] == ["sequential", "batch"]  # sequential first
    # The server's own count: never two requests in its one slot, whether the client sent them
    # one by one (sequential) or all at once (batch: they wait in the server's FIFO).
    assert stats["max_active"] == 1
    for run in c.runs:
        s = run.summary
        assert s.predicted_makespan_s == pytest.approx(50.0)  # theory: exact
        assert s.n == 5 and s.ok == 5
        # Five whole 10 s requests one at a time: 50 s is a floor a busy machine only adds to
        # (how close it stays is benchmarks/fidelity.py's measure, not a test's).
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
    assert "a real server, which gave no name" in text and "—" in text


async def test_a_simulator_with_a_calibrated_profile_is_predicted_from_that_profile() -> None:
    """A profile that is not built in (a calibrated one) reaches bench through /sim/stats: the
    prediction is the simulator's own step rules for that profile, not an unknown-name error."""
    from parallel_kit import theory
    from parallel_kit.records import RequestSpec
    from parallel_kit.sim.profiles import profile_from_dict
    from parallel_kit.sim.server import SimulatedOllama

    mine = profile_from_dict("calibrated-here", {
        "num_parallel": 2, "scaling": {"points": [[1, 1.0], [2, 1.5]]},
        "models": {"llama3.2:3b": {"decode_tps": 40.0, "prefill_tps": None, "load_s": 0.0,
                                   "output_tokens": [20, 20]}}})
    specs = [RequestSpec(f"q{i}", request_id=f"r{i}") for i in range(4)]
    sim = SimulatedOllama(mine, num_parallel=2, time_scale=0.02)
    sim.start_in_thread()
    try:
        runs = await compare(["async"], specs, hosts=[sim.url], backend="sim", salt=False,
                             concurrency=2)
    finally:
        sim.stop()
    run = runs["async"]
    assert run.summary.ok == 4
    service = theory.service_model_from_profile(mine, specs)
    want = theory.predict("async", servers=1, slots=2, speedup=mine, concurrency=2,
                          service=service).makespan_s
    assert run.summary.predicted_makespan_s == pytest.approx(want, rel=1e-6)


async def test_an_open_loop_run_on_a_calibrated_simulator_is_predicted_too() -> None:
    from parallel_kit.records import RequestSpec
    from parallel_kit.sim.profiles import profile_from_dict
    from parallel_kit.sim.server import SimulatedOllama
    from parallel_kit.workload.arrivals import Arrivals

    mine = profile_from_dict("calibrated-here", {
        "num_parallel": 1, "models": {"llama3.2:3b": {
            "decode_tps": 40.0, "prefill_tps": None, "load_s": 0.0, "output_tokens": [20, 20]}}})
    specs = [RequestSpec(f"q{i}", request_id=f"r{i}") for i in range(4)]
    sim = SimulatedOllama(mine, num_parallel=1, time_scale=0.02)
    sim.start_in_thread()
    try:
        runs = await compare(["async"], specs, hosts=[sim.url], backend="sim", salt=False,
                             arrivals=Arrivals(rate=1.0, seed=3, n=4))
    finally:
        sim.stop()
    s = runs["async"].summary
    assert s.ok == 4
    assert s.predicted_latency_mean_s is not None and s.predicted_latency_mean_s >= 0.5
