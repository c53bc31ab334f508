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
    import asyncio

    from .redis_server import mask_url
    from .tasks import RedisUnavailable, TaskClient, row_from_body

    epoch = time.time()
    client = TaskClient(stack.redis_url, stack.app.name, ctx.time_scale, epoch, ctx.model)
    ids: list[str] = []
    submitted: dict[str, float] = {}
    rows: dict[str, RequestResult] = {}
    lost: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for spec in specs:
        s = client.now()
        try:
            if lost:  # Redis already failed to accept one: the rest are not tried
                raise RedisUnavailable(stack.redis_url, "it failed to accept an earlier "
                                                        "request of this run")
            task_id = client.submit(spec)
        except RedisUnavailable as exc:  # not accepted: a failed row, and Redis is lost
            task_id = f"unaccepted-{len(ids)}"
            rows[task_id] = RequestResult(
                request_id=spec.request_id or task_id, mode="production", prompt=spec.prompt,
                model=spec.model or ctx.model, submitted_s=s, ok=False,
                error=f"not accepted: {exc}").finalize()
            if not lost:
                lost.append({"worker": "redis", "url": mask_url(stack.redis_url),
                             "error": str(exc), "fatal": True})
        ids.append(task_id)
        submitted[task_id] = s
    submit_s = time.perf_counter() - t0
    by_id = dict(zip(ids, specs, strict=True))

    def on_done(task_id: str, body: dict[str, Any]) -> None:
        spec = by_id[task_id]
        row = row_from_body(body, spec, mode="production", model=ctx.model,
                            submitted_s=submitted[task_id], done_s=client.now())
        rows[task_id] = row
        ctx.notify(row)

    from .celery_app import app as celery_app

    per_request = float(celery_app.conf.get("parallel_kit_request_timeout_s") or 600.0)
    budget = timeout_s or per_request * (len(specs) + 1)
    why = f"did not finish within {budget:g} s — is a Celery worker running?"
    waiting = asyncio.ensure_future(client.wait([i for i in ids if i not in rows],
                                                timeout_s=budget, on_done=on_done))
    supervisor = getattr(stack, "supervisor", None)
    # Every worker dead and not replaced: the run ends now, not after the budget.
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
            if not lost:
                lost.append({"worker": "redis", "url": mask_url(stack.redis_url),
                             "error": str(gone), "fatal": True})
    finally:
        for fut in (waiting, gave_up):
            fut.cancel()
        await asyncio.gather(waiting, gave_up, return_exceptions=True)
        client.close()
    out: list[RequestResult] = []
    for task_id, spec in zip(ids, specs, strict=True):
        row = rows.get(task_id)
        if row is None:  # never lost: a failed row saying what happened
            row = RequestResult(request_id=spec.request_id or task_id, mode="production",
                                prompt=spec.prompt, model=spec.model or ctx.model,
                                submitted_s=submitted[task_id], ok=False,
                                error=f"task {task_id} {why}").finalize()
        out.append(row)
    redelivered = sum(1 for r in out if r.hops.get("deliveries", 1) > 1)
    notes = []
    if redelivered:
        notes.append(f"{redelivered} task(s) delivered more than once (at-least-once: a "
                     f"worker was lost mid-task); each counted in retries")
    app = stack.app
    summary = summarize(out, mode="production", backend=ctx.backend, time_scale=ctx.time_scale,
                        workers=app.workers, slots=app.slots, submit_s=submit_s,
                        setup_s=stack.setup_s, model=ctx.model, notes=notes)
    summary.lost_workers.extend(lost)
    if math.isnan(summary.makespan_s):
        summary.notes.append("no request finished")
    return RunResult(summary, out)
