"""Flags for requests that arrive over time, shared by ``bench`` and ``sweep``."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import ConfigError
from ..workload.arrivals import PROCESSES, Arrivals
from ._args import ranged

__all__ = ["add_arrival_flags", "add_rate_flags", "arrivals_from_args", "parse_float"]


def parse_float(text: str | None, flag: str) -> float | None:
    """``text`` as a number, or a ConfigError naming ``flag`` (checked further by the library)."""
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"{flag} must be a number, got {text!r}") from None


def add_arrival_flags(p: argparse.ArgumentParser) -> None:
    """``--arrivals --burstiness --seed --max-concurrency --warmup --slo`` (bench and sweep)."""
    p.add_argument("--arrivals", choices=PROCESSES, default="poisson",
                   help="how arrivals are spaced: poisson (random), constant (clockwork), "
                        "gamma (with --burstiness); default poisson")
    p.add_argument("--burstiness", default=None, metavar="B",
                   help="gamma shape B > 0: 1 = Poisson, < 1 burstier, > 1 smoother "
                        "(vllm bench serve's --burstiness)")
    p.add_argument("--seed", type=ranged("--seed"), default=0, metavar="S",
                   help="seed of the arrival schedule (the same seed, the same schedule)")
    p.add_argument("--max-concurrency", type=ranged("--max-concurrency"), default=None, metavar="C",
                   help="at most C requests in flight from the generator; later arrivals wait "
                        "at the client")
    p.add_argument("--warmup", type=ranged("--warmup"), default=0, metavar="K",
                   help="send the first K requests but leave them out of the figures")
    p.add_argument("--slo", default=None, metavar="ttft=…,tpot=…,latency=…",
                   help="service-level objectives in seconds: goodput counts the requests "
                        "per second that met every one")


def add_rate_flags(p: argparse.ArgumentParser) -> None:
    """``--rate --duration --trace --trace-speed`` (bench only; sweep has --rates)."""
    p.add_argument("--rate", default=None, metavar="R",
                   help="open loop: R requests per model second arrive over time (instead of "
                        "a burst); see --arrivals")
    p.add_argument("--duration", default=None, metavar="D",
                   help="with --rate: every arrival within D model seconds (instead of --n)")
    p.add_argument("--trace", default=None, metavar="FILE",
                   help="replay a JSONL trace of {timestamp_s, prompt | prompt_tokens, "
                        "num_predict} at its own times")
    p.add_argument("--trace-speed", default="1", metavar="X",
                   help="replay the trace X times as fast (default 1)")


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
