"""``pool`` mode: several Ollama endpoints (one per GPU) in one process, no cluster.

Each request goes to the endpoint with the fewest outstanding requests among those with a free
slot; when every slot is busy it waits, first come first served, and goes to the first endpoint
that frees one (pull-based, so a slow endpoint never collects a queue of its own). This is what
nginx ``least_conn`` or LiteLLM's router do in front of one ``ollama serve`` per GPU — the
teaching point is that on one machine no cluster is needed for it.

Failures: a worker that stops answering (``OllamaUnavailable`` from the client, or a dead Ray
actor in ``ray`` mode) is marked lost, with the model time it was lost at; the request it held is
sent to another worker (counted in ``retries``). Requests still waiting never were bound to a
worker, so they simply go elsewhere. When no worker is left, :class:`AllWorkersLost` carries the
partial :class:`~parallel_kit.records.RunResult` (every request has a row; the unfinished are
failed rows).

Health checks (:class:`HealthPolicy`): a process that is *frozen* (stopped with SIGSTOP, hung in
a driver, a black-holed route) keeps its socket open and never refuses anything, so no request
error ever says it is gone — its requests would wait for the client's read timeout (minutes).
So while a dispatcher is open, a monitor probes every worker that has a ``probe`` (``GET /``
for an Ollama endpoint, ``GET /v1/models`` for an OpenAI-compatible one — never a native
Ollama route there, :func:`health_path`; a ping through the actor for Ray) every ``interval_s`` with a deadline of
``timeout_s``. A worker that misses ``misses`` probes in a row is marked lost and the requests
it holds are cancelled and sent elsewhere, exactly as if it had refused a connection. A lost
worker keeps being probed; after ``readmit_after`` answers in a row it is taken back
(``readmitted`` lists when), so one outage does not take a server out of a long run or a
long-lived ``serve`` for good.

The dispatcher (:class:`Dispatcher`) knows nothing about HTTP: a worker is a name, a number of
slots and an async ``send(spec, submitted_s)``. :class:`EndpointPool` binds it to Ollama
endpoints; ``ray_gpu`` binds it to Ray actors; the HTTP API can use an ``EndpointPool`` as its
backend callable ``await pool(spec) -> RequestResult``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from ..clients import OllamaClient, OpenAIClient, RetryPolicy
from ..clients.factory import make_client
from ..config import DEFAULT_MODEL, Endpoint
from ..errors import (
    AllWorkersLost,
    ConfigError,
    OllamaUnavailable,
    ServerUnavailable,
    WorkerLost,
)
from ..metrics import ItlSketch
from ..records import RequestResult, RequestSpec, RunResult, summarize
from ..system.neterrors import connect_reason
from ..timing import ModelClock
from .base import ModeContext
from .health import DEFAULT_HEALTH, HealthPolicy

__all__ = ["Dispatcher", "EndpointPool", "HealthPolicy", "PoolWorker", "check_endpoints",
           "check_prefetch", "dispatch_all", "health_path", "probe_endpoint", "run_pool"]

#: Send = ``await send(spec, submitted_s)`` → the row; raises ``WorkerLost`` when the worker died.
Send = Callable[[RequestSpec, float], Awaitable[RequestResult]]
#: Probe = ``await probe()`` → ``None`` when the worker answers, else the reason it did not.
Probe = Callable[[], Awaitable[str | None]]


# A dead endpoint is found out quickly and its request sent elsewhere, instead of backing off on
# it for seconds (the client's default policy is meant for a single server that may come back).
POOL_RETRY = RetryPolicy(max_retries=1, backoff_s=0.05, max_backoff_s=0.5)


def check_prefetch(value: Any) -> int:
    """The ``prefetch`` option (see :class:`Dispatcher`): a whole number ≥ 0.

    Raises:
        ConfigError: anything else, saying what is accepted.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"prefetch {value!r} must be a whole number ≥ 0 (requests queued at "
                          f"a server beyond its slots; 0 = off, the default)")
    return value


@dataclass(eq=False)
class PoolWorker:
    """One worker of a dispatcher: an endpoint, or a Ray actor bound to one.

    Args:
        name: label recorded as ``worker`` (``gpu0``, ``127.0.0.1:11434``).
        slots: requests it serves at once (its endpoint's ``OLLAMA_NUM_PARALLEL``).
        send: ``await send(spec, submitted_s)`` → the row; raises ``WorkerLost`` when the
            worker stopped answering (then the request is sent elsewhere).
        node: the machine it runs on; gpu: its GPU id, when known.
    """

    name: str
    slots: int
    send: Send
    node: str = ""
    gpu: str | None = None
    probe: Probe | None = None
    outstanding: int = 0
    served: int = 0
    lost: bool = False
    lost_reason: str = ""
    #: consecutive probes missed (while live) or answered (while lost)
    streak: int = 0
    inflight: set[asyncio.Task[RequestResult]] = field(default_factory=set)


class Dispatcher:
    """Least-outstanding, slot-respecting, pull-based dispatch over workers that may be lost.

    Args:
        workers: the workers, in order (ties go to the earlier one).
        clock: the run's clock (lost workers are stamped in its model seconds).
        mode: mode name written into rows the dispatcher makes itself (failed ones).
        model: default model name for those rows.
        max_retries: how many times one request may be sent again after its worker was lost
            (default: the number of workers, so every survivor can be tried).
        prefetch: requests a worker may hold beyond its slots (default 0: none). Opt-in, and
            a change of semantics: the extra request waits in the server's own queue, so the
            server starts it the moment a slot frees, without a round trip to the dispatcher
            on the critical path — but it is bound to that worker early (no longer strictly
            pull-based). ``benchmarks/README.md`` (fidelity) has the measured effect.
        health: how workers with a ``probe`` are checked while the dispatcher is open
            (:meth:`start_health`); ``None`` turns the monitor off.
    """

    def __init__(self, workers: Sequence[PoolWorker], *, clock: ModelClock, mode: str = "pool",
                 model: str = DEFAULT_MODEL, max_retries: int | None = None,
                 prefetch: int = 0, health: HealthPolicy | None = DEFAULT_HEALTH) -> None:
        if not workers:
            raise ConfigError("a pool needs at least one endpoint — give --host once per GPU")
        for w in workers:
            if w.slots < 1:
                raise ConfigError(f"worker {w.name} has {w.slots} slots — it needs at least 1")
        self.workers = list(workers)
        self.clock = clock
        self.mode = mode
        self.model = model
        self.max_retries = len(self.workers) if max_retries is None else max_retries
        self.prefetch = check_prefetch(prefetch)
        self.lost_workers: list[dict[str, Any]] = []
        self.readmitted: list[dict[str, Any]] = []
        self.health = health
        self._monitor: asyncio.Task[None] | None = None
        # Requests waiting for a slot, oldest first; a freed slot is handed to the oldest.
        self._waiters: collections.deque[asyncio.Future[PoolWorker]] = collections.deque()

    @property
    def live(self) -> list[PoolWorker]:
        return [w for w in self.workers if not w.lost]

    # -- slots -----------------------------------------------------------------------------
    def _pick(self) -> PoolWorker | None:
        """The live worker with a free slot and the fewest outstanding requests."""
        best: PoolWorker | None = None
        extra = self.prefetch
        for w in self.workers:
            if w.lost or w.outstanding >= w.slots + extra:
                continue
            if best is None or w.outstanding < best.outstanding:
                best = w
        return best

    def _hand_off(self) -> None:
        """Give free slots to waiting requests, oldest first (FIFO, no overtaking)."""
        while self._waiters:
            waiter = self._waiters[0]
            if waiter.done():  # cancelled while waiting
                self._waiters.popleft()
                continue
            w = self._pick()
            if w is None:
                break
            self._waiters.popleft()
            w.outstanding += 1
            waiter.set_result(w)
        if not self.live:
            while self._waiters:
                fut = self._waiters.popleft()
                if not fut.done():
                    fut.set_exception(self._all_lost_error())

    async def _acquire(self) -> PoolWorker:
        if not self.live:
            raise self._all_lost_error()
        if not self._waiters:
            w = self._pick()
            if w is not None:
                w.outstanding += 1
                return w
        fut: asyncio.Future[PoolWorker] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self._release(fut.result())  # handed a slot just as we were cancelled
            raise

    def _release(self, w: PoolWorker) -> None:
        w.outstanding -= 1
        self._hand_off()

    def _all_lost_error(self) -> AllWorkersLost:
        names = ", ".join(str(x["worker"]) for x in self.lost_workers) or "all"
        return AllWorkersLost(f"every worker was lost ({names}) — check that the Ollama "
                              f"servers are running; the finished requests are kept")

    def mark_lost(self, w: PoolWorker, reason: str) -> None:
        """Take ``w`` out of the rotation and note when (model seconds) and why."""
        if w.lost:
            return
        w.lost = True
        w.lost_reason = reason
        w.streak = 0
        self.lost_workers.append({"worker": w.name, "node": w.node, "gpu": w.gpu,
                                  "at_s": round(self.clock.now(), 6), "reason": reason})
        self._hand_off()

    def readmit(self, w: PoolWorker) -> None:
        """Take a lost worker back into the rotation (it answered its health checks again)."""
        if not w.lost:
            return
        w.lost = False
        w.lost_reason = ""
        w.streak = 0
        self.readmitted.append({"worker": w.name, "node": w.node, "gpu": w.gpu,
                                "at_s": round(self.clock.now(), 6)})
        self._hand_off()

    @property
    def status(self) -> str:
        """``ok`` (every worker live), ``degraded`` (some lost) or ``down`` (none live)."""
        live = len(self.live)
        return "ok" if live == len(self.workers) else "degraded" if live else "down"

    # -- health checks ---------------------------------------------------------------------
    def start_health(self) -> None:
        """Start probing workers that have a ``probe`` (idempotent; needs a running loop)."""
        if (self._monitor is None and self.health is not None
                and any(w.probe is not None for w in self.workers)):
            self._monitor = asyncio.get_running_loop().create_task(self._watch(self.health))

    async def stop_health(self) -> None:
        """Stop the monitor (idempotent)."""
        task, self._monitor = self._monitor, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _watch(self, policy: HealthPolicy) -> None:
        probed = [w for w in self.workers if w.probe is not None]
        while True:
            await asyncio.sleep(policy.interval_s)
            answers = await asyncio.gather(*(_probe_once(w, policy.timeout_s) for w in probed))
            for w, reason in zip(probed, answers, strict=True):
                self._judge(w, reason, policy)

    def _judge(self, w: PoolWorker, reason: str | None, policy: HealthPolicy) -> None:
        """Count a probe's answer; mark lost or readmit when the streak is long enough."""
        if w.lost:
            w.streak = w.streak + 1 if reason is None else 0
            if w.streak >= policy.readmit_after:
                self.readmit(w)
            return
        w.streak = w.streak + 1 if reason is not None else 0
        if w.streak >= policy.misses:
            self.mark_lost(w, f"stopped answering health checks ({reason})")
            for task in list(w.inflight):  # its requests go elsewhere (Dispatcher.run)
                task.cancel()

    # -- one request -----------------------------------------------------------------------
    async def run(self, spec: RequestSpec, *, submitted_s: float | None = None) -> RequestResult:
        """Send ``spec`` to a worker (retrying elsewhere if it is lost) and return its row.

        Raises:
            AllWorkersLost: no worker is left to send it to.
        """
        submitted = self.clock.now() if submitted_s is None else submitted_s
        retries = 0
        last_error = ""
        while True:
            w = await self._acquire()
            try:
                row = await self._send(w, spec, submitted)
            except WorkerLost as exc:
                self.mark_lost(w, exc.reason)
                last_error = str(exc)
            else:
                w.served += 1
                row.retries += retries
                return row
            finally:
                self._release(w)
            retries += 1
            if retries > self.max_retries:
                return self.failed_row(spec, submitted, w.name, retries - 1,
                                       f"gave up after {retries - 1} retries: {last_error}")

    __call__ = run

    async def _send(self, w: PoolWorker, spec: RequestSpec, submitted: float) -> RequestResult:
        """``w.send`` as a task the health monitor can cancel when ``w`` freezes."""
        task = asyncio.ensure_future(w.send(spec, submitted))
        w.inflight.add(task)
        try:
            await asyncio.wait((task,))
        finally:
            w.inflight.discard(task)
            if not task.done():  # we were cancelled (Ctrl-C): so is the request
                task.cancel()
        if task.cancelled():  # by the monitor: the worker stopped answering
            raise WorkerLost(w.name, w.lost_reason or "stopped answering health checks")
        return task.result()

    def failed_row(self, spec: RequestSpec, submitted_s: float, worker: str, retries: int,
                   error: str) -> RequestResult:
        """A row for a request that never got an answer (so no request goes missing)."""
        return RequestResult(request_id=spec.request_id, mode=self.mode, prompt=spec.prompt,
                             model=spec.model or self.model, worker=worker,
                             submitted_s=submitted_s, finished_s=self.clock.now(), ok=False,
                             error=error, retries=retries).finalize()


async def dispatch_all(dispatcher: Dispatcher, specs: Sequence[RequestSpec], *,
                       progress: bool = False,
                       on_result: Callable[[RequestResult], None] | None = None,
                       ) -> tuple[list[RequestResult], float]:
    """Submit every spec at once (all at model time ~0) and wait for all rows, in spec order.

    ``on_result`` is called with each row as it finishes (``ModeContext.notify``).

    Returns the rows and ``submit_s`` (clock seconds until every request was accepted).
    Raises :class:`AllWorkersLost` with ``partial`` = the rows (unfinished ones failed) when no
    worker is left; Ctrl-C (cancellation) cancels the requests and re-raises.
    """
    bar = _progress_bar(len(specs), dispatcher.mode) if progress else None
    all_lost: list[AllWorkersLost] = []

    async def one(spec: RequestSpec, submitted: float) -> RequestResult:
        try:
            row = await dispatcher.run(spec, submitted_s=submitted)
        except AllWorkersLost as exc:
            all_lost.append(exc)
            row = dispatcher.failed_row(spec, submitted, "", 0, str(exc))
        if bar is not None:
            bar.update(1)
        if on_result is not None:
            on_result(row)
        return row

    rows, submit_s = await gather_rows(specs, lambda s: one(s, dispatcher.clock.now()), bar)
    if all_lost:
        error = all_lost[0]
        error.partial = rows
        raise error
    return rows, submit_s


async def gather_rows(specs: Sequence[RequestSpec],
                      start: Callable[[RequestSpec], Awaitable[RequestResult]],
                      bar: Any = None) -> tuple[list[RequestResult], float]:
    """Start every request at once and wait for all their rows (in ``specs``' order); a
    cancelled caller cancels them all, and the progress ``bar`` is closed either way. Returns
    the rows and the clock seconds it took to start them (``submit_s``)."""
    t0 = time.perf_counter()
    tasks = [asyncio.ensure_future(start(s)) for s in specs]
    submit_s = time.perf_counter() - t0
    try:
        rows = list(await asyncio.gather(*tasks))
    finally:
        for t in tasks:
            t.cancel()
        if bar is not None:
            bar.close()
    return rows, submit_s


async def _probe_once(w: PoolWorker, timeout_s: float) -> str | None:
    """One health check of ``w``: ``None`` when it answered in time, else the reason."""
    assert w.probe is not None
    try:
        return await asyncio.wait_for(w.probe(), timeout_s)
    except asyncio.TimeoutError:
        return f"no answer within {timeout_s:g} s"
    except Exception as exc:  # a probe that fails is a missed probe, whatever the error
        return f"{type(exc).__name__}: {exc}"


def health_path(api: str) -> str:
    """The route that says a server is up, by API: Ollama's ``GET /`` ("Ollama is running",
    served outside its scheduler) for the native API; ``GET /v1/models`` for an
    OpenAI-compatible server (llama-server answers it 200 once its model is loaded and 503
    while loading; vLLM and Ollama's ``/v1`` answer it too), whose ``GET /`` may be a web page,
    a 404, or — on Ollama — a native route the OpenAI API must not depend on."""
    return "/v1/models" if api == "openai" else "/"


async def probe_endpoint(client: httpx.AsyncClient, url: str,
                         timeout_s: float | None = None, path: str = "/") -> str | None:
    """``GET path`` on an endpoint (:func:`health_path`): ``None`` on HTTP 200, else the
    reason (never raises for network errors; the caller applies the deadline, ``timeout_s``
    the request's own, default the client's)."""
    try:
        resp = await (client.get(url + path) if timeout_s is None
                      else client.get(url + path, timeout=timeout_s))
    except httpx.HTTPError as exc:
        return connect_reason(exc) or type(exc).__name__ + (f": {exc}" if str(exc) else "")
    return None if resp.status_code == 200 else f"HTTP {resp.status_code} from GET {path}"


def _progress_bar(total: int, mode: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=mode, unit="req", leave=False)


async def check_endpoints(endpoints: Sequence[Endpoint], timeout_s: float = 3.0,
                          api: str = "generate") -> None:
    """Raise :class:`OllamaUnavailable` (:class:`~parallel_kit.errors.ServerUnavailable` for
    ``api="openai"``) naming the first endpoint that does not answer its
    :func:`health_path` with 200."""
    path = health_path(api)
    unavailable = ServerUnavailable if api == "openai" else OllamaUnavailable
    async with httpx.AsyncClient(timeout=timeout_s, trust_env=False) as client:
        async def probe(ep: Endpoint) -> str | None:
            try:
                resp = await client.get(ep.url + path)
            except httpx.TimeoutException:
                return f"no answer within {timeout_s:g} s"
            except httpx.HTTPError as exc:
                return (connect_reason(exc, urlsplit(ep.url).hostname or "") or
                        type(exc).__name__ + (f": {exc}" if str(exc) else ""))
            return (None if resp.status_code == 200
                    else f"HTTP {resp.status_code} from GET {path}")
        problems = await asyncio.gather(*(probe(ep) for ep in endpoints))
    for ep, problem in zip(endpoints, problems, strict=True):
        if problem is not None:
            raise unavailable(ep.url, problem)


class EndpointPool(Dispatcher):
    """A :class:`Dispatcher` over Ollama endpoints, one client each.

    Use as ``async with EndpointPool(endpoints, clock=…) as pool: row = await pool(spec)``.

    Args:
        endpoints: the servers (one per GPU); ``worker`` in the rows is ``Endpoint.label``.
        clock: the run's clock; api: ``generate``, ``chat`` or ``openai``.
        health: the health checks (:func:`health_path` of ``api`` on each endpoint) run while
            the pool is open (``async with``); ``None``: off.
    """

    def __init__(self, endpoints: Sequence[Endpoint], *, clock: ModelClock, mode: str = "pool",
                 model: str = DEFAULT_MODEL, api: str = "generate",
                 max_retries: int | None = None, timeout_s: float = 600.0,
                 prefetch: int = 0, health: HealthPolicy | None = DEFAULT_HEALTH) -> None:
        self.clients: list[OllamaClient | OpenAIClient] = []
        # Health checks use connections of their own: a lane busy with a long answer must not
        # delay them, and a frozen server's probe must not hold a request's lane.
        self._probe_client = httpx.AsyncClient(
            trust_env=False, timeout=None if health is None else health.timeout_s,
            limits=httpx.Limits(max_connections=len(endpoints) * 2,
                                max_keepalive_connections=len(endpoints)))
        workers = []
        for ep in endpoints:
            client: OllamaClient | OpenAIClient
            conns = ep.slots + check_prefetch(prefetch)
            client = make_client(api, ep.url, max_connections=conns, timeout=timeout_s,
                                 retry=POOL_RETRY)
            self.clients.append(client)
            workers.append(PoolWorker(ep.label, ep.slots, self._sender(client, ep, mode, model),
                                      node=ep.node, gpu=ep.gpu,
                                      probe=self._prober(ep.url, health_path(api))))
        super().__init__(workers, clock=clock, mode=mode, model=model, max_retries=max_retries,
                         prefetch=prefetch, health=health)

    def _prober(self, url: str, path: str = "/") -> Probe:
        async def probe() -> str | None:
            return await probe_endpoint(self._probe_client, url, path=path)
        return probe

    def _sender(self, client: OllamaClient | OpenAIClient, ep: Endpoint, mode: str,
                model: str) -> Send:
        async def send(spec: RequestSpec, submitted_s: float) -> RequestResult:
            try:
                return await client.run(spec, clock=self.clock, mode=mode, worker=ep.label,
                                        node=ep.node, model=model, submitted_s=submitted_s,
                                        raise_for=(OllamaUnavailable,))
            except OllamaUnavailable as exc:
                raise WorkerLost(ep.label, str(exc)) from exc
        return send

    async def warm_up(self) -> None:
        """Open every client's connections before the run (see ``OllamaClient.warm_up``).

        Best effort: an endpoint that fails here is left to the run, whose own fault handling
        marks it lost (``check_endpoints`` has named unreachable ones already).
        """
        await asyncio.gather(*(c.warm_up() for c in self.clients), return_exceptions=True)

    async def __aenter__(self) -> EndpointPool:
        self.start_health()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.stop_health()
        with contextlib.suppress(Exception):
            await self._probe_client.aclose()
        for c in self.clients:
            with contextlib.suppress(Exception):
                await c.aclose()


async def run_pool(specs: Sequence[RequestSpec], ctx: ModeContext) -> RunResult:
    """Run ``specs`` over ``ctx.endpoints`` (one Ollama per GPU), least outstanding first.

    Raises:
        OllamaUnavailable: an endpoint does not answer before the run (named).
        AllWorkersLost: every endpoint stopped answering; ``partial`` is the RunResult.
    """
    if not ctx.endpoints:
        raise ConfigError("pool mode needs endpoints — give --host once per GPU, or let the kit "
                          "start simulated ones")
    t_setup = time.perf_counter()
    await check_endpoints(ctx.endpoints, api=ctx.api)
    clock = ModelClock(ctx.time_scale)
    async with EndpointPool(ctx.endpoints, clock=clock, mode="pool", model=ctx.model,
                            api=ctx.api, prefetch=ctx.queue.prefetch,
                            health=ctx.queue.health) as pool:
        # Connections are opened in setup, so no request pays a TCP connect in its time.
        await pool.warm_up()
        setup_s = time.perf_counter() - t_setup
        clock.start()
        return await run_dispatched(pool, specs, ctx, setup_s)


async def run_dispatched(dispatcher: Dispatcher, specs: Sequence[RequestSpec],
                         ctx: ModeContext, setup_s: float) -> RunResult:
    """Send every spec through ``dispatcher`` and summarize (pool and ray share this).

    Raises:
        AllWorkersLost: with ``partial`` = the RunResult so far (every request has a row).
    """
    try:
        rows, submit_s = await dispatch_all(dispatcher, specs, progress=ctx.progress,
                                            on_result=ctx.notify)
    except AllWorkersLost as exc:
        exc.partial = _result(exc.partial or [], ctx, dispatcher, None, setup_s)
        raise
    return _result(rows, ctx, dispatcher, submit_s, setup_s)


def _itl(pool: Dispatcher) -> ItlSketch | None:
    """The inter-token gaps of every client of ``pool`` in one sketch (None: no clients here,
    e.g. Ray actors, whose clients live in other processes)."""
    clients = getattr(pool, "clients", None)
    if not clients:
        return None
    merged = ItlSketch()
    for client in clients:
        merged.merge(client.itl)
    return merged


def _result(rows: list[RequestResult], ctx: ModeContext, pool: Dispatcher,
            submit_s: float | None, setup_s: float) -> RunResult:
    notes = [f"worker {w['worker']} lost at {w['at_s']:.2f} s (model time): {w['reason']}"
             for w in pool.lost_workers]
    notes += [f"worker {w['worker']} answered again and was taken back at {w['at_s']:.2f} s "
              f"(model time)" for w in pool.readmitted]
    summary = summarize(rows, mode=pool.mode, backend=ctx.backend, time_scale=ctx.time_scale,
                        workers=len(pool.workers), slots=max(w.slots for w in pool.workers),
                        submit_s=submit_s, setup_s=setup_s, model=ctx.model,
                        lost_workers=pool.lost_workers, notes=notes, itl=_itl(pool))
    if math.isnan(summary.makespan_s):
        summary.notes.append("no request finished")
    return RunResult(summary, rows)
