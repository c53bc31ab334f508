"""Predictions (this package): makespans here; ``queueing`` for requests arriving over time.

Predicted makespans: how long a set of requests *should* take on given resources.

Every time here is in **model seconds** (what a request takes on the model, whatever the
simulator's time scale). A "service time" is what one request takes when it has a server to
itself: prefill plus decoding, no queueing.

The headline (README, ``docs/CONTRACTS.md``): five requests of 10 s each.

* one single-slot Ollama, one at a time: Σt = 50 s — sequential, async-queued and batch alike,
  because queueing changes who waits, not how long the server works;
* three single-slot Ollamas (one per GPU): ⌈5/3⌉ = 2 rounds of 10 s = 20 s, a speed-up of 2.5×.

Beyond the headline:

* **unequal lengths** — a lower bound ``max(Σt/W, max t)``; greedy list scheduling (each request,
  in arrival order, goes to the server that frees first: what pull-based and least-outstanding
  dispatch do) and its schedule; round-robin assignment (why least-loaded beats it); LPT
  (longest first) for reference; Graham's guarantee greedy ≤ (2 − 1/W)·OPT; the exact optimum
  for small sets.
* **several slots per server** (``OLLAMA_NUM_PARALLEL=K``) — with k requests decoding at once a
  server produces ``decode_tps × S(k)`` tokens/s shared among them (processor sharing), so each
  progresses at ``S(k)/k`` of its solo speed. :func:`simulate_processor_sharing` replays that
  event by event; :func:`equal_requests_makespan` is its closed form for equal requests.
* **curves** for the notebooks — the ⌈N/W⌉ staircase, S(k), Amdahl's law and the Karp–Flatt
  serial fraction.

:func:`predict` is the one call ``bench`` makes per mode; :func:`predict_load` is its
counterpart for requests that arrive over time (mean and percentile latency and TTFT, and the
utilisation ρ, by queueing theory and a discrete-event run of the simulator's latency model —
see :mod:`parallel_kit.theory.queueing`).
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import numpy as np

from ..errors import ConfigError
from ..topology import Dispatch, Topology
from .queueing import checked_speedup, speedup_fn

__all__ = [
    "CurvePoint",
    "LoadPrediction",
    "PredictedSchedule",
    "Prediction",
    "ScheduledRequest",
    "ServiceModel",
    "Topology",
    "amdahl_speedup",
    "async_api_makespan",
    "equal_requests_makespan",
    "graham_bound",
    "greedy_makespan",
    "host_cache_states",
    "jittered_service",
    "karp_flatt_serial_fraction",
    "list_schedule",
    "lower_bound",
    "lpt_makespan",
    "mode_topology",
    "optimal_makespan",
    "predict",
    "predict_load",
    "predict_topology",
    "predict_turn_hits",
    "round_robin_makespan",
    "round_robin_schedule",
    "rounds",
    "sequential_makespan",
    "service_model_from_profile",
    "service_times_from_profile",
    "simulate_processor_sharing",
    "speedup_vs_slots",
    "speedup_vs_workers",
]

#: A speed-up curve: S(k) = aggregate decode speed with k requests decoding at once, S(1) = 1.
SpeedupFn = Callable[[int], float]

_DISPATCHES = ("least_loaded", "round_robin")

# Completion tolerance of the event simulation, relative to the largest service time: float
# subtraction leaves crumbs like 1e-15 s of work that must count as "done".
_EPS = 1e-9

#: Exact optimum is a search over assignments; past this many requests it takes too long.
OPTIMAL_MAX_REQUESTS = 14


# ---------------------------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------------------------

def _times(service_times_s: Iterable[float]) -> list[float]:
    """Validated service times (model seconds): finite and not negative."""
    try:
        times = [float(t) for t in service_times_s]
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"service times must be numbers of seconds ({exc}) — pass a list like [10, 10, 10]"
        ) from None
    for i, t in enumerate(times):
        if not math.isfinite(t) or t < 0:
            raise ConfigError(
                f"service time #{i} is {t!r} — every service time must be a finite number of "
                f"seconds, 0 or more"
            )
    return times


def _count(name: str, value: int) -> int:
    """A positive whole number of workers/slots/… or a ConfigError naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a whole number ≥ 1, got {value!r}")
    return value


# ---------------------------------------------------------------------------------------------
# Schedules
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ScheduledRequest:
    """Where and when one request runs in a predicted schedule (model seconds from the start).

    ``index`` is the request's position in the input list; ``server`` counts from 0.
    """

    index: int
    server: int
    start_s: float
    finish_s: float


@dataclass(frozen=True, slots=True)
class PredictedSchedule:
    """A predicted schedule: one entry per request, in input order.

    ``makespan_s`` is the last finish (0 for no requests), in model seconds.
    """

    entries: tuple[ScheduledRequest, ...]
    workers: int
    slots: int = 1

    @property
    def makespan_s(self) -> float:
        return max((e.finish_s for e in self.entries), default=0.0)

    def per_server(self) -> list[list[ScheduledRequest]]:
        """Entries grouped by server (index = server), each in start order."""
        out: list[list[ScheduledRequest]] = [[] for _ in range(self.workers)]
        for e in sorted(self.entries, key=lambda e: (e.start_s, e.index)):
            out[e.server].append(e)
        return out


# ---------------------------------------------------------------------------------------------
# Single-slot servers
# ---------------------------------------------------------------------------------------------

def sequential_makespan(service_times_s: Iterable[float]) -> float:
    """One request at a time on one server: ``Σ t`` model seconds (5 × 10 s → 50 s)."""
    return math.fsum(_times(service_times_s))


def rounds(n: int, workers: int, slots: int = 1) -> int:
    """How many times each slot fills: ``⌈N / (W·K)⌉`` (5 requests, 3 single-slot servers → 2)."""
    if n < 0:
        raise ConfigError(f"the number of requests must be 0 or more, got {n}")
    return -(-n // (_count("workers", workers) * _count("slots", slots)))


def lower_bound(service_times_s: Iterable[float], workers: int) -> float:
    """No schedule on W single-slot servers beats ``max(Σt / W, max t)`` model seconds.

    The servers cannot do more than W seconds of work per second, and the longest request
    cannot be split.
    """
    times = _times(service_times_s)
    w = _count("workers", workers)
    if not times:
        return 0.0
    return max(math.fsum(times) / w, max(times))


def graham_bound(service_times_s: Iterable[float], workers: int) -> float:
    """Graham's guarantee for greedy list scheduling: ``(2 − 1/W) · max(Σt/W, max t)``.

    Greedy ≤ Σt/W + (1 − 1/W)·t_last ≤ (2 − 1/W)·lower bound ≤ (2 − 1/W)·OPT
    (R. L. Graham, "Bounds for certain multiprocessing anomalies", 1966).
    """
    w = _count("workers", workers)
    return (2.0 - 1.0 / w) * lower_bound(service_times_s, w)


def list_schedule(service_times_s: Iterable[float], workers: int,
                  order: Sequence[int] | None = None) -> PredictedSchedule:
    """Greedy list scheduling: each request, in ``order``, runs on the server that frees first.

    This is what pull-based dispatch does (a free Ray actor takes the next request) and what
    least-outstanding-requests dispatch does when it holds requests until a server is free.
    Ties go to the lowest server index. ``order`` defaults to arrival (input) order.
    """
    times = _times(service_times_s)
    w = _count("workers", workers)
    seq = list(range(len(times))) if order is None else list(order)
    if sorted(seq) != list(range(len(times))):
        raise ConfigError("order must list every request index exactly once")
    free = [(0.0, s) for s in range(w)]  # (free at, server): a heap, earliest then lowest index
    entries: list[ScheduledRequest | None] = [None] * len(times)
    for i in seq:
        at, server = heapq.heappop(free)
        entries[i] = ScheduledRequest(i, server, at, at + times[i])
        heapq.heappush(free, (at + times[i], server))
    return PredictedSchedule(tuple(e for e in entries if e is not None), w)


def greedy_makespan(service_times_s: Iterable[float], workers: int) -> float:
    """Makespan of :func:`list_schedule` in arrival order (model seconds).

    Equal requests give exactly ``⌈N/W⌉ · t``: 5 × 10 s on 3 servers → 20 s.
    """
    return list_schedule(service_times_s, workers).makespan_s


def lpt_makespan(service_times_s: Iterable[float], workers: int) -> float:
    """Longest-processing-time-first list scheduling (a reference: it needs the lengths up front).

    Graham (1969): LPT ≤ (4/3 − 1/(3W))·OPT.
    """
    times = _times(service_times_s)
    order = sorted(range(len(times)), key=lambda i: (-times[i], i))
    return list_schedule(times, workers, order).makespan_s


def round_robin_schedule(service_times_s: Iterable[float], workers: int) -> PredictedSchedule:
    """Request i goes to server ``i mod W`` up front; each server runs its share one by one.

    Blind to lengths, so two long requests can land on one server while another idles —
    the reason least-loaded (pull) dispatch does better on unequal requests.
    """
    times = _times(service_times_s)
    w = _count("workers", workers)
    busy_until = [0.0] * w
    entries = []
    for i, t in enumerate(times):
        s = i % w
        entries.append(ScheduledRequest(i, s, busy_until[s], busy_until[s] + t))
        busy_until[s] += t
    return PredictedSchedule(tuple(entries), w)


def round_robin_makespan(service_times_s: Iterable[float], workers: int) -> float:
    """Makespan of :func:`round_robin_schedule`: ``max over servers of Σ t of its share``."""
    return round_robin_schedule(service_times_s, workers).makespan_s


def optimal_makespan(service_times_s: Iterable[float], workers: int) -> float:
    """The best possible makespan on W single-slot servers, by exhaustive search.

    For teaching and tests only: the problem is NP-hard, so it refuses more than
    ``OPTIMAL_MAX_REQUESTS`` requests.
    """
    times = sorted(_times(service_times_s), reverse=True)
    w = _count("workers", workers)
    if len(times) > OPTIMAL_MAX_REQUESTS:
        raise ConfigError(
            f"optimal_makespan searches every assignment and handles at most "
            f"{OPTIMAL_MAX_REQUESTS} requests, got {len(times)} — use lower_bound() or "
            f"lpt_makespan() for larger sets"
        )
    if not times:
        return 0.0
    best = lpt_makespan(times, w)  # a good first answer makes the pruning bite
    floor = lower_bound(times, w)
    loads = [0.0] * w

    def place(i: int) -> None:
        nonlocal best
        if best <= floor:
            return
        if i == len(times):
            best = min(best, max(loads))
            return
        tried: set[float] = set()
        for s in range(w):
            # Servers with equal load are interchangeable: try one of them.
            if loads[s] in tried or loads[s] + times[i] >= best:
                continue
            tried.add(loads[s])
            loads[s] += times[i]
            place(i + 1)
            loads[s] -= times[i]

    place(0)
    return best


# ---------------------------------------------------------------------------------------------
# Several slots per server: processor sharing
# ---------------------------------------------------------------------------------------------

def simulate_processor_sharing(
    service_times_s: Iterable[float],
    *,
    workers: int = 1,
    slots: int = 1,
    speedup: SpeedupFn | Any | None = None,
    dispatch: Dispatch = "least_loaded",
    arrivals_s: Sequence[float] | None = None,
) -> PredictedSchedule:
    """Event simulation of W servers with K slots each, sharing decode speed by S(k).

    Model: a server with k requests in its slots works at ``S(k)`` times its solo speed, shared
    equally, so each request advances ``S(k)/k`` service-seconds per second. Requests beyond
    the slots wait first come, first served (Ollama's weighted semaphore, ``docs/OLLAMA_BEHAVIOUR.md``). The whole
    service time is shared this way — prefill included, a small approximation for short prompts.

    Args:
        service_times_s: solo service time of each request (model seconds).
        workers: servers W (one Ollama per GPU).
        slots: K slots per server (``OLLAMA_NUM_PARALLEL``).
        speedup: S(k) as a function, an object with ``.S(k)`` (a sim Profile), or ``None``
            for S(k) = 1 (several slots but no batching gain).
        dispatch: ``"least_loaded"`` — one shared FIFO queue; whenever a slot is free the next
            request goes to the server with the fewest requests in progress (pull-based, as a
            free Ray actor slot takes the next request); ``"round_robin"`` — request i is sent
            to server ``i mod W`` on arrival and waits in that server's own queue.
        arrivals_s: when each request arrives (model seconds); default all at 0.

    Returns:
        The schedule; ``start_s`` is when a request got a slot.

    With one slot this is greedy list scheduling (:func:`list_schedule`). With several, one
    more server is not always faster: pull dispatch spreads requests thinner, and when S(k)
    grows with k the thinner batches can decode slower — a scheduling anomaly, usually under 1 %.
    """
    times = _times(service_times_s)
    w = _count("workers", workers)
    k_max = _count("slots", slots)
    S = speedup_fn(speedup)
    if dispatch not in _DISPATCHES:
        raise ConfigError(f"dispatch must be one of {', '.join(_DISPATCHES)}, got {dispatch!r}")
    arrivals = _arrivals(arrivals_s, len(times))
    rate = {k: checked_speedup(S, k) / k for k in range(1, k_max + 1)}  # per-request speed
    run = _SharingRun(times, arrivals, w, k_max, rate, dispatch)
    run.run()
    entries = tuple(ScheduledRequest(i, run.server_of[i], run.start[i], run.finish[i])
                    for i in range(len(times)))
    return PredictedSchedule(entries, w, k_max)


def _arrivals(arrivals_s: Sequence[float] | None, n: int) -> list[float]:
    """Each request's arrival (model seconds), checked: one per request; None: all at 0."""
    if arrivals_s is None:
        return [0.0] * n
    arrivals = _times(arrivals_s)
    if len(arrivals) != n:
        raise ConfigError(
            f"arrivals_s has {len(arrivals)} times for {n} requests — give one per request"
        )
    return arrivals


class _SharingRun:
    """One :func:`simulate_processor_sharing` run: the queues (one shared, or one a server
    under round-robin), each server's requests in progress with their work left, and the
    clock; it steps from event to event (a completion at the current rates, or an arrival)."""

    def __init__(self, times: list[float], arrivals: list[float], workers: int, slots: int,
                 rate: dict[int, float], dispatch: Dispatch) -> None:
        n = len(times)
        self.times, self.arrivals, self.rate = times, arrivals, rate
        self.w, self.k_max = workers, slots
        self.round_robin = dispatch == "round_robin"
        self.eps = _EPS * max([1.0, *times])
        self.arrival_order = deque(sorted(range(n), key=lambda i: (arrivals[i], i)))
        self.queues: list[deque[int]] = [deque() for _ in range(workers if self.round_robin
                                                                 else 1)]
        self.active: list[dict[int, float]] = [{} for _ in range(workers)]  # {request: left}
        self.start = [math.nan] * n
        self.finish = [math.nan] * n
        self.server_of = [-1] * n
        self.rr_next = 0
        self.now = 0.0
        self.done = 0

    def run(self) -> None:
        """Until every request finished: queue the arrivals, fill free slots, step on."""
        n = len(self.times)
        while self.done < n:
            self.enqueue_arrived()
            self.admit()
            if self.done == n:
                break
            self.advance(self.next_step())

    def enqueue_arrived(self) -> None:
        """The requests arrived by now join the queue (round-robin: server i mod W's)."""
        order, arrivals = self.arrival_order, self.arrivals
        while order and arrivals[order[0]] <= self.now + self.eps:
            i = order.popleft()
            if self.round_robin:
                self.queues[self.rr_next % self.w].append(i)
                self.rr_next += 1
            else:
                self.queues[0].append(i)

    def admit(self) -> None:
        """Fill free slots from the queues, FIFO; the shared queue's head goes to the server
        with the fewest requests in progress (lowest index on ties)."""
        active, k_max = self.active, self.k_max
        if self.round_robin:
            for s in range(self.w):
                while self.queues[s] and len(active[s]) < k_max:
                    self.begin(self.queues[s].popleft(), s)
            return
        while self.queues[0]:
            free = [s for s in range(self.w) if len(active[s]) < k_max]
            if not free:
                break
            s = min(free, key=lambda s: (len(active[s]), s))
            self.begin(self.queues[0].popleft(), s)

    def begin(self, i: int, s: int) -> None:
        """Request ``i`` takes a slot of server ``s``."""
        self.start[i] = self.now
        self.server_of[i] = s
        if self.times[i] <= self.eps:  # an empty request finishes as it starts
            self.finish[i] = self.now
            self.done += 1
        else:
            self.active[s][i] = self.times[i]

    def next_step(self) -> float:
        """Time to the next event: the first completion at current rates, or the next
        arrival."""
        step = math.inf
        for work in self.active:
            if work:
                step = min(step, min(work.values()) / self.rate[len(work)])
        if self.arrival_order:
            step = min(step, self.arrivals[self.arrival_order[0]] - self.now)
        return max(step, 0.0)

    def advance(self, step: float) -> None:
        """Every request in progress works ``step`` seconds at its server's current rate;
        those with no work left finish."""
        for work in self.active:
            if not work:
                continue
            r = self.rate[len(work)]
            for i in list(work):
                left = work[i] - r * step
                if left <= self.eps:
                    del work[i]
                    self.finish[i] = self.now + step
                    self.done += 1
                else:
                    work[i] = left
        self.now += step


def equal_requests_makespan(n: int, t: float, *, workers: int = 1, slots: int = 1,
                            speedup: SpeedupFn | Any | None = None) -> float:
    """Closed form for N equal requests of t seconds on W servers with K slots each.

    Requests spread evenly, so the busiest server gets ``m = ⌈N/W⌉`` of them and serves them in
    ``⌊m/K⌋`` full batches of K, each taking ``K·t/S(K)``, then a last batch of ``r = m mod K``
    taking ``r·t/S(r)``:

        makespan = ⌊m/K⌋ · K·t/S(K) + r·t/S(r)

    With one slot (S(1) = 1) this is the headline ``⌈N/W⌉ · t``; with ``S(k) = k`` (perfect
    batching) it is ``⌈N/(W·K)⌉ · t``. It matches :func:`simulate_processor_sharing` whenever
    each request's speed ``S(k)/k`` does not grow with k (batching never makes a single request
    faster) — true of every real server; otherwise use the simulation.
    """
    if n < 0:
        raise ConfigError(f"the number of requests must be 0 or more, got {n}")
    (t,) = _times([t])
    w = _count("workers", workers)
    k = _count("slots", slots)
    S = speedup_fn(speedup)
    if n == 0:
        return 0.0
    m = -(-n // w)
    full, r = divmod(m, k)
    total = full * k * t / checked_speedup(S, k)
    if r:
        total += r * t / checked_speedup(S, r)
    return total


def _ps_lower_bound(times: Sequence[float], workers: int, slots: int, S: SpeedupFn) -> float:
    """``max(Σt / (W·max S(k)), max t / max S(k)/k)`` over k ≤ K: the best a server can do."""
    if not times:
        return 0.0
    ks = range(1, slots + 1)
    best_aggregate = max(checked_speedup(S, k) for k in ks)
    best_single = max(checked_speedup(S, k) / k for k in ks)
    return max(math.fsum(times) / (workers * best_aggregate), max(times) / best_single)


# ---------------------------------------------------------------------------------------------
# The async / batch API
# ---------------------------------------------------------------------------------------------

def async_api_makespan(service_times_s: Iterable[float], *, submit_overhead_s: float = 0.0
                       ) -> float:
    """An async (queued) or batch API in front of one single-slot Ollama: ``Σ t + submission``.

    Submitting returns at once with task ids, so the *caller* stops waiting — but the one slot
    still serves the requests one after another, so the last one finishes when it would have
    sequentially: 5 × 10 s → 50 s (plus the milliseconds it takes to submit). Only more slots
    or more servers shorten the makespan.

    Args:
        service_times_s: solo service times (model seconds).
        submit_overhead_s: time to accept every request, in model seconds (a clock overhead
            ``submit_s`` becomes ``submit_s / time_scale`` model seconds).
    """
    (overhead,) = _times([submit_overhead_s])
    return sequential_makespan(service_times_s) + overhead


# ---------------------------------------------------------------------------------------------
# predict(): one prediction per mode, for bench
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Prediction:
    """What theory expects of one mode.

    Attributes:
        mode: the mode predicted.
        makespan_s: predicted first-submission-to-last-completion time (model seconds).
        lower_bound_s: no schedule on these resources can beat it (model seconds).
        rounds: ``⌈N / (servers × effective slots)⌉`` — how often each slot fills.
        servers: servers the mode uses (1 for sequential/async/batch).
        slots: effective slots per server (1 for sequential; min(concurrency, slots) for
            async/batch).
        explanation: one or two sentences saying where the number comes from.
    """

    mode: str
    makespan_s: float
    lower_bound_s: float
    rounds: int
    servers: int
    slots: int
    explanation: str


def predict(
    mode: str | Topology,
    service_times_s: Iterable[float] | None = None,
    *,
    servers: int | None = None,
    workers: int | None = None,
    slots: int | None = None,
    speedup: SpeedupFn | Any | None = None,
    dispatch: Dispatch | None = None,
    concurrency: int | None = None,
    submit_overhead_s: float = 0.0,
    service: ServiceModel | None = None,
) -> Prediction:
    """Predict a run's makespan for requests with the given solo service times.

    Args:
        mode: a :class:`~parallel_kit.topology.Topology` (servers, slots, requests in flight,
            task queue, dispatch), or a registered mode's name, whose topology the mode registry
            builds from ``workers``, ``slots`` and ``concurrency``
            (:meth:`parallel_kit.modes.registry.ModeInfo.topology`).
        service_times_s: solo service time of each request (model seconds); see
            :func:`service_times_from_profile`.
        servers: with a mode name: servers (one Ollama each, one per GPU) available to the
            multi-server modes; single-server modes use one. Required with a mode name.
        workers: the older name of ``servers`` (kept so that existing notebooks run).
        slots: with a mode name: slots per server (``OLLAMA_NUM_PARALLEL``, default 1).
        speedup: S(k), or a profile with ``.S(k)``; ``None`` means S(k) = 1 (only matters when
            more than one slot is used).
        dispatch: overrides the topology's dispatch: ``least_loaded`` (pull) or
            ``round_robin``.
        concurrency: with a mode name: workers of the async/batch queue
            (``MAX_CONCURRENT_REQUESTS``); the server sees at most ``min(concurrency, slots)``
            at once. ``None``: not limiting.
        submit_overhead_s: added when the requests pass through the task queue (model
            seconds): the time to accept the batch.
        service: each request's prefill and tokens (:func:`service_model_from_profile`): with
            several busy slots the prediction then follows the simulator's step rules, prefill
            at full speed (see :func:`predict_topology`); ``service_times_s`` may be left out.

    Raises:
        ConfigError: an unknown mode name, a bad count or service time.
    """
    if servers is not None and workers is not None:
        raise ConfigError("predict() got servers= and workers= — they are the same; give servers=")
    servers = servers if servers is not None else workers
    if isinstance(mode, Topology):
        topo = mode
        if servers is not None or slots is not None or concurrency is not None:
            raise ConfigError("predict(topology, ...) takes servers, slots and concurrency from "
                              "the Topology — do not pass servers/slots/concurrency as well")
    else:
        if servers is None:
            raise ConfigError(f"predict({mode!r}, ...) needs servers= (servers available)")
        from ..modes.registry import get_info

        if concurrency is not None:
            _count("concurrency", concurrency)
        topo = get_info(mode).topology(gpus=_count("workers", servers),
                                       slots=_count("slots", 1 if slots is None else slots),
                                       concurrency=concurrency)
    if dispatch is not None:
        topo = replace(topo, dispatch=dispatch)
    return predict_topology(topo, service_times_s, speedup=speedup,
                            submit_overhead_s=submit_overhead_s, service=service)


def predict_topology(topology: Topology, service_times_s: Iterable[float] | None = None, *,
                     speedup: SpeedupFn | Any | None = None,
                     submit_overhead_s: float = 0.0,
                     service: ServiceModel | None = None) -> Prediction:
    """Predict the makespan of requests served by ``topology`` (see :func:`predict`).

    Servers × busy slots each (``min(slots, in_flight)``); one busy slot per server is list
    scheduling (least-loaded: Graham's greedy bound; round-robin: fixed order). Several busy
    slots: with ``service`` (each request's prefill and tokens, the simulator's own latency
    model, :func:`service_model_from_profile`), the simulator's step rules
    (:func:`parallel_kit.theory.queueing.simulate`: the prompt at full speed in its slot, then decode
    steps of ``k / (decode_tps·S(k))`` for the k decoding, a newcomer joining at the next step
    boundary) — the model ``tests/test_theory_matches_engine.py`` pins against the simulator's
    engine; without it, processor sharing of whole service times with S(k)
    (:func:`simulate_processor_sharing`, which also slows the prompt by S(k)/k, so it predicts
    a little long when prompts are long). Model seconds in and out.

    Args:
        service_times_s: solo service times (model seconds); ``None`` with ``service``: its
            :attr:`ServiceModel.solo_s`.
        service: the requests' prefill and tokens; when given, ``speedup`` defaults to its S.

    Raises:
        ConfigError: a bad count, dispatch or service time; neither times nor service; a
            service model whose length differs from the times'.
    """
    times, speedup = _service_times(service_times_s, service, speedup)
    servers = _count("servers", topology.servers)
    k = _count("slots", topology.slots)
    if topology.in_flight is not None:
        _count("requests in flight (concurrency)", topology.in_flight)
    if topology.dispatch not in _DISPATCHES:
        raise ConfigError(f"dispatch must be one of {', '.join(_DISPATCHES)}, got "
                          f"{topology.dispatch!r}")
    S = speedup_fn(speedup)
    eff = topology.busy_slots
    label = topology.label or (f"{servers} server(s) × {k} slot(s)")
    span = _makespan(times, service, servers, eff, topology.dispatch, S)
    bound = _ps_lower_bound(times, servers, eff, S) if eff > 1 else lower_bound(times, servers)
    overhead = 0.0
    if topology.task_queue:
        (overhead,) = _times([submit_overhead_s])
        span += overhead
    n_rounds = rounds(len(times), servers, eff)
    why = _topology_explanation(topology, times, _Spans(span, bound, overhead, n_rounds),
                                servers=servers, eff=eff, S=S, label=label)
    return Prediction(label, span, bound, n_rounds, servers, eff, f"{label}: {why}")


def _service_times(service_times_s: Iterable[float] | None, service: ServiceModel | None,
                   speedup: SpeedupFn | Any | None) -> tuple[list[float], SpeedupFn | Any | None]:
    """:func:`predict_topology`'s solo times (from ``service`` when not given) and speed-up
    (``service``'s when not given), checked against each other."""
    if service_times_s is None:
        if service is None:
            raise ConfigError("predict_topology needs service times or a service model")
        service_times_s = service.solo_s
    times = _times(service_times_s)
    if service is not None:
        if len(service.tokens) != len(times):
            raise ConfigError(f"the service model has {len(service.tokens)} requests and the "
                              f"service times {len(times)} — give one entry per request")
        if speedup is None:
            speedup = service.speedup
    return times, speedup


def _makespan(times: list[float], service: ServiceModel | None, servers: int, eff: int,
              dispatch: Dispatch, S: SpeedupFn) -> float:
    """The makespan of ``times`` on ``servers`` × ``eff`` busy slots (see
    :func:`predict_topology`): list scheduling with one slot, else the simulator's step rules
    (with ``service``) or processor sharing."""
    n = len(times)
    if eff == 1:
        return (greedy_makespan(times, servers) if dispatch == "least_loaded" or servers == 1
                else round_robin_makespan(times, servers))
    if service is not None and n:
        from . import queueing

        sim = queueing.simulate([0.0] * n, list(service.tokens), decode_tps=service.decode_tps,
                                prefill_s=list(service.prefill_s), workers=servers, slots=eff,
                                speedup=S, routing="round_robin" if dispatch == "round_robin"
                                else "fifo")
        return float(np.max(sim.finish_s))
    return simulate_processor_sharing(times, workers=servers, slots=eff, speedup=S,
                                      dispatch=dispatch).makespan_s


class _Spans(NamedTuple):
    """A prediction's figures (model seconds) that its explanation quotes."""

    span: float
    bound: float
    overhead: float
    rounds: int


def _topology_explanation(topology: Topology, times: list[float], spans: _Spans, *,
                          servers: int, eff: int, S: SpeedupFn, label: str) -> str:
    """Why :func:`predict_topology` predicts what it does, in a sentence or two."""
    n, k, dispatch = len(times), topology.slots, topology.dispatch
    span, overhead = spans.span, spans.overhead
    total = math.fsum(times)
    equal = n > 0 and max(times) - min(times) <= _EPS * max(1.0, max(times))
    if n == 0:
        return "no requests: nothing to wait for."
    if topology.in_flight == 1 and servers == 1 and not topology.task_queue:
        return (f"one request at a time on one server: Σt = {_s(total)}"
                + (f" ({n} × {_s(times[0])})" if equal else "") + ".")
    if eff == 1 and servers == 1 and topology.task_queue:
        why = (f"the {label} queue feeds one single-slot server, which still serves one request "
               f"at a time: Σt = {_s(total)}" + (f" plus {_s(overhead)} to submit" if overhead
                                                 else "") + "; queueing only frees the caller.")
        if k > 1 and topology.in_flight == 1:
            why += " (concurrency 1 leaves the extra slots idle.)"
        return why
    if servers == 1 and eff > 1:
        return (f"one server with {eff} slots decoding together at S({eff}) = "
                f"{checked_speedup(S, eff):.2f}× its solo speed, shared among them: {_s(span)}.")
    if servers == 1:
        return f"one request at a time on one server: Σt = {_s(total)}."
    if eff == 1:
        how = "least-loaded (pull) dispatch" if dispatch == "least_loaded" else "round-robin"
        why = (f"{n} requests on {servers} single-slot servers with {how}: ")
        why += (f"⌈{n}/{servers}⌉ = {spans.rounds} rounds of {_s(times[0])} = {_s(span)}"
                if equal else f"{_s(span)} (lower bound {_s(spans.bound)})")
        return why + (f", {total / span:.2f}× faster than sequential." if span > 0 else ".")
    return (f"{n} requests on {servers} servers × {eff} slots (S({eff}) = "
            f"{checked_speedup(S, eff):.2f}), {dispatch.replace('_', '-')} dispatch: {_s(span)}"
            f" (lower bound {_s(spans.bound)}).")


def _s(seconds: float) -> str:
    return f"{seconds:.3g} s"


# ---------------------------------------------------------------------------------------------
# Service times from a simulator profile
# ---------------------------------------------------------------------------------------------

def service_times_from_profile(profile: Any, specs: Iterable[Any], *, seed: int | None = None
                               ) -> list[float]:
    """Solo service time (model seconds) of each request under a sim profile.

    Uses the profile's own latency model, so the prediction and the simulator agree on what a
    request costs: ``profile.prompt_tokens(prompt)``, ``profile.output_tokens(prompt, seed=…,
    num_predict=…)`` and ``profile.service_time_s(prompt_tokens, output_tokens, concurrent=1)``
    (docs/ARCHITECTURE.md). Load time is not included (``setup_s`` reports it apart).

    Args:
        profile: a ``parallel_kit.sim.profiles.Profile`` or anything with those three methods.
        specs: ``RequestSpec`` objects or plain prompt strings. A spec's ``num_predict`` and
            ``options["seed"]`` are honoured.
        seed: the seed for specs that do not give one.
    """
    needed = ("prompt_tokens", "output_tokens", "service_time_s")
    missing = [m for m in needed if not callable(getattr(profile, m, None))]
    if missing:
        raise ConfigError(
            f"{type(profile).__name__} is not a profile: it lacks {', '.join(missing)} — pass "
            f"a parallel_kit.sim.profiles.Profile (load_profile('seed')) or a list of seconds"
        )
    times = []
    for spec in specs:
        if isinstance(spec, str):
            prompt, num_predict, spec_seed = spec, None, seed
        else:
            prompt = spec.prompt
            num_predict = getattr(spec, "num_predict", None)
            options = getattr(spec, "options", None) or {}
            spec_seed = options.get("seed", seed)
            # A num_predict inside options counts like the field (ollama_options folds them).
            if num_predict is None:
                num_predict = options.get("num_predict")
        prompt_tokens = profile.prompt_tokens(prompt)
        output_tokens = profile.output_tokens(prompt, seed=spec_seed, num_predict=num_predict)
        times.append(float(profile.service_time_s(prompt_tokens, output_tokens, concurrent=1)))
    return _times(times)


# ---------------------------------------------------------------------------------------------
# Curves for the notebooks
# ---------------------------------------------------------------------------------------------

class CurvePoint(NamedTuple):
    """One point of a speed-up curve: ``x`` (workers or slots), makespan (model s), speed-up."""

    x: int
    makespan_s: float
    speedup: float


def speedup_vs_workers(n: int, t: float, workers_range: Iterable[int]) -> list[CurvePoint]:
    """The ⌈N/W⌉ staircase: N requests of t seconds on W single-slot servers.

    ``makespan = ⌈N/W⌉ · t`` and ``speedup = N / ⌈N/W⌉``: it rises in steps, not along the
    ideal line W. Five requests: W = 1 → 1×; W = 2 → 3 rounds, 1.67×; W = 3 or 4 → 2 rounds,
    2.5× (the fourth GPU buys nothing); W ≥ 5 → 5×.
    """
    if n < 1:
        raise ConfigError(f"the number of requests must be at least 1, got {n}")
    (t,) = _times([t])
    points = []
    for w in workers_range:
        span = rounds(n, w) * t
        points.append(CurvePoint(w, span, (n * t / span) if span > 0 else math.nan))
    return points


def speedup_vs_slots(speedup: SpeedupFn | Any, ks: Iterable[int], *, n: int | None = None,
                     t: float = 1.0) -> list[CurvePoint]:
    """What K slots on one server buy.

    Without ``n``: the steady-state throughput gain ``S(K)``, and as makespan the time one full
    batch of K requests of t seconds takes, ``K·t/S(K)``. With ``n``: the makespan of n equal
    requests (:func:`equal_requests_makespan`) and the speed-up over one slot.
    """
    S = speedup_fn(speedup)
    (t,) = _times([t])
    points = []
    for k in ks:
        _count("slots", k)
        if n is None:
            gain = checked_speedup(S, k)
            points.append(CurvePoint(k, k * t / gain, gain))
        else:
            span = equal_requests_makespan(n, t, slots=k, speedup=S)
            base = equal_requests_makespan(n, t, slots=1, speedup=S)
            points.append(CurvePoint(k, span, base / span if span > 0 else math.nan))
    return points


def amdahl_speedup(parallel_fraction: float, n: float) -> float:
    """Amdahl's law: ``1 / ((1 − p) + p / n)`` for a fraction p that n workers share.

    Diminishing returns: with p = 0.9, 10 workers give 5.3×, and no number of workers beats
    ``1 / (1 − p)`` = 10×.
    """
    if not 0.0 <= parallel_fraction <= 1.0:
        raise ConfigError(f"parallel_fraction must be between 0 and 1, got {parallel_fraction}")
    if not n > 0:
        raise ConfigError(f"n (workers) must be above 0, got {n}")
    return 1.0 / ((1.0 - parallel_fraction) + parallel_fraction / n)


def karp_flatt_serial_fraction(speedup: float, n: float) -> float:
    """The serial fraction a measured speed-up implies (Karp–Flatt): ``(1/s − 1/n) / (1 − 1/n)``.

    The inverse of Amdahl's law for a measurement: 2.5× on 3 GPUs → 0.1, i.e. the run behaved
    as if a tenth of it could not be shared (here: the idle third GPU in the second round).
    """
    if not speedup > 0:
        raise ConfigError(f"speedup must be above 0, got {speedup}")
    if not n > 1:
        raise ConfigError(f"n (workers) must be above 1 for a serial fraction, got {n}")
    return (1.0 / speedup - 1.0 / n) / (1.0 - 1.0 / n)


# ---------------------------------------------------------------------------------------------
# Requests that arrive over time (open loop): queueing theory and the discrete-event run
# ---------------------------------------------------------------------------------------------

#: Requests the steady-state discrete-event run draws (enough for p95 within about 1 %).
STEADY_STATE_REQUESTS = 20_000


@dataclass(frozen=True, slots=True)
class ServiceModel:
    """What each request costs on the simulator's latency model (model seconds, tokens).

    Attributes:
        prefill_s: prompt time of each request, shape ``(m,)``.
        tokens: output tokens of each request, shape ``(m,)``.
        decode_tps: tokens/s of one request decoding alone.
        speedup: S(k), aggregate decode speed with k decoding at once (S(1) = 1).
        service_cv: coefficient of variation of one request's service time around the model's
            value, request to request — a real server's jitter (``Profile.service_cv``, measured
            by ``probe`` repeating a request alone); 0: every request takes exactly its model
            time, as on the simulator.
    """

    prefill_s: tuple[float, ...]
    tokens: tuple[int, ...]
    decode_tps: float
    speedup: SpeedupFn
    service_cv: float = 0.0

    @property
    def solo_s(self) -> list[float]:
        """Each request's service time alone: prefill + tokens / decode_tps."""
        return [p + t / self.decode_tps for p, t in zip(self.prefill_s, self.tokens, strict=True)]

    def cycled(self, n: int) -> tuple[list[float], list[int]]:
        """Prefill times and tokens of ``n`` requests cycling over these."""
        m = len(self.tokens)
        return ([self.prefill_s[i % m] for i in range(n)], [self.tokens[i % m] for i in range(n)])


def service_model_from_profile(profile: Any, specs: Iterable[Any], *, seed: int | None = None
                               ) -> ServiceModel:
    """The simulator's own latency model for ``specs``: the profile's ``request_overhead_s`` +
    ``prefill_s`` (the phase before decoding),
    ``output_tokens`` and ``speed().decode_tps``, and its ``S(k)`` (see
    :func:`service_times_from_profile`, which gives the same requests' solo times).

    Raises:
        ConfigError: ``profile`` is not a profile; no specs.
    """
    for m in ("prompt_tokens", "output_tokens", "prefill_s", "speed", "S"):
        if not callable(getattr(profile, m, None)):
            raise ConfigError(f"{type(profile).__name__} is not a profile (no .{m}) — pass "
                              f"load_profile('seed')")
    prefill: list[float] = []
    tokens: list[int] = []
    for spec in specs:
        if isinstance(spec, str):
            prompt, num_predict, spec_seed, model = spec, None, seed, None
        else:
            prompt, model = spec.prompt, getattr(spec, "model", None)
            options = getattr(spec, "options", None) or {}
            num_predict = getattr(spec, "num_predict", None) or options.get("num_predict")
            spec_seed = options.get("seed", seed)
        # the request's own overhead holds its slot before the prompt, as in the simulator
        overhead = float(getattr(profile.speed(model), "request_overhead_s", 0.0) or 0.0)
        prefill.append(overhead + float(profile.prefill_s(profile.prompt_tokens(prompt), model)))
        tokens.append(int(profile.output_tokens(prompt, seed=spec_seed, num_predict=num_predict,
                                                model=model)))
    if not tokens:
        raise ConfigError("no requests to model — give at least one prompt")
    return ServiceModel(tuple(prefill), tuple(tokens), float(profile.speed().decode_tps),
                        speedup_fn(profile), float(getattr(profile, "service_cv", 0.0) or 0.0))


@dataclass(frozen=True, slots=True)
class LoadPrediction:
    """What theory expects of a mode under arrivals (model seconds; latency from arrival).

    Attributes:
        mode, routing: the mode and the queueing policy modelled.
        rate: λ, offered requests per model second.
        servers, slots: W and the slots each server really uses.
        capacity_rps: the most requests per second the servers finish with every slot busy.
        utilisation: ρ = λ / capacity (≥ 1: the queue grows without bound).
        latency_* / ttft_* / wait_*: mean and percentiles of the response time (arrival →
            last token), time to first token (arrival → first token), time in queue.
        simulated_latency_mean_s: the discrete-event run's own mean latency, also where the
            mean above is the closed form's.
        closed_form: the formula behind ``closed_form_wait_s`` ("" when none applies).
        closed_form_wait_s: its mean wait in queue (model s), or ``None``.
        method: how the figures were found: ``"closed form + discrete-event"`` or
            ``"discrete-event"``.
    """

    mode: str
    routing: str
    rate: float
    servers: int
    slots: int
    capacity_rps: float
    utilisation: float
    latency_mean_s: float
    latency_p50_s: float
    latency_p95_s: float
    latency_p99_s: float
    ttft_mean_s: float
    ttft_p50_s: float
    ttft_p95_s: float
    ttft_p99_s: float
    wait_mean_s: float
    simulated_latency_mean_s: float
    closed_form: str
    closed_form_wait_s: float | None
    method: str
    explanation: str

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def mode_topology(mode: str, *, workers: int, slots: int, concurrency: int | None = None
                  ) -> tuple[int, int, str]:
    """(servers, slots used per server, routing) of a mode — the policy it really runs.

    From the mode's registry record (:meth:`ModeInfo.topology`): ``sequential`` sends one request
    at a time (1 × 1); ``async``/``batch`` put ``concurrency`` queue workers in front of one
    server (1 × min(K, C)); ``pool`` and ``ray`` keep one FIFO queue in front of W servers × K
    slots; a mode whose record names a ``routing`` (``rayserve``, ``production``: Ray Serve's
    router, ``power_of_two``) routes by it, and a round-robin dispatch keeps one queue per
    server.

    Raises:
        ConfigError: an unknown mode, bad counts.
    """
    from ..modes.registry import get_info

    w = _count("workers", workers)
    k = _count("slots", slots)
    info = get_info(mode)
    topo = info.topology(gpus=w, slots=k, concurrency=concurrency)
    routing = info.routing or ("round_robin" if topo.dispatch == "round_robin" else "fifo")
    return topo.servers, topo.busy_slots, routing


#: Draws of the service-time jitter averaged in a prediction for one schedule (``cv`` > 0).
JITTER_RUNS = 64


def jittered_service(prefill_s: Sequence[float], tokens: Sequence[int], decode_tps: float,
                     cv: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Each request's prefill time and output tokens with a service-time jitter drawn in.

    Request i's work alone is scaled by ``f_i``, drawn from a gamma distribution of mean 1 and
    coefficient of variation ``cv`` (shape 1/cv², scale cv²): its prefill becomes
    ``f_i × prefill_i`` and its ``f_i × tokens_i`` tokens are whole tokens, decoded in the
    steps a batch shares (so S(k) still applies), plus the remaining fraction of a token's time
    added to its prefill. Alone, a request then takes exactly ``f_i`` × its model time. At least
    one token is kept (a draw below ``1 / tokens_i`` is rounded up to it).

    Returns:
        ``(prefill_s, tokens)``, shapes ``(n,)``: model seconds, whole tokens ≥ 1.
    """
    pre = np.asarray(prefill_s, dtype=float)
    f = rng.gamma(1.0 / cv**2, cv**2, size=pre.shape)
    work = f * np.asarray(tokens, dtype=float)
    whole = np.maximum(1, np.floor(work)).astype(np.int64)
    return np.maximum(0.0, f * pre + (work - whole) / decode_tps), whole


def predict_load(
    mode: str | Topology,
    service: ServiceModel,
    *,
    rate: float | None = None,
    schedule: Any = None,
    process: str = "poisson",
    burstiness: float = 1.0,
    workers: int = 1,
    slots: int = 1,
    concurrency: int | None = None,
    max_concurrency: int | None = None,
    routing: str | None = None,
    warmup: int = 0,
    seed: int = 0,
    requests: int = STEADY_STATE_REQUESTS,
    max_ongoing: int | None = None,
) -> LoadPrediction:
    """Predict latency and TTFT of ``mode`` when requests arrive over time.

    ``mode`` is a registered mode's name (its topology from :func:`mode_topology`) or a
    :class:`Topology` (servers, slots, requests in flight, dispatch; ``label`` names it; a
    ``round_robin`` dispatch keeps one queue per server). Two questions, one function:

    * ``rate`` (and ``process``/``burstiness``): the **steady state** — a discrete-event run
      (:func:`parallel_kit.theory.queueing.simulate`) of ``requests`` arrivals drawn with ``seed``,
      the service model's requests cycled; the mean is the closed form where one is exact
      (M/G/1: Pollaczek–Khinchine, when the mode uses one single-slot server and arrivals are
      Poisson).
    * ``schedule`` (an :class:`parallel_kit.workload.arrivals.Schedule`, its ``times_s`` in order):
      **this run** — the same discrete-event run over exactly these arrivals and requests
      (``service`` has one entry per arrival, or is cycled), leaving out ``warmup`` first ones.

    ``max_ongoing`` bounds what one server accepts under ``power_of_two`` routing (Ray Serve's
    ``max_ongoing_requests``; the rest wait in the router's FIFO queue, see
    :func:`parallel_kit.theory.queueing.simulate`). ``None``: for a mode whose registry record routes
    by power of two (``rayserve``, ``production``) the slots — the kit's default
    ``--max-ongoing`` — so that nothing queues inside a server; for ``routing="power_of_two"``
    asked for explicitly, no bound (every request joins a server's own queue).

    A real server's request-to-request jitter (``service.service_cv`` > 0, from a calibrated
    profile) is drawn into each request's service time (:func:`jittered_service`): the closed
    form takes its squared CV into the service time's, and the figures for one schedule are the
    mean over :data:`JITTER_RUNS` draws — a deterministic model puts the median of a ρ = 0.5
    queue exactly on the jump between waiting and not, which any jitter moves.

    Raises:
        ConfigError: neither or both of rate and schedule; bad counts; unknown routing;
        ``service_cv`` < 0.
    """
    if (rate is None) == (schedule is None):
        raise ConfigError("predict_load needs either a rate (steady state) or a schedule "
                          "(this run), not both")
    shape = _load_shape(mode, workers=workers, slots=slots, concurrency=concurrency,
                        routing=routing, max_ongoing=max_ongoing)
    capacity, mean_s, scv_s = _service_figures(service, shape.servers, shape.slots)
    arrivals = _load_arrivals(rate, schedule, warmup=warmup, requests=requests,
                              process=process, burstiness=burstiness, seed=seed)
    fig, how = _load_figures(service, arrivals, shape, max_concurrency=max_concurrency,
                             seed=seed, draws=1 if schedule is None else JITTER_RUNS)
    rho = arrivals.rate / capacity if capacity > 0 else math.inf
    if schedule is None and rho >= 1:
        # No steady state: the queue, and every figure with it, grows with the run's length.
        fig = {k: math.inf for k in fig}
    closed = _closed_form(arrivals, shape, mean_s, scv_s, process=process,
                          steady=schedule is None and max_concurrency is None)
    latency_mean, method = ((closed.wait + mean_s, "closed form + discrete-event")
                            if closed.exact and closed.wait is not None
                            else (fig["latency_mean_s"], how))
    why = _load_explanation(shape, closed, capacity=capacity, rho=rho, mean_s=mean_s,
                            latency_mean=latency_mean, p95=fig["latency_p95_s"], how=how)
    return LoadPrediction(
        mode=shape.label, routing=shape.routing, rate=arrivals.rate, servers=shape.servers,
        slots=shape.slots, capacity_rps=capacity, utilisation=rho, latency_mean_s=latency_mean,
        latency_p50_s=fig["latency_p50_s"], latency_p95_s=fig["latency_p95_s"],
        latency_p99_s=fig["latency_p99_s"], ttft_mean_s=fig["ttft_mean_s"],
        ttft_p50_s=fig["ttft_p50_s"], ttft_p95_s=fig["ttft_p95_s"], ttft_p99_s=fig["ttft_p99_s"],
        wait_mean_s=fig["wait_mean_s"], simulated_latency_mean_s=fig["latency_mean_s"],
        closed_form=closed.name, closed_form_wait_s=closed.wait, method=method,
        explanation=why)


class _LoadShape(NamedTuple):
    """What :func:`predict_load` runs: servers × slots each really uses, the routing, the
    bound on what one server accepts, and whether one queue stands in front of every slot."""

    label: str
    servers: int
    slots: int
    routing: str
    max_ongoing: int | None
    one_queue: bool


def _load_shape(mode: str | Topology, *, workers: int, slots: int, concurrency: int | None,
                routing: str | None, max_ongoing: int | None) -> _LoadShape:
    """The :class:`_LoadShape` of a mode's name or a :class:`Topology` (see
    :func:`predict_load` for ``max_ongoing``'s default)."""
    if isinstance(mode, Topology):
        servers, eff = _count("servers", mode.servers), mode.busy_slots
        policy = "round_robin" if mode.dispatch == "round_robin" else "fifo"
        label = mode.label or f"{servers} server(s) × {eff} slot(s)"
    else:
        servers, eff, policy = mode_topology(mode, workers=workers, slots=slots,
                                             concurrency=concurrency)
        label = mode
        if policy == "power_of_two" and routing is None and max_ongoing is None:
            max_ongoing = eff  # Serve's replicas accept as many as their Ollama has slots
    policy = routing or policy
    if policy != "power_of_two":
        max_ongoing = None
    elif max_ongoing is not None:
        max_ongoing = _count("max_ongoing", max_ongoing)
        eff = min(eff, max_ongoing)  # a server never runs more than it accepts
    # One FIFO queue in front of every slot: what Serve's router amounts to with
    # max_ongoing_requests = the slots (it holds the rest in its own FIFO queue).
    one_queue = policy == "fifo" or (policy == "power_of_two" and max_ongoing == eff)
    return _LoadShape(label, servers, eff, policy, max_ongoing, one_queue)


def _service_figures(service: ServiceModel, servers: int, eff: int
                     ) -> tuple[float, float, float]:
    """``(capacity_rps, mean_s, scv_s)``: the requests per second ``servers`` × ``eff`` busy
    slots finish, the mean solo service time and its squared CV (jitter included)."""
    solo = service.solo_s
    mean_pre = sum(service.prefill_s) / len(solo)
    mean_tok = sum(service.tokens) / len(solo)
    S = service.speedup
    full_batch_s = mean_pre + mean_tok * eff / (service.decode_tps * checked_speedup(S, eff))
    capacity = servers * eff / full_batch_s if full_batch_s > 0 else math.inf
    mean_s = sum(solo) / len(solo)
    cv = service.service_cv
    if not (math.isfinite(cv) and cv >= 0):
        raise ConfigError(f"service_cv must be a number ≥ 0, got {cv!r}")
    # Var(f·s) with a jitter f of mean 1 and CV cv, independent of s: Var(s) + cv²·E[s²].
    var_s = (sum((t - mean_s) ** 2 for t in solo) / len(solo)
             + cv**2 * sum(t * t for t in solo) / len(solo))
    scv_s = var_s / mean_s**2 if mean_s > 0 else 0.0
    return capacity, mean_s, scv_s


class _LoadArrivals(NamedTuple):
    """The arrivals :func:`predict_load` runs: times (model s), rate λ, squared CV of the
    gaps, the first ones left out of the figures, and how they were found."""

    times: np.ndarray
    rate: float
    scv: float
    skip: int
    how: str


def _load_arrivals(rate: float | None, schedule: Any, *, warmup: int, requests: int,
                   process: str, burstiness: float, seed: int) -> _LoadArrivals:
    """This run's arrivals (``schedule``), or ``requests`` drawn at ``rate`` for a steady
    state (its empty start left out)."""
    if schedule is not None:
        return _LoadArrivals(np.asarray(schedule.times_s, dtype=float),
                             float(getattr(schedule, "rate", math.nan)),
                             float(getattr(schedule, "scv", math.nan)), warmup,
                             "discrete-event (this run's arrivals)")
    from ..workload.arrivals import make_schedule

    lam = float(rate)  # type: ignore[arg-type]
    sched = make_schedule(lam, n=requests, process=process, burstiness=burstiness, seed=seed)
    skip = min(requests // 20, 1000)  # leave the empty start out of a steady state
    return _LoadArrivals(sched.times_s, lam, sched.scv, skip, "discrete-event")


def _load_figures(service: ServiceModel, arrivals: _LoadArrivals, shape: _LoadShape, *,
                  max_concurrency: int | None, seed: int, draws: int
                  ) -> tuple[dict[str, float], str]:
    """The discrete-event run's figures (:meth:`~.queueing.Simulation.figures`) and how they
    were found; with a service-time jitter, the mean over ``draws`` draws of it."""
    from . import queueing

    pre, tok = service.cycled(len(arrivals.times))

    def run(prefill: Sequence[float] | np.ndarray, tokens: Sequence[int] | np.ndarray,
            run_seed: int) -> dict[str, float]:
        return queueing.simulate(arrivals.times, tokens, decode_tps=service.decode_tps,
                                 prefill_s=prefill, workers=shape.servers, slots=shape.slots,
                                 speedup=service.speedup, routing=shape.routing,
                                 max_in_flight=max_concurrency, seed=run_seed,
                                 max_ongoing=shape.max_ongoing).figures(arrivals.skip)

    cv = service.service_cv
    if cv <= 0:
        return run(pre, tok, seed), arrivals.how
    # A long steady-state run averages the jitter out by itself; one run of this schedule
    # does not, so its figures are the mean over JITTER_RUNS draws of the jitter.
    rng = np.random.default_rng(seed)
    drawn = [run(*jittered_service(pre, tok, service.decode_tps, cv, rng), seed + r)
             for r in range(draws)]
    fig = {k: float(np.mean([d[k] for d in drawn])) for k in drawn[0]}
    how = arrivals.how + f", service-time CV {cv:.3g}" + (f" (mean of {draws} draws)"
                                                           if draws > 1 else "")
    return fig, how


class _ClosedFormWait(NamedTuple):
    """A closed form's mean wait in queue (model s); ``name`` "" and ``wait`` None: none."""

    name: str = ""
    wait: float | None = None

    @property
    def exact(self) -> bool:
        """Pollaczek–Khinchine (M/·/1), exact for the mean, not an approximation."""
        return self.name.startswith("M/") and "Pollaczek" in self.name


def _closed_form(arrivals: _LoadArrivals, shape: _LoadShape, mean_s: float, scv_s: float, *,
                 process: str, steady: bool) -> _ClosedFormWait:
    """The closed form that applies (module ``queueing``): M/G/1 for one single-slot server
    in a Poisson ``steady`` state with no client bound; Allen–Cunneen for single-slot servers
    behind one queue; else none."""
    from . import queueing

    lam = arrivals.rate
    if not (math.isfinite(lam) and lam > 0 and process in ("poisson", "constant", "gamma")):
        return _ClosedFormWait()
    if shape.servers == 1 and shape.slots == 1 and steady and process == "poisson":
        name = "M/D/1 Pollaczek–Khinchine" if scv_s < 1e-12 else "M/G/1 Pollaczek–Khinchine"
        return _ClosedFormWait(name, queueing.mg1_wait(lam, mean_s, scv_s))
    if shape.slots == 1 and shape.one_queue and math.isfinite(arrivals.scv):
        name = ("M/D/c Allen–Cunneen (approximation)" if arrivals.scv == 1 and scv_s < 1e-12
                else "G/G/c Allen–Cunneen (approximation)")
        return _ClosedFormWait(name, queueing.allen_cunneen_wait(
            lam, mean_s, shape.servers, scv_arrival=arrivals.scv, scv_service=scv_s))
    return _ClosedFormWait()


def _load_explanation(shape: _LoadShape, closed: _ClosedFormWait, *, capacity: float,
                      rho: float, mean_s: float, latency_mean: float, p95: float,
                      how: str) -> str:
    """Why :func:`predict_load` predicts what it does, in a sentence or two."""
    how_routed = shape.routing.replace('_', ' ')
    if shape.max_ongoing is not None:
        how_routed += (f" among servers that accept (at most {shape.max_ongoing} each"
                       f"{', the rest wait in one router queue' if shape.one_queue else ''})")
    why = (f"{shape.label}: {shape.servers} server(s) × {shape.slots} slot(s), {how_routed} "
           f"routing, capacity {capacity:.3g} req/s, ρ = {rho:.2f}; ")
    if rho >= 1:
        return why + ("the offered load exceeds capacity: the queue (and latency) grows with "
                      "the run.")
    why += f"mean latency {latency_mean:.3g} s"
    if closed.wait is not None:
        why += f" ({closed.name}: wait {closed.wait:.3g} s + service {mean_s:.3g} s)"
    return why + f", p95 {p95:.3g} s ({how})."


def __getattr__(name: str) -> Any:
    # ``theory.MODES``: the registered modes' names (read from the mode registry on use, so
    # that theory itself knows no mode by name).
    if name == "MODES":
        from ..modes.registry import mode_names

        return mode_names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -- the prompt cache: which conversation turns find their history ----------------------------
def host_cache_states(cache_ram_mib: int, kv_bytes_per_token: int, state_tokens: int) -> int:
    """Conversation states llama-server's host-RAM cache holds: ``cache_ram_mib`` MiB ÷
    (``state_tokens`` × ``kv_bytes_per_token``), rounded down (0 when either is 0).

    Args:
        cache_ram_mib: ``--cache-ram`` (default 8192; Ollama passes no flag for it).
        kv_bytes_per_token: KV bytes per token (a profile's ``kv_bytes_per_token``).
        state_tokens: tokens of one state (the longest conversation's prompt and answer).
    """
    if cache_ram_mib <= 0 or kv_bytes_per_token <= 0 or state_tokens <= 0:
        return 0
    return (cache_ram_mib << 20) // (kv_bytes_per_token * state_tokens)


def predict_turn_hits(conversations: int, slots: int, host_states: int = 0) -> float:
    """Fraction of later turns (every turn after a conversation's first) that find their
    conversation's history cached, when ``conversations`` conversations take turns in a fixed
    round (c0, c1, …, c0, …), one request at a time, on one server.

    A conversation's state lives in a slot until the slot is taken (llama-server picks the idle
    slot with the longest common prefix, else the least recently used one), then in the
    host-RAM cache (least recently used first out). A round touches every conversation once,
    which is LRU's worst case (Belady's cyclic pattern): with ``C`` conversations, ``K`` slots
    and room for ``H`` states in RAM, every later turn hits when ``C ≤ K + H`` and none does
    otherwise — adding a slot matters only at that edge, and Ollama's default 8 GiB of RAM
    usually holds the states anyway.

    Raises:
        ConfigError: a count below its minimum (1 conversation, 1 slot, 0 states).
    """
    for name, value, low in (("conversations", conversations, 1), ("slots", slots, 1),
                             ("host_states", host_states, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{name} must be a whole number ≥ {low}, got {value!r}")
    return 1.0 if conversations <= slots + host_states else 0.0
