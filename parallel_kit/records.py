"""The result schema: what one request did, and what a whole run did.

Every time in a record is in **model time**, in seconds from the run's start: the clock time
divided by the run's ``time_scale`` (a simulator at time scale 0.02 turns 10 s into 0.2 s on the
clock; the record still says 10 s). Real Ollama runs at scale 1, so model time is clock time.

The one exception is ``RunSummary.submit_s``: the clock seconds until every request was
accepted. It is an overhead of the kit itself, never scaled.

``RequestResult``      one row per request (``docs/CONTRACTS.md``, "Records")
``RunSummary``         the numbers that describe a run (definitions: ``docs/METRICS.md``)
``RunResult``          rows + summary; ``to_frame()`` gives pandas
``summarize()``        computes a ``RunSummary`` from rows
``write_json`` / ``write_csv`` / ``read_json``   the ``--json`` and ``--csv`` files
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

from .metrics import ItlSketch, Slo, achieved_concurrency, distribution, goodput_rps, percentile
from .metrics import row_tpot_s as _row_tpot_s

__all__ = [
    "SCHEMA_VERSION",
    "RequestResult",
    "RequestSpec",
    "RunResult",
    "RunSummary",
    "percentile",
    "read_json",
    "summarize",
    "write_csv",
    "write_json",
]


@dataclass(slots=True)
class RequestSpec:
    """One request to run.

    Args:
        prompt: the prompt text.
        model: model name; ``None`` means the run's default model.
        num_predict: maximum output tokens (Ollama's ``options.num_predict``); ``None`` lets the
            server decide (real Ollama: until a stop token; the simulator: its profile).
        options: other Ollama ``options`` (``temperature``, ``seed``, ``num_ctx``, …).
        system: optional system prompt.
        request_id: a stable id; filled in (``r0``, ``r1``, …) when empty.
        source_id: the ``id`` the prompt had in its file (JSONL ``id``, ShareGPT ``id``).
    """

    prompt: str
    model: str | None = None
    num_predict: int | None = None
    options: dict[str, Any] = field(default_factory=dict)
    system: str | None = None
    request_id: str = ""
    source_id: str | None = None

    def ollama_options(self) -> dict[str, Any]:
        """The ``options`` object to send to Ollama (``num_predict`` folded in)."""
        opts = dict(self.options)
        if self.num_predict is not None:
            opts["num_predict"] = self.num_predict
        return opts


@dataclass(slots=True)
class RequestResult:
    """What happened to one request. Times are model seconds from the run's start.

    The moments, in order:

    * ``queued_s`` — the request entered the kit (its task queue, a pool's or Ray's dispatcher,
      the kit's HTTP API); equal to ``submitted_s`` where nothing queues;
    * ``submitted_s`` — the HTTP request was sent to the server (first attempt): the field's
      "request start" (vLLM, SGLang, AIPerf, GuideLLM all start their clock here);
    * ``started_s`` — the last attempt was sent (later than ``submitted_s`` only after retries);
    * ``first_token_s`` — the first non-empty piece of the answer arrived;
    * ``finished_s`` — the answer ended (or the request failed).

    Derived by :meth:`finalize`: ``latency_s = finished_s - submitted_s`` and
    ``ttft_s = first_token_s - submitted_s`` (from the send, as the field defines them), and
    ``queue_wait_s = submitted_s - queued_s`` (time spent queued inside the kit). What a caller
    of the kit's queue waited in all is ``queue_wait_s + latency_s``. ``server_*_s`` come from
    Ollama's nanosecond duration fields (already model time: the simulator reports model time
    too). A failed request keeps its row: ``ok`` is False and ``error`` says why.
    """

    request_id: str
    mode: str
    prompt: str
    model: str
    worker: str = ""
    node: str = ""
    submitted_s: float = math.nan
    started_s: float = math.nan
    first_token_s: float = math.nan
    finished_s: float = math.nan
    latency_s: float = math.nan
    ttft_s: float = math.nan
    ok: bool = False
    error: str | None = None
    retries: int = 0
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    server_total_s: float | None = None
    server_load_s: float | None = None
    server_prompt_eval_s: float | None = None
    server_eval_s: float | None = None
    queued_s: float = math.nan
    queue_wait_s: float = math.nan
    response: str = ""
    #: open-loop runs: when the request was scheduled to arrive (model seconds from the run's
    #: start); ``submitted_s`` is when it really was handed over. NaN in closed-loop runs.
    scheduled_s: float = math.nan
    #: the Ray Serve replica that ran it (``rayserve``/``production``; empty elsewhere).
    replica: str = ""
    #: per-layer timestamps through a stack, model seconds on the row's axis, by hop name
    #: (``accepted``, ``picked_up``, ``replica_entered``, ``replica_done``, …; see
    #: ``parallel_kit.production``). Empty for modes without layers.
    hops: dict[str, float] = field(default_factory=dict)
    #: the ``id`` its prompt had in the prompt file or trace (JSONL/ShareGPT ``id``); ``None``
    #: when it had none. Filled in by :func:`parallel_kit.bench.compare` for every mode.
    source_id: str | None = None

    def finalize(self) -> RequestResult:
        """Derive ``latency_s``, ``ttft_s`` and ``queue_wait_s`` from the moments (returns self).

        A row that never queued (``queued_s`` NaN) gets ``queued_s = submitted_s``.
        """
        sent = self.submitted_s
        if math.isnan(sent):
            return self
        if math.isnan(self.queued_s):
            self.queued_s = sent
        self.queue_wait_s = sent - self.queued_s
        if not math.isnan(self.finished_s):
            self.latency_s = self.finished_s - sent
        if not math.isnan(self.first_token_s):
            self.ttft_s = self.first_token_s - sent
        return self

    def to_dict(self) -> dict[str, Any]:
        # Every field is a plain value, or a dict/list of them that nan_to_none copies:
        # reading the fields directly costs a fraction of dataclasses.asdict's recursive deep
        # copy, which was a third of the kit's CPU per request at concurrency 64.
        return {k: nan_to_none(getattr(self, k)) for k in REQUEST_COLUMNS}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RequestResult:
        return cls(**_from_json(cls, data))


#: The columns of ``RequestResult`` in schema order (CSV header).
REQUEST_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(RequestResult))


@dataclass(slots=True)
class RunSummary:
    """The numbers that describe one run of one mode (``docs/CONTRACTS.md``, "Records"; every
    definition: ``docs/METRICS.md``).

    Times are model seconds, except ``wall_s``, ``submit_s`` and ``setup_s`` (clock seconds).
    ``latency_*``, ``ttft_*``, ``tpot_*`` are over finished requests, measured from the send;
    ``itl_*`` over every gap between streamed chunks (a sketch, within 1 %);
    ``queue_wait_*`` is the time requests spent queued inside the kit before being sent;
    ``achieved_concurrency`` the time-averaged number of requests in flight at the client
    (send to end) from the first send to the last end, beside ``requested_concurrency``
    (what was asked, where a mode has one); ``offered_rps`` the arrival rate asked for
    (``None`` for a closed loop); ``goodput_rps`` the finished requests per second that met ``slo`` (``None`` without one).
    """

    mode: str
    backend: str  # "ollama" | "sim"
    time_scale: float
    n: int
    ok: int
    failed: int
    workers: int
    slots: int
    makespan_s: float
    wall_s: float
    predicted_makespan_s: float | None = None
    throughput_rps: float = math.nan
    output_tokens_per_s: float = math.nan
    latency_p50_s: float = math.nan
    latency_p95_s: float = math.nan
    ttft_p50_s: float = math.nan
    latency_mean_s: float = math.nan
    latency_p90_s: float = math.nan
    latency_p99_s: float = math.nan
    ttft_mean_s: float = math.nan
    ttft_p90_s: float = math.nan
    ttft_p95_s: float = math.nan
    ttft_p99_s: float = math.nan
    tpot_mean_s: float = math.nan
    tpot_p50_s: float = math.nan
    tpot_p90_s: float = math.nan
    tpot_p95_s: float = math.nan
    tpot_p99_s: float = math.nan
    itl_mean_s: float = math.nan
    itl_p50_s: float = math.nan
    itl_p90_s: float = math.nan
    itl_p95_s: float = math.nan
    itl_p99_s: float = math.nan
    queue_wait_mean_s: float = math.nan
    queue_wait_p95_s: float = math.nan
    achieved_concurrency: float = math.nan
    requested_concurrency: int | None = None
    offered_rps: float | None = None
    goodput_rps: float | None = None
    slo: str | None = None
    submit_s: float | None = None
    setup_s: float | None = None
    speedup_vs_sequential: float | None = None
    efficiency: float | None = None
    retries: int = 0
    model: str = ""
    #: what produced the tokens: "sim" (latency model), "llama-server" (a real model behind the
    #: kit's server) or "ollama" (real Ollama).
    engine: str = ""
    lost_workers: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # -- open-loop runs (requests arriving over time; ``parallel_kit.bench.loadgen``) ------------
    #: theory's steady-state figures for this mode at this rate (latency and TTFT from arrival)
    predicted_latency_mean_s: float | None = None
    predicted_latency_p95_s: float | None = None
    predicted_ttft_mean_s: float | None = None
    #: ρ = offered rate ÷ the servers' capacity
    utilisation: float | None = None
    #: everything else about the arrivals, the lag and the prediction (``loadgen`` documents it)
    open_loop: dict[str, Any] = field(default_factory=dict)
    #: what was measured: the server's own name and version where it gives one ("llama.cpp
    #: b6123", "vLLM 0.10.1", "Ollama 0.12.3", its ``Server`` header), or the simulator's label
    server: str = ""
    # -- the prompt cache (docs/METRICS.md, "Prompt cache") -----------------------------------
    #: the salt that made this run's prompts new to the server (None: not salted)
    salt: str | None = None
    #: the workload, when it shares prefixes on purpose (``shared-prefix``, ``multi-turn``)
    workload: str | None = None
    #: inferred cached ÷ prompt tokens (``metrics.infer_prompt_cache``; None: not inferable)
    cache_hit_rate: float | None = None
    #: inferred cached prompt tokens of the run, and the prefill rate the inference used
    cached_tokens: int | None = None
    prefill_tokens_per_s: float | None = None
    #: True when the run did not ask for caching but over 10 % of its prompt was cached
    cache_flagged: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {k: nan_to_none(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunSummary:
        return cls(**_from_json(cls, data))


@dataclass(slots=True)
class RunResult:
    """One run of one mode: every request's row plus the summary."""

    summary: RunSummary
    requests: list[RequestResult]

    @property
    def mode(self) -> str:
        return self.summary.mode

    def to_frame(self) -> pd.DataFrame:
        """One row per request, schema columns in order (``response`` text left out)."""
        import pandas as pd

        cols = [c for c in REQUEST_COLUMNS if c != "response"]
        return pd.DataFrame([{c: getattr(r, c) for c in cols} for r in self.requests],
                            columns=cols)

    def to_dict(self) -> dict[str, Any]:
        return {"summary": self.summary.to_dict(),
                "requests": [r.to_dict() for r in self.requests]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunResult:
        return cls(RunSummary.from_dict(data["summary"]),
                   [RequestResult.from_dict(r) for r in data.get("requests", [])])

    def __repr__(self) -> str:
        s = self.summary
        return (f"RunResult(mode={s.mode!r}, n={s.n}, ok={s.ok}, failed={s.failed}, "
                f"makespan_s={s.makespan_s:.3f}, predicted={s.predicted_makespan_s})")


def summarize(
    requests: Sequence[RequestResult],
    *,
    mode: str,
    backend: str,
    time_scale: float,
    workers: int,
    slots: int,
    wall_s: float | None = None,
    predicted_makespan_s: float | None = None,
    submit_s: float | None = None,
    setup_s: float | None = None,
    model: str = "",
    lost_workers: Iterable[Mapping[str, Any]] = (),
    notes: Iterable[str] = (),
    itl: ItlSketch | None = None,
    slo: Slo | None = None,
    offered_rps: float | None = None,
    requested_concurrency: int | None = None,
) -> RunSummary:
    """Compute a run's summary from its rows (definitions: :mod:`parallel_kit.metrics`).

    ``makespan_s`` runs from the first arrival (``queued_s``, else ``submitted_s``) to the last
    completion (model seconds); failed requests count towards the span if they have
    timestamps. ``wall_s`` defaults to ``makespan_s × time_scale``. ``efficiency`` is
    predicted ÷ measured. Latency, TTFT, TPOT and queue-wait statistics are over the rows that
    finished ok; ``itl`` is the run's inter-token-latency sketch (the clients' ``itl``; ITL
    fields stay NaN without one); ``goodput_rps`` is computed over the makespan when ``slo`` is
    given; ``offered_rps`` and ``requested_concurrency`` are recorded as given.
    """
    ok_rows = [r for r in requests if r.ok]
    makespan, concurrency = _span(requests)
    if wall_s is None:
        wall_s = makespan * time_scale if not math.isnan(makespan) else math.nan
    has_span = not math.isnan(makespan) and makespan > 0
    tokens = sum(r.output_tokens or 0 for r in ok_rows)
    goodput = None
    if slo is not None:
        goodput = goodput_rps(requests, slo, makespan) if has_span else math.nan
    summary = RunSummary(
        mode=mode, backend=backend, time_scale=time_scale, n=len(requests), ok=len(ok_rows),
        failed=len(requests) - len(ok_rows), workers=workers, slots=slots,
        makespan_s=makespan, wall_s=wall_s, predicted_makespan_s=predicted_makespan_s,
        throughput_rps=len(ok_rows) / makespan if has_span else math.nan,
        output_tokens_per_s=tokens / makespan if has_span else math.nan,
        achieved_concurrency=concurrency, requested_concurrency=requested_concurrency,
        offered_rps=offered_rps, goodput_rps=goodput,
        slo=str(slo) if slo is not None else None, submit_s=submit_s, setup_s=setup_s,
        efficiency=(predicted_makespan_s / makespan
                    if predicted_makespan_s and has_span else None),
        retries=sum(r.retries for r in requests), model=model,
        lost_workers=[dict(w) for w in lost_workers], notes=list(notes),
    )
    _fill_distributions(summary, ok_rows, itl)
    return summary


def _span(requests: Sequence[RequestResult]) -> tuple[float, float]:
    """The makespan (first arrival to last completion, NaN when not timed) and the achieved
    concurrency (from the first send to the last completion), model seconds."""
    starts = [_arrival(r) for r in requests if not math.isnan(_arrival(r))]
    ends = [r.finished_s for r in requests if not math.isnan(r.finished_s)]
    makespan = (max(ends) - min(starts)) if starts and ends else math.nan
    sends = [r.submitted_s for r in requests if not math.isnan(r.submitted_s)]
    concurrency = (achieved_concurrency(requests, min(sends), max(ends)) if sends and ends
                   else math.nan)
    return makespan, concurrency


#: The statistics a summary keeps of each distribution (``<name>_<stat>_s`` fields).
_SUMMARY_STATS: dict[str, tuple[str, ...]] = {
    "latency": ("mean", "p50", "p90", "p95", "p99"),
    "ttft": ("mean", "p50", "p90", "p95", "p99"),
    "tpot": ("mean", "p50", "p90", "p95", "p99"),
    "itl": ("mean", "p50", "p90", "p95", "p99"),
    "queue_wait": ("mean", "p95"),
}


def _fill_distributions(summary: RunSummary, ok_rows: Sequence[RequestResult],
                        itl: ItlSketch | None) -> None:
    """Set the latency, TTFT, TPOT, ITL and queue-wait statistics of ``summary``: over the
    rows that finished ok, ITL from the run's sketch (NaN without one)."""
    dists = {
        "latency": distribution(r.latency_s for r in ok_rows),
        "ttft": distribution(r.ttft_s for r in ok_rows),
        "tpot": distribution(_row_tpot_s(r) for r in ok_rows),
        "itl": itl.distribution() if itl is not None else distribution(()),
        "queue_wait": distribution(r.queue_wait_s for r in ok_rows),
    }
    for name, stats in _SUMMARY_STATS.items():
        for stat in stats:
            setattr(summary, f"{name}_{stat}_s", getattr(dists[name], stat))


def _arrival(row: RequestResult) -> float:
    """When the request reached the kit: ``queued_s``, else ``submitted_s`` (NaN: neither)."""
    times = [t for t in (row.queued_s, row.submitted_s) if not math.isnan(t)]
    return min(times) if times else math.nan


#: Version of the ``--json`` result schema (``docs/CONTRACTS.md``, "Records"). 1: the first
#: release, which wrote no version; 2: ``schema_version`` written. Readers take both.
SCHEMA_VERSION = 2


def write_json(path: str | os.PathLike[str], runs: Iterable[RunResult]) -> Path:
    """Write ``{"schema_version": 2, "runs":[{"summary":{…},"requests":[…]}]}`` (``--json``)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(_results_text(runs), encoding="utf-8")
    return p


def _results_text(runs: Iterable[RunResult]) -> str:
    """The results document: each summary indented, each request row on one line.

    One row per line keeps a file of thousands of requests readable (and ``grep``-able) and
    lets Python's C encoder write the rows: an indented dump goes through the pure-Python
    encoder, about 0.1 ms of CPU per row.
    """
    compact = json.JSONEncoder(allow_nan=False, separators=(", ", ": ")).encode
    blocks = []
    for run in runs:
        summary = json.dumps(run.summary.to_dict(), indent=2, allow_nan=False)
        rows = ",\n".join("      " + compact(r.to_dict()) for r in run.requests)
        blocks.append('    {\n      "summary": ' + summary.replace("\n", "\n      ")
                      + ',\n      "requests": [' + (f"\n{rows}\n      " if rows else "")
                      + "]\n    }")
    body = ",\n".join(blocks)
    return (f'{{\n  "schema_version": {SCHEMA_VERSION},\n  "runs": ['
            + (f"\n{body}\n  " if blocks else "") + "]\n}\n")


def read_json(path: str | os.PathLike[str]) -> list[RunResult]:
    """Read a file written by :func:`write_json`, of any schema version up to this one.

    A file without ``schema_version`` is version 1 (the first release); fields a version does
    not know are ignored, fields it lacks take their defaults.

    Raises:
        ConfigError: a file from a newer parallel_kit, or one that is not a results file.
    """
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or not isinstance(doc.get("runs"), list):
        raise ConfigError(f"{path} is not a parallel_kit results file (no \"runs\" list) — "
                          f"give a file written by --json or write_json")
    version = doc.get("schema_version", 1)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise ConfigError(f"{path} has result schema version {version!r}; this parallel_kit "
                          f"reads up to {SCHEMA_VERSION} — upgrade parallel_kit to read it")
    return [RunResult.from_dict(r) for r in doc["runs"]]


def write_csv(path: str | os.PathLike[str], runs: Iterable[RunResult]) -> Path:
    """Write one row per request of every run (the ``--csv`` file; ``response`` left out)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    cols = [c for c in REQUEST_COLUMNS if c != "response"]
    with p.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=cols)
        writer.writeheader()
        for run in runs:
            for r in run.requests:
                row = r.to_dict()
                writer.writerow({c: "" if row[c] is None else
                                 json.dumps(row[c]) if isinstance(row[c], dict) else row[c]
                                 for c in cols})
    return p


def nan_to_none(v: Any) -> Any:
    """NaN/inf become None so the JSON is standard (``allow_nan=False``)."""
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    if isinstance(v, list):
        return [nan_to_none(x) for x in v]
    if isinstance(v, dict):
        return {k: nan_to_none(x) for k, x in v.items()}
    return v


def _from_json(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    """Constructor arguments from JSON: known fields only; null floats back to NaN."""
    names = {f.name for f in fields(cls)}
    return {k: (math.nan if v is None and _is_float_field(cls, k) else v)
            for k, v in data.items() if k in names}


def _is_float_field(cls: type, name: str) -> bool:
    for f in fields(cls):
        if f.name == name:
            return f.type in ("float", float)
    return False
