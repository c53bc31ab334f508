import socket

import pytest

from parallel_kit.errors import ConfigError, ModelNotFound, OllamaUnavailable
from parallel_kit.servers.backend import open_backend
from parallel_kit.sim.server import SimulatedOllama


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


async def test_sim_backend_starts_one_server_per_gpu_and_stops_them():
    async with open_backend(backend="sim", servers=3, time_scale=0.02) as b:
        assert b.kind == "sim" and len(b.endpoints) == 3
        assert len({e.url for e in b.endpoints}) == 3
        assert [e.gpu for e in b.endpoints] == ["0", "1", "2"]
        urls = [e.url for e in b.endpoints]
    import httpx

    for url in urls:  # stopped on exit: nothing answers any more
        with pytest.raises(httpx.ConnectError):
            httpx.get(url, timeout=1.0)


async def test_auto_falls_back_to_the_simulator_and_says_why(monkeypatch):
    # No server named (OLLAMA_HOST unset): the default address is tried, then simulators.
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    monkeypatch.setattr("parallel_kit.servers.backend.host_from_env", _closed_port_url)
    lines: list[str] = []
    async with open_backend(backend="auto", time_scale=0.02, announce=lines.append) as b:
        assert b.kind == "sim"
    assert len(lines) == 1 and "no Ollama at" in lines[0] and "simulated" in lines[0]


async def test_auto_never_replaces_a_server_named_by_ollama_host(monkeypatch):
    url = _closed_port_url()
    monkeypatch.setenv("OLLAMA_HOST", url)
    with pytest.raises(OllamaUnavailable, match="named by OLLAMA_HOST"):
        async with open_backend(backend="auto"):
            pass


async def test_ollama_backend_never_falls_back(monkeypatch):
    url = _closed_port_url()
    monkeypatch.setenv("OLLAMA_HOST", url)
    with pytest.raises(OllamaUnavailable, match=url.split("//")[1]):
        async with open_backend(backend="ollama"):
            pass


async def test_a_host_that_does_not_answer_is_named():
    url = _closed_port_url()
    with pytest.raises(OllamaUnavailable, match="ollama serve"):
        async with open_backend([url]):
            pass


async def test_a_simulator_at_a_host_is_recognised_with_its_time_scale():
    async with SimulatedOllama("seed", time_scale=0.05, num_parallel=2) as sim:
        async with open_backend([sim.url]) as b:
            assert b.kind == "sim" and b.time_scale == 0.05
            assert b.endpoints[0].slots == 2
        with pytest.raises(ConfigError, match="differs"):
            async with open_backend([sim.url], time_scale=0.5):
                pass


async def test_unknown_model_at_a_host_is_an_error_naming_the_model():
    async with SimulatedOllama("seed", time_scale=0.05) as sim:
        with pytest.raises(ModelNotFound, match="no-such-model"):
            async with open_backend([sim.url], model="no-such-model"):
                pass


async def test_zero_servers_is_refused():
    with pytest.raises(ConfigError, match="--gpus"):
        async with open_backend(backend="sim", servers=0):
            pass
