"""``parallel-kit serve --mode production``: the same HTTP API, its tasks kept in Redis.

Endpoints and bodies are those of :mod:`parallel_kit.api` (``POST /inference``,
``/inference/async``, ``/inference/batch``, ``GET /tasks/{id}``, ``/stats``, ``/health``);
what differs is where a task lives. ``POST`` puts it on the Celery queue of the production
stack (:mod:`parallel_kit.production`), ``GET /tasks/{id}`` reads it back from Redis — so any
number of API processes can answer for any task, and a task accepted before an API restart is
still answered after it.

Status codes beyond the in-process API's: an id never accepted → 404 (not ``queued``: Celery
alone reports unknown ids as ``PENDING``, celery/celery#4450); a finished task whose result
expired from Redis → 410; Redis unreachable → 503 naming Redis and the fix, and nothing is
accepted that Redis does not hold (``POST /inference/batch`` accepts the tasks it could store and
names them in the 503's ``accepted_task_ids``).

The ``serve`` limits apply as in the in-process API (:class:`~parallel_kit.api.ApiSettings`),
decided where the tasks live — in Redis, for every API process of the stack together
(:class:`~parallel_kit.production.tasks.Admission`):

* ``--max-num-predict``: a larger (or unbounded, < 0) ``options.num_predict`` → 422 naming it;
* ``--max-queued``: tasks accepted and not finished (queued in Celery or running) at the bound
  → 503 with ``Retry-After``;
* ``--max-held-mb``: prompt bytes of those tasks past the bound → 429 (413 for one prompt
  larger than the bound);
* ``--max-request-s``: the workers' request timeout — a request running longer is cancelled at
  its replica and its task ends ``failed`` saying so (:mod:`parallel_kit.production.celery_app`);
  an API-only process (``--serve-app``) cannot set its workers' bound (they were started with
  their own), and uses it for how long ``POST /inference`` waits before answering the status;
* ``--shutdown-timeout-s``: at Ctrl-C/SIGTERM clients waiting on ``POST /inference`` are
  answered 503 with their task id at once; with the stack started by this process, accepted
  tasks get the timeout to finish, then the workers are stopped (SIGTERM, SIGKILL after a
  second) and the stack taken down; a second Ctrl-C skips the wait;
* ``--max-kept-mb`` does not apply: finished results live in Redis, which drops them after
  ``result_expires`` (24 h); bound Redis's memory with its own ``maxmemory`` for a shared one.

``/health``: Redis unreachable → 503 ``unavailable``; no Celery worker or no Serve replica that
can serve → 503 ``degraded`` with ``problem`` saying which (a worker that died is replaced by the
stack's supervisor, :mod:`parallel_kit.production.supervisor`); otherwise 200 ``ok`` with the
counts. An API-only process (``--serve-app``) counts the workers that answer Celery's ``ping``.

``open_production_api`` brings the stack up for a foreground ``serve`` (Redis, Serve, workers;
or only the API with ``--workers 0`` against a stack started elsewhere).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from fastapi import FastAPI

from ..api import ApiSettings, build_app
from ..api.store import StoreDocs, shutdown_why
from ..records import RequestSpec

_log = logging.getLogger("uvicorn.error")

__all__ = ["RedisTaskStore", "create_production_app", "open_production_api",
           "open_production_backend", "serve_production"]


def create_production_app(client: Any, settings: ApiSettings | None = None, *,
                          wait_timeout_s: float | None = None,
                          health: Callable[[], dict[str, Any]] | None = None,
                          drain: bool = False) -> FastAPI:
    """The API in front of the production stack.

    Args:
        client: a :class:`~parallel_kit.production.tasks.TaskClient` (Redis + Celery app).
        settings: bounds, key and ``mode`` (``production``), as for the in-process API.
        wait_timeout_s: how long ``POST /inference`` waits for its result (clock seconds);
            past it the answer is the task's current status (poll ``GET /tasks/{id}``).
            Default: the broker's visibility timeout for ``settings.max_request_s``.
        health: called (in a thread) by ``/health``: ``workers``, ``replicas`` and ``problem``
            (why nothing can serve, or ``None``); default: no such check.
        drain: at shutdown, give accepted tasks ``settings.shutdown_timeout_s`` to finish (the
            process that runs the stack, which stops with it).
    """
    cfg = settings or ApiSettings(mode="production")
    return build_app(RedisTaskStore(client, cfg, wait_timeout_s=wait_timeout_s, health=health,
                                    drain=drain), cfg)


class RedisTaskStore:
    """Tasks in the production stack (:class:`~parallel_kit.api.store.TaskStore`): accepted
    into Redis and Celery's queue by ``client`` under the ``serve`` limits (decided in Redis),
    read back from Redis by any API process (arguments: :func:`create_production_app`).

    redis-py and kombu are blocking clients: every call to ``client`` runs in a thread.
    """

    stopping_refusal: str | None = ("the API is shutting down and accepts no more tasks — send "
                                    "them to another API process of the stack")

    def __init__(self, client: Any, cfg: ApiSettings, *, wait_timeout_s: float | None = None,
                 health: Callable[[], dict[str, Any]] | None = None,
                 drain: bool = False) -> None:
        from ..modes.taskqueue import QueueFull, TooMuchHeld
        from .celery_app import visibility_timeout_for
        from .tasks import Admission, ExpiredTask, RedisUnavailable, UnknownStackTask

        self._client, self._cfg, self._health, self._drain = client, cfg, health, drain
        self._wait_s = wait_timeout_s or visibility_timeout_for(cfg.max_request_s)
        self._admission = Admission(max_unfinished=cfg.max_queued,
                                    max_held_bytes=cfg.max_held_bytes,
                                    retry_after_s=cfg.retry_after_s)
        self._redis_down = RedisUnavailable
        self._refusals = (RedisUnavailable, QueueFull, TooMuchHeld)
        self.errors: Mapping[type[Exception], int] = {
            RedisUnavailable: 503, QueueFull: 503, UnknownStackTask: 404, ExpiredTask: 410}
        self.docs = StoreDocs(
            title="parallel_kit inference API (production stack)",
            description="Tasks go to a Celery queue on Redis; Celery workers call a Ray Serve "
                        "application with one replica per GPU. Any API process answers "
                        "GET /tasks/{id} from Redis.",
            tasks_summary="A task's status, and its result once finished (from Redis)",
            stats_summary="Tasks accepted, queued, running, completed, failed (Redis)",
            health_summary="Liveness: Redis answers, a worker and a replica can serve (needs "
                           "no key)",
            health_name="health_check", health_model=None, task_codes=(404, 410),
            everywhere=(503,))

    def open(self) -> contextlib.AbstractAsyncContextManager[None]:
        return contextlib.nullcontext()  # the stack outlives the app: nothing to open

    async def submit(self, specs: list[RequestSpec]) -> tuple[list[str], Exception | None]:
        ids: list[str] = []
        for spec in specs:  # one at a time: a refusal leaves those before it accepted
            try:
                ids.append(str(await asyncio.to_thread(self._client.submit, spec,
                                                       admission=self._admission)))
            except self._refusals as exc:
                return ids, exc
        return ids, None

    async def status(self, task_id: str) -> dict[str, Any]:
        return dict(await asyncio.to_thread(self._client.status, task_id))

    async def wait(self, task_id: str) -> dict[str, Any] | None:
        done = await self._client.wait([task_id], timeout_s=self._wait_s)
        return dict(done[task_id]) if task_id in done else None

    def after_stop(self, task_id: str) -> str:
        return (f"read it with GET /tasks/{task_id} from another API process of the stack, or "
                f"send it again (a Redis the kit started stops with this process)")

    async def stats(self) -> dict[str, Any]:
        cfg = self._cfg
        return {**await asyncio.to_thread(self._client.stats), "mode": "production",
                "max_queued": cfg.max_queued, "max_held_bytes": cfg.max_held_bytes,
                "max_request_s": cfg.max_request_s}

    async def health(self, stopping: bool) -> tuple[dict[str, Any], int]:
        if stopping:
            return {"status": "stopping", "mode": "production"}, 503
        try:
            await asyncio.to_thread(self._client.ping)
        except self._redis_down as exc:
            return {"status": "unavailable", "mode": "production", "detail": str(exc)}, 503
        body: dict[str, Any] = {"status": "ok", "mode": "production",
                                "model": self._client.model}
        if self._health is not None:
            body.update(await asyncio.to_thread(self._health))
            if body.get("problem"):
                body["status"] = "degraded"
                return body, 503
        return body, 200

    async def shutdown(self, force: asyncio.Event, timeout_s: float) -> None:
        if self._drain:
            await _drain(self._client, force, timeout_s)


async def _drain(client: Any, force: asyncio.Event, timeout_s: float) -> None:
    """Wait until no accepted task is unfinished (Redis's counters), ``force`` is set, or
    ``timeout_s`` passed; log how many were left."""
    deadline = time.monotonic() + timeout_s
    left = 0
    while time.monotonic() < deadline and not force.is_set():
        try:
            left = int((await asyncio.to_thread(client.stats)).get("unfinished", 0))
        except Exception:
            return  # Redis gone: nothing to wait for
        if left == 0:
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(force.wait(), 0.1)
    if left:
        _log.warning("%d accepted task(s) unfinished at shutdown (%s); the workers are "
                     "stopped now — with --redis they stay queued there for another stack",
                     left, shutdown_why(force, timeout_s))


def celery_health() -> dict[str, Any]:
    """``/health`` of an API-only process: the Celery workers whose heartbeat is in Redis.

    Each worker renews its :data:`~parallel_kit.production.celery_app.BEAT_KEY` every second
    and the key lives :data:`~parallel_kit.production.celery_app.BEAT_TTL_S` seconds, so a
    key that is there is a worker that beat that recently. Read from Redis, not by Celery's
    ``ping`` broadcast, whose answer a worker busy with many tasks can send too late.
    """
    from .celery_app import BEAT_KEY, BEAT_TTL_S, beating_workers

    try:
        n = len(beating_workers())
    except Exception as exc:
        return {"workers": 0, "problem": f"could not ask Redis for the Celery workers' "
                                         f"heartbeats ({exc})"}
    return {"workers": n, "problem": None if n else
            f"no Celery worker has beaten in the last {BEAT_TTL_S:g} s ({BEAT_KEY}) — start "
            f"one (parallel-kit worker --redis URL --ray-address ADDR)"}


@contextlib.asynccontextmanager
async def open_production_api(ctx: Any, stack_settings: Any, *, app_name: str | None = None,
                              announce: Callable[[str], None] | None = None,
                              ) -> AsyncIterator[Any]:
    """Bring the stack up (:func:`~parallel_kit.production.stack.open_stack`) and yield a
    :class:`~parallel_kit.production.tasks.TaskClient` for the API; all stopped on exit.
    """
    from .stack import open_stack
    from .tasks import TaskClient, shared_epoch

    async with open_stack(ctx, stack_settings, app_name=app_name, announce=announce) as stack:
        client = TaskClient(stack.redis_url, stack.app.name, ctx.time_scale,
                            shared_epoch(stack.redis_url), ctx.model, stack=stack)
        try:
            yield client
        finally:
            client.close()



async def serve_production(sock: Any, ctx: Any, *, settings: ApiSettings | None = None,
                           serve_app: str | None = None,
                           announce: Callable[[str], None] | None = None) -> int:
    """Serve the production API on ``sock`` until stopped (``parallel-kit serve``); returns
    the number of Ctrl-C/SIGTERM signals that stopped it (0: stopped otherwise).

    With ``serve_app`` (an API process only, in front of a stack that runs already — start
    several, restart them at will: tasks live in Redis) it needs ``ctx.stack.redis`` (or
    ``PARALLEL_KIT_REDIS_URL``); otherwise it brings the whole stack up first
    (:func:`open_production_api`) and stops it on exit.

    Raises:
        ConfigError: no Redis named for an API-only process; Redis unreachable or not Redis.
    """
    import os

    from ..api import uvicorn_server
    from ..errors import ConfigError
    from .celery_app import configure
    from .redis_server import REDIS_URL_ENV, check_redis
    from .tasks import TaskClient, shared_epoch

    cfg = settings or ApiSettings(mode="production")
    if serve_app:
        url = ctx.stack.redis or os.environ.get(REDIS_URL_ENV)
        if not url:
            raise ConfigError(f"an API process in front of a running stack needs its Redis — "
                              f"pass --redis URL or set {REDIS_URL_ENV}")
        check_redis(url)
        configure(url, request_timeout_s=ctx.stack.request_timeout_s,
                  visibility_timeout_s=ctx.stack.visibility_timeout_s)
        client = TaskClient(url, serve_app, ctx.time_scale, shared_epoch(url), ctx.model)
        server = uvicorn_server(create_production_app(client, cfg, health=celery_health))
        try:
            await server.serve(sockets=[sock])
        finally:
            client.close()
        return int(server.signals)
    from dataclasses import replace

    # --max-request-s is the workers' request timeout; the workers get a second to stop once
    # the shutdown wait (--shutdown-timeout-s, in the app's lifespan) is over.
    stack_cfg = replace(ctx.stack, request_timeout_s=ctx.stack.request_timeout_s
                        or cfg.max_request_s, stop_grace_s=1.0)
    async with open_production_api(ctx, stack_cfg, announce=announce) as client:
        if announce:
            from .redis_server import mask_url

            shown = mask_url(client.redis_url)
            announce(f"the stack is up: Serve application {client.app_name!r}, Redis "
                     f"{shown} — more API processes: parallel-kit serve --mode "
                     f"production --workers 0 --redis {shown} --serve-app "
                     f"{client.app_name} (*** = the Redis password; the kit's own Redis "
                     f"lives only as long as this process — use --redis URL for a shared "
                     f"one)")
        server = uvicorn_server(create_production_app(client, cfg, health=client.stack.health,
                                                      drain=True), log_level="info")
        await server.serve(sockets=[sock])
    return int(server.signals)


@contextlib.asynccontextmanager
async def open_production_backend(servers: Any, options: Any) -> AsyncIterator[Any]:
    """The stack behind the *in-process* API (``ModeInfo.api_backend`` of ``production``).

    Each request is a Celery task through Redis and Ray Serve, and the call waits for its row —
    so the generic API (:func:`parallel_kit.api.create_app`, whose task queue lives in the API's
    memory) can front the stack too. ``parallel-kit serve --mode production`` uses
    :func:`create_production_app` instead, whose tasks live in Redis.
    """
    from ..api.backends import ApiBackend, stack_context
    from ..modes.ray_gpu import EpochClock
    from .tasks import row_from_body

    ctx = stack_context(servers, options)
    async with open_production_api(ctx, ctx.stack) as client:

        async def call(spec: RequestSpec) -> Any:
            submitted = client.now()
            task_id = await asyncio.to_thread(client.submit, spec)
            done = await client.wait([task_id], timeout_s=None)
            return row_from_body(done[task_id], spec, mode=options.mode, model=servers.model,
                                 submitted_s=submitted, done_s=client.now())

        # the rows' axis: seconds since the stack's shared epoch (tasks.shared_epoch)
        yield ApiBackend(call, EpochClock(servers.time_scale, client.epoch),
                         model=servers.model, description=servers.message, kind=servers.kind)
