"""Where the API's tasks live: the seam between the one HTTP app and its task stores.

The app (:func:`parallel_kit.api.build_app`) defines the routes, the key, the limits, the error
bodies and the OpenAPI schema once; a :class:`TaskStore` accepts the tasks, says where each
is, waits for it, reports health and stops. Two stores:

* :class:`MemoryTaskStore` (here): a :class:`~parallel_kit.modes.taskqueue.TaskQueue` in the
  API's memory in front of an :class:`~parallel_kit.api.backends.ApiBackend`
  (:func:`parallel_kit.api.create_app`, ``serve --mode async|pool|ray|…``);
* ``RedisTaskStore`` (:mod:`parallel_kit.production.api`): Redis + Celery, the production
  stack (:func:`parallel_kit.production.api.create_production_app`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..modes.taskqueue import (
    DURABLE_HINT,
    QueueClosed,
    QueueFull,
    Task,
    TaskQueue,
    UnknownTask,
)
from ..records import RequestSpec
from .backends import ApiBackend

if TYPE_CHECKING:
    from . import ApiSettings

__all__ = ["MemoryTaskStore", "StoreDocs", "TaskStore", "shutdown_why", "task_body"]

#: uvicorn's error logger: shutdown notes appear beside uvicorn's own lines.
_log = logging.getLogger("uvicorn.error")


@dataclass(frozen=True)
class StoreDocs:
    """What the OpenAPI schema says of the app in front of a store.

    Attributes:
        title, description: the app's.
        tasks_summary, stats_summary, health_summary: the summaries of ``GET /tasks/{id}``,
            ``/stats`` and ``/health``.
        health_name: the ``/health`` route's name (its operation id is built from it).
        health_model: the ``/health`` 200 body's model (``Any``: a titled empty schema;
            ``None``: a bare one).
        task_codes: error codes ``GET /tasks/{id}`` answers (404, and 410 where results expire).
        everywhere: error codes every route may answer (503 where a service behind can be down).
    """

    title: str
    description: str
    tasks_summary: str
    stats_summary: str
    health_summary: str
    health_name: str = "health"
    health_model: Any = Any
    task_codes: tuple[int, ...] = (404,)
    everywhere: tuple[int, ...] = ()


class TaskStore(Protocol):
    """What the app asks of the place its tasks live.

    Attributes:
        docs: how the app's OpenAPI schema describes it.
        errors: the store's exceptions and the status each answers (503 with ``Retry-After``,
            404 unknown, 410 expired); :class:`~parallel_kit.modes.taskqueue.TooMuchHeld` is
            429/413 for every store.
        stopping_refusal: the 503 detail for tasks sent once the API is stopping, or ``None``
            when they are still accepted (they end with the store's shutdown).
    """

    docs: StoreDocs
    errors: Mapping[type[Exception], int]
    stopping_refusal: str | None

    def open(self) -> contextlib.AbstractAsyncContextManager[None]:
        """The store from the app's start-up to its shutdown (ASGI lifespan)."""
        ...

    async def submit(self, specs: list[RequestSpec]) -> tuple[list[str], Exception | None]:
        """Accept the requests: their task ids, and the refusal (an exception of ``errors``)
        that stopped the batch after those, or ``None``. A store that accepts all or none
        raises the refusal instead."""
        ...

    async def status(self, task_id: str) -> dict[str, Any]:
        """The ``GET /tasks/{id}`` body. Raises an exception of ``errors`` (unknown, …)."""
        ...

    async def wait(self, task_id: str) -> dict[str, Any] | None:
        """The task's body once it ended; ``None`` when the store stopped waiting first."""
        ...

    def after_stop(self, task_id: str) -> str:
        """What a client whose task was accepted but not finished at shutdown can do."""
        ...

    async def stats(self) -> dict[str, Any]:
        """The ``GET /stats`` body."""
        ...

    async def health(self, stopping: bool) -> tuple[dict[str, Any], int]:
        """The ``GET /health`` body and status code (``stopping``: the API is shutting down)."""
        ...

    async def shutdown(self, force: asyncio.Event, timeout_s: float) -> None:
        """Give accepted tasks up to ``timeout_s`` clock seconds (less once ``force`` is set)
        as the store sees fit, then let go of them."""
        ...


def task_body(task: Task) -> dict[str, Any]:
    """The ``GET /tasks/{id}`` body of a task snapshot."""
    status = "failed" if task.state == "cancelled" else task.state
    done = task.state in ("completed", "failed", "cancelled")
    return {"task_id": task.task_id, "status": status,
            "result": task.result.to_dict() if done and task.result is not None else None,
            "error": task.error}


def shutdown_why(force: asyncio.Event, timeout_s: float) -> str:
    """Why a shutdown stopped waiting for accepted tasks, for its log line."""
    return "a second Ctrl-C" if force.is_set() else f"the {timeout_s:g} s shutdown bound"


class MemoryTaskStore:
    """Tasks in the API's memory: a :class:`TaskQueue` in front of ``backend``, opened at the
    app's start-up; at shutdown accepted tasks get the shutdown bound to finish and the rest
    end cancelled. A restart loses them (``/health`` and the 404 say so)."""

    errors: Mapping[type[Exception], int] = {QueueFull: 503, QueueClosed: 503, UnknownTask: 404}
    stopping_refusal: str | None = None

    def __init__(self, backend: ApiBackend, cfg: ApiSettings) -> None:
        self._backend = backend
        self._cfg = cfg
        self._queue: TaskQueue | None = None
        self.docs = StoreDocs(
            title="parallel_kit inference API",
            description="The original demo's API: requests are accepted at once, queued, and "
                        f"sent to Ollama by {cfg.concurrency} worker(s) "
                        "(MAX_CONCURRENT_REQUESTS). Queueing makes the API answer at once; it "
                        "does not make one Ollama serve more requests at a time.",
            tasks_summary="A task's status, and its result once finished",
            stats_summary="Tasks queued, running, completed, failed",
            health_summary="Liveness (needs no key): ok, degraded, down or stopping")

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[None]:
        cfg, backend = self._cfg, self._backend
        queue = TaskQueue(backend.call, concurrency=cfg.concurrency, max_queued=cfg.max_queued,
                          max_finished=cfg.max_finished, clock=backend.clock, mode=cfg.mode,
                          model=backend.model, retry_after_s=cfg.retry_after_s,
                          max_held_bytes=cfg.max_held_bytes, max_kept_bytes=cfg.max_kept_bytes,
                          max_request_s=cfg.max_request_s)
        async with queue:
            self._queue = queue
            yield

    def _live(self) -> TaskQueue:
        if self._queue is None:
            raise RuntimeError("the API's task queue opens with the app's start-up (lifespan)")
        return self._queue

    async def submit(self, specs: list[RequestSpec]) -> tuple[list[str], Exception | None]:
        return self._live().submit_batch(specs), None  # all or none: a refusal is raised

    async def status(self, task_id: str) -> dict[str, Any]:
        return task_body(self._live().status(task_id))

    async def wait(self, task_id: str) -> dict[str, Any] | None:
        await self._live().result(task_id)
        return task_body(self._live().status(task_id))

    def after_stop(self, task_id: str) -> str:
        return f"send the request again to a running server ({DURABLE_HINT})"

    async def stats(self) -> dict[str, Any]:
        return {**self._live().stats(), "mode": self._cfg.mode}

    async def health(self, stopping: bool) -> tuple[dict[str, Any], int]:
        ok = self._queue is not None and not self._queue.closed and not stopping
        body: dict[str, Any] = {"status": "ok" if ok else "stopping", "mode": self._cfg.mode,
                                "model": self._backend.model, "tasks": DURABLE_HINT}
        if ok and self._backend.health is not None:
            body.update(self._backend.health())
        return body, 503 if body["status"] in ("down", "stopping") else 200

    async def shutdown(self, force: asyncio.Event, timeout_s: float) -> None:
        # Accepted tasks get timeout_s to finish — less if a second Ctrl-C asks to stop now;
        # the rest end cancelled, with the reason.
        queue = self._live()
        waits = [asyncio.ensure_future(queue.drained()), asyncio.ensure_future(force.wait())]
        await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()
        counts = queue.stats()
        left = counts["queued"] + counts["running"]
        if left:
            _log.warning("%d accepted task(s) cancelled at shutdown (%s); tasks live in memory",
                         left, shutdown_why(force, timeout_s))
        await queue.close(drain=False, reason="the API shut down")
