"""The kit stops or resizes only the Ray cluster it started, and a named address is always
checked — whatever cluster this process already holds (a real local Ray, logical GPUs)."""

from __future__ import annotations

import os
import socket

import pytest
from _ray import MODULE_TIMEOUT_S, init_local

from parallel_kit.errors import ConfigError
from parallel_kit.servers import raycluster

ray = pytest.importorskip("ray")
#: a test may start two clusters (the kit's, then the caller's), each with its retries
pytestmark = [pytest.mark.ray, pytest.mark.timeout(2 * MODULE_TIMEOUT_S)]


@pytest.fixture()
def clean_ray():
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    if ray.is_initialized():
        ray.shutdown()
    yield
    raycluster.shutdown()
    if ray.is_initialized():
        ray.shutdown()


def _dead_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def test_a_cluster_the_caller_started_after_the_kits_is_never_resized(clean_ray) -> None:
    first = raycluster.connect(1)
    assert first.started_here and raycluster.started_by_kit()
    # The caller replaces the kit's cluster with its own, as a notebook or test module may.
    ray.shutdown()
    init_local(3, num_cpus=1)  # started again if a busy machine made it miss Ray's waits
    mine = str(ray.get_runtime_context().gcs_address)
    info = raycluster.connect(5)
    assert not info.started_here and not raycluster.started_by_kit()
    assert info.address == mine and info.gpus == 3
    with pytest.raises(ConfigError, match="asked for 5 GPU workers but the Ray cluster has 3"):
        raycluster.require_gpus(5, grace_s=0)
    assert not raycluster.shutdown() and ray.is_initialized()


def test_a_named_address_that_does_not_answer_is_named_even_with_ray_up(clean_ray) -> None:
    raycluster.connect(1)
    dead = _dead_address()
    with pytest.raises(ConfigError, match="refused") as err:
        raycluster.connect(1, dead)
    assert dead in str(err.value) and "\n" not in str(err.value)
