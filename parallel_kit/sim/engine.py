"""The engine behind the simulated Ollama: slots, queue, loading and the latency model.

The HTTP app (``app.py``) talks to any object with the :class:`Engine` protocol, so that a real
engine (llama.cpp) can later stand behind the same routes. The protocol, in full:

``models() -> list[ModelInfo]``
    Models the server has (``/api/tags``, ``/v1/models``).
``running() -> list[RunningModel]``
    Models loaded now (``/api/ps``).
``resolve(name) -> str``
    The served name for a requested one (``llama3.2`` → ``llama3.2:latest``); raises
    :class:`ModelNotFoundError` (404) if the server does not have it.
``async load(model, keep_alive_s=None)`` / ``async unload(model)``
    Load a model and keep it for ``keep_alive_s`` (the empty-prompt request), or unload it
    (empty prompt with ``keep_alive: 0``).
``generate(request) -> AsyncIterator[str | Done]``
    An async generator: the answer's pieces (one per token) as they are produced, then one
    :class:`Done` with the final numbers. It raises :class:`EngineError` subclasses before
    the first piece for 404/503/500. Closing the generator early (client gone) cancels the
    request and frees its slot; the app closes it with ``aclose()`` (an ``async def``
    generator has one).
``stats() -> dict``
    Counters for ``/sim/stats``: requests, completed, failed, cancelled, busy, active,
    max_active, loads, unloads.
``async aclose()``
    Stop background work (loading timers).

:class:`SimEngine` is the simulated one. Per model it has K slots; requests beyond them wait
first come, first served, without a limit once the model is loaded; while the model loads, at
most ``max_queue`` wait and the next gets 503 busy (Ollama's ``OLLAMA_MAX_QUEUE``). A request
with a slot processes its prompt (``prompt_tokens / prefill_tps``), then decodes in the model's
batch: with k requests decoding at once each step takes ``k / (decode_tps × S(k))`` model
seconds and gives every one of them a token, as llama.cpp's continuous batching does. A request
that finishes its prompt while a step runs joins at the next step. All deadlines are absolute
(``loop.time()``), so late wake-ups never add up, and the durations reported are the model's
own (model seconds → nanoseconds), not measured ones. ``time_scale`` F multiplies every wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import heapq
import itertools
import math
import re
import threading
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

from ..config import check_time_scale
from ..errors import ConfigError
from .faults import Faults
from .profiles import ModelSpeed, Profile, stable_hash

__all__ = [
    "BusyError",
    "Done",
    "Engine",
    "EngineError",
    "GenerateRequest",
    "ModelInfo",
    "ModelNotFoundError",
    "RunningModel",
    "SimEngine",
    "canonical_name",
    "parse_keep_alive",
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
    """

    model: str
    prompt: str
    num_predict: int | None = None
    seed: int | None = None
    keep_alive_s: float | None = None
    messages: list[dict[str, Any]] | None = None
    options: dict[str, Any] = field(default_factory=dict)


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
    """What ``/api/ps`` says about a loaded model; ``expires_at`` ``None`` = never."""

    info: ModelInfo
    expires_at: datetime | None
    size_vram: int


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

    def models(self) -> list[ModelInfo]: ...
    def running(self) -> list[RunningModel]: ...
    def resolve(self, name: str) -> str: ...
    async def load(self, model: str, keep_alive_s: float | None = None) -> None: ...
    async def unload(self, model: str) -> None: ...
    def generate(self, request: GenerateRequest) -> AsyncIterator[str | Done]: ...
    def stats(self) -> dict[str, Any]: ...
    async def aclose(self) -> None: ...


# -- helpers -------------------------------------------------------------------------------
def canonical_name(name: str) -> str:
    """Ollama's name rule: a name without a tag means ``:latest``."""
    name = name.strip()
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last else f"{name}:latest"


_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
          "h": 3600.0}
_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_keep_alive(value: Any) -> float:
    """Ollama's ``keep_alive``: seconds (number), a Go duration (``"5m"``, ``"1h30m"``), a
    negative value (forever → ``math.inf``) or 0 (unload now). Returns model seconds.

    Raises:
        ConfigError: anything else (the message shows the accepted forms).
    """
    if isinstance(value, bool):
        raise ConfigError(f"keep_alive {value!r} is not a duration — use e.g. \"5m\", 300, -1 or 0")
    if isinstance(value, (int, float)):
        if math.isnan(value):
            raise ConfigError("keep_alive NaN is not a duration")
        # api.Duration: a number is whole seconds; negative means forever.
        return math.inf if value < 0 else float(int(value))
    if isinstance(value, str):
        text = value.strip()
        sign = -1.0 if text.startswith("-") else 1.0
        body = text.lstrip("+-")
        if body == "0":
            return 0.0
        pos, total = 0, 0.0
        while pos < len(body):
            m = _DURATION_PART.match(body, pos)
            if not m:
                break
            total += float(m.group(1)) * _UNITS[m.group(2)]
            pos = m.end()
        if body and pos == len(body):
            return math.inf if sign < 0 else total
        raise ConfigError(f'time: invalid duration "{value}" — use e.g. "5m", "30s", "1h", '
                          f"a number of seconds, -1 (forever) or 0 (unload)")
    raise ConfigError(f"keep_alive {value!r} is not a duration — use e.g. \"5m\", 300, -1 or 0")


_WORDS = ("the", "model", "runs", "tokens", "in", "parallel", "and", "each", "request", "waits",
          "for", "a", "slot", "while", "batches", "share", "one", "GPU", "so", "throughput",
          "rises", "but", "latency", "grows", "with", "more", "streams", "of", "text", "we",
          "measure", "time", "queue", "server", "answer", "simple", "Python", "data", "fast",
          "work", "load", "memory", "cache", "context", "prompt", "output", "clear", "idea")


def _piece(base: int, i: int) -> str:
    """Token ``i`` of a deterministic pseudo-text (words with an occasional full stop)."""
    word = _WORDS[(base + i * 40503 + (i * i) % 11) % len(_WORDS)]
    if i == 0:
        return word.capitalize()
    return (". " + word.capitalize()) if (base + i) % 13 == 0 else " " + word


# -- the simulated engine ------------------------------------------------------------------
class _Seq:
    """One request in a model's decode batch."""

    __slots__ = ("cancelled", "finished", "gain", "produced", "progress", "t_last", "total",
                 "waiter")

    def __init__(self, total: int, gain: float, t_start: float) -> None:
        self.total = total
        self.gain = gain  # tokens per step: 1 / the request's duration factor (jitter)
        self.progress = 0.0
        self.produced = 0
        self.finished = False
        self.cancelled = False
        self.t_last = t_start  # planned time of the latest token (loop clock)
        self.waiter: asyncio.Future[None] | None = None

    def wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)


class _Instance:
    """One served model: its load state, slots, FIFO queue and decode batch."""

    def __init__(self, engine: SimEngine, name: str, speed: ModelSpeed) -> None:
        self.engine = engine
        self.name = name
        self.speed = speed
        self.info = ModelInfo(
            name=name, size=speed.size,
            digest=hashlib.sha256(name.encode()).hexdigest(), family=speed.family,
            parameter_size=speed.parameter_size, quantization_level=speed.quantization_level,
            context_length=speed.context_length)
        self.loaded = False
        self.loading: asyncio.Future[float] | None = None  # result: planned end (loop clock)
        self.load_task: asyncio.Task[None] | None = None
        self.load_waiters = 0
        self.expires_at = math.inf  # loop clock
        self.refs = 0  # requests between load and done
        self.keep_alive_s: float | None = None  # the latest request's wish
        self.free = engine.num_parallel
        self.queue: deque[asyncio.Future[float]] = deque()
        self.batch: list[_Seq] = []
        self.joining: list[_Seq] = []
        self.stepper: asyncio.Task[None] | None = None

    # loading -----------------------------------------------------------------------------
    def expire_if_due(self, now: float) -> None:
        if self.loaded and self.refs == 0 and now >= self.expires_at:
            self.loaded = False
            self.engine._count("unloads")

    async def ensure_loaded(self, loop: asyncio.AbstractEventLoop, now: float) -> float:
        """Wait until the model is loaded; returns the planned time it was (loop clock);
        ``now`` (the request's arrival) when it already is."""
        self.expire_if_due(now)
        if self.loaded:
            return now
        if self.loading is None:
            load_clock = self.speed.load_s * self.engine.time_scale
            self.engine._count("loads")
            if load_clock <= 0:
                self.loaded, self.expires_at = True, math.inf
                return now
            self.loading = loop.create_future()
            self.load_task = loop.create_task(self._load(now + load_clock))
        if self.load_waiters >= self.engine.max_queue:
            raise BusyError()
        self.load_waiters += 1
        try:
            return await asyncio.shield(self.loading)
        finally:
            self.load_waiters -= 1

    async def _load(self, until: float) -> None:
        await _sleep_until(until)
        self.loaded, self.expires_at = True, math.inf
        assert self.loading is not None
        self.loading.set_result(until)
        self.loading = self.load_task = None

    def after_use(self, now: float) -> None:
        """A request let go of the model: start its keep-alive clock once nobody uses it."""
        self.refs -= 1
        if self.refs > 0:
            return
        keep = self.keep_alive_s if self.keep_alive_s is not None else self.engine.keep_alive_s
        if keep <= 0:
            self.loaded = False
            self.engine._count("unloads")
        else:
            self.expires_at = now + keep * self.engine.time_scale

    # slots -------------------------------------------------------------------------------
    async def acquire(self, loop: asyncio.AbstractEventLoop, now: float) -> float:
        """Wait for a slot, first come first served; returns the planned start (loop clock):
        ``now`` if one is free, else the moment the previous holder's work was planned to end."""
        if self.free > 0 and not self.queue:
            self.free -= 1
            return now
        fut: asyncio.Future[float] = loop.create_future()
        self.queue.append(fut)
        try:
            # Never before this request arrived (the holder may have finished on paper
            # before then and let go of the slot only now).
            return max(await fut, now)
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release(loop.time())  # it was handed a slot just as it was cancelled
            raise

    def release(self, planned: float) -> None:
        """Give the slot to the next waiter, who starts at the ``planned`` free time."""
        while self.queue:
            fut = self.queue.popleft()
            if not fut.done():
                fut.set_result(planned)
                return
        self.free += 1

    # decoding ----------------------------------------------------------------------------
    def join(self, seq: _Seq, t_start: float) -> None:
        if self.stepper is None:
            self.batch.append(seq)
            self.stepper = asyncio.get_running_loop().create_task(self._step_loop(t_start))
        else:
            self.joining.append(seq)

    def leave(self, seq: _Seq) -> None:
        seq.cancelled = True
        if seq in self.batch:
            self.batch.remove(seq)
        if seq in self.joining:
            self.joining.remove(seq)

    def _gives_first_or_last_token(self) -> bool:
        """Whether the next step starts or ends a request in the batch (what a client sees:
        its first token, its last); the steps in between may wake a little late."""
        for seq in self.batch:
            after = seq.progress + seq.gain + 1e-9
            if after >= 1.0 and (seq.produced == 0 or seq.produced + int(after) >= seq.total):
                return True
        return False

    async def _step_loop(self, t: float) -> None:
        """Run decode steps until the batch is empty; ``t`` is the planned step boundary."""
        profile, scale = self.engine.profile, self.engine.time_scale
        decode_tps = self.speed.decode_tps
        try:
            while True:
                if self.joining:
                    for seq in self.joining:
                        # A request ready after this boundary (the loop woke late) starts
                        # the next step when it is ready, not in the past.
                        t = max(t, seq.t_last)
                    self.batch.extend(self.joining)
                    self.joining.clear()
                if not self.batch:
                    return
                k = len(self.batch)
                self.engine._note_decoding(k)
                t += scale * k / (decode_tps * profile.S(k))
                await _sleep_until(t, precise=self._gives_first_or_last_token())
                for seq in self.batch:
                    seq.progress += seq.gain
                    # 1e-9: a gain of exactly 1 must give exactly one token per step.
                    while seq.progress >= 1.0 - 1e-9 and seq.produced < seq.total:
                        seq.progress -= 1.0
                        seq.produced += 1
                        seq.t_last = t
                    if seq.produced >= seq.total:
                        seq.finished = True
                    seq.wake()
                self.batch = [s for s in self.batch if not s.finished and not s.cancelled]
        finally:
            self.stepper = None


async def _sleep_until(deadline: float, *, precise: bool = False) -> None:
    """Sleep until ``deadline`` (loop clock, seconds).

    The event loop's own timers wake 0–1 ms late: epoll waits whole milliseconds, rounded up
    (``selectors.EpollSelector.select``: ``math.ceil(timeout * 1e3)``). Absolute deadlines keep
    that from adding up over a request's steps, but the step that gives a request its first or
    last token is what the client sees (TTFT, the end of the request — at time scale 0.02 one
    clock ms is 0.05 model s). ``precise`` wakes at the deadline instead, through
    :data:`_TIMER`, without spinning the CPU.
    """
    loop = asyncio.get_running_loop()
    delay = deadline - loop.time()
    if delay <= 0:
        return
    if precise:
        await _TIMER.wait_until(loop, deadline)
    else:
        await asyncio.sleep(delay)


class _PreciseTimer:
    """Wakes asyncio futures at a deadline with sub-millisecond accuracy.

    One daemon thread sleeps on a condition variable until the earliest deadline
    (``threading.Condition.wait`` sleeps with microsecond resolution on ``time.monotonic``,
    the loop's clock) and hands the wake-up to the loop with ``call_soon_threadsafe``, whose
    self-pipe write ends the loop's epoll wait at once (~0.05–0.1 ms here). Shared by every
    engine in the process; started on first use.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._cv = threading.Condition()
        self._count = itertools.count()
        self._thread: threading.Thread | None = None

    def wait_until(self, loop: asyncio.AbstractEventLoop, deadline: float) -> asyncio.Future[None]:
        """A future that is done at ``deadline`` (``loop.time()`` seconds)."""
        fut: asyncio.Future[None] = loop.create_future()
        with self._cv:
            heapq.heappush(self._heap, (deadline, next(self._count), loop, fut))
            self._start()
            self._cv.notify()
        return fut

    def start(self) -> None:
        """Start the thread now (engines do, so that no request pays for it)."""
        with self._cv:
            self._start()

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="sim-precise-timer",
                                            daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._heap:
                    self._cv.wait()
                deadline = self._heap[0][0]
                left = deadline - time.monotonic()
                if left > 0:
                    self._cv.wait(left)
                    continue  # woken early (a new, earlier deadline) or on time: look again
                _, _, loop, fut = heapq.heappop(self._heap)
            # A loop that is gone (closed) has nobody waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_wake, fut)


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():  # cancelled meanwhile (the request went away)
        fut.set_result(None)


_TIMER = _PreciseTimer()


class SimEngine:
    """The simulated engine (see the module docstring).

    Args:
        profile: speeds and S(k).
        num_parallel: slots per model (default: ``profile.num_parallel``).
        max_queue: requests that may wait for a loading model before 503.
        time_scale: clock seconds per model second.
        models: names served (default: the profile's models and aliases).
        keep_alive_s: default keep-alive in model seconds (``math.inf`` = forever).
        faults: fail_fraction and jitter are applied here (stop_after by the server).
    """

    def __init__(self, profile: Profile, *, num_parallel: int | None = None,
                 max_queue: int = 512, time_scale: float = 1.0,
                 models: Sequence[str] | None = None, keep_alive_s: float = 300.0,
                 faults: Faults | None = None) -> None:
        if num_parallel is None:
            num_parallel = profile.num_parallel
        if isinstance(num_parallel, bool) or not isinstance(num_parallel, int) or num_parallel < 1:
            raise ConfigError(f"num_parallel {num_parallel!r} must be a whole number ≥ 1 "
                              f"(Ollama's OLLAMA_NUM_PARALLEL)")
        if isinstance(max_queue, bool) or not isinstance(max_queue, int) or max_queue < 0:
            raise ConfigError(f"max_queue {max_queue!r} must be a whole number ≥ 0 "
                              f"(Ollama's OLLAMA_MAX_QUEUE, default 512)")
        self.profile = profile
        self.num_parallel = num_parallel
        self.max_queue = max_queue
        self.time_scale = check_time_scale(float(time_scale))
        self.keep_alive_s = keep_alive_s
        self.faults = faults or Faults()
        names = [canonical_name(n) for n in (models or profile.model_names()) if n.strip()]
        if not names:
            raise ConfigError("the simulator needs at least one model name — e.g. llama3.2:3b")
        self._instances = {n: _Instance(self, n, profile.speed(n)) for n in dict.fromkeys(names)}
        self._counter = 0
        _TIMER.start()
        self._stats: dict[str, int] = dict.fromkeys(
            ("requests", "completed", "failed", "cancelled", "busy", "active", "max_active",
             "max_decoding", "loads", "unloads"), 0)

    # protocol ----------------------------------------------------------------------------
    def models(self) -> list[ModelInfo]:
        return [i.info for i in self._instances.values()]

    def running(self) -> list[RunningModel]:
        loop = asyncio.get_running_loop()
        now = loop.time()
        out = []
        for inst in self._instances.values():
            inst.expire_if_due(now)
            if not inst.loaded:
                continue
            expires: datetime | None = None
            # In use: the keep-alive clock has not started; show the default ahead.
            left = (self.keep_alive_s * self.time_scale if inst.refs > 0
                    else inst.expires_at - now)
            if not math.isinf(left):
                expires = datetime.now(timezone.utc) + timedelta(seconds=left / self.time_scale)
            out.append(RunningModel(inst.info, expires, inst.info.size))
        return out

    def resolve(self, name: str) -> str:
        canon = canonical_name(name)
        if canon not in self._instances:
            raise ModelNotFoundError(name)
        return canon

    async def load(self, model: str, keep_alive_s: float | None = None) -> None:
        inst = self._instances[self.resolve(model)]
        loop = asyncio.get_running_loop()
        try:
            await inst.ensure_loaded(loop, loop.time())
        except BusyError:
            self._stats["busy"] += 1
            raise
        inst.refs += 1
        inst.keep_alive_s = keep_alive_s
        inst.after_use(loop.time())

    async def unload(self, model: str) -> None:
        inst = self._instances[self.resolve(model)]
        inst.keep_alive_s = 0.0
        if inst.refs == 0 and inst.loaded:
            inst.loaded = False
            self._count("unloads")

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self._stats)
        out["waiting"] = sum(len([f for f in i.queue if not f.done()])
                             for i in self._instances.values())
        return out

    async def aclose(self) -> None:
        tasks = [t for i in self._instances.values() for t in (i.load_task, i.stepper) if t]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def generate(self, request: GenerateRequest) -> AsyncGenerator[str | Done, None]:
        loop = asyncio.get_running_loop()
        t_arrival = loop.time()
        index = self._counter
        self._counter += 1
        self._stats["requests"] += 1
        inst = self._instances.get(canonical_name(request.model))
        if inst is None:
            self._stats["failed"] += 1
            raise ModelNotFoundError(request.model)
        if self.faults.fails(index):
            self._stats["failed"] += 1
            raise EngineError(f"simulated failure of request #{index} "
                              f"(fail_fraction={self.faults.fail_fraction})", 500)
        try:
            t_loaded = await inst.ensure_loaded(loop, t_arrival)
        except BusyError:
            self._stats["busy"] += 1
            self._stats["failed"] += 1
            raise
        scale = self.time_scale
        factor = self.faults.duration_factor(index)
        profile = self.profile
        prompt_tokens = profile.prompt_tokens(request.prompt)
        total = profile.output_tokens(request.prompt, seed=request.seed,
                                      num_predict=request.num_predict, model=inst.name)
        base = stable_hash(request.prompt, request.seed)
        inst.refs += 1
        inst.keep_alive_s = request.keep_alive_s
        holding = finished = False
        seq: _Seq | None = None
        try:
            t_slot = await inst.acquire(loop, t_loaded)
            holding = True
            self._active(+1)
            t_prefilled = t_slot + profile.prefill_s(prompt_tokens, inst.name) * factor * scale
            await _sleep_until(t_prefilled)
            seq = _Seq(total, 1.0 / factor, t_prefilled)
            if total > 0:
                inst.join(seq, t_prefilled)
            sent = 0
            while True:
                while sent < seq.produced:
                    yield _piece(base, sent)
                    sent += 1
                if sent >= seq.total:
                    break
                seq.waiter = loop.create_future()
                await seq.waiter
                seq.waiter = None
            # The model is done: free the slot at its planned end before the caller writes
            # the last line, so the next request starts on the model's schedule.
            t_done = seq.t_last
            holding = False
            self._active(-1)
            inst.release(t_done)
            finished = True
            inst.after_use(t_done)
            self._stats["completed"] += 1
            ns = 1e9 / scale
            reason = "length" if request.num_predict is not None and request.num_predict >= 0 \
                else "stop"
            yield Done(
                done_reason=reason,
                total_duration=round((t_done - t_arrival) * ns),
                load_duration=round(max(0.0, t_loaded - t_arrival) * ns),
                prompt_eval_count=prompt_tokens,
                prompt_eval_duration=round((t_prefilled - t_slot) * ns),
                eval_count=total,
                eval_duration=round((t_done - t_prefilled) * ns),
            )
        finally:
            if not finished:
                self._stats["cancelled"] += 1
                if seq is not None:
                    inst.leave(seq)
                if holding:
                    self._active(-1)
                    inst.release(loop.time())
                inst.after_use(loop.time())

    # counters ----------------------------------------------------------------------------
    def _count(self, key: str) -> None:
        self._stats[key] += 1

    def _active(self, delta: int) -> None:
        s = self._stats
        s["active"] += delta
        s["max_active"] = max(s["max_active"], s["active"])

    def _note_decoding(self, k: int) -> None:
        self._stats["max_decoding"] = max(self._stats["max_decoding"], k)
