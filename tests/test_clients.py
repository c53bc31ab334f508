"""The clients against small real HTTP servers on loopback that answer like Ollama does.

Each test starts a Starlette app under uvicorn on a free 127.0.0.1 port and checks what the
client records: streamed pieces, server durations, the error shapes of docs/OLLAMA_BEHAVIOUR.md (404, 400,
503 busy, an error line mid-stream), refused connections, timeouts and SSE with usage.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from parallel_kit.clients import OllamaClient, OpenAIClient, RetryPolicy
from parallel_kit.errors import ModelNotFound, OllamaUnavailable, RequestTimeout
from parallel_kit.records import RequestSpec
from parallel_kit.timing import ModelClock

BUSY_BODY = {"error": "server busy, please try again.  maximum pending requests exceeded"}
FAST_RETRY = RetryPolicy(max_retries=2, backoff_s=0.01, max_backoff_s=0.02)

Handler = Callable[[Request], Awaitable[Response]]


@contextlib.asynccontextmanager
async def serve(routes: dict[str, Handler]) -> AsyncIterator[str]:
    """Run ``routes`` (path → handler, any method) on a free loopback port; yield the URL."""
    app = Starlette(routes=[Route(p, h, methods=["GET", "POST", "HEAD"])
                            for p, h in routes.items()])
    # IPPROTO_TCP: asyncio then sets TCP_NODELAY on accepted connections (with proto 0 it
    # does not, and a reused keep-alive connection stalls ~40 ms on Nagle + delayed ACK).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_level="error", access_log=False, lifespan="off",
                            timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.005)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ndjson(*objs: dict[str, Any], delay_s: float = 0.0) -> StreamingResponse:
    async def gen() -> AsyncIterator[bytes]:
        for obj in objs:
            if delay_s:
                await asyncio.sleep(delay_s)
            yield json.dumps(obj).encode() + b"\n"
    return StreamingResponse(gen(), media_type="application/x-ndjson")


FINAL = {"model": "m", "created_at": "t", "response": "", "done": True, "done_reason": "stop",
         "total_duration": 2_500_000_000, "load_duration": 500_000_000,
         "prompt_eval_count": 7, "prompt_eval_duration": 250_000_000,
         "eval_count": 3, "eval_duration": 1_500_000_000}


def piece(text: str) -> dict[str, Any]:
    return {"model": "m", "created_at": "t", "response": text, "done": False}


async def run_one(client: OllamaClient | OpenAIClient, spec: RequestSpec | None = None,
                  **kw: Any) -> Any:
    return await client.run(spec or RequestSpec("Why is the sky blue?", model="m",
                                                request_id="r0"),
                            clock=ModelClock(), mode="test", **kw)


async def test_streamed_generate_records_pieces_ttft_and_server_durations() -> None:
    seen: list[dict[str, Any]] = []

    async def generate(request: Request) -> Response:
        seen.append(await request.json())
        return ndjson(piece(""), piece("Rayleigh"), piece(" scattering"), FINAL, delay_s=0.05)

    async with serve({"/api/generate": generate}) as url, OllamaClient(url) as client:
        spec = RequestSpec("Why?", model="m", num_predict=3, options={"seed": 1},
                           request_id="r7")
        row = await run_one(client, spec, model="default-model", worker="gpu0")
    assert row.ok, row.error
    assert seen == [{"model": "m", "prompt": "Why?", "stream": True,
                     "options": {"seed": 1, "num_predict": 3}}]
    assert (row.request_id, row.mode, row.worker, row.model) == ("r7", "test", "gpu0", "m")
    assert row.response == "Rayleigh scattering"
    # The empty first piece does not count: the first token comes with the second line.
    assert row.started_s <= 0.09 < row.first_token_s < row.finished_s
    assert row.ttft_s == pytest.approx(row.first_token_s - row.submitted_s)
    assert row.latency_s == pytest.approx(row.finished_s - row.submitted_s)
    assert (row.prompt_tokens, row.output_tokens) == (7, 3)
    assert row.server_total_s == pytest.approx(2.5)
    assert row.server_load_s == pytest.approx(0.5)
    assert row.server_prompt_eval_s == pytest.approx(0.25)
    assert row.server_eval_s == pytest.approx(1.5)
    assert row.retries == 0


async def test_chat_api_sends_messages_and_reads_message_content() -> None:
    seen: list[dict[str, Any]] = []

    async def chat(request: Request) -> Response:
        seen.append(await request.json())
        msg = {"model": "m", "created_at": "t", "done": False,
               "message": {"role": "assistant", "content": "Paris"}}
        final = dict(FINAL, message={"role": "assistant", "content": ""})
        final.pop("response")
        return ndjson(msg, final)

    async with serve({"/api/chat": chat}) as url, OllamaClient(url, api="chat") as client:
        row = await run_one(client, RequestSpec("Capital of France?", model="m",
                                                system="Be brief."))
    assert row.ok and row.response == "Paris"
    assert seen[0]["messages"] == [{"role": "system", "content": "Be brief."},
                                   {"role": "user", "content": "Capital of France?"}]
    assert row.output_tokens == 3 and row.server_eval_s == pytest.approx(1.5)


async def test_unknown_model_is_a_failed_row_that_says_how_to_pull_it() -> None:
    async def generate(request: Request) -> Response:
        body = await request.json()
        return JSONResponse({"error": f"model '{body['model']}' not found"}, status_code=404)

    async with serve({"/api/generate": generate}) as url, OllamaClient(url) as client:
        row = await run_one(client, RequestSpec("hi", model="nope:1b"))
    assert not row.ok and row.retries == 0
    assert "model 'nope:1b' not found" in row.error
    assert "ollama pull nope:1b" in row.error
    assert row.finished_s >= row.submitted_s


async def test_bad_request_400_is_a_failed_row_with_the_servers_reason() -> None:
    async def generate(request: Request) -> Response:
        return JSONResponse({"error": "model is required"}, status_code=400)

    async with serve({"/api/generate": generate}) as url, OllamaClient(url) as client:
        row = await run_one(client)
    assert not row.ok
    assert "HTTP 400: model is required" in row.error and "check the model name" in row.error


async def test_busy_server_is_retried_with_backoff_and_the_retries_are_counted() -> None:
    calls = 0

    async def generate(request: Request) -> Response:
        nonlocal calls
        calls += 1
        if calls <= 2:
            return JSONResponse(BUSY_BODY, status_code=503)
        return ndjson(piece("ok"), FINAL)

    async with serve({"/api/generate": generate}) as url, \
            OllamaClient(url, retry=FAST_RETRY) as client:
        row = await run_one(client)
    assert row.ok, row.error
    assert row.retries == 2 and calls == 3


async def test_busy_server_gives_up_after_max_retries_naming_the_queue_limit() -> None:
    calls = 0

    async def generate(request: Request) -> Response:
        nonlocal calls
        calls += 1
        return JSONResponse(BUSY_BODY, status_code=503)

    async with serve({"/api/generate": generate}) as url, \
            OllamaClient(url, retry=FAST_RETRY) as client:
        row = await run_one(client)
    assert not row.ok
    assert row.retries == 2 and calls == 3
    assert "maximum pending requests exceeded" in row.error
    assert "OLLAMA_MAX_QUEUE" in row.error


async def test_error_line_mid_stream_is_a_failed_row_not_a_crash() -> None:
    async def generate(request: Request) -> Response:
        return ndjson(piece("Once"), {"error": "an error was encountered while running the model"})

    async with serve({"/api/generate": generate}) as url, OllamaClient(url) as client:
        row = await run_one(client)
    assert not row.ok
    assert "stopped the answer with an error: an error was encountered" in row.error
    assert row.first_token_s <= row.finished_s  # the piece before the error was seen


async def test_answer_that_ends_without_a_done_object_is_a_failed_row() -> None:
    async def generate(request: Request) -> Response:
        return ndjson(piece("Once"), piece(" upon"))

    async with serve({"/api/generate": generate}) as url, OllamaClient(url) as client:
        row = await run_one(client)
    assert not row.ok and "ended before its final (done) object" in row.error


async def test_closed_port_is_unavailable_with_the_fix_and_counted_retries() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    async with OllamaClient(url, retry=FAST_RETRY) as client:
        row = await run_one(client)
    assert not row.ok
    assert f"no Ollama answers at {url}" in row.error
    assert "connection refused" in row.error
    assert "ollama serve" in row.error and "PARALLEL_KIT_BACKEND=sim" in row.error
    assert row.retries == 2


async def test_raise_for_raises_the_typed_error_instead_of_recording_it() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    async with OllamaClient(url, retry=RetryPolicy(max_retries=0)) as client:
        with pytest.raises(OllamaUnavailable):
            await run_one(client, raise_for=(OllamaUnavailable,))
        # Other types are still recorded.
        row = await run_one(client, raise_for=(ModelNotFound,))
    assert not row.ok


async def test_server_slower_than_the_timeout_is_a_request_timeout() -> None:
    async def generate(request: Request) -> Response:
        await asyncio.sleep(1.0)
        return ndjson(FINAL)

    async with serve({"/api/generate": generate}) as url, \
            OllamaClient(url, timeout=0.1) as client:
        row = await run_one(client)
    assert not row.ok and row.retries == 0
    assert "within 0.1 s" in row.error and str(RequestTimeout(url, 0.1)) == row.error


async def test_requests_beyond_max_connections_wait_for_a_free_connection() -> None:
    active = peak = 0
    ports: set[int] = set()

    async def generate(request: Request) -> Response:
        nonlocal active, peak
        assert request.client is not None
        ports.add(request.client.port)
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.03)
        active -= 1
        return ndjson(piece("x"), FINAL)

    async with serve({"/api/generate": generate}) as url, \
            OllamaClient(url, max_connections=2) as client:
        clock = ModelClock()
        rows = await asyncio.gather(*(
            client.run(RequestSpec(f"p{i}", model="m"), clock=clock, mode="t")
            for i in range(8)))
    assert all(r.ok for r in rows)
    assert peak == 2
    assert len(ports) == 2  # keep-alive: 8 requests over the same 2 connections


async def test_openai_client_streams_sse_and_reads_usage() -> None:
    seen: list[dict[str, Any]] = []

    async def completions(request: Request) -> Response:
        seen.append(await request.json())

        def chunk(**kw: Any) -> bytes:
            obj = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
                   "model": "m", "system_fingerprint": "fp_ollama", **kw}
            return b"data: " + json.dumps(obj).encode() + b"\n\n"

        async def gen() -> AsyncIterator[bytes]:
            yield chunk(choices=[{"index": 0, "delta": {"role": "assistant", "content": ""},
                                  "finish_reason": None}])
            yield chunk(choices=[{"index": 0, "delta": {"content": "Hel"},
                                  "finish_reason": None}])
            yield chunk(choices=[{"index": 0, "delta": {"content": "lo"},
                                  "finish_reason": "stop"}])
            yield chunk(choices=[], usage={"prompt_tokens": 11, "completion_tokens": 2,
                                           "total_tokens": 13})
            yield b"data: [DONE]\n\n"
        return StreamingResponse(gen(), media_type="text/event-stream")

    async with serve({"/v1/chat/completions": completions}) as url, \
            OpenAIClient(url + "/v1") as client:
        row = await run_one(client, RequestSpec("Hi", model="m", num_predict=5,
                                                options={"temperature": 0, "num_ctx": 4096}))
    assert row.ok, row.error
    assert seen[0] == {"model": "m", "messages": [{"role": "user", "content": "Hi"}],
                       "stream": True, "stream_options": {"include_usage": True},
                       "max_tokens": 5, "temperature": 0}
    assert row.response == "Hello"
    assert (row.prompt_tokens, row.output_tokens) == (11, 2)
    assert row.first_token_s <= row.finished_s and row.server_eval_s is None


async def test_openai_error_object_for_an_unknown_model_is_model_not_found() -> None:
    async def completions(request: Request) -> Response:
        return JSONResponse({"error": {"message": 'model "x" not found, try pulling it first',
                                       "type": "not_found_error", "param": None,
                                       "code": None}}, status_code=404)

    async with serve({"/v1/chat/completions": completions}) as url, \
            OpenAIClient(url) as client:
        row = await run_one(client, RequestSpec("Hi", model="x"))
    assert not row.ok and "model 'x' not found" in row.error and "ollama pull x" in row.error


async def test_an_answer_that_is_not_json_is_a_failed_row_naming_the_server() -> None:
    transport = httpx.MockTransport(lambda req: httpx.Response(200, text="<html>hi</html>"))
    async with OllamaClient("127.0.0.1:9", transport=transport) as client:
        row = await run_one(client)
    assert not row.ok
    assert "other than Ollama's streaming JSON" in row.error
    assert "is http://127.0.0.1:9 an Ollama server" in row.error


async def test_low_level_calls_read_tags_ps_version_and_alive() -> None:
    async def tags(request: Request) -> Response:
        return JSONResponse({"models": [{"name": "llama3.2:3b", "model": "llama3.2:3b"}]})

    async def ps(request: Request) -> Response:
        return JSONResponse({"models": [{"name": "llama3.2:3b", "size_vram": 1}]})

    async def version(request: Request) -> Response:
        return JSONResponse({"version": "0.12.3"})

    async def root(request: Request) -> Response:
        return Response("Ollama is running")

    async def generate(request: Request) -> Response:
        body = await request.json()
        if body["model"] != "llama3.2:3b":
            return JSONResponse({"error": f"model '{body['model']}' not found"}, status_code=404)
        return JSONResponse({"model": body["model"], "response": "", "done": True,
                             "done_reason": "unload" if body.get("keep_alive") == 0 else "load",
                             "load_duration": 10})

    routes = {"/": root, "/api/tags": tags, "/api/ps": ps, "/api/version": version,
              "/api/generate": generate}
    async with serve(routes) as url, OllamaClient(url) as client:
        assert await client.is_alive()
        assert await client.list_models() == ["llama3.2:3b"]
        assert (await client.ps())[0]["size_vram"] == 1
        assert await client.version() == "0.12.3"
        assert (await client.load("llama3.2:3b"))["done_reason"] == "load"
        assert (await client.unload("llama3.2:3b"))["done_reason"] == "unload"
        with pytest.raises(ModelNotFound, match="ollama pull other"):
            await client.load("other")


async def test_low_level_calls_on_a_closed_port_raise_unavailable_and_alive_is_false() -> None:
    async with OllamaClient(f"127.0.0.1:{closed_port()}") as client:
        assert not await client.is_alive()
        with pytest.raises(OllamaUnavailable, match="start it with `ollama serve`"):
            await client.list_models()


async def test_cancelling_a_run_propagates_cancellation() -> None:
    async def generate(request: Request) -> Response:
        return ndjson(piece("a"), piece("b"), FINAL, delay_s=0.5)

    async with serve({"/api/generate": generate}) as url, OllamaClient(url) as client:
        task = asyncio.create_task(run_one(client))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_backoff_doubles_with_jitter_and_honours_retry_after() -> None:
    policy = RetryPolicy(max_retries=5, backoff_s=0.1, max_backoff_s=1.0, jitter=0.5)
    for retry, base in [(0, 0.1), (1, 0.2), (2, 0.4), (5, 1.0)]:
        waits = [policy.delay_s(retry) for _ in range(50)]
        assert all(base * 0.5 <= w <= base * 1.5 for w in waits)
        assert len(set(waits)) > 1  # jittered
    assert policy.delay_s(0, retry_after_s=0.8) >= 0.8
    with pytest.raises(ValueError, match="jitter"):
        RetryPolicy(jitter=2)


def test_bad_client_arguments_are_rejected_with_the_reason() -> None:
    with pytest.raises(ValueError, match="max_connections"):
        OllamaClient("127.0.0.1", max_connections=0)
    with pytest.raises(ValueError, match="OpenAIClient"):
        OllamaClient("127.0.0.1", api="openai")


async def test_gaps_between_streamed_pieces_go_into_the_clients_itl_sketch() -> None:
    async def generate(request: Request) -> Response:
        return ndjson(piece("a"), piece("b"), piece("c"), piece("d"), FINAL, delay_s=0.02)

    async with serve({"/api/generate": generate}) as url, OllamaClient(url) as client:
        first = await run_one(client)
        second = await run_one(client)
    assert first.ok and second.ok, (first.error, second.error)
    # four pieces each: three gaps per answer, none stored in the rows
    assert client.itl.count == 6
    decode = sum(r.latency_s - r.ttft_s for r in (first, second))
    assert client.itl.mean * 6 <= decode + 1e-6
    assert not hasattr(first, "__dict__")  # rows have slots: no per-chunk list hides in them


async def test_a_connection_the_server_closes_after_each_answer_is_replaced() -> None:
    async def generate(request: Request) -> Response:
        response = ndjson(piece("x"), FINAL)
        response.headers["Connection"] = "close"
        return response

    async with serve({"/api/generate": generate}) as url, \
            OllamaClient(url, max_connections=1, retry=FAST_RETRY) as client:
        rows = [await run_one(client) for _ in range(3)]
    assert all(r.ok for r in rows), [r.error for r in rows]
    assert all(r.retries == 0 for r in rows)  # a closed lane is replaced, not retried


async def test_a_failed_request_adds_nothing_to_the_itl_sketch() -> None:
    async def generate(request: Request) -> Response:
        return ndjson(piece("a"), piece("b"), {"error": "model crashed"})

    async with serve({"/api/generate": generate}) as url, OllamaClient(url) as client:
        row = await run_one(client)
    assert not row.ok and "model crashed" in (row.error or "")
    assert client.itl.count == 0
