"""The real engine, llama.cpp's llama-server: the kit's measurements beside an independent client,
the slots probe finds, S(k) with repeats, and predicted vs measured makespan.

Two llama-servers on this machine's CPU, Gemma 3 270M, 4 slots each:

* **kit-started**: ``parallel-kit sim --engine llama-server --num-parallel 4`` in a process of its
  own — the kit's Ollama API in front of llama-server started as Ollama ≥ 0.30 starts it;
  measured through the native API;
* **by hand**: the same llama-server binary started directly (``-np 4 -c 4096``), measured
  through its OpenAI-compatible ``/v1`` (``--api openai``: the kit touches no Ollama route).

1. **Agreement** with ``independent_client.py`` (a few dozen lines of httpx, no kit code): the
   same kind of prompts (each client its own, so neither gets the other's prompt cache), the
   same concurrency (4), interleaved rounds (kit, independent, kit, …). Per round the kit's
   mean latency, TTFT, TPOT and output tokens/s ÷ the independent client's; the medians of the
   ratios are reported. Target: each within 3 %.
2. **Slots**: ``probe`` on kit-started servers with ``-np`` 1, 2 and 4 (and the by-hand one
   through ``/v1``): the effective slots it finds.
3. **S(k)** for k = 1…4 on the 4-slot server: ``calibrate.measure_speedup_samples`` with
   ``--repeats`` interleaved tries, medians and min–max.
4. **Prediction**: a profile calibrated from the probe (one request alone, ``--repeats`` tries)
   and the measured S(k); ``--n`` requests at concurrency 1, 2, 4 and 8 through the kit's async
   mode on the 4-slot server; theory's makespan (``theory.predict``, the simulator's step rules)
   ÷ the measured one. Target: within 10 %.

Usage::

    .venv/bin/python benchmarks/real_engine.py [--rounds 5] [--repeats 5] [--n 16]

Writes ``benchmarks/results/real_engine.json`` (``--quick``: fewer rounds and requests, into the
git-ignored ``benchmarks/results/quick/``). Needs the real engine (``make engine``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import independent_client
from _common import ROOT, machine, results_dir, write_result

from parallel_kit import theory
from parallel_kit.bench import compare
from parallel_kit.measure.calibrate import (
    measure_prompts,
    measure_speedup_samples,
    profile_from_probe,
)
from parallel_kit.measure.probe import probe
from parallel_kit.modes.options import QueueOptions
from parallel_kit.records import RequestSpec
from parallel_kit.sim.gguf import default_gguf
from parallel_kit.sim.llama_build import ensure_llama_server
from parallel_kit.sim.llama_server import DEFAULT_MODEL_NAME, server_args
from parallel_kit.system.children import die_with_parent

MODEL = DEFAULT_MODEL_NAME
PYTHON = sys.executable
TOPICS = ["the sea", "a lighthouse", "the weather", "a harbour", "the night shift", "a storm",
          "the tide", "a message in a bottle"]


@contextlib.contextmanager
def kit_server(slots: int, threads: int | None = None) -> Iterator[str]:
    """``parallel-kit sim --engine llama-server`` in a child process; yields its URL.
    ``threads``: llama-server's ``-t`` (default: its own, every core)."""
    cmd = [PYTHON, "-m", "parallel_kit", "sim", "--engine", "llama-server", "--num-parallel",
           str(slots), "--num-ctx", "1024", "--port", "0", "--keep-alive", "-1",
           *(["--threads", str(threads)] if threads else [])]
    with tempfile.TemporaryFile("w+") as log:
        # Killed with this script (even by SIGKILL), so its llama-server goes too.
        proc = subprocess.Popen(die_with_parent(cmd), stdout=subprocess.PIPE, stderr=log,
                                text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
        try:
            assert proc.stdout is not None
            found = re.search(r"listening on (\S+)", proc.stdout.readline())
            if not found:
                log.seek(0)
                raise RuntimeError(f"the kit's server did not start: {log.read()[-800:]}")
            yield found.group(1)
        finally:
            proc.terminate()
            proc.wait(30)


@contextlib.contextmanager
def hand_server(slots: int) -> Iterator[str]:
    """llama-server started directly, as a user would; yields its URL."""
    from parallel_kit.servers.launcher import free_port

    port = free_port()
    args = [*server_args(default_gguf(), port=port, num_parallel=slots, num_ctx=1024),
            "--alias", MODEL]  # the name it serves the model under
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(die_with_parent([str(ensure_llama_server()), *args]),
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            import httpx

            deadline = time.monotonic() + 120
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code \
                            == 200:
                        break
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(f"llama-server did not start: {log.read()[-800:]}")
                time.sleep(0.1)
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(30)


def prompts(tag: str, n: int) -> list[str]:
    """``n`` prompts of the same shape, each starting with a unique tag (no shared cache)."""
    return [f"[{tag}-{i:03d}] Write a short story about {TOPICS[i % len(TOPICS)]}."
            for i in range(n)]


def _means(rows: list[dict[str, float]]) -> dict[str, float]:
    ok = [r for r in rows if r["output_tokens"] > 1]
    span = max(r["end"] for r in rows) - min(r["sent"] for r in rows)
    return {"latency_s": statistics.mean(r["latency_s"] for r in ok),
            "ttft_s": statistics.mean(r["ttft_s"] for r in ok),
            "tpot_s": statistics.mean((r["latency_s"] - r["ttft_s"]) / (r["output_tokens"] - 1)
                                      for r in ok),
            "output_tokens_per_s": sum(r["output_tokens"] for r in rows) / span}


async def kit_round(url: str, api: str, ps: list[str], num_predict: int,
                    concurrency: int) -> dict[str, float]:
    specs = [RequestSpec(p, model=MODEL, num_predict=num_predict, request_id=f"k{i}")
             for i, p in enumerate(ps)]
    # no salt: the prompts are already unique, and both clients must send the same text
    run = (await compare(["async"], specs, hosts=[url], api=api, backend="ollama",
                         model=MODEL, queue=QueueOptions(concurrency=concurrency),
                         salt=False))["async"]
    rows = [r for r in run.requests if r.ok]
    assert len(rows) == len(ps), [r.error for r in run.requests if not r.ok]
    t0 = min(r.submitted_s for r in rows)
    return _means([{"sent": r.submitted_s - t0, "end": r.finished_s - t0,
                    "latency_s": r.latency_s, "ttft_s": r.ttft_s,
                    "output_tokens": r.output_tokens or 0} for r in rows])


async def agreement(url: str, *, kit_api: str, client_api: str, rounds: int, n: int,
                    num_predict: int) -> dict[str, Any]:
    ratios: dict[str, list[float]] = {}
    raw: list[dict[str, Any]] = []
    await independent_client.run(url, prompts("warm", 4), api=client_api, model=MODEL,
                                 num_predict=4, concurrency=4)
    for r in range(rounds):
        kit = await kit_round(url, kit_api, prompts(f"k{r}", n), num_predict, 4)
        ind = _means(await independent_client.run(url, prompts(f"i{r}", n), api=client_api,
                                                  model=MODEL, num_predict=num_predict,
                                                  concurrency=4))
        raw.append({"kit": kit, "independent": ind})
        for key in kit:
            ratios.setdefault(key, []).append(kit[key] / ind[key])
    med = {k: round(statistics.median(v), 4) for k, v in ratios.items()}
    return {"ratio_kit_over_independent_median": med,
            "ratios": {k: [round(x, 4) for x in v] for k, v in ratios.items()},
            "within_3_percent": {k: abs(v - 1) <= 0.03 for k, v in med.items()},
            "rounds": raw}


async def slots_found(num_predict: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for slots in (1, 2, 4):
        with kit_server(slots) as url:
            result = await probe(url, MODEL, max_k=slots + 1 if slots < 4 else 4,
                                 num_predict=num_predict)
            out[f"kit-started -np {slots}"] = result.effective_slots
    return out


async def prediction(url: str, *, repeats: int, n: int, num_predict: int) -> dict[str, Any]:
    alone = await probe(url, MODEL, max_k=1, num_predict=num_predict, repeats=repeats)
    s = await measure_speedup_samples(url, MODEL, (1, 2, 3, 4), num_predict=num_predict,
                                      repeats=repeats)
    fit = await measure_prompts(url, MODEL, repeats=repeats)
    profile = profile_from_probe("llama-server-here", {**alone.to_dict(), "speedup": s.median},
                                 num_parallel=4, output_tokens=(num_predict, num_predict),
                                 prompts=fit)
    rows = []
    for c in (1, 2, 4, 8):
        specs = [RequestSpec(p, model=MODEL, num_predict=num_predict, request_id=f"c{c}-{i}")
                 for i, p in enumerate(prompts(f"c{c}", n))]
        service = theory.service_model_from_profile(profile, specs)
        run = (await compare(["async"], specs, hosts=[url], backend="ollama", model=MODEL,
                             queue=QueueOptions(concurrency=c)))["async"]
        measured = run.summary.makespan_s
        predicted = theory.predict("async", servers=1, slots=4, speedup=profile,
                                   concurrency=c, service=service).makespan_s
        rows.append({"concurrency": c, "measured_s": round(measured, 3),
                     "predicted_s": round(predicted, 3),
                     "measured_over_predicted": round(measured / predicted, 4),
                     "ok": run.summary.ok, "n": run.summary.n})
    return {"speedup": s.to_dict(), "probe_alone": alone.to_dict(), "prompts": fit.to_dict(),
            "rows": rows,
            "within_10_percent": all(abs(r["measured_over_predicted"] - 1) <= 0.10
                                     for r in rows)}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    started = time.time()
    doc: dict[str, Any] = {"what": __doc__.split("\n\n")[0], "machine": machine(),
                           "model": MODEL, "num_predict": args.num_predict,
                           "command": " ".join(["benchmarks/real_engine.py", *args.argv])}
    with kit_server(4) as url:
        doc["agreement_kit_started"] = await agreement(
            url, kit_api="generate", client_api="ollama", rounds=args.rounds, n=args.n,
            num_predict=args.num_predict)
        doc["prediction"] = await prediction(url, repeats=args.repeats, n=args.n,
                                             num_predict=args.num_predict)
    with hand_server(4) as url:
        doc["agreement_by_hand"] = await agreement(
            url, kit_api="openai", client_api="openai", rounds=args.rounds, n=args.n,
            num_predict=args.num_predict)
        by_hand = await probe(url, MODEL, max_k=4, num_predict=args.num_predict, api="openai")
    doc["slots_found"] = {**await slots_found(args.num_predict),
                          "by hand -np 4 (/v1)": by_hand.effective_slots}
    doc["elapsed_s"] = round(time.time() - started, 1)
    doc["machine_after"] = machine()
    return doc


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--num-predict", type=int, default=32)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.quick:
        args.rounds, args.repeats, args.n = 2, 2, 8
    doc = asyncio.run(main_async(args))
    path = write_result("real_engine", doc, results_dir(args.quick, args.out))
    print(f"wrote {path}")
    return doc


if __name__ == "__main__":
    main()
