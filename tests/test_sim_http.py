"""The simulated Ollama over real HTTP: Ollama's answers, timing, slots, loading, faults."""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import httpx
import pytest

from parallel_kit.cli.sim import run as run_sim_command
from parallel_kit.errors import ConfigError
from parallel_kit.sim.faults import Faults
from parallel_kit.sim.profiles import load_profile
from parallel_kit.sim.server import SimulatedOllama, simulated_ollama

MODEL = "llama3.2:3b"


def body(prompt: str = "What is Python?", **extra):
    return {"model": MODEL, "prompt": prompt, "stream": False, **extra}


async def test_root_version_tags_and_head():
    async with simulated_ollama(time_scale=0.02) as url, httpx.AsyncClient(base_url=url) as c:
        r = await c.get("/")
        assert (r.status_code, r.text) == (200, "Ollama is running")
        assert (await c.head("/")).status_code == 200
        assert "version" in (await c.get("/api/version")).json()
        names = [m["name"] for m in (await c.get("/api/tags")).json()["models"]]
        assert MODEL in names
        assert (await c.get("/nope")).status_code == 404


async def test_one_seed_request_takes_ten_model_seconds_and_a_fifth_of_a_second():
    async with simulated_ollama(time_scale=0.02) as url, httpx.AsyncClient(base_url=url) as c:
        t0 = time.perf_counter()
        out = (await c.post("/api/generate", json=body())).json()
        wall = time.perf_counter() - t0
    assert out["done"] is True and out["done_reason"] == "stop"
    assert out["total_duration"] == pytest.approx(10e9, rel=1e-3)
    assert out["eval_duration"] == pytest.approx(10e9, rel=1e-6)
    assert out["eval_count"] == 100 and out["load_duration"] == 0
    assert len(out["context"]) == out["prompt_eval_count"] + out["eval_count"]
    assert 0.19 <= wall < 0.45


async def test_stream_is_ndjson_by_default_with_a_final_object():
    chat = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}],
            "options": {"num_predict": 5}}
    async with simulated_ollama(time_scale=0.01) as url, \
            httpx.AsyncClient(base_url=url) as c, c.stream("POST", "/api/chat", json=chat) as r:
        assert r.headers["content-type"] == "application/x-ndjson"
        lines = [json.loads(x) async for x in r.aiter_lines() if x]
    assert [x["done"] for x in lines] == [False] * 5 + [True]
    assert all(x["message"]["role"] == "assistant" for x in lines)
    assert lines[-1]["done_reason"] == "length" and lines[-1]["eval_count"] == 5


async def test_four_slots_overlap_four_requests_each_slower_and_a_fifth_waits():
    seed = load_profile("seed")
    async with SimulatedOllama("seed", num_parallel=4, time_scale=0.01) as sim, \
            httpx.AsyncClient(base_url=sim.url, timeout=30) as c:
        outs = await asyncio.gather(*(c.post("/api/generate", json=body(f"p{i}"))
                                      for i in range(5)))
        stats = (await c.get("/sim/stats")).json()
    totals = sorted(r.json()["total_duration"] / 1e9 for r in outs)
    together = 10.0 * 4 / seed.S(4)  # 100 tokens at 10 × S(4) / 4 tokens/s each
    assert totals[:4] == pytest.approx([together] * 4, rel=0.03)
    # The fifth waited for a slot, then ran alone: 10 s more.
    assert totals[4] == pytest.approx(together + 10.0, rel=0.03)
    assert stats["max_active"] == 4 and stats["completed"] == 5


async def test_load_time_on_first_use_and_after_keep_alive_expires():
    async with SimulatedOllama("rtx4090", time_scale=0.02) as sim, \
            httpx.AsyncClient(base_url=sim.url) as c:
        first = (await c.post("/api/generate", json=body(options={"num_predict": 2},
                                                         keep_alive="1s"))).json()
        second = (await c.post("/api/generate", json=body(options={"num_predict": 2},
                                                          keep_alive="1s"))).json()
        await asyncio.sleep(1.0 * 0.02 + 0.05)  # past 1 s of model time
        assert (await c.get("/api/ps")).json()["models"] == []
        third = (await c.post("/api/generate", json=body(options={"num_predict": 2}))).json()
    assert first["load_duration"] == pytest.approx(0.6e9, rel=0.01)
    assert second["load_duration"] == 0
    assert third["load_duration"] == pytest.approx(0.6e9, rel=0.01)


async def test_empty_prompt_loads_and_keep_alive_zero_unloads():
    async with simulated_ollama(time_scale=0.02) as url, httpx.AsyncClient(base_url=url) as c:
        loaded = (await c.post("/api/generate", json={"model": MODEL})).json()
        ps = (await c.get("/api/ps")).json()["models"]
        unloaded = (await c.post("/api/generate", json={"model": MODEL, "keep_alive": 0})).json()
        ps_after = (await c.get("/api/ps")).json()["models"]
        await c.post("/api/generate", json=body(options={"num_predict": 1}, keep_alive=0))
        ps_after_request = (await c.get("/api/ps")).json()["models"]
    assert (loaded["done"], loaded["done_reason"]) == (True, "load")
    assert [m["name"] for m in ps] == [MODEL] and "expires_at" in ps[0]
    assert unloaded["done_reason"] == "unload"
    assert ps_after == [] and ps_after_request == []


async def test_busy_503_past_max_queue_while_the_model_loads():
    async with SimulatedOllama("rtx4090", max_queue=1, time_scale=0.05) as sim, \
            httpx.AsyncClient(base_url=sim.url) as c:
        rs = await asyncio.gather(*(c.post("/api/generate", json=body(
            f"p{i}", options={"num_predict": 1})) for i in range(3)))
    codes = sorted(r.status_code for r in rs)
    assert codes == [200, 503, 503]
    busy = next(r for r in rs if r.status_code == 503)
    assert busy.json() == {
        "error": "server busy, please try again.  maximum pending requests exceeded"}


@pytest.mark.parametrize(("payload", "status", "message"), [
    (b'{"prompt": "hi"}', 400, "model is required"),
    (b'{"model": "nope", "prompt": "hi"}', 404, "model 'nope' not found"),
    (b'{"model": "llama3.2:3b", "prompt": ', 400, "invalid JSON"),
    (b'{"model": "llama3.2:3b", "prompt": "hi", "keep_alive": "soon"}', 400, "invalid duration"),
    # api.Options.FromMap refuses it when the model is scheduled: a 500 (api/types.go).
    (b'{"model": "llama3.2:3b", "prompt": "hi", "options": {"num_predict": "x"}}', 500,
     'option "num_predict" must be of type integer'),
])
async def test_native_errors_have_ollamas_status_and_body(payload, status, message):
    async with simulated_ollama(time_scale=0.01) as url, httpx.AsyncClient(base_url=url) as c:
        r = await c.post("/api/generate", content=payload)
    assert r.status_code == status
    assert message in r.json()["error"]


async def test_openai_errors_have_openais_shape():
    async with simulated_ollama(time_scale=0.01) as url, httpx.AsyncClient(base_url=url) as c:
        r = await c.post("/v1/chat/completions", json={
            "model": "nope", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 404
    err = r.json()["error"]
    assert err["type"] == "not_found_error" and "nope" in err["message"]
    assert err["param"] is None and err["code"] is None


async def test_client_disconnect_cancels_the_request_and_frees_the_slot():
    async with SimulatedOllama("seed", time_scale=0.02) as sim:
        async with httpx.AsyncClient(base_url=sim.url) as c, \
                c.stream("POST", "/api/generate", json={"model": MODEL, "prompt": "x"}) as r:
            async for _ in r.aiter_lines():
                break  # read one token, then hang up
        await asyncio.sleep(0.05)
        stats = sim.stats()
        assert stats["cancelled"] == 1 and stats["active"] == 0
        async with httpx.AsyncClient(base_url=sim.url) as c:
            t0 = time.perf_counter()
            await c.post("/api/generate", json=body(options={"num_predict": 5}))
            assert time.perf_counter() - t0 < 0.15  # 0.5 s model time, no wait for the other


async def test_stop_after_refuses_later_connections():
    async with SimulatedOllama("seed", time_scale=0.001, faults=Faults(stop_after=2)) as sim:
        async with httpx.AsyncClient(base_url=sim.url) as c:
            for _ in range(2):
                assert (await c.post("/api/generate", json=body())).status_code == 200
        await asyncio.sleep(0.02)
        async with httpx.AsyncClient(base_url=sim.url) as c:
            with pytest.raises(httpx.ConnectError):
                await c.get("/")
        assert sim.stats()["stopped"] is True


async def test_fail_fraction_fails_the_expected_count_with_500():
    async with SimulatedOllama("seed", time_scale=0.001,
                               faults=Faults(fail_fraction=0.25)) as sim, \
            httpx.AsyncClient(base_url=sim.url) as c:
        codes = [(await c.post("/api/generate", json=body())).status_code for _ in range(8)]
    assert codes.count(500) == 2 and codes.count(200) == 6


def test_start_in_thread_serves_sync_code_and_stats():
    sim = SimulatedOllama("seed", time_scale=0.01)
    url = sim.start_in_thread()
    try:
        r = httpx.post(f"{url}/api/generate", json=body(options={"num_predict": 3}))
        assert r.json()["eval_count"] == 3
        assert sim.stats()["completed"] == 1
        assert httpx.get(f"{url}/sim/stats").json()["profile"] == "seed"
    finally:
        sim.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(url)


def test_simulated_ollama_fixture_is_ready(simulated_ollama):
    assert httpx.get(simulated_ollama.url).text == "Ollama is running"
    assert simulated_ollama.time_scale == 0.02


@pytest.mark.parametrize("simulated_ollama", [{"num_parallel": 3}], indirect=True)
def test_simulated_ollama_fixture_takes_parameters(simulated_ollama):
    assert httpx.get(f"{simulated_ollama.url}/sim/stats").json()["num_parallel"] == 3


def test_sim_command_rejects_an_engine_it_does_not_have():
    with pytest.raises(ConfigError, match="sim or llama-server"):
        run_sim_command(argparse.Namespace(engine="warp"))


def test_sim_command_with_the_real_engine_names_a_bad_model_file(tmp_path):
    missing = tmp_path / "nope.gguf"
    with pytest.raises(ConfigError, match=r"nope\.gguf"):
        run_sim_command(argparse.Namespace(engine="llama-server", gguf=str(missing), port=0))


def test_port_in_use_is_a_config_error():
    sim = SimulatedOllama(time_scale=0.01)
    url = sim.start_in_thread()
    try:
        port = int(url.rsplit(":", 1)[1])
        with pytest.raises(ConfigError, match="cannot listen"):
            SimulatedOllama(port=port).start_in_thread()
    finally:
        sim.stop()
