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
from collections.abc import Sequence
from typing import Any

__all__ = ["die_with_parent", "forget", "register", "running", "stop_all", "stop_process"]

_lock = threading.Lock()
_children: dict[int, tuple[subprocess.Popen[Any], bool]] = {}


#: Run by a fresh interpreter between the kit and a child, with argv ``[parent pid, program,
#: args...]``: ask for SIGKILL when the thread that started it ends (prctl(2)
#: ``PR_SET_PDEATHSIG``, option 1, kept across exec), end if that parent is already gone (it
#: may have died before the call), then become the program. A program that cannot be run is
#: one line on stderr and status 127, as a shell gives.
_PDEATHSIG_EXEC = """\
import ctypes, os, signal, sys
ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))
if os.getppid() != int(sys.argv[1]):
    os._exit(1)
try:
    os.execvp(sys.argv[2], sys.argv[2:])
except OSError as exc:
    sys.stderr.write(f"cannot run {sys.argv[2]}: {exc.strerror}\\n")
    os._exit(127)
"""


def die_with_parent(argv: Sequence[str]) -> list[str]:
    """The command line that runs ``argv`` so that the child gets SIGKILL when the thread
    that started it ends (Linux ``prctl(PR_SET_PDEATHSIG)``, see prctl(2)): no server
    outlives a parent killed by a signal it cannot catch. Elsewhere ``argv`` unchanged (then
    only :func:`stop_all`'s atexit net covers the exits Python sees).

    The call is made by a small interpreter that then ``exec``s ``argv`` (same pid), not by a
    ``preexec_fn``: a ``preexec_fn`` makes :class:`subprocess.Popen` ``fork`` and run the
    at-fork handlers, and in a process holding gRPC channels (Ray's, Ray Serve's) gRPC's
    handler can abort the child before its ``exec`` (grpc/grpc#43055: ``epoll_wait``
    EBADF and SIGABRT; 6 to 16 children in 1000 with a live channel, measured by
    ``benchmarks/spawn_under_grpc.py``). Without one CPython spawns with
    ``vfork``, which runs no handler.
    """
    if not sys.platform.startswith("linux") or not sys.executable:
        return list(argv)
    return [sys.executable, "-I", "-S", "-c", _PDEATHSIG_EXEC, str(os.getpid()), *argv]


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
