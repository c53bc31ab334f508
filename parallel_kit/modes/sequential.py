"""Sequential mode: one request at a time, the baseline every other mode is compared with.

With one Ollama and the seed profile (10 s a request) five requests take 50 s: the makespan is
the sum of the service times. Rows are in model seconds on one clock started with the run.

Ctrl-C (cancellation) keeps what was done: the task is cancelled as usual, but the exception is
:class:`RunCancelled`, a ``CancelledError`` that carries ``partial`` — a :class:`RunResult` with
the finished rows plus the request that was in flight, marked failed with ``"cancelled"``.
It stays a ``CancelledError`` so that ``asyncio.timeout``, task groups and ``asyncio.run``'s
Ctrl-C handling work unchanged; a caller that wants the partial results catches it::

    try:
        run = await run_sequential(specs, ctx)
    except RunCancelled as stop:
        run = stop.partial          # then re-raise or report, as the caller sees fit
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Sequence

from ..errors import OllamaError
from ..metrics import ItlSketch
from ..records import RequestResult, RequestSpec, RunResult, summarize
from ..timing import ModelClock
from .base import ModeContext

__all__ = ["RunCancelled", "run_sequential"]

MODE = "sequential"


class RunCancelled(asyncio.CancelledError):
    """A run was cancelled (Ctrl-C); ``partial`` holds the rows done so far.

    Subclasses ``CancelledError`` so cancellation still propagates as cancellation.
    """

    def __init__(self, partial: RunResult) -> None:
        super().__init__(f"{partial.summary.mode} run cancelled after {partial.summary.ok} of "
                         f"{partial.summary.n} requests finished")
        self.partial = partial


async def run_sequential(specs: Sequence[RequestSpec], ctx: ModeContext) -> RunResult:
    """Send ``specs`` one after another to ``ctx.endpoints[0]``.

    Every spec gets a row (failed ones with ``ok=False``); the summary has ``workers=1`` and
    ``slots=ctx.slots``; ``makespan_s`` is model seconds, ``wall_s`` clock seconds.

    Raises:
        RunCancelled: when cancelled; ``.partial`` has the rows so far (see the module doc).
    """
    from tqdm.auto import tqdm

    endpoint = ctx.endpoints[0]
    clock = ModelClock(ctx.time_scale)
    rows: list[RequestResult] = []
    bar = tqdm(total=len(specs), desc=MODE, unit="req", disable=not ctx.progress, leave=False)
    # One request at a time needs one connection.
    client = ctx.make_client(endpoint, max_connections=1)
    # Open the connection before the clock starts (setup, not makespan). A server that does
    # not answer is not an error here: its requests become failed rows below.
    with contextlib.suppress(OllamaError):
        await client.warm_up()
    clock.start()
    try:
        for i, spec in enumerate(specs):
            submitted = clock.now()
            try:
                row = await client.run(spec, clock=clock, mode=MODE, worker=endpoint.label,
                                       node=endpoint.node, model=ctx.model,
                                       submitted_s=submitted)
            except asyncio.CancelledError:
                rows.append(_cancelled_row(spec, i, ctx, endpoint.label, endpoint.node,
                                           submitted, clock.now()))
                raise RunCancelled(_result(rows, ctx, clock, len(specs), client.itl)) from None
            if not row.request_id:
                row.request_id = f"r{i}"
            rows.append(row)
            ctx.notify(row)
            bar.update(1)
    finally:
        bar.close()
        # Shielded: closing the connections must finish even while being cancelled.
        await asyncio.shield(client.aclose())
    return _result(rows, ctx, clock, len(specs), client.itl)


def _cancelled_row(spec: RequestSpec, index: int, ctx: ModeContext, worker: str, node: str,
                   submitted_s: float, now_s: float) -> RequestResult:
    return RequestResult(
        request_id=spec.request_id or f"r{index}", mode=MODE, prompt=spec.prompt,
        model=spec.model or ctx.model, worker=worker, node=node, submitted_s=submitted_s,
        started_s=submitted_s, finished_s=now_s, ok=False, error="cancelled",
    ).finalize()


def _result(rows: list[RequestResult], ctx: ModeContext, clock: ModelClock,
            total: int, itl: ItlSketch | None = None) -> RunResult:
    notes = []
    if len(rows) < total or any(r.error == "cancelled" for r in rows):
        notes.append(f"cancelled: {sum(r.ok for r in rows)} of {total} requests finished")
    wall = clock.wall()
    summary = summarize(rows, mode=MODE, backend=ctx.backend, time_scale=ctx.time_scale,
                        workers=1, slots=ctx.slots, wall_s=wall if rows else math.nan,
                        model=ctx.model, notes=notes, itl=itl, requested_concurrency=1)
    return RunResult(summary=summary, requests=rows)
