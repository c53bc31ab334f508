"""Which Ollama servers a run talks to: real ones, or simulated ones the kit starts.

``PARALLEL_KIT_BACKEND`` (or ``backend=``) decides:

* ``ollama`` — the servers named by ``--host`` (or ``OLLAMA_HOST``); never falls back.
* ``sim`` — always start embedded simulated servers on free loopback ports.
* ``auto`` (default) — a server the user named, by ``--host`` or by an ``OLLAMA_HOST`` set in
  the environment, is used or is an error (one line naming it): never silently replaced by a
  simulator. With neither, the Ollama at the default address is used when it answers and has
  the model; otherwise the kit starts simulators and says so in one line.

The API decides which routes are asked (``api``): Ollama's native API (``generate``/``chat``)
is checked with ``GET /api/tags`` (models) and ``/api/version``; an OpenAI-compatible server
(``openai``: llama.cpp's ``llama-server``, vLLM, LM Studio, Ollama's ``/v1``) only ever with
``GET /v1/models`` (readiness and models), then — for its name, version and slots — the routes
such servers document: llama-server's ``GET /props`` (``total_slots``, ``build_info``) and
``GET /slots``, vLLM's ``GET /version``, else the ``Server`` response header. None of these is
required; Ollama's native routes are never touched with ``openai``.

A host that is a simulator the kit did not start (``parallel-kit sim`` in another terminal) is
recognised by its ``/sim/stats`` path, so its time scale is read from it rather than guessed.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

from ..config import (
    DEFAULT_MODEL,
    Endpoint,
    backend_from_env,
    check_time_scale,
    host_from_env,
    normalize_host,
    ollama_var,
    time_scale_from_env,
)
from ..errors import ConfigError, ModelNotFound, OllamaUnavailable, ServerUnavailable
from ..sim.registry import engine_info
from ..system.neterrors import connect_reason

__all__ = ["Backend", "ServerFacts", "discover_server", "make_engine", "open_backend",
           "sim_info"]

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
    #: the simulators' profile as ``/sim/stats`` gives it (``Profile.to_dict()``), so a run can
    #: predict from a calibrated profile that is not built in; None when not known
    profile_spec: dict[str, Any] | None = None
    started: list[Any] = field(default_factory=list)
    #: what makes the tokens of simulated servers: "sim" or "llama-server" (real model)
    engine: str = "sim"
    #: the measured server's own name and version where it gives one ("llama.cpp b6123",
    #: "vLLM 0.10.1", "Ollama 0.12.3", a ``Server`` header); "" when it gives none
    server: str = ""
    #: where the slots of real servers come from: "--slots", "/props total_slots", "/slots",
    #: "" (not known here: 1 assumed, bench may measure them)
    slots_source: str = ""

    @property
    def slots(self) -> int:
        return self.endpoints[0].slots if self.endpoints else 1

    def sim_profile(self) -> Any:
        """The simulators' :class:`~parallel_kit.sim.profiles.Profile`: from the spec they
        report when there is one (a calibrated profile need not be built in), else by name.

        Raises:
            ConfigError: a simulated backend without a profile, or an unknown name.
        """
        from ..sim.profiles import load_profile, profile_from_dict

        if not self.profile:
            raise ConfigError("this backend is not a simulator with a latency model")
        if self.profile_spec:
            return profile_from_dict(self.profile, self.profile_spec)
        return load_profile(self.profile)


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


@dataclass
class ServerFacts:
    """What a real server says about itself (:func:`discover_server`).

    Attributes:
        answers: it answered the readiness route with 200 and the expected JSON.
        why: when not, why (one line).
        models: the model names it lists (``/api/tags`` names, ``/v1/models`` ids).
        name: its name and version where it gives one ("" otherwise).
        slots: requests it serves at once, where it says (llama-server), else None.
        slots_source: the route that said so ("/props total_slots", "/slots").
        wrong_api: it answered HTTP, but not as the API asked for (``why`` says how; a
            different server, or the other API): a setting to fix, not a server to start.
    """

    answers: bool
    why: str = ""
    models: list[str] = field(default_factory=list)
    name: str = ""
    slots: int | None = None
    slots_source: str = ""
    wrong_api: bool = False


async def discover_server(url: str, api: str = "generate", *,
                          timeout: float = 3.0) -> ServerFacts:
    """Ask the server at ``url`` whether it answers, its models, name and slots.

    ``api`` ``generate``/``chat``: ``GET /api/tags`` then ``/api/version`` (Ollama's native
    routes). ``openai``: ``GET /v1/models`` (readiness and models; a 503 while llama-server
    loads its model is "not ready", with ``/health``'s message when it has one), then
    ``GET /props`` (llama-server: ``total_slots``, ``build_info``), ``GET /slots`` (its slot
    list, when ``/props`` has no count), ``GET /version`` (vLLM), else the ``Server`` header —
    never a native Ollama route. Never raises for network errors (``answers`` False).
    """
    try:
        async with httpx.AsyncClient(timeout=timeout, trust_env=False) as client:
            if api == "openai":
                return await _discover_openai(client, url, timeout)
            return await _discover_ollama(client, url, timeout)
    except httpx.ConnectError as exc:
        return ServerFacts(False, connect_reason(exc, urlsplit(url).hostname or "")
                           or _one_line(exc))
    except httpx.TimeoutException:
        return ServerFacts(False, f"no answer within {timeout:g} s")
    except httpx.HTTPError as exc:
        return ServerFacts(False, type(exc).__name__)


async def _discover_ollama(client: httpx.AsyncClient, url: str, timeout: float) -> ServerFacts:
    resp = await client.get(f"{url}/api/tags")
    fix = ("for an OpenAI-compatible server (llama-server, vLLM, LM Studio) add --api openai; "
           "else check the address and port")
    if resp.status_code != 200:
        return ServerFacts(False, f"it is not Ollama's native API (HTTP {resp.status_code} from "
                                  f"GET /api/tags) — {fix}", wrong_api=True)
    try:
        models = [m.get("name", "") for m in resp.json().get("models", [])]
    except (ValueError, AttributeError):
        return ServerFacts(False, f"it is not Ollama's native API (GET /api/tags is not "
                                  f"Ollama's JSON) — {fix}", wrong_api=True)
    name = ""
    with contextlib.suppress(httpx.HTTPError, ValueError, AttributeError):
        ver = await client.get(f"{url}/api/version")
        if ver.status_code == 200:
            version = str(ver.json().get("version", ""))
            name = f"Ollama {version}" if version else "Ollama"
    return ServerFacts(True, "", models, name or _server_header(resp))


async def _discover_openai(client: httpx.AsyncClient, url: str, timeout: float) -> ServerFacts:
    resp = await client.get(f"{url}/v1/models")
    fix = "check the address and port (Ollama's native API: leave --api openai out)"
    if resp.status_code == 503:  # llama-server answers 503 while it loads the model
        return ServerFacts(False, f"HTTP 503 from GET /v1/models: {_error_of(resp)} — not "
                                  f"ready yet; try again when it has loaded its model")
    if resp.status_code != 200:
        return ServerFacts(False, f"it is not an OpenAI-compatible API (HTTP "
                                  f"{resp.status_code} from GET /v1/models) — {fix}",
                           wrong_api=True)
    try:
        data = resp.json().get("data", [])
        models = [str(m.get("id", "")) for m in data]
    except (ValueError, AttributeError):
        return ServerFacts(False, f"it is not an OpenAI-compatible API (GET /v1/models is not "
                                  f"the OpenAI model list) — {fix}", wrong_api=True)
    facts = ServerFacts(True, "", models)
    props = await _json_get(client, f"{url}/props")
    if isinstance(props, dict) and ("total_slots" in props or "build_info" in props):
        build = str(props.get("build_info") or "").strip()
        facts.name = f"llama.cpp {build}" if build else "llama.cpp server"
        total = props.get("total_slots")
        if isinstance(total, int) and not isinstance(total, bool) and total >= 1:
            facts.slots, facts.slots_source = total, "/props total_slots"
        else:
            slot_list = await _json_get(client, f"{url}/slots")
            if isinstance(slot_list, list) and slot_list:
                facts.slots, facts.slots_source = len(slot_list), "/slots"
        return facts
    version = await _json_get(client, f"{url}/version")
    if isinstance(version, dict) and version.get("version"):
        facts.name = f"vLLM {version['version']}"
        return facts
    facts.name = _server_header(resp)
    return facts


async def _json_get(client: httpx.AsyncClient, url: str) -> Any:
    """The JSON of ``GET url`` when it answers 200 with JSON; None otherwise (never raises)."""
    try:
        resp = await client.get(url)
        return resp.json() if resp.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


def _server_header(resp: httpx.Response) -> str:
    return resp.headers.get("server", "").strip()[:80]


def _error_of(resp: httpx.Response) -> str:
    """The message of an error body (OpenAI's ``{"error": {"message": …}}`` or text)."""
    try:
        err = resp.json().get("error")
        if isinstance(err, dict):
            return str(err.get("message") or err)[:120]
        if err:
            return str(err)[:120]
    except (ValueError, AttributeError):
        pass
    return resp.text.strip()[:120] or "(empty body)"


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
    api: str = "generate",
    model_named: bool = True,
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
        api: ``generate``/``chat`` (Ollama's native API) or ``openai``: which routes a real
            server is checked with (module docstring); ``openai`` never asks a native route.
        model_named: False when the user did not name the model: then an OpenAI-compatible
            server that lists exactly one model, and not the default, is measured with it
            (``Backend.model``; the message says so).

    Raises:
        OllamaUnavailable: a named server (``--host``, or ``OLLAMA_HOST`` set in the
            environment) does not answer — :class:`~parallel_kit.errors.ServerUnavailable`
            with ``api="openai"``; never replaced by a simulator.
        ModelNotFound: a named server lacks the model. ConfigError: bad settings.
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
    wanted = _Wanted(model or DEFAULT_MODEL, api, model_named, servers, slots, time_scale,
                     profile, engine, engine_options, start_servers, announce)
    explicit = [normalize_host(h) for h in hosts] if hosts else []
    # An OLLAMA_HOST set in the environment names a server as surely as --host does.
    env_named = not explicit and kind_wanted == "auto" and bool(ollama_var("OLLAMA_HOST"))

    if explicit or env_named or kind_wanted == "ollama":
        where = ("--host" if explicit else "OLLAMA_HOST in the environment" if env_named
                 else "PARALLEL_KIT_BACKEND=ollama")
        yield await _open_named(explicit or [host_from_env()], where, bool(explicit), wanted)
        return

    reason = ""
    if kind_wanted == "auto":
        found, reason = await _default_ollama(wanted)
        if found is not None:
            yield found
            return
    async with _simulators(wanted, reason) as started:
        yield started


@dataclass(frozen=True)
class _Wanted:
    """What :func:`open_backend` was asked for (its arguments, checked)."""

    model: str
    api: str
    model_named: bool
    servers: int
    slots: int | None
    time_scale: float | None
    profile: str | None
    engine: str
    engine_options: dict[str, Any] | None
    start_servers: bool
    announce: Callable[[str], None] | None

    def say(self, msg: str) -> None:
        if self.announce:
            self.announce(msg)


async def _open_named(urls: list[str], where: str, explicit: bool, wanted: _Wanted) -> Backend:
    """The servers the user named (``where`` says how), each asked in turn: real or
    simulated, alike, and serving the model — else the error that says which and why."""
    unavailable = ServerUnavailable if wanted.api == "openai" else OllamaUnavailable
    found = _Named(urls)
    model = wanted.model
    for i, url in enumerate(urls):
        facts = await discover_server(url, wanted.api)
        models = facts.models
        if facts.wrong_api:
            raise ConfigError(f"{url} answered, but {facts.why}")
        if not facts.answers:
            hint = ("" if explicit else f"; named by {where} — unset it or set "
                    f"PARALLEL_KIT_BACKEND=sim for the simulator")
            raise unavailable(url, facts.why + hint)
        info = await sim_info(url)
        ep_slots = (found.add_sim(info, wanted) if info is not None
                    else found.add_real(url, facts, wanted))
        if (wanted.api == "openai" and not wanted.model_named and model not in models
                and len(models) == 1):
            model = models[0]  # the server's only model, since none was named
        if not _has_model(models, model):
            fix = (None if wanted.api != "openai" else
                   "name one it lists with --model (OpenAI-compatible servers serve the "
                   "models they were started with)")
            raise ModelNotFound(model, url, models, fix=fix)
        found.endpoints.append(Endpoint(url, slots=ep_slots,
                                        gpu=str(i) if len(urls) > 1 else None))
    return found.backend(model, wanted)


class _Named:
    """What the named servers said, gathered server by server (:func:`_open_named`)."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self.endpoints: list[Endpoint] = []
        self.kinds: set[str] = set()
        self.scales: set[float] = set()
        self.names: set[str] = set()
        self.sources: set[str] = set()
        self.profiles: set[str | None] = set()
        self.specs: list[dict[str, Any]] = []
        self.engines: set[str] = set()

    def add_sim(self, info: dict[str, Any], wanted: _Wanted) -> int:
        """A simulator, from its ``/sim/stats``; returns its slots."""
        self.kinds.add("sim")
        self.scales.add(float(info.get("time_scale", wanted.time_scale or 1.0)))
        self.engines.add(str(info.get("engine", "sim")))
        self.profiles.add(info.get("profile"))
        if isinstance(info.get("profile_spec"), dict):
            self.specs.append(info["profile_spec"])
        return int(info.get("num_parallel", wanted.slots or 1))

    def add_real(self, url: str, facts: ServerFacts, wanted: _Wanted) -> int:
        """A real server (at time scale 1); returns its slots: ``--slots``, else its own."""
        slots, time_scale = wanted.slots, wanted.time_scale
        self.kinds.add("ollama")
        if time_scale is not None and not math.isclose(time_scale, 1.0):
            raise ConfigError(f"{url} is a real Ollama, which runs at time scale 1 — "
                              f"leave --time-scale out (it is for simulators)")
        self.scales.add(1.0)
        self.sources.add("--slots" if slots else facts.slots_source)
        if slots and facts.slots and slots != facts.slots:
            wanted.say(f"--slots {slots} differs from the {facts.slots} that {url} reports "
                       f"({facts.slots_source}) — labelling and predicting with --slots")
        self.names.add(facts.name)
        return slots or facts.slots or 1

    def _kind_and_scale(self, time_scale: float | None) -> tuple[Kind, float]:
        """All real or all simulators, at one time scale (the one asked for, if any)."""
        if len(self.kinds) > 1:
            raise ConfigError("some --host are simulators and some real Ollama servers — "
                              "compare like with like")
        if len(self.scales) > 1:
            raise ConfigError(f"the simulators at --host run at different time scales "
                              f"{sorted(self.scales)} — start them with the same --time-scale")
        kind: Kind = "sim" if self.kinds == {"sim"} else "ollama"
        scale = self.scales.pop()
        if time_scale is not None and not math.isclose(scale, time_scale):
            raise ConfigError(f"--time-scale {time_scale:g} differs from the simulator's own "
                              f"{scale:g} at {self.urls[0]} — leave --time-scale out")
        return kind, scale

    def backend(self, model: str, wanted: _Wanted) -> Backend:
        """The backend of these servers, announced in one line."""
        kind, scale = self._kind_and_scale(wanted.time_scale)
        # The simulators' profile lets bench predict from it; a real engine has none.
        engine_name = self.engines.pop() if len(self.engines) == 1 else "sim"
        try:
            label = engine_info(engine_name).label
        except ConfigError:
            label = f"Ollama API with engine {engine_name}"
        server_name = (", ".join(sorted(n for n in self.names if n)) if kind == "ollama"
                       else label)
        what = (label if kind == "sim" else server_name or
                ("an OpenAI-compatible server" if wanted.api == "openai" else "Ollama"))
        msg = f"using {what} at {', '.join(self.urls)} (model {model})"
        source = next(iter(self.sources)) if len(self.sources) == 1 else ""
        if kind == "ollama":
            ep_count = self.endpoints[0].slots
            msg += (f", {ep_count} slot{'s' if ep_count != 1 else ''} from {source}" if source
                    else ", slots not reported by the server")
        wanted.say(msg)
        profile_name = (self.profiles.pop() if kind == "sim" and len(self.profiles) == 1
                        and engine_name == "sim" else None)
        specs = self.specs
        spec = specs[0] if profile_name and specs and all(x == specs[0] for x in specs) \
            else None
        return Backend(self.endpoints, kind, scale, model, msg, profile=profile_name,
                       profile_spec=spec, engine=engine_name if kind == "sim" else "ollama",
                       server=server_name if kind == "ollama" else label,
                       slots_source=source if kind == "ollama" else "simulator")


async def _default_ollama(wanted: _Wanted) -> tuple[Backend | None, str]:
    """The real Ollama at the default address when it answers and has the model; else
    None and why not (for the simulators' message)."""
    model, slots = wanted.model, wanted.slots
    url = host_from_env()
    facts = await discover_server(url, wanted.api, timeout=1.0)
    answers, why, models = facts.answers, facts.why, facts.models
    if answers and _has_model(models, model) and await sim_info(url) is None:
        msg = f"using {facts.name or 'Ollama'} at {url} (model {model})"
        wanted.say(msg)
        return Backend([Endpoint(url, slots=slots or facts.slots or 1)], "ollama", 1.0,
                       model, msg, server=facts.name,
                       slots_source="--slots" if slots else facts.slots_source), ""
    return None, (f"no Ollama at {url} ({why})" if not answers else
                  f"Ollama at {url} has no model {model}" if not _has_model(models, model) else
                  f"{url} is a simulator")


@contextlib.asynccontextmanager
async def _simulators(wanted: _Wanted, reason: str) -> AsyncIterator[Backend]:
    """Simulated servers started here (none when the mode starts its own), stopped on exit;
    ``reason``: why no real server is used ("" when none was looked for)."""
    model, slots, servers, engine = wanted.model, wanted.slots, wanted.servers, wanted.engine
    time_scale = wanted.time_scale
    scale = time_scale if time_scale is not None else time_scale_from_env(1.0)
    real = engine_info(engine)
    if real.real_time:
        scale = 1.0  # a real model runs on the clock
    profile_name = wanted.profile or "seed"
    async with contextlib.AsyncExitStack() as stack:
        started = []
        endpoints = []
        if wanted.start_servers:
            from ..sim.server import SimulatedOllama

            for i in range(servers):
                sim = SimulatedOllama(profile_name, num_parallel=slots, time_scale=scale,
                                      models=[model],
                                      engine=make_engine(engine, wanted.engine_options,
                                                         slots=slots, model=model,
                                                         sharing=servers))
                await stack.enter_async_context(sim)
                started.append(sim)
                endpoints.append(Endpoint(sim.url, slots=sim.num_parallel,
                                          name=f"gpu{i}" if servers > 1 else "",
                                          gpu=str(i) if servers > 1 else None))
        count = f"{servers} simulated Ollama server{'s' if servers != 1 else ''}"
        what = (f"profile {profile_name}, time scale {scale:g}" if not real.real_time
                else f"real tokens from {real.name}: {real.label}")
        msg = f"{reason + ' — ' if reason else ''}using {count} ({what}, model {model})"
        wanted.say(msg)
        yield Backend(endpoints, "sim", scale, model, msg, profile=profile_name, started=started,
                      engine=engine or "sim", server=real.label, slots_source="simulator")


def make_engine(name: str, options: dict[str, Any] | None, *, slots: int | None = None,
                model: str | None = None, sharing: int = 1) -> Any:
    """The token engine of an embedded server: None = the simulator's latency model.

    Engines are found by name in :mod:`parallel_kit.sim.registry`; ``llama-server`` builds a real
    model on the CPU serving ``model`` with ``slots`` slots; ``options`` may carry ``gguf``,
    ``threads`` and ``num_ctx``.

    ``sharing``: real engines started on this machine at once (a pool or Ray run of N servers).
    Without ``threads``, each then gets an equal share of the cores, ``max(1, cores // N)``:
    llama-server's default is every core (``common/common.cpp``, ``cpu_get_num_math``), and N
    servers each spinning that many threads on the same cores measured 15× slower tokens
    than one server alone (2 servers, 2 cores: ``benchmarks/sim_vs_engine.py``).
    """
    from ..sim.registry import engine_info
    from ..sim.registry import make_engine as build

    opts = dict(options or {})
    opts.setdefault("num_parallel", slots)
    if (sharing > 1 and engine_info(name).real_time and opts.get("threads") is None
            and opts.get("threads_per_slot") is None):
        opts["threads"] = max(1, (os.cpu_count() or 1) // sharing)
    return build(name, models=[model] if model else None, **opts)
