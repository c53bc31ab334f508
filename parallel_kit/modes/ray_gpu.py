"""``ray`` mode: one async Ray actor per GPU, each bound to one Ollama endpoint.

Each actor asks for ``num_gpus=1`` and ``num_cpus=0`` (so a 2-core machine can place three) and
serves as many requests at once as its endpoint has slots. Its endpoint is, in this order:

1. ``ctx.endpoints[i]`` for GPU worker i (``--host`` given once per GPU);
2. ``ollama serve`` launched by the actor on its own GPU (``CUDA_VISIBLE_DEVICES`` from
   ``ray.get_gpu_ids()``) and a free port, when the ``ollama`` binary and real GPUs are there
   (or when ``ctx.servers.launch == "ollama"``) — stopped with the actor;
3. a simulated Ollama inside the actor's process (the default without GPUs, or
   ``ServerOptions(launch="sim")``).

The driver dispatches pull-based with the same :class:`~parallel_kit.modes.pool.Dispatcher` as
``pool``: a request goes to an actor when it has a free slot. An actor that dies (``ray.kill``,
its process exits, its node goes away) or whose endpoint stops answering is marked lost and its
requests are sent to the others. Setup — cluster, actors, endpoint launch, model warm-up — is
``setup_s``, outside the makespan.

Time across processes
---------------------
Rows are in the driver's model time. ``time.perf_counter`` has an arbitrary origin in each
process, so an actor cannot use the driver's ``ModelClock``. The driver sends the run's start as
a wall-clock (``time.time()``) epoch; each actor measures ``(time.time() − epoch) / time_scale``
(:class:`EpochClock`). On one machine all processes read the same system clock, so this is exact.
Across nodes clocks differ by their NTP skew (typically < 1 ms, can be more): during setup the
driver estimates each actor's offset NTP-style (the probe with the shortest round trip) and, when
the offset is larger than that round trip (i.e. real skew, not noise), shifts the epoch it sends
to that actor by it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..config import DEFAULT_MODEL
from ..errors import (
    ConfigError,
    OllamaUnavailable,
    WorkerLost,
)
from ..records import RequestResult, RequestSpec, RunResult
from ..timing import ModelClock
from .base import ModeContext
from .health import HealthPolicy
from .pool import (
    POOL_RETRY,
    Dispatcher,
    PoolWorker,
    check_endpoints,
    check_prefetch,
    run_dispatched,
)

if TYPE_CHECKING:
    from ..clients import OllamaClient, OpenAIClient

__all__ = ["EpochClock", "GpuWorker", "WorkerPlan", "run_ray"]

#: Extra concurrent calls an actor accepts beside its slots (start, stats, clock probes, stop).
CONTROL_CALLS = 4
#: Clock seconds to wait for actors to be placed and their endpoints to come up.
DEFAULT_START_TIMEOUT_S = 180.0


class EpochClock(ModelClock):
    """A :class:`ModelClock` whose origin is a wall-clock epoch (``time.time()`` seconds).

    Used inside actors so that their timestamps fall on the driver's axis (module docstring).
    """

    __slots__ = ()

    _read = staticmethod(time.time)

    def __init__(self, time_scale: float, epoch: float) -> None:
        super().__init__(time_scale)
        self.epoch = epoch

    @property
    def epoch(self) -> float:
        """The origin: a wall-clock epoch (``time.time()`` seconds)."""
        return self._t0

    @epoch.setter
    def epoch(self, value: float) -> None:
        self._t0 = value


@dataclass(frozen=True)
class WorkerPlan:
    """What one GPU actor serves from (sent to the actor; plain data).

    Args:
        url: an endpoint to use as it is; ``None`` → launch one.
        launch: ``ollama`` (``ollama serve``), ``sim`` (embedded simulator) or ``auto``
            (``ollama`` where the binary and real GPUs exist, else ``sim``).
        slots: slots of the endpoint (``OLLAMA_NUM_PARALLEL``); ``None``: the profile's / 1.
        warm_up: load the model before the run (launched endpoints only; the bench warms
            endpoints it was given).
        prefetch: requests the actor may hold beyond its slots (opt-in; see
            :class:`~parallel_kit.modes.pool.Dispatcher`).
    """

    url: str | None = None
    launch: str = "auto"
    model: str = DEFAULT_MODEL
    time_scale: float = 1.0
    api: str = "generate"
    slots: int | None = None
    profile: str = "seed"
    engine: str = "sim"
    engine_options: dict[str, Any] = field(default_factory=dict)
    #: real engines this run starts on one machine (their cores are shared: ``make_engine``)
    sharing: int = 1
    ollama_env: dict[str, str] = field(default_factory=dict)
    warm_up: bool = True
    ready_timeout_s: float = 120.0
    prefetch: int = 0


class GpuWorker:
    """The body of one GPU actor (wrapped with ``ray.remote`` by :func:`run_ray`).

    Lifecycle: ``start()`` → endpoint up, returns where it runs; ``run(...)`` per request;
    ``stop()`` stops what it launched. ``stats()`` and ``now()`` are control calls.
    """

    def __init__(self, index: int, plan: WorkerPlan) -> None:
        self.index = index
        self.plan = plan
        self.url = plan.url or ""
        self.slots = plan.slots or 1
        self.kind = "given"
        self.worker = f"gpu{index}"
        self.node = ""
        self.served = 0
        self.active = 0
        self._sim: Any = None
        self._server: Any = None
        self._client: OllamaClient | OpenAIClient | None = None
        self._probe: Any = None  # httpx.AsyncClient of the health checks, made once

    async def start(self) -> dict[str, Any]:
        """Bring the endpoint up (and warm it); returns gpu, node, url, slots, kind, setup_s.

        Errors come back as ``{"error": message}`` rather than exceptions, so the driver can
        raise the kit's own typed error (custom exceptions do not survive Ray's wrapping well).
        """
        import ray

        t0 = time.perf_counter()
        gpu_ids = [str(g) for g in ray.get_gpu_ids()]
        node_id = ray.get_runtime_context().get_node_id()
        host = socket.gethostname()
        self.node = f"{host}/{node_id[:8]}"
        gpu = ",".join(gpu_ids) or str(self.index)
        self.worker = f"gpu{gpu}"
        try:
            await self._bring_up(gpu_ids)
        except Exception as exc:  # reported to the driver, which raises a typed error
            return {"error": f"{type(exc).__name__}: {exc}", "node": self.node, "gpu": gpu}
        from ..clients.factory import make_client

        conns = self.slots + 1 + self.plan.prefetch
        self._client = make_client(self.plan.api, self.url, max_connections=conns,
                                   retry=POOL_RETRY)
        # Open the client's connections now (setup), not in the first requests' times.
        with contextlib.suppress(OllamaUnavailable):
            await self._client.warm_up()
        # The health checks' client, made now too: importing httpx and loading its SSL context
        # takes 100–300 ms of CPU here, which blocked this actor's event loop — and the
        # request the driver had just sent it — at the first check, one second into the run.
        import httpx

        from .pool import health_path, probe_endpoint

        self._probe = httpx.AsyncClient(trust_env=False)
        await probe_endpoint(self._probe, self.url, 5.0, health_path(self.plan.api))  # its first request's lazy imports
        return {"gpu": gpu, "gpu_ids": gpu_ids, "node": self.node, "node_id": node_id,
                "hostname": host, "url": self.url, "slots": self.slots, "kind": self.kind,
                "pid": os.getpid(), "cuda_visible_devices": os.environ.get(
                    "CUDA_VISIBLE_DEVICES"), "setup_s": time.perf_counter() - t0}

    async def _bring_up(self, gpu_ids: list[str]) -> None:
        plan = self.plan
        if plan.url:
            return  # an endpoint given with --host: the driver checked it answers
        from ..servers.launcher import OllamaServer, find_ollama, has_real_gpus

        launch = plan.launch
        if launch == "auto":
            launch = "ollama" if find_ollama() and has_real_gpus() else "sim"
        if launch == "ollama":
            server = OllamaServer(gpu_ids, num_parallel=plan.slots, env=plan.ollama_env,
                                  ready_timeout_s=plan.ready_timeout_s)
            await server.__aenter__()
            self._server = server
            self.url, self.kind = server.url, "ollama"
        elif launch == "sim":
            from ..servers.backend import make_engine
            from ..sim.server import SimulatedOllama

            sim = SimulatedOllama(plan.profile, num_parallel=plan.slots,
                                  time_scale=plan.time_scale, models=[plan.model],
                                  engine=make_engine(plan.engine, plan.engine_options,
                                                     slots=plan.slots, model=plan.model,
                                                     sharing=plan.sharing))
            await sim.__aenter__()
            self._sim = sim
            self.url, self.kind = sim.url, "sim"
            self.slots = int(sim.num_parallel)
        else:
            raise ConfigError(f"launch {launch!r} is not one of auto, ollama, sim")
        if plan.warm_up:
            await self._warm_up()

    async def _warm_up(self) -> None:
        """Load the model (Ollama's empty prompt), so load time is setup, not makespan."""
        import httpx

        async with httpx.AsyncClient(timeout=600.0, trust_env=False) as client:
            resp = await client.post(f"{self.url}/api/generate",
                                     json={"model": self.plan.model, "prompt": "",
                                           "stream": False})
            if resp.status_code == 404:
                raise ConfigError(f"model {self.plan.model!r} not found on {self.url} — pull "
                                  f"it on every node with `ollama pull {self.plan.model}`")

    async def run(self, spec_fields: tuple[Any, ...], submitted_s: float, epoch: float
                  ) -> tuple[Any, ...] | dict[str, str]:
        """Run one request; times on the driver's axis via ``epoch`` (module docstring).

        Takes and returns plain tuples (:func:`spec_to_wire`, :func:`row_from_wire`): Ray
        pickles a tuple of plain values faster than a dataclass, which is ~0.4 ms of every
        request's round trip on the critical path. Returns the row's values, or
        ``{"lost": reason}`` when the endpoint stopped answering.
        """
        assert self._client is not None, "start() first"
        spec = RequestSpec(*spec_fields)
        clock = EpochClock(self.plan.time_scale, epoch)
        entered = clock.now()
        self.active += 1
        try:
            row = await self._client.run(spec, clock=clock, mode="ray", worker=self.worker,
                                         node=self.node, model=self.plan.model,
                                         submitted_s=submitted_s,
                                         raise_for=(OllamaUnavailable,))
        except OllamaUnavailable as exc:
            return {"lost": str(exc)}
        finally:
            self.active -= 1
        self.served += 1
        row.hops = {**row.hops, "actor_entered": entered, "actor_done": clock.now()}
        return row_to_wire(row)

    async def ping(self, timeout_s: float = 5.0) -> str | None:
        """A health check (control call): ``None`` when the endpoint answers ``GET /`` within
        ``timeout_s``, else the reason. The driver puts its own deadline around the call, so
        a frozen actor is caught as well as a frozen endpoint."""
        from .pool import health_path, probe_endpoint

        if self._probe is None:  # stopped: the check still answers
            return "the actor was stopped"
        return await probe_endpoint(self._probe, self.url, timeout_s, health_path(self.plan.api))

    async def now(self) -> float:
        """This process's wall clock (``time.time()``), for the driver's offset estimate."""
        return time.time()

    async def stats(self) -> dict[str, Any]:
        """Requests served and running now (a control call)."""
        return {"served": self.served, "active": self.active, "worker": self.worker,
                "node": self.node, "pid": os.getpid(), "url": self.url}

    async def stop(self) -> None:
        """Close the client and stop what this actor launched."""
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.aclose()
            self._client = None
        if self._probe is not None:
            with contextlib.suppress(Exception):
                await self._probe.aclose()
            self._probe = None
        if self._sim is not None:
            with contextlib.suppress(Exception):
                await self._sim.__aexit__(None, None, None)
            self._sim = None
        if self._server is not None:
            self._server.stop()
            self._server = None


_remote_cls: Any = None


def _actor_class(ray: Any) -> Any:
    global _remote_cls
    if _remote_cls is None:
        _remote_cls = ray.remote(GpuWorker)
    return _remote_cls


def plan_workers(ctx: ModeContext) -> list[WorkerPlan]:
    """One :class:`WorkerPlan` per GPU, following the order in the module docstring."""
    servers = ctx.servers
    launch = servers.launch
    gpus = ctx.gpus if ctx.gpus is not None else len(ctx.endpoints)
    if gpus < 1:
        raise ConfigError(f"--gpus must be at least 1, got {gpus} — the ray mode runs one "
                          f"worker per GPU")
    common: dict[str, Any] = {
        "model": ctx.model, "time_scale": ctx.time_scale, "api": ctx.api,
        "profile": servers.profile or "seed", "engine": servers.engine or "sim",
        "engine_options": dict(servers.engine_options),
        "ollama_env": dict(servers.ollama_env),
        "ready_timeout_s": float(servers.ready_timeout_s),
        "prefetch": check_prefetch(ctx.queue.prefetch)}
    # --host given for every GPU (or no launch asked for): GPU i ↔ endpoint i.
    if ctx.endpoints and (launch is None or len(ctx.endpoints) == gpus):
        if len(ctx.endpoints) != gpus:
            raise ConfigError(f"--gpus {gpus} but {len(ctx.endpoints)} --host given — the ray "
                              f"mode binds GPU i to endpoint i, so give one --host per GPU")
        return [WorkerPlan(url=ep.url, launch="given", slots=ep.slots, warm_up=False, **common)
                for ep in ctx.endpoints]
    # A local cluster's actors start their engines on this one machine: they share its cores.
    local = not (ctx.ray.address or os.environ.get("RAY_ADDRESS"))
    return [WorkerPlan(launch=launch or "auto", slots=servers.slots,
                       sharing=gpus if local else 1, **common)
            for _ in range(gpus)]


@dataclass
class _Actor:
    index: int
    handle: Any
    info: dict[str, Any] = field(default_factory=dict)
    epoch_shift: float = 0.0  # actor clock − driver clock, applied when it is real skew
    lost: bool = False  # marked lost during the run: killed at the end, not asked to stop


async def run_ray(specs: Sequence[RequestSpec], ctx: ModeContext) -> RunResult:
    """Run ``specs`` on one Ray actor per GPU (see the module docstring).

    ``ctx.servers`` (:class:`~parallel_kit.modes.options.ServerOptions`): ``launch``
    (``auto``|``ollama``|``sim``), ``profile``, ``slots``, ``engine``, ``engine_options`` for
    launched servers, ``ollama_env`` (extra environment for ``ollama serve``);
    ``ctx.ray`` (:class:`~parallel_kit.modes.options.RayOptions`): ``address``, ``runtime_env``
    (Ray runtime env of the actors), ``actor_name_prefix`` (actors are named
    ``<prefix>-w<i>``), ``start_timeout_s``; ``ctx.queue.prefetch``.

    Raises:
        ConfigError: bad ``--gpus``, more GPUs than the cluster has, actors that never start.
        MissingDependency: Ray is not installed.
        OllamaUnavailable: a ``--host`` endpoint does not answer (named).
        AllWorkersLost: every actor was lost; ``partial`` is the RunResult so far.
    """
    async with open_ray_dispatcher(ctx) as dispatcher:
        return await run_dispatched(dispatcher, specs, ctx, dispatcher.setup_s)


class RayDispatcher(Dispatcher):
    """A :class:`Dispatcher` over GPU actors; ``setup_s`` is what bringing them up cost."""

    setup_s: float = 0.0


@contextlib.asynccontextmanager
async def open_ray_dispatcher(ctx: ModeContext, *, clock: ModelClock | None = None,
                              mode: str = "ray") -> AsyncIterator[RayDispatcher]:
    """Bring up one actor per GPU and yield a dispatcher over them; stop them on exit.

    Long-lived use (``parallel-kit serve --mode ray``): ``await dispatcher(spec)`` per request.
    ``clock`` is the axis of the rows (default: a new one started once the actors are up).
    """
    from ..servers import raycluster

    t_setup = time.perf_counter()
    plans = plan_workers(ctx)
    ray = raycluster.import_ray()
    if ctx.endpoints and plans[0].url:
        await check_endpoints(ctx.endpoints, api=ctx.api)
    # Blocking on purpose (setup, outside the makespan): ray.init from the loop's own thread
    # keeps Ray's signal handlers where it wants them (the main thread, in a script).
    raycluster.connect(len(plans), ctx.ray.address)
    raycluster.require_gpus(len(plans))

    prefix = ctx.ray.actor_name_prefix or f"parallel_kit-{uuid.uuid4().hex[:8]}"
    timeout_s = float(ctx.ray.start_timeout_s or DEFAULT_START_TIMEOUT_S)
    cls = _actor_class(ray)
    actors: list[_Actor] = []
    try:
        for i, plan in enumerate(plans):
            options: dict[str, Any] = {
                "num_gpus": 1, "num_cpus": 0, "name": f"{prefix}-w{i}",
                "max_concurrency": (plan.slots or 1) + plan.prefetch + CONTROL_CALLS,
                # a dead actor stays dead: its requests are retried elsewhere, not on a
                # restarted copy whose endpoint would have to come up again mid-run
                "max_restarts": 0}
            if ctx.ray.runtime_env:
                options["runtime_env"] = dict(ctx.ray.runtime_env)
            actors.append(_Actor(i, cls.options(**options).remote(i, plan)))
        await _start_actors(ray, actors, timeout_s)
        await asyncio.gather(*(_estimate_offset(a) for a in actors))
        _label_workers(actors)
        setup_s = time.perf_counter() - t_setup

        # The run's origin on both axes: the driver's clock and the wall clock (actors stamp
        # with the wall clock, which every process on a machine shares).
        if clock is None:
            clock = ModelClock(ctx.time_scale).start()
        epoch = time.time() - clock.wall()
        health = ctx.queue.health
        workers = [PoolWorker(a.info["worker"], int(a.info["slots"]),
                              _sender(ray, a, clock, epoch), node=a.info["node"],
                              gpu=a.info["gpu"], probe=_prober(ray, a, health))
                   for a in actors]
        dispatcher = RayDispatcher(workers, clock=clock, mode=mode, model=ctx.model,
                                   prefetch=plans[0].prefetch, health=health)
        dispatcher.setup_s = setup_s
        dispatcher.start_health()
        try:
            yield dispatcher
        finally:
            await dispatcher.stop_health()
            lost = {w.name for w in workers if w.lost}
            # A lost actor may be frozen: asking it to stop would wait for nothing.
            for a in actors:
                a.lost = a.info["worker"] in lost
    finally:
        await _stop_actors(ray, actors)


async def _start_actors(ray: Any, actors: list[_Actor], timeout_s: float) -> None:
    """Start every actor's endpoint; clear errors instead of waiting forever."""
    refs = [a.handle.start.remote() for a in actors]
    try:
        infos = await asyncio.wait_for(asyncio.gather(*refs), timeout_s)
    except asyncio.TimeoutError:
        raise ConfigError(
            f"the {len(actors)} GPU actors did not start within {timeout_s:g} s — check "
            f"`ray status` (are the GPUs held by other jobs?) and the node logs") from None
    except ray.exceptions.RayError as exc:
        raise ConfigError(f"a GPU actor failed to start: {exc} — is parallel_kit installed "
                          f"in the same Python on every node?") from exc
    for a, info in zip(actors, infos, strict=True):
        if "error" in info:
            raise ConfigError(f"GPU worker {a.index} (GPU {info.get('gpu')}, node "
                              f"{info.get('node')}) could not bring up its endpoint: "
                              f"{info['error']}")
        a.info = info


async def _estimate_offset(actor: _Actor, probes: int = 3) -> None:
    """NTP-style: the actor's clock minus ours, from the probe with the shortest round trip.

    Applied only when it exceeds that round trip (real skew between nodes, not noise: on one
    machine every process reads the same clock and the offset is zero).
    """
    best_rtt, best_offset = float("inf"), 0.0
    for _ in range(probes):
        t1 = time.time()
        remote = await actor.handle.now.remote()
        t2 = time.time()
        if t2 - t1 < best_rtt:
            best_rtt, best_offset = t2 - t1, remote - (t1 + t2) / 2
    actor.epoch_shift = best_offset if abs(best_offset) > best_rtt else 0.0
    actor.info["clock_offset_s"] = best_offset
    actor.info["clock_rtt_s"] = best_rtt


def _label_workers(actors: list[_Actor]) -> None:
    """``gpu<i>``, with the node added where two nodes both have a ``gpu<i>``."""
    names = [a.info["worker"] if "worker" in a.info else f"gpu{a.info['gpu']}" for a in actors]
    for a, name in zip(actors, names, strict=True):
        a.info["worker"] = name if names.count(name) == 1 else f"{name}@{a.info['node']}"


def _prober(ray: Any, actor: _Actor, health: HealthPolicy | None) -> Any:
    """The dispatcher's health check of one actor: its endpoint, through the actor."""
    timeout_s = health.timeout_s if health is not None else 5.0

    async def probe() -> str | None:
        try:
            return await actor.handle.ping.remote(timeout_s)  # type: ignore[no-any-return]
        except ray.exceptions.RayError as exc:
            return f"Ray actor unreachable ({type(exc).__name__})"
    return probe


def _sender(ray: Any, actor: _Actor, clock: ModelClock, epoch: float) -> Any:
    """The dispatcher's ``send`` for one actor: a lost actor or endpoint → ``WorkerLost``."""
    name = actor.info["worker"]
    lost_errors = (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError,
                   ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError)
    actor_epoch = epoch + actor.epoch_shift

    async def send(spec: RequestSpec, submitted_s: float) -> RequestResult:
        sent = clock.now()
        ref = actor.handle.run.remote(spec_to_wire(spec), submitted_s, actor_epoch)
        try:
            out = await ref
        except asyncio.CancelledError:
            # Ctrl-C, or the health monitor found the actor or its endpoint frozen: stop the
            # request inside the actor too, so it frees its slot (best effort).
            with contextlib.suppress(Exception):
                ray.cancel(ref)
            raise
        except lost_errors as exc:
            raise WorkerLost(name, f"Ray actor died ({type(exc).__name__})") from exc
        except ray.exceptions.RayTaskError as exc:
            # a bug or unexpected error inside the actor: the request fails, the actor stays
            return RequestResult(request_id=spec.request_id, mode="ray", prompt=spec.prompt,
                                 model=spec.model or "", worker=name, node=actor.info["node"],
                                 submitted_s=submitted_s, finished_s=clock.now(), ok=False,
                                 error=f"error inside the GPU actor: {exc}").finalize()
        if isinstance(out, dict):
            raise WorkerLost(name, out.get("lost", "endpoint stopped answering"))
        row = row_from_wire(out)
        row.worker = name
        row.hops = {**row.hops, "sent": sent, "returned": clock.now()}
        return row

    return send


_SPEC_FIELDS = tuple(f.name for f in dataclasses.fields(RequestSpec))
_ROW_FIELDS = tuple(f.name for f in dataclasses.fields(RequestResult))


def spec_to_wire(spec: RequestSpec) -> tuple[Any, ...]:
    return tuple(getattr(spec, name) for name in _SPEC_FIELDS)


def row_to_wire(row: RequestResult) -> tuple[Any, ...]:
    return tuple(getattr(row, name) for name in _ROW_FIELDS)


def row_from_wire(values: tuple[Any, ...]) -> RequestResult:
    return RequestResult(*values)


async def _stop_actors(ray: Any, actors: list[_Actor]) -> None:
    """Stop launched endpoints, then free the actors' GPUs (errors of dead actors ignored)."""
    if not actors:
        return
    with contextlib.suppress(Exception):
        await asyncio.wait_for(asyncio.gather(*(a.handle.stop.remote() for a in actors
                                                if not a.lost),
                                              return_exceptions=True), 30.0)
    for a in actors:
        with contextlib.suppress(Exception):
            ray.kill(a.handle, no_restart=True)
