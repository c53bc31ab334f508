"""Fault switches of the simulated Ollama, for lessons and tests.

Every switch is deterministic so that a test can count on it:

- ``fail_fraction`` f: of the generation requests numbered 0, 1, 2, … in arrival order, request
  i fails (HTTP 500 ``{"error": "simulated failure ..."}``) when ``floor((i+1)·f) > floor(i·f)``
  — exactly ``floor(n·f)`` failures among the first n, spread evenly.
- ``jitter`` j: each request's speed is multiplied by a factor drawn uniformly from
  ``[1 − j, 1 + j]`` by a random generator seeded with ``seed`` and the request's number.
- ``stop_after`` N: once N generation requests have completed, the server stops answering —
  its listening socket closes (new connections are refused) and open connections are dropped.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from ..errors import ConfigError

__all__ = ["Faults"]


@dataclass(frozen=True, slots=True)
class Faults:
    """Which faults to inject (all off by default). See the module docstring."""

    fail_fraction: float = 0.0
    jitter: float = 0.0
    stop_after: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.fail_fraction <= 1.0:
            raise ConfigError(f"fail_fraction {self.fail_fraction!r} must be between 0 and 1 "
                              f"(0.1 fails one request in ten)")
        if not 0.0 <= self.jitter < 1.0:
            raise ConfigError(f"jitter {self.jitter!r} must be at least 0 and below 1 "
                              f"(0.2 varies each request's speed by ±20 %)")
        if self.stop_after is not None and self.stop_after < 0:
            raise ConfigError(f"stop_after {self.stop_after!r} must be a whole number ≥ 0")

    def fails(self, index: int) -> bool:
        """Whether request number ``index`` (0-based, arrival order) fails."""
        f = self.fail_fraction
        return f > 0 and math.floor((index + 1) * f) > math.floor(index * f)

    def duration_factor(self, index: int) -> float:
        """Multiplier of request ``index``'s durations (1.0 without jitter)."""
        if self.jitter == 0:
            return 1.0
        return 1.0 + self.jitter * random.Random(self.seed * 1_000_003 + index).uniform(-1, 1)
