"""``run_sync`` inside a running event loop (Jupyter's case) runs on the background loop."""

from __future__ import annotations

import asyncio
import threading

import pytest

from parallel_kit._sync import run_sync


async def _where() -> tuple[int, asyncio.AbstractEventLoop]:
    await asyncio.sleep(0)
    return threading.get_ident(), asyncio.get_running_loop()


def test_run_sync_inside_a_running_loop_uses_the_background_loop():
    async def notebook_cell() -> tuple[int, asyncio.AbstractEventLoop, int,
                                       asyncio.AbstractEventLoop]:
        # A running loop here, as in Jupyter: asyncio.run would refuse.
        me, my_loop = threading.get_ident(), asyncio.get_running_loop()
        thread, loop = run_sync(_where())
        return me, my_loop, thread, loop

    me, my_loop, thread, loop = asyncio.run(notebook_cell())
    assert thread != me and loop is not my_loop
    assert loop.is_running()  # the background loop stays up for the next call


def test_run_sync_inside_a_running_loop_returns_results_and_raises_errors():
    async def boom() -> None:
        raise ValueError("inner")

    async def cell() -> int:
        with pytest.raises(ValueError, match="inner"):
            run_sync(boom())
        return run_sync(asyncio.sleep(0, result=42))

    assert asyncio.run(cell()) == 42


def test_run_sync_without_a_loop_runs_in_this_thread():
    thread, _ = run_sync(_where())
    assert thread == threading.get_ident()
