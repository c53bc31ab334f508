"""``parallel-kit doctor``: the workshop's pre-flight — one line per item, with its fix.

Checks Python, the kit and each extra the notebooks use, a local Ray start, a Redis start, the
real engine, loopback ports, and estimates each notebook's run time on this machine
(:mod:`parallel_kit.doctor`). Exit 0 when the workshop can run (warnings name the optional
parts that are missing), 1 when a required item fails. ``--quick`` skips starting Ray and the
real engine, ``--skip ITEM`` one item; ``--json`` prints one JSON object instead of lines.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..doctor import SKIPPABLE

__all__ = ["add_parser", "run"]

_MARK = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL", "skip": "skip", "info": "info"}


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("doctor", help="pre-flight: can this machine run the workshop?",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="skip starting Ray and the real engine (seconds instead of a minute)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--skip", action="append", default=[], choices=SKIPPABLE,
                   help="do not check this item (repeatable); estimate: no calibration run, "
                        "recorded run times shown unscaled")


def run(args: argparse.Namespace) -> int:
    from ..doctor import PreflightCheck, run_checks

    def show(c: PreflightCheck) -> None:
        line = f"{_MARK[c.status]}  {c.name:<16} {c.detail}"
        if c.fix and c.status in ("fail", "warn"):
            line += f" — fix: {c.fix}"
        print(line, flush=True)

    report = run_checks(args.quick, skip=args.skip, progress=None if args.json else show)
    if args.json:
        json.dump(report.as_dict(), sys.stdout, indent=1)
        print()
    else:
        failed = [c.name for c in report.checks if c.status == "fail"]
        warned = [c.name for c in report.checks if c.status == "warn"]
        if failed:
            print(f"not ready: {len(failed)} required item(s) failed ({', '.join(failed)}); "
                  "fix them and run `parallel-kit doctor` again", file=sys.stderr)
        else:
            print("ready for the workshop" + (f" ({len(warned)} warning(s): "
                  f"{', '.join(warned)})" if warned else ""))
    return 0 if report.ok else 1
