"""Benchmarks (this package): compare modes side by side here; ``loadgen`` (open loop), ``sweep``, ``demo``, ``capacity``.

Run several modes on the same prompts, side by side, and compare them with theory.

>>> comparison = await compare(["sequential", "pool"], n=5, gpus=3, time_scale=0.02)
>>> comparison.summary_frame()          # one row per mode: predicted vs measured, speedup
>>> comparison.frame()                  # one row per request, every mode

What runs where:

* ``sequential``, ``async``, ``batch`` use one server (the first ``--host``, or one simulator);
* ``pool`` uses ``gpus`` servers (the ``--host`` list, or that many simulators);
* ``ray`` uses the ``--host`` list, or starts one server inside each GPU actor.

Predictions come from the simulator's profile when the servers are simulated, and from the
measured sequential run's per-request times when they are real (so a real Ollama is compared
with what its own single-request speed implies). Model load (warm-up) is done before each mode
and reported as ``setup_s``, never inside the makespan.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

if sys.version_info >= (3, 12):
    from typing import Unpack
else:
    from typing_extensions import Unpack

from .. import theory
from .._sync import run_sync
from ..config import DEFAULT_MODEL, Endpoint, max_concurrent_from_env, time_scale_from_env
from ..errors import AllWorkersLost, ConfigError, MissingDependency
from ..metrics import Slo
from ..modes.base import ModeContext
from ..modes.options import QueueOptions, RayOptions, ServerOptions, launched_servers
from ..modes.registry import BASELINE, get_info, mode_names, parse_modes
from ..modes.stack_options import ServeOptions, StackOptions
from ..records import RequestResult, RequestSpec, RunResult, summarize, write_csv, write_json
from ..servers.backend import Backend, open_backend
from ..workload.arrivals import Arrivals, Schedule, specs_for
from ..workload.prompts import load_prompts, make_specs, new_salt, salt_specs, workload_specs

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "CompareShortcuts",
    "Comparison",
    "compare",
    "compare_sync",
    "format_table",
    "run_interruptibly",
    "write_outputs",
]

#: The model name the real CPU engine serves by default (the Gemma 3 270M package).
REAL_ENGINE_MODEL = "gemma3:270m"
#: Output tokens per request on a real engine (llama.cpp on the CPU, or a real Ollama) when
#: neither ``--num-predict`` nor the prompt file says: a base model otherwise generates until
#: its context is full (``num_predict`` -1, Ollama's default, ``api/types.go``), and the demo
#: ran for more than 8 minutes. 128 tokens: the five-request scenario took 3 s per mode at
#: 32 tokens on this kit's 2-core reference machine, so the five modes of ``demo`` take about
#: a minute at 128 (docs/ROBUSTNESS.md).
REAL_ENGINE_NUM_PREDICT = 128


@dataclass
class Comparison:
    """The runs of one comparison, in the order they ran."""

    runs: list[RunResult] = field(default_factory=list)
    backend: str = "sim"
    time_scale: float = 1.0
    messages: list[str] = field(default_factory=list)
    #: True when the comparison was cut short (Ctrl-C): the last run is partial.
    interrupted: bool = False
    #: Output tokens per request the kit chose for a real engine (``None``: not capped).
    request_cap: int | None = None
    #: The slowest prefill rate seen so far (tokens per model second): the reference for
    #: inferring cache hits in later runs on the same servers (a sweep carries it on).
    prefill_tokens_per_s: float | None = None

    def run(self, mode: str) -> RunResult:
        for r in self.runs:
            if r.summary.mode == mode:
                return r
        raise KeyError(f"no run of mode {mode!r}; have {[r.summary.mode for r in self.runs]}")

    def __getitem__(self, mode: str) -> RunResult:
        return self.run(mode)

    def frame(self) -> pd.DataFrame:
        """One row per request of every mode (tidy)."""
        import pandas as pd

        frames = [r.to_frame() for r in self.runs]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def summary_frame(self) -> pd.DataFrame:
        """One row per mode with every summary field."""
        import pandas as pd

        return pd.DataFrame([r.summary.to_dict() for r in self.runs])

    def table(self) -> str:
        """The predicted-vs-measured table printed by ``demo`` and ``bench``."""
        text = format_table(self.runs)
        if self.request_cap is not None:
            text += (f"\n(real engine: each request capped at {self.request_cap} output tokens "
                     f"by default — set --num-predict to change it)")
        return text


def format_table(runs: Sequence[RunResult]) -> str:
    """A plain-text table: one line per mode (model seconds unless marked clock)."""
    head = (f"{'mode':<11}{'servers×slots':>14}{'predicted s':>13}{'measured s':>12}"
            f"{'fidelity':>10}{'speedup':>9}{'submit ms':>11}{'setup s':>9}{'ok/n':>8}")
    lines = [head, "-" * len(head)]
    for r in runs:
        s = r.summary
        pred = f"{s.predicted_makespan_s:.2f}" if s.predicted_makespan_s else "—"
        ratio = (f"{s.makespan_s / s.predicted_makespan_s:.3f}"
                 if s.predicted_makespan_s and _finite(s.makespan_s) else "—")
        speed = f"{s.speedup_vs_sequential:.2f}×" if s.speedup_vs_sequential else "—"
        submit = f"{s.submit_s * 1000:.1f}" if s.submit_s is not None else "—"
        setup = f"{s.setup_s:.2f}" if s.setup_s is not None else "—"
        lines.append(f"{s.mode:<11}{f'{s.workers}×{s.slots}':>14}{pred:>13}"
                     f"{s.makespan_s:>12.2f}{ratio:>10}{speed:>9}{submit:>11}{setup:>9}"
                     f"{f'{s.ok}/{s.n}':>8}")
    if runs:
        s0 = runs[0].summary
        where = (_engine_label(s0.engine) if s0.backend == "sim" else
                 f"measured: {s0.server}" if s0.server else
                 "measured: a real server, which gave no name")
        lines.append(f"({where}, time scale {s0.time_scale:g}: times in model seconds; "
                     f"fidelity = measured ÷ predicted; submit in clock ms; setup in clock s)")
    return "\n".join(lines)


def _engine_default_model(engine: str | None) -> str:
    """The model a run uses when none is named: the engine's own (registry), else the kit's."""
    from ..sim.registry import engine_info

    return engine_info(engine).default_model or DEFAULT_MODEL


def _engine_label(engine: str) -> str:
    """What produced a simulator run's tokens, from the engine registry."""
    from ..sim.registry import engine_info

    try:
        return engine_info(engine if engine != "ollama" else None).label
    except ConfigError:
        return f"engine {engine}"


def _finite(x: float | None) -> bool:
    return x is not None and not math.isnan(x)


async def _warm_up(endpoints: Sequence[Endpoint], model: str, api: str = "generate") -> float:
    """Load the model on every endpoint; returns clock seconds. Ollama's native API: its empty
    prompt; the OpenAI API (which has no load call): a one-token chat completion."""
    import httpx

    t0 = time.perf_counter()
    async with httpx.AsyncClient(timeout=600.0, trust_env=False) as client:
        async def load(url: str) -> None:
            with contextlib.suppress(httpx.HTTPError):
                if api == "openai":
                    await client.post(f"{url}/v1/chat/completions",
                                      json={"model": model, "max_tokens": 1, "stream": False,
                                            "messages": [{"role": "user", "content": "Hi"}]})
                    return
                await client.post(f"{url}/api/generate",
                                  json={"model": model, "prompt": "", "stream": False})
        await asyncio.gather(*(load(e.url) for e in endpoints))
    return time.perf_counter() - t0


def _prediction(mode: str, specs: Sequence[RequestSpec], backend: Backend, workers: int,
                slots: int, concurrency: int, sequential: RunResult | None,
                speedup: Any = None) -> float | None:
    """Predicted makespan (model s): from the profile when simulated, else from sequential's
    service times with ``speedup`` S(k) (a real server's measured one; None: S(k) = 1)."""
    topology = get_info(mode).topology(gpus=workers, slots=slots, concurrency=concurrency)
    if backend.kind == "sim" and backend.profile and backend.engine == "sim":
        # The simulator's own latency model, step by step (prefill at full speed), from the
        # profile the simulators themselves report (a calibrated one need not be built in).
        service = theory.service_model_from_profile(backend.sim_profile(), specs)
        return float(theory.predict_topology(topology, service=service).makespan_s)
    if sequential is not None and sequential.summary.ok == len(sequential.requests):
        times = [(r.finished_s - r.started_s) for r in sequential.requests]
    else:
        return None
    return float(theory.predict_topology(topology, times, speedup=speedup).makespan_s)


class CompareShortcuts(TypedDict, total=False):
    """Keyword shortcuts of :func:`compare` that build its option records.

    ``gpus``, ``slots``, ``profile``, ``engine``, ``engine_options`` → :class:`ServerOptions`
    (``gpus`` is its ``count``); ``concurrency``, ``prefetch`` → :class:`QueueOptions`;
    ``ray_address`` → :class:`RayOptions` (``address``).
    """

    gpus: int | None
    slots: int | None
    profile: str | None
    engine: str
    engine_options: dict[str, Any] | None
    concurrency: int | None
    prefetch: int
    ray_address: str | None


_SERVER_KEYS = {"gpus": "count", "slots": "slots", "profile": "profile", "engine": "engine",
                "engine_options": "engine_options"}
_QUEUE_KEYS = {"concurrency": "concurrency", "prefetch": "prefetch"}
_RAY_KEYS = {"ray_address": "address"}


def _records(servers: ServerOptions | None, queue: QueueOptions | None, ray: RayOptions | None,
             shortcuts: dict[str, Any]) -> tuple[ServerOptions, QueueOptions, RayOptions]:
    """The option records of a comparison, from records and/or keyword shortcuts.

    Raises:
        TypeError: an unknown keyword (Python's own message, with the known ones).
        ConfigError: a shortcut given together with its record, or a bad value.
    """
    known = {**_SERVER_KEYS, **_QUEUE_KEYS, **_RAY_KEYS}
    unknown = sorted(set(shortcuts) - set(known))
    if unknown:
        raise TypeError(f"compare() got an unexpected keyword argument {unknown[0]!r} — "
                        f"known options: {', '.join(sorted(known))}, or servers=, queue=, ray=")

    def build(record: Any, cls: type, keys: dict[str, str], what: str) -> Any:
        given = {keys[k]: v for k, v in shortcuts.items() if k in keys and v is not None}
        if record is not None:
            if given:
                raise ConfigError(f"compare() got {what}= and also "
                                  f"{', '.join(k for k in shortcuts if k in keys)} — give one")
            return record
        if "engine_options" in given:
            given["engine_options"] = dict(given["engine_options"])
        if cls is QueueOptions:
            given.setdefault("concurrency", max_concurrent_from_env())
        return cls(**given)

    return (build(servers, ServerOptions, _SERVER_KEYS, "servers"),
            build(queue, QueueOptions, _QUEUE_KEYS, "queue"),
            build(ray, RayOptions, _RAY_KEYS, "ray"))


# Over 80 lines: 25 arguments in the signature and in the docstring's table; the body is 11.
async def compare(
    modes: str | Sequence[str] | None = None,
    prompts: str | os.PathLike[str] | Sequence[RequestSpec] | None = None,
    *,
    n: int | None = None,
    hosts: Sequence[str] | None = None,
    model: str | None = None,
    num_predict: int | None = None,
    time_scale: float | None = None,
    backend: str | None = None,
    api: str = "generate",
    servers: ServerOptions | None = None,
    queue: QueueOptions | None = None,
    ray: RayOptions | None = None,
    serve: ServeOptions | None = None,
    stack: StackOptions | None = None,
    progress: bool = False,
    announce: Callable[[str], None] | None = None,
    on_result: Callable[[RequestResult], None] | None = None,
    into: Comparison | None = None,
    skip_unavailable: bool = False,
    arrivals: Arrivals | None = None,
    slo: Slo | str | None = None,
    salt: str | bool = True,
    workload: str | None = None,
    prefill_tokens_per_s: float | None = None,
    **shortcuts: Unpack[CompareShortcuts],
) -> Comparison:
    """Run ``modes`` on the same requests and return every run with predictions filled in.

    Args:
        modes: mode names, a list or ``"a,b"`` (default: every registered mode); the baseline
            (``sequential``) runs first when present.
        prompts: a prompt file, a built-in set name, or specs (default: the original five).
        n: number of requests, cycling over the prompts (default: one per prompt, or 5).
        hosts: Ollama URLs (several = one Ollama per GPU); default ``OLLAMA_HOST`` or embedded.
        time_scale: simulator scale (default ``PARALLEL_KIT_TIME_SCALE`` or 1).
        backend: ``sim``, ``ollama`` or ``None`` (whichever answers; see ``open_backend``).
        api: ``generate``, ``chat`` or ``openai``.
        servers: the servers (:class:`ServerOptions`: ``count`` for the multi-server modes,
            default ``len(hosts)`` or 3; ``slots``; ``profile``; ``engine`` ``sim`` or
            ``llama-server``; ``engine_options``).
        queue: :class:`QueueOptions` (``concurrency`` of the async/batch queue, default
            ``MAX_CONCURRENT_REQUESTS`` or 5; ``prefetch``).
        ray: :class:`RayOptions` (``address`` of an existing cluster, …).
        serve: :class:`ServeOptions` of ``rayserve``/``production`` (``max_ongoing``).
        stack: :class:`StackOptions` of ``production`` (``redis``, ``workers``, …).
        progress: one tqdm bar over every request of every mode.
        announce: called with one-line messages (which servers were chosen).
        on_result: called with each finished row, as it finishes (the widget lab uses it).
        into: a Comparison to fill as runs finish. When the comparison is cancelled (Ctrl-C),
            it still holds every finished run plus the interrupted one, whose unfinished
            requests are failed rows with error "cancelled" — nothing is dropped.
        skip_unavailable: a mode whose optional extra or service cannot be had (no Redis
            binary, Ray Serve not installed) is skipped with one line instead of failing the
            comparison (the demo).
        arrivals: requests arrive over time instead of all at once (open loop,
            :mod:`parallel_kit.bench.loadgen`): every mode gets the same schedule.
        slo: ``"ttft=2,tpot=0.1,latency=30"`` or a :class:`~parallel_kit.metrics.Slo`: open-loop
            runs then report ``goodput_rps``.
        salt: measurement hygiene against the server's prompt cache. True (default): a fresh
            random salt; a string: that salt (to repeat a run exactly); False: prompts as
            given. Each mode's run gets ``<salt>-<mode>`` (``summary.salt``) and its prompts a
            salt tag (:func:`~parallel_kit.workload.prompts.salt_specs`: one per request, or one per
            run for a ``workload``), so no run sees a prompt an earlier run sent.
        workload: ``shared-prefix`` or ``multi-turn`` (:func:`~parallel_kit.workload.prompts.
            workload_specs`): prompts that share prefixes on purpose, to show the cache.
        prefill_tokens_per_s: the reference prefill rate for inferring cache hits (default:
            the slowest seen in this comparison's runs).
        shortcuts: ``gpus``, ``slots``, ``profile``, ``engine``, ``engine_options``,
            ``concurrency``, ``prefetch``, ``ray_address`` build the records above
            (:class:`CompareShortcuts`); an unknown keyword is a ``TypeError``.

    Raises:
        ConfigError: an unknown mode, a bad count, a shortcut given beside its record, an
            empty salt, an unknown workload.
    """
    plan = _plan(modes, prompts, n=n, hosts=hosts, model=model, num_predict=num_predict,
                 time_scale=time_scale, backend=backend, api=api, servers=servers, queue=queue,
                 ray=ray, serve=serve, stack=stack, arrivals=arrivals, slo=slo, salt=salt,
                 workload=workload, shortcuts=dict(shortcuts))
    result = into if into is not None else Comparison()
    if prefill_tokens_per_s is not None:
        result.prefill_tokens_per_s = prefill_tokens_per_s
    comparing = _Comparing(plan, result, announce=announce, on_result=on_result)
    await comparing.run_all(progress=progress, skip_unavailable=skip_unavailable)
    comparing.finish()
    return result


@dataclass
class _Plan:
    """Step one of :func:`compare`: what runs, resolved from its arguments once for every mode
    (the mode names, baseline first; the requests; the arrival schedule; the option records)."""

    names: list[str]
    specs: Sequence[RequestSpec]
    schedule: Schedule | None
    arrivals: Arrivals | None
    slo: Slo | None
    hosts: Sequence[str] | None
    model: str
    model_named: bool
    backend: str | None
    api: str
    time_scale: float | None
    gpus: int
    server_opts: ServerOptions
    queue_opts: QueueOptions
    ray_opts: RayOptions
    serve: ServeOptions | None
    stack: StackOptions | None
    salt_base: str | None
    workload: str | None


def _plan(modes: str | Sequence[str] | None,
          prompts: str | os.PathLike[str] | Sequence[RequestSpec] | None, *, n: int | None,
          hosts: Sequence[str] | None, model: str | None, num_predict: int | None,
          time_scale: float | None, backend: str | None, api: str,
          servers: ServerOptions | None, queue: QueueOptions | None, ray: RayOptions | None,
          serve: ServeOptions | None, stack: StackOptions | None, arrivals: Arrivals | None,
          slo: Slo | str | None, salt: str | bool, workload: str | None,
          shortcuts: dict[str, Any]) -> _Plan:
    """:func:`compare`'s arguments resolved (see there; same errors)."""
    server_opts, queue_opts, ray_opts = _records(servers, queue, ray, shortcuts)
    salt_base = comparison_salt(salt)
    names = parse_modes(modes if modes is not None else mode_names())
    if BASELINE in names:
        names.remove(BASELINE)
        names.insert(0, BASELINE)
    if isinstance(prompts, (str, os.PathLike)):
        base: Sequence[RequestSpec] | None = load_prompts(prompts)
    else:
        base = list(prompts) if prompts else None
    count = n if n is not None else (len(base) if base else 5)
    model_named = model is not None
    model = model or _engine_default_model(server_opts.engine)
    specs = make_specs(count, base, model=model, num_predict=num_predict)
    schedule = None
    if arrivals is not None:
        schedule = arrivals.schedule(default_n=count)
        specs = specs_for(schedule, base, model=model, num_predict=num_predict)
    if workload is not None:
        if schedule is not None and schedule.specs is not None:
            raise ConfigError("--workload and --trace both give the prompts — use one")
        specs = workload_specs(workload, len(specs), questions=base, model=model,
                               num_predict=num_predict)
    gpus = server_opts.count
    if gpus is None:
        gpus = len(hosts) if hosts and len(hosts) > 1 else 3
    if time_scale is None and not hosts:
        time_scale = time_scale_from_env(1.0)
    return _Plan(names=names, specs=specs, schedule=schedule, arrivals=arrivals,
                 slo=Slo.parse(slo) if isinstance(slo, str) else slo, hosts=hosts,
                 model=model, model_named=model_named, backend=backend, api=api,
                 time_scale=time_scale, gpus=gpus, server_opts=server_opts,
                 queue_opts=queue_opts, ray_opts=ray_opts, serve=serve, stack=stack,
                 salt_base=salt_base, workload=workload)


class _Comparing:
    """Steps two and three of :func:`compare`: run each mode of a :class:`_Plan` in turn into
    ``result`` (:meth:`run_mode`; :meth:`run_all` keeps every request of a mode that fails or
    is cancelled as a row), then :meth:`finish` (speed-ups against the baseline)."""

    def __init__(self, plan: _Plan, result: Comparison, *,
                 announce: Callable[[str], None] | None,
                 on_result: Callable[[RequestResult], None] | None) -> None:
        self.plan, self.result = plan, result
        self.announce, self.on_result = announce, on_result
        self.seen: dict[str, list[RequestResult]] = {}
        self.sequential: RunResult | None = None
        self.capacities: dict[tuple[str, ...], tuple[int, Any, str]] = {}
        self.kind, self.scale = "sim", plan.time_scale or 1.0
        self.bar: Any = None

    def say(self, msg: str) -> None:
        """One line for the caller, once per comparison."""
        if msg not in self.result.messages:
            self.result.messages.append(msg)
            if self.announce:
                self.announce(msg)

    def finished(self, row: RequestResult) -> None:
        """Each row as it finishes: kept (for a partial run), counted, handed on."""
        self.seen.setdefault(row.mode, []).append(row)
        if self.bar is not None:
            self.bar.set_postfix_str(row.mode, refresh=False)
            self.bar.update(1)
        if self.on_result is not None:
            self.on_result(row)

    async def run_all(self, *, progress: bool, skip_unavailable: bool) -> None:
        """Every mode of the plan in order, one progress bar over all their requests."""
        plan, runs = self.plan, self.result.runs
        if progress:
            from .progress import make_progress

            self.bar = make_progress(len(plan.specs) * len(plan.names), "requests")
        ticker = (asyncio.ensure_future(_tick(self.bar))
                  if self.bar is not None and hasattr(self.bar, "tick") else None)
        try:
            for name in plan.names:
                try:
                    await self.run_mode(name)
                except MissingDependency as exc:
                    if not (skip_unavailable and get_info(name).needs):
                        raise
                    self.say(f"{name}: skipped — {exc}")
                except asyncio.CancelledError:
                    runs.append(self._partial(name))
                    self.result.interrupted = True
                    raise
                except AllWorkersLost as exc:
                    # Every server of this mode was lost: keep what finished (the error's
                    # partial run, every request a row) and go on with the next mode.
                    partial = exc.partial if isinstance(exc.partial, RunResult) else None
                    runs.append(partial or self._partial(name, error=str(exc)))
                    self.say(f"{name}: {exc}")
                except Exception as exc:
                    # A mode that failed to start or broke: its requests become failed rows
                    # with the cause, the earlier runs stay in ``into``, and the error goes up.
                    runs.append(self._partial(name, error=f"{name} failed: {exc}"))
                    raise
        finally:
            if ticker is not None:
                ticker.cancel()
            if self.bar is not None:
                self.bar.close()
            _carry_source_ids(runs, plan.specs)

    def _partial(self, name: str, error: str = "cancelled") -> RunResult:
        return _partial_run(name, self.plan.specs, self.seen.get(name, []), self.kind,
                            self.scale, self.plan.gpus, self.plan.model, error=error)

    async def run_mode(self, name: str) -> None:
        """One mode: its servers opened (or found), warmed up, run, predicted, kept."""
        plan = self.plan
        info = get_info(name)
        hosts = plan.hosts
        use_hosts = list(hosts) if (hosts and info.multi_server) else \
            (list(hosts[:1]) if hosts else None)
        in_actor = info.starts_own_servers and not hosts
        servers = info.servers_for(plan.gpus)
        opts = plan.server_opts
        async with open_backend(use_hosts, model=plan.model, backend=plan.backend,
                                servers=servers, slots=opts.slots,
                                time_scale=plan.time_scale, profile=opts.profile,
                                engine=opts.engine, engine_options=dict(opts.engine_options),
                                start_servers=not in_actor, announce=self.say, api=plan.api,
                                model_named=plan.model_named) as b:
            self.kind, self.scale = b.kind, b.time_scale
            self.result.backend, self.result.time_scale = b.kind, b.time_scale
            speedup, how = None, ""
            if b.kind == "ollama" and b.endpoints:
                key = tuple(ep.url for ep in b.endpoints)
                if key not in self.capacities:
                    self.capacities[key] = await _real_capacity(b, plan.api, self.say)
                found, speedup, how = self.capacities[key]
                b.endpoints = [replace(ep, slots=found) for ep in b.endpoints]
            ctx = self._context(b, servers, in_actor)
            setup = await _warm_up(b.endpoints, b.model, plan.api) if b.endpoints else 0.0
            run_salt = f"{plan.salt_base}-{name}" if plan.salt_base is not None else None
            mode_specs, run_specs = self._specs(b, run_salt)
            if plan.schedule is not None and plan.arrivals is not None:
                run = await _open_loop_run(name, run_specs, plan.schedule, plan.arrivals,
                                           plan.slo, ctx, b, servers,
                                           plan.queue_opts.concurrency)
            else:
                run = await info.load()(run_specs, ctx)
            s = run.summary
            s.engine = opts.engine if b.kind == "sim" else "ollama"
            s.server = b.server
            s.setup_s = (s.setup_s or 0.0) + setup
            if plan.schedule is None or plan.arrivals is None:  # open loop: loadgen predicts
                self._predict(name, run, mode_specs, b, speedup, how)
            _cache_check(run, self.result, run_salt, plan.workload, self.say)
            self.result.runs.append(run)

    def _context(self, b: Backend, servers: int, in_actor: bool) -> ModeContext:
        plan, stack = self.plan, self.plan.stack
        launched = launched_servers(b.kind, b.profile, start_own=in_actor,
                                    base=plan.server_opts)
        return ModeContext(endpoints=list(b.endpoints), backend=b.kind,
                           time_scale=b.time_scale, model=b.model,
                           api=plan.api, progress=False,  # type: ignore[arg-type]
                           gpus=servers, queue=plan.queue_opts, servers=launched,
                           ray=plan.ray_opts, serve=plan.serve or ServeOptions(),
                           stack=replace(stack or StackOptions(),
                                         announce=(stack.announce if stack else None)
                                         or self.say),
                           on_result=self.finished)

    def _specs(self, b: Backend, run_salt: str | None
               ) -> tuple[Sequence[RequestSpec], Sequence[RequestSpec]]:
        """The mode's requests: on the model the servers serve, salted; and as sent (capped
        on a real engine)."""
        plan = self.plan
        model_specs = _with_model(plan.specs, plan.model, b.model)
        mode_specs = (salt_specs(model_specs, run_salt, per_request=plan.workload is None)
                      if run_salt is not None else model_specs)
        real = b.kind == "ollama" or plan.server_opts.engine in ("llama-server", "llama-cpp")
        run_specs = _capped(mode_specs, REAL_ENGINE_NUM_PREDICT) if real else mode_specs
        if run_specs is not mode_specs:
            self.result.request_cap = REAL_ENGINE_NUM_PREDICT
            self.say(f"real engine: requests without num_predict are capped at "
                     f"{REAL_ENGINE_NUM_PREDICT} output tokens (--num-predict changes it)")
        return mode_specs, run_specs

    def _predict(self, name: str, run: RunResult, mode_specs: Sequence[RequestSpec],
                 b: Backend, speedup: Any, how: str) -> None:
        """Theory's makespan for a closed-loop run, and its efficiency against it."""
        s = run.summary
        # Real servers: predict from the sequential run's service times (its own, for the
        # sequential run itself: what remains is the overhead between requests).
        basis = run if name == BASELINE else self.sequential
        pred = _prediction(name, mode_specs, b, s.workers, s.slots,
                           self.plan.queue_opts.concurrency, basis, speedup=speedup)
        s.predicted_makespan_s = pred
        if pred and how:
            s.notes.append(how)
        if pred and _finite(s.makespan_s) and s.makespan_s > 0:
            s.efficiency = pred / s.makespan_s
        if name == BASELINE:
            self.sequential = run

    def finish(self) -> None:
        """Each run's speed-up against the baseline run, when there is one."""
        if self.sequential is None:
            return
        base_span = self.sequential.summary.makespan_s
        for r in self.result.runs:
            if _finite(base_span) and _finite(r.summary.makespan_s) and r.summary.makespan_s:
                r.summary.speedup_vs_sequential = base_span / r.summary.makespan_s


def _carry_source_ids(runs: Sequence[RunResult], specs: Sequence[RequestSpec]) -> None:
    """Give every row the ``id`` its prompt had in its file (``source_id``), by request id."""
    ids = {s.request_id: s.source_id for s in specs if s.source_id is not None}
    if not ids:
        return
    for run in runs:
        for row in run.requests:
            if row.source_id is None:
                row.source_id = ids.get(row.request_id)


async def _open_loop_run(name: str, specs: Sequence[RequestSpec], schedule: Schedule,
                         arrivals: Arrivals, slo: Slo | None, ctx: ModeContext, b: Backend,
                         workers: int, concurrency: int) -> RunResult:
    """One mode under open-loop load, with theory's predictions when the servers are simulated."""
    from .loadgen import fill_predictions, run_open_loop

    run = await run_open_loop(name, specs, schedule, ctx,
                              max_concurrency=arrivals.max_concurrency, warmup=arrivals.warmup,
                              slo=slo)
    if b.kind == "sim" and b.profile and b.engine == "sim":

        fill_predictions(run, name, specs, schedule, b.sim_profile(), workers=workers,
                         slots=run.summary.slots, concurrency=concurrency,
                         max_concurrency=arrivals.max_concurrency, warmup=arrivals.warmup,
                         max_ongoing=ctx.serve.max_ongoing)
    else:
        run.summary.notes.append("no prediction: the servers are not simulated (theory needs "
                                 "the latency model of a profile)")
    return run


def comparison_salt(salt: str | bool | None) -> str | None:
    """The comparison's salt: a fresh one for True, none for False/None, else the string.

    Raises:
        ConfigError: an empty string, or one with characters other than letters, digits,
            ``.``, ``_`` and ``-``.
    """
    if salt is True:
        return new_salt()
    if salt is False or salt is None:
        return None
    text = str(salt).strip()
    if not text or not all(c.isalnum() or c in "._-" for c in text):
        raise ConfigError(f"--salt {salt!r} must be letters, digits, '.', '_' or '-' (or use "
                          f"--no-salt to send the prompts as they are)")
    return text


def _cache_check(run: RunResult, comparison: Comparison, salt: str | None,
                 workload: str | None, say: Callable[[str], None]) -> None:
    """Infer the run's cache hits (``metrics.infer_prompt_cache``) into its summary, and flag
    it in one line when over 10 % of its prompt tokens came from the cache although it did
    not ask for caching (no ``workload``): such a run measured the cache, not the model."""
    from ..metrics import CACHE_WARN_FRACTION, infer_prompt_cache, ttft_by_turn

    s = run.summary
    s.salt, s.workload = salt, workload
    if workload == "multi-turn":
        turns = ttft_by_turn(run.requests)
        if turns:
            line = (f"{s.mode}: TTFT by turn (model s): "
                    + ", ".join(f"t{t} {v:.3g}" for t, v in turns.items()))
            s.notes.append(line)
            say(line)
    own = infer_prompt_cache(run.requests)
    if own is None:
        return
    ref = comparison.prefill_tokens_per_s
    rate = min(own.prefill_tokens_per_s, ref) if ref else own.prefill_tokens_per_s
    comparison.prefill_tokens_per_s = rate
    inf = infer_prompt_cache(run.requests, rate)
    assert inf is not None
    s.cache_hit_rate = inf.hit_rate
    s.cached_tokens = inf.cached_tokens
    s.prefill_tokens_per_s = rate
    if workload is not None:
        say(f"{s.mode}: {inf.hit_rate:.0%} of the prompt tokens came from the prompt cache "
            f"(inferred from prompt_eval_count and prompt_eval_duration)")
    elif inf.hit_rate > CACHE_WARN_FRACTION:
        s.cache_flagged = True
        line = (f"warning: {s.mode}: {inf.hit_rate:.0%} of its prompt tokens came from the "
                f"server's prompt cache (inferred) — it measured the cache, not the model; "
                f"run with salting on (the default, no --no-salt) or a fresh server")
        s.notes.append(line)
        say(line)


def _partial_run(mode: str, specs: Sequence[RequestSpec], rows: Sequence[RequestResult],
                 backend: str, time_scale: float, gpus: int, model: str,
                 error: str = "cancelled") -> RunResult:
    """The interrupted mode's rows: the finished ones, and a failed row (``error``) for every
    other."""
    done = {r.request_id for r in rows}
    missing = [RequestResult(request_id=s.request_id, mode=mode, prompt=s.prompt,
                             model=s.model or model, ok=False, error=error)
               for s in specs if s.request_id not in done]
    all_rows = list(rows) + missing
    workers = get_info(mode).servers_for(gpus)
    note = ("interrupted: unfinished requests are failed rows" if error == "cancelled" else
            f"unfinished requests are failed rows: {error}")
    summary = summarize(all_rows, mode=mode, backend=backend, time_scale=time_scale,
                        workers=workers, slots=1, model=model, notes=[note])
    return RunResult(summary, all_rows)


async def _tick(bar: Any, every_s: float = 1.0) -> None:
    """Let a line-based progress print while a long request is still running."""
    while True:
        await asyncio.sleep(every_s)
        bar.tick()


async def _real_capacity(b: Backend, api: str, say: Callable[[str], None]
                         ) -> tuple[int, Any, str]:
    """Slots and S(k) of real servers: (slots, S or None, what the prediction assumes).

    Slots from ``--slots`` or the server's own report (llama-server's ``/props``), else
    measured; S(k) measured by a short concurrency scan (:func:`~parallel_kit.measure.probe.
    measure_capacity`, on the first server, up to 4 at once) whenever there may be more than
    one slot. A scan that fails leaves the slots as they were and S(k) = 1, and says so.
    """
    from ..errors import ParallelKitError
    from ..measure.probe import measure_capacity

    slots = b.endpoints[0].slots
    known = bool(b.slots_source)
    if known and slots == 1:
        return 1, None, ""
    max_k = min(slots, 4) if known else 4
    try:
        cap = await measure_capacity(b.endpoints[0].url, b.model, api=api, max_k=max_k)
    except ParallelKitError as exc:
        say(f"could not measure the server's slots and S(k) ({exc}) — give --slots N; "
            f"predictions assume S(k) = 1")
        return slots, None, "prediction assumes S(k) = 1 (the concurrency scan failed)"
    curve = ", ".join(f"S({k})={v:.2f}" for k, v in sorted(cap.speedup.items()))
    if not known:
        slots = cap.slots
        bound = " at least" if cap.slots == cap.max_k else ""
        say(f"measured{bound} {slots} slot{'s' if slots != 1 else ''} at {b.endpoints[0].url} "
            f"(a short concurrency scan, {curve}) — give --slots N to set them")
    else:
        say(f"measured S(k) at {b.endpoints[0].url}: {curve}")
    return slots, cap.S, (f"prediction uses the server's S(k) measured before the run ({curve}; "
                          f"beyond k={cap.max_k} no further gain assumed)")


def _with_model(specs: Sequence[RequestSpec], asked: str, used: str) -> Sequence[RequestSpec]:
    """``specs`` with the backend's model where they carry the one asked for (an
    OpenAI-compatible server's only model, when none was named)."""
    if asked == used:
        return specs
    return [replace(s, model=used) if s.model == asked else s for s in specs]


def _capped(specs: Sequence[RequestSpec], cap: int) -> Sequence[RequestSpec]:
    """``specs`` with ``num_predict=cap`` where a spec sets none (the same list when all do)."""
    if all(s.num_predict is not None for s in specs):
        return specs
    return [s if s.num_predict is not None else replace(s, num_predict=cap) for s in specs]


def run_interruptibly(coro: Any) -> bool:
    """Run ``coro`` from the CLI; returns True when Ctrl-C cut it short (results kept)."""
    try:
        run_sync(coro)
    except KeyboardInterrupt:
        return True
    return False


def compare_sync(*args: Any, **kwargs: Any) -> Comparison:
    """:func:`compare` for plain scripts (works inside a running loop too)."""
    return run_sync(compare(*args, **kwargs))


def write_outputs(comparison: Comparison, *, json_path: str | None = None,
                  csv_path: str | None = None, plot_path: str | None = None) -> list[Path]:
    """Write the ``--json``/``--csv``/``--plot`` files that were asked for.

    A file that cannot be written goes to a fallback in the temporary folder, and the
    message says where (:func:`~parallel_kit.outputs.write_or_rescue`): a finished run is
    never lost to a bad path.
    """
    from ..outputs import write_or_rescue

    runs = comparison.runs
    written = []
    if json_path:
        written.append(write_or_rescue(json_path, lambda p: write_json(p, runs)))
    if csv_path:
        written.append(write_or_rescue(csv_path, lambda p: write_csv(p, runs)))
    if plot_path and runs:
        from .. import plots

        fig = plots.timeline(runs)
        written.append(write_or_rescue(plot_path, lambda p: plots.save(fig, p)))
    for p in written:
        print(f"wrote {p}", file=sys.stderr)
    return written

