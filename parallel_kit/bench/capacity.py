"""Capacity planning: how many servers (GPUs) and slots does a traffic need to meet an SLO?

Three questions, one module (``parallel-kit capacity`` is its command line):

* :func:`plan_capacity` — **predict before measuring.** Every configuration (mode × servers W ×
  slots K, up to ``max_gpus``) goes through theory's discrete-event run of the simulator's own
  latency model (:func:`parallel_kit.theory.predict_load`) at the traffic's rate and arrival
  process; the smallest configuration whose predicted figures are all within the SLO is the
  recommendation, the one just below it says which SLO key it misses and by how much.
* :func:`measure_plan` — **then measure.** The recommended and the next smaller configuration
  run on the simulator in-process (:func:`parallel_kit.bench.compare`, open loop) with the same
  arrivals; their measured figures are judged against the same SLO.
* :func:`max_rate` — **how far does one configuration go?** Theory brackets the highest rate
  within the SLO; at most ``runs`` measured runs bisect the bracket; repeats with other arrival
  seeds give a confidence interval.

The SLO here bounds *percentiles of a run* (:class:`PercentileSlo`, keys named as the summary's
fields: ``latency_p95``, ``ttft_p95``, ``tpot_p95``, …), unlike ``bench --slo``, which bounds
each request (for goodput). Latency and TTFT count from each request's arrival (what the user
waited, queueing included), as theory's figures do (docs/CAPACITY.md).

"Smaller" orders configurations by servers first (GPUs cost most), then slots per server.

All times are model seconds (a real server: clock seconds); rates are requests per model second.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shlex
import statistics
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..metrics import parse_slo_bounds
from ..workload.arrivals import PROCESSES, Schedule, check_burstiness, check_rate, make_schedule

__all__ = [
    "SLO_KEYS",
    "Candidate",
    "CapacityPlan",
    "MaxRateResult",
    "Measurement",
    "Miss",
    "PercentileSlo",
    "Traffic",
    "auto_time_scale",
    "json_safe",
    "load_calibrated",
    "max_rate",
    "measure_config",
    "measure_plan",
    "plan_capacity",
    "predict_config",
]

#: The figures an SLO may bound: ``<metric>_<statistic>`` as the run summary names them.
SLO_METRICS = ("latency", "ttft", "tpot")
SLO_STATS = ("mean", "p50", "p95", "p99")
SLO_KEYS = tuple(f"{m}_{s}" for m in SLO_METRICS for s in SLO_STATS)
#: Arrivals per configuration in the steady-state prediction (p95 within a few %; ~30 ms each).
PLAN_REQUESTS = 5000
#: Requests of one measured run when the traffic does not say (``--n``).
MEASURE_N = 100
#: Default configurations.
DEFAULT_MODES = ("pool",)
DEFAULT_SLOTS = (1, 2, 4)
DEFAULT_MAX_GPUS = 8
#: Clock seconds one request alone takes on a measuring simulator when no time scale is given:
#: long enough that the kit's own overhead (a few clock ms per request on a busy 2-core
#: machine) stays a few per cent of it — at 0.05 s a request, latency p95 measured 17 % above
#: theory; at 0.2 s, 2.5 % (docs/CAPACITY.md).
AUTO_SERVICE_CLOCK_S = 0.2
#: Measured runs one max-rate search may spend, and theory's bracket around its own answer.
MAX_RATE_RUNS = 6
BRACKET = (0.85, 1.15)
#: Two-sided 95 % quantiles of Student's t for 1…10 degrees of freedom (any statistics table,
#: e.g. NIST/SEMATECH e-Handbook 1.3.6.7.2); beyond 10 the normal 1.96 is within 6 %.
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)


# ---------------------------------------------------------------------------------------------
# The SLO
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Miss:
    """One SLO key a configuration misses: its figure, the bound, both in model seconds."""

    key: str
    value: float
    bound: float

    @property
    def over_s(self) -> float:
        """How far above the bound (model seconds; ∞ when the queue grows without bound)."""
        return self.value - self.bound

    @property
    def ratio(self) -> float:
        """value ÷ bound (1.2: 20 % over)."""
        return self.value / self.bound

    def describe(self) -> str:
        if not math.isfinite(self.value):
            return f"{self.key} grows without bound (over capacity) > {self.bound:g} s"
        return (f"{self.key} {self.value:.3g} s > {self.bound:g} s "
                f"(+{self.over_s:.3g} s, {100 * (self.ratio - 1):.0f} % over)")


@dataclass(frozen=True, slots=True)
class PercentileSlo:
    """Bounds on a run's figures, model seconds: ``{"latency_p95": 30.0, …}``.

    Keys are :data:`SLO_KEYS` (a trailing ``_s`` is accepted, as in the summary's field names).
    A run meets the SLO when every bounded figure is ≤ its bound (NaN fails).
    """

    bounds: tuple[tuple[str, float], ...]

    def __post_init__(self) -> None:
        if not self.bounds:
            raise ConfigError("an empty SLO — give e.g. --slo latency_p95=30,ttft_p95=5")
        for key, value in self.bounds:
            if key not in SLO_KEYS:
                raise ConfigError(_unknown_key(key))
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(f"SLO {key}={value!r} must be a positive number of seconds — "
                                  f"e.g. {key}=30")

    @classmethod
    def parse(cls, text: str) -> PercentileSlo:
        """``"latency_p95=30,ttft_p95=5"`` (seconds) → a :class:`PercentileSlo`.

        Raises:
            ConfigError: a part without ``=``, an unknown key (the valid ones are named), a
                value that is not a positive finite number, a key given twice, nothing at all.
        """
        if not isinstance(text, str):
            raise ConfigError(f"the SLO must be text like latency_p95=30, got {text!r}")
        bounds = parse_slo_bounds(text, SLO_KEYS, example="latency_p95=30,ttft_p95=5",
                                  unknown=_unknown_key, drop_s_suffix=True)
        return cls(tuple(bounds.items()))

    @property
    def keys(self) -> list[str]:
        return [k for k, _ in self.bounds]

    def misses(self, figures: Mapping[str, float]) -> list[Miss]:
        """The keys whose figure is above its bound (or missing/NaN: reported as NaN)."""
        out = []
        for key, bound in self.bounds:
            v = figures.get(key, math.nan)
            if v is None or math.isnan(v) or v > bound:
                out.append(Miss(key, math.nan if v is None else float(v), bound))
        return out

    def __str__(self) -> str:
        return ",".join(f"{k}={v:g}" for k, v in self.bounds)


def _unknown_key(key: str) -> str:
    hint = ""
    if key in SLO_METRICS:
        hint = (f" (bench's per-request {key}=… is not a percentile here: write {key}_p95=… "
                f"for the 95th percentile)")
    return f"unknown SLO key {key!r}{hint} — valid keys: {', '.join(SLO_KEYS)} (seconds)"


# ---------------------------------------------------------------------------------------------
# The traffic and the server
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Traffic:
    """What arrives: a rate and a process (steady state, or ``n`` arrivals drawn with ``seed``),
    or a fixed schedule (a trace).

    Attributes:
        rate: requests per model second (a trace: its mean rate).
        process: ``poisson``, ``constant``, ``gamma`` (with ``burstiness``) or ``trace``.
        n: plan for exactly these ``n`` arrivals (seeded) instead of the steady state; also
            the size of a measured run (default :data:`MEASURE_N`).
        schedule: a trace's schedule (``process == "trace"``).
    """

    rate: float
    process: str = "poisson"
    burstiness: float = 1.0
    seed: int = 0
    n: int | None = None
    schedule: Schedule | None = None
    trace: str | None = None
    trace_speed: float = 1.0

    def __post_init__(self) -> None:
        if self.schedule is None:
            check_rate(self.rate)
            if self.process not in PROCESSES:
                raise ConfigError(f"--arrivals {self.process!r} is not known — choose from "
                                  f"{', '.join(PROCESSES)}")
            if self.process == "gamma":
                check_burstiness(self.burstiness)
        if self.n is not None and (isinstance(self.n, bool) or not isinstance(self.n, int)
                                   or self.n < 2):
            raise ConfigError(f"--n must be at least 2 requests, got {self.n!r}")

    @classmethod
    def from_trace(cls, path: str | os.PathLike[str], speed: float = 1.0) -> Traffic:
        """The traffic of a JSONL trace (``bench --trace``'s format), ``speed`` times as fast.

        Raises:
            ConfigError: an unreadable or malformed trace (the line is named).
        """
        from ..workload.arrivals import load_trace

        schedule = load_trace(path).schedule(speed)
        return cls(rate=schedule.rate, process="trace", n=len(schedule), schedule=schedule,
                   trace=str(path), trace_speed=speed)

    def finite(self, rate: float | None = None, seed: int | None = None) -> Schedule:
        """The schedule a measured run uses (``rate``/``seed`` override the traffic's)."""
        if self.schedule is not None:
            return self.schedule
        return make_schedule(self.rate if rate is None else rate, n=self.n or MEASURE_N,
                             process=self.process, burstiness=self.burstiness,
                             seed=self.seed if seed is None else seed)

    @property
    def steady(self) -> bool:
        """Plan for the steady state (no ``n``, no trace)."""
        return self.schedule is None and self.n is None

    def describe(self) -> str:
        if self.schedule is not None:
            return self.schedule.describe()
        what = (f"gamma (burstiness {self.burstiness:g})" if self.process == "gamma"
                else self.process)
        head = f"{what} arrivals at {self.rate:.4g} req/s (one every {1 / self.rate:.3g} s)"
        return head + (f", {self.n} requests, seed {self.seed}" if self.n else
                       ", steady state")

    def to_dict(self) -> dict[str, Any]:
        return {"rate_rps": self.rate, "process": self.process,
                "burstiness": self.burstiness if self.process == "gamma" else None,
                "seed": self.seed, "n": self.n, "steady_state": self.steady,
                "description": self.describe()}


def load_calibrated(path: str | os.PathLike[str], *, model: str | None = None) -> Any:
    """A simulator profile from a calibration file: ``probe --json`` output, or a profile file
    (``{"profiles": {name: …}}``, as ``probe --save-profile`` writes).

    Args:
        model: the model the plan is for; the file must have measured it.

    Raises:
        ConfigError: unreadable or malformed file; a file that measured another model (the
            message names both and the fix).
    """
    from ..measure.calibrate import profile_from_probe
    from ..sim.profiles import profile_from_dict

    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read --calibrated {p} ({exc.strerror or exc}) — give the "
                          f"file `parallel-kit probe --json FILE` wrote") from None
    except ValueError as exc:
        raise ConfigError(f"--calibrated {p} is not JSON ({exc}) — give the file "
                          f"`parallel-kit probe --json FILE` wrote") from None
    if isinstance(doc, dict) and isinstance(doc.get("profiles"), dict):
        entries = doc["profiles"]
        matching = [n for n, e in entries.items()
                    if model is None or model in (e.get("models") or {})]
        if not matching:
            measured = sorted({m for e in entries.values() for m in (e.get("models") or {})})
            raise ConfigError(f"--calibrated {p} was measured on {', '.join(measured) or 'no model'}, "
                              f"not {model} — calibrate {model} (parallel-kit probe --model "
                              f"{model} --json FILE) or plan for --model {measured[0] if measured else '…'}")
        name = matching[0]
        return profile_from_dict(name, entries[name])
    if not isinstance(doc, dict) or "decode_tokens_per_s" not in doc:
        raise ConfigError(f"--calibrated {p} is neither `probe --json` output (no "
                          f"decode_tokens_per_s) nor a profile file — run `parallel-kit probe "
                          f"--json FILE` against the server")
    measured_model = doc.get("model")
    if model is not None and measured_model and measured_model != model:
        raise ConfigError(f"--calibrated {p} was measured on model {measured_model}, not "
                          f"{model} — probe {model} (parallel-kit probe --model {model} --json "
                          f"FILE), or plan for --model {measured_model}")
    return profile_from_probe("calibrated", doc, model=model or measured_model)


@contextlib.contextmanager
def _profile_registered(profile: Any) -> Iterator[str]:
    """Make ``profile`` loadable by name for servers started in this process (a temporary
    profile file named by ``PARALLEL_KIT_PROFILES``, restored afterwards)."""
    from ..sim.profiles import PROFILES_ENV, list_profiles, save_profile

    if profile.name in list_profiles():
        yield profile.name
        return
    old = os.environ.get(PROFILES_ENV)
    with tempfile.TemporaryDirectory(prefix="parallel-kit-capacity-") as tmp:
        path = Path(tmp) / "profiles.json"
        save_profile(profile, path)
        os.environ[PROFILES_ENV] = str(path)
        try:
            yield profile.name
        finally:
            if old is None:
                os.environ.pop(PROFILES_ENV, None)
            else:
                os.environ[PROFILES_ENV] = old


def service_model(profile: Any, traffic: Traffic, model: str | None, num_predict: int | None) -> Any:
    """The service model of the requests the measured runs send (the same prompts, cycled)."""
    from .. import theory
    from ..workload.arrivals import specs_for

    model = model or profile.default_model
    sched = traffic.schedule or make_schedule(1.0, n=5, process="constant")
    specs = specs_for(sched, None, model=model, num_predict=num_predict)
    return theory.service_model_from_profile(profile, specs)


# ---------------------------------------------------------------------------------------------
# Predicting one configuration, and the plan
# ---------------------------------------------------------------------------------------------
@dataclass
class Candidate:
    """One configuration and theory's figures for it (model seconds, from arrival).

    Attributes:
        mode, servers, slots: the configuration (W servers × K slots per server).
        figures: the predicted value of every :data:`SLO_KEYS` entry.
        capacity_rps, utilisation: the most it finishes per second with every slot busy; ρ.
        misses: the SLO keys it misses (empty: it meets the SLO).
        explanation: theory's one-line account.
    """

    mode: str
    servers: int
    slots: int
    figures: dict[str, float]
    capacity_rps: float
    utilisation: float
    misses: list[Miss] = field(default_factory=list)
    explanation: str = ""

    @property
    def meets(self) -> bool:
        return not self.misses

    @property
    def size(self) -> tuple[int, int]:
        """Servers first, then slots: what "smaller" means."""
        return (self.servers, self.slots)

    @property
    def label(self) -> str:
        return (f"{self.servers} server{'s' if self.servers != 1 else ''} × {self.slots} "
                f"slot{'s' if self.slots != 1 else ''} ({self.mode})")

    def worst_ratio(self) -> float:
        return max((m.ratio for m in self.misses), default=0.0)

    def why(self) -> str:
        return "; ".join(m.describe() for m in self.misses) if self.misses else "meets the SLO"

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "servers": self.servers, "slots": self.slots,
                "label": self.label, "meets": self.meets, "figures": self.figures,
                "capacity_rps": self.capacity_rps, "utilisation": self.utilisation,
                "misses": [asdict(m) | {"describe": m.describe()} for m in self.misses],
                "explanation": self.explanation}


def _figures(pred: Any, service: Any) -> dict[str, float]:
    """Theory's figures under the SLO keys. TPOT: the full-batch bound (every slot decoding:
    ``K / (decode_tps × S(K))``), which a loaded server's p95 reaches; below it at light load."""
    out = {f"latency_{s}": float(getattr(pred, f"latency_{s}_s")) for s in SLO_STATS}
    out.update({f"ttft_{s}": float(getattr(pred, f"ttft_{s}_s")) for s in SLO_STATS})
    k = pred.slots
    tpot = k / (service.decode_tps * service.speedup(k))
    out.update({f"tpot_{s}": tpot for s in SLO_STATS})
    return out


def predict_config(mode: str, servers: int, slots: int, service: Any, traffic: Traffic,
                   slo: PercentileSlo, *, requests: int = PLAN_REQUESTS,
                   rate: float | None = None, seed: int | None = None) -> Candidate:
    """Theory's figures for one configuration under ``traffic`` (or at ``rate``/``seed``).

    Steady state when the traffic has no ``n`` and no trace (``requests`` arrivals of the
    discrete-event run), else the same run over the finite schedule a measurement uses.
    """
    from .. import theory

    common: dict[str, Any] = {"workers": servers, "slots": slots}
    if traffic.steady and rate is None:
        pred = theory.predict_load(mode, service, rate=traffic.rate, process=traffic.process,
                                   burstiness=traffic.burstiness, seed=traffic.seed,
                                   requests=requests, **common)
    else:
        pred = theory.predict_load(mode, service, schedule=traffic.finite(rate, seed), **common)
    figs = _figures(pred, service)
    return Candidate(mode, servers, slots, figs, pred.capacity_rps, pred.utilisation,
                     slo.misses(figs), pred.explanation)


@dataclass
class CapacityPlan:
    """What :func:`plan_capacity` found.

    Attributes:
        recommended: the smallest configuration meeting the SLO, one per mode that meets it
            at that size (empty: none up to ``max_gpus`` does).
        next_smaller: the configuration just below it (its best mode), and why it misses;
            ``None`` when the recommendation is already 1 × the fewest slots.
        closest: when nothing meets — the configuration nearest to meeting (smallest worst
            ratio of figure to bound).
        candidates: every configuration predicted, smallest first.
    """

    traffic: Traffic
    slo: PercentileSlo
    profile: str
    model: str
    max_gpus: int
    modes: list[str]
    slots: list[int]
    candidates: list[Candidate]
    recommended: list[Candidate]
    next_smaller: Candidate | None
    closest: Candidate | None
    measurements: list[Measurement] = field(default_factory=list)
    time_scale: float | None = None
    command: str | None = None
    #: The calibration file the server's speeds came from (``--calibrated``), if any.
    calibrated: str | None = None
    #: The profile itself (a calibrated one has no name to load it by); not in ``to_dict``.
    server_profile: Any = field(default=None, repr=False)

    @property
    def best(self) -> Candidate | None:
        return self.recommended[0] if self.recommended else None

    def bench_command(self, c: Candidate) -> str:
        """The ``parallel-kit bench`` line that measures configuration ``c`` under the traffic."""
        t = self.traffic
        parts = ["parallel-kit bench", f"--mode {c.mode}", f"--gpus {c.servers}",
                 f"--slots {c.slots}", *_arrival_flags(t)]
        if t.process != "trace":
            parts += [f"--n {t.n or MEASURE_N}", f"--seed {t.seed}"]
        parts.append(f"--profile {self.profile}" if not self.calibrated else
                     "--profile NAME  # after: parallel-kit probe --save-profile NAME")
        return " ".join(parts)

    def measure_command(self) -> str:
        """One line that predicts and measures both configurations: ``capacity … --measure``."""
        t = self.traffic
        parts = ["parallel-kit capacity", *_arrival_flags(t)]
        if t.process != "trace":
            if t.n:
                parts.append(f"--n {t.n}")
            parts.append(f"--seed {t.seed}")
        server = (f"--calibrated {shlex.quote(self.calibrated)}" if self.calibrated
                  else f"--profile {self.profile}")
        parts += [f"--slo {self.slo}", server,
                  f"--modes {','.join(self.modes)}", f"--max-gpus {self.max_gpus}",
                  f"--slots {','.join(map(str, self.slots))}", "--measure"]
        return " ".join(parts)

    def check(self) -> None:
        """Raise when no configuration meets the SLO (naming the closest and by how much)."""
        if self.recommended:
            return
        c = self.closest
        near = f"; closest: {c.label}, {c.why()}" if c is not None else ""
        raise ConfigError(f"no configuration up to --max-gpus {self.max_gpus} × --slots "
                          f"{max(self.slots)} meets the SLO {self.slo}{near} — raise --max-gpus "
                          f"or --slots, or relax the SLO")

    def report(self) -> str:
        """The plan as terminal text."""
        lines = [f"traffic: {self.traffic.describe()}",
                 f"server: profile {self.profile}, model {self.model}; SLO {self.slo} "
                 f"(latency and TTFT from arrival, model seconds)"]
        keys = self.slo.keys
        head = f"{'configuration':<30}{'capacity':>10}{'ρ':>7}" + "".join(
            f"{k:>14}" for k in keys) + "  verdict"
        lines += ["", head, "-" * len(head)]
        for c in self.candidates:
            figs = "".join(f"{_num(c.figures[k]):>14}" for k in keys)
            lines.append(f"{c.label:<30}{c.capacity_rps:>10.3g}{_num(c.utilisation):>7}"
                         f"{figs}  {'meets' if c.meets else 'misses'}")
        lines.append("")
        if self.best is not None:
            modes = ", ".join(c.mode for c in self.recommended)
            lines.append(f"smallest configuration meeting the SLO: {self.best.servers} "
                         f"server(s) × {self.best.slots} slot(s) — mode(s): {modes}")
            lines.append("  predicted: " + ", ".join(
                f"{k} {self.best.figures[k]:.3g} s" for k in keys))
            if self.next_smaller is not None:
                lines.append(f"next smaller: {self.next_smaller.label} misses: "
                             f"{self.next_smaller.why()}")
            else:
                lines.append("next smaller: none (this is the smallest configuration asked "
                             "for)")
            lines.append(f"measure both: {self.measure_command()}")
        elif self.closest is not None:
            lines.append(f"no configuration meets the SLO; closest: {self.closest.label}: "
                         f"{self.closest.why()}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"traffic": self.traffic.to_dict(), "slo": str(self.slo),
                "slo_bounds": dict(self.slo.bounds), "profile": self.profile,
                "calibrated": self.calibrated,
                "model": self.model, "max_gpus": self.max_gpus, "modes": self.modes,
                "slots": self.slots, "time_scale": self.time_scale, "command": self.command,
                "recommended": [c.to_dict() for c in self.recommended],
                "next_smaller": self.next_smaller.to_dict() if self.next_smaller else None,
                "closest": self.closest.to_dict() if self.closest else None,
                "measure_command": self.measure_command() if self.recommended else None,
                "candidates": [c.to_dict() for c in self.candidates],
                "measurements": [m.to_dict() for m in self.measurements]}


def _arrival_flags(t: Traffic) -> list[str]:
    """The command-line flags that give ``t``'s arrivals: a trace (and its speed), or the rate,
    the process and a gamma process's burstiness."""
    if t.process == "trace":
        return [f"--trace {shlex.quote(t.trace or 'FILE')}"
                + (f" --trace-speed {t.trace_speed:g}" if t.trace_speed != 1 else "")]
    parts = [f"--rate {t.rate:g}", f"--arrivals {t.process}"]
    if t.process == "gamma":
        parts.append(f"--burstiness {t.burstiness:g}")
    return parts


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (∞: over capacity; NaN: not measured) as ``None``,
    tuples as lists — standard JSON (``allow_nan=False``)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def _num(x: float) -> str:
    if x is None or math.isnan(x):
        return "—"
    if math.isinf(x):
        return "∞"
    return f"{x:.3g}"


def _checked_modes(modes: Sequence[str]) -> list[str]:
    from ..modes.registry import mode_names

    names = [m.strip() for m in modes if m.strip()]
    if not names:
        raise ConfigError("--modes is empty — give e.g. --modes pool,async")
    bad = [m for m in names if m not in mode_names()]
    if bad:
        raise ConfigError(f"unknown mode {bad[0]!r} in --modes — choose from "
                          f"{', '.join(mode_names())}")
    return list(dict.fromkeys(names))


def _checked_slots(slots: Sequence[int]) -> list[int]:
    out = sorted(set(slots))
    if not out or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in out):
        raise ConfigError(f"--slots must be whole numbers ≥ 1, got {list(slots)!r} — e.g. "
                          f"--slots 1,2,4")
    return out


def plan_capacity(traffic: Traffic, slo: PercentileSlo, *, profile: Any = "seed",
                  model: str | None = None, modes: Sequence[str] = DEFAULT_MODES,
                  max_gpus: int = DEFAULT_MAX_GPUS, slots: Sequence[int] = DEFAULT_SLOTS,
                  num_predict: int | None = None, requests: int = PLAN_REQUESTS
                  ) -> CapacityPlan:
    """The smallest configuration (servers × slots, and which modes) whose predicted figures
    meet ``slo`` under ``traffic``; the next smaller one and why it misses.

    Args:
        traffic: the arrivals (:class:`Traffic`).
        slo: the bounds (:class:`PercentileSlo`).
        profile: a simulator profile or its name (``load_calibrated`` for a measured server).
        model: the model (default the profile's).
        modes: the modes to consider; single-server modes (``async``, ``batch``,
            ``sequential``) only at one server.
        max_gpus: the most servers (one Ollama per GPU).
        slots: slots per server to consider.
        requests: arrivals of each steady-state prediction.

    Returns:
        A :class:`CapacityPlan` (``recommended`` empty when nothing meets: see ``check``).

    Raises:
        ConfigError: bad modes/slots/max_gpus; a rate at or above what the largest
            configuration can serve at all (no steady state anywhere) — naming its capacity.
    """
    from ..modes.registry import get_info
    from ..sim.profiles import load_profile

    if isinstance(max_gpus, bool) or not isinstance(max_gpus, int) or max_gpus < 1:
        raise ConfigError(f"--max-gpus must be a whole number ≥ 1, got {max_gpus!r}")
    names = _checked_modes(modes)
    ks = _checked_slots(slots)
    prof = load_profile(profile)
    service = service_model(prof, traffic, model, num_predict)
    configs = sorted({(w, k, m) for m in names
                      for w in (range(1, max_gpus + 1) if get_info(m).multi_server else (1,))
                      for k in ks}, key=lambda c: (c[0], c[1], names.index(c[2])))
    if traffic.steady:
        from .. import theory

        caps = [(theory.predict_load(m, service, rate=1.0, requests=50, workers=w,
                                     slots=k).capacity_rps, w, k, m) for w, k, m in configs]
        top = max(caps)
        if traffic.rate >= top[0]:
            if get_info(top[3]).multi_server:
                # W servers of this kind finish W × one's capacity: ρ < 1 needs more than
                # rate / one of them.
                one = top[0] / top[1]
                fix = f"raise --max-gpus to at least {math.floor(traffic.rate / one) + 1}"
            else:
                fix = "consider a mode that spreads requests over servers (--modes pool)"
            raise ConfigError(
                f"--rate {traffic.rate:g} req/s is at or above what the largest configuration "
                f"can serve at all: {top[1]} server(s) × {top[2]} slot(s) ({top[3]}) finish "
                f"{top[0]:.3g} req/s — lower --rate, or {fix}")
    candidates = [predict_config(m, w, k, service, traffic, slo, requests=requests)
                  for w, k, m in configs]
    meeting = [c for c in candidates if c.meets]
    recommended: list[Candidate] = []
    next_smaller = closest = None
    if meeting:
        size = min(c.size for c in meeting)
        recommended = [c for c in meeting if c.size == size]
        below = [c for c in candidates if c.size < size]
        if below:
            last = max(c.size for c in below)
            next_smaller = min((c for c in below if c.size == last), key=Candidate.worst_ratio)
    else:
        closest = min(candidates, key=lambda c: (c.worst_ratio(), c.size))
    return CapacityPlan(traffic, slo, getattr(prof, "name", str(profile)),
                        model or prof.default_model, max_gpus, names, ks, candidates,
                        recommended, next_smaller, closest, server_profile=prof)


# ---------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------
@dataclass
class Measurement:
    """One measured run of a configuration, judged against the SLO.

    Attributes:
        figures: measured values of every :data:`SLO_KEYS` entry (latency/TTFT from arrival).
        predicted: theory for this run's own arrivals (the same discrete-event run).
        misses: SLO keys the measurement misses.
        run: the :class:`~parallel_kit.records.RunResult` (every request a row).
    """

    mode: str
    servers: int
    slots: int
    rate: float
    seed: int | None
    figures: dict[str, float]
    predicted: dict[str, float]
    misses: list[Miss]
    failed: int
    run: Any = None

    @property
    def meets(self) -> bool:
        return not self.misses and self.failed == 0

    @property
    def label(self) -> str:
        return (f"{self.servers} server{'s' if self.servers != 1 else ''} × {self.slots} "
                f"slot{'s' if self.slots != 1 else ''} ({self.mode})")

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "servers": self.servers, "slots": self.slots,
                "label": self.label, "rate_rps": self.rate, "seed": self.seed,
                "meets": self.meets, "figures": self.figures, "predicted": self.predicted,
                "misses": [asdict(m) | {"describe": m.describe()} for m in self.misses],
                "failed": self.failed}


def auto_time_scale(service: Any) -> float:
    """The time scale a measurement uses when none is given: ``PARALLEL_KIT_TIME_SCALE`` when
    set, else one request alone takes :data:`AUTO_SERVICE_CLOCK_S` clock seconds (at most 1)."""
    from ..config import time_scale_from_env

    env = time_scale_from_env(0.0)
    if env > 0:
        return env
    mean = statistics.fmean(service.solo_s)
    return min(1.0, AUTO_SERVICE_CLOCK_S / mean) if mean > 0 else 1.0


def measured_figures(run: Any) -> dict[str, float]:
    """A run's figures under the SLO keys: latency/TTFT from arrival (``open_loop``), TPOT."""
    s = run.summary
    o = s.open_loop or {}
    out: dict[str, float] = {}
    for st in SLO_STATS:
        out[f"latency_{st}"] = float(o.get(f"latency_from_arrival_{st}_s", math.nan))
        out[f"ttft_{st}"] = float(o.get(f"ttft_from_arrival_{st}_s", math.nan))
        out[f"tpot_{st}"] = float(getattr(s, f"tpot_{st}_s", math.nan))
    return out


async def measure_config(mode: str, servers: int, slots: int, traffic: Traffic,
                         slo: PercentileSlo, *, profile: Any = "seed",
                         model: str | None = None, num_predict: int | None = None,
                         time_scale: float | None = None, rate: float | None = None,
                         seed: int | None = None) -> Measurement:
    """Run one configuration on embedded simulated servers under the traffic's arrivals
    (``n`` of them, default :data:`MEASURE_N`; ``rate``/``seed`` override) and judge it.

    Raises:
        ConfigError: bad arguments (from :func:`parallel_kit.bench.compare`).
    """
    from .. import theory
    from ..modes.options import ServerOptions
    from ..sim.profiles import load_profile
    from . import compare

    prof = load_profile(profile)
    schedule = traffic.finite(rate, seed)
    arrivals = _arrivals_for(traffic, schedule)
    service = service_model(prof, traffic, model, num_predict)
    if time_scale is None:
        time_scale = auto_time_scale(service)
    with _profile_registered(prof) as name:
        comp = await compare([mode], model=model or prof.default_model, backend="sim",
                             num_predict=num_predict, time_scale=time_scale, arrivals=arrivals,
                             servers=ServerOptions(count=servers, slots=slots, profile=name))
    run = comp.runs[0]
    figs = measured_figures(run)
    pred = theory.predict_load(mode, service, schedule=schedule, workers=servers, slots=slots)
    return Measurement(mode, servers, slots, schedule.rate, schedule.seed, figs,
                       _figures(pred, service), slo.misses(figs), run.summary.failed, run)


def _arrivals_for(traffic: Traffic, schedule: Schedule) -> Any:
    """The :class:`~parallel_kit.workload.arrivals.Arrivals` whose schedule is ``schedule``."""
    from ..workload.arrivals import Arrivals

    if traffic.trace is not None:
        return Arrivals(trace=traffic.trace, trace_speed=traffic.trace_speed)
    return Arrivals(rate=schedule.rate, process=schedule.process, n=len(schedule),
                    seed=schedule.seed,
                    burstiness=schedule.burstiness if schedule.process == "gamma" else 1.0)


async def measure_plan(plan: CapacityPlan, *, time_scale: float | None = None,
                       num_predict: int | None = None, profile: Any = None) -> list[Measurement]:
    """Measure the recommended (first mode) and the next smaller configuration; appended to
    ``plan.measurements`` and returned."""
    todo = [c for c in (plan.best, plan.next_smaller) if c is not None]
    for c in todo:
        m = await measure_config(c.mode, c.servers, c.slots, plan.traffic, plan.slo,
                                 profile=profile or plan.profile, model=plan.model,
                                 num_predict=num_predict, time_scale=time_scale)
        plan.measurements.append(m)
    return plan.measurements


# ---------------------------------------------------------------------------------------------
# The highest rate one configuration sustains
# ---------------------------------------------------------------------------------------------
@dataclass
class MaxRateResult:
    """What :func:`max_rate` found (rates in requests per model second).

    Attributes:
        rate_rps: the mean over repeats of each search's answer (the highest rate measured
            within the SLO; the bracket's low end when no run met it).
        ci95: (low, high), Student's t over the repeats (``None`` with one repeat).
        predicted_rps: theory's answer for the same arrivals (the bracket's centre).
        bracket: the bracket searched.
        searches: one entry per repeat: its seed, runs (rate, met) in order, answer,
            ``at_edge`` (every run met, or none did: the answer may lie outside the bracket).
    """

    mode: str
    servers: int
    slots: int
    slo: str
    rate_rps: float
    ci95: tuple[float, float] | None
    predicted_rps: float
    bracket: tuple[float, float]
    searches: list[dict[str, Any]]
    runs: list[Any] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "servers": self.servers, "slots": self.slots,
                "slo": self.slo, "rate_rps": self.rate_rps,
                "ci95": list(self.ci95) if self.ci95 else None,
                "predicted_rps": self.predicted_rps, "bracket": list(self.bracket),
                "searches": self.searches}

    def report(self) -> str:
        ci = (f", 95 % CI {self.ci95[0]:.4g}–{self.ci95[1]:.4g} over {len(self.searches)} "
              f"repeats" if self.ci95 else " (one search: give --repeats 3 for an interval)")
        lines = [f"max rate of {self.servers} server(s) × {self.slots} slot(s) ({self.mode}) "
                 f"within {self.slo}: {self.rate_rps:.4g} req/s{ci}",
                 f"  theory: {self.predicted_rps:.4g} req/s; bracket searched "
                 f"{self.bracket[0]:.4g}–{self.bracket[1]:.4g}"]
        for s in self.searches:
            steps = ", ".join(f"{r:.4g}{'✓' if ok else '✗'}" for r, ok in s["runs"])
            edge = " (at the bracket's edge: the answer may lie outside)" if s["at_edge"] else ""
            lines.append(f"  seed {s['seed']}: {steps} → {s['answer']:.4g}{edge}")
        return "\n".join(lines)


def predicted_max_rate(mode: str, servers: int, slots: int, service: Any, traffic: Traffic,
                       slo: PercentileSlo, *, seed: int | None = None,
                       iterations: int = 40) -> float:
    """Theory's highest rate within ``slo`` for the traffic's finite schedule at ``seed``
    (bisection on :func:`predict_config`; the same seed scales the same gaps, so the figures
    rise with the rate)."""
    from .. import theory

    cap = theory.predict_load(mode, service, rate=1.0, requests=50, workers=servers,
                              slots=slots).capacity_rps
    lo, hi = cap * 1e-3, cap * 3.0

    def ok(r: float) -> bool:
        return predict_config(mode, servers, slots, service, traffic, slo, rate=r,
                              seed=seed).meets

    if not ok(lo):
        raise ConfigError(f"{servers} server(s) × {slots} slot(s) ({mode}) miss the SLO {slo} "
                          f"even at {lo:.3g} req/s (one request alone is too slow) — relax "
                          f"the SLO or add slots")
    if ok(hi):
        return hi
    for _ in range(iterations):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo


def t95(repeats: int) -> float:
    """Two-sided 95 % Student's t quantile for ``repeats − 1`` degrees of freedom."""
    df = repeats - 1
    return _T95[df - 1] if 1 <= df <= len(_T95) else 1.96


async def max_rate(mode: str, servers: int, slots: int, traffic: Traffic, slo: PercentileSlo,
                   *, profile: Any = "seed", model: str | None = None,
                   num_predict: int | None = None, time_scale: float | None = None,
                   runs: int = MAX_RATE_RUNS, repeats: int = 1,
                   measure: Callable[..., Any] | None = None) -> MaxRateResult:
    """The highest rate ``mode`` on ``servers × slots`` sustains within ``slo``.

    For each repeat (arrival seeds ``traffic.seed``, ``+1``, …; ``traffic.n`` requests,
    default :data:`MEASURE_N`): theory's answer for those arrivals brackets the search
    (:data:`BRACKET` around it), and at most ``runs`` measured runs bisect the bracket (met:
    the low end moves up; missed: the high end down). The answer is the highest rate measured
    within the SLO. With ``repeats`` ≥ 2 the result carries a 95 % confidence interval
    (Student's t over the repeats' answers).

    Args:
        measure: ``async (rate, seed) → Measurement`` (default: :func:`measure_config` on
            embedded simulated servers).

    Raises:
        ConfigError: a trace (no rate to vary); runs or repeats < 1; an SLO missed even at a
            tiny rate.
    """
    from ..sim.profiles import load_profile

    if traffic.schedule is not None:
        raise ConfigError("--max-rate varies the rate: give --rate and --arrivals, not --trace")
    for name, v in (("--runs", runs), ("--repeats", repeats)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"{name} must be a whole number ≥ 1, got {v!r}")
    prof = load_profile(profile)
    service = service_model(prof, traffic, model, num_predict)
    finite = Traffic(traffic.rate, traffic.process, traffic.burstiness, traffic.seed,
                     traffic.n or MEASURE_N)

    async def default_measure(rate: float, seed: int) -> Measurement:
        return await measure_config(mode, servers, slots, finite, slo, profile=prof,
                                    model=model, num_predict=num_predict,
                                    time_scale=time_scale, rate=rate, seed=seed)

    run_one = measure or default_measure
    searches: list[dict[str, Any]] = []
    all_runs: list[Any] = []
    predicted: list[float] = []
    brackets: list[tuple[float, float]] = []
    for rep in range(repeats):
        seed = finite.seed + rep
        pred = predicted_max_rate(mode, servers, slots, service, finite, slo, seed=seed)
        lo, hi = pred * BRACKET[0], pred * BRACKET[1]
        predicted.append(pred)
        brackets.append((lo, hi))
        steps: list[tuple[float, bool]] = []
        met_any = missed_any = False
        for _ in range(runs):
            mid = (lo + hi) / 2
            m = await run_one(mid, seed)
            all_runs.append(m)
            steps.append((mid, m.meets))
            if m.meets:
                lo, met_any = mid, True
            else:
                hi, missed_any = mid, True
        searches.append({"seed": seed, "runs": steps, "answer": lo, "predicted_rps": pred,
                         "bracket": [brackets[-1][0], brackets[-1][1]],
                         "at_edge": not (met_any and missed_any)})
    answers = [s["answer"] for s in searches]
    mean = statistics.fmean(answers)
    ci = None
    if repeats >= 2:
        half = t95(repeats) * statistics.stdev(answers) / math.sqrt(repeats)
        ci = (max(0.0, mean - half), mean + half)  # a rate is never below 0
    return MaxRateResult(mode, servers, slots, str(slo), mean, ci, statistics.fmean(predicted),
                         (min(b[0] for b in brackets), max(b[1] for b in brackets)), searches,
                         all_runs)
