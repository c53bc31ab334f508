"""The simulated Ollama: a real HTTP server that answers like Ollama, on a latency model.

``profiles`` (machine speeds and memory), ``protocol`` (what an engine offers the app),
``engine`` (scheduler, slots, queue, loading, the latency model), ``timer`` (precise sleeps),
``registry`` (engines by name), ``llama_server`` and ``llama_build`` (llama.cpp's
llama-server, built and run), ``gguf``, ``app`` (Ollama's HTTP API), ``options`` (request fields checked as Ollama's Go code does),
``settings`` (``OLLAMA_*`` variables), ``faults`` (fault switches), ``server`` (running it).
"""

from __future__ import annotations

from .engine import SimEngine
from .faults import Faults
from .profiles import ModelSpeed, Profile, list_profiles, load_profile, save_profile
from .protocol import Engine
from .registry import EngineInfo, engine_names, register_engine
from .server import SimulatedOllama, simulated_ollama
from .settings import SimSettings, sim_settings

__all__ = [
    "Engine",
    "EngineInfo",
    "Faults",
    "ModelSpeed",
    "Profile",
    "SimEngine",
    "SimSettings",
    "SimulatedOllama",
    "engine_names",
    "list_profiles",
    "load_profile",
    "register_engine",
    "save_profile",
    "sim_settings",
    "simulated_ollama",
]
