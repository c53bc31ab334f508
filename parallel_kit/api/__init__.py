"""The kit's HTTP API (this package): the one app here (:func:`build_app`, in front of a
:class:`~parallel_kit.api.store.TaskStore`); ``store`` holds the seam and the in-memory store,
``backends`` runs its requests (the Redis + Celery store is ``production.api``'s).

The original demo's HTTP API (``parallel-kit serve``), in front of a task queue.

Endpoints (``docs/CONTRACTS.md``, "HTTP API"; OpenAPI docs at ``/docs``):

=========================  =====================================================================
``POST /inference``        ``{"prompt", "model"?, "options"?}`` → waits; the task body below
``POST /inference/async``  → ``{"task_id", "status": "queued", "message": "Task queued"}``
``POST /inference/batch``  ``[{"prompt"}, …]`` → ``{"task_ids": […], "count": n}``
``GET /tasks/{id}``        → ``{"task_id", "status", "result" | null, "error" | null}``
``GET /stats``             queued, running, completed, failed (and the bounds)
``GET /health``            ``{"status": "ok", …}``; the one path that needs no key
=========================  =====================================================================

``status`` is ``queued``, ``running``, ``completed`` or ``failed``; a task cancelled at shutdown
reads ``failed`` with an ``error`` that starts ``cancelled:``. ``result`` is the request's row
(:class:`~parallel_kit.records.RequestResult` as JSON: ``response`` text, model-time stamps,
token counts); a failed task has a row too, with ``ok: false``. ``POST /inference`` answers 200
with that body whether the request completed or failed: read ``status``.

Errors: bad input → 422 naming the field (``detail[].loc``) — a blank prompt and unknown fields
included (a typo such as a top-level ``num_predict`` would otherwise be dropped silently);
``num_predict`` above ``--max-num-predict`` (or unbounded, < 0) → 422 naming the limit; empty or
oversized batch → 422 saying the bound; a body whose bytes are not UTF-8 text → 422 saying
so; body too large → 413; a body that is not JSON (``Content-Type``) → 415; prompts held past
``--max-held-mb`` → 429 with ``Retry-After``; unknown task → 404; queue full → 503 with
``Retry-After``; missing/wrong key → 401. A request that runs past ``--max-request-s`` ends as a
failed task saying so.

Where tasks live: a :class:`~parallel_kit.api.store.TaskStore`. For :func:`create_app`, in the
API process's memory (:class:`~parallel_kit.api.store.MemoryTaskStore`, a
:class:`~parallel_kit.modes.taskqueue.TaskQueue`); a restart loses them, and ``/health`` and the
404 say so. The Redis-backed production mode (``production.api``, the same app) keeps them. ``/health`` reports ``ok``, ``degraded`` (some servers of a pool lost; they are probed and
taken back when they answer) or ``down`` (none left: HTTP 503).

Shutdown (Ctrl-C or SIGTERM): the listening socket closes, clients still waiting on
``POST /inference`` are answered 503 with their task id, accepted tasks get
``shutdown_timeout_s`` to finish and the rest end cancelled; a second Ctrl-C stops at once,
quietly.

Security: binds 127.0.0.1 unless ``--bind`` says otherwise (a warning when it listens beyond
loopback without a key); ``PARALLEL_KIT_API_KEY`` set → every path but ``/health`` wants
``Authorization: Bearer <key>`` (``/docs`` and ``/openapi.json`` included).

What sends the requests is an :class:`~parallel_kit.api.backends.ApiBackend`: any
``async (spec) -> RequestResult`` plus the clock its rows are on; the backends, one per mode,
live in :mod:`parallel_kit.api.backends` (this module is the app and its serving): ``--mode
async`` is one Ollama, ``--mode pool`` one Ollama per GPU behind
:class:`~parallel_kit.modes.pool.EndpointPool`, ``--mode ray`` one GPU actor per server
(:func:`~parallel_kit.modes.ray_gpu.open_ray_dispatcher`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from ..config import max_concurrent_from_env
from ..errors import ConfigError
from ..modes.taskqueue import (
    DEFAULT_MAX_FINISHED,
    DEFAULT_MAX_HELD_BYTES,
    DEFAULT_MAX_KEPT_BYTES,
    DEFAULT_MAX_QUEUED,
    DEFAULT_MAX_REQUEST_S,
    TooMuchHeld,
)
from ..records import RequestSpec
from ..system.netutil import listen, socket_url
from .backends import ApiBackend, open_api_backend  # the backends: their own module
from .store import MemoryTaskStore, TaskStore  # where tasks live: the seam, its memory store

__all__ = [
    "API_KEY_ENV",
    "ApiBackend",
    "ApiSettings",
    "bind_warning",
    "create_app",
    "open_api_backend",
    "serve_api",
    "uvicorn_server",
]

API_KEY_ENV = "PARALLEL_KIT_API_KEY"
_T = TypeVar("_T")
#: Paths that answer without a key: a load balancer's health check carries none.
_OPEN_PATHS = frozenset({"/health"})


@dataclass
class ApiSettings:
    """Bounds and switches of the API.

    Args:
        concurrency: requests sent to the backend at once (``MAX_CONCURRENT_REQUESTS``).
        max_queued: tasks that may wait at once; past it 503 with ``Retry-After``.
        max_finished: finished tasks kept for ``GET /tasks/{id}``, oldest forgotten first.
        max_batch: requests in one ``POST /inference/batch``.
        max_prompt_chars: characters in one prompt.
        max_body_bytes: bytes in one request body (413 past it).
        api_key: bearer key wanted on every path but ``/health`` (default
            ``PARALLEL_KIT_API_KEY``; empty = no key).
        retry_after_s: the ``Retry-After`` sent with 503 (whole seconds).
        shutdown_timeout_s: clock seconds to let accepted tasks finish at shutdown; the rest
            end cancelled.
        mode: the ``mode`` written into the rows (``async``, ``pool``, ``ray``).
        max_num_predict: the most tokens one request may ask for (``options.num_predict``);
            more, or an unbounded value (< 0), is refused with 422.
        max_held_bytes: prompt bytes queued and running tasks may hold (429 past it).
        max_kept_bytes: bytes of finished tasks kept for ``GET /tasks/{id}``.
        max_request_s: clock seconds one request may run before it fails.
    """

    concurrency: int = field(default_factory=max_concurrent_from_env)
    max_queued: int = DEFAULT_MAX_QUEUED
    max_finished: int = DEFAULT_MAX_FINISHED
    max_batch: int = 1_000
    max_prompt_chars: int = 100_000
    max_body_bytes: int = 8 * 1024 * 1024
    api_key: str | None = field(default_factory=lambda: os.environ.get(API_KEY_ENV) or None)
    retry_after_s: int = 1
    shutdown_timeout_s: float = 10.0
    mode: str = "async"
    max_num_predict: int = 4096
    max_held_bytes: int = DEFAULT_MAX_HELD_BYTES
    max_kept_bytes: int = DEFAULT_MAX_KEPT_BYTES
    max_request_s: float = DEFAULT_MAX_REQUEST_S

    def __post_init__(self) -> None:
        self.api_key = check_api_key(self.api_key)
        for name in ("concurrency", "max_queued", "max_finished", "max_batch",
                     "max_prompt_chars", "max_body_bytes", "retry_after_s", "max_num_predict",
                     "max_held_bytes", "max_kept_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"API setting {name} must be a whole number ≥ 1, got {value!r}")
        for name in ("max_request_s", "shutdown_timeout_s"):
            value = getattr(self, name)
            if not 0 < value <= 86_400:
                raise ConfigError(f"API setting {name} must be within 0..86400 s, got {value!r}")


# -- request and response bodies -----------------------------------------------------------

class InferenceRequest(BaseModel):
    """One prompt for the model. Unknown fields are refused (422), so a typo is not ignored."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"prompt": "What is Python?"}]},
                              extra="forbid")
    prompt: str = Field(min_length=1, pattern=r"\S",
                        description="the prompt text (not empty, not only white space)")
    model: str | None = Field(default=None, min_length=1,
                              description="model name; default the server's")
    options: dict[str, Any] | None = Field(
        default=None, description="Ollama options: num_predict, temperature, seed, …")

    @field_validator("prompt", "model", "options")
    @classmethod
    def _encodable(cls, value: Any, info: ValidationInfo) -> Any:
        return _check_body_text(value, str(info.field_name))


class TaskAccepted(BaseModel):
    task_id: str
    status: Literal["queued"]
    message: str


class TaskStatus(BaseModel):
    task_id: str
    status: Literal["queued", "running", "completed", "failed"]
    result: dict[str, Any] | None
    error: str | None


class BatchAccepted(BaseModel):
    task_ids: list[str]
    count: int


# -- the app -------------------------------------------------------------------------------

#: What each error answer means, for the OpenAPI schema (every answer a route can give is
#: documented there; ``tests/test_api_generated.py`` checks it with generated requests).
_ERROR_MEANINGS = {
    401: "the API key is missing or wrong (Authorization: Bearer KEY)",
    404: "no such task (never existed, forgotten, or lost with a restart)",
    410: "the task's result expired from the store",
    413: "the body, or one prompt's bytes, can never fit the limits",
    429: "the queued and running prompts hold too many bytes now; Retry-After says when",
    503: "the queue is full, the server is stopping, or a service behind it is down; "
         "Retry-After says when to try again",
}


def document_errors(app: FastAPI, *, task_codes: tuple[int, ...] = (404,),
                    everywhere: tuple[int, ...] = ()) -> None:
    """Add to the app's OpenAPI schema the error answers its routes give besides their own:
    401 (every route but the open ones), 413/429/503 (every POST: body and held-byte limits,
    a full or stopping queue), ``task_codes`` (``/tasks/{task_id}``), 503 (``/health``) and
    ``everywhere`` (e.g. 503 when the production stack's Redis is down)."""
    from fastapi.routing import APIRoute

    for route in app.routes:
        if not isinstance(route, APIRoute):
            continue
        codes = set(everywhere)
        if route.path not in _OPEN_PATHS:
            codes.add(401)
        if "POST" in (route.methods or ()):
            codes |= {413, 429, 503}
        if "{task_id}" in route.path:
            codes |= set(task_codes)
        if route.path == "/health":
            codes.add(503)
        for code in sorted(codes):
            route.responses.setdefault(code, {"description": _ERROR_MEANINGS[code]})
    app.openapi_schema = None  # built again, with these, when first asked for


def create_app(backend: ApiBackend, settings: ApiSettings | None = None) -> FastAPI:
    """The FastAPI app: an in-memory task queue
    (:class:`~parallel_kit.api.store.MemoryTaskStore`) in front of ``backend``.

    The queue lives from the app's start-up to its shutdown (ASGI lifespan), where accepted
    tasks get ``settings.shutdown_timeout_s`` to finish and the rest end cancelled.
    """
    cfg = settings or ApiSettings()
    return build_app(MemoryTaskStore(backend, cfg), cfg)


def build_app(store: TaskStore, cfg: ApiSettings) -> FastAPI:
    """The HTTP API (module docstring) in front of ``store``, the one place its routes, key,
    limits, error bodies and OpenAPI schema are defined; :func:`create_app` and
    :func:`parallel_kit.production.api.create_production_app` each build their store and call
    it. At shutdown (ASGI lifespan) waiting clients are answered 503 and the store gets
    ``cfg.shutdown_timeout_s`` (:meth:`TaskStore.shutdown`)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with store.open():
            try:
                yield
            finally:
                app.state.stopping.set()
                await store.shutdown(app.state.force, cfg.shutdown_timeout_s)

    app = FastAPI(title=store.docs.title, version="0.2.0", description=store.docs.description,
                  lifespan=lifespan)
    _prepare_app(app, cfg, store.errors)
    _add_task_routes(app, store, cfg)
    _add_service_routes(app, store)
    document_errors(app, task_codes=store.docs.task_codes, everywhere=store.docs.everywhere)
    return app


def _add_task_routes(app: FastAPI, store: TaskStore, cfg: ApiSettings) -> None:
    """The routes that accept tasks and read them back: ``POST /inference`` (waits),
    ``/inference/async``, ``/inference/batch`` and ``GET /tasks/{task_id}``."""

    async def accept(request: Request, specs: list[RequestSpec]) -> tuple[list[str],
                                                                          Exception | None]:
        if store.stopping_refusal is not None and request.app.state.stopping.is_set():
            raise HTTPException(503, detail=store.stopping_refusal,
                                headers={"Retry-After": str(cfg.retry_after_s)})
        return await store.submit(specs)

    async def accept_one(request: Request, body: InferenceRequest) -> str:
        ids, refused = await accept(request, [spec_from_body(body, ["body"], cfg)])
        if refused is not None:
            raise refused
        return ids[0]

    @app.post("/inference", response_model=TaskStatus,
              summary="Run one prompt and wait for the answer")
    async def inference(request: Request, body: InferenceRequest) -> Any:
        task_id = await accept_one(request, body)
        # Wait for the answer, or for shutdown: a waiting client is told, never left hanging.
        done = await unless_stopping(store.wait(task_id), request.app.state.stopping)
        if not done.done() or done.cancelled():
            return JSONResponse({
                "detail": f"the API is shutting down; task {task_id} was accepted but not "
                          f"finished — {store.after_stop(task_id)}", "task_id": task_id},
                status_code=503)
        answer = done.result() if done.exception() is None else None
        return answer if answer is not None else await store.status(task_id)

    @app.post("/inference/async", response_model=TaskAccepted,
              summary="Queue one prompt; poll GET /tasks/{task_id}")
    async def inference_async(request: Request, body: InferenceRequest) -> dict[str, Any]:
        task_id = await accept_one(request, body)
        return {"task_id": task_id, "status": "queued", "message": "Task queued"}

    @app.post("/inference/batch", response_model=BatchAccepted,
              summary="Queue several prompts in one call")
    async def inference_batch(request: Request, body: list[InferenceRequest]) -> Any:
        check_batch_size(len(body), cfg)
        ids, refused = await accept(request, [spec_from_body(item, ["body", i], cfg)
                                              for i, item in enumerate(body)])
        if refused is not None:  # the tasks before it stay accepted: say which
            return JSONResponse({"detail": str(refused), "accepted_task_ids": ids},
                                status_code=_refusal_code(refused, store.errors),
                                headers={"Retry-After": str(cfg.retry_after_s)})
        return {"task_ids": ids, "count": len(ids)}

    @app.get("/tasks/{task_id}", response_model=TaskStatus, summary=store.docs.tasks_summary)
    async def task_status(task_id: str) -> dict[str, Any]:
        return await store.status(task_id)


def _add_service_routes(app: FastAPI, store: TaskStore) -> None:
    """``GET /stats`` and ``GET /health`` (the one path that needs no key)."""

    @app.get("/stats", summary=store.docs.stats_summary)
    async def stats() -> dict[str, Any]:
        return await store.stats()

    @app.get("/health", summary=store.docs.health_summary, name=store.docs.health_name,
             response_model=store.docs.health_model)
    async def health(request: Request) -> Any:
        body, code = await store.health(request.app.state.stopping.is_set())
        return body if code == 200 else JSONResponse(body, status_code=code)


def _refusal_code(exc: Exception, errors: Mapping[type[Exception], int]) -> int:
    """The status that answers a refusal: 413 for a prompt that can never fit the held bytes,
    429 for one that fits later, otherwise the store's code for the exception's type."""
    if isinstance(exc, TooMuchHeld):
        return 413 if exc.never_fits else 429
    return next(errors[t] for t in type(exc).__mro__ if t in errors)


def _prepare_app(app: FastAPI, cfg: ApiSettings, errors: Mapping[type[Exception], int]) -> None:
    """The key and body-size guard, the stop events the server sets, and the answers to
    refusals: a store's ``errors`` (503 with ``Retry-After``, 404, 410) and
    :class:`~parallel_kit.modes.taskqueue.TooMuchHeld` (429 with ``Retry-After``, or 413 when
    the request can never fit)."""
    app.add_middleware(Guard, api_key=cfg.api_key, max_body_bytes=cfg.max_body_bytes)
    # Set by the server on the first (stopping) and second (force) Ctrl-C/SIGTERM.
    app.state.stopping = asyncio.Event()
    app.state.force = asyncio.Event()
    app.state.shutdown_timeout_s = cfg.shutdown_timeout_s

    async def refuse(request: Request, exc: Exception) -> JSONResponse:
        code = _refusal_code(exc, errors)
        return JSONResponse({"detail": str(exc)}, status_code=code,
                            headers={"Retry-After": str(cfg.retry_after_s)}
                            if code in (429, 503) else None)

    for exc_type in (*errors, TooMuchHeld):
        app.add_exception_handler(exc_type, refuse)


async def unless_stopping(awaitable: Awaitable[_T], stopping: asyncio.Event) -> asyncio.Future[_T]:
    """Wait for ``awaitable`` or for ``stopping`` to be set, whichever comes first: a waiting
    client is told of a shutdown, never left hanging. Returns the awaitable's future
    (cancelled when the shutdown came first)."""
    done = asyncio.ensure_future(awaitable)
    stop = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait((done, stop), return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
        if not done.done():
            done.cancel()
    return done


def spec_from_body(body: InferenceRequest, loc: list[Any], cfg: ApiSettings) -> RequestSpec:
    """The request a body asks for, or a 422 naming the field over its bound (``loc``: where
    the body sits in the request)."""
    if len(body.prompt) > cfg.max_prompt_chars:
        raise HTTPException(422, detail=[{
            "type": "string_too_long", "loc": [*loc, "prompt"],
            "msg": f"prompt has {len(body.prompt)} characters; the limit is "
                   f"{cfg.max_prompt_chars} — shorten it",
        }])
    options = dict(body.options or {})
    limit = check_num_predict(options.get("num_predict"), cfg.max_num_predict)
    if limit is not None:
        raise HTTPException(422, detail=[{
            "type": "num_predict_limit", "loc": [*loc, "options", "num_predict"],
            "msg": limit}])
    return RequestSpec(prompt=body.prompt, model=body.model, options=options)


def check_batch_size(n: int, cfg: ApiSettings) -> None:
    """A 422 unless a batch holds 1 to ``cfg.max_batch`` requests."""
    if not 1 <= n <= cfg.max_batch:
        raise HTTPException(422, detail=[{
            "type": "batch_size", "loc": ["body"],
            "msg": f"a batch holds 1 to {cfg.max_batch} requests; got {n} — "
                   f"split it into batches of at most {cfg.max_batch}",
        }])


def check_num_predict(value: Any, limit: int) -> str | None:
    """Why ``num_predict`` breaks the bound (``None`` when absent or within 1..``limit``).

    Ollama reads a negative ``num_predict`` as "no limit" (-1) or "fill the context" (-2)
    (``api/types.go``), so those are refused too: each would hold a slot indefinitely.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        return f"num_predict {value!r} must be a whole number of tokens within 1..{limit}"
    if value < 1 or value > limit:
        return (f"num_predict {value} is outside 1..{limit}, the limit of tokens one request "
                f"may ask for (serve --max-num-predict) — ask for fewer tokens")
    return None


def _is_json_type(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def check_api_key(key: str | None) -> str | None:
    """The API key as a client can send it: surrounding white space dropped (HTTP trims it
    from a header value, RFC 9110 §5.5, so a key that ends in a space never matched), ``None``
    when nothing is left.

    Raises:
        ConfigError: a character an HTTP header cannot carry (a control character such as a
            newline, or text that is not valid Unicode) — one line naming the position.
    """
    if key is None:
        return None
    key = key.strip(" \t\r\n")
    if not key:
        return None
    for i, ch in enumerate(key):
        if ord(ch) < 0x20 or ord(ch) == 0x7F or 0xD800 <= ord(ch) <= 0xDFFF:
            raise ConfigError(f"{API_KEY_ENV} holds a character an HTTP header cannot carry "
                              f"({ch!a} at position {i}) — use printable characters, e.g. "
                              f"`python -c 'import secrets; print(secrets.token_urlsafe())'`")
    return key


def _unencodable_text(body: bytes) -> str | None:
    """Why a JSON body cannot be served, when it holds a lone surrogate (``"\\ud800"``) or
    bytes that are not text in JSON's encoding (UTF-8, or UTF-16/32 as ``json.loads`` detects).

    Such a string parses as JSON but cannot be encoded again: the validation error that
    quotes it, the request to Ollama and the task record all failed with a 500 and a reset
    connection. Bytes that do not decode (``b"\\xff"``, Latin-1 text) got FastAPI's 400, which
    no route documents. Only bodies with a ``\\u`` escape of a surrogate are parsed here.
    """
    if not body.isascii():
        try:
            body.decode(json.detect_encoding(body))
        except UnicodeDecodeError as exc:
            return (f"the body is not UTF-8 text (byte {body[exc.start]:#04x} at position "
                    f"{exc.start}) — send the JSON encoded as UTF-8")
    lowered = body.lower()
    if b"\\ud8" not in lowered and b"\\ud9" not in lowered and b"\\uda" not in lowered \
            and b"\\udb" not in lowered and b"\\udc" not in lowered \
            and b"\\udd" not in lowered and b"\\ude" not in lowered \
            and b"\\udf" not in lowered:
        return None
    try:
        value = json.loads(body)
    except ValueError:
        return None  # not JSON: the route's own 422 says so
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return ("the body holds a lone surrogate (a JSON escape like \\ud800 without its "
                "pair), which is not valid Unicode text — remove it or send the whole pair")
    return None


def _check_body_text(value: Any, where: str) -> Any:
    """``value`` when every string in it can be encoded as UTF-8 (no lone surrogate from a
    JSON escape like ``\\ud800``); a ``ValueError`` (→ 422 naming the field) otherwise."""
    texts = [value] if isinstance(value, str) else (
        [str(k) for k in value] + [v for v in value.values() if isinstance(v, str)]
        if isinstance(value, dict) else [])
    for text in texts:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"{where} holds {text[exc.start]!a} at position {exc.start}, a "
                             f"lone surrogate that is not valid Unicode text — remove it or "
                             f"send the whole pair") from None
    return value


class Guard:
    """ASGI middleware: the bearer key, then the body size limit, before any route runs."""

    def __init__(self, app: Any, *, api_key: str | None, max_body_bytes: int) -> None:
        self.app = app
        self.api_key = api_key
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[Any]],
                       send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        if self.api_key and scope.get("path") not in _OPEN_PATHS:
            raw = next((v for k, v in scope.get("headers", []) if k.lower() == b"authorization"),
                       b"")
            scheme, _, token = bytes(raw).partition(b" ")
            # Bytes against bytes (the key as UTF-8, the header as sent: a non-ASCII key
            # matches); compare_digest: the time taken does not tell how much was right.
            if scheme.lower() != b"bearer" or not hmac.compare_digest(
                    token.strip(b" \t"), self.api_key.encode("utf-8")):
                await _send_json(send, 401, {
                    "detail": "missing or wrong API key — send 'Authorization: Bearer <key>' "
                              f"with the key the server was given in {API_KEY_ENV}"},
                    {"www-authenticate": "Bearer"})
                return
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            await _send_json(send, 413, {"detail": self._too_large(int(length))})
            return
        if scope.get("method") in ("POST", "PUT", "PATCH"):
            given_type = headers.get("content-type")
            if given_type is not None and not _is_json_type(given_type):
                await _send_json(send, 415, {
                    "detail": f"the body was sent as {given_type!r}; this API reads JSON — "
                              f"send it with 'Content-Type: application/json'"})
                return
            # Read the body here, up to the bound, so a chunked upload cannot exceed it either.
            chunks: list[bytes] = []
            size = 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self.max_body_bytes:
                    await _send_json(send, 413, {"detail": self._too_large(size, partial=True)})
                    return
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
            body = b"".join(chunks)
            problem = _unencodable_text(body)
            if problem:
                await _send_json(send, 422, {"detail": problem})
                return
            replayed = False

            async def replay() -> Any:
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            await self.app(scope, replay, send)
            return
        await self.app(scope, receive, send)

    def _too_large(self, size: int, partial: bool = False) -> str:
        got = f"more than {self.max_body_bytes}" if partial else str(size)
        return (f"request body is {got} bytes; the limit is {self.max_body_bytes} bytes — "
                f"send fewer or shorter prompts")


async def _send_json(send: Callable[[Any], Awaitable[None]], status: int, body: dict[str, Any],
                     extra_headers: dict[str, str] | None = None) -> None:
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(payload)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in (extra_headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


# -- serving -------------------------------------------------------------------------------

def uvicorn_server(app: Any, log_level: str = "warning") -> Any:
    """A uvicorn server for ``app`` whose shutdown is bounded and quiet (see the module
    docstring, "Shutdown"); ``.signals`` counts the Ctrl-C/SIGTERM it received."""
    import uvicorn

    class ApiServer(uvicorn.Server):
        """uvicorn, but a signal tells the app (waiting clients are answered at once) and is
        not raised again after the server stopped — uvicorn re-raises captured signals, which
        turned each Ctrl-C into a KeyboardInterrupt (and a page of tracebacks) afterwards."""

        _loop: asyncio.AbstractEventLoop | None = None
        signals = 0

        async def serve(self, sockets: list[Any] | None = None) -> None:
            self._loop = asyncio.get_running_loop()
            await super().serve(sockets=sockets)

        def handle_exit(self, sig: int, frame: Any) -> None:
            # The second signal cuts the wait for accepted tasks short (they end cancelled);
            # uvicorn's own force_exit is not used: it skips the app's shutdown, leaving
            # tasks to be torn down by asyncio.run with a page of tracebacks.
            self.signals += 1
            event = "force" if self.should_exit else "stopping"
            self.should_exit = True
            target = getattr(app.state, event, None) if hasattr(app, "state") else None
            if target is not None and self._loop is not None:
                self._loop.call_soon_threadsafe(target.set)

    timeout = getattr(getattr(app, "state", None), "shutdown_timeout_s", None)
    return ApiServer(uvicorn.Config(app, log_level=log_level, lifespan="on", access_log=False,
                                    timeout_graceful_shutdown=(int(timeout) + 1 if timeout
                                                               else None)))


@contextlib.asynccontextmanager
async def serve_api(app: Any, *, bind: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Run ``app`` with uvicorn in the current event loop; yields its URL (tests, notebooks).

    >>> async with open_api_backend(time_scale=0.02) as b, serve_api(create_app(b)) as url:
    ...     ...
    """
    sock = listen(bind, port, what="API")
    server = uvicorn_server(app)
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()  # raises what stopped the start-up
                raise ConfigError("the API server stopped during start-up — see the log above")
            await asyncio.sleep(0.01)
        yield socket_url(sock)
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError, SystemExit):
            await task
        sock.close()


def _is_loopback(bind: str) -> bool:
    if bind in ("localhost", ""):
        return bind == "localhost"
    try:
        return ipaddress.ip_address(bind).is_loopback
    except ValueError:
        return False


def bind_warning(bind: str, api_key: str | None) -> str | None:
    """The warning for listening beyond this machine without a key (None when safe)."""
    if api_key or _is_loopback(bind):
        return None
    where = "every interface" if bind in ("0.0.0.0", "::", "") else bind
    return (f"warning: the API listens on {where} without a key — anyone who can reach this "
            f"machine can use your Ollama; set {API_KEY_ENV} or bind 127.0.0.1")
