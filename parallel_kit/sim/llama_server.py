"""The engine Ollama really runs: llama.cpp ``llama-server`` processes behind the kit's Ollama API.

Since Ollama 0.30 (ollama PR #16031, "use llama-server exclusively for GGML models") an Ollama
server starts upstream ``llama-server`` for each loaded model and forwards requests to it.
:class:`LlamaServerEngine` does the same behind the simulator's HTTP app
(``SimulatedOllama(engine=...)``), so the kit's native and ``/v1`` routes, streaming, errors and
keep-alive front a real engine. As Ollama's ``llm/llama_server.go`` starts it:

* ``-m FILE --host 127.0.0.1 --port P -c num_ctx×N -np N --flash-attn auto`` (N =
  ``OLLAMA_NUM_PARALLEL``, 1 by default; ``num_ctx`` 4096, Ollama's default below 23 GiB of
  VRAM, ``server/routes.go``); no ``-t`` unless asked (``threads``), so llama-server picks its
  own thread count; ``--no-webui``.
* Every request goes to ``POST /completion`` with ``"cache_prompt": true`` and ``stream:
  true``; at most N are sent at once (Ollama's weighted semaphore of numParallel), the others
  wait here first come first served, and past ``max_queue`` waiting the answer is 503 busy.
* Ollama's numbers come from llama-server's ``timings`` as Ollama computes them (ollama PR
  #16428): ``prompt_eval_count`` = ``cache_n + prompt_n`` (cached and new prompt tokens),
  ``prompt_eval_duration`` = ``prompt_ms`` (the new tokens only), ``eval_count`` =
  ``predicted_n``, ``eval_duration`` = ``predicted_ms``; ``done_reason`` is ``length`` when
  llama-server stopped at the limit (``stop_type: "limit"``), else ``stop``.
* The model loads on first use (the process starts and ``GET /health`` answers 200), stays
  ``keep_alive_s`` clock seconds after its last request, and ``keep_alive 0`` unloads it (the
  process is stopped). ``/api/ps`` lists it while its process runs.

llama-server runs as a child process: a native crash (an illegal instruction from a binary
built for another CPU, say) ends that process, and the request fails with an
:class:`~parallel_kit.sim.protocol.EngineError` naming the signal and the fix — never the
Python process that runs the kit. The binary is the kit's portable build
(:mod:`parallel_kit.sim.llama_build`) unless ``binary`` or ``$PARALLEL_KIT_LLAMA_SERVER`` names
another.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx

from ..config import num_parallel_from_env
from ..errors import ConfigError
from ..system import children
from ..system.children import die_with_parent, stop_process
from ..system.netutil import free_port
from .gguf import GGUFInfo, default_gguf, read_gguf_info
from .llama_build import LLAMA_CPP_PYTHON_VERSION, ensure_llama_server
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

__all__ = ["DEFAULT_MODEL_NAME", "DEFAULT_NUM_CTX", "LlamaServerEngine", "check_engine",
           "create_engine", "server_args"]

#: The name the packaged Gemma 3 270M file is served under (Ollama's own name for it).
DEFAULT_MODEL_NAME = "gemma3:270m"
#: Ollama's default context per slot below 23 GiB of VRAM (``server/routes.go``).
DEFAULT_NUM_CTX = 4096
#: Ollama's ``OLLAMA_LOAD_TIMEOUT`` default (``envconfig/config.go``): 5 minutes.
LOAD_TIMEOUT_S = 300.0
#: Ollama's sampling defaults (``api/types.go`` DefaultOptions) and llama-server's names.
_SAMPLING = {"temperature": ("temperature", 0.8), "top_k": ("top_k", 40),
             "top_p": ("top_p", 0.9), "min_p": ("min_p", 0.0),
             "repeat_penalty": ("repeat_penalty", 1.1), "repeat_last_n": ("repeat_last_n", 64),
             "presence_penalty": ("presence_penalty", 0.0),
             "frequency_penalty": ("frequency_penalty", 0.0)}


def server_args(gguf: Path, *, port: int, num_parallel: int, num_ctx: int,
                threads: int | None = None, flash_attn: str = "auto") -> list[str]:
    """llama-server's arguments as Ollama's ``llm/llama_server.go`` builds them (less the binary).

    ``-c`` is the whole context, ``num_ctx × num_parallel``, so each of the ``-np`` slots gets
    exactly ``num_ctx`` (the KV cache is split between slots; Ollama always passes ``-np``).
    """
    args = ["-m", str(gguf), "--host", "127.0.0.1", "--port", str(port),
            "-c", str(num_ctx * num_parallel), "-np", str(num_parallel),
            "--flash-attn", flash_attn, "--no-webui"]
    if threads is not None:
        args += ["-t", str(threads)]
    return args


def _sampling(request: GenerateRequest) -> dict[str, Any]:
    """llama-server's sampling fields from Ollama's options (Ollama's defaults)."""
    opts = request.options or {}
    out: dict[str, Any] = {}
    for key, (name, default) in _SAMPLING.items():
        value = opts.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(
                value):
            raise EngineError(f"option {key} must be a number, got {value!r}", 400)
        out[name] = int(value) if key in ("top_k", "repeat_last_n") else float(value)
    stop = opts.get("stop") or []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise EngineError("option stop must be a string or a list of strings", 400)
    out["stop"] = stop
    n = request.num_predict
    out["n_predict"] = n if n is not None and n > 0 else -1
    if request.seed is not None:
        out["seed"] = int(request.seed)
    return out


def _signal_name(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return signal.Signals(-code).name
        return f"signal {-code}"
    return f"exit status {code}"


class LlamaServerEngine:
    """Real generation by llama-server with the simulator's Engine protocol (module docstring).

    Args:
        gguf: the model file (already checked, see :func:`read_gguf_info`).
        binary: the llama-server executable.
        num_parallel: slots, ``-np`` (Ollama's ``OLLAMA_NUM_PARALLEL``).
        num_ctx: context tokens of each slot (``-c`` is ``num_ctx × num_parallel``).
        threads: llama-server's ``-t``; None = its own default (Ollama passes none).
        models: names it is served under (all the same file); default ``gemma3:270m`` for the
            packaged Gemma, else a name from the file's header.
        keep_alive_s: clock seconds the model stays loaded after its last request
            (``math.inf`` = forever, 0 = unload after each request).
        max_queue: requests that may wait for a slot or the load before 503 busy.
        load_timeout_s: clock seconds to wait for ``/health`` after starting the process.
    """

    #: The engine runs in real time: model seconds are clock seconds.
    time_scale = 1.0
    #: The engine's name (the protocol's ``name``).
    name = "llama-server"

    def __init__(self, gguf: GGUFInfo, binary: Path, *, num_parallel: int = 1,
                 num_ctx: int = DEFAULT_NUM_CTX, threads: int | None = None,
                 models: Sequence[str] | None = None, keep_alive_s: float = 300.0,
                 max_queue: int = 512, load_timeout_s: float = LOAD_TIMEOUT_S) -> None:
        self.gguf = gguf
        self.binary = binary
        self.num_parallel = num_parallel
        self.num_ctx = num_ctx
        self.threads = threads
        self.keep_alive_s = keep_alive_s
        self.max_queue = max_queue
        self.load_timeout_s = load_timeout_s
        names = [canonical_name(n) for n in (models or [_default_name(gguf)]) if n.strip()]
        if not names:
            raise ConfigError("the real engine needs at least one model name — e.g. gemma3:270m")
        self.names = list(dict.fromkeys(names))
        self.info = ModelInfo(
            name=self.names[0], size=gguf.size, digest=_digest(gguf.path),
            family=gguf.architecture, parameter_size=gguf.size_label,
            quantization_level=gguf.file_type or "unknown",
            context_length=gguf.context_length or num_ctx,
            modified_at=datetime.fromtimestamp(gguf.path.stat().st_mtime, timezone.utc)
            .strftime("%Y-%m-%dT%H:%M:%SZ"))
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_path: Path | None = None
        self._url = ""
        self._props: dict[str, Any] = {}
        self._client: httpx.AsyncClient | None = None
        self._loading: asyncio.Future[None] | None = None
        self._load_waiters = 0
        self._free = num_parallel
        self._queue: deque[asyncio.Future[None]] = deque()
        self._refs = 0
        self._keep_wish: float | None = None
        self._expires_at = math.inf
        self._timer: asyncio.TimerHandle | None = None
        self._stats: dict[str, int] = dict.fromkeys(
            ("requests", "completed", "failed", "cancelled", "busy", "active", "max_active",
             "max_decoding", "loads", "unloads", "cached_tokens", "prompt_tokens"), 0)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    # -- protocol: models ----------------------------------------------------------------------
    def models(self) -> list[ModelInfo]:
        return [_renamed(self.info, n) for n in self.names]

    def running(self) -> list[RunningModel]:
        if not self._loaded():
            return []
        left = self.keep_alive_s if self._refs > 0 else self._expires_at - time.monotonic()
        expires = None if math.isinf(left) else datetime.now(timezone.utc) + timedelta(
            seconds=max(0.0, left))
        # On the CPU nothing is in VRAM: Ollama reports size_vram 0.
        return [RunningModel(_renamed(self.info, self.names[0]), expires, 0,
                             context_length=self.num_ctx)]

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
        self._keep_wish = keep_alive_s
        self._after_use()

    async def unload(self, model: str) -> None:
        self.resolve(model)
        self._keep_wish = 0.0
        self._maybe_unload(force=True)

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self._stats)
        out["waiting"] = sum(1 for f in self._queue if not f.done())
        out.update(engine=self.name, gguf=str(self.gguf.path), binary=str(self.binary),
                   loaded=self._loaded(), num_ctx=self.num_ctx,
                   total_slots=self._props.get("total_slots"),
                   server_version=self.server_version(),
                   pid=self._proc.pid if self._proc is not None else None)
        return out

    async def aclose(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await self._stop_process()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def server_version(self) -> str | None:
        """llama-server's own ``build_info`` (``/props``), or, for the kit's build from a
        source tree without git (``b0-unknown``), the sdist it was built from; None before the
        first load."""
        build = self._props.get("build_info")
        if not isinstance(build, str):
            return None
        if build.startswith("b0-") and self.binary.parent.parent.name.startswith(
                LLAMA_CPP_PYTHON_VERSION + "-"):
            return f"llama.cpp of llama-cpp-python {LLAMA_CPP_PYTHON_VERSION} ({build})"
        return build

    # -- protocol: generate --------------------------------------------------------------------
    async def generate(self, request: GenerateRequest) -> AsyncIterator[str | Done]:
        t_arrival = time.perf_counter()
        self._stats["requests"] += 1
        try:
            self.resolve(request.model)
            body = _sampling(request)
            load_s = await self._ensure_loaded()
        except EngineError as exc:
            self._stats["failed"] += 1
            if isinstance(exc, BusyError):
                self._stats["busy"] += 1
            raise
        self._refs += 1
        self._keep_wish = request.keep_alive_s
        acquired = finished = False
        try:
            await self._acquire()
            acquired = True
            self._active(+1)
            body.update(prompt=await self._prompt(request), stream=True, cache_prompt=True)
            final: dict[str, Any] | None = None
            assert self._client is not None
            async with self._client.stream("POST", f"{self._url}/completion",
                                           json=body) as resp:
                if resp.status_code != 200:
                    raise EngineError(_error_text(await resp.aread(), resp.status_code),
                                      500 if resp.status_code >= 500 else resp.status_code)
                async for line in resp.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    chunk = json.loads(line[6:])
                    if "error" in chunk:
                        raise EngineError(_error_text(json.dumps(chunk).encode(), 500), 500)
                    if chunk.get("content"):
                        yield chunk["content"]
                    if chunk.get("stop"):
                        final = chunk
            if final is None:
                raise EngineError("llama-server ended the answer without its final numbers", 500)
            finished = True
            self._stats["completed"] += 1
            yield self._done(final, t_arrival, load_s)
        except httpx.HTTPError as exc:
            finished = True
            self._stats["failed"] += 1
            raise EngineError(self._died_or(f"llama-server did not answer ({exc!r})"),
                              500) from None
        except EngineError:
            finished = True
            self._stats["failed"] += 1
            raise
        finally:
            if not finished:
                self._stats["cancelled"] += 1
            if acquired:
                self._active(-1)
                self._release()
            self._refs -= 1
            self._after_use()

    def _done(self, final: dict[str, Any], t_arrival: float, load_s: float) -> Done:
        t = final.get("timings") or {}
        cached = int(t.get("cache_n", 0) or 0)
        new = int(t.get("prompt_n", 0) or 0)
        self._stats["cached_tokens"] += cached
        self._stats["prompt_tokens"] += cached + new
        ms = 1e6
        return Done(
            done_reason="length" if final.get("stop_type") == "limit" else "stop",
            total_duration=round((time.perf_counter() - t_arrival) * 1e9),
            load_duration=round(load_s * 1e9),
            prompt_eval_count=cached + new,
            prompt_eval_duration=round(float(t.get("prompt_ms", 0.0)) * ms),
            eval_count=int(t.get("predicted_n", 0) or 0),
            eval_duration=round(float(t.get("predicted_ms", 0.0)) * ms),
        )

    async def _prompt(self, request: GenerateRequest) -> str:
        """The text llama-server continues: a chat rendered with the file's own template
        (llama-server's ``/apply-template``), else the prompt as given (Ollama's
        ``{{ .Prompt }}`` for a file without a template)."""
        if not (request.messages and self.gguf.has_chat_template):
            return request.prompt
        assert self._client is not None
        resp = await self._client.post(f"{self._url}/apply-template",
                                       json={"messages": _plain_messages(request.messages)})
        if resp.status_code != 200:
            raise EngineError(_error_text(resp.content, resp.status_code), 500)
        return str(resp.json().get("prompt", request.prompt))

    # -- the process ---------------------------------------------------------------------------
    def _loaded(self) -> bool:
        return self._proc is not None and self._loading is None

    async def _ensure_loaded(self) -> float:
        """Start llama-server if needed; returns the clock seconds this call waited."""
        if self._closed:
            raise EngineError("the server is shutting down", 500)
        t0 = time.perf_counter()
        if self._proc is not None and self._proc.poll() is not None and self._loading is None:
            await self._stop_process()  # it died since: start a new one
        if self._loaded():
            return 0.0
        if self._loading is None:
            self._stats["loads"] += 1
            self._loading = asyncio.get_running_loop().create_future()
            self._background(self._start(self._loading))
        if self._load_waiters >= self.max_queue:
            raise BusyError()
        self._load_waiters += 1
        try:
            await asyncio.shield(self._loading)
        finally:
            self._load_waiters -= 1
        return time.perf_counter() - t0

    async def _start(self, done: asyncio.Future[None]) -> None:
        try:
            await self._spawn_and_wait()
        except Exception as exc:
            await self._stop_process()
            self._loading = None
            done.set_exception(exc if isinstance(exc, EngineError) else EngineError(
                f"llama-server could not start: {exc}", 500))
            done.exception()  # retrieved: a load nobody waits for must not warn
            return
        self._expires_at = math.inf
        self._loading = None
        done.set_result(None)

    async def _spawn_and_wait(self) -> None:
        port = free_port()
        self._url = f"http://127.0.0.1:{port}"
        fd, log = tempfile.mkstemp(prefix="llama-server-", suffix=".log")
        self._log_path = Path(log)
        args = server_args(self.gguf.path, port=port, num_parallel=self.num_parallel,
                           num_ctx=self.num_ctx, threads=self.threads)
        with os.fdopen(fd, "wb") as out:
            self._proc = subprocess.Popen(die_with_parent([str(self.binary), *args]),
                                          stdin=subprocess.DEVNULL, stdout=out,
                                          stderr=subprocess.STDOUT)
        children.register(self._proc)  # stopped at exit whatever path the exit took
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(None, connect=10.0),
                                         limits=httpx.Limits(max_keepalive_connections=0))
        deadline = time.monotonic() + self.load_timeout_s
        delay = 0.02
        while True:
            if self._proc.poll() is not None:
                raise EngineError(self._died_or(""), 500)
            try:
                r = await self._client.get(f"{self._url}/health", timeout=5.0)
                if r.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise EngineError(f"llama-server did not become ready within "
                                  f"{self.load_timeout_s:g} s (log: {self._log_path})", 500)
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.5)
        with contextlib.suppress(httpx.HTTPError, ValueError):
            props = (await self._client.get(f"{self._url}/props", timeout=5.0)).json()
            if isinstance(props, dict):
                self._props = props

    def _died_or(self, otherwise: str) -> str:
        """A message naming how the process ended, if it did; else ``otherwise``."""
        proc = self._proc
        if proc is None or proc.poll() is None:
            return otherwise or "llama-server stopped"
        code = proc.returncode
        tail = self.log_tail()
        hint = ""
        if code < 0 and -code in (signal.SIGILL, signal.SIGSEGV, signal.SIGBUS):
            hint = (" — a llama.cpp built for another CPU crashes like this: rebuild it "
                    "portably with `parallel-kit engine build --force`")
        elif "failed to load model" in tail or "failed to open" in tail or (
                "gguf" in tail.lower() and "error" in tail.lower()):
            hint = f" — {self.gguf.path} is not a model llama.cpp can load; try another --gguf"
        elif "couldn't bind" in tail.lower() or "address already in use" in tail.lower():
            hint = " — its port was taken; try again"
        elif "context" in tail.lower() and ("too" in tail.lower() or "exceed" in tail.lower()):
            hint = " — the context asked for does not fit; lower --num-ctx or --num-parallel"
        last = next((ln for ln in reversed(tail.splitlines()) if ln.strip()), "")
        return (f"llama-server ended with {_signal_name(code)}{hint} (last log line: "
                f"{last.strip()[:160]!r}; log: {self._log_path})")

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the running (or last) llama-server's log."""
        if self._log_path is None:
            return ""
        try:
            with self._log_path.open("rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - chars))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    async def _stop_process(self) -> None:
        await self._reap(*self._detach())

    def _detach(self) -> tuple[subprocess.Popen[bytes] | None, httpx.AsyncClient | None]:
        """Forget the running process at once (``/api/ps`` no longer lists it)."""
        proc, self._proc = self._proc, None
        client, self._client = self._client, None
        return proc, client

    async def _reap(self, proc: subprocess.Popen[bytes] | None,
                    client: httpx.AsyncClient | None) -> None:
        """Close the client and stop the process (SIGTERM, SIGKILL after 10 s; reaped)."""
        if client is not None:
            await client.aclose()
        if proc is not None:
            await asyncio.get_running_loop().run_in_executor(None, stop_process, proc, 10.0)
            children.forget(proc)

    def _background(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _after_use(self) -> None:
        """A request let go of the model: start its keep-alive clock once nobody uses it."""
        if self._refs > 0:
            return
        keep = self._keep_wish if self._keep_wish is not None else self.keep_alive_s
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if keep <= 0:
            self._maybe_unload(force=True)
            return
        self._expires_at = time.monotonic() + keep
        if not math.isinf(keep):
            self._timer = asyncio.get_running_loop().call_later(keep, self._maybe_unload)

    def _maybe_unload(self, force: bool = False) -> None:
        """Unload when nobody uses the model and it is due: the process is forgotten at once
        and stopped in the background."""
        if not self._loaded() or self._refs > 0:
            return
        if not force and time.monotonic() < self._expires_at:
            return
        self._stats["unloads"] += 1
        self._background(self._reap(*self._detach()))

    # -- slots (Ollama's semaphore of numParallel) -----------------------------------------------
    async def _acquire(self) -> None:
        if self._free > 0 and not self._queue:
            self._free -= 1
            return
        if sum(1 for f in self._queue if not f.done()) >= self.max_queue:
            self._stats["busy"] += 1
            raise BusyError()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._release()  # handed a slot just as it was cancelled
            raise

    def _release(self) -> None:
        while self._queue:
            fut = self._queue.popleft()
            if not fut.done():
                fut.set_result(None)  # the slot goes straight to the next in line
                return
        self._free += 1

    def _active(self, delta: int) -> None:
        s = self._stats
        s["active"] += delta
        s["max_active"] = max(s["max_active"], s["active"])
        s["max_decoding"] = s["max_active"]


def _error_text(body: bytes, status: int) -> str:
    try:
        data = json.loads(body)
        err = data.get("error", data) if isinstance(data, dict) else data
        msg = err.get("message") if isinstance(err, dict) else err
    except ValueError:
        msg = body.decode("utf-8", "replace")
    return f"llama-server answered {status}: {str(msg).strip()[:300]}"


def _plain_messages(messages: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    """Ollama messages → the role/content dicts a chat template expects (text only)."""
    out = []
    for m in messages:
        content = m.get("content", "")
        if isinstance(content, list):  # OpenAI's content parts: keep the text ones
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        out.append({"role": str(m.get("role", "user")), "content": str(content or "")})
    return out


def _renamed(info: ModelInfo, name: str) -> ModelInfo:
    return ModelInfo(name=name, size=info.size, digest=info.digest, family=info.family,
                     parameter_size=info.parameter_size,
                     quantization_level=info.quantization_level,
                     context_length=info.context_length, modified_at=info.modified_at)


def _default_name(gguf: GGUFInfo) -> str:
    if gguf.path.name == "gemma-3-270m-q4_k_m.gguf":
        return DEFAULT_MODEL_NAME
    slug = "-".join(gguf.name.lower().split()) or gguf.path.stem.lower()
    return canonical_name(slug)


def _digest(path: Path) -> str:
    """Ollama's digest is the sha256 of the file; its blobs carry it in their name. For other
    files hashing gigabytes at start-up is too slow: a hash of path, size and mtime stands in."""
    if path.name.startswith("sha256-") and len(path.name) == 71:
        return path.name[7:]
    st = path.stat()
    return hashlib.sha256(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()


def _whole(label: str, value: object) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigError(f"{label} must be a whole number ≥ 1, got {value!r}")


def _starts(binary: Path) -> None:
    """``llama-server --version`` in a child: a binary that cannot even start is refused now,
    not at the first request.

    Raises:
        ConfigError: it crashed, exited non-zero, or did not answer within 60 s.
    """
    try:
        proc = subprocess.run([str(binary), "--version"], capture_output=True, text=True,
                              timeout=60, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise ConfigError(f"{binary} --version did not finish within 60 s — is it "
                          "llama.cpp's llama-server?") from None
    except OSError as exc:
        raise ConfigError(f"{binary} does not start ({exc.strerror or exc}) — give a "
                          "llama-server built for this machine, or `parallel-kit engine "
                          "build`") from None
    if proc.returncode != 0:
        out = (proc.stderr or proc.stdout).strip().splitlines()
        hint = (" — built for another CPU? `parallel-kit engine build --force`"
                if proc.returncode < 0 else " — is it llama.cpp's llama-server?")
        raise ConfigError(f"{binary} --version ended with {_signal_name(proc.returncode)}"
                          f"{': ' + out[-1][:160] if out else ''}{hint}")


def create_engine(gguf: str | os.PathLike[str] | None = None, *, num_parallel: int | None = None,
                  threads: int | None = None, threads_per_slot: int | None = None,
                  num_ctx: int | None = None, models: Sequence[str] | None = None,
                  keep_alive_s: float = 300.0, max_queue: int = 512,
                  binary: str | os.PathLike[str] | None = None,
                  build: bool = True) -> LlamaServerEngine:
    """The llama-server engine, checked: what ``--engine llama-server`` builds.

    Args:
        gguf: a GGUF model file; ``None`` = the Gemma 3 270M package's file.
        num_parallel: slots (``-np``); default ``OLLAMA_NUM_PARALLEL`` or 1.
        threads: llama-server's ``-t`` (``threads_per_slot`` is an older name of it).
        num_ctx: context tokens per slot (default 4096, Ollama's default on small VRAM).
        models: names served (default ``gemma3:270m`` for the Gemma file).
        keep_alive_s: clock seconds the model stays loaded after use (``math.inf`` forever).
        max_queue: requests that may wait before 503 busy.
        binary: a llama-server executable (default ``$PARALLEL_KIT_LLAMA_SERVER``, else the kit's
            portable build).
        build: build the kit's llama-server if it is not built yet (else raise).

    Raises:
        MissingDependency: without ``gguf``, the Gemma package is not installed.
        ConfigError: a bad file or setting, a missing binary, or a failed build, naming it.
    """
    if num_parallel is None:
        num_parallel = num_parallel_from_env() or 1
    threads = threads if threads is not None else threads_per_slot
    for label, value in (("--num-parallel", num_parallel), ("--threads", threads),
                         ("--num-ctx", num_ctx)):
        _whole(label, value)
    path = Path(gguf).expanduser() if gguf is not None else default_gguf()
    info = read_gguf_info(path)
    ctx = num_ctx or DEFAULT_NUM_CTX
    if info.context_length and ctx > info.context_length:
        raise ConfigError(f"--num-ctx {ctx} is more than {path.name} was trained for "
                          f"({info.context_length} tokens) — ask for at most that")
    if build:
        exe = ensure_llama_server(binary, log=lambda s: print(s, file=sys.stderr, flush=True))
    else:
        from .llama_build import find_llama_server
        exe = find_llama_server(binary)
    _starts(exe)
    return LlamaServerEngine(info, exe, num_parallel=num_parallel, num_ctx=ctx,
                             threads=threads, models=models, keep_alive_s=keep_alive_s,
                             max_queue=max_queue)


def check_engine(binary: str | os.PathLike[str] | None = None,
                 timeout_s: float = 300.0) -> tuple[bool, str]:
    """Whether the real engine runs here, checked in a child process; never builds.

    Runs ``python -m parallel_kit engine check`` (start llama-server on the default model and
    generate a few tokens), so a native crash ends the child, not the caller (a notebook's
    kernel, a test run). Returns ``(ok, one line)``: the child's report, or the cause and the
    fix.
    """
    from .llama_build import BINARY_ENV, built_llama_server

    if binary is None and not os.environ.get(BINARY_ENV) and built_llama_server() is None:
        return False, ("llama-server is not built on this machine yet — run `make engine` (or "
                       "`parallel-kit engine build`) once, then run this again")
    cmd = [sys.executable, "-m", "parallel_kit", "engine", "check"]
    if binary is not None:
        cmd += ["--llama-server", str(binary)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return False, f"the engine check did not finish within {timeout_s:g} s"
    text = (proc.stdout if proc.returncode == 0 else proc.stderr or proc.stdout).strip()
    line = text.splitlines()[-1] if text else f"exit status {proc.returncode}"
    if proc.returncode < 0:
        line = (f"the engine check died with {_signal_name(proc.returncode)} — rebuild with "
                "`parallel-kit engine build --force`")
    return proc.returncode == 0, line.removeprefix("error: ")
