"""The simulated Ollama: a real HTTP server that answers like Ollama, on a latency model.

``profiles`` (machine speeds), ``engine`` (slots, queue, loading, the latency model),
``app`` (Ollama's HTTP API), ``faults`` (fault switches), ``server`` (running it).
"""

from __future__ import annotations

from .engine import Engine, SimEngine
from .faults import Faults
from .profiles import ModelSpeed, Profile, list_profiles, load_profile, save_profile
from .server import SimulatedOllama, simulated_ollama

__all__ = [
    "Engine",
    "Faults",
    "ModelSpeed",
    "Profile",
    "SimEngine",
    "SimulatedOllama",
    "list_profiles",
    "load_profile",
    "save_profile",
    "simulated_ollama",
]
