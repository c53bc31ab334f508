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
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from ..api import (
    ApiSettings,
    BatchAccepted,
    InferenceRequest,
    TaskAccepted,
    TaskStatus,
    check_batch_size,
    document_errors,
    prepare_app,
    spec_from_body,
    unless_stopping,
)
from ..records import RequestSpec

_log = logging.getLogger("uvicorn.error")

__all__ = ["create_production_app", "open_production_api", "open_production_backend",
           "serve_production"]


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
    from ..modes.taskqueue import QueueFull, TooMuchHeld
    from .celery_app import visibility_timeout_for
    from .tasks import Admission, ExpiredTask, RedisUnavailable, UnknownStackTask

    cfg = settings or ApiSettings(mode="production")
    wait_s = wait_timeout_s or visibility_timeout_for(cfg.max_request_s)
    admission = Admission(max_unfinished=cfg.max_queued, max_held_bytes=cfg.max_held_bytes,
                          retry_after_s=cfg.retry_after_s)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            app.state.stopping.set()
            if drain:
                await _drain(client, app.state.force, cfg.shutdown_timeout_s)

    app = FastAPI(title="parallel_kit inference API (production stack)", version="0.2.0",
                  description="Tasks go to a Celery queue on Redis; Celery workers call a Ray "
                              "Serve application with one replica per GPU. Any API process "
                              "answers GET /tasks/{id} from Redis.", lifespan=lifespan)
    prepare_app(app, cfg, unavailable=(RedisUnavailable, QueueFull), unknown=UnknownStackTask)

    @app.exception_handler(ExpiredTask)
    async def _expired(request: Request, exc: ExpiredTask) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=410)

    def to_spec(body: InferenceRequest, loc: list[Any]) -> RequestSpec:
        return spec_from_body(body, loc, cfg)

    def refuse_when_stopping(request: Request) -> None:
        if request.app.state.stopping.is_set():
            raise HTTPException(503, detail="the API is shutting down and accepts no more "
                                            "tasks — send them to another API process of "
                                            "the stack", headers={"Retry-After":
                                                                  str(cfg.retry_after_s)})

    async def submit(spec: RequestSpec) -> str:
        # redis-py and kombu are blocking clients: off the event loop.
        return str(await asyncio.to_thread(client.submit, spec, admission=admission))

    @app.post("/inference", response_model=TaskStatus,
              summary="Run one prompt and wait for the answer")
    async def inference(request: Request, body: InferenceRequest) -> Any:
        spec = to_spec(body, ["body"])
        refuse_when_stopping(request)
        task_id = await submit(spec)
        # Wait for the answer, or for shutdown: a waiting client is told, never left hanging.
        done = await unless_stopping(client.wait([task_id], timeout_s=wait_s),
                                     request.app.state.stopping)
        if done.done() and not done.cancelled() and done.exception() is None:
            result = done.result()
            if task_id in result:
                return dict(result[task_id])
        elif not done.done() or done.cancelled():
            return JSONResponse({
                "detail": f"the API is shutting down; task {task_id} was accepted but not "
                          f"finished — read it with GET /tasks/{task_id} from another API "
                          f"process of the stack, or send it again (a Redis the kit started "
                          f"stops with this process)", "task_id": task_id}, status_code=503)
        return dict(await asyncio.to_thread(client.status, task_id))

    @app.post("/inference/async", response_model=TaskAccepted,
              summary="Queue one prompt; poll GET /tasks/{task_id}")
    async def inference_async(request: Request, body: InferenceRequest) -> dict[str, Any]:
        spec = to_spec(body, ["body"])
        refuse_when_stopping(request)
        task_id = await submit(spec)
        return {"task_id": task_id, "status": "queued", "message": "Task queued"}

    @app.post("/inference/batch", response_model=BatchAccepted,
              summary="Queue several prompts in one call")
    async def inference_batch(request: Request, body: list[InferenceRequest]) -> Any:
        check_batch_size(len(body), cfg)
        specs = [to_spec(item, ["body", i]) for i, item in enumerate(body)]
        refuse_when_stopping(request)
        ids: list[str] = []
        for spec in specs:
            try:
                ids.append(await submit(spec))
            except (RedisUnavailable, QueueFull, TooMuchHeld) as exc:
                code = 429 if isinstance(exc, TooMuchHeld) and not exc.never_fits else (
                    413 if isinstance(exc, TooMuchHeld) else 503)
                return JSONResponse({"detail": str(exc), "accepted_task_ids": ids},
                                    status_code=code,
                                    headers={"Retry-After": str(cfg.retry_after_s)})
        return {"task_ids": ids, "count": len(ids)}

    @app.get("/tasks/{task_id}", response_model=TaskStatus,
             summary="A task's status, and its result once finished (from Redis)")
    async def task_status(task_id: str) -> dict[str, Any]:
        return dict(await asyncio.to_thread(client.status, task_id))

    @app.get("/stats", summary="Tasks accepted, queued, running, completed, failed (Redis)")
    async def stats() -> dict[str, Any]:
        return {**await asyncio.to_thread(client.stats), "mode": "production",
                "max_queued": cfg.max_queued, "max_held_bytes": cfg.max_held_bytes,
                "max_request_s": cfg.max_request_s}

    @app.get("/health", summary="Liveness: Redis answers, a worker and a replica can serve "
                                "(needs no key)")
    async def health_check(request: Request) -> JSONResponse:
        if request.app.state.stopping.is_set():
            return JSONResponse({"status": "stopping", "mode": "production"}, status_code=503)
        try:
            await asyncio.to_thread(client.ping)
        except RedisUnavailable as exc:
            return JSONResponse({"status": "unavailable", "mode": "production",
                                 "detail": str(exc)}, status_code=503)
        body: dict[str, Any] = {"status": "ok", "mode": "production", "model": client.model}
        if health is not None:
            body.update(await asyncio.to_thread(health))
            if body.get("problem"):
                body["status"] = "degraded"
                return JSONResponse(body, status_code=503)
        return JSONResponse(body)

    document_errors(app, task_codes=(404, 410), everywhere=(503,))
    return app


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
        why = "a second Ctrl-C" if force.is_set() else f"the {timeout_s:g} s shutdown bound"
        _log.warning("%d accepted task(s) unfinished at shutdown (%s); the workers are "
                     "stopped now — with --redis they stay queued there for another stack",
                     left, why)


def celery_health(timeout_s: float = 0.5) -> dict[str, Any]:
    """``/health`` of an API-only process: the Celery workers that answer ``ping``."""
    from .celery_app import app as celery_app

    try:
        replies = celery_app.control.ping(timeout=timeout_s) or []
    except Exception as exc:
        return {"workers": 0, "problem": f"could not ask the Celery workers ({exc})"}
    n = len(replies)
    return {"workers": n, "problem": None if n else
            f"no Celery worker answered within {timeout_s:g} s — start one "
            f"(parallel-kit worker --redis URL --ray-address ADDR)"}


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
