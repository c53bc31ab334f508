"""The open-loop driver: send each request at its scheduled arrival time, whatever mode runs it.

A closed-loop run hands every request over at once; an open-loop run hands request *i* to the
mode at its arrival time ``t_i`` (model seconds on the run's :class:`~parallel_kit.timing.ModelClock`)
whether or not the earlier ones have finished — how a service meets its users. The driver is the
same for every mode; what differs is the mode's **session**, the seam each mode offers (named
by its registry record, ``ModeInfo.session``):
``async with open_session(mode, ctx) as session: row = await session.send(spec, queued_s)``.

* ``sequential`` — one request at a time on one server: arrivals wait at the client, first come
  first served (an ``asyncio.Lock``, whose waiters are served in order);
* ``async`` / ``batch`` — the kit's :class:`~parallel_kit.modes.taskqueue.TaskQueue` with
  ``ctx.concurrency`` workers in front of one server; each arrival is submitted as it comes (a
  batch of one, for ``batch``);
* ``pool`` — the least-outstanding :class:`~parallel_kit.modes.pool.EndpointPool` (one FIFO
  queue in front of every slot of every server);
* ``ray`` — the same dispatcher over one Ray actor per GPU;
* ``rayserve`` / ``production`` — Ray Serve's router (one handle call per arrival), behind
  Celery on Redis for ``production``: :mod:`parallel_kit.production.sessions`.

Pacing: the driver sleeps until about 2 ms before an arrival and then yields to the loop until
the arrival's clock time has come, so that a request leaves within well under a millisecond of
its time when the machine keeps up. It never sends early; when it sends late (a busy machine,
or a rate beyond what the loop can hold), the lag is recorded: each row keeps its
``scheduled_s`` beside ``queued_s`` (the moment it was really handed to the mode) and
``submitted_s`` (the moment its HTTP request was sent), and the summary reports the mean and
largest lag and says when the generator fell behind.

Figures (``RunSummary.open_loop``; every time in model seconds unless it says ``clock``):

* ``latency_from_arrival_*`` / ``ttft_from_arrival_*`` — mean, p50, p90, p95, p99 of
  ``finished_s − scheduled_s`` and ``first_token_s − scheduled_s``: the *response time* a user
  sees, queueing included, and what queueing theory predicts. The summary's headline latency and
  TTFT stay measured from the send (the field's definition), and ``queue_wait_mean_s`` is the
  time between hand-over (``queued_s``) and send (requests held inside the kit). With nothing
  held (a single-server mode whose server queues, ``vllm bench serve``'s set-up) they coincide.
* ``lag_mean_s``, ``lag_max_s`` (and ``lag_*_clock_ms``) — hand-over − ``scheduled_s``, before
  any ``max_concurrency`` hold; ``fell_behind`` when the 95th percentile of the lag exceeds 1 ms
  of clock (a summary note says so).
* ``offered_rps`` (the schedule's rate), ``achieved_rps`` (arrivals ÷ their span, measured),
  ``goodput_rps`` (requests that finished and met every SLO, latency and TTFT from arrival, ÷ the
  run's duration — vLLM's definition, :func:`parallel_kit.metrics.goodput_rps`).
* Predictions: ``predicted_*`` (the steady state at this rate, :func:`parallel_kit.theory.predict_load`),
  and ``replay_latency_mean_s``/``replay_latency_p95_s``/``replay_ttft_mean_s``: the same
  discrete-event model run over *this run's* arrivals and requests — what this very run should
  measure on the simulator, free of the sampling noise of a short run.

The first ``warmup`` requests (in arrival order) are sent and answered like the others but left
out of every figure; their rows stay in the result (nothing is dropped) and the summary says how
many there were.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from ..errors import AllWorkersLost, ConfigError, OllamaError, ParallelKitError
from ..metrics import ItlSketch, Slo, distribution, goodput_rps
from ..modes.base import ModeContext
from ..records import RequestResult, RequestSpec, RunResult, summarize
from ..timing import ModelClock
from ..workload.arrivals import Schedule

__all__ = ["LAG_LIMIT_CLOCK_S", "Session", "async_session", "batch_session",
           "fill_predictions", "format_load_table", "open_session", "pool_session",
           "ray_session", "run_open_loop", "sequential_session"]

#: A generator that sends a request more than this late (clock seconds) has fallen behind.
LAG_LIMIT_CLOCK_S = 1e-3
#: Tasks the ``async``/``batch`` sessions let wait in their queue (the task queue's default
#: bound); an arrival beyond it is refused — a failed row saying the queue is full, as the
#: original demo's API answers 503.
MAX_QUEUED = 10_000
#: How long before an arrival the driver stops sleeping and starts yielding (clock seconds).
_SPIN_S = 0.002

Send = Callable[[RequestSpec, float], Awaitable[RequestResult]]


class Session(Protocol):
    """A mode, opened for requests that arrive one by one (see the module docstring)."""

    clock: ModelClock
    workers: int
    slots: int
    setup_s: float
    lost_workers: list[dict[str, Any]]

    async def send(self, spec: RequestSpec, submitted_s: float) -> RequestResult: ...

    def itl(self) -> ItlSketch | None:
        """The inter-token gaps its clients saw (``None``: the clients live elsewhere)."""


@dataclass
class _Session:
    clock: ModelClock
    workers: int
    slots: int
    send_fn: Send
    setup_s: float  # every session says its own
    lost_workers: list[dict[str, Any]] = field(default_factory=list)
    clients: Sequence[Any] = ()

    async def send(self, spec: RequestSpec, submitted_s: float) -> RequestResult:
        return await self.send_fn(spec, submitted_s)

    def itl(self) -> ItlSketch | None:
        sketches = [c.itl for c in self.clients if getattr(c, "itl", None) is not None]
        if not sketches:
            return None
        merged = ItlSketch()
        for sk in sketches:
            merged.merge(sk)
        return merged


def open_session(mode: str, ctx: ModeContext) -> contextlib.AbstractAsyncContextManager[Session]:
    """Bring ``mode`` up on ``ctx`` for open-loop use; tear it down on exit.

    The mode's registry record names its session (``ModeInfo.session``, ``"module:function"``
    of ``open(ctx)``). The session's clock is already started; the driver takes its origin
    from ``clock.now()``.

    Raises:
        ConfigError: an unknown mode, or one with no open-loop session.
        OllamaUnavailable / MissingDependency / …: as the mode's own start-up raises them.
    """
    import importlib

    from ..modes.registry import get_info, modes

    target = get_info(mode).session
    if target is None:
        able = ", ".join(m.name for m in modes() if m.session)
        raise ConfigError(f"mode {mode!r} cannot run open-loop load yet — use one of {able} "
                          f"with --rate/--trace")
    module_name, func = target.split(":")
    opener = getattr(importlib.import_module(module_name), func)
    return opener(ctx)  # type: ignore[no-any-return]


@contextlib.asynccontextmanager
async def _client_session(mode: str, ctx: ModeContext) -> AsyncIterator[Session]:
    """One server through one client: one at a time (sequential) or through the task queue."""
    t_setup = time.perf_counter()
    endpoint = ctx.endpoints[0]
    conns = 1 if mode == "sequential" else ctx.concurrency
    clock = ModelClock(ctx.time_scale)
    async with ctx.make_client(endpoint, max_connections=conns) as client:
        with contextlib.suppress(OllamaError):
            await client.warm_up()

        async def call(spec: RequestSpec, queued_s: float | None = None) -> RequestResult:
            return await client.run(spec, clock=clock, mode=mode, worker=endpoint.label,
                                    node=endpoint.node, model=ctx.model, submitted_s=queued_s)

        if mode == "sequential":
            lock = asyncio.Lock()  # its waiters are served in order: FIFO at the client

            async def send_one(spec: RequestSpec, queued_s: float) -> RequestResult:
                async with lock:
                    return await call(spec, queued_s)

            setup = time.perf_counter() - t_setup
            clock.start()
            yield _Session(clock, 1, ctx.slots, send_one, setup, clients=[client])
            return
        from ..modes.taskqueue import TaskQueue

        setup = time.perf_counter() - t_setup
        clock.start()
        async with TaskQueue(call, concurrency=ctx.concurrency, clock=clock, mode=mode,
                             model=ctx.model, max_queued=MAX_QUEUED) as queue:
            async def send_queued(spec: RequestSpec, queued_s: float) -> RequestResult:
                ids = queue.submit_batch([spec]) if mode == "batch" else [queue.submit(spec)]
                return await queue.result(ids[0])

            yield _Session(clock, 1, ctx.slots, send_queued, setup, clients=[client])


def sequential_session(ctx: ModeContext) -> contextlib.AbstractAsyncContextManager[Session]:
    """``sequential``: one request at a time; arrivals wait at the client, in order."""
    return _client_session("sequential", ctx)


def async_session(ctx: ModeContext) -> contextlib.AbstractAsyncContextManager[Session]:
    """``async``: each arrival submitted to the task queue (``ctx.concurrency`` workers)."""
    return _client_session("async", ctx)


def batch_session(ctx: ModeContext) -> contextlib.AbstractAsyncContextManager[Session]:
    """``batch``: each arrival submitted as a batch of one to the task queue."""
    return _client_session("batch", ctx)


@contextlib.asynccontextmanager
async def pool_session(ctx: ModeContext) -> AsyncIterator[Session]:
    """``pool``: the least-outstanding dispatcher over ``ctx.endpoints``."""
    from ..modes.pool import EndpointPool, check_endpoints

    t_setup = time.perf_counter()
    await check_endpoints(ctx.endpoints, api=ctx.api)
    clock = ModelClock(ctx.time_scale)
    async with EndpointPool(ctx.endpoints, clock=clock, mode="pool", model=ctx.model,
                            api=ctx.api, prefetch=ctx.queue.prefetch) as pool:
        await pool.warm_up()
        setup = time.perf_counter() - t_setup
        clock.start()
        yield _dispatcher_session(pool, setup)


@contextlib.asynccontextmanager
async def ray_session(ctx: ModeContext) -> AsyncIterator[Session]:
    """``ray``: the same dispatcher over one Ray actor per GPU."""
    from ..modes.ray_gpu import open_ray_dispatcher

    async with open_ray_dispatcher(ctx) as dispatcher:
        yield _dispatcher_session(dispatcher, dispatcher.setup_s)


def _dispatcher_session(dispatcher: Any, setup_s: float) -> _Session:
    async def send(spec: RequestSpec, submitted_s: float) -> RequestResult:
        try:
            row: RequestResult = await dispatcher.run(spec, submitted_s=submitted_s)
        except AllWorkersLost as exc:
            row = dispatcher.failed_row(spec, submitted_s, "", 0, str(exc))
        return row

    return _Session(dispatcher.clock, len(dispatcher.workers),
                    max(w.slots for w in dispatcher.workers), send, setup_s,
                    dispatcher.lost_workers, list(getattr(dispatcher, "clients", ())))


async def _pace(clock: ModelClock, at_clock_s: float) -> None:
    """Wait until ``clock.wall()`` reaches ``at_clock_s``: sleep, then yield the last 2 ms."""
    left = at_clock_s - clock.wall()
    if left > _SPIN_S:
        await asyncio.sleep(left - _SPIN_S)
    while clock.wall() < at_clock_s:
        await asyncio.sleep(0)


async def run_open_loop(
    mode: str,
    specs: Sequence[RequestSpec],
    schedule: Schedule,
    ctx: ModeContext,
    *,
    max_concurrency: int | None = None,
    warmup: int = 0,
    slo: Slo | None = None,
    predict: Callable[[RunResult], None] | None = None,
) -> RunResult:
    """Run ``specs[i]`` at ``schedule.times_s[i]`` through ``mode`` and summarize.

    Args:
        mode: a mode whose registry record names a session (``ModeInfo.session``).
        specs: one request per arrival (``len(specs) == len(schedule)``).
        schedule: the arrival times (model seconds from the start of sending).
        ctx: the mode's context (endpoints, time scale, …).
        max_concurrency: at most this many requests handed over and unfinished at once; later
            arrivals wait at the client in order (their lag is not counted: the cap is asked).
        warmup: leave the first K requests out of the figures (rows kept, count reported).
        slo: with it, ``goodput_rps`` (latency and TTFT from arrival).
        predict: called with the result to fill in the predictions (``bench`` passes one).

    Returns:
        A :class:`RunResult`: every request's row (warm-up included, with ``scheduled_s``) and
        a summary of the measured ones (module docstring).

    Raises:
        ConfigError: specs and schedule differ in length; warm-up leaves nothing.
        asyncio.CancelledError: on Ctrl-C, after notifying ``ctx`` of every finished row.
    """
    n = _check_arrivals(specs, schedule, warmup)
    sem = asyncio.Semaphore(max_concurrency) if max_concurrency else None
    times = [float(t) for t in schedule.times_s]
    lags: list[float] = [math.nan] * n
    rows: list[RequestResult | None] = [None] * n

    async with open_session(mode, ctx) as session:
        clock = session.clock
        scale = clock.time_scale
        origin = clock.now()

        async def one(i: int, spec: RequestSpec, scheduled: float) -> None:
            row = await _hand_over(session, sem, mode, ctx, i, spec, lags[i] + scheduled)
            row.scheduled_s = scheduled
            if not row.request_id:
                row.request_id = spec.request_id or f"r{i}"
            rows[i] = row
            ctx.notify(row)

        tasks: list[asyncio.Task[None]] = []
        try:
            for i, spec in enumerate(specs):
                scheduled = origin + times[i]
                await _pace(clock, scheduled * scale)
                lags[i] = clock.now() - scheduled
                tasks.append(asyncio.ensure_future(one(i, spec, scheduled)))
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
        wall = clock.wall() - origin * scale
        lost = list(session.lost_workers)
        workers, slots, setup_s = session.workers, session.slots, session.setup_s
        itl = session.itl()

    done = [r for r in rows if r is not None]
    if len(done) != n:  # cannot happen without an exception above; kept as a guard
        raise RuntimeError("open-loop run lost rows")
    return _result(mode, done, lags, times, schedule, ctx, workers=workers, slots=slots,
                   setup_s=setup_s, wall_s=wall, warmup=warmup,
                   max_concurrency=max_concurrency, slo=slo, lost=lost, predict=predict,
                   itl=itl)


def _check_arrivals(specs: Sequence[RequestSpec], schedule: Schedule, warmup: int) -> int:
    """The number of arrivals, once there is one request per arrival and warm-up leaves some."""
    n = len(schedule)
    if len(specs) != n:
        raise ConfigError(f"{len(specs)} requests for {n} arrivals — give one request per "
                          f"arrival")
    if warmup >= n:
        raise ConfigError(f"--warmup {warmup} leaves none of the {n} requests to measure")
    return n


async def _hand_over(session: Session, sem: asyncio.Semaphore | None, mode: str,
                     ctx: ModeContext, i: int, spec: RequestSpec, handed: float
                     ) -> RequestResult:
    """Request ``i``'s row: handed to ``session`` at ``handed``, or, under the
    ``max_concurrency`` semaphore ``sem``, when it lets the request through. A
    :class:`ParallelKitError` (e.g. the task queue is full) becomes a failed row."""
    clock = session.clock
    try:
        if sem is None:
            return await session.send(spec, handed)
        async with sem:
            handed = clock.now()
            return await session.send(spec, handed)
    except ParallelKitError as exc:
        return RequestResult(
            request_id=spec.request_id or f"r{i}", mode=mode, prompt=spec.prompt,
            model=spec.model or ctx.model, queued_s=handed, submitted_s=handed,
            finished_s=clock.now(), ok=False, error=str(exc)).finalize()


def _from_arrival(row: RequestResult) -> RequestResult:
    """``row`` measured from its scheduled arrival (what the user waited, for the SLO): its
    latency and TTFT derived again (:meth:`RequestResult.finalize`) from ``scheduled_s``."""
    return replace(row, submitted_s=row.scheduled_s, latency_s=math.nan,
                   ttft_s=math.nan).finalize()


def _result(mode: str, rows: list[RequestResult], lags: list[float], times: list[float],
            schedule: Schedule, ctx: ModeContext, *, workers: int, slots: int, setup_s: float,
            wall_s: float, warmup: int, max_concurrency: int | None, slo: Slo | None,
            lost: list[dict[str, Any]], predict: Callable[[RunResult], None] | None,
            itl: ItlSketch | None = None) -> RunResult:
    order = sorted(range(len(rows)), key=lambda i: (times[i], i))
    measured_idx = order[warmup:]
    measured = [rows[i] for i in measured_idx]
    notes = []
    if warmup:
        notes.append(f"warm-up: the first {warmup} request(s) ran but are left out of the "
                     f"figures")
    summary = summarize(measured, mode=mode, backend=ctx.backend, time_scale=ctx.time_scale,
                        workers=workers, slots=slots, wall_s=wall_s, setup_s=setup_s,
                        model=ctx.model, lost_workers=lost, notes=notes,
                        offered_rps=schedule.rate, itl=itl)
    from_arrival = [_from_arrival(r) for r in measured]
    info: dict[str, Any] = {
        "arrivals": schedule.process,
        "schedule": schedule.describe(),
        "rate_rps": schedule.rate,
        "burstiness": schedule.burstiness if schedule.process == "gamma" else None,
        "seed": schedule.seed,
        "trace": schedule.source or None,
        "requests": len(rows),
        "warmup": warmup,
        "max_concurrency": max_concurrency,
        **_sending(measured, max_concurrency),
        **_lag([lags[i] for i in measured_idx], ctx.time_scale),
        "queue_wait_mean_s": distribution(r.queue_wait_s for r in measured if r.ok).mean,
        "slo": str(slo) if slo is not None else None,
        "slo_met": (sum(1 for x in from_arrival if slo.meets(x)) if slo is not None else None),
    }
    for name, d in (("latency_from_arrival", distribution(x.latency_s for x in from_arrival
                                                          if x.ok)),
                    ("ttft_from_arrival", distribution(x.ttft_s for x in from_arrival if x.ok))):
        info.update({f"{name}_mean_s": d.mean, f"{name}_p50_s": d.p50,
                     f"{name}_p90_s": d.p90, f"{name}_p95_s": d.p95, f"{name}_p99_s": d.p99})
    summary.offered_rps = schedule.rate
    if slo is not None:
        # From arrival (what the user waited), over the span from the first arrival to the
        # last end; with nothing held in the kit and no lag this is vLLM's send-based figure.
        summary.goodput_rps = goodput_rps(from_arrival, slo, info["duration_s"])
        summary.slo = str(slo)
    summary.open_loop = info
    if info["fell_behind"]:
        summary.notes.append(
            f"the load generator fell behind: 5 % of requests left more than "
            f"{info['lag_p95_clock_ms']:.2f} ms (clock) after their scheduled time (mean "
            f"{info['lag_mean_clock_ms']:.3f} ms, largest {info['lag_max_clock_ms']:.2f} ms) — "
            f"see open_loop.lag_*")
    run = RunResult(summary, rows)
    if predict is not None:
        predict(run)
    return run


def _sending(measured: Sequence[RequestResult], max_concurrency: int | None) -> dict[str, Any]:
    """How the measured requests went out: arrivals and sends per model second (each over
    its own span), the peak in flight, whether ``max_concurrency`` bound it, and the duration
    from the first arrival to the last end."""
    sub = sorted(r.queued_s for r in measured)
    span = sub[-1] - sub[0] if len(sub) > 1 else math.nan
    sent = sorted(r.submitted_s for r in measured if not math.isnan(r.submitted_s))
    sent_span = sent[-1] - sent[0] if len(sent) > 1 else math.nan
    peak = _peak_in_flight(measured)
    last_end = max((r.finished_s for r in measured if not math.isnan(r.finished_s)),
                   default=math.nan)
    return {
        "achieved_rps": (len(sub) - 1) / span if span and span > 0 else math.nan,
        "sent_rps": (len(sent) - 1) / sent_span if sent_span and sent_span > 0 else math.nan,
        "peak_in_flight": peak,
        "cap_bound": bool(max_concurrency) and peak >= (max_concurrency or 0),
        "duration_s": last_end - min(r.scheduled_s for r in measured),
    }


def _lag(lag: Sequence[float], scale: float) -> dict[str, Any]:
    """The generator's lag behind the schedule (model seconds, and clock milliseconds at
    ``scale``), and whether it fell behind (its p95 over :data:`LAG_LIMIT_CLOCK_S`)."""
    lag_max = max(lag) if lag else math.nan
    lag_p95 = distribution(lag).p95
    return {
        "lag_mean_s": math.fsum(lag) / len(lag) if lag else math.nan,
        "lag_max_s": lag_max,
        "lag_mean_clock_ms": (math.fsum(lag) / len(lag)) * scale * 1e3 if lag else math.nan,
        "lag_p95_clock_ms": lag_p95 * scale * 1e3,
        "lag_max_clock_ms": lag_max * scale * 1e3,
        "fell_behind": lag_p95 * scale > LAG_LIMIT_CLOCK_S,
    }


def fill_predictions(run: RunResult, mode: str, specs: Sequence[RequestSpec], schedule: Schedule,
                     profile: Any, *, workers: int, slots: int, concurrency: int | None,
                     max_concurrency: int | None = None, warmup: int = 0,
                     max_ongoing: int | None = None) -> None:
    """Set ``run``'s predicted figures from a simulator profile (its own latency model).

    Steady state at the schedule's rate and process (:func:`theory.predict_load` with
    ``rate``) into ``predicted_*`` and ``utilisation``; this run's arrivals replayed through the
    same model into ``open_loop["replay_*"]``. A trace has no process to draw from: its
    steady-state figures are the replay's. ``max_ongoing``: Ray Serve's
    ``max_ongoing_requests`` of ``rayserve``/``production`` (``None``: the slots).
    """
    from .. import theory

    service = theory.service_model_from_profile(profile, specs)
    common: dict[str, Any] = {"workers": workers, "slots": slots, "concurrency": concurrency,
                              "max_concurrency": max_concurrency, "max_ongoing": max_ongoing}
    replay = theory.predict_load(mode, service, schedule=schedule, warmup=warmup, **common)
    if schedule.process == "trace":
        steady = replay
    else:
        steady = theory.predict_load(mode, service, rate=schedule.rate,
                                     process=schedule.process, burstiness=schedule.burstiness,
                                     seed=schedule.seed or 0, **common)
    s = run.summary
    s.predicted_latency_mean_s = steady.latency_mean_s
    s.predicted_latency_p95_s = steady.latency_p95_s
    s.predicted_ttft_mean_s = steady.ttft_mean_s
    s.utilisation = steady.utilisation
    s.open_loop.update({
        "predicted_latency_p50_s": steady.latency_p50_s,
        "predicted_latency_p99_s": steady.latency_p99_s,
        "predicted_ttft_p95_s": steady.ttft_p95_s,
        "capacity_rps": steady.capacity_rps,
        "profile": getattr(profile, "name", None),
        "routing": steady.routing,
        "closed_form": steady.closed_form or None,
        "closed_form_wait_s": steady.closed_form_wait_s,
        "prediction": steady.explanation,
        "replay_latency_mean_s": replay.latency_mean_s,
        "replay_latency_p50_s": replay.latency_p50_s,
        "replay_latency_p95_s": replay.latency_p95_s,
        "replay_ttft_mean_s": replay.ttft_mean_s,
    })


def _peak_in_flight(rows: Sequence[RequestResult]) -> int:
    """The most requests sent and not yet finished at one moment (from the rows' own times)."""
    events = sorted([(r.submitted_s, 1) for r in rows if not math.isnan(r.submitted_s)]
                    + [(r.finished_s, -1) for r in rows
                       if not math.isnan(r.submitted_s) and not math.isnan(r.finished_s)],
                    key=lambda e: (e[0], e[1]))
    peak = now = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak


#: The open-loop table's columns: header, digits, and where the value comes from.
_LOAD_COLUMNS: tuple[tuple[str, int, Callable[[Any, dict[str, Any]], Any]], ...] = (
    ("offered/s", 4, lambda s, o: s.offered_rps),
    ("sent/s", 4, lambda s, o: o.get("sent_rps")),
    ("ρ", 2, lambda s, o: s.utilisation),
    ("lat mean", 2, lambda s, o: o.get("latency_from_arrival_mean_s")),
    ("run", 2, lambda s, o: o.get("replay_latency_mean_s")),
    ("pred", 2, lambda s, o: s.predicted_latency_mean_s),
    ("lat p95", 2, lambda s, o: o.get("latency_from_arrival_p95_s")),
    ("pred", 2, lambda s, o: s.predicted_latency_p95_s),
    ("ttft mean", 2, lambda s, o: o.get("ttft_from_arrival_mean_s")),
    ("pred", 2, lambda s, o: s.predicted_ttft_mean_s),
    ("good/s", 4, lambda s, o: s.goodput_rps),
    ("lag ms", 2, lambda s, o: o.get("lag_p95_clock_ms")),
)


def format_load_table(runs: Sequence[RunResult]) -> str:
    """A plain-text table of open-loop runs: one line per mode, measured beside predicted.

    ``offered/s`` is the schedule's rate, ``sent/s`` the rate requests really reached the
    servers (requests per model second); latency and TTFT from each request's arrival (model
    seconds); ``pred`` is theory's steady state at the offered rate, ``run`` theory for the
    run's own arrivals; ``lag`` the p95 of the generator's lag in clock milliseconds. Every
    column is as wide as its widest cell, with at least one space before it, whatever the
    numbers. A line under a run says when ``--max-concurrency`` held the rate down.
    """
    table = [r for r in runs if r.summary.open_loop]
    cells = [[r.summary.mode] + [_num(get(r.summary, r.summary.open_loop), digits)
                                 for _, digits, get in _LOAD_COLUMNS]
             + [f"{r.summary.ok}/{r.summary.n}"] for r in table]
    heads = ["mode"] + [h for h, _, _ in _LOAD_COLUMNS] + ["ok/n"]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(heads)]

    def line(values: Sequence[str]) -> str:
        first = f"{values[0]:<{widths[0]}}"
        return first + "".join(f" {v:>{w}}" for v, w in zip(values[1:], widths[1:], strict=True))

    head = line(heads)
    lines = [head, "-" * len(head)]
    for r, row in zip(table, cells, strict=True):
        lines.append(line(row))
        o = r.summary.open_loop
        if o.get("cap_bound"):
            lines.append(f"{'':<{widths[0]}} --max-concurrency {o.get('max_concurrency')} bound: "
                         f"{o.get('peak_in_flight')} requests in flight at the peak, sent at "
                         f"{_num(o.get('sent_rps'), 4).strip()}/s of "
                         f"{_num(r.summary.offered_rps, 4).strip()}/s offered (later arrivals "
                         f"waited at the client)")
        if o.get("fell_behind"):
            lines.append(f"{'':<{widths[0]}} the load generator fell behind (see the notes)")
    lines.append("(requests arriving over time: latency and TTFT from arrival, model seconds; "
                 "run = theory for this run's arrivals, pred = steady state, ∞ past capacity)")
    return "\n".join(lines)


def _num(x: float | None, digits: int) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if math.isinf(x):
        return "∞"
    return f"{x:.{digits}f}"
