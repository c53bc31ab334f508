"""Start ``ollama serve`` on one GPU and one port, wait until it answers, stop it again.

Ollama loads a model once per server, so several GPUs mean one server per GPU (the
maintainers' advice in ollama/ollama#7206, https://github.com/ollama/ollama/issues/7206): ``CUDA_VISIBLE_DEVICES=i OLLAMA_HOST=127.0.0.1:PORT ollama serve``. The ``ray`` mode
does this inside each GPU actor; it is usable on its own too::

    async with OllamaServer(gpu_ids=["0"]) as server:
        print(server.url)          # http://127.0.0.1:40123

The server is ready when ``GET /`` answers 200 ("Ollama is running", ``docs/OLLAMA_BEHAVIOUR.md``). It runs in its
own process group, so stopping it also stops anything it started (the llama runners).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

from ..errors import ConfigError, OllamaUnavailable
from ..system.children import stop_process
from ..system.netutil import free_port

__all__ = ["OllamaServer", "find_ollama", "free_port", "has_real_gpus", "stop_process"]


def find_ollama(path: str | None = None) -> str | None:
    """The ``ollama`` executable on ``PATH`` (or on ``path``), or None."""
    return shutil.which("ollama", path=path)


def has_real_gpus() -> bool:
    """Whether this machine has NVIDIA GPUs (driver loaded), not just Ray's logical ones."""
    gpus = Path("/proc/driver/nvidia/gpus")
    return (gpus.is_dir() and any(gpus.iterdir())) or shutil.which("nvidia-smi") is not None


class OllamaServer:
    """One ``ollama serve`` process bound to some GPUs and a loopback port.

    Args:
        gpu_ids: GPUs it may use (``CUDA_VISIBLE_DEVICES``); ``None`` leaves the variable alone.
        port: TCP port (default: a free one); it listens on 127.0.0.1.
        num_parallel: ``OLLAMA_NUM_PARALLEL`` (slots); ``None`` keeps Ollama's default (1).
        env: more environment variables for the server (``OLLAMA_MODELS``, …).
        executable: the binary (default: ``ollama`` on ``PATH``).
        ready_timeout_s: clock seconds to wait for ``GET /`` to answer.
    """

    def __init__(self, gpu_ids: Sequence[str | int] | None = None, *, port: int | None = None,
                 num_parallel: int | None = None, env: Mapping[str, str] | None = None,
                 executable: str | None = None, ready_timeout_s: float = 60.0) -> None:
        exe = executable or find_ollama()
        if exe is None:
            raise ConfigError(
                f"no `ollama` executable on PATH on {socket.gethostname()} — install Ollama "
                "(https://ollama.com/download) on every GPU node, or start one Ollama per GPU "
                "yourself and pass them with --host")
        self.executable = exe
        self.gpu_ids = [str(g) for g in gpu_ids] if gpu_ids is not None else None
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.num_parallel = num_parallel
        self.extra_env = dict(env or {})
        self.ready_timeout_s = ready_timeout_s
        self.process: subprocess.Popen[bytes] | None = None
        self._log_path: Path | None = None

    def environment(self) -> dict[str, str]:
        """The environment ``ollama serve`` runs with."""
        env = dict(os.environ)
        env.update(self.extra_env)
        env["OLLAMA_HOST"] = f"127.0.0.1:{self.port}"
        if self.gpu_ids is not None:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(self.gpu_ids)
        if self.num_parallel is not None:
            env["OLLAMA_NUM_PARALLEL"] = str(self.num_parallel)
        return env

    def start(self) -> None:
        """Start the process (returns at once; see :meth:`wait_ready`)."""
        import tempfile

        with tempfile.NamedTemporaryFile(prefix=f"ollama-{self.port}-", suffix=".log",
                                         delete=False) as log:
            self._log_path = Path(log.name)
            # Own session = own process group: stop() signals the runners it spawns too.
            self.process = subprocess.Popen([self.executable, "serve"], env=self.environment(),
                                            stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)

    def log_tail(self, chars: int = 800) -> str:
        """The end of the server's output (for error messages)."""
        if self._log_path is None or not self._log_path.exists():
            return ""
        return self._log_path.read_text(errors="replace")[-chars:].strip()

    async def wait_ready(self) -> None:
        """Poll ``GET /`` until it answers 200; raise if the process exits or time runs out."""
        deadline = time.monotonic() + self.ready_timeout_s
        async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
            while True:
                if self.process is not None and self.process.poll() is not None:
                    raise OllamaUnavailable(
                        self.url, f"`{self.executable} serve` exited with code "
                                  f"{self.process.returncode}: {self.log_tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(self.url + "/")).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    tail = self.log_tail()
                    self.stop()
                    raise OllamaUnavailable(
                        self.url, f"`ollama serve` did not answer within "
                                  f"{self.ready_timeout_s:g} s: {tail}")
                await asyncio.sleep(0.05)

    def stop(self, grace_s: float = 5.0) -> None:
        """Stop the server and its children (SIGTERM, then SIGKILL after ``grace_s``)."""
        proc, self.process = self.process, None
        if proc is not None:
            stop_process(proc, grace_s, group=True)
        if self._log_path is not None:
            with contextlib.suppress(OSError):
                self._log_path.unlink()
            self._log_path = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    async def __aenter__(self) -> OllamaServer:
        self.start()
        try:
            await self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.stop()
