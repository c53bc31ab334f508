"""The simulator's prompt cache (llama-server's, as Ollama ≥ 0.30 runs it) and Ollama's scheduler
rules: checked from the engine's own numbers (its ``Done`` and ``stats()``) on a virtual clock,
so nothing depends on the machine's load."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parallel_kit.sim import timer as timer_module
from parallel_kit.sim.engine import NO_PREFIX_REUSE_FAMILIES, Done, GenerateRequest, SimEngine
from parallel_kit.sim.profiles import Profile, load_profile
from parallel_kit.sim.prompt_cache import (
    TOKEN_BYTES,
    HostCache,
    Slot,
    choose_slot,
    common_prefix_bytes,
    tokens_of,
)
from parallel_kit.sim.virtual_clock import VirtualClockLoop, loop_timer

RTX = load_profile("rtx4090")
MODEL = RTX.default_model
PREFILL = RTX.speed(MODEL).prefill_tps
assert PREFILL
NS = 1e9


@pytest.fixture(autouse=True)
def virtual_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(timer_module.TIMER, "wait_until", loop_timer)


def run(main: Callable[[], Awaitable[Any]]) -> Any:
    loop = VirtualClockLoop()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


async def answer(engine: SimEngine, prompt: str, num_predict: int = 8,
                 options: dict[str, Any] | None = None) -> Done:
    gen = engine.generate(GenerateRequest(model=MODEL, prompt=prompt, num_predict=num_predict,
                                          options=options or {}))
    async with contextlib.aclosing(gen):
        async for item in gen:
            if isinstance(item, Done):
                return item
    raise AssertionError("no Done")


def engine(profile: Profile = RTX, **kw: Any) -> SimEngine:
    kw.setdefault("keep_alive_s", math.inf)
    return SimEngine(profile, time_scale=1.0, **kw)


# -- the unit test of the brief ---------------------------------------------------------------
def test_second_request_with_a_500_token_prefix_prefills_only_its_new_tokens() -> None:
    prefix = "p" * (500 * TOKEN_BYTES)  # 500 simulated tokens
    first, second = prefix + "A first question?", prefix + "B another, longer question here"

    async def main() -> tuple[Done, Done]:
        e = engine(num_parallel=1)
        await e.load(MODEL)
        return await answer(e, first), await answer(e, second)

    d1, d2 = run(main)
    n2 = RTX.prompt_tokens(second)
    assert d1.cached_tokens == 0
    assert d2.cached_tokens == 500
    # Ollama's counting (since ollama/ollama#16428): the count is cached + new tokens ...
    assert d2.prompt_eval_count == n2
    # ... and the duration only the new ones.
    assert d2.prompt_eval_duration == round((n2 - 500) / PREFILL * NS)
    assert d1.prompt_eval_duration == round(RTX.prompt_tokens(first) / PREFILL * NS)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shared=st.text(alphabet="abcdé ", max_size=300),
       tail1=st.text(alphabet="xyz", min_size=1, max_size=40),
       tail2=st.text(alphabet="uvw", min_size=1, max_size=40),
       cache=st.booleans())
def test_reuse_is_the_common_prefix_on_one_slot(shared: str, tail1: str, tail2: str,
                                                cache: bool) -> None:
    """Any two prompts on one slot: the second reuses whole tokens of their common prefix
    (never its own last token), and pays prefill only for the rest."""
    p1, p2 = shared + tail1, shared + tail2

    async def main() -> Done:
        e = engine(num_parallel=1, prompt_cache=cache)
        await e.load(MODEL)
        await answer(e, p1)
        return await answer(e, p2)

    d = run(main)
    n2 = RTX.prompt_tokens(p2)
    lcp = common_prefix_bytes(p1.encode(), p2.encode()) // TOKEN_BYTES
    want = min(lcp, n2 - 1) if cache else 0
    assert d.cached_tokens == want
    assert d.prompt_eval_count == n2
    assert d.prompt_eval_duration == round((n2 - want) / PREFILL * NS)


def test_the_same_prompt_again_costs_one_token() -> None:
    prompt = "What is Python? " * 20

    async def main() -> list[Done]:
        e = engine(num_parallel=1)
        await e.load(MODEL)
        return [await answer(e, prompt) for _ in range(3)]

    done = run(main)
    n = RTX.prompt_tokens(prompt)
    assert [d.cached_tokens for d in done] == [0, n - 1, n - 1]
    assert all(d.prompt_eval_count == n for d in done)


# -- the host-RAM cache -----------------------------------------------------------------------
def test_host_cache_evicts_least_recently_used_first_at_its_size() -> None:
    kv = 1000
    entry = b"abcd" * 10  # 10 tokens: 10,000 bytes each
    items = [bytes([65 + i]) * 3 + entry for i in range(5)]  # distinct first tokens
    size = HostCache(0, kv).size_of(items[0])
    cache = HostCache(3 * size, kv)  # room for three
    for it in items[:3]:
        assert cache.save(it)
    assert cache.keys() == items[:3]
    cache.save(items[0])  # used again: the youngest now
    assert cache.keys() == [items[1], items[2], items[0]]
    cache.save(items[3])  # over the size: the least recently used (items[1]) goes
    assert cache.keys() == [items[2], items[0], items[3]]
    assert cache.evictions == 1 and cache.bytes == 3 * size
    got = cache.take_best(items[2] + b"more", better_than=0)  # moved out into a slot
    assert got is not None and got[0] == items[2]
    assert got[1] == len(items[2]) // TOKEN_BYTES
    assert items[2] not in cache
    cache.save(items[4])
    assert cache.keys() == [items[0], items[3], items[4]] and cache.evictions == 1
    assert not HostCache(size - 1, kv).save(items[0])  # bigger than the cache: not kept


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 7), min_size=1, max_size=40), st.integers(1, 5))
def test_host_cache_is_lru_against_a_model(uses: list[int], room: int) -> None:
    """Any sequence of saves: the cache holds the ``room`` most recently saved distinct
    states, in order of last use, never more than its size."""
    kv = 10
    states = [bytes([97 + i]) * 8 for i in range(8)]  # 2 tokens each
    cache = HostCache(room * 2 * kv, kv)
    order: list[bytes] = []
    for u in uses:
        cache.save(states[u])
        if states[u] in order:
            order.remove(states[u])
        order.append(states[u])
        order = order[-room:]
        assert cache.keys() == order
        assert cache.bytes <= cache.limit_bytes


def test_a_prompt_pushed_out_of_its_slot_comes_back_from_host_ram() -> None:
    """One slot, three distinct prompts, then the first again: the slot was reused, but the
    host cache kept the first one's state (restored: no prefill but the last token). With
    ``cache_ram_mib=0`` the same run prefills it all again."""
    a, b, c = ("A" * 400) + "?", ("B" * 400) + "?", ("C" * 400) + "?"

    async def main(ram: int) -> tuple[Done, dict[str, Any]]:
        e = engine(num_parallel=1, cache_ram_mib=ram)
        await e.load(MODEL)
        for p in (a, b, c):
            await answer(e, p)
        return await answer(e, a), e.stats()

    d, stats = run(lambda: main(8192))
    n = RTX.prompt_tokens(a)
    assert d.cached_tokens == n - 1
    assert stats["prompt_cache"]["host_restores"] == 1
    assert stats["prompt_cache"]["host_saves"] == 3  # a, b, c each pushed out once
    d0, stats0 = run(lambda: main(0))
    assert d0.cached_tokens == 0 and stats0["prompt_cache"]["host_restores"] == 0


# -- slot choice ----------------------------------------------------------------------------
def test_choose_slot_takes_the_longest_prefix_else_the_least_recently_used() -> None:
    s0 = Slot(0, b"hello world, how are you", last_used=5)
    s1 = Slot(1, b"zzzz", last_used=1)
    s2 = Slot(2, b"hello world", last_used=0)
    slot, update = choose_slot([s0, s1, s2], b"hello world, how are you today?")
    assert slot is s0 and not update  # keeps all of its tokens: no host-cache update
    slot, update = choose_slot([s0, s1, s2], b"qqqq qqqq qqqq")
    assert slot is s2 and update  # nothing similar: least recently used
    # similarity must exceed 0.10 of the prompt: 1 token of 12 is too little
    slot, _ = choose_slot([s0, s1], b"zzzz" + b"x" * 44)
    assert slot is s1  # LRU anyway here
    slot, _ = choose_slot([s0, s1], b"zzzz" + b"x" * 4)
    assert slot is s1 and tokens_of(b"zzzzxxxx") == 2


def test_more_slots_keep_more_conversations_warm() -> None:
    """Two conversations taking turns: with two slots each finds its own slot (similarity);
    with one slot and no host cache each turn starts cold."""
    conv = {k: (k * 200) for k in "XY"}

    async def main(slots: int) -> list[int]:
        e = engine(num_parallel=slots, cache_ram_mib=0)
        await e.load(MODEL)
        cached = []
        for turn in range(3):
            for k in "XY":
                conv[k] += f" turn {turn} of {k}."
                cached.append((await answer(e, conv[k])).cached_tokens)
        return cached

    two = run(lambda: main(2))
    for k in "XY":
        conv[k] = k * 200
    one = run(lambda: main(1))
    assert all(c > 0 for c in two[2:]) and sum(two) > 0
    assert one == [0] * 6


# -- over HTTP: Ollama's fields ---------------------------------------------------------------
def test_http_counts_cached_tokens_as_ollama_does() -> None:
    import httpx

    from parallel_kit.sim.server import SimulatedOllama

    prompt = "Explain the prompt cache. " * 30

    async def main() -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
        async with SimulatedOllama("rtx4090", time_scale=0.001) as sim, \
                httpx.AsyncClient(base_url=sim.url, trust_env=False) as c:
            out = []
            for _ in range(2):
                r = await c.post("/api/generate", json={
                    "model": MODEL, "prompt": prompt, "stream": False,
                    "options": {"num_predict": 4}})
                out.append(r.json())
            v1 = (await c.post("/v1/completions", json={
                "model": MODEL, "prompt": prompt, "max_tokens": 4})).json()
            stats = (await c.get("/sim/stats")).json()
            return out, v1, stats

    loop = asyncio.new_event_loop()
    try:
        out, v1, stats = loop.run_until_complete(main())
    finally:
        loop.close()
    n = RTX.prompt_tokens(prompt)
    assert [o["prompt_eval_count"] for o in out] == [n, n]
    # One token processed the second time, n the first. The durations come from the loop's
    # float clock divided by the time scale, so they carry a few ns of rounding: 0.1 % is far
    # tighter than the gap between 1 and n tokens.
    assert out[1]["prompt_eval_duration"] == pytest.approx(1 / PREFILL * NS, rel=1e-3)
    assert out[0]["prompt_eval_duration"] == pytest.approx(n / PREFILL * NS, rel=1e-3)
    assert "cached_tokens" not in out[1]
    assert v1["usage"]["prompt_tokens"] == n and "prompt_tokens_details" not in v1["usage"]
    assert stats["prompt_cache"]["cached_tokens"] == 2 * (n - 1)
    assert stats["prompt_cache"]["hits"] == 2


# -- Ollama's scheduler rules -----------------------------------------------------------------
def _with_family(family: str, capabilities: tuple[str, ...] = ("completion",)) -> Profile:
    speed = replace(RTX.speed(MODEL), family=family, capabilities=capabilities)
    return replace(RTX, models={MODEL: speed})


@pytest.mark.parametrize("family", [*sorted(NO_PREFIX_REUSE_FAMILIES), "llama", "qwen2"])
def test_sliding_window_families_prefill_the_whole_prompt_every_time(family: str) -> None:
    """llama-server re-processes a sliding-window model's whole prompt (its SWA cache cannot
    be rolled back to a common prefix); other families reuse the prefix."""
    prefix = "p" * (500 * TOKEN_BYTES)
    second = prefix + "B another question"
    profile = _with_family(family)

    async def main() -> Done:
        e = engine(profile, num_parallel=1)
        await e.load(MODEL)
        await answer(e, prefix + "A first question?")
        return await answer(e, second)

    d2 = run(main)
    n2 = RTX.prompt_tokens(second)
    assert d2.prompt_eval_count == n2
    if family in NO_PREFIX_REUSE_FAMILIES:
        assert d2.cached_tokens == 0
        assert d2.prompt_eval_duration == round(n2 / PREFILL * NS)
    else:
        assert d2.cached_tokens == 500


@pytest.mark.parametrize("family", ["qwen3next", "lfm2", "mllama", "nemotron_h", "qwen35moe"])
def test_single_slot_families_get_one_slot_whatever_num_parallel(family: str) -> None:
    async def main() -> dict[str, Any]:
        e = engine(_with_family(family), num_parallel=4)
        await e.load(MODEL)
        await asyncio.gather(*(answer(e, f"q{i} " * 50) for i in range(4)))
        return e.stats()

    stats = run(main)
    assert stats["slots"] == {MODEL: 1}
    assert stats["max_decoding"] == 1  # the four ran one at a time
    assert "asked for 4 slots, got 1" in stats["single_slot"][MODEL]


def test_other_families_keep_their_slots() -> None:
    async def main() -> dict[str, Any]:
        e = engine(_with_family("llama"), num_parallel=4)
        await e.load(MODEL)
        await asyncio.gather(*(answer(e, f"q{i} " * 50) for i in range(4)))
        return e.stats()

    stats = run(main)
    assert stats["slots"] == {MODEL: 4} and stats["max_decoding"] == 4
    assert stats["single_slot"] == {}


@pytest.mark.parametrize(("gib", "kv", "want", "steps"), [
    (48, 262144, 32768, 1),      # 262144 tokens × 256 KiB = 64 GiB: does not fit
    (48, 1024, 262144, 0),       # small KV: the automatic 262144 fits
    (24, 131072, 32768, 0),      # the 32768 tier fits
    (24, 1 << 20, 4096, 1),      # 32768 × 1 MiB = 32 GiB: steps down to 4096
    (8, 1024, 4096, 0),
])
def test_automatic_context_by_memory_steps_down_on_a_load_oom(gib: int, kv: int, want: int,
                                                              steps: int) -> None:
    speed = replace(RTX.speed(MODEL), kv_bytes_per_token=kv, context_length=262144)
    profile = replace(RTX, models={MODEL: speed}, gpu_memory=gib << 30, gpus=1)

    async def main(options: dict[str, Any]) -> dict[str, Any]:
        e = engine(profile, num_parallel=1)
        await answer(e, "hello there", options=options)
        await answer(e, "hello again", options=options)  # no reload: same asked context
        return e.stats()

    stats = run(lambda: main({}))
    assert stats["num_ctx"] == {MODEL: want}
    assert stats["context_step_downs"] == steps and stats["loads"] == 1
    # A context the user asked for is kept (Ollama offloads instead).
    asked = run(lambda: main({"num_ctx": 262144}))
    assert asked["num_ctx"] == {MODEL: 262144} and asked["context_step_downs"] == 0


# -- request options change the answer as Ollama's do ----------------------------------------
_leaf = st.sampled_from([{"type": "string"}, {"type": "integer"}, {"type": "number"},
                         {"type": "boolean"}, {"type": "null"},
                         {"type": "string", "enum": ["low", "high"]},
                         {"type": "array", "items": {"type": "integer"}}])
_names = st.text(alphabet="abcdefghij_", min_size=1, max_size=8)
_schemas = st.recursive(
    _leaf, lambda inner: st.dictionaries(_names, inner, min_size=1, max_size=4).map(
        lambda props: {"type": "object", "properties": props,
                       "required": list(props)}), max_leaves=8)
_PY = {"string": str, "integer": int, "number": (int, float), "boolean": bool,
       "null": type(None), "array": list, "object": dict}


def _shaped(value: Any, schema: dict[str, Any]) -> bool:
    kind = schema["type"]
    if kind in ("integer", "number") and isinstance(value, bool):
        return False
    if not isinstance(value, _PY[kind]):
        return False
    if "enum" in schema and value not in schema["enum"]:
        return False
    if kind == "object":
        props = schema["properties"]
        return set(value) == set(props) and all(_shaped(value[k], props[k]) for k in props)
    if kind == "array":
        return all(_shaped(v, schema["items"]) for v in value)
    return True


async def _text(e: SimEngine, request: GenerateRequest) -> tuple[str, Done]:
    parts: list[str] = []
    gen = e.generate(request)
    async with contextlib.aclosing(gen):
        async for item in gen:
            if isinstance(item, Done):
                return "".join(parts), item
            parts.append(item)
    raise AssertionError("no Done")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fmt=st.just("json") | _schemas.filter(lambda s: s["type"] == "object"),
       prompt=st.text(min_size=1, max_size=40), seed=st.none() | st.integers(0, 10**6))
def test_format_json_or_a_schema_gives_json_of_its_shape(fmt: Any, prompt: str,
                                                         seed: int | None) -> None:
    import json

    async def main() -> tuple[str, Done]:
        e = engine(num_parallel=1)
        return await _text(e, GenerateRequest(model=MODEL, prompt=prompt, seed=seed,
                                              format=fmt))

    text, done = run(main)
    value = json.loads(text)  # valid JSON
    assert done.done_reason == "stop" and done.eval_count >= 1
    if fmt == "json":
        assert isinstance(value, dict)
    else:
        assert _shaped(value, fmt)


def test_a_num_predict_below_the_json_cuts_it_short_as_ollama_does() -> None:
    import json

    schema = {"type": "object", "properties": {"a": {"type": "string"},
                                               "b": {"type": "integer"}}}

    async def main(n: int | None) -> tuple[str, Done]:
        e = engine(num_parallel=1)
        return await _text(e, GenerateRequest(model=MODEL, prompt="x", num_predict=n,
                                              format=schema))

    whole, done = run(lambda: main(None))
    cut, short = run(lambda: main(3))
    assert json.loads(whole) and done.done_reason == "stop"
    assert short.eval_count == 3 and short.done_reason == "length" and whole.startswith(cut)
    with pytest.raises(ValueError):
        json.loads(cut)


def test_format_over_http_native_and_openai() -> None:
    import json

    import httpx

    from parallel_kit.sim.server import SimulatedOllama

    schema = {"type": "object", "properties": {"city": {"type": "string"},
                                               "population": {"type": "integer"}}}

    async def main() -> list[str]:
        async with SimulatedOllama("rtx4090", time_scale=0.0005) as sim, \
                httpx.AsyncClient(base_url=sim.url, trust_env=False) as c:
            native = (await c.post("/api/generate", json={
                "model": MODEL, "prompt": "Paris?", "format": schema,
                "stream": False})).json()["response"]
            chat = (await c.post("/api/chat", json={
                "model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                "format": "json", "stream": False})).json()["message"]["content"]
            v1 = (await c.post("/v1/chat/completions", json={
                "model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                "response_format": {"type": "json_schema",
                                    "json_schema": {"name": "x", "schema": schema}}})).json()
            return [native, chat, v1["choices"][0]["message"]["content"]]

    loop = asyncio.new_event_loop()
    try:
        native, chat, v1 = loop.run_until_complete(main())
    finally:
        loop.close()
    for text in (native, v1):
        value = json.loads(text)
        assert set(value) == {"city", "population"} and isinstance(value["population"], int)
    assert isinstance(json.loads(chat), dict)


_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


@settings(max_examples=200, deadline=None)
@given(parts=st.lists(st.tuples(st.integers(0, 999), st.sampled_from(sorted(_UNITS))),
                      min_size=1, max_size=4),
       sign=st.sampled_from(["", "-", "+"]))
def test_keep_alive_takes_every_go_duration(parts: list[tuple[int, str]], sign: str) -> None:
    """api.Duration: a string is time.ParseDuration (units ns…h, combined), negative =
    forever."""
    from parallel_kit.sim.engine import parse_keep_alive

    text = sign + "".join(f"{n}{u}" for n, u in parts)
    seconds = sum(n * _UNITS[u] for n, u in parts)
    got = parse_keep_alive(text)
    if sign == "-" and seconds > 0:
        assert got == math.inf
    else:
        assert got == pytest.approx(seconds, rel=1e-9, abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(st.one_of(st.integers(-10**6, 10**6), st.floats(-1e6, 1e6, allow_nan=False)))
def test_keep_alive_numbers_are_seconds_and_negative_is_forever(value: float) -> None:
    from parallel_kit.sim.engine import parse_keep_alive

    assert parse_keep_alive(value) == (math.inf if value < 0 else pytest.approx(value))


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet="0123456789.", min_size=1, max_size=6) | st.sampled_from(
    ["5 m", "m", "1x", "--1s", "", "1.5.5s"]))
def test_a_keep_alive_string_go_refuses_is_an_error(text: str) -> None:
    from parallel_kit.errors import ConfigError
    from parallel_kit.sim.engine import parse_keep_alive

    if text == "0":
        assert parse_keep_alive(text) == 0.0  # Go's one unitless duration
        return
    with pytest.raises(ConfigError, match="time: "):
        parse_keep_alive(text)


@pytest.fixture(scope="module")
def sim_url() -> Any:
    from parallel_kit.sim.server import SimulatedOllama

    sim = SimulatedOllama("seed", time_scale=0.001)
    url = sim.start_in_thread()
    yield url
    sim.stop()


_KNOWN = {"/": {"GET", "HEAD"}, "/api/version": {"GET", "HEAD"}, "/api/tags": {"GET", "HEAD"},
          "/api/ps": {"GET"}, "/api/generate": {"POST"}, "/api/chat": {"POST"},
          "/api/show": {"POST"}, "/v1/chat/completions": {"POST"},
          "/v1/completions": {"POST"}, "/v1/models": {"GET"}}


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(sorted(_KNOWN)) | st.text(
    alphabet="abcdefghijklmnopqrstuvwxyz/", min_size=1, max_size=20).map(lambda p: "/x" + p),
       method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"]))
def test_routes_answer_as_ollamas_router(sim_url: str, path: str, method: str) -> None:
    """gin: a known path with another method is 405 "405 method not allowed"; an unknown path
    is 404 "404 page not found"."""
    import httpx

    r = httpx.request(method, sim_url + path, trust_env=False, timeout=10,
                      json={} if method in ("POST", "PUT", "PATCH") else None)
    if path in _KNOWN and method not in _KNOWN[path]:
        assert r.status_code == 405
        assert method == "HEAD" or r.text == "405 method not allowed"
    elif path not in _KNOWN:
        assert r.status_code == 404
        assert method == "HEAD" or r.text == "404 page not found"
    else:
        assert r.status_code in (200, 400)


@pytest.mark.parametrize(("family", "note"), [("qwen3next", True), ("llama", False)])
def test_probe_says_asked_for_4_slots_got_1(family: str, note: bool) -> None:
    from parallel_kit.measure.probe import probe
    from parallel_kit.sim.server import SimulatedOllama

    async def main() -> tuple[Any, dict[str, Any]]:
        async with SimulatedOllama(_with_family(family), num_parallel=4,
                                   time_scale=0.0005) as sim:
            got = await probe(sim.url, MODEL, max_k=4, num_predict=8, time_scale=0.0005)
            return got, sim.stats()

    loop = asyncio.new_event_loop()
    try:
        result, stats = loop.run_until_complete(main())
    finally:
        loop.close()
    said = [n for n in result.notes if "asked for 4 slots, got 1" in n]
    assert bool(said) == note
    # The note is read from the server right after the load, before any request ran. The
    # server's own record agrees: one slot, never two requests decoding together.
    assert stats["slots"] == {MODEL: 1 if note else 4}
    if note:
        assert stats["max_decoding"] == 1 and result.effective_slots == 1
