"""``parallel-kit serve``: the original demo's HTTP API in the foreground until Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from ..modes.registry import modes
from ._args import (
    add_flags,
    add_stack_args,
    add_time_scale,
    ranged,
    serve_options,
    stack_options,
    unique_hosts,
)

__all__ = ["add_parser", "run"]


#: The ``limits`` group: each flag, its default, metavar and help.
_LIMITS: tuple[tuple[str, float, str, str], ...] = (
    ("--max-num-predict", 4096, "T", "output tokens one request may ask for; more, or unbounded "
                                     "(< 0), is refused with 422 (default 4096)"),
    ("--max-held-mb", 256, "MB", "MiB of prompts queued and running tasks hold at once; past it "
                                 "429 (default 256)"),
    ("--max-kept-mb", 256, "MB", "MiB of finished tasks kept for GET /tasks/{id}, oldest "
                                 "forgotten first (default 256; production: results live in "
                                 "Redis for a day instead)"),
    ("--max-request-s", 600.0, "S", "clock seconds one request may run before it fails "
                                    "(default 600)"),
    ("--max-queued", 10_000, "N", "tasks that may wait; past it 503 (default 10000)"),
    ("--shutdown-timeout-s", 10.0, "S", "clock seconds accepted tasks get to finish at "
                                        "Ctrl-C/SIGTERM; a second Ctrl-C stops at once "
                                        "(default 10)"),
)


def add_parser(sub: Any) -> argparse.ArgumentParser:
    serving = [m for m in modes() if m.serves_api]
    p: argparse.ArgumentParser = sub.add_parser(
        "serve", help="the original demo's HTTP API (/inference, /tasks/{id})")
    p.add_argument("--bind", default="127.0.0.1", metavar="ADDR",
                   help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=ranged("--port"), default=8000, help="port (default 8000)")
    p.add_argument("--host", action="append", default=None, metavar="URL",
                   help="the Ollama server(s) behind the API (default OLLAMA_HOST or embedded)")
    add_flags(p, {"--model": "default model (llama3.2:3b)"})
    p.add_argument("--mode", choices=[m.name for m in serving], default="async",
                   help="what sends the requests: "
                        + "; ".join(f"{m.name}: {m.description}" for m in serving))
    add_flags(p, {
        "--concurrency": "requests sent to Ollama at once (default MAX_CONCURRENT_REQUESTS=5)",
        "--gpus": "embedded servers to start for pool/ray when no --host is given",
        "--profile": "simulator profile for embedded servers"})
    add_time_scale(p)
    p.add_argument("--ray-address", default=None, metavar="ADDR")
    add_stack_args(p)
    p.add_argument("--serve-app", default=None, metavar="NAME",
                   help="production with --workers 0: only an API process, in front of the "
                        "Serve application NAME of a stack that runs already (needs --redis)")
    limits = p.add_argument_group(
        "limits", "what the API holds and does at most; each refusal is a 4xx naming the "
                  "limit (--mode production: decided in Redis for every API process of the "
                  "stack; --max-request-s is the workers' request timeout)")
    for flag, default, metavar, text in _LIMITS:
        limits.add_argument(flag, type=ranged(flag), default=default, metavar=metavar, help=text)
    return p


def run(args: argparse.Namespace) -> int:
    """Serve the API until Ctrl-C; the port is bound first, so a taken one fails at once.

    Raises:
        ConfigError: a port that cannot be bound, a mode that cannot serve, bad hosts.
    """
    from ..api import ApiSettings, bind_warning, create_app, open_api_backend, uvicorn_server
    from ..config import max_concurrent_from_env

    args.host = unique_hosts(args.host)  # an address that is not one, or a repeat: one line
    from ..system.netutil import listen, socket_url

    mib = 1024 * 1024
    settings = ApiSettings(concurrency=args.concurrency or max_concurrent_from_env(),
                           mode=args.mode, max_num_predict=args.max_num_predict,
                           max_held_bytes=args.max_held_mb * mib,
                           max_kept_bytes=args.max_kept_mb * mib,
                           max_request_s=args.max_request_s, max_queued=args.max_queued,
                           shutdown_timeout_s=args.shutdown_timeout_s)
    bind = args.bind or "127.0.0.1"
    warning = bind_warning(bind, settings.api_key)
    if warning:
        print(warning, file=sys.stderr)
    sock = listen(bind, args.port, what="API")
    if args.mode == "production":
        try:
            signals = asyncio.run(_serve_production(args, sock, settings))
        except KeyboardInterrupt:  # Ctrl-C while the stack came up (the server handles later)
            print("parallel-kit serve: stopped", file=sys.stderr)
            return 130
        finally:
            sock.close()
        return 130 if signals else 0

    async def serve() -> None:
        async with open_api_backend(
                args.host, mode=args.mode, model=args.model, concurrency=settings.concurrency,
                gpus=args.gpus, profile=args.profile, time_scale=args.time_scale,
                ray_address=getattr(args, "ray_address", None),
                announce=lambda msg: print(msg, file=sys.stderr)) as backend:
            url = socket_url(sock)
            print(f"parallel-kit API at {url} (docs: {url}/docs), {settings.concurrency} "
                  f"request(s) to Ollama at once — Ctrl-C stops", file=sys.stderr)
            server = uvicorn_server(create_app(backend, settings), log_level="info")
            await server.serve(sockets=[sock])
            stopped_by_signal.append(server.signals > 0)

    stopped_by_signal: list[bool] = []
    try:
        asyncio.run(serve())
    except KeyboardInterrupt:  # Ctrl-C before the server was up (it handles its own after)
        print("parallel-kit serve: stopped", file=sys.stderr)
        return 130
    finally:
        sock.close()
    return 130 if any(stopped_by_signal) else 0  # 130: the shell's code for Ctrl-C


async def _serve_production(args: argparse.Namespace, sock: Any, settings: Any) -> int:
    """``serve --mode production``: the stack (or only an API process) on ``sock``; the
    number of signals that stopped it."""
    from dataclasses import replace

    from ..config import DEFAULT_MODEL, Endpoint, time_scale_from_env
    from ..modes.base import ModeContext, RayOptions, ServerOptions
    from ..production.api import serve_production
    from ..production.stack import import_production

    import_production()
    scale = args.time_scale or time_scale_from_env(1.0)
    hosts = list(args.host or [])
    servers = ServerOptions() if hosts else ServerOptions(launch="auto", profile=args.profile)
    ctx = ModeContext([Endpoint(h) for h in hosts], backend="ollama" if hosts else "sim",
                      time_scale=scale, model=args.model or DEFAULT_MODEL,
                      gpus=args.gpus or (len(hosts) if hosts else 3), servers=servers,
                      ray=RayOptions(address=args.ray_address), serve=serve_options(args),
                      stack=replace(stack_options(args),
                                    announce=lambda m: print(m, file=sys.stderr)))
    print(f"parallel-kit API (production) at {socket_url_of(sock)} — Ctrl-C stops",
          file=sys.stderr)
    return await serve_production(sock, ctx, settings=settings, serve_app=args.serve_app,
                                  announce=lambda m: print(m, file=sys.stderr))


def socket_url_of(sock: Any) -> str:
    from ..system.netutil import socket_url

    return str(socket_url(sock))
