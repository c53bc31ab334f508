"""The `ollama serve` launcher, exercised with the stand-in `ollama` in tests/fake_ollama/."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from parallel_kit.errors import ConfigError, OllamaUnavailable
from parallel_kit.servers.launcher import OllamaServer, find_ollama, stop_process

FAKE_DIR = Path(__file__).parent / "fake_ollama"


@pytest.fixture
def fake_ollama_on_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    import os

    monkeypatch.setenv("PATH", f"{FAKE_DIR}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("FAKE_OLLAMA_RECORD_DIR", str(tmp_path))
    monkeypatch.setenv("FAKE_OLLAMA_PYTHON", sys.executable)
    return tmp_path


async def test_serve_starts_on_its_gpu_and_port_and_stops(fake_ollama_on_path: Path) -> None:
    assert find_ollama() == str(FAKE_DIR / "ollama")
    async with OllamaServer(gpu_ids=["2"], ready_timeout_s=30) as server:
        async with httpx.AsyncClient(trust_env=False) as http:
            resp = await http.get(server.url + "/")
        assert resp.status_code == 200
        recorded = (fake_ollama_on_path / f"{server.port}.gpu").read_text().strip()
        proc = server.process
    assert recorded == "2"
    assert proc is not None and proc.poll() is not None  # stopped with the context
    assert not server.running


async def test_serve_that_exits_is_reported_with_its_exit_code(
        fake_ollama_on_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_OLLAMA_EXIT", "3")
    with pytest.raises(OllamaUnavailable, match=r"exited with code 3.*failing on purpose"):
        async with OllamaServer(gpu_ids=["0"], ready_timeout_s=10):
            pass


def test_missing_ollama_binary_says_how_to_get_one(monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError, match=r"no `ollama` executable on PATH.*--host"):
        OllamaServer(gpu_ids=["0"])


def test_stop_process_terminates_then_kills_one_that_ignores_sigterm() -> None:
    polite = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    assert stop_process(polite, 10.0) == -signal.SIGTERM
    stubborn = subprocess.Popen(
        [sys.executable, "-c", "import signal, sys, time\n"
         "signal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ready', flush=True)\n"
         "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    assert stubborn.stdout is not None and stubborn.stdout.readline() == "ready\n"
    assert stop_process(stubborn, 0.2) == -signal.SIGKILL  # SIGTERM ignored: killed after it
    stubborn.stdout.close()
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    assert stop_process(done) == 0  # already exited: left as it was
