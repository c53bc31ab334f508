"""A load sweep: one mode at a series of arrival rates, measured beside what theory predicts.

>>> result = await sweep("sequential", "auto", n=30, time_scale=0.02)
>>> print(result.table())           # one line per rate: offered, ρ, latency, TTFT, goodput
>>> result.frame()                  # the same as pandas, one row per run

``rates="auto"`` first measures the mode's **capacity** with a closed-loop burst (every request
at once; capacity = finished requests ÷ makespan), then runs 10 rates evenly from 10 % to 110 %
of it — GuideLLM's ``--profile sweep`` idea (a throughput run first, then rates spread below it;
https://github.com/vllm-project/guidellm, ``src/guidellm/benchmark/profile.py``, ``SweepProfile``),
with the last rates past the knee on purpose, where latency grows with the run's length.

Each rate runs ``repeats`` times with seeds ``seed``, ``seed + 1``, …; every run is an ordinary
open-loop :class:`~parallel_kit.records.RunResult`. When the servers are simulated, the sweep
also holds theory's curve (:func:`parallel_kit.theory.predict_load` on the profile's latency
model) at 40 rates from 2 % to 98 % of the predicted capacity (for plotting beside the runs).

JSON (``--json``): ``{"sweep": {mode, capacity_rps, rates, repeats, n, predicted: […], …},
"runs": [{"summary": …, "requests": […]}, …]}`` — the ``runs`` list is the ``--json`` schema of
``bench``, one run per rate and repeat.
"""

from __future__ import annotations

import json
import math
import os
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError
from ..records import RequestSpec, RunResult
from ..workload.arrivals import Arrivals, check_rate

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["AUTO_FRACTIONS", "CURVE_FRACTIONS", "Sweep", "parse_rates", "predicted_curve",
           "read_sweep", "sweep"]

#: Fractions of the measured capacity that ``--rates auto`` runs: 10 % … 110 %, 10 rates.
AUTO_FRACTIONS: tuple[float, ...] = tuple(float(x) for x in np.linspace(0.1, 1.1, 10))
#: Rates (fractions of the predicted capacity) of the predicted curve.
CURVE_FRACTIONS: tuple[float, ...] = tuple(float(x) for x in np.linspace(0.02, 0.98, 40))


def parse_rates(text: str | Sequence[float]) -> list[float] | str:
    """``"auto"`` or ``"0.02,0.05,0.08"`` (requests per model second) → ``"auto"`` or rates.

    Raises:
        ConfigError: an empty list, or a rate that is not a number above 0 (named).
    """
    if isinstance(text, str):
        if text.strip().lower() == "auto":
            return "auto"
        parts = [p.strip() for p in text.split(",") if p.strip()]
    else:
        parts = list(text)  # type: ignore[arg-type]
    if not parts:
        raise ConfigError("--rates needs 'auto' or a list like 0.02,0.05,0.08 (requests per "
                          "model second)")
    return [check_rate(p, name="--rates") for p in parts]


@dataclass
class Sweep:
    """A sweep's runs and its meta-data (see the module docstring)."""

    mode: str
    runs: list[RunResult] = field(default_factory=list)
    capacity_rps: float | None = None
    capacity_from: str = ""
    predicted: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def frame(self) -> pd.DataFrame:
        """One row per run: the offered rate, ρ, measured and predicted figures."""
        import pandas as pd

        rows = []
        for r in self.runs:
            s, o = r.summary, r.summary.open_loop
            rows.append({
                "rate_rps": s.offered_rps,
                "load": (s.offered_rps / self.capacity_rps
                         if s.offered_rps and self.capacity_rps else math.nan),
                "utilisation": s.utilisation, "seed": o.get("seed"), "n": s.n,
                "ok": s.ok, "throughput_rps": s.throughput_rps, "goodput_rps": s.goodput_rps,
                **{f"{m}_{q}_s": o.get(f"{m}_from_arrival_{q}_s")
                   for m in ("latency", "ttft") for q in ("mean", "p50", "p95", "p99")},
                "predicted_latency_mean_s": s.predicted_latency_mean_s,
                "predicted_latency_p95_s": s.predicted_latency_p95_s,
                "predicted_ttft_mean_s": s.predicted_ttft_mean_s,
                "replay_latency_mean_s": o.get("replay_latency_mean_s"),
                "replay_latency_p95_s": o.get("replay_latency_p95_s"),
                "lag_p95_clock_ms": o.get("lag_p95_clock_ms"),
                "fell_behind": o.get("fell_behind"),
            })
        return pd.DataFrame(rows)

    def predicted_frame(self) -> pd.DataFrame:
        """Theory's curve: one row per rate (empty when the servers were not simulated)."""
        import pandas as pd

        return pd.DataFrame(self.predicted)

    def table(self) -> str:
        """A plain-text table, one line per run (model seconds; latency from arrival)."""
        head = (f"{'rate/s':>8}{'load':>6}{'ρ':>6}{'thru/s':>8}{'good/s':>8}{'lat mean':>10}"
                f"{'run':>8}{'steady':>8}{'lat p95':>9}{'run':>8}{'steady':>8}{'ttft p95':>10}"
                f"{'ok/n':>8}")
        lines = [f"sweep of {self.mode}" + (f": capacity {self.capacity_rps:.4g} req/s "
                                            f"({self.capacity_from})"
                                            if self.capacity_rps else ""), head,
                 "-" * len(head)]
        for r in self.runs:
            s, o = r.summary, r.summary.open_loop
            load = (s.offered_rps / self.capacity_rps if s.offered_rps and self.capacity_rps
                    else math.nan)
            lines.append(
                f"{_f(s.offered_rps, 8, 4)}{_f(load, 6, 2)}{_f(s.utilisation, 6, 2)}"
                f"{_f(s.throughput_rps, 8, 4)}{_f(s.goodput_rps, 8, 4)}"
                f"{_f(o.get('latency_from_arrival_mean_s'), 10, 2)}"
                f"{_f(o.get('replay_latency_mean_s'), 8, 2)}"
                f"{_f(s.predicted_latency_mean_s, 8, 2)}"
                f"{_f(o.get('latency_from_arrival_p95_s'), 9, 2)}"
                f"{_f(o.get('replay_latency_p95_s'), 8, 2)}"
                f"{_f(s.predicted_latency_p95_s, 8, 2)}"
                f"{_f(o.get('ttft_from_arrival_p95_s'), 10, 2)}{f'{s.ok}/{s.n}':>8}")
        if self.runs:
            s0 = self.runs[0].summary
            lines.append(f"(latency and TTFT from each request's arrival, model seconds; "
                         f"{'simulated Ollama' if s0.backend == 'sim' else 'real Ollama'}, "
                         f"time scale {s0.time_scale:g}; run = theory for this run's own "
                         f"arrivals, steady = theory at that rate, ∞ past capacity)")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        from ..records import nan_to_none

        meta = {"mode": self.mode, "capacity_rps": self.capacity_rps,
                "capacity_from": self.capacity_from, "predicted": self.predicted, **self.meta}
        return {"sweep": nan_to_none(meta), "runs": [r.to_dict() for r in self.runs]}

    def write_json(self, path: str | os.PathLike[str]) -> Path:
        """Write the sweep (module docstring's schema); returns the path."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n",
                     encoding="utf-8")
        return p


def read_sweep(path: str | os.PathLike[str]) -> Sweep:
    """Read a sweep written by :meth:`Sweep.write_json`.

    Raises:
        ConfigError: the file is missing or is not a sweep.
    """
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
        meta = dict(doc["sweep"])
        runs = [RunResult.from_dict(r) for r in doc["runs"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{p} is not a sweep file written by 'parallel-kit sweep --json' "
                          f"({exc})") from None
    mode = meta.pop("mode")
    return Sweep(mode, runs, meta.pop("capacity_rps", None), meta.pop("capacity_from", ""),
                 meta.pop("predicted", []), meta)


def _f(x: float | None, width: int, digits: int) -> str:
    """A right-aligned cell, always with a space before it (a wide number pushes the row
    right instead of running into its neighbour)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        text = "—"
    elif math.isinf(x):
        text = "∞"
    else:
        text = f"{x:.{digits}f}"
    return " " + text.rjust(width - 1)


async def sweep(
    mode: str,
    rates: str | Sequence[float] = "auto",
    *,
    n: int = 30,
    repeats: int = 1,
    process: str = "poisson",
    burstiness: float = 1.0,
    seed: int = 0,
    warmup: int = 0,
    max_concurrency: int | None = None,
    slo: str | None = None,
    command: str | None = None,
    on_run: Callable[[RunResult], None] | None = None,
    into: Sweep | None = None,
    salt: str | bool = True,
    **compare_kwargs: Any,
) -> Sweep:
    """Run ``mode`` at each rate (``"auto"``: 10 % … 110 % of its measured capacity).

    Args:
        mode: one mode name.
        rates: ``"auto"``, a list of rates, or ``"r1,r2,…"`` (requests per model second).
        n: requests per run (and in the capacity burst).
        repeats: runs per rate (seeds ``seed``, ``seed + 1``, …).
        process, burstiness, warmup, max_concurrency: as :class:`~parallel_kit.workload.arrivals.Arrivals`.
        slo: ``"ttft=…,tpot=…,latency=…"`` for goodput.
        command: the command line that made it (kept in the JSON).
        on_run: called with each run as it finishes (progress).
        salt: True (default): a fresh salt for the sweep, a string: that one, False: none.
            Cell ``i`` (the capacity burst is cell 0 when there is one) runs with salt
            ``<salt>-c<i>``, so no cell sees a prompt an earlier cell sent; every run's
            inferred cache hit rate is in its summary, and a run over 10 % is flagged
            (``summary.cache_flagged``) unless the ``workload`` asked for caching.
        into: a :class:`Sweep` to fill as runs finish. When the sweep is cancelled (Ctrl-C,
            SIGTERM) it holds every finished run plus the interrupted one, whose unfinished
            requests are failed rows ("cancelled"), and its settings — so it can be written.
        compare_kwargs: passed to :func:`parallel_kit.bench.compare` (``gpus``, ``slots``,
            ``time_scale``, ``profile``, ``hosts``, …).

    Raises:
        ConfigError: bad rates, repeats or n; a capacity burst in which nothing finished.
    """
    import asyncio

    from . import comparison_salt

    parsed = parse_rates(rates)
    base_salt = comparison_salt(salt)
    _check_counts(repeats, n)
    result = into if into is not None else Sweep(mode)
    result.mode = mode
    chosen: list[float] = []

    def settle() -> None:
        first = result.runs[0].summary if result.runs else None
        result.meta = {
            "rates": list(chosen), "repeats": repeats, "n": n, "process": process,
            "burstiness": burstiness if process == "gamma" else None, "seed": seed,
            "warmup": warmup, "max_concurrency": max_concurrency, "slo": slo,
            "time_scale": first.time_scale if first else None,
            "backend": first.backend if first else None,
            "command": command,
            "salt": base_salt,
            "flagged_cells": [i for i, r in enumerate(result.runs) if r.summary.cache_flagged],
            "machine": machine_description(),
        }

    try:
        await _sweep_runs(result, mode, parsed, chosen, n, repeats, process, burstiness, seed,
                          warmup, max_concurrency, slo, on_run, compare_kwargs, base_salt)
    except asyncio.CancelledError:
        settle()
        result.meta["interrupted"] = True
        raise
    _add_curve(result, mode, compare_kwargs, process, burstiness, max_concurrency)
    settle()
    return result


def _check_counts(repeats: Any, n: Any) -> None:
    """:func:`sweep`'s counts, checked before anything runs: ``repeats`` a whole number ≥ 1,
    ``n`` one ≥ 2.

    Raises:
        ConfigError: either is not (named as its flag).
    """
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ConfigError(f"--repeats must be a whole number ≥ 1, got {repeats!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ConfigError(f"--n must be at least 2 requests per rate, got {n!r}")


async def _sweep_runs(result: Sweep, mode: str, parsed: list[float] | str, chosen: list[float],
                      n: int, repeats: int, process: str, burstiness: float, seed: int,
                      warmup: int, max_concurrency: int | None, slo: str | None,
                      on_run: Callable[[RunResult], None] | None,
                      compare_kwargs: dict[str, Any], base_salt: str | None) -> None:
    """The capacity burst (for ``"auto"``) and one run per rate and repeat, into ``result``;
    an interrupted run is kept (its unfinished requests failed rows). Cell ``i`` is salted
    ``<base_salt>-c<i>``; the reference prefill rate for cache inference is carried from cell
    to cell."""
    from . import Comparison, compare

    cells = 0
    prefill: float | None = None

    async def one(**kwargs: Any) -> RunResult:
        nonlocal cells, prefill
        salt = f"{base_salt}-c{cells}" if base_salt is not None else False
        cells += 1
        comp = Comparison()
        try:
            await compare([mode], into=comp, salt=salt, prefill_tokens_per_s=prefill,
                          **kwargs, **compare_kwargs)
        finally:
            if comp.interrupted:
                result.runs.extend(comp.runs)
        prefill = comp.prefill_tokens_per_s
        return comp.runs[0]

    if isinstance(parsed, str):
        burst = await one(n=n)
        cap = burst.summary.throughput_rps
        if not cap or math.isnan(cap):
            raise ConfigError(f"the capacity burst of {mode} finished no request — check the "
                              f"servers, or give --rates r1,r2,…")
        result.capacity_rps = float(cap)
        result.capacity_from = f"measured: a burst of {n} requests, finished ÷ makespan"
        chosen[:] = [cap * f for f in AUTO_FRACTIONS]
    else:
        chosen[:] = list(parsed)
    for rate in chosen:
        for rep in range(repeats):
            arrivals = Arrivals(rate=rate, process=process, burstiness=burstiness,
                                seed=seed + rep, n=n, warmup=warmup,
                                max_concurrency=max_concurrency)
            run = await one(arrivals=arrivals, slo=slo)
            result.runs.append(run)
            if on_run is not None:
                on_run(run)


def _add_curve(result: Sweep, mode: str, kwargs: dict[str, Any], process: str,
               burstiness: float, max_concurrency: int | None) -> None:
    """Theory's curve over rates, when the runs were on a simulated profile."""
    if not result.runs:
        return
    o = result.runs[0].summary.open_loop
    profile_name = o.get("profile")
    if not profile_name:
        return
    from .. import theory
    from ..config import max_concurrent_from_env
    from ..sim.profiles import load_profile

    s = result.runs[0].summary
    # The requests as they ran: their prompts, and the lengths the server gave them.
    specs = [RequestSpec(r.prompt, model=r.model, num_predict=r.output_tokens)
             for r in result.runs[0].requests if r.ok and r.output_tokens]
    service = theory.service_model_from_profile(load_profile(profile_name), specs)
    topology: dict[str, Any] = {"workers": s.workers, "slots": s.slots,
                                "concurrency": (kwargs.get("concurrency")
                                                or max_concurrent_from_env()),
                                "max_concurrency": max_concurrency,
                                "max_ongoing": getattr(kwargs.get("serve"), "max_ongoing",
                                                       None)}
    capacity, curve = predicted_curve(mode, service, process=process, burstiness=burstiness,
                                      **topology)
    if result.capacity_rps is None:
        result.capacity_rps = capacity
        result.capacity_from = "predicted from the profile's latency model"
    result.predicted = curve


def predicted_curve(mode: Any, service: Any, *, fractions: Sequence[float] = CURVE_FRACTIONS,
                    process: str = "poisson", burstiness: float = 1.0, requests: int = 5000,
                    **topology: Any) -> tuple[float, list[dict[str, Any]]]:
    """Theory's latency/TTFT curve for ``mode`` at ``fractions`` of its predicted capacity.

    Args:
        mode: a mode name or a :class:`~parallel_kit.topology.Topology`.
        service: a :class:`~parallel_kit.theory.ServiceModel`
            (``theory.service_model_from_profile(load_profile("seed"), prompts)``).
        fractions: offered load as fractions of the capacity (default 2 % … 98 %, 40 points).
        process, burstiness: the arrival process.
        requests: arrivals per point of the discrete-event run (5,000: ~20 ms a point).
        topology: ``workers``, ``slots``, ``concurrency``, ``max_concurrency``,
            ``max_ongoing`` as for :func:`parallel_kit.theory.predict_load`.

    Returns:
        (capacity in requests per model second, one dict per point: ``rate_rps``,
        ``utilisation``, ``latency_{mean,p50,p95,p99}_s``, ``ttft_{mean,p50,p95,p99}_s``,
        ``throughput_rps``; model seconds, latency from arrival).
    """
    from .. import theory

    capacity = theory.predict_load(mode, service, rate=1.0, requests=200,
                                   **topology).capacity_rps
    curve = []
    for f in fractions:
        p = theory.predict_load(mode, service, rate=capacity * f, process=process,
                                burstiness=burstiness, requests=requests, **topology)
        curve.append({"rate_rps": p.rate, "utilisation": p.utilisation,
                      "latency_mean_s": p.latency_mean_s, "latency_p50_s": p.latency_p50_s,
                      "latency_p95_s": p.latency_p95_s, "latency_p99_s": p.latency_p99_s,
                      "ttft_mean_s": p.ttft_mean_s, "ttft_p50_s": p.ttft_p50_s,
                      "ttft_p95_s": p.ttft_p95_s, "ttft_p99_s": p.ttft_p99_s,
                      "throughput_rps": min(p.rate, capacity)})
    return capacity, curve


def machine_description() -> dict[str, Any]:
    """What ran a measurement: CPU count, platform, Python, and the load average then."""
    try:
        load = list(os.getloadavg())
    except OSError:
        load = []
    return {"platform": platform.platform(), "processor": platform.processor() or
            platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "load_average": [round(x, 2) for x in load]}
