"""Flags for requests that arrive over time, shared by ``bench`` and ``sweep``."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import ConfigError
from ..workload.arrivals import PROCESSES, Arrivals
from ._args import add_flags, ranged

__all__ = ["TRACE_SPEED_HELP", "TRAFFIC_FLAGS", "add_arrival_flags", "add_rate_flags",
           "arrivals_from_args", "parse_float"]


def parse_float(text: str | None, flag: str) -> float | None:
    """``text`` as a number, or a ConfigError naming ``flag`` (checked further by the library)."""
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"{flag} must be a number, got {text!r}") from None


#: The flags of requests that arrive over time: argparse's settings by flag (the help text
#: is each command's own; ``capacity`` words them for a plan).
TRAFFIC_FLAGS: dict[str, dict[str, Any]] = {
    "--rate": {"default": None, "metavar": "R"},
    "--duration": {"default": None, "metavar": "D"},
    "--trace": {"default": None, "metavar": "FILE"},
    "--trace-speed": {"default": "1", "metavar": "X"},
    "--arrivals": {"choices": PROCESSES, "default": "poisson"},
    "--burstiness": {"default": None, "metavar": "B"},
    "--seed": {"type": ranged("--seed"), "default": 0, "metavar": "S"},
    "--max-concurrency": {"type": ranged("--max-concurrency"), "default": None, "metavar": "C"},
    "--warmup": {"type": ranged("--warmup"), "default": 0, "metavar": "K"},
    "--slo": {"default": None, "metavar": "ttft=…,tpot=…,latency=…"},
}
#: ``--trace-speed``'s help, the same wherever a trace is replayed.
TRACE_SPEED_HELP = "replay the trace X times as fast (default 1)"


def add_arrival_flags(p: argparse.ArgumentParser) -> None:
    """``--arrivals --burstiness --seed --max-concurrency --warmup --slo`` (bench and sweep)."""
    add_flags(p, {
        "--arrivals": "how arrivals are spaced: poisson (random), constant (clockwork), "
                      "gamma (with --burstiness); default poisson",
        "--burstiness": "gamma shape B > 0: 1 = Poisson, < 1 burstier, > 1 smoother "
                        "(vllm bench serve's --burstiness)",
        "--seed": "seed of the arrival schedule (the same seed, the same schedule)",
        "--max-concurrency": "at most C requests in flight from the generator; later arrivals "
                             "wait at the client",
        "--warmup": "send the first K requests but leave them out of the figures",
        "--slo": "service-level objectives in seconds: goodput counts the requests per second "
                 "that met every one"}, TRAFFIC_FLAGS)


def add_rate_flags(p: argparse.ArgumentParser) -> None:
    """``--rate --duration --trace --trace-speed`` (bench only; sweep has --rates)."""
    add_flags(p, {
        "--rate": "open loop: R requests per model second arrive over time (instead of a "
                  "burst); see --arrivals",
        "--duration": "with --rate: every arrival within D model seconds (instead of --n)",
        "--trace": "replay a JSONL trace of {timestamp_s, prompt | prompt_tokens, "
                   "num_predict} at its own times",
        "--trace-speed": TRACE_SPEED_HELP}, TRAFFIC_FLAGS)


def arrivals_from_args(args: argparse.Namespace) -> Arrivals | None:
    """The :class:`Arrivals` the flags ask for, or ``None`` for a closed-loop run.

    Raises:
        ConfigError: a bad value (the message names the flag), or flags that need ``--rate``
            or ``--trace`` given without either.
    """
    rate = getattr(args, "rate", None)
    trace = getattr(args, "trace", None)
    duration = getattr(args, "duration", None)
    if rate is None and trace is None:
        extra = [f for f, v in (("--duration", duration), ("--burstiness", args.burstiness),
                                ("--max-concurrency", args.max_concurrency),
                                ("--slo", args.slo))
                 if v is not None] + (["--warmup"] if args.warmup else [])
        if extra:
            raise ConfigError(f"{', '.join(extra)} only apply to requests that arrive over "
                              f"time — add --rate R (or --trace FILE)")
        return None
    if duration is not None and args.n is not None:
        raise ConfigError("give --n (requests) or --duration (model seconds), not both")
    kwargs: dict[str, Any] = {
        "process": args.arrivals, "seed": args.seed, "n": args.n,
        "duration_s": parse_float(duration, "--duration"), "trace": trace,
        "trace_speed": parse_float(args.trace_speed, "--trace-speed") or 0.0,
        "max_concurrency": args.max_concurrency, "warmup": args.warmup,
        "rate": rate if rate is None else _rate(rate)}
    if args.burstiness is not None:
        kwargs["burstiness"] = parse_float(args.burstiness, "--burstiness")
    return Arrivals(**kwargs)


def _rate(text: str) -> float:
    from ..workload.arrivals import check_rate

    return check_rate(text)
