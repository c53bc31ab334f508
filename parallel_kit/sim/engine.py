"""The simulated engine behind the simulated Ollama: scheduler, slots, queue and latency model.

:class:`SimEngine` has the :class:`~.protocol.Engine` protocol (see ``protocol.py``).

**Scheduler** (Ollama's ``server/sched.go``,
https://github.com/ollama/ollama/blob/main/server/sched.go). Requests that need a model loaded
(or reloaded) are handled one at a time, first come first served. A model is loaded with the
context its request asks for (``options.num_ctx``, else the server's default) and
``num_parallel`` slots; its memory is the weights (``size``) plus the KV cache,
``kv_bytes_per_token × num_ctx × slots`` (context is allocated per slot). When the GPU memory of
the profile (``gpu_memory × gpus``) cannot hold it beside the models already loaded, or
``max_loaded_models`` are loaded already, a loaded model is evicted the way
``findRunnerToUnload`` picks one: shortest keep-alive first, then by name, an idle one (no
requests) before a busy one — whose requests are waited for — and the new model pays its load
time. If the model alone does not fit with all its slots, fewer slots are used (down to one;
a model that does not fit even so is loaded anyway, as Ollama offloads layers to the CPU — the
slower speed of that is not modelled). A loaded model whose request asks for another
``num_ctx`` is reloaded once its requests have finished (``needsReload``). While models load,
at most ``max_queue`` requests wait in the scheduler; the next gets 503 busy
(``OLLAMA_MAX_QUEUE``).

**Latency model.** Per model it has K slots; requests beyond them wait first come, first
served, without a limit once the model is loaded. A request with a slot processes its prompt —
cut to ``num_ctx`` tokens, as Ollama's runner truncates it — in ``prompt_tokens /
prefill_tps``, then decodes in the model's batch: with k requests decoding at once each step
takes ``k / (decode_tps × S(k))`` model seconds and gives every one of them a token, as
llama.cpp's continuous batching does. A request that finishes its prompt while a step runs joins
at the next step. With a profile's ``prefill_in_batch`` (profiles measured on llama-server) the
prompt is processed inside that same batch instead, as llama-server's ``update_slots`` builds
one batch of every decoding slot's next token plus prompt tokens up to ``n_batch``
(:data:`N_BATCH`): a step then takes its decode time plus the prompt tokens' prefill time, a
prompt waits for the step under way, and the requests decoding wait for the prompt. All
deadlines are absolute (``loop.time()``), so late wake-ups never add up,
and the durations reported are the model's own (model seconds → nanoseconds), not measured
ones. ``time_scale`` F multiplies every wait.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections import deque
from collections.abc import AsyncGenerator, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from ..config import check_time_scale, duration_from_body
from ..errors import ConfigError
from . import protocol
from .faults import Faults
from .formats import json_answer, json_pieces
from .profiles import ModelSpeed, Profile, stable_hash
from .prompt_cache import (
    DEFAULT_CACHE_RAM_MIB,
    DEFAULT_KV_BYTES_PER_TOKEN,
    SLOT_PROMPT_SIMILARITY,
    HostCache,
    Slot,
    choose_slot,
    common_prefix_tokens,
    unsalted,
)
from .protocol import *  # noqa: F403 -- re-exported: callers import the protocol's values here
from .timer import TIMER, sleep_until

__all__ = [
    *protocol.__all__,
    "NO_PREFIX_REUSE_FAMILIES",
    "SINGLE_SLOT_FAMILIES",
    "SimEngine",
    "default_num_ctx",
    "parse_keep_alive",
    "single_slot_reason",
]

#: llama-server's default logical batch, ``-b`` / ``n_batch`` (``common/common.h``): the most
#: prompt tokens one batch takes; a longer prompt continues in the next steps.
N_BATCH = 2048

# Kept for callers of the earlier module layout.
_sleep_until = sleep_until

#: Ollama's default context by GPU memory (``server/routes.go`` ``Serve``: ≥ 47 GiB → 262144,
#: ≥ 23 GiB → 32768, else 4096; ``OLLAMA_CONTEXT_LENGTH`` overrides it).
_GIB = 1 << 30


def default_num_ctx(gpu_memory: int | None, context_length: int = 0) -> int:
    """The context a model is loaded with when a request does not say: ``context_length``
    (``OLLAMA_CONTEXT_LENGTH``) when > 0, else Ollama's tier by total GPU memory in bytes
    (None = no GPU: 4096)."""
    if context_length > 0:
        return context_length
    total = gpu_memory or 0
    if total >= 47 * _GIB:
        return 262144
    if total >= 23 * _GIB:
        return 32768
    return 4096


#: Ollama's automatic context tiers, largest first (``server/routes.go``).
_CTX_TIERS = (262144, 32768, 4096)

#: Model families Ollama runs with one slot whatever ``OLLAMA_NUM_PARALLEL`` says
#: (``server/sched.go``; ollama/ollama#17556): hybrid/SSM and vision-cross-attention models.
SINGLE_SLOT_FAMILIES = frozenset({"mllama", "qwen3vl", "qwen3vlmoe", "qwen35", "qwen35moe",
                                  "qwen3next", "lfm2", "lfm2moe", "nemotron_h",
                                  "nemotron_h_moe"})


#: Sliding-window-attention families whose prompt llama-server re-processes whole on every
#: request: their SWA cache holds only the window, and a slot's state cannot be rolled back to
#: a common prefix ("forcing full prompt re-processing due to lack of cache data"; llama.cpp
#: PR #13194, #13833). Measured on the kit's llama-server with Gemma 3 270M: a second prompt
#: sharing 300 of its 310 tokens is prefilled whole (``benchmarks/sim_vs_engine.py``).
NO_PREFIX_REUSE_FAMILIES = frozenset({"gemma2", "gemma3", "gemma3n", "gpt-oss", "gptoss",
                                      "cohere2"})


def single_slot_reason(family: str, capabilities: Sequence[str] = ()) -> str | None:
    """Why Ollama forces one slot for a model (None: it does not): an embedding model, or a
    family of :data:`SINGLE_SLOT_FAMILIES`."""
    if "embedding" in capabilities and "completion" not in capabilities:
        return "an embedding model"
    if family in SINGLE_SLOT_FAMILIES:
        return f"family {family} runs one sequence at a time"
    return None


def parse_keep_alive(value: Any) -> float:
    """Ollama's ``keep_alive`` in a request body (``api.Duration``): a number of seconds, a Go
    duration string (``"5m"``, ``"1h30m"``), negative = forever (``math.inf``), 0 = unload now.

    Raises:
        ConfigError: anything else, with Ollama's message (Go's ``time: …`` text).
    """
    try:
        return duration_from_body(value)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


# -- the simulated engine ------------------------------------------------------------------
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

    async def next_step(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wait for the batch's next step (woken by :meth:`wake`)."""
        self.waiter = loop.create_future()
        await self.waiter
        self.waiter = None


class _Prefill:
    """A prompt waiting for, or being processed in, the model's batch (``prefill_in_batch``)."""

    __slots__ = ("done", "factor", "left", "seq", "started")

    def __init__(self, tokens: int, factor: float, seq: _Seq,
                 done: asyncio.Future[float]) -> None:
        self.left = tokens
        self.started = False
        self.factor = factor  # the request's duration factor (jitter)
        self.seq = seq  # joins the decode batch when the prompt is done
        self.done = done  # result: the planned end of the step that finished the prompt


class _Answer:
    """What a request answers, settled before it takes a slot: its prompt tokens (cut to the
    context), its output tokens and its text (pseudo-words, or the pieces of a JSON value)."""

    __slots__ = ("base", "fixed", "prompt_tokens", "total")

    def __init__(self, prompt_tokens: int, total: int, base: int,
                 fixed: list[str] | None) -> None:
        self.prompt_tokens = prompt_tokens
        self.total = total
        self.base = base  # seed of the pseudo-text
        self.fixed = fixed  # structured output's pieces (None: free text)

    def piece(self, i: int) -> str:
        """Token ``i`` of the answer."""
        return _piece(self.base, i) if self.fixed is None else self.fixed[i]

    def done_reason(self, num_predict: int | None) -> str:
        """``"length"`` or ``"stop"``. Ollama's runner stops with "length" only at a positive
        num_predict; 0 or negative mean no limit (runner: ``NumPredict > 0 && numPredicted >=
        NumPredict``); a JSON value stops when complete."""
        if self.fixed is not None:
            return "length" if self.total < len(self.fixed) else "stop"
        return "length" if num_predict is not None and num_predict > 0 else "stop"


class _Flight:
    """A request on its way through a model: what the clean-up after a cancel needs."""

    __slots__ = ("finished", "holding", "inst", "key", "pieces", "seq", "slot")

    def __init__(self, inst: _Instance, key: bytes) -> None:
        self.inst = inst
        self.key = key  # the prompt's bytes (what its slot holds)
        self.slot: Slot | None = None
        self.seq: _Seq | None = None
        self.holding = False  # a slot is held
        self.finished = False
        self.pieces: list[str] = []  # the answer sent so far


class _Instance:
    """One served model: its load state, memory, slots, FIFO queue and decode batch."""

    def __init__(self, engine: SimEngine, name: str, speed: ModelSpeed) -> None:
        self.engine = engine
        self.name = name
        self.speed = speed
        self.info = protocol.ModelInfo(
            name=name, size=speed.size,
            digest=hashlib.sha256(name.encode()).hexdigest(), family=speed.family,
            parameter_size=speed.parameter_size, quantization_level=speed.quantization_level,
            context_length=speed.context_length)
        self.loaded = False
        self.loading: asyncio.Future[float] | None = None  # result: planned end (loop clock)
        self.load_task: asyncio.Task[None] | None = None
        self.num_ctx = 0  # the context it is (being) loaded with
        self.asked_ctx = 0  # the context its requests asked for (more, after a step-down)
        self.slots = engine.num_parallel  # slots it is (being) loaded with
        self.expires_at = math.inf  # loop clock
        self.refs = 0  # requests between scheduling and done
        self.idle = asyncio.Event()
        self.idle.set()
        self.keep_alive_s: float | None = None  # the latest request's wish
        self.free = 0
        self.slot_list: list[Slot] = []  # llama-server's slots: what each one's KV cache holds
        self.uses = 0  # slot-use counter (llama-server's t_last_used)
        self.queue: deque[asyncio.Future[tuple[float, Slot]]] = deque()
        self.batch: list[_Seq] = []
        self.joining: list[_Seq] = []
        self.prompts: list[_Prefill] = []  # prompts the batch processes (prefill_in_batch)
        self.stepper: asyncio.Task[None] | None = None

    # memory --------------------------------------------------------------------------------
    def memory(self, num_ctx: int, slots: int) -> int:
        """Bytes loaded: weights plus the KV cache of every slot."""
        return self.speed.size + self.speed.kv_bytes_per_token * num_ctx * slots

    @property
    def resident(self) -> bool:
        return self.loaded or self.loading is not None

    def session_s(self) -> float:
        keep = self.keep_alive_s if self.keep_alive_s is not None else self.engine.keep_alive_s
        return keep

    # loading -----------------------------------------------------------------------------
    def expire_if_due(self, now: float) -> None:
        if self.loaded and self.refs == 0 and now >= self.expires_at:
            self.unload()

    def unload(self) -> None:
        if self.loaded:
            self.loaded = False
            self.engine._count("unloads")

    def start_load(self, loop: asyncio.AbstractEventLoop, now: float, num_ctx: int,
                   slots: int) -> None:
        self.num_ctx, self.slots, self.free = num_ctx, slots, slots
        # A fresh llama-server: empty slots (the host cache went with the old process too).
        self.slot_list = [Slot(i) for i in range(slots)]
        self.engine._new_host_cache(self)
        load_clock = self.speed.load_s * self.engine.time_scale
        self.engine._count("loads")
        if load_clock <= 0:
            self.loaded, self.expires_at = True, math.inf
            return
        self.loading = loop.create_future()
        self.load_task = loop.create_task(self._load(now + load_clock))

    async def _load(self, until: float) -> None:
        await sleep_until(until)
        self.loaded, self.expires_at = True, math.inf
        assert self.loading is not None
        self.loading.set_result(until)
        self.loading = self.load_task = None

    def use(self) -> None:
        self.refs += 1
        self.idle.clear()

    def after_use(self, now: float) -> None:
        """A request let go of the model: start its keep-alive clock once nobody uses it."""
        self.refs -= 1
        if self.refs > 0:
            return
        self.idle.set()
        keep = self.session_s()
        if keep <= 0:
            self.unload()
        else:
            self.expires_at = now + keep * self.engine.time_scale

    # slots -------------------------------------------------------------------------------
    async def acquire(self, loop: asyncio.AbstractEventLoop, now: float,
                      prompt: bytes) -> tuple[float, Slot, bool]:
        """Wait for a slot, first come first served; returns (the planned start on the loop
        clock: ``now`` if one is free, else the moment the previous holder's work was planned
        to end; the slot; whether the host cache is updated). A free slot is chosen as
        llama-server chooses (:func:`~.prompt_cache.choose_slot`)."""
        if self.free > 0 and not self.queue:
            idle = [s for s in self.slot_list if not s.busy]
            slot, update = choose_slot(idle, prompt, self.engine.slot_similarity)
            slot.busy = True
            self.free -= 1
            return now, slot, update
        fut: asyncio.Future[tuple[float, Slot]] = loop.create_future()
        self.queue.append(fut)
        try:
            # Never before this request arrived (the holder may have finished on paper
            # before then and let go of the slot only now).
            planned, slot = await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                # It was handed a slot just as it was cancelled.
                self.release(loop.time(), fut.result()[1])
            raise
        # A deferred task meets the one slot just freed: similarity on it, else LRU (update).
        _, update = choose_slot([slot], prompt, self.engine.slot_similarity)
        return max(planned, now), slot, update

    def release(self, planned: float, slot: Slot) -> None:
        """Give ``slot`` to the next waiter, who starts at the ``planned`` free time."""
        while self.queue:
            fut = self.queue.popleft()
            if not fut.done():
                fut.set_result((planned, slot))
                return
        slot.busy = False
        self.free += 1

    # decoding ----------------------------------------------------------------------------
    def join(self, seq: _Seq, t_start: float) -> None:
        if self.stepper is None:
            self.batch.append(seq)
            self.stepper = asyncio.get_running_loop().create_task(self._step_loop(t_start))
        else:
            self.joining.append(seq)

    def prefill_in_batch(self, job: _Prefill, t_start: float) -> None:
        """Hand a prompt to the batch (``prefill_in_batch``); ``job.done`` gets the planned
        end of the step that finishes it, and its request then decodes from the next step."""
        job.seq.t_last = t_start
        self.prompts.append(job)
        if self.stepper is None:
            self.stepper = asyncio.get_running_loop().create_task(self._step_loop(t_start))

    def leave(self, seq: _Seq) -> None:
        seq.cancelled = True
        if seq in self.batch:
            self.batch.remove(seq)
        if seq in self.joining:
            self.joining.remove(seq)
        self.prompts = [j for j in self.prompts if j.seq is not seq]

    def _gives_first_or_last_token(self) -> bool:
        """Whether the next step starts or ends a request in the batch (what a client sees:
        its first token, its last) or ends a prompt; the steps in between may wake a little
        late."""
        if self.prompts:
            return True
        for seq in self.batch:
            after = seq.progress + seq.gain + 1e-9
            if after >= 1.0 and (seq.produced == 0 or seq.produced + int(after) >= seq.total):
                return True
        return False

    def _take_prompts(self, t: float) -> tuple[float, float, list[_Prefill]]:
        """The prompt tokens this step processes, up to :data:`N_BATCH` in arrival order:
        (the step's start, its prefill time in clock seconds, the prompts it finishes). A
        prompt's ``prefill_overhead_s`` is paid once, in its first step."""
        budget, prefill, finished = N_BATCH, 0.0, []
        tps = self.speed.prefill_tps or math.inf
        for job in self.prompts:
            t = max(t, job.seq.t_last)  # handed over after this boundary: from then
            take = min(job.left, budget)
            first = self.speed.prefill_overhead_s if not job.started else 0.0
            job.started = True
            prefill += (first + take / tps) * job.factor * self.engine.time_scale
            job.left -= take
            budget -= take
            if job.left <= 0:
                finished.append(job)
            if budget <= 0:
                break
        return t, prefill, finished

    async def _step_loop(self, t: float) -> None:
        """Run steps until the batch is empty and no prompt waits; ``t`` is the planned step
        boundary."""
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
                if not self.batch and not self.prompts:
                    return
                k = len(self.batch)
                if self.prompts:
                    t, prefill, finished = self._take_prompts(t)
                else:
                    prefill, finished = 0.0, []
                if k:
                    self.engine._note_decoding(k)
                    t += scale * k / (decode_tps * profile.S(k))
                t += prefill
                await sleep_until(t, precise=self._gives_first_or_last_token())
                for job in finished:
                    self.prompts.remove(job)
                    job.seq.t_last = t
                    if job.seq.total > 0:
                        self.joining.append(job.seq)  # decodes from the next step
                    if not job.done.done():
                        job.done.set_result(t)
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



class SimEngine:
    """The simulated engine (see the module docstring).

    Args:
        profile: speeds, S(k) and the machine's GPU memory.
        num_parallel: slots per model (default: ``profile.num_parallel``).
        max_queue: requests that may wait in the scheduler (for a model to load or make room)
            before 503 busy (``OLLAMA_MAX_QUEUE``, default 512).
        time_scale: clock seconds per model second.
        models: names served (default: the profile's models and aliases).
        keep_alive_s: default keep-alive in model seconds (``math.inf`` = forever).
        faults: fail_fraction and jitter are applied here (stop_after by the server).
        max_loaded_models: models loaded at once (``OLLAMA_MAX_LOADED_MODELS``); 0 = Ollama's
            default, 3 per GPU of the profile (3 without one).
        context_length: the default ``num_ctx`` (``OLLAMA_CONTEXT_LENGTH``); 0 = Ollama's
            default by GPU memory (:func:`default_num_ctx`), at most the model's own context.

    Raises:
        ConfigError: a setting out of range, or no model names.
    """

    name = "sim"

    def __init__(self, profile: Profile, *, num_parallel: int | None = None,
                 max_queue: int = 512, time_scale: float = 1.0,
                 models: Sequence[str] | None = None, keep_alive_s: float = 300.0,
                 faults: Faults | None = None, max_loaded_models: int = 0,
                 context_length: int = 0, prompt_cache: bool = True,
                 cache_ram_mib: int = DEFAULT_CACHE_RAM_MIB,
                 slot_similarity: float = SLOT_PROMPT_SIMILARITY) -> None:
        if num_parallel is None:
            num_parallel = profile.num_parallel
        if isinstance(cache_ram_mib, bool) or not isinstance(cache_ram_mib, int) \
                or cache_ram_mib < 0:
            raise ConfigError(f"cache_ram_mib {cache_ram_mib!r} must be a whole number of MiB "
                              f"≥ 0 (llama-server's --cache-ram; 0 = no host-RAM cache)")
        if not isinstance(slot_similarity, (int, float)) or isinstance(slot_similarity, bool) \
                or not 0 <= slot_similarity <= 1:
            raise ConfigError(f"slot_similarity {slot_similarity!r} must be between 0 and 1 "
                              f"(llama-server's --slot-prompt-similarity, default 0.10)")
        if isinstance(num_parallel, bool) or not isinstance(num_parallel, int) or num_parallel < 1:
            raise ConfigError(f"num_parallel {num_parallel!r} must be a whole number ≥ 1 "
                              f"(Ollama's OLLAMA_NUM_PARALLEL)")
        for label, value in (("max_queue", max_queue), ("max_loaded_models", max_loaded_models),
                             ("context_length", context_length)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{label} {value!r} must be a whole number ≥ 0 "
                                  f"(Ollama's OLLAMA_{label.upper()})")
        self.profile = profile
        self.num_parallel = num_parallel
        self.max_queue = max_queue
        self.time_scale = check_time_scale(float(time_scale))
        self.keep_alive_s = keep_alive_s
        self.faults = faults or Faults()
        self.max_loaded_models = max_loaded_models or 3 * max(1, profile.gpus)
        self.gpu_memory = (profile.gpu_memory * max(1, profile.gpus)
                           if profile.gpu_memory else None)
        self.context_length = context_length
        self.prompt_cache = bool(prompt_cache)
        self.cache_ram_mib = cache_ram_mib
        self.slot_similarity = float(slot_similarity)
        self._host: dict[str, HostCache] = {}
        self._cache_counts: dict[str, int] = dict.fromkeys(
            ("prompt_tokens", "cached_tokens", "hits", "host_restores"), 0)
        names = [protocol.canonical_name(n) for n in (models or profile.model_names())
                 if n.strip()]
        if not names:
            raise ConfigError("the simulator needs at least one model name — e.g. llama3.2:3b")
        self._instances = {n: _Instance(self, n, profile.speed(n)) for n in dict.fromkeys(names)}
        self._counter = 0
        self._sched_lock = asyncio.Lock()
        self._scheduling = 0  # requests waiting in the scheduler (Ollama's pending queue)
        self._evicted_at = -math.inf  # loop clock of the latest eviction
        TIMER.start()
        self._stats: dict[str, int] = dict.fromkeys(
            ("requests", "completed", "failed", "cancelled", "busy", "active", "max_active",
             "max_decoding", "loads", "unloads", "evictions", "reloads", "truncated",
             "max_resident", "context_step_downs"), 0)
        #: models that got fewer slots than asked, and why (Ollama's forced single slot)
        self._forced: dict[str, str] = {}

    # protocol ----------------------------------------------------------------------------
    def models(self) -> list[protocol.ModelInfo]:
        return [i.info for i in self._instances.values()]

    def capabilities(self, name: str) -> list[str]:
        return list(self._instances[self.resolve(name)].speed.capabilities)

    def running(self) -> list[protocol.RunningModel]:
        loop = asyncio.get_running_loop()
        now = loop.time()
        out = []
        for inst in self._instances.values():
            inst.expire_if_due(now)
            if not inst.resident:
                continue
            expires: datetime | None = None
            # In use or loading: the keep-alive clock has not started; show it ahead.
            left = (inst.session_s() * self.time_scale if inst.refs > 0 or not inst.loaded
                    else inst.expires_at - now)
            if not math.isinf(left):
                expires = datetime.now(timezone.utc) + timedelta(seconds=left / self.time_scale)
            size = inst.memory(inst.num_ctx, inst.slots)
            vram = size if self.gpu_memory else 0
            out.append(protocol.RunningModel(inst.info, expires, vram, size=size,
                                    context_length=inst.num_ctx))
        # Listed in the server's model order (Ollama sorts by time left, in whole seconds:
        # server/routes.go PsHandler; models loaded within a second keep their order).
        return out

    def resolve(self, name: str) -> str:
        canon = protocol.canonical_name(name)
        if canon not in self._instances:
            raise protocol.ModelNotFoundError(name)
        return canon

    def num_ctx_for(self, model: str, options: dict[str, Any] | None = None) -> int:
        """The context a request for ``model`` runs with: ``options["num_ctx"]`` when > 0, else
        the server's default; never more than the model's own (``llm/server.go`` caps it at
        the trained context)."""
        inst = self._instances[self.resolve(model)]
        asked = (options or {}).get("num_ctx")
        want = int(asked) if isinstance(asked, (int, float)) and not isinstance(asked, bool) \
            and asked > 0 else default_num_ctx(self.gpu_memory, self.context_length)
        return max(1, min(want, inst.speed.context_length))

    def _auto_ctx(self, options: dict[str, Any] | None) -> bool:
        """Whether the context is Ollama's automatic choice (no ``num_ctx``, no
        ``OLLAMA_CONTEXT_LENGTH``): only then does it step down on a load out-of-memory."""
        asked = (options or {}).get("num_ctx")
        given = isinstance(asked, (int, float)) and not isinstance(asked, bool) and asked > 0
        return not given and self.context_length <= 0

    async def load(self, model: str, keep_alive_s: float | None = None,
                   options: dict[str, Any] | None = None) -> None:
        inst = self._instances[self.resolve(model)]
        loop = asyncio.get_running_loop()
        try:
            await self._schedule(inst, self.num_ctx_for(model, options), loop, loop.time(),
                                 auto=self._auto_ctx(options))
        except protocol.BusyError:
            self._stats["busy"] += 1
            raise
        inst.keep_alive_s = keep_alive_s
        inst.after_use(loop.time())

    async def unload(self, model: str) -> None:
        inst = self._instances[self.resolve(model)]
        inst.keep_alive_s = 0.0
        if inst.refs == 0:
            inst.unload()

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self._stats)
        out["waiting"] = sum(len([f for f in i.queue if not f.done()])
                             for i in self._instances.values())
        out["loaded"] = [i.name for i in self._instances.values() if i.loaded]
        out["max_loaded_models"] = self.max_loaded_models
        out["slots"] = {i.name: i.slots for i in self._instances.values() if i.resident}
        out["num_parallel"] = self.num_parallel
        out["single_slot"] = dict(self._forced)
        out["num_ctx"] = {i.name: i.num_ctx for i in self._instances.values() if i.resident}
        host = [h.stats() for h in self._host.values()]
        out["prompt_cache"] = {
            "enabled": self.prompt_cache, "cache_ram_mib": self.cache_ram_mib,
            **self._cache_counts,
            "host_entries": sum(h["entries"] for h in host),
            "host_bytes": sum(h["bytes"] for h in host),
            "host_saves": sum(h["saves"] for h in host),
            "host_evictions": sum(h["evictions"] for h in host)}
        return out

    def _new_host_cache(self, inst: _Instance) -> None:
        """A model (re)loaded gets a new llama-server process, so a new, empty host cache."""
        kv = inst.speed.kv_bytes_per_token or DEFAULT_KV_BYTES_PER_TOKEN
        self._host[inst.name] = HostCache(self.cache_ram_mib << 20, kv)

    def host_cache(self, model: str) -> HostCache | None:
        """The host-RAM prompt cache of a loaded model (None before its first load)."""
        return self._host.get(self.resolve(model))

    def _reuse(self, inst: _Instance, slot: Slot, prompt: bytes, update: bool,
               prompt_tokens: int) -> int:
        """Tokens of ``prompt`` the slot already holds, after the host-cache step
        (``prompt_save`` then ``prompt_load``); at most ``prompt_tokens − 1``, as llama-server
        always processes the prompt's last token."""
        if not self.prompt_cache or \
                self.profile.speed(inst.name).family in NO_PREFIX_REUSE_FAMILIES:
            slot.content = b""
            return 0
        lcp = common_prefix_tokens(slot.content, prompt)
        host = self._host.get(inst.name)
        if update and host is not None and slot.content:
            host.save(slot.content)
            best = host.take_best(prompt, lcp)
            if best is not None:
                slot.content, lcp = best
                self._cache_counts["host_restores"] += 1
        return max(0, min(lcp, prompt_tokens - 1))

    async def aclose(self) -> None:
        tasks = [t for i in self._instances.values() for t in (i.load_task, i.stepper) if t]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # scheduler ---------------------------------------------------------------------------
    def wanted_slots(self, model: str) -> int:
        """Slots Ollama gives ``model`` before memory is looked at: ``num_parallel``, except 1
        for embedding models and the families ``server/sched.go`` forces to one slot
        (:data:`SINGLE_SLOT_FAMILIES`), whatever ``OLLAMA_NUM_PARALLEL`` says."""
        inst = self._instances[self.resolve(model)]
        reason = single_slot_reason(inst.speed.family, inst.speed.capabilities)
        if reason and self.num_parallel > 1:
            self._forced[inst.name] = (f"asked for {self.num_parallel} slots, got 1: {reason} "
                                       f"(Ollama's server/sched.go)")
            return 1
        return self.num_parallel

    def _fit_slots(self, inst: _Instance, num_ctx: int) -> int | None:
        """Slots that fit beside the other loaded models (the most, down to 1); None if even
        one does not."""
        want = self.wanted_slots(inst.name)
        if self.gpu_memory is None:
            return want
        used = sum(i.memory(i.num_ctx, i.slots) for i in self._instances.values()
                   if i is not inst and i.resident)
        for k in range(want, 0, -1):
            if inst.memory(num_ctx, k) + used <= self.gpu_memory:
                return k
        return None

    def _victim(self, inst: _Instance) -> _Instance | None:
        """``findRunnerToUnload``: shortest keep-alive, then name; an idle one first."""
        loaded = sorted((i for i in self._instances.values() if i is not inst and i.resident),
                        key=lambda i: (i.session_s(), i.name))
        if not loaded:
            return None
        return next((i for i in loaded if i.refs == 0 and i.loading is None), loaded[0])

    async def _evict(self, victim: _Instance) -> None:
        if victim.loading is not None:
            await asyncio.shield(victim.loading)
        await victim.idle.wait()
        victim.unload()
        self._evicted_at = asyncio.get_running_loop().time()

    def _stepped_ctx(self, inst: _Instance, num_ctx: int, auto: bool) -> int:
        """The context a load really gets: an automatically chosen one steps down Ollama's
        tiers (262144 → 32768 → 4096) while the model with one slot does not fit the GPU
        memory alone (a load out-of-memory); a context the user set is kept."""
        if not auto or self.gpu_memory is None:
            return num_ctx
        ctx = num_ctx
        while inst.memory(ctx, 1) > self.gpu_memory:
            lower = next((t for t in _CTX_TIERS if t < ctx), None)
            if lower is None:
                break
            ctx = lower
            self._stats["context_step_downs"] += 1
        return ctx

    async def _schedule(self, inst: _Instance, num_ctx: int,
                        loop: asyncio.AbstractEventLoop, now: float, auto: bool = False) -> float:
        """Make ``inst`` loaded with ``num_ctx`` and take a reference on it (the caller must
        call ``after_use``). ``now`` is the request's arrival (loop clock). Returns the planned
        time the model was ready: the arrival when it already was, else when it was loaded."""
        inst.expire_if_due(now)
        if (inst.loaded and inst.asked_ctx == num_ctx and not self._sched_lock.locked()):
            inst.use()
            return now
        if self._scheduling >= self.max_queue:
            raise protocol.BusyError()
        self._scheduling += 1
        ready_at = now
        try:
            async with self._sched_lock:
                while True:
                    t = loop.time()
                    for other in self._instances.values():
                        other.expire_if_due(t)
                    if inst.resident and inst.asked_ctx == num_ctx:
                        break
                    if inst.resident:  # another num_ctx: reload once its requests are done
                        self._stats["reloads"] += 1
                        await self._evict(inst)
                        continue
                    count = sum(1 for i in self._instances.values() if i.resident)
                    load_ctx = self._stepped_ctx(inst, num_ctx, auto)
                    slots = self._fit_slots(inst, load_ctx)
                    if count < self.max_loaded_models and (slots is not None or count == 0):
                        # The scheduler's own work takes no model time: the load starts at
                        # the arrival, or when the last eviction made room.
                        start = max(now, self._evicted_at)
                        inst.start_load(loop, start, load_ctx, slots or 1)
                        inst.asked_ctx = num_ctx
                        ready_at = start
                        resident = sum(1 for i in self._instances.values() if i.resident)
                        self._stats["max_resident"] = max(self._stats["max_resident"], resident)
                        break
                    victim = self._victim(inst)
                    assert victim is not None  # count > 0
                    self._stats["evictions"] += 1
                    await self._evict(victim)
                inst.use()
            try:
                if inst.loading is not None:
                    return max(await asyncio.shield(inst.loading), now)
                return max(now, ready_at)
            except BaseException:
                inst.after_use(loop.time())
                raise
        finally:
            self._scheduling -= 1

    async def generate(self, request: protocol.GenerateRequest,
                       ) -> AsyncGenerator[str | protocol.Done, None]:
        loop = asyncio.get_running_loop()
        t_arrival = loop.time()
        index, inst = self._admit(request)
        t_loaded, num_ctx = await self._load_for(request, inst, loop, t_arrival)
        factor = self.faults.duration_factor(index)
        answer = self._answer_for(request, inst, num_ctx)
        inst.keep_alive_s = request.keep_alive_s
        flight = _Flight(inst, request.prompt.encode("utf-8"))
        try:
            t_slot, cached = await self._take_slot(flight, loop, t_loaded, answer.prompt_tokens,
                                                   factor)
            t_prefilled, seq = await self._prefill(flight, loop, t_slot,
                                                   answer.prompt_tokens - cached, answer.total,
                                                   factor)
            pieces = flight.pieces
            while True:
                while len(pieces) < seq.produced:
                    piece = answer.piece(len(pieces))
                    pieces.append(piece)
                    yield piece
                if len(pieces) >= seq.total:
                    break
                await seq.next_step(loop)
            t_done = self._finish(flight, seq)
            ns = 1e9 / self.time_scale
            yield protocol.Done(
                done_reason=answer.done_reason(request.num_predict),
                total_duration=round((t_done - t_arrival) * ns),
                load_duration=round(max(0.0, t_loaded - t_arrival) * ns),
                prompt_eval_count=answer.prompt_tokens,
                prompt_eval_duration=round((t_prefilled - t_slot) * ns),
                eval_count=answer.total,
                eval_duration=round((t_done - t_prefilled) * ns),
                cached_tokens=cached,
            )
        finally:
            if not flight.finished:
                self._abandon(flight, loop)

    def _admit(self, request: protocol.GenerateRequest) -> tuple[int, _Instance]:
        """Number the request (arrival order) and find its model. Raises
        :class:`ModelNotFoundError` for an unknown model, :class:`EngineError` (500) for a
        simulated failure (:class:`~.faults.Faults`)."""
        index = self._counter
        self._counter += 1
        self._stats["requests"] += 1
        inst = self._instances.get(protocol.canonical_name(request.model))
        if inst is None:
            self._stats["failed"] += 1
            raise protocol.ModelNotFoundError(request.model)
        if self.faults.fails(index):
            self._stats["failed"] += 1
            raise protocol.EngineError(f"simulated failure of request #{index} "
                              f"(fail_fraction={self.faults.fail_fraction})", 500)
        return index, inst

    async def _load_for(self, request: protocol.GenerateRequest, inst: _Instance,
                        loop: asyncio.AbstractEventLoop, t_arrival: float) -> tuple[float, int]:
        """Have the request's model loaded with its context (:meth:`_schedule`). Returns the
        time it was ready and the context the request runs with (after a step-down, the
        smaller one). Raises :class:`BusyError` when the scheduler's queue is full."""
        num_ctx = self.num_ctx_for(inst.name, request.options)
        try:
            t_loaded = await self._schedule(inst, num_ctx, loop, t_arrival,
                                            auto=self._auto_ctx(request.options))
        except protocol.BusyError:
            self._stats["busy"] += 1
            self._stats["failed"] += 1
            raise
        return t_loaded, inst.num_ctx or num_ctx

    def _answer_for(self, request: protocol.GenerateRequest, inst: _Instance,
                    num_ctx: int) -> _Answer:
        """The request's prompt tokens (cut to ``num_ctx``), output tokens and text."""
        profile = self.profile
        prompt_tokens = profile.prompt_tokens(request.prompt)
        if prompt_tokens > num_ctx:
            # The runner keeps num_ctx tokens of the prompt (runner/llamarunner: inputs cut
            # to the context, the start kept and the rest shifted out).
            prompt_tokens = num_ctx
            self._stats["truncated"] += 1
        total = profile.output_tokens(request.prompt, seed=request.seed,
                                      num_predict=request.num_predict, model=inst.name)
        base = stable_hash(unsalted(request.prompt), request.seed)
        fixed: list[str] | None = None
        if request.format not in (None, ""):
            # Structured output: the grammar lets the model write only JSON, and it stops when
            # the value is complete (or at num_predict, cut short).
            fixed = json_pieces(json_answer(request.format, base))
            limit = request.num_predict if request.num_predict and request.num_predict > 0 \
                else len(fixed)
            total = min(limit, len(fixed))
        return _Answer(prompt_tokens, total, base, fixed)

    async def _take_slot(self, flight: _Flight, loop: asyncio.AbstractEventLoop,
                         t_loaded: float, prompt_tokens: int, factor: float) -> tuple[float, int]:
        """Wait for a slot, reuse the prompt prefix it holds and pay the request's overhead.
        Returns when the prompt starts (loop clock) and the prompt tokens reused."""
        inst = flight.inst
        t_slot, slot, update = await inst.acquire(loop, t_loaded, flight.key)
        flight.slot = slot
        flight.holding = True
        self._active(+1)
        # cache_prompt: only what follows the prefix the slot holds is processed.
        cached = self._reuse(inst, slot, flight.key, update, prompt_tokens)
        slot.content = flight.key
        counts = self._cache_counts
        counts["prompt_tokens"] += prompt_tokens
        counts["cached_tokens"] += cached
        counts["hits"] += cached > 0
        overhead = inst.speed.request_overhead_s * factor * self.time_scale
        if overhead > 0:
            # The request's own overhead (HTTP, template, bookkeeping) holds the slot
            # before its prompt; the durations reported leave it out, as a server's do.
            t_slot += overhead
            await sleep_until(t_slot)
        return t_slot, cached

    async def _prefill(self, flight: _Flight, loop: asyncio.AbstractEventLoop, t_slot: float,
                       new_tokens: int, total: int, factor: float) -> tuple[float, _Seq]:
        """Process the prompt's ``new_tokens`` and put the request in the decode batch.
        Returns when the prompt was done (loop clock) and the request's place in the batch."""
        inst = flight.inst
        if self.profile.prefill_in_batch and new_tokens > 0 and inst.speed.prefill_tps:
            # The prompt goes through the shared batch; the step that finishes it also
            # hands the request to the decode batch (at the next step).
            seq = flight.seq = _Seq(total, 1.0 / factor, t_slot)
            job = _Prefill(new_tokens, factor, seq, loop.create_future())
            inst.prefill_in_batch(job, t_slot)
            return await job.done, seq
        t_prefilled = t_slot + self.profile.prefill_s(new_tokens, inst.name) * factor \
            * self.time_scale
        await sleep_until(t_prefilled)
        seq = flight.seq = _Seq(total, 1.0 / factor, t_prefilled)
        if total > 0:
            inst.join(seq, t_prefilled)
        return t_prefilled, seq

    def _finish(self, flight: _Flight, seq: _Seq) -> float:
        """The model is done: free the slot at its planned end before the caller writes the
        last line, so the next request starts on the model's schedule. Returns that end."""
        inst, slot = flight.inst, flight.slot
        assert slot is not None  # taken before the prompt
        t_done = seq.t_last
        flight.holding = False
        self._active(-1)
        # The slot keeps prompt and answer (llama-server's slot.prompt.tokens).
        slot.content = flight.key + "".join(flight.pieces).encode("utf-8")
        self._let_go(inst, slot, t_done)
        flight.finished = True
        inst.after_use(t_done)
        self._stats["completed"] += 1
        return t_done

    def _abandon(self, flight: _Flight, loop: asyncio.AbstractEventLoop) -> None:
        """A request that did not finish (cancelled or failed): leave the batch, free its
        slot now."""
        inst = flight.inst
        self._stats["cancelled"] += 1
        if flight.seq is not None:
            inst.leave(flight.seq)
        if flight.holding and flight.slot is not None:
            self._active(-1)
            self._let_go(inst, flight.slot, loop.time())
        inst.after_use(loop.time())

    @staticmethod
    def _let_go(inst: _Instance, slot: Slot, planned: float) -> None:
        slot.last_used = inst.uses
        inst.uses += 1
        inst.release(planned, slot)

    # counters ----------------------------------------------------------------------------
    def _count(self, key: str) -> None:
        self._stats[key] += 1

    def _active(self, delta: int) -> None:
        s = self._stats
        s["active"] += delta
        s["max_active"] = max(s["max_active"], s["active"])

    def _note_decoding(self, k: int) -> None:
        self._stats["max_decoding"] = max(self._stats["max_decoding"], k)
