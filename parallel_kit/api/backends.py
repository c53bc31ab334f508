"""What sends the requests of ``parallel-kit serve``: the API's backends, one per mode.

An :class:`ApiBackend` is any ``async (spec) -> RequestResult`` plus the clock its rows are on.
:func:`open_api_backend` opens the servers (the Ollama at ``--host``, or embedded simulators via
:func:`parallel_kit.servers.backend.open_backend`) and hands them to the opener the mode names in its
registry record (``ModeInfo.api_backend``): one server behind the queue (:func:`open_single`),
one Ollama per GPU behind :class:`~parallel_kit.modes.pool.EndpointPool` (:func:`open_pool`), or
one GPU actor per server (:func:`open_ray`). A new mode serves the API by naming its own opener
there; nothing here compares mode names.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..config import DEFAULT_MODEL, max_concurrent_from_env
from ..errors import ConfigError
from ..modes.taskqueue import RequestFn
from ..records import RequestResult, RequestSpec
from ..timing import ModelClock

if TYPE_CHECKING:
    from ..modes.base import ModeContext
    from ..servers.backend import Backend

__all__ = ["ApiBackend", "BackendOpener", "OpenerOptions", "dispatcher_health",
           "open_api_backend", "open_pool",
           "open_ray", "open_single"]


@dataclass
class ApiBackend:
    """What the API's queue sends requests to.

    Args:
        call: ``async (spec) -> RequestResult``; its rows must be on ``clock``.
        clock: the clock of the rows (model time since the API started).
        model: the model for requests that name none.
        description: one line saying what serves the requests (printed at start-up).
        kind: ``sim`` or ``ollama``.
        health: ``() -> {"status": "ok"|"degraded"|"down", "workers": [...]}`` for backends
            with several servers (a pool, Ray actors; :func:`dispatcher_health`); ``None``:
            always ``ok``.
    """

    call: RequestFn
    clock: ModelClock
    model: str = DEFAULT_MODEL
    description: str = ""
    kind: str = "ollama"
    health: Callable[[], dict[str, Any]] | None = None


def dispatcher_health(dispatcher: Any) -> dict[str, Any]:
    """``/health``'s view of a pool or Ray dispatcher: its status and each worker's state
    (lost servers are probed and taken back; see :mod:`parallel_kit.modes.health`)."""
    workers = [{"worker": w.name, "state": "lost" if w.lost else "ok",
                **({"reason": w.lost_reason} if w.lost else {})}
               for w in dispatcher.workers]
    return {"status": dispatcher.status, "workers": workers}


@dataclass(frozen=True, slots=True)
class OpenerOptions:
    """What an opener needs besides the servers: the mode's name (written into the rows),
    requests sent at once, the servers' count, whether the mode starts its own servers (no
    endpoints then), and the Ray cluster to join."""

    mode: str
    concurrency: int
    servers: int
    start_own: bool = False
    ray_address: str | None = None


class BackendOpener(Protocol):
    """``opener(servers, options)`` → an async context manager yielding the ApiBackend."""

    def __call__(self, servers: Backend, options: OpenerOptions
                 ) -> contextlib.AbstractAsyncContextManager[ApiBackend]: ...


@contextlib.asynccontextmanager
async def open_api_backend(
    hosts: Sequence[str] | None = None,
    *,
    mode: str = "async",
    model: str | None = None,
    concurrency: int | None = None,
    gpus: int | None = None,
    profile: str | None = None,
    time_scale: float | None = None,
    ray_address: str | None = None,
    announce: Callable[[str], None] | None = None,
) -> AsyncIterator[ApiBackend]:
    """The backend of ``parallel-kit serve``: the Ollama at ``hosts`` or an embedded simulator.

    Args:
        hosts: Ollama URL(s); ``None``: ``OLLAMA_HOST``, or an embedded simulator when none
            answers (``parallel_kit.servers.backend.open_backend`` decides and says so).
        mode: a mode whose registry record names an ``api_backend`` (``async``: one server
            behind the queue; ``pool``: ``gpus`` servers, or one per host, least outstanding
            first; ``ray``: one GPU actor per host, or ``gpus`` actors each starting its own).
        gpus: servers (GPUs) for the multi-server modes when no ``hosts`` are given (default 3).
        concurrency: requests sent at once (the queue's workers; ``MAX_CONCURRENT_REQUESTS``).

    Raises:
        ConfigError: a mode that cannot serve the API, several hosts for a one-server mode.
    """
    from ..modes.registry import get_info, modes
    from ..servers.backend import open_backend

    info = get_info(mode)
    if info.api_backend is None:
        usable = ", ".join(m.name for m in modes() if m.serves_api)
        raise ConfigError(f"serve --mode {mode!r} cannot back the API — use one of {usable}")
    if not info.multi_server and hosts and len(hosts) > 1:
        raise ConfigError(f"serve --mode {mode} sends to one Ollama, but {len(hosts)} --host "
                          f"were given — give one, or use a mode with several servers (pool)")
    module_name, func = info.api_backend.split(":")
    opener: BackendOpener = getattr(importlib.import_module(module_name), func)
    options = OpenerOptions(mode=mode, concurrency=concurrency or max_concurrent_from_env(),
                           servers=info.servers_for(gpus or (len(hosts) if hosts else 3)),
                           start_own=info.starts_own_servers and not hosts,
                           ray_address=ray_address)
    async with open_backend(list(hosts) if hosts else None, model=model,
                            servers=options.servers, time_scale=time_scale, profile=profile,
                            announce=announce, start_servers=not options.start_own) as b, \
            opener(b, options) as api_backend:
        yield api_backend


@contextlib.asynccontextmanager
async def open_single(servers: Backend, options: OpenerOptions) -> AsyncIterator[ApiBackend]:
    """One server behind the queue (``async``): one pooled client, ``concurrency`` lanes."""
    from ..clients.factory import make_client

    clock = ModelClock(servers.time_scale)
    endpoint = servers.endpoints[0]
    async with make_client("generate", endpoint.url,
                           max_connections=options.concurrency) as client:

        async def call(spec: RequestSpec) -> RequestResult:
            return await client.run(spec, clock=clock, mode=options.mode,
                                    worker=endpoint.label, node=endpoint.node,
                                    model=servers.model)

        yield ApiBackend(call, clock, model=servers.model, description=servers.message,
                         kind=servers.kind)


@contextlib.asynccontextmanager
async def open_pool(servers: Backend, options: OpenerOptions) -> AsyncIterator[ApiBackend]:
    """One Ollama per GPU behind an :class:`~parallel_kit.modes.pool.EndpointPool`."""
    from ..modes.pool import EndpointPool

    clock = ModelClock(servers.time_scale)
    async with EndpointPool(servers.endpoints, clock=clock, mode=options.mode,
                            model=servers.model) as pool:
        yield ApiBackend(pool, clock, model=servers.model, description=servers.message,
                         kind=servers.kind, health=lambda: dispatcher_health(pool))


def stack_context(servers: Backend, options: OpenerOptions) -> ModeContext:
    """The run context of an API over Ray actors or the production stack: the given servers,
    or (``options.start_own``) one launched per GPU on the backend's kind and profile."""
    from ..modes.base import ModeContext
    from ..modes.options import RayOptions, launched_servers

    launched = launched_servers(servers.kind, servers.profile, start_own=options.start_own)
    return ModeContext(endpoints=list(servers.endpoints), backend=servers.kind,
                       time_scale=servers.time_scale, model=servers.model, gpus=options.servers,
                       servers=launched, ray=RayOptions(address=options.ray_address))


@contextlib.asynccontextmanager
async def open_ray(servers: Backend, options: OpenerOptions) -> AsyncIterator[ApiBackend]:
    """One Ray GPU actor per server (each starting its own when no endpoints were given)."""
    from ..modes.ray_gpu import open_ray_dispatcher

    clock = ModelClock(servers.time_scale)
    ctx = stack_context(servers, options)
    async with open_ray_dispatcher(ctx, clock=clock, mode=options.mode) as dispatcher:
        yield ApiBackend(dispatcher, clock, model=servers.model, description=servers.message,
                         kind=servers.kind, health=lambda: dispatcher_health(dispatcher))


