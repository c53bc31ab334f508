"""HTTP clients (this package): Ollama/OpenAI here; ``api`` (the kit's own API), ``factory``, ``_http1``, ``neterrors``, ``netutil``.

Talking to Ollama: the native API (``OllamaClient``) and the OpenAI-compatible one (``OpenAIClient``).

Both clients are async (the streaming hot path on :mod:`parallel_kit.clients._http1`, the other calls on
httpx) and have the same shape (docs/ARCHITECTURE.md, "Client
interface"): ``run(spec, clock=…, mode=…)`` sends one request and returns one
:class:`~parallel_kit.records.RequestResult` — a failed request is a row with ``ok=False`` and the
typed error's message, never an exception (except the types in ``raise_for`` and cancellation).
The lower-level calls (``list_models``, ``version``; Ollama's ``ps``, ``load``, ``unload``)
raise the typed errors of :mod:`parallel_kit.errors` instead; ``is_alive`` never raises.

Times in the rows are **model seconds** from the run's start, read from the run's shared
:class:`~parallel_kit.timing.ModelClock`; the ``server_*_s`` fields come from Ollama's nanosecond
durations (the simulator reports those in model time too). Retry back-off waits are clock seconds.

The hot path: keep-alive HTTP/1.1 lanes parsed by httptools
-----------------------------------------------------------
A load generator's own CPU per request caps what it can measure. ``run`` therefore does not go
through a general HTTP client: each client keeps ``max_connections`` *lanes*, keep-alive
connections of :mod:`parallel_kit.clients._http1` (asyncio protocols whose responses the httptools C
parser decodes), handed out last-in first-out so the warmest is reused. A request is one
prebuilt ``bytes`` write; each streamed line is handled in the protocol's ``data_received``
callback — so ``first_token_s`` and the inter-token gaps are read the moment a line arrives —
and the waiting coroutine wakes once per answer. Measured at concurrency 64 against a
zero-latency simulator (``benchmarks/client_overhead.py``, docs/METRICS.md "The client's own
cost"), this costs less CPU per request than httpx (anyio + httpcore + h11 layers) and aiohttp.
The low-level calls (``list_models``, ``ps``, ``version``, ``load``…) use an ordinary
``httpx.AsyncClient``; a test may pass an httpx ``transport``, and then ``run`` sends through it.

A keep-alive connection the server closed: sent again at once, not retried
--------------------------------------------------------------------------
A server may close an idle keep-alive connection at any moment — llama.cpp's ``llama-server``
closes it after every streamed answer, others after an idle timeout — and the close can cross
the next request on the wire. When a request written on a *reused* connection meets a closed
connection before *any byte* of the answer came back, the client sends it again at once on a
new connection: no retry is counted and there is no back-off (a back-off would land inside the
request's latency and TTFT, and the server did nothing wrong). The common clients do this in
some form:

* curl re-sends on a fresh connection when a connection it took from its cache turns out dead
  before any byte of the answer was read, whatever the method — it rewinds a POST body
  (``lib/transfer.c``, ``Curl_retry_request``: "Connection died, retrying a fresh connect");
* Go's ``net/http`` Transport retries on a reused connection
  (``persistConn.shouldRetryRequest`` in ``transport.go``): any request when nothing was
  written yet; after writing, only a replayable one (GET/HEAD/OPTIONS/TRACE, or one with an
  ``Idempotency-Key`` header) and only when the server closed the idle connection or nothing
  was read back — a POST after writing is not retried there;
* urllib3 checks a pooled connection before reusing it and drops it when the server closed it
  (``is_connection_dropped``); its ``Retry`` re-sends a POST after a read error only when told.

RFC 9110 §9.2.2 allows automatic retries of idempotent methods, and these requests are
``POST``. The kit follows curl rather than Go here, for a narrow case: the connection had
carried a whole answer before (a reused keep-alive connection), and no byte of the new answer
came back. A generation request changes nothing on the server but its compute, and a server
that closed an idle connection never read the request from it; in the rare case that a server
read it and broke before answering, the cost of sending it again is one more generation and
nothing else. Everything else is unchanged: a *new* connection
that fails goes through the :class:`RetryPolicy` (counted, with back-off), and an answer that
had begun is never re-sent. Before that, a connection the loop already saw closed is never
handed out (urllib3's check, from asyncio's ``connection_lost``). The number of such re-sends is :attr:`_BaseClient.resent`.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from time import perf_counter
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import httpx
import numpy as np

from ..config import DEFAULT_MODEL, normalize_host
from ..errors import (
    ModelNotFound,
    OllamaError,
    OllamaUnavailable,
    RequestFailed,
    RequestTimeout,
    ServerBusy,
    StreamEnded,
)
from ..metrics import ItlSketch
from ..records import RequestResult, RequestSpec
from ..system.neterrors import connect_reason
from ..timing import ModelClock
from . import _http1

__all__ = ["OllamaClient", "OpenAIClient", "RetryPolicy"]

_C = TypeVar("_C", bound="_BaseClient")
_NS = 1e-9  # Ollama reports durations in nanoseconds
_USER_AGENT = "parallel-kit/0.1"
#: Deadlines by what is awaited (clock seconds). Connecting is quick or never; the first byte
#: may wait for a cold model load and the prompt (``timeout``, default 600 s: Ollama streams
#: its headers with the first token, ``server/routes.go`` ``streamResponse``); once the answer
#: streams, a gap between two chunks is one decode step, so a long silence means the server
#: froze — it is then treated as gone (``OllamaUnavailable``), like a dropped connection.
CONNECT_TIMEOUT_S = 10.0
CHUNK_TIMEOUT_S = 60.0
# Options the OpenAI-compatible chat API understands; others (num_ctx, top_k, …) have no
# OpenAI field and are left out (use OllamaClient for them).
_OPENAI_OPTIONS = ("temperature", "top_p", "seed", "stop", "frequency_penalty",
                   "presence_penalty")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When and how long to retry a request that never reached the model.

    Retried: HTTP 503 "server busy" (Ollama's scheduler queue is full) and connections refused
    or reset before any answer arrived. Never retried: errors after the answer began, timeouts,
    4xx. Each retry is counted in ``RequestResult.retries``.

    Args:
        max_retries: retries after the first attempt (0 turns retrying off).
        backoff_s: first wait, clock seconds; doubles each retry (exponential back-off).
        max_backoff_s: cap on one wait, clock seconds.
        jitter: each wait is multiplied by a random factor in ``[1 - jitter, 1 + jitter]`` so
            that many clients do not retry in lock-step.
    """

    max_retries: int = 3
    backoff_s: float = 0.2
    max_backoff_s: float = 5.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.max_retries < 0 or self.backoff_s < 0 or self.max_backoff_s < 0:
            raise ValueError("RetryPolicy: max_retries, backoff_s and max_backoff_s must be ≥ 0")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"RetryPolicy: jitter must be within 0..1, got {self.jitter}")

    def delay_s(self, retry: int, retry_after_s: float | None = None) -> float:
        """Clock seconds to wait before retry number ``retry`` (0-based).

        A server's ``Retry-After`` (seconds) is honoured when it is longer.
        """
        base = min(self.max_backoff_s, self.backoff_s * (2.0 ** retry))
        wait = base * random.uniform(1.0 - self.jitter, 1.0 + self.jitter)
        if retry_after_s is not None:
            wait = max(wait, min(retry_after_s, self.max_backoff_s))
        return wait


class _Retryable(Exception):
    """Internal: an attempt failed in a way that may succeed when sent again."""

    def __init__(self, error: OllamaError, retry_after_s: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after_s = retry_after_s


class _BaseClient:
    """What both clients share: lanes, retries, error mapping, the low-level calls."""

    #: path of the streaming endpoint, relative to the server root
    _path: str = ""
    #: a cheap route that answers at once, for warm-up and liveness (``GET``)
    _ping_path: str = "/"
    #: how error messages name the server, its answers and its log
    _what = "an Ollama server"
    _stream_kind = "Ollama's streaming JSON"
    _log = " (`ollama serve` output)"

    def __init__(self, host: str, *, max_connections: int = 32, timeout: float = 600.0,
                 retry: RetryPolicy | None = None, stream: bool = True,
                 transport: httpx.AsyncBaseTransport | None = None,
                 trust_env: bool = False) -> None:
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, got {max_connections}")
        if not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        self.host = normalize_host(host)
        self.label = urlsplit(self.host).netloc or self.host
        self.max_connections = max_connections
        self.timeout = float(timeout)
        self.retry = retry if retry is not None else RetryPolicy()
        self.stream = stream
        # Connecting is quick or never: a short connect timeout turns a black-holed address
        # into "unavailable" instead of a 10-minute wait. Reads may wait for a model to load.
        self._timeout = httpx.Timeout(self.timeout, connect=min(self.timeout, CONNECT_TIMEOUT_S))
        self.chunk_timeout = min(self.timeout, CHUNK_TIMEOUT_S)
        self._extensions = {"timeout": self._timeout.as_dict()}
        self._url = httpx.URL(self.host + self._path)
        # identity: the line splitter reads raw bytes (Ollama does not compress anyway).
        self._headers = {"Content-Type": "application/json", "Accept-Encoding": "identity",
                         "User-Agent": _USER_AGENT}
        self._test_transport = transport  # tests pass httpx.MockTransport here
        parts = urlsplit(self.host)
        tls = parts.scheme == "https"
        netloc = parts.netloc
        prefix = parts.path.rstrip("/")
        # The request's bytes up to the body's length: one write per request.
        self._post_head = (f"POST {prefix}{self._path} HTTP/1.1\r\nHost: {netloc}\r\n"
                           f"Content-Type: application/json\r\nAccept-Encoding: identity\r\n"
                           f"User-Agent: {_USER_AGENT}\r\nContent-Length: ").encode("latin-1")
        self._ping_request = (f"GET {prefix}{self._ping_path} HTTP/1.1\r\nHost: {netloc}\r\n"
                              f"User-Agent: {_USER_AGENT}\r\n\r\n").encode("latin-1")
        # One SSL context for all lanes (building one loads the CA bundle, ~25 ms); plain
        # http:// needs none.
        self._lanes = _http1.Lanes(
            parts.hostname or "127.0.0.1", parts.port or (443 if tls else 80), max_connections,
            ssl_context=ssl.create_default_context() if tls else None,
            connect_timeout=min(self.timeout, CONNECT_TIMEOUT_S))
        self._http: httpx.AsyncClient | None = None
        self._trust_env = trust_env
        #: inter-token latencies (model seconds) of every request this client answered ok: the
        #: gaps between streamed pieces, in a bounded-memory sketch (never stored in the rows).
        self.itl = ItlSketch()
        #: requests sent again at once because a reused keep-alive connection turned out to be
        #: closed before any byte of the answer came back (not retries; see ``_attempt``)
        self.resent = 0
        #: the ``Server`` header of the last answer on the hot path (``None``: none sent)
        self.server_header: str | None = None
        #: OpenAI API: a streamed answer without ``usage`` gets ``output_tokens`` = its number
        #: of streamed pieces (counted in ``chunk_counted``); off: such rows keep None
        self.count_chunks = False
        self.chunk_counted = 0

    # -- lifecycle -------------------------------------------------------------------------
    async def __aenter__(self: _C) -> _C:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every connection (lanes and the low-level client)."""
        self._lanes.close()
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.host!r}, max_connections={self.max_connections})"

    async def warm_up(self, connections: int | None = None) -> float:
        """Open ``connections`` keep-alive connections now (default: one per lane).

        Call it before a run's clock starts: otherwise the first requests pay the TCP connect
        (and, with several at once, wait for one another's) inside their measured time —
        measured here at ~3 ms of clock per new loopback connection, i.e. 0.15 model s at
        time scale 0.02. Each lane sends ``GET /`` (Ollama's cheap "Ollama is running"; ``GET
        /v1/models`` for the OpenAI API) and
        keeps the connection. Returns the clock seconds it took.

        Raises:
            OllamaUnavailable: the server did not answer (named, with the reason).
        """
        t0 = time.perf_counter()
        count = self.max_connections if connections is None else min(connections,
                                                                        self.max_connections)
        if self._test_transport is not None or count < 1:
            return 0.0
        # Hold all lanes at once, so that each one opens a connection of its own.
        lanes: list[_http1.Connection] = []
        try:
            for _ in range(count):
                lanes.append(await self._lanes.acquire())
            await asyncio.gather(*(self._ping(lane) for lane in lanes))
        except _http1.HttpError as exc:
            raise OllamaUnavailable(self.host, str(exc)) from exc
        finally:
            for lane in reversed(lanes):  # LIFO: the first one back is handed out first
                self._lanes.release(lane)
        return time.perf_counter() - t0

    async def _ping(self, lane: _http1.Connection) -> None:
        await lane.exchange(self._ping_request, None, self.timeout)

    # -- one request -----------------------------------------------------------------------
    async def run(self, spec: RequestSpec, *, clock: ModelClock, mode: str, worker: str = "",
                  node: str = "", model: str | None = None, queued_s: float | None = None,
                  raise_for: tuple[type[BaseException], ...] = (),
                  submitted_s: float | None = None) -> RequestResult:
        """Send one request and return its row (model seconds on ``clock``'s axis).

        The row's moments: ``queued_s`` as given (when the caller accepted the request; default
        the call itself), ``submitted_s`` = ``started_s`` when the attempt that answered (or
        the last one) was sent — after waiting for a free connection, and after any failed
        attempt and its back-off: those waits are the kit's, so they count as queueing
        (``queue_wait_s``), never as latency or TTFT; after retries ``hops["first_sent"]``
        says when the first attempt went — ``first_token_s`` when the first non-empty piece arrived
        (NaN with ``stream=False``), ``finished_s`` when the answer ended. The gaps between
        pieces of an answer that ends ok go into :attr:`itl`.

        Args:
            spec: what to send; ``spec.model`` wins over ``model``.
            clock: the run's shared clock.
            mode: the mode name recorded in the row.
            worker: label of the endpoint/GPU (default: this client's host:port).
            node: the machine, if known.
            model: the run's default model (``DEFAULT_MODEL`` when neither is given).
            queued_s: when the caller accepted the request (model seconds; default: now).
            raise_for: typed errors to raise instead of recording (e.g. ``(OllamaUnavailable,)``
                so a pool can send the request elsewhere).
            submitted_s: the former name of ``queued_s``, still accepted (``queued_s`` wins).
        """
        name = spec.model or model or DEFAULT_MODEL
        if queued_s is None:
            queued_s = submitted_s
        row = RequestResult(
            request_id=spec.request_id, mode=mode, prompt=spec.prompt, model=name,
            worker=worker or self.label, node=node,
            queued_s=clock.now() if queued_s is None else queued_s)
        body = self._body(spec, name)
        retries = 0
        error: OllamaError | None = None
        stamps: list[float] = []
        while True:
            try:
                stamps.clear()
                await self._attempt(body, row, clock, name, stamps)
                break
            except _Retryable as exc:
                if retries >= self.retry.max_retries:
                    error = exc.error
                    break
                await asyncio.sleep(self.retry.delay_s(retries, exc.retry_after_s))
                retries += 1
            except OllamaError as exc:
                error = exc
                break
        row.retries = retries
        row.finished_s = clock.now()
        first = row.hops.get("first_sent")
        if first is not None and retries == 0:
            del row.hops["first_sent"]  # no retry: nothing worth telling apart
        if error is not None:
            if raise_for and isinstance(error, raise_for):
                raise error
            row.ok = False
            row.error = str(error)
        else:
            row.ok = True
            if len(stamps) > 1:
                self.itl.add_many(np.diff(stamps) / clock.time_scale)
        return row.finalize()

    async def _attempt(self, body: bytes, row: RequestResult, clock: ModelClock,
                       model: str, stamps: list[float]) -> None:
        """One HTTP exchange; fills ``row`` (and ``stamps``: the clock time of each streamed
        piece) or raises a typed error (or ``_Retryable``)."""
        if self._test_transport is not None:
            await self._attempt_httpx(body, row, clock, model, stamps)
            return
        lanes = self._lanes
        resend = False
        while True:
            try:
                lane = await lanes.acquire(fresh=resend)
            except _http1.ConnectFailed as exc:
                raise _Retryable(OllamaUnavailable(self.host, str(exc))) from exc
            try:
                self._sent(row, clock)
                reader = self._reader(row, clock, stamps)
                request = self._post_head + b"%d\r\n\r\n" % len(body) + body
                try:
                    response = await lane.exchange(request, reader.feed, self.timeout,
                                                   chunk_timeout=self.chunk_timeout)
                except _http1.ReadTimeout as exc:
                    if exc.answered:  # the answer had begun, then stopped: the server froze
                        raise OllamaUnavailable(self.host, f"the answer stalled: no data for "
                                                           f"{self.chunk_timeout:g} s") from exc
                    raise RequestTimeout(self.host, self.timeout) from exc
                except _http1.ConnectionLost as exc:
                    if not exc.answered and exc.reused and not resend:
                        # A keep-alive connection the server closed while it lay idle (e.g.
                        # llama-server closes after every answer): send again at once on a
                        # new connection — not a retry, no back-off (see _STALE_RESEND).
                        resend = True
                        self.resent += 1
                        continue
                    if not exc.answered:
                        # Refused or reset before any answer on a new connection: the model
                        # never saw the request, so sending it again (after a back-off) is safe.
                        raise _Retryable(OllamaUnavailable(self.host, str(exc))) from exc
                    # The answer had begun: not retried here (the model did work); pool/ray
                    # modes may send it elsewhere via raise_for.
                    raise StreamEnded(self.host, str(exc)) from exc
                except _http1.HttpError as exc:
                    raise RequestFailed(f"{self.host} answered something other than HTTP/1.1 "
                                        f"({exc}) — is {self.host} {self._what}?",
                                        host=self.host) from exc
                except ValueError as exc:
                    raise self._not_ollama(exc, 200) from exc
                if lane.server_header and not self.server_header:
                    self.server_header = lane.server_header
                if response.status != 200:
                    raise self._status_error(response.status, response.retry_after,
                                             response.body, model)
                reader.finish()
                return
            finally:
                lanes.release(lane)

    @staticmethod
    def _sent(row: RequestResult, clock: ModelClock) -> None:
        """Stamp the send of an attempt: ``submitted_s`` and ``started_s`` are the send of the
        attempt that answers (each attempt overwrites them), so neither a failed attempt nor a
        back-off is inside latency or TTFT; the first send is kept in ``hops["first_sent"]``."""
        now = clock.now()
        row.hops.setdefault("first_sent", now)
        row.submitted_s = row.started_s = now

    async def _attempt_httpx(self, body: bytes, row: RequestResult, clock: ModelClock,
                             model: str, stamps: list[float]) -> None:
        """:meth:`_attempt` through the httpx ``transport`` a test passed in."""
        assert self._test_transport is not None
        request = httpx.Request("POST", self._url, content=body, headers=self._headers,
                                extensions=self._extensions)
        self._sent(row, clock)
        try:
            response = await self._test_transport.handle_async_request(request)
        except httpx.HTTPError as exc:
            raise _Retryable(OllamaUnavailable(self.host, _short(exc))) from exc
        try:
            if response.status_code != 200:
                raw = await _read_all(response.stream)
                raise self._status_error(response.status_code,
                                         response.headers.get("retry-after"), raw, model)
            reader = self._reader(row, clock, stamps)
            async for line in _lines(response.stream):
                reader.feed(line)
            reader.finish()
        except ValueError as exc:
            raise self._not_ollama(exc, response.status_code) from exc
        finally:
            await _close(response.stream)

    def _not_ollama(self, exc: BaseException, status: int) -> RequestFailed:
        return RequestFailed(
            f"{self.host} answered something other than {self._stream_kind} "
            f"({_short(exc)}) — is {self.host} {self._what} of a recent version?",
            host=self.host, status_code=status)

    def _status_error(self, status: int, retry_after: str | None, raw: bytes,
                      model: str) -> Exception:
        """Map an error status to a typed error (503 → retryable)."""
        message = _error_message(raw)
        if status == 503:
            return _Retryable(ServerBusy(self.host, message), _retry_after(retry_after))
        lowered = message.lower()
        if status == 404 and "model" in lowered and ("not found" in lowered
                                                     or "does not exist" in lowered):
            return ModelNotFound(model, self.host)
        if status == 404:
            fix = f"is {self.host} {self._what} (right address and port)?"
        elif status == 499:
            fix = "the request was cancelled (client went away); send it again"
        elif 400 <= status < 500:
            fix = "check the model name, prompt and options of the request"
        else:
            fix = f"see the server's log{self._log}; the request may work if sent again"
        return RequestFailed(f"{self.host} answered HTTP {status}: {message} — {fix}",
                             host=self.host, status_code=status, body=raw[:2000])

    def _mid_stream_error(self, message: Any) -> RequestFailed:
        text = _error_text(message)
        return RequestFailed(
            f"{self.host} stopped the answer with an error: {text} — see the server's log"
            f"{self._log}; the request may work if sent again",
            host=self.host, status_code=200, body=message)

    # -- per-API parts (subclasses) --------------------------------------------------------
    def _body(self, spec: RequestSpec, model: str) -> bytes:
        raise NotImplementedError

    def _reader(self, row: RequestResult, clock: ModelClock, stamps: list[float]) -> _Reader:
        """What turns this API's answer lines into the row."""
        raise NotImplementedError

    # -- low-level calls -------------------------------------------------------------------
    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(
                base_url=self.host, timeout=self._timeout, trust_env=self._trust_env,
                transport=self._test_transport, headers={"User-Agent": _USER_AGENT},
                limits=httpx.Limits(max_connections=4, max_keepalive_connections=4))
        return self._http

    async def _call(self, method: str, path: str, payload: dict[str, Any] | None = None,
                    *, model: str = "") -> Any:
        """One non-streaming JSON call; typed errors on failure; the decoded JSON back."""
        try:
            response = await self._client().request(method, path, json=payload)
        except httpx.ConnectTimeout as exc:
            raise OllamaUnavailable(self.host, "connect timed out") from exc
        except httpx.TimeoutException as exc:
            raise RequestTimeout(self.host, self.timeout) from exc
        except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError,
                httpx.WriteError) as exc:
            raise OllamaUnavailable(self.host, _short(exc)) from exc
        except httpx.HTTPError as exc:
            raise RequestFailed(f"request to {self.host}{path} failed: {_short(exc)}",
                                host=self.host) from exc
        if response.status_code != 200:
            err = self._status_error(response.status_code, response.headers.get("retry-after"),
                                     response.content, model)
            raise err.error if isinstance(err, _Retryable) else err
        try:
            data = response.json()
        except ValueError as exc:
            raise RequestFailed(
                f"{self.host}{path} did not answer JSON ({response.text[:80]!r}) — is "
                f"{self.host} {self._what}?", host=self.host, body=response.text[:2000]
            ) from exc
        if isinstance(data, dict) and "error" in data:
            raise self._mid_stream_error(data["error"])
        return data

    async def is_alive(self) -> bool:
        """True when anything answers HTTP at the host (``GET /``; ``GET /v1/models`` for the
        OpenAI API); never raises."""
        try:
            await self._client().get(self._ping_path)
        except httpx.HTTPError:
            return False
        return True



class OllamaClient(_BaseClient):
    """Ollama's native API: ``/api/generate`` or ``/api/chat``, NDJSON streaming.

    Args:
        host: the server, in any ``OLLAMA_HOST`` form (``127.0.0.1:11434``, ``http://…``).
        max_connections: connections (lanes) kept open; requests beyond wait for one.
        timeout: seconds to wait for any read (a cold model load counts); connecting gives up
            after at most 10 s.
        retry: the retry policy (default ``RetryPolicy()``).
        api: ``"generate"`` (prompt) or ``"chat"`` (messages).
        stream: stream the answer (default, needed for ``first_token_s``).
        transport: an httpx transport to use instead of the network (tests).
        trust_env: honour proxy environment variables in the low-level calls (off: Ollama is
            usually local and a stray ``HTTP_PROXY`` would break it).
    """

    def __init__(self, host: str, *, max_connections: int = 32, timeout: float = 600.0,
                 retry: RetryPolicy | None = None,
                 api: Literal["generate", "chat"] | str = "generate", stream: bool = True,
                 transport: httpx.AsyncBaseTransport | None = None,
                 trust_env: bool = False) -> None:
        if api not in ("generate", "chat"):
            raise ValueError(f"api must be 'generate' or 'chat', got {api!r} "
                             f"(use OpenAIClient for the /v1 API)")
        self.api = api
        self._path = "/api/generate" if api == "generate" else "/api/chat"
        super().__init__(host, max_connections=max_connections, timeout=timeout, retry=retry,
                         stream=stream, transport=transport, trust_env=trust_env)

    def _body(self, spec: RequestSpec, model: str) -> bytes:
        payload: dict[str, Any] = {"model": model, "stream": self.stream}
        if self.api == "generate":
            payload["prompt"] = spec.prompt
            if spec.system is not None:
                payload["system"] = spec.system
        else:
            messages = [{"role": "user", "content": spec.prompt}]
            if spec.system is not None:
                messages.insert(0, {"role": "system", "content": spec.system})
            payload["messages"] = messages
        options = spec.ollama_options()
        if options:
            payload["options"] = options
        return json.dumps(payload).encode()

    def _reader(self, row: RequestResult, clock: ModelClock,
                stamps: list[float]) -> _NdjsonReader:
        return _NdjsonReader(self, row, clock, stamps)

    async def version(self) -> str:
        """The server's version (``GET /api/version``; Ollama and the simulator)."""
        data = await self._call("GET", "/api/version")
        return str(data.get("version", ""))

    async def ps(self) -> list[dict[str, Any]]:
        """The loaded models (``GET /api/ps``: name, size_vram, expires_at, …)."""
        data = await self._call("GET", "/api/ps")
        return list(data.get("models", []))

    async def list_models(self) -> list[str]:
        """Names of the models the server has (``GET /api/tags``)."""
        data = await self._call("GET", "/api/tags")
        return [str(m.get("name") or m.get("model")) for m in data.get("models", [])]

    async def load(self, model: str, *, keep_alive: str | float | None = None) -> dict[str, Any]:
        """Load ``model`` (empty prompt) and return Ollama's answer (``load_duration`` in ns)."""
        payload: dict[str, Any] = {"model": model, "prompt": "", "stream": False}
        if keep_alive is not None:
            payload["keep_alive"] = keep_alive
        return dict(await self._call("POST", "/api/generate", payload, model=model))

    async def unload(self, model: str) -> dict[str, Any]:
        """Unload ``model`` now (empty prompt with ``keep_alive: 0``)."""
        return await self.load(model, keep_alive=0)


class OpenAIClient(_BaseClient):
    """An OpenAI-compatible server: ``/v1/chat/completions`` with SSE streaming.

    Works with Ollama's ``/v1``, vLLM, the llama.cpp server and LM Studio. ``host`` is the server
    root (a trailing ``/v1`` is accepted). ``num_predict`` becomes ``max_tokens``; token counts
    come from ``stream_options.include_usage``; the OpenAI API has no server-side durations, so
    the ``server_*_s`` fields stay empty. Arguments as for :class:`OllamaClient`.
    """

    _path = "/v1/chat/completions"
    #: the OpenAI API's own cheap route: never one of Ollama's native ones (``GET /``)
    _ping_path = "/v1/models"
    _what = "an OpenAI-compatible server"
    _stream_kind = "the OpenAI API's streamed events"
    _log = ""

    def __init__(self, host: str, *, max_connections: int = 32, timeout: float = 600.0,
                 retry: RetryPolicy | None = None, api: str = "openai", stream: bool = True,
                 transport: httpx.AsyncBaseTransport | None = None,
                 trust_env: bool = False) -> None:
        root = normalize_host(host)
        if root.endswith("/v1"):
            root = root[: -len("/v1")]
        self.api = "openai"
        super().__init__(root, max_connections=max_connections, timeout=timeout, retry=retry,
                         stream=stream, transport=transport, trust_env=trust_env)

    def _body(self, spec: RequestSpec, model: str) -> bytes:
        messages = [{"role": "user", "content": spec.prompt}]
        if spec.system is not None:
            messages.insert(0, {"role": "system", "content": spec.system})
        payload: dict[str, Any] = {"model": model, "messages": messages, "stream": self.stream}
        if self.stream:
            payload["stream_options"] = {"include_usage": True}
        if spec.num_predict is not None:
            payload["max_tokens"] = spec.num_predict
        for key in _OPENAI_OPTIONS:
            if key in spec.options:
                payload[key] = spec.options[key]
        return json.dumps(payload).encode()

    def _reader(self, row: RequestResult, clock: ModelClock,
                stamps: list[float]) -> _SseReader:
        return _SseReader(self, row, clock, stamps)

    async def list_models(self) -> list[str]:
        """Model ids the server offers (``GET /v1/models``)."""
        data = await self._call("GET", "/v1/models")
        return [str(m.get("id")) for m in data.get("data", [])]

    async def version(self) -> str:
        """The server's own name and version where it gives one (``"llama.cpp b6123"``,
        ``"vLLM 0.10.1"``, its ``Server`` header; ``""`` otherwise), asked as
        :func:`parallel_kit.servers.backend.discover_server` asks — never a native Ollama route."""
        from ..servers.backend import discover_server

        return (await discover_server(self.host, "openai")).name


# -- reading answers -------------------------------------------------------------------------
class _Reader:
    """Turns one answer's lines into its row, one line at a time (``feed``), then ``finish``.

    ``feed`` runs as each line arrives (inside the connection's ``data_received`` on the hot
    path): a non-empty piece is stamped there — ``first_token_s`` on the run's clock, and a
    ``perf_counter`` stamp for the inter-token gaps. It raises ``ValueError`` for a line that
    is not a JSON object and the client's ``RequestFailed`` for an error object.
    """

    __slots__ = ("client", "clock", "pieces", "row", "stamps", "want_first")

    def __init__(self, client: _BaseClient, row: RequestResult, clock: ModelClock,
                 stamps: list[float]) -> None:
        self.client = client
        self.row = row
        self.clock = clock
        self.stamps = stamps
        self.pieces: list[str] = []
        self.want_first = client.stream

    def _piece(self, piece: str) -> None:
        self.stamps.append(perf_counter())
        if self.want_first:
            self.row.first_token_s = self.clock.now()
            self.want_first = False
        self.pieces.append(piece)

    def feed(self, line: bytes) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        raise NotImplementedError


class _NdjsonReader(_Reader):
    """Ollama's native API: one JSON object per line, the last one ``"done": true``."""

    __slots__ = ("chat", "final")

    def __init__(self, client: OllamaClient, row: RequestResult, clock: ModelClock,
                 stamps: list[float]) -> None:
        super().__init__(client, row, clock, stamps)
        self.chat = client.api == "chat"
        self.final: dict[str, Any] | None = None

    def feed(self, line: bytes) -> None:
        obj = _json_object(line)
        if "error" in obj:
            raise self.client._mid_stream_error(obj["error"])
        if self.chat:
            msg = obj.get("message") or {}
            piece = msg.get("content") or msg.get("thinking") or ""
        else:
            piece = obj.get("response") or obj.get("thinking") or ""
        if piece:
            self._piece(piece)
        if obj.get("done"):
            self.final = obj

    def finish(self) -> None:
        final, row = self.final, self.row
        if final is None:
            raise StreamEnded(self.client.host, "the answer ended before its final (done) object")
        row.response = "".join(self.pieces)
        row.prompt_tokens = final.get("prompt_eval_count")
        row.output_tokens = final.get("eval_count")
        row.server_total_s = _seconds(final.get("total_duration"))
        row.server_load_s = _seconds(final.get("load_duration"))
        row.server_prompt_eval_s = _seconds(final.get("prompt_eval_duration"))
        row.server_eval_s = _seconds(final.get("eval_duration"))


class _SseReader(_Reader):
    """The OpenAI API: ``data: {…}`` events (SSE), ending with ``data: [DONE]``; or one JSON
    object when not streaming."""

    __slots__ = ("finished",)

    def __init__(self, client: OpenAIClient, row: RequestResult, clock: ModelClock,
                 stamps: list[float]) -> None:
        super().__init__(client, row, clock, stamps)
        self.finished = False

    def feed(self, line: bytes) -> None:
        streaming = self.client.stream
        if streaming:
            if not line.startswith(b"data:"):
                return  # blank separators, ": comments", "event:" lines
            data = line[5:].strip()
            if data == b"[DONE]":
                self.finished = True  # keep reading: a drained connection is reused
                return
        else:
            data = line
        obj = _json_object(data)
        if "error" in obj:
            raise self.client._mid_stream_error(obj["error"])
        for choice in obj.get("choices") or ():
            part = choice.get("delta") or choice.get("message") or {}
            piece = (part.get("content") or part.get("reasoning_content")
                     or part.get("reasoning") or "")
            if piece:
                self._piece(piece)
        usage = obj.get("usage")
        if usage:
            self.row.prompt_tokens = usage.get("prompt_tokens")
            self.row.output_tokens = usage.get("completion_tokens")
        timings = obj.get("timings")
        if isinstance(timings, dict):
            self._timings(timings)
        if not streaming:
            self.finished = True

    def _timings(self, timings: dict[str, Any]) -> None:
        """llama-server's own ``timings`` (milliseconds) in its last chunk: the server's prefill
        and decode durations, and its token counts where no ``usage`` came."""
        row = self.row
        prompt_ms, predicted_ms = timings.get("prompt_ms"), timings.get("predicted_ms")
        if isinstance(prompt_ms, (int, float)):
            row.server_prompt_eval_s = prompt_ms / 1000.0
        if isinstance(predicted_ms, (int, float)):
            row.server_eval_s = predicted_ms / 1000.0
        if row.prompt_tokens is None and isinstance(timings.get("prompt_n"), int):
            row.prompt_tokens = timings["prompt_n"]
        if row.output_tokens is None and isinstance(timings.get("predicted_n"), int):
            row.output_tokens = timings["predicted_n"]

    def finish(self) -> None:
        if not self.finished:
            raise StreamEnded(self.client.host, "the answer ended before `data: [DONE]`")
        self.row.response = "".join(self.pieces)
        client = self.client
        if self.row.output_tokens is None and client.stream and client.count_chunks:
            # No usage from the server: one streamed piece is about one token (the probe
            # says so in a note; ``count_chunks`` is off by default).
            self.row.output_tokens = len(self.pieces)
            client.chunk_counted += 1


# -- helpers ---------------------------------------------------------------------------------
async def _lines(stream: Any) -> AsyncIterator[bytes]:
    """Non-empty lines of a byte stream (NDJSON or SSE), split by hand: cheaper than
    ``aiter_lines``, which decodes to str and handles every newline convention."""
    buf = b""
    async for chunk in stream:
        if buf:
            chunk = buf + chunk
        parts = chunk.split(b"\n")
        buf = parts.pop()
        for part in parts:
            if part.strip():
                yield part
    if buf.strip():
        yield buf


def _json_object(line: bytes) -> dict[str, Any]:
    obj = json.loads(line)
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object per line, got {line[:80]!r}")
    return obj


async def _read_all(stream: Any) -> bytes:
    return b"".join([chunk async for chunk in stream])


async def _close(stream: Any) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()


def _seconds(ns: Any) -> float | None:
    return ns * _NS if isinstance(ns, (int, float)) else None


def _error_text(error: Any) -> str:
    """Ollama's ``"error": "text"`` or OpenAI's ``"error": {"message": …}``."""
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return str(error)


def _error_message(raw: bytes) -> str:
    try:
        data = json.loads(raw)
    except ValueError:
        text = raw.decode("utf-8", "replace").strip()
        return text[:200] or "(empty body)"
    if isinstance(data, dict) and "error" in data:
        return _error_text(data["error"])
    return str(data)[:200]


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date: rare, fall back to our own back-off
    return seconds if seconds >= 0 and not math.isinf(seconds) else None


def _short(exc: BaseException) -> str:
    """A one-line reason from an httpx error, naming the root cause when it is known
    (:func:`~parallel_kit.system.neterrors.connect_reason`; anyio wraps a refused connection as
    "All connection attempts failed")."""
    known = connect_reason(exc)  # DNS failure, refused, unreachable: the real cause
    if known is not None:
        return known
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]
