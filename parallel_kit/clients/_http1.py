"""The clients' hot path: HTTP/1.1 keep-alive connections as asyncio protocols, parsed by httptools.

One :class:`Connection` is one TCP (or TLS) connection to one server. An exchange writes a
prebuilt request in one ``transport.write`` and lets `httptools
<https://github.com/MagicStack/httptools>`_ (the C parser behind uvicorn — llhttp, Node.js's
parser) decode the response as bytes arrive: status, headers, chunked transfer coding and
keep-alive are the library's; this module only hands each complete body line to a callback *in
the protocol's ``data_received``*, so the moment a line arrived is read when it arrived, and the
waiting coroutine wakes once per response (not once per line). :class:`Lanes` keeps up to
``size`` connections, handed out last-in first-out so the warmest is reused.

Why not a general client here (docs/METRICS.md, "The client's own cost"): measured on this kit's
machine at concurrency 64 against a zero-latency server, httpx spends ≈ 0.7 ms of CPU per
request in its transport layers (anyio, httpcore, h11) and aiohttp ≈ 0.25 ms; this path spends
less, and every other call (model lists, ``ps``, version) still goes through httpx.

Errors are plain exceptions of this module (:class:`HttpError` and subclasses); the clients map
them onto the kit's typed errors. Times are clock seconds (``loop.time()``).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable

import httptools

from ..system.neterrors import connect_reason

__all__ = [
    "ConnectFailed",
    "Connection",
    "ConnectionLost",
    "HttpError",
    "Lanes",
    "ReadTimeout",
    "Response",
]

#: called with each complete, non-empty line of a 200 response's body (``\n``-separated; a
#: trailing ``\r`` is left on the line)
LineSink = Callable[[bytes], None]


class HttpError(Exception):
    """Base of the hot path's errors."""


class ConnectFailed(HttpError):
    """No connection could be made (refused, unreachable, DNS, connect timeout)."""


class ConnectionLost(HttpError):
    """The connection closed or broke during an exchange.

    ``answered`` tells whether any byte of the response had arrived: when not, the server never
    began to answer and the request may be sent again. ``reused`` tells whether the connection
    had already carried a whole exchange (an idle keep-alive connection the server may have
    closed meanwhile, :meth:`Connection.exchange`).
    """

    def __init__(self, reason: str, *, answered: bool, reused: bool = False) -> None:
        super().__init__(reason)
        self.answered = answered
        self.reused = reused


class ReadTimeout(HttpError):
    """Nothing arrived for ``timeout`` seconds; ``answered``: after part of the answer."""

    def __init__(self, reason: str, *, answered: bool = False) -> None:
        super().__init__(reason)
        self.answered = answered


class Response:
    """The end of one exchange: status, the headers the clients read, the body of an error."""

    __slots__ = ("body", "retry_after", "status")

    def __init__(self, status: int, retry_after: str | None, body: bytes) -> None:
        self.status = status
        self.retry_after = retry_after
        self.body = body  # only for a status other than 200 (a 200 body goes to the sink)


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; one exchange at a time (:meth:`exchange`)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.open = False
        # the exchange in progress
        self._done: asyncio.Future[Response] | None = None
        self._sink: LineSink | None = None
        self._status = 0
        self._retry_after: str | None = None
        self._header_name = b""
        self._buf = b""
        self._error_body: list[bytes] = []
        self._answered = False
        self._last = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._timeout = 0.0
        self._chunk_timeout = 0.0
        #: whole exchanges this connection has carried (> 0: it is a reused keep-alive one)
        self.exchanges = 0
        self._reused = False
        #: the response headers the clients read besides ``Retry-After``: ``Server``
        self.server_header: str | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.open = True

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        if self._done is not None and not self._done.done():
            reason = str(exc) if exc else "the server closed the connection"
            self._fail(ConnectionLost(reason, answered=self._answered, reused=self._reused))

    def data_received(self, data: bytes) -> None:
        self._last = self._loop.time()
        if not self._answered:
            self._answered = True
            # From the first byte on, the deadline is the one between chunks; the timer set
            # for the first byte may lie far beyond it, so it is set again (once per answer).
            if self._chunk_timeout < self._timeout and self._timer is not None:
                self._timer.cancel()
                self._timer = self._loop.call_at(self._last + self._chunk_timeout,
                                                 self._check_timeout)
            self._timeout = self._chunk_timeout
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            # a callback raised — the sink refused a line (bad JSON, an error object, …)
            self._fail(exc.__context__ or HttpError(str(exc)))
        except httptools.HttpParserUpgrade:  # pragma: no cover - never asked for
            self._fail(HttpError("the server switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(HttpError(f"malformed HTTP response: {exc}"))

    # -- httptools callbacks ---------------------------------------------------------------
    def on_status(self, status: bytes) -> None:
        self._status = self._parser.get_status_code()

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) == 11 and name.lower() == b"retry-after":
            self._retry_after = value.decode("latin-1")
        elif len(name) == 6 and name.lower() == b"server":
            self.server_header = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        if self._status != 200 or self._sink is None:
            self._error_body.append(body)
            return
        if self._buf:
            body = self._buf + body
        *lines, self._buf = body.split(b"\n")
        sink = self._sink
        for line in lines:
            if line and not line.isspace():
                sink(line)

    def on_message_complete(self) -> None:
        if self._buf.strip() and self._status == 200 and self._sink is not None:
            self._sink(self._buf)
        self._buf = b""
        self.exchanges += 1
        if not self._parser.should_keep_alive():
            self.open = False
        done = self._done
        self._end()
        if done is not None and not done.done():
            done.set_result(Response(self._status, self._retry_after,
                                     b"".join(self._error_body)))
        if not self.open and self.transport is not None:
            self.transport.close()

    # -- one exchange ----------------------------------------------------------------------
    async def exchange(self, request: bytes, sink: LineSink | None, timeout: float,
                       chunk_timeout: float | None = None) -> Response:
        """Write ``request``; feed the body's lines to ``sink``; return at the response's end.

        ``timeout`` bounds the wait for the first byte, ``chunk_timeout`` (default: the same)
        every later silence — deadlines suited to what is awaited (``clients.py``).

        Raises:
            ConnectionLost: the connection closed before the response ended; its ``reused``
                is True when this connection had carried an exchange before (a keep-alive
                connection the server closed while it was idle: see ``clients.py``).
            ReadTimeout: nothing arrived for ``timeout`` (``chunk_timeout``) seconds.
            HttpError: a malformed response; or whatever ``sink`` raised.
        On any error the connection is closed (a half-read response cannot be reused).
        """
        self._reused = self.exchanges > 0
        if not self.open or self.transport is None:
            raise ConnectionLost("the connection was closed", answered=False,
                                 reused=self._reused)
        loop = self._loop
        self._done = done = loop.create_future()
        self._sink = sink
        self._status = 0
        self._retry_after = None
        self._error_body = []
        self._answered = False
        self._timeout = timeout
        self._chunk_timeout = timeout if chunk_timeout is None else chunk_timeout
        self._last = loop.time()
        self._timer = loop.call_at(self._last + timeout, self._check_timeout)
        self.transport.write(request)
        try:
            return await done
        finally:
            if not done.done() or done.cancelled() or done.exception() is not None:
                self.close()
            self._end()

    def _check_timeout(self) -> None:
        self._timer = None
        if self._done is None or self._done.done():
            return
        due = self._last + self._timeout
        if self._loop.time() >= due:
            self._fail(ReadTimeout(f"nothing arrived for {self._timeout:g} s",
                                   answered=self._answered))
        else:
            self._timer = self._loop.call_at(due, self._check_timeout)

    def _fail(self, exc: BaseException) -> None:
        done = self._done
        self._end()
        if done is not None and not done.done():
            done.set_exception(exc)
        self.close()

    def _end(self) -> None:
        self._done = None
        self._sink = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close(self) -> None:
        """Close the connection now (idempotent)."""
        self.open = False
        if self.transport is not None:
            self.transport.close()


class Lanes:
    """Up to ``size`` keep-alive connections to ``host:port``, handed out last-in first-out.

    A semaphore bounds how many exchanges run at once; a connection is made on first need (or
    again after the server closed one). ``ssl_context`` is ``None`` for ``http://``.
    """

    __slots__ = ("_all", "_connect_timeout", "_free", "_host", "_port", "_sem", "_ssl",
                 "_tls_name", "size")

    def __init__(self, host: str, port: int, size: int, *, ssl_context: ssl.SSLContext | None,
                 connect_timeout: float) -> None:
        self._host = host
        self._port = port
        self.size = size
        self._sem = asyncio.Semaphore(size)
        self._free: list[Connection] = []
        self._all: list[Connection] = []
        self._ssl = ssl_context
        self._tls_name = host if ssl_context is not None else None
        self._connect_timeout = connect_timeout

    async def acquire(self, *, fresh: bool = False) -> Connection:
        """A free connection (waits while ``size`` are in use); ``fresh``: a new one, never an
        idle keep-alive connection. Raises :class:`ConnectFailed`."""
        await self._sem.acquire()
        free = self._free
        while free and not fresh:
            conn = free.pop()
            if conn.open:
                return conn
            self._forget(conn)
        try:
            return await self._connect()
        except BaseException:
            self._sem.release()
            raise

    def release(self, conn: Connection) -> None:
        """Give ``conn`` back (a closed one is dropped; the next acquire makes a new one)."""
        if conn.open:
            self._free.append(conn)
        else:
            self._forget(conn)
        self._sem.release()

    async def _connect(self) -> Connection:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: Connection(loop), self._host, self._port,
                                       ssl=self._ssl, server_hostname=self._tls_name),
                self._connect_timeout)
        except asyncio.TimeoutError:
            raise ConnectFailed("connect timed out") from None
        except ConnectionRefusedError:
            raise ConnectFailed("connection refused") from None
        except socket.gaierror as exc:  # the real cause, not "connection refused"
            raise ConnectFailed(connect_reason(exc, self._host) or str(exc)) from exc
        except OSError as exc:
            raise ConnectFailed(exc.strerror or str(exc) or type(exc).__name__) from exc
        self._all.append(conn)
        return conn

    def _forget(self, conn: Connection) -> None:
        if conn in self._all:
            self._all.remove(conn)

    def close(self) -> None:
        """Close every connection."""
        conns, self._all, self._free = self._all, [], []
        for conn in conns:
            conn.close()
