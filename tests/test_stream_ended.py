"""A stream cut off mid-answer is reported as that, naming the server — not as "no Ollama"."""

from __future__ import annotations

import asyncio
import json

import pytest

from parallel_kit.clients import OllamaClient
from parallel_kit.errors import OllamaUnavailable, StreamEnded
from parallel_kit.records import RequestSpec
from parallel_kit.timing import ModelClock


async def _half_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A real server that answers 200, streams one NDJSON line, then drops the connection."""
    await reader.readuntil(b"\r\n\r\n")
    line = json.dumps({"model": "m", "response": "Hello", "done": False}).encode() + b"\n"
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n"
                 + f"{len(line):x}\r\n".encode() + line + b"\r\n")
    await writer.drain()
    writer.transport.abort()  # cut off: no final line, no terminating chunk


async def test_a_stream_cut_off_mid_answer_says_it_ended_early_and_where():
    server = await asyncio.start_server(_half_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with OllamaClient(f"127.0.0.1:{port}") as client:
            row = await client.run(RequestSpec(prompt="hi", request_id="r0"),
                                   clock=ModelClock(), mode="test", model="m")
            with pytest.raises(StreamEnded) as info:
                await client.run(RequestSpec(prompt="hi", request_id="r1"), clock=ModelClock(),
                                 mode="test", model="m", raise_for=(OllamaUnavailable,))
    finally:
        server.close()
        await server.wait_closed()
    assert not row.ok
    assert f"127.0.0.1:{port}" in row.error and "ended early" in row.error
    assert "no Ollama answers" not in row.error and "ollama serve" not in row.error
    assert isinstance(info.value, OllamaUnavailable)  # pool/ray still fail it over
