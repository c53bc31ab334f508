"""The open-loop flags of ``bench`` and the ``sweep`` command, as a user types them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from parallel_kit.cli import main

FAST = ["--time-scale", "0.02", "--profile", "seed", "--num-predict", "5"]


@pytest.mark.parametrize("flags,message", [
    (["--rate", "0"], "--rate must be above 0"),
    (["--rate", "-1"], "--rate must be above 0"),
    (["--rate", "fast"], "--rate must be a number"),
    (["--rate", "nan"], "--rate must be a finite number"),
    (["--rate", "1", "--arrivals", "gamma", "--burstiness", "0"], "--burstiness must be above 0"),
    (["--rate", "1", "--arrivals", "gamma", "--burstiness", "x"], "--burstiness must be a number"),
    (["--rate", "0.05", "--duration", "10"], "too short for one"),
    (["--rate", "1", "--slo", "e2e=3"], "unknown SLO key 'e2e'"),
    (["--rate", "1", "--burstiness", "2"], "only applies to --arrivals gamma"),
    (["--duration", "10"], "add --rate R"),
])
def test_bad_open_loop_input_is_one_line_and_exit_2(capsys, flags, message):
    assert main(["bench", "--mode", "async", *FAST, *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.count("\n") == 0 and "Traceback" not in err


def test_a_trace_out_of_order_is_named_at_the_cli(tmp_path, capsys):
    trace = tmp_path / "t.jsonl"
    trace.write_text('{"timestamp_s": 2, "prompt": "a"}\n{"timestamp_s": 1, "prompt": "b"}\n')
    assert main(["bench", "--mode", "async", *FAST, "--trace", str(trace)]) == 2
    assert "line 2: timestamp_s 1 comes before" in capsys.readouterr().err


def test_bench_with_a_rate_prints_measured_beside_predicted(tmp_path, capsys):
    out = tmp_path / "run.json"
    code = main(["bench", "--mode", "sequential,async", *FAST, "--rate", "1", "--n", "6",
                 "--arrivals", "constant", "--slo", "latency=5", "--warmup", "1",
                 "--json", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "lat mean" in printed and "sequential" in printed
    doc = json.loads(out.read_text())
    s = doc["runs"][1]["summary"]
    assert s["offered_rps"] == 1.0 and s["utilisation"] == pytest.approx(0.5)
    assert s["open_loop"]["warmup"] == 1 and s["n"] == 5
    assert all(r["scheduled_s"] is not None for r in doc["runs"][0]["requests"])


def test_sweep_writes_json_table_and_plots(tmp_path, capsys):
    out, plot = tmp_path / "sweep.json", tmp_path / "sweep.png"
    code = main(["sweep", "--mode", "async", *FAST, "--rates", "0.5,1.5", "--n", "4",
                 "--slo", "latency=3", "--json", str(out), "--plot", str(plot)])
    assert code == 0
    assert "sweep of async" in capsys.readouterr().out
    doc = json.loads(out.read_text())
    assert [r["summary"]["offered_rps"] for r in doc["runs"]] == [0.5, 1.5]
    assert doc["sweep"]["command"].startswith("parallel-kit sweep")
    assert plot.exists() and (tmp_path / "sweep_throughput.png").exists()


def test_sweep_refuses_a_bad_rate_list(capsys):
    assert main(["sweep", "--mode", "async", *FAST, "--rates", "1,zero"]) == 2
    assert "--rates" in capsys.readouterr().err


def test_the_installed_command_exits_2_without_a_traceback():
    proc = subprocess.run([sys.executable, "-m", "parallel_kit", "bench", "--mode", "async",
                           "--rate", "-3"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "--rate must be above 0" in proc.stderr
