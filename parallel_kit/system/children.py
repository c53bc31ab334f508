"""Child processes the kit started, stopped at exit whatever path the exit took.

The kit's Redis and Celery workers run in sessions of their own (``start_new_session``) so
that a Ctrl-C on the terminal reaches the kit, which stops them in order. The context managers
that start them stop them on every normal and interrupted exit; this registry is the net
under them: a second signal that lands inside a cleanup, or an error in it, would otherwise
leave them running with no parent. :func:`stop_all` runs at interpreter exit (``atexit``).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import sys
import threading
from typing import Any

__all__ = ["die_with_parent", "forget", "register", "running", "stop_all", "stop_process"]

_lock = threading.Lock()
_children: dict[int, tuple[subprocess.Popen[Any], bool]] = {}


#: prctl(2) option: the signal a child gets when the thread that started it ends
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> Any:
    """A ``preexec_fn`` for :class:`subprocess.Popen` that makes the child get SIGKILL when the
    thread that started it ends (Linux ``prctl(PR_SET_PDEATHSIG)``, see prctl(2)), so no
    server outlives a parent killed by a signal it cannot catch; None elsewhere (then only
    :func:`stop_all`'s atexit net covers the exits Python sees)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here, not in the child
    except (OSError, AttributeError):
        return None

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))

    return preexec


def register(proc: subprocess.Popen[Any], *, group: bool = False) -> None:
    """Remember ``proc`` (``group``: stop its whole process group) until :func:`forget`."""
    with _lock:
        _children[proc.pid] = (proc, group)


def forget(proc: subprocess.Popen[Any]) -> None:
    """``proc`` was stopped by its owner."""
    with _lock:
        _children.pop(proc.pid, None)


def running() -> list[int]:
    """Process ids of registered children that have not exited."""
    with _lock:
        return [pid for pid, (p, _) in _children.items() if p.poll() is None]


def stop_all(grace_s: float = 3.0) -> None:
    """Stop every registered child still running (SIGTERM, SIGKILL after ``grace_s``)."""
    with _lock:
        items = list(_children.values())
        _children.clear()
    for proc, group in items:
        try:
            stop_process(proc, grace_s, group=group)
        except Exception:  # at exit: stop the others whatever one did
            continue


atexit.register(stop_all)


def stop_process(proc: subprocess.Popen[Any], grace_s: float = 10.0, *,
                 group: bool = False) -> int | None:
    """Stop a child process: SIGTERM, then SIGKILL if it has not exited after ``grace_s``
    clock seconds; reaped either way. Nothing happens to one that already exited.

    ``group``: signal its whole process group (a child started with ``start_new_session``,
    so that what it started stops too). Returns its exit status.
    """
    if proc.poll() is not None:
        return proc.returncode

    def signal_it(sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)

    signal_it(signal.SIGTERM)
    try:
        return proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        signal_it(signal.SIGKILL)
        return proc.wait()
