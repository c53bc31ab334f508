"""``run_sync``: the sync face of the async core, in a script and inside a running loop."""

from __future__ import annotations

import asyncio
import threading

import pytest

from parallel_kit._sync import run_sync


async def _where() -> tuple[int, bool]:
    """The thread the coroutine ran on, and whether it ran in a loop (it always does)."""
    await asyncio.sleep(0)
    return threading.get_ident(), asyncio.get_running_loop().is_running()


def test_sync_helper_without_a_loop_runs_on_the_callers_thread() -> None:
    ident, in_loop = run_sync(_where())
    assert ident == threading.get_ident() and in_loop


async def test_sync_helper_in_running_loop() -> None:
    # Inside a running loop (Jupyter, an async test) asyncio.run is not allowed; run_sync runs
    # the coroutine on the kit's background loop thread and returns its result here.
    ident, in_loop = run_sync(_where())
    assert in_loop and ident != threading.get_ident()
    # The same background loop serves the next call (one thread, not one per call).
    assert run_sync(_where())[0] == ident


async def test_sync_helper_in_running_loop_raises_what_the_coroutine_raised() -> None:
    async def fail() -> None:
        raise ValueError("from the coroutine")

    with pytest.raises(ValueError, match="from the coroutine"):
        run_sync(fail())
