"""The clients' hot path (parallel_kit.clients._http1) fed bytes directly, however the network splits them."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parallel_kit.clients._http1 import Connection, ConnectionLost, HttpError, ReadTimeout, Response


class FakeTransport(asyncio.Transport):
    """Records what the connection writes; closing calls ``connection_lost`` like asyncio does."""

    def __init__(self, protocol: Connection) -> None:
        super().__init__()
        self.protocol = protocol
        self.written = b""
        self.closed = False

    def write(self, data: bytes) -> None:  # type: ignore[override]
        self.written += data

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def is_closing(self) -> bool:
        return self.closed


def chunked(lines: list[bytes]) -> bytes:
    """A 200 response with chunked transfer coding, one chunk per line."""
    body = b"".join(b"%x\r\n%s\r\n" % (len(line), line) for line in lines)
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + body + b"0\r\n\r\n")


async def exchange(wire: bytes, cuts: list[int], timeout: float = 5.0
                   ) -> tuple[Response, list[bytes], Connection]:
    loop = asyncio.get_running_loop()
    conn = Connection(loop)
    conn.connection_made(FakeTransport(conn))
    got: list[bytes] = []
    task = asyncio.ensure_future(conn.exchange(b"POST / HTTP/1.1\r\n\r\n", got.append, timeout))
    await asyncio.sleep(0)
    bounds = sorted({c for c in cuts if 0 < c < len(wire)})
    for a, b in zip([0, *bounds], [*bounds, len(wire)], strict=True):
        conn.data_received(wire[a:b])
    return await task, got, conn


LINES = st.lists(st.binary(min_size=1, max_size=40).map(lambda b: b.replace(b"\n", b"x") + b"\n"),
                 min_size=1, max_size=8)


@settings(max_examples=60, deadline=None)
@given(LINES, st.lists(st.integers(0, 2000), max_size=12))
def test_every_line_arrives_once_in_order_however_the_bytes_are_split(
        lines: list[bytes], cuts: list[int]) -> None:
    response, got, conn = asyncio.run(exchange(chunked(lines), cuts))
    assert response.status == 200
    assert got == [line[:-1] for line in lines if line[:-1].strip()]
    assert conn.open  # keep-alive: the connection can take the next request


def test_a_line_split_across_chunks_is_joined() -> None:
    wire = chunked([b'{"response": "Ray', b'leigh"}\n', b'{"done": true}\n'])
    response, got, _ = asyncio.run(exchange(wire, []))
    assert response.status == 200
    assert got == [b'{"response": "Rayleigh"}', b'{"done": true}']


def test_an_error_status_keeps_its_body_and_retry_after() -> None:
    body = b'{"error": "server busy"}'
    wire = (b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 2\r\nContent-Length: %d\r\n\r\n%s"
            % (len(body), body))
    response, got, _ = asyncio.run(exchange(wire, [7]))
    assert (response.status, response.retry_after, response.body) == (503, "2", body)
    assert got == []


def test_connection_close_from_the_server_ends_the_lane() -> None:
    wire = (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\nok\n")
    response, got, conn = asyncio.run(exchange(wire, []))
    assert response.status == 200 and got == [b"ok"]
    assert not conn.open


def test_a_sink_that_refuses_a_line_fails_the_exchange_with_its_error() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        conn = Connection(loop)
        conn.connection_made(FakeTransport(conn))

        def sink(line: bytes) -> None:
            raise ValueError(f"not JSON: {line!r}")

        task = asyncio.ensure_future(conn.exchange(b"x", sink, 5.0))
        await asyncio.sleep(0)
        conn.data_received(chunked([b"<html>\n"]))
        with pytest.raises(ValueError, match="not JSON"):
            await task
        assert not conn.open  # a half-read answer is never reused

    asyncio.run(main())


def test_lost_before_any_byte_says_unanswered_and_after_says_answered() -> None:
    async def main(feed: bytes) -> ConnectionLost:
        loop = asyncio.get_running_loop()
        conn = Connection(loop)
        conn.connection_made(FakeTransport(conn))
        task = asyncio.ensure_future(conn.exchange(b"x", None, 5.0))
        await asyncio.sleep(0)
        if feed:
            conn.data_received(feed)
        conn.connection_lost(ConnectionResetError("reset by peer"))
        with pytest.raises(ConnectionLost) as info:
            await task
        return info.value

    assert asyncio.run(main(b"")).answered is False
    assert asyncio.run(main(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")).answered


def test_silence_longer_than_the_timeout_is_a_read_timeout() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        conn = Connection(loop)
        conn.connection_made(FakeTransport(conn))
        with pytest.raises(ReadTimeout):
            await conn.exchange(b"x", None, 0.05)

    asyncio.run(main())


def test_a_malformed_response_is_an_http_error() -> None:
    with pytest.raises(HttpError, match="malformed"):
        asyncio.run(exchange(b"NOT HTTP AT ALL\r\n\r\n", []))
