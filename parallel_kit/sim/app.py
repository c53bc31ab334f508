"""Ollama's HTTP API (native and OpenAI-compatible) in front of an :class:`~.protocol.Engine`.

A plain ASGI application, no framework: the streaming path runs once per token for every
stream, so it only formats one short JSON line and sends it. The route table is Ollama's
(``GenerateRoutes`` in https://github.com/ollama/ollama/blob/main/server/routes.go), methods
included: a known path with another method is 405 (gin's ``HandleMethodNotAllowed``), an unknown
path 404. Routes the simulator answers:

=========================================  =============================================
``GET|HEAD /``                             ``Ollama is running``
``GET|HEAD /api/version``                  ``{"version": …}``
``GET|HEAD /api/tags``, ``GET /api/ps``    models on disk / loaded
``POST /api/generate``, ``/api/chat``      NDJSON stream (default) or one object
``POST /api/show``                         model details and capabilities
``POST /v1/chat/completions``              OpenAI chat, SSE when ``stream``
``POST /v1/completions``                   OpenAI completions, SSE when ``stream``
``GET /v1/models``, ``/v1/models/{name}``  OpenAI model list / one model
``GET /sim/stats``                         the simulator's counters (not Ollama's)
=========================================  =============================================

Ollama's other routes (pull, push, create, copy, delete, blobs, embed, embeddings,
``/v1/embeddings``, ``/v1/responses``, ``/v1/messages``, images, audio, sign-in) are registered
with their methods and answer 501 ``{"error": "… is not modelled by the simulated Ollama"}``.

A client that disconnects cancels its request (Ollama logs 499 ``request canceled``; the
client is gone, so nothing is sent) and frees its slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from datetime import datetime, timezone
from typing import Any, cast

from ..config import duration_from_body
from .options import (
    BodyError,
    OptionError,
    check_fields,
    go_quote,
    json_kind,
    runner_options,
)
from .profiles import stable_hash
from .protocol import Done, Engine, EngineError, GenerateRequest, ModelInfo

__all__ = ["OLLAMA_VERSION", "OllamaApp"]

#: The Ollama version the simulator reports in ``/api/version``. Its behaviour follows the
#: ollama/ollama sources named in docs/SIMULATOR_FIDELITY.md (the 0.30 series).
OLLAMA_VERSION = "0.30.6"

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_JSON = b"application/json; charset=utf-8"
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


class _BadRequest(Exception):
    """400 with Ollama's ``{"error": message}``."""


class _ClientGone(Exception):
    """The client disconnected before its request body arrived."""


_now_cache: list[Any] = [0, ""]


def _now() -> str:
    """RFC 3339 UTC time with microseconds (Ollama's ``created_at``), cheap per token."""
    t = time.time()
    sec = int(t)
    if sec != _now_cache[0]:
        _now_cache[0], _now_cache[1] = sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    return f"{_now_cache[1]}.{int((t - sec) * 1e6):06d}Z"


async def _send_bytes(send: Send, status: int, body: bytes, content_type: bytes,
                      head: bool = False) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": b"" if head else body})


async def _send_json(send: Send, status: int, obj: Any) -> None:
    await _send_bytes(send, status, _dumps(obj).encode(), _JSON)


def _openai_error(status: int, message: str) -> dict[str, Any]:
    kind = {400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def _details(info: ModelInfo) -> dict[str, Any]:
    return {"parent_model": "", "format": "gguf", "family": info.family,
            "families": [info.family], "parameter_size": info.parameter_size,
            "quantization_level": info.quantization_level}


def _text_of(content: Any) -> str:
    """Message content: a string, or OpenAI's list of parts (text parts joined)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


# -- formats: how pieces and the final numbers look on the wire --------------------------
class _Format:
    """One API's wire format. ``openai`` formats report errors in OpenAI's shape."""

    content_type = b"application/x-ndjson"
    openai = False

    def __init__(self, model: str) -> None:
        self.model = model
        self.model_json = _dumps(model)

    def chunk(self, piece: str) -> bytes:
        raise NotImplementedError

    def last(self, done: Done) -> bytes:
        raise NotImplementedError

    def whole(self, text: str, done: Done) -> dict[str, Any]:
        raise NotImplementedError

    def error_line(self, message: str) -> bytes:
        return (_dumps({"error": message}) + "\n").encode()

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        return {"error": message}


def _stats(done: Done) -> dict[str, Any]:
    return {"done_reason": done.done_reason, "total_duration": done.total_duration,
            "load_duration": done.load_duration, "prompt_eval_count": done.prompt_eval_count,
            "prompt_eval_duration": done.prompt_eval_duration, "eval_count": done.eval_count,
            "eval_duration": done.eval_duration}


class _GenerateFormat(_Format):
    def __init__(self, model: str, context_seed: int) -> None:
        super().__init__(model)
        self.context_seed = context_seed

    def chunk(self, piece: str) -> bytes:
        return (f'{{"model":{self.model_json},"created_at":"{_now()}","response":'
                f'{_dumps(piece)},"done":false}}\n').encode()

    def _final(self, text: str, done: Done) -> dict[str, Any]:
        n = done.prompt_eval_count + done.eval_count
        # The token ids of prompt and answer (Ollama's deprecated ``context``), made up.
        context = [(self.context_seed + 7919 * i) % 128000 for i in range(n)]
        return {"model": self.model, "created_at": _now(), "response": text, "done": True,
                **_stats(done), "context": context}

    def last(self, done: Done) -> bytes:
        return (_dumps(self._final("", done)) + "\n").encode()

    def whole(self, text: str, done: Done) -> dict[str, Any]:
        return self._final(text, done)


class _ChatFormat(_Format):
    def chunk(self, piece: str) -> bytes:
        return (f'{{"model":{self.model_json},"created_at":"{_now()}","message":'
                f'{{"role":"assistant","content":{_dumps(piece)}}},"done":false}}\n').encode()

    def whole(self, text: str, done: Done) -> dict[str, Any]:
        return {"model": self.model, "created_at": _now(),
                "message": {"role": "assistant", "content": text}, "done": True,
                **_stats(done)}

    def last(self, done: Done) -> bytes:
        return (_dumps(self.whole("", done)) + "\n").encode()


class _OpenAIFormat(_Format):
    content_type = b"text/event-stream"
    openai = True
    _ids = 0

    def __init__(self, model: str, *, chat: bool, include_usage: bool) -> None:
        super().__init__(model)
        _OpenAIFormat._ids += 1
        self.chat = chat
        self.include_usage = include_usage
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{_OpenAIFormat._ids}"
        self.created = int(time.time())
        self.object = "chat.completion" if chat else "text_completion"
        head = {"id": self.id, "object": self.object + (".chunk" if chat else ""),
                "created": self.created, "model": model, "system_fingerprint": "fp_ollama"}
        self._head = _dumps(head)[:-1]  # without the closing brace: choices follow

    def chunk(self, piece: str) -> bytes:
        if self.chat:
            choice = ('{"index":0,"delta":{"role":"assistant","content":'
                      f'{_dumps(piece)}}},"finish_reason":null}}')
        else:
            choice = f'{{"text":{_dumps(piece)},"index":0,"finish_reason":null}}'
        return f'data: {self._head},"choices":[{choice}]}}\n\n'.encode()

    @staticmethod
    def _usage(done: Done) -> dict[str, int]:
        return {"prompt_tokens": done.prompt_eval_count, "completion_tokens": done.eval_count,
                "total_tokens": done.prompt_eval_count + done.eval_count}

    def last(self, done: Done) -> bytes:
        reason = "length" if done.done_reason == "length" else "stop"
        if self.chat:
            choice: dict[str, Any] = {"index": 0, "delta": {"role": "assistant", "content": ""},
                                      "finish_reason": reason}
        else:
            choice = {"text": "", "index": 0, "finish_reason": reason}
        out = f'data: {self._head},"choices":[{_dumps(choice)}]}}\n\n'
        if self.include_usage:
            out += (f'data: {self._head},"choices":[],'
                    f'"usage":{_dumps(self._usage(done))}}}\n\n')
        return (out + "data: [DONE]\n\n").encode()

    def whole(self, text: str, done: Done) -> dict[str, Any]:
        reason = "length" if done.done_reason == "length" else "stop"
        if self.chat:
            choice: dict[str, Any] = {"index": 0,
                                      "message": {"role": "assistant", "content": text},
                                      "finish_reason": reason}
        else:
            choice = {"text": text, "index": 0, "finish_reason": reason}
        return {"id": self.id, "object": self.object, "created": self.created,
                "model": self.model, "system_fingerprint": "fp_ollama", "choices": [choice],
                "usage": self._usage(done)}

    def error_line(self, message: str) -> bytes:
        return f"data: {_dumps(_openai_error(500, message))}\n\n".encode()

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        return _openai_error(status, message)


# -- request fields (Go structs of api/types.go and openai/openai.go) ----------------------
_GENERATE_FIELDS = {"model": "string", "prompt": "string", "suffix": "string",
                    "system": "string", "template": "string", "context": "ints",
                    "stream": "bool", "raw": "bool", "images": "strings", "options": "object",
                    "truncate": "bool", "shift": "bool"}
_CHAT_FIELDS = {"model": "string", "messages": "messages", "stream": "bool",
                "options": "object", "truncate": "bool", "shift": "bool"}
_OPENAI_CHAT_FIELDS = {"model": "string", "messages": "messages", "stream": "bool",
                       "stream_options": "object", "max_tokens": "int", "seed": "int",
                       "temperature": "number", "frequency_penalty": "number",
                       "presence_penalty": "number", "top_p": "number",
                       "response_format": "object", "reasoning": "object",
                       "reasoning_effort": "string"}
_OPENAI_COMPLETION_FIELDS = {"model": "string", "prompt": "string", "max_tokens": "int",
                             "seed": "int", "stream": "bool", "stream_options": "object",
                             "temperature": "number", "top_p": "number",
                             "frequency_penalty": "number", "presence_penalty": "number",
                             "suffix": "string"}


#: Go's ``%T`` of a decoded JSON value, by the value's JSON kind (:func:`~.options.json_kind`).
_GO_TYPE_OF_KIND = {"bool": "bool", "number": "float64", "string": "string",
                    "array": "[]interface {}", "object": "map[string]interface {}",
                    "null": "<nil>"}


def _go_type(value: Any) -> str:
    """Go's ``%T`` of a decoded JSON value."""
    return _GO_TYPE_OF_KIND[json_kind(value)]


def _check_format(value: Any) -> None:
    """``format``: empty, ``"json"`` or a JSON schema object, else the runner's error
    (llm/server.go ``Completion``: ``invalid format: %q; expected "json" or a valid JSON
    Schema object``, a 500 before the answer starts). A valid one shapes the simulated answer
    (``sim/formats.py``)."""
    if value is None or value in ("", "json") or isinstance(value, dict):
        return
    raw = json.dumps(value, separators=(",", ":"))
    raise OptionError(f"invalid format: {go_quote(raw)}; expected \"json\" or a valid JSON "
                      f"Schema object")


def _openai_format(response_format: Any) -> Any:
    """``response_format`` as openai/openai.go turns it into ``format``: ``json_object`` →
    ``"json"``, ``json_schema`` → its ``schema``; anything else → free text."""
    if not isinstance(response_format, dict):
        return None
    kind = response_format.get("type")
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        return schema if isinstance(schema, dict) else "json"
    return None


# -- the application -----------------------------------------------------------------------
class OllamaApp:
    """The ASGI app. ``on_completed`` is called after each generation is fully answered (the
    server counts them for ``stop_after``); ``extra_stats`` adds to ``/sim/stats``."""

    def __init__(self, engine: Engine, *, on_completed: Callable[[], None] | None = None,
                 extra_stats: Callable[[], dict[str, Any]] | None = None) -> None:
        self.engine = engine
        self.on_completed = on_completed
        self.extra_stats = extra_stats
        Handler = Callable[[Scope, Receive, Send], Awaitable[None]]
        modelled: dict[tuple[str, str], Handler] = {
            ("GET", "/"): self._root, ("HEAD", "/"): self._root,
            ("GET", "/api/version"): self._version, ("HEAD", "/api/version"): self._version,
            ("GET", "/api/tags"): self._tags, ("HEAD", "/api/tags"): self._tags,
            ("GET", "/api/ps"): self._ps,
            ("POST", "/api/generate"): self._generate, ("POST", "/api/chat"): self._chat,
            ("POST", "/api/show"): self._show,
            ("POST", "/v1/chat/completions"): self._openai_chat,
            ("POST", "/v1/completions"): self._openai_completions,
            ("GET", "/v1/models"): self._openai_models,
            ("GET", "/v1/models/:model"): self._openai_model,
            ("GET", "/sim/stats"): self._sim_stats,
        }
        # Registered by Ollama (server/routes.go GenerateRoutes) but not modelled here.
        others = [("GET", "/api/status"), ("POST", "/api/pull"), ("POST", "/api/push"),
                  ("DELETE", "/api/delete"), ("POST", "/api/me"), ("POST", "/api/signout"),
                  ("DELETE", "/api/user/keys/:encodedKey"), ("POST", "/api/create"),
                  ("POST", "/api/blobs/:digest"), ("HEAD", "/api/blobs/:digest"),
                  ("POST", "/api/copy"), ("POST", "/api/experimental/web_search"),
                  ("POST", "/api/experimental/web_fetch"), ("POST", "/api/embed"),
                  ("POST", "/api/embeddings"), ("POST", "/v1/embeddings"),
                  ("POST", "/v1/responses"), ("POST", "/v1/images/generations"),
                  ("POST", "/v1/images/edits"), ("POST", "/v1/audio/transcriptions"),
                  ("POST", "/v1/messages")]
        self._routes: dict[tuple[str, str], Handler] = {
            **{route: self._not_modelled for route in others}, **modelled}

    def _match(self, method: str, path: str) -> tuple[Any, bool, dict[str, str]]:
        """(handler or None, whether the path is known with another method, path params)."""
        parts = path.split("/")
        path_known = False
        for (m, pattern), handler in self._routes.items():
            pat = pattern.split("/")
            if len(pat) != len(parts):
                continue
            params: dict[str, str] = {}
            for want, got in zip(pat, parts, strict=True):
                if want.startswith(":") and got:
                    params[want[1:]] = got
                elif want != got:
                    break
            else:
                if m == method:
                    return handler, True, params
                path_known = True
        return None, path_known, {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"].rstrip("/") or "/"
        handler, known, params = self._match(scope["method"], path)
        if handler is None:
            # Gin's default answers: a known path with another method, an unknown path.
            if known:
                await _send_bytes(send, 405, b"405 method not allowed", b"text/plain")
            else:
                await _send_bytes(send, 404, b"404 page not found", b"text/plain")
            return
        scope["path_params"] = params
        try:
            await handler(scope, receive, send)
        except _ClientGone:
            return

    async def _not_modelled(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _send_json(send, 501, {"error": f"{scope['method']} {scope['path']} is an Ollama "
                                              f"route the simulated Ollama does not model"})

    # -- simple routes -------------------------------------------------------------------
    async def _root(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _send_bytes(send, 200, b"Ollama is running", b"text/plain; charset=utf-8",
                          head=scope["method"] == "HEAD")

    async def _version(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _send_bytes(send, 200, _dumps({"version": OLLAMA_VERSION}).encode(), _JSON,
                          head=scope["method"] == "HEAD")

    async def _tags(self, scope: Scope, receive: Receive, send: Send) -> None:
        models = [{"name": m.name, "model": m.name, "modified_at": m.modified_at,
                   "size": m.size, "digest": m.digest, "details": _details(m)}
                  for m in self.engine.models()]
        await _send_bytes(send, 200, _dumps({"models": models}).encode(), _JSON,
                          head=scope["method"] == "HEAD")

    async def _ps(self, scope: Scope, receive: Receive, send: Send) -> None:
        far = "2318-08-22T00:00:00Z"  # Ollama shows a far date for "forever"
        models = [{"name": r.info.name, "model": r.info.name, "size": r.size or r.info.size,
                   "digest": r.info.digest, "details": _details(r.info),
                   "expires_at": r.expires_at.isoformat() if r.expires_at else far,
                   "size_vram": r.size_vram,
                   "context_length": r.context_length or r.info.context_length}
                  for r in self.engine.running()]
        await _send_json(send, 200, {"models": models})

    async def _openai_models(self, scope: Scope, receive: Receive, send: Send) -> None:
        data = [{"id": m.name, "object": "model", "created": 1727265600, "owned_by": "library"}
                for m in self.engine.models()]
        await _send_json(send, 200, {"object": "list", "data": data})

    async def _openai_model(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``GET /v1/models/{model}`` (openai.ToModel: id, created, owned_by the namespace)."""
        name = scope["path_params"].get("model", "")
        try:
            served = self.engine.resolve(name)
        except EngineError:
            await _send_json(send, 404, _openai_error(404, f"model '{name}' not found"))
            return
        info = next(m for m in self.engine.models() if m.name == served)
        created = int(datetime.strptime(info.modified_at, "%Y-%m-%dT%H:%M:%SZ")
                      .replace(tzinfo=timezone.utc).timestamp())
        await _send_json(send, 200, {"id": name, "object": "model", "created": created,
                                     "owned_by": "library"})

    async def _sim_stats(self, scope: Scope, receive: Receive, send: Send) -> None:
        stats = self.engine.stats()
        if self.extra_stats is not None:
            stats.update(self.extra_stats())
        await _send_json(send, 200, stats)

    async def _show(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            body = await self._body(receive)
            name = self._model(body, key="model", fallback="name")
            info = next(m for m in self.engine.models() if m.name == self.engine.resolve(name))
        except (_BadRequest, EngineError) as exc:
            await self._error(send, exc, openai=False)
            return
        await _send_json(send, 200, {
            "modelfile": f"FROM {info.name}\n", "parameters": "", "template": "{{ .Prompt }}",
            "details": _details(info), "capabilities": self._capabilities(info.name),
            "model_info": {"general.architecture": info.family,
                           f"{info.family}.context_length": info.context_length},
        })

    # -- parsing -------------------------------------------------------------------------
    @staticmethod
    async def _body(receive: Receive) -> dict[str, Any]:
        chunks = []
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                raise _ClientGone
            chunks.append(msg.get("body", b""))
            if not msg.get("more_body", False):
                break
        raw = b"".join(chunks)
        if not raw.strip():
            raise _BadRequest("missing request body")
        try:
            body = json.loads(raw)
        except ValueError as exc:  # also bad UTF-8
            raise _BadRequest(f"invalid JSON in request body: {exc}") from None
        if not isinstance(body, dict):
            raise _BadRequest("request body must be a JSON object")
        return body

    def _capabilities(self, name: str) -> list[str]:
        caps = getattr(self.engine, "capabilities", None)
        return list(caps(name)) if caps is not None else ["completion"]

    def _check_capabilities(self, model: str, served: str, *, think: Any = None,
                            tools: bool = False, suffix: bool = False) -> None:
        """Ollama's capability checks (server/routes.go): ``think`` on a model without
        thinking is 400 ``"name" does not support thinking``; tools or a suffix it lacks are
        400 ``<full name> does not support tools`` (``Model.CheckCapabilities``)."""
        caps = self._capabilities(served)
        if think not in (None, False, "", "none") and "thinking" not in caps:
            raise _BadRequest(f"{go_quote(model)} does not support thinking")
        missing = [cap for cap, wanted in (("tools", tools), ("insert", suffix))
                   if wanted and cap not in caps]
        if missing:
            full = served if "/" in served else f"library/{served}"
            raise _BadRequest(f"registry.ollama.ai/{full} does not support "
                              f"{' '.join(missing)}")

    @staticmethod
    def _model(body: dict[str, Any], key: str = "model", fallback: str | None = None) -> str:
        model = body.get(key) or (body.get(fallback) if fallback else None)
        if not model:
            raise _BadRequest("model is required")
        if not isinstance(model, str):
            raise _BadRequest(f"model must be a string, got {model!r}")
        return model

    @staticmethod
    def _keep_alive(body: dict[str, Any]) -> float | None:
        """``keep_alive`` as ``api.Duration`` decodes it; a bad one is 400 with Go's text."""
        value = body.get("keep_alive")
        if value is None:
            return None
        try:
            return duration_from_body(value)
        except ValueError as exc:
            raise _BadRequest(str(exc)) from None

    async def _error(self, send: Send, exc: Exception, *, openai: bool) -> None:
        if isinstance(exc, EngineError):
            status, message = exc.status, exc.message
        elif isinstance(exc, OptionError):
            status, message = 500, str(exc)
        else:
            status, message = 400, str(exc)
        await _send_json(send, status, _openai_error(status, message) if openai
                         else {"error": message})

    # -- native generation ---------------------------------------------------------------
    async def _generate(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._native(receive, send, chat=False)

    async def _chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._native(receive, send, chat=True)

    async def _native(self, receive: Receive, send: Send, *, chat: bool) -> None:
        """``GenerateHandler`` / ``ChatHandler``, checks in Ollama's order: the body decodes
        (400), the model exists (404), an empty prompt with ``keep_alive`` 0 unloads, ``raw``
        conflicts (400), capabilities (400), options (500), then the model is scheduled (an
        empty prompt only loads it) and the answer streams."""
        try:
            body = await self._body(receive)
            check_fields(body, "ChatRequest" if chat else "GenerateRequest",
                         _CHAT_FIELDS if chat else _GENERATE_FIELDS)
            keep_alive = self._keep_alive(body)
            model = self._model(body)
            name = self.engine.resolve(model)
            messages: list[dict[str, Any]] = []
            system = ""
            if chat:
                messages = body.get("messages") or []
                for m in messages:
                    if not isinstance(m, dict):
                        raise BodyError("json: cannot unmarshal " + json_kind(m) + " into Go struct "
                                        "field ChatRequest.messages of type api.Message")
                    content = m.get("content")
                    if content is not None and not isinstance(content, str):
                        raise BodyError("json: cannot unmarshal " + json_kind(content) + " into Go "
                                        "struct field Message.messages.content of type string")
                prompt = "\n".join(str(m.get("content") or "") for m in messages)
                empty = not messages
            else:
                prompt = body.get("prompt") or ""
                system = body.get("system") or ""
                empty = not prompt
            if empty and keep_alive == 0:
                await self.engine.unload(name)
                await self._send_empty(send, model, chat, "unload")
                return
            if not chat and body.get("raw") and (body.get("template") or system
                                                 or body.get("context")):
                raise _BadRequest("raw mode does not support template, system, or context")
            self._check_capabilities(model, name, think=body.get("think"),
                                     tools=chat and bool(body.get("tools")),
                                     suffix=not chat and bool(body.get("suffix")))
            options = runner_options(body.get("options") or {})
            if empty:
                await self.engine.load(name, keep_alive, options)
                await self._send_empty(send, model, chat, "load")
                return
            _check_format(body.get("format"))
        except (_BadRequest, BodyError, OptionError, EngineError) as exc:
            await self._error(send, exc, openai=False)
            return
        if system:
            prompt = f"{system}\n{prompt}"
        num_predict, seed = options.get("num_predict"), options.get("seed")
        request = GenerateRequest(model=name, prompt=prompt, num_predict=num_predict, seed=seed,
                                  keep_alive_s=keep_alive, messages=messages or None,
                                  options=options, format=body.get("format") or None)
        fmt: _Format = (_ChatFormat(model) if chat
                        else _GenerateFormat(model, stable_hash(prompt, seed) & 0xFFFF))
        await self._run(receive, send, request, fmt, stream=body.get("stream") is not False)

    @staticmethod
    async def _send_empty(send: Send, model: str, chat: bool, reason: str) -> None:
        obj: dict[str, Any] = {"model": model, "created_at": _now(), "done": True,
                               "done_reason": reason}
        if chat:
            obj["message"] = {"role": "assistant", "content": ""}
        else:
            obj["response"] = ""
        await _send_json(send, 200, obj)

    # -- OpenAI-compatible generation ----------------------------------------------------
    async def _openai_chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._openai(receive, send, chat=True)

    async def _openai_completions(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._openai(receive, send, chat=False)

    async def _openai(self, receive: Receive, send: Send, *, chat: bool) -> None:
        """The ``/v1`` middleware (openai/openai.go ``FromChatRequest``,
        ``FromCompleteRequest``): ``max_tokens`` becomes ``num_predict``; fields the Go
        struct does not have — ``max_completion_tokens`` among them — are ignored."""
        try:
            body = await self._body(receive)
            if chat:
                check_fields(body, "ChatCompletionRequest", _OPENAI_CHAT_FIELDS)
            else:
                check_fields(body, "CompletionRequest", _OPENAI_COMPLETION_FIELDS)
            model = self._model(body)
            think: Any = None
            if chat:
                messages = body.get("messages")
                if not isinstance(messages, list) or not messages:
                    raise _BadRequest("messages must be a non-empty list")
                for m in messages:
                    content = m.get("content") if isinstance(m, dict) else None
                    if not isinstance(content, (str, list)) and not (
                            isinstance(m, dict) and m.get("tool_calls")):
                        raise _BadRequest(f"invalid message content type: "
                                          f"{_go_type(content)}")
                prompt = "\n".join(_text_of(m.get("content")) for m in messages
                                   if isinstance(m, dict))
                effort = (body.get("reasoning") or {}).get("effort") if isinstance(
                    body.get("reasoning"), dict) else body.get("reasoning_effort")
                if effort:
                    if effort not in ("high", "medium", "low", "none"):
                        raise _BadRequest(f"invalid reasoning value: '{effort}' (must be "
                                          f'"high", "medium", "low", or "none")')
                    think = effort != "none"
            else:
                prompt = body.get("prompt") or ""
                stop = body.get("stop")
                if isinstance(stop, list):
                    for item in stop:
                        if not isinstance(item, str):
                            raise _BadRequest(f"invalid type for 'stop' field: {_go_type(item)}")
            stream = body.get("stream") is True
            usage_opt = body.get("stream_options") or {}
            include_usage = stream and bool(usage_opt.get("include_usage"))
            name = self.engine.resolve(model)
            self._check_capabilities(model, name, think=think,
                                     tools=chat and bool(body.get("tools")))
            # openai.go: stop, max_tokens → num_predict, temperature (default 1), seed,
            # penalties, top_p (default 1) become native options.
            raw_opts: dict[str, Any] = {
                "num_predict": body.get("max_tokens"), "seed": body.get("seed"),
                "temperature": 1.0 if body.get("temperature") is None else body["temperature"],
                "top_p": body.get("top_p") or 1.0,
                "frequency_penalty": body.get("frequency_penalty"),
                "presence_penalty": body.get("presence_penalty")}
            stop = body.get("stop")
            if isinstance(stop, str):
                raw_opts["stop"] = [stop]
            elif isinstance(stop, list):
                raw_opts["stop"] = [s for s in stop if isinstance(s, str)]
            options = runner_options(raw_opts)
        except (_BadRequest, BodyError, OptionError, EngineError) as exc:
            await self._error(send, exc, openai=True)
            return
        request = GenerateRequest(model=name, prompt=prompt,
                                  num_predict=options.get("num_predict"),
                                  seed=options.get("seed"),
                                  messages=body.get("messages") if chat else None,
                                  options=options,
                                  format=_openai_format(body.get("response_format")))
        fmt = _OpenAIFormat(model, chat=chat, include_usage=include_usage)
        await self._run(receive, send, request, fmt, stream=stream)

    # -- the generation itself -----------------------------------------------------------
    async def _run(self, receive: Receive, send: Send, request: GenerateRequest, fmt: _Format,
                   *, stream: bool) -> None:
        """Answer one generation; a client that disconnects cancels it (Ollama's 499)."""
        task = asyncio.current_task()
        gone = False
        watch = asyncio.ensure_future(receive())

        def on_message(fut: asyncio.Future[Message]) -> None:
            nonlocal gone
            if fut.cancelled() or fut.exception() is not None:
                return
            if fut.result().get("type") == "http.disconnect" and task is not None:
                gone = True
                task.cancel()

        watch.add_done_callback(on_message)
        try:
            async with contextlib.aclosing(cast(AsyncGenerator[Any, None],
                                               self.engine.generate(request))) as pieces:
                try:
                    item = await pieces.__anext__()
                except EngineError as exc:
                    await self._error(send, exc, openai=fmt.openai)
                    return
                if stream:
                    await self._stream(send, pieces, item, fmt)
                else:
                    parts: list[str] = []
                    while not isinstance(item, Done):
                        parts.append(item)
                        item = await pieces.__anext__()
                    await _send_json(send, 200, fmt.whole("".join(parts), item))
            if self.on_completed is not None:
                self.on_completed()
        except asyncio.CancelledError:
            if not gone:
                raise
            if task is not None and hasattr(task, "uncancel"):
                task.uncancel()  # we handled it: the client is gone (499)
        finally:
            watch.remove_done_callback(on_message)
            watch.cancel()

    @staticmethod
    async def _stream(send: Send, pieces: Any, item: str | Done, fmt: _Format) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", fmt.content_type)]})
        try:
            while not isinstance(item, Done):
                await send({"type": "http.response.body", "body": fmt.chunk(item),
                            "more_body": True})
                item = await pieces.__anext__()
            final = fmt.last(item)
        except EngineError as exc:
            # After the stream began the status is 200 already: Ollama sends an error line.
            final = fmt.error_line(exc.message)
        await send({"type": "http.response.body", "body": final, "more_body": False})
