"""Run the simulated Ollama as a real HTTP server: in the running loop, in a thread, or at the CLI.

::

    async with SimulatedOllama("seed", time_scale=0.02) as sim:   # in the running loop
        ... sim.url ...

    sim = SimulatedOllama(num_parallel=4); url = sim.start_in_thread(); ...; sim.stop()

    async with simulated_ollama(profile="seed", time_scale=0.02) as url: ...

The server is uvicorn's h11 protocol on a socket of our own (``port=0`` picks a free one), driven
without uvicorn's ``Server`` loop: that one installs signal handlers and waits 0.1 s and more on
shutdown, where tests start and stop hundreds of simulators. Stopping aborts open connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from ..system.netutil import listen
from .app import OllamaApp
from .engine import SimEngine
from .faults import Faults
from .profiles import Profile, load_profile
from .prompt_cache import DEFAULT_CACHE_RAM_MIB
from .protocol import Engine
from .settings import sim_settings

__all__ = ["SimulatedOllama", "simulated_ollama"]


class SimulatedOllama:
    """A simulated Ollama server on ``bind:port`` (see the module docstring).

    Args:
        profile: a profile name (``seed``, ``rtx4090``, …) or a :class:`Profile`.
        num_parallel: slots per model; default ``OLLAMA_NUM_PARALLEL`` or the profile's (1).
        max_queue: requests that may wait in the scheduler before 503 busy
            (``OLLAMA_MAX_QUEUE``; default: the variable, else 512).
        time_scale: clock seconds per model second (0.02 turns 10 s into 0.2 s).
        models: model names it serves (default: the profile's).
        keep_alive: default keep-alive (``"5m"``, seconds, negative = forever, 0); default
            ``OLLAMA_KEEP_ALIVE``, else 5m.
        max_loaded_models: models loaded at once (``OLLAMA_MAX_LOADED_MODELS``; 0 = 3 per GPU).
        context_length: default ``num_ctx`` (``OLLAMA_CONTEXT_LENGTH``; 0 = by GPU memory).
        cache_ram_mib: llama-server's host-RAM prompt cache, MiB (``--cache-ram``; default
            8192 as Ollama leaves it; 0 = none).
        prompt_cache: reuse each slot's common prefix (Ollama ≥ 0.30 always sends
            ``cache_prompt: true``; False only for experiments).
        faults: fault switches (fail a fraction, jitter, stop after N).
        engine: another :class:`~parallel_kit.sim.engine.Engine` to serve instead.
        bind, port: where to listen; port 0 picks a free one.
    """

    def __init__(self, profile: str | Profile = "seed", *, num_parallel: int | None = None,
                 max_queue: int | None = None, time_scale: float = 1.0,
                 models: Sequence[str] | None = None, keep_alive: float | str | None = None,
                 faults: Faults | None = None, engine: Engine | None = None,
                 bind: str = "127.0.0.1", port: int = 0, max_loaded_models: int | None = None,
                 context_length: int | None = None, cache_ram_mib: int = DEFAULT_CACHE_RAM_MIB,
                 prompt_cache: bool = True) -> None:
        self.profile = load_profile(profile)
        settings = sim_settings(bind=bind, port=port, num_parallel=num_parallel,
                                max_queue=max_queue, keep_alive=keep_alive,
                                max_loaded_models=max_loaded_models,
                                context_length=context_length)
        num_parallel, max_queue = settings.num_parallel, settings.max_queue
        self.faults = faults or Faults()
        if engine is None:
            engine = SimEngine(self.profile, num_parallel=num_parallel, max_queue=max_queue,
                               time_scale=time_scale, models=models,
                               keep_alive_s=settings.keep_alive_s, faults=self.faults,
                               max_loaded_models=settings.max_loaded_models,
                               context_length=settings.context_length,
                               cache_ram_mib=cache_ram_mib, prompt_cache=prompt_cache)
            num_parallel = engine.num_parallel
        else:
            # A real engine decides its own slots, and runs on the clock (time scale 1).
            num_parallel = getattr(engine, "num_parallel", None) or num_parallel
            time_scale = float(getattr(engine, "time_scale", 1.0))
        #: The engine's name (the protocol's ``name``): labels follow it.
        self.engine_name: str = engine.name
        self.engine: Engine = engine
        self.num_parallel = num_parallel or self.profile.num_parallel
        self.time_scale = float(time_scale)
        self.max_queue = max_queue
        self.bind = bind
        self.port = port
        self.url = ""
        self._server: asyncio.AbstractServer | None = None
        self._state: Any = None
        self._completed = 0
        self._halted = False
        self._halt_event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # -- in the running loop -------------------------------------------------------------
    async def start(self) -> str:
        """Start listening; returns the URL (``http://127.0.0.1:PORT``)."""
        import uvicorn
        from uvicorn.server import ServerState

        if self._server is not None:
            return self.url
        sock = listen(self.bind, self.port, what="simulated Ollama")
        app = OllamaApp(self.engine, on_completed=self._on_completed,
                        extra_stats=self._extra_stats)
        # log_config=None: no logging.dictConfig (importing the kit must not touch logging);
        # no proxy headers middleware and no access log: both cost time per request.
        config = uvicorn.Config(app, http="h11", ws="none", lifespan="off", log_config=None,
                                log_level=None, access_log=False, proxy_headers=False,
                                server_header=False, date_header=False)
        config.load()
        state = ServerState()
        self._state = state
        self._loop = asyncio.get_running_loop()
        self._halt_event = asyncio.Event()
        self._server = await self._loop.create_server(
            lambda: config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=state, app_state={}),
            sock=sock, backlog=2048)
        host, port = sock.getsockname()[:2]
        self.port = port
        shown = "127.0.0.1" if host == "0.0.0.0" else ("[::1]" if host == "::" else host)
        if ":" in shown and not shown.startswith("["):
            shown = f"[{shown}]"
        self.url = f"http://{shown}:{port}"
        if self.faults.stop_after == 0:
            self._halt()
        return self.url

    async def aclose(self) -> None:
        """Stop listening, drop open connections and stop the engine's timers."""
        if self._server is None:
            return
        self._halt(abort=True)
        tasks = list(self._state.tasks)
        for t in tasks:
            t.cancel()
        # uvicorn logs each cancelled request as "Exception in ASGI application" with a
        # CancelledError traceback; here the cancellation is ours (shutdown), not an error.
        with _quiet_cancellations():
            await asyncio.gather(*tasks, return_exceptions=True)
        await self.engine.aclose()
        self._server = None

    async def __aenter__(self) -> SimulatedOllama:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def wait_halted(self) -> None:
        """Wait until the server stopped answering (``stop_after``)."""
        assert self._halt_event is not None, "start the server first"
        await self._halt_event.wait()

    # -- in a thread of its own ----------------------------------------------------------
    def start_in_thread(self) -> str:
        """Run the server on its own event loop in a daemon thread; returns the URL."""
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="simulated-ollama", daemon=True)
        thread.start()
        self._thread = thread
        try:
            return asyncio.run_coroutine_threadsafe(self.start(), loop).result(timeout=30)
        except BaseException:
            self._stop_loop(loop)
            raise

    def stop(self) -> None:
        """Stop a server started with :meth:`start_in_thread` (and its thread)."""
        loop = self._loop
        if self._thread is None or loop is None:
            return
        with contextlib.suppress(RuntimeError):
            asyncio.run_coroutine_threadsafe(self.aclose(), loop).result(timeout=30)
        self._stop_loop(loop)

    def _stop_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        with contextlib.suppress(RuntimeError):
            asyncio.run_coroutine_threadsafe(loop.shutdown_asyncgens(), loop).result(timeout=5)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)
        loop.close()
        self._thread = None

    # -- counters ------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Counters: requests, completed, failed, cancelled, busy, active, max_active,
        max_decoding, waiting, loads, unloads, plus the server's settings."""
        loop = self._loop
        if self._thread is not None and loop is not None and \
                threading.current_thread() is not self._thread:
            # The engine's state belongs to its loop's thread: read it there.
            async def read() -> dict[str, Any]:
                return self._all_stats()
            return asyncio.run_coroutine_threadsafe(read(), loop).result(timeout=10)
        return self._all_stats()

    def _all_stats(self) -> dict[str, Any]:
        out = self.engine.stats()
        out.update(self._extra_stats())
        return out

    def _extra_stats(self) -> dict[str, Any]:
        # the profile itself, so a client can predict from one that is not built in
        return {"profile": self.profile.name, "profile_spec": self.profile.to_dict(),
                "engine": self.engine_name,
                "num_parallel": self.num_parallel,
                "time_scale": self.time_scale, "max_queue": self.max_queue,
                "stopped": self._halted}

    def _on_completed(self) -> None:
        self._completed += 1
        stop_after = self.faults.stop_after
        if stop_after is not None and self._completed >= stop_after and not self._halted:
            # After this call returns: the last line is written by then.
            asyncio.get_running_loop().call_soon(self._halt)

    def _halt(self, abort: bool = False) -> None:
        """Stop answering: refuse new connections, drop open ones."""
        self._halted = True
        if self._server is not None:
            self._server.close()
        for conn in list(self._state.connections if self._state else ()):
            transport = getattr(conn, "transport", None)
            if transport is not None:
                # close() still flushes what was written (the finished answer); abort() not.
                transport.abort() if abort else transport.close()
        if self._halt_event is not None:
            self._halt_event.set()


@contextlib.asynccontextmanager
async def simulated_ollama(**kwargs: Any) -> AsyncIterator[str]:
    """``async with simulated_ollama(profile="seed", time_scale=0.02) as url:`` — a
    :class:`SimulatedOllama` (same arguments) for the block; yields its URL."""
    async with SimulatedOllama(**kwargs) as sim:
        yield sim.url


@contextlib.contextmanager
def _quiet_cancellations() -> Iterator[None]:
    """Drop uvicorn's error records whose exception is a cancellation, while in the block."""
    import logging

    def keep(record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, asyncio.CancelledError)

    logger = logging.getLogger("uvicorn.error")
    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)
