"""Open-loop sessions of the two stack modes: ``rayserve`` and ``production``.

A session is the seam :mod:`parallel_kit.bench.loadgen` drives for requests that arrive over time
(``bench --rate/--trace``): the mode is brought up once, outside the measured window, and each
arrival is sent as it comes (``ModeInfo.session`` names these openers).

* ``rayserve`` (:func:`rayserve_session`): the Serve application of the burst run
  (:func:`~parallel_kit.modes.rayserve.open_serve_app`); each arrival is one call of its
  deployment handle (:func:`~parallel_kit.modes.rayserve.call_app`, the burst run's call), so a
  row records the replica, GPU, node and ``hops`` as in the burst, and a request that was inside
  a lost replica is sent again and counted in ``retries`` (the lost replica is listed in the
  summary's ``lost_workers``). Serve's router keeps the arrivals that find every replica at
  ``max_ongoing_requests`` in its own first-come-first-served queue.
* ``production`` (:func:`production_session`): the stack of the burst run
  (:func:`~parallel_kit.production.stack.open_stack`: Redis, the Serve application, the Celery
  workers); each arrival is put on the Celery queue at its arrival time through the same Celery
  app (:meth:`~parallel_kit.production.tasks.TaskClient.submit`, in a thread as the HTTP API
  does, so the event loop keeps pacing the next arrivals) and its row comes back through Redis.

The moments of a ``production`` row (model seconds on the driver's axis): ``queued_s`` is when
the task was put on the queue (``hops["accepted"]``: the kit's record and Celery's message are
written to Redis right after); ``hops["picked_up"]`` when a Celery worker started it, so
``picked_up − accepted`` is the time in Celery's queue; ``hops["replica_entered"]`` when the
Serve replica got it; ``submitted_s`` when the replica sent it to Ollama. Latency and TTFT are
measured from that send (the field's definition, docs/METRICS.md): the time spent in Celery's
queue and Serve's router is ``queue_wait_s`` and the hops, never inside latency or TTFT.
``finished_s`` is when the driver had the result back from Redis (``hops["done"]``), as in the
burst run.

Results come back through one Redis pub/sub subscription per session (Celery's Redis result
backend publishes each stored result on the channel named by its key, as in
:func:`parallel_kit.production.tasks.wait_for_meta`), not one per request: at a high rate the
per-request subscriptions would each receive every result. A sweep of the stored results every
:data:`SWEEP_S` seconds catches a message missed while the subscription reconnected.

A task waits at most the request timeout × (tasks then unfinished + 1) — the burst run's
bound, counted from each task's own submission; a task not back by then is a failed row naming
the likely cause (no Celery worker running, e.g. ``--workers 0`` with no ``parallel-kit
worker`` started), never a missing one. A worker that dies is replaced and its tasks handed
back by the stack's supervisor (:mod:`parallel_kit.production.supervisor`); once its restarts
are used up and no worker is left, every waiting task ends at once as a failed row saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from ..metrics import ItlSketch
from ..modes.base import ModeContext
from ..records import RequestResult, RequestSpec
from ..timing import ModelClock

__all__ = ["SWEEP_S", "app_session", "production_session", "rayserve_session", "stack_session"]

#: Clock seconds between two reads of the stored results of unfinished tasks (a safety net
#: for a pub/sub message missed during a reconnect).
SWEEP_S = 1.0


class _AppSession:
    """A running Serve application, opened for requests that arrive one by one."""

    def __init__(self, app: Any, ctx: ModeContext, mode: str) -> None:
        self.app = app
        self.mode = mode
        self.workers = int(app.workers)
        self.slots = int(app.slots)
        self.setup_s = float(app.setup_s)
        self._lost_before = len(app.lost)
        self.clock = ModelClock(ctx.time_scale).start()
        # The replicas stamp their hops on the driver's axis through this wall-clock epoch.
        self._epoch = time.time() - self.clock.wall()

    @property
    def lost_workers(self) -> list[dict[str, Any]]:
        """Replicas lost during this session (the application may have served earlier runs)."""
        return list(self.app.lost[self._lost_before:])

    async def send(self, spec: RequestSpec, submitted_s: float) -> RequestResult:
        from ..modes.rayserve import call_app

        return await call_app(self.app, spec, submitted_s=submitted_s, epoch=self._epoch,
                              clock=self.clock, mode=self.mode)

    def itl(self) -> ItlSketch | None:
        return None  # the clients live inside the replicas


def app_session(app: Any, ctx: ModeContext, *, mode: str = "rayserve") -> _AppSession:
    """A session over a running :class:`~parallel_kit.modes.rayserve.ServeApp`.

    Its clock starts now; ``setup_s`` is the application's own (``app.setup_s``).
    """
    return _AppSession(app, ctx, mode)


@contextlib.asynccontextmanager
async def rayserve_session(ctx: ModeContext) -> AsyncIterator[_AppSession]:
    """``rayserve``: the burst run's Serve application; each arrival one handle call.

    Raises:
        As :func:`~parallel_kit.modes.rayserve.open_serve_app`: ConfigError (``--gpus``,
        ``--max-ongoing``, replicas that never start), MissingDependency, OllamaUnavailable.
    """
    from ..modes.rayserve import open_serve_app

    async with open_serve_app(ctx) as app:
        yield app_session(app, ctx)


class _Results:
    """Celery's stored results of this session's tasks, through one Redis subscription."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._task: asyncio.Task[None] | None = None
        #: Set once Redis was gone for longer than the outage bound (the awaited tasks failed).
        self.gave_up: BaseException | None = None

    async def start(self) -> None:
        from .tasks import META_PREFIX, waiting_client

        # redis-py's Retry with exponential backoff reconnects (and re-subscribes) after a
        # Redis outage; the sweep below re-reads what was published meanwhile.
        self._client = waiting_client(self.redis_url)
        self._pubsub = self._client.pubsub()
        await self._pubsub.psubscribe(META_PREFIX + "*")
        self._task = asyncio.ensure_future(self._listen())

    def expect(self, task_id: str) -> asyncio.Future[dict[str, Any]]:
        """A future for ``task_id``'s final meta; register it *before* the task is sent."""
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[task_id] = fut
        return fut

    def forget(self, task_id: str) -> None:
        self._waiting.pop(task_id, None)

    @property
    def unfinished(self) -> int:
        return len(self._waiting)

    def _take(self, task_id: str, meta: dict[str, Any]) -> None:
        if meta.get("status") not in ("SUCCESS", "FAILURE"):
            return
        fut = self._waiting.pop(task_id, None)
        if fut is not None and not fut.done():
            fut.set_result(meta)

    async def _listen(self) -> None:
        import redis

        from .tasks import META_PREFIX, RedisUnavailable, redis_outage_s

        loop = asyncio.get_running_loop()
        swept = loop.time()
        while True:
            try:
                # redis-py's Retry (waiting_client) rides out an outage inside these calls;
                # what reaches here is an outage longer than redis_outage_s().
                msg = await self._pubsub.get_message(ignore_subscribe_messages=True,
                                                     timeout=SWEEP_S)
                if msg is not None and msg.get("type") == "pmessage":
                    self._take(msg["channel"].decode()[len(META_PREFIX):],
                               json.loads(msg["data"]))
                if loop.time() - swept >= SWEEP_S:
                    swept = loop.time()
                    await self._sweep()
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                    OSError) as exc:
                text = str(exc).strip().splitlines()
                self._give_up(RedisUnavailable(
                    self.redis_url, f"no answer for about {redis_outage_s():g} s: "
                                    f"{text[0] if text else type(exc).__name__}",
                    "the tasks still awaited are given up"))
                await asyncio.sleep(SWEEP_S)  # keep listening: later tasks may get an answer

    def _give_up(self, exc: BaseException) -> None:
        """Fail every awaited task with ``exc`` (Redis gone for longer than the outage bound)."""
        self.gave_up = exc
        waiting, self._waiting = self._waiting, {}
        for fut in waiting.values():
            if not fut.done():
                fut.set_exception(exc)

    async def _sweep(self) -> None:
        from .tasks import META_PREFIX

        ids = list(self._waiting)
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            stored = await self._client.mget([META_PREFIX + t for t in chunk])
            for task_id, raw in zip(chunk, stored, strict=True):
                if raw:
                    self._take(task_id, json.loads(raw))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        for fut in self._waiting.values():
            fut.cancel()
        with contextlib.suppress(Exception):
            await self._pubsub.aclose()
        with contextlib.suppress(Exception):
            await self._client.aclose()


class _StackSession:
    """A running production stack, opened for requests that arrive one by one."""

    def __init__(self, stack: Any, ctx: ModeContext, results: _Results) -> None:
        from .celery_app import REQUEST_TIMEOUT_S
        from .celery_app import app as celery_app
        from .tasks import TaskClient

        self.stack = stack
        self.model = ctx.model
        self.workers = int(stack.app.workers)
        self.slots = int(stack.app.slots)
        self.setup_s = float(stack.setup_s)
        self.lost_workers: list[dict[str, Any]] = []
        self._results = results
        self._request_timeout_s = float(
            celery_app.conf.get("parallel_kit_request_timeout_s") or REQUEST_TIMEOUT_S)
        self.clock = ModelClock(ctx.time_scale).start()
        self.client = TaskClient(stack.redis_url, stack.app.name, ctx.time_scale,
                                 time.time() - self.clock.wall(), ctx.model)

    async def send(self, spec: RequestSpec, submitted_s: float) -> RequestResult:
        """Put ``spec`` on the Celery queue now; the row once its result is in Redis.

        Raises:
            RedisUnavailable: Redis does not answer (the driver makes it a failed row).
        """
        from .tasks import body_from_meta, row_from_body

        task_id = uuid.uuid4().hex
        budget = self._request_timeout_s * (self._results.unfinished + 1)
        done = self._results.expect(task_id)  # before the send: no result can slip past
        try:
            # TaskClient stamps the moment it writes the task (hops["accepted"], queued_s).
            await asyncio.to_thread(self.client.submit, spec, task_id=task_id)
        except BaseException as exc:
            from .tasks import RedisUnavailable

            self._results.forget(task_id)
            if isinstance(exc, RedisUnavailable):
                self._lose_redis(exc)
            raise
        why = f"did not finish within {budget:g} s — is a Celery worker running?"
        supervisor = getattr(self.stack, "supervisor", None)
        gave_up = asyncio.ensure_future(supervisor.until_gave_up() if supervisor is not None
                                        else asyncio.Event().wait())
        try:
            await asyncio.wait((done, gave_up), timeout=budget,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            gave_up.cancel()
        if done.done() and not done.cancelled() and done.exception() is not None:
            gone = done.exception()
            self._lose_redis(gone)
            return RequestResult(
                request_id=spec.request_id or task_id, mode="production", prompt=spec.prompt,
                model=spec.model or self.model, queued_s=submitted_s, submitted_s=submitted_s,
                finished_s=self.client.now(), ok=False,
                error=f"task {task_id} was lost with Redis: {gone}").finalize()
        if done.done() and not done.cancelled():
            meta = done.result()
        else:
            self._results.forget(task_id)
            if gave_up.done() and not gave_up.cancelled():
                why = f"did not finish: {gave_up.result()}"
            return RequestResult(
                request_id=spec.request_id or task_id, mode="production", prompt=spec.prompt,
                model=spec.model or self.model, queued_s=submitted_s, submitted_s=submitted_s,
                finished_s=self.client.now(), ok=False,
                error=f"task {task_id} {why}").finalize()
        return row_from_body(body_from_meta(task_id, meta), spec, mode="production",
                             model=self.model, submitted_s=submitted_s,
                             done_s=self.client.now())

    def _lose_redis(self, exc: BaseException | None) -> None:
        """Record the run's Redis as lost, once (bench then exits 2 after writing every row)."""
        from .redis_server import mask_url

        if exc is not None and not any(w.get("worker") == "redis" for w in self.lost_workers):
            self.lost_workers.append({"worker": "redis", "url": mask_url(self.stack.redis_url),
                                      "error": str(exc), "fatal": True})

    def itl(self) -> ItlSketch | None:
        return None  # the clients live inside the replicas

    def close(self) -> None:
        self.client.close()


@contextlib.asynccontextmanager
async def stack_session(stack: Any, ctx: ModeContext) -> AsyncIterator[_StackSession]:
    """A session over a running :class:`~parallel_kit.production.stack.Stack`.

    The results subscription is set up first (outside the measured window); the session's
    clock starts after it.
    """
    results = _Results(stack.redis_url)
    await results.start()
    session: _StackSession | None = None
    try:
        session = _StackSession(stack, ctx, results)
        yield session
    finally:
        await results.close()
        if session is not None:
            session.close()


@contextlib.asynccontextmanager
async def production_session(ctx: ModeContext) -> AsyncIterator[_StackSession]:
    """``production``: the burst run's stack; each arrival put on the Celery queue as it comes.

    Raises:
        As :func:`~parallel_kit.production.stack.open_stack`: MissingDependency (the
        ``production`` extra), ConfigError (``--redis`` names nothing or not Redis, bad
        settings, a worker that does not start), OllamaUnavailable.
    """
    from .stack import open_stack

    async with open_stack(ctx) as stack, stack_session(stack, ctx) as session:
        yield session
