"""Sane ranges for every number the kit takes from a user, checked before anything starts.

A number without an upper bound is a way to exhaust the machine: ``--gpus 100000`` opened file
descriptors until "too many open files", ``--n 10^10`` grew memory until the process died,
``--time-scale 1e-300`` divided into infinity. Each numeric flag has a range here, with what it
counts; the CLI parses through :func:`arg` (argparse then prints the range in one line) and
library code can call :func:`check`.

The bounds are generous for real use (256 GPUs, 100,000 requests, a 128 K-token answer) and
small enough that the kit's own bookkeeping stays in memory on a laptop.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from dataclasses import dataclass

from .errors import ConfigError

__all__ = ["MAX_FILE_BYTES", "MAX_REQUESTS", "MAX_RUN_PROMPT_BYTES", "MAX_SPAN_S", "RANGES",
           "Range", "arg", "check", "check_span", "check_text", "read_bounded"]


@dataclass(frozen=True, slots=True)
class Range:
    """The accepted values of one numeric input: ``lo ≤ value ≤ hi``, whole or not."""

    lo: float
    hi: float
    whole: bool
    what: str

    def text(self) -> str:
        def fmt(x: float) -> str:
            return f"{int(x)}" if self.whole or float(x).is_integer() else f"{x:g}"
        return f"{fmt(self.lo)}..{fmt(self.hi)}"


#: flag → its range (the same range applies to the environment variable behind a flag).
RANGES: dict[str, Range] = {
    "--gpus": Range(1, 256, True, "GPUs, i.e. servers or GPU actors"),
    "--n": Range(1, 100_000, True, "requests in one run"),
    "--slots": Range(1, 256, True, "slots per server (OLLAMA_NUM_PARALLEL)"),
    "--num-parallel": Range(1, 256, True, "slots per model (OLLAMA_NUM_PARALLEL)"),
    "--concurrency": Range(1, 4096, True, "requests in flight at once"),
    "--num-predict": Range(1, 131_072, True, "output tokens per request"),
    "--time-scale": Range(1e-4, 1000.0, False,
                          "clock seconds per model second (1e-4 turns 10 s into 1 ms)"),
    "--port": Range(0, 65_535, True, "TCP port (0: any free one)"),
    "--threads": Range(1, 1024, True, "CPU threads of the real engine"),
    "--num-ctx": Range(16, 1 << 20, True, "context tokens per slot"),
    "--max-k": Range(1, 64, True, "overlapping probe requests"),
    "--max-queue": Range(0, 1_000_000, True, "requests waiting for a loading model"),
    "--stop-after": Range(1, 1_000_000_000, True, "requests before the simulator stops"),
    "--max-num-predict": Range(1, 131_072, True, "output tokens one API request may ask for"),
    "--max-held-mb": Range(1, 1_048_576, True, "MiB of prompts the API holds at once"),
    "--max-kept-mb": Range(1, 1_048_576, True, "MiB of finished tasks the API keeps"),
    "--max-request-s": Range(1, 86_400, False, "clock seconds one API request may run"),
    "--max-queued": Range(1, 1_000_000, True, "tasks waiting in the API's queue"),
    "--seed": Range(0, 2**32 - 1, True, "seed of the arrival schedule"),
    "--repeats": Range(1, 1000, True, "repetitions: runs per rate in a sweep, tries alone in a probe"),
    "--max-concurrency": Range(1, 100_000, True, "requests in flight from the load generator"),
    "--shutdown-timeout-s": Range(0.1, 3600, False,
                                  "clock seconds accepted tasks get at shutdown"),
    "--max-ongoing": Range(1, 4096, True, "requests one Serve replica takes at once"),
    "--workers": Range(0, 64, True, "Celery worker processes the kit starts"),
    "--worker-concurrency": Range(1, 4096, True, "tasks one Celery worker runs at once"),
    "--warmup": Range(0, 100_000, True, "requests sent but left out of the figures"),
    "--duration": Range(1e-6, 604_800, False, "model seconds of arrivals (at most a week)"),
    "--trace-speed": Range(1e-3, 1e6, False, "times faster than the trace was recorded"),
    "prompt_tokens": Range(1, 131_072, True, "prompt tokens of one trace request"),
}

# -- Bounds of what the kit reads, whatever the path (file, trace, JSONL, schedule) ------------
#: Requests in one run, from any source (``--n``, ``--rate`` × ``--duration``, a trace's lines,
#: a prompt file's entries): the same bound as ``--n``.
MAX_REQUESTS = int(RANGES["--n"].hi)
#: Bytes of one prompt file or trace file; read up to this and refused past it (a 4 GB file, or
#: ``/dev/zero``, used to be read whole before anything was checked).
MAX_FILE_BYTES = 64 * 1024 * 1024
#: Bytes of prompt text one run may hold in all (a trace of 100,000 lines of 131,072
#: ``prompt_tokens`` each made 50 GB of synthetic prompts).
MAX_RUN_PROMPT_BYTES = 256 * 1024 * 1024
#: Model seconds from the first arrival of a schedule to its last (a week): a 10¹² s gap in a
#: trace, or ``--rate 1e-9``, was a run that waited for ever.
MAX_SPAN_S = 604_800.0


def _problem(flag: str, value: float, r: Range) -> str:
    return (f"{flag} {value:g} is outside {r.text()} ({r.what}) — choose a value in that "
            f"range")


def check(flag: str, value: float) -> float:
    """``value`` when it lies in ``flag``'s range (:data:`RANGES`).

    Raises:
        ConfigError: out of range, not finite, or not whole where a whole number is needed;
            the message gives the range.
    """
    r = RANGES[flag]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{flag} {value!r} is not a number within {r.text()} ({r.what})")
    if r.whole and not float(value).is_integer():
        raise ConfigError(f"{flag} {value!r} must be a whole number within {r.text()} "
                          f"({r.what})")
    if not r.lo <= value <= r.hi:
        raise ConfigError(_problem(flag, value, r))
    return value


def arg(flag: str) -> Callable[[str], float]:
    """An argparse ``type=`` for ``flag``: parses, checks the range, says it when wrong."""
    r = RANGES[flag]

    def parse(text: str) -> float:
        try:
            value: float = int(text) if r.whole else float(text)
        except ValueError:
            kind = "a whole number" if r.whole else "a number"
            raise argparse.ArgumentTypeError(
                f"{text!r} is not {kind} — use one within {r.text()} ({r.what})") from None
        try:
            return check(flag, value)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = flag.lstrip("-").replace("-", "_")  # argparse names it in errors
    return parse


def read_bounded(path: str | os.PathLike[str], what: str, *,
                 limit: int = MAX_FILE_BYTES, encoding: str = "utf-8") -> str:
    """The text of ``path``, read at most ``limit`` bytes (a device or a pipe too).

    Raises:
        ConfigError: larger than ``limit`` (the limit in the message), not text in
            ``encoding`` (the byte offset), or unreadable.
        FileNotFoundError: it does not exist (the caller words that).
    """
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ConfigError(f"{what} {path} is larger than {limit // (1024 * 1024)} MiB, the "
                          f"most the kit reads from one file — split it, or give fewer "
                          f"requests")
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path} is not UTF-8 text (byte {exc.start}: {exc.reason}) "
                          f"— save it as UTF-8") from None


def check_text(text: str, where: str) -> str:
    """``text`` when it can be encoded as UTF-8 (what every request body is).

    JSON allows escapes such as ``"\\ud800"`` that decode to a lone surrogate, which no
    UTF-8 encoder takes: such a prompt used to reach the HTTP client and fail there with a
    traceback (or an HTTP 500 and a reset connection from the kit's API).

    Raises:
        ConfigError: naming ``where`` and the character's position.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ConfigError(f"{where} holds a character that is not valid Unicode text "
                          f"({text[exc.start]!a} at position {exc.start}: a lone surrogate, "
                          f"from a JSON escape like \\ud800) — remove it or write the whole "
                          f"pair") from None
    return text


def check_span(span_s: float, what: str) -> float:
    """``span_s`` (model seconds from the first arrival to the last) when at most
    :data:`MAX_SPAN_S`.

    Raises:
        ConfigError: longer (or not finite); ``what`` says where the schedule came from.
    """
    if not math.isfinite(span_s) or span_s > MAX_SPAN_S:
        raise ConfigError(f"{what} spans {span_s:.4g} model seconds from the first arrival to "
                          f"the last — more than {MAX_SPAN_S:,.0f} s (a week); a run that "
                          f"long would wait for ever — raise the rate, shorten the trace or "
                          f"replay it faster (--trace-speed)")
    return span_s
