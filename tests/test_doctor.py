"""``parallel-kit doctor``: the workshop pre-flight, run as a learner runs it (a child process).

Problems are made real, not mocked: Ray is made unimportable by a package named ``ray`` on
``PYTHONPATH`` whose import raises, and the real engine is pointed (``PARALLEL_KIT_LLAMA_SERVER``)
at a script that kills itself with SIGSEGV or at a file that is not executable.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from parallel_kit import doctor

ROOT = Path(__file__).resolve().parent.parent


def _doctor(*args: str, env: dict[str, str] | None = None,
            pythonpath: list[Path] | None = None) -> subprocess.CompletedProcess[str]:
    paths = [*(pythonpath or []), ROOT]
    full = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, paths)),
            "RAY_USAGE_STATS_ENABLED": "0", **(env or {})}
    return subprocess.run([sys.executable, "-m", "parallel_kit", "doctor", *args],
                          capture_output=True, text=True, timeout=240, env=full, cwd=ROOT)


def _lines(proc: subprocess.CompletedProcess[str], status: str) -> list[str]:
    return [ln for ln in proc.stdout.splitlines() if ln.startswith(status)]


def test_doctor_here_is_ready() -> None:
    """On the test machine (every extra installed): exit 0, no failure, the JSON names every item."""
    proc = _doctor("--quick", "--json", "--skip", "estimate")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] is True
    by_name = {c["name"]: c for c in report["checks"]}
    for name in ("python", "package", "extra:notebooks", "extra:ray", "extra:production",
                 "extra:real", "ports", "redis"):
        assert by_name[name]["status"] == "ok", by_name[name]
    assert by_name["ray-start"]["status"] == "skip"
    assert all(c["status"] in ("ok", "warn", "skip", "info") for c in report["checks"])
    # every recorded notebook gets an estimate line (or "not measured" when nothing is recorded)
    recorded = doctor.load_times()
    runtime = [c for c in report["checks"] if c["name"].startswith("runtime:")]
    assert len(runtime) == (len(recorded["notebooks"]) if recorded else 0)


def test_doctor_without_ray_fails_with_one_line(tmp_path: Path) -> None:
    shim = tmp_path / "shim" / "ray"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text(
        'raise ImportError("ray is blocked on purpose for this test")\n')
    proc = _doctor("--quick", "--skip", "estimate", pythonpath=[tmp_path / "shim"])
    assert proc.returncode == 1, proc.stdout + proc.stderr
    fails = _lines(proc, "FAIL")
    assert len(fails) == 1, proc.stdout
    assert "extra:ray" in fails[0] and "blocked on purpose" in fails[0]
    assert 'fix: pip install "parallel_kit-' in fails[0] and "[ray]" in fails[0]
    # the production extra needs ray.serve: optional, so a warning, not a second failure
    assert any("extra:production" in ln for ln in _lines(proc, "WARN"))
    assert "not ready" in proc.stderr and "extra:ray" in proc.stderr


@pytest.mark.parametrize("kind", ["crashes", "not-executable"])
def test_doctor_with_a_broken_engine_fails_with_one_line(tmp_path: Path, kind: str) -> None:
    fake = tmp_path / "llama-server"
    if kind == "crashes":
        fake.write_text(f"#!/bin/sh\nkill -{signal.SIGSEGV.value} $$\n")
        fake.chmod(0o755)
    else:
        fake.write_text("not a program\n")
        fake.chmod(0o644)
    proc = _doctor("--skip", "ray", "--skip", "redis", "--skip", "estimate",
                   env={"PARALLEL_KIT_LLAMA_SERVER": str(fake)})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    fails = _lines(proc, "FAIL")
    assert len(fails) == 1, proc.stdout
    line = fails[0]
    assert line.split()[1] == "engine" and "fix: unset PARALLEL_KIT_LLAMA_SERVER" in line
    if kind == "crashes":
        assert "SIGSEGV" in line
    else:
        assert "not executable" in line


def test_unknown_skip_is_refused() -> None:
    proc = _doctor("--skip", "everything")
    assert proc.returncode == 2 and "invalid choice" in proc.stderr


def test_estimates_scale_the_recorded_times() -> None:
    recorded = {"time_scale": 0.05, "calibration_s": 2.0,
                "notebooks": {"00_a": {"seconds": 10.0, "ok": True},
                              "01_b": {"seconds": None, "ok": False, "error": "boom"}}}
    lines = doctor.estimate_times(3.0, recorded)
    assert lines[0].detail == "00_a: ~15 s"
    assert "not measured (boom)" in lines[1].detail
    assert "1 measured notebooks: ~0.2 min" in lines[2].detail
    assert doctor.estimate_times(None, None)[0].detail.startswith("not measured")


@pytest.mark.ray
@pytest.mark.slow
def test_ray_start_check_runs_an_actor() -> None:
    check = doctor.check_ray_start()
    assert check.status == "ok", check
    assert "2 logical GPUs" in check.detail
