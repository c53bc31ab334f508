"""A Ray Serve request router that routes a waiting request the moment a replica frees.

Serve's default router (``PowerOfTwoChoicesRequestRouter``) picks two random replicas and
sends the request to the one with fewer ongoing requests among those below
``max_ongoing_requests``. When *every* replica is full — the second round of the kit's seed
scenario: five requests, three replicas of one slot each — the request waits in the router,
which polls again after a backoff (25 ms doubling to 500 ms by default; the kit caps it, see
:data:`parallel_kit.modes.rayserve.ROUTER_MAX_BACKOFF_S`). Each poll is a queue-length probe
(an actor call to two replicas), so a freed slot is noticed up to a backoff late, and the
polling itself costs CPU on a small machine.

:class:`FreedSlotRouter` keeps Serve's policy and adds one thing: a request that finds every
replica full *by the router's queue-length cache* waits for the next completion of a request
this router sent (Serve's ``on_request_completed`` hook, which runs on the router's event loop)
instead of polling; it then chooses among the replicas the cache shows with a free slot, by the
same power of two choices. Serve updates that cache in a callback of its own which can come
milliseconds after the completion, so a replica that has just freed is asked directly (one
queue-length probe, :data:`FRESH_S`) rather than taken for full. The wait is bounded
(:data:`FREED_WAIT_S`, as long as the kit's backoff cap): after it Serve's own probing runs as
before, so replicas this router does not hear about (requests sent by another process's handle,
a replica that restarted) are still found about as soon as with Serve's router.

Serve's custom-router interface (``RequestRouter.choose_replicas``, ``on_request_completed``,
``select_available_replicas``, ``request_router_config.request_router_class``):
https://docs.ray.io/en/latest/serve/advanced-guides/custom-request-router.html and
https://github.com/ray-project/ray/blob/master/python/ray/serve/_private/request_router/request_router.py.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from ray.serve._private.request_router import PowerOfTwoChoicesRequestRouter

__all__ = ["FREED_WAIT_S", "FRESH_S", "FreedSlotRouter"]

#: Clock seconds a request that finds every replica full waits for a completion this router
#: hears before Serve's own probing runs (as often as Serve's backoff would probe).
FREED_WAIT_S = 0.01
#: Clock seconds after a completion during which its replica is probed first.
FRESH_S = 0.1


class FreedSlotRouter(PowerOfTwoChoicesRequestRouter):  # type: ignore[misc]
    """Power of two choices; a request that finds every replica full waits for a completion.

    ``choose_replicas`` returns one rank of at most two replicas, as Serve's router does.
    Nothing is raised here; Serve handles timeouts and cancellation of the waiting request.
    """

    def initialize_state(self, **kwargs: Any) -> None:
        super().initialize_state(**kwargs)
        self._freed: _Freed | None = None
        self._recently_freed: dict[Any, float] = {}
        self.completions_seen = 0  # completions this router heard (tests, curiosity)

    def _freed_event(self) -> _Freed:
        # Created lazily: the router is constructed outside its event loop.
        if getattr(self, "_freed", None) is None:
            self._freed = _Freed()
        assert self._freed is not None
        return self._freed

    def on_request_completed(self, replica_id: Any, internal_request_id: str) -> None:
        super().on_request_completed(replica_id, internal_request_id)
        self.completions_seen = getattr(self, "completions_seen", 0) + 1
        if not hasattr(self, "_recently_freed"):
            self._recently_freed = {}
        self._recently_freed[replica_id] = time.monotonic()
        # Wake every waiter, and give later waiters a fresh event: a waiter takes the event
        # *before* it looks at the cache, so a completion in between is never missed.
        event = self._freed_event()
        self._freed = _Freed()
        event.replica_id = replica_id
        event.set()

    def _take_recently_freed(self, candidates: list[Any]) -> list[Any]:
        """A candidate whose request completed within :data:`FRESH_S` (forgotten once taken)."""
        now = time.monotonic()
        for replica in candidates:
            at = self._recently_freed.pop(replica.replica_id, None)
            if at is not None and now - at <= FRESH_S:
                return [replica]
        return []

    async def choose_replicas(self, candidate_replicas: list[Any],
                              pending_request: Any = None) -> list[list[Any]]:
        if pending_request is not None and pending_request.metadata.multiplexed_model_id:
            return list(await super().choose_replicas(candidate_replicas, pending_request))
        event = self._freed_event()
        if candidate_replicas and not self.select_available_replicas(candidate_replicas):
            # Full by the cache. Serve decrements that cache in a callback of its own, which
            # may come later than the completion: a replica that has just freed is asked
            # directly (one probe) instead of being taken for full.
            freed = self._take_recently_freed(candidate_replicas)
            if freed:
                return [freed]
            try:
                await asyncio.wait_for(event.wait(), FREED_WAIT_S)
            except asyncio.TimeoutError:
                # No completion heard (requests sent by other processes' handles finish
                # unheard here): Serve's own probing of two random replicas.
                return list(await super().choose_replicas(candidate_replicas, pending_request))
            if not self.select_available_replicas(candidate_replicas):
                freed = self._take_recently_freed(candidate_replicas)
                if freed:
                    return [freed]
        available = self.select_available_replicas(candidate_replicas)
        if not available or len(available) == len(candidate_replicas):
            return list(await super().choose_replicas(candidate_replicas, pending_request))
        if len(available) == 1:
            return [available]
        return [random.sample(available, 2)]


class _Freed(asyncio.Event):
    """An event that also says which replica's request completed."""

    replica_id: Any = None
