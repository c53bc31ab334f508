"""SIGTERM handled like Ctrl-C while a command runs, so its partial results are written.

``timeout``, CI cancellation and ``docker stop`` send SIGTERM, whose default action ends the
process at once — a run's finished requests were never written. While the block runs, SIGTERM
is turned into a SIGINT for this process, which :func:`asyncio.run` already handles by
cancelling the run (the modes then return what finished, unfinished requests as failed rows);
``terminated`` tells the caller to exit 143 (128 + SIGTERM) instead of 130.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["Termination", "sigterm_as_interrupt"]


@dataclass
class Termination:
    """Whether SIGTERM arrived during the block."""

    terminated: bool = False


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[Termination]:
    """Within the block (main thread only), SIGTERM interrupts like Ctrl-C."""
    state = Termination()
    if threading.current_thread() is not threading.main_thread():
        yield state
        return

    def on_term(signum: int, frame: Any) -> None:
        state.terminated = True
        signal.raise_signal(signal.SIGINT)

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield state
    finally:
        signal.signal(signal.SIGTERM, previous)
