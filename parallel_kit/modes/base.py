"""What every execution mode shares: the context it runs in (and, re-exported, the registry).

A mode is an ``async`` function ``run(specs, ctx) -> RunResult`` registered in
:mod:`parallel_kit.modes.registry`. It sends every spec to the endpoints in ``ctx``, records
one :class:`~parallel_kit.records.RequestResult` per spec (failed ones included), and returns
the rows with a summary from :func:`~parallel_kit.records.summarize`. The caller (``bench``)
fills in ``predicted_makespan_s``, ``speedup_vs_sequential`` and ``efficiency``, because those
need the other modes and the theory.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from ..clients.factory import Api, make_client
from ..config import DEFAULT_MODEL, Endpoint
from ..errors import ConfigError
from ..records import RequestResult, RequestSpec, RunResult
from .options import QueueOptions, RayOptions, ServerOptions
from .registry import MODE_NAMES, ModeInfo, get_info, get_mode, parse_modes, register_mode
from .stack_options import ServeOptions, StackOptions

if TYPE_CHECKING:
    from ..clients import OllamaClient, OpenAIClient

__all__ = ["MODE_NAMES", "Api", "ModeContext", "ModeInfo", "ModeRunner", "QueueOptions",
           "RayOptions", "ServeOptions", "ServerOptions", "StackOptions", "get_info", "get_mode", "parse_modes",
           "register_mode"]


@dataclass
class ModeContext:
    """Everything a mode needs besides the prompts.

    Args:
        endpoints: the Ollama servers to use (one per GPU for pool/ray; the first for the
            single-server modes). May be empty only when ``servers.launch`` asks the mode to
            start its own.
        backend: ``"sim"`` or ``"ollama"`` — what the endpoints are; goes into the summary.
        time_scale: clock seconds per model second of the simulator (1.0 for real Ollama).
        model: the model for specs that do not name one.
        api: ``generate`` or ``chat`` (native API) or ``openai`` (``/v1``).
        progress: show a tqdm progress bar.
        gpus: how many GPUs (ray mode) — defaults to ``len(endpoints)``.
        queue: how requests are fed (task-queue workers, prefetch).
        servers: the servers a mode starts itself (``ray`` without endpoints).
        ray: the Ray cluster and its actors.
        serve: the Ray Serve application (``rayserve``, ``production``).
        stack: Redis and the Celery workers (``production``).
        on_result: called with each finished row (see :meth:`notify`).

    Raises:
        ConfigError: no endpoint and nothing to launch.
    """

    endpoints: list[Endpoint]
    backend: str = "sim"
    time_scale: float = 1.0
    model: str = DEFAULT_MODEL
    api: Api = "generate"
    progress: bool = False
    gpus: int | None = None
    queue: QueueOptions = field(default_factory=QueueOptions)
    servers: ServerOptions = field(default_factory=ServerOptions)
    ray: RayOptions = field(default_factory=RayOptions)
    serve: ServeOptions = field(default_factory=ServeOptions)
    stack: StackOptions = field(default_factory=StackOptions)
    on_result: Callable[[RequestResult], None] | None = None

    def __post_init__(self) -> None:
        if not self.endpoints and self.servers.launch is None:
            raise ConfigError("a run needs at least one endpoint (an Ollama server URL)")

    @property
    def concurrency(self) -> int:
        """Workers of the async/batch task queue (``queue.concurrency``)."""
        return self.queue.concurrency

    @property
    def slots(self) -> int:
        """Slots of one endpoint (they are assumed equal)."""
        return self.endpoints[0].slots if self.endpoints else 1

    def notify(self, result: RequestResult) -> None:
        """Tell watchers (progress bars, the widget lab) that a request has finished.

        Every mode calls this once per finished row, failed rows included.
        """
        if self.on_result is not None:
            self.on_result(result)

    def make_client(self, endpoint: Endpoint, *, max_connections: int | None = None
                    ) -> OllamaClient | OpenAIClient:
        """A client for ``endpoint`` speaking ``self.api``, pooled for ``max_connections``."""
        conns = max_connections or max(self.concurrency, endpoint.slots, 1)
        return make_client(self.api, endpoint.url, max_connections=conns)


class ModeRunner(Protocol):
    def __call__(self, specs: Sequence[RequestSpec], ctx: ModeContext) -> Awaitable[RunResult]:
        ...
