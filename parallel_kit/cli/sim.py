"""``parallel-kit sim``: a simulated Ollama in the foreground until Ctrl-C.

Flags left out take their ``OLLAMA_*`` variable, else Ollama's default — the library's
:func:`parallel_kit.sim.settings.sim_settings` decides, so the CLI and Python callers agree.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from typing import Any

from ._args import add_engine, add_time_scale, fraction, non_negative_int, ranged

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser("sim", help="a simulated Ollama in the foreground")
    p.add_argument("--bind", default=None, metavar="ADDR",
                   help="address to listen on (default 127.0.0.1, or OLLAMA_HOST's)")
    p.add_argument("--port", type=ranged("--port"), default=None,
                   help="port (default 11434, or OLLAMA_HOST's; 0 = any free port)")
    p.add_argument("--profile", default="seed", metavar="NAME",
                   help="latency profile (seed = every request 10 s, 1 slot)")
    p.add_argument("--num-parallel", type=ranged("--num-parallel"), default=None, metavar="K",
                   help="slots per model (default OLLAMA_NUM_PARALLEL or 1)")
    p.add_argument("--max-queue", type=ranged("--max-queue"), default=None, metavar="Q",
                   help="requests that may wait for a loading model before 503 (default "
                        "OLLAMA_MAX_QUEUE or 512)")
    add_time_scale(p)
    p.add_argument("--models", default=None, metavar="A,B",
                   help="models the server has (default: the profile's)")
    p.add_argument("--keep-alive", default=None, metavar="DUR",
                   help="how long a model stays loaded after use: 5m, 24h, 3600 (seconds), "
                        "-1 (forever) or 0 (default OLLAMA_KEEP_ALIVE or 5m)")
    p.add_argument("--max-loaded-models", type=non_negative_int, default=None, metavar="N",
                   help="models loaded at once (default OLLAMA_MAX_LOADED_MODELS, else 3 per "
                        "GPU of the profile)")
    p.add_argument("--context-length", type=non_negative_int, default=None, metavar="T",
                   help="default num_ctx (default OLLAMA_CONTEXT_LENGTH, else by the "
                        "profile's GPU memory: 4096 without one)")
    p.add_argument("--cache-ram", type=non_negative_int, default=8192, metavar="MIB",
                   help="llama-server's host-RAM prompt cache in MiB (default 8192, as Ollama "
                        "leaves it; 0 = none)")
    p.add_argument("--no-prompt-cache", action="store_true",
                   help="no prefix reuse at all (real Ollama ≥ 0.30 always reuses; for "
                        "experiments)")
    p.add_argument("--fail-fraction", type=fraction, default=0.0, metavar="P",
                   help="fail this fraction of requests (fault lesson)")
    p.add_argument("--jitter", type=fraction, default=0.0, metavar="J",
                   help="random speed variation, as a fraction (fault lesson)")
    p.add_argument("--stop-after", type=ranged("--stop-after"), default=None, metavar="N",
                   help="stop answering after N requests (fault lesson)")
    add_engine(p)
    return p


def run(args: argparse.Namespace) -> int:
    """Run a simulated Ollama until Ctrl-C (or ``--stop-after``); returns the exit status.

    Reads ``bind, port, profile, num_parallel, max_queue, time_scale, models, keep_alive,
    max_loaded_models, context_length, fail_fraction, jitter, stop_after, engine, gguf,
    threads, num_ctx, llama_server`` from ``args``; missing or None ones take their ``OLLAMA_*`` variable,
    else Ollama's default.

    Raises:
        ConfigError: an unknown engine, a bad setting or variable, a port that cannot be bound,
            a missing GGUF file.
    """
    from ..config import time_scale_from_env
    from ..sim.faults import Faults
    from ..sim.registry import engine_info, make_engine
    from ..sim.server import SimulatedOllama
    from ..sim.settings import sim_settings

    engine_name = engine_info(getattr(args, "engine", None)).name
    settings = sim_settings(
        bind=getattr(args, "bind", None), port=getattr(args, "port", None),
        num_parallel=getattr(args, "num_parallel", None),
        max_queue=getattr(args, "max_queue", None), keep_alive=getattr(args, "keep_alive", None),
        max_loaded_models=getattr(args, "max_loaded_models", None),
        context_length=getattr(args, "context_length", None))
    models_arg = getattr(args, "models", None)
    models = [m.strip() for m in models_arg.split(",") if m.strip()] if models_arg else None
    time_scale = getattr(args, "time_scale", None)
    faults = Faults(fail_fraction=getattr(args, "fail_fraction", None) or 0.0,
                    jitter=getattr(args, "jitter", None) or 0.0,
                    stop_after=getattr(args, "stop_after", None))
    engine = make_engine(engine_name, models=models, gguf=getattr(args, "gguf", None),
                         num_parallel=settings.num_parallel,
                         threads=getattr(args, "threads", None),
                         num_ctx=getattr(args, "num_ctx", None),
                         binary=getattr(args, "llama_server", None),
                         keep_alive_s=settings.keep_alive_s, max_queue=settings.max_queue)
    sim = SimulatedOllama(
        getattr(args, "profile", None) or "seed", num_parallel=settings.num_parallel,
        max_queue=settings.max_queue,
        time_scale=time_scale if time_scale is not None else time_scale_from_env(),
        models=models, keep_alive=settings.keep_alive_s, faults=faults, engine=engine,
        bind=settings.bind, port=settings.port, max_loaded_models=settings.max_loaded_models,
        context_length=settings.context_length,
        cache_ram_mib=getattr(args, "cache_ram", 8192),
        prompt_cache=not getattr(args, "no_prompt_cache", False))

    async def serve() -> None:
        async with sim:
            what = (f"{engine_info(engine_name).label} ({engine_name})" if engine is not None
                    else f"profile {sim.profile.name}")
            print(f"simulated Ollama ({what}, {sim.num_parallel} slot(s) per "
                  f"model, time scale {sim.time_scale:g}) listening on {sim.url} — "
                  f"Ctrl-C to stop", flush=True)
            await sim.wait_halted()
            print(f"simulated Ollama stopped after {faults.stop_after} requests (--stop-after)",
                  file=sys.stderr, flush=True)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
    return 0
