"""TaskQueue: accept at once, bounded workers, states, bounds, retention, shutdown."""

from __future__ import annotations

import asyncio

import pytest

from parallel_kit.errors import ConfigError, ModelNotFound
from parallel_kit.modes.taskqueue import QueueClosed, QueueFull, TaskQueue, UnknownTask
from parallel_kit.records import RequestResult, RequestSpec
from parallel_kit.timing import ModelClock


class GatedBackend:
    """A fake backend: each request waits until the test opens the gate; counts overlap."""

    def __init__(self, *, fail: dict[str, BaseException] | None = None) -> None:
        self.gate = asyncio.Event()
        self.active = 0
        self.max_active = 0
        self.started: list[str] = []
        self.fail = fail or {}

    async def __call__(self, spec: RequestSpec) -> RequestResult:
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        self.started.append(spec.prompt)
        try:
            await self.gate.wait()
            if spec.prompt in self.fail:
                raise self.fail[spec.prompt]
            return RequestResult(request_id=spec.request_id, mode="", prompt=spec.prompt,
                                 model=spec.model or "m", ok=True, response=spec.prompt.upper(),
                                 finished_s=0.0)
        finally:
            self.active -= 1


async def settle(n: int = 5) -> None:
    """Let the workers take their turns."""
    for _ in range(n):
        await asyncio.sleep(0)


async def test_submitted_task_is_queued_before_it_runs() -> None:
    backend = GatedBackend()
    async with TaskQueue(backend, concurrency=1) as q:
        task_id = q.submit(RequestSpec("a"))
        assert q.status(task_id).state == "queued"
        assert backend.started == []
        await settle()
        assert q.status(task_id).state == "running"
        backend.gate.set()
        row = await q.result(task_id)
    task = q.status(task_id)
    assert task.state == "completed" and row.ok and row.response == "A"
    assert task.submitted_s <= task.started_s <= task.finished_s


async def test_third_request_waits_for_a_free_worker() -> None:
    backend = GatedBackend()
    async with TaskQueue(backend, concurrency=2) as q:
        ids = q.submit_batch([RequestSpec(p) for p in "abc"])
        await settle()
        assert [q.status(i).state for i in ids] == ["running", "running", "queued"]
        assert q.stats()["running"] == 2 and q.stats()["queued"] == 1
        backend.gate.set()
        await asyncio.gather(*(q.result(i) for i in ids))
    assert backend.max_active == 2
    assert q.stats()["completed"] == 3


async def test_rows_carry_queue_accept_as_queued_s_and_latency_from_the_send() -> None:
    clock = ModelClock(0.01)

    async def slow(spec: RequestSpec) -> RequestResult:
        sent = clock.now()
        await asyncio.sleep(0.05)  # 5 model seconds
        return RequestResult(request_id=spec.request_id, mode="async", prompt=spec.prompt,
                             model="m", submitted_s=sent, started_s=sent,
                             finished_s=clock.now(), ok=True)

    async with TaskQueue(slow, concurrency=1, clock=clock) as q:
        ids = q.submit_batch([RequestSpec("a"), RequestSpec("b")])
        rows = [await q.result(i) for i in ids]
        tasks = [q.status(i) for i in ids]
    a, b = rows
    # both accepted at once; b is sent only after a has finished (one worker)
    assert a.queued_s == tasks[0].submitted_s and b.queued_s == tasks[1].submitted_s
    assert b.queued_s <= a.submitted_s
    assert b.submitted_s >= a.finished_s
    # latency from the send; the time in the queue apart, and the two add up
    assert b.latency_s == pytest.approx(b.finished_s - b.submitted_s)
    assert b.queue_wait_s == pytest.approx(b.submitted_s - b.queued_s)
    assert b.queue_wait_s + b.latency_s == pytest.approx(b.finished_s - b.queued_s)
    assert b.queue_wait_s >= a.latency_s
    assert tasks[1].queue_wait_s >= tasks[0].queue_wait_s


async def test_a_backend_row_without_a_send_time_is_sent_when_a_worker_took_it() -> None:
    async def backend(spec: RequestSpec) -> RequestResult:
        return RequestResult(request_id="", mode="async", prompt=spec.prompt, model="m",
                             finished_s=1.0, ok=True)

    async with TaskQueue(backend, concurrency=1) as q:
        task_id = q.submit(RequestSpec("a"))
        row = await q.result(task_id)
        task = q.status(task_id)
    assert row.submitted_s == task.started_s and row.queued_s == task.submitted_s


async def test_failed_backend_row_ends_failed_with_its_error_text() -> None:
    async def backend(spec: RequestSpec) -> RequestResult:
        return RequestResult(request_id="", mode="async", prompt=spec.prompt, model="nope",
                             ok=False, error="model 'nope' not found")

    async with TaskQueue(backend) as q:
        task_id = q.submit(RequestSpec("a", model="nope"))
        row = await q.result(task_id)
    task = q.status(task_id)
    assert task.state == "failed" and not row.ok
    assert task.error == "model 'nope' not found"
    assert q.stats()["failed"] == 1


async def test_raising_backend_fails_the_task_and_keeps_the_worker() -> None:
    backend = GatedBackend(fail={"bad": ModelNotFound("ghost:1b", "http://x"),
                                 "odd": RuntimeError("boom")})
    backend.gate.set()
    async with TaskQueue(backend, concurrency=1, model="default-model") as q:
        ids = q.submit_batch([RequestSpec("bad"), RequestSpec("odd"), RequestSpec("good")])
        rows = [await q.result(i) for i in ids]
    assert [q.status(i).state for i in ids] == ["failed", "failed", "completed"]
    assert "model 'ghost:1b' not found" in (rows[0].error or "")
    assert rows[1].error == "RuntimeError: boom"
    assert rows[1].model == "default-model" and rows[1].mode == "async"
    assert rows[2].ok


async def test_queue_full_names_the_bound_and_accepts_nothing_of_a_batch() -> None:
    backend = GatedBackend()
    async with TaskQueue(backend, concurrency=1, max_queued=2) as q:
        q.submit_batch([RequestSpec("a"), RequestSpec("b")])
        with pytest.raises(QueueFull, match="2 tasks waiting is its bound"):
            q.submit(RequestSpec("c"))
        await settle()  # a starts: one place frees
        with pytest.raises(QueueFull):
            q.submit_batch([RequestSpec("c"), RequestSpec("d")])
        assert q.stats()["queued"] == 1
        q.submit(RequestSpec("c"))
        backend.gate.set()


async def test_cancel_a_queued_task_and_not_a_running_one() -> None:
    backend = GatedBackend()
    async with TaskQueue(backend, concurrency=1) as q:
        first, second = q.submit_batch([RequestSpec("a"), RequestSpec("b")])
        await settle()
        assert q.cancel(first) is False  # already running
        assert q.cancel(second) is True
        row = await q.result(second)
        assert q.status(second).state == "cancelled"
        assert not row.ok and "cancelled" in (row.error or "")
        backend.gate.set()
    assert backend.started == ["a"]  # the cancelled task never reached the backend


async def test_finished_tasks_are_forgotten_oldest_first() -> None:
    backend = GatedBackend()
    backend.gate.set()
    async with TaskQueue(backend, concurrency=1, max_finished=2) as q:
        ids = []
        for p in "abc":
            ids.append(q.submit(RequestSpec(p)))
            await q.result(ids[-1])
    with pytest.raises(UnknownTask, match="only the last 2 finished tasks"):
        q.status(ids[0])
    assert q.status(ids[1]).state == q.status(ids[2]).state == "completed"
    assert q.stats()["completed"] == 3 and q.stats()["retained"] == 2


async def test_unknown_task_id_is_a_clear_error() -> None:
    async with TaskQueue(GatedBackend()) as q:
        with pytest.raises(UnknownTask, match="no task 'nope'"):
            q.status("nope")


async def test_graceful_close_drains_accepted_work() -> None:
    backend = GatedBackend()
    q = TaskQueue(backend, concurrency=1)
    async with q:
        ids = q.submit_batch([RequestSpec("a"), RequestSpec("b")])
        asyncio.get_running_loop().call_later(0.02, backend.gate.set)
    assert [q.status(i).state for i in ids] == ["completed", "completed"]
    with pytest.raises(QueueClosed):
        q.submit(RequestSpec("late"))


async def test_close_without_drain_cancels_queued_and_running_with_a_reason() -> None:
    backend = GatedBackend()
    q = TaskQueue(backend, concurrency=1)
    async with q:
        running, queued = q.submit_batch([RequestSpec("a"), RequestSpec("b")])
        await settle()
        await q.close(drain=False, reason="test stop")
    states = {q.status(running).state, q.status(queued).state}
    assert states == {"cancelled"}
    assert "while the task was running" in (q.status(running).error or "")
    assert "test stop before the task ran" in (q.status(queued).error or "")
    assert (await q.result(queued)).ok is False
    assert q.stats()["queued"] == q.stats()["running"] == 0


async def test_close_with_timeout_cancels_what_did_not_finish() -> None:
    backend = GatedBackend()  # never opened
    async with TaskQueue(backend, concurrency=1) as q:
        task_id = q.submit(RequestSpec("a"))
        await settle()
        await q.close(drain=True, timeout=0.02)
    assert q.status(task_id).state == "cancelled"


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_bad_concurrency_is_a_config_error(bad: object) -> None:
    with pytest.raises(ConfigError, match="concurrency must be a whole number"):
        TaskQueue(GatedBackend(), concurrency=bad)  # type: ignore[arg-type]


def test_submit_outside_an_event_loop_says_how_to_use_it() -> None:
    q = TaskQueue(GatedBackend())
    with pytest.raises(ConfigError, match="inside an event loop"):
        q.submit(RequestSpec("a"))
