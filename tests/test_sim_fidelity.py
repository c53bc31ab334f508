"""The simulated Ollama behaves as the Ollama version it reports, case by case.

Each test names the Ollama source file it follows; the right values are Ollama's, asserted from
the simulator's own answers and ``/sim/stats`` (no wall-clock ratios). The files:

- routes.go: https://github.com/ollama/ollama/blob/main/server/routes.go
- sched.go: https://github.com/ollama/ollama/blob/main/server/sched.go
- images.go: https://github.com/ollama/ollama/blob/main/server/images.go
- api/types.go: https://github.com/ollama/ollama/blob/main/api/types.go
- openai.go: https://github.com/ollama/ollama/blob/main/openai/openai.go
- llm/server.go: https://github.com/ollama/ollama/blob/main/llm/server.go
- envconfig: https://github.com/ollama/ollama/blob/main/envconfig/config.go
- runner truncation: https://github.com/ollama/ollama/blob/main/runner/llamarunner/runner.go
"""

from __future__ import annotations

import asyncio
import math

import httpx
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parallel_kit.sim.app import OLLAMA_VERSION
from parallel_kit.sim.engine import Done, GenerateRequest, SimEngine
from parallel_kit.sim.profiles import load_profile, profile_from_dict
from parallel_kit.sim.server import SimulatedOllama

SMALL, BIG = "llama3.2:3b", "llama3.1:8b"
RTX = load_profile("rtx4090")
GIB = 1 << 30


def gen(prompt: str = "What is Python?", model: str = SMALL, **kw: object) -> dict:
    return {"model": model, "prompt": prompt, "stream": False, **kw}


# -- kind 1: runner options change the loaded model ----------------------------------------
async def test_a_prompt_longer_than_the_context_is_truncated_to_num_ctx():
    """Follows runner truncation and routes.go's default context (4096 without a GPU)."""
    long_prompt = "word " * 20_000  # 100,000 bytes ≈ 25,000 tokens
    async with SimulatedOllama("seed", time_scale=0.001) as sim, \
            httpx.AsyncClient(base_url=sim.url, timeout=30) as c:
        default = (await c.post("/api/generate", json=gen(
            long_prompt, options={"num_predict": 1}))).json()
        small = (await c.post("/api/generate", json=gen(
            long_prompt, options={"num_predict": 1, "num_ctx": 2048}))).json()
        stats = (await c.get("/sim/stats")).json()
    assert default["prompt_eval_count"] == 4096
    assert small["prompt_eval_count"] == 2048
    assert stats["truncated"] == 2


async def test_prefill_time_is_that_of_the_truncated_prompt():
    async with SimulatedOllama("rtx4090", time_scale=0.001) as sim, \
            httpx.AsyncClient(base_url=sim.url, timeout=30) as c:
        out = (await c.post("/api/generate", json=gen(
            "word " * 20_000, options={"num_predict": 1, "num_ctx": 2048}))).json()
    prefill_tps = RTX.speed(SMALL).prefill_tps
    assert prefill_tps
    assert out["prompt_eval_count"] == 2048
    assert out["prompt_eval_duration"] == pytest.approx(2048 / prefill_tps * 1e9, rel=1e-3)


async def test_another_num_ctx_reloads_the_model_and_ps_shows_it():
    """sched.go needsReload: a runner option that differs reloads (load time paid); routes.go
    Serve: the default context of a 24 GiB GPU is 32768."""
    load_ns = RTX.speed(SMALL).load_s * 1e9
    async with SimulatedOllama("rtx4090", time_scale=0.01) as sim, \
            httpx.AsyncClient(base_url=sim.url, timeout=30) as c:
        first = (await c.post("/api/generate", json=gen(options={"num_predict": 1}))).json()
        ps_default = (await c.get("/api/ps")).json()["models"]
        warm = (await c.post("/api/generate", json=gen(options={"num_predict": 1}))).json()
        bigger = (await c.post("/api/generate", json=gen(
            options={"num_predict": 1, "num_ctx": 8192}))).json()
        ps_bigger = (await c.get("/api/ps")).json()["models"]
        back = (await c.post("/api/generate", json=gen(options={"num_predict": 1}))).json()
        stats = (await c.get("/sim/stats")).json()
    assert [m["context_length"] for m in ps_default] == [32768]
    assert first["load_duration"] == pytest.approx(load_ns, rel=0.01)
    assert warm["load_duration"] == 0
    assert bigger["load_duration"] == pytest.approx(load_ns, rel=0.01)
    assert [m["context_length"] for m in ps_bigger] == [8192]
    assert back["load_duration"] == pytest.approx(load_ns, rel=0.01)
    assert (stats["loads"], stats["reloads"]) == (3, 2)


async def test_context_memory_is_per_slot_and_slots_fall_back_when_it_does_not_fit():
    """Context is allocated per slot (num_ctx × NUM_PARALLEL): 8B at 131072 tokens needs
    4.9 GB + 16 GiB per slot, so of 4 slots on a 24 GiB GPU only 1 fits."""
    kv = RTX.speed(BIG).kv_bytes_per_token
    async with SimulatedOllama("rtx4090", num_parallel=4, time_scale=0.001,
                               models=[BIG]) as sim, \
            httpx.AsyncClient(base_url=sim.url, timeout=30) as c:
        outs = await asyncio.gather(*(c.post("/api/generate", json=gen(
            f"p{i}", model=BIG, options={"num_predict": 5, "num_ctx": 131072}))
            for i in range(3)))
        ps = (await c.get("/api/ps")).json()["models"]
        stats = (await c.get("/sim/stats")).json()
    assert all(r.status_code == 200 for r in outs)
    assert stats["slots"] == {BIG: 1} and stats["max_active"] == 1
    assert ps[0]["size"] == RTX.speed(BIG).size + kv * 131072 * 1
    assert ps[0]["size_vram"] == ps[0]["size"]


async def test_all_slots_are_kept_when_their_context_fits():
    async with SimulatedOllama("rtx4090", num_parallel=4, time_scale=0.001,
                               models=[SMALL]) as sim, \
            httpx.AsyncClient(base_url=sim.url, timeout=30) as c:
        await asyncio.gather(*(c.post("/api/generate", json=gen(
            f"p{i}", options={"num_predict": 5, "num_ctx": 4096})) for i in range(4)))
        stats = (await c.get("/sim/stats")).json()
    assert stats["slots"] == {SMALL: 4} and stats["max_active"] == 4


# -- kind 2: the scheduler's memory ----------------------------------------------------------
async def test_max_loaded_models_one_makes_alternating_models_thrash(monkeypatch):
    """envconfig OLLAMA_MAX_LOADED_MODELS; sched.go findRunnerToUnload evicts an idle model."""
    monkeypatch.setenv("OLLAMA_MAX_LOADED_MODELS", "1")
    async with SimulatedOllama("rtx4090", time_scale=0.005, models=[SMALL, BIG]) as sim, \
            httpx.AsyncClient(base_url=sim.url, timeout=30) as c:
        outs = []
        for model in (SMALL, BIG, SMALL, BIG):
            outs.append((await c.post("/api/generate", json=gen(
                model=model, options={"num_predict": 1}))).json())
        ps = (await c.get("/api/ps")).json()["models"]
        stats = (await c.get("/sim/stats")).json()
    assert [o["load_duration"] > 0 for o in outs] == [True] * 4
    assert [m["name"] for m in ps] == [BIG]
    assert (stats["loads"], stats["evictions"], stats["max_loaded_models"]) == (4, 3, 1)


async def test_by_default_both_models_stay_loaded():
    """Default OLLAMA_MAX_LOADED_MODELS is 3 per GPU, and both fit in 24 GiB."""
    async with SimulatedOllama("rtx4090", time_scale=0.005, models=[SMALL, BIG]) as sim, \
            httpx.AsyncClient(base_url=sim.url, timeout=30) as c:
        outs = []
        for model in (SMALL, BIG, SMALL, BIG):
            outs.append((await c.post("/api/generate", json=gen(
                model=model, options={"num_predict": 1}))).json())
        ps = (await c.get("/api/ps")).json()["models"]
        stats = (await c.get("/sim/stats")).json()
    assert [o["load_duration"] == 0 for o in outs] == [False, False, True, True]
    assert sorted(m["name"] for m in ps) == sorted([SMALL, BIG])
    assert (stats["loads"], stats["evictions"], stats["max_loaded_models"]) == (2, 0, 3)


async def test_a_model_that_does_not_fit_beside_another_evicts_it():
    """sched.go: no room in GPU memory → unload a loaded runner, then load."""
    big_ctx = {"num_predict": 1, "num_ctx": 131072}
    async with SimulatedOllama("rtx4090", time_scale=0.005, models=[SMALL, BIG]) as sim, \
            httpx.AsyncClient(base_url=sim.url, timeout=30) as c:
        await c.post("/api/generate", json=gen(model=BIG, options=big_ctx))
        await c.post("/api/generate", json=gen(model=SMALL, options=big_ctx))
        ps = (await c.get("/api/ps")).json()["models"]
        stats = (await c.get("/sim/stats")).json()
    assert [m["name"] for m in ps] == [SMALL]
    assert stats["evictions"] == 1 and sum(m["size_vram"] for m in ps) <= 24 * GIB


async def test_eviction_waits_for_the_busy_models_requests_to_finish():
    """findRunnerToUnload: with no idle runner, the busy one is unloaded once its requests end;
    the new model's request pays that wait and the load (load_duration)."""
    async with SimulatedOllama("rtx4090", time_scale=0.01, models=[SMALL, BIG],
                               max_loaded_models=1) as sim, \
            httpx.AsyncClient(base_url=sim.url, timeout=30) as c:
        first = asyncio.ensure_future(c.post("/api/generate", json=gen(
            model=SMALL, options={"num_predict": 200})))
        while (await c.get("/sim/stats")).json()["active"] == 0:
            await asyncio.sleep(0.001)
        second = (await c.post("/api/generate", json=gen(
            model=BIG, options={"num_predict": 1}))).json()
        a = (await first).json()
        stats = (await c.get("/sim/stats")).json()
    assert a["done"] and a["eval_count"] == 200
    # The second request waited for the first to finish, then for its own model to load.
    assert second["load_duration"] >= RTX.speed(BIG).load_s * 1e9
    assert second["load_duration"] > 0.5 * a["eval_duration"]
    assert stats["evictions"] == 1 and stats["max_active"] == 1


# -- kind 3: request-body durations -------------------------------------------------------
@pytest.mark.parametrize(("value", "message"), [
    ("-1", 'time: missing unit in duration "-1"'),
    ("300", 'time: missing unit in duration "300"'),
    ("soon", 'time: invalid duration "soon"'),
    ("5x", 'time: unknown unit "x" in duration "5x"'),
    (True, "Unsupported type: 'bool'"),
])
async def test_a_bad_keep_alive_in_the_body_is_400_with_gos_message(value, message):
    """api.Duration.UnmarshalJSON (api/types.go): strings are Go durations."""
    async with SimulatedOllama("seed", time_scale=0.001) as sim, \
            httpx.AsyncClient(base_url=sim.url) as c:
        r = await c.post("/api/generate", json=gen(keep_alive=value))
    assert (r.status_code, r.json()) == (400, {"error": message})


async def test_keep_alive_numbers_are_seconds_with_fractions_and_negative_is_forever():
    async with SimulatedOllama("seed", time_scale=0.001) as sim, \
            httpx.AsyncClient(base_url=sim.url) as c:
        await c.post("/api/generate", json=gen(keep_alive=-1, options={"num_predict": 1}))
        forever = (await c.get("/api/ps")).json()["models"][0]["expires_at"]
        r = await c.post("/api/generate", json=gen(keep_alive=0.5, options={"num_predict": 1}))
        await c.post("/api/generate", json=gen(keep_alive="-1m", options={"num_predict": 1}))
        forever_again = (await c.get("/api/ps")).json()["models"][0]["expires_at"]
    assert forever.startswith("2318") and forever_again.startswith("2318")
    assert r.status_code == 200


# -- kind 4: request options ------------------------------------------------------------------
async def test_max_completion_tokens_is_not_a_field_of_the_followed_version():
    """openai.go ChatCompletionRequest has max_tokens only: max_completion_tokens is ignored."""
    async with SimulatedOllama("seed", time_scale=0.001) as sim, \
            httpx.AsyncClient(base_url=sim.url, timeout=30) as c:
        ignored = (await c.post("/v1/chat/completions", json={
            "model": SMALL, "messages": [{"role": "user", "content": "hi"}],
            "max_completion_tokens": 5})).json()
        capped = (await c.post("/v1/chat/completions", json={
            "model": SMALL, "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 5})).json()
    assert ignored["usage"]["completion_tokens"] == 100
    assert ignored["choices"][0]["finish_reason"] == "stop"
    assert capped["usage"]["completion_tokens"] == 5
    assert capped["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize(("num_predict", "count", "reason"), [
    (0, 100, "stop"),     # 0 = no limit (runner: NumPredict > 0 && …)
    (-1, 100, "stop"),
    (5.7, 5, "length"),   # FromMap: a JSON number for an int option is truncated
])
async def test_num_predict_zero_means_no_limit(num_predict, count, reason):
    async with SimulatedOllama("seed", time_scale=0.001) as sim, \
            httpx.AsyncClient(base_url=sim.url, timeout=30) as c:
        out = (await c.post("/api/generate", json=gen(
            options={"num_predict": num_predict}))).json()
    assert (out["eval_count"], out["done_reason"]) == (count, reason)


@pytest.mark.parametrize(("options", "message"), [
    ({"num_predict": "5"}, 'option "num_predict" must be of type integer'),
    ({"num_ctx": True}, 'option "num_ctx" must be of type integer'),
    ({"temperature": "hot"}, 'option "temperature" must be of type float32'),
    ({"stop": "\n"}, 'option "stop" must be of type array'),
    ({"stop": [1]}, 'option "stop" must be of an array of strings'),
])
async def test_an_option_of_the_wrong_type_is_500_with_ollamas_message(options, message):
    """api.Options.FromMap (api/types.go) fails in scheduleRunner → handleScheduleError 500."""
    async with SimulatedOllama("seed", time_scale=0.001) as sim, \
            httpx.AsyncClient(base_url=sim.url) as c:
        r = await c.post("/api/generate", json=gen(options=options))
        stats = (await c.get("/sim/stats")).json()
    assert (r.status_code, r.json()) == (500, {"error": message})
    assert stats["loads"] == 0


async def test_unknown_options_are_ignored():
    async with SimulatedOllama("seed", time_scale=0.001) as sim, \
            httpx.AsyncClient(base_url=sim.url) as c:
        r = await c.post("/api/generate", json=gen(options={"mirostat": "x", "num_predict": 2}))
    assert r.status_code == 200 and r.json()["eval_count"] == 2


@pytest.mark.parametrize("path", ["/api/generate", "/api/chat"])
async def test_think_on_a_model_without_thinking_is_400(path):
    """routes.go: `"%q does not support thinking"` when the model lacks the capability."""
    body = gen(think=True) if path == "/api/generate" else {
        "model": SMALL, "messages": [{"role": "user", "content": "hi"}], "think": True,
        "stream": False}
    async with SimulatedOllama("seed", time_scale=0.001) as sim, \
            httpx.AsyncClient(base_url=sim.url) as c:
        r = await c.post(path, json=body)
        show = (await c.post("/api/show", json={"model": SMALL})).json()
        off = await c.post(path, json={**body, "think": False})
    assert "thinking" not in show["capabilities"]
    assert (r.status_code, r.json()) == (400, {"error": '"llama3.2:3b" does not support thinking'})
    assert off.status_code == 200


async def test_reasoning_effort_maps_to_think_on_the_openai_route():
    """openai.go FromChatRequest: reasoning_effort → think; an unknown value is 400."""
    msgs = [{"role": "user", "content": "hi"}]
    async with SimulatedOllama("seed", time_scale=0.001) as sim, \
            httpx.AsyncClient(base_url=sim.url) as c:
        high = await c.post("/v1/chat/completions", json={
            "model": SMALL, "messages": msgs, "reasoning_effort": "high"})
        bogus = await c.post("/v1/chat/completions", json={
            "model": SMALL, "messages": msgs, "reasoning_effort": "max"})
        none = await c.post("/v1/chat/completions", json={
            "model": SMALL, "messages": msgs, "reasoning_effort": "none", "max_tokens": 1})
    assert high.status_code == 400
    assert high.json()["error"]["message"] == '"llama3.2:3b" does not support thinking'
    assert bogus.status_code == 400 and "invalid reasoning value: 'max'" in \
        bogus.json()["error"]["message"]
    assert none.status_code == 200


async def test_tools_are_refused_for_a_model_without_the_capability():
    """images.go CheckCapabilities via scheduleRunner: `<full name> does not support tools`."""
    entry = RTX.to_dict()
    entry["models"][SMALL]["capabilities"] = ["completion"]
    profile = profile_from_dict("no-tools", entry)
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    msgs = [{"role": "user", "content": "hi"}]
    async with SimulatedOllama(profile, time_scale=0.001) as sim, \
            httpx.AsyncClient(base_url=sim.url) as c:
        refused = await c.post("/api/chat", json={"model": SMALL, "messages": msgs,
                                                  "tools": tools, "stream": False})
        passed = await c.post("/api/chat", json={"model": BIG, "messages": msgs,
                                                 "tools": tools, "stream": False,
                                                 "options": {"num_predict": 1}})
    assert (refused.status_code, refused.json()) == (
        400, {"error": "registry.ollama.ai/library/llama3.2:3b does not support tools"})
    assert passed.status_code == 200


@pytest.mark.parametrize(("extra", "status", "message"), [
    ({"raw": True, "system": "be brief"}, 400,
     "raw mode does not support template, system, or context"),
    ({"raw": True, "template": "{{ .Prompt }}"}, 400,
     "raw mode does not support template, system, or context"),
    ({"format": "yaml"}, 500,
     'invalid format: "\\"yaml\\""; expected "json" or a valid JSON Schema object'),
    ({"prompt": 5}, 400,
     "json: cannot unmarshal number into Go struct field GenerateRequest.prompt of type string"),
    ({"images": "abc"}, 400,
     "json: cannot unmarshal string into Go struct field GenerateRequest.images of type "
     "[]string"),
])
async def test_generate_fields_are_refused_as_ollama_refuses_them(extra, status, message):
    """routes.go GenerateHandler (raw), llm/server.go Completion (format), Go's decoder."""
    async with SimulatedOllama("seed", time_scale=0.001) as sim, \
            httpx.AsyncClient(base_url=sim.url) as c:
        r = await c.post("/api/generate", json={**gen(), **extra})
    assert (r.status_code, r.json()) == (status, {"error": message})


@pytest.mark.parametrize("extra", [{"format": "json"}, {"format": {"type": "object"}},
                                   {"raw": True}, {"system": "be brief"},
                                   {"images": ["aGk="]}, {"template": "{{ .Prompt }}"}])
async def test_generate_fields_ollama_accepts_are_passed_through(extra):
    async with SimulatedOllama("seed", time_scale=0.001) as sim, \
            httpx.AsyncClient(base_url=sim.url) as c:
        r = await c.post("/api/generate", json={**gen(options={"num_predict": 2}), **extra})
    assert r.status_code == 200 and r.json()["eval_count"] == 2


async def test_system_adds_to_the_prompt_tokens():
    async with SimulatedOllama("seed", time_scale=0.001) as sim, \
            httpx.AsyncClient(base_url=sim.url) as c:
        plain = (await c.post("/api/generate", json=gen(options={"num_predict": 1}))).json()
        with_system = (await c.post("/api/generate", json=gen(
            system="You are a helpful assistant.", options={"num_predict": 1}))).json()
    assert with_system["prompt_eval_count"] > plain["prompt_eval_count"]


async def test_a_list_prompt_on_v1_completions_is_a_400_in_openais_shape():
    async with SimulatedOllama("seed", time_scale=0.001) as sim, \
            httpx.AsyncClient(base_url=sim.url) as c:
        r = await c.post("/v1/completions", json={"model": SMALL, "prompt": ["a", "b"]})
    assert r.status_code == 400
    assert r.json()["error"] == {
        "message": "json: cannot unmarshal array into Go struct field CompletionRequest.prompt "
                   "of type string", "type": "invalid_request_error", "param": None,
        "code": None}


# -- kind 5: the route table --------------------------------------------------------------
async def test_v1_models_retrieve_works_with_the_official_openai_client():
    """routes.go: GET /v1/models/:model (RetrieveMiddleware + ShowHandler)."""
    async with SimulatedOllama("seed", time_scale=0.001) as sim:
        client = openai.AsyncOpenAI(base_url=f"{sim.url}/v1", api_key="ollama")
        model = await client.models.retrieve(SMALL)
        with pytest.raises(openai.NotFoundError):
            await client.models.retrieve("nope:1b")
        await client.close()
    assert (model.id, model.object, model.owned_by) == (SMALL, "model", "library")


@pytest.mark.parametrize(("method", "path", "status"), [
    ("HEAD", "/", 200), ("HEAD", "/api/version", 200), ("HEAD", "/api/tags", 200),
    ("HEAD", "/api/ps", 405), ("POST", "/", 405), ("GET", "/api/generate", 405),
    ("GET", "/api/show", 405), ("POST", "/api/tags", 405), ("DELETE", "/api/generate", 405),
    ("GET", "/api/nothing", 404), ("GET", "/v1/models/llama3.2:3b", 200),
    ("POST", "/v1/models/llama3.2:3b", 405), ("POST", "/api/pull", 501),
    ("POST", "/api/embed", 501), ("POST", "/v1/responses", 501), ("HEAD", "/api/blobs/x", 501),
    ("GET", "/api/pull", 405),
])
async def test_routes_and_methods_are_ollamas(method, path, status):
    """routes.go GenerateRoutes with gin's HandleMethodNotAllowed: 405 for a known path."""
    async with SimulatedOllama("seed", time_scale=0.001) as sim, \
            httpx.AsyncClient(base_url=sim.url) as c:
        r = await c.request(method, path)
    assert r.status_code == status
    if method == "HEAD":
        assert r.content == b""


async def test_version_is_the_followed_release():
    async with SimulatedOllama("seed", time_scale=0.001) as sim, \
            httpx.AsyncClient(base_url=sim.url) as c:
        assert (await c.get("/api/version")).json() == {"version": OLLAMA_VERSION}
    assert OLLAMA_VERSION == "0.30.6"


def test_default_context_follows_gpu_memory():
    from parallel_kit.sim.engine import default_num_ctx

    assert default_num_ctx(None) == 4096
    assert default_num_ctx(16 * GIB) == 4096
    assert default_num_ctx(24 * GIB) == 32768
    assert default_num_ctx(48 * GIB) == 262144
    assert default_num_ctx(24 * GIB, context_length=8192) == 8192
    assert math.isfinite(RTX.gpu_memory or math.inf)


# -- the scheduler's invariants (Hypothesis) ------------------------------------------------


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(picks=st.lists(st.sampled_from([SMALL, BIG, "llama3.2:latest"]), min_size=1,
                      max_size=8),
       max_loaded=st.integers(1, 3), ctx=st.sampled_from([2048, 4096]))
def test_never_more_models_loaded_than_allowed_and_every_request_finishes(picks, max_loaded,
                                                                          ctx):
    """sched.go: loaded runners ≤ OLLAMA_MAX_LOADED_MODELS; an eviction never loses a request."""
    async def scenario() -> dict:
        engine = SimEngine(RTX, time_scale=0.0005, max_loaded_models=max_loaded,
                           keep_alive_s=math.inf)

        async def one(model: str) -> Done:
            request = GenerateRequest(model=model, prompt="hi", num_predict=2,
                                      options={"num_ctx": ctx})
            async for item in engine.generate(request):
                if isinstance(item, Done):
                    return item
            raise AssertionError("no Done")

        dones = await asyncio.gather(*(one(m) for m in picks))
        assert all(d.eval_count == 2 for d in dones)
        stats = engine.stats()
        await engine.aclose()
        return stats

    stats = asyncio.run(scenario())
    assert stats["completed"] == len(picks) and stats["failed"] == 0
    assert 1 <= stats["max_resident"] <= max_loaded
    assert len(stats["loaded"]) <= max_loaded
    assert stats["loads"] - stats["evictions"] == len(stats["loaded"])
