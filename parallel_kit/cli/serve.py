"""``parallel-kit serve``: the original demo's HTTP API in the foreground until Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from ..modes.registry import modes
from ._args import add_time_scale, positive_int

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    serving = [m for m in modes() if m.serves_api]
    p: argparse.ArgumentParser = sub.add_parser(
        "serve", help="the original demo's HTTP API (/inference, /tasks/{id})")
    p.add_argument("--bind", default="127.0.0.1", metavar="ADDR",
                   help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--host", action="append", default=None, metavar="URL",
                   help="the Ollama server(s) behind the API (default OLLAMA_HOST or embedded)")
    p.add_argument("--model", default=None, help="default model (llama3.2:3b)")
    p.add_argument("--mode", choices=[m.name for m in serving], default="async",
                   help="what sends the requests: "
                        + "; ".join(f"{m.name}: {m.description}" for m in serving))
    p.add_argument("--concurrency", type=positive_int, default=None, metavar="C",
                   help="requests sent to Ollama at once (default MAX_CONCURRENT_REQUESTS=5)")
    p.add_argument("--gpus", type=positive_int, default=None, metavar="W",
                   help="embedded servers to start for pool/ray when no --host is given")
    p.add_argument("--profile", default=None, metavar="NAME",
                   help="simulator profile for embedded servers")
    add_time_scale(p)
    p.add_argument("--ray-address", default=None, metavar="ADDR")
    return p


def run(args: argparse.Namespace) -> int:
    """Serve the API until Ctrl-C; the port is bound first, so a taken one fails at once.

    Raises:
        ConfigError: a port that cannot be bound, a mode that cannot serve, bad hosts.
    """
    from ..api import ApiSettings, bind_warning, create_app, open_api_backend, uvicorn_server
    from ..config import max_concurrent_from_env
    from ..netutil import listen, socket_url

    settings = ApiSettings(concurrency=args.concurrency or max_concurrent_from_env(),
                           mode=args.mode)
    bind = args.bind or "127.0.0.1"
    warning = bind_warning(bind, settings.api_key)
    if warning:
        print(warning, file=sys.stderr)
    sock = listen(bind, args.port, what="API")

    async def serve() -> None:
        async with open_api_backend(
                args.host, mode=args.mode, model=args.model, concurrency=settings.concurrency,
                gpus=args.gpus, profile=args.profile, time_scale=args.time_scale,
                ray_address=getattr(args, "ray_address", None),
                announce=lambda msg: print(msg, file=sys.stderr)) as backend:
            url = socket_url(sock)
            print(f"parallel-kit API at {url} (docs: {url}/docs), {settings.concurrency} "
                  f"request(s) to Ollama at once — Ctrl-C stops", file=sys.stderr)
            await uvicorn_server(create_app(backend, settings), log_level="info").serve(
                sockets=[sock])

    try:
        asyncio.run(serve())
    finally:
        sock.close()
    return 0
