"""Typed option records of a run, one per concern, so that a mistyped option fails at once.

* :class:`QueueOptions` — how requests are fed: the task queue's workers, prefetch per server.
* :class:`ServerOptions` — the servers a run starts itself (embedded simulators, in-actor
  servers of the ``ray`` mode): how many, slots, profile, engine.
* :class:`RayOptions` — the Ray cluster and its GPU actors.

Each is a frozen dataclass with ``slots``: an unknown field is a ``TypeError`` when it is built,
a bad value a :class:`~parallel_kit.errors.ConfigError` naming the fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from ..errors import ConfigError
from .health import HealthPolicy

__all__ = ["Launch", "QueueOptions", "RayOptions", "ServerOptions"]

#: What a mode that starts its own servers starts: ``ollama serve``, an embedded simulator, or
#: ``auto`` (``ollama`` where the binary and real GPUs exist, else ``sim``).
Launch = Literal["auto", "ollama", "sim"]


def _whole(name: str, value: Any, minimum: int, flag: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{flag} must be a whole number ≥ {minimum}, got {value!r} ({name})")


@dataclass(frozen=True, slots=True)
class QueueOptions:
    """How requests are fed to the servers.

    Attributes:
        concurrency: workers of the async/batch task queue (``MAX_CONCURRENT_REQUESTS``) —
            requests the queue keeps in flight at once.
        prefetch: requests a pool/ray server may hold beyond its slots (0 = off, the default;
            see :class:`~parallel_kit.modes.pool.Dispatcher`).
        health: how pool/ray servers are probed, so a frozen one is found and a lost one
            taken back (:class:`~parallel_kit.modes.health.HealthPolicy`; ``None``: off).
    """

    concurrency: int = 5
    prefetch: int = 0
    health: HealthPolicy | None = field(default_factory=HealthPolicy)

    def __post_init__(self) -> None:
        _whole("queue workers", self.concurrency, 1, "--concurrency")
        _whole("requests held beyond the slots", self.prefetch, 0, "prefetch")


@dataclass(frozen=True, slots=True)
class ServerOptions:
    """The servers a run starts itself.

    Attributes:
        launch: for a mode that starts its own servers (``ray`` without ``--host``): what to
            start; ``None`` means use the endpoints given.
        count: servers (GPUs) for the multi-server modes; ``None``: one per ``--host``, else 3.
        slots: slots per server (``OLLAMA_NUM_PARALLEL``); ``None``: the profile's, else 1.
        profile: simulator profile (``None``: ``seed``).
        engine: ``sim`` (the latency model) or ``llama-server`` (a real model on the CPU).
        engine_options: keyword arguments of the engine (``gguf``, ``threads_per_slot``).
        ollama_env: extra environment of a launched ``ollama serve``.
        ready_timeout_s: clock seconds a launched server has to answer.
    """

    launch: Launch | None = None
    count: int | None = None
    slots: int | None = None
    profile: str | None = None
    engine: str = "sim"
    engine_options: Mapping[str, Any] = field(default_factory=dict)
    ollama_env: Mapping[str, str] = field(default_factory=dict)
    ready_timeout_s: float = 120.0

    def __post_init__(self) -> None:
        if self.launch not in (None, "auto", "ollama", "sim"):
            raise ConfigError(f"launch {self.launch!r} is not one of auto, ollama, sim")
        if self.count is not None:
            _whole("servers", self.count, 1, "--gpus")
        if self.slots is not None:
            _whole("slots per server", self.slots, 1, "--slots")
        if not self.ready_timeout_s > 0:
            raise ConfigError(f"ready_timeout_s must be > 0, got {self.ready_timeout_s!r}")



def launched_servers(kind: str, profile: str | None, *, start_own: bool,
                     base: ServerOptions | None = None) -> ServerOptions:
    """The servers a mode starts itself (one per Ray actor or Serve replica): simulators when
    the backend is the simulator, else Ollama, on the backend's profile (``seed`` when it has
    none), the rest from ``base``; ``ServerOptions()`` when the mode uses the endpoints given."""
    if not start_own:
        return ServerOptions()
    return replace(base or ServerOptions(), launch="sim" if kind == "sim" else "ollama",
                   profile=profile or "seed")

@dataclass(frozen=True, slots=True)
class RayOptions:
    """The Ray cluster and the GPU actors of the ``ray`` mode.

    Attributes:
        address: an existing cluster to join (``None``: ``RAY_ADDRESS``, else a local one).
        runtime_env: Ray runtime environment of the actors.
        actor_name_prefix: actors are named ``<prefix>-w<i>`` (default: a random prefix).
        start_timeout_s: clock seconds the actors have to start (``None``: the mode's default).
    """

    address: str | None = None
    runtime_env: Mapping[str, Any] | None = None
    actor_name_prefix: str | None = None
    start_timeout_s: float | None = None

    def __post_init__(self) -> None:
        if self.start_timeout_s is not None and not self.start_timeout_s > 0:
            raise ConfigError(f"start_timeout_s must be > 0, got {self.start_timeout_s!r}")
