"""Celery workers of the production stack, as real child processes (or by hand).

``parallel-kit worker --redis URL --ray-address ADDR`` (:func:`run_worker`) runs one Celery
worker in the foreground: the ``threads`` pool with
``--concurrency C`` threads, one Ray connection per process (a worker on another machine joins
the cluster by its address, like any Ray driver). :class:`WorkerProcess` starts one as a child
process for a run and stops it (SIGTERM: Celery's warm shutdown, which finishes running tasks;
SIGKILL after a grace period — with ``acks_late`` an unfinished task then goes back to the
queue after the visibility timeout).

Why threads and not Celery's default prefork pool: each task only waits on a Ray Serve call, so
threads cost no CPU while waiting, and one process shares one Ray connection; prefork would
start one Ray driver per child (seconds and ~100 MB each).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..system.children import stop_process

__all__ = ["WorkerProcess", "run_worker", "stop_workers", "wait_for_workers", "worker_argv"]


def worker_argv(*, concurrency: int, hostname: str) -> list[str]:
    """The ``celery worker`` arguments the kit runs with."""
    from .celery_app import QUEUE

    return ["worker", "--pool", "threads", "--concurrency", str(concurrency),
            "--hostname", hostname, "--queues", QUEUE, "--loglevel", "WARNING",
            "--without-gossip", "--without-mingle", "--without-heartbeat"]


@dataclass
class WorkerProcess:
    """One Celery worker started by the kit (a child process). ``name`` is its hostname."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    #: Set when the kit stops it on purpose (the supervisor leaves such a worker alone).
    stopping: bool = False

    @property
    def pid(self) -> int:
        return self.process.pid

    @classmethod
    def start(cls, redis_url: str, ray_address: str, *, concurrency: int = 4,
              name: str | None = None, request_timeout_s: float | None = None,
              visibility_timeout_s: float | None = None,
              env: dict[str, str] | None = None) -> WorkerProcess:
        """Start ``python -m parallel_kit.production.worker`` with these settings."""
        if concurrency < 1:
            raise ConfigError(f"worker concurrency {concurrency} must be at least 1")
        name = name or f"pk-{os.getpid()}-{time.monotonic_ns() % 10**9}@localhost"
        child_env = {**os.environ, **(env or {}), "RAY_ADDRESS": ray_address,
                     "PARALLEL_KIT_REDIS_URL": redis_url,
                     "RAY_USAGE_STATS_ENABLED": "0"}
        if request_timeout_s:
            child_env["PARALLEL_KIT_REQUEST_TIMEOUT_S"] = str(request_timeout_s)
        if visibility_timeout_s:
            child_env["PARALLEL_KIT_VISIBILITY_TIMEOUT_S"] = str(visibility_timeout_s)
        log = Path(tempfile.mkstemp(prefix="parallel_kit-worker-", suffix=".log")[1])
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "parallel_kit", "worker",
                 "--concurrency", str(concurrency), "--name", name],
                env=child_env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        from ..system.children import register

        register(proc)
        return cls(name, proc, log)

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: the worker dies mid-task (what a crash or an OOM kill does)."""
        if self.alive():
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self, grace_s: float = 10.0) -> None:
        """Warm shutdown (SIGTERM), then SIGKILL after ``grace_s``."""
        self.stopping = True
        stop_process(self.process, grace_s)
        self.discard()

    def discard(self) -> None:
        """Forget an exited worker: no longer a child to clean up; its log removed."""
        from ..system.children import forget

        forget(self.process)
        self.log_path.unlink(missing_ok=True)

    def log_tail(self, chars: int = 800) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def stop_workers(workers: Sequence[WorkerProcess], grace_s: float = 10.0) -> None:
    """Stop every worker at once: SIGTERM to all (Celery's warm shutdown: running tasks get
    to finish), then SIGKILL to those still running after ``grace_s`` — one grace for all, not
    one each. An unfinished task stays unacknowledged in Redis (``acks_late``)."""
    for w in workers:
        w.stopping = True
        if w.alive():
            with contextlib.suppress(ProcessLookupError):
                w.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for w in workers:
        stop_process(w.process, max(0.0, deadline - time.monotonic()))
        w.discard()


def wait_for_workers(workers: Sequence[WorkerProcess], timeout_s: float = 120.0) -> None:
    """Return once every worker answers Celery's ``ping``; a clear error if one died.

    Raises:
        ConfigError: a worker exited (its log quoted) or did not answer in time.
    """
    from .celery_app import app

    want = {w.name for w in workers}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for w in workers:
            if not w.alive():
                raise ConfigError(f"Celery worker {w.name} exited at start-up: "
                                  f"{w.log_tail().strip()}")
        replies = app.control.ping(destination=sorted(want), timeout=0.5) or []
        seen = {name for reply in replies for name in reply}
        if want <= seen:
            return
    raise ConfigError(f"the Celery workers did not answer within {timeout_s:g} s — see "
                      f"their logs: {', '.join(str(w.log_path) for w in workers)}")


def run_worker(*, redis: str | None, ray_address: str | None, concurrency: int,
               name: str | None) -> int:
    """Configure the Celery app and run a worker until it is stopped (SIGTERM/Ctrl-C)."""
    from .redis_server import REDIS_URL_ENV, check_redis

    url = redis or os.environ.get(REDIS_URL_ENV)
    if not url:
        raise ConfigError(f"a worker needs the stack's Redis — pass --redis URL or set "
                          f"{REDIS_URL_ENV}")
    if concurrency < 1:
        raise ConfigError(f"--concurrency {concurrency} must be at least 1")
    address = ray_address or os.environ.get("RAY_ADDRESS")
    if not address:
        raise ConfigError("a worker needs the Ray cluster that runs the Serve application — "
                          "pass --ray-address HOST:PORT or set RAY_ADDRESS")
    os.environ["RAY_ADDRESS"] = address
    check_redis(url)
    from .celery_app import app, configure

    configure(url)
    app.worker_main(worker_argv(concurrency=concurrency,
                                hostname=name or f"pk-{os.getpid()}@localhost"))
    return 0

