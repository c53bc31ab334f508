"""The mode registry: each execution mode described once, by a :class:`ModeInfo`.

Everything that needs to know about a mode — the CLI's help and choices, ``bench`` (which
servers to open, whether the queue's concurrency applies), theory (the mode's
:class:`~parallel_kit.topology.Topology`), the API server and the widget lab — reads the mode's
record here instead of comparing mode names.

Adding a mode is one module with an ``async def run_x(specs, ctx) -> RunResult`` and one
:func:`register_mode` line (in the kit itself, a ``_builtin`` line in the *built-in modes*
block at the end of this module; see ``docs/ARCHITECTURE.md``, "Adding a mode"). The runner is named as ``"module:function"`` and
imported on first use, so that Ray is only imported by the modes that use it.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ..errors import ConfigError
from ..topology import Dispatch, Topology

if TYPE_CHECKING:
    from ..records import RequestSpec, RunResult

__all__ = ["BASELINE", "MODE_NAMES", "InFlight", "ModeInfo", "get_info", "get_mode", "mode_names", "modes",
           "parse_modes", "register_mode"]

#: How many requests a mode keeps in flight: one at a time, as many as its task queue has
#: workers (``--concurrency``), or as many as the servers have slots.
InFlight = Literal["one", "queue", "slots"]

Runner = Callable[[Sequence["RequestSpec"], Any], Awaitable["RunResult"]]


@dataclass(frozen=True, slots=True)
class ModeInfo:
    """One execution mode, described once.

    Attributes:
        name: the mode's name on the command line and in results (``pool``).
        description: one line for help texts.
        runner: ``"module:function"`` of ``async def run(specs, ctx) -> RunResult``.
        multi_server: spreads requests over every server (one per GPU); otherwise it uses the
            first server only.
        in_flight: ``"one"`` (one request at a time), ``"queue"`` (the kit's task queue with
            ``--concurrency`` workers) or ``"slots"`` (every free slot of every server).
        starts_own_servers: given no ``--host``, it starts its servers itself (e.g. one inside
            each Ray GPU actor) instead of using servers the kit opened for it.
        api_backend: ``"module:function"`` of the opener that backs ``parallel-kit serve``
            with this mode (see :mod:`parallel_kit.api.backends`); ``None``: it cannot.
        dispatch: how it spreads requests over several servers.
        needs: optional extras it needs (``pip install parallel_kit[ray]``), e.g. ``("ray",)``;
            the widget lab leaves such modes unticked.
        session: ``"module:function"`` of ``open(ctx)`` → an async context manager yielding a
            session that sends one request at a time as it arrives (open-loop load,
            :mod:`parallel_kit.bench.loadgen`); ``None``: the mode cannot run ``--rate``/``--trace``.
        routing: how requests wait for its servers when that is not one first-come-first-served
            queue in front of every slot (``None``, what its ``dispatch`` does, or one queue per
            server for ``round_robin``): ``"power_of_two"`` — Ray Serve's router, which sends
            each request to the less loaded of two random replicas that accept it (a replica
            accepts up to ``max_ongoing_requests``) and keeps the rest in its own FIFO queue
            (:func:`parallel_kit.theory.queueing.simulate`). Theory predicts from it
            (:func:`parallel_kit.theory.mode_topology`).
    """

    name: str
    description: str
    runner: str
    multi_server: bool = False
    in_flight: InFlight = "slots"
    starts_own_servers: bool = False
    api_backend: str | None = None
    dispatch: Dispatch = "least_loaded"
    needs: tuple[str, ...] = ()
    session: str | None = None
    routing: Literal["power_of_two"] | None = None

    def __post_init__(self) -> None:
        if not self.name or not self.name.isidentifier():
            raise ConfigError(f"mode name {self.name!r} must be a plain word (letters, digits, _)")
        if ":" not in self.runner:
            raise ConfigError(f"mode {self.name!r}: runner {self.runner!r} must be "
                              f"'module:function'")
        if self.in_flight not in ("one", "queue", "slots"):
            raise ConfigError(f"mode {self.name!r}: in_flight {self.in_flight!r} is not one of "
                              f"one, queue, slots")
        if self.routing not in (None, "power_of_two"):
            raise ConfigError(f"mode {self.name!r}: routing {self.routing!r} is not "
                              f"power_of_two (or None: its dispatch)")

    @property
    def serves_api(self) -> bool:
        """Can back ``parallel-kit serve`` (it names an ``api_backend``)."""
        return self.api_backend is not None

    @property
    def uses_task_queue(self) -> bool:
        """Requests pass through the kit's task queue; ``--concurrency`` limits them."""
        return self.in_flight == "queue"

    def servers_for(self, gpus: int) -> int:
        """Servers this mode uses when ``gpus`` are available: all of them, or one."""
        return gpus if self.multi_server else 1

    def topology(self, *, gpus: int = 1, slots: int = 1, concurrency: int | None = None,
                 dispatch: Dispatch | None = None) -> Topology:
        """The serving shape of a run of this mode (what theory predicts from).

        Args:
            gpus: servers available (one per GPU); single-server modes use one.
            slots: slots per server.
            concurrency: workers of the task queue (only for ``in_flight == "queue"``);
                ``None``: not limiting.
            dispatch: overrides the mode's own dispatch (``least_loaded``/``round_robin``).
        """
        in_flight = {"one": 1, "queue": concurrency, "slots": None}[self.in_flight]
        return Topology(servers=self.servers_for(gpus), slots=slots, in_flight=in_flight,
                        task_queue=self.uses_task_queue, dispatch=dispatch or self.dispatch,
                        label=self.name)

    def load(self) -> Runner:
        """Import and return the runner (``async (specs, ctx) -> RunResult``)."""
        module_name, func = self.runner.split(":")
        module = importlib.import_module(module_name)
        return getattr(module, func)  # type: ignore[no-any-return]


_REGISTRY: dict[str, ModeInfo] = {}

#: The mode every speed-up is measured against (``speedup_vs_sequential``): it runs first in a
#: comparison, and its measured times predict real servers' other modes.
BASELINE = "sequential"


def register_mode(info: ModeInfo) -> ModeInfo:
    """Add a mode to the registry; returns it. A second mode with the same name is an error."""
    if info.name in _REGISTRY and _REGISTRY[info.name] != info:
        raise ConfigError(f"mode {info.name!r} is registered twice")
    _REGISTRY[info.name] = info
    return info


def modes() -> tuple[ModeInfo, ...]:
    """Every registered mode, in registration order."""
    return tuple(_REGISTRY.values())


def mode_names() -> tuple[str, ...]:
    """Names of every registered mode, in registration order."""
    return tuple(_REGISTRY)


def _unknown(name: str) -> ConfigError:
    return ConfigError(f"unknown mode {name!r} — choose from {', '.join(_REGISTRY)}")


def get_info(name: str) -> ModeInfo:
    """The record of a mode. Raises :class:`ConfigError` naming the known modes."""
    info = _REGISTRY.get(name)
    if info is None:
        raise _unknown(name)
    return info


def get_mode(name: str) -> Runner:
    """The runner of a mode (``sequential``, ``async``, ``batch``, ``pool``, ``ray``, …)."""
    return get_info(name).load()


def parse_modes(text: str | Sequence[str]) -> list[str]:
    """``"sequential,ray"`` or a list → validated mode names, order kept, duplicates dropped."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    names: list[str] = []
    for p in (x.strip() for x in parts):
        if not p:
            continue
        if p not in _REGISTRY:
            raise _unknown(p)
        if p not in names:
            names.append(p)
    if not names:
        raise ConfigError(f"no mode given — choose from {', '.join(_REGISTRY)}")
    return names


# -- built-in modes: one _builtin (register_mode) line per mode -------------------------------
def _builtin(name: str, description: str, runner: str, *, sessions: str = "bench.loadgen",
             **fields: Any) -> None:
    """Register a built-in mode: ``runner`` and ``fields``' openers are under ``parallel_kit.``;
    its open-loop session is ``parallel_kit.<sessions>:<name>_session``."""
    register_mode(ModeInfo(name, description, f"parallel_kit.{runner}",
                           session=f"parallel_kit.{sessions}:{name}_session", **fields))


_builtin("sequential", "one request at a time, each waiting for the last (one server)",
         "modes.sequential:run_sequential", in_flight="one")
_builtin("async", "submit each request to a task queue, poll for results (one server)",
         "modes.queued:run_async", in_flight="queue",
         api_backend="parallel_kit.api.backends:open_single")
_builtin("batch", "submit every request in one call to the task queue (one server)",
         "modes.queued:run_batch", in_flight="queue")
_builtin("pool", "one Ollama per GPU, requests pulled by the least-loaded server",
         "modes.pool:run_pool", multi_server=True,
         api_backend="parallel_kit.api.backends:open_pool")
_builtin("ray", "one Ray actor per GPU, each with its own Ollama", "modes.ray_gpu:run_ray",
         multi_server=True, starts_own_servers=True,
         api_backend="parallel_kit.api.backends:open_ray", needs=("ray",))
_builtin("rayserve", "a Ray Serve application, one replica per GPU, each with its own Ollama",
         "modes.rayserve:run_rayserve", multi_server=True, starts_own_servers=True,
         needs=("production",), routing="power_of_two", sessions="production.sessions")
_builtin("production", "the production stack: Celery on a real Redis in front of Ray Serve",
         "production.mode:run_production", multi_server=True, starts_own_servers=True,
         api_backend="parallel_kit.production.api:open_production_backend",
         needs=("production",), routing="power_of_two", sessions="production.sessions")

#: Names of the built-in modes (the registry at import time); see :func:`mode_names`.
MODE_NAMES: tuple[str, ...] = mode_names()
