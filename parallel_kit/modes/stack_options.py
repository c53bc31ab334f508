"""Typed options of the two stack modes: Ray Serve (``rayserve``) and the production stack.

* :class:`ServeOptions` — the Serve application: ``max_ongoing_requests`` per replica.
* :class:`StackOptions` — Redis, the Celery workers, and the time bounds of a task.

Frozen dataclasses with ``slots``, like :mod:`parallel_kit.modes.options`: an unknown field is a
``TypeError`` when built, a bad value a :class:`~parallel_kit.errors.ConfigError` naming the fix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import ConfigError

__all__ = ["ServeOptions", "StackOptions", "check_max_ongoing"]


def check_max_ongoing(value: object) -> int | None:
    """``--max-ongoing``: ``None`` (= the Ollama's slots) or a whole number ≥ 1.

    Raises:
        ConfigError: anything else, saying what is accepted.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"--max-ongoing {value!r} must be a whole number ≥ 1 (requests one "
                          f"replica takes at once; default: its Ollama's slots)")
    from ..ranges import check

    check("--max-ongoing", value)  # and at most its upper bound (the message gives the range)
    return value


@dataclass(frozen=True, slots=True)
class ServeOptions:
    """The Ray Serve application of ``rayserve`` and ``production``.

    Attributes:
        max_ongoing: Serve's ``max_ongoing_requests`` per replica (``--max-ongoing``);
            ``None``: the Ollama's slots.
        health_check_timeout_s: clock seconds a replica's health check may take (its probe of
            the Ollama takes at most :data:`~parallel_kit.modes.rayserve.REPLICA_PROBE_S`).
            Serve replaces a replica after three failed checks in a row
            (``REPLICA_HEALTH_CHECK_UNHEALTHY_THRESHOLD``), so a frozen replica is out within
            about three times this.
    """

    max_ongoing: int | None = None
    health_check_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        check_max_ongoing(self.max_ongoing)
        if not self.health_check_timeout_s > 0:
            raise ConfigError(f"health_check_timeout_s must be > 0, got "
                              f"{self.health_check_timeout_s!r}")


@dataclass(frozen=True, slots=True)
class StackOptions:
    """How the production stack is brought up.

    Attributes:
        redis: an existing Redis URL (``--redis``; default ``PARALLEL_KIT_REDIS_URL``, else the
            kit starts one for the run).
        workers: Celery worker processes to start (0: none — workers started by hand with
            ``parallel-kit worker``).
        worker_concurrency: task threads per worker (``None``: see
            :func:`parallel_kit.production.stack.default_concurrency`).
        request_timeout_s: longest a request may take, clock seconds (then a failed row);
            ``None``: 600.
        visibility_timeout_s: the broker's visibility timeout (``None``: derived from the
            request timeout, longer than it).
        announce: told in one line which Redis the run uses.
        stop_grace_s: clock seconds the workers get to finish their tasks when the stack
            stops (SIGTERM to all at once, then SIGKILL); ``serve`` passes what is left of its
            ``--shutdown-timeout-s``.
        max_worker_restarts: dead workers the supervisor replaces over the stack's life.
    """

    redis: str | None = None
    workers: int = 1
    worker_concurrency: int | None = None
    request_timeout_s: float | None = None
    visibility_timeout_s: float | None = None
    announce: Callable[[str], None] | None = None
    stop_grace_s: float = 10.0
    max_worker_restarts: int = 5

    def __post_init__(self) -> None:
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or \
                self.workers < 0:
            raise ConfigError(f"--workers {self.workers!r} must be a whole number ≥ 0")
        if self.worker_concurrency is not None and (
                isinstance(self.worker_concurrency, bool)
                or not isinstance(self.worker_concurrency, int) or self.worker_concurrency < 1):
            raise ConfigError(f"--worker-concurrency {self.worker_concurrency!r} must be a "
                              f"whole number ≥ 1")
        if not 0 <= self.stop_grace_s <= 86_400:
            raise ConfigError(f"stop_grace_s must be within 0..86400 s, got "
                              f"{self.stop_grace_s!r}")
        if isinstance(self.max_worker_restarts, bool) or not isinstance(
                self.max_worker_restarts, int) or self.max_worker_restarts < 0:
            raise ConfigError(f"max_worker_restarts {self.max_worker_restarts!r} must be a "
                              f"whole number ≥ 0")
        for name in ("request_timeout_s", "visibility_timeout_s"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"{name} must be > 0 seconds, got {value!r}")
        if (self.request_timeout_s and self.visibility_timeout_s
                and self.visibility_timeout_s <= self.request_timeout_s):
            raise ConfigError(f"visibility timeout {self.visibility_timeout_s:g} s must exceed "
                              f"the request timeout {self.request_timeout_s:g} s, or a request "
                              f"still running is delivered twice (celery/celery#5935)")
