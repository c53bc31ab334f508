"""What every execution mode shares: the context it runs in, and the registry of modes.

A mode is an ``async`` function ``run(specs, ctx) -> RunResult``. It sends every spec to the
endpoints in ``ctx``, records one :class:`~parallel_kit.records.RequestResult` per spec (failed
ones included), and returns the rows with a summary from :func:`~parallel_kit.records.summarize`.
The caller (``bench``) fills in ``predicted_makespan_s``, ``speedup_vs_sequential`` and
``efficiency``, because those need the other modes and the theory.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from ..config import DEFAULT_MODEL, Endpoint
from ..errors import ConfigError
from ..records import RequestResult, RequestSpec, RunResult

if TYPE_CHECKING:
    from ..clients import OllamaClient, OpenAIClient

__all__ = ["MODE_NAMES", "ModeContext", "ModeRunner", "get_mode", "parse_modes"]

Api = Literal["generate", "chat", "openai"]


@dataclass
class ModeContext:
    """Everything a mode needs besides the prompts.

    Args:
        endpoints: the Ollama servers to use (one per GPU for pool/ray; the first for the
            single-server modes).
        backend: ``"sim"`` or ``"ollama"`` — what the endpoints are; goes into the summary.
        time_scale: clock seconds per model second of the simulator (1.0 for real Ollama).
        model: the model for specs that do not name one.
        concurrency: workers of the async/batch queue (``MAX_CONCURRENT_REQUESTS``).
        api: ``generate`` or ``chat`` (native API) or ``openai`` (``/v1``).
        progress: show a tqdm progress bar.
        gpus: how many GPUs (ray mode) — defaults to ``len(endpoints)``.
        ray_address: an existing Ray cluster to join (``None``: a local one).
        options: mode-specific extras (e.g. ``{"ray_launch": "sim"}``).
        on_result: called with each finished row (see :meth:`notify`).
    """

    endpoints: list[Endpoint]
    backend: str = "sim"
    time_scale: float = 1.0
    model: str = DEFAULT_MODEL
    concurrency: int = 5
    api: Api = "generate"
    progress: bool = False
    gpus: int | None = None
    ray_address: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    on_result: Callable[[RequestResult], None] | None = None

    def notify(self, result: RequestResult) -> None:
        """Tell watchers (progress bars, the widget lab) that a request has finished.

        Every mode calls this once per finished row, failed rows included.
        """
        if self.on_result is not None:
            self.on_result(result)

    def __post_init__(self) -> None:
        if not self.endpoints and self.options.get("ray_launch") is None:
            raise ConfigError("a run needs at least one endpoint (an Ollama server URL)")
        if self.concurrency < 1:
            raise ConfigError(f"--concurrency must be at least 1, got {self.concurrency}")

    @property
    def slots(self) -> int:
        """Slots of one endpoint (they are assumed equal)."""
        return self.endpoints[0].slots if self.endpoints else 1

    def make_client(self, endpoint: Endpoint, *, max_connections: int | None = None
                    ) -> OllamaClient | OpenAIClient:
        """A client for ``endpoint`` speaking ``self.api``, pooled for ``max_connections``."""
        from ..clients import OllamaClient, OpenAIClient

        conns = max_connections or max(self.concurrency, endpoint.slots, 1)
        if self.api == "openai":
            return OpenAIClient(endpoint.url, max_connections=conns)
        return OllamaClient(endpoint.url, max_connections=conns, api=self.api)


class ModeRunner(Protocol):
    def __call__(self, specs: Sequence[RequestSpec], ctx: ModeContext) -> Awaitable[RunResult]:
        ...


#: Mode name → "module:function". Imported lazily so that Ray is only needed by ``ray``.
_REGISTRY: dict[str, str] = {
    "sequential": "parallel_kit.modes.sequential:run_sequential",
    "async": "parallel_kit.modes.queued:run_async",
    "batch": "parallel_kit.modes.queued:run_batch",
    "pool": "parallel_kit.modes.pool:run_pool",
    "ray": "parallel_kit.modes.ray_gpu:run_ray",
    "rayserve": "parallel_kit.modes.rayserve:run_rayserve",
    "production": "parallel_kit.modes.production:run_production",
}
MODE_NAMES: tuple[str, ...] = tuple(_REGISTRY)


def get_mode(name: str) -> Callable[[Sequence[RequestSpec], ModeContext], Awaitable[RunResult]]:
    """The runner for a mode name (``sequential``, ``async``, ``batch``, ``pool``, ``ray``)."""
    target = _REGISTRY.get(name)
    if target is None:
        raise ConfigError(f"unknown mode {name!r} — choose from {', '.join(MODE_NAMES)}")
    module_name, func = target.split(":")
    module = importlib.import_module(module_name)
    return getattr(module, func)  # type: ignore[no-any-return]


def parse_modes(text: str | Sequence[str]) -> list[str]:
    """``"sequential,ray"`` or a list → validated mode names, order kept, duplicates dropped."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    names: list[str] = []
    for p in (x.strip() for x in parts):
        if not p:
            continue
        if p not in _REGISTRY:
            raise ConfigError(f"unknown mode {p!r} — choose from {', '.join(MODE_NAMES)}")
        if p not in names:
            names.append(p)
    if not names:
        raise ConfigError(f"no mode given — choose from {', '.join(MODE_NAMES)}")
    return names
