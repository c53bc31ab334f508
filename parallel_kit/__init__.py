"""parallel_kit — where does parallelism in LLM serving come from, and how much do you get?

The curated public API is assembled here as the modules land.
"""

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
from .prompts import load_prompts, make_specs, original_prompts
from .records import RequestResult, RequestSpec, RunResult, RunSummary, read_json

__version__ = "0.1.0"

__all__ = [
    "AllWorkersLost",
    "ConfigError",
    "Endpoint",
    "MissingDependency",
    "ModelNotFound",
    "OllamaError",
    "OllamaUnavailable",
    "ParallelKitError",
    "RequestFailed",
    "RequestResult",
    "RequestSpec",
    "RequestTimeout",
    "RunResult",
    "RunSummary",
    "ServerBusy",
    "WorkerLost",
    "__version__",
    "load_prompts",
    "make_specs",
    "original_prompts",
    "read_json",
]
