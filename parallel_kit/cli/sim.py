"""``parallel-kit sim``: a simulated Ollama in the foreground until Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from typing import Any
from urllib.parse import urlsplit

from ..errors import ConfigError
from ._args import add_engine, add_time_scale, fraction, ranged

__all__ = ["add_parser", "listen_address", "run"]


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
    p.add_argument("--max-queue", type=ranged("--max-queue"), default=512, metavar="Q",
                   help="requests that may wait for a loading model before 503 (default 512)")
    add_time_scale(p)
    p.add_argument("--models", default=None, metavar="A,B",
                   help="models the server has (default: the profile's)")
    p.add_argument("--keep-alive", default="5m", metavar="DUR",
                   help="how long a model stays loaded after use (default 5m)")
    p.add_argument("--fail-fraction", type=fraction, default=0.0, metavar="P",
                   help="fail this fraction of requests (fault lesson)")
    p.add_argument("--jitter", type=fraction, default=0.0, metavar="J",
                   help="random speed variation, as a fraction (fault lesson)")
    p.add_argument("--stop-after", type=ranged("--stop-after"), default=None, metavar="N",
                   help="stop answering after N requests (fault lesson)")
    add_engine(p)
    return p


def listen_address(args: argparse.Namespace) -> tuple[str, int]:
    """``--bind``/``--port``; where one is not given (None), ``OLLAMA_HOST`` as Ollama reads it,
    else 127.0.0.1:11434.

    Raises:
        ConfigError: an ``OLLAMA_HOST`` with a bad port.
    """
    bind, port = getattr(args, "bind", None), getattr(args, "port", None)
    env = os.environ.get("OLLAMA_HOST", "").strip()
    env_host, env_port = "127.0.0.1", 11434
    if env and (bind is None or port is None):
        parts = urlsplit(env if "://" in env else f"http://{env}")
        env_host = parts.hostname or env_host
        try:
            env_port = parts.port or env_port
        except ValueError:
            raise ConfigError(f"OLLAMA_HOST={env!r} has a bad port — write it like "
                              f"127.0.0.1:11434") from None
    return (bind if bind is not None else env_host), (port if port is not None else env_port)


def run(args: argparse.Namespace) -> int:
    """Run a simulated Ollama until Ctrl-C (or ``--stop-after``); returns the exit status.

    Reads ``bind, port, profile, num_parallel, max_queue, time_scale, models, keep_alive,
    fail_fraction, jitter, stop_after, engine, gguf, threads_per_slot`` from ``args`` (missing
    ones take their defaults).

    Raises:
        ConfigError: an unknown engine, a port that cannot be bound, a missing GGUF file.
    """
    from ..backend import make_engine
    from ..config import int_from_env, time_scale_from_env
    from ..sim.engine import parse_keep_alive
    from ..sim.faults import Faults
    from ..sim.server import SimulatedOllama

    engine_name = getattr(args, "engine", None) or "sim"
    if engine_name not in ("sim", "llama-cpp"):
        raise ConfigError(f"unknown --engine {engine_name!r} — choose sim or llama-cpp")
    bind, port = listen_address(args)
    models_arg = getattr(args, "models", None)
    models = [m.strip() for m in models_arg.split(",") if m.strip()] if models_arg else None
    time_scale = getattr(args, "time_scale", None)
    max_queue = getattr(args, "max_queue", None)
    if max_queue is None:
        max_queue = int_from_env("OLLAMA_MAX_QUEUE", 512)
        max_queue = 512 if max_queue is None else max_queue
    keep_alive = getattr(args, "keep_alive", None) or os.environ.get("OLLAMA_KEEP_ALIVE") or "5m"
    faults = Faults(fail_fraction=getattr(args, "fail_fraction", None) or 0.0,
                    jitter=getattr(args, "jitter", None) or 0.0,
                    stop_after=getattr(args, "stop_after", None))
    engine = None
    if engine_name != "sim":
        opts: dict[str, Any] = {"gguf": getattr(args, "gguf", None),
                                "threads_per_slot": getattr(args, "threads_per_slot", None),
                                "keep_alive_s": parse_keep_alive(keep_alive),
                                "max_queue": max_queue}
        if models:
            opts["models"] = models
        engine = make_engine(engine_name, opts, slots=getattr(args, "num_parallel", None))
    sim = SimulatedOllama(
        getattr(args, "profile", None) or "seed", num_parallel=getattr(args, "num_parallel", None),
        max_queue=max_queue,
        time_scale=time_scale if time_scale is not None else time_scale_from_env(),
        models=models, keep_alive=keep_alive, faults=faults, engine=engine, bind=bind, port=port)

    async def serve() -> None:
        async with sim:
            what = (f"real model on the CPU ({engine_name})" if engine is not None else
                    f"profile {sim.profile.name}")
            print(f"simulated Ollama ({what}, {sim.num_parallel} slot(s) per "
                  f"model, time scale {sim.time_scale:g}) listening on {sim.url} — "
                  f"Ctrl-C to stop", flush=True)
            await sim.wait_halted()
            print(f"simulated Ollama stopped after {faults.stop_after} requests (--stop-after)",
                  file=sys.stderr, flush=True)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
    return 0
