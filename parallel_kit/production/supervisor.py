"""Watch the stack's Celery worker processes: replace a dead one, hand its tasks back at once.

A worker process that dies (SIGKILL, the OOM killer, a crash in a C extension) takes its
unacknowledged tasks with it. Celery's own recovery for the Redis broker is slow by design:
with ``task_acks_late`` the messages stay in kombu's ``unacked`` hash and return to the queue
only after the transport's ``visibility_timeout`` (which must exceed the longest request, 755 s
with the default 600 s request timeout; Celery docs, "Using Redis — Caveats — Visibility
timeout", https://docs.celeryq.dev/en/stable/getting-started/backends-and-brokers/redis.html;
``task_reject_on_worker_lost`` only helps for a prefork *child*, not the worker process itself,
https://docs.celeryq.dev/en/stable/userguide/configuration.html#task-reject-on-worker-lost).
And nothing starts a new worker: with one worker the queue stalls for good.

:class:`WorkerSupervisor` closes both gaps for the workers the kit starts
(:class:`~parallel_kit.production.worker.WorkerProcess`):

* every :data:`POLL_S` seconds it checks each process (``Popen.poll``); a worker the kit did not
  stop itself is dead;
* it hands the dead worker's tasks back to the queue at once: each worker records the tasks it
  holds with their kombu delivery tags (:data:`~parallel_kit.production.celery_app.HELD_KEY`),
  and kombu's ``QoS.restore_by_tag`` moves each message from ``unacked`` back to the head of
  the queue — the very call kombu's visibility sweep makes, only without the wait
  (https://docs.celeryq.dev/projects/kombu/en/stable/reference/kombu.transport.redis.html). A
  task that had reached Ollama runs again (at least once; counted in the row's ``retries`` and
  ``hops["deliveries"]``); one whose workers keep dying ends as a failed row after
  :data:`~parallel_kit.production.celery_app.MAX_DELIVERIES` deliveries;
* a worker that is alive but stuck (SIGSTOP, a hung call: ``poll`` cannot tell) is found by
  its heartbeat (:data:`~parallel_kit.production.celery_app.BEAT_KEY`, one count a second): a
  count that has not moved for :data:`STALL_S` seconds of the supervisor's own clock gets the
  worker killed (SIGKILL), and it is then dead as above. While Redis itself does not answer no
  worker is judged (the beats could not arrive), and the wait starts again once it answers;
* it starts a replacement, at most ``max_restarts`` times over the stack's life (a worker that
  dies at every start is not restarted for ever); each death and restart is logged
  (``parallel_kit.production``) and kept in :attr:`WorkerSupervisor.events`.

Bound: a lost worker's tasks are back on the queue within :data:`POLL_S` plus one Redis round
trip of its death (of its last heartbeat plus :data:`STALL_S`, for a stuck one), and run as soon as a worker is free (at once with a second worker; after the
replacement has started — Ray joined, seconds — with one).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["POLL_S", "STALL_S", "WorkerEvent", "WorkerSupervisor", "hand_back"]

_log = logging.getLogger("parallel_kit.production")

#: Seconds between two looks at the worker processes.
POLL_S = 0.2
#: Seconds without a heartbeat after which a live worker counts as stuck and is killed. Ten
#: beats: generous for a worker thread on a 2-core machine with both cores busy.
STALL_S = 10.0


@dataclass
class WorkerEvent:
    """One worker death: who died (``exit_code`` < 0: killed by that signal), the tasks handed
    back, and the replacement's name (``None``: restarts used up)."""

    worker: str
    exit_code: int | None
    tasks_back: list[str]
    replacement: str | None
    at: float = field(default_factory=time.time)
    #: Seconds the worker had not beaten when the supervisor killed it (``None``: it died).
    stalled_s: float | None = None


def hand_back(redis_client: Any, worker: str) -> list[str]:
    """Put the tasks ``worker`` held back at the head of the queue; their ids.

    Uses kombu's ``QoS.restore_by_tag`` (a Redis transaction: the message leaves ``unacked``
    and is pushed on its queue, marked redelivered); a tag already acknowledged is skipped.

    Raises:
        redis.exceptions.RedisError / kombu's OperationalError: Redis does not answer.
    """
    from .celery_app import HELD_KEY, app

    key = HELD_KEY.format(worker=worker)
    held = redis_client.hgetall(key)
    if not held:
        return []
    with app.connection_for_write() as conn:
        qos = conn.default_channel.qos
        for tag in held.values():
            qos.restore_by_tag(tag.decode() if isinstance(tag, bytes) else str(tag),
                               leftmost=True)
    redis_client.delete(key)
    return [t.decode() if isinstance(t, bytes) else str(t) for t in held]


class WorkerSupervisor:
    """A thread that watches ``stack.workers`` (see the module docstring).

    Args:
        stack: a :class:`~parallel_kit.production.stack.Stack` (its ``workers`` list is kept
            current: a dead worker leaves it, its replacement joins it).
        max_restarts: replacements started over the supervisor's life, at most.
    """

    def __init__(self, stack: Any, *, max_restarts: int = 5) -> None:
        self.stack = stack
        self.max_restarts = max_restarts
        self.events: list[WorkerEvent] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._redis: Any = None
        self._beats = _Beats()
        self._stalled: dict[str, float] = {}

    @property
    def restarts(self) -> int:
        return sum(1 for e in self.events if e.replacement)

    def alive(self) -> int:
        """Worker processes running now."""
        return sum(1 for w in list(self.stack.workers) if w.alive())

    @property
    def gave_up(self) -> str | None:
        """Why no task can run any more (every worker dead, restarts used up), or ``None``."""
        if self.events and self.restarts >= self.max_restarts and self.alive() == 0:
            return (f"no Celery worker is left: {len(self.events)} died and the "
                    f"{self.max_restarts} restart(s) allowed are used up — see the worker "
                    f"logs")
        return None

    async def until_gave_up(self, poll_s: float = POLL_S) -> str:
        """Return :attr:`gave_up` once it is set (for a run that waits on its tasks)."""
        import asyncio

        while True:
            reason = self.gave_up
            if reason:
                return reason
            await asyncio.sleep(poll_s)

    def start(self) -> WorkerSupervisor:
        import redis

        self._redis = redis.Redis.from_url(self.stack.redis_url, socket_timeout=3.0,
                                           socket_connect_timeout=2.0)
        self._thread = threading.Thread(target=self._run, name="pk-worker-supervisor",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self._redis is not None:
            with contextlib.suppress(Exception):
                self._redis.close()

    def __enter__(self) -> WorkerSupervisor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.wait(POLL_S):
            with contextlib.suppress(Exception):  # never let the watcher die
                self._kill_stuck()
            for w in list(self.stack.workers):
                if w.alive() or getattr(w, "stopping", False):
                    continue
                with contextlib.suppress(Exception):  # never let the watcher die
                    self._replace(w)

    def _kill_stuck(self) -> None:
        """SIGKILL each live worker whose heartbeat stopped for :data:`STALL_S` seconds."""
        from .celery_app import BEAT_KEY

        live = [w for w in list(self.stack.workers)
                if w.alive() and not getattr(w, "stopping", False)]
        if not live:
            return
        try:
            counts = self._redis.mget([BEAT_KEY.format(worker=w.name) for w in live])
        except Exception:  # Redis does not answer: no beat could arrive, judge no one
            self._beats.restart()
            return
        for w, count in zip(live, counts, strict=True):
            silent = self._beats.silent_s(w.name, count)
            if silent is not None and silent > STALL_S:
                _log.warning("Celery worker %s sent no heartbeat for %.1f s (stuck or frozen); "
                             "killing it", w.name, silent)
                self._stalled[w.name] = silent
                w.kill()

    def _replace(self, dead: Any) -> None:
        code = dead.process.returncode
        try:
            back = hand_back(self._redis, dead.name)
        except Exception as exc:  # Redis away: kombu's visibility sweep returns them later
            _log.warning("could not hand back the tasks of Celery worker %s (%s); they return "
                         "after the visibility timeout", dead.name, exc)
            back = []
        with contextlib.suppress(ValueError):
            self.stack.workers.remove(dead)
        dead.discard()
        replacement = None
        if self.restarts < self.max_restarts:
            replacement = self.stack.start_worker().name
        self.events.append(WorkerEvent(dead.name, code, back, replacement,
                                       stalled_s=self._stalled.pop(dead.name, None)))
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit {code}"
        if replacement:
            _log.warning("Celery worker %s died (%s); %d task(s) handed back to the queue; "
                         "started %s (restart %d of at most %d)", dead.name, how, len(back),
                         replacement, self.restarts, self.max_restarts)
        else:
            _log.error("Celery worker %s died (%s); %d task(s) handed back; not restarted: "
                       "%d restarts used up — see the worker logs", dead.name, how, len(back),
                       self.max_restarts)


class _Beats:
    """When each worker's heartbeat count last moved, by the supervisor's monotonic clock (so
    no two machines' clocks are compared)."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[bytes, float]] = {}

    def restart(self) -> None:
        """Forget every count: the wait starts again at the next answer (Redis was away)."""
        self._last.clear()

    def silent_s(self, worker: str, count: bytes | None) -> float | None:
        """Seconds since ``worker``'s count last moved (``count`` ``None``: its key is gone);
        ``None`` before its first beat."""
        now = time.monotonic()
        seen = self._last.get(worker)
        if count is None:  # never beat, or its key expired (silent since the last change)
            return None if seen is None else now - seen[1]
        if seen is None or seen[0] != count:
            self._last[worker] = (count, now)
            return 0.0
        return now - seen[1]
