"""Async core, sync face: run a coroutine from plain code, also inside a running event loop.

In a script there is no running loop, so ``asyncio.run`` does it. In Jupyter (or any code already
inside a loop) ``asyncio.run`` is not allowed, and patching the loop (nest_asyncio) breaks
anyio/httpx, so the coroutine runs on a private loop in a background thread and the caller's
thread waits for it. Notebooks should prefer top-level ``await``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["run_sync"]

_loop: asyncio.AbstractEventLoop | None = None
_lock = threading.Lock()


def background_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="parallel-kit-loop",
                                      daemon=True)
            thread.start()
            _loop = loop
        return _loop


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion and return its result, wherever it is called from.

    Ctrl-C while waiting cancels the coroutine (so it can return partial results) and
    re-raises ``KeyboardInterrupt``.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        in_loop = False
    else:
        in_loop = True
    if not in_loop:
        # Outside the ``except`` block: an error from the run must not come chained to an
        # unrelated "RuntimeError: no running event loop".
        return asyncio.run(coro)
    future = asyncio.run_coroutine_threadsafe(coro, background_loop())
    try:
        return future.result()
    except KeyboardInterrupt:
        future.cancel()
        raise
