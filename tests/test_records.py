import json
import math

import pandas as pd
import pytest

from parallel_kit.records import (
    REQUEST_COLUMNS,
    RequestResult,
    RunResult,
    percentile,
    read_json,
    summarize,
    write_csv,
    write_json,
)

CONTRACT_REQUEST_FIELDS = [
    "request_id", "mode", "prompt", "model", "worker", "node", "submitted_s", "started_s",
    "first_token_s", "finished_s", "latency_s", "ttft_s", "ok", "error", "retries",
    "prompt_tokens", "output_tokens", "server_total_s", "server_load_s",
    "server_prompt_eval_s", "server_eval_s",
]
CONTRACT_SUMMARY_FIELDS = [
    "mode", "backend", "time_scale", "n", "ok", "failed", "workers", "slots", "makespan_s",
    "wall_s", "predicted_makespan_s", "throughput_rps", "output_tokens_per_s",
    "latency_p50_s", "latency_p95_s", "ttft_p50_s", "submit_s", "setup_s",
    "speedup_vs_sequential", "efficiency",
]


def _row(i: int, start: float, end: float, ok: bool = True) -> RequestResult:
    return RequestResult(
        request_id=f"r{i}", mode="sequential", prompt="p", model="m", worker="w0",
        submitted_s=0.0, started_s=start, first_token_s=start + 1, finished_s=end, ok=ok,
        error=None if ok else "boom", output_tokens=100 if ok else None,
    ).finalize()


def _run() -> RunResult:
    rows = [_row(i, 10.0 * i, 10.0 * (i + 1)) for i in range(4)] + [_row(4, 40, 50, ok=False)]
    summary = summarize(rows, mode="sequential", backend="sim", time_scale=0.02, workers=1,
                        slots=1, predicted_makespan_s=50.0)
    return RunResult(summary, rows)


def test_request_row_has_every_contract_field_in_order():
    assert list(REQUEST_COLUMNS[: len(CONTRACT_REQUEST_FIELDS)]) == CONTRACT_REQUEST_FIELDS


def test_summary_has_every_contract_field():
    summary = _run().summary.to_dict()
    for name in CONTRACT_SUMMARY_FIELDS:
        assert name in summary


def test_latency_and_ttft_are_measured_from_submission():
    row = _row(2, 20.0, 30.0)
    assert row.latency_s == 30.0
    assert row.ttft_s == 21.0


def test_makespan_runs_from_first_submission_to_last_completion_failed_rows_included():
    s = _run().summary
    assert s.makespan_s == 50.0
    assert (s.n, s.ok, s.failed) == (5, 4, 1)
    assert s.wall_s == pytest.approx(1.0)
    assert s.efficiency == pytest.approx(1.0)
    assert s.throughput_rps == pytest.approx(4 / 50)
    assert s.output_tokens_per_s == pytest.approx(400 / 50)


def test_percentile_interpolates_and_ignores_nan():
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([math.nan, 5.0], 95) == 5.0
    assert math.isnan(percentile([], 50))


def test_json_round_trip_keeps_failed_rows_and_is_standard_json(tmp_path):
    run = _run()
    path = write_json(tmp_path / "out.json", [run])
    doc = json.loads(path.read_text())  # strict JSON: NaN became null
    assert set(doc) == {"schema_version", "runs"} and set(doc["runs"][0]) == {"summary", "requests"}
    back = read_json(path)[0]
    assert len(back.requests) == 5
    assert back.requests[4].ok is False and back.requests[4].error == "boom"
    assert back.summary.makespan_s == run.summary.makespan_s


def test_csv_has_one_row_per_request_and_frame_matches(tmp_path):
    run = _run()
    path = write_csv(tmp_path / "out.csv", [run, run])
    frame = pd.read_csv(path)
    assert len(frame) == 10
    assert list(run.to_frame().columns) == list(frame.columns)
