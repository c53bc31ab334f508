"""``parallel-kit demo`` — the main job: the scenario, the table and the files it writes.

Asserted from what the run recorded (rows, counts, which server served what, predictions from
theory), never from how long it took: the shape holds on a busy machine, the speed is
``benchmarks/fidelity.py``'s to track.
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
from pathlib import Path

import pytest

from parallel_kit.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MODES = ("sequential", "async", "batch", "pool")  # ray has its own tests (a Ray cluster is slow)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, str, Path]:
    out = tmp_path_factory.mktemp("demo")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["demo", "--time-scale", "0.005", "--out", str(out),
                     "--modes", ",".join(MODES)])
    return code, buf.getvalue(), out


def test_demo_exits_zero_and_prints_the_predicted_vs_measured_table(demo_run) -> None:
    code, stdout, _ = demo_run
    assert code == 0
    lines = stdout.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("mode"))
    assert "predicted s" in lines[head] and "fidelity" in lines[head]
    assert [lines[head + 2 + i].split()[0] for i in range(len(MODES))] == list(MODES)
    assert "simulated Ollama, time scale 0.005" in stdout


def test_demo_results_json_has_one_run_per_mode_with_the_headline_predictions(demo_run) -> None:
    _, _, out = demo_run
    doc = json.loads((out / "results.json").read_text())
    assert doc["schema_version"] == 2
    summaries = {r["summary"]["mode"]: r["summary"] for r in doc["runs"]}
    assert list(summaries) == list(MODES)
    for mode, s in summaries.items():
        assert s["n"] == 5 and s["ok"] == 5 and s["failed"] == 0, mode
    # 5 × 10 s: one server → 50 s; three servers → ⌈5/3⌉ = 2 rounds = 20 s (theory, exact).
    assert [summaries[m]["predicted_makespan_s"] for m in MODES] == [50.0, 50.0, 50.0, 20.0]
    assert summaries["pool"]["workers"] == 3
    assert all(summaries[m]["workers"] == 1 for m in ("sequential", "async", "batch"))


def test_demo_rows_show_where_each_request_ran(demo_run) -> None:
    _, _, out = demo_run
    doc = json.loads((out / "results.json").read_text())
    by_mode = {r["summary"]["mode"]: r["requests"] for r in doc["runs"]}
    pool_servers = [row["worker"] for row in by_mode["pool"]]
    assert sorted(pool_servers.count(w) for w in set(pool_servers)) == [1, 2, 2]
    seq = sorted(by_mode["sequential"], key=lambda row: row["started_s"])
    for first, second in itertools.pairwise(seq):  # one at a time
        assert second["started_s"] >= first["finished_s"] - 1e-6


def test_demo_writes_requests_csv_and_the_plots(demo_run) -> None:
    _, stdout, out = demo_run
    with (out / "requests.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 5 * len(MODES)
    assert {r["mode"] for r in rows} == set(MODES) and all(r["ok"] == "True" for r in rows)
    for name in ("timeline.png", "predicted_vs_measured.png", "speedup_vs_gpus.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC), name
        assert f"wrote {out / name}" in stdout


def test_demo_without_plots_writes_only_the_data(tmp_path: Path) -> None:
    assert main(["demo", "--time-scale", "0.005", "--out", str(tmp_path), "--modes",
                 "sequential", "--no-plots"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["requests.csv", "results.json"]


def test_demo_with_an_unknown_mode_is_one_error_line(capsys: pytest.CaptureFixture[str],
                                                     tmp_path: Path) -> None:
    assert main(["demo", "--modes", "sequential,warp", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: unknown mode 'warp'") and "Traceback" not in "\n".join(err)
