"""Starting a test module's own local Ray cluster on a busy machine.

Ray gives a fresh node fixed waits (``ray/_private/node.py``): the GCS's to publish its port
(``RAY_gcs_server_port_wait_time_s``, 45 s here: see conftest) and 30 s for the raylet to
register. A start can miss either: with both cores busy, or when the forked child hangs before
it runs the GCS (Ray forks with a ``preexec_fn`` while this process holds gRPC threads of an
earlier cluster's Serve handles), and then no wait is long enough. The fixture tears the
half-started node down and starts again, as the kit's own ``servers.raycluster`` does, instead
of failing a module's every test at set-up. A module that starts a cluster gives its tests
:data:`MODULE_TIMEOUT_S`, which holds every attempt.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from parallel_kit.servers.raycluster import reap_failed_start

#: the two ways Ray says a local start ran out of its fixed waits
_START_TIMEOUTS = ("timed out during startup", "Timed out waiting for file")
ATTEMPTS = 3
#: pytest-timeout for a module whose fixture starts a cluster: three attempts of at most
#: 45 s + 30 s of Ray's waits each, and the test itself
MODULE_TIMEOUT_S = 360


def start_timed_out(exc: BaseException) -> bool:
    """True when ``exc`` is Ray giving up on a local start that was only slow."""
    return any(text in str(exc) for text in _START_TIMEOUTS)


def init_local(num_gpus: int, num_cpus: int = 2, **options: Any) -> None:
    """``ray.init`` a local cluster with ``num_gpus`` logical GPUs, up to :data:`ATTEMPTS`
    times while a start times out (each half-started node shut down first).

    Raises:
        Exception: Ray's own, when a start fails for another reason or every attempt timed out.
    """
    import ray

    assert "CUDA_VISIBLE_DEVICES" not in os.environ  # conftest; Ray refuses logical GPUs
    if ray.is_initialized():  # a cluster left by an earlier test module
        ray.shutdown()
    for attempt in range(1, ATTEMPTS + 1):
        try:
            ray.init(num_gpus=num_gpus, num_cpus=num_cpus, include_dashboard=False,
                     log_to_driver=False, object_store_memory=100 * 1024 * 1024,
                     configure_logging=False, **options)
            return
        except Exception as exc:
            ray.shutdown()
            reap_failed_start(ray)
            if attempt == ATTEMPTS or not start_timed_out(exc):
                raise
            print(f"ray start {attempt}/{ATTEMPTS} timed out ({exc}); starting again",
                  file=sys.stderr)
