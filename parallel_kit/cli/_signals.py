"""One shutdown path for every command: SIGINT and SIGTERM, once or twice.

``timeout``, CI cancellation and ``docker stop`` send SIGTERM; a person presses Ctrl-C (SIGINT).
Either one, during a run, must end it the same way: the run is cancelled (the modes return what
finished, unfinished requests as failed rows — n rows for n requests), every child process is
stopped by the context managers that started it, what finished is written, and the command
exits 128 + the signal (130 for SIGINT, 143 for SIGTERM).

How (:func:`shutdown_path`):

* The kit's handler is installed for SIGINT and SIGTERM for the whole command. It does not
  depend on SIGINT being handled: a job started in the background by a shell ignores SIGINT,
  so turning SIGTERM into a SIGINT (as the kit once did) did nothing there.
* While a run is on (:meth:`Shutdown.run`), the first signal cancels the run's task; a second
  one cancels it again (cleanup code that waits is cut short, blocking stops have their own
  grace); a third raises ``KeyboardInterrupt`` at once. Outside a run, a signal raises
  ``KeyboardInterrupt`` (nothing to save yet) — except inside :meth:`Shutdown.deferred`
  (writing the results), where it is only counted.
* ``ray.init`` installs its own SIGTERM handler in the driver; :mod:`parallel_kit.servers.raycluster`
  puts the kit's back as soon as Ray is up (``keep_signal_handlers``), so it never wins.
* Children that a second signal could leave behind (the kit's Redis, its Celery workers) are
  also registered with :mod:`parallel_kit.system.children`, which stops any still running at exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

__all__ = ["Shutdown", "Termination", "ignore_from_now_on", "shutdown_path", "sigterm_as_interrupt"]

T = TypeVar("T")

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass
class Shutdown:
    """What signals arrived while a command ran, and the hooks to act on them.

    Attributes:
        signum: the first signal (``None``: none arrived); count: how many arrived.
    """

    signum: int | None = None
    count: int = 0
    _task: asyncio.Task[Any] | None = field(default=None, repr=False)
    _loop: asyncio.AbstractEventLoop | None = field(default=None, repr=False)
    _deferring: int = field(default=0, repr=False)

    @property
    def terminated(self) -> bool:
        """SIGTERM was the first signal (exit 143)."""
        return self.signum == signal.SIGTERM

    @property
    def interrupted(self) -> bool:
        return self.signum is not None

    @property
    def exit_code(self) -> int:
        """128 + the first signal: 130 for SIGINT, 143 for SIGTERM (0 when none came)."""
        return 128 + int(self.signum) if self.signum is not None else 0

    def handle(self, signum: int, frame: Any = None) -> None:
        """The signal handler (also callable from tests)."""
        self.count += 1
        if self.signum is None:
            self.signum = signum
        if self._deferring:
            return
        task, loop = self._task, self._loop
        if task is not None and loop is not None and not task.done() and self.count < 3:
            loop.call_soon_threadsafe(task.cancel)
            return
        raise KeyboardInterrupt

    def run(self, coro: Coroutine[Any, Any, T]) -> tuple[T | None, bool]:
        """Run ``coro`` on a new event loop; a signal cancels it.

        Returns ``(value, False)`` when it finished, ``(None, True)`` when a signal cut it
        short (after its cleanup ran). Errors of the run propagate.
        """
        async def main() -> T:
            self._loop = asyncio.get_running_loop()
            self._task = asyncio.current_task()
            if self.signum is not None:  # a signal came while the loop started
                raise asyncio.CancelledError
            return await coro

        try:
            return asyncio.run(main()), False
        except (asyncio.CancelledError, KeyboardInterrupt):
            if self.signum is None:
                raise
            return None, True
        finally:
            self._task = self._loop = None

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Within the block (writing results, stopping children) signals are only counted."""
        self._deferring += 1
        try:
            yield
        finally:
            self._deferring -= 1


#: The shutdown state of the command running now (``None`` outside :func:`shutdown_path`).
current: Shutdown | None = None
#: 128 + the first signal of the last block that saw one (for ``main``'s exit status).
last_exit_code: int = 0


@contextlib.contextmanager
def shutdown_path() -> Iterator[Shutdown]:
    """Install the kit's SIGINT/SIGTERM handler for the block (main thread only)."""
    global current, last_exit_code
    state = Shutdown()
    last_exit_code = 0
    if threading.current_thread() is not threading.main_thread():
        yield state
        return
    previous = {sig: signal.signal(sig, state.handle) for sig in _SIGNALS}
    outer, current = current, state
    try:
        yield state
    finally:
        current = outer
        last_exit_code = state.exit_code
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def ignore_from_now_on() -> None:
    """Ignore SIGINT and SIGTERM (main thread only): for a process about to exit on one."""
    if threading.current_thread() is threading.main_thread():
        for sig in _SIGNALS:
            signal.signal(sig, signal.SIG_IGN)


# The earlier name and type, kept for callers outside the CLI.
Termination = Shutdown
sigterm_as_interrupt = shutdown_path
