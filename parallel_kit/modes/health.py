"""How a dispatcher checks that its servers still answer (pool and ray modes).

See :mod:`parallel_kit.modes.pool`, "Health checks": a frozen server never refuses anything, so
only a probe with a deadline finds it; a lost server is probed on and taken back.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError

__all__ = ["DEFAULT_HEALTH", "HealthPolicy"]


@dataclass(frozen=True)
class HealthPolicy:
    """How a dispatcher's monitor probes its workers (module docstring, "Health checks").

    Args:
        interval_s: clock seconds between two rounds of probes (> 0).
        timeout_s: a probe's deadline, clock seconds: ``GET /`` answers at once on Ollama
            (``server/routes.go`` serves it outside the scheduler) and on the simulator, so
            a few seconds cover a busy machine.
        misses: probes missed in a row before a worker is marked lost (≥ 1).
        readmit_after: probes answered in a row before a lost worker is taken back (≥ 1).

    With the defaults a frozen server is out within ``interval_s + misses·timeout_s`` ≈ 11 s.

    Raises:
        ConfigError: a value out of range.
    """

    interval_s: float = 1.0
    timeout_s: float = 5.0
    misses: int = 2
    readmit_after: int = 2

    def __post_init__(self) -> None:
        for name in ("interval_s", "timeout_s"):
            value = getattr(self, name)
            if not 0.01 <= value <= 3600:
                raise ConfigError(f"health check {name} {value!r} must be within 0.01..3600 s")
        for name in ("misses", "readmit_after"):
            value = getattr(self, name)
            if not 1 <= value <= 100:
                raise ConfigError(f"health check {name} {value!r} must be within 1..100")


#: The default policy (a frozen record, shared).
DEFAULT_HEALTH = HealthPolicy()
