"""``rayserve`` mode: a Ray Serve application with one replica per GPU, each bound to one Ollama.

The same placement as the ``ray`` mode, but the cluster-side machinery is Ray Serve's instead of
the kit's own:

* **Replicas.** One deployment, ``num_replicas = W``, ``ray_actor_options = {"num_gpus": 1,
  "num_cpus": 0}``. Replica *i* (its Serve rank, ``serve.get_replica_context().rank``) binds to
  its Ollama exactly as GPU actor *i* of the ``ray`` mode does (``--host`` *i*; else ``ollama
  serve`` launched on its GPU; else an embedded simulated Ollama in the replica's process — see
  :mod:`parallel_kit.modes.ray_gpu`, whose :class:`~parallel_kit.modes.ray_gpu.GpuWorker`
  brings the endpoint up here too).
* **Routing.** The driver calls a ``DeploymentHandle``; Serve's router picks a replica by
  *power of two choices* (two random replicas, the one with fewer ongoing requests) among those
  below ``max_ongoing_requests``, which defaults to the Ollama's slots (``--max-ongoing N``
  overrides it). With every replica full, a request waits in the router, which polls again
  with a backoff; Serve's default backoff (25 ms doubling to 500 ms) would add up to half a
  second to each waiting request, so the kit bounds it (:data:`ROUTER_MAX_BACKOFF_S`) —
  ``request_router_config`` of the deployment, see
  https://github.com/ray-project/ray/blob/master/python/ray/serve/config.py.
* **Restarts.** Serve's controller health-checks every replica (``check_health`` below, every
  :data:`HEALTH_CHECK_PERIOD_S`) and replaces one that died or whose endpoint stopped
  answering. Serve does not re-send a request that was *inside* a replica when it died (its
  router retries only requests not yet accepted), so the driver sends such a request again —
  at most ``W`` times — and counts it in ``retries``; the lost replica is listed in the
  summary's ``lost_workers``.
* **No HTTP proxy.** ``serve.start(proxy_location="Disabled")`` and ``route_prefix=None``: the
  only way in is the handle (the ``production`` mode's Celery workers use the same handle).

Rows record ``worker`` (``gpu<i>``, as in the ``ray`` mode), ``node`` and ``replica`` (Serve's
replica id), plus ``hops["replica_entered"]``/``hops["replica_done"]`` (model seconds on the
driver's axis, via the wall-clock epoch of :class:`~parallel_kit.modes.ray_gpu.EpochClock`).
Setup — Ray, Serve's controller, the replicas and their endpoints, a warm-up call — is
``setup_s``, never inside the makespan.

Serve's API: https://docs.ray.io/en/latest/serve/api/index.html (``serve.deployment``,
``serve.run``, ``serve.start``, ``DeploymentHandle``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError, MissingDependency, OllamaUnavailable
from ..records import RequestResult, RequestSpec, RunResult, summarize
from ..timing import ModelClock
from .base import ModeContext
from .pool import check_endpoints, gather_rows
from .ray_gpu import (
    DEFAULT_START_TIMEOUT_S,
    EpochClock,
    GpuWorker,
    WorkerPlan,
    plan_workers,
    row_from_wire,
    row_to_wire,
    spec_to_wire,
)
from .stack_options import check_max_ongoing

__all__ = [
    "HEALTH_CHECK_PERIOD_S",
    "LOST_RETRIES",
    "REPLICA_PROBE_S",
    "ROUTER_CLASS_PATH",
    "ROUTER_MAX_BACKOFF_S",
    "EndpointLost",
    "OllamaReplica",
    "ServeApp",
    "check_max_ongoing",
    "import_serve",
    "lost_retry_delay",
    "open_serve_app",
    "run_on_app",
    "run_rayserve",
    "running_replicas",
]

#: Times a request whose replica was lost is sent again (:func:`lost_retry_delay` apart).
LOST_RETRIES = 10
#: Clock seconds between Serve's health checks of a replica (Serve's default is 10 s).
HEALTH_CHECK_PERIOD_S = 1.0
#: Clock seconds a replica's probe of its Ollama (``GET /``) may take: the pool's default
#: deadline (:class:`~parallel_kit.modes.health.HealthPolicy`), far below Serve's own
#: health-check timeout.
REPLICA_PROBE_S = 5.0
#: Longest pause (clock seconds) of Serve's router between two tries for a waiting request.
ROUTER_MAX_BACKOFF_S = 0.01
#: The deployment's request router (:mod:`parallel_kit.modes.serve_router`, imported by Serve
#: by this path in every process that holds a handle).
ROUTER_CLASS_PATH = "parallel_kit.modes.serve_router:FreedSlotRouter"
#: Clock seconds to wait for the application's replicas to come up.
DEPLOY_TIMEOUT_S = 180.0


class EndpointLost(RuntimeError):
    """Raised inside a replica whose Ollama stopped answering (the request is sent again)."""


def import_serve() -> Any:
    """``ray.serve``, or a :class:`MissingDependency` naming the extra to install.

    Before Serve's constants are first read, the router's first deadline for a replica's
    queue-length answer goes from Serve's 0.1 s to 0.5 s (``RAY_SERVE_QUEUE_LENGTH_RESPONSE_
    DEADLINE_S``, ``ray/serve/_private/constants.py``; a value the user set is kept): on a busy
    laptop a replica often answers later than 0.1 s, and Serve then logs a warning and retries
    with a longer deadline anyway (up to ``RAY_SERVE_MAX_QUEUE_LENGTH_RESPONSE_DEADLINE_S``, 1 s).
    """
    os.environ.setdefault("RAY_SERVE_QUEUE_LENGTH_RESPONSE_DEADLINE_S", "0.5")
    try:
        from ray import serve
    except ImportError as exc:
        raise MissingDependency("ray[serve]", "production", "the rayserve mode") from exc
    return serve


class OllamaReplica:
    """The body of one Serve replica: one GPU, one Ollama (deployed by :func:`open_serve_app`).

    ``__call__(spec_fields, submitted_s, epoch, hops)`` runs one request and returns the row as
    a tuple (``ray_gpu.row_to_wire``); ``describe()`` says where the replica runs.
    """

    # Serve awaits an async constructor (the endpoint comes up inside it).
    async def __init__(  # type: ignore[misc]
            self, plans: list[WorkerPlan], mode: str = "rayserve") -> None:
        from ray import serve

        ctx = serve.get_replica_context()
        rank = ctx.rank.rank if ctx.rank is not None else 0
        self.mode = mode
        self.replica = ctx.replica_id.unique_id
        self.plan = plans[rank % len(plans)]
        self._gpu = GpuWorker(rank, self.plan)
        info = await self._gpu.start()
        if "error" in info:
            # Serve retries the constructor, then marks the deployment unhealthy with this text.
            raise RuntimeError(f"replica {rank} could not bring up its Ollama: {info['error']}")
        import ray

        self.info = {**info, "rank": rank, "replica": self.replica,
                     "actor_id": ray.get_runtime_context().get_actor_id()}
        self.lost: str | None = None
        self.active = 0
        self.served = 0

    async def __call__(self, spec_fields: tuple[Any, ...], submitted_s: float, epoch: float,
                       hops: dict[str, float] | None = None) -> tuple[Any, ...]:
        clock = EpochClock(self.plan.time_scale, epoch)
        entered = clock.now()
        client = self._gpu._client
        assert client is not None
        spec = RequestSpec(*spec_fields)
        self.active += 1
        try:
            row = await client.run(spec, clock=clock, mode=self.mode, worker=self._gpu.worker,
                                   node=self._gpu.node, model=self.plan.model,
                                   submitted_s=submitted_s, raise_for=(OllamaUnavailable,))
        except OllamaUnavailable as exc:
            self.lost = str(exc)  # check_health fails now, and Serve replaces this replica
            raise EndpointLost(f"replica {self.replica} ({self._gpu.worker}): its Ollama "
                               f"stopped answering — {exc}") from None
        finally:
            self.active -= 1
        self.served += 1
        row.replica = self.replica
        row.hops = {**(hops or {}), "replica_entered": entered, "replica_done": clock.now()}
        return row_to_wire(row)

    async def describe(self) -> dict[str, Any]:
        """Where this replica runs (gpu, node, url, slots, replica, rank, pid) and its counts."""
        return {**self.info, "served": self.served, "active": self.active,
                "pid": os.getpid()}

    async def check_health(self) -> None:
        """Serve's health check (every :data:`HEALTH_CHECK_PERIOD_S`): fails once a request
        found the endpoint gone, and whenever ``GET /`` gets no answer within
        :data:`REPLICA_PROBE_S` — a frozen server keeps its socket open, so no request error
        would ever say so. Serve replaces the replica after a few failed checks in a row
        (its own threshold), and the driver sends the requests that were inside it again.

        Raises:
            RuntimeError: the endpoint is gone or did not answer the probe.
        """
        if self.lost:
            raise RuntimeError(f"the replica's Ollama stopped answering: {self.lost}")
        silent = await self._gpu.ping(REPLICA_PROBE_S)
        if silent:
            raise RuntimeError(f"the replica's Ollama did not answer a health check: {silent}")

    async def __del__(self) -> None:
        await self._gpu.stop()


@dataclass
class ServeApp:
    """A running Serve application of :class:`OllamaReplica` (see :func:`open_serve_app`).

    Attributes:
        name: the application's name (``serve.get_app_handle(name)`` finds it).
        handle: its ``DeploymentHandle`` (bound to the event loop that opened it).
        replicas: ``describe()`` of the replicas seen during warm-up.
        slots: slots of one endpoint; max_ongoing: the deployment's ``max_ongoing_requests``.
        workers: replicas (GPUs); ray_address: the cluster's GCS address.
        setup_s: clock seconds to bring it up (Ray, Serve, replicas, endpoints, warm-up).
    """

    name: str
    handle: Any
    workers: int
    slots: int
    max_ongoing: int
    ray_address: str
    time_scale: float
    model: str
    setup_s: float = 0.0
    replicas: list[dict[str, Any]] = field(default_factory=list)
    lost: list[dict[str, Any]] = field(default_factory=list)


def _slots_of(ctx: ModeContext, plans: Sequence[WorkerPlan]) -> int:
    if plans[0].url:
        return ctx.slots
    if plans[0].slots:
        return int(plans[0].slots)
    from ..sim.profiles import load_profile

    return load_profile(plans[0].profile).num_parallel


@contextlib.asynccontextmanager
async def open_serve_app(ctx: ModeContext, *, name: str | None = None, mode: str = "rayserve",
                         max_ongoing: int | None = None, keep: bool = False,
                         ) -> AsyncIterator[ServeApp]:
    """Deploy one :class:`OllamaReplica` per GPU with Serve; yield the app; delete it on exit.

    Args:
        ctx: endpoints (``--host`` once per GPU) or ``ctx.servers`` launch options, as for the
            ``ray`` mode; ``ctx.serve.max_ongoing`` as ``max_ongoing``.
        name: the application's name (default a fresh ``parallel_kit-…``).
        mode: recorded in the rows (``rayserve``; ``production`` when Celery calls it).
        max_ongoing: Serve's ``max_ongoing_requests`` per replica (default: the slots).
        keep: leave the application running on exit (a stack whose workers use it).

    Raises:
        ConfigError: bad ``--gpus``/``--max-ongoing``, too few GPUs, replicas that do not
            start within ``ctx.ray.start_timeout_s`` clock seconds (default
            :data:`~parallel_kit.modes.ray_gpu.DEFAULT_START_TIMEOUT_S`, as the ``ray`` mode's
            actors).
        MissingDependency: Ray Serve is not installed.
        OllamaUnavailable: a ``--host`` does not answer (named).
    """
    from ..servers import raycluster

    t0 = time.perf_counter()
    max_ongoing = check_max_ongoing(max_ongoing if max_ongoing is not None
                                    else ctx.serve.max_ongoing)
    plans = plan_workers(ctx)
    serve = import_serve()
    if ctx.endpoints and plans[0].url:
        await check_endpoints(ctx.endpoints, api=ctx.api)
    info = raycluster.connect(len(plans), ctx.ray.address)
    raycluster.require_gpus(len(plans))
    slots = _slots_of(ctx, plans)
    ongoing = max_ongoing or slots
    name = name or f"parallel_kit-{uuid.uuid4().hex[:8]}"
    start_timeout_s = float(ctx.ray.start_timeout_s or DEFAULT_START_TIMEOUT_S)
    quiet_serve_logs()
    serve.start(proxy_location="Disabled", logging_config={"log_level": "WARNING"})
    actor_options: dict[str, Any] = {"num_gpus": 1, "num_cpus": 0}
    if ctx.ray.runtime_env:
        actor_options["runtime_env"] = dict(ctx.ray.runtime_env)
    deployment = serve.deployment(
        OllamaReplica, name="ollama", num_replicas=len(plans),
        ray_actor_options=actor_options, max_ongoing_requests=ongoing,
        health_check_period_s=HEALTH_CHECK_PERIOD_S,
        health_check_timeout_s=ctx.serve.health_check_timeout_s,
        graceful_shutdown_timeout_s=1.0, graceful_shutdown_wait_loop_s=0.2,
        request_router_config={"request_router_class": ROUTER_CLASS_PATH,
                               "initial_backoff_s": min(0.005, ROUTER_MAX_BACKOFF_S),
                               "max_backoff_s": ROUTER_MAX_BACKOFF_S})
    app = ServeApp(name, None, len(plans), slots, ongoing, info.address, ctx.time_scale,
                   ctx.model)
    try:
        try:
            # In a thread: the loop stays free (it may serve the very endpoints the replicas
            # are bound to, e.g. simulators in a notebook or a test).
            await asyncio.wait_for(asyncio.to_thread(serve.run, deployment.bind(plans, mode),
                                                     name=name, route_prefix=None),
                                   start_timeout_s)
            app.handle = serve.get_app_handle(name)
        except asyncio.TimeoutError:
            # serve.run's thread sees its application deleted and ends.
            with contextlib.suppress(Exception):
                serve.delete(name, _blocking=False)
            raise ConfigError(
                f"the {len(plans)} Serve replicas did not start within {start_timeout_s:g} s — "
                f"check `ray status` (are the GPUs held by other jobs?) and `serve status`; "
                f"on a busy machine, allow longer (RayOptions.start_timeout_s)") from None
        except RuntimeError as exc:
            raise ConfigError(f"the Serve application did not start: {exc} — check `serve "
                              f"status` and that parallel_kit is installed on every node"
                              ) from None
        app.replicas = await _warm_up(app, len(plans))
        app.setup_s = time.perf_counter() - t0
        yield app
    finally:
        if not keep:
            with contextlib.suppress(Exception):
                serve.delete(name)


def running_replicas(app_name: str) -> int | None:
    """Replicas of ``app_name`` in Serve's ``RUNNING`` state (``serve.status()``, a call to
    Serve's controller); ``None`` when it could not be asked (no Ray, no controller)."""
    try:
        from ray import serve

        status = serve.status().applications.get(app_name)
    except Exception:
        return None
    if status is None:
        return 0
    return sum(int(n) for d in status.deployments.values()
               for state, n in (d.replica_states or {}).items()
               if str(getattr(state, "value", state)).upper().endswith("RUNNING"))


class _RouterWaitFilter(logging.Filter):
    """Drops Serve's "Failed to route request after 50 attempts" warning.

    Serve's router logs it after every 50 tries for a request that waits for a free replica
    (``request_router.py``). With ``max_ongoing_requests`` = slots, waiting in the router is the
    design, not a failure (a request of 10 s makes the next one wait ~10 s).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Failed to route request after")


_router_filter = _RouterWaitFilter()


def quiet_serve_logs() -> None:
    """Serve's logs at WARNING, without the router's waiting warning (this process)."""
    for logger_name in ("ray.serve", "ray"):
        logging.getLogger(logger_name).setLevel(logging.WARNING)
    serve_logger = logging.getLogger("ray.serve")
    if _router_filter not in serve_logger.filters:
        serve_logger.addFilter(_router_filter)


async def _warm_up(app: ServeApp, workers: int) -> list[dict[str, Any]]:
    """A few control calls: Serve's router learns the replicas now, not in the first request."""
    seen: dict[str, dict[str, Any]] = {}
    for _ in range(workers * 3):
        d = await app.handle.describe.remote()
        seen[d["replica"]] = d
        if len(seen) == workers:
            break
    return sorted(seen.values(), key=lambda d: d["rank"])


def ray_lost_errors() -> tuple[type[BaseException], ...]:
    import ray

    return (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError,
            ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError, EndpointLost)


async def call_app(app: ServeApp, spec: RequestSpec, *, submitted_s: float, epoch: float,
                   clock: ModelClock, mode: str = "rayserve",
                   hops: dict[str, float] | None = None) -> RequestResult:
    """One request through the application; a replica lost mid-request → sent again.

    Serve's router does not re-send a request that was already inside a replica (module
    docstring), so this does, after :func:`lost_retry_delay`, at most :data:`LOST_RETRIES`
    times; ``retries`` counts it, and each lost replica is listed once in ``app.lost``.
    """
    lost_errors = ray_lost_errors()
    retries = 0
    while True:
        try:
            out = await app.handle.remote(spec_to_wire(spec), submitted_s, epoch, hops)
        except lost_errors as exc:
            _note_lost(app, exc, clock)
            if retries >= LOST_RETRIES:
                return _failed(spec, mode, app.model, submitted_s, clock, retries,
                               f"gave up after {retries} retries: the replicas were lost")
            await asyncio.sleep(lost_retry_delay(retries))
            retries += 1
            continue
        except Exception as exc:  # an error inside the replica: the request fails, kept
            return _failed(spec, mode, app.model, submitted_s, clock, retries,
                           f"error inside the Serve replica: {str(exc).splitlines()[0]}")
        row = row_from_wire(out)
        row.retries += retries
        return row


def lost_retry_delay(retries: int) -> float:
    """Clock seconds to wait before sending again a request whose replica was lost, after
    ``retries`` earlier retries: 0.1 · 2^retries, at most 4 (about 22 s over
    :data:`LOST_RETRIES`).

    Why wait at all: a replica whose Ollama is gone fails each request at once, so to Serve's
    router it always looks free and would draw every retry; the waits give Serve's health
    checks (every :data:`HEALTH_CHECK_PERIOD_S`, a few failures in a row) time to take it out.
    """
    return min(4.0, 0.1 * 2.0 ** retries)


def _note_lost(app: ServeApp, exc: BaseException, clock: ModelClock) -> None:
    """Add the lost replica to ``app.lost`` (once per replica)."""
    lost = _lost_replica(app, exc)
    if lost["replica"] == "?" or all(w["replica"] != lost["replica"] for w in app.lost):
        app.lost.append({**lost, "at_s": round(clock.now(), 6)})


_REPLICA_IN_TEXT = re.compile(r"replica (?P<replica>\S+) \((?P<worker>[^)]*)\)")


def _lost_replica(app: ServeApp, exc: BaseException) -> dict[str, Any]:
    """Which replica was lost and why: ``{"worker", "replica", "rank", "reason"}``.

    An endpoint that stopped answering names its replica in the error raised inside it; a
    replica whose process died is found by its actor id (``ActorDiedError.actor_id``) among
    the replicas seen at warm-up. ``worker`` is ``replica <id>`` (``replica ?`` only when Ray
    names neither).
    """
    text = str(exc).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    found = next((m for m in map(_REPLICA_IN_TEXT.search, lines) if m), None)
    info: dict[str, Any] = {}
    if found:
        info = next((r for r in app.replicas if r.get("replica") == found["replica"]),
                    {"replica": found["replica"], "worker": found["worker"]})
    else:
        actor_id = getattr(exc, "actor_id", None)
        if actor_id is not None:
            info = next((r for r in app.replicas if r.get("actor_id") == str(actor_id)), {})
    cause = next((ln for ln in lines if "replica " in ln and "stopped answering" in ln),
                 lines[0] if lines else "")
    replica = info.get("replica") or "?"
    return {"worker": f"replica {replica}", "replica": replica, "rank": info.get("rank"),
            "endpoint": info.get("url") or info.get("worker"),
            "reason": f"{type(exc).__name__}: {cause[:300]}"}


def _failed(spec: RequestSpec, mode: str, model: str, submitted_s: float, clock: ModelClock,
            retries: int, error: str) -> RequestResult:
    return RequestResult(request_id=spec.request_id, mode=mode, prompt=spec.prompt,
                         model=spec.model or model, submitted_s=submitted_s,
                         finished_s=clock.now(), ok=False, error=error,
                         retries=retries).finalize()


async def run_on_app(app: ServeApp, specs: Sequence[RequestSpec], ctx: ModeContext,
                     *, setup_s: float | None = None) -> RunResult:
    """Send every spec at once through a running :class:`ServeApp`; one row per spec."""
    from tqdm.auto import tqdm

    clock = ModelClock(ctx.time_scale).start()
    epoch = time.time() - clock.wall()
    lost_before = len(app.lost)
    bar = tqdm(total=len(specs), desc="rayserve", unit="req", leave=False) \
        if ctx.progress else None

    async def one(spec: RequestSpec, submitted: float) -> RequestResult:
        row = await call_app(app, spec, submitted_s=submitted, epoch=epoch, clock=clock)
        if bar is not None:
            bar.update(1)
        ctx.notify(row)
        return row

    rows, submit_s = await gather_rows(specs, lambda s: one(s, clock.now()), bar)
    lost = app.lost[lost_before:]
    notes = [f"a replica was lost at {w['at_s']:.2f} s (model time) and its request sent "
             f"again: {w['reason']}" for w in lost]
    summary = summarize(rows, mode="rayserve", backend=ctx.backend, time_scale=ctx.time_scale,
                        workers=app.workers, slots=app.slots, submit_s=submit_s,
                        setup_s=app.setup_s if setup_s is None else setup_s, model=ctx.model,
                        lost_workers=lost, notes=notes)
    if app.max_ongoing != app.slots:
        summary.notes.append(f"max_ongoing_requests {app.max_ongoing} ≠ slots {app.slots}: a "
                             f"replica takes more than its Ollama runs at once")
    if math.isnan(summary.makespan_s):
        summary.notes.append("no request finished")
    return RunResult(summary, rows)


async def run_rayserve(specs: Sequence[RequestSpec], ctx: ModeContext) -> RunResult:
    """Run ``specs`` through a Serve application with one replica per GPU (module docstring).

    ``ctx.servers`` and ``ctx.ray`` as for ``ray`` (launch, profile, slots, address,
    runtime_env); ``ctx.serve.max_ongoing`` (``--max-ongoing``).

    Raises:
        ConfigError: bad ``--gpus``/``--max-ongoing``, too few GPUs, replicas that do not
            start within ``ctx.ray.start_timeout_s`` clock seconds (default
            :data:`~parallel_kit.modes.ray_gpu.DEFAULT_START_TIMEOUT_S`, as the ``ray`` mode's
            actors).
        MissingDependency: Ray Serve is not installed (``pip install "parallel_kit[production]"``).
        OllamaUnavailable: a ``--host`` endpoint does not answer (named).
    """
    async with open_serve_app(ctx) as app:
        return await run_on_app(app, specs, ctx)
