"""A local Ray start that misses one of Ray's fixed 30 s waits (the raylet's, the GCS's) is torn down and tried again; one
that keeps missing it ends in one clear line. (The stand-in replaces only ``ray.init``'s timing
out, which cannot be provoked on demand; the retry and the message are the kit's.)"""

from __future__ import annotations

import pytest

from parallel_kit.errors import ConfigError
from parallel_kit.servers import raycluster

TIMEOUT = Exception("The current node timed out during startup. This could happen because some "
                    "of the raylet failed to startup or the GCS has become overloaded.")


class _Ray:
    def __init__(self, failures: int, error: Exception = TIMEOUT) -> None:
        self.failures, self.error = failures, error
        self.inits = self.shutdowns = 0

    def init(self, **kwargs: object) -> None:
        self.inits += 1
        assert kwargs["num_gpus"] == 3
        if self.inits <= self.failures:
            raise self.error

    def shutdown(self) -> None:
        self.shutdowns += 1


#: the GCS's own wait for its port file (``ray/_private/node.py``), missed under load in CI
GCS_TIMEOUT = RuntimeError("Timed out waiting for file /tmp/ray/session_x/gcs_server_port_y")


@pytest.mark.parametrize("error", [TIMEOUT, GCS_TIMEOUT], ids=["raylet", "gcs"])
@pytest.mark.parametrize("failures", range(raycluster.LOCAL_START_ATTEMPTS))
def test_a_start_that_timed_out_is_tried_again(failures: int, error: Exception) -> None:
    ray = _Ray(failures, error)
    raycluster._start_local(ray, 3)
    assert ray.inits == failures + 1 and ray.shutdowns == failures


def test_a_start_that_keeps_timing_out_says_why_and_what_to_do() -> None:
    ray = _Ray(raycluster.LOCAL_START_ATTEMPTS)
    with pytest.raises(ConfigError) as err:
        raycluster._start_local(ray, 3)
    msg = str(err.value)
    assert "30 s" in msg and "ray start --head --num-gpus 3" in msg and "\n" not in msg
    assert ray.inits == raycluster.LOCAL_START_ATTEMPTS


def test_another_error_is_not_retried() -> None:
    ray = _Ray(1, ValueError("bad argument"))
    with pytest.raises(ValueError):
        raycluster._start_local(ray, 3)
    assert ray.inits == 1


def test_a_failed_start_leaves_none_of_rays_programs_running(tmp_path) -> None:
    # Stand-ins for what a start that raised left: children whose command line names Ray's
    # package folder (the GCS binary and the monitors live there), beside a child of our own.
    import subprocess
    import sys

    ray = pytest.importorskip("ray")
    sleeper = [sys.executable, "-c", "import time, sys; time.sleep(120)"]
    leftover = subprocess.Popen([*sleeper, ray.__file__])
    ours = subprocess.Popen([*sleeper, str(tmp_path)])
    try:
        killed = raycluster.reap_failed_start(ray)
        assert leftover.pid in killed and ours.pid not in killed
        assert leftover.wait(timeout=10) == -9
        assert ours.poll() is None
    finally:
        for p in (leftover, ours):
            p.kill()
            p.wait()
