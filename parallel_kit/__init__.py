"""parallel_kit — where does parallelism in LLM serving come from, and how much do you get?

The public API, in the words of the notebooks::

    import parallel_kit as pk

    comparison = await pk.compare(["sequential", "batch", "pool"], n=5, gpus=3, time_scale=0.05)
    print(comparison.table())                       # predicted vs measured, speedups
    pk.plots.timeline(comparison.runs)              # who ran what, when

    async with pk.simulated_ollama(profile="seed", time_scale=0.02) as url: ...
    async with pk.OllamaClient(url) as client: ...
    pk.theory.predict("pool", [10] * 5, workers=3).makespan_s   # 20.0
    pk.theory.predict(pk.Topology(servers=3), [10] * 5).makespan_s   # the same, by topology

Heavy parts (the simulator's server, FastAPI, matplotlib, Ray) are imported on first use, so
``import parallel_kit`` stays quick.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .config import VERSION as __version__
from .config import Endpoint
from .errors import (
    AllWorkersLost,
    ConfigError,
    MissingDependency,
    ModelNotFound,
    OllamaError,
    OllamaUnavailable,
    ParallelKitError,
    RequestFailed,
    RequestTimeout,
    ServerBusy,
    WorkerLost,
)
from .modes.base import ModeContext
from .modes.options import QueueOptions, RayOptions, ServerOptions
from .modes.registry import MODE_NAMES, ModeInfo, get_mode, mode_names, register_mode
from .records import (
    RequestResult,
    RequestSpec,
    RunResult,
    RunSummary,
    read_json,
    write_csv,
    write_json,
)
from .timing import ModelClock
from .topology import Topology
from .workload.prompts import load_prompts, make_specs, original_prompts

if TYPE_CHECKING:
    from . import plots, theory
    from .bench import Comparison, compare, compare_sync
    from .clients import OllamaClient, OpenAIClient, RetryPolicy
    from .clients.api import ApiClient
    from .clients.factory import make_client
    from .measure.probe import probe
    from .modes.taskqueue import TaskQueue
    from .servers.backend import open_backend
    from .sim.profiles import list_profiles, load_profile
    from .sim.server import SimulatedOllama, simulated_ollama

#: name → module that defines it, imported on first access.
_LAZY = {
    "ApiClient": "parallel_kit.clients.api",
    "Comparison": "parallel_kit.bench",
    "compare": "parallel_kit.bench",
    "compare_sync": "parallel_kit.bench",
    "OllamaClient": "parallel_kit.clients",
    "OpenAIClient": "parallel_kit.clients",
    "RetryPolicy": "parallel_kit.clients",
    "make_client": "parallel_kit.clients.factory",
    "open_backend": "parallel_kit.servers.backend",
    "probe": "parallel_kit.measure.probe",
    "list_profiles": "parallel_kit.sim.profiles",
    "load_profile": "parallel_kit.sim.profiles",
    "SimulatedOllama": "parallel_kit.sim.server",
    "simulated_ollama": "parallel_kit.sim.server",
    "TaskQueue": "parallel_kit.modes.taskqueue",
}
_SUBMODULES = {"plots", "theory"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        module = importlib.import_module(f"parallel_kit.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'parallel_kit' has no attribute {name!r}")


__all__ = [
    "MODE_NAMES",
    "AllWorkersLost",
    "ApiClient",
    "Comparison",
    "ConfigError",
    "Endpoint",
    "MissingDependency",
    "ModeContext",
    "ModeInfo",
    "ModelClock",
    "ModelNotFound",
    "OllamaClient",
    "OllamaError",
    "OllamaUnavailable",
    "OpenAIClient",
    "ParallelKitError",
    "QueueOptions",
    "RayOptions",
    "RequestFailed",
    "RequestResult",
    "RequestSpec",
    "RequestTimeout",
    "RetryPolicy",
    "RunResult",
    "RunSummary",
    "ServerBusy",
    "ServerOptions",
    "SimulatedOllama",
    "TaskQueue",
    "Topology",
    "WorkerLost",
    "__version__",
    "compare",
    "compare_sync",
    "get_mode",
    "list_profiles",
    "load_profile",
    "load_prompts",
    "make_client",
    "make_specs",
    "mode_names",
    "open_backend",
    "original_prompts",
    "plots",
    "probe",
    "read_json",
    "register_mode",
    "simulated_ollama",
    "theory",
    "write_csv",
    "write_json",
]
