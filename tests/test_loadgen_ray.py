"""Open-loop load through the ray mode: arrivals handed to the actors at their own times."""

from __future__ import annotations

import itertools

import pytest
from _ray import MODULE_TIMEOUT_S, init_local

from parallel_kit.bench import compare
from parallel_kit.workload.arrivals import Arrivals

ray = pytest.importorskip("ray")
pytestmark = [pytest.mark.ray, pytest.mark.timeout(MODULE_TIMEOUT_S)]


@pytest.fixture(scope="module", autouse=True)
def cluster():
    """A local cluster with 3 logical GPUs for this module."""
    init_local(num_gpus=3)
    yield
    ray.shutdown()


async def test_ray_mode_takes_arrivals_over_time_on_three_gpus():
    # 1 s requests, one arriving every 0.5 s on three single-slot servers (ρ ≈ 0.67).
    c = await compare(["ray"], gpus=3, time_scale=0.02, profile="seed", num_predict=10,
                      arrivals=Arrivals(rate=2.0, n=12, process="constant"))
    run = c.runs[0]
    rows = sorted(run.requests, key=lambda r: r.scheduled_s)
    assert all(r.ok for r in rows) and len({r.worker for r in rows}) == 3
    assert all(r.queued_s >= r.scheduled_s for r in rows)
    # Each server ran one request at a time (its one slot), by the rows' own spans.
    for worker in {r.worker for r in rows}:
        spans = sorted((r.submitted_s, r.finished_s) for r in rows if r.worker == worker)
        assert all(nxt[0] >= prev[1] - 1e-9 for prev, nxt in itertools.pairwise(spans))
    # The server's own record: 10 tokens at 10 tokens/s, no request waited at a server.
    assert all(r.server_total_s == pytest.approx(1.0, abs=0.05) for r in rows)
    assert run.summary.utilisation == pytest.approx(2 / 3)
    assert run.summary.open_loop["replay_latency_mean_s"] == pytest.approx(1.0, rel=0.05)
