"""One factory for the kit's HTTP clients, by API: ``generate``, ``chat`` or ``openai``.

Every place that needs a client for a server (the modes, the API server's backends, the Ray GPU
actors) calls :func:`make_client` with the API name, so that a new API is one branch here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from ..errors import ConfigError

if TYPE_CHECKING:
    from . import OllamaClient, OpenAIClient, RetryPolicy

__all__ = ["API_NAMES", "Api", "make_client"]

#: ``generate``/``chat``: Ollama's native API (``/api/generate``, ``/api/chat``);
#: ``openai``: its OpenAI-compatible API (``/v1/chat/completions``).
Api = Literal["generate", "chat", "openai"]
API_NAMES: tuple[str, ...] = ("generate", "chat", "openai")


def make_client(api: str, url: str, *, max_connections: int = 32,
                retry: RetryPolicy | None = None, timeout: float | None = None,
                **extra: Any) -> OllamaClient | OpenAIClient:
    """A client for the server at ``url`` speaking ``api``.

    Args:
        api: ``generate``, ``chat`` or ``openai``.
        url: the server, in any ``OLLAMA_HOST`` form.
        max_connections: connections kept open (requests beyond wait for one).
        retry: the retry policy (default: the client's).
        timeout: clock seconds to wait for any read (default: the client's).
        extra: further keyword arguments of the client (``transport``, ``stream``, …).

    Raises:
        ConfigError: an unknown ``api``, naming the three.
    """
    from . import OllamaClient, OpenAIClient

    kwargs: dict[str, Any] = {"max_connections": max_connections, "retry": retry, **extra}
    if timeout is not None:
        kwargs["timeout"] = timeout
    if api == "openai":
        return OpenAIClient(url, **kwargs)
    if api in ("generate", "chat"):
        return OllamaClient(url, api=api, **kwargs)
    raise ConfigError(f"unknown api {api!r} — choose from {', '.join(API_NAMES)}")
