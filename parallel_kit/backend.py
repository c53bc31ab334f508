"""Which Ollama servers a run talks to: real ones, or simulated ones the kit starts.

``PARALLEL_KIT_BACKEND`` (or ``backend=``) decides:

* ``ollama`` — the servers named by ``--host`` (or ``OLLAMA_HOST``); never falls back.
* ``sim`` — always start embedded simulated servers on free loopback ports.
* ``auto`` (default) — use the Ollama at the host when it answers and has the model; otherwise
  start simulators and say so in one line. Hosts given explicitly are never replaced.

A host that is a simulator the kit did not start (``parallel-kit sim`` in another terminal) is
recognised by its ``/sim/stats`` path, so its time scale is read from it rather than guessed.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

from .config import (
    DEFAULT_MODEL,
    Endpoint,
    backend_from_env,
    check_time_scale,
    host_from_env,
    normalize_host,
    time_scale_from_env,
)
from .errors import ConfigError, ModelNotFound, OllamaUnavailable
from .neterrors import connect_reason
from .sim.registry import engine_info

__all__ = ["Backend", "make_engine", "open_backend", "sim_info"]

Kind = Literal["ollama", "sim"]


@dataclass
class Backend:
    """The servers of a run.

    Attributes:
        endpoints: one per server (GPU), in order.
        kind: ``"ollama"`` (real) or ``"sim"`` (simulated, started here or found at a host).
        time_scale: clock seconds per model second (1.0 for real Ollama).
        model: the model the run uses.
        message: one line saying what was chosen and why (printed by the CLI).
        started: the simulators this backend started (stopped on exit).
    """

    endpoints: list[Endpoint]
    kind: Kind
    time_scale: float
    model: str
    message: str = ""
    profile: str | None = None
    started: list[Any] = field(default_factory=list)
    #: what makes the tokens of simulated servers: "sim" or "llama-server" (real model)
    engine: str = "sim"

    @property
    def slots(self) -> int:
        return self.endpoints[0].slots if self.endpoints else 1


async def sim_info(url: str, timeout: float = 2.0) -> dict[str, Any] | None:
    """The ``/sim/stats`` of a simulated Ollama at ``url``, or None for anything else."""
    try:
        async with httpx.AsyncClient(timeout=timeout, trust_env=False) as client:
            resp = await client.get(f"{url}/sim/stats")
    except httpx.HTTPError:
        return None
    if resp.status_code != 200:
        return None
    try:
        data = resp.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


async def _probe_host(url: str, model: str, timeout: float = 3.0) -> tuple[bool, str, list[str]]:
    """(answers, why-not, models) for the server at ``url``."""
    try:
        async with httpx.AsyncClient(timeout=timeout, trust_env=False) as client:
            resp = await client.get(f"{url}/api/tags")
    except httpx.ConnectError as exc:
        return False, connect_reason(exc, urlsplit(url).hostname or "") or _one_line(exc), []
    except httpx.TimeoutException:
        return False, f"no answer within {timeout:g} s", []
    except httpx.HTTPError as exc:
        return False, type(exc).__name__, []
    if resp.status_code != 200:
        return False, f"HTTP {resp.status_code} from /api/tags — is it an Ollama server?", []
    try:
        models = [m.get("name", "") for m in resp.json().get("models", [])]
    except (ValueError, AttributeError):
        return False, "/api/tags did not return Ollama's JSON — is it an Ollama server?", []
    return True, "", models


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _has_model(models: Sequence[str], model: str) -> bool:
    # Ollama names carry a tag; "llama3.2" means "llama3.2:latest".
    want = model if ":" in model else f"{model}:latest"
    return any(m in (model, want) for m in models)


@contextlib.asynccontextmanager
async def open_backend(
    hosts: Sequence[str] | None = None,
    *,
    model: str | None = None,
    backend: str | None = None,
    servers: int = 1,
    slots: int | None = None,
    time_scale: float | None = None,
    profile: str | None = None,
    engine: str = "sim",
    engine_options: dict[str, Any] | None = None,
    start_servers: bool = True,
    announce: Callable[[str], None] | None = None,
) -> AsyncIterator[Backend]:
    """Open the servers of a run; stop the ones started here on exit.

    Args:
        hosts: Ollama URLs (one per GPU). ``None``: ``OLLAMA_HOST`` in auto/ollama mode.
        model: the model (default ``llama3.2:3b``); checked on real servers.
        backend: ``auto`` | ``ollama`` | ``sim`` (default ``PARALLEL_KIT_BACKEND``).
        servers: how many simulated servers to start when the kit simulates.
        slots: slots per simulated server (``OLLAMA_NUM_PARALLEL``); default the profile's.
        time_scale: simulator scale; with ``hosts`` it states the scale of a simulator the kit
            did not start (read from the host itself when it is one).
        profile: simulator profile name (default ``seed``).
        engine: ``sim`` (latency model) or ``llama-server`` (real model on the CPU).
        start_servers: False when the mode starts its own servers (Ray's in-actor servers):
            then a simulated backend has no endpoints and only carries the settings.
        announce: called with the one-line message (e.g. ``print``); default silent.
    """
    kind_wanted = (backend or backend_from_env()).strip().lower()
    if kind_wanted not in ("auto", "ollama", "sim"):
        raise ConfigError(f"backend {kind_wanted!r} is not one of auto, ollama, sim")
    if servers < 1:
        raise ConfigError(f"need at least 1 server (GPU), got {servers} — use --gpus 1 or more")
    if slots is not None and slots < 1:
        raise ConfigError(f"--slots must be at least 1, got {slots}")
    if time_scale is not None:
        check_time_scale(time_scale)
    model = model or DEFAULT_MODEL
    explicit = [normalize_host(h) for h in hosts] if hosts else []

    if explicit or kind_wanted == "ollama":
        urls = explicit or [host_from_env()]
        endpoints: list[Endpoint] = []
        kinds: set[str] = set()
        scales: set[float] = set()
        profiles: set[str | None] = set()
        engines: set[str] = set()
        for i, url in enumerate(urls):
            answers, why, models = await _probe_host(url, model)
            if not answers:
                raise OllamaUnavailable(url, why)
            info = await sim_info(url)
            if info is not None:
                kinds.add("sim")
                scales.add(float(info.get("time_scale", time_scale or 1.0)))
                engines.add(str(info.get("engine", "sim")))
                profiles.add(info.get("profile"))
                ep_slots = int(info.get("num_parallel", slots or 1))
            else:
                kinds.add("ollama")
                if time_scale is not None and not math.isclose(time_scale, 1.0):
                    raise ConfigError(f"{url} is a real Ollama, which runs at time scale 1 — "
                                      f"leave --time-scale out (it is for simulators)")
                scales.add(1.0)
                ep_slots = slots or 1
            if not _has_model(models, model):
                raise ModelNotFound(model, url, models)
            endpoints.append(Endpoint(url, slots=ep_slots, gpu=str(i) if len(urls) > 1 else None))
        if len(kinds) > 1:
            raise ConfigError("some --host are simulators and some real Ollama servers — "
                              "compare like with like")
        if len(scales) > 1:
            raise ConfigError(f"the simulators at --host run at different time scales "
                              f"{sorted(scales)} — start them with the same --time-scale")
        kind: Kind = "sim" if kinds == {"sim"} else "ollama"
        scale = scales.pop()
        if time_scale is not None and not math.isclose(scale, time_scale):
            raise ConfigError(f"--time-scale {time_scale:g} differs from the simulator's own "
                              f"{scale:g} at {urls[0]} — leave --time-scale out")
        # The simulators' profile lets bench predict from it; a real engine has none.
        engine_name = engines.pop() if len(engines) == 1 else "sim"
        try:
            label = engine_info(engine_name).label
        except ConfigError:
            label = f"Ollama API with engine {engine_name}"
        what = label if kind == "sim" else "Ollama"
        msg = f"using {what} at {', '.join(urls)} (model {model})"
        if announce:
            announce(msg)
        profile_name = (profiles.pop() if kind == "sim" and len(profiles) == 1
                        and engine_name == "sim" else None)
        yield Backend(endpoints, kind, scale, model, msg, profile=profile_name,
                      engine=engine_name if kind == "sim" else "ollama")
        return

    reason = ""
    if kind_wanted == "auto":
        url = host_from_env()
        answers, why, models = await _probe_host(url, model, timeout=1.0)
        if answers and _has_model(models, model) and await sim_info(url) is None:
            msg = f"using Ollama at {url} (model {model})"
            if announce:
                announce(msg)
            yield Backend([Endpoint(url, slots=slots or 1)], "ollama", 1.0, model, msg)
            return
        reason = (f"no Ollama at {url} ({why})" if not answers else
                  f"Ollama at {url} has no model {model}" if not _has_model(models, model) else
                  f"{url} is a simulator")

    scale = time_scale if time_scale is not None else time_scale_from_env(1.0)
    real = engine_info(engine)
    if real.real_time:
        scale = 1.0  # a real model runs on the clock
    profile_name = profile or "seed"
    async with contextlib.AsyncExitStack() as stack:
        started = []
        endpoints = []
        if start_servers:
            from .sim.server import SimulatedOllama

            for i in range(servers):
                sim = SimulatedOllama(profile_name, num_parallel=slots, time_scale=scale,
                                      models=[model],
                                      engine=make_engine(engine, engine_options, slots=slots,
                                                         model=model))
                await stack.enter_async_context(sim)
                started.append(sim)
                endpoints.append(Endpoint(sim.url, slots=sim.num_parallel,
                                          name=f"gpu{i}" if servers > 1 else "",
                                          gpu=str(i) if servers > 1 else None))
        count = f"{servers} simulated Ollama server{'s' if servers != 1 else ''}"
        what = (f"profile {profile_name}, time scale {scale:g}" if not real.real_time
                else f"real tokens from {real.name}: {real.label}")
        msg = f"{reason + ' — ' if reason else ''}using {count} ({what}, model {model})"
        if announce:
            announce(msg)
        yield Backend(endpoints, "sim", scale, model, msg, profile=profile_name, started=started,
                      engine=engine or "sim")


def make_engine(name: str, options: dict[str, Any] | None, *, slots: int | None = None,
                model: str | None = None) -> Any:
    """The token engine of an embedded server: None = the simulator's latency model.

    Engines are found by name in :mod:`parallel_kit.sim.registry`; ``llama-server`` builds a real
    model on the CPU serving ``model`` with ``slots`` instances; ``options`` may carry ``gguf``
    and ``threads_per_slot``.
    """
    from .sim.registry import make_engine as build

    opts = dict(options or {})
    opts.setdefault("num_parallel", slots)
    return build(name, models=[model] if model else None, **opts)
