"""Calibration: turn what ``probe`` measured on a server into a simulator profile, and save it.

The simulator's latency model needs, per model, the decode and prefill speed of one request
alone, the load time and the aggregate speed-up ``S(k)`` with k requests at once. ``probe``
measures exactly those against any Ollama-compatible server — a real Ollama, or the kit's real
CPU engine (``parallel-kit sim --engine llama-server``). :func:`profile_from_probe` writes them
into a :class:`~parallel_kit.sim.profiles.Profile`, :func:`save_profile` puts it into the user's
profile file, and from then on ``--profile NAME`` makes the simulator stand in for that machine.

The user profile file is ``PARALLEL_KIT_PROFILES`` when set, else
``$XDG_CONFIG_HOME/parallel_kit/profiles.json`` (``~/.config/parallel_kit/profiles.json``).

All times are model seconds (a real server: clock seconds).
"""

from __future__ import annotations

import asyncio
import math
import os
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..config import DEFAULT_MODEL
from ..errors import ConfigError, RequestFailed
from ..sim import profiles as _profiles
from ..sim.profiles import ModelSpeed, Profile

__all__ = [
    "PromptFit",
    "SpeedupSamples",
    "default_profiles_path",
    "measure_prompts",
    "measure_speedup",
    "measure_speedup_samples",
    "profile_from_probe",
    "save_profile",
    "speedup_points",
]

_PROMPT = ("Write a long story about a lighthouse keeper who finds a message in a bottle, "
           "with the sea, the weather and every hour of the keeper's day.")


def default_profiles_path() -> Path:
    """Where measured profiles go: ``PARALLEL_KIT_PROFILES``, else the user config folder
    (the same file :func:`parallel_kit.sim.profiles.load_profile` reads)."""
    return _profiles.user_profiles_path()


def _get(result: Any, key: str) -> Any:
    """A field of a ``ProbeResult`` or of its dict form."""
    if isinstance(result, Mapping):
        return result.get(key)
    return getattr(result, key, None)


def _positive(result: Any, key: str, *, required: bool) -> float | None:
    value = _get(result, key)
    if value is None and not required:
        return None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value) and value > 0
    if not ok:
        raise ConfigError(f"probe result field {key!r} must be a positive number, got "
                          f"{value!r} — run `parallel-kit probe` again against a working server")
    return float(value)


def speedup_points(speedup: Mapping[Any, Any]) -> tuple[list[list[float]], str]:
    """``{k: S(k)}`` (keys may be strings, as in probe's JSON) → profile points and a note.

    The simulator's profiles let S(k) only rise or stay flat. When the measurement falls (k
    workers on fewer cores than k: they get in each other's way), the point is kept at the
    best S so far, and the note says what was measured, so nothing is hidden.

    Raises:
        ConfigError: no S(1), a k that is not a whole number ≥ 1, or an S that is not positive.
    """
    try:
        pairs = sorted((int(k), float(s)) for k, s in speedup.items())
    except (TypeError, ValueError):
        raise ConfigError(f"speedup must map k (whole numbers) to S(k), got {speedup!r}") from None
    if not pairs or pairs[0][0] != 1:
        raise ConfigError("speedup needs S(1) (one request alone) — probe with --max-k 1 or more")
    points: list[list[float]] = []
    fell: list[str] = []
    best = 0.0
    for k, s in pairs:
        if k < 1 or not math.isfinite(s) or s <= 0:
            raise ConfigError(f"speedup S({k}) = {s} is not a positive number")
        s = 1.0 if k == 1 else min(s, float(k))  # S(1) = 1 by definition; S(k) ≤ k
        if s < best:
            fell.append(f"S({k}) = {s:.2f} measured")
        best = max(best, s)
        points.append([k, round(best, 3)])
    note = ("; kept flat where the measurement fell: " + ", ".join(fell)) if fell else ""
    return points, note


def profile_from_probe(name: str, probe_result: Any, *, model: str | None = None,
                       output_tokens: tuple[int, int] | None = None,
                       num_parallel: int | None = None, description: str = "",
                       details: Mapping[str, Any] | None = None,
                       prefill_in_batch: bool = True,
                       prompts: PromptFit | None = None) -> Profile:
    """A simulator profile from one probe (a ``ProbeResult`` or its dict / JSON form).

    Args:
        name: the profile's name (``--profile NAME`` later).
        probe_result: needs ``decode_tokens_per_s`` and ``speedup`` ({k: S(k)}); uses
            ``prefill_tokens_per_s`` (None = instant), ``load_s``, ``effective_slots``,
            ``model``, ``host``, ``num_predict`` when present. With ``prompt_tokens`` (the
            server's count for the probe's prompt) and ``prompt_bytes`` (its UTF-8 size) the
            prefill speed is converted to the simulator's own token count (see below); its
            ``service_cv`` (the request's jitter over the probe's repeats) becomes the
            profile's, and its ``request_overhead_s`` the model's (from a probe at time scale
            1 only: through a scaled simulator the client's milliseconds are scaled up too).
        model: the model name (default the probe's, else ``llama3.2:3b``).
        output_tokens: (min, max) answer length without num_predict; default the probe's
            ``num_predict`` for both.
        num_parallel: slots per model (default the probe's ``effective_slots``).
        details: ``/api/tags`` details to keep (``size``, ``parameter_size``,
            ``quantization_level``, ``family``, ``context_length``).
        prefill_in_batch: the profile's :attr:`~parallel_kit.sim.profiles.Profile.
            prefill_in_batch`. True by default: every server a probe measures batches prompt
            tokens with the other slots' decode tokens (llama-server's ``update_slots``, which
            Ollama ≥ 0.30 runs; Ollama's earlier runner built one batch the same way).
        prompts: :func:`measure_prompts`'s fit: the simulator then counts a prompt's tokens
            as the server does, and its prefill follows the measured line (rate and
            per-prompt overhead) instead of the probe's one short prompt.

    The simulator counts a prompt's tokens as about 4 UTF-8 bytes each
    (:meth:`Profile.prompt_tokens`); a real tokenizer differs (Gemma 3 counts 46 tokens in the
    probe's 204-byte prompt, the simulator 51). A profile that kept the measured tokens/s would
    give the same text a prefill time too long by that ratio (11 % here) — on a small CPU model
    whose prefill is a fifth of a request, a 2 % longer service time, which queueing amplifies
    near capacity. So when the probe says how many tokens the server counted, the profile's
    ``prefill_tps`` is in the simulator's tokens: measured tokens/s × simulator's count ÷
    server's count, and the same text takes the measured time.

    Raises:
        ConfigError: a field is missing or not a positive number (naming it).
    """
    if not name or not isinstance(name, str) or not name.strip():
        raise ConfigError("a profile needs a name — e.g. --save-profile my-laptop")
    decode = _positive(probe_result, "decode_tokens_per_s", required=True) or 0.0
    prefill = _positive(probe_result, "prefill_tokens_per_s", required=False)
    speedup = _get(probe_result, "speedup") or {1: 1.0}
    if not isinstance(speedup, Mapping):
        raise ConfigError(f"probe result field 'speedup' must map k to S(k), got {speedup!r}")
    points, fell_note = speedup_points(speedup)
    slots = _slots(probe_result, num_parallel)
    model = model or _get(probe_result, "model") or DEFAULT_MODEL
    host = _get(probe_result, "host") or "a server"
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    source = f"measured by parallel-kit probe at {host}, {when}"
    speed = _model_speed(probe_result, model, decode, prefill, output_tokens, details, source)
    profile = Profile(
        name=name.strip(), models={model: speed}, default_model=model,
        scaling=tuple((int(k), float(s)) for k, s in points), num_parallel=slots,
        description=description or f"Calibrated from a probe of {host} ({model}).",
        scaling_source=f"{source}{fell_note}", service_cv=_jitter(probe_result),
        prefill_in_batch=prefill_in_batch,
        template_tokens=prompts.template_tokens if prompts else 0,
        bytes_per_token=prompts.bytes_per_token if prompts else 4.0)
    fitted = _fitted_prefill(profile, speed, probe_result, prompts, source)
    if fitted is not None:
        profile = replace(profile, models={model: fitted})
    # The same checks as a profile read from a file: what is saved can be loaded again.
    return _profiles.profile_from_dict(profile.name, profile.to_dict())


def _slots(probe_result: Any, num_parallel: int | None) -> int:
    """Slots per model: ``num_parallel``, else the probe's ``effective_slots``, else 1."""
    slots = num_parallel or _get(probe_result, "effective_slots") or 1
    if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
        raise ConfigError(f"num_parallel / effective_slots must be a whole number ≥ 1, "
                          f"got {slots!r}")
    return slots


def _model_speed(probe_result: Any, model: str, decode: float, prefill: float | None,
                 output_tokens: tuple[int, int] | None, details: Mapping[str, Any] | None,
                 source: str) -> ModelSpeed:
    """The model's speeds as the probe measured them (prefill in the server's tokens), its
    load time, request overhead and answer length, and the ``details`` kept."""
    load = _get(probe_result, "load_s")
    load_s = float(load) if isinstance(load, (int, float)) and math.isfinite(load) \
        and load > 0 else 0.0
    # Kept only from a probe on the clock (time scale 1): through a scaled simulator the
    # client's own milliseconds become whole model seconds, an artefact of the scale.
    outside = _get(probe_result, "request_overhead_s")
    on_clock = _get(probe_result, "time_scale") in (None, 1, 1.0)
    request_overhead = (float(outside) if on_clock and isinstance(outside, (int, float))
                        and not isinstance(outside, bool) and math.isfinite(outside)
                        and outside > 0 else 0.0)
    n = _get(probe_result, "num_predict")
    if output_tokens is None:
        length = int(n) if isinstance(n, int) and n > 0 else 100
        output_tokens = (length, length)
    d = dict(details or {})
    return ModelSpeed(
        name=model, decode_tps=decode, prefill_tps=prefill, load_s=load_s,
        request_overhead_s=request_overhead,
        output_tokens=(int(output_tokens[0]), int(output_tokens[1])),
        size=int(d.get("size", 2_000_000_000)),
        parameter_size=str(d.get("parameter_size", "")),
        quantization_level=str(d.get("quantization_level", "Q4_K_M")),
        family=str(d.get("family", "llama")),
        context_length=int(d.get("context_length", 4096)),
        sources={"decode_tps": source, "prefill_tps": source, "load_s": source,
                 "request_overhead_s": source + " (the client's latency alone minus the "
                                                "server's durations, median)",
                 "output_tokens": "the probe's num_predict" if isinstance(n, int) else
                 "default: 100 tokens"})


def _fitted_prefill(profile: Profile, speed: ModelSpeed, probe_result: Any,
                    prompts: PromptFit | None, source: str) -> ModelSpeed | None:
    """``speed`` with its prefill from the measured prompts' line, else the probe's prefill
    speed converted to the simulator's tokens (:func:`profile_from_probe`); None when
    neither is known (the probe's speed is kept as it is)."""
    prefill = speed.prefill_tps
    counted = _get(probe_result, "prompt_tokens")
    nbytes = _get(probe_result, "prompt_bytes")
    if prompts is not None:
        # The measured line, in the server's own tokens (which the profile now counts).
        note = (f"; prompts measured at {len(prompts.points)} sizes: "
                f"{prompts.prefill_tps:.4g} tokens/s + {prompts.prefill_overhead_s:.3g} s each, "
                f"{prompts.template_tokens} template tokens, "
                f"{prompts.bytes_per_token:.3g} bytes/token")
        return replace(speed, prefill_tps=prompts.prefill_tps,
                       prefill_overhead_s=prompts.prefill_overhead_s,
                       sources={**speed.sources, "prefill_tps": source + note,
                                "prefill_overhead_s": source + note})
    if prefill is not None and _whole(counted) and _whole(nbytes):
        # The simulator's count for a text of the probe prompt's size (it depends on the size).
        sim_tokens = profile.prompt_tokens("x" * int(nbytes))
        note = (f"; in the simulator's tokens: measured {prefill:.4g} tokens/s × {sim_tokens} "
                f"(its count for the probe's prompt) ÷ {int(counted)} (the server's)")
        return replace(speed, prefill_tps=prefill * sim_tokens / int(counted),
                       sources={**speed.sources, "prefill_tps": source + note})
    return None


def _jitter(probe_result: Any) -> float:
    """The probe's ``service_cv`` (0 when it had one try, or reported none)."""
    cv = _get(probe_result, "service_cv")
    if cv is None:
        return 0.0
    if isinstance(cv, bool) or not isinstance(cv, (int, float)) or not math.isfinite(cv) \
            or cv < 0:
        raise ConfigError(f"probe result field 'service_cv' must be a number ≥ 0, got {cv!r}")
    return float(cv)


def save_profile(name: str, probe_result: Any, path: str | os.PathLike[str] | None = None,
                 **kwargs: Any) -> Path:
    """Calibrate a profile from ``probe_result`` and add it (or replace it) in the user's
    profile file; other profiles there are kept. Returns the file's path.

    ``parallel-kit probe --save-profile NAME`` calls this. Keyword arguments go to
    :func:`profile_from_probe`. ``path`` defaults to :func:`default_profiles_path`.
    """
    profile = profile_from_probe(name, probe_result, **kwargs)
    target = Path(path).expanduser() if path is not None else default_profiles_path()
    try:
        return _profiles.save_profile(profile, target)
    except OSError as exc:
        raise ConfigError(f"cannot write the profile file {target} ({exc.strerror or exc}) — "
                          f"choose another with {_profiles.PROFILES_ENV}=FILE") from None


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


@dataclass(frozen=True, slots=True)
class SpeedupSamples:
    """S(k) measured ``repeats`` times for each k: the tries, their median and spread.

    ``samples[k]`` are the aggregate tokens/s of each try with k requests together, divided by
    the median tokens/s of one request alone. ``median[k]`` is what a profile keeps;
    ``spread[k]`` = (min, max) of the tries. The median, not the best try: the best of a few
    tries on a shared machine is biased up by the luckiest moment (a single try of k = 3 read
    30 % below a 7-try median on the same server).
    """

    samples: dict[int, list[float]]
    tokens_per_s_alone: float

    @property
    def median(self) -> dict[int, float]:
        # S(1) is 1 by definition: one alone is the unit (an even count's median of the
        # ratios is 1 only up to rounding).
        return {k: 1.0 if k == 1 else statistics.median(v) for k, v in self.samples.items()}

    @property
    def spread(self) -> dict[int, tuple[float, float]]:
        return {k: (min(v), max(v)) for k, v in self.samples.items()}

    def to_dict(self) -> dict[str, Any]:
        """JSON form: ``{"median": {k: S}, "min": {...}, "max": {...}, "samples": {...},
        "tokens_per_s_alone": x}`` (keys as strings, as in probe's JSON)."""
        return {"median": {str(k): round(v, 4) for k, v in self.median.items()},
                "min": {str(k): round(v[0], 4) for k, v in self.spread.items()},
                "max": {str(k): round(v[1], 4) for k, v in self.spread.items()},
                "samples": {str(k): [round(x, 4) for x in v] for k, v in self.samples.items()},
                "tokens_per_s_alone": round(self.tokens_per_s_alone, 2)}


async def measure_speedup_samples(url: str, model: str, ks: Iterable[int] = (1, 2, 3), *,
                                  num_predict: int = 32, time_scale: float = 1.0,
                                  repeats: int = 3, timeout: float = 600.0) -> SpeedupSamples:
    """Aggregate decode speed-up S(k) of the server at ``url``, ``repeats`` tries per k,
    interleaved (k = 1, 2, …, then again), so that a slow moment of the machine touches every k.

    Tokens/s are counted over the span the server decoded (first start of decoding to last
    finish, from its own ``eval_duration``; :func:`~parallel_kit.measure.probe.decoding_span`):
    prefill, client set-up and queueing before it are left out, so S(k) scales the profile's
    ``decode_tps``, which is the decode alone too. (Counted from the start of prefill instead,
    S(k) mixed two units: a probe's 83 tokens/s of decode against 71 tokens/s of prompt and
    decode alone, and theory predicted concurrent makespans about 10 % short.) A server with fewer slots than k shows it: S stays near its slots'.
    Every request's prompt starts differently, so no prompt cache makes a prefill free.

    Raises:
        RequestFailed: a request failed (nothing is averaged over failures).
        ConfigError: bad arguments.
    """
    from ..clients import OllamaClient, RetryPolicy
    from ..records import RequestSpec
    from ..timing import ModelClock
    from .probe import aggregate_decode_tokens_per_s

    ks = sorted(set(ks) | {1})
    if ks[0] < 1 or num_predict < 1 or repeats < 1:
        raise ConfigError("k, num_predict and repeats must all be whole numbers ≥ 1")
    clock = ModelClock(time_scale)
    rates: dict[int, list[float]] = {k: [] for k in ks}
    sent = 0
    async with OllamaClient(url, max_connections=max(ks), timeout=timeout,
                            retry=RetryPolicy(max_retries=0)) as client:
        for _ in range(repeats):
            for k in ks:
                specs = [RequestSpec(f"[{sent + i}] {_PROMPT}", model=model,
                                     num_predict=num_predict, request_id=f"s{sent + i}")
                         for i in range(k)]
                sent += k
                rows = await asyncio.gather(*(client.run(s, clock=clock, mode="speedup")
                                              for s in specs))
                bad = [r for r in rows if not r.ok]
                if bad:
                    raise RequestFailed(f"a speed-up request failed: {bad[0].error}",
                                        host=url)
                rate = aggregate_decode_tokens_per_s(rows)
                if math.isfinite(rate):
                    rates[k].append(rate)
    alone = statistics.median(rates[1]) if rates[1] else 0.0
    if alone <= 0:
        raise RequestFailed(f"could not time one request alone at {url}", host=url)
    return SpeedupSamples({k: [r / alone for r in v] for k, v in rates.items() if v}, alone)


@dataclass(frozen=True, slots=True)
class PromptFit:
    """How a server counts and processes prompts, measured (:func:`measure_prompts`).

    Attributes:
        template_tokens: tokens it adds to every prompt (the chat template, BOS).
        bytes_per_token: UTF-8 bytes per token of its tokenizer on ordinary English.
        prefill_tps: prompt tokens/s, the slope of prefill time over prompt tokens.
        prefill_overhead_s: seconds every prompt costs on top (the line's intercept, ≥ 0).
        points: ``(bytes, tokens counted, median prefill seconds)`` per prompt size.
    """

    template_tokens: int
    bytes_per_token: float
    prefill_tps: float
    prefill_overhead_s: float
    points: tuple[tuple[int, int, float], ...]

    def to_dict(self) -> dict[str, Any]:
        return {"template_tokens": self.template_tokens,
                "bytes_per_token": round(self.bytes_per_token, 4),
                "prefill_tps": round(self.prefill_tps, 2),
                "prefill_overhead_s": round(self.prefill_overhead_s, 5),
                "points": [list(p) for p in self.points]}


async def measure_prompts(url: str, model: str, *, repeats: int = 3, time_scale: float = 1.0,
                          timeout: float = 300.0) -> PromptFit:
    """How the server counts and processes a prompt, from its own records.

    Prompts of ordinary English at two sizes (about 1× and 16× a 140-byte sentence), each
    sent alone ``repeats`` times with one token to predict, every one unique from its first
    character (so no prompt cache shortens it). Two straight lines through the server's own
    figures: ``prompt_eval_count`` = template + bytes ÷ bytes-per-token (Ollama applies the
    model's chat template to ``/api/generate`` prompts too) and the median
    ``prompt_eval_duration`` = overhead + tokens ÷ prefill rate. A single short probe prompt
    reads the rate low when part of its time is the fixed overhead.

    Raises:
        RequestFailed: a request failed, or the server reported no counts or durations.
        ConfigError: ``repeats`` < 1.
    """
    from ..clients import OllamaClient, RetryPolicy
    from ..records import RequestSpec
    from ..timing import ModelClock

    if repeats < 1:
        raise ConfigError(f"repeats must be a whole number ≥ 1, got {repeats}")
    points: list[tuple[int, int, float]] = []
    async with OllamaClient(url, timeout=timeout, retry=RetryPolicy(max_retries=0)) as client:
        sizes = (1, 16)
        seen: dict[int, list[tuple[int, int, float]]] = {n: [] for n in sizes}
        for r in range(repeats):
            for n in sizes:  # interleaved, so a slow moment touches both sizes
                text = f"[{r}-{n}] " + " ".join([_PROMPT] * n)
                row = await client.run(RequestSpec(text, model=model, num_predict=1,
                                                   request_id=f"prompt-{r}-{n}"),
                                       clock=ModelClock(time_scale), mode="calibrate")
                if not row.ok or not row.prompt_tokens or row.server_prompt_eval_s is None:
                    raise RequestFailed(f"could not time a prompt at {url}: "
                                        f"{row.error or 'no prompt_eval_count/duration'}",
                                        host=url)
                seen[n].append((len(text.encode("utf-8")), row.prompt_tokens,
                                row.server_prompt_eval_s))
        for n in sizes:
            nbytes = round(statistics.median(b for b, _, _ in seen[n]))
            tokens = round(statistics.median(c for _, c, _ in seen[n]))
            points.append((nbytes, tokens, statistics.median(d for _, _, d in seen[n])))
    (b1, c1, d1), (b2, c2, d2) = points
    if c2 <= c1 or d2 <= d1:
        raise RequestFailed(f"the server at {url} counted {c1} and {c2} tokens in {d1:.3g} and "
                            f"{d2:.3g} s for prompts of {b1} and {b2} bytes — it does not "
                            f"report prompt tokens and durations the way Ollama does",
                            host=url)
    per_token = (b2 - b1) / (c2 - c1)
    tps = (c2 - c1) / (d2 - d1)
    return PromptFit(template_tokens=max(0, round(c1 - b1 / per_token)),
                     bytes_per_token=per_token, prefill_tps=tps,
                     prefill_overhead_s=max(0.0, d1 - c1 / tps), points=tuple(points))


async def measure_speedup(url: str, model: str, ks: Iterable[int] = (1, 2, 3), *,
                          num_predict: int = 32, time_scale: float = 1.0,
                          repeats: int = 1, timeout: float = 600.0) -> dict[int, float]:
    """The median S(k) over ``repeats`` tries for each k (see :func:`measure_speedup_samples`,
    which also gives the spread); ``{k: S(k)}`` with S(1) = 1 up to the tries' spread.

    Raises:
        RequestFailed: a request failed. ConfigError: bad arguments.
    """
    found = await measure_speedup_samples(url, model, ks, num_predict=num_predict,
                                          time_scale=time_scale, repeats=repeats,
                                          timeout=timeout)
    return found.median
