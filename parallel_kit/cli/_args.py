"""Argument types and option groups shared by the commands (argparse)."""

from __future__ import annotations

import argparse
from typing import Any

from ..ranges import arg

__all__ = ["add_engine", "add_time_scale", "engine_options", "fraction", "model_name",
           "non_negative_int", "positive_float", "positive_int", "ranged"]

#: An argparse ``type=`` checking a flag's sane range (:mod:`parallel_kit.ranges`).
ranged = arg


def model_name(text: str) -> str:
    """``--model``: a name, not blank (a blank one used to become the default silently)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("the model name is blank — give one, like "
                                         "llama3.2:3b, or leave --model out for the default")
    return text.strip()


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return value


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} must be between 0 and 1")
    return value


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
                   help="GGUF model file for --engine llama-cpp (default: the Gemma 3 270M "
                        "package when installed)")
    p.add_argument("--threads-per-slot", type=arg("--threads-per-slot"), default=None,
                   metavar="T",
                   help="CPU threads per slot for --engine llama-cpp")


def engine_options(args: argparse.Namespace) -> dict[str, Any]:
    """The engine's keyword arguments from ``--gguf`` and ``--threads-per-slot``."""
    opts: dict[str, Any] = {}
    if getattr(args, "gguf", None):
        opts["gguf"] = args.gguf
    if getattr(args, "threads_per_slot", None):
        opts["threads_per_slot"] = args.threads_per_slot
    return opts
