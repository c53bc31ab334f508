"""``parallel-kit probe``: measure a server (tokens/s, load time, real slots); optionally save
a simulator profile calibrated from the measurements."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._args import add_time_scale, model_name, ranged

if TYPE_CHECKING:
    from ..measure.probe import ProbeResult

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "probe", help="measure a server: tokens/s, load time, real slots")
    p.add_argument("--host", action="append", default=None, metavar="URL",
                   help="the server (default OLLAMA_HOST, or an embedded simulator)")
    p.add_argument("--api", choices=["generate", "openai"], default="generate",
                   help="Ollama's native API, or any OpenAI-compatible server's /v1 "
                        "(llama-server, vLLM, Ollama's /v1): streamed chat/completions")
    p.add_argument("--model", type=model_name, default=None,
                   help="model name (default llama3.2:3b)")
    p.add_argument("--max-k", type=ranged("--max-k"), default=4, metavar="K",
                   help="try up to K overlapping requests (default 4)")
    p.add_argument("--num-predict", type=ranged("--num-predict"), default=None, metavar="T",
                   help="tokens per probe request")
    p.add_argument("--repeats", type=ranged("--repeats"), default=1, metavar="N",
                   help="time the request alone N times: medians, and the service time's "
                        "coefficient of variation (its jitter, kept by --save-profile)")
    add_time_scale(p)
    p.add_argument("--json", default=None, metavar="FILE", help="write the measurements")
    p.add_argument("--save-profile", default=None, metavar="NAME",
                   help="write a simulator profile calibrated from the measurements")
    return p


def run(args: argparse.Namespace) -> int:
    """Probe each ``--host`` (or the default backend), print, save JSON and/or a profile.

    Reads ``args.host`` (list or None), ``model``, ``json``, ``time_scale``, ``max_k``,
    ``num_predict``, ``repeats`` and ``save_profile`` (all optional). Expected errors propagate as
    ``ParallelKitError`` for :func:`parallel_kit.cli.main` to print in one line. ``--json`` is
    checked before the probe and falls back to the temporary folder when it cannot be
    written; Ctrl-C or SIGTERM writes the hosts already probed and exits 130 / 143.
    """
    from ._signals import shutdown_path

    with shutdown_path() as stop:
        return _run(args, stop)


def _run(args: argparse.Namespace, stop: Any) -> int:
    from ..outputs import check_writable, write_or_rescue
    from ._args import unique_hosts

    path = getattr(args, "json", None)
    check_writable([("--json", path)])
    if getattr(args, "host", None):
        args.host = unique_hosts(args.host)
    results: list[ProbeResult] = []
    _, interrupted = stop.run(_probe_backend(args, into=results))
    with stop.deferred():
        for result in results:
            print(result.table())
        if path and results:
            doc = results[0].to_dict()
            if len(results) > 1:
                doc["hosts"] = [r.to_dict() for r in results]

            def write(out: Path) -> Path:
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n",
                               encoding="utf-8")
                return out

            print(f"wrote {write_or_rescue(path, write)}")
    if interrupted:
        print(f"interrupted: {len(results)} server(s) probed"
              + (", written" if path and results else ""), file=sys.stderr)
        return int(stop.exit_code) or 130
    name = getattr(args, "save_profile", None)
    if name:
        from ..measure.calibrate import save_profile

        saved = save_profile(name, results[0])
        print(f"saved simulator profile {name!r} to {saved} — simulate this server with "
              f"`parallel-kit sim --profile {name}` or `bench --profile {name}`")
    return 0


async def _probe_backend(args: argparse.Namespace,
                         into: list[ProbeResult] | None = None) -> list[ProbeResult]:
    """Open the servers like every other command (``open_backend``: a named server, or an
    embedded simulator when none is named and no Ollama answers) and probe each one."""
    from ..config import DEFAULT_MODEL
    from ..measure.probe import DEFAULT_NUM_PREDICT, probe
    from ..servers.backend import open_backend

    named = getattr(args, "model", None)
    model = named or DEFAULT_MODEL
    api = getattr(args, "api", None) or "generate"
    max_k = getattr(args, "max_k", None) or 4
    num_predict = getattr(args, "num_predict", None) or DEFAULT_NUM_PREDICT
    async with open_backend(getattr(args, "host", None), model=model,
                            time_scale=getattr(args, "time_scale", None),
                            announce=print, api=api, model_named=named is not None) as backend:
        results = into if into is not None else []
        for ep in backend.endpoints:
            results.append(await probe(ep.url, backend.model, max_k=max_k,
                                       num_predict=num_predict, time_scale=backend.time_scale,
                                       repeats=getattr(args, "repeats", None) or 1, api=api))
        return results
