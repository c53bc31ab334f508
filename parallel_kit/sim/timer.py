"""Sleeping until a deadline on the event loop, with sub-millisecond accuracy when it matters.

:func:`sleep_until` is what the simulated engine waits with; :class:`PreciseTimer` is its
precise path (one daemon thread shared by every engine in the process).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import threading
import time

__all__ = ["TIMER", "PreciseTimer", "sleep_until"]


async def sleep_until(deadline: float, *, precise: bool = False) -> None:
    """Sleep until ``deadline`` (loop clock, seconds).

    The event loop's own timers wake 0–1 ms late: epoll waits whole milliseconds, rounded up
    (``selectors.EpollSelector.select``: ``math.ceil(timeout * 1e3)``). Absolute deadlines keep
    that from adding up over a request's steps, but the step that gives a request its first or
    last token is what the client sees (TTFT, the end of the request — at time scale 0.02 one
    clock ms is 0.05 model s). ``precise`` wakes at the deadline instead, through
    :data:`TIMER`, without spinning the CPU.
    """
    loop = asyncio.get_running_loop()
    delay = deadline - loop.time()
    if delay <= 0:
        return
    if precise:
        await TIMER.wait_until(loop, deadline)
    else:
        await asyncio.sleep(delay)


class PreciseTimer:
    """Wakes asyncio futures at a deadline with sub-millisecond accuracy.

    One daemon thread sleeps on a condition variable until the earliest deadline
    (``threading.Condition.wait`` sleeps with microsecond resolution on ``time.monotonic``,
    the loop's clock) and hands the wake-up to the loop with ``call_soon_threadsafe``, whose
    self-pipe write ends the loop's epoll wait at once (~0.05–0.1 ms here). Shared by every
    engine in the process; started on first use.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._cv = threading.Condition()
        self._count = itertools.count()
        self._thread: threading.Thread | None = None

    def wait_until(self, loop: asyncio.AbstractEventLoop, deadline: float) -> asyncio.Future[None]:
        """A future that is done at ``deadline`` (``loop.time()`` seconds)."""
        fut: asyncio.Future[None] = loop.create_future()
        with self._cv:
            heapq.heappush(self._heap, (deadline, next(self._count), loop, fut))
            self._start()
            self._cv.notify()
        return fut

    def start(self) -> None:
        """Start the thread now (engines do, so that no request pays for it)."""
        with self._cv:
            self._start()

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="sim-precise-timer",
                                            daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._heap:
                    self._cv.wait()
                deadline = self._heap[0][0]
                left = deadline - time.monotonic()
                if left > 0:
                    self._cv.wait(left)
                    continue  # woken early (a new, earlier deadline) or on time: look again
                _, _, loop, fut = heapq.heappop(self._heap)
            # A loop that is gone (closed) has nobody waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_wake, fut)


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():  # cancelled meanwhile (the request went away)
        fut.set_result(None)


TIMER = PreciseTimer()
