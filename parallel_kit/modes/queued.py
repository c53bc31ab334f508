"""Modes ``async`` and ``batch``: the original demo's queue in front of one Ollama.

Both put a :class:`~parallel_kit.modes.taskqueue.TaskQueue` with ``ctx.concurrency`` workers
(``MAX_CONCURRENT_REQUESTS``) in front of the first endpoint:

* ``async`` submits one request per call, as the demo's clients did with ``POST
  /inference/async``;
* ``batch`` submits every request in one ``submit_batch`` call (``POST /inference/batch``).

Both are closed loops that hold their concurrency: every request is accepted before the event
loop gets a turn, so the ``concurrency`` workers find a full queue, each takes the next request
the moment its last one ends, and ``concurrency`` requests stay in flight until the queue runs
dry. (Yielding to the loop once per submission — as this mode once did — lets a fast server
answer between submissions, and then only a handful are ever in flight; the summary's
``achieved_concurrency`` shows which happened.)

Both report ``submit_s``: clock seconds until every request was accepted (an overhead of the kit,
never scaled). The makespan runs from the first submission to the last completion in model time.
Rows carry ``queued_s`` (accepted by the queue) apart from ``submitted_s`` (sent to the server):
latency and TTFT are measured from the send, the time in the queue is ``queue_wait_s``.
Against one single-slot Ollama both take as long as sequential (≈ 50 s for the seed scenario):
accepting requests early does not make the server work faster.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Literal

from ..errors import OllamaError
from ..records import RequestResult, RequestSpec, RunResult, summarize
from ..timing import ModelClock
from .base import ModeContext
from .taskqueue import RequestFn, TaskQueue

__all__ = ["run_async", "run_batch"]


async def run_async(specs: Sequence[RequestSpec], ctx: ModeContext) -> RunResult:
    """Submit the requests one call at a time to a queue of ``ctx.concurrency`` workers."""
    return await _run_queued("async", specs, ctx)


async def run_batch(specs: Sequence[RequestSpec], ctx: ModeContext) -> RunResult:
    """Submit every request in one call to a queue of ``ctx.concurrency`` workers."""
    return await _run_queued("batch", specs, ctx)


async def _run_queued(mode: Literal["async", "batch"], specs: Sequence[RequestSpec],
                      ctx: ModeContext) -> RunResult:
    endpoint = ctx.endpoints[0]
    clock = ModelClock(ctx.time_scale)
    # One connection per worker: the queue, not the HTTP pool, is what bounds concurrency.
    async with ctx.make_client(endpoint, max_connections=ctx.concurrency) as client:
        # Connections open before the clock starts (setup, not makespan); a server that does
        # not answer shows as failed rows instead.
        with contextlib.suppress(OllamaError):
            await client.warm_up()

        async def send(spec: RequestSpec) -> RequestResult:
            row = await client.run(spec, clock=clock, mode=mode, worker=endpoint.label,
                                   node=endpoint.node, model=ctx.model)
            ctx.notify(row)
            return row

        rows, submit_s = await run_through_queue(mode, specs, send, clock=clock,
                                                 concurrency=ctx.concurrency,
                                                 model=ctx.model, progress=ctx.progress)
    summary = summarize(
        rows, mode=mode, backend=ctx.backend, time_scale=ctx.time_scale, workers=1,
        slots=ctx.slots, submit_s=submit_s, model=ctx.model, itl=client.itl,
        requested_concurrency=ctx.concurrency,
        notes=[f"{ctx.concurrency} queue worker(s) in front of 1 server with "
               f"{ctx.slots} slot(s)"],
    )
    return RunResult(summary, rows)


async def run_through_queue(mode: Literal["async", "batch"], specs: Sequence[RequestSpec],
                            backend: RequestFn, *, clock: ModelClock, concurrency: int,
                            model: str = "", progress: bool = False
                            ) -> tuple[list[RequestResult], float]:
    """Run ``specs`` through a fresh queue; returns (rows in spec order, submit clock seconds).

    ``clock`` is started here, so the first submission is at ≈ 0 model seconds.
    """
    bar = _progress_bar(len(specs), mode) if progress else None
    clock.start()
    async with TaskQueue(backend, concurrency=concurrency, max_queued=max(len(specs), 1),
                         clock=clock, mode=mode, model=model) as queue:
        if mode == "batch":
            ids = queue.submit_batch(specs)
        else:
            # One call per request, all before the loop runs again: the workers then find a
            # full queue and keep `concurrency` in flight (no trickle).
            ids = [queue.submit(spec) for spec in specs]
        submit_s = clock.wall()

        async def collect(task_id: str) -> RequestResult:
            row = await queue.result(task_id)
            if bar is not None:
                bar.update(1)
            return row

        try:
            rows = await asyncio.gather(*(collect(i) for i in ids))
        finally:
            if bar is not None:
                bar.close()
    return list(rows), submit_s


def _progress_bar(total: int, mode: str):  # type: ignore[no-untyped-def]
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=mode, unit="req", leave=False)
