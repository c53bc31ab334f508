"""Children the kit starts die with it, whatever kills it (``system.children.die_with_parent``)."""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from parallel_kit.system.children import die_with_parent

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="PR_SET_PDEATHSIG is Linux's")

# The parent: starts a long-sleeping grandchild with die_with_parent, prints its pid, waits.
PARENT = """
import subprocess, sys, time
from parallel_kit.system.children import die_with_parent
child = subprocess.Popen(die_with_parent([sys.executable, "-c",
                                         "import time; time.sleep(600)"]))
print(child.pid, flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False


def test_a_child_started_with_die_with_parent_ends_when_its_parent_is_killed() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert _alive(child)
        parent.send_signal(signal.SIGKILL)  # a signal no handler can catch
        parent.wait(30)
        deadline = time.monotonic() + 30
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)  # polling the process table for an outcome
        assert not _alive(child), f"child {child} outlived its killed parent"
    finally:
        parent.kill()
        parent.wait(30)
        if "child" in locals() and _alive(child):
            os.kill(child, signal.SIGKILL)



def test_the_child_is_the_program_itself_with_the_kit_as_its_parent() -> None:
    proc = subprocess.Popen(die_with_parent([sys.executable, "-c",
                                             "import os; print(os.getpid(), os.getppid())"]),
                            stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate(timeout=60)
    pid, ppid = map(int, out.split())
    # exec'd in place: the pid the kit holds is the program's, its parent the kit
    assert (proc.returncode, pid, ppid) == (0, proc.pid, os.getpid())


def test_a_program_that_cannot_run_is_status_127_and_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-server"
    out = subprocess.run(die_with_parent([str(missing), "--port", "1"]), capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 127
    assert out.stderr.strip() == f"cannot run {missing}: No such file or directory"


# A parent with an at-fork hook in the child, as gRPC's (Ray's channels) is: it prints
# "hook" if the hook ran in the child before its exec. With a preexec_fn it does (the
# control); the kit's way must not.
FORK_HOOK = """
import os, subprocess, sys
from parallel_kit.system.children import die_with_parent
os.register_at_fork(after_in_child=lambda: os.write(1, b"hook "))
cmd = [sys.executable, "-c", "print('child', flush=True)"]
sys.stdout.flush()
if sys.argv[1] == "preexec_fn":
    subprocess.run(cmd, preexec_fn=lambda: None)
else:
    subprocess.run(die_with_parent(cmd))
"""


@pytest.mark.parametrize(("how", "expected"), [("preexec_fn", "hook child"),
                                               ("die_with_parent", "child")])
def test_no_at_fork_hook_runs_in_a_child_the_kit_starts(how: str, expected: str) -> None:
    out = subprocess.run([sys.executable, "-c", FORK_HOOK, how], capture_output=True,
                         text=True, check=True, timeout=60)
    assert out.stdout.strip() == expected


def test_neither_the_library_nor_a_test_starts_a_child_with_a_preexec_fn() -> None:
    # Every child goes through vfork; a preexec_fn would bring fork and gRPC's at-fork handler
    # back (the test above), in the kit's process and in this one, which holds Ray's channels.
    root = Path(__file__).resolve().parent.parent
    found = [f"{path.relative_to(root)}:{node.lineno}"
             for folder in ("parallel_kit", "tests")
             for path in sorted((root / folder).rglob("*.py"))
             for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
             if isinstance(node, ast.keyword) and node.arg == "preexec_fn"]
    assert found == []
