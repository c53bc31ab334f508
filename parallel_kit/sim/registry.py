"""The token engines a simulated Ollama can serve, found by name.

An engine is registered once with an :class:`EngineInfo`: its name (what ``--engine`` takes and
what ``/sim/stats`` reports), a description for help texts, the label results and plots carry,
whether it runs on the clock (a real model: time scale 1), and a factory. The command line, the
backend that starts embedded servers, and the labels of tables and plots all read from here, so
a new engine is one module plus one :func:`register_engine` call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from .protocol import Engine

__all__ = ["EngineInfo", "engine_info", "engine_names", "make_engine", "register_engine"]


@dataclass(frozen=True, slots=True)
class EngineInfo:
    """One registered engine.

    Args:
        name: ``sim``, ``llama-server``, …
        description: one line for ``--engine`` help.
        label: what produced the numbers, for tables and plot footers.
        real_time: it runs on the clock (model seconds are clock seconds).
        factory: builds the engine from keyword options (``num_parallel``, ``models``,
            ``keep_alive_s``, ``max_queue``, and the engine's own, e.g. ``gguf``); None for the
            latency model, which the server builds from its profile.
        default_model: the model a run uses with this engine when none is named (None = the
            kit's default, ``llama3.2:3b``).
    """

    name: str
    description: str
    label: str
    real_time: bool
    factory: Callable[..., Engine] | None
    default_model: str | None = None


_ENGINES: dict[str, EngineInfo] = {}


def register_engine(info: EngineInfo) -> None:
    """Add (or replace) an engine under ``info.name``."""
    _ENGINES[info.name] = info


def engine_names() -> list[str]:
    """Names of the registered engines, ``sim`` first."""
    return sorted(_ENGINES, key=lambda n: (n != "sim", n))


def engine_info(name: str | None) -> EngineInfo:
    """The engine called ``name`` (None or empty = ``sim``).

    Raises:
        ConfigError: unknown name (the message lists the known ones).
    """
    key = name or "sim"
    if key not in _ENGINES:
        raise ConfigError(f"unknown engine {key!r} — choose {' or '.join(engine_names())}")
    return _ENGINES[key]


def make_engine(name: str | None, *, models: Sequence[str] | None = None,
                **options: Any) -> Engine | None:
    """Build the engine ``name`` with ``options`` (those that are None are left out); None for
    ``sim`` (the server builds its latency model itself).

    Raises:
        ConfigError: unknown name or a bad option; MissingDependency: an extra not installed.
    """
    info = engine_info(name)
    if info.factory is None:
        return None
    kwargs = {k: v for k, v in options.items() if v is not None}
    if models:
        kwargs["models"] = list(models)
    return info.factory(**kwargs)


def _llama_server(**kwargs: Any) -> Engine:
    from .llama_server import create_engine

    return create_engine(**kwargs)


register_engine(EngineInfo(
    name="sim", description="the latency model of a profile (model seconds, any time scale)",
    label="simulated Ollama", real_time=False, factory=None))
register_engine(EngineInfo(
    name="llama-server",
    description="a real model served by llama.cpp's llama-server, started as Ollama ≥ 0.30 "
                "starts it (built from source on first use; needs parallel_kit[real])",
    label="llama.cpp llama-server (Ollama's engine)", real_time=True, factory=_llama_server,
    default_model="gemma3:270m"))
