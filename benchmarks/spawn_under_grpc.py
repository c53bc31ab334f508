"""Starting children from a process that holds gRPC channels, as the kit's process does once
Ray or Ray Serve runs in it: how many children die before they become the program?

A ``preexec_fn`` makes :class:`subprocess.Popen` ``fork`` and run the at-fork handlers; gRPC's
(grpcio ≥ 1.81, grpc/grpc#43055) can abort the child with ``epoll_wait`` EBADF before
its ``exec``. The kit's ``system.children.die_with_parent`` asks for the same parent-death
signal without one (CPython then spawns with ``vfork``). Both ways start ``sh -c 'kill -SEGV
$$'`` — a child whose every run ends with SIGSEGV — ``--spawns`` times each, interleaved, in a
process with a gRPC server and a live channel to it; anything but SIGSEGV is a child lost.

Usage: ``.venv/bin/python benchmarks/spawn_under_grpc.py [--spawns 1000]`` (about a minute).
Writes ``benchmarks/results/spawn_under_grpc.json``.
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import signal
import subprocess
import sys
import tempfile
from concurrent import futures
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result

from parallel_kit.system.children import die_with_parent

CHILD = ["sh", "-c", "kill -SEGV $$"]


def _live_channel() -> Any:
    """A gRPC server in this process and a channel connected to it (the state Ray leaves)."""
    import grpc
    from grpc_reflection.v1alpha import reflection

    server = grpc.server(futures.ThreadPoolExecutor(2))
    reflection.enable_server_reflection(["parallel_kit"], server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    grpc.channel_ready_future(channel).result(timeout=30)
    return server, channel


def _spawn(how: str) -> tuple[int, str]:
    """One child; returns its exit status and the last line it wrote."""
    with tempfile.TemporaryFile() as out:
        if how == "preexec_fn":
            prctl = ctypes.CDLL(None, use_errno=True).prctl
            proc = subprocess.Popen(CHILD, stdout=out, stderr=subprocess.STDOUT,
                                    preexec_fn=lambda: prctl(1, int(signal.SIGKILL)))
        else:
            proc = subprocess.Popen(die_with_parent(CHILD), stdout=out,
                                    stderr=subprocess.STDOUT)
        code = proc.wait()
        out.seek(0)
        lines = out.read().decode("utf-8", "replace").strip().splitlines()
    return code, lines[-1][-200:] if lines else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spawns", type=int, default=1000, help="children per way (1000)")
    args = parser.parse_args(argv)
    if not sys.platform.startswith("linux"):
        print("PR_SET_PDEATHSIG and this failure are Linux's: nothing to measure here")
        return 0
    keep = _live_channel()  # noqa: F841 (held open for the whole run)
    ways = ("preexec_fn", "die_with_parent")
    statuses: dict[str, collections.Counter[int]] = {w: collections.Counter() for w in ways}
    example: dict[str, str] = {}
    for _ in range(args.spawns):
        for how in ways:
            code, last = _spawn(how)
            statuses[how][code] += 1
            if code != -signal.SIGSEGV:
                example.setdefault(how, last)
    rows = {how: {"spawns": args.spawns,
                  "lost": args.spawns - statuses[how][-signal.SIGSEGV],
                  "exit_statuses": {str(k): v for k, v in sorted(statuses[how].items())},
                  "example_of_a_lost_child": example.get(how)} for how in ways}
    for how, row in rows.items():
        print(f"{how:16s} {row['lost']:5d} of {row['spawns']} children lost "
              f"(exit statuses {row['exit_statuses']})")
    import grpc

    path = write_result("spawn_under_grpc", {"grpcio": grpc.__version__, "ways": rows})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
