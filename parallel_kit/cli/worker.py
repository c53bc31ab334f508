"""``parallel-kit worker``: one Celery worker of the production stack, in the foreground.

Start workers by hand on any machine that reaches the stack's Redis and its Ray cluster (the
kit starts them itself for ``bench``/``demo``/``serve --mode production``).
"""

from __future__ import annotations

import argparse
from typing import Any

from ._args import ranged

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "worker", help="a Celery worker of the production stack (takes tasks from Redis, "
                       "calls Ray Serve)")
    p.add_argument("--redis", default=None, metavar="URL",
                   help="the stack's Redis (default PARALLEL_KIT_REDIS_URL)")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="the Ray cluster that runs the Serve application (default RAY_ADDRESS)")
    p.add_argument("--concurrency", type=ranged("--worker-concurrency"), default=8, metavar="C",
                   help="tasks this worker runs at once (threads; default 8)")
    p.add_argument("--name", default=None, help="Celery hostname (default: generated)")
    return p


def run(args: argparse.Namespace) -> int:
    """Run the worker until SIGTERM/Ctrl-C (Celery's warm shutdown).

    Raises:
        ConfigError: no Redis or Ray address; Redis unreachable or not Redis.
        MissingDependency: the production extra is missing.
    """
    from ..production.stack import import_production

    import_production()
    from ..production.worker import run_worker

    return run_worker(redis=args.redis, ray_address=args.ray_address,
                      concurrency=args.concurrency, name=args.name)
