"""A small OpenAI-compatible server for the tests, shaped like llama.cpp's ``llama-server``.

It runs on its own event loop in a background thread (so sync CLI tests and async tests alike
can use it), parses HTTP with h11, and keeps its own records — which routes were asked, how many
connections and answers, how many requests ran at once — so tests assert from the server's side,
never from wall-clock ratios.

Behaviours (constructor arguments):

* ``slots``: requests decoded at once; more wait for a slot (FIFO), as in llama-server ``-np``.
* ``close``: what happens to the connection after an answer —
  ``"keep"`` (HTTP/1.1 keep-alive), ``"header"`` (``Connection: close`` and close: what
  llama-server does after a streamed answer), ``"silent"`` (close without saying so), or
  ``"stale"`` (keep it open, but close it without a word when the *next* request arrives on it:
  an idle keep-alive connection the server dropped just as the client reused it).
* ``usage``: send the ``usage`` chunk when ``stream_options.include_usage`` asks for it.
* ``timings``: end each answer with llama-server's ``timings`` (milliseconds).
* ``props``: answer ``GET /props`` with ``total_slots`` and ``build_info`` (llama-server);
  ``version``: answer ``GET /version`` (vLLM); ``server_header``: a ``Server`` header.
* ``busy_first``: answer the first N chat requests 503 (busy), then serve.
* ``native``: also serve Ollama's ``POST /api/generate`` (NDJSON), ``GET /api/tags``,
  ``/api/version`` (0.12.3) and ``GET /`` — an Ollama that does not publish its slots.

Every other route answers 404 and is recorded like the rest (``hits``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from dataclasses import dataclass, field
from typing import Any

import h11

MODEL = "gemma-3-270m-it-Q8_0.gguf"


@dataclass
class Records:
    """What the server saw (read after the calls; guarded by the server's lock)."""

    hits: list[tuple[str, str]] = field(default_factory=list)
    connections: int = 0
    answered: int = 0
    stale_closes: int = 0
    active: int = 0
    max_active: int = 0


class FakeOpenAIServer:
    """See the module docstring. Use as ``with FakeOpenAIServer(...) as srv: srv.url``."""

    def __init__(self, *, slots: int = 1, close: str = "header", usage: bool = True,
                 timings: bool = True, props: bool = True, version: str | None = None,
                 server_header: str | None = None, build_info: str = "b9999-test",
                 token_delay_s: float = 0.004, native: bool = False,
                 model: str = MODEL, busy_first: int = 0) -> None:
        assert close in ("keep", "header", "silent", "stale")
        self.slots = slots
        self.close = close
        self.usage = usage
        self.timings = timings
        self.props = props
        self.version = version
        self.server_header = server_header
        self.build_info = build_info
        self.token_delay_s = token_delay_s
        self.native = native
        self.model = model
        self.busy_first = busy_first
        self.records = Records()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._sem: asyncio.Semaphore | None = None
        self.url = ""

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> FakeOpenAIServer:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "the fake server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self._stop_event.set)
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        self._sem = asyncio.Semaphore(self.slots)
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self._ready.set()
        await self._stop_event.wait()
        self._server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 2)

    def paths(self) -> list[str]:
        with self._lock:
            return [p for _, p in self.records.hits]

    # -- one connection ----------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._lock:
            self.records.connections += 1
        conn = h11.Connection(h11.SERVER)
        exchanges = 0
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await reader.read(65536)
                    if self.close == "stale" and exchanges > 0 and data:
                        with self._lock:
                            self.records.stale_closes += 1
                        return  # dropped just as the client reused it: not a byte back
                    conn.receive_data(data)
                    if not data:
                        return
                    continue
                if isinstance(event, (h11.ConnectionClosed,)) or event is h11.PAUSED:
                    return
                if not isinstance(event, h11.Request):
                    continue
                body = b""
                while True:
                    ev = conn.next_event()
                    if ev is h11.NEED_DATA:
                        conn.receive_data(await reader.read(65536))
                        continue
                    if isinstance(ev, h11.Data):
                        body += ev.data
                        continue
                    if isinstance(ev, h11.EndOfMessage):
                        break
                    return
                method, path = event.method.decode(), event.target.decode()
                with self._lock:
                    self.records.hits.append((method, path))
                await self._answer(conn, writer, method, path, body)
                exchanges += 1
                if self.close in ("header", "silent"):
                    return
                if conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (ConnectionError, h11.RemoteProtocolError):
            return
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _headers(self, content_type: str) -> list[tuple[str, str]]:
        headers = [("Content-Type", content_type)]
        if self.close == "header":
            headers.append(("Connection", "close"))
        if self.server_header:
            headers.append(("Server", self.server_header))
        return headers

    async def _send(self, conn: h11.Connection, writer: asyncio.StreamWriter,
                    *events: Any) -> None:
        for ev in events:
            writer.write(conn.send(ev))
        await writer.drain()

    async def _json(self, conn: h11.Connection, writer: asyncio.StreamWriter, status: int,
                    obj: Any) -> None:
        data = json.dumps(obj).encode()
        headers = [*self._headers("application/json"), ("Content-Length", str(len(data)))]
        await self._send(conn, writer, h11.Response(status_code=status, headers=headers),
                         h11.Data(data=data), h11.EndOfMessage())

    async def _answer(self, conn: h11.Connection, writer: asyncio.StreamWriter, method: str,
                      path: str, body: bytes) -> None:
        if method == "GET" and path == "/v1/models":
            await self._json(conn, writer, 200, {"object": "list", "data": [
                {"id": self.model, "object": "model", "owned_by": "llamacpp"}]})
        elif method == "GET" and path == "/health":
            await self._json(conn, writer, 200, {"status": "ok"})
        elif method == "GET" and path == "/props" and self.props:
            await self._json(conn, writer, 200, {"total_slots": self.slots,
                                                 "build_info": self.build_info,
                                                 "model_path": f"/models/{self.model}"})
        elif method == "GET" and path == "/version" and self.version:
            await self._json(conn, writer, 200, {"version": self.version})
        elif method == "POST" and path == "/v1/chat/completions" and self.busy_first > 0:
            self.busy_first -= 1
            await self._json(conn, writer, 503, {"error": {"code": 503, "message":
                                                           "the server is busy"}})
        elif method == "POST" and path == "/v1/chat/completions":
            await self._chat(conn, writer, json.loads(body or b"{}"))
        elif method == "GET" and path == "/api/tags" and self.native:
            await self._json(conn, writer, 200, {"models": [{"name": self.model}]})
        elif method == "GET" and path == "/api/version" and self.native:
            await self._json(conn, writer, 200, {"version": "0.12.3"})
        elif method == "GET" and path == "/" and self.native:
            await self._json(conn, writer, 200, "Ollama is running")
        elif method == "POST" and path == "/api/generate" and self.native:
            await self._generate(conn, writer, json.loads(body or b"{}"))
        else:
            await self._json(conn, writer, 404, {"error": {"code": 404, "message":
                                                           "File Not Found"}})

    async def _decode(self, n: int) -> tuple[float, float]:
        """Take a slot, then 'decode' ``n`` tokens; (prefill ms, decode ms) of the work."""
        assert self._sem is not None
        loop = asyncio.get_running_loop()
        async with self._sem:
            with self._lock:
                self.records.active += 1
                self.records.max_active = max(self.records.max_active, self.records.active)
            try:
                t0 = loop.time()
                await asyncio.sleep(self.token_delay_s)  # prefill
                t1 = loop.time()
                for _ in range(n):
                    await asyncio.sleep(self.token_delay_s)
                return (t1 - t0) * 1000.0, (loop.time() - t1) * 1000.0
            finally:
                with self._lock:
                    self.records.active -= 1

    async def _chat(self, conn: h11.Connection, writer: asyncio.StreamWriter,
                    req: dict[str, Any]) -> None:
        n = int(req.get("max_tokens") or 8)
        stream = bool(req.get("stream"))
        include_usage = bool((req.get("stream_options") or {}).get("include_usage"))
        assert self._sem is not None
        if not stream:
            await self._decode(n)
            self._done()
            await self._json(conn, writer, 200, {
                "object": "chat.completion", "model": self.model,
                "choices": [{"index": 0, "message": {"role": "assistant",
                                                     "content": "tok " * n}}],
                "usage": {"prompt_tokens": 5, "completion_tokens": n}})
            return
        await self._send(conn, writer, h11.Response(
            status_code=200, headers=self._headers("text/event-stream")))
        loop = asyncio.get_running_loop()
        async with self._sem:
            with self._lock:
                self.records.active += 1
                self.records.max_active = max(self.records.max_active, self.records.active)
            try:
                t0 = loop.time()
                await asyncio.sleep(self.token_delay_s)
                t1 = loop.time()
                for i in range(n):
                    chunk = {"object": "chat.completion.chunk", "model": self.model,
                             "choices": [{"index": 0, "delta": {"content": f"t{i} "}}]}
                    await self._send(conn, writer,
                                     h11.Data(data=b"data: " + json.dumps(chunk).encode()
                                              + b"\n\n"))
                    await asyncio.sleep(self.token_delay_s)
                t2 = loop.time()
            finally:
                with self._lock:
                    self.records.active -= 1
        last: dict[str, Any] = {"object": "chat.completion.chunk", "model": self.model,
                                "choices": [{"index": 0, "delta": {},
                                             "finish_reason": "length"}]}
        if self.timings:
            last["timings"] = {"prompt_n": 5, "prompt_ms": (t1 - t0) * 1000.0,
                               "predicted_n": n, "predicted_ms": (t2 - t1) * 1000.0}
        events = [h11.Data(data=b"data: " + json.dumps(last).encode() + b"\n\n")]
        if include_usage and self.usage:
            usage = {"object": "chat.completion.chunk", "choices": [],
                     "usage": {"prompt_tokens": 5, "completion_tokens": n,
                               "total_tokens": 5 + n}}
            events.append(h11.Data(data=b"data: " + json.dumps(usage).encode() + b"\n\n"))
        events += [h11.Data(data=b"data: [DONE]\n\n"), h11.EndOfMessage()]
        self._done()  # counted before the client can see the end of the answer
        await self._send(conn, writer, *events)

    async def _generate(self, conn: h11.Connection, writer: asyncio.StreamWriter,
                        req: dict[str, Any]) -> None:
        n = int((req.get("options") or {}).get("num_predict") or 8)
        await self._send(conn, writer, h11.Response(
            status_code=200, headers=self._headers("application/x-ndjson")))
        prefill_ms, decode_ms = await self._decode(n)
        lines = [json.dumps({"model": req.get("model"), "response": f"t{i} ", "done": False})
                 for i in range(n)]
        lines.append(json.dumps({"model": req.get("model"), "response": "", "done": True,
                                 "prompt_eval_count": 5, "eval_count": n,
                                 "prompt_eval_duration": int(prefill_ms * 1e6),
                                 "eval_duration": int(decode_ms * 1e6)}))
        self._done()
        await self._send(conn, writer, h11.Data(data=("\n".join(lines) + "\n").encode()),
                         h11.EndOfMessage())

    def _done(self) -> None:
        with self._lock:
            self.records.answered += 1
