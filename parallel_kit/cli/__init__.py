"""``parallel-kit`` (also ``python -m parallel_kit``): demo | bench | sweep | capacity | sim | serve |
probe | worker | engine | doctor.

One module per command, each with ``add_parser(subparsers)`` (its arguments) and
``run(args) -> int`` (parse → call the library → print). The library never imports this
package. An expected error (:class:`~parallel_kit.errors.ParallelKitError`) prints one line,
``error: …``, and exits 2; Ctrl-C exits 130 after the command has written what it finished.
Argument parsing is the standard library's ``argparse``: ten commands with flat options need
no more, and it adds no dependency.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from ..errors import ParallelKitError
from ..modes.registry import mode_names
from . import bench, capacity, demo, doctor, engine, probe, serve, sim, sweep, worker

__all__ = ["COMMANDS", "build_parser", "main"]

#: The commands, in the order ``--help`` lists them; each module has ``add_parser`` and ``run``.
COMMANDS = {"demo": demo, "bench": bench, "sweep": sweep, "capacity": capacity, "sim": sim,
            "serve": serve, "probe": probe, "worker": worker, "engine": engine,
            "doctor": doctor}


def build_parser() -> argparse.ArgumentParser:
    """The ``parallel-kit`` parser with one sub-parser per command."""
    parser = argparse.ArgumentParser(
        prog="parallel-kit",
        description="Where does parallelism in LLM serving come from, and how much do you get? "
                    f"Run the same prompts through the modes ({', '.join(mode_names())}) "
                    "against Ollama (real or simulated) and compare with theory.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in COMMANDS.values():
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``parallel-kit``; returns the exit code.

    A command cut short by SIGINT or SIGTERM returns 128 + that signal with both signals
    ignored from then on: the process is about to exit with that status, and one more signal
    (a second Ctrl-C, a supervisor's repeat) must not kill it by the default action on the
    way out — which a Python handler cannot prevent, since the interpreter's finalization puts
    the default action back in its place (an ignored signal stays ignored).
    """
    from . import _signals

    parser = build_parser()
    args = parser.parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        code = int(COMMANDS[args.command].run(args) or 0)
    except ParallelKitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = _signals.last_exit_code or 130
    if code in (130, 143) and _signals.last_exit_code == code:
        _signals.ignore_from_now_on()
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
