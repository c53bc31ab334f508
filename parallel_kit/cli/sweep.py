"""``parallel-kit sweep``: one mode over a series of arrival rates, beside queueing theory."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..modes.registry import mode_names
from ._args import HTML_HELP, PROFILE_HELP, add_flags, add_time_scale, ranged, unique_hosts
from ._load import add_arrival_flags, parse_float
from .bench import add_hygiene_flags, hygiene_kwargs

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "sweep", help="one mode over a series of arrival rates: latency, TTFT, throughput "
                      "and goodput against offered load, beside queueing theory")
    p.add_argument("--mode", required=True, choices=mode_names(), metavar="M",
                   help=f"one of {', '.join(mode_names())}")
    p.add_argument("--rates", default="auto", metavar="auto|R1,R2,…",
                   help="requests per model second; auto (default) measures the capacity with "
                        "a burst first, then runs 10 rates from 10 %% to 110 %% of it")
    p.add_argument("--repeats", type=ranged("--repeats"), default=1, metavar="K",
                   help="runs per rate (seeds S, S+1, …)")
    p.add_argument("--n", type=ranged("--n"), default=30, metavar="N",
                   help="requests per run (and in the capacity burst); default 30")
    p.add_argument("--host", action="append", default=None, metavar="URL",
                   help="an Ollama server; several = one Ollama per GPU")
    add_flags(p, {"--gpus": "servers for the multi-server modes when the kit starts them",
                  "--slots": "slots per server (OLLAMA_NUM_PARALLEL)",
                  "--concurrency": "workers of the async/batch queue",
                  "--profile": PROFILE_HELP, "--prompts": "prompt file or set"})
    p.add_argument("--model", default=None, help="model name")
    p.add_argument("--num-predict", type=ranged("--num-predict"), default=None, metavar="T",
                   help="maximum output tokens per request")
    add_time_scale(p)
    add_arrival_flags(p)
    add_hygiene_flags(p)
    add_flags(p, {
        "--json": "write the sweep: its settings, theory's curve and one run per rate",
        "--plot": "write latency/TTFT against load (FILE) and throughput/goodput (FILE with "
                  "_throughput before the suffix)",
        "--html": HTML_HELP})
    return p


#: The flags that describe a sweep, in the order its command line is written back.
_FLAGS = ("mode", "rates", "repeats", "n", "host", "gpus", "slots", "concurrency", "profile",
          "prompts", "model", "num_predict", "time_scale", "arrivals", "burstiness", "seed",
          "max_concurrency", "warmup", "slo", "salt", "no_salt", "workload", "json", "plot")


def _command(args: argparse.Namespace) -> str:
    """The command line that reproduces this sweep (kept in its JSON)."""
    words = ["parallel-kit", "sweep"]
    for name in _FLAGS:
        value = getattr(args, name, None)
        if value is None or value is False or (name == "warmup" and value == 0):
            continue
        if value is True:
            words.append("--" + name.replace("_", "-"))
            continue
        flag = "--" + name.replace("_", "-")
        for v in value if isinstance(value, list) else [value]:
            words += [flag, str(v)]
    return " ".join(shlex.quote(w) for w in words)


def _progress(run: Any) -> None:
    s, o = run.summary, run.summary.open_loop
    print(f"rate {s.offered_rps:.4g}/s: {s.ok}/{s.n} ok, latency from arrival "
          f"{o.get('latency_from_arrival_mean_s', float('nan')):.3g} s", file=sys.stderr)
    if s.cache_flagged:  # the one warning line of measurement hygiene
        print(next((n for n in s.notes if n.startswith("warning:")), "warning: prompt cache"),
              file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Run the sweep, print its table, write what was asked.

    Output paths are checked before the run; a write that still fails goes to a fallback in
    the temporary folder (said). Ctrl-C or SIGTERM: the finished runs (and the interrupted
    one, its unfinished requests failed rows) are printed and written; exit 130 / 143.
    """
    from ._signals import shutdown_path

    with shutdown_path() as stop:
        return _run(args, stop)


def _throughput_path(path: Path) -> Path:
    return path.with_name(f"{path.stem}_throughput{path.suffix or '.png'}")


def _run(args: argparse.Namespace, stop: Any) -> int:
    from ..bench.sweep import Sweep, parse_rates, sweep
    from ..outputs import check_writable, write_or_rescue

    check_writable([("--json", args.json), ("--html", getattr(args, "html", None))],
                   figures=[("--plot", args.plot),
                            ("--plot", str(_throughput_path(Path(args.plot)))
                             if args.plot else None)])
    rates = parse_rates(args.rates)
    if args.warmup < 0:
        raise ConfigError(f"--warmup must be 0 or more, got {args.warmup}")
    burstiness = parse_float(args.burstiness, "--burstiness")
    if burstiness is not None and args.arrivals != "gamma":
        raise ConfigError("--burstiness only applies to --arrivals gamma")
    kwargs: dict[str, Any] = {
        "hosts": unique_hosts(args.host), "gpus": args.gpus, "slots": args.slots,
        "concurrency": args.concurrency, "profile": args.profile, "model": args.model,
        "num_predict": args.num_predict, "time_scale": args.time_scale}
    if args.prompts:
        kwargs["prompts"] = args.prompts
    command = _command(args)
    result = Sweep(args.mode)
    _, interrupted = stop.run(sweep(args.mode, rates, n=args.n, repeats=args.repeats,
                                    process=args.arrivals, burstiness=burstiness or 1.0,
                                    seed=args.seed, warmup=args.warmup,
                                    max_concurrency=args.max_concurrency, slo=args.slo,
                                    command=command, on_run=_progress, into=result,
                                    **hygiene_kwargs(args),
                                    **kwargs))
    with stop.deferred():  # a signal now must not cost the finished runs
        print(result.table())
        if args.json:
            print(f"wrote {write_or_rescue(args.json, result.write_json)}", file=sys.stderr)
        if args.plot and result.runs:
            from .. import plots
            from ..plots import load as plots_load

            path = Path(args.plot)
            for fig, out in ((plots_load.latency_vs_load(result), path),
                             (plots_load.throughput_vs_load(result), _throughput_path(path))):

                def save(p: Path, f: Any = fig) -> Path:
                    return Path(plots.save(f, p))

                print(f"wrote {write_or_rescue(out, save)}", file=sys.stderr)
        if getattr(args, "html", None) and result.runs:
            from ..report import write_html_report

            page = write_html_report(args.html, title=f"parallel-kit sweep of {args.mode}",
                                     sweep=result, command=command)
            print(f"wrote {page}", file=sys.stderr)
    if interrupted:
        print("interrupted: the table and files hold the finished runs (unfinished requests "
              "= failed rows)", file=sys.stderr)
        return int(stop.exit_code) or 130
    return 0
