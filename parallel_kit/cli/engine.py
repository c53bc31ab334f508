"""``parallel-kit engine build|path|check``: the real engine, llama.cpp's llama-server.

``build`` compiles the kit's portable llama-server once (``--force`` rebuilds), ``path`` prints
the binary that ``--engine llama-server`` would run, and ``check`` starts it on the model in a
child process and generates a few tokens: a crash there is one clear line, never a dead Python.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from ._args import add_engine, engine_options

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("engine", help="build, locate or check the real engine (llama-server)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=("build", "path", "check"),
                   help="build: compile llama-server (once); path: print the binary; check: "
                        "generate a few tokens with it")
    p.add_argument("--force", action="store_true", help="build: rebuild even if built")
    add_engine(p)


def run(args: argparse.Namespace) -> int:
    from ..sim import llama_build

    if args.action == "build":
        path = llama_build.build_llama_server(
            force=args.force, log=lambda s: print(s, file=sys.stderr, flush=True))
        print(path)
        return 0
    if args.action == "path":
        print(llama_build.find_llama_server(getattr(args, "llama_server", None)))
        return 0
    return asyncio.run(_check(args))


async def _check(args: argparse.Namespace) -> int:
    from ..sim.llama_server import create_engine
    from ..sim.protocol import Done, EngineError, GenerateRequest

    opts = engine_options(args)
    engine = create_engine(opts.get("gguf"), num_parallel=1, threads=opts.get("threads"),
                           num_ctx=opts.get("num_ctx"), binary=opts.get("binary"))
    text: list[str] = []
    try:
        async for piece in engine.generate(GenerateRequest(
                model=engine.names[0], prompt="The capital of France is", num_predict=8,
                seed=1, options={"temperature": 0.0})):
            if isinstance(piece, Done):
                tok_s = piece.eval_count / max(piece.eval_duration / 1e9, 1e-9)
                print(f"llama-server ok: {engine.binary} ({engine.stats().get('server_version')})"
                      f" generated {piece.eval_count} tokens at {tok_s:.0f} tok/s: "
                      f"{''.join(text)!r}")
            else:
                text.append(piece)
    except EngineError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    finally:
        await engine.aclose()
    return 0
