"""The Celery side of the production stack: one app, one task, and the settings that matter.

Broker and result backend are the same real Redis (:mod:`.redis_server`). The task
``parallel_kit.infer`` runs in a Celery worker (:mod:`.worker`): it calls the Ray Serve
application (:mod:`parallel_kit.modes.rayserve`) through a ``DeploymentHandle`` and returns the
request's row (a :class:`~parallel_kit.records.RequestResult` as a dict), which Celery stores in
Redis — so any API process answers ``GET /tasks/{id}`` from Redis.

Delivery (Celery's and kombu's own mechanisms, no retry loop of the kit's):

* ``task_acks_late=True``: a task is acknowledged when it *finished*, so a worker that dies
  mid-task leaves it unacknowledged and it is delivered again — **at least once**: a request
  may reach Ollama twice after a worker loss. Each delivery is counted in Redis
  (:data:`DELIVERIES_KEY`) and a redelivered row says so (``retries`` and ``hops``), so
  duplicates are counted, not hidden.
* ``task_reject_on_worker_lost=True``: a prefork child that dies is requeued at once (with the
  ``threads`` pool the kit uses, the whole worker process is the unit that dies).
* ``visibility_timeout``: with a Redis broker an unacknowledged message goes back to the queue
  only after this many seconds (kombu's default: one hour). It must exceed the longest a task
  may run, or a long request still running is handed to a second worker and reaches Ollama
  twice (https://github.com/celery/celery/issues/5935). The kit bounds every request by
  ``request_timeout_s`` (the handle call's timeout) and sets the visibility timeout to that
  plus a margin (:func:`visibility_timeout_for`); kombu's restore sweep runs every second
  (``unacked_restore_interval``/``unacked_restore_throttle``) so a lost task is back within
  about a second of its timeout. Sources: kombu's Redis transport options,
  https://docs.celeryq.dev/projects/kombu/en/stable/reference/kombu.transport.redis.html, and
  Celery's "Using Redis" caveats, https://docs.celeryq.dev/en/stable/getting-started/backends-and-brokers/redis.html.
* A replica lost mid-request (Serve does not re-send it): the task is re-queued with Celery's
  ``Task.retry`` (counted in ``retries``) after the same growing delays as the ``rayserve``
  driver's (:func:`~parallel_kit.modes.rayserve.lost_retry_delay`, at most
  :data:`~parallel_kit.modes.rayserve.LOST_RETRIES` times; then a failed row saying so), and
  Serve's router sends it to a live replica.
* ``worker_prefetch_multiplier=1``: a worker reserves no more tasks than it runs, so a queued
  task waits in Redis, where any worker can take it.
* A worker *process* that dies (SIGKILL, OOM) is noticed by the stack's supervisor
  (:mod:`.supervisor`) within a fraction of a second, not after the visibility timeout: each
  worker records the tasks it holds (received, not yet acknowledged) with their delivery tags
  in Redis (:data:`HELD_KEY`, written on Celery's ``task_received`` signal, removed on
  ``task_postrun``), and the supervisor hands those messages back to the queue at once with
  kombu's ``QoS.restore_by_tag`` — the same call kombu makes when the visibility timeout
  passes. A task delivered :data:`MAX_DELIVERIES` times (every worker that ran it died) ends as
  a failed row instead of killing the next worker too.
* A worker process that is alive but stuck (SIGSTOP, a hung C call, a machine that swaps) holds
  its tasks just as well, and ``Popen.poll`` cannot see it. Each worker therefore beats: a
  thread started on Celery's ``worker_ready`` signal increments :data:`BEAT_KEY` in Redis every
  :data:`BEAT_S` seconds; the supervisor kills a worker whose count stopped moving for
  :data:`~parallel_kit.production.supervisor.STALL_S` seconds, and its tasks come back by the
  path above. (Celery's own worker heartbeats are events for monitors, ``--without-heartbeat``
  here; nothing in Celery acts on a missing one.)
* A request past the request timeout (``serve --max-request-s``) is *cancelled* at its replica
  (``DeploymentResponse.cancel()``: Ray cancels the replica's asyncio task, which closes the
  stream to Ollama, so Ollama frees the slot) and ends as a failed row saying so.

Unknown ids: Celery reports an id it never saw as ``PENDING``
(https://github.com/celery/celery/issues/4450); the API therefore keeps its own record of each
accepted id (:data:`TASK_KEY`) and answers 404 for ids without one, 410 once a finished task's
result expired (``result_expires``).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from typing import Any

from celery import Celery, signals

__all__ = ["BEAT_KEY", "BEAT_S", "BEAT_TTL_S", "DELIVERIES_KEY", "EPOCH_KEY", "HELD_KEY", "MAX_DELIVERIES", "PING_NAME", "QUEUE", "REQUEST_TIMEOUT_S", "RESULT_EXPIRES_S",
           "STATS_KEY", "TASK_KEY", "TASK_NAME", "app", "beating_workers", "configure", "visibility_timeout_for"]

TASK_NAME = "parallel_kit.infer"
PING_NAME = "parallel_kit.ping"
QUEUE = "parallel_kit"
#: Longest a request may take (clock seconds) before it is a failed row; bounds the task.
REQUEST_TIMEOUT_S = 600.0
#: Seconds a finished task's result stays in Redis (then ``GET /tasks/{id}`` answers 410).
RESULT_EXPIRES_S = 24 * 3600
#: Redis keys the kit keeps beside Celery's own (``{id}`` is the task id).
TASK_KEY = "parallel_kit:task:{id}"
DELIVERIES_KEY = "parallel_kit:deliveries:{id}"
STATS_KEY = "parallel_kit:stats"
EPOCH_KEY = "parallel_kit:epoch"
#: The tasks a worker holds (hash: task id → kombu delivery tag), ``{worker}`` its hostname.
HELD_KEY = "parallel_kit:held:{worker}"
#: A worker's heartbeat (a counter it increments every :data:`BEAT_S` seconds), ``{worker}``
#: its hostname; it expires when the worker is gone.
BEAT_KEY = "parallel_kit:beat:{worker}"
#: Seconds between two heartbeats of a worker.
BEAT_S = 1.0
#: Seconds a heartbeat key lives: five beats (a key that is there is a live worker).
BEAT_TTL_S = 5.0
#: Deliveries of one task after which it is a failed row (each worker that ran it died).
MAX_DELIVERIES = 3

#: Mark a task finished once (a redelivered task may finish twice), count it, and give back
#: the prompt bytes it held (``serve --max-held-mb``). KEYS: task record, stats;
#: ARGV: time, "completed" | "failed".
_FINISH_LUA = """
if redis.call('hsetnx', KEYS[1], 'finished', ARGV[1]) == 1 then
  local held = redis.call('hget', KEYS[1], 'bytes')
  if held then redis.call('hincrby', KEYS[2], 'held_bytes', -tonumber(held)) end
  redis.call('hincrby', KEYS[2], ARGV[2], 1)
  return 1
end
return 0
"""

REDIS_URL_ENV = "PARALLEL_KIT_REDIS_URL"
REQUEST_TIMEOUT_ENV = "PARALLEL_KIT_REQUEST_TIMEOUT_S"
VISIBILITY_TIMEOUT_ENV = "PARALLEL_KIT_VISIBILITY_TIMEOUT_S"


def visibility_timeout_for(request_timeout_s: float) -> float:
    """The broker's visibility timeout for requests bounded by ``request_timeout_s`` (clock s).

    The longest request plus a margin for the hops around it (a Celery retry re-publishes the
    task, which starts a new visibility window): ``request_timeout_s × 1.25 + 5``.
    """
    return request_timeout_s * 1.25 + 5.0


app = Celery("parallel_kit")


def configure(redis_url: str, *, request_timeout_s: float | None = None,
              visibility_timeout_s: float | None = None,
              result_expires_s: float = RESULT_EXPIRES_S) -> Celery:
    """Point :data:`app` at ``redis_url`` with the delivery settings of the module docstring.

    Raises:
        ConfigError: a visibility timeout not longer than the request timeout.
    """
    from ..errors import ConfigError

    timeout = float(request_timeout_s or os.environ.get(REQUEST_TIMEOUT_ENV) or
                    REQUEST_TIMEOUT_S)
    visibility = float(visibility_timeout_s or os.environ.get(VISIBILITY_TIMEOUT_ENV) or
                       visibility_timeout_for(timeout))
    if visibility <= timeout:
        raise ConfigError(f"visibility timeout {visibility:g} s must exceed the request timeout "
                          f"{timeout:g} s, or a request still running is delivered twice "
                          f"(celery/celery#5935) — raise it or lower the request timeout")
    if app.conf.broker_url and str(app.conf.broker_url) != redis_url:
        _forget_connections()  # a second stack in this process (a sweep, a notebook)
    app.conf.update(
        broker_url=redis_url,
        result_backend=redis_url,
        task_default_queue=QUEUE,
        task_serializer="json", result_serializer="json", accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_track_started=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        # Ray's driver needs real stdout/stderr file descriptors (faulthandler).
        worker_redirect_stdouts=False,
        worker_send_task_events=False,
        result_expires=int(result_expires_s),
        result_extended=False,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=2.0,
        # A publish to a Redis that is gone fails within about a second (the API answers 503).
        task_publish_retry_policy={"max_retries": 1, "interval_start": 0.1,
                                   "interval_step": 0.2, "interval_max": 0.5},
        broker_transport_options={"visibility_timeout": visibility,
                                  "unacked_restore_interval": 1,
                                  "unacked_restore_throttle": 1,
                                  # the sweep's lock in Redis: a worker killed while holding
                                  # it must not stop every sweep for kombu's default 300 s
                                  "unacked_mutex_expire": 10,
                                  "socket_timeout": 5.0, "socket_connect_timeout": 2.0},
        result_backend_transport_options={"socket_timeout": 5.0,
                                          "socket_connect_timeout": 2.0},
        # A worker that cannot store a result while Redis is away retries with exponential
        # backoff (up to 2 s apart, about a minute in all) instead of dropping the result,
        # which left the caller waiting for good ("result_backend_always_retry",
        # https://docs.celeryq.dev/en/stable/userguide/configuration.html#result-backend-always-retry).
        result_backend_always_retry=True,
        result_backend_max_retries=40,
        result_backend_base_sleep_between_retries_ms=100,
        result_backend_max_sleep_between_retries_ms=2000,
        redis_socket_timeout=5.0, redis_socket_connect_timeout=2.0,
        parallel_kit_request_timeout_s=timeout,
        parallel_kit_visibility_timeout_s=visibility,
    )
    return app


def _forget_connections() -> None:
    """Drop what Celery keeps connected to an earlier ``broker_url``: the producer pools of
    the app and of its control mailbox (what Celery's own ``_after_fork`` hooks drop) and each
    thread's result backend. Without it a
    second stack in the same process publishes to the first one's Redis, which is gone."""
    # Dropped, not closed: kombu's registry (``kombu.pools.connections``) keeps one pool per
    # broker URL and hands the same one back when the app returns to that URL.
    app._pool = None
    with contextlib.suppress(AttributeError, KeyError):
        app.__dict__["amqp"]._producer_pool = None
    with contextlib.suppress(AttributeError, KeyError):  # what Control._after_fork drops
        del app.__dict__["control"].mailbox.producer_pool
    app._local = threading.local()


# -- the worker side -------------------------------------------------------------------------

_clients: dict[str, Any] = {}
_handles: dict[str, Any] = {}
_handles_lock = threading.Lock()


def _redis() -> Any:
    """One Redis client per worker process (redis-py's client is thread-safe: it takes a
    connection from its pool for each command), so a task thread never pays a connect."""
    url = str(app.conf.broker_url)
    with _handles_lock:
        client = _clients.get(url)
        if client is None:
            import redis

            client = _clients[url] = redis.Redis.from_url(url)
    return client


def _handle(app_name: str) -> Any:
    """The Serve application's handle in this worker process (Ray joined once)."""
    with _handles_lock:
        handle = _handles.get(app_name)
        if handle is None:
            import ray
            from ray import serve

            if not ray.is_initialized():
                ray.init(address=os.environ.get("RAY_ADDRESS") or "auto", log_to_driver=False,
                         configure_logging=False)
            from ..modes.rayserve import quiet_serve_logs

            quiet_serve_logs()
            handle = serve.get_app_handle(app_name)
            _handles[app_name] = handle
        return handle


def _lost_errors() -> tuple[type[BaseException], ...]:
    from ..modes.rayserve import ray_lost_errors as lost

    return lost()


class ReplicaLost(Exception):
    """A Serve replica died with the request inside it (the task is retried by Celery)."""


def _count_delivery(task_id: str) -> int:
    """Count one more delivery of ``task_id`` in Redis (one round trip); 1 if Redis failed."""
    try:
        key = DELIVERIES_KEY.format(id=task_id)
        pipe = _redis().pipeline(transaction=False)
        pipe.incr(key)
        pipe.expire(key, int(app.conf.result_expires or RESULT_EXPIRES_S))
        return int(pipe.execute()[0])
    except Exception:  # counting is best effort; the request still runs
        return 1


@app.task(name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True,
          max_retries=None)
def infer(self: Any, spec: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
    """Run one request through the Serve application; return its row as a dict.

    Args:
        spec: a :class:`~parallel_kit.records.RequestSpec` as a dict.
        run: ``app`` (the Serve application's name), ``epoch`` (wall-clock origin of the
            rows), ``time_scale``, ``submitted_s`` and ``hops`` (``accepted`` so far),
            ``model``.
    """
    from ..modes.ray_gpu import row_from_wire, spec_to_wire
    from ..modes.rayserve import LOST_RETRIES, lost_retry_delay
    from ..records import RequestSpec

    epoch, scale = float(run["epoch"]), float(run["time_scale"])
    picked = (time.time() - epoch) / scale
    task_id = self.request.id
    retries = int(self.request.retries or 0)
    hops = {**run.get("hops", {}), "picked_up": picked}
    request = RequestSpec(**spec)
    timeout = float(app.conf.get("parallel_kit_request_timeout_s") or REQUEST_TIMEOUT_S)
    deliveries = 1
    if (self.request.delivery_info or {}).get("redelivered"):
        deliveries = _count_delivery(task_id)
        if deliveries > MAX_DELIVERIES:
            row = _failed_row(request, run, hops, f"delivered {deliveries - 1} times and "
                              f"each Celery worker running it died — not sent again (see "
                              f"the workers' logs)")
            row.retries = deliveries - 2
            row.hops["deliveries"] = float(deliveries)
            return row.to_dict()
    response = None
    try:
        response = _handle(run["app"]).remote(spec_to_wire(request), run["submitted_s"],
                                              epoch, hops)
        # Counted while Serve routes the request (off its critical path), before the task
        # can finish: a redelivered task finds the count of the deliveries before it.
        if deliveries == 1:
            deliveries = _count_delivery(task_id)
        out = response.result(timeout_s=timeout)
    except _lost_errors() as exc:
        if retries < LOST_RETRIES:  # Celery's retry: the task goes back on the queue
            raise self.retry(exc=ReplicaLost(f"{type(exc).__name__}: "
                                             f"{str(exc).splitlines()[0]}"),
                             countdown=lost_retry_delay(retries)) from None
        row = _failed_row(request, run, hops, f"gave up after {retries} retries: the "
                          f"replicas were lost ({type(exc).__name__})")
    except TimeoutError:
        # Cancel at the replica, not just abandon: Ray cancels the replica's asyncio task,
        # whose stream to Ollama closes, and Ollama frees the slot.
        with contextlib.suppress(Exception):
            if response is not None:
                response.cancel()
        row = _failed_row(request, run, hops,
                          f"no answer within the request timeout ({timeout:g} s, serve "
                          f"--max-request-s) — cancelled at its replica; ask for fewer "
                          f"tokens (num_predict) or raise the bound")
    except Exception as exc:  # an error inside the replica: a failed row, never a lost one
        text = str(exc).strip()
        row = _failed_row(request, run, hops, f"error inside the Serve replica: "
                          f"{text.splitlines()[0] if text else type(exc).__name__}")
    else:
        row = row_from_wire(out)
    row.mode = "production"
    # Every delivery after the first is a Celery retry (a lost replica) or a redelivery (a
    # lost worker): either may have reached Ollama before, so it is counted.
    row.retries += max(deliveries - 1, retries)
    row.hops = {**row.hops, "worker_done": (time.time() - epoch) / scale}
    if deliveries > 1:
        row.hops["deliveries"] = float(deliveries)
    return row.to_dict()


def _failed_row(request: Any, run: dict[str, Any], hops: dict[str, float], error: str) -> Any:
    """A failed :class:`~parallel_kit.records.RequestResult` of ``request`` (finished now)."""
    from ..records import RequestResult

    epoch, scale = float(run["epoch"]), float(run["time_scale"])
    return RequestResult(request_id=request.request_id, mode="production", prompt=request.prompt,
                         model=request.model or run.get("model", ""),
                         submitted_s=run["submitted_s"], finished_s=(time.time() - epoch) / scale,
                         ok=False, error=error, hops=dict(hops)).finalize()


@app.task(name=PING_NAME)
def ping(app_name: str) -> dict[str, Any]:
    """Join Ray and reach the Serve application (the stack's warm-up); where it answered.

    Also takes a connection into the worker's Redis pool, as a task's delivery count does.
    """
    with contextlib.suppress(Exception):  # the run reports Redis trouble; warm-up need not
        _redis().ping()
    return dict(_handle(app_name).describe.remote().result(timeout_s=120))


@signals.task_success.connect
def _count_success(sender: Any = None, result: Any = None, **_: Any) -> None:
    """After Celery stored the result: mark the task finished (the API's 410 needs it)."""
    if getattr(sender, "name", "") != TASK_NAME:
        return
    ok = bool(result.get("ok")) if isinstance(result, dict) else False
    _finish(sender.request.id, "completed" if ok else "failed")


def _finish(task_id: str, outcome: str) -> None:
    """Mark ``task_id`` finished once (:data:`_FINISH_LUA`); best effort."""
    with contextlib.suppress(Exception):
        _redis().eval(_FINISH_LUA, 2, TASK_KEY.format(id=task_id), STATS_KEY,
                      json.dumps(time.time()), outcome)


@signals.task_failure.connect
def _count_failure(sender: Any = None, task_id: str | None = None, **_: Any) -> None:
    if getattr(sender, "name", "") != TASK_NAME or task_id is None:
        return
    _finish(task_id, "failed")


@signals.task_received.connect
def _hold(sender: Any = None, request: Any = None, **_: Any) -> None:
    """A worker received a task (reserved or about to run): record its delivery tag, so the
    supervisor can hand it back at once if this worker process dies (module docstring)."""
    if request is None or getattr(request, "name", "") != TASK_NAME:
        return
    with contextlib.suppress(Exception):
        tag = request.message.delivery_tag
        key = HELD_KEY.format(worker=request.hostname)
        pipe = _redis().pipeline(transaction=False)
        pipe.hset(key, request.id, str(tag))
        pipe.expire(key, int(app.conf.get("parallel_kit_visibility_timeout_s") or 3600) + 60)
        pipe.execute()


@signals.task_postrun.connect
def _release(sender: Any = None, task_id: str | None = None, **_: Any) -> None:
    """The task ran (its message is acknowledged next, ``acks_late``): no longer held."""
    if getattr(sender, "name", "") != TASK_NAME or task_id is None:
        return
    with contextlib.suppress(Exception):
        _redis().hdel(HELD_KEY.format(worker=sender.request.hostname), task_id)


_url = os.environ.get(REDIS_URL_ENV)
if _url:  # `celery -A parallel_kit.production.celery_app worker` with the URL in the env
    configure(_url)


def beating_workers() -> list[str]:
    """The hostnames of the workers whose heartbeat key is in Redis now (beat within
    :data:`BEAT_TTL_S` seconds).

    Raises:
        redis.exceptions.RedisError: Redis does not answer.
    """
    prefix = BEAT_KEY.format(worker="")
    return sorted(k.decode()[len(prefix):] if isinstance(k, bytes) else str(k)[len(prefix):]
                  for k in _redis().scan_iter(match=BEAT_KEY.format(worker="*"), count=100))


@signals.worker_ready.connect
def _start_beating(sender: Any = None, **_: Any) -> None:
    """The worker consumes now: beat until its process ends (module docstring)."""
    hostname = getattr(sender, "hostname", None)
    if not hostname:
        return
    key = BEAT_KEY.format(worker=hostname)

    def beat() -> None:
        while True:
            with contextlib.suppress(Exception):  # Redis away: the supervisor knows that
                pipe = _redis().pipeline(transaction=False)
                pipe.incr(key)
                pipe.expire(key, int(BEAT_TTL_S))
                pipe.execute()
            time.sleep(BEAT_S)

    threading.Thread(target=beat, name="pk-worker-beat", daemon=True).start()
