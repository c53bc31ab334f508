"""Peers: the kit beside GuideLLM and servebench, on the same simulated server, in one run.

Every tool talks to the same simulated Ollama's OpenAI-compatible API (``/v1/chat/completions``,
streaming), each as a process of its own pinned to one core while the simulator has another:

1. **sequential** — one request at a time, 32 output tokens at 100 tokens/s: seconds per request
   against the ideal 0.32 s (the server's own time; the rest is the client and the loopback);
2. **concurrency 4** — 100 requests of ≈ 600 prompt tokens and 32 output tokens on the
   ``rtx4090`` profile with 4 slots (≈ 60 ms of prefill, so the first token's time is not just
   the phase of the decode steps): latency, TTFT and ITL (p50 and mean, seconds) and
   requests/s — the headline figures, which should agree across tools when the definitions
   match (docs/METRICS.md);
3. **concurrency 64** — against a zero-latency server, one output token: requests/s and the
   client's CPU per request. CPU is the tool's process tree's user + system time
   (``RUSAGE_CHILDREN``), measured at two request counts and differenced, so start-up and
   imports cancel out: (CPU(n₂) − CPU(n₁)) ÷ (n₂ − n₁).

The peers live in their own virtual environment, ``benchmarks/.peers-venv`` (git-ignored),
created on first use with pip from PyPI (``guidellm==0.8.1``, ``servebench==1.1.3``); nothing is
fetched at run time (GuideLLM reads the prompts from a local JSONL file; no tokenizer is
downloaded). Not part of ``make test``: a run takes a few minutes.

Usage: ``.venv/bin/python benchmarks/peers.py [--quick] [--tools kit,servebench,guidellm]``
Writes ``results/peers[_quick].json`` and ``results/peers[_quick].md`` (the README's table).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    PYTHON,
    ROOT,
    STEADY_PROFILE,
    ZERO_PROFILE,
    SimFarm,
    clean,
    machine,
    write_result,
)

HERE = Path(__file__).resolve().parent
VENV = HERE / ".peers-venv"
PEER_PACKAGES = {"guidellm": "guidellm==0.8.1", "servebench": "servebench==1.1.3"}
MODEL = "llama3.2:3b"
TOKENS = 32
#: STEADY_PROFILE decodes 100 tokens/s per stream, whatever the number of streams
IDEAL_S = TOKENS / 100.0
TOOLS = ("kit", "servebench", "guidellm")
#: the concurrency-4 comparison's server (the profile of the first side-by-side comparison)
C4_PROFILE = "rtx4090"

# -- the peers' venv -----------------------------------------------------------------------------


def venv_bin(name: str) -> Path:
    return VENV / "bin" / name


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
from parallel_kit.records import RequestSpec
url, c, tokens, prompts, out, model = sys.argv[1:7]
lines = open(prompts, encoding="utf-8").read().splitlines()
specs = [RequestSpec(p, num_predict=int(tokens)) for p in lines]
ctx = ModeContext(endpoints=[Endpoint(url, slots=64)], queue=QueueOptions(concurrency=int(c)),
                  model=model, api="openai")
run = asyncio.run(run_async(specs, ctx))
json.dump(run.to_dict(), open(out, "w"))
"""

#: filler that makes a prompt long (≈ 1 token per 4 characters in the simulator)
_FILLER = ("Light from the sun is scattered by the molecules of the air, and shorter "
           "wavelengths scatter more than longer ones. ")


def prompt(i: int, long: bool) -> str:
    """Prompt ``i``: a short question, or the same with ≈ 600 tokens of context."""
    head = f"Why is the sky blue? ({i})"
    return head + (" " + _FILLER * 20).rstrip() if long else head


def _prompt_lines(folder: Path, n: int, long: bool) -> Path:
    path = folder / f"prompts_{n}_{int(long)}.txt"
    path.write_text("".join(prompt(i, long) + "\n" for i in range(n)), encoding="utf-8")
    return path


def _pin(core: int | None) -> Callable[[], None] | None:
    if core is None:
        return None
    return lambda: os.sched_setaffinity(0, {core})


def _run(cmd: list[str], core: int | None, env: dict[str, str] | None = None,
         timeout: float = 900.0) -> tuple[float, float]:
    """Run ``cmd``; returns (CPU seconds of its process tree, wall seconds)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                          preexec_fn=_pin(core), cwd=ROOT)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{Path(cmd[0]).name} failed ({proc.returncode}): "
                           f"{(proc.stderr or proc.stdout)[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall


def _prompts_file(folder: Path, n: int, tokens: int, long: bool) -> Path:
    path = folder / f"prompts_{n}_{tokens}_{int(long)}.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            fh.write(json.dumps({"prompt": prompt(i, long),
                                 "output_tokens_count": tokens}) + "\n")
    return path


def run_kit(url: str, n: int, c: int, tokens: int, folder: Path, core: int | None,
            long: bool = False) -> dict[str, Any]:
    out = folder / f"kit_{n}_{c}_{tokens}.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cpu, wall = _run([PYTHON, "-c", _KIT_SNIPPET, url, str(c), str(tokens),
                      str(_prompt_lines(folder, n, long)), str(out), MODEL], core, env)
    s = json.loads(out.read_text())["summary"]
    return {"cpu_s": cpu, "wall_s": wall, "ok": s["ok"], "requests_per_s": s["throughput_rps"],
            "latency_p50_s": s["latency_p50_s"], "latency_mean_s": s["latency_mean_s"],
            "ttft_p50_s": s["ttft_p50_s"], "ttft_mean_s": s["ttft_mean_s"],
            "itl_p50_s": s["itl_p50_s"], "itl_mean_s": s["itl_mean_s"],
            "tpot_mean_s": s["tpot_mean_s"],
            "span_per_request_s": s["makespan_s"] / max(s["ok"], 1),
            "achieved_concurrency": s["achieved_concurrency"]}


def run_servebench(url: str, n: int, c: int, tokens: int, folder: Path, core: int | None,
                   long: bool = False) -> dict[str, Any]:
    out = folder / f"servebench_{n}_{c}_{tokens}.json"
    prompts = _prompt_lines(folder, n, long)
    cmd = [str(venv_bin("servebench")), "run", "--url", f"{url}/v1", "--model", MODEL,
           "--concurrency", str(c), "--num-requests", str(n), "--output-len", str(tokens),
           "--prompts", str(prompts), "--warmup", "0", "--seed", "1", "--out", str(out)]
    cpu, wall = _run(cmd, core)
    level = json.loads(out.read_text())["levels"][0]
    s, reqs = level["summary"], [r for r in level["requests"] if r.get("ok")]
    e2e = sorted(r["e2e"] for r in reqs if r.get("e2e") is not None)
    starts = [r["start"] for r in reqs]
    ends = [r["start"] + r["e2e"] for r in reqs if r.get("e2e") is not None]
    return {"cpu_s": cpu, "wall_s": wall, "ok": s["completed"],
            "requests_per_s": s["request_throughput"],
            "latency_p50_s": _median(e2e), "latency_mean_s": sum(e2e) / len(e2e),
            "ttft_p50_s": s["ttft"]["p50"], "ttft_mean_s": s["ttft"]["mean"],
            "itl_p50_s": s["itl"]["p50"], "itl_mean_s": s["itl"]["mean"],
            "tpot_mean_s": s["tpot"]["mean"],
            "span_per_request_s": (max(ends) - min(starts)) / max(len(reqs), 1),
            "achieved_concurrency": sum(e2e) / (max(ends) - min(starts))}


def run_guidellm(url: str, n: int, c: int, tokens: int, folder: Path, core: int | None,
                 long: bool = False) -> dict[str, Any]:
    out = folder / f"guidellm_{n}_{c}_{tokens}.json"
    scenario = folder / f"guidellm_{n}_{c}_{tokens}.scenario.json"
    profile = ({"kind": "synchronous"} if c == 1 else {"kind": "concurrent", "streams": c})
    scenario.write_text(json.dumps({"spec": {
        "backend": {"kind": "openai_http", "target": url, "model": MODEL,
                    "request_format": "/v1/chat/completions", "validate_backend": False},
        "profile": profile,
        "data": [{"kind": "json_file", "path": str(_prompts_file(folder, n, tokens, long))}],
        "constraints": [{"kind": "max_requests", "count": n}]}}))
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               HF_DATASETS_OFFLINE="1")
    cmd = [str(venv_bin("guidellm")), "run", "--scenario", str(scenario), "--disable-progress",
           "--output", f"kind=json,path={out}"]
    cpu, wall = _run(cmd, core, env)
    b = json.loads(out.read_text())["benchmarks"][0]
    m = b["metrics"]

    def stat(name: str, key: str, scale: float = 1.0) -> float:
        ok = m[name]["successful"]
        value = ok["percentiles"]["p50"] if key == "p50" else ok[key]
        return float(value) * scale

    count = int(m["request_latency"]["successful"]["count"])
    return {"cpu_s": cpu, "wall_s": wall, "ok": count,
            "requests_per_s": count / float(b["duration"]),
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


def _median(values: list[float]) -> float:
    v = sorted(values)
    if not v:
        return float("nan")
    mid = len(v) // 2
    return v[mid] if len(v) % 2 else (v[mid - 1] + v[mid]) / 2


# -- the three measurements ------------------------------------------------------------------------


def measure(tools: list[str], quick: bool) -> dict[str, Any]:
    pinned = hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2
    client_core = 1 if pinned else None
    n_seq, n_c4 = (5, 40) if quick else (10, 100)
    n_small, n_big = (100, 600) if quick else (300, 2000)
    out: dict[str, Any] = {"tools": tools, "pinned_to_separate_cores": pinned,
                           "load_before": machine()["load_avg_1_5_15"]}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        with SimFarm(1, profile=STEADY_PROFILE) as farm:
            if pinned:
                os.sched_setaffinity(farm.pid, {0})
            url = farm.urls[0]
            seq = {}
            for tool in tools:
                print(f"  {tool}: sequential …", flush=True)
                seq[tool] = RUNNERS[tool](url, n_seq, 1, TOKENS, folder, client_core)
            out["sequential"] = {"n": n_seq, "tokens": TOKENS, "profile": STEADY_PROFILE,
                                 "ideal_s_per_request": IDEAL_S, "by_tool": seq}
        with SimFarm(1, profile=C4_PROFILE, slots=4) as farm:
            if pinned:
                os.sched_setaffinity(farm.pid, {0})
            url = farm.urls[0]
            _warm(url)
            c4 = {}
            for tool in tools:
                print(f"  {tool}: concurrency 4 …", flush=True)
                c4[tool] = RUNNERS[tool](url, n_c4, 4, TOKENS, folder, client_core, True)
            out["concurrency_4"] = {"n": n_c4, "tokens": TOKENS, "profile": C4_PROFILE,
                                    "slots": 4, "prompt_tokens": "≈ 600", "by_tool": c4}
        with SimFarm(1, profile=ZERO_PROFILE, slots=64) as farm:
            if pinned:
                os.sched_setaffinity(farm.pid, {0})
            url = farm.urls[0]
            c64: dict[str, Any] = {}
            for tool in tools:
                print(f"  {tool}: concurrency 64, {n_small} and {n_big} requests …", flush=True)
                small = RUNNERS[tool](url, n_small, 64, 1, folder, client_core)
                big = RUNNERS[tool](url, n_big, 64, 1, folder, client_core)
                c64[tool] = {
                    "cpu_ms_per_request": (big["cpu_s"] - small["cpu_s"]) / (n_big - n_small)
                    * 1000,
                    "requests_per_s": big["requests_per_s"],
                    "achieved_concurrency": big["achieved_concurrency"],
                    "runs": {str(n_small): small, str(n_big): big}}
            out["concurrency_64"] = {"n": [n_small, n_big], "tokens": 1, "by_tool": c64}
    out["load_after"] = machine()["load_avg_1_5_15"]
    out["agreement_with_kit"] = _agreement(out["concurrency_4"]["by_tool"])
    return out


def _warm(url: str) -> None:
    """One request, so the model's load time falls on nobody's measurement."""
    import httpx

    body = {"model": MODEL, "prompt": "hi", "stream": False, "options": {"num_predict": 1}}
    httpx.post(f"{url}/api/generate", json=body, timeout=60).raise_for_status()


def _agreement(c4: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Each peer's headline latency and TTFT (p50) relative to the kit's (target within 5 %)."""
    kit = c4.get("kit")
    if kit is None:
        return {}
    res: dict[str, Any] = {}
    for tool, v in c4.items():
        if tool == "kit":
            continue
        res[tool] = {k: (kit[k] / v[k] - 1.0) if v[k] else None
                     for k in ("latency_p50_s", "ttft_p50_s", "itl_p50_s", "requests_per_s")}
        res[tool]["latency_and_ttft_within_5pct"] = all(
            res[tool][k] is not None and abs(res[tool][k]) <= 0.05
            for k in ("latency_p50_s", "ttft_p50_s"))
    return res


def table(result: dict[str, Any]) -> str:
    """The comparison as a Markdown table (README)."""
    seq = result["sequential"]["by_tool"]
    c4 = result["concurrency_4"]["by_tool"]
    c64 = result["concurrency_64"]["by_tool"]
    ms = 1000.0
    lines = [
        f"| tool | sequential s/request (ideal {IDEAL_S:.2f}) | c=4 latency p50 ms | "
        f"c=4 TTFT p50 ms | c=4 ITL p50 ms | c=4 req/s | c=64 req/s | c=64 achieved "
        f"concurrency | c=64 CPU ms/request |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for tool in result["tools"]:
        lines.append(
            f"| {tool} | {seq[tool]['span_per_request_s']:.3f} | "
            f"{c4[tool]['latency_p50_s'] * ms:.0f} | {c4[tool]['ttft_p50_s'] * ms:.1f} | "
            f"{c4[tool]['itl_p50_s'] * ms:.2f} | {c4[tool]['requests_per_s']:.1f} | "
            f"{c64[tool]['requests_per_s']:,.0f} | {c64[tool]['achieved_concurrency']:.1f} | "
            f"{c64[tool]['cpu_ms_per_request']:.3f} |")
    load = result["load_before"]
    lines.append("")
    lines.append(f"Machine: {result.get('machine', {}).get('cpus', '?')} CPUs, load average "
                 f"{load[0]:.2f} before the run and {result['load_after'][0]:.2f} after; "
                 f"simulator and client pinned to separate cores: "
                 f"{result['pinned_to_separate_cores']}.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests")
    parser.add_argument("--tools", default=",".join(TOOLS),
                        help=f"comma-separated, from {', '.join(TOOLS)} (default: all)")
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    args = parser.parse_args(argv)
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = [t for t in tools if t not in TOOLS]
    if unknown or not tools:
        parser.error(f"unknown tool(s) {', '.join(unknown) or '(none)'} — choose from "
                     f"{', '.join(TOOLS)}")
    ensure_venv(tools)
    result = clean(measure(tools, args.quick))
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
