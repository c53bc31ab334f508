"""``production`` mode: the original analysis's production stack, measured beside the others.

Each request is put on a Celery queue whose broker and result backend is a real Redis; Celery
workers (child processes) take it and call the Ray Serve application, one replica per GPU, each
bound to its own Ollama; the row comes back through Redis. The same Celery app and task as
``parallel-kit serve --mode production`` (:mod:`parallel_kit.production`), without the HTTP hop
in front: the driver accepts each task exactly as an API process does
(:meth:`~parallel_kit.production.tasks.TaskClient.submit`).

Rows carry per-layer timestamps in ``hops`` (model seconds on the run's axis): ``accepted``
(the task is in Redis), ``picked_up`` (a Celery worker started it), ``replica_entered`` (the
Serve replica got it), then the row's own ``started_s`` (sent to Ollama) and
``first_token_s``, ``replica_done``, ``worker_done``, and ``done`` (the driver saw the result;
also ``finished_s``). The gaps are the cost of each hop (notebook 09,
``benchmarks/stack_overhead.py``).

Set-up — Redis, Ray, Serve, the workers and their warm-up — is ``setup_s``, never in the
makespan. ``ctx.serve`` and ``ctx.servers`` as for ``rayserve``; ``ctx.stack``
(:class:`~parallel_kit.modes.stack_options.StackOptions`): ``redis`` (URL), ``workers``,
``worker_concurrency``, ``request_timeout_s``, ``visibility_timeout_s``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

from ..modes.base import ModeContext
from ..records import RequestResult, RequestSpec, RunResult, summarize

__all__ = ["run_on_stack", "run_production"]


async def run_production(specs: Sequence[RequestSpec], ctx: ModeContext) -> RunResult:
    """Run ``specs`` through Redis + Celery + Ray Serve (module docstring).

    Raises:
        MissingDependency: the ``production`` extra is missing
            (``pip install "parallel_kit[production]"``).
        ConfigError: ``--redis`` names nothing or not Redis; ``--max-ongoing`` < 1; too few GPUs.
        OllamaUnavailable: a ``--host`` does not answer (named).
    """
    from .stack import open_stack

    async with open_stack(ctx) as stack:
        return await run_on_stack(stack, specs, ctx)


async def run_on_stack(stack: Any, specs: Sequence[RequestSpec], ctx: ModeContext, *,
                       timeout_s: float | None = None) -> RunResult:
    """Send every spec through a running stack; one row per spec, failed ones included.

    ``timeout_s`` (clock seconds, default: the request timeout × the number of rounds + a
    margin) bounds the wait; tasks still unfinished then are failed rows saying so.
    """
    run = _StackRun(stack, specs, ctx)
    t0 = time.perf_counter()
    run.submit_all()
    submit_s = time.perf_counter() - t0
    why = await run.wait_for_rows(timeout_s)
    return run.result(why, submit_s)


class _StackRun:
    """The steps of :func:`run_on_stack`: accept every spec into Redis, wait for the rows
    (or for the stack to give up), then one row per spec in order and the run's summary."""

    def __init__(self, stack: Any, specs: Sequence[RequestSpec], ctx: ModeContext) -> None:
        from .tasks import TaskClient

        self.stack = stack
        self.specs = specs
        self.ctx = ctx
        self.client = TaskClient(stack.redis_url, stack.app.name, ctx.time_scale, time.time(),
                                 ctx.model)
        self.ids: list[str] = []  # one a spec, in order; "unaccepted-<i>" for one not accepted
        self.submitted: dict[str, float] = {}
        self.rows: dict[str, RequestResult] = {}
        self.lost: list[dict[str, Any]] = []  # Redis, once it is lost
        self.by_id: dict[str, RequestSpec] = {}

    def submit_all(self) -> None:
        """Accept each spec as an API process does; once Redis fails to accept one, the rest
        are not tried, and each is a failed row ("not accepted: …")."""
        from .tasks import RedisUnavailable

        for spec in self.specs:
            s = self.client.now()
            try:
                if self.lost:  # Redis already failed to accept one: the rest are not tried
                    raise RedisUnavailable(self.stack.redis_url, "it failed to accept an "
                                                                 "earlier request of this run")
                task_id = self.client.submit(spec)
            except RedisUnavailable as exc:  # not accepted: a failed row, and Redis is lost
                task_id = f"unaccepted-{len(self.ids)}"
                self.rows[task_id] = self._failed_row(spec, task_id, s, f"not accepted: {exc}")
                self._lose_redis(str(exc))
            self.ids.append(task_id)
            self.submitted[task_id] = s
        self.by_id = dict(zip(self.ids, self.specs, strict=True))

    async def wait_for_rows(self, timeout_s: float | None) -> str:
        """Take each accepted task's row as it comes back, until all have, the budget passes,
        Redis is lost or every worker is dead and not replaced (the run ends then, not after
        the budget); returns why a task still without a row did not finish."""
        import asyncio

        from .celery_app import app as celery_app
        from .tasks import RedisUnavailable

        per_request = float(celery_app.conf.get("parallel_kit_request_timeout_s") or 600.0)
        budget = timeout_s or per_request * (len(self.specs) + 1)
        why = f"did not finish within {budget:g} s — is a Celery worker running?"
        waiting = asyncio.ensure_future(self.client.wait(
            [i for i in self.ids if i not in self.rows], timeout_s=budget,
            on_done=self._on_done))
        supervisor = getattr(self.stack, "supervisor", None)
        gave_up = asyncio.ensure_future(supervisor.until_gave_up() if supervisor is not None
                                        else asyncio.Event().wait())
        try:
            await asyncio.wait((waiting, gave_up), return_when=asyncio.FIRST_COMPLETED)
            if gave_up.done() and not waiting.done():
                why = f"did not finish: {gave_up.result()}"
            elif waiting.done() and isinstance(waiting.exception(), RedisUnavailable):
                gone = waiting.exception()
                why = f"was lost with Redis: {gone}"
                # the run's broker and result backend is gone: bench writes every row, then
                # exits non-zero with this one line
                self._lose_redis(str(gone))
        finally:
            for fut in (waiting, gave_up):
                fut.cancel()
            await asyncio.gather(waiting, gave_up, return_exceptions=True)
            self.client.close()
        return why

    def result(self, why: str, submit_s: float) -> RunResult:
        """One row per spec in order (a task without a row: a failed one saying ``why``), and
        the summary, with Redis among the lost workers when it was lost."""
        out: list[RequestResult] = []
        for task_id, spec in zip(self.ids, self.specs, strict=True):
            row = self.rows.get(task_id)
            if row is None:  # never lost: a failed row saying what happened
                row = self._failed_row(spec, task_id, self.submitted[task_id],
                                       f"task {task_id} {why}")
            out.append(row)
        redelivered = sum(1 for r in out if r.hops.get("deliveries", 1) > 1)
        notes = []
        if redelivered:
            notes.append(f"{redelivered} task(s) delivered more than once (at-least-once: a "
                         f"worker was lost mid-task); each counted in retries")
        ctx, app = self.ctx, self.stack.app
        summary = summarize(out, mode="production", backend=ctx.backend,
                            time_scale=ctx.time_scale, workers=app.workers, slots=app.slots,
                            submit_s=submit_s, setup_s=self.stack.setup_s, model=ctx.model,
                            notes=notes)
        summary.lost_workers.extend(self.lost)
        if math.isnan(summary.makespan_s):
            summary.notes.append("no request finished")
        return RunResult(summary, out)

    def _on_done(self, task_id: str, body: dict[str, Any]) -> None:
        from .tasks import row_from_body

        row = row_from_body(body, self.by_id[task_id], mode="production", model=self.ctx.model,
                            submitted_s=self.submitted[task_id], done_s=self.client.now())
        self.rows[task_id] = row
        self.ctx.notify(row)

    def _failed_row(self, spec: RequestSpec, task_id: str, submitted_s: float,
                    error: str) -> RequestResult:
        return RequestResult(request_id=spec.request_id or task_id, mode="production",
                             prompt=spec.prompt, model=spec.model or self.ctx.model,
                             submitted_s=submitted_s, ok=False, error=error).finalize()

    def _lose_redis(self, error: str) -> None:
        """Record Redis as lost (fatal: the run's broker and result backend), once."""
        from .redis_server import mask_url

        if not self.lost:
            self.lost.append({"worker": "redis", "url": mask_url(self.stack.redis_url),
                              "error": error, "fatal": True})
