"""The ray mode on a two-node cluster (ray.cluster_utils.Cluster: a head and a second node)."""

from __future__ import annotations

import pytest

from parallel_kit.modes.base import ModeContext
from parallel_kit.modes.options import RayOptions, ServerOptions
from parallel_kit.modes.ray_gpu import run_ray
from parallel_kit.records import RequestSpec

ray = pytest.importorskip("ray")
cluster_utils = pytest.importorskip("ray.cluster_utils")
pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(180)]


def _start_two_nodes(attempts: int = 3):
    """A head and a second node, each with 2 logical GPUs. Ray waits a fixed 30 s for a raylet
    to register (``ray._private.node``); with both cores busy a start can miss it, so a failed
    start is torn down and tried again, up to ``attempts`` times."""
    for attempt in range(1, attempts + 1):
        cluster = cluster_utils.Cluster(initialize_head=False)
        try:
            cluster.add_node(num_gpus=2, num_cpus=1, include_dashboard=False,
                             object_store_memory=100 * 1024 * 1024)
            cluster.add_node(num_gpus=2, num_cpus=1, object_store_memory=100 * 1024 * 1024)
            cluster.wait_for_nodes()
            return cluster
        except Exception:
            cluster.shutdown()
            if attempt == attempts:
                raise
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def two_nodes():
    if ray.is_initialized():  # a cluster left by an earlier test module
        ray.shutdown()
    cluster = _start_two_nodes()
    yield cluster
    ray.shutdown()
    cluster.shutdown()


async def test_work_lands_on_both_nodes_and_rows_say_which(two_nodes) -> None:
    # Joined by address, as on a real cluster (`--ray-address` / RAY_ADDRESS).
    ctx = ModeContext([], backend="sim", time_scale=0.02, gpus=4,
                      ray=RayOptions(address=two_nodes.address),
                      servers=ServerOptions(launch="sim"))
    run = await run_ray([RequestSpec(f"p{i}", request_id=f"r{i}") for i in range(8)], ctx)
    assert run.summary.ok == 8 and run.summary.workers == 4
    assert len({r.node for r in run.requests}) == 2
    # both nodes have a GPU 0 and 1: the worker labels carry the node to stay distinct
    assert len({r.worker for r in run.requests}) == 4
