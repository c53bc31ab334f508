"""The CLI under bad input and on every exit path: one line, the right cause, nothing lost.

Numbers out of range, blank names and unwritable outputs are refused before a run starts; a run
that ends badly (every server lost, a later mode that cannot start, SIGTERM) still writes what
finished; ``--fail-on-error`` turns failed rows into a non-zero exit for CI.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _procs import REPO, SimProcess

from parallel_kit._sync import run_sync
from parallel_kit.bench import Comparison, _capped
from parallel_kit.bench.progress import LineProgress
from parallel_kit.cli import main
from parallel_kit.errors import ConfigError
from parallel_kit.outputs import check_writable, write_or_rescue
from parallel_kit.ranges import RANGES, check
from parallel_kit.records import RequestSpec
from parallel_kit.sim.faults import Faults
from parallel_kit.sim.server import SimulatedOllama

pytestmark = pytest.mark.timeout(180)


def _last_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert lines, "expected an error message"
    return lines[-1]


def _rows(path: Path) -> dict[str, list[dict]]:
    doc = json.loads(path.read_text())
    return {run["summary"]["mode"]: run["requests"] for run in doc["runs"]}


# -- numbers with a range, names that are not blank ----------------------------------------------
@pytest.mark.parametrize(("argv", "flag"), [
    (["bench", "--mode", "pool", "--gpus", "100000"], "--gpus"),
    (["bench", "--mode", "sequential", "--n", "10000000000"], "--n"),
    (["bench", "--mode", "sequential", "--time-scale", "1e300"], "--time-scale"),
    (["bench", "--mode", "sequential", "--time-scale", "1e-300"], "--time-scale"),
    (["bench", "--mode", "sequential", "--time-scale", "nan"], "--time-scale"),
    (["bench", "--mode", "sequential", "--num-predict", "1000000000"], "--num-predict"),
    (["bench", "--mode", "sequential", "--slots", "0"], "--slots"),
    (["bench", "--mode", "async", "--concurrency", "100000"], "--concurrency"),
    (["demo", "--gpus", "0"], "--gpus"),
    (["serve", "--port", "70000"], "--port"),
    (["serve", "--max-num-predict", "0"], "--max-num-predict"),
    (["serve", "--max-held-mb", "-5"], "--max-held-mb"),
    (["sim", "--num-parallel", "100000"], "--num-parallel"),
    (["probe", "--max-k", "1000"], "--max-k"),
    (["sweep", "--mode", "sequential", "--rates", "1", "--n", "1000000"], "--n"),
    (["sweep", "--mode", "sequential", "--rates", "1", "--repeats", "100000"], "--repeats"),
    (["sweep", "--mode", "pool", "--rates", "1", "--gpus", "100000"], "--gpus"),
    (["sweep", "--mode", "pool", "--rates", "1", "--slots", "0"], "--slots"),
    (["sweep", "--mode", "async", "--rates", "1", "--concurrency", "100000"], "--concurrency"),
    (["sweep", "--mode", "sequential", "--rates", "1", "--num-predict", "0"], "--num-predict"),
    (["bench", "--mode", "sequential", "--rate", "1", "--seed", "-5"], "--seed"),
    (["bench", "--mode", "sequential", "--rate", "1", "--max-concurrency", "100000000"],
     "--max-concurrency"),
])
def test_numbers_out_of_range_are_refused_up_front_with_the_range(capsys, argv, flag) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    line = _last_error_line(capsys)
    assert flag in line and RANGES[flag].text() in line, line


@pytest.mark.parametrize("argv", [
    ["bench", "--mode", "sequential", "--rate", "1e300", "--n", "3"],
    ["sweep", "--mode", "sequential", "--rates", "1e300", "--n", "3"],
])
def test_an_absurd_arrival_rate_is_refused_with_the_limit(capsys, argv) -> None:
    from parallel_kit.workload.arrivals import MAX_RATE

    assert main(argv) == 2
    line = _last_error_line(capsys)
    assert "1e+300" in line and f"{MAX_RATE:g}" in line, line


def test_a_negative_seed_is_refused_by_the_library_too() -> None:
    from parallel_kit.workload.arrivals import make_schedule

    with pytest.raises(ConfigError, match="--seed"):
        make_schedule(1.0, n=3, seed=-5)


@pytest.mark.parametrize(("var", "value"), [("MAX_CONCURRENT_REQUESTS", "100000000"),
                                             ("PARALLEL_KIT_TIME_SCALE", "1e-300"),
                                             ("PARALLEL_KIT_TIME_SCALE", "1e300")])
def test_numbers_from_the_environment_have_the_same_ranges(capsys, monkeypatch, var,
                                                           value) -> None:
    monkeypatch.setenv(var, value)
    assert main(["bench", "--mode", "async", "--n", "1"]) == 2
    line = _last_error_line(capsys)
    assert var in line and "outside" in line


def test_every_range_is_checked_by_the_library_too() -> None:
    for flag, r in RANGES.items():
        assert check(flag, r.lo) == r.lo and check(flag, r.hi) == r.hi
        with pytest.raises(ConfigError, match=r.text().replace(".", r"\.")):
            check(flag, r.hi * 2 + 1)


@pytest.mark.parametrize("command", [["bench", "--mode", "sequential"], ["demo"], ["serve"]])
def test_blank_model_name_is_refused(capsys, command) -> None:
    with pytest.raises(SystemExit):
        main([*command, "--model", "  "])
    assert "blank" in _last_error_line(capsys)


# -- outputs checked before the run, rescued after -----------------------------------------------
@pytest.mark.parametrize("flag", ["--json", "--csv", "--plot"])
def test_unwritable_output_is_refused_before_the_run(capsys, flag) -> None:
    name = "out.png" if flag == "--plot" else "out.file"  # a figure must be a figure format
    code = main(["bench", "--mode", "sequential", "--n", "1", "--time-scale", "0.01",
                 flag, f"/proc/no-such-folder/{name}"])
    out = capsys.readouterr()
    assert code == 2 and "Traceback" not in out.err
    assert flag in out.err and "cannot create the folder" in out.err
    assert "sequential" not in out.out  # no run happened: nothing was thrown away


def test_demo_out_that_is_a_file_is_refused_before_the_run(capsys, tmp_path) -> None:
    afile = tmp_path / "f"
    afile.write_text("x")
    assert main(["demo", "--out", str(afile)]) == 2
    assert "--out" in _last_error_line(capsys)


def test_output_folder_that_is_not_writable_is_refused(tmp_path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        with pytest.raises(ConfigError, match="not writable"):
            check_writable([("--json", str(locked / "x.json"))])
    finally:
        locked.chmod(0o700)


def test_a_write_that_fails_late_goes_to_a_fallback_and_says_where(tmp_path) -> None:
    said: list[str] = []
    target = tmp_path / "gone" / "r.json"

    def write(p: Path) -> Path:
        if p == target:
            raise OSError(28, "No space left on device")
        p.write_text("{}")
        return p

    written = write_or_rescue(target, write, say=said.append)
    assert written != target and written.read_text() == "{}"
    assert str(written) in said[0] and "No space left" in said[0]
    written.unlink()


# -- nothing lost on any exit path ---------------------------------------------------------------
def test_every_worker_lost_still_writes_what_finished(tmp_path, capsys) -> None:
    sims = [SimulatedOllama("seed", time_scale=0.02, faults=Faults(stop_after=1))
            for _ in range(2)]
    urls = [s.start_in_thread() for s in sims]
    try:
        out = tmp_path / "r.json"
        code = main(["bench", "--mode", "pool", "--host", urls[0], "--host", urls[1],
                     "--n", "5", "--time-scale", "0.02", "--json", str(out), "--no-progress"])
    finally:
        for s in sims:
            s.stop()
    err = capsys.readouterr().err
    assert code == 0 and "every worker was lost" in err
    rows = _rows(out)["pool"]
    assert len(rows) == 5 and sum(r["ok"] for r in rows) == 2
    assert all("every worker was lost" in r["error"] for r in rows if not r["ok"])


def test_a_later_mode_that_cannot_start_keeps_the_earlier_runs(tmp_path, capsys) -> None:
    with socket.socket() as s:  # a Ray address where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "r.json"
    code = main(["bench", "--mode", "sequential,ray", "--n", "2", "--time-scale", "0.01",
                 "--ray-address", f"127.0.0.1:{port}", "--json", str(out), "--no-progress"])
    line = _last_error_line(capsys)
    assert code == 2 and "connection refused" in line
    rows = _rows(out)
    assert [r["ok"] for r in rows["sequential"]] == [True, True]
    assert len(rows["ray"]) == 2 and not any(r["ok"] for r in rows["ray"])
    assert all("connection refused" in r["error"] for r in rows["ray"])


def test_sigterm_during_bench_writes_what_finished(tmp_path) -> None:
    server = SimProcess(0.2).start()  # 2 s per request
    out = tmp_path / "r.json"
    env = {**os.environ, "PYTHONPATH": REPO}
    proc = subprocess.Popen(
        [sys.executable, "-m", "parallel_kit", "bench", "--mode", "sequential", "--host",
         server.url, "--n", "5", "--time-scale", "0.2", "--json", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 60
        while server.stats()["completed"] < 1:  # the server's own count
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        server.stop()
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    rows = _rows(out)["sequential"]
    assert len(rows) == 5 and rows[0]["ok"]
    assert all(r["error"] == "cancelled" for r in rows if not r["ok"])


@pytest.mark.parametrize(("flag", "code"), [([], 0), (["--fail-on-error"], 1)])
def test_fail_on_error_makes_failed_rows_a_non_zero_exit(capsys, flag, code) -> None:
    sim = SimulatedOllama("seed", time_scale=0.01, faults=Faults(fail_fraction=0.5))
    url = sim.start_in_thread()
    try:
        got = main(["bench", "--mode", "sequential", "--host", url, "--n", "4",
                    "--time-scale", "0.01", "--no-progress", *flag])
    finally:
        sim.stop()
    assert got == code
    assert "2 request(s) failed" in capsys.readouterr().err


# -- causes named right, no stray traceback ------------------------------------------------------
def test_a_host_name_that_does_not_resolve_is_not_called_refused(capsys) -> None:
    assert main(["bench", "--mode", "sequential", "--host", "http://no-such-host.invalid:11434",
                 "--n", "1"]) == 2
    line = _last_error_line(capsys)
    assert "does not resolve" in line and "refused" not in line


def test_sim_on_a_busy_port_says_the_port_is_in_use(capsys) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        code = main(["sim", "--port", str(s.getsockname()[1])])
    line = _last_error_line(capsys)
    assert code == 2 and "in use" in line and "another Ollama" not in line


def test_errors_from_a_run_are_not_chained_to_no_running_event_loop() -> None:
    async def fails() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError) as info:
        run_sync(fails())
    assert info.value.__context__ is None


# -- long runs: progress and bounded requests ----------------------------------------------------
def test_progress_lines_are_printed_when_stderr_is_not_a_terminal(capsys) -> None:
    code = main(["bench", "--mode", "sequential", "--n", "2", "--time-scale", "0.12"])
    err = capsys.readouterr().err
    assert code == 0 and "requests: " in err and "/2 done" in err


def test_line_progress_ticks_while_a_request_runs() -> None:
    import io

    out = io.StringIO()
    bar = LineProgress(3, "requests", stream=out, delay_s=0.0, min_interval_s=0.0)
    bar.tick()
    bar.update(1)
    bar.close()
    assert out.getvalue().splitlines()[0].startswith("requests: 0/3 done")
    assert "1/3" in out.getvalue()


def test_real_engine_requests_without_num_predict_are_capped_and_the_table_says_so() -> None:
    specs = [RequestSpec("a"), RequestSpec("b", num_predict=7)]
    capped = _capped(specs, 128)
    assert [s.num_predict for s in capped] == [128, 7]
    assert _capped(capped, 128) is capped
    comparison = Comparison(request_cap=128)
    assert "capped at 128 output tokens" in comparison.table()



def test_serve_limit_flags_have_laptop_defaults_and_reach_the_settings() -> None:
    from parallel_kit.cli import build_parser

    args = build_parser().parse_args(["serve"])
    assert (args.max_num_predict, args.max_held_mb, args.max_kept_mb, args.max_request_s,
            args.shutdown_timeout_s) == (4096, 256, 256, 600.0, 10.0)
    args = build_parser().parse_args(["serve", "--max-held-mb", "1", "--max-num-predict", "9"])
    assert args.max_held_mb == 1 and args.max_num_predict == 9
