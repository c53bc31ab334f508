"""Exceptions. Every message names the cause and the fix, in one line.

::

    ParallelKitError
    ├── ConfigError            bad input from the user (CLI flag, prompt file, profile, …)
    ├── OllamaError            something the Ollama server (real or simulated) said or didn't
    │   ├── OllamaUnavailable  nothing answers at the address
    │   │   └── StreamEnded    it answered, then the stream was cut off mid-answer
    │   ├── ModelNotFound      404 "model 'x' not found"
    │   ├── ServerBusy         503 "server busy" (Ollama's scheduler queue is full)
    │   ├── RequestTimeout     no answer within the timeout
    │   └── RequestFailed      any other error status or an error line mid-stream
    ├── WorkerLost             one endpoint or Ray actor stopped answering during a run
    ├── AllWorkersLost         every worker was lost: the run stops with partial results
    └── MissingDependency      an optional extra is not installed (ray, the real engine)

``ConfigError`` is also a ``ValueError`` so that callers that catch ``ValueError`` still work.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AllWorkersLost",
    "ConfigError",
    "MissingDependency",
    "ModelNotFound",
    "OllamaError",
    "OllamaUnavailable",
    "ParallelKitError",
    "RequestFailed",
    "RequestTimeout",
    "ServerBusy",
    "ServerUnavailable",
    "StreamEnded",
    "WorkerLost",
]


class ParallelKitError(Exception):
    """Base of every error the kit raises on purpose."""


class ConfigError(ParallelKitError, ValueError):
    """Bad input: the message says which input and what would be accepted."""


class MissingDependency(ParallelKitError, ImportError):
    """An optional extra is missing. The message says what to install."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs the Python package '{package}', which is not installed — "
            f'install it with: pip install "parallel_kit[{extra}]"'
        )
        self.package = package
        self.extra = extra


class OllamaError(ParallelKitError):
    """An error from (or about) an Ollama server. ``host`` is the server's URL."""

    def __init__(self, message: str, *, host: str = "", status_code: int | None = None) -> None:
        super().__init__(message)
        self.host = host
        self.status_code = status_code


class OllamaUnavailable(OllamaError):
    """Nothing answers at the address."""

    def __init__(self, host: str, detail: str = "") -> None:
        extra = f" ({detail})" if detail else ""
        super().__init__(
            f"no Ollama answers at {host}{extra} — start it with `ollama serve`, point "
            f"OLLAMA_HOST/--host at a running server, or run with PARALLEL_KIT_BACKEND=sim",
            host=host,
        )


class _WordedUnavailable(OllamaUnavailable):
    """An :class:`OllamaUnavailable` with its own words: the class's ``_WORDS``, a template of
    ``{host}`` and ``{extra}`` (`` (detail)`` when there is one)."""

    _WORDS = ""

    def __init__(self, host: str, detail: str = "") -> None:
        extra = f" ({detail})" if detail else ""
        OllamaError.__init__(self, self._WORDS.format(host=host, extra=extra), host=host)


class ServerUnavailable(_WordedUnavailable):
    """Nothing answers at the address of an OpenAI-compatible server (``--api openai``): the
    same type as :class:`OllamaUnavailable` for every caller, with a message that does not send
    the user to ``ollama serve``."""

    _WORDS = ("no OpenAI-compatible server answers at {host}{extra} — start it (llama-server, "
              "vLLM, `ollama serve`, …) or point --host at a running one")


class StreamEnded(_WordedUnavailable):
    """The server answered, then its stream was cut off before the last line.

    A subclass of :class:`OllamaUnavailable` (the server is gone for now, so pool and Ray modes
    may send the request elsewhere), with a message that says what happened.
    """

    _WORDS = ("the answer from {host} ended early: the stream was cut off after it began"
              "{extra} — the server answered, then stopped or restarted; see its log")


class ModelNotFound(OllamaError):
    """The server does not have the model."""

    def __init__(self, model: str, host: str = "", available: list[str] | None = None,
                 fix: str | None = None) -> None:
        have = f"; it has: {', '.join(available)}" if available else ""
        super().__init__(
            f"model '{model}' not found at {host or 'the server'}{have} — "
            + (fix or f"pull it with `ollama pull {model}` or choose another with --model"),
            host=host,
            status_code=404,
        )
        self.model = model


class ServerBusy(OllamaError):
    """503 from Ollama: its scheduler queue (OLLAMA_MAX_QUEUE) is full."""

    def __init__(self, host: str = "", detail: str = "") -> None:
        super().__init__(
            f"server busy at {host or 'the server'}: {detail or 'maximum pending requests exceeded'}"
            " — send fewer requests at once (--concurrency) or raise OLLAMA_MAX_QUEUE",
            host=host,
            status_code=503,
        )


class RequestTimeout(OllamaError):
    """No answer within the timeout."""

    def __init__(self, host: str, timeout_s: float) -> None:
        super().__init__(
            f"no answer from {host} within {timeout_s:g} s — the model may still be loading or "
            f"the server is overloaded; raise the timeout or send fewer requests at once",
            host=host,
        )
        self.timeout_s = timeout_s


class RequestFailed(OllamaError):
    """Any other failure: an error status, or an error line after streaming began."""

    def __init__(self, message: str, *, host: str = "", status_code: int | None = None,
                 body: Any = None) -> None:
        super().__init__(message, host=host, status_code=status_code)
        self.body = body


class WorkerLost(ParallelKitError):
    """A worker (endpoint or Ray actor) stopped answering during a run."""

    def __init__(self, worker: str, reason: str) -> None:
        super().__init__(f"worker {worker} was lost: {reason}")
        self.worker = worker
        self.reason = reason


class AllWorkersLost(ParallelKitError):
    """Every worker was lost. ``partial`` holds the rows that were finished."""

    def __init__(self, message: str, partial: Any = None) -> None:
        super().__init__(message)
        self.partial = partial
