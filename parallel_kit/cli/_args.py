"""Argument types and option groups shared by the commands (argparse)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from ..ranges import arg

__all__ = ["COMMON_FLAGS", "HTML_HELP", "PROFILE_HELP", "add_engine", "add_flags",
           "add_stack_args", "add_time_scale", "engine_options", "fraction", "model_name",
           "non_negative_int", "positive_float", "positive_int", "ranged", "serve_options",
           "stack_options", "unique_hosts"]

_N = TypeVar("_N", int, float)

#: An argparse ``type=`` checking a flag's sane range (:mod:`parallel_kit.ranges`).
ranged = arg


def model_name(text: str) -> str:
    """``--model``: a name, not blank (a blank one used to become the default silently)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("the model name is blank — give one, like "
                                         "llama3.2:3b, or leave --model out for the default")
    return text.strip()


def _number(text: str, convert: Callable[[str], _N], kind: str, ok: Callable[[_N], bool],
            must: str) -> _N:
    """``convert(text)``, or an argparse error: ``text`` is not ``kind``, or fails ``ok``
    (it ``must`` be …)."""
    try:
        value = convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {kind}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"{text!r} must be {must}")
    return value


def positive_float(text: str) -> float:
    return _number(text, float, "a number", lambda v: v > 0 and v != float("inf"),
                   "a positive number")


def positive_int(text: str) -> int:
    return _number(text, int, "a whole number", lambda v: v >= 1, "at least 1")


def non_negative_int(text: str) -> int:
    return _number(text, int, "a whole number", lambda v: v >= 0, "0 or more")


def fraction(text: str) -> float:
    return _number(text, float, "a number", lambda v: 0.0 <= v <= 1.0, "between 0 and 1")


#: The flags several commands share, with the same type, default and metavar: argparse's
#: settings by flag (the help text is each command's own, given to :func:`add_flags`).
COMMON_FLAGS: dict[str, dict[str, Any]] = {
    "--gpus": {"type": arg("--gpus"), "default": None, "metavar": "W"},
    "--slots": {"type": arg("--slots"), "default": None, "metavar": "K"},
    "--concurrency": {"type": arg("--concurrency"), "default": None, "metavar": "C"},
    "--profile": {"default": None, "metavar": "NAME"},
    "--model": {"type": model_name, "default": None},
    "--num-predict": {"type": arg("--num-predict"), "default": None, "metavar": "T"},
    **{flag: {"default": None, "metavar": "FILE"}
       for flag in ("--prompts", "--json", "--csv", "--plot", "--html")},
}
#: ``--html``'s help wherever a command writes its report.
HTML_HELP = "write one self-contained HTML report (no network)"
#: ``--profile``'s help where the kit starts simulated servers (bench, sweep).
PROFILE_HELP = "simulator profile for embedded servers (default seed)"


def add_flags(p: argparse.ArgumentParser, helps: Mapping[str, str],
              kinds: Mapping[str, Mapping[str, Any]] = COMMON_FLAGS) -> None:
    """Add each flag of ``helps`` (flag → its help text), in that order, with its settings
    from ``kinds`` (default :data:`COMMON_FLAGS`)."""
    for flag, text in helps.items():
        p.add_argument(flag, help=text, **kinds[flag])


def add_time_scale(p: argparse.ArgumentParser, help_extra: str = "") -> None:
    p.add_argument(
        "--time-scale", type=arg("--time-scale"), default=None, metavar="F",
        help="clock seconds per model second of the simulator (0.02 turns 10 s into 0.2 s); "
             "default PARALLEL_KIT_TIME_SCALE or 1" + help_extra,
    )


def add_engine(p: argparse.ArgumentParser) -> None:
    from ..sim.registry import engine_info, engine_names

    p.add_argument("--engine", choices=engine_names(), default="sim",
                   help="what produces the tokens of an embedded server: " + "; ".join(
                       f"{n} = {engine_info(n).description}" for n in engine_names()))
    p.add_argument("--gguf", default=None, metavar="PATH",
                   help="GGUF model file for --engine llama-server (default: the Gemma 3 270M "
                        "package when installed)")
    p.add_argument("--threads", "--threads-per-slot", dest="threads",
                   type=arg("--threads"), default=None, metavar="T",
                   help="CPU threads of the real engine (llama-server -t; default: its own)")
    p.add_argument("--num-ctx", type=arg("--num-ctx"), default=None, metavar="TOKENS",
                   help="context tokens per slot for --engine llama-server (-c is this × slots; "
                        "default 4096, Ollama's default)")
    p.add_argument("--llama-server", dest="llama_server", default=None, metavar="PATH",
                   help="a llama-server binary for --engine llama-server (default: "
                        "$PARALLEL_KIT_LLAMA_SERVER, else the kit's portable build)")


def engine_options(args: argparse.Namespace) -> dict[str, Any]:
    """The engine's keyword arguments from ``--gguf``, ``--threads``, ``--num-ctx`` and
    ``--llama-server``."""
    opts: dict[str, Any] = {}
    for name, key in (("gguf", "gguf"), ("threads", "threads"), ("num_ctx", "num_ctx"),
                      ("llama_server", "binary")):
        if getattr(args, name, None):
            opts[key] = getattr(args, name)
    return opts


def add_stack_args(p: argparse.ArgumentParser) -> None:
    """``--max-ongoing`` (rayserve, production) and ``--redis``/``--workers``/
    ``--worker-concurrency`` (production)."""
    p.add_argument("--max-ongoing", type=int, default=None, metavar="N",
                   help="rayserve/production: requests one Serve replica takes at once "
                        "(max_ongoing_requests; default: its Ollama's slots)")
    p.add_argument("--redis", default=None, metavar="URL",
                   help="production: an existing Redis (default PARALLEL_KIT_REDIS_URL, else "
                        "the kit starts one for the run)")
    p.add_argument("--workers", type=arg("--workers"), default=1, metavar="N",
                   help="production: Celery worker processes to start (default 1; 0: started "
                        "by hand with `parallel-kit worker`)")
    p.add_argument("--worker-concurrency", type=arg("--worker-concurrency"), default=None,
                   metavar="C",
                   help="production: tasks per Celery worker at once (default 4 × replicas × "
                        "max-ongoing, at least 8)")


def serve_options(args: argparse.Namespace) -> Any:
    """The :class:`~parallel_kit.modes.stack_options.ServeOptions` of the parsed arguments."""
    from ..modes.stack_options import ServeOptions

    return ServeOptions(max_ongoing=getattr(args, "max_ongoing", None))


def stack_options(args: argparse.Namespace) -> Any:
    """The :class:`~parallel_kit.modes.stack_options.StackOptions` of the parsed arguments."""
    from ..modes.stack_options import StackOptions

    return StackOptions(redis=getattr(args, "redis", None), workers=getattr(args, "workers", 1),
                        worker_concurrency=getattr(args, "worker_concurrency", None))


def unique_hosts(hosts: list[str] | None) -> list[str] | None:
    """The ``--host`` values, each checked, duplicates refused.

    Each value is read as Ollama reads ``OLLAMA_HOST`` (:func:`parallel_kit.config.normalize_host`)
    and must then be a URL one can connect to (an IPv6 literal must be a valid address:
    ``::::`` is not). The same server named twice (``--host a --host a``, or ``localhost`` and
    ``http://localhost:11434``) is refused rather than deduplicated: several ``--host`` mean
    one server per GPU, so a repeat would silently count one server as two GPUs — and a
    silent deduplication would run fewer GPUs than the user believes they asked for.

    Raises:
        ConfigError: a value that is not an address, or a repeated server (both named).
    """
    import ipaddress
    from urllib.parse import urlsplit

    from ..config import normalize_host
    from ..errors import ConfigError

    if not hosts:
        return hosts
    seen: dict[str, str] = {}
    for raw in hosts:
        url = normalize_host(raw)
        try:
            name = urlsplit(url).hostname or ""
            if ":" in name:
                ipaddress.IPv6Address(name.split("%")[0])
        except ValueError:
            raise ConfigError(f"--host {raw!r} is not a valid address — write it like "
                              f"127.0.0.1:11434, http://localhost:11434 or "
                              f"http://[::1]:11434") from None
        if url in seen:
            raise ConfigError(f"--host {raw!r} names the same server as --host {seen[url]!r} "
                              f"({url}) — give each server once (several --host = one "
                              f"server per GPU)")
        seen[url] = raw
    return list(seen)
