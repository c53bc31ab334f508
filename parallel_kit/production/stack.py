"""Bring the production stack up for a run, and down again: Redis, Ray Serve, Celery workers.

:func:`open_stack` yields a :class:`Stack` whose pieces are real processes:

1. Redis — the one named by ``--redis``/``PARALLEL_KIT_REDIS_URL``, or a ``redis-server`` the
   kit starts (:mod:`.redis_server`);
2. the Ray Serve application, one replica per GPU (:func:`parallel_kit.modes.rayserve.open_serve_app`);
3. ``workers`` Celery worker processes (:mod:`.worker`), watched by a supervisor that replaces
   a dead one and hands its tasks back at once (:mod:`.supervisor`), joined to the same Ray cluster by its
   address, each running ``concurrency`` task threads (:func:`default_concurrency`), warmed up
   before the run by a ping per task thread (Ray joined, the Serve handle's router primed, the
   threads started, Redis connections in the pool: :func:`warm_up`).

Everything is stopped in reverse order on exit, also after an error or Ctrl-C. The set-up time
is ``Stack.setup_s`` — a run reports it as ``setup_s``, never inside the makespan.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError, MissingDependency
from ..modes.base import ModeContext
from ..modes.stack_options import StackOptions

__all__ = ["Stack", "default_concurrency", "import_production", "open_stack"]


def import_production() -> None:
    """Check that the ``production`` extra is installed (Celery, redis-py, Ray Serve).

    Raises:
        MissingDependency: naming ``pip install "parallel_kit[production]"``.
    """
    for module, package in (("celery", "celery"), ("redis", "redis"), ("ray.serve", "ray[serve]")):
        try:
            __import__(module)
        except ImportError as exc:
            raise MissingDependency(package, "production", "the production stack") from exc



@dataclass
class Stack:
    """A running stack. ``app`` is the Serve application; ``workers`` the Celery processes."""

    redis_url: str
    app: Any  # rayserve.ServeApp
    workers: list[Any] = field(default_factory=list)  # worker.WorkerProcess
    settings: StackOptions = field(default_factory=StackOptions)
    setup_s: float = 0.0
    concurrency: int = 1
    #: Watches the workers (:mod:`.supervisor`); ``None`` until :meth:`supervise`.
    supervisor: Any = None

    def supervise(self, max_restarts: int = 5) -> Any:
        """Start a :class:`~parallel_kit.production.supervisor.WorkerSupervisor` (once)."""
        from .supervisor import WorkerSupervisor

        if self.supervisor is None:
            self.supervisor = WorkerSupervisor(self, max_restarts=max_restarts).start()
        return self.supervisor

    def health(self) -> dict[str, Any]:
        """What can serve now: ``workers`` alive (of those the kit started), ``replicas``
        RUNNING in Serve (``None`` when Serve's controller did not answer), restarts so far;
        ``problem``: why nothing can serve, or ``None``."""
        from ..modes.rayserve import running_replicas

        workers = sum(1 for w in list(self.workers) if w.alive())
        replicas = running_replicas(self.app.name)
        problem = None
        if self.settings.workers and workers == 0:
            problem = ("no Celery worker is running (each that died was replaced until "
                       "the restarts ran out — see the log)")
        elif replicas == 0:
            problem = "no Serve replica is running (Serve is replacing them, or cannot)"
        return {"workers": workers, "replicas": replicas,
                "worker_restarts": self.supervisor.restarts if self.supervisor else 0,
                "problem": problem}

    def start_worker(self, name: str | None = None) -> Any:
        """Start one more Celery worker process (joined to the same Redis and Ray)."""
        from .worker import WorkerProcess

        w = WorkerProcess.start(self.redis_url, self.app.ray_address,
                                concurrency=self.concurrency, name=name,
                                request_timeout_s=self.settings.request_timeout_s,
                                visibility_timeout_s=self.settings.visibility_timeout_s)
        self.workers.append(w)
        return w


@contextlib.asynccontextmanager
async def open_stack(ctx: ModeContext, settings: StackOptions | None = None, *,
                     app_name: str | None = None,
                     announce: Callable[[str], None] | None = None) -> AsyncIterator[Stack]:
    """Redis + Serve + Celery workers for a run (module docstring); all stopped on exit.

    Raises:
        MissingDependency: the ``production`` extra is missing.
        ConfigError: Redis named but unreachable or not Redis; bad settings; a worker that
            does not start.
    """
    import_production()
    from ..modes.rayserve import open_serve_app
    from .celery_app import configure
    from .redis_server import open_redis
    from .worker import stop_workers, wait_for_workers

    cfg = settings or ctx.stack
    announce = announce or cfg.announce
    t0 = time.perf_counter()
    with contextlib.ExitStack() as closing:
        redis_url = closing.enter_context(open_redis(cfg.redis, announce=announce))
        configure(redis_url, request_timeout_s=cfg.request_timeout_s,
                  visibility_timeout_s=cfg.visibility_timeout_s)
        async with open_serve_app(ctx, name=app_name, mode="production") as app:
            concurrency = (cfg.worker_concurrency
                           or default_concurrency(app.workers * app.max_ongoing))
            stack = Stack(redis_url, app, settings=cfg, concurrency=concurrency)
            try:
                for _ in range(cfg.workers):
                    stack.start_worker()
                if stack.workers:
                    await asyncio.to_thread(wait_for_workers, stack.workers)
                    await warm_up(stack)
                    stack.supervise(cfg.max_worker_restarts)
                stack.setup_s = time.perf_counter() - t0
                yield stack
            finally:
                # Synchronously: this also runs while the run is being cancelled (Ctrl-C),
                # when awaiting a thread could be cut short and leave a worker behind.
                if stack.supervisor is not None:
                    stack.supervisor.stop()
                stop_workers(stack.workers, cfg.stop_grace_s)


def default_concurrency(capacity: int) -> int:
    """Task threads per worker: four times what Serve runs at once (at least 8).

    Celery's ``threads`` pool does not wake the worker's event loop when a thread frees, so a
    worker with every thread busy fetches its next task only at the loop's next wake-up (tens
    of milliseconds measured here). With spare threads every task is fetched at once and waits
    in Serve's router instead, which hands it to a replica within ~10 ms of a slot freeing
    (:data:`~parallel_kit.modes.rayserve.ROUTER_MAX_BACKOFF_S`). Threads only wait; they cost
    no CPU.
    """
    return max(8, 4 * capacity)


async def warm_up(stack: Stack, timeout_s: float = 120.0) -> None:
    """A ping task for every task thread of every worker, all at once, before the run.

    Each ping joins Ray and gets the Serve handle (once per worker process) and takes a Redis
    connection into the worker's pool; sent together they make the ``threads`` pool start all
    its threads. Without it the run's first burst paid for each of these (tens of milliseconds
    on a small machine, measured by ``benchmarks/stack_seed.py``).
    """
    from .celery_app import PING_NAME, app
    from .tasks import wait_for_meta

    n = max(1, len(stack.workers) * max(1, stack.concurrency))
    ids = [app.send_task(PING_NAME, args=(stack.app.name,)).id for _ in range(n)]
    try:
        metas = await wait_for_meta(stack.redis_url, ids, timeout_s=timeout_s)
    except asyncio.TimeoutError:
        metas = {}
    bad = [m for m in metas.values() if m.get("status") != "SUCCESS"]
    if len(metas) < n or bad:
        detail = (bad[0].get("result") or {}).get("exc_message", "") if bad else "no answer"
        tails = "; ".join(w.log_tail(300).strip() for w in stack.workers if w.log_tail())
        raise ConfigError(f"the Celery workers could not reach the Serve application "
                          f"({detail}) — worker log: {tails or 'empty'}")
