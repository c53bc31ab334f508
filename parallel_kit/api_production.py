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

``open_production_api`` brings the stack up for a foreground ``serve`` (Redis, Serve, workers;
or only the API with ``--workers 0`` against a stack started elsewhere).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from .api import (
    ApiSettings,
    BatchAccepted,
    InferenceRequest,
    TaskAccepted,
    TaskStatus,
    _Guard,
)
from .records import RequestSpec

__all__ = ["create_production_app", "open_production_api", "open_production_backend",
           "serve_production"]


def create_production_app(client: Any, settings: ApiSettings | None = None, *,
                          wait_timeout_s: float = 600.0) -> FastAPI:
    """The API in front of the production stack.

    Args:
        client: a :class:`~parallel_kit.production.tasks.TaskClient` (Redis + Celery app).
        settings: bounds, key and ``mode`` (``production``), as for the in-process API.
        wait_timeout_s: how long ``POST /inference`` waits for its result (clock seconds);
            past it the answer is the task's current status (poll ``GET /tasks/{id}``).
    """
    from .production.tasks import ExpiredTask, RedisUnavailable, UnknownTask

    cfg = settings or ApiSettings(mode="production")
    app = FastAPI(title="parallel_kit inference API (production stack)", version="0.2.0",
                  description="Tasks go to a Celery queue on Redis; Celery workers call a Ray "
                              "Serve application with one replica per GPU. Any API process "
                              "answers GET /tasks/{id} from Redis.")
    app.add_middleware(_Guard, api_key=cfg.api_key, max_body_bytes=cfg.max_body_bytes)

    @app.exception_handler(RedisUnavailable)
    async def _redis_down(request: Request, exc: RedisUnavailable) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503,
                            headers={"Retry-After": str(cfg.retry_after_s)})

    @app.exception_handler(UnknownTask)
    async def _unknown(request: Request, exc: UnknownTask) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(ExpiredTask)
    async def _expired(request: Request, exc: ExpiredTask) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=410)

    def to_spec(body: InferenceRequest, loc: list[Any]) -> RequestSpec:
        if len(body.prompt) > cfg.max_prompt_chars:
            raise HTTPException(422, detail=[{
                "type": "string_too_long", "loc": [*loc, "prompt"],
                "msg": f"prompt has {len(body.prompt)} characters; the limit is "
                       f"{cfg.max_prompt_chars} — shorten it"}])
        return RequestSpec(prompt=body.prompt, model=body.model, options=dict(body.options or {}))

    async def submit(spec: RequestSpec) -> str:
        # redis-py and kombu are blocking clients: off the event loop.
        return str(await asyncio.to_thread(client.submit, spec))

    @app.post("/inference", response_model=TaskStatus,
              summary="Run one prompt and wait for the answer")
    async def inference(body: InferenceRequest) -> dict[str, Any]:
        task_id = await submit(to_spec(body, ["body"]))
        with contextlib.suppress(asyncio.TimeoutError):
            done = await client.wait([task_id], timeout_s=wait_timeout_s)
            if task_id in done:
                return dict(done[task_id])
        return dict(await asyncio.to_thread(client.status, task_id))

    @app.post("/inference/async", response_model=TaskAccepted,
              summary="Queue one prompt; poll GET /tasks/{task_id}")
    async def inference_async(body: InferenceRequest) -> dict[str, Any]:
        task_id = await submit(to_spec(body, ["body"]))
        return {"task_id": task_id, "status": "queued", "message": "Task queued"}

    @app.post("/inference/batch", response_model=BatchAccepted,
              summary="Queue several prompts in one call")
    async def inference_batch(body: list[InferenceRequest]) -> Any:
        if not 1 <= len(body) <= cfg.max_batch:
            raise HTTPException(422, detail=[{
                "type": "batch_size", "loc": ["body"],
                "msg": f"a batch holds 1 to {cfg.max_batch} requests; got {len(body)} — "
                       f"split it into batches of at most {cfg.max_batch}"}])
        specs = [to_spec(item, ["body", i]) for i, item in enumerate(body)]
        ids: list[str] = []
        for spec in specs:
            try:
                ids.append(await submit(spec))
            except RedisUnavailable as exc:
                return JSONResponse({"detail": str(exc), "accepted_task_ids": ids},
                                    status_code=503,
                                    headers={"Retry-After": str(cfg.retry_after_s)})
        return {"task_ids": ids, "count": len(ids)}

    @app.get("/tasks/{task_id}", response_model=TaskStatus,
             summary="A task's status, and its result once finished (from Redis)")
    async def task_status(task_id: str) -> dict[str, Any]:
        return dict(await asyncio.to_thread(client.status, task_id))

    @app.get("/stats", summary="Tasks accepted, queued, running, completed, failed (Redis)")
    async def stats() -> dict[str, Any]:
        return {**await asyncio.to_thread(client.stats), "mode": "production"}

    @app.get("/health", summary="Liveness: Redis answers (needs no key)")
    async def health() -> JSONResponse:
        try:
            await asyncio.to_thread(client.ping)
        except RedisUnavailable as exc:
            return JSONResponse({"status": "unavailable", "mode": "production",
                                 "detail": str(exc)}, status_code=503)
        return JSONResponse({"status": "ok", "mode": "production", "model": client.model})

    return app


@contextlib.asynccontextmanager
async def open_production_api(ctx: Any, stack_settings: Any, *, app_name: str | None = None,
                              announce: Callable[[str], None] | None = None,
                              ) -> AsyncIterator[Any]:
    """Bring the stack up (:func:`~parallel_kit.production.stack.open_stack`) and yield a
    :class:`~parallel_kit.production.tasks.TaskClient` for the API; all stopped on exit.
    """
    from .production.stack import open_stack
    from .production.tasks import TaskClient, shared_epoch

    async with open_stack(ctx, stack_settings, app_name=app_name, announce=announce) as stack:
        client = TaskClient(stack.redis_url, stack.app.name, ctx.time_scale,
                            shared_epoch(stack.redis_url), ctx.model)
        try:
            yield client
        finally:
            client.close()



async def serve_production(sock: Any, ctx: Any, *, settings: ApiSettings | None = None,
                           serve_app: str | None = None,
                           announce: Callable[[str], None] | None = None) -> None:
    """Serve the production API on ``sock`` until stopped (``parallel-kit serve``).

    With ``serve_app`` (an API process only, in front of a stack that runs already — start
    several, restart them at will: tasks live in Redis) it needs ``ctx.stack.redis`` (or
    ``PARALLEL_KIT_REDIS_URL``); otherwise it brings the whole stack up first
    (:func:`open_production_api`) and stops it on exit.

    Raises:
        ConfigError: no Redis named for an API-only process; Redis unreachable or not Redis.
    """
    import os

    from .api import uvicorn_server
    from .errors import ConfigError
    from .production.celery_app import configure
    from .production.redis_server import REDIS_URL_ENV, check_redis
    from .production.tasks import TaskClient, shared_epoch

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
        try:
            await uvicorn_server(create_production_app(client, cfg)).serve(sockets=[sock])
        finally:
            client.close()
        return
    async with open_production_api(ctx, ctx.stack, announce=announce) as client:
        if announce:
            from .production.redis_server import mask_url

            shown = mask_url(client.redis_url)
            announce(f"the stack is up: Serve application {client.app_name!r}, Redis "
                     f"{shown} — more API processes: parallel-kit serve --mode "
                     f"production --workers 0 --redis {shown} --serve-app "
                     f"{client.app_name} (*** = the Redis password; the kit's own Redis "
                     f"lives only as long as this process — use --redis URL for a shared "
                     f"one)")
        await uvicorn_server(create_production_app(client, cfg),
                             log_level="info").serve(sockets=[sock])


@contextlib.asynccontextmanager
async def open_production_backend(servers: Any, options: Any) -> AsyncIterator[Any]:
    """The stack behind the *in-process* API (``ModeInfo.api_backend`` of ``production``).

    Each request is a Celery task through Redis and Ray Serve, and the call waits for its row —
    so the generic API (:func:`parallel_kit.api.create_app`, whose task queue lives in the API's
    memory) can front the stack too. ``parallel-kit serve --mode production`` uses
    :func:`create_production_app` instead, whose tasks live in Redis.
    """
    from .api_backends import ApiBackend
    from .modes.base import ModeContext
    from .modes.options import RayOptions, ServerOptions
    from .modes.ray_gpu import EpochClock
    from .production.tasks import row_from_body

    launched = (ServerOptions(launch="sim" if servers.kind == "sim" else "ollama",
                              profile=servers.profile or "seed")
                if options.start_own else ServerOptions())
    ctx = ModeContext(endpoints=list(servers.endpoints), backend=servers.kind,
                      time_scale=servers.time_scale, model=servers.model, gpus=options.servers,
                      servers=launched, ray=RayOptions(address=options.ray_address))
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
