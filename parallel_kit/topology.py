"""What theory needs to know about how a mode serves requests: a :class:`Topology`.

A topology is the shape of the serving side — how many servers, how many slots each, how many
requests the caller keeps in flight, whether they pass through the kit's task queue, and how
requests are spread over servers. Theory predicts from a topology (``theory.predict``); the mode
registry (``parallel_kit.modes.registry``) says which topology each mode has. This module has
no imports from the kit, so both can use it without a cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Dispatch", "Topology"]

#: How requests are spread over several servers: pull by the least loaded, or round-robin.
Dispatch = Literal["least_loaded", "round_robin"]


@dataclass(frozen=True, slots=True)
class Topology:
    """The serving shape of one run.

    Attributes:
        servers: servers the requests are spread over (one Ollama each, i.e. one GPU each).
        slots: slots per server (``OLLAMA_NUM_PARALLEL``): requests one server decodes at once.
        in_flight: requests the caller keeps outstanding at once, over all servers; ``None``
            means not limiting (every free slot is filled). 1 is sequential.
        task_queue: requests pass through the kit's task queue (its submit time counts).
        dispatch: how requests are spread over several servers.
        label: a name for explanations (the mode's name), e.g. ``"pool"``.
    """

    servers: int = 1
    slots: int = 1
    in_flight: int | None = None
    task_queue: bool = False
    dispatch: Dispatch = "least_loaded"
    label: str = ""

    @property
    def busy_slots(self) -> int:
        """Slots of each server that are kept busy: ``min(slots, in_flight)`` on one server."""
        if self.in_flight is None:
            return self.slots
        per_server = -(-self.in_flight // max(self.servers, 1))
        return max(1, min(self.slots, per_server))
