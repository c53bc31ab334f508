"""Test-wide hygiene: no real Ollama is assumed, Ray sees logical GPUs only."""

from __future__ import annotations

import os

import matplotlib
import pytest

matplotlib.use("Agg")

# Ray refuses logical GPUs while CUDA_VISIBLE_DEVICES is set, and must not phone home.
os.environ.pop("CUDA_VISIBLE_DEVICES", None)
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
# Ray's GCS gets 30 s to publish its port; with both cores busy it has missed that, so 45 s.
# Not more: a start whose forked child hung never publishes, and is better tried again
# (tests/_ray.py); the raylet's own 30 s wait is fixed and tried again the same way.
os.environ.setdefault("RAY_gcs_server_port_wait_time_s", "45")
# Tests never talk to a user's Ollama by accident.
os.environ.setdefault("PARALLEL_KIT_BACKEND", "sim")


# -- shared Ray + Serve (rayserve and production tests) --------------------------------------
# Ray start-up costs seconds on a small machine, and a Serve application more: one cluster and
# one application for the session. Another test module may shut Ray down (the ray tests start
# their own cluster), so the fixture re-creates what is gone when it is asked again.

SERVE_TIME_SCALE = 0.02
#: Logical GPUs of the shared cluster: 3 for the shared application, 3 for a test's own one.
SERVE_CLUSTER_GPUS = 6


class _ServeSession:
    def __init__(self) -> None:
        self.app = None
        self._cm = None
        self._loop = None

    def cluster(self) -> str:
        import ray

        if not ray.is_initialized():
            self.app = None
            from _ray import init_local

            init_local(num_gpus=SERVE_CLUSTER_GPUS)
        return str(ray.get_runtime_context().gcs_address)

    def shared_app(self):
        """Three replicas, each with an embedded seed-profile simulator (time scale 0.02)."""
        import asyncio

        from parallel_kit.modes.base import ModeContext, ServerOptions
        from parallel_kit.modes.rayserve import open_serve_app

        self.cluster()
        if self.app is not None and _app_running(self.app.name):
            return self.app
        ctx = ModeContext([], backend="sim", time_scale=SERVE_TIME_SCALE, gpus=3,
                          servers=ServerOptions(launch="sim", profile="seed"))
        if self._loop is None:  # a loop of its own, so tests may ask from inside theirs
            import threading

            self._loop = asyncio.new_event_loop()
            threading.Thread(target=self._loop.run_forever, daemon=True).start()
        self._cm = open_serve_app(ctx, name="pk-test-shared", keep=True)
        self.app = asyncio.run_coroutine_threadsafe(self._cm.__aenter__(), self._loop).result()
        return self.app

    def close(self) -> None:
        import ray

        if ray.is_initialized():
            from ray import serve

            serve.shutdown()
            ray.shutdown()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)


def _app_running(name: str) -> bool:
    from ray import serve

    try:
        status = serve.status().applications.get(name)
    except Exception:
        return False
    return status is not None and str(status.status).endswith("RUNNING")


@pytest.fixture(scope="session")
def serve_session():
    """The session's Ray cluster (6 logical GPUs) and its shared Serve application."""
    pytest.importorskip("ray.serve")
    session = _ServeSession()
    yield session
    session.close()


# -- shared production stack: a real Redis, a Celery worker process, the shared Serve app ----
#: Requests here take 0.2 s on the clock; the request timeout bounds a task, and the broker's
#: visibility timeout (a lost worker's task comes back after it) is kept short for the tests.
STACK_REQUEST_TIMEOUT_S = 3.0
STACK_VISIBILITY_TIMEOUT_S = 4.0


class _ProductionSession:
    """Redis (started by the kit) for the session, and a stack on the session's Serve app.

    A Celery worker joins the Ray cluster that ran when it started; a ray test module that
    shuts Ray down leaves it calling a cluster that is gone. So each test asks :meth:`stack`,
    which starts fresh workers on the shared application of the cluster running now whenever
    the one the stack's workers joined is no longer it.
    """

    def __init__(self, serve_session: _ServeSession) -> None:
        from parallel_kit.production.celery_app import configure
        from parallel_kit.production.redis_server import RedisServer

        self.serve_session = serve_session
        self.redis = RedisServer.start()
        configure(self.redis.url, request_timeout_s=STACK_REQUEST_TIMEOUT_S,
                  visibility_timeout_s=STACK_VISIBILITY_TIMEOUT_S)
        self._stack = None

    def stack(self):
        import asyncio

        from parallel_kit.modes.stack_options import StackOptions
        from parallel_kit.production.celery_app import configure
        from parallel_kit.production.stack import Stack, warm_up
        from parallel_kit.production.worker import wait_for_workers

        # A production run since (its own Redis, now stopped) pointed this process's Celery
        # app elsewhere: point it back at the session's Redis.
        configure(self.redis.url, request_timeout_s=STACK_REQUEST_TIMEOUT_S,
                  visibility_timeout_s=STACK_VISIBILITY_TIMEOUT_S)
        app = self.serve_session.shared_app()
        if self._stack is not None and self._stack.app is app:
            return self._stack
        self._stop_workers()
        settings = StackOptions(request_timeout_s=STACK_REQUEST_TIMEOUT_S,
                                visibility_timeout_s=STACK_VISIBILITY_TIMEOUT_S)
        stack = Stack(self.redis.url, app, settings=settings, concurrency=8)
        self._stack = stack
        stack.start_worker()
        wait_for_workers(stack.workers)
        asyncio.run(warm_up(stack))
        return stack

    def _stop_workers(self) -> None:
        if self._stack is not None:
            for w in self._stack.workers:
                w.stop()
            self._stack = None

    def close(self) -> None:
        try:
            self._stop_workers()
        finally:
            self.redis.stop()


@pytest.fixture(scope="session")
def _production_session(serve_session):
    pytest.importorskip("celery")
    session = _ProductionSession(serve_session)
    yield session
    session.close()


@pytest.fixture
def production_stack(_production_session):
    """Redis (started by the kit) + one Celery worker process + the session's Serve app, on the
    Ray cluster running now (see :class:`_ProductionSession`)."""
    return _production_session.stack()
