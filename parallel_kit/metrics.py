"""The field's request metrics, as pure functions: percentiles, TPOT, ITL, SLOs, goodput, concurrency.

Every definition here is the one the serving benchmarks of the field use, so that the kit's
numbers can be set beside theirs (docs/METRICS.md compares them in full):

* vLLM's serving benchmark, ``calculate_metrics`` in
  https://github.com/vllm-project/vllm/blob/main/vllm/benchmarks/serve.py (formerly
  ``benchmarks/benchmark_serving.py``): TTFT, TPOT = (latency − TTFT) / (output tokens − 1),
  ITL as the gaps between streamed chunks, percentiles with ``numpy.percentile`` (linear
  interpolation), goodput = requests that met every SLO ÷ the run's duration;
* SGLang's ``bench_serving``
  (https://github.com/sgl-project/sglang/blob/main/python/sglang/bench_serving.py): the same
  TTFT, TPOT and ITL;
* AIPerf (GenAI-Perf's successor), metrics reference
  https://docs.nvidia.com/aiperf/reference/ai-perf-metrics-reference: TTFT from the request's
  send to the first non-empty response, ITL = (latency − TTFT) / (output tokens − 1) per request;
* GuideLLM (https://github.com/vllm-project/guidellm, ``src/guidellm/schemas/request_stats.py``):
  the same TTFT and latency, but its ``time_per_output_token_ms`` *includes* the first token,
  (last token − request start) ÷ output tokens — a different quantity under the same name.

Units: every time is in seconds (the kit's records are model seconds; the functions do not care
which, as long as the inputs share one). Missing values are NaN and are left out of every
statistic; a statistic of nothing is NaN.

Rows are duck-typed (:class:`Row`): anything with ``ok``, ``submitted_s``, ``finished_s``,
``latency_s``, ``ttft_s`` and ``output_tokens`` — :class:`~parallel_kit.records.RequestResult` is
one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from .errors import ConfigError

__all__ = [
    "CACHE_WARN_FRACTION",
    "CacheInference",
    "Distribution",
    "ItlSketch",
    "Row",
    "Slo",
    "achieved_concurrency",
    "distribution",
    "goodput_rps",
    "infer_prompt_cache",
    "percentile",
    "row_tpot_s",
    "server_busy_s",
    "tpot_s",
    "ttft_by_turn",
]


class Row(Protocol):
    """What the metrics read from one request's record (model or clock seconds)."""

    ok: bool
    submitted_s: float
    finished_s: float
    latency_s: float
    ttft_s: float
    output_tokens: int | None


def parse_slo_bounds(text: str, keys: Sequence[str], *, example: str,
                     unknown: Callable[[str], str] | None = None,
                     drop_s_suffix: bool = False) -> dict[str, float]:
    """``"key=seconds,…"`` → ``{key: seconds}`` in the order given: the parser of every SLO
    the kit reads (bench's per-request :class:`Slo`, capacity's percentile SLO).

    Keys are lower-cased (``drop_s_suffix``: ``latency_p95_s`` reads as ``latency_p95``) and
    must be among ``keys``; ``unknown(key)`` words the error for one that is not (default:
    the valid keys listed); ``example`` is shown in the errors.

    Raises:
        ConfigError: a part without ``=``, an unknown key, a key given twice, a value that is
            not a positive finite number, or no part at all.
    """
    bounds: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key, sep, raw = part.partition("=")
        key = key.strip().lower()
        if drop_s_suffix and key.endswith("_s"):
            key = key[:-2]
        if not sep:
            raise ConfigError(f"SLO part {part!r} has no '=' — write key=seconds, e.g. "
                              f"--slo {example}")
        if key not in keys:
            raise ConfigError(unknown(key) if unknown else
                              f"unknown SLO key {key!r} — valid keys: {', '.join(keys)} "
                              f"(seconds)")
        if key in bounds:
            raise ConfigError(f"SLO key {key!r} is given twice — give it once")
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"SLO {key}={raw.strip()!r} is not a number — give seconds, "
                              f"e.g. {key}=30") from None
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"SLO {key}={raw.strip()} must be a positive number of "
                              f"seconds — e.g. {key}=30")
        bounds[key] = value
    if not bounds:
        raise ConfigError(f"empty SLO {text!r} — give e.g. --slo {example}")
    return bounds


def _finite(values: Iterable[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and not math.isnan(v)]


def percentile(values: Iterable[float | None], q: float) -> float:
    """The ``q``-th percentile (0–100) by linear interpolation between closest ranks.

    The rank is ``(n − 1) × q / 100`` and the value is interpolated between its two neighbours:
    numpy's default ``method="linear"`` (Hyndman & Fan's definition 7), which is what vLLM's and
    SGLang's serving benchmarks call — and this calls it too (``np.percentile``), so the
    floating-point result is the same to the last bit. ``None`` and NaN are left out.

    >>> percentile([1, 2, 3, 4, 10], 90)
    7.6

    Returns NaN for no values. Raises ``ValueError`` when ``q`` is outside 0..100.
    """
    if not 0.0 <= q <= 100.0 or math.isnan(q):
        raise ValueError(f"percentile q must be within 0..100, got {q!r}")
    vals = _finite(values)
    if not vals:
        return math.nan
    return float(np.percentile(vals, q))


@dataclass(frozen=True, slots=True)
class Distribution:
    """Mean and percentiles of one metric over a run (seconds, NaN when ``n`` is 0)."""

    mean: float
    p50: float
    p90: float
    p95: float
    p99: float
    n: int


def distribution(values: Iterable[float | None]) -> Distribution:
    """Mean, p50, p90, p95 and p99 of ``values`` (``None``/NaN left out), and how many there were."""
    vals = _finite(values)
    if not vals:
        return Distribution(math.nan, math.nan, math.nan, math.nan, math.nan, 0)
    return Distribution(mean=math.fsum(vals) / len(vals), p50=percentile(vals, 50),
                        p90=percentile(vals, 90), p95=percentile(vals, 95),
                        p99=percentile(vals, 99), n=len(vals))


def tpot_s(latency_s: float, ttft_s: float, output_tokens: int | None) -> float:
    """Time per output token, first token excluded: ``(latency − TTFT) / (output_tokens − 1)``.

    As vLLM's ``calculate_metrics`` and SGLang's ``bench_serving`` compute it (and AIPerf's
    per-request inter-token latency): the decode time shared over the tokens after the first.
    NaN when ``output_tokens`` ≤ 1 or unknown, or when either time is NaN. (GuideLLM's TPOT
    instead divides latency *including* TTFT by all output tokens.)
    """
    if output_tokens is None or output_tokens <= 1:
        return math.nan
    if math.isnan(latency_s) or math.isnan(ttft_s):
        return math.nan
    return (latency_s - ttft_s) / (output_tokens - 1)


def row_tpot_s(row: Row) -> float:
    """:func:`tpot_s` of one row."""
    return tpot_s(row.latency_s, row.ttft_s, row.output_tokens)


# -- inter-token latency: a bounded-memory quantile sketch --------------------------------------
class ItlSketch:
    """Inter-token latencies (gaps between streamed chunks) in bounded memory.

    A log-bucketed histogram with DDSketch's mapping (Masson, Rim & Lee, "DDSketch: a fast and
    fully-mergeable quantile sketch with relative-error guarantees", VLDB 2019,
    https://arxiv.org/abs/1908.10693): a gap ``x > 0`` falls in bucket ``ceil(log_γ x)`` with
    ``γ = (1 + α) / (1 − α)``, and a quantile answered from a bucket is within a relative error
    ``α`` of the true one. Memory grows with the *range* of gaps (≈ 115 buckets per decade at
    α = 1 %), never with how many there are: a run of a million tokens still holds at most a few
    hundred counters. Gaps ≤ 1 ns (chunks read together) count in a zero bucket.

    Why not the ``ddsketch`` package (DataDog's reference implementation): its pure-Python
    ``add`` costs ≈ 0.9 µs per value on this kit's machine, i.e. up to a third of a client's
    CPU budget per request at 100–200 tokens; :meth:`add_many` here bins one request's gaps at
    once with numpy (≈ 0.1 µs per gap) when the request ends.

    Quantiles use the rank ``q × (count − 1)`` (DDSketch's); ``mean``, ``count``, ``min`` and
    ``max`` are exact. Units: whatever the gaps are in (the kit records model seconds).
    """

    __slots__ = ("_bins", "_gamma", "_lg", "_max", "_min", "_sum", "_zero", "alpha", "count")

    #: gaps at or below this (seconds) go to the zero bucket
    MIN_GAP = 1e-9

    def __init__(self, alpha: float = 0.01) -> None:
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"ItlSketch alpha (relative accuracy) must be within 0..1, "
                             f"got {alpha!r}")
        self.alpha = alpha
        self._gamma = (1.0 + alpha) / (1.0 - alpha)
        self._lg = math.log(self._gamma)
        self._bins: dict[int, int] = {}
        self._zero = 0
        self.count = 0
        self._sum = 0.0
        self._min = math.inf
        self._max = -math.inf

    def add(self, gap_s: float) -> None:
        """Count one gap (NaN ignored; negative counts as zero)."""
        if math.isnan(gap_s):
            return
        self.count += 1
        self._sum += gap_s
        self._min = min(self._min, gap_s)
        self._max = max(self._max, gap_s)
        if gap_s <= self.MIN_GAP:
            self._zero += 1
            return
        key = math.ceil(math.log(gap_s) / self._lg)
        self._bins[key] = self._bins.get(key, 0) + 1

    def add_many(self, gaps_s: Sequence[float] | np.ndarray) -> None:
        """Count many gaps at once (one request's, typically) — binned with numpy."""
        arr = np.asarray(gaps_s, dtype=np.float64)
        arr = arr[~np.isnan(arr)]
        if arr.size == 0:
            return
        self.count += int(arr.size)
        self._sum += float(arr.sum())
        self._min = min(self._min, float(arr.min()))
        self._max = max(self._max, float(arr.max()))
        pos = arr[arr > self.MIN_GAP]
        self._zero += int(arr.size - pos.size)
        if pos.size:
            keys, counts = np.unique(np.ceil(np.log(pos) / self._lg).astype(np.int64),
                                     return_counts=True)
            bins = self._bins
            for k, c in zip(keys.tolist(), counts.tolist(), strict=True):
                bins[k] = bins.get(k, 0) + c

    def merge(self, other: ItlSketch) -> ItlSketch:
        """Add ``other``'s gaps to this sketch (same ``alpha`` required); returns self."""
        if other.alpha != self.alpha:
            raise ValueError(f"cannot merge ItlSketch of alpha {other.alpha} into one of "
                             f"{self.alpha}: build both with the same alpha")
        for k, c in other._bins.items():
            self._bins[k] = self._bins.get(k, 0) + c
        self._zero += other._zero
        self.count += other.count
        self._sum += other._sum
        self._min = min(self._min, other._min)
        self._max = max(self._max, other._max)
        return self

    @property
    def mean(self) -> float:
        """Exact mean gap; NaN when empty."""
        return self._sum / self.count if self.count else math.nan

    @property
    def buckets(self) -> int:
        """Counters held (memory is proportional to this)."""
        return len(self._bins) + (1 if self._zero else 0)

    def quantile(self, q: float) -> float:
        """The ``q``-quantile (0..1) within relative error ``alpha``; NaN when empty.

        Raises ``ValueError`` when ``q`` is outside 0..1.
        """
        if not 0.0 <= q <= 1.0 or math.isnan(q):
            raise ValueError(f"quantile q must be within 0..1, got {q!r}")
        if not self.count:
            return math.nan
        if q == 0.0:
            return self._min
        if q == 1.0:
            return self._max
        rank = q * (self.count - 1)
        seen = self._zero
        if rank < seen:
            return max(self._min, 0.0)
        value = self._max
        for key in sorted(self._bins):
            seen += self._bins[key]
            if seen > rank:
                value = 2.0 * self._gamma ** key / (self._gamma + 1.0)
                break
        return min(max(value, self._min), self._max)

    def distribution(self) -> Distribution:
        """Mean and p50/p90/p95/p99 of the gaps (``n`` = how many gaps)."""
        if not self.count:
            return distribution(())
        return Distribution(self.mean, self.quantile(0.5), self.quantile(0.9),
                            self.quantile(0.95), self.quantile(0.99), self.count)

    def to_dict(self) -> dict[str, object]:
        """A JSON-able form (to ship a worker's sketch to the driver); see :meth:`from_dict`."""
        return {"alpha": self.alpha, "bins": {str(k): c for k, c in self._bins.items()},
                "zero": self._zero, "count": self.count, "sum": self._sum,
                "min": self._min if self.count else None,
                "max": self._max if self.count else None}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> ItlSketch:
        sketch = cls(float(data["alpha"]))  # type: ignore[arg-type]
        bins = data.get("bins") or {}
        assert isinstance(bins, dict)
        sketch._bins = {int(k): int(c) for k, c in bins.items()}
        sketch._zero = int(data.get("zero") or 0)  # type: ignore[call-overload]
        sketch.count = int(data.get("count") or 0)  # type: ignore[call-overload]
        sketch._sum = float(data.get("sum") or 0.0)  # type: ignore[arg-type]
        if sketch.count:
            sketch._min = float(data["min"])  # type: ignore[arg-type]
            sketch._max = float(data["max"])  # type: ignore[arg-type]
        return sketch

    def __repr__(self) -> str:
        return (f"ItlSketch(count={self.count}, mean={self.mean:.6g}, "
                f"buckets={self.buckets}, alpha={self.alpha})")


# -- service-level objectives and goodput --------------------------------------------------------
_SLO_KEYS = ("ttft", "tpot", "latency")


@dataclass(frozen=True, slots=True)
class Slo:
    """Per-request service-level objectives, in seconds; ``None`` means no bound.

    A request *meets* the SLO when it finished without error and each bound that is set holds:
    TTFT ≤ ``ttft_s``, TPOT (:func:`tpot_s`) ≤ ``tpot_s``, latency ≤ ``latency_s`` — vLLM's
    ``--goodput ttft:… tpot:… e2el:…`` (milliseconds there, seconds here).
    """

    ttft_s: float | None = None
    tpot_s: float | None = None
    latency_s: float | None = None

    def __post_init__(self) -> None:
        for key in _SLO_KEYS:
            value = getattr(self, f"{key}_s")
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise ConfigError(f"SLO {key} must be a positive number of seconds, "
                                  f"got {value!r}")

    @classmethod
    def parse(cls, text: str) -> Slo:
        """``"ttft=2,tpot=0.1,latency=30"`` (seconds) → an :class:`Slo`.

        Raises:
            ConfigError: an unknown key (the valid ones are named), a value that is not a
                positive number, a key given twice, or nothing at all.
        """
        bounds = parse_slo_bounds(text, _SLO_KEYS, example="ttft=2,tpot=0.1,latency=30")
        return cls(ttft_s=bounds.get("ttft"), tpot_s=bounds.get("tpot"),
                   latency_s=bounds.get("latency"))

    def meets(self, row: Row) -> bool:
        """True when ``row`` finished ok and is within every bound that is set (NaN fails)."""
        if not row.ok:
            return False
        checks = ((self.ttft_s, row.ttft_s), (self.latency_s, row.latency_s),
                  (self.tpot_s, row_tpot_s(row) if self.tpot_s is not None else 0.0))
        return all(bound is None or (not math.isnan(v) and v <= bound) for bound, v in checks)

    def __str__(self) -> str:
        return ",".join(f"{k}={getattr(self, f'{k}_s'):g}" for k in _SLO_KEYS
                        if getattr(self, f"{k}_s") is not None)


def goodput_rps(rows: Iterable[Row], slo: Slo, duration_s: float) -> float:
    """Requests per second that finished and met every SLO: ``#meets ÷ duration_s``.

    As vLLM's ``calculate_metrics`` (``request_goodput = good_completed / dur_s``). NaN when the
    duration is not positive.
    """
    if not duration_s > 0:
        return math.nan
    return sum(1 for r in rows if slo.meets(r)) / duration_s


# -- concurrency ---------------------------------------------------------------------------------
def achieved_concurrency(rows: Iterable[Row], start: float | None = None,
                         end: float | None = None) -> float:
    """Time-averaged number of requests in flight at the client over ``[start, end]``.

    A request is in flight from its send (``submitted_s``) to its end (``finished_s``), failed
    ones included; the result is ∫ in-flight(t) dt ÷ (end − start) = Σ overlap ÷ (end − start)
    (Little's law read backwards: L = λ·W over the window). ``start``/``end`` default to the
    first send and the last end. Rows without both times are left out. NaN for an empty window.
    """
    spans = [(r.submitted_s, r.finished_s) for r in rows
             if not math.isnan(r.submitted_s) and not math.isnan(r.finished_s)]
    if not spans:
        return math.nan
    lo = min(s for s, _ in spans) if start is None else start
    hi = max(f for _, f in spans) if end is None else end
    if not hi > lo:
        return math.nan
    busy = math.fsum(max(0.0, min(f, hi) - max(s, lo)) for s, f in spans)
    return busy / (hi - lo)


def server_busy_s(rows: Iterable[Any]) -> dict[str, float]:
    """Each server's busy time by its own stopwatch: per ``worker``, the sum over its rows of
    ``server_load_s + server_prompt_eval_s + server_eval_s`` (Ollama's ``load_duration``,
    ``prompt_eval_duration`` and ``eval_duration``; model seconds on the simulator).

    On single-slot servers that run one request at a time this is the work each did, and the
    largest value is the makespan of the schedule they ran, free of the client's clock: a
    busy machine stretches the clock between requests, never these durations. (Ollama's
    ``total_duration`` would not do: it includes the wait for a slot.) Rows without a worker or
    without server durations (failed requests) are left out.

    Returns:
        ``{worker: seconds}``, in first-seen order; empty when no row qualifies.
    """
    busy: dict[str, float] = {}
    for r in rows:
        parts = (r.server_load_s, r.server_prompt_eval_s, r.server_eval_s)
        if not r.worker or r.server_eval_s is None:
            continue
        busy[r.worker] = busy.get(r.worker, 0.0) + math.fsum(x for x in parts if x)
    return busy


# -- the prompt cache, seen from outside ------------------------------------------------------
#: Inferred cache hit rate above which a run that did not ask for caching is flagged.
CACHE_WARN_FRACTION = 0.10


@dataclass(frozen=True, slots=True)
class CacheInference:
    """Prompt tokens a server's prompt cache supplied, inferred from Ollama's own fields.

    Attributes:
        prefill_tokens_per_s: the prefill rate used (tokens per model second).
        cached: per row, inferred cached tokens (None: the row says nothing — failed, or no
            ``prompt_eval_*``).
        cached_tokens, prompt_tokens: sums over the rows with a figure.
        hit_rate: ``cached_tokens ÷ prompt_tokens`` (NaN without prompt tokens).
    """

    prefill_tokens_per_s: float
    cached: tuple[int | None, ...]
    cached_tokens: int
    prompt_tokens: int
    hit_rate: float


def _prefill_rate(row: Any) -> float | None:
    count, dur = getattr(row, "prompt_tokens", None), getattr(row, "server_prompt_eval_s", None)
    if not getattr(row, "ok", False) or not count or dur is None or not dur > 0:
        return None
    return float(count) / float(dur)


def infer_prompt_cache(rows: Iterable[Any], prefill_tokens_per_s: float | None = None
                       ) -> CacheInference | None:
    """Cached prompt tokens per row: ``prompt_eval_count − prompt_eval_duration × prefill
    rate``, clamped to [0, count].

    Ollama ≥ 0.30 counts cached tokens in ``prompt_eval_count`` but times only the new ones in
    ``prompt_eval_duration`` (ollama/ollama#16428), and reports no cached count (``/v1`` has no
    ``cached_tokens``), so this is the only way to see the cache from outside. The rate is
    ``prefill_tokens_per_s`` when given, else the slowest per-token rate among the rows (a row
    the cache did not help shows the true rate; one it helped looks faster). On a real server
    a short prompt's fixed overhead makes it look slow per token, so the figure is an upper
    bound there; on the simulator it is exact.

    Args:
        rows: :class:`~parallel_kit.records.RequestResult` rows (``prompt_tokens``,
            ``server_prompt_eval_s`` in model seconds, ``ok``).
        prefill_tokens_per_s: a known rate (a probe's, or the slowest one seen on the same
            server so far).

    Returns:
        The inference, or None when no row has a prefill duration (the server reports none,
        or its prefill takes no time, as in the ``seed`` profile).
    """
    rows = list(rows)
    rates = [r for r in (_prefill_rate(row) for row in rows) if r is not None]
    if prefill_tokens_per_s is None or not prefill_tokens_per_s > 0:
        if not rates:
            return None
        prefill_tokens_per_s = min(rates)
    cached: list[int | None] = []
    total = hits = 0
    for row in rows:
        count, dur = getattr(row, "prompt_tokens", None), getattr(row, "server_prompt_eval_s",
                                                                  None)
        if not getattr(row, "ok", False) or not count or dur is None:
            cached.append(None)
            continue
        c = int(max(0, min(count, round(count - dur * prefill_tokens_per_s))))
        cached.append(c)
        total += count
        hits += c
    return CacheInference(float(prefill_tokens_per_s), tuple(cached), hits, total,
                          hits / total if total else math.nan)


def ttft_by_turn(rows: Iterable[Any]) -> dict[int, float]:
    """Mean TTFT (model s) of the finished rows of each conversation turn, by turn; rows whose
    ``request_id`` is not ``c<c>.t<t>`` (``prompts.multi_turn_specs``) are left out."""
    import re

    by: dict[int, list[float]] = {}
    for row in rows:
        m = re.fullmatch(r"c\d+\.t(\d+)", getattr(row, "request_id", "") or "")
        ttft = getattr(row, "ttft_s", math.nan)
        if m and getattr(row, "ok", False) and not math.isnan(ttft):
            by.setdefault(int(m.group(1)), []).append(ttft)
    return {t: sum(v) / len(v) for t, v in sorted(by.items())}
