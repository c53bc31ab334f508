"""Child processes the kit started, stopped at exit whatever path the exit took.

The kit's Redis and Celery workers run in sessions of their own (``start_new_session``) so
that a Ctrl-C on the terminal reaches the kit, which stops them in order. The context managers
that start them stop them on every normal and interrupted exit; this registry is the net
under them: a second signal that lands inside a cleanup, or an error in it, would otherwise
leave them running with no parent. :func:`stop_all` runs at interpreter exit (``atexit``).
"""

from __future__ import annotations

import atexit
import subprocess
import threading
from typing import Any

__all__ = ["forget", "register", "running", "stop_all"]

_lock = threading.Lock()
_children: dict[int, tuple[subprocess.Popen[Any], bool]] = {}


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
    from .launcher import stop_process

    with _lock:
        items = list(_children.values())
        _children.clear()
    for proc, group in items:
        try:
            stop_process(proc, grace_s, group=group)
        except Exception:  # at exit: stop the others whatever one did
            continue


atexit.register(stop_all)
