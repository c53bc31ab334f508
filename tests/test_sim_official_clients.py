"""The official ``ollama`` and ``openai`` Python clients work against the simulator unchanged."""

from __future__ import annotations

import ollama
import openai
import pytest

from parallel_kit.sim.server import simulated_ollama

MODEL = "llama3.2:3b"
pytestmark = pytest.mark.timeout(60)


async def test_ollama_async_client_generate_chat_stream_list_ps():
    async with simulated_ollama(time_scale=0.01) as url:
        client = ollama.AsyncClient(host=url)
        out = await client.generate(model=MODEL, prompt="What is Python?",
                                    options={"num_predict": 8})
        assert out.done and out.eval_count == 8 and out.response
        assert out.eval_duration == pytest.approx(0.8e9, rel=1e-6)

        pieces = [p async for p in await client.chat(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True,
            options={"num_predict": 4})]
        assert [p.done for p in pieces] == [False] * 4 + [True]
        assert pieces[-1].done_reason == "length"

        chat = await client.chat(model="llama3.2", messages=[{"role": "user", "content": "hi"}],
                                 options={"num_predict": 3})
        assert chat.message.role == "assistant" and chat.message.content

        assert MODEL in [m.model for m in (await client.list()).models]
        assert [m.model for m in (await client.ps()).models] == [MODEL, "llama3.2:latest"]


def test_ollama_sync_client_streams_generate_and_raises_404():
    from parallel_kit.sim.server import SimulatedOllama

    sim = SimulatedOllama(time_scale=0.01)
    url = sim.start_in_thread()
    try:
        client = ollama.Client(host=url)
        chunks = list(client.generate(model=MODEL, prompt="x", stream=True,
                                      options={"num_predict": 3}))
        assert len(chunks) == 4 and chunks[-1].done
        with pytest.raises(ollama.ResponseError) as err:
            client.generate(model="nope", prompt="x")
        assert err.value.status_code == 404
        assert "model 'nope' not found" in err.value.error
    finally:
        sim.stop()


async def test_openai_client_chat_with_and_without_stream_and_usage():
    async with simulated_ollama(time_scale=0.01) as url:
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="ollama")
        try:
            out = await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=6)
            assert out.object == "chat.completion" and out.id.startswith("chatcmpl-")
            assert out.choices[0].finish_reason == "length"
            assert out.usage is not None and out.usage.completion_tokens == 6

            stream = await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=5,
                stream=True, stream_options={"include_usage": True})
            chunks = [c async for c in stream]
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            assert text
            assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 5

            comp = await client.completions.create(model=MODEL, prompt="hi", max_tokens=4)
            assert comp.object == "text_completion" and comp.choices[0].text
            assert comp.usage.completion_tokens == 4

            comp_stream = await client.completions.create(model=MODEL, prompt="hi",
                                                          max_tokens=3, stream=True)
            parts = [c.choices[0].text async for c in comp_stream]
            assert len(parts) == 4  # three tokens and the closing chunk

            models = [m.id async for m in client.models.list()]
            assert MODEL in models

            with pytest.raises(openai.NotFoundError):
                await client.chat.completions.create(
                    model="nope", messages=[{"role": "user", "content": "hi"}])
        finally:
            await client.close()
