"""One shutdown path for every command and mode: SIGINT, SIGTERM, and a second signal.

Each case runs the real CLI in a process of its own, started as a shell starts a background
job (SIGINT ignored — the case where turning SIGTERM into a SIGINT did nothing), waits for the
server's own count of finished requests (``/sim/stats``), sends the signal(s), and asserts
from the records: the exit status, one row per request (finished ones ok, the rest failed rows
with a cause), and — from the process table — that no process the command started is left.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from _procs import REPO, SimProcess

from parallel_kit.cli._signals import Shutdown, shutdown_path

pytestmark = pytest.mark.timeout(300)


def _start(args: list[str]) -> subprocess.Popen[str]:
    """The CLI started as `cmd &` in a script starts it: SIGINT ignored, which ``exec`` keeps.
    Set here around the start, not in a ``preexec_fn``: one makes Popen fork, and this process
    may hold an earlier test's gRPC channels, whose at-fork handler can abort the child."""
    env = {**os.environ, "PYTHONPATH": REPO, "RAY_USAGE_STATS_ENABLED": "0"}
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return subprocess.Popen([sys.executable, "-m", "parallel_kit", *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env)
    finally:
        signal.signal(signal.SIGINT, before)


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _signal_after(proc: subprocess.Popen[str], server: SimProcess, done: int,
                  signals: list[int], *, timeout_s: float = 240.0
                  ) -> tuple[str, list[psutil.Process]]:
    """Wait until ``server`` finished ``done`` requests (its own count), note the command's
    descendants, send ``signals``; returns stderr and those descendants."""
    deadline = time.monotonic() + timeout_s
    children: list[psutil.Process] = []
    try:
        while server.stats()["completed"] < done:
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "the run did not get going"
            children = _descendants(proc.pid) or children
            time.sleep(0.05)
        children = _descendants(proc.pid) or children
        cancelled = int(server.stats().get("cancelled", 0))
        for i, sig in enumerate(signals):
            if i:  # two signals sent at once may be taken in either order (by two threads)
                _until_taken(proc, server, cancelled, deadline)
            proc.send_signal(sig)
        _, err = proc.communicate(timeout=timeout_s)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return err, children


def _until_taken(proc: subprocess.Popen[str], server: SimProcess, cancelled: int,
                 deadline: float) -> None:
    """Wait until the command took the signal before: the run's request was cancelled (the
    server's own count) or the command has ended."""
    while proc.poll() is None and int(server.stats().get("cancelled", 0)) <= cancelled:
        assert time.monotonic() < deadline, "the first signal was never taken"
        time.sleep(0.01)


def _left_running(children: list[psutil.Process]) -> list[str]:
    """The noted descendants still running once the command has exited (a grace for the ones
    stopping on their own)."""
    _, alive = psutil.wait_procs(children, timeout=15)
    names = []
    for p in alive:
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                names.append(f"{p.pid} {' '.join(p.cmdline())[:100]}")
        except psutil.NoSuchProcess:
            continue
    return names


def _rows(path: Path) -> dict[str, list[dict[str, Any]]]:
    doc = json.loads(path.read_text())
    return {r["summary"]["mode"]: r["requests"] for r in doc["runs"]}


def _assert_every_request_is_a_row(rows: list[dict[str, Any]], n: int) -> None:
    assert len(rows) == n
    assert any(r["ok"] for r in rows)
    assert all(r["error"] for r in rows if not r["ok"])


# -- the handler itself ---------------------------------------------------------------------------
def test_first_signal_cancels_the_run_and_the_exit_status_names_it() -> None:
    import asyncio

    stop = Shutdown()
    steps: list[str] = []

    async def run() -> None:
        try:
            stop.handle(signal.SIGTERM)  # as if it arrived now
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            steps.append("cancelled")
            raise

    value, interrupted = stop.run(run())
    assert (value, interrupted, steps) == (None, True, ["cancelled"])
    assert stop.exit_code == 143 and stop.terminated


def test_signals_while_writing_are_counted_not_raised() -> None:
    with shutdown_path() as stop:
        with stop.deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)  # handlers run between byte codes: nothing is raised here
        assert (stop.count, stop.exit_code) == (2, 143)
        with pytest.raises(KeyboardInterrupt):  # outside a run and a write: stop at once
            stop.handle(signal.SIGINT)


# -- the commands, without Ray ----------------------------------------------------------------------
@pytest.mark.parametrize(("signals", "code"), [
    ([signal.SIGTERM], 143), ([signal.SIGINT], 130), ([signal.SIGTERM, signal.SIGTERM], 143),
    ([signal.SIGINT, signal.SIGTERM], 130)])
def test_bench_in_the_background_ends_on_any_signal_writing_every_row(tmp_path, signals,
                                                                      code) -> None:
    server = SimProcess(0.2).start()  # 2 s per request
    out = tmp_path / "r.json"
    try:
        proc = _start(["bench", "--mode", "async", "--host", server.url, "--n", "6",
                       "--concurrency", "1", "--time-scale", "0.2", "--json", str(out),
                       "--no-progress"])
        err, _ = _signal_after(proc, server, 1, signals)
    finally:
        server.stop()
    assert proc.returncode == code, err
    assert "Traceback" not in err
    _assert_every_request_is_a_row(_rows(out)["async"], 6)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sweep_keeps_the_finished_runs_on_a_signal(tmp_path, sig) -> None:
    server = SimProcess(0.05).start()
    out = tmp_path / "s.json"
    try:
        proc = _start(["sweep", "--mode", "sequential", "--host", server.url,
                       "--rates", "0.05,0.1,0.2", "--n", "3", "--time-scale", "0.05",
                       "--json", str(out)])
        err, _ = _signal_after(proc, server, 4, [sig])  # the first rate's 3, and one more
    finally:
        server.stop()
    assert proc.returncode == 128 + sig, err
    assert "Traceback" not in err
    doc = json.loads(out.read_text())
    assert doc["sweep"]["interrupted"] is True
    assert len(doc["runs"]) >= 2  # the finished rate and the interrupted one
    assert all(len(r["requests"]) == 3 for r in doc["runs"])


def test_sweep_output_that_cannot_be_written_is_refused_before_the_run(tmp_path, capsys) -> None:
    from parallel_kit.cli import main

    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = main(["sweep", "--mode", "sequential", "--rates", "1", "--n", "2",
                 "--time-scale", "0.001", "--json", str(blocker / "s.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: --json")


def test_probe_json_that_cannot_be_written_is_refused_before_the_probe(tmp_path, capsys) -> None:
    from parallel_kit.cli import main

    folder = tmp_path / "a-folder"
    folder.mkdir()
    code = main(["probe", "--time-scale", "0.001", "--json", str(folder)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1] == f"error: --json {folder} is a folder — give a file name"


# -- the Ray-based modes --------------------------------------------------------------------------
@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ray", "rayserve", "production"])
def test_sigterm_on_a_ray_mode_writes_every_row_and_leaves_no_process(tmp_path, mode) -> None:
    """Ray's own SIGTERM handler (installed by ``ray.init``) used to win: exit 15/134, no file,
    and production left Redis and Ray's processes running."""
    server = SimProcess(0.1).start()
    out = tmp_path / "r.json"
    try:
        proc = _start(["bench", "--mode", mode, "--host", server.url, "--gpus", "1", "--n", "40",
                       "--time-scale", "0.1", "--json", str(out), "--no-progress"])
        err, children = _signal_after(proc, server, 2, [signal.SIGTERM])
    finally:
        server.stop()
    assert proc.returncode == 143, err[-3000:]
    assert "Traceback" not in err
    _assert_every_request_is_a_row(_rows(out)[mode], 40)
    assert children, "the command started no process? (Ray's raylet at least)"
    assert _left_running(children) == []


@pytest.mark.ray
@pytest.mark.slow
def test_sigterm_during_demo_writes_the_finished_modes_and_leaves_no_process(tmp_path) -> None:
    server = SimProcess(0.05).start()
    out = tmp_path / "demo"
    try:
        proc = _start(["demo", "--host", server.url, "--modes", "sequential,ray", "--gpus", "1",
                       "--time-scale", "0.05", "--out", str(out), "--no-plots"])
        # sequential's 5 requests, then 2 of ray's
        err, children = _signal_after(proc, server, 7, [signal.SIGTERM])
    finally:
        server.stop()
    assert proc.returncode == 143, err[-3000:]
    assert "Traceback" not in err
    written = list(out.rglob("*.json"))
    assert written, f"nothing written under {out}"
    rows = {}
    for path in written:
        doc = json.loads(path.read_text())
        if isinstance(doc, dict) and "runs" in doc:
            rows.update({r["summary"]["mode"]: r["requests"] for r in doc["runs"]})
    assert all(r["ok"] for r in rows["sequential"]) and len(rows["sequential"]) == 5
    _assert_every_request_is_a_row(rows["ray"], 5)
    assert _left_running(children) == []


@pytest.mark.ray
@pytest.mark.slow
def test_a_local_ray_cluster_keeps_token_auth_on_and_its_token_private() -> None:
    """The kit's own cluster: Ray's gRPC servers listen on every interface (Ray offers no
    loopback-only start from ``ray.init``; measured here), so the token guards them: it
    exists and is 0600, and the kit's start does not switch authentication off."""
    code = ("import psutil, ray\n"
            "from parallel_kit.servers import raycluster\n"
            "raycluster.connect(1)\n"
            "me = psutil.Process()\n"
            "bad = []\n"
            "for p in me.children(recursive=True):\n"
            "    try:\n"
            "        conns = p.net_connections(kind='inet')\n"
            "    except psutil.Error:\n"
            "        continue\n"
            "    bad += [f'{p.name()} {c.laddr}' for c in conns\n"
            "            if c.status == psutil.CONN_LISTEN\n"
            "            and c.laddr.ip not in ('127.0.0.1', '::1')]\n"
            "print('BAD', bad)\n"
            "print('NODE', ray.nodes()[0]['NodeManagerAddress'])\n"
            "tok = raycluster.ray_token_path()\n"
            "print('MODE', oct(tok.stat().st_mode & 0o777) if tok.exists() else 'none')\n"
            "raycluster.shutdown()\n")
    env = {**os.environ, "PYTHONPATH": REPO, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    env.pop("RAY_AUTH_MODE", None)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines()
                 if line.startswith(("BAD", "MODE", "NODE")))
    assert lines["MODE"] == "0o600"
    assert lines["BAD"] != "[]"  # what the docs say: every interface (if Ray changes, say so)
