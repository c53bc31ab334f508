"""What ``peers.py`` and ``peers_poisson.py`` share: the model, the prompts, the peers' venv,
running a tool on a pinned core, GuideLLM's runs and figures, and the comparisons' arithmetic."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import ROOT

HERE = Path(__file__).resolve().parent
VENV = HERE / ".peers-venv"
PEER_PACKAGES = {"guidellm": "guidellm==0.8.1", "servebench": "servebench==1.1.3"}
MODEL = "llama3.2:3b"
TOKENS = 32
#: the concurrency-4 comparison's server (the profile of the first side-by-side comparison)
C4_PROFILE = "rtx4090"


def venv_bin(name: str) -> Path:
    return VENV / "bin" / name


#: filler that makes a prompt long (≈ 1 token per 4 characters in the simulator)
_FILLER = ("Light from the sun is scattered by the molecules of the air, and shorter "
           "wavelengths scatter more than longer ones. ")


def prompt(i: int, long: bool) -> str:
    """Prompt ``i``: a short question, or the same with ≈ 600 tokens of context."""
    head = f"Why is the sky blue? ({i})"
    return head + (" " + _FILLER * 20).rstrip() if long else head


def prompt_lines(folder: Path, n: int, long: bool) -> Path:
    path = folder / f"prompts_{n}_{int(long)}.txt"
    path.write_text("".join(prompt(i, long) + "\n" for i in range(n)), encoding="utf-8")
    return path


def pin(core: int | None) -> Callable[[], None] | None:
    if core is None:
        return None
    return lambda: os.sched_setaffinity(0, {core})


def run_tool(cmd: list[str], core: int | None, env: dict[str, str] | None = None,
         timeout: float = 900.0) -> tuple[float, float]:
    """Run ``cmd``; returns (CPU seconds of its process tree, wall seconds)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                          preexec_fn=pin(core), cwd=ROOT)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{Path(cmd[0]).name} failed ({proc.returncode}): "
                           f"{(proc.stderr or proc.stdout)[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall


def prompts_file(folder: Path, n: int, tokens: int, long: bool) -> Path:
    path = folder / f"prompts_{n}_{tokens}_{int(long)}.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            fh.write(json.dumps({"prompt": prompt(i, long),
                                 "output_tokens_count": tokens}) + "\n")
    return path


def guidellm_raw(url: str, n: int, tokens: int, folder: Path, core: int | None, long: bool,
                 profile: dict[str, Any], tag: str, settings: dict[str, str] | None = None
                 ) -> tuple[float, float, dict[str, Any]]:
    """Run GuideLLM once (``profile``: its scenario's profile, e.g. ``{"kind": "poisson",
    "rate": 4.5}``; ``settings``: extra ``GUIDELLM__*`` environment variables); returns (CPU
    seconds, wall seconds, its benchmark's JSON)."""
    out = folder / f"guidellm_{tag}.json"
    scenario = folder / f"guidellm_{tag}.scenario.json"
    scenario.write_text(json.dumps({"spec": {
        "backend": {"kind": "openai_http", "target": url, "model": MODEL,
                    "request_format": "/v1/chat/completions", "validate_backend": False,
                    # Ollama's /v1 (and the simulator) read max_tokens, not the
                    # max_completion_tokens GuideLLM's chat requests carry.
                    "extras": {"body": {"max_tokens": tokens}}},
        "profile": profile,
        "data": [{"kind": "json_file", "path": str(prompts_file(folder, n, tokens, long))}],
        "constraints": [{"kind": "max_requests", "count": n}]}}))
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               HF_DATASETS_OFFLINE="1", **(settings or {}))
    cmd = [str(venv_bin("guidellm")), "run", "--scenario", str(scenario), "--disable-progress",
           "--output", f"kind=json,path={out}"]
    cpu, wall = run_tool(cmd, core, env)
    return cpu, wall, json.loads(out.read_text())["benchmarks"][0]


def guidellm_stat(b: dict[str, Any], name: str, key: str, scale: float = 1.0) -> float:
    """One of GuideLLM's own summary figures (``key``: ``p50`` or ``mean``), × ``scale``."""
    ok = b["metrics"][name]["successful"]
    value = ok["percentiles"]["p50"] if key == "p50" else ok[key]
    return float(value) * scale


def warm(url: str) -> None:
    """One request, so the model's load time falls on nobody's measurement."""
    import httpx

    body = {"model": MODEL, "prompt": "hi", "stream": False, "options": {"num_predict": 1}}
    httpx.post(f"{url}/api/generate", json=body, timeout=60).raise_for_status()


def pct(a: float | None, b: float | None) -> float | None:
    """``a / b − 1`` (None when either is missing or ``b`` is 0)."""
    if a is None or b is None or not b or a != a or b != b:
        return None
    return a / b - 1.0


def signed(x: float | None) -> str:
    return "—" if x is None else f"{x * 100:+.1f} %"
