"""Smoke run of benchmarks/queueing.py: tiny sizes, no performance assertion."""

from __future__ import annotations

import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import queueing as queueing_bench  # noqa: E402


def test_queueing_benchmark_writes_predicted_beside_measured(tmp_path: Path) -> None:
    result = queueing_bench.main(["--quick", "--n", "3", "--rhos", "0.5", "--time-scale",
                                  "0.01", "--generator-rates", "50", "--out", str(tmp_path)])
    row = result["latency_part"]["rows"][0]
    assert row["rho"] == 0.5 and row["failed"] == 0
    assert row["replay_predicted_s"]["p50"] > 0 and row["steady_predicted_s"]["p95"] > 0
    saved = json.loads((tmp_path / "queueing_quick.json").read_text())
    assert saved["generator_part"]["rates"][0]["rate_rps"] == 50 and saved["machine"]["cpus"]
    assert saved["latency_part"]["machine"]["load_avg_1_5_15"]
