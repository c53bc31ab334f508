"""Measuring a server: load time, prefill and decode speed, time to first token, real slots.

``probe(host, model)`` asks an Ollama server (real or simulated) four questions:

* **load_s** — a cold load: unload the model (empty prompt, ``keep_alive: 0``), then load it
  (empty prompt), reading ``load_duration`` (or timing the call: real Ollama answers an empty
  prompt without durations).
* **prefill_tokens_per_s**, **decode_tokens_per_s**, **ttft_s** — one request alone, the first
  after the load (so no prompt cache helps it), from Ollama's ``prompt_eval_*`` / ``eval_*``
  counts and durations; ``ttft_s`` as the client saw it. With ``repeats`` > 1 the request alone
  is timed that many times (each with a different start, so no prompt cache helps) and each
  figure is the median: on a shared CPU one request can be caught by another process's burst,
  and a profile calibrated from it would be off by as much (a real CPU model varied by ±10 %
  from request to request on a busy 2-core machine). ``prompt_tokens`` and ``prompt_bytes``
  record the server's token count for the probe's prompt and its UTF-8 size, so that a profile
  can convert the prefill speed to the simulator's own count of tokens
  (:func:`parallel_kit.measure.calibrate.profile_from_probe`). ``service_cv`` is the coefficient of
  variation of its service time (the server's prefill + decode durations) over the repeats —
  the machine's request-to-request jitter, which a calibrated profile keeps for theory's
  latency predictions under load (None with one try).
* **effective_slots** — how many requests it really runs at once. For k = 1 … ``max_k`` it sends
  k requests together and looks at *when each one was being worked on* (from the server's own
  prefill and decoding durations, else first to last token on the client): requests that share
  a slot take turns, so their spans do not overlap; requests in separate slots decode side by
  side. The count is the largest group whose spans overlap by at least half — robust to
  scheduling jitter, and independent of how much faster the batch decodes.
* **speedup** — ``S(k)``, aggregate output tokens/s with k at once ÷ with one: 1.0 for one slot,
  rising then flattening with more (``docs/OLLAMA_BEHAVIOUR.md``: ~1.5× at 4 slots).

All figures are model seconds (a simulator's clock ÷ its time scale; real Ollama: scale 1).

Through the OpenAI-compatible API (``api="openai"``: llama.cpp's ``llama-server``, vLLM,
Ollama's ``/v1``) the same requests go to ``/v1/chat/completions``, streamed, with
``stream_options: {"include_usage": true}`` for the token counts; no native Ollama route is
asked (the server's name comes from :func:`parallel_kit.servers.backend.discover_server`). That API
cannot unload a model, so ``load_s`` is not measured. Prefill and decode speeds and the working
spans come from the server's own durations where it reports them (llama-server's ``timings``),
else from the client's clock: decode = (tokens − 1) ÷ (last − first token), no prefill speed.
A server that sends no usage has its output tokens counted as streamed chunks (about one token
each), and a note says so.
"""

from __future__ import annotations

import asyncio
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..clients import OllamaClient, OpenAIClient, RetryPolicy
from ..clients.factory import make_client
from ..config import DEFAULT_MODEL, check_time_scale
from ..errors import ConfigError, ModelNotFound, RequestFailed
from ..records import RequestResult, RequestSpec
from ..timing import ModelClock

__all__ = ["DEFAULT_NUM_PREDICT", "Capacity", "ProbeResult", "aggregate_decode_tokens_per_s",
           "decoding_span", "decoding_together", "measure_capacity", "probe", "working_span"]

#: Tokens per probe request: enough for decoding spans to be seen, short on a real GPU.
DEFAULT_NUM_PREDICT = 32
_MIN_NUM_PREDICT = 8
_PROMPT = ("Write a long, detailed story about a lighthouse keeper who finds a message in a "
           "bottle. Describe the sea, the weather, the lighthouse and every step of the keeper's "
           "day before and after the discovery.")


@dataclass
class ProbeResult:
    """What :func:`probe` measured. Times in model seconds, speeds in tokens per model second.

    ``speedup`` and ``concurrent`` map k (requests sent together) to S(k) and to how many of
    those k decoded at the same time. A speed is ``None`` when the server reported no duration
    for it (e.g. a simulator with instant prefill).
    """

    host: str
    model: str
    time_scale: float
    load_s: float | None
    prefill_tokens_per_s: float | None
    decode_tokens_per_s: float | None
    ttft_s: float | None
    effective_slots: int
    speedup: dict[int, float]
    concurrent: dict[int, int]
    max_k: int
    num_predict: int
    version: str = ""
    notes: list[str] = field(default_factory=list)
    prompt_tokens: int | None = None
    prompt_bytes: int | None = None
    repeats: int = 1
    service_cv: float | None = None
    #: model seconds a request alone takes beyond the server's prefill, decode and load
    #: durations, as the client sees it (median of the tries alone; None when not timed)
    request_overhead_s: float | None = None
    #: the API measured through: ``generate`` (Ollama's native) or ``openai`` (``/v1``)
    api: str = "generate"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``speedup``/``concurrent`` keys become strings, NaN becomes None."""
        return {
            "host": self.host, "model": self.model, "version": self.version,
            "time_scale": self.time_scale,
            "effective_slots": self.effective_slots,
            "decode_tokens_per_s": _clean(self.decode_tokens_per_s),
            "prefill_tokens_per_s": _clean(self.prefill_tokens_per_s),
            "load_s": _clean(self.load_s),
            "ttft_s": _clean(self.ttft_s),
            "speedup": {str(k): _clean(v) for k, v in self.speedup.items()},
            "concurrent": {str(k): v for k, v in self.concurrent.items()},
            "max_k": self.max_k, "num_predict": self.num_predict, "notes": list(self.notes),
            "prompt_tokens": self.prompt_tokens, "prompt_bytes": self.prompt_bytes,
            "repeats": self.repeats, "service_cv": _clean(self.service_cv),
            "request_overhead_s": _clean(self.request_overhead_s), "api": self.api,
        }

    def table(self) -> str:
        """A small text table for the terminal."""
        version = self.version
        if version and self.api != "openai" and not version.startswith("Ollama"):
            version = f"Ollama {version}"
        lines = [f"probe of {self.host} — model {self.model}"
                 + (f", {version}" if version else "")
                 + (" (OpenAI API, /v1)" if self.api == "openai" else "")
                 + (f", time scale {self.time_scale:g}" if self.time_scale != 1 else ""),
                 f"  {'load (cold)':<22}{_fmt(self.load_s, 's')}",
                 f"  {'prefill':<22}{_fmt(self.prefill_tokens_per_s, 'tok/s')}",
                 f"  {'decode (one request)':<22}{_fmt(self.decode_tokens_per_s, 'tok/s')}",
                 f"  {'time to first token':<22}{_fmt(self.ttft_s, 's')}",
                 f"  {'effective slots':<22}{self.effective_slots}",
                 *([f"  {'service time CV':<22}{self.service_cv:.3f} over {self.repeats} "
                    f"tries alone"] if self.service_cv is not None else []),
                 *([f"  {'outside its timings':<22}{_fmt(self.request_overhead_s, 's')} per "
                    f"request (HTTP, template, bookkeeping)"]
                   if self.request_overhead_s is not None else []),
                 "  k at once   decoding together   S(k) aggregate speed-up"]
        for k in sorted(self.speedup):
            lines.append(f"  {k:>9}   {self.concurrent.get(k, 0):>17}   {self.speedup[k]:>6.2f}×")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)


async def probe(host: str, model: str = DEFAULT_MODEL, *, max_k: int = 4,
                num_predict: int = DEFAULT_NUM_PREDICT, time_scale: float = 1.0,
                timeout: float = 600.0, repeats: int = 1, api: str = "generate") -> ProbeResult:
    """Measure the server at ``host`` with ``model`` (see the module docstring).

    Args:
        host: the server (any ``OLLAMA_HOST`` form).
        model: the model to measure; it must be on the server.
        max_k: most requests sent together (k = 1 … max_k).
        num_predict: output tokens per probe request (at least 8).
        time_scale: the simulator's time scale when ``host`` is one the kit did not start
            (1.0 for real Ollama); converts the client's clock into model seconds.
        timeout: seconds to wait for any answer.
        repeats: times the request alone is timed; its speeds and TTFT are the medians.
        api: ``generate`` (default) or ``chat`` — Ollama's native API — or ``openai`` (any
            OpenAI-compatible server; only ``/v1`` routes and the ones
            :func:`~parallel_kit.servers.backend.discover_server` names).

    Raises:
        OllamaUnavailable, ModelNotFound, RequestFailed: the server is missing, lacks the
            model, or a probe request failed. ConfigError: bad arguments.
    """
    _check_probe_args(max_k, num_predict, repeats)
    check_time_scale(time_scale)
    clock = ModelClock(time_scale)
    client = _probe_client(api, host, max_k, timeout)
    notes: list[str] = []
    async with client:
        version = await _version_having(client, model, api)
        load_s = await _load_or_warm(client, clock, model, notes)
        alone = [(await _together(client, clock, model, num_predict, 1, i))[0]
                 for i in range(repeats)]
        concurrent, speedup = await _scan_k(client, clock, model, num_predict, max_k,
                                            first=repeats)

    effective = max(concurrent.values())
    if client.chunk_counted:
        notes.append(f"{client.chunk_counted} answer(s) came without token usage: their "
                     f"output tokens are counted as streamed chunks (about one token each)")
    if effective == max_k and max_k > 1:
        notes.append(f"all {max_k} requests ran at once: the server may have more slots — "
                     f"probe again with a larger --max-k")
    prefill, decode = _speeds_alone(alone, api, notes)
    return ProbeResult(
        host=client.host, model=model, time_scale=time_scale, load_s=load_s,
        prefill_tokens_per_s=prefill,
        decode_tokens_per_s=decode,
        ttft_s=_median([None if math.isnan(r.ttft_s) else r.ttft_s for r in alone]),
        effective_slots=effective, speedup=speedup, concurrent=concurrent, max_k=max_k,
        num_predict=num_predict, version=version, notes=notes,
        prompt_tokens=alone[0].prompt_tokens or None,
        prompt_bytes=len(_spec(0, model, num_predict).prompt.encode("utf-8")), repeats=repeats,
        service_cv=_cv([_service_s(r) for r in alone]),
        request_overhead_s=_median([_outside_s(r) for r in alone]), api=api)


def _check_probe_args(max_k: int, num_predict: int, repeats: int) -> None:
    """ConfigError unless ``max_k`` and ``repeats`` are whole numbers ≥ 1 and ``num_predict``
    at least the tokens a probe needs to see requests overlap."""
    if isinstance(max_k, bool) or not isinstance(max_k, int) or max_k < 1:
        raise ConfigError(f"--max-k must be a whole number ≥ 1, got {max_k!r}")
    if isinstance(num_predict, bool) or not isinstance(num_predict, int) \
            or num_predict < _MIN_NUM_PREDICT:
        raise ConfigError(f"--num-predict must be at least {_MIN_NUM_PREDICT} tokens for the "
                          f"probe to see requests overlap, got {num_predict!r}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ConfigError(f"repeats must be a whole number ≥ 1, got {repeats!r}")


def _probe_client(api: str, host: str, max_k: int, timeout: float
                  ) -> OllamaClient | OpenAIClient:
    """A client for ``max_k`` requests at once that counts streamed chunks where a server
    sends no usage. No retries: a busy or failing server should show up in the measurement,
    not be hidden."""
    client = make_client(api, host, max_connections=max_k, timeout=timeout,
                         retry=RetryPolicy(max_retries=0))
    client.count_chunks = True
    return client


async def _version_having(client: OllamaClient | OpenAIClient, model: str, api: str) -> str:
    """The server's name and version; ModelNotFound when it does not list ``model``."""
    if isinstance(client, OpenAIClient):
        from ..servers.backend import discover_server

        facts = await discover_server(client.host, "openai")
        version = facts.name
        models = await client.list_models()
    else:
        version = await client.version()
        models = await client.list_models()
    want = model if ":" in model else f"{model}:latest"
    if model not in models and want not in models:
        raise ModelNotFound(model, client.host, models,
                            fix=None if api != "openai" else
                            "name one it lists with --model")
    return version


async def _load_or_warm(client: OllamaClient | OpenAIClient, clock: ModelClock, model: str,
                        notes: list[str]) -> float | None:
    """Ollama's native API: the model's cold load time (unloaded, then loaded), model
    seconds. The OpenAI API, which cannot unload: one short request first, so that the first
    timed one does not pay a load, and None. Notes go to ``notes``."""
    if not isinstance(client, OllamaClient):
        notes.append("load time not measured: the OpenAI API cannot unload a model")
        warm = await client.run(_spec(-1, model, _MIN_NUM_PREDICT), clock=clock,
                                mode="probe", model=model)
        if not warm.ok:
            raise RequestFailed(f"a probe request failed: {warm.error}", host=client.host)
        return None
    await client.unload(model)
    started = clock.now()
    loaded = await client.load(model)
    # Real Ollama answers an empty prompt without durations; then the call's own time
    # (on a real server seconds of loading against milliseconds of HTTP) is the measure.
    load_ns = loaded.get("load_duration")
    load_s: float = (load_ns * 1e-9 if isinstance(load_ns, (int, float))
                     else clock.now() - started)
    # A simulator says at once when Ollama's scheduler gave fewer slots than asked (a
    # family forced to one slot, server/sched.go), before any request is measured.
    slot_note = await _single_slot_note(client.host, model)
    if slot_note:
        notes.append(slot_note)
    return load_s


def _speeds_alone(alone: Sequence[RequestResult], api: str, notes: list[str]
                  ) -> tuple[float | None, float | None]:
    """Prefill and decode tokens/s of the requests alone (medians): the server's durations,
    else (OpenAI API) decode from the client's clock. Notes go to ``notes``."""
    prefill = _median([_rate(r.prompt_tokens, r.server_prompt_eval_s) for r in alone])
    if prefill is None:
        notes.append("prefill not timed: the server reported no prefill duration"
                     if api == "openai" else
                     "prefill too fast to time (no prompt_eval_duration)")
    decode = _median([_rate(r.output_tokens, r.server_eval_s) for r in alone])
    if decode is None and api == "openai":
        decode = _median([_client_decode_rate(r) for r in alone])
        if decode is not None:
            notes.append("decode speed from the client's clock (first to last streamed token): "
                         "the server reported no durations")
    return prefill, decode


def _client_decode_rate(row: RequestResult) -> float | None:
    """(tokens − 1) ÷ (last − first streamed token), model seconds; None when not known."""
    if not row.output_tokens or row.output_tokens < 2:
        return None
    span = row.finished_s - row.first_token_s
    return (row.output_tokens - 1) / span if span > 0 else None


async def _together(client: OllamaClient | OpenAIClient, clock: ModelClock, model: str,
                    num_predict: int, k: int, first: int) -> list[RequestResult]:
    """``k`` probe requests sent at once; RequestFailed when any fails."""
    specs = [_spec(first + i, model, num_predict) for i in range(k)]
    rows = await asyncio.gather(*(client.run(s, clock=clock, mode="probe", model=model)
                                  for s in specs))
    failed = [r for r in rows if not r.ok]
    if failed:
        raise RequestFailed(f"a probe request failed: {failed[0].error}", host=client.host)
    return list(rows)


async def _scan_k(client: OllamaClient | OpenAIClient, clock: ModelClock, model: str,
                  num_predict: int, max_k: int, *, first: int = 0
                  ) -> tuple[dict[int, int], dict[int, float]]:
    """For k = 1 … ``max_k``: how many of k sent together decoded together, and S(k)."""
    speedup: dict[int, float] = {}
    concurrent: dict[int, int] = {}
    base_rate = math.nan
    sent = first
    for k in range(1, max_k + 1):
        rows = await _together(client, clock, model, num_predict, k, sent)
        sent += k
        rate = aggregate_decode_tokens_per_s(rows)
        if k == 1:
            base_rate = rate
        speedup[k] = rate / base_rate if base_rate > 0 else math.nan
        concurrent[k] = decoding_together(rows)
    return concurrent, speedup


@dataclass
class Capacity:
    """What :func:`measure_capacity` found: ``slots`` (requests decoding together at most, a
    lower bound when it equals ``max_k``), ``speedup`` S(k) for k = 1 … ``max_k``."""

    slots: int
    speedup: dict[int, float]
    max_k: int

    def S(self, k: int) -> float:
        """S(k) as measured up to ``max_k`` (below 1 too: requests that share a CPU can slow
        one another); beyond it the last measured value (no more gain is assumed than was
        seen); 1 where nothing finite was measured."""
        if k < 1:
            return 1.0
        known = [v for kk, v in sorted(self.speedup.items())
                 if kk <= k and math.isfinite(v) and v > 0]
        return known[-1] if known else 1.0


async def measure_capacity(host: str, model: str, *, api: str = "generate", max_k: int = 4,
                           num_predict: int = 16, time_scale: float = 1.0,
                           timeout: float = 600.0) -> Capacity:
    """A short concurrency scan (no load/unload): k = 1 … ``max_k`` requests of
    ``num_predict`` tokens sent together, as :func:`probe` does — the server's slots and S(k)
    for a benchmark to label and predict with (``bench`` on a real server).

    Raises:
        OllamaUnavailable, RequestFailed: a request of the scan failed. ConfigError: bad
            arguments.
    """
    if isinstance(max_k, bool) or not isinstance(max_k, int) or max_k < 1:
        raise ConfigError(f"max_k must be a whole number ≥ 1, got {max_k!r}")
    clock = ModelClock(check_time_scale(time_scale))
    client = _probe_client(api, host, max_k, timeout)
    async with client:
        await _together(client, clock, model, _MIN_NUM_PREDICT, 1, -1)  # warm: no load inside
        concurrent, speedup = await _scan_k(client, clock, model, max(num_predict,
                                                                      _MIN_NUM_PREDICT), max_k)
    return Capacity(max(concurrent.values()), speedup, max_k)


def _service_s(row: RequestResult) -> float:
    """A request's service time: the server's prefill + decode durations, else its latency."""
    if row.server_prompt_eval_s is not None and row.server_eval_s is not None:
        return row.server_prompt_eval_s + row.server_eval_s
    return row.latency_s


def _outside_s(row: RequestResult) -> float | None:
    """The client's latency minus the server's prefill, decode and load durations (≥ 0);
    None without the server's durations."""
    if row.server_prompt_eval_s is None or row.server_eval_s is None:
        return None
    return max(0.0, row.latency_s - row.server_prompt_eval_s - row.server_eval_s
               - (row.server_load_s or 0.0))


def _cv(values: Sequence[float]) -> float | None:
    """Sample coefficient of variation (standard deviation with n − 1 ÷ mean); None below 2."""
    xs = [v for v in values if v is not None and math.isfinite(v)]
    if len(xs) < 2 or statistics.fmean(xs) <= 0:
        return None
    return statistics.stdev(xs) / statistics.fmean(xs)


def _median(values: Sequence[float | None]) -> float | None:
    """The median of the values that are there (None when none is)."""
    present = sorted(v for v in values if v is not None)
    return statistics.median(present) if present else None


def decoding_together(rows: Sequence[RequestResult]) -> int:
    """The largest number of requests whose working spans overlap (see :func:`working_span`).

    Two requests count as together when their spans overlap by at least half of the shorter
    one: taking turns gives (almost) no overlap, sharing the GPU gives (almost) full overlap.
    """
    spans = [span for span in map(working_span, rows) if span is not None]
    best = 1 if spans else 0
    for a0, a1 in spans:
        group = 0
        for b0, b1 in spans:
            shorter = min(a1 - a0, b1 - b0)
            overlap = min(a1, b1) - max(a0, b0)
            if overlap > 0 and overlap >= 0.5 * shorter:
                group += 1
        best = max(best, group)
    return best


def working_span(row: RequestResult) -> tuple[float, float] | None:
    """When the server worked on ``row`` (model seconds on the run's axis), or None.

    From Ollama's own durations when it reports them — ``finished_s`` minus prefill and
    decoding — because they do not depend on how finely the answer was streamed; otherwise
    from the first token to the last as the client saw them.
    """
    if math.isnan(row.finished_s):
        return None
    if row.server_eval_s is not None:
        work = row.server_eval_s + (row.server_prompt_eval_s or 0.0)
        return (row.finished_s - work, row.finished_s)
    if math.isnan(row.first_token_s):
        return None
    return (row.first_token_s, row.finished_s)


def decoding_span(row: RequestResult) -> tuple[float, float] | None:
    """When the server decoded ``row``'s answer (model seconds on the run's axis), or None.

    From Ollama's own ``eval_duration`` when it reports it (``finished_s`` minus decoding),
    otherwise from the first token to the last as the client saw them. The prompt is left
    out: a profile's S(k) scales its ``decode_tps`` (each of k decoding together gets
    ``decode_tps × S(k) / k``), and that rate is the decode alone, prompt excluded.
    """
    if math.isnan(row.finished_s):
        return None
    if row.server_eval_s is not None:
        return (row.finished_s - row.server_eval_s, row.finished_s)
    if math.isnan(row.first_token_s):
        return None
    return (row.first_token_s, row.finished_s)


def aggregate_decode_tokens_per_s(rows: Sequence[RequestResult]) -> float:
    """Output tokens of all rows ÷ model seconds from the first start of decoding to the last
    finish (:func:`decoding_span`): the k requests' decode rate together, the numerator of
    S(k) = rate(k) ÷ rate(1) in the units of the profile's ``decode_tps``. Prefill, queueing
    before it and connection set-up are left out (a prompt that rides in the decode batch
    still slows the steps it shares, and that is counted). NaN when nothing was timed.
    """
    spans = [span for span in map(decoding_span, rows) if span is not None]
    if not spans:
        return math.nan
    window = max(end for _, end in spans) - min(start for start, _ in spans)
    tokens = sum(r.output_tokens or 0 for r in rows)
    return tokens / window if window > 0 else math.nan


async def _single_slot_note(host: str, model: str) -> str | None:
    """``asked for K slots, got 1: …`` from a simulated Ollama's ``/sim/stats``; None for a
    real Ollama (which does not say) or when the model kept its slots."""
    from ..servers.backend import sim_info

    stats = await sim_info(host)
    forced = (stats or {}).get("single_slot") or {}
    want = model if ":" in model.rsplit("/", 1)[-1] else f"{model}:latest"
    note = forced.get(want) if isinstance(forced, dict) else None
    return str(note) if note else None


def _spec(i: int, model: str, num_predict: int) -> RequestSpec:
    # A different start per request: Ollama reuses a cached prompt prefix, which would make
    # prefill of repeated prompts look free.
    return RequestSpec(f"[{i}] {_PROMPT}", model=model, num_predict=num_predict,
                       request_id=f"probe{i}")


def _rate(tokens: int | None, seconds: float | None) -> float | None:
    if not tokens or not seconds or seconds <= 0:
        return None
    return tokens / seconds


def _clean(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) or math.isinf(value) else value


def _fmt(value: float | None, unit: str) -> str:
    if value is None or math.isnan(value):
        return "—"
    return f"{value:,.3g} {unit}" if value < 100 else f"{value:,.0f} {unit}"
