"""A client for the kit's HTTP API (``parallel-kit serve``): submit, poll, wait, batch.

Async first, with a sync face (``*_sync`` methods, usable in scripts and inside Jupyter):

>>> async with ApiClient("http://127.0.0.1:8000") as api:
...     task_id = await api.submit("What is Python?")
...     task = await api.wait(task_id)          # polls GET /tasks/{id} with backoff
...     task["status"], task["result"]["response"]
>>> ApiClient().infer_sync("What is Python?")   # from plain code

:meth:`ApiClient.run_mode` replays the original ``demo_parallel.py``: the same prompts sent
``sequential`` (``POST /inference`` one after another), ``async`` (one ``POST /inference/async``
per prompt, then polling) or ``batch`` (one ``POST /inference/batch``), and returns an
:class:`ApiRun` with the clock time until every prompt was accepted and the makespan read from
the server's own rows (model time).
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import httpx

from .._sync import run_sync
from ..errors import ConfigError, ParallelKitError

__all__ = ["ApiClient", "ApiError", "ApiRun", "format_api_table"]

T = TypeVar("T")
ApiMode = Literal["sequential", "async", "batch"]
DEFAULT_API_URL = "http://127.0.0.1:8000"
_FINISHED = ("completed", "failed")


class ApiError(ParallelKitError):
    """The API refused a call or did not answer. ``status_code`` is None when unreachable."""

    def __init__(self, message: str, *, status_code: int | None = None,
                 retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.retry_after_s = retry_after_s


@dataclass
class ApiRun:
    """The prompts of one mode sent through the API.

    Attributes:
        mode: ``sequential``, ``async`` or ``batch``.
        tasks: the final ``GET /tasks/{id}`` bodies, in prompt order.
        submit_s: clock seconds until every prompt was accepted (for ``sequential``: until the
            last was sent, i.e. nearly the whole run — it waits for each answer).
        wall_s: clock seconds from the first call to the last completion seen by the client.
        makespan_s: model seconds from the first acceptance to the last completion, from the
            server's rows (NaN when no row came back).
    """

    mode: ApiMode
    tasks: list[dict[str, Any]]
    submit_s: float
    wall_s: float
    makespan_s: float
    notes: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.tasks)

    @property
    def ok(self) -> int:
        return sum(1 for t in self.tasks if t.get("status") == "completed")

    @property
    def rows(self) -> list[dict[str, Any]]:
        """The request rows (``RequestResult`` as dicts) of the tasks that have one."""
        return [t["result"] for t in self.tasks if t.get("result")]


class ApiClient:
    """Talks to ``parallel-kit serve``.

    Args:
        base_url: where the API listens (default ``http://127.0.0.1:8000``).
        api_key: the bearer key (default ``PARALLEL_KIT_API_KEY``; none when unset).
        timeout: clock seconds to wait for one HTTP answer (``infer`` waits for the model).
        transport: an httpx transport (tests).
    """

    def __init__(self, base_url: str = DEFAULT_API_URL, *, api_key: str | None = None,
                 timeout: float = 600.0, transport: httpx.AsyncBaseTransport | None = None
                 ) -> None:
        if not timeout > 0:
            raise ConfigError(f"timeout must be a positive number of seconds, got {timeout!r}")
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("PARALLEL_KIT_API_KEY")
        self.timeout = timeout
        self._transport = transport
        self._http: httpx.AsyncClient | None = None

    def __repr__(self) -> str:
        return f"ApiClient({self.base_url!r})"

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            self._http = httpx.AsyncClient(base_url=self.base_url, headers=headers,
                                           timeout=self.timeout, transport=self._transport,
                                           trust_env=False)
        return self._http

    async def _request(self, method: str, path: str, payload: Any = None) -> Any:
        try:
            resp = await self._client().request(method, path, json=payload)
        except httpx.ConnectError:
            raise ApiError(f"no parallel-kit API answers at {self.base_url} — start it with "
                           f"`parallel-kit serve`, or pass its URL") from None
        except httpx.TimeoutException:
            raise ApiError(f"the API at {self.base_url} did not answer within {self.timeout:g} s "
                           f"— raise timeout=, or use submit() and wait()") from None
        if resp.status_code >= 400:
            raise _error_from(resp, self.base_url)
        return resp.json()

    # -- the endpoints ---------------------------------------------------------------------

    async def infer(self, prompt: str, *, model: str | None = None,
                    options: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """``POST /inference``: run one prompt and wait; the task body (read ``status``)."""
        return await self._request("POST", "/inference", _item(prompt, model, options))

    async def submit(self, prompt: str, *, model: str | None = None,
                     options: Mapping[str, Any] | None = None) -> str:
        """``POST /inference/async``: queue one prompt; its task id."""
        body = await self._request("POST", "/inference/async", _item(prompt, model, options))
        return str(body["task_id"])

    async def submit_batch(self, prompts: Sequence[str | Mapping[str, Any]], *,
                           model: str | None = None) -> list[str]:
        """``POST /inference/batch``: queue every prompt in one call; their task ids in order.

        Items are prompt strings or ``{"prompt", "model"?, "options"?}`` objects.
        """
        items = [_item(p, model, None) if isinstance(p, str) else
                 {"model": model, **dict(p)} if model else dict(p) for p in prompts]
        body = await self._request("POST", "/inference/batch", items)
        return [str(i) for i in body["task_ids"]]

    async def status(self, task_id: str) -> dict[str, Any]:
        """``GET /tasks/{id}``: ``{"task_id", "status", "result", "error"}``."""
        return await self._request("GET", f"/tasks/{task_id}")  # type: ignore[no-any-return]

    async def wait(self, task_id: str, *, timeout: float | None = None, poll_s: float = 0.01,
                   max_poll_s: float = 1.0) -> dict[str, Any]:
        """Poll ``GET /tasks/{id}`` until the task is completed or failed; its final body.

        The poll interval starts at ``poll_s`` and grows 1.5× up to ``max_poll_s`` (clock
        seconds), so short tasks are seen quickly and long ones are not hammered.

        Raises:
            TimeoutError: not finished within ``timeout`` clock seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = poll_s
        while True:
            body = await self.status(task_id)
            if body.get("status") in _FINISHED:
                return body
            if deadline is not None and time.monotonic() + delay > deadline:
                raise TimeoutError(f"task {task_id} is still {body.get('status')} after "
                                   f"{timeout:g} s — wait longer, or check GET /stats")
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, max_poll_s)

    async def wait_all(self, task_ids: Sequence[str], **kwargs: Any) -> list[dict[str, Any]]:
        """:meth:`wait` for every id at once; bodies in the same order."""
        return list(await asyncio.gather(*(self.wait(i, **kwargs) for i in task_ids)))

    async def stats(self) -> dict[str, Any]:
        """``GET /stats``: queued, running, completed, failed and the bounds."""
        return await self._request("GET", "/stats")  # type: ignore[no-any-return]

    async def health(self) -> dict[str, Any]:
        """``GET /health``."""
        return await self._request("GET", "/health")  # type: ignore[no-any-return]

    # -- the original demo -----------------------------------------------------------------

    async def run_mode(self, mode: ApiMode, prompts: Sequence[str], *,
                       model: str | None = None) -> ApiRun:
        """Send ``prompts`` the way the original demo's mode did and measure it."""
        if mode not in ("sequential", "async", "batch"):
            raise ConfigError(f"API mode {mode!r} is not one of sequential, async, batch")
        if not prompts:
            raise ConfigError("run_mode needs at least one prompt")
        t0 = time.perf_counter()
        if mode == "sequential":
            tasks = [await self.infer(p, model=model) for p in prompts]
            submit_s = time.perf_counter() - t0
        else:
            if mode == "batch":
                ids = await self.submit_batch(list(prompts), model=model)
            else:
                ids = [await self.submit(p, model=model) for p in prompts]
            submit_s = time.perf_counter() - t0
            tasks = await self.wait_all(ids)
        wall_s = time.perf_counter() - t0
        return ApiRun(mode, tasks, submit_s, wall_s, _makespan(tasks))

    # -- sync face -------------------------------------------------------------------------

    def _sync(self, call: Callable[[ApiClient], Awaitable[T]]) -> T:
        # An httpx client belongs to the loop it was made on, and run_sync may use another
        # loop each time: a fresh client per sync call keeps them apart.
        async def once() -> T:
            async with ApiClient(self.base_url, api_key=self.api_key, timeout=self.timeout,
                                 transport=self._transport) as api:
                return await call(api)

        return run_sync(once())

    def infer_sync(self, prompt: str, **kwargs: Any) -> dict[str, Any]:
        return self._sync(lambda api: api.infer(prompt, **kwargs))

    def submit_sync(self, prompt: str, **kwargs: Any) -> str:
        return self._sync(lambda api: api.submit(prompt, **kwargs))

    def submit_batch_sync(self, prompts: Sequence[str | Mapping[str, Any]], **kwargs: Any
                          ) -> list[str]:
        return self._sync(lambda api: api.submit_batch(prompts, **kwargs))

    def status_sync(self, task_id: str) -> dict[str, Any]:
        return self._sync(lambda api: api.status(task_id))

    def wait_sync(self, task_id: str, **kwargs: Any) -> dict[str, Any]:
        return self._sync(lambda api: api.wait(task_id, **kwargs))

    def stats_sync(self) -> dict[str, Any]:
        return self._sync(lambda api: api.stats())

    def health_sync(self) -> dict[str, Any]:
        return self._sync(lambda api: api.health())

    def run_mode_sync(self, mode: ApiMode, prompts: Sequence[str], **kwargs: Any) -> ApiRun:
        return self._sync(lambda api: api.run_mode(mode, prompts, **kwargs))


def _item(prompt: str, model: str | None, options: Mapping[str, Any] | None) -> dict[str, Any]:
    item: dict[str, Any] = {"prompt": prompt}
    if model:
        item["model"] = model
    if options:
        item["options"] = dict(options)
    return item


def _error_from(resp: httpx.Response, url: str) -> ApiError:
    """One line from an error answer: FastAPI's ``detail`` (a string, or a list of fields)."""
    try:
        detail: Any = resp.json().get("detail", resp.text)
    except (ValueError, AttributeError):
        detail = resp.text
    if isinstance(detail, list):
        parts = []
        for d in detail:
            loc = ".".join(str(x) for x in d.get("loc", []) if x != "body") or "body"
            parts.append(f"{loc}: {d.get('msg', d)}")
        detail = "; ".join(parts)
    hint = ""
    if resp.status_code == 401:
        hint = " — pass api_key= or set PARALLEL_KIT_API_KEY"
    retry = resp.headers.get("retry-after")
    retry_s = float(retry) if retry and retry.replace(".", "", 1).isdigit() else None
    return ApiError(f"the API at {url} answered {resp.status_code}: {detail}{hint}",
                    status_code=resp.status_code, retry_after_s=retry_s)


def _makespan(tasks: Sequence[Mapping[str, Any]]) -> float:
    """Model seconds from the first acceptance to the last completion (the server's rows)."""
    rows = [t["result"] for t in tasks if t.get("result")]
    starts = [r["submitted_s"] for r in rows if r.get("submitted_s") is not None]
    ends = [r["finished_s"] for r in rows if r.get("finished_s") is not None]
    return max(ends) - min(starts) if starts and ends else math.nan


def format_api_table(runs: Sequence[ApiRun], *, time_scale: float | None = None) -> str:
    """The demo's comparison: one line per mode (model seconds; accept time in clock ms)."""
    head = (f"{'mode':<11}{'accepted all in':>17}{'makespan s':>12}{'wall s':>9}"
            f"{'vs sequential':>15}{'ok/n':>7}")
    lines = [head, "-" * len(head)]
    base = next((r.makespan_s for r in runs if r.mode == "sequential"), None)
    for r in runs:
        accepted = "— (waits)" if r.mode == "sequential" else f"{r.submit_s * 1000:.1f} ms"
        ratio = (f"{base / r.makespan_s:.2f}×" if base and r.makespan_s and
                 not math.isnan(r.makespan_s) else "—")
        lines.append(f"{r.mode:<11}{accepted:>17}{r.makespan_s:>12.2f}{r.wall_s:>9.2f}"
                     f"{ratio:>15}{f'{r.ok}/{r.n}':>7}")
    scale = f", time scale {time_scale:g}" if time_scale else ""
    lines.append(f"(makespan in model seconds from the server's rows{scale}; wall in clock s)")
    return "\n".join(lines)
