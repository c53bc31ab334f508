"""The caller's side of the Celery queue: accept a task, say where it is, wait for it.

Used by the production API (any number of API processes, each answering from Redis) and by the
``production`` mode of ``bench``/``demo`` (the same Celery app, without HTTP in between).

A task is accepted only once Redis holds it: first the kit's record (:data:`TASK_KEY`: the
spec, when it was accepted, its prompt bytes), then Celery's message. If either write fails the
caller gets :class:`RedisUnavailable` and nothing was accepted (a record without a message is
removed).

Admission (the ``serve`` limits, :class:`Admission`) is decided inside Redis, by one Lua script
that reads the stack's counters and writes the record only if the task fits — so the bounds
hold across any number of API processes: tasks accepted and not finished past
``max_unfinished`` → :class:`~parallel_kit.modes.taskqueue.QueueFull` (503); prompt bytes those tasks
hold past ``max_held_bytes`` → :class:`~parallel_kit.modes.taskqueue.TooMuchHeld` (429, or 413 for
one prompt larger than the bound). The worker gives the bytes back when the task finishes
(:mod:`.celery_app`, ``_FINISH_LUA``).

States for ``GET /tasks/{id}`` (:meth:`TaskClient.status`): no record → :class:`UnknownStackTask`
(404) — Celery alone would say ``PENDING`` for any id (celery/celery#4450); a record whose
result Celery no longer has although it finished → :class:`ExpiredTask` (410); otherwise
Celery's state: ``PENDING``/``RETRY`` → ``queued``, ``STARTED`` → ``running``, ``SUCCESS`` →
``completed`` or ``failed`` (the row's ``ok``), ``FAILURE`` → ``failed``.

Waiting uses Redis pub/sub: Celery's Redis result backend publishes each stored result on the
channel named by its key (``celery-task-meta-<id>``), as Celery's own ``ResultConsumer`` does,
so a waiting caller needs no polling loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import ParallelKitError
from ..records import RequestResult, RequestSpec
from .celery_app import (
    EPOCH_KEY,
    RESULT_EXPIRES_S,
    STATS_KEY,
    TASK_KEY,
    TASK_NAME,
    app,
)

__all__ = ["REDIS_OUTAGE_S", "Admission", "ExpiredTask", "RedisUnavailable", "TaskClient",
           "UnknownStackTask", "shared_epoch", "wait_for_meta", "waiting_client"]

META_PREFIX = "celery-task-meta-"

#: Admit one task if it fits the bounds (module docstring). KEYS: the task's record, the stats
#: hash. ARGV: spec JSON, accepted time, record TTL, prompt bytes, max unfinished (0: none),
#: max held bytes (0: none). Returns {0, 0} when admitted, {1, unfinished} or {2, held}.
_ADMIT_LUA = """
local s = redis.call('hmget', KEYS[2], 'accepted', 'completed', 'failed', 'held_bytes')
local unfinished = (tonumber(s[1]) or 0) - (tonumber(s[2]) or 0) - (tonumber(s[3]) or 0)
local held = tonumber(s[4]) or 0
local size = tonumber(ARGV[4])
if tonumber(ARGV[5]) > 0 and unfinished >= tonumber(ARGV[5]) then return {1, unfinished} end
if tonumber(ARGV[6]) > 0 and held + size > tonumber(ARGV[6]) then return {2, held} end
redis.call('hset', KEYS[1], 'spec', ARGV[1], 'accepted', ARGV[2], 'bytes', ARGV[4])
redis.call('expire', KEYS[1], ARGV[3])
redis.call('hincrby', KEYS[2], 'accepted', 1)
redis.call('hincrby', KEYS[2], 'held_bytes', size)
return {0, 0}
"""


@dataclass(frozen=True)
class Admission:
    """Bounds a task must fit to be accepted (0: no bound).

    Args:
        max_unfinished: tasks accepted and not yet finished, over every API process of the
            stack (``serve --max-queued``).
        max_held_bytes: UTF-8 bytes of the prompts those tasks hold (``serve --max-held-mb``).
        retry_after_s: the hint the refusals carry (seconds).
    """

    max_unfinished: int = 0
    max_held_bytes: int = 0
    retry_after_s: float = 1.0


class RedisUnavailable(ParallelKitError):
    """Redis does not answer: nothing can be accepted or looked up (the API answers 503)."""

    def __init__(self, url: str, detail: str, outcome: str = "nothing was accepted") -> None:
        super().__init__(f"Redis at {_safe(url)} is unreachable ({detail}) — start it again, or "
                         f"point --redis / PARALLEL_KIT_REDIS_URL at a running Redis; "
                         f"{outcome}")
        self.url = url


class UnknownStackTask(ParallelKitError, LookupError):
    """No task was ever accepted with this id (404)."""

    def __init__(self, task_id: str) -> None:
        super().__init__(f"no task {task_id!r} was accepted by this stack — check the id")


class ExpiredTask(ParallelKitError, LookupError):
    """The task finished, but its result expired from Redis (410)."""

    def __init__(self, task_id: str, expires_s: float) -> None:
        super().__init__(f"task {task_id!r} finished, but its result expired (results are kept "
                         f"{expires_s:g} s) — submit it again")


def _safe(url: str) -> str:
    """The URL without a password."""
    if "@" in url:
        scheme, _, rest = url.partition("://")
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def shared_epoch(redis_url: str) -> float:
    """The wall-clock origin of the stack's rows, the same for every API process (Redis SETNX)."""
    client = _client(redis_url)
    try:
        client.set(EPOCH_KEY, repr(time.time()), nx=True)
        return float(client.get(EPOCH_KEY))
    except Exception as exc:
        raise RedisUnavailable(redis_url, _first_line(exc)) from None


def _client(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url, socket_timeout=3.0, socket_connect_timeout=2.0)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)


@dataclass
class TaskClient:
    """Accept tasks into the stack and read them back (see the module docstring).

    Args:
        redis_url: the stack's Redis (Celery's broker and result backend).
        app_name: the Ray Serve application the workers call.
        time_scale: clock seconds per model second of the rows.
        epoch: the rows' origin as wall-clock seconds (``time.time()``).
        model: the model for specs that name none.
        stack: the :class:`~parallel_kit.production.stack.Stack` it fronts, when the stack
            was brought up in this process (``None`` for an API-only process).
    """

    redis_url: str
    app_name: str
    time_scale: float
    epoch: float
    model: str = ""
    stack: Any = None

    def __post_init__(self) -> None:
        self._redis = _client(self.redis_url)
        self._admit = self._redis.register_script(_ADMIT_LUA)

    def now(self) -> float:
        """Model seconds since the epoch."""
        return (time.time() - self.epoch) / self.time_scale

    # -- accept ----------------------------------------------------------------------------
    def submit(self, spec: RequestSpec, *, task_id: str | None = None,
               submitted_s: float | None = None, admission: Admission | None = None) -> str:
        """Put one request on the queue; returns its task id once Redis holds it.

        Raises:
            RedisUnavailable: Redis does not answer (nothing was accepted).
            QueueFull, TooMuchHeld: the task does not fit ``admission`` (nothing accepted).
        """
        import redis

        from ..modes.taskqueue import QueueFull, TooMuchHeld

        task_id = task_id or uuid.uuid4().hex
        accepted = self.now()
        spec_dict = {"prompt": spec.prompt, "model": spec.model, "num_predict": spec.num_predict,
                     "options": dict(spec.options), "system": spec.system,
                     "request_id": spec.request_id or task_id}
        key = TASK_KEY.format(id=task_id)
        size = len(spec.prompt.encode("utf-8", "surrogatepass"))
        limits = admission or Admission()
        try:
            verdict, count = self._admit(
                keys=[key, STATS_KEY],
                args=[json.dumps(spec_dict), repr(time.time()),
                      int(2 * (app.conf.result_expires or RESULT_EXPIRES_S)), size,
                      limits.max_unfinished, limits.max_held_bytes])
        except redis.exceptions.RedisError as exc:
            raise RedisUnavailable(self.redis_url, _first_line(exc)) from None
        if int(verdict) == 1:
            raise QueueFull(limits.max_unfinished, retry_after_s=limits.retry_after_s)
        if int(verdict) == 2:
            raise TooMuchHeld(int(count), size, limits.max_held_bytes, limits.retry_after_s)
        run = {"app": self.app_name, "epoch": self.epoch, "time_scale": self.time_scale,
               "submitted_s": accepted if submitted_s is None else submitted_s,
               "hops": {"accepted": accepted}, "model": self.model}
        try:
            app.send_task(TASK_NAME, args=(spec_dict, run), task_id=task_id)
        except Exception as exc:  # kombu's OperationalError and friends
            try:
                pipe = self._redis.pipeline()
                pipe.delete(key)
                pipe.hincrby(STATS_KEY, "accepted", -1)
                pipe.hincrby(STATS_KEY, "held_bytes", -size)
                pipe.execute()
            except redis.exceptions.RedisError:
                pass
            raise RedisUnavailable(self.redis_url, _first_line(exc)) from None
        return task_id

    # -- look up ---------------------------------------------------------------------------
    def status(self, task_id: str) -> dict[str, Any]:
        """The ``GET /tasks/{id}`` body: ``task_id``, ``status``, ``result``, ``error``.

        Raises:
            UnknownStackTask: never accepted (404). ExpiredTask: result expired (410).
            RedisUnavailable: Redis does not answer (503).
        """
        import redis

        try:
            pipe = self._redis.pipeline()
            pipe.hgetall(TASK_KEY.format(id=task_id))
            pipe.get(META_PREFIX + task_id)
            record, meta_raw = pipe.execute()
        except redis.exceptions.RedisError as exc:
            raise RedisUnavailable(self.redis_url, _first_line(exc)) from None
        if not record:
            raise UnknownStackTask(task_id)
        meta = json.loads(meta_raw) if meta_raw else None
        if meta is None:
            if b"finished" in record:
                raise ExpiredTask(task_id, float(app.conf.result_expires or RESULT_EXPIRES_S))
            return {"task_id": task_id, "status": "queued", "result": None, "error": None}
        return body_from_meta(task_id, meta)

    def stats(self) -> dict[str, Any]:
        """Counters kept in Redis (accepted, completed, failed) and the queue's length."""
        import redis

        from .celery_app import QUEUE

        try:
            raw = self._redis.hgetall(STATS_KEY)
            queued = int(self._redis.llen(QUEUE))
        except redis.exceptions.RedisError as exc:
            raise RedisUnavailable(self.redis_url, _first_line(exc)) from None
        counts = {k.decode(): int(v) for k, v in raw.items()}
        accepted = counts.get("accepted", 0)
        done = counts.get("completed", 0) + counts.get("failed", 0)
        return {"accepted": accepted, "queued": queued,
                "running": max(accepted - done - queued, 0),
                "completed": counts.get("completed", 0), "failed": counts.get("failed", 0),
                "unfinished": max(accepted - done, 0),
                "held_bytes": max(counts.get("held_bytes", 0), 0)}

    def ping(self) -> None:
        """Raise :class:`RedisUnavailable` unless Redis answers."""
        import redis

        try:
            self._redis.ping()
        except redis.exceptions.RedisError as exc:
            raise RedisUnavailable(self.redis_url, _first_line(exc)) from None

    # -- wait ------------------------------------------------------------------------------
    async def wait(self, task_ids: Iterable[str], *, timeout_s: float | None = None,
                   on_done: Any = None) -> dict[str, dict[str, Any]]:
        """Wait until every task has a final state; returns ``{id: GET /tasks body}``.

        ``on_done(task_id, body)`` is called as each arrives (:func:`wait_for_meta`).

        Raises:
            asyncio.TimeoutError: ``timeout_s`` passed first.
            RedisUnavailable: Redis did not answer for about :data:`REDIS_OUTAGE_S`.
        """
        out: dict[str, dict[str, Any]] = {}

        def take(task_id: str, meta: dict[str, Any]) -> None:
            out[task_id] = body_from_meta(task_id, meta)
            if on_done is not None:
                on_done(task_id, out[task_id])

        await wait_for_meta(self.redis_url, task_ids, timeout_s=timeout_s, on_meta=take,
                            check_records=True)
        return out

    def close(self) -> None:
        self._redis.close()


#: Seconds a waiting caller rides out a Redis that does not answer (refused, reset, frozen)
#: before its tasks are given up: redis-py's ``Retry`` with exponential backoff (0.1 s doubling
#: to 2 s between tries, :func:`waiting_retry`) reconnects and re-subscribes meanwhile.
#: ``PARALLEL_KIT_REDIS_OUTAGE_S`` overrides it.
REDIS_OUTAGE_S = 60.0
REDIS_OUTAGE_ENV = "PARALLEL_KIT_REDIS_OUTAGE_S"


def redis_outage_s() -> float:
    """:data:`REDIS_OUTAGE_S`, or ``PARALLEL_KIT_REDIS_OUTAGE_S`` when set (a positive number).

    Raises:
        ConfigError: the variable is not a positive number.
    """
    import os

    from ..errors import ConfigError

    raw = os.environ.get(REDIS_OUTAGE_ENV)
    if not raw:
        return REDIS_OUTAGE_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value <= 86_400:
        raise ConfigError(f"{REDIS_OUTAGE_ENV}={raw!r} must be seconds within 0..86400 — "
                          f"unset it for {REDIS_OUTAGE_S:g} s")
    return value
#: Seconds between two reads of the stored results of the tasks still awaited (a result
#: published while the subscription was reconnecting is not missed; a task whose record is
#: gone — Redis restarted without its data — is known lost).
SWEEP_S = 1.0


def waiting_retry() -> Any:
    """redis-py's asyncio ``Retry`` for a caller waiting on results: exponential backoff, as
    many tries as fit in :data:`REDIS_OUTAGE_S` when the connection is refused at once
    (https://redis.readthedocs.io/en/stable/retry.html)."""
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialBackoff

    tries, total, pause, outage = 0, 0.0, 0.1, redis_outage_s()
    while total < outage:
        total += min(pause, 2.0)
        pause *= 2
        tries += 1
    return Retry(ExponentialBackoff(cap=2.0, base=0.1), retries=tries)


def waiting_client(redis_url: str) -> Any:
    """An asyncio Redis client that rides out an outage of up to about :data:`REDIS_OUTAGE_S`
    (a frozen Redis: each try also waits out the 5 s socket timeout)."""
    import redis.asyncio as aioredis

    return aioredis.Redis.from_url(redis_url, retry=waiting_retry(), socket_timeout=5.0,
                                   socket_connect_timeout=2.0)


async def wait_for_meta(redis_url: str, task_ids: Iterable[str], *,
                        timeout_s: float | None = None, on_meta: Any = None,
                        check_records: bool = False) -> dict[str, dict[str, Any]]:
    """Celery's final result meta of each task, as it is stored (Redis pub/sub, no polling).

    Subscribes to ``celery-task-meta-*`` first, then reads what is stored already, so no result
    is missed; every :data:`SWEEP_S` the stored results are read again (a message published
    while the subscription reconnected). ``on_meta(task_id, meta)`` is called as each arrives.
    With ``check_records`` a task whose record (:data:`TASK_KEY`) is gone — Redis restarted
    without its data — ends at once with a ``FAILURE`` meta saying so.

    Raises:
        asyncio.TimeoutError: ``timeout_s`` passed first.
        RedisUnavailable: Redis did not answer for about :data:`REDIS_OUTAGE_S`.
    """
    import redis

    pending = set(task_ids)
    out: dict[str, dict[str, Any]] = {}
    outage = redis_outage_s()
    client = waiting_client(redis_url)
    pubsub = client.pubsub()

    def take(task_id: str, meta: dict[str, Any]) -> None:
        if task_id in pending and meta.get("status") in ("SUCCESS", "FAILURE"):
            pending.discard(task_id)
            out[task_id] = meta
            if on_meta is not None:
                on_meta(task_id, meta)

    async def sweep() -> None:
        ids = list(pending)
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            stored = await client.mget([META_PREFIX + t for t in chunk])
            for task_id, raw in zip(chunk, stored, strict=True):
                if raw:
                    take(task_id, json.loads(raw))
            if check_records:
                pipe = client.pipeline(transaction=False)
                for task_id in chunk:
                    pipe.exists(TASK_KEY.format(id=task_id))
                for task_id, there in zip(chunk, await pipe.execute(), strict=True):
                    if not there:
                        take(task_id, {"status": "FAILURE", "result": {
                            "exc_type": "TaskLost",
                            "exc_message": f"task {task_id} is no longer in Redis at "
                                           f"{_safe(redis_url)} (it restarted without its "
                                           f"data?) — send the request again"}})

    async def run() -> None:
        loop = asyncio.get_running_loop()
        await pubsub.psubscribe(META_PREFIX + "*")
        await sweep()
        swept = loop.time()
        while pending:
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=SWEEP_S)
            if msg is not None and msg.get("type") == "pmessage":
                channel = msg["channel"].decode()
                take(channel[len(META_PREFIX):], json.loads(msg["data"]))
            if loop.time() - swept >= SWEEP_S:
                await sweep()
                swept = loop.time()

    try:
        await asyncio.wait_for(run(), timeout_s)
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
        raise RedisUnavailable(redis_url, f"no answer for about {outage:g} s: "
                                          f"{_first_line(exc)}",
                               "the tasks still awaited are given up") from None
    finally:
        with contextlib.suppress(Exception):
            await pubsub.aclose()
        with contextlib.suppress(Exception):
            await client.aclose()
    return out


def body_from_meta(task_id: str, meta: dict[str, Any]) -> dict[str, Any]:
    """The ``GET /tasks/{id}`` body from Celery's result meta."""
    state = meta.get("status")
    if state == "SUCCESS":
        row = meta.get("result") or {}
        ok = bool(row.get("ok"))
        return {"task_id": task_id, "status": "completed" if ok else "failed", "result": row,
                "error": None if ok else row.get("error")}
    if state == "FAILURE":
        exc = meta.get("result") or {}
        text = (f"{exc.get('exc_type', 'error')}: {exc.get('exc_message', '')}"
                if isinstance(exc, dict) else str(exc))
        return {"task_id": task_id, "status": "failed", "result": None, "error": text}
    if state == "STARTED":
        return {"task_id": task_id, "status": "running", "result": None, "error": None}
    return {"task_id": task_id, "status": "queued", "result": None, "error": None}


def row_from_body(body: dict[str, Any], spec: RequestSpec, *, mode: str, model: str,
                  submitted_s: float, done_s: float) -> RequestResult:
    """A row for one finished task: the worker's row, or a failed row saying why."""
    result = body.get("result")
    if isinstance(result, dict) and result:
        row = RequestResult.from_dict(result)
    else:
        row = RequestResult(request_id=spec.request_id, mode=mode, prompt=spec.prompt,
                            model=spec.model or model, submitted_s=submitted_s,
                            ok=False, error=body.get("error") or "the task failed")
    row.mode = mode
    row.hops = {**row.hops, "done": done_s}
    row.finished_s = done_s if math.isnan(row.finished_s) or row.ok else row.finished_s
    return row.finalize()
