"""The fault matrix: (kill, freeze, restart) × (each component) × (each mode it serves in).

Every cell names the test that injects that fault with real processes and asserts n rows for n
requests, a cause on every failure and a time bound — or says why the cell cannot occur. The
tests here keep the matrix whole: no cell missing, every named test present, and the table in
``docs/ROBUSTNESS.md`` the same as this one (``python tests/test_fault_matrix.py`` writes it).
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

TESTS = Path(__file__).resolve().parent
DOC = TESTS.parent / "docs" / "ROBUSTNESS.md"
BEGIN, END = "<!-- fault-matrix: begin -->", "<!-- fault-matrix: end -->"

FAULTS = ("kill", "freeze", "restart")
SINGLE = ("sequential", "async", "batch")
#: Which component stands in which mode (the in-memory API: `serve --mode async|pool|ray…`).
COMPONENTS: dict[str, tuple[str, ...]] = {
    "server": (*SINGLE, "pool", "ray", "rayserve", "production"),
    "Ray GPU actor": ("ray",),
    "Serve replica": ("rayserve", "production"),
    "Celery worker": ("production",),
    "Redis": ("production",),
    "API process": ("production", "serve (in memory)"),
}


@dataclass(frozen=True)
class Cell:
    """One fault: ``test`` is ``file.py::function`` (``None``: cannot occur, ``what`` says
    why); ``what`` is what the kit does."""

    component: str
    modes: tuple[str, ...]
    fault: str
    test: str | None
    what: str


F, P, S = "test_faults.py", "test_production.py", "test_rayserve.py"
MATRIX: tuple[Cell, ...] = (
    # -- an Ollama (simulator process) --
    Cell("server", SINGLE, "kill", f"{F}::test_single_server_killed_mid_run_gives_labelled_failed_rows",
         "unfinished requests are failed rows naming the cause (one server: nowhere to move them)"),
    Cell("server", SINGLE, "freeze", f"{F}::test_single_server_frozen_then_thawed_loses_nothing",
         "the run waits (60 s between chunks at most), nothing lost once it thaws"),
    Cell("server", SINGLE, "restart", f"{F}::test_single_server_killed_then_restarted_serves_the_next_run",
         "rows sent while it was down fail naming the cause; the next run is all ok"),
    Cell("server", ("pool",), "kill", f"{F}::test_pool_takes_back_a_killed_endpoint_restarted_on_its_port",
         "marked lost, its requests moved to the others"),
    Cell("server", ("pool",), "freeze", f"{F}::test_pool_moves_the_request_of_a_frozen_endpoint_to_another",
         "2 missed health checks → lost, its request moved"),
    Cell("server", ("pool",), "restart", f"{F}::test_pool_takes_back_a_killed_endpoint_restarted_on_its_port",
         "taken back once it answers; later requests run on it"),
    Cell("server", ("ray",), "kill", f"{F}::test_ray_moves_the_request_of_a_lost_endpoint_and_takes_it_back",
         "the actor's request fails, the server is marked lost, the request moved"),
    Cell("server", ("ray",), "freeze", f"{F}::test_ray_moves_the_request_of_a_lost_endpoint_and_takes_it_back",
         "the actor's probe misses → lost, request moved; taken back when thawed"),
    Cell("server", ("ray",), "restart", f"{F}::test_ray_moves_the_request_of_a_lost_endpoint_and_takes_it_back",
         "taken back once it answers; later requests run on it"),
    Cell("server", ("rayserve", "production"), "kill", f"{F}::test_a_server_fault_under_a_stack_mode_loses_no_row",
         "the replica's request fails; sent again after growing waits; Serve replaces the replica"),
    Cell("server", ("rayserve", "production"), "freeze", f"{F}::test_a_server_fault_under_a_stack_mode_loses_no_row",
         "the replica's health check probes its Ollama: replaced, its request sent again"),
    Cell("server", ("rayserve", "production"), "restart", f"{F}::test_a_server_fault_under_a_stack_mode_loses_no_row",
         "as kill; the replacement replica binds to the restarted server"),
    # -- the ray mode's GPU actors --
    Cell("Ray GPU actor", ("ray",), "kill", f"{F}::test_ray_loses_nothing_when_an_actor_process_is_frozen_or_killed",
         "Ray's actor error → lost, its requests moved"),
    Cell("Ray GPU actor", ("ray",), "freeze", f"{F}::test_ray_loses_nothing_when_an_actor_process_is_frozen_or_killed",
         "the driver's deadline on the ping → lost, requests moved; killed at the end"),
    Cell("Ray GPU actor", ("ray",), "restart", None,
         "cannot occur: actors have max_restarts=0, a dead one stays dead (its requests moved)"),
    # -- Ray Serve's replicas --
    Cell("Serve replica", ("rayserve",), "kill", f"{S}::test_replica_killed_mid_request_is_restarted_and_its_request_retried",
         "its request sent again (counted in retries); Serve starts a replacement"),
    Cell("Serve replica", ("production",), "kill", f"{P}::test_replica_killed_mid_request_completes_on_a_replica",
         "the Celery task is retried on a live replica"),
    Cell("Serve replica", ("rayserve", "production"), "freeze", f"{F}::test_a_frozen_serve_replica_is_replaced_and_its_request_sent_again",
         "Serve's health check times out 3 times → replaced; its request sent again"),
    Cell("Serve replica", ("rayserve",), "restart", f"{S}::test_replica_killed_mid_request_is_restarted_and_its_request_retried",
         "Serve's controller restarts it; three replicas serve again"),
    Cell("Serve replica", ("production",), "restart", f"{P}::test_replica_killed_mid_request_completes_on_a_replica",
         "Serve's controller restarts it; three replicas serve again"),
    # -- the production stack --
    Cell("Celery worker", ("production",), "kill", f"{P}::test_worker_killed_mid_task_is_replaced_its_tasks_handed_back_and_completed",
         "its tasks handed back at once; a replacement started; /health counts it"),
    Cell("Celery worker", ("production",), "freeze", f"{P}::test_worker_frozen_mid_task_is_killed_by_its_heartbeat_and_replaced",
         "no heartbeat for 10 s → killed, its tasks handed back, replaced"),
    Cell("Celery worker", ("production",), "restart", f"{P}::test_worker_killed_mid_task_is_replaced_its_tasks_handed_back_and_completed",
         "the replacement runs the handed-back tasks; at most 5 restarts, then degraded"),
    Cell("Redis", ("production",), "kill", f"{P}::test_bench_rides_out_a_frozen_redis_and_writes_every_row_when_redis_dies",
         "requests still awaited are failed rows naming Redis; exit 2 with one line"),
    Cell("Redis", ("production",), "freeze", f"{P}::test_bench_rides_out_a_frozen_redis_and_writes_every_row_when_redis_dies",
         "redis-py retries with backoff; the run goes on once it thaws"),
    Cell("Redis", ("production",), "restart", f"{P}::test_a_waiting_caller_gives_up_a_redis_gone_past_the_outage_bound_and_a_lost_task",
         "a task whose record is gone is a failed row at once; a Redis gone past 60 s ends the wait"),
    Cell("API process", ("production",), "kill", f"{P}::test_api_killed_or_frozen_another_api_process_completes_every_accepted_task",
         "accepted tasks live in Redis: another API process answers for each"),
    Cell("API process", ("production",), "freeze", f"{P}::test_api_killed_or_frozen_another_api_process_completes_every_accepted_task",
         "its clients time out; another API process answers for each task"),
    Cell("API process", ("production",), "restart", f"{P}::test_api_killed_or_frozen_another_api_process_completes_every_accepted_task",
         "the restarted API answers for every task accepted before"),
    Cell("API process", ("serve (in memory)",), "kill", "test_api_limits.py::test_unknown_task_and_health_say_tasks_live_in_memory",
         "by design its tasks die with it (404 and /health say so, pointing to production)"),
    Cell("API process", ("serve (in memory)",), "freeze", "test_api_limits.py::test_unknown_task_and_health_say_tasks_live_in_memory",
         "by design: clients time out; the tasks live in that process"),
    Cell("API process", ("serve (in memory)",), "restart", "test_api_limits.py::test_unknown_task_and_health_say_tasks_live_in_memory",
         "a restarted API knows no earlier task: 404 naming where tasks live"),
)


@cache
def _functions(file: str) -> frozenset[str]:
    tree = ast.parse((TESTS / file).read_text())
    return frozenset(n.name for n in ast.walk(tree)
                     if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef))


def render() -> str:
    """The matrix as the Markdown table of ``docs/ROBUSTNESS.md``."""
    rows = ["| Component | Mode | Fault | What the kit does | Test |", "|---|---|---|---|---|"]
    for c in MATRIX:
        test = f"`{c.test.replace('.py::', ' :: ')}`" if c.test else "—"
        rows.append(f"| {c.component} | {', '.join(c.modes)} | {c.fault} | {c.what} | {test} |")
    return "\n".join(rows)


def test_every_cell_of_the_matrix_is_covered_once() -> None:
    want = {(comp, mode, fault) for comp, modes in COMPONENTS.items() for mode in modes
            for fault in FAULTS}
    have = [(c.component, m, c.fault) for c in MATRIX for m in c.modes]
    assert len(have) == len(set(have)), "a cell is listed twice"
    assert set(have) == want, {"missing": want - set(have), "unknown": set(have) - want}


def test_every_named_test_exists() -> None:
    for c in MATRIX:
        if c.test is None:
            assert c.what.startswith("cannot occur"), c
            continue
        file, name = c.test.split("::")
        assert name in _functions(file), f"{c.test} is not a test of {file}"


def test_the_robustness_page_shows_this_matrix() -> None:
    text = DOC.read_text()
    assert BEGIN in text and END in text, f"{DOC.name} has no fault-matrix block"
    block = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert block == render(), "run `python tests/test_fault_matrix.py` to write the table"


if __name__ == "__main__":
    text = DOC.read_text()
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    DOC.write_text(f"{head}{BEGIN}\n{render()}\n{END}{tail}")
    print(f"wrote the fault matrix ({len(MATRIX)} rows) into {DOC}", file=sys.stderr)
