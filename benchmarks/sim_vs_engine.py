"""The simulator's error per metric against the real engine, published the way the field does it.

The simulator (the kit's embedded default) and the real llama-server (started as Ollama ≥ 0.30
starts it, behind the kit's Ollama API: ``parallel-kit sim --engine llama-server``) run the same
workloads, and the simulator's mean E2E latency, TTFT and ITL per configuration are compared
with the engine's: the mean absolute percentage error (MAPE) over the configurations, per metric,
as Vidur (MLSys'24: < 9 % E2E), BLIS-Evolved (11.79 % E2E, 22.81 % TTFT over 38 experiments) and
APEX (10.7 %) report theirs.

The simulator is calibrated once from the engine, as a user would (``probe`` for one request
alone, ``calibrate.measure_speedup_samples`` for S(k), k = 1…4, medians of ``--repeats``, and
whether the engine reuses a slot's common prefix at all, from its own count of cached tokens),
and how the server counts and processes prompts (``calibrate.measure_prompts``: the chat
template's tokens on every prompt, the tokenizer's bytes per token, and the prefill line, rate
and per-prompt overhead, from two prompt sizes), with no
per-configuration fitting. Gemma 3 is a sliding-window-attention model, and llama-server
re-processes its whole prompt on every request (llama.cpp PR #13194, #13833: the reduced SWA
cache cannot be rolled back), so with this model the simulator's prompt cache is turned off;
``--assume-reuse`` keeps it on, to show what the wrong assumption costs. Configurations (21):

* slots 1, 2, 4 (``-np``);
* load: a closed loop of 2 × slots clients, and Poisson arrivals at utilisation ρ ≈ 0.5 and 0.8
  of the calibrated capacity (S(slots) ÷ one request's service time, seeded);
* prompts: short (~15 tokens, each unique) and long with a shared prefix (~300 tokens shared by
  every request of the configuration, a unique tail) — and, closed loop only, long without one.

Every configuration's prompts start with its own tag, so nothing is cached across
configurations; within one, the shared prefix is what llama-server's slots reuse
(``cache_prompt``) and what the simulator's prompt cache must reproduce.

Plus one pool figure: the pool mode on 2 servers of 1 slot each, closed loop, engine vs
simulator. Both servers run on this one CPU, so each gets half the cores (``--pool-threads``,
as the kit itself gives servers it starts together), and the simulator is calibrated from one
such server alone; ``--pool-threads 0`` leaves llama-server's default (every core, each).

Targets: E2E ≤ 5 %, TTFT ≤ 10 %, ITL ≤ 10 % MAPE. Where one is missed, the per-configuration
rows say where, and the signed errors say which way.

Usage::

    .venv/bin/python benchmarks/sim_vs_engine.py [--n 12] [--repeats 3] [--num-predict 32]
        [--save-profile NAME]

The packaged profile ``cpu-llama-server`` was made by ``--n 10 --save-profile
cpu-llama-server`` (the command is in its results file).

Writes ``benchmarks/results/sim_vs_engine.json`` (``--quick``: 6 configurations, into the
git-ignored ``benchmarks/results/quick/``). Needs the real engine (``make engine``). The machine
should be otherwise idle: the load average at the start and end is recorded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, results_dir, write_result
from real_engine import MODEL, TOPICS, kit_server

from parallel_kit.bench import compare
from parallel_kit.measure.calibrate import (
    measure_prompts,
    measure_speedup_samples,
    profile_from_probe,
)
from parallel_kit.measure.probe import probe
from parallel_kit.modes.options import QueueOptions
from parallel_kit.records import RequestSpec, RunResult
from parallel_kit.sim.server import SimulatedOllama
from parallel_kit.workload.arrivals import Arrivals

SIM_SCALE = 0.25  # the simulator runs 4× faster than the clock; figures are in model seconds
TARGETS = {"e2e_s": 0.05, "ttft_s": 0.10, "itl_s": 0.10}
FILLER = ("The harbour master kept a log of every ship that came in, the weather at dawn, the "
          "height of the tide and the names of the crew who stood the night watch. ")


def prompts(tag: str, kind: str, n: int) -> list[str]:
    """``n`` prompts of ``kind`` (``short``, ``long``, ``long-shared``), unique to ``tag``."""
    out = []
    for i in range(n):
        question = f"Write a short story about {TOPICS[i % len(TOPICS)]}."
        if kind == "short":
            out.append(f"[{tag}-{i:03d}] {question}")
        elif kind == "long":
            out.append(f"[{tag}-{i:03d}] {FILLER * 8}{question}")
        else:  # the shared prefix first, the unique part last
            out.append(f"[{tag}] {FILLER * 8}[{i:03d}] {question}")
    return out


def configurations(quick: bool) -> list[dict[str, Any]]:
    """The grid (module docstring)."""
    out = []
    for slots in (1, 2, 4):
        for load in ("closed", "poisson-0.5", "poisson-0.8"):
            for kind in ("short", "long-shared", "long"):
                if kind == "long" and load != "closed":
                    continue
                out.append({"slots": slots, "load": load, "prompts": kind})
    if quick:
        out = [c for c in out if c["load"] != "poisson-0.5" and c["prompts"] != "long"]
    return out


def _figures(run: RunResult, profile: Any = None) -> dict[str, float]:
    """Per-configuration means (model s). With ``profile`` (the engine's runs), also what the
    latency model leaves out, measured from the rows: ``client_outside_server_s`` = the
    client's latency − the server's ``total_duration`` (HTTP and the client), ``server_other_s``
    = ``total_duration`` − prefill − decode − load durations (queue wait at the server and
    whatever llama-server does outside its own timings), and ``prompt_tokens_over_model`` =
    the server's prompt token count ÷ the simulator's count for the same text (after
    calibration ≈ 1), and ``server_s_per_token`` = the engine's own decode seconds per token
    (``eval_duration ÷ eval_count``), to set beside the client's ITL."""
    rows = [r for r in run.requests if r.ok]
    s = run.summary
    out = {"e2e_s": statistics.mean(r.latency_s for r in rows),
           "ttft_s": statistics.mean(r.ttft_s for r in rows if math.isfinite(r.ttft_s)),
           "itl_s": float(s.itl_mean_s), "makespan_s": float(s.makespan_s),
           "ok": s.ok, "n": s.n}
    if profile is not None:
        timed = [r for r in rows if r.server_eval_s is not None
                 and r.server_prompt_eval_s is not None and r.server_total_s is not None]
        if timed:
            out["client_outside_server_s"] = statistics.mean(
                r.latency_s - (r.server_total_s or 0) for r in timed)
            out["server_other_s"] = statistics.mean(
                (r.server_total_s or 0) - (r.server_prompt_eval_s or 0) - (r.server_eval_s or 0)
                - (r.server_load_s or 0) for r in timed)
        per_token = [r.server_eval_s / r.output_tokens for r in rows
                     if r.server_eval_s and r.output_tokens]
        if per_token:
            # llama-server's own decode time per token: the client's ITL above it is time
            # spent outside the engine's decode timing (streaming, the relay, the machine)
            out["server_s_per_token"] = statistics.mean(per_token)
        counted = [(r.prompt_tokens, profile.prompt_tokens(r.prompt)) for r in rows
                   if r.prompt_tokens]
        if counted:
            out["prompt_tokens_over_model"] = statistics.mean(a / b for a, b in counted if b)
    return out


@contextlib.contextmanager
def sim_server(profile: Any, slots: int, prompt_cache: bool = True) -> Iterator[str]:
    sim = SimulatedOllama(profile, num_parallel=slots, time_scale=SIM_SCALE,
                          prompt_cache=prompt_cache)
    sim.start_in_thread()
    try:
        yield sim.url
    finally:
        sim.stop()


async def one(url: str, *, simulated: bool, mode: str, specs: list[RequestSpec],
              concurrency: int, arrivals: Arrivals | None,
              profile: Any = None) -> dict[str, float]:
    kw: dict[str, Any] = ({"backend": "sim", "time_scale": SIM_SCALE} if simulated
                          else {"backend": "ollama"})
    hosts = url.split(",")
    run = (await compare([mode], specs, hosts=hosts, model=MODEL, salt=False,
                         queue=QueueOptions(concurrency=concurrency), arrivals=arrivals,
                         **kw))[mode]
    failed = [r.error for r in run.requests if not r.ok]
    assert not failed, failed[:3]
    return _figures(run, None if simulated else profile)


def _ape(sim: float, real: float) -> float:
    return (sim - real) / real


async def prefix_reuse(url: str) -> dict[str, Any]:
    """Does the engine reuse a slot's common prefix? Two requests sharing a ~300-token prefix
    on one slot, and the engine's own count of cached tokens (``/sim/stats``) before and after.
    (llama-server re-processes the whole prompt of a sliding-window-attention model such as
    Gemma 3, whose reduced SWA cache cannot be rolled back: llama.cpp PR #13194, #13833.)"""
    import httpx

    async with httpx.AsyncClient(timeout=120, trust_env=False) as http:
        before = (await http.get(f"{url}/sim/stats")).json().get("cached_tokens", 0)
        counts = []
        for p in prompts("reuse-check", "long-shared", 2):
            r = await http.post(f"{url}/api/generate", json={
                "model": MODEL, "prompt": p, "stream": False, "options": {"num_predict": 2}})
            r.raise_for_status()
            counts.append(r.json().get("prompt_eval_count"))
        after = (await http.get(f"{url}/sim/stats")).json().get("cached_tokens", 0)
    return {"cached_tokens_on_second": after - before, "prompt_eval_counts": counts,
            "reuses_prefix": after - before > 0}


async def _details(url: str) -> dict[str, Any]:
    """The model's ``/api/tags`` details (family, size, context…) as the kit's server lists
    them: the family decides the simulator's prefix-reuse rule."""
    import httpx

    async with httpx.AsyncClient(timeout=30, trust_env=False) as http:
        tags = (await http.get(f"{url}/api/tags")).json().get("models", [])
    for m in tags:
        if m.get("name") == MODEL:
            d = dict(m.get("details") or {})
            return {"size": m.get("size"), **d}
    return {}


async def calibrate(url: str, repeats: int, num_predict: int,
                    name: str = "llama-server-here") -> tuple[Any, dict[str, Any]]:
    alone = await probe(url, MODEL, max_k=1, num_predict=num_predict, repeats=repeats)
    s = await measure_speedup_samples(url, MODEL, (1, 2, 3, 4), num_predict=num_predict,
                                      repeats=repeats)
    fit = await measure_prompts(url, MODEL, repeats=repeats)
    details = {k: v for k, v in (await _details(url)).items()
               if k in ("size", "parameter_size", "quantization_level", "family",
                        "context_length") and v}
    profile = profile_from_probe(
        name, {**alone.to_dict(), "speedup": s.median}, num_parallel=4,
        output_tokens=(num_predict, num_predict), details=details, prompts=fit,
        description=(f"{MODEL} on llama.cpp's llama-server (the kit's engine, started as "
                     f"Ollama starts it) on a {os.cpu_count()}-core x86-64 CPU, measured by "
                     f"benchmarks/sim_vs_engine.py: one request alone ({repeats} repeats, "
                     f"medians), S(k) for k = 1…4 (medians of {repeats}), the server's own "
                     f"count of prompt tokens, prompts processed in the decode batch."))
    reuse = await prefix_reuse(url)
    return profile, {"probe_alone": alone.to_dict(), "speedup": s.to_dict(),
                     "prefix_reuse": reuse,
                     "prompts": fit.to_dict()}


def _rate(profile: Any, slots: int, rho: float, specs: list[RequestSpec]) -> float:
    """ρ × the calibrated capacity: S(slots) ÷ one request's mean service time alone."""
    service = statistics.mean(profile.service_time_s(profile.prompt_tokens(s.prompt),
                                                     s.num_predict or 0, model=MODEL)
                              for s in specs)
    return rho * profile.S(slots) / service


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    started = time.time()
    doc: dict[str, Any] = {"what": __doc__.split("\n\n")[0], "machine": machine(),
                           "model": MODEL, "num_predict": args.num_predict, "n": args.n,
                           "sim_time_scale": SIM_SCALE, "targets_mape": TARGETS,
                           "command": " ".join(["benchmarks/sim_vs_engine.py", *args.argv])}
    with kit_server(4) as url:
        profile, doc["calibration"] = await calibrate(url, args.repeats, args.num_predict,
                                                      args.save_profile or "llama-server-here")
    doc["calibrated_profile"] = profile.to_dict()
    if args.save_profile:
        from parallel_kit.sim.profiles import save_profile

        packaged = Path(__file__).resolve().parent.parent / "parallel_kit" / "data"
        save_profile(profile, packaged / "profiles.json")
        doc["saved_profile"] = args.save_profile
    # the simulator reuses prefixes only when the engine was measured to (``--assume-reuse``
    # keeps the simulator's default, to show what a wrong assumption costs)
    cache = args.assume_reuse or doc["calibration"]["prefix_reuse"]["reuses_prefix"]
    doc["simulator_prompt_cache"] = cache
    rows: list[dict[str, Any]] = []
    for slots in (1, 2, 4):
        grid = [c for c in configurations(args.quick) if c["slots"] == slots]
        with kit_server(slots) as real_url, \
                sim_server(profile, slots, cache) as sim_url:
            for c in grid:
                tag = f"s{slots}-{c['load']}-{c['prompts']}"
                specs = [RequestSpec(p, model=MODEL, num_predict=args.num_predict,
                                     request_id=f"{tag}-{i}")
                         for i, p in enumerate(prompts(tag, c["prompts"], args.n))]
                arrivals = None
                if c["load"].startswith("poisson"):
                    rho = float(c["load"].split("-")[1])
                    arrivals = Arrivals(rate=_rate(profile, slots, rho, specs), seed=7,
                                        n=args.n)
                conc = 2 * slots
                real = await one(real_url, simulated=False, mode="async", specs=specs,
                                 concurrency=conc, arrivals=arrivals, profile=profile)
                # the simulator gets the same text under another tag: its cache starts cold too
                sim_specs = [RequestSpec(p, model=MODEL, num_predict=args.num_predict,
                                         request_id=f"sim-{tag}-{i}")
                             for i, p in enumerate(prompts("sim-" + tag,
                                                           c["prompts"], args.n))]
                sim = await one(sim_url, simulated=True, mode="async", specs=sim_specs,
                                concurrency=conc, arrivals=arrivals)
                row = {**c, "rate_rps": arrivals.rate if arrivals else None,
                       "engine": {k: round(v, 4) for k, v in real.items()},
                       "simulator": {k: round(v, 4) for k, v in sim.items()},
                       "error": {k: round(_ape(sim[k], real[k]), 4) for k in TARGETS}}
                rows.append(row)
                print(tag, row["error"], flush=True)
    doc["configurations"] = rows
    doc["mape"] = {k: round(statistics.mean(abs(r["error"][k]) for r in rows), 4)
                   for k in TARGETS}
    doc["mean_signed_error"] = {k: round(statistics.mean(r["error"][k] for r in rows), 4)
                                for k in TARGETS}
    doc["within_target"] = {k: doc["mape"][k] <= t for k, t in TARGETS.items()}
    doc.update(undisturbed(rows))
    args.sim_cache = cache
    doc["pool"] = await pool_figure(profile, args)
    doc["elapsed_s"] = round(time.time() - started, 1)
    doc["machine_after"] = machine()
    return doc


async def pool_figure(profile: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The pool mode on 2 servers of 1 slot each, closed loop of 2, engine vs simulator."""
    threads = args.pool_threads or None
    if threads:  # the simulator is calibrated from one such server alone
        with kit_server(1, threads) as url:
            alone = await probe(url, MODEL, max_k=1, num_predict=args.num_predict,
                                repeats=args.repeats)
            pool_fit = await measure_prompts(url, MODEL, repeats=args.repeats)
        profile = profile_from_probe("llama-server-pool", alone.to_dict(), num_parallel=1,
                                     output_tokens=(args.num_predict, args.num_predict),
                                     prompts=pool_fit,
                                     details={"family": profile.speed(MODEL).family})
    specs = [RequestSpec(p, model=MODEL, num_predict=args.num_predict, request_id=f"pool-{i}")
             for i, p in enumerate(prompts("pool", "short", args.n))]
    sim_specs = [RequestSpec(p, model=MODEL, num_predict=args.num_predict,
                             request_id=f"sim-pool-{i}")
                 for i, p in enumerate(prompts("sim-pool", "short", args.n))]
    with kit_server(1, threads) as a, kit_server(1, threads) as b:
        real = await one(f"{a},{b}", simulated=False, mode="pool", specs=specs,
                         concurrency=2, arrivals=None, profile=profile)
    with sim_server(profile, 1, args.sim_cache) as a, sim_server(profile, 1, args.sim_cache) as b:
        sim = await one(f"{a},{b}", simulated=True, mode="pool", specs=sim_specs,
                        concurrency=2, arrivals=None)
    return {"servers": 2, "slots": 1, "threads_each": threads or "llama-server's default",
            "engine": {k: round(v, 4) for k, v in real.items()},
            "simulator": {k: round(v, 4) for k, v in sim.items()},
            "error": {k: round(_ape(sim[k], real[k]), 4)
                      for k in ("e2e_s", "ttft_s", "itl_s", "makespan_s")}}


#: a configuration whose engine decoded slower per token (its own ``eval_duration``) than this
#: × the simulator's ITL ran on a machine another process was using: its error is the
#: machine's, not the model's
DISTURBED_OVER = 1.25


def undisturbed(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mark each row ``disturbed`` (see :data:`DISTURBED_OVER`, from the engine's own
    durations) and give the MAPE over the undisturbed rows."""
    for r in rows:
        per_token = r["engine"].get("server_s_per_token")
        r["engine_slowdown"] = (round(per_token / r["simulator"]["itl_s"], 3)
                                if per_token and r["simulator"]["itl_s"] else None)
        r["disturbed"] = bool(r["engine_slowdown"] and r["engine_slowdown"] > DISTURBED_OVER)
    quiet = [r for r in rows if not r["disturbed"]]
    return {"undisturbed": len(quiet),
            "mape_undisturbed": ({k: round(statistics.mean(abs(r["error"][k]) for r in quiet), 4)
                                  for k in TARGETS} if quiet else None)}


def table(doc: dict[str, Any]) -> str:
    """The recorded results as a Markdown table (written beside the JSON)."""
    def pct(x: float) -> str:
        return f"{x:+.0%}"

    lines = ["| slots | load | prompts | engine E2E / TTFT / ITL (s) | simulator | error E2E / "
             "TTFT / ITL | engine's own s/token ÷ simulator's ITL |", "|---|---|---|---|---|---|---|"]
    for r in doc["configurations"]:
        e, m, err = r["engine"], r["simulator"], r["error"]
        lines.append(f"| {r['slots']} | {r['load']} | {r['prompts']} | "
                     f"{e['e2e_s']:.3f} / {e['ttft_s']:.3f} / {e['itl_s']:.4f} | "
                     f"{m['e2e_s']:.3f} / {m['ttft_s']:.3f} / {m['itl_s']:.4f} | "
                     f"{pct(err['e2e_s'])} / {pct(err['ttft_s'])} / {pct(err['itl_s'])} | "
                     f"{r.get('engine_slowdown') or float('nan'):.2f}"
                     f"{' (disturbed)' if r.get('disturbed') else ''} |")
    mape, p = doc["mape"], doc["pool"]
    lines += ["", f"MAPE over {len(doc['configurations'])} configurations: E2E "
              f"{mape['e2e_s']:.1%}, TTFT {mape['ttft_s']:.1%}, ITL {mape['itl_s']:.1%} "
              f"(targets 5 %, 10 %, 10 %). Pool of {p['servers']} × {p['slots']} slot, "
              f"{p['threads_each']} thread(s) each: error E2E {pct(p['error']['e2e_s'])}, "
              f"TTFT {pct(p['error']['ttft_s'])}, ITL {pct(p['error']['itl_s'])}, makespan "
              f"{pct(p['error']['makespan_s'])}.", ""]
    q = doc.get("mape_undisturbed")
    if q:
        lines[-1:-1] = ["", f"Over the {doc['undisturbed']} configurations whose engine kept its "
                        f"calibrated speed (its own seconds per token within "
                        f"{DISTURBED_OVER:g}× the simulator's ITL): E2E {q['e2e_s']:.1%}, "
                        f"TTFT {q['ttft_s']:.1%}, ITL {q['itl_s']:.1%}."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--num-predict", type=int, default=32)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--assume-reuse", action="store_true",
                        help="the simulator reuses prefixes whatever the engine does")
    parser.add_argument("--pool-threads", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                        help="llama-server -t of each pool server (0: its default, every core)")
    parser.add_argument("--save-profile", default=None, metavar="NAME",
                        help="also write the calibrated profile into the kit's packaged "
                             "profiles (parallel_kit/data/profiles.json) as NAME")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.quick:
        args.n, args.repeats = 6, 1
    doc = asyncio.run(main_async(args))
    path = write_result("sim_vs_engine", doc, results_dir(args.quick, args.out))
    path.with_suffix(".md").write_text(table(doc), encoding="utf-8")
    print(f"wrote {path} and {path.with_suffix('.md').name}")
    print("MAPE", doc["mape"], "pool", doc["pool"]["error"])
    return doc


if __name__ == "__main__":
    main()
