"""Getting a Ray cluster: join one that runs, or start a quiet local one; stop only our own.

Order: an address (``--ray-address`` / ``RAY_ADDRESS``) joins that cluster; a Ray already
initialised in this process (a notebook's earlier cell, a test fixture) is reused as it is;
otherwise a local cluster with W logical GPUs is started — quietly (no dashboard, no worker logs
on the driver, a small object store) — and kept for the next run in the same process (a notebook
pays the start-up once). :func:`shutdown` stops it; a cluster the kit did not start is never
stopped by the kit.

Checks happen before any actor is created, because an actor asking for a GPU the cluster does
not have waits forever: :func:`require_gpus` says how many GPUs exist and how to get more.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from ..errors import ConfigError, MissingDependency

__all__ = ["ClusterInfo", "check_reachable", "connect", "import_ray", "keep_signal_handlers",
           "reap_failed_start", "require_gpus", "shutdown", "started_by_kit"]


#: Clock seconds to wait for a cluster's address to accept a TCP connection before joining it
#: (``ray.init`` itself retries an unreachable GCS for minutes and does not heed Ctrl-C).
REACH_TIMEOUT_S = 10.0

#: Smallest object store Ray accepts is 75 MiB; the kit only passes small rows through it.
OBJECT_STORE_BYTES = 100 * 1024 * 1024

_lock = threading.Lock()
#: GCS address of the local cluster the kit started in this process (None: none). A cluster
#: is the kit's to stop or resize only while Ray is still connected to that very address —
#: a caller may have shut it down and started its own since.
_started_gcs: str | None = None


@dataclass(frozen=True, slots=True)
class ClusterInfo:
    """The cluster a run uses.

    Attributes:
        address: the GCS address (``host:port``).
        started_here: the kit started it in this process (and may stop it).
        gpus: GPUs in the whole cluster; nodes: alive nodes.
        connect_s: clock seconds this call took (starting a cluster costs seconds).
    """

    address: str
    started_here: bool
    gpus: float
    nodes: int
    connect_s: float


def import_ray() -> ModuleType:
    """``import ray``, or a :class:`MissingDependency` saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise MissingDependency("ray", "ray", "the ray mode") from exc
    return ray


def _current_gcs(ray: Any) -> str:
    if not ray.is_initialized():
        return ""
    try:
        return str(getattr(ray.get_runtime_context(), "gcs_address", "") or "")
    except Exception:  # a half-torn-down Ray
        return ""


def _ours(ray: Any) -> bool:
    return _started_gcs is not None and _current_gcs(ray) == _started_gcs


def started_by_kit() -> bool:
    """Whether the Ray this process uses was started by the kit (and so may be stopped by it)."""
    ray = import_ray()
    return _ours(ray)


def connect(gpus: int, address: str | None = None) -> ClusterInfo:
    """Join or start a cluster for ``gpus`` GPU workers (blocking; seconds when it starts one).

    Args:
        gpus: GPUs the run needs (a local cluster gets exactly this many logical GPUs).
        address: an existing cluster (``auto``, ``host:6379``, ``ray://host:10001``); default
            ``RAY_ADDRESS``; none → reuse this process's Ray or start a local one.

    Raises:
        ConfigError: ``gpus`` < 1, or the address cannot be reached.
        MissingDependency: Ray is not installed.
    """
    global _started_gcs
    if gpus < 1:
        raise ConfigError(f"--gpus must be at least 1, got {gpus} — the ray mode runs one "
                          f"worker per GPU")
    ray = import_ray()
    address = address or os.environ.get("RAY_ADDRESS") or None
    t0 = time.perf_counter()
    if address:
        # Always, even with Ray already up: a dead address must be named, never replaced by
        # whatever cluster this process happens to hold.
        check_reachable(address)
    with _lock:
        ours = _ours(ray)
        # Ours and too small, or ours while the caller names another cluster: it is ours to
        # stop (a cluster someone else started is never touched).
        if ours and ((address and address != "auto") or _total_gpus(ray) < gpus):
            ray.shutdown()
            ours = False
        if not ours:
            _started_gcs = None
        if not ray.is_initialized():
            if address:
                try:
                    with keep_signal_handlers():
                        ray.init(address=address, log_to_driver=False,
                                 ignore_reinit_error=True)
                except (ConnectionError, RuntimeError, ValueError) as exc:
                    raise ConfigError(
                        f"cannot join the Ray cluster at {address!r} ({exc}) — check "
                        f"`ray status` on the head node, or leave --ray-address/RAY_ADDRESS "
                        f"unset for a local cluster") from exc
            else:
                _quiet_token_auth_notice()
                # num_cpus: the actors ask for none, so the machine's cores stay for the
                # servers; logical GPUs let a laptop rehearse a GPU cluster.
                _start_local(ray, gpus)
                _started_gcs = _current_gcs(ray)
        addr = _current_gcs(ray)
        nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
        return ClusterInfo(addr, _ours(ray), _total_gpus(ray), nodes,
                           time.perf_counter() - t0)


#: local starts tried before giving up: Ray waits a fixed 30 s for its raylet to register
#: (``ray/_private/node.py``, ``raylet_start_wait_time_s``), which a busy laptop can miss
LOCAL_START_ATTEMPTS = 3
#: how Ray says a local start ran out of one of those fixed waits: the raylet's, or the GCS's
#: 30 s to publish its port (``RAY_gcs_server_port_wait_time_s`` lengthens only the latter)
_START_TIMEOUTS = ("timed out during startup", "Timed out waiting for file")


def _start_local(ray: Any, gpus: int) -> None:
    """``ray.init`` a local cluster with ``gpus`` logical GPUs, again after a start that timed
    out (torn down first), up to :data:`LOCAL_START_ATTEMPTS` times.

    Raises:
        ConfigError: every attempt timed out; the message names the cause and the fixes.
    """
    for attempt in range(1, LOCAL_START_ATTEMPTS + 1):
        try:
            with keep_signal_handlers(), _private_files():
                ray.init(num_gpus=gpus, num_cpus=os.cpu_count() or 1,
                         include_dashboard=False, log_to_driver=False,
                         object_store_memory=OBJECT_STORE_BYTES,
                         ignore_reinit_error=True, configure_logging=False)
            return
        except Exception as exc:
            if not any(text in str(exc) for text in _START_TIMEOUTS):
                raise
            with contextlib.suppress(Exception):
                ray.shutdown()
            reap_failed_start(ray)
            if attempt == LOCAL_START_ATTEMPTS:
                raise ConfigError(
                    f"Ray's local cluster did not start: it missed Ray's 30 s start waits "
                    f"{LOCAL_START_ATTEMPTS} times (the machine is busy) — close other "
                    f"work and run again, or start one first with `ray start --head "
                    f"--num-gpus {gpus}` and pass --ray-address auto") from exc


def reap_failed_start(ray: Any) -> list[int]:
    """Stop what a local start that failed left running; returns the pids killed.

    ``ray.init`` starts the GCS, the raylet and Ray's monitors as this process's children. When
    it raises before Ray holds the node (a raylet that never registered, a GCS that never
    published its port), ``ray.shutdown()`` has no node to stop and they run on until this
    process ends (measured: a GCS left logging for ten minutes in a test run). So every child
    of this process whose command line names Ray's package folder gets SIGKILL. Call it only
    with Ray not initialised: a running node's processes match too. Linux (``/proc``) only;
    elsewhere, or for a ``ray`` without ``__file__``, nothing is done.
    """
    where = getattr(ray, "__file__", None)
    proc = Path("/proc")
    if not where or not proc.is_dir():
        return []
    root = os.path.dirname(os.path.abspath(where))
    me, killed = os.getpid(), []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid != me:
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                errors="replace")
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile, or not readable
        if root in cmdline:
            with contextlib.suppress(OSError):
                os.kill(int(entry.name), signal.SIGKILL)
                killed.append(int(entry.name))
    return killed


@contextlib.contextmanager
def keep_signal_handlers() -> Iterator[None]:
    """Put back this process's SIGINT/SIGTERM handlers after the block (main thread only).

    ``ray.init`` installs its own SIGTERM handler in the driver (``sys.exit(signum)`` —
    ``ray/_private/worker.py``, ``init``), which replaced the kit's: SIGTERM then ended a run
    with no results written and, from inside the event loop, exit 134. The kit's handler
    (the CLI's one shutdown path) must win, so it is restored as soon as Ray is up.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            if handler is not None:
                signal.signal(sig, handler)


@contextlib.contextmanager
def _private_files() -> Iterator[None]:
    """Files created while a local cluster starts are private (umask 077), and Ray's token
    file is made 0600 afterwards.

    The token is what guards a local cluster: Ray cannot be held to loopback from
    ``ray.init`` — it replaces a loopback ``_node_ip_address`` with the machine's address
    (``services.resolve_ip_for_localhost``) and its gRPC servers listen on every interface
    (measured: ``tests/test_signals_all_modes.py``, docs/ROBUSTNESS.md) — so the kit leaves
    Ray's token authentication on and keeps the token private.

    Ray's token authentication (on by default for a new local cluster) writes its secret to
    ``~/.ray/auth_token`` with the process's umask — readable by every user of the machine
    (``ray/_private/authentication/authentication_token_setup.py``, ``generate_and_save_token``).
    """
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)
        token = ray_token_path()
        with contextlib.suppress(OSError):
            if token.exists() and token.stat().st_mode & 0o077:
                token.chmod(0o600)


def ray_token_path() -> Path:
    """Where Ray keeps its authentication token (``~/.ray/auth_token``, Ray's
    ``_get_default_token_path``)."""
    return Path.home() / ".ray" / "auth_token"


def check_reachable(address: str, timeout_s: float = REACH_TIMEOUT_S) -> None:
    """Fail fast, with the cause, when a cluster address cannot be reached.

    ``host:port`` and ``ray://host:port`` addresses get one TCP connect with a deadline of
    ``timeout_s`` (a plain socket call, so Ctrl-C and SIGTERM interrupt it); ``auto`` and
    other forms are left to Ray, which fails quickly when no local cluster is recorded.

    Raises:
        ConfigError: the name does not resolve, the port refuses, or nothing answers in time.
    """
    target = address.removeprefix("ray://")
    host, sep, port_text = target.rpartition(":")
    if not sep or not port_text.isdigit() or not host:
        return
    host = host.strip("[]")
    fix = ("check `ray status` on the head node and the address, or leave "
           "--ray-address/RAY_ADDRESS unset for a local cluster")
    try:
        with socket.create_connection((host, int(port_text)), timeout=timeout_s):
            pass
    except socket.gaierror as exc:
        raise ConfigError(f"cannot join the Ray cluster at {address!r}: the host name "
                          f"{host!r} does not resolve ({exc.strerror}) — {fix}") from None
    except TimeoutError:
        raise ConfigError(f"cannot join the Ray cluster at {address!r}: no answer within "
                          f"{timeout_s:g} s (a firewall, or no such machine) — {fix}") from None
    except ConnectionRefusedError:
        raise ConfigError(f"cannot join the Ray cluster at {address!r}: connection refused "
                          f"(nothing listens on port {port_text}) — {fix}") from None
    except OSError as exc:
        raise ConfigError(f"cannot join the Ray cluster at {address!r}: "
                          f"{exc.strerror or exc} — {fix}") from None


class _TokenAuthNotice(logging.Filter):
    """Drops Ray's notice that token authentication is on — its secure default for a new local
    cluster (https://docs.ray.io/en/latest/ray-security/token-auth.html), logged as a warning
    on every start while ``RAY_AUTH_MODE`` is unset. Setting that variable from here would not
    help: Ray reads it once, when it is imported. Every other record passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(
            "Token authentication is enabled for this Ray cluster")


def _quiet_token_auth_notice() -> None:
    logger = logging.getLogger("ray._private.authentication.authentication_token_setup")
    if not any(isinstance(f, _TokenAuthNotice) for f in logger.filters):
        logger.addFilter(_TokenAuthNotice())


def require_gpus(gpus: int, grace_s: float = 10.0) -> None:
    """Raise :class:`ConfigError` unless ``gpus`` GPUs are free in the cluster.

    GPUs held by actors being torn down (a run that just ended) come back within a second or
    two, so a shortfall is re-checked for up to ``grace_s`` clock seconds — never forever.
    """
    ray = import_ray()
    total = _total_gpus(ray)
    free = float(ray.available_resources().get("GPU", 0.0))
    deadline = time.monotonic() + grace_s
    while total >= gpus > free and time.monotonic() < deadline:
        time.sleep(0.1)
        free = float(ray.available_resources().get("GPU", 0.0))
    per_node = _gpus_per_node(ray)
    if total < gpus:
        raise ConfigError(
            f"asked for {gpus} GPU workers but the Ray cluster has {total:g} GPU(s) "
            f"({per_node}) — use --gpus {int(total) or 1}"
            + (" or add GPU nodes with `ray start --address=<head>:6379 --num-gpus=N`"
               if total else " or start Ray with GPUs (`ray start --head --num-gpus=N`)"))
    if free < gpus:
        raise ConfigError(
            f"asked for {gpus} GPU workers but only {free:g} of the cluster's {total:g} GPUs "
            f"are free (other actors hold the rest) — use --gpus {int(free) or 1}, or stop "
            f"the other jobs (`ray list actors`)")


def shutdown(force: bool = False) -> bool:
    """Stop the local cluster if the kit started it (or ``force``); returns whether it did."""
    global _started_gcs
    ray = import_ray()
    with _lock:
        if ray.is_initialized() and (_ours(ray) or force):
            ray.shutdown()
            _started_gcs = None
            return True
    return False


def _total_gpus(ray: Any) -> float:
    return float(ray.cluster_resources().get("GPU", 0.0))


def _gpus_per_node(ray: Any) -> str:
    parts = []
    for n in ray.nodes():
        if n.get("Alive"):
            name = n.get("NodeManagerHostname") or n.get("NodeManagerAddress") or "?"
            parts.append(f"{name}: {n.get('Resources', {}).get('GPU', 0):g}")
    return ", ".join(parts) or "no alive nodes"
