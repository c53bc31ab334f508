"""The result schema: what one request did, and what a whole run did.

Every time in a record is in **model time**, in seconds from the run's start: the clock time
divided by the run's ``time_scale`` (a simulator at time scale 0.02 turns 10 s into 0.2 s on the
clock; the record still says 10 s). Real Ollama runs at scale 1, so model time is clock time.

The one exception is ``RunSummary.submit_s``: the clock seconds until every request was
accepted. It is an overhead of the kit itself, never scaled.

``RequestResult``      one row per request (``docs/CONTRACTS.md``, "Records")
``RunSummary``         the numbers that describe a run
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

    ``latency_s`` is ``finished_s - submitted_s`` (what the caller waited, queueing included);
    ``ttft_s`` is ``first_token_s - submitted_s``. ``server_*_s`` come from Ollama's nanosecond
    duration fields (already model time: the simulator reports model time too).
    A failed request keeps its row: ``ok`` is False and ``error`` says why.
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
    response: str = ""

    def finalize(self) -> RequestResult:
        """Derive ``latency_s`` and ``ttft_s`` from the timestamps (returns self)."""
        if not math.isnan(self.finished_s) and not math.isnan(self.submitted_s):
            self.latency_s = self.finished_s - self.submitted_s
        if not math.isnan(self.first_token_s) and not math.isnan(self.submitted_s):
            self.ttft_s = self.first_token_s - self.submitted_s
        return self

    def to_dict(self) -> dict[str, Any]:
        return {k: _json_safe(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RequestResult:
        return cls(**_from_json(cls, data))


#: The columns of ``RequestResult`` in schema order (CSV header).
REQUEST_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(RequestResult))


@dataclass(slots=True)
class RunSummary:
    """The numbers that describe one run of one mode (``docs/CONTRACTS.md``, "Records").

    Times are model seconds, except ``wall_s``, ``submit_s`` and ``setup_s`` (clock seconds).
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
    submit_s: float | None = None
    setup_s: float | None = None
    speedup_vs_sequential: float | None = None
    efficiency: float | None = None
    retries: int = 0
    model: str = ""
    #: what produced the tokens: "sim" (latency model), "llama-cpp" (a real model behind the
    #: kit's server) or "ollama" (real Ollama).
    engine: str = ""
    lost_workers: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {k: _json_safe(v) for k, v in asdict(self).items()}

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


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0–100) by linear interpolation; NaN for no values."""
    vals = sorted(v for v in values if v is not None and not math.isnan(v))
    if not vals:
        return math.nan
    if len(vals) == 1:
        return vals[0]
    pos = (len(vals) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(vals) - 1)
    return vals[lo] + (vals[hi] - vals[lo]) * (pos - lo)


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
) -> RunSummary:
    """Compute a run's summary from its rows.

    ``makespan_s`` runs from the first submission to the last completion (model seconds);
    failed requests count towards the span if they have timestamps. ``wall_s`` defaults to
    ``makespan_s × time_scale``. ``efficiency`` is predicted ÷ measured.
    """
    ok_rows = [r for r in requests if r.ok]
    starts = [r.submitted_s for r in requests if not math.isnan(r.submitted_s)]
    ends = [r.finished_s for r in requests if not math.isnan(r.finished_s)]
    makespan = (max(ends) - min(starts)) if starts and ends else math.nan
    if wall_s is None:
        wall_s = makespan * time_scale if not math.isnan(makespan) else math.nan
    tokens = sum(r.output_tokens or 0 for r in ok_rows)
    throughput = len(ok_rows) / makespan if makespan and makespan > 0 else math.nan
    tok_rate = tokens / makespan if makespan and makespan > 0 else math.nan
    efficiency = None
    if predicted_makespan_s and makespan and makespan > 0 and not math.isnan(makespan):
        efficiency = predicted_makespan_s / makespan
    return RunSummary(
        mode=mode,
        backend=backend,
        time_scale=time_scale,
        n=len(requests),
        ok=len(ok_rows),
        failed=len(requests) - len(ok_rows),
        workers=workers,
        slots=slots,
        makespan_s=makespan,
        wall_s=wall_s,
        predicted_makespan_s=predicted_makespan_s,
        throughput_rps=throughput,
        output_tokens_per_s=tok_rate,
        latency_p50_s=percentile([r.latency_s for r in ok_rows], 50),
        latency_p95_s=percentile([r.latency_s for r in ok_rows], 95),
        ttft_p50_s=percentile([r.ttft_s for r in ok_rows], 50),
        submit_s=submit_s,
        setup_s=setup_s,
        efficiency=efficiency,
        retries=sum(r.retries for r in requests),
        model=model,
        lost_workers=[dict(w) for w in lost_workers],
        notes=list(notes),
    )


#: Version of the ``--json`` result schema (``docs/CONTRACTS.md``, "Records"). 1: the first
#: release, which wrote no version; 2: ``schema_version`` written. Readers take both.
SCHEMA_VERSION = 2


def write_json(path: str | os.PathLike[str], runs: Iterable[RunResult]) -> Path:
    """Write ``{"schema_version": 2, "runs":[{"summary":{…},"requests":[…]}]}`` (``--json``)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    doc = {"schema_version": SCHEMA_VERSION, "runs": [r.to_dict() for r in runs]}
    p.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return p


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
                writer.writerow({c: "" if row[c] is None else row[c] for c in cols})
    return p


def _json_safe(v: Any) -> Any:
    """NaN/inf become None so the JSON is standard (``allow_nan=False``)."""
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    if isinstance(v, list):
        return [_json_safe(x) for x in v]
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
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
