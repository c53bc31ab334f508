"""What the HTTP app needs from an engine, and the values that cross between them.

The app (``app.py``) talks to any object with the :class:`Engine` protocol, so that the
simulator's latency model (``engine.SimEngine``) and a real engine (llama.cpp,
``llama_server.LlamaServerEngine``) stand behind the same routes. The protocol, in full:

``name``
    The engine's name as the kit reports it (``sim``, ``llama-server``): ``/sim/stats`` says it, and
    the kit labels results and plots with it.
``models() -> list[ModelInfo]``
    Models the server has (``/api/tags``, ``/v1/models``).
``running() -> list[RunningModel]``
    Models loaded now (``/api/ps``).
``resolve(name) -> str``
    The served name for a requested one (``llama3.2`` → ``llama3.2:latest``); raises
    :class:`ModelNotFoundError` (404) if the server does not have it.
``capabilities(name) -> list[str]``
    What ``/api/show`` lists (``completion``, ``tools``, ``thinking``, ``vision``, …); the app
    refuses requests that need a capability the model lacks, as Ollama does.
``async load(model, keep_alive_s=None, options=None)`` / ``async unload(model)``
    Load a model and keep it for ``keep_alive_s`` (the empty-prompt request), or unload it
    (empty prompt with ``keep_alive: 0``).
``generate(request) -> AsyncIterator[str | Done]``
    An async generator: the answer's pieces (one per token) as they are produced, then one
    :class:`Done` with the final numbers. It raises :class:`EngineError` subclasses before
    the first piece for 404/503/500. Closing the generator early (client gone) cancels the
    request and frees its slot; the app closes it with ``aclose()``.
``stats() -> dict``
    Counters for ``/sim/stats``: requests, completed, failed, cancelled, busy, active,
    max_active, loads, unloads.
``async aclose()``
    Stop background work (loading timers).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

__all__ = [
    "BUSY_MESSAGE",
    "BusyError",
    "Done",
    "Engine",
    "EngineError",
    "GenerateRequest",
    "ModelInfo",
    "ModelNotFoundError",
    "RunningModel",
    "canonical_name",
]

#: Ollama's 503 text, two spaces after "again." included (server/sched.go ErrMaxQueue).
BUSY_MESSAGE = "server busy, please try again.  maximum pending requests exceeded"


# -- values crossing the protocol --------------------------------------------------------
@dataclass(slots=True)
class GenerateRequest:
    """One generation, already parsed by the app.

    Args:
        model: the served name (see ``Engine.resolve``).
        prompt: the text to continue (for chat: the messages joined).
        num_predict: answer length in tokens; ``None`` or negative = the model decides.
        seed: makes the answer (and its length) repeatable.
        keep_alive_s: model seconds to keep the model loaded afterwards; ``None`` = the
            server's default; ``math.inf`` = forever; 0 = unload when done.
        messages: the chat messages, for engines that apply a chat template themselves.
        options: the runner options (``num_ctx``, ``temperature``, …).
        format: ``"json"`` or a JSON schema: the answer is JSON text of that shape.
    """

    model: str
    prompt: str
    num_predict: int | None = None
    seed: int | None = None
    keep_alive_s: float | None = None
    messages: list[dict[str, Any]] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    #: ``format``: ``"json"`` or a JSON schema object (structured output); None = free text.
    format: Any = None


@dataclass(slots=True)
class Done:
    """The final numbers of a generation, in nanoseconds of model time (Ollama's fields)."""

    done_reason: str  # "stop" | "length"
    total_duration: int
    load_duration: int
    prompt_eval_count: int
    prompt_eval_duration: int
    eval_count: int
    eval_duration: int
    #: prompt tokens the engine's prompt cache supplied (inside ``prompt_eval_count``, outside
    #: ``prompt_eval_duration``, as Ollama counts them); not sent on the wire by Ollama.
    cached_tokens: int = 0


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What ``/api/tags`` says about a model."""

    name: str
    size: int
    digest: str
    family: str = "llama"
    parameter_size: str = ""
    quantization_level: str = "Q4_K_M"
    context_length: int = 4096
    modified_at: str = "2024-09-25T12:00:00Z"


@dataclass(frozen=True, slots=True)
class RunningModel:
    """What ``/api/ps`` says about a loaded model; ``expires_at`` ``None`` = never.

    ``size`` is the memory it takes (weights and KV cache; 0 = ``info.size``), ``size_vram``
    the part on the GPU, ``context_length`` the context it was loaded with (0 =
    ``info.context_length``).
    """

    info: ModelInfo
    expires_at: datetime | None
    size_vram: int
    size: int = 0
    context_length: int = 0


class EngineError(Exception):
    """A request the engine refuses; ``status`` is the HTTP status, ``message`` Ollama's text."""

    status = 500

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class ModelNotFoundError(EngineError):
    status = 404

    def __init__(self, model: str) -> None:
        super().__init__(f"model '{model}' not found")


class BusyError(EngineError):
    status = 503

    def __init__(self) -> None:
        super().__init__(BUSY_MESSAGE)


class Engine(Protocol):
    """What the HTTP app needs from an engine (see the module docstring)."""

    name: str

    def models(self) -> list[ModelInfo]: ...
    def running(self) -> list[RunningModel]: ...
    def resolve(self, name: str) -> str: ...
    def capabilities(self, name: str) -> list[str]: ...
    async def load(self, model: str, keep_alive_s: float | None = None,
                   options: dict[str, Any] | None = None) -> None: ...
    async def unload(self, model: str) -> None: ...
    def generate(self, request: GenerateRequest) -> AsyncIterator[str | Done]: ...
    def stats(self) -> dict[str, Any]: ...
    async def aclose(self) -> None: ...



def canonical_name(name: str) -> str:
    """Ollama's name rule: a name without a tag means ``:latest``."""
    name = name.strip()
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last else f"{name}:latest"
