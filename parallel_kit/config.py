"""Settings from the environment, Ollama host addresses, and endpoints.

Environment (``docs/CONTRACTS.md``, "CLI"):
    OLLAMA_HOST               default ``http://127.0.0.1:11434`` (same parsing as Ollama's)
    PARALLEL_KIT_BACKEND      ``auto`` | ``ollama`` | ``sim`` (default ``auto``)
    PARALLEL_KIT_TIME_SCALE   simulator time scale (default 1.0)
    MAX_CONCURRENT_REQUESTS   workers of the async/batch queue (default 5)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from .errors import ConfigError

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_MODEL",
    "Endpoint",
    "backend_from_env",
    "host_from_env",
    "int_from_env",
    "max_concurrent_from_env",
    "normalize_host",
    "num_parallel_from_env",
    "time_scale_from_env",
]

DEFAULT_HOST = "http://127.0.0.1:11434"
#: The model the kit uses when none is named (small, common, in every profile).
DEFAULT_MODEL = "llama3.2:3b"
DEFAULT_PORT = 11434

Backend = Literal["auto", "ollama", "sim"]


def normalize_host(host: str) -> str:
    """Turn an ``OLLAMA_HOST``-style value into a base URL without a trailing slash.

    Accepts what Ollama accepts: ``host``, ``host:port``, ``:port``, ``http://host:port``,
    ``https://host``. A missing port is 11434 (Ollama's ``envconfig.Host``); ``0.0.0.0`` (bind all)
    is reached at ``127.0.0.1``.

    >>> normalize_host("localhost")
    'http://localhost:11434'
    >>> normalize_host("0.0.0.0:8080")
    'http://127.0.0.1:8080'
    """
    raw = (host or "").strip()
    if not raw:
        return DEFAULT_HOST
    # Ollama's envconfig.Host: no scheme -> http and port 11434; an explicit http:// or
    # https:// without a port means 80 or 443.
    default_port = DEFAULT_PORT
    if "://" in raw:
        default_port = {"http": 80, "https": 443}.get(raw.split("://", 1)[0].lower(), DEFAULT_PORT)
    else:
        raw = "http://" + raw
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https"):
        raise ConfigError(f"host {host!r} has scheme {parts.scheme!r} — use http:// or https://")
    try:
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"host {host!r} has a bad port — write it like 127.0.0.1:11434") from exc
    hostname = parts.hostname or "127.0.0.1"
    if hostname in ("0.0.0.0", "::"):
        hostname = "127.0.0.1"
    if ":" in hostname:  # IPv6 literal
        hostname = f"[{hostname}]"
    path = parts.path.rstrip("/")
    return f"{parts.scheme}://{hostname}:{port or default_port}{path}"


def host_from_env() -> str:
    """``OLLAMA_HOST`` normalized, or the default."""
    return normalize_host(os.environ.get("OLLAMA_HOST", ""))


def backend_from_env() -> Backend:
    value = os.environ.get("PARALLEL_KIT_BACKEND", "auto").strip().lower() or "auto"
    if value not in ("auto", "ollama", "sim"):
        raise ConfigError(
            f"PARALLEL_KIT_BACKEND={value!r} is not a backend — use auto, ollama or sim"
        )
    return value  # type: ignore[return-value]


def time_scale_from_env(default: float = 1.0) -> float:
    raw = os.environ.get("PARALLEL_KIT_TIME_SCALE", "").strip()
    if not raw:
        return default
    try:
        return check_time_scale(_parse_float("PARALLEL_KIT_TIME_SCALE", raw))
    except ConfigError as exc:
        if str(exc).startswith("PARALLEL_KIT_TIME_SCALE"):
            raise
        raise ConfigError(f"PARALLEL_KIT_TIME_SCALE={raw}: {exc}") from None


def int_from_env(name: str, example: int) -> int | None:
    """A whole number from the environment variable ``name``; None when unset or empty.

    Raises:
        ConfigError: not a whole number (the message suggests ``example``).
    """
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number — set it to e.g. {example}"
                          ) from None


def max_concurrent_from_env(default: int = 5) -> int:
    value = int_from_env("MAX_CONCURRENT_REQUESTS", 5)
    if value is None:
        return default
    from .ranges import RANGES

    r = RANGES["--concurrency"]
    if not r.lo <= value <= r.hi:
        raise ConfigError(f"MAX_CONCURRENT_REQUESTS={value} is outside {r.text()} ({r.what})")
    return value


def num_parallel_from_env() -> int | None:
    """``OLLAMA_NUM_PARALLEL`` (slots per model); None when unset, or 0 ("auto", which is 1
    since Ollama 0.10)."""
    value = int_from_env("OLLAMA_NUM_PARALLEL", 4)
    return value if value is not None and value > 0 else None


def check_time_scale(value: float) -> float:
    """A time scale must be a positive finite number (0.02 turns 10 s into 0.2 s), within
    the range of ``--time-scale`` (:data:`parallel_kit.ranges.RANGES`)."""
    from .ranges import RANGES

    r = RANGES["--time-scale"]
    if not (value > 0 and value < float("inf")):
        raise ConfigError(
            f"time scale {value!r} must be a positive number (e.g. 0.02 turns 10 s into 0.2 s)"
        )
    if not r.lo <= value <= r.hi:
        raise ConfigError(f"time scale {value:g} is outside {r.text()} ({r.what})")
    return value


def _parse_float(name: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One Ollama server the kit sends requests to (real or simulated).

    Args:
        url: base URL, e.g. ``http://127.0.0.1:11434``.
        slots: how many requests it serves at once (its ``OLLAMA_NUM_PARALLEL``).
        name: label used as ``worker`` in the results (default: host:port).
        gpu: the GPU it runs on, if known (``"0"``, ``"1"``, …).
        node: the machine it runs on, if known.
    """

    url: str
    slots: int = 1
    name: str = ""
    gpu: str | None = None
    node: str = ""

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        return urlsplit(self.url).netloc or self.url
