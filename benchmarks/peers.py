"""Peers: the kit beside GuideLLM and servebench, on the same simulated server, in one run.

Every tool talks to the same simulated Ollama's OpenAI-compatible API (``/v1/chat/completions``,
streaming), each as a process of its own pinned to one core while the simulator has another.
Five sections (``--sections``, default all):

1. ``sequential`` — one request at a time, 32 output tokens at 100 tokens/s: seconds per
   request against the ideal 0.32 s (the server's own time; the rest is the client and the
   loopback);
2. ``c4`` — concurrency 4: 100 requests of ≈ 600 prompt tokens and 32 output tokens on the
   ``rtx4090`` profile with 4 slots (≈ 60 ms of prefill, so the first token's time is not just
   the phase of the decode steps): latency, TTFT and ITL (p50 and mean, seconds) and
   requests/s — the headline figures, which should agree across tools when the definitions
   match (docs/METRICS.md). On this profile a decode step slows with the number decoding
   (S(k) < k), so a client's own rhythm changes the load it offers
   (``closed_loop_rhythm.py``);
3. ``c4_linear`` — the same requests on ``bench-linear-rtx4090``: rtx4090's single-stream
   speeds with S(k) = k, where no client's rhythm can change what the server does (only the
   phase of the 4.4 ms decode grid a request joins) — the fair ground for the 5 % agreement;
4. ``c64`` — concurrency 64 against a zero-latency server, one output token: requests/s and
   the client's CPU per request. CPU is the tool's process tree's user + system time
   (``RUSAGE_CHILDREN``), measured at two request counts and differenced, so start-up and
   imports cancel out: (CPU(n₂) − CPU(n₁)) ÷ (n₂ − n₁); three interleaved rounds (every
   tool once per round), medians;
5. ``poisson`` — requests arriving over time (``peers_poisson.py``): GuideLLM's ``poisson``
   profile at half the server's capacity, the kit replaying exactly the send times GuideLLM
   used, and the kit's own Poisson schedule at the same rate; mean and p50 latency and TTFT
   beside the simulator's latency model run over each run's own arrivals.

Every request asks for 32 output tokens (1 at concurrency 64). The simulator, like Ollama's
``/v1`` layer (``openai/openai.go``), reads ``max_tokens`` and ignores
``max_completion_tokens``, which is what GuideLLM's chat requests carry; so GuideLLM's backend
is given ``extras: {"body": {"max_tokens": N}}`` (its documented way to add body fields), and
each tool's mean output tokens per request are recorded to show that every tool got N.

The peers live in their own virtual environment, ``benchmarks/.peers-venv`` (git-ignored),
created on first use with pip from PyPI (``guidellm==0.8.1``, ``servebench==1.1.3``); nothing is
fetched at run time (GuideLLM reads the prompts from a local JSONL file; no tokenizer is
downloaded). Not part of ``make test``: a full run takes about 13 minutes.

Usage: ``.venv/bin/python benchmarks/peers.py [--quick] [--tools kit,servebench,guidellm]
[--sections sequential,c4,c4_linear,c64,poisson]``
Writes ``results/peers[_quick].json`` and ``results/peers[_quick].md`` (the README's tables).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    LINEAR_PROFILE,
    PYTHON,
    ROOT,
    STEADY_PROFILE,
    ZERO_PROFILE,
    SimFarm,
    clean,
    machine,
    write_result,
)
from _peers_common import (
    C4_PROFILE,
    MODEL,
    PEER_PACKAGES,
    TOKENS,
    VENV,
    guidellm_raw,
    guidellm_stat,
    pct,
    prompt_lines,
    run_tool,
    signed,
    venv_bin,
    warm,
)

#: STEADY_PROFILE decodes 100 tokens/s per stream, whatever the number of streams
IDEAL_S = TOKENS / 100.0
TOOLS = ("kit", "servebench", "guidellm")
SECTIONS = ("sequential", "c4", "c4_linear", "c64", "poisson")
#: Interleaved rounds of the c = 64 section (medians): one run of each tool differed by a few
#: per cent from the next.
C64_ROUNDS = 3
#: the same requests on a server whose speed per request does not depend on the load (S(k) = k)
C4_LINEAR_PROFILE = LINEAR_PROFILE
#: the figures each tool's concurrency-4 agreement with the kit is reported for
AGREEMENT_KEYS = ("latency_p50_s", "ttft_p50_s", "itl_p50_s", "requests_per_s")

# -- the peers' venv -----------------------------------------------------------------------------


def ensure_venv(tools: list[str]) -> None:
    """Create ``.peers-venv`` and install the peers that are missing (pip, from PyPI)."""
    missing = [PEER_PACKAGES[t] for t in tools if t in PEER_PACKAGES and not venv_bin(t).exists()]
    if not missing:
        return
    if not venv_bin("python").exists():
        print(f"creating {VENV} …", flush=True)
        if subprocess.run([sys.executable, "-m", "venv", str(VENV)]).returncode:
            raise SystemExit(f"could not create {VENV} — is the venv module installed "
                             f"(python3-venv)?")
    print(f"installing {', '.join(missing)} into {VENV} (once) …", flush=True)
    if subprocess.run([str(venv_bin("python")), "-m", "pip", "install", "-q", *missing]
                      ).returncode:
        raise SystemExit(f"pip could not install {', '.join(missing)} into {VENV} — check "
                         f"that PyPI is reachable, or run with --tools kit")


# -- running one tool ------------------------------------------------------------------------------

_KIT_SNIPPET = """
import asyncio, json, sys
from parallel_kit.config import Endpoint
from parallel_kit.modes.base import ModeContext, QueueOptions
from parallel_kit.modes.queued import run_async
from parallel_kit.records import RequestSpec, write_json
url, c, tokens, prompts, out, model = sys.argv[1:7]
lines = open(prompts, encoding="utf-8").read().splitlines()
specs = [RequestSpec(p, num_predict=int(tokens)) for p in lines]
ctx = ModeContext(endpoints=[Endpoint(url, slots=64)], queue=QueueOptions(concurrency=int(c)),
                  model=model, api="openai")
run = asyncio.run(run_async(specs, ctx))
write_json(out, [run])  # the kit's own results file, as `bench --json` writes it
"""

def run_kit(url: str, n: int, c: int, tokens: int, folder: Path, core: int | None,
            long: bool = False) -> dict[str, Any]:
    out = folder / f"kit_{n}_{c}_{tokens}.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cpu, wall = run_tool([PYTHON, "-c", _KIT_SNIPPET, url, str(c), str(tokens),
                      str(prompt_lines(folder, n, long)), str(out), MODEL], core, env)
    doc = json.loads(out.read_text())["runs"][0]
    s = doc["summary"]
    return {"cpu_s": cpu, "wall_s": wall, "ok": s["ok"], "requests_per_s": s["throughput_rps"],
            "output_tokens_mean": _mean([r["output_tokens"] for r in doc["requests"]
                                         if r.get("ok") and r.get("output_tokens") is not None]),
            "latency_p50_s": s["latency_p50_s"], "latency_mean_s": s["latency_mean_s"],
            "ttft_p50_s": s["ttft_p50_s"], "ttft_mean_s": s["ttft_mean_s"],
            "itl_p50_s": s["itl_p50_s"], "itl_mean_s": s["itl_mean_s"],
            "tpot_mean_s": s["tpot_mean_s"],
            "span_per_request_s": s["makespan_s"] / max(s["ok"], 1),
            "achieved_concurrency": s["achieved_concurrency"]}


def run_servebench(url: str, n: int, c: int, tokens: int, folder: Path, core: int | None,
                   long: bool = False) -> dict[str, Any]:
    out = folder / f"servebench_{n}_{c}_{tokens}.json"
    prompts = prompt_lines(folder, n, long)
    cmd = [str(venv_bin("servebench")), "run", "--url", f"{url}/v1", "--model", MODEL,
           "--concurrency", str(c), "--num-requests", str(n), "--output-len", str(tokens),
           "--prompts", str(prompts), "--warmup", "0", "--seed", "1", "--out", str(out)]
    cpu, wall = run_tool(cmd, core)
    level = json.loads(out.read_text())["levels"][0]
    s, reqs = level["summary"], [r for r in level["requests"] if r.get("ok")]
    e2e = sorted(r["e2e"] for r in reqs if r.get("e2e") is not None)
    starts = [r["start"] for r in reqs]
    ends = [r["start"] + r["e2e"] for r in reqs if r.get("e2e") is not None]
    return {"cpu_s": cpu, "wall_s": wall, "ok": s["completed"],
            "requests_per_s": s["request_throughput"],
            "output_tokens_mean": _mean([r["output_tokens"] for r in reqs]),
            "latency_p50_s": _median(e2e), "latency_mean_s": sum(e2e) / len(e2e),
            "ttft_p50_s": s["ttft"]["p50"], "ttft_mean_s": s["ttft"]["mean"],
            "itl_p50_s": s["itl"]["p50"], "itl_mean_s": s["itl"]["mean"],
            "tpot_mean_s": s["tpot"]["mean"],
            "span_per_request_s": (max(ends) - min(starts)) / max(len(reqs), 1),
            "achieved_concurrency": sum(e2e) / (max(ends) - min(starts))}


def run_guidellm(url: str, n: int, c: int, tokens: int, folder: Path, core: int | None,
                 long: bool = False) -> dict[str, Any]:
    profile = ({"kind": "synchronous"} if c == 1 else {"kind": "concurrent", "streams": c})
    cpu, wall, b = guidellm_raw(url, n, tokens, folder, core, long, profile,
                                f"{n}_{c}_{tokens}")

    def stat(name: str, key: str, scale: float = 1.0) -> float:
        return guidellm_stat(b, name, key, scale)

    count = int(b["metrics"]["request_latency"]["successful"]["count"])
    return {"cpu_s": cpu, "wall_s": wall, "ok": count,
            "requests_per_s": count / float(b["duration"]),
            "output_tokens_mean": _mean([r["output_tokens"] for r in
                                         b["requests"]["successful"]
                                         if r.get("output_tokens") is not None]),
            "latency_p50_s": stat("request_latency", "p50"),
            "latency_mean_s": stat("request_latency", "mean"),
            "ttft_p50_s": stat("time_to_first_token_ms", "p50", 1e-3),
            "ttft_mean_s": stat("time_to_first_token_ms", "mean", 1e-3),
            "itl_p50_s": stat("inter_token_latency_ms", "p50", 1e-3),
            "itl_mean_s": stat("inter_token_latency_ms", "mean", 1e-3),
            "tpot_mean_s": stat("time_per_output_token_ms", "mean", 1e-3),
            "span_per_request_s": float(b["duration"]) / max(count, 1),
            "achieved_concurrency": stat("request_concurrency", "mean")}


RUNNERS = {"kit": run_kit, "servebench": run_servebench, "guidellm": run_guidellm}


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _median(values: list[float]) -> float:
    v = sorted(values)
    if not v:
        return float("nan")
    mid = len(v) // 2
    return v[mid] if len(v) % 2 else (v[mid - 1] + v[mid]) / 2


# -- the measurements ------------------------------------------------------------------------------


def _pin_farm(farm: SimFarm, pinned: bool) -> str:
    """Pin the simulator to core 0 (the clients get core 1); returns its URL."""
    if pinned:
        os.sched_setaffinity(farm.pid, {0})
    return farm.urls[0]


def measure_sequential(tools: list[str], n: int, folder: Path, pinned: bool,
                       client_core: int | None) -> dict[str, Any]:
    with SimFarm(1, profile=STEADY_PROFILE) as farm:
        url = _pin_farm(farm, pinned)
        seq = {}
        for tool in tools:
            print(f"  {tool}: sequential …", flush=True)
            seq[tool] = RUNNERS[tool](url, n, 1, TOKENS, folder, client_core)
    return {"n": n, "tokens": TOKENS, "profile": STEADY_PROFILE, "ideal_s_per_request": IDEAL_S,
            "by_tool": seq}


def measure_c4(tools: list[str], n: int, folder: Path, pinned: bool, client_core: int | None,
               profile: str) -> dict[str, Any]:
    """Concurrency 4 on ``profile`` with 4 slots, ≈ 600 prompt tokens, 32 output tokens."""
    with SimFarm(1, profile=profile, slots=4) as farm:
        url = _pin_farm(farm, pinned)
        warm(url)
        c4 = {}
        for tool in tools:
            print(f"  {tool}: concurrency 4 on {profile} …", flush=True)
            c4[tool] = RUNNERS[tool](url, n, 4, TOKENS, folder, client_core, True)
    return {"n": n, "tokens": TOKENS, "profile": profile, "slots": 4, "prompt_tokens": "≈ 600",
            "by_tool": c4, "agreement_with_kit": _agreement(c4)}


def measure_c64(tools: list[str], n_small: int, n_big: int, folder: Path, pinned: bool,
                client_core: int | None, rounds: int = 1) -> dict[str, Any]:
    """Concurrency 64, one token, against a zero-latency server: each tool's CPU per request
    (its process tree's CPU for ``n_big`` requests minus for ``n_small``, ÷ the difference).

    ``rounds`` > 1 runs every tool once per round, the tools in turn (a burst of other work on
    the machine then falls on all of them alike); each figure is the median over the rounds.
    """
    with SimFarm(1, profile=ZERO_PROFILE, slots=64) as farm:
        url = _pin_farm(farm, pinned)
        runs: dict[str, list[dict[str, Any]]] = {tool: [] for tool in tools}
        for r in range(rounds):
            for tool in tools:
                print(f"  {tool}: concurrency 64, {n_small} and {n_big} requests "
                      f"(round {r + 1} of {rounds}) …", flush=True)
                small = RUNNERS[tool](url, n_small, 64, 1, folder, client_core)
                big = RUNNERS[tool](url, n_big, 64, 1, folder, client_core)
                runs[tool].append({
                    "cpu_ms_per_request": (big["cpu_s"] - small["cpu_s"])
                    / (n_big - n_small) * 1000,
                    "requests_per_s": big["requests_per_s"],
                    "achieved_concurrency": big["achieved_concurrency"],
                    "runs": {str(n_small): small, str(n_big): big}})
        c64 = {tool: {
            **{k: _median([x[k] for x in rs])
               for k in ("cpu_ms_per_request", "requests_per_s", "achieved_concurrency")},
            "cpu_ms_per_request_by_round": [x["cpu_ms_per_request"] for x in rs],
            "rounds": rs} for tool, rs in runs.items()}
    return {"n": [n_small, n_big], "tokens": 1, "rounds": rounds, "by_tool": c64}


def measure(tools: list[str], quick: bool,
            sections: tuple[str, ...] | list[str] = SECTIONS) -> dict[str, Any]:
    """Run the chosen ``sections`` (see the module docstring) for ``tools``."""
    pinned = hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2
    client_core = 1 if pinned else None
    n_seq, n_c4 = (5, 40) if quick else (10, 100)
    n_small, n_big = (100, 600) if quick else (300, 2000)
    out: dict[str, Any] = {"tools": tools, "sections": list(sections),
                           "pinned_to_separate_cores": pinned,
                           "load_before": machine()["load_avg_1_5_15"]}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if "sequential" in sections:
            out["sequential"] = measure_sequential(tools, n_seq, folder, pinned, client_core)
        if "c4" in sections:
            out["concurrency_4"] = measure_c4(tools, n_c4, folder, pinned, client_core,
                                              C4_PROFILE)
            # kept at the top level too: the first recorded runs had it there
            out["agreement_with_kit"] = out["concurrency_4"]["agreement_with_kit"]
        if "c4_linear" in sections:
            out["concurrency_4_linear"] = measure_c4(tools, n_c4, folder, pinned, client_core,
                                                     C4_LINEAR_PROFILE)
        if "c64" in sections:
            out["concurrency_64"] = measure_c64(tools, n_small, n_big, folder, pinned,
                                                client_core, rounds=1 if quick else C64_ROUNDS)
        if "poisson" in sections:
            import peers_poisson

            out["poisson"] = peers_poisson.measure(tools, quick, folder, pinned, client_core)
    out["load_after"] = machine()["load_avg_1_5_15"]
    return out


def _agreement(c4: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Each peer's headline latency and TTFT (p50) relative to the kit's (target within 5 %):
    ``kit ÷ peer − 1`` per figure, and the pair servebench ÷ GuideLLM where both ran."""
    kit = c4.get("kit")
    res: dict[str, Any] = {}
    pairs = [("kit", t) for t in c4 if t != "kit"] if kit is not None else []
    if "servebench" in c4 and "guidellm" in c4:
        pairs.append(("servebench", "guidellm"))
    for a, b in pairs:
        key = b if a == "kit" else f"{a}_vs_{b}"
        res[key] = {k: pct(c4[a][k], c4[b][k]) for k in AGREEMENT_KEYS}
        res[key]["latency_and_ttft_within_5pct"] = all(
            res[key][k] is not None and abs(res[key][k]) <= 0.05
            for k in ("latency_p50_s", "ttft_p50_s"))
    return res


def _c4_table(section: dict[str, Any], tools: list[str]) -> list[str]:
    ms = 1000.0
    c4 = section["by_tool"]
    agree = section.get("agreement_with_kit", {})
    lines = [f"Concurrency 4, profile `{section['profile']}` ({section['slots']} slots), "
             f"{section['n']} requests of {section['prompt_tokens']} prompt tokens and "
             f"{section['tokens']} output tokens:", "",
             "| tool | latency p50 ms | TTFT p50 ms | ITL p50 ms | req/s | output tokens | "
             "latency · TTFT · ITL · req/s, kit ÷ tool − 1 |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for tool in tools:
        v = c4[tool]
        a = agree.get(tool)
        diff = ("—" if a is None else " · ".join(signed(a[k]) for k in AGREEMENT_KEYS))
        lines.append(f"| {tool} | {v['latency_p50_s'] * ms:.1f} | {v['ttft_p50_s'] * ms:.1f} | "
                     f"{v['itl_p50_s'] * ms:.2f} | {v['requests_per_s']:.2f} | "
                     f"{v.get('output_tokens_mean', float('nan')):.1f} | {diff} |")
    return lines


def table(result: dict[str, Any]) -> str:
    """The comparison as Markdown tables (README), one per section that ran."""
    tools = result["tools"]
    lines: list[str] = []
    seq = result.get("sequential", {}).get("by_tool")
    c64 = result.get("concurrency_64", {}).get("by_tool")
    if seq or c64:
        lines += [f"| tool | sequential s/request (ideal {IDEAL_S:.2f}) | c=64 req/s | "
                  f"c=64 achieved concurrency | c=64 CPU ms/request |",
                  "| --- | --- | --- | --- | --- |"]
        for tool in tools:
            cells = [f"{seq[tool]['span_per_request_s']:.3f}" if seq else "—"]
            cells += ([f"{c64[tool]['requests_per_s']:,.0f}",
                       f"{c64[tool]['achieved_concurrency']:.1f}",
                       f"{c64[tool]['cpu_ms_per_request']:.3f}"] if c64 else ["—"] * 3)
            lines.append(f"| {tool} | " + " | ".join(cells) + " |")
        lines.append("")
    for key in ("concurrency_4", "concurrency_4_linear"):
        if key in result:
            lines += [*_c4_table(result[key], tools), ""]
    if "poisson" in result:
        import peers_poisson

        lines += [*peers_poisson.table(result["poisson"]), ""]
    load = result["load_before"]
    lines.append(f"Machine: {result.get('machine', {}).get('cpus', '?')} CPUs, load average "
                 f"{load[0]:.2f} before the run and {result['load_after'][0]:.2f} after; "
                 f"simulator and client pinned to separate cores: "
                 f"{result['pinned_to_separate_cores']}. Times in ms.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests")
    parser.add_argument("--tools", default=",".join(TOOLS),
                        help=f"comma-separated, from {', '.join(TOOLS)} (default: all)")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated, from {', '.join(SECTIONS)} (default: all)")
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    args = parser.parse_args(argv)
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = [t for t in tools if t not in TOOLS]
    if unknown or not tools:
        parser.error(f"unknown tool(s) {', '.join(unknown) or '(none)'} — choose from "
                     f"{', '.join(TOOLS)}")
    sections = [x.strip() for x in args.sections.split(",") if x.strip()]
    bad = [x for x in sections if x not in SECTIONS]
    if bad or not sections:
        parser.error(f"unknown section(s) {', '.join(bad) or '(none)'} — choose from "
                     f"{', '.join(SECTIONS)}")
    ensure_venv(tools)
    result = clean(measure(tools, args.quick, tuple(s for s in SECTIONS if s in sections)))
    name = "peers" + ("_quick" if args.quick else "")
    path = write_result(name, result, args.out)
    result["machine"] = json.loads(path.read_text())["machine"]
    md = table(result)
    path.with_suffix(".md").write_text(md, encoding="utf-8")
    print(md)
    print(f"→ {path}")
    return result


if __name__ == "__main__":
    main()
