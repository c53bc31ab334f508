"""Simulators in processes of their own, so a test can kill, freeze and restart them.

A frozen server is stopped with SIGSTOP: its listening socket stays open (the kernel still
completes TCP handshakes into the backlog) but nothing answers — the fault a request error
never reveals. Waits poll the servers' own state, never a fixed sleep.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from parallel_kit.servers.launcher import free_port, stop_process

#: The checkout under test: child processes import the same ``parallel_kit``.
REPO = str(Path(__file__).resolve().parents[1])


class SimProcess:
    """One ``parallel-kit sim`` process on a fixed port (restartable on the same port)."""

    def __init__(self, time_scale: float, port: int | None = None,
                 extra: tuple[str, ...] = ()) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.time_scale = time_scale
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None
        self.frozen = False
        self.mark = 0  # a test's note of the request count (test_faults.mark)

    def start(self, timeout_s: float = 60.0) -> SimProcess:
        env = {**os.environ, "PYTHONPATH": REPO}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "parallel_kit", "sim", "--port", str(self.port),
             "--time-scale", str(self.time_scale), *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + timeout_s
        while not self.answers():
            assert self.proc.poll() is None, f"simulator on {self.url} exited"
            assert time.monotonic() < deadline, f"simulator on {self.url} did not start"
            time.sleep(0.05)
        return self

    def answers(self, timeout_s: float = 1.0) -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(self.url + "/", trust_env=False,
                             timeout=timeout_s).status_code == 200
        return False

    def stats(self) -> dict[str, Any]:
        return dict(httpx.get(self.url + "/sim/stats", trust_env=False, timeout=5).json())

    def freeze(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        if self.proc is not None and self.frozen:
            self.proc.send_signal(signal.SIGCONT)
        self.frozen = False

    def kill(self) -> None:
        if self.proc is not None:
            self.thaw()
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def restart(self) -> SimProcess:
        self.kill()
        return self.start()

    def stop(self) -> None:
        if self.proc is not None:
            self.thaw()
            stop_process(self.proc, 10.0)
            self.proc = None
