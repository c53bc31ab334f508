"""Model time versus clock time.

A simulator at ``time_scale`` F sleeps F × the model's seconds: at 0.02 a 10 s request takes
0.2 s on the clock. Records are kept in model time (clock ÷ F) so that a run at any scale reads
like the real thing; a real Ollama runs at F = 1.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["ModelClock"]


class ModelClock:
    """Seconds since a run's start, in model time.

    Args:
        time_scale: clock seconds per model second (1.0 for a real Ollama).

    ``now()`` is model seconds since ``start()``; ``wall()`` is clock seconds since then.
    Uses ``time.perf_counter`` (monotonic, sub-microsecond).
    """

    __slots__ = ("_t0", "time_scale")

    #: the clock read, in seconds with an arbitrary origin (a subclass may read another)
    _read = staticmethod(time.perf_counter)

    def __init__(self, time_scale: float = 1.0) -> None:
        if not time_scale > 0:
            raise ValueError(f"time_scale must be positive, got {time_scale!r}")
        self.time_scale = float(time_scale)
        self._t0 = self._read()

    def start(self) -> Self:
        """Reset the origin to now (returns self)."""
        self._t0 = self._read()
        return self

    def now(self) -> float:
        """Model seconds since the start."""
        return (self._read() - self._t0) / self.time_scale

    def wall(self) -> float:
        """Clock seconds since the start."""
        return self._read() - self._t0

    def to_model(self, clock_seconds: float) -> float:
        """Convert a clock duration to model seconds."""
        return clock_seconds / self.time_scale
