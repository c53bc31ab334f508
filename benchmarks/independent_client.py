"""A minimal streaming client that shares no code with the kit: the yardstick of real_engine.py.

It sends each prompt once, ``concurrency`` at a time, streams the answer and records per request:
sent → first token (TTFT), sent → last token (latency), output tokens (the server's own count
from the final message), and the run's makespan. Two wire formats: Ollama's native
``/api/generate`` (NDJSON lines) and the OpenAI-compatible ``/v1/chat/completions`` (the
prompt as one user message; server-sent events, usage from ``stream_options.include_usage``). Only httpx and the standard library.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx


async def _one(client: httpx.AsyncClient, url: str, api: str, model: str, prompt: str,
               num_predict: int) -> dict:
    if api == "ollama":
        path, body = "/api/generate", {"model": model, "prompt": prompt, "stream": True,
                                       "options": {"num_predict": num_predict}}
    else:
        path, body = "/v1/chat/completions", {
            "model": model, "messages": [{"role": "user", "content": prompt}], "stream": True,
            "max_tokens": num_predict, "stream_options": {"include_usage": True}}
    sent = time.perf_counter()
    first = None
    tokens = 0
    async with client.stream("POST", url + path, json=body) as resp:
        resp.raise_for_status()
        async for line in resp.aiter_lines():
            if api != "ollama":
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                line = line[6:]
            if not line.strip():
                continue
            msg = json.loads(line)
            text = msg.get("response") if api == "ollama" else (
                ((msg.get("choices") or [{}])[0].get("delta") or {}).get("content"))
            if text and first is None:
                first = time.perf_counter()
            if api == "ollama" and msg.get("done"):
                tokens = msg.get("eval_count", 0)
            if api != "ollama" and msg.get("usage"):
                tokens = msg["usage"].get("completion_tokens", 0)
    end = time.perf_counter()
    return {"sent": sent, "ttft_s": (first or end) - sent, "latency_s": end - sent,
            "output_tokens": tokens, "end": end}


async def run(url: str, prompts: list[str], *, api: str, model: str, num_predict: int,
              concurrency: int) -> list[dict]:
    """Every prompt once, at most ``concurrency`` in flight; one dict per request."""
    gate = asyncio.Semaphore(concurrency)
    # a new connection per request: llama-server closes one after each streamed answer, and
    # httpx would otherwise reuse it once and fail (a loopback connect costs ~0.1 ms)
    async with httpx.AsyncClient(timeout=None, limits=httpx.Limits(
            max_connections=concurrency, max_keepalive_connections=0)) as client:
        async def guarded(p: str) -> dict:
            async with gate:
                return await _one(client, url, api, model, p, num_predict)
        return list(await asyncio.gather(*(guarded(p) for p in prompts)))
