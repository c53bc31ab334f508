"""Queueing theory for requests that arrive over time: closed forms and a discrete-event run.

Everything is in **model seconds**. ``rate`` λ is requests per model second, a service time s is
what one request takes with a server to itself, ``c`` the number of servers, and the offered load
``a = λ·s`` (in Erlangs); the utilisation is ``ρ = a / c``. Waiting times (``*_wait``) are the
time from arrival to the start of service; the **response time** (what a caller waits, the
request latency measured from its arrival) is the wait plus the service time.

Closed forms (infinite FIFO queue, steady state; ρ ≥ 1 gives ``math.inf``):

* **M/G/1 — Pollaczek–Khinchine**: ``W_q = ρ·s·(1 + c_s²) / (2·(1 − ρ))`` with c_s² the squared
  coefficient of variation of the service time (0 for deterministic: M/D/1,
  ``W_q = ρ·s / (2·(1 − ρ))``). Kleinrock, *Queueing Systems* vol. 1 (1975), eq. 5.65;
  https://en.wikipedia.org/wiki/Pollaczek%E2%80%93Khinchine_formula. One Ollama, 10 s requests,
  one every 20 s (ρ = 0.5): 5 s of waiting, 15 s in all; one every 11 s: 50 s of waiting.
* **M/M/c — Erlang C**: the chance to wait ``C(c, a)`` and ``W_q = C(c, a) · s / (c − a)``
  (A. K. Erlang 1917; Kleinrock vol. 1, eq. 3.40–3.42;
  https://en.wikipedia.org/wiki/Erlang_(unit)#Erlang_C_formula). Computed through the Erlang B
  recursion ``B(k) = a·B(k−1) / (k + a·B(k−1))``, which is stable for large c.
* **G/G/c — Allen–Cunneen approximation**: ``W_q ≈ W_q(M/M/c) · (c_a² + c_s²) / 2``
  (A. O. Allen, *Probability, Statistics, and Queueing Theory*, 2nd ed. 1990, §6; also
  W. Whitt, "Approximations for the GI/G/m queue", Prod. Oper. Mgmt. 2, 1993). Exact for
  M/M/c and for M/G/1; for M/D/c it is the common "half of M/M/c" rule, within a few per cent
  at moderate load. With gamma arrivals of burstiness B, ``c_a² = 1/B``.

What has no closed form — slots that slow each other down through S(k), unequal lengths, gamma
arrivals, traces, percentiles — :func:`simulate` runs event by event, on the latency model the
simulated Ollama itself uses (``parallel_kit/sim/engine.py``): a request takes a slot first come
first served, processes its prompt alone (``prefill_s``), then joins the server's decode batch at
the next step boundary; with k requests decoding, a step takes ``k / (decode_tps · S(k))``
model seconds and gives each of them one token; a request finishes at the step that gives its
last token and frees its slot then. Nothing sleeps: steps between two events are counted, not
run, so 10,000 requests take milliseconds to a few tenths of a second.

Routing (the *policy the mode uses*):

* ``fifo`` — one queue in front of every slot of every server; a freed slot takes the oldest
  request; a request that finds several free slots goes to the server with the fewest requests
  in progress (lowest index on ties). The kit's ``pool`` and ``ray`` dispatchers, and one
  Ollama's own FIFO queue (``sequential``, ``async``, ``batch``).
* ``power_of_two`` — each request picks two servers at random and joins the one with fewer
  requests (in progress + queued), then waits in that server's own FIFO queue: Ray Serve's
  router (https://github.com/ray-project/ray/blob/master/python/ray/serve/_private/
  request_router/pow_2_router.py). With ``max_ongoing`` m (Serve's ``max_ongoing_requests``) a
  server *accepts* a request only while it holds fewer than m: the two are drawn among the
  servers that accept (Serve's router retries with two fresh random replicas until one
  accepts; the retries' backoff is not modelled), and while none accepts, requests wait in the
  router's own first-come-first-served queue (the router's ``FIFOMixin``) and the head goes
  to the first server that frees one. With m = the slots (the kit's default) nothing waits in
  a server's queue: one FIFO queue in front of every slot, as ``fifo``, except which of
  several free servers is chosen; with m above the slots, requests queue inside one server
  while another may idle.
* ``round_robin`` — request i goes to server i mod W and waits in its queue.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ..errors import ConfigError

__all__ = [
    "ROUTINGS",
    "Routing",
    "Simulation",
    "allen_cunneen_wait",
    "erlang_c",
    "fifo_recursion",
    "md1_wait",
    "mg1_wait",
    "mmc_wait",
    "simulate",
    "utilisation",
]

Routing = Literal["fifo", "power_of_two", "round_robin"]
ROUTINGS: tuple[str, ...] = ("fifo", "power_of_two", "round_robin")
SpeedupFn = Callable[[int], float]


def _positive(name: str, value: float) -> float:
    x = float(value)
    if not (math.isfinite(x) and x > 0):
        raise ConfigError(f"{name} must be a finite number above 0, got {value!r}")
    return x


def _servers(c: int) -> int:
    if isinstance(c, bool) or not isinstance(c, int) or c < 1:
        raise ConfigError(f"servers must be a whole number ≥ 1, got {c!r}")
    return c


# ---------------------------------------------------------------------------------------------
# Closed forms
# ---------------------------------------------------------------------------------------------

def utilisation(rate: float, service_s: float, servers: int = 1) -> float:
    """ρ = λ·s / c: the fraction of the time each server is busy (≥ 1: the queue grows)."""
    return _positive("rate", rate) * _positive("service time", service_s) / _servers(servers)


def mg1_wait(rate: float, service_s: float, scv_service: float = 0.0) -> float:
    """Mean wait in queue of M/G/1 by Pollaczek–Khinchine (model seconds; inf if ρ ≥ 1).

    Args:
        rate: λ, arrivals per model second (Poisson).
        service_s: mean service time s.
        scv_service: c_s², the service time's variance ÷ s² (0 deterministic, 1 exponential).
    """
    rho = utilisation(rate, service_s)
    if scv_service < 0:
        raise ConfigError(f"a squared coefficient of variation is ≥ 0, got {scv_service}")
    if rho >= 1:
        return math.inf
    return rho * service_s * (1 + scv_service) / (2 * (1 - rho))


def md1_wait(rate: float, service_s: float) -> float:
    """Mean wait of M/D/1: ``ρ·s / (2(1 − ρ))`` (Pollaczek–Khinchine with c_s² = 0).

    One every 20 s, 10 s each: 5 s; one every 11 s: 50 s.
    """
    return mg1_wait(rate, service_s, 0.0)


def erlang_c(servers: int, offered: float) -> float:
    """Erlang C: the probability that an arrival must wait in M/M/c (1 when a ≥ c).

    Args:
        servers: c.
        offered: a = λ·s, the offered load in Erlangs.
    """
    c = _servers(servers)
    a = float(offered)
    if not (math.isfinite(a) and a >= 0):
        raise ConfigError(f"offered load must be a finite number ≥ 0, got {offered!r}")
    if a == 0:
        return 0.0
    if a >= c:
        return 1.0
    b = 1.0
    for k in range(1, c + 1):
        b = a * b / (k + a * b)
    return c * b / (c - a * (1 - b))


def mmc_wait(rate: float, service_s: float, servers: int) -> float:
    """Mean wait of M/M/c: ``C(c, a) · s / (c − a)`` (model seconds; inf if ρ ≥ 1)."""
    c = _servers(servers)
    a = _positive("rate", rate) * _positive("service time", service_s)
    if a >= c:
        return math.inf
    return erlang_c(c, a) * service_s / (c - a)


def allen_cunneen_wait(rate: float, service_s: float, servers: int, *,
                       scv_arrival: float = 1.0, scv_service: float = 0.0) -> float:
    """Mean wait of G/G/c by Allen–Cunneen: ``W_q(M/M/c) · (c_a² + c_s²) / 2``.

    Defaults are M/D/c (Poisson arrivals, deterministic service). Exact for M/M/c and M/G/1.
    """
    if scv_arrival < 0 or scv_service < 0:
        raise ConfigError("squared coefficients of variation are ≥ 0")
    return mmc_wait(rate, service_s, servers) * (scv_arrival + scv_service) / 2


def fifo_recursion(arrivals_s: Sequence[float], service_s: Sequence[float] | float,
                   servers: int = 1) -> np.ndarray:
    """Finish times under one FIFO queue in front of ``servers`` single-slot servers.

    Request i (in arrival order) starts at ``max(arrival_i, the earliest time a server is
    free)`` and finishes ``service_i`` later — Lindley's recursion for W servers. Returns the
    finish times, shape ``(n,)``, in the order given.
    """
    a = np.asarray(arrivals_s, dtype=float)
    s = np.broadcast_to(np.asarray(service_s, dtype=float), a.shape)
    free = [0.0] * _servers(servers)
    heapq.heapify(free)
    out = np.empty_like(a)
    for i in np.argsort(a, kind="stable"):
        start = max(a[i], heapq.heappop(free))
        out[i] = start + s[i]
        heapq.heappush(free, float(out[i]))
    return out


# ---------------------------------------------------------------------------------------------
# Discrete-event simulation of the simulator's latency model
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Simulation:
    """What :func:`simulate` found, one entry per request (input order), model seconds.

    Attributes:
        arrival_s: when the request arrived.
        start_s: when it got a slot (its wait in queue ends).
        first_token_s: when its first token came out.
        finish_s: when its last token came out.
        server: the server index it ran on.
    """

    arrival_s: np.ndarray
    start_s: np.ndarray
    first_token_s: np.ndarray
    finish_s: np.ndarray
    server: np.ndarray

    @property
    def latency_s(self) -> np.ndarray:
        """Response time: finish − arrival (what the caller waits, queueing included)."""
        return self.finish_s - self.arrival_s

    @property
    def ttft_s(self) -> np.ndarray:
        """Time to first token from the arrival."""
        return self.first_token_s - self.arrival_s

    @property
    def wait_s(self) -> np.ndarray:
        """Time in queue: start − arrival."""
        return self.start_s - self.arrival_s

    def figures(self, skip: int = 0) -> dict[str, float]:
        """Mean and p50/p90/p95/p99 of latency, TTFT and wait (linear interpolation),
        leaving out the first ``skip`` requests in arrival order."""
        order = np.argsort(self.arrival_s, kind="stable")[skip:]
        out: dict[str, float] = {}
        for name, values in (("latency", self.latency_s), ("ttft", self.ttft_s),
                             ("wait", self.wait_s)):
            v = values[order]
            out[f"{name}_mean_s"] = float(v.mean()) if v.size else math.nan
            for q in (50, 90, 95, 99):
                out[f"{name}_p{q}_s"] = float(np.percentile(v, q)) if v.size else math.nan
        return out


def simulate(
    arrivals_s: Sequence[float] | np.ndarray,
    tokens: Sequence[int] | np.ndarray | int,
    *,
    decode_tps: float,
    prefill_s: Sequence[float] | np.ndarray | float = 0.0,
    workers: int = 1,
    slots: int = 1,
    speedup: SpeedupFn | Any | None = None,
    routing: str = "fifo",
    max_in_flight: int | None = None,
    seed: int | None = 0,
    max_ongoing: int | None = None,
) -> Simulation:
    """Run requests through W servers with K slots each, event by event (see the module doc).

    Args:
        arrivals_s: arrival time of each request (model seconds), shape ``(n,)``.
        tokens: output tokens of each request (≥ 1), or one number for all.
        decode_tps: tokens/s of one request decoding alone (``ModelSpeed.decode_tps``).
        prefill_s: prompt time of each request (``Profile.prefill_s``), or one number.
        workers: servers W; slots: K slots each (``OLLAMA_NUM_PARALLEL``).
        speedup: S(k) — a function, a profile with ``.S(k)``, or ``None`` (S = 1).
        routing: ``fifo``, ``power_of_two`` or ``round_robin`` (module doc).
        max_in_flight: at most this many requests between arrival and finish outside the
            client's own queue (``--max-concurrency``); the rest wait first come first served.
        seed: random choices of ``power_of_two``.
        max_ongoing: ``power_of_two`` only: requests a server accepts at once (in progress +
            in its queue; Serve's ``max_ongoing_requests``); the rest wait in the router's
            queue (module doc). ``None``: no bound.

    Returns:
        A :class:`Simulation`. Requests that arrive together keep their input order.

    Raises:
        ConfigError: bad shapes or values.
    """
    arr, tok, pre = _request_arrays(arrivals_s, tokens, prefill_s)
    tps = _positive("decode_tps", decode_tps)
    w, k_max = _servers(workers), _servers(slots)
    if routing not in ROUTINGS:
        raise ConfigError(f"routing {routing!r} is not known — choose from {', '.join(ROUTINGS)}")
    cap = math.inf if max_in_flight is None else _servers(max_in_flight)
    accept_max = math.inf if max_ongoing is None else _servers(max_ongoing)
    S = speedup_fn(speedup)
    step_of = [0.0] + [k / (tps * checked_speedup(S, k)) for k in range(1, k_max + 1)]
    run = _EventRun(tok, pre, w, k_max, step_of, routing=routing, cap=cap,
                    accept_max=accept_max, rng=np.random.default_rng(seed))
    run.run(arr)
    return Simulation(arr.copy(), run.start, run.first, run.finish, run.server)


def _request_arrays(arrivals_s: Sequence[float] | np.ndarray,
                    tokens: Sequence[int] | np.ndarray | int,
                    prefill_s: Sequence[float] | np.ndarray | float,
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`simulate`'s requests as arrays of shape ``(n,)``: arrivals, output tokens
    (int64) and prefill times, checked (ConfigError)."""
    arr = np.asarray(arrivals_s, dtype=float)
    n = int(arr.shape[0]) if arr.ndim == 1 else -1
    if n < 0:
        raise ConfigError("arrivals must be a one-dimensional list of model seconds")
    tok = np.broadcast_to(np.asarray(tokens), (n,)).astype(np.int64)
    pre = np.broadcast_to(np.asarray(prefill_s, dtype=float), (n,))
    if n and (not np.all(np.isfinite(arr)) or np.any(tok < 1) or np.any(pre < 0)
              or not np.all(np.isfinite(pre))):
        raise ConfigError("every request needs a finite arrival, ≥ 1 output token and a "
                          "prefill time ≥ 0")
    return arr, tok, pre


class _EventRun:
    """One :func:`simulate` run, event by event.

    Per server ``s``: ``free[s]`` slots, ``outstanding[s]`` requests (in progress + waiting in
    its own queue ``local[s]``), ``pending[s]`` the prompts being processed (a heap of (ready
    time, i)), ``batch[s]`` the decode batch (a heap of (finish step, i)), and its step clock:
    ``t0[s]`` the latest step boundary processed, ``idx[s]`` its step index, ``d[s]`` the
    current step's length. ``shared`` is fifo's one queue (and power_of_two's router queue
    under ``max_ongoing``); ``held`` the requests over ``max_in_flight``, at the client.
    """

    def __init__(self, tok: np.ndarray, pre: np.ndarray, workers: int, slots: int,
                 step_of: list[float], *, routing: str, cap: float, accept_max: float,
                 rng: np.random.Generator) -> None:
        n = int(tok.shape[0])
        self.tok, self.pre, self.step_of = tok, pre, step_of
        self.routing, self.cap, self.accept_max, self.rng = routing, cap, accept_max, rng
        self.w = workers
        self.start = np.full(n, math.nan)
        self.first = np.full(n, math.nan)
        self.finish = np.full(n, math.nan)
        self.server = np.full(n, -1, dtype=np.int64)
        self.free = [slots] * workers
        self.outstanding = [0] * workers
        self.local: list[deque[int]] = [deque() for _ in range(workers)]
        self.shared: deque[int] = deque()
        self.held: deque[int] = deque()
        self.pending: list[list[tuple[float, int]]] = [[] for _ in range(workers)]
        self.batch: list[list[tuple[int, int]]] = [[] for _ in range(workers)]
        self.t0 = [0.0] * workers
        self.idx = [0] * workers
        self.d = [0.0] * workers
        self.in_flight = 0
        self.rr = 0

    def run(self, arr: np.ndarray) -> None:
        """Process arrivals and server events in time order until every request finished."""
        n, w = int(arr.shape[0]), self.w
        order = np.argsort(arr, kind="stable")
        next_event, servers = self.next_event, range(w)
        ai = 0
        done = 0
        while done < n:
            best_t, best_s, best_m = math.inf, -1, 0
            for s in servers:
                t, m = next_event(s)
                if t < best_t:
                    best_t, best_s, best_m = t, s, m
            if ai < n and arr[order[ai]] <= best_t:
                i = int(order[ai])
                ai += 1
                self.arrive(i, float(arr[i]))
                # A request granted a slot with no prompt to process joins at once.
                continue
            if best_s < 0:
                raise RuntimeError("simulation stalled: requests left but no event")  # a bug
            done += self.server_event(best_s, best_t, best_m)

    def arrive(self, i: int, now: float) -> None:
        """Request ``i`` arrives: routed, or held at the client over ``max_in_flight``."""
        if self.in_flight < self.cap:
            self.route(i, now)
        else:
            self.held.append(i)

    def grant(self, i: int, s: int, now: float) -> None:
        """Request ``i`` takes a slot of server ``s`` and starts its prompt."""
        self.free[s] -= 1
        self.start[i] = now
        self.server[i] = s
        heapq.heappush(self.pending[s], (now + float(self.pre[i]), i))

    def least_busy_free(self) -> int:
        """The server with a free slot and the fewest requests (lowest index on ties); -1:
        none is free."""
        best = -1
        for s in range(self.w):
            if self.free[s] > 0 and (best < 0 or self.outstanding[s] < self.outstanding[best]):
                best = s
        return best

    def accepting(self) -> list[int]:
        """The servers that hold fewer than ``max_ongoing`` requests."""
        return [x for x in range(self.w) if self.outstanding[x] < self.accept_max]

    def route(self, i: int, now: float) -> None:
        """Send request ``i`` on by the routing policy (module doc)."""
        self.in_flight += 1
        if self.routing == "fifo":
            best = -1 if self.shared else self.least_busy_free()
            if best >= 0:
                self.outstanding[best] += 1
                self.grant(i, best, now)
            else:
                self.shared.append(i)
            return
        if self.routing == "round_robin":
            s = self.rr % self.w
            self.rr += 1
        elif self.accept_max == math.inf:
            s = self.two_choices(list(range(self.w)))
        else:  # Serve's router: FIFO at the router while no server accepts
            accepting = [] if self.shared else self.accepting()
            if not accepting:
                self.shared.append(i)
                return
            s = self.two_choices(accepting)
        self.place(i, s, now)

    def two_choices(self, candidates: list[int]) -> int:
        """Power of two choices: of two random candidates, the one with fewer requests."""
        if len(candidates) == 1:
            return candidates[0]
        a, b = self.rng.choice(candidates, size=2, replace=False)
        return int(a) if self.outstanding[a] <= self.outstanding[b] else int(b)

    def place(self, i: int, s: int, now: float) -> None:
        """Request ``i`` joins server ``s``: a slot now, else its own queue."""
        self.outstanding[s] += 1
        if self.free[s] > 0 and not self.local[s]:
            self.grant(i, s, now)
        else:
            self.local[s].append(i)

    def refill(self, now: float) -> None:
        """Hand freed slots to waiting requests: the client's held ones are routed first,
        then the queues give their heads to free slots."""
        while self.held and self.in_flight < self.cap:
            self.route(self.held.popleft(), now)
        if self.routing == "fifo":
            while self.shared:
                best = self.least_busy_free()
                if best < 0:
                    break
                self.outstanding[best] += 1
                self.grant(self.shared.popleft(), best, now)
            return
        for s in range(self.w):
            while self.local[s] and self.free[s] > 0:
                self.grant(self.local[s].popleft(), s, now)
        if self.routing == "power_of_two":  # the router's queue, head first, to servers
            while self.shared:  # that accept again (their slots were just refilled above)
                accepting = self.accepting()
                if not accepting:
                    break
                self.place(self.shared.popleft(), self.two_choices(accepting), now)

    def next_event(self, s: int) -> tuple[float, int]:
        """Server ``s``'s next event: (time, steps to it); steps -1: an idle server's next
        prompt ready; (inf, 0): none."""
        batch, pending = self.batch[s], self.pending[s]
        if batch:
            m = batch[0][0] - self.idx[s]
            if pending:
                r = pending[0][0]
                m = min(m, max(1, math.ceil((r - self.t0[s]) / self.d[s] - 1e-9)))
            return self.t0[s] + m * self.d[s], m
        if pending:
            return pending[0][0], -1
        return math.inf, 0

    def server_event(self, s: int, now: float, m: int) -> int:
        """Run server ``s`` to ``now`` (``m`` steps on; -1: it was idle): finish the requests
        whose last step it is, let the prompts ready join the batch. Returns those finished."""
        done = self.finish_steps(s, now, m) if m >= 0 else 0
        if m < 0:  # idle: a new run of steps starts at this request's ready time
            self.t0[s], self.idx[s] = now, 0
        joined = []
        pending, batch = self.pending[s], self.batch[s]
        while pending and pending[0][0] <= now + 1e-12:
            _, i = heapq.heappop(pending)
            heapq.heappush(batch, (self.idx[s] + int(self.tok[i]), i))
            joined.append(i)
        self.d[s] = self.step_of[len(batch)]
        for i in joined:
            self.first[i] = now + self.d[s]
        if m >= 0:
            # Slots freed at this boundary go to waiters only now: the next step is already
            # planned without them, so even one with no prompt joins at the step after (the
            # engine's step loop plans its next step before the finished request lets go).
            self.refill(now)
        return done

    def finish_steps(self, s: int, now: float, m: int) -> int:
        """Advance server ``s`` by ``m`` steps to ``now``; the requests whose last token that
        gives finish and free their slots. Returns how many."""
        self.idx[s] += m
        self.t0[s] = now
        batch = self.batch[s]
        done = 0
        while batch and batch[0][0] <= self.idx[s]:
            _, i = heapq.heappop(batch)
            self.finish[i] = now
            self.free[s] += 1
            self.outstanding[s] -= 1
            self.in_flight -= 1
            done += 1
        return done


def speedup_fn(speedup: SpeedupFn | Any | None) -> SpeedupFn:
    """A callable S(k) from a callable, an object with ``.S(k)`` (a sim Profile), or None (S=1).

    ``None`` means the server gains nothing from decoding several at once: S(k) = 1. Both
    :mod:`parallel_kit.theory` and this module read a speed-up through it.
    """
    if speedup is None:
        return lambda k: 1.0
    if callable(speedup):
        return speedup  # type: ignore[no-any-return]
    method = getattr(speedup, "S", None)
    if callable(method):
        return method  # type: ignore[no-any-return]
    raise ConfigError(
        f"speedup must be a function S(k) or a profile with .S(k), got {type(speedup).__name__}"
    )


def checked_speedup(S: SpeedupFn, k: int) -> float:
    """S(k), refused unless a finite number above 0."""
    value = float(S(k))
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"S({k}) = {value!r} — a speed-up must be a finite number above 0")
    return value
