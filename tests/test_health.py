"""Properties of the dispatcher's health checks (Hypothesis): when a worker is marked lost and
taken back, and that requests held by a frozen worker always end on a live one."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parallel_kit.errors import ConfigError
from parallel_kit.modes.health import HealthPolicy
from parallel_kit.modes.pool import Dispatcher, PoolWorker, dispatch_all
from parallel_kit.records import RequestResult, RequestSpec
from parallel_kit.timing import ModelClock


async def _never(spec: RequestSpec, submitted_s: float) -> RequestResult:
    raise AssertionError("not sent in this test")


@settings(max_examples=200, deadline=None)
@given(misses=st.integers(1, 4), readmit=st.integers(1, 4),
       answers=st.lists(st.booleans(), max_size=60))
def test_lost_after_misses_in_a_row_and_back_after_answers_in_a_row(misses, readmit,
                                                                    answers) -> None:
    policy = HealthPolicy(interval_s=1.0, timeout_s=1.0, misses=misses, readmit_after=readmit)
    w = PoolWorker("w", 1, _never)
    d = Dispatcher([w, PoolWorker("other", 1, _never)], clock=ModelClock(1.0).start(),
                   health=policy)
    lost, streak, losses, returns = False, 0, 0, 0  # the reference model
    for answered in answers:
        d._judge(w, None if answered else "no answer", policy)
        if not lost:
            streak = 0 if answered else streak + 1
            if streak >= misses:
                lost, streak, losses = True, 0, losses + 1
        else:
            streak = streak + 1 if answered else 0
            if streak >= readmit:
                lost, streak, returns = False, 0, returns + 1
        assert w.lost == lost
        assert d.status == ("degraded" if lost else "ok")
    assert len(d.lost_workers) == losses and len(d.readmitted) == returns


class Fake:
    """A worker that answers at once, or — frozen — never (until its request is cancelled)."""

    def __init__(self, name: str, frozen: bool) -> None:
        self.name = name
        self.frozen = frozen
        self.served: list[str] = []

    async def send(self, spec: RequestSpec, submitted_s: float) -> RequestResult:
        if self.frozen:
            await asyncio.Event().wait()  # a socket that never answers
        await asyncio.sleep(0)
        self.served.append(spec.request_id)
        return RequestResult(spec.request_id, "pool", spec.prompt, "m", worker=self.name,
                             submitted_s=submitted_s, ok=True)

    async def probe(self) -> str | None:
        if self.frozen:
            await asyncio.Event().wait()  # the probe's deadline ends it
        return None


@settings(max_examples=25, deadline=None)
@given(frozen=st.lists(st.booleans(), min_size=2, max_size=4).filter(lambda f: not all(f)),
       slots=st.integers(1, 2), n=st.integers(1, 12))
def test_requests_held_by_frozen_workers_all_end_on_live_ones(frozen, slots, n) -> None:
    fakes = [Fake(f"w{i}", f) for i, f in enumerate(frozen)]
    policy = HealthPolicy(interval_s=0.01, timeout_s=0.05, misses=1, readmit_after=1)

    async def run() -> tuple[list[RequestResult], Dispatcher]:
        d = Dispatcher([PoolWorker(f.name, slots, f.send, probe=f.probe) for f in fakes],
                       clock=ModelClock(1.0).start(), health=policy)
        d.start_health()
        try:
            rows, _ = await asyncio.wait_for(
                dispatch_all(d, [RequestSpec(f"p{i}", request_id=f"r{i}") for i in range(n)]),
                60)
        finally:
            await d.stop_health()
        return rows, d

    rows, d = asyncio.run(run())
    assert [r.request_id for r in rows] == [f"r{i}" for i in range(n)]
    assert all(r.ok for r in rows)
    live = {f.name for f in fakes if not f.frozen}
    assert {r.worker for r in rows} <= live
    assert {w["worker"] for w in d.lost_workers} <= {f.name for f in fakes if f.frozen}


@pytest.mark.parametrize("bad", [{"interval_s": 0}, {"timeout_s": 1e9}, {"misses": 0},
                                 {"readmit_after": 101}])
def test_health_policy_values_have_a_range(bad) -> None:
    with pytest.raises(ConfigError, match="health check"):
        HealthPolicy(**bad)
