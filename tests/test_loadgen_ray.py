"""Open-loop load through the ray mode: arrivals handed to the actors at their own times."""

from __future__ import annotations

import os

import pytest

from parallel_kit.arrivals import Arrivals
from parallel_kit.bench import compare

ray = pytest.importorskip("ray")
pytestmark = [pytest.mark.ray, pytest.mark.timeout(180)]


@pytest.fixture(scope="module", autouse=True)
def cluster():
    """A local cluster with 3 logical GPUs for this module."""
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_gpus=3, num_cpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=100 * 1024 * 1024, configure_logging=False)
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
    # Clockwork arrivals at two thirds of capacity: nobody waits for a slot (a little slack
    # for the actors' round trips on a busy machine).
    assert max(r.finished_s - r.scheduled_s for r in rows) < 1.5
    assert run.summary.utilisation == pytest.approx(2 / 3)
    assert run.summary.open_loop["replay_latency_mean_s"] == pytest.approx(1.0, rel=0.05)
