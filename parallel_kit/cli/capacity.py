"""``parallel-kit capacity``: how many servers and slots a traffic needs to meet an SLO."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from typing import Any

from ..errors import ConfigError
from ._args import HTML_HELP, add_flags, add_time_scale, ranged
from ._load import TRACE_SPEED_HELP, TRAFFIC_FLAGS, parse_float

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    from ..bench.capacity import DEFAULT_MAX_GPUS, DEFAULT_MODES, DEFAULT_SLOTS, MEASURE_N, SLO_KEYS

    p: argparse.ArgumentParser = sub.add_parser(
        "capacity", help="the smallest configuration (servers × slots, modes) that meets a "
                         "latency SLO for a traffic: predicted, then measured")
    add_flags(p, {
        "--rate": "requests per model second arriving (or --trace)",
        "--arrivals": "how arrivals are spaced (default poisson)",
        "--burstiness": "gamma shape B > 0 with --arrivals gamma (< 1 burstier)",
        "--trace": "plan for a JSONL trace of {timestamp_s, prompt | prompt_tokens, "
                   "num_predict} instead of --rate",
        "--trace-speed": TRACE_SPEED_HELP,
        "--seed": "seed of the arrivals (prediction and measured runs)"}, TRAFFIC_FLAGS)
    p.add_argument("--n", type=ranged("--n"), default=None, metavar="N",
                   help="plan for exactly N seeded arrivals instead of the steady state; also "
                        f"the requests of each measured run (default {MEASURE_N})")
    p.add_argument("--slo", required=True, metavar="KEY=S[,…]",
                   help="bounds in seconds on the run's figures, latency and TTFT from arrival: "
                        + ", ".join(SLO_KEYS))
    src = p.add_mutually_exclusive_group()
    src.add_argument("--profile", default=None, metavar="NAME",
                     help="simulator profile of the server (default seed)")
    src.add_argument("--calibrated", default=None, metavar="FILE",
                     help="a measured server: `parallel-kit probe --json FILE` output or a "
                          "profile file from --save-profile")
    add_flags(p, {"--model": "model name (default the profile's; must match --calibrated)",
                  "--num-predict": "output tokens per request (default the profile's lengths)"})
    p.add_argument("--modes", default=",".join(DEFAULT_MODES), metavar="M[,M…]",
                   help="modes to consider (default pool; single-server modes at one server)")
    p.add_argument("--max-gpus", type=ranged("--gpus"), default=DEFAULT_MAX_GPUS, metavar="W",
                   help=f"the most servers, one per GPU (default {DEFAULT_MAX_GPUS})")
    p.add_argument("--slots", default=",".join(map(str, DEFAULT_SLOTS)), metavar="K[,K…]",
                   help="slots per server to consider (default 1,2,4)")
    p.add_argument("--measure", action="store_true",
                   help="then measure the recommended and the next smaller configuration on "
                        "the simulator, in-process")
    p.add_argument("--max-rate", action="store_true",
                   help="instead: the highest rate one configuration (--modes M --max-gpus W "
                        "--slots K, one value each) sustains within the SLO, bisecting with "
                        "measured runs")
    p.add_argument("--runs", type=ranged("--repeats"), default=6, metavar="N",
                   help="--max-rate: measured runs per search (default 6)")
    p.add_argument("--repeats", type=ranged("--repeats"), default=3, metavar="K",
                   help="--max-rate: searches with seeds S, S+1, … for a confidence interval "
                        "(default 3)")
    add_time_scale(p, "; for --measure and --max-rate (default: one request alone takes "
                      "0.2 clock seconds)")
    add_flags(p, {"--json": "write the plan as JSON", "--html": HTML_HELP})
    return p


def _ints(text: str, flag: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{flag} {text!r} must be whole numbers separated by commas — e.g. "
                          f"{flag} 1,2,4") from None
    if not values or any(v < 1 for v in values):
        raise ConfigError(f"{flag} {text!r} must be whole numbers ≥ 1 — e.g. {flag} 1,2,4")
    return values


def _traffic(args: argparse.Namespace) -> Any:
    from ..bench.capacity import Traffic

    if (args.rate is None) == (args.trace is None):
        raise ConfigError("give the traffic: --rate R (requests per model second) or --trace "
                          "FILE, one of them")
    if args.burstiness is not None and args.arrivals != "gamma":
        raise ConfigError("--burstiness only applies to --arrivals gamma — add it, or drop "
                          "--burstiness")
    if args.trace is not None:
        speed = parse_float(args.trace_speed, "--trace-speed") or 0.0
        if not speed > 0:
            raise ConfigError(f"--trace-speed must be > 0, got {args.trace_speed!r}")
        return Traffic.from_trace(args.trace, speed)
    from ..workload.arrivals import check_rate

    burst = parse_float(args.burstiness, "--burstiness") if args.burstiness is not None else 1.0
    return Traffic(rate=check_rate(args.rate), process=args.arrivals,
                   burstiness=burst if burst is not None else 1.0, seed=args.seed, n=args.n)


def run(args: argparse.Namespace) -> int:
    """Plan (and with ``--measure`` measure); ``--max-rate``: search one configuration's rate.

    Exit status: 0 a configuration meets the SLO (and, measured, the check agreed); 1 the
    measured check disagreed with the prediction; 2 bad input, or no configuration up to
    ``--max-gpus`` meets the SLO (the closest is named) — after writing ``--json``/``--html``.
    """
    from ..bench import capacity as cap
    from ..bench import run_interruptibly
    from ..outputs import check_writable
    from ..sim.profiles import load_profile

    check_writable([("--json", args.json), ("--html", args.html)])
    slo = cap.PercentileSlo.parse(args.slo)
    traffic = _traffic(args)
    modes = [m.strip() for m in args.modes.split(",")]
    slots = _ints(args.slots, "--slots")
    if args.calibrated:
        profile: Any = cap.load_calibrated(args.calibrated, model=args.model)
    else:
        profile = load_profile(args.profile or "seed")
        if args.model and args.model not in profile.model_names():
            raise ConfigError(f"profile {profile.name} has no model {args.model} — choose from "
                              f"{', '.join(profile.model_names())}")
    command = "parallel-kit " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if args.max_rate:
        return _max_rate(args, cap, traffic, slo, profile, modes, slots, command)
    plan = cap.plan_capacity(traffic, slo, profile=profile, model=args.model, modes=modes,
                             max_gpus=args.max_gpus, slots=slots, num_predict=args.num_predict)
    plan.command = command
    plan.calibrated = args.calibrated
    print(plan.report())
    status = 0
    if args.measure and plan.recommended:
        print("\nmeasuring on the simulator (same arrivals) …", file=sys.stderr)
        interrupted = run_interruptibly(cap.measure_plan(plan, time_scale=args.time_scale,
                                                         num_predict=args.num_predict,
                                                         profile=profile))
        if plan.measurements:
            plan.time_scale = plan.measurements[0].run.summary.time_scale
        print(_measured_text(plan))
        if plan.time_scale is not None:
            print(f"(simulated Ollama at time scale {plan.time_scale:.3g}; latency and TTFT from "
                  f"arrival, model seconds; theory = the same arrivals through the latency "
                  f"model)")
        if interrupted:
            status = 130
        elif not _agrees(plan):
            status = 1
    _write(args, plan.to_dict(), plan=plan)
    plan.check()  # exit 2 naming the closest configuration when none meets
    return status


def _agrees(plan: Any) -> bool:
    """The measured check agrees: the recommended meets, the next smaller misses."""
    ms = plan.measurements
    if not ms:
        return True
    ok = ms[0].meets
    if plan.next_smaller is not None and len(ms) > 1:
        ok = ok and not ms[1].meets
    return ok


def _measured_text(plan: Any) -> str:
    keys = plan.slo.keys
    lines = ["", f"{'measured':<30}" + "".join(f"{k:>14}{'(theory)':>10}" for k in keys)
             + "  verdict"]
    for m in plan.measurements:
        figs = "".join(f"{m.figures[k]:>14.3g}{m.predicted[k]:>10.3g}" for k in keys)
        why = "meets" if m.meets else "misses: " + "; ".join(x.describe() for x in m.misses)
        if m.failed:
            why += f" ({m.failed} failed request(s))"
        lines.append(f"{m.label:<30}{figs}  {why}")
    lines.append("the measured check " + ("agrees with the plan" if _agrees(plan) else
                                          "DISAGREES with the plan — see the figures above"))
    return "\n".join(lines)


def _max_rate(args: argparse.Namespace, cap: Any, traffic: Any, slo: Any, profile: Any,
              modes: list[str], slots: list[int], command: str) -> int:
    from ..bench import run_interruptibly

    if len(modes) != 1 or len(slots) != 1:
        raise ConfigError("--max-rate searches one configuration: give one --modes M and one "
                          "--slots K (and --max-gpus W for its servers)")
    holder: dict[str, Any] = {}

    async def go() -> None:
        holder["result"] = await cap.max_rate(
            modes[0], args.max_gpus, slots[0], traffic, slo, profile=profile, model=args.model,
            num_predict=args.num_predict, time_scale=args.time_scale, runs=args.runs,
            repeats=args.repeats)

    interrupted = run_interruptibly(go())
    result = holder.get("result")
    if result is None:
        print("interrupted before the search finished", file=sys.stderr)
        return 130
    print(result.report())
    _write(args, {"max_rate": result.to_dict(), "command": command}, max_rate=result,
           command=command)
    return 130 if interrupted else 0


def _write(args: argparse.Namespace, doc: dict[str, Any], **report: Any) -> None:
    if args.json:
        from pathlib import Path

        from ..bench.capacity import json_safe

        Path(args.json).write_text(json.dumps(json_safe(doc), indent=2, allow_nan=False)
                                   + "\n", encoding="utf-8")
        print(f"wrote {args.json}", file=sys.stderr)
    if args.html:
        from ..report import write_html_report

        write_html_report(args.html, title="Capacity plan", **report)
        print(f"wrote {args.html}", file=sys.stderr)

