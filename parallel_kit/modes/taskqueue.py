"""A task queue in front of a backend: accept at once, run in the background, a bound on both.

This is what the original demo's API did to become "parallel": ``submit`` hands back a task id
straight away, a fixed set of workers (``MAX_CONCURRENT_REQUESTS``) takes tasks first come,
first served and calls the backend, and the caller polls ``status`` or awaits ``result``.
Queueing changes who waits, not how long the server works: one single-slot Ollama still serves
one request at a time.

The queue is generic: the backend is any ``async (spec) -> RequestResult`` callable — an
:class:`~parallel_kit.clients.OllamaClient` bound to a clock, a pool of endpoints, Ray actors,
or a fake in a test.

>>> async with TaskQueue(backend, concurrency=2, clock=ModelClock(0.02)) as queue:
...     task_id = queue.submit(RequestSpec("What is Python?"))
...     queue.status(task_id).state          # 'queued' (the worker has not had a turn yet)
...     row = await queue.result(task_id)    # a RequestResult, ok or failed

Every accepted task ends with a :class:`~parallel_kit.records.RequestResult` — completed,
failed (the backend's error text) or cancelled (the reason) — so nothing is lost silently.

Bounds in bytes and time, not only in tasks: a task count alone lets 10,000 large prompts take
gigabytes. ``max_held_bytes`` bounds the prompts of queued and running tasks together (past it
:class:`TooMuchHeld`), ``max_kept_bytes`` the finished rows kept for ``status`` (the oldest
finished are forgotten first, as past ``max_finished``), and ``max_request_s`` the clock
seconds one request may run (then it fails, naming the bound). Sizes are the UTF-8 bytes of the
texts (prompt, system, response, error) plus :data:`ROW_OVERHEAD_BYTES` per task for the rest.

Tasks live in this process's memory: a restart loses them. The Redis-backed production mode
(``parallel-kit serve --mode production``) keeps them across restarts.
Times: ``*_s`` are model seconds on the queue's :class:`~parallel_kit.timing.ModelClock`,
``*_wall_s`` clock seconds on the same clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from ..errors import ConfigError, ParallelKitError
from ..records import RequestResult, RequestSpec
from ..timing import ModelClock

__all__ = [
    "DEFAULT_MAX_FINISHED",
    "DEFAULT_MAX_HELD_BYTES",
    "DEFAULT_MAX_KEPT_BYTES",
    "DEFAULT_MAX_QUEUED",
    "DEFAULT_MAX_REQUEST_S",
    "QueueClosed",
    "QueueFull",
    "RequestFn",
    "Task",
    "TaskQueue",
    "TaskState",
    "TooMuchHeld",
    "UnknownTask",
]

TaskState = Literal["queued", "running", "completed", "failed", "cancelled"]
#: The backend: one request in, one row out. It may raise; the task then fails with the text.
RequestFn = Callable[[RequestSpec], Awaitable[RequestResult]]

#: Tasks that may wait for a worker at once (beyond it ``submit`` raises ``QueueFull``).
DEFAULT_MAX_QUEUED = 10_000
#: Finished tasks kept for ``status``/``result``; the oldest finished is forgotten first.
DEFAULT_MAX_FINISHED = 10_000
#: Bytes of prompts held by queued and running tasks (a laptop keeps 256 MiB spare).
DEFAULT_MAX_HELD_BYTES = 256 * 1024 * 1024
#: Bytes of finished rows kept for ``status``/``result``.
DEFAULT_MAX_KEPT_BYTES = 256 * 1024 * 1024
#: Clock seconds one request may run before it fails (a cold model load fits in it).
DEFAULT_MAX_REQUEST_S = 600.0
#: What a task costs beyond its texts (the row's other fields, the entry, the id), bytes.
ROW_OVERHEAD_BYTES = 1024
#: Where tasks that survive a restart live (said by ``UnknownTask`` and the API's /health).
DURABLE_HINT = ("tasks live in this server's memory and are lost when it stops — for tasks "
                "that survive a restart use the Redis-backed production mode "
                "(`parallel-kit serve --mode production`)")


class _RetryLater(ParallelKitError):
    """A refusal that may pass: ``retry_after_s`` is a hint in seconds (the API's
    ``Retry-After``)."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class QueueFull(_RetryLater):
    """The queue holds its bound of waiting tasks. ``retry_after_s`` is a hint in seconds."""

    def __init__(self, max_queued: int, asked: int = 1, retry_after_s: float = 1.0) -> None:
        what = "a task" if asked == 1 else f"{asked} tasks"
        super().__init__(
            f"the task queue is full ({max_queued} tasks waiting is its bound) and cannot take "
            f"{what} — retry in {retry_after_s:g} s, or raise the bound (max_queued)",
            retry_after_s)
        self.max_queued = max_queued


class QueueClosed(ParallelKitError):
    """The queue is shutting down and accepts no more tasks."""

    def __init__(self) -> None:
        super().__init__("the task queue is shut down and accepts no more tasks — "
                         "open a new TaskQueue (or restart the API)")


class TooMuchHeld(_RetryLater):
    """Accepting the tasks would hold more prompt bytes than ``max_held_bytes``
    (``never_fits``: more than the bound on their own, retrying cannot help)."""

    def __init__(self, held: int, asked: int, max_held_bytes: int,
                 retry_after_s: float = 1.0) -> None:
        once = asked > max_held_bytes
        super().__init__(
            f"the prompts would take {asked} bytes while {held} are held; the limit is "
            f"{max_held_bytes} bytes of prompts held at once (max_held_bytes, serve "
            f"--max-held-mb) — " + ("send shorter prompts" if once else
                                    f"retry in {retry_after_s:g} s or raise the limit"),
            retry_after_s)
        self.max_held_bytes = max_held_bytes
        self.never_fits = once


class UnknownTask(ParallelKitError, LookupError):
    """No task has this id: it never existed, it finished and was forgotten, or the server was
    restarted (tasks live in memory)."""

    def __init__(self, task_id: str, max_finished: int) -> None:
        super().__init__(
            f"no task {task_id!r} — it never existed, it finished and was forgotten (only the "
            f"last {max_finished} finished tasks are kept), or the server restarted since: "
            f"{DURABLE_HINT}"
        )
        self.task_id = task_id


@dataclass(frozen=True, slots=True)
class Task:
    """A snapshot of one task (``TaskQueue.status``); each step of the task makes a new one.

    Attributes:
        task_id: the id ``submit`` returned.
        spec: the request.
        state: ``queued`` → ``running`` → ``completed`` | ``failed``; or ``cancelled``.
        submitted_s, started_s, finished_s: model seconds on the queue's clock (NaN: not yet):
            accepted by the queue, taken by a worker, ended. (In the task's row, the accept
            time is ``queued_s`` and ``submitted_s`` is when the request was sent.)
        submitted_wall_s, started_wall_s, finished_wall_s: the same moments in clock seconds.
        result: the row once finished (failed and cancelled tasks have one too, ``ok=False``).
        error: why it failed or was cancelled; ``None`` otherwise.
    """

    task_id: str
    spec: RequestSpec
    state: TaskState
    submitted_s: float
    started_s: float
    finished_s: float
    submitted_wall_s: float
    started_wall_s: float
    finished_wall_s: float
    result: RequestResult | None
    error: str | None

    @property
    def done(self) -> bool:
        return self.state in ("completed", "failed", "cancelled")

    @property
    def queue_wait_s(self) -> float:
        """Model seconds from acceptance until a worker took the task (NaN: not yet)."""
        return self.started_s - self.submitted_s


@dataclass(slots=True)
class _Entry:
    """The queue's own record of a task: its current snapshot (replaced, never changed, at each
    step, so ``status`` hands it out as it is), the future its waiters await, its worker."""

    task: Task
    done: asyncio.Future[RequestResult]
    worker: asyncio.Task[Any] | None = field(default=None, repr=False)
    held: int = 0  # bytes counted in the queue's held (while queued/running) or kept total


class TaskQueue:
    """Accept requests at once; a bounded pool of workers runs them against ``backend``.

    Args:
        backend: ``async (spec) -> RequestResult``; raising fails the task with the message.
        concurrency: workers, i.e. requests in flight to the backend at most
            (``MAX_CONCURRENT_REQUESTS``).
        max_queued: tasks that may wait at once; more raises :class:`QueueFull`.
        max_finished: finished tasks kept for ``status``/``result``, oldest forgotten first.
        clock: the run's clock (shared with the backend so rows share one time axis);
            default a new ``ModelClock(1.0)`` started now.
        mode: the ``mode`` written into rows the queue makes itself (failed, cancelled).
        model: the ``model`` written into those rows when the spec names none.
        retry_after_s: the hint carried by :class:`QueueFull` (seconds).
        max_held_bytes: prompt bytes queued and running tasks may hold together; more raises
            :class:`TooMuchHeld` (module docstring).
        max_kept_bytes: bytes of finished rows kept; the oldest finished are forgotten first.
        max_request_s: clock seconds one request may run; then the task fails saying so
            (``None``: no bound).

    Workers start on first use inside a running event loop; use ``async with`` (or ``close``)
    so that shutdown is graceful.
    """

    def __init__(self, backend: RequestFn, *, concurrency: int = 5,
                 max_queued: int = DEFAULT_MAX_QUEUED, max_finished: int = DEFAULT_MAX_FINISHED,
                 clock: ModelClock | None = None, mode: str = "async", model: str = "",
                 retry_after_s: float = 1.0, max_held_bytes: int = DEFAULT_MAX_HELD_BYTES,
                 max_kept_bytes: int = DEFAULT_MAX_KEPT_BYTES,
                 max_request_s: float | None = DEFAULT_MAX_REQUEST_S) -> None:
        for name, value in (("concurrency", concurrency), ("max_queued", max_queued),
                            ("max_finished", max_finished), ("max_held_bytes", max_held_bytes),
                            ("max_kept_bytes", max_kept_bytes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a whole number ≥ 1, got {value!r}")
        if max_request_s is not None and not 0 < max_request_s <= 86_400:
            raise ConfigError(f"max_request_s must be within 0..86400 s, got {max_request_s!r}")
        self.max_held_bytes = max_held_bytes
        self.max_kept_bytes = max_kept_bytes
        self.max_request_s = max_request_s
        self._held_bytes = 0
        self._kept_bytes = 0
        self._backend = backend
        self.concurrency = concurrency
        self.max_queued = max_queued
        self.max_finished = max_finished
        self.clock = clock or ModelClock(1.0)
        self.mode = mode
        self.model = model
        self.retry_after_s = retry_after_s
        self._entries: dict[str, _Entry] = {}
        # Ids in arrival order; a cancelled task's id stays in it and is skipped by the workers.
        self._waiting: asyncio.Queue[str] | None = None
        self._finished: OrderedDict[str, None] = OrderedDict()  # finish order, for retention
        self._workers: list[asyncio.Task[None]] = []
        self._closed = False
        self._counts = {"queued": 0, "running": 0, "completed": 0, "failed": 0, "cancelled": 0}

    # -- life cycle ------------------------------------------------------------------------

    async def __aenter__(self) -> TaskQueue:
        self._start()
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        # A clean exit finishes what was accepted; an error or cancellation stops at once but
        # still gives every task its end (cancelled, with the reason).
        await self.close(drain=exc_type is None)

    def _start(self) -> None:
        if self._workers:
            return
        if self._closed:
            raise QueueClosed()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise ConfigError("a TaskQueue runs inside an event loop — use it in async code "
                              "(`async with TaskQueue(...)`), or through run_sync") from None
        self._waiting = asyncio.Queue()
        self._workers = [loop.create_task(self._work(), name=f"taskqueue-worker-{i}")
                         for i in range(self.concurrency)]

    async def close(self, *, drain: bool = True, timeout: float | None = None,
                    reason: str = "the task queue shut down") -> None:
        """Stop accepting tasks, then finish or cancel what is left.

        Args:
            drain: True: let queued and running tasks finish (up to ``timeout`` clock seconds,
                then cancel the rest). False: cancel queued and running tasks now.
            reason: goes into the ``error`` of every cancelled task.
        """
        self._closed = True
        if drain and self._workers:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._drained(), timeout)
        for entry in list(self._entries.values()):
            if entry.task.state == "queued":
                self._cancel_entry(entry, f"{reason} before the task ran")
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []
        # A running task whose worker was cancelled before it could record its end.
        for entry in self._entries.values():
            if entry.task.state in ("queued", "running"):
                self._cancel_entry(entry, f"{reason} while the task was running")

    async def drained(self) -> None:
        """Return once no task is queued or running (tasks may still be submitted meanwhile)."""
        await self._drained()

    async def _drained(self) -> None:
        while self._counts["queued"] or self._counts["running"]:
            pending = [e.done for e in self._entries.values() if not e.done.done()]
            if pending:
                await asyncio.wait(pending)
            else:
                await asyncio.sleep(0)

    @property
    def closed(self) -> bool:
        return self._closed

    # -- submitting ------------------------------------------------------------------------

    def submit(self, spec: RequestSpec) -> str:
        """Accept one request; returns its task id at once (the request runs later).

        Raises:
            QueueFull: ``max_queued`` tasks are already waiting.
            QueueClosed: the queue is shutting down.
        """
        return self.submit_batch([spec])[0]

    def submit_batch(self, specs: Iterable[RequestSpec]) -> list[str]:
        """Accept several requests in one call, all or none; returns their ids in order."""
        batch = list(specs)
        if self._closed:
            raise QueueClosed()
        if self._counts["queued"] + len(batch) > self.max_queued:
            raise QueueFull(self.max_queued, len(batch), self.retry_after_s)
        sizes = [_spec_bytes(spec) for spec in batch]
        if self._held_bytes + sum(sizes) > self.max_held_bytes:
            raise TooMuchHeld(self._held_bytes, sum(sizes), self.max_held_bytes,
                              self.retry_after_s)
        self._start()
        assert self._waiting is not None
        loop = asyncio.get_running_loop()
        ids: list[str] = []
        for spec in batch:
            task_id = str(uuid.uuid4())
            nan = math.nan
            entry = _Entry(Task(task_id, spec, "queued", self.clock.now(), nan, nan,
                                self.clock.wall(), nan, nan, None, None),
                           loop.create_future(), held=sizes[len(ids)])
            self._held_bytes += entry.held
            self._entries[task_id] = entry
            self._waiting.put_nowait(task_id)
            ids.append(task_id)
        self._counts["queued"] += len(batch)
        return ids

    # -- asking ----------------------------------------------------------------------------

    def _entry(self, task_id: str) -> _Entry:
        entry = self._entries.get(task_id)
        if entry is None:
            raise UnknownTask(task_id, self.max_finished)
        return entry

    def status(self, task_id: str) -> Task:
        """A snapshot of the task. Raises :class:`UnknownTask` for an unknown or forgotten id."""
        return self._entry(task_id).task

    async def result(self, task_id: str, timeout: float | None = None) -> RequestResult:
        """Wait for the task's row (completed, failed or cancelled: ``ok`` tells which).

        ``timeout`` is in clock seconds; past it ``TimeoutError`` is raised and the task
        goes on.
        """
        entry = self._entry(task_id)
        return await asyncio.wait_for(asyncio.shield(entry.done), timeout)

    def cancel(self, task_id: str, reason: str = "cancelled by the caller") -> bool:
        """Cancel a task that is still queued. Returns False when it already started or ended."""
        entry = self._entry(task_id)
        if entry.task.state != "queued":
            return False
        self._cancel_entry(entry, reason)
        return True

    def stats(self) -> dict[str, int]:
        """Counts: ``queued``, ``running`` now; ``completed``, ``failed``, ``cancelled`` so far
        (forgotten tasks included); and the bounds."""
        return {**self._counts, "concurrency": self.concurrency, "max_queued": self.max_queued,
                "max_finished": self.max_finished, "retained": len(self._finished),
                "held_bytes": self._held_bytes, "max_held_bytes": self.max_held_bytes,
                "kept_bytes": self._kept_bytes, "max_kept_bytes": self.max_kept_bytes}

    def tasks(self) -> list[Task]:
        """Snapshots of every task still known, in submission order."""
        return [e.task for e in self._entries.values()]

    # -- working ---------------------------------------------------------------------------

    async def _next(self) -> _Entry:
        assert self._waiting is not None
        while True:
            entry = self._entries.get(await self._waiting.get())
            if entry is not None and entry.task.state == "queued":
                return entry

    async def _work(self) -> None:
        while True:
            entry = await self._next()
            entry.worker = asyncio.current_task()
            entry.task = replace(entry.task, state="running", started_s=self.clock.now(),
                                 started_wall_s=self.clock.wall())
            self._counts["queued"] -= 1
            self._counts["running"] += 1
            try:
                row = await asyncio.wait_for(self._backend(entry.task.spec), self.max_request_s)
            except asyncio.TimeoutError:
                self._finish(entry, "failed", self._row(
                    entry, f"the request ran longer than the limit of {self.max_request_s:g} s "
                           f"(max_request_s, serve --max-request-s) and was stopped — ask for "
                           f"fewer tokens (num_predict) or raise the limit"))
            except asyncio.CancelledError:
                self._finish(entry, "cancelled", self._row(entry, "cancelled: the task queue "
                                                          "shut down while the task was running"))
                raise
            except Exception as exc:  # the backend's failure is the task's, not the worker's
                self._finish(entry, "failed", self._row(entry, _describe(exc)))
            else:
                self._finish(entry, "completed" if row.ok else "failed", self._adopt(entry, row))
            finally:
                entry.worker = None

    def _adopt(self, entry: _Entry, row: RequestResult) -> RequestResult:
        """Put the queue's accept time on the backend's row as ``queued_s``.

        The row's ``submitted_s`` stays the backend's send time (a backend that set none gets the
        moment a worker took the task), so ``latency_s`` and ``ttft_s`` are measured from the
        send and the time in this queue is ``queue_wait_s``.
        """
        task = entry.task
        row.queued_s = task.submitted_s
        if math.isnan(row.submitted_s):
            row.submitted_s = task.started_s
        if math.isnan(row.started_s):
            row.started_s = task.started_s
        if not row.mode:
            row.mode = self.mode
        return row.finalize()

    def _row(self, entry: _Entry, error: str) -> RequestResult:
        """The row of a task that never got one from the backend (it raised, or was cancelled)."""
        task, spec = entry.task, entry.task.spec
        return RequestResult(request_id=spec.request_id or task.task_id, mode=self.mode,
                             prompt=spec.prompt, model=spec.model or self.model,
                             queued_s=task.submitted_s, submitted_s=task.started_s,
                             started_s=task.started_s, finished_s=self.clock.now(), ok=False,
                             error=error).finalize()

    def _finish(self, entry: _Entry, state: TaskState, row: RequestResult) -> None:
        previous = entry.task.state
        entry.task = replace(entry.task, state=state, result=row, error=None if state ==
                             "completed" else (row.error or "failed without a reason"),
                             finished_s=self.clock.now(), finished_wall_s=self.clock.wall())
        self._counts[previous] -= 1
        self._counts[state] += 1
        if not entry.done.done():
            entry.done.set_result(row)
        self._held_bytes -= entry.held
        entry.held = _row_bytes(row)
        self._kept_bytes += entry.held
        self._finished[entry.task.task_id] = None
        while self._finished and (len(self._finished) > self.max_finished
                                  or self._kept_bytes > self.max_kept_bytes):
            old, _ = self._finished.popitem(last=False)
            gone = self._entries.pop(old, None)
            if gone is not None:
                self._kept_bytes -= gone.held

    def _cancel_entry(self, entry: _Entry | None, reason: str) -> None:
        if entry is None or entry.task.state not in ("queued", "running"):
            return
        self._finish(entry, "cancelled", self._row(entry, f"cancelled: {reason}"))


def _spec_bytes(spec: RequestSpec) -> int:
    """Bytes a queued request holds: its texts (UTF-8) plus the per-task overhead."""
    size = ROW_OVERHEAD_BYTES + len(spec.prompt.encode("utf-8", "replace"))
    if spec.system:
        size += len(spec.system.encode("utf-8", "replace"))
    return size


def _row_bytes(row: RequestResult) -> int:
    """Bytes a finished row keeps: prompt, response and error (UTF-8) plus the overhead."""
    return ROW_OVERHEAD_BYTES + sum(len((t or "").encode("utf-8", "replace"))
                                    for t in (row.prompt, row.response, row.error))


def _describe(exc: BaseException) -> str:
    """The error text of a failed task: the kit's own messages as they are, others typed."""
    if isinstance(exc, ParallelKitError):
        return str(exc)
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
