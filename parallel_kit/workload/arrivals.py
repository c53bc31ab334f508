"""Arrival schedules: when each request of an open-loop run arrives (model seconds).

A closed-loop run sends every request at once (a burst) or keeps C in flight; an **open-loop**
run sends each request at its own arrival time, whether or not the earlier ones have finished —
how a service sees its users. The schedule is fixed before the run, so the same seed gives the
same run, and so queueing theory can be asked what it should cost (:mod:`parallel_kit.theory.queueing`).

Processes (the gap between two arrivals, rate R requests per model second):

* ``poisson`` — exponential gaps of mean 1/R (coefficient of variation 1);
* ``constant`` — every gap exactly 1/R ("clockwork", CV 0);
* ``gamma`` — gamma gaps of shape B and scale 1/(R·B): mean 1/R, CV 1/√B. ``B`` is the
  *burstiness*: B = 1 is Poisson, B < 1 burstier, B > 1 smoother. The same parametrisation as
  ``vllm bench serve --burstiness`` (vLLM's ``benchmarks/benchmark_serving.py``,
  https://github.com/vllm-project/vllm/blob/main/benchmarks/benchmark_serving.py, ``get_request``:
  ``theta = 1.0 / (request_rate * burstiness)``, ``np.random.gamma(shape=burstiness, scale=theta)``).

Arrival *i* (from 0) comes at the sum of the first i + 1 gaps: a process that starts at time 0
with nobody there, so the first request arrives one gap in (a Poisson process's convention).
Gaps are drawn with numpy's ``Generator`` (PCG64) seeded by ``seed``.

**Traces** replay recorded arrivals: a JSONL file, one request a line,
``{"timestamp_s": 0.0, "prompt": "…" | "prompt_tokens": 512, "num_predict": 128}``, timestamps
in seconds and non-decreasing; the first request is replayed at time 0 and the rest at their
offsets from it, divided by ``speed`` (2 = twice as fast). A line that gives ``prompt_tokens``
without a ``prompt`` gets a made-up prompt of about that many tokens (the simulator counts about
4 bytes a token).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from ..errors import ConfigError
from ..ranges import MAX_REQUESTS as _MAX_REQUESTS
from ..ranges import MAX_RUN_PROMPT_BYTES, RANGES, Range, check_span, check_text, read_bounded
from ..records import RequestSpec

__all__ = [
    "PROCESSES",
    "Arrivals",
    "Process",
    "Schedule",
    "Trace",
    "check_burstiness",
    "check_rate",
    "check_seed",
    "gaps",
    "load_trace",
    "make_schedule",
    "specs_for",
    "synthetic_prompt",
    "write_trace",
]

Process = Literal["poisson", "constant", "gamma"]
PROCESSES: tuple[str, ...] = get_args(Process)

#: The most requests one schedule may hold (a guard against a duration × rate typo): the bound
#: of ``--n`` (:data:`parallel_kit.ranges.MAX_REQUESTS`), whatever the path.
MAX_REQUESTS = _MAX_REQUESTS
#: The most arrivals :func:`make_schedule` draws for ``n`` (theory's schedules are only
#: computed, 8 bytes each: 10 million is 80 MB); a run is bounded by ``MAX_REQUESTS``.
MAX_SCHEDULE = 10_000_000
#: The highest offered rate accepted, requests per model second: far above what one machine's
#: load generator holds (benchmarks/queueing.py measures that limit), low enough that a typo
#: such as 1e300 is caught before it turns into zero gaps and meaningless figures.
MAX_RATE = 1_000_000.0


def check_rate(value: Any, *, name: str = "--rate") -> float:
    """A rate in requests per model second: a finite number above 0, at most :data:`MAX_RATE`.

    Accepts numbers and numeric strings (``"0.05"``).

    Raises:
        ConfigError: not a number, NaN/inf, ≤ 0 or above ``MAX_RATE`` — the message says what
            is accepted.
    """
    rate = _number(value, name, "requests per model second, e.g. 0.05 for one every 20 s")
    if not rate > 0:
        raise ConfigError(f"{name} must be above 0 requests per model second, got {value!r} — "
                          f"e.g. 0.05 for one request every 20 s")
    if rate > MAX_RATE:
        raise ConfigError(f"{name} {rate:g} is above {MAX_RATE:g} requests per model second — "
                          f"choose a rate within 0..{MAX_RATE:g}")
    return rate


def check_seed(value: Any) -> int | None:
    """A schedule's seed: ``None`` or a whole number ≥ 0 (numpy's ``default_rng`` takes no
    negative seeds).

    Raises:
        ConfigError: negative, not whole, or not a number.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"--seed must be a whole number ≥ 0, got {value!r} — e.g. --seed 1")
    return value


def check_burstiness(value: Any) -> float:
    """The gamma shape B: a finite number above 0 (1 = Poisson).

    Raises:
        ConfigError: not a number or ≤ 0.
    """
    b = _number(value, "--burstiness", "the gamma shape, 1 = Poisson")
    if not b > 0:
        raise ConfigError(f"--burstiness must be above 0 (1 = Poisson, < 1 burstier, > 1 "
                          f"smoother), got {value!r}")
    return b


def _number(value: Any, name: str, what: str) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be a number ({what}), got {value!r}")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number ({what}), got {value!r}") from None
    if not math.isfinite(x):
        raise ConfigError(f"{name} must be a finite number ({what}), got {value!r}")
    return x


def gaps(process: str, rate: float, n: int, *, burstiness: float = 1.0,
         rng: np.random.Generator | None = None) -> np.ndarray:
    """``n`` gaps between arrivals (model seconds, shape ``(n,)``), mean ``1/rate``.

    Raises:
        ConfigError: unknown process, bad rate or burstiness, n < 0.
    """
    rate = check_rate(rate)
    if process not in PROCESSES:
        raise ConfigError(f"--arrivals {process!r} is not known — choose from "
                          f"{', '.join(PROCESSES)}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ConfigError(f"the number of arrivals must be a whole number ≥ 0, got {n!r}")
    g = rng if rng is not None else np.random.default_rng()
    if process == "constant":
        return np.full(n, 1.0 / rate)
    if process == "poisson":
        return g.exponential(1.0 / rate, n)
    b = check_burstiness(burstiness)
    return g.gamma(shape=b, scale=1.0 / (rate * b), size=n)


@dataclass(frozen=True, slots=True)
class Schedule:
    """Arrival times (model seconds from the run's start, non-decreasing) and what arrives.

    Attributes:
        times_s: arrival time of each request, shape ``(n,)``.
        specs: the request of each arrival (``None``: the run's prompts, cycled).
        process: ``poisson``, ``constant``, ``gamma`` or ``trace``.
        rate: the offered rate R (requests per model second); for a trace, its mean rate.
        burstiness: the gamma shape (1 for Poisson; 0 means not applicable).
        seed: the seed the gaps were drawn with (``None``: not reproducible).
    """

    times_s: np.ndarray
    process: str
    rate: float
    burstiness: float = 1.0
    seed: int | None = None
    specs: tuple[RequestSpec, ...] | None = None
    source: str = ""

    def __len__(self) -> int:
        return int(self.times_s.shape[0])

    @property
    def gaps_s(self) -> np.ndarray:
        """Gaps between consecutive arrivals (shape ``(n − 1,)``)."""
        return np.diff(self.times_s)

    @property
    def scv(self) -> float:
        """Squared coefficient of variation of the gaps the *process* draws (c_a²).

        1 for Poisson, 0 for constant, 1/B for gamma; for a trace, measured from its gaps.
        """
        if self.process == "poisson":
            return 1.0
        if self.process == "constant":
            return 0.0
        if self.process == "gamma":
            return 1.0 / self.burstiness
        g = self.gaps_s
        if g.size < 2 or g.mean() <= 0:
            return math.nan
        return float(g.var() / g.mean() ** 2)

    def describe(self) -> str:
        """One line: ``poisson arrivals at 0.05 req/s (one every 20 s), 200 requests, seed 1``."""
        what = (f"gamma (burstiness {self.burstiness:g})" if self.process == "gamma"
                else self.process)
        head = (f"trace {self.source} ({len(self)} requests, mean rate {self.rate:.3g} req/s)"
                if self.process == "trace" else
                f"{what} arrivals at {self.rate:.4g} req/s (one every {1 / self.rate:.3g} s), "
                f"{len(self)} requests")
        return head + (f", seed {self.seed}" if self.seed is not None else "")


def make_schedule(rate: Any, *, n: int | None = None, duration_s: float | None = None,
                  process: str = "poisson", burstiness: Any = 1.0,
                  seed: int | None = None) -> Schedule:
    """A schedule of ``n`` arrivals, or of every arrival before ``duration_s`` model seconds.

    Args:
        rate: R, requests per model second (> 0).
        n: how many requests; or ``duration_s``: arrivals in ``[0, duration_s)``.
        process: ``poisson`` (default), ``constant`` or ``gamma``.
        burstiness: the gamma shape B (> 0; only used by ``gamma``).
        seed: seeds numpy's Generator; the same seed gives the same schedule.

    Raises:
        ConfigError: bad rate/burstiness/process; neither or both of n and duration; a duration
            shorter than one mean gap 1/R (no request would be expected to arrive).
    """
    r = check_rate(rate)
    b = check_burstiness(burstiness) if process == "gamma" else 1.0
    if (n is None) == (duration_s is None):
        raise ConfigError("give either --n (requests) or --duration (model seconds) with "
                          "--rate, not both and not neither")
    rng = np.random.default_rng(check_seed(seed))
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_SCHEDULE:
            raise ConfigError(f"--n must be a whole number of requests within "
                              f"1..{MAX_SCHEDULE}, got {n!r}")
        times = np.cumsum(gaps(process, r, n, burstiness=b, rng=rng))
    else:
        d = _number(duration_s, "--duration", "model seconds")
        dr = RANGES["--duration"]
        if not dr.lo <= d <= dr.hi:
            raise ConfigError(f"--duration {d:g} is outside {dr.text()} ({dr.what}) — choose a "
                              f"value in that range")
        if d * r < 1.0:
            raise ConfigError(
                f"--duration {d:g} s at --rate {r:g} req/s expects {d * r:.2g} requests — "
                f"too short for one; make it at least 1/rate = {1 / r:.3g} s")
        expected = d * r
        if expected > MAX_REQUESTS:
            raise ConfigError(f"--duration {d:g} s at --rate {r:g} req/s means about "
                              f"{expected:.3g} requests — more than {MAX_REQUESTS:,}, the most "
                              f"one run holds (the bound of --n); shorten it or lower the rate")
        # Draw in chunks until the arrivals pass the duration.
        parts: list[np.ndarray] = []
        last = 0.0
        chunk = max(16, int(expected * 1.2) + 16)
        while last < d:
            t = last + np.cumsum(gaps(process, r, chunk, burstiness=b, rng=rng))
            parts.append(t)
            last = float(t[-1])
        times = np.concatenate(parts)
        times = times[times < d]
        if times.size > MAX_REQUESTS:
            raise ConfigError(f"--duration {d:g} s at --rate {r:g} req/s drew {times.size:,} "
                              f"requests — more than {MAX_REQUESTS:,}, the most one run holds; "
                              f"shorten it or lower the rate")
        if times.size == 0:
            raise ConfigError(
                f"no request arrived within --duration {d:g} s at --rate {r:g} req/s "
                f"(seed {seed}) — make the duration longer")
    return Schedule(times_s=times, process=process, rate=r, burstiness=b, seed=seed)


# ---------------------------------------------------------------------------------------------
# Traces
# ---------------------------------------------------------------------------------------------

_TRACE_KEYS = {"timestamp_s", "prompt", "prompt_tokens", "num_predict", "model", "id"}
_FILLER = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dogs", "while", "parallel", "servers", "answer", "many", "questions", "about", "python", "and", "machine", "learning"]


def synthetic_prompt(tokens: int) -> str:
    """A prompt of about ``tokens`` tokens at 4 bytes a token (the simulator's count)."""
    if tokens <= 0:
        return "?"
    words: list[str] = []
    size = 0
    i = 0
    while size < 4 * tokens - 1:
        w = _FILLER[i % len(_FILLER)]
        words.append(w)
        size += len(w) + 1
        i += 1
    return " ".join(words)[: 4 * tokens]


@dataclass(frozen=True, slots=True)
class Trace:
    """A replayable trace: arrival offsets (model seconds from the first) and the requests."""

    times_s: np.ndarray
    specs: tuple[RequestSpec, ...]
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def schedule(self, speed: Any = 1.0) -> Schedule:
        """The trace as a :class:`Schedule`, replayed ``speed`` times as fast.

        Raises:
            ConfigError: ``speed`` not a number above 0.
        """
        s = _number(speed, "--trace-speed", "how many times faster than recorded, e.g. 2")
        r = RANGES["--trace-speed"]
        if not r.lo <= s <= r.hi:
            raise ConfigError(f"--trace-speed {speed!r} is outside {r.text()} ({r.what}; 2 = "
                              f"twice as fast)")
        times = self.times_s / s
        span = float(times[-1] - times[0]) if len(times) > 1 else 0.0
        check_span(span, f"trace {self.source or ''} at --trace-speed {s:g}".replace("  ", " "))
        rate = (len(times) - 1) / span if span > 0 else math.inf
        return Schedule(times_s=times, process="trace", rate=rate, burstiness=0.0,
                        specs=self.specs, source=self.source)


def load_trace(path: str | os.PathLike[str]) -> Trace:
    """Read a JSONL trace (see the module docstring).

    Raises:
        ConfigError: missing file, bad JSON, a line without ``timestamp_s`` or without
            ``prompt``/``prompt_tokens``, bad values, timestamps out of order — naming the line.
    """
    p = Path(path)
    text = _read_trace(p)
    times: list[float] = []
    specs: list[RequestSpec] = []
    prompt_bytes = 0
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"trace {p}, line {lineno}"
        if len(specs) >= MAX_REQUESTS:
            raise ConfigError(f"{where}: more than {MAX_REQUESTS:,} requests, the most one run "
                              f"holds (the bound of --n) — split the trace")
        obj = _trace_object(line, where)
        ts = _trace_timestamp(obj, where, times[-1] if times else None)
        prompt = _trace_prompt(obj, where)
        prompt_bytes += 4 * len(prompt)  # at most 4 UTF-8 bytes a character, no encoding
        if prompt_bytes > MAX_RUN_PROMPT_BYTES:
            raise ConfigError(f"{where}: the trace's prompts pass "
                              f"{MAX_RUN_PROMPT_BYTES // (1024 * 1024)} MiB, the most one run "
                              f"holds — fewer or shorter requests")
        num_predict, model, source_id = _trace_options(obj, where)
        times.append(ts)
        specs.append(RequestSpec(prompt=prompt, model=model, num_predict=num_predict,
                                 request_id=f"r{len(specs)}", source_id=source_id))
    if not specs:
        raise ConfigError(f"trace file {p} has no requests — one JSON object per line")
    arr = np.asarray(times, dtype=float)
    check_span(float(arr[-1] - arr[0]), f"trace {p}")
    return Trace(times_s=arr - arr[0], specs=tuple(specs), source=str(p))


def _read_trace(p: Path) -> str:
    """:func:`load_trace`'s file as text (bounded in size); a missing or unreadable one a
    :class:`ConfigError`."""
    if not p.exists():
        raise ConfigError(f"trace file {p} does not exist — give a JSONL file with one "
                          f'{{"timestamp_s": …, "prompt": …}} per line')
    try:
        return read_bounded(p, "trace file")
    except OSError as exc:
        raise ConfigError(f"cannot read trace file {p}: {exc.strerror or exc}") from None


def _trace_object(line: str, where: str) -> dict[str, Any]:
    """One trace line as a JSON object of known fields only."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where}: not valid JSON ({exc.msg})") from None
    if not isinstance(obj, dict):
        raise ConfigError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    unknown = set(obj) - _TRACE_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {sorted(unknown)} — allowed: "
                          f"{sorted(_TRACE_KEYS)}")
    return obj


def _trace_timestamp(obj: dict[str, Any], where: str, previous: float | None) -> float:
    """A line's ``timestamp_s``: a finite number of seconds, not before ``previous``'s."""
    if "timestamp_s" not in obj:
        raise ConfigError(f'{where}: missing "timestamp_s" (seconds of the arrival)')
    ts = obj["timestamp_s"]
    if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts):
        raise ConfigError(f'{where}: "timestamp_s" must be a number of seconds, got {ts!r}')
    if previous is not None and ts < previous:
        raise ConfigError(f"{where}: timestamp_s {ts} comes before the previous line's "
                          f"{previous} — sort the trace by timestamp_s")
    return float(ts)


def _trace_prompt(obj: dict[str, Any], where: str) -> str:
    """A line's ``prompt``, or a made-up one of its ``prompt_tokens``."""
    prompt = obj.get("prompt")
    if prompt is None:
        pt = obj.get("prompt_tokens")
        if pt is None:
            raise ConfigError(f'{where}: missing "prompt" or "prompt_tokens" — give one')
        return synthetic_prompt(_whole_within(pt, "prompt_tokens", RANGES["prompt_tokens"],
                                              where))
    if not isinstance(prompt, str) or not prompt.strip():
        raise ConfigError(f'{where}: "prompt" must be a non-empty string')
    check_text(prompt, f'{where}: "prompt"')
    return prompt


def _trace_options(obj: dict[str, Any], where: str) -> tuple[int | None, str | None, str | None]:
    """A line's optional ``num_predict``, ``model`` and ``id`` (as a string), each checked."""
    num_predict = obj.get("num_predict")
    if num_predict is not None:
        num_predict = _whole_within(num_predict, "num_predict", RANGES["--num-predict"], where)
    model = obj.get("model")
    if model is not None and (not isinstance(model, str) or not model.strip()):
        raise ConfigError(f'{where}: "model" must be a non-empty string, got {model!r}')
    if model is not None:
        check_text(model, f'{where}: "model"')
    source_id = obj.get("id")
    if source_id is not None and (isinstance(source_id, bool)
                                  or not isinstance(source_id, (str, int))):
        raise ConfigError(f'{where}: "id" must be a string or a whole number')
    if isinstance(source_id, str):
        check_text(source_id, f'{where}: "id"')
    return num_predict, model, None if source_id is None else str(source_id)


def _whole_within(value: Any, key: str, r: Range, where: str) -> int:
    """A trace field that must be a whole number within ``r``."""
    if isinstance(value, bool) or not isinstance(value, int) or not r.lo <= value <= r.hi:
        raise ConfigError(f'{where}: "{key}" must be a whole number within {r.text()} '
                          f"({r.what}), got {value!r}")
    return value


def write_trace(path: str | os.PathLike[str], schedule: Schedule,
                specs: Sequence[RequestSpec]) -> Path:
    """Write ``specs`` at ``schedule``'s times as a JSONL trace that :func:`load_trace` reads.

    One line per request: ``timestamp_s`` (model seconds, 6 decimals), ``prompt`` and, when
    set, ``num_predict`` and ``model``. Returns the path.

    Raises:
        ConfigError: specs and schedule differ in length.
    """
    if len(specs) != len(schedule):
        raise ConfigError(f"{len(specs)} requests for {len(schedule)} arrivals — give one "
                          f"request per arrival")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for t, spec in zip(schedule.times_s, specs, strict=True):
        obj: dict[str, Any] = {"timestamp_s": round(float(t), 6), "prompt": spec.prompt}
        if spec.num_predict is not None:
            obj["num_predict"] = spec.num_predict
        if spec.model:
            obj["model"] = spec.model
        lines.append(json.dumps(obj, ensure_ascii=False))
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


# ---------------------------------------------------------------------------------------------
# The typed option record
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Arrivals:
    """How requests arrive in an open-loop run (``bench --rate …``, ``compare(arrivals=…)``).

    Attributes:
        rate: R, requests per model second (not used with ``trace``).
        process: ``poisson``, ``constant`` or ``gamma``.
        burstiness: gamma shape B (> 0); 1 = Poisson.
        seed: makes the schedule reproducible.
        n / duration_s: how many requests, or for how long (model seconds); with neither, the
            run's request count is used.
        trace / trace_speed: replay a JSONL trace instead, ``trace_speed`` times as fast.
        max_concurrency: at most this many requests in flight from the generator (the rest
            wait at the client, first come first served); ``None``: no cap.
        warmup: the first K requests run but are left out of the figures (and reported).
    """

    rate: float | None = None
    process: str = "poisson"
    burstiness: float = 1.0
    seed: int | None = None
    n: int | None = None
    duration_s: float | None = None
    trace: str | None = None
    trace_speed: float = 1.0
    max_concurrency: int | None = None
    warmup: int = 0

    def __post_init__(self) -> None:
        if self.trace is None:
            if self.rate is None:
                raise ConfigError("open-loop load needs --rate R (requests per model second) "
                                  "or --trace FILE")
            object.__setattr__(self, "rate", check_rate(self.rate))
        elif self.rate is not None:
            raise ConfigError("--trace replays the trace's own times — drop --rate, or drop "
                              "--trace")
        if self.process not in PROCESSES:
            raise ConfigError(f"--arrivals {self.process!r} is not known — choose from "
                              f"{', '.join(PROCESSES)}")
        object.__setattr__(self, "burstiness", check_burstiness(self.burstiness))
        if self.process != "gamma" and self.burstiness != 1.0:
            raise ConfigError("--burstiness only applies to --arrivals gamma")
        if self.max_concurrency is not None and (
                isinstance(self.max_concurrency, bool)
                or not isinstance(self.max_concurrency, int) or self.max_concurrency < 1):
            raise ConfigError(f"--max-concurrency must be a whole number ≥ 1, got "
                              f"{self.max_concurrency!r}")
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, int) or self.warmup < 0:
            raise ConfigError(f"--warmup must be a whole number of requests ≥ 0, got "
                              f"{self.warmup!r}")

    def schedule(self, default_n: int | None = None) -> Schedule:
        """The arrival schedule these options describe.

        Raises:
            ConfigError: see :func:`make_schedule` and :func:`load_trace`; a warm-up that
                leaves no request to measure.
        """
        if self.trace is not None:
            sched = load_trace(self.trace).schedule(self.trace_speed)
        else:
            n = self.n
            if n is None and self.duration_s is None:
                n = default_n
            if n is not None and not isinstance(n, bool) and isinstance(n, int) \
                    and n > MAX_REQUESTS:
                raise ConfigError(f"--n must be a whole number of requests within "
                                  f"1..{MAX_REQUESTS}, got {n!r} (the most one run holds)")
            sched = make_schedule(self.rate, n=n, duration_s=self.duration_s,
                                  process=self.process, burstiness=self.burstiness,
                                  seed=self.seed)
            # A run waits through its schedule (theory's schedules, built by make_schedule
            # too, are only computed: they may be as long as they like).
            times = sched.times_s
            check_span(float(times[-1]) if len(times) else 0.0,
                       f"--rate {sched.rate:g} with these arrivals")
        if self.warmup >= len(sched):
            raise ConfigError(f"--warmup {self.warmup} leaves none of the {len(sched)} "
                              f"requests to measure — lower it or send more requests")
        return sched


def specs_for(schedule: Schedule, base: Sequence[RequestSpec] | None, *,
              model: str | None = None, num_predict: int | None = None) -> list[RequestSpec]:
    """One spec per arrival: the trace's own, else ``base`` cycled (ids ``r0``, ``r1``, …).

    ``model`` and ``num_predict`` fill in what a spec does not set itself.
    """
    from .prompts import make_specs

    if schedule.specs is not None:
        return make_specs(len(schedule), schedule.specs, model=model, num_predict=num_predict)
    return make_specs(len(schedule), base, model=model, num_predict=num_predict)
