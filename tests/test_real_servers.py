"""The kit against servers it did not start: OpenAI-compatible ones, closed keep-alive
connections, named servers that do not answer, slots and names the server reports.

Assertions come from the servers' own records (``tests/_openai_server.py``: routes asked,
connections, answers, requests at once) and the rows' counts, never from wall-clock ratios.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import socket

import pytest
from _openai_server import MODEL, FakeOpenAIServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parallel_kit.bench import compare
from parallel_kit.cli import main
from parallel_kit.clients import RetryPolicy
from parallel_kit.clients.factory import make_client
from parallel_kit.errors import OllamaUnavailable, ServerUnavailable
from parallel_kit.measure.probe import probe
from parallel_kit.records import RequestSpec
from parallel_kit.servers.backend import discover_server, open_backend
from parallel_kit.timing import ModelClock

_SETTINGS = settings(max_examples=12, deadline=None, derandomize=True,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _native_routes(paths: list[str]) -> list[str]:
    """Routes of Ollama's native API (and its ``GET /``) among ``paths``."""
    return [p for p in paths if p.startswith("/api/") or p == "/"]


# -- 4. a reused connection the server closed: sent again at once, never a retry -----------------
async def _send_all(url: str, api: str, n: int, conns: int, sequential: bool
                    ) -> tuple[list, int]:
    # A back-off of 30 s and no retries: a closed connection counted as a failure would fail
    # the row (max_retries=0), and one retried with back-off would show retries > 0.
    client = make_client(api, url, max_connections=conns,
                         retry=RetryPolicy(max_retries=0, backoff_s=30.0))
    clock = ModelClock(1.0)
    async with client:
        await client.warm_up()
        clock.start()
        specs = [RequestSpec(f"p{i}", model=MODEL, num_predict=4, request_id=f"r{i}")
                 for i in range(n)]
        if sequential:
            rows = [await client.run(s, clock=clock, mode="t") for s in specs]
        else:
            rows = list(await asyncio.gather(*(client.run(s, clock=clock, mode="t")
                                               for s in specs)))
        return rows, client.resent


@_SETTINGS
@given(close=st.sampled_from(["keep", "header", "silent", "stale"]),
       api=st.sampled_from(["openai", "generate"]), n=st.integers(1, 6),
       conns=st.integers(1, 3), sequential=st.booleans())
def test_a_closed_keep_alive_connection_is_resent_without_retry_or_back_off(
        close, api, n, conns, sequential):
    with FakeOpenAIServer(slots=2, close=close, native=True) as srv:
        rows, resent = asyncio.run(_send_all(srv.url, api, n, conns, sequential))
        rec = srv.records
        answered, stale = rec.answered, rec.stale_closes
    assert all(r.ok for r in rows), [r.error for r in rows if not r.ok]
    assert [r.retries for r in rows] == [0] * n
    assert all("first_sent" not in r.hops for r in rows)
    # Every request was answered exactly once by the server: no duplicate, none lost.
    assert answered == n
    # Each connection the server dropped under a reused request was re-sent once, at once;
    # a server that says `Connection: close` (or keeps it open) is never caught reusing one.
    if close == "stale":
        assert resent == stale
        if sequential and n > 1:
            assert stale >= n - 1
    elif close == "silent":  # the close may cross the next request on the wire, or not
        assert resent <= n
    else:
        assert resent == 0 and stale == 0
    for r in rows:  # latency and TTFT count from the send that was answered
        assert r.submitted_s == r.started_s
        assert r.submitted_s <= r.first_token_s <= r.finished_s
        assert math.isclose(r.latency_s, r.finished_s - r.started_s)


async def test_a_new_connection_that_is_refused_is_still_a_counted_retry():
    url = _closed_port_url()
    client = make_client("openai", url, max_connections=1,
                         retry=RetryPolicy(max_retries=2, backoff_s=0.001, jitter=0))
    clock = ModelClock(1.0)
    async with client:
        row = await client.run(RequestSpec("p", model=MODEL, request_id="r0"), clock=clock,
                               mode="t")
    assert not row.ok and row.retries == 2 and client.resent == 0
    assert "connection refused" in row.error


async def test_a_retry_back_off_is_queueing_never_latency_or_ttft():
    with FakeOpenAIServer(slots=1, close="keep", busy_first=2) as srv:
        client = make_client("openai", srv.url, max_connections=1,
                             retry=RetryPolicy(max_retries=3, backoff_s=0.05, jitter=0))
        clock = ModelClock(1.0)
        async with client:
            clock.start()
            row = await client.run(RequestSpec("p", model=MODEL, num_predict=4,
                                               request_id="r0"), clock=clock, mode="t")
        hits = srv.paths().count("/v1/chat/completions")
    assert row.ok and row.retries == 2 and hits == 3
    first = row.hops["first_sent"]
    # latency and TTFT start at the send that was answered; the two back-offs (0.05 s and
    # 0.1 s, never shorter) lie between the first send and that one: queueing in the kit
    assert row.submitted_s == row.started_s and row.submitted_s - first >= 0.15 - 1e-3
    assert math.isclose(row.latency_s, row.finished_s - row.submitted_s)
    assert math.isclose(row.ttft_s, row.first_token_s - row.submitted_s)
    assert row.queue_wait_s >= row.submitted_s - first - 1e-9


# -- 1. --api openai asks no native Ollama route ------------------------------------------------
@pytest.mark.parametrize("modes", ["sequential,pool", "async,batch"])
async def test_bench_with_openai_asks_only_openai_routes(modes):
    with FakeOpenAIServer(slots=2, close="header") as srv:
        cmp = await compare(modes, n=4, hosts=[srv.url], api="openai", num_predict=4)
        paths = srv.paths()
    assert all(r.summary.ok == 4 for r in cmp.runs)
    assert _native_routes(paths) == [], paths
    assert "/v1/models" in paths and "/v1/chat/completions" in paths


def test_cli_bench_and_probe_with_openai_ask_only_openai_routes(capsys):
    with FakeOpenAIServer(slots=2, close="header") as srv:
        assert main(["bench", "--mode", "sequential,pool", "--api", "openai", "--host", srv.url,
                     "--n", "3", "--num-predict", "4", "--no-progress"]) == 0
        assert main(["probe", "--api", "openai", "--host", srv.url, "--max-k", "2",
                     "--num-predict", "8"]) == 0
        paths = srv.paths()
    assert _native_routes(paths) == [], paths
    out = capsys.readouterr().out
    assert "llama.cpp b9999-test" in out


async def test_pool_health_checks_use_v1_models_with_openai():
    from parallel_kit.config import Endpoint
    from parallel_kit.modes.health import HealthPolicy
    from parallel_kit.modes.pool import EndpointPool

    with FakeOpenAIServer(slots=1, close="keep") as srv:
        async with EndpointPool([Endpoint(srv.url)], clock=ModelClock(1.0), model=MODEL,
                                api="openai",
                                health=HealthPolicy(interval_s=0.02, timeout_s=2)) as pool:
            pool.clock.start()
            await asyncio.sleep(0.2)  # let the monitor probe a few times
            row = await pool(RequestSpec("p", model=MODEL, num_predict=4, request_id="r0"))
        paths = srv.paths()
    assert row.ok
    assert paths.count("/v1/models") >= 2 and "/" not in paths


# -- 2. probe through /v1 -----------------------------------------------------------------------
@pytest.mark.parametrize("usage", [True, False])
async def test_probe_measures_through_v1(usage):
    with FakeOpenAIServer(slots=2, close="header", usage=usage, timings=False) as srv:
        result = await probe(srv.url, MODEL, api="openai", max_k=3, num_predict=8)
        rec = srv.records
        paths = srv.paths()
    assert _native_routes(paths) == []
    assert result.api == "openai" and result.load_s is None
    assert result.effective_slots == rec.max_active == 2
    assert result.decode_tokens_per_s is not None and result.decode_tokens_per_s > 0
    chunk_note = [n for n in result.notes if "streamed chunks" in n]
    assert bool(chunk_note) is (not usage)
    assert result.to_dict()["api"] == "openai"


async def test_probe_through_v1_of_the_simulator():
    from parallel_kit.sim.server import simulated_ollama

    async with simulated_ollama(profile="seed", time_scale=0.02, num_parallel=2) as url:
        result = await probe(url, "llama3.2:3b", api="openai", max_k=2, num_predict=8,
                             time_scale=0.02)
    assert result.effective_slots == 2
    assert not any("streamed chunks" in n for n in result.notes)  # the sim sends usage


# -- 3. a named server that does not answer is an error, never the simulator --------------------
@pytest.mark.parametrize("how", ["--host", "OLLAMA_HOST"])
@pytest.mark.parametrize("api", ["generate", "openai"])
@pytest.mark.parametrize("command", ["bench", "probe"])
def test_a_named_server_that_does_not_answer_is_one_line_and_exit_2(
        how, api, command, monkeypatch, capsys):
    url = _closed_port_url()
    monkeypatch.setenv("PARALLEL_KIT_BACKEND", "auto")
    args = [command, "--api", api]
    if how == "--host":
        args += ["--host", url]
    else:
        monkeypatch.setenv("OLLAMA_HOST", url)
    if command == "bench":
        args += ["--mode", "sequential", "--n", "1", "--no-progress"]
    assert main(args) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert "Traceback" not in captured.err and "simulated" not in captured.out + captured.err
    line = err[-1]
    assert line.startswith("error: no ") and url.split("//")[1] in line
    assert ("OpenAI-compatible" in line) is (api == "openai")
    assert ("start it with `ollama serve`" in line) is (api != "openai")


@_SETTINGS
@given(api=st.sampled_from(["generate", "openai"]),
       host=st.sampled_from(["127.0.0.1:{p}", "http://127.0.0.1:{p}", "localhost:{p}",
                             "'127.0.0.1:{p}'"]))
def test_ollama_host_in_the_environment_is_never_replaced_by_a_simulator(api, host):
    port = _closed_port_url().rsplit(":", 1)[1]

    async def go() -> None:
        async with open_backend(backend="auto", api=api):
            pass

    old = {k: os.environ.get(k) for k in ("OLLAMA_HOST",)}
    os.environ["OLLAMA_HOST"] = host.format(p=port)
    try:
        with pytest.raises(OllamaUnavailable) as info:
            asyncio.run(go())
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    assert isinstance(info.value, ServerUnavailable) is (api == "openai")
    assert "OLLAMA_HOST" in str(info.value) and port in str(info.value)


# -- 5 and 6. slots and the server's name --------------------------------------------------------
async def test_bench_labels_slots_from_props_and_names_the_server():
    with FakeOpenAIServer(slots=4, close="header", build_info="b6000-abc") as srv:
        cmp = await compare("sequential,async", n=4, hosts=[srv.url], api="openai",
                            num_predict=4, concurrency=4)
        rec = srv.records
    for r in cmp.runs:
        assert r.summary.slots == 4 and r.summary.server == "llama.cpp b6000-abc"
    assert rec.max_active <= 4
    assert "1×4" in cmp.table() and "measured: llama.cpp b6000-abc" in cmp.table()
    assert any("S(k)" in note for note in cmp.run("async").summary.notes)


@pytest.mark.parametrize("slots", [1, 2, 3])
async def test_bench_measures_slots_a_server_does_not_report(slots):
    with FakeOpenAIServer(slots=slots, close="keep", props=False,
                          server_header="TestServer/1.0") as srv:
        messages: list[str] = []
        cmp = await compare("sequential", n=2, hosts=[srv.url], api="openai", num_predict=4,
                            announce=messages.append)
        rec = srv.records
    s = cmp.run("sequential").summary
    assert s.slots == rec.max_active == slots
    assert s.server == "TestServer/1.0"
    assert any("concurrency scan" in m for m in messages)


async def test_explicit_slots_win_and_a_mismatch_is_said():
    with FakeOpenAIServer(slots=2, close="header") as srv:
        messages: list[str] = []
        cmp = await compare("sequential", n=1, hosts=[srv.url], api="openai", num_predict=4,
                            slots=3, announce=messages.append)
    assert cmp.run("sequential").summary.slots == 3
    assert any("--slots 3 differs from the 2" in m for m in messages)


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"props": True, "build_info": "b1234"}, "llama.cpp b1234"),
    ({"props": False, "version": "0.10.1"}, "vLLM 0.10.1"),
    ({"props": False, "server_header": "uvicorn"}, "uvicorn"),
    ({"props": False}, ""),
])
async def test_the_server_says_its_name(kwargs, name):
    with FakeOpenAIServer(**kwargs) as srv:
        facts = await discover_server(srv.url, "openai")
        paths = srv.paths()
    assert facts.answers and facts.name == name and facts.models == [MODEL]
    assert _native_routes(paths) == []


def test_the_server_name_is_kept_in_the_results_json(tmp_path):
    out = tmp_path / "runs.json"
    with FakeOpenAIServer(slots=1, close="header", build_info="b42") as srv:
        assert main(["bench", "--mode", "sequential", "--api", "openai", "--host", srv.url,
                     "--n", "2", "--num-predict", "4", "--no-progress",
                     "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    runs = doc["runs"] if isinstance(doc, dict) else doc
    assert runs[0]["summary"]["server"] == "llama.cpp b42"


def test_the_only_model_of_an_openai_server_is_used_when_none_is_named(capsys):
    with FakeOpenAIServer(slots=1, close="header") as srv:
        assert main(["bench", "--mode", "sequential", "--api", "openai", "--host", srv.url,
                     "--n", "1", "--num-predict", "4", "--no-progress"]) == 0
        assert main(["bench", "--mode", "sequential", "--api", "openai", "--host", srv.url,
                     "--n", "1", "--model", "other", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"(model {MODEL})" in err
    assert "model 'other' not found" in err and "ollama pull" not in err


# -- 7. --n with --prompts cycles the file ------------------------------------------------------
@_SETTINGS
@given(lines=st.integers(1, 4), n=st.integers(1, 9))
def test_n_with_a_prompt_file_cycles_it(lines, n, tmp_path_factory):
    d = tmp_path_factory.mktemp("prompts")
    f = d / "p.txt"
    f.write_text("".join(f"prompt number {i}\n" for i in range(lines)))
    out = d / "runs.csv"
    assert main(["bench", "--mode", "sequential", "--prompts", str(f), "--n", str(n),
                 "--time-scale", "0.001", "--no-progress", "--no-salt", "--csv", str(out)]) == 0
    import csv

    with out.open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == n
    assert [r["prompt"] for r in rows] == [f"prompt number {i % lines}" for i in range(n)]


# -- a real llama-server, when one is named ------------------------------------------------------
@pytest.mark.real
def test_a_real_llama_server_needs_no_glue(tmp_path, llama_server_binary):
    """Start llama-server by hand (the kit's build, or ``PARALLEL_KIT_LLAMA_SERVER``) with 2
    slots on the Gemma 3 270M GGUF, then bench it through /v1 as a user would, with no flag but
    the API."""
    import subprocess
    import time

    import httpx

    from parallel_kit.errors import MissingDependency
    from parallel_kit.servers.launcher import stop_process
    from parallel_kit.sim.gguf import default_gguf

    binary = llama_server_binary
    try:
        gguf = default_gguf()
    except MissingDependency as exc:
        pytest.skip(f"no GGUF: {exc}")
    url = _closed_port_url()
    port = url.rsplit(":", 1)[1]
    log = (tmp_path / "llama-server.log").open("w")
    proc = subprocess.Popen([binary, "-m", str(gguf), "--host", "127.0.0.1", "--port", port,
                             "-np", "2", "-c", "4096", "--no-webui", "-t", "1"],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (tmp_path / "llama-server.log").read_text()[-2000:]
            try:
                if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "llama-server did not load its model in 120 s"
            time.sleep(0.5)
        out = tmp_path / "runs.json"
        assert main(["bench", "--api", "openai", "--host", url, "--mode", "sequential,pool",
                     "--n", "4", "--num-predict", "8", "--no-progress",
                     "--json", str(out)]) == 0
    finally:
        stop_process(proc)
        log.close()
    doc = json.loads(out.read_text())
    runs = doc["runs"] if isinstance(doc, dict) else doc
    for run in runs:
        summary = run["summary"]
        assert summary["server"].startswith("llama.cpp") and summary["slots"] == 2
        assert summary["ok"] == 4
        assert [r["retries"] for r in run["requests"]] == [0] * 4


@pytest.mark.parametrize("command", ["bench", "probe"])
def test_a_server_that_answers_another_api_is_told_apart_from_one_that_is_down(
        command, capsys):
    with FakeOpenAIServer() as srv:
        args = [command, "--host", srv.url] + (["--mode", "sequential", "--n", "1"]
                                               if command == "bench" else [])
        assert main(args) == 2
        paths = srv.paths()
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"error: {srv.url} answered, but it is not Ollama's native API")
    assert "add --api openai" in line and "ollama serve" not in line
    assert paths == ["/api/tags"]  # asked once, nothing sent to generate


@_SETTINGS
@given(speedup=st.dictionaries(st.integers(1, 6),
                               st.one_of(st.floats(0.01, 8), st.just(math.nan)),
                               min_size=1), k=st.integers(0, 12))
def test_capacity_s_of_k_is_the_last_measured_value_up_to_k(speedup, k):
    from parallel_kit.measure.probe import Capacity

    cap = Capacity(slots=1, speedup=speedup, max_k=max(speedup))
    value = cap.S(k)
    known = [v for kk, v in sorted(speedup.items()) if kk <= k and math.isfinite(v)]
    assert value == (known[-1] if known and k >= 1 else 1.0)
    assert math.isfinite(value) and value > 0


@pytest.mark.parametrize("slots", [1, 3])
async def test_bench_on_a_native_ollama_measures_its_slots_and_names_it(slots):
    with FakeOpenAIServer(slots=slots, close="keep", native=True,
                          model="llama3.2:3b") as srv:
        cmp = await compare("sequential,async", n=3, hosts=[srv.url], num_predict=4,
                            concurrency=4)
        rec = srv.records
        paths = srv.paths()
    for r in cmp.runs:
        assert r.summary.slots == rec.max_active == slots
        assert r.summary.server == "Ollama 0.12.3"
    assert "/v1/models" not in paths and "/props" not in paths
