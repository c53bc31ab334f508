"""An asyncio event loop on a virtual clock: timers fire at once, in order, exactly on time.

``VirtualClockLoop().run_until_complete(main())`` runs ``main`` with ``loop.time()`` starting
at 0 and jumping to the next timer whenever nothing is ready, instead of waiting for it. Code
that plans by absolute deadlines (the simulator's engine) then plays out its schedule exactly
and in a fraction of the time, whatever the machine's load — for tests that compare theory
with the engine, and for what-if runs of the engine (``benchmarks/closed_loop_rhythm.py``).

The loop is asyncio's own ``SelectorEventLoop``
(https://github.com/python/cpython/blob/main/Lib/asyncio/base_events.py ``_run_once``: it
asks the selector to wait until the next timer, then runs the timers due by ``time()``);
only the selector's wait is replaced: it adds the timeout to the clock and polls without
blocking. Sockets still work (they are polled), but their traffic takes no virtual time.
Threads that wake the loop on the real clock do not mix with it: route such waits through
:func:`loop_timer`.
"""

from __future__ import annotations

import asyncio
import selectors
from typing import Any

__all__ = ["VirtualClockLoop", "loop_timer"]


class _VirtualSelector(selectors.DefaultSelector):
    """A selector whose wait moves a virtual clock by the timeout instead of sleeping."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    def select(self, timeout: float | None = None) -> Any:
        if timeout is None:
            raise RuntimeError("virtual clock: nothing is ready and no timer is set — every "
                               "task waits on something that will never happen")
        if timeout > 0:
            self.now += timeout
        return super().select(0)


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """An asyncio loop whose ``time()`` (seconds from 0) advances only to the next timer.

    Raises:
        RuntimeError: from ``run_until_complete`` when every task waits and no timer is set
            (a real loop would hang).
    """

    def __init__(self) -> None:
        self._virtual = _VirtualSelector()
        super().__init__(self._virtual)

    def time(self) -> float:
        return self._virtual.now


def loop_timer(loop: asyncio.AbstractEventLoop, deadline: float) -> asyncio.Future[None]:
    """A future done at ``deadline`` (``loop.time()`` seconds), by the loop's own timer."""
    fut: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not fut.done():
            fut.set_result(None)

    loop.call_at(deadline, wake)
    return fut
