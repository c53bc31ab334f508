"""Settings from the environment, Ollama host addresses, and endpoints.

Environment (``docs/CONTRACTS.md``, "CLI"):
    OLLAMA_HOST               default ``http://127.0.0.1:11434`` (same parsing as Ollama's)
    PARALLEL_KIT_BACKEND      ``auto`` | ``ollama`` | ``sim`` (default ``auto``)
    PARALLEL_KIT_TIME_SCALE   simulator time scale (default 1.0)
    MAX_CONCURRENT_REQUESTS   workers of the async/batch queue (default 5)
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from .errors import ConfigError

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_MODEL",
    "VERSION",
    "Endpoint",
    "backend_from_env",
    "duration_from_body",
    "host_from_env",
    "int_from_env",
    "keep_alive_setting",
    "max_concurrent_from_env",
    "normalize_host",
    "num_parallel_from_env",
    "ollama_var",
    "parse_go_duration",
    "parse_ollama_host",
    "time_scale_from_env",
    "uint_setting",
]

#: The kit's version (``parallel_kit.__version__``; pyproject.toml says the same).
VERSION = "0.2.0"
DEFAULT_HOST = "http://127.0.0.1:11434"
#: The model the kit uses when none is named (small, common, in every profile).
DEFAULT_MODEL = "llama3.2:3b"
DEFAULT_PORT = 11434

Backend = Literal["auto", "ollama", "sim"]


def ollama_var(name: str) -> str:
    """An environment variable as Ollama reads it: surrounding spaces and quotes removed.

    ``envconfig.Var`` does ``strings.Trim(strings.TrimSpace(os.Getenv(key)), "\"'")``
    (https://github.com/ollama/ollama/blob/main/envconfig/config.go), so a value written
    ``OLLAMA_HOST="127.0.0.1:11434"`` in a ``.env`` file or a systemd unit works.
    """
    return os.environ.get(name, "").strip().strip("\"'")


_HOST_CHARS = re.compile(r"^[A-Za-z0-9._~%!$&'()*+,;=:\[\]-]*$")


def _split_host_port(hostport: str) -> tuple[str, str] | None:
    """Go's ``net.SplitHostPort`` for the forms it accepts; None where Go returns an error."""
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0 or not hostport[end + 1:].startswith(":"):
            return None
        return hostport[1:end], hostport[end + 2:]
    if hostport.count(":") != 1:
        return None
    host, port = hostport.split(":", 1)
    return host, port


def parse_ollama_host(host: str) -> tuple[str, str, int, str]:
    """An ``OLLAMA_HOST``-style value as Ollama's ``envconfig.Host`` reads it
    (https://github.com/ollama/ollama/blob/main/envconfig/config.go): ``(scheme, host, port,
    path)``, the host without brackets (``::1``), unspecified addresses kept (``0.0.0.0``).

    Surrounding spaces and quotes are dropped; no scheme means ``http`` and port 11434,
    ``http://``/``https://`` without a port mean 80/443; ``host``, ``host:port``, ``:port``,
    ``[v6]:port``, a bare IPv6 address, ``ollama.com`` (https) and a path are accepted.

    Raises:
        ConfigError: where Ollama silently falls back (a port that is not a number 0–65535,
            an unclosed ``[``), since such a value is a typo; or a scheme other than http(s).
    """
    raw = (host or "").strip().strip("\"'").strip()
    if not raw:
        return "http", "127.0.0.1", DEFAULT_PORT, ""
    default_port = str(DEFAULT_PORT)
    scheme, sep, hostport = raw.partition("://")
    if not sep:
        scheme, hostport = "http", raw
        if raw == "ollama.com":
            scheme, hostport = "https", "ollama.com:443"
    scheme = scheme.lower()
    if scheme == "http":
        default_port = "80" if sep else default_port
    elif scheme == "https":
        default_port = "443"
    else:
        raise ConfigError(f"host {host!r} has scheme {scheme!r} — use http:// or https://")
    hostport, _, path = hostport.partition("/")
    bracketed = "[" in hostport or "]" in hostport
    if (hostport.count("[") != hostport.count("]") or not _HOST_CHARS.match(hostport)
            or (bracketed and not re.fullmatch(r"\[[^\[\]]*\](:\d*)?", hostport))):
        raise ConfigError(f"host {host!r} is not a valid address — write it like "
                          f"127.0.0.1:11434, http://localhost:11434 or http://[::1]:11434")
    parts = _split_host_port(hostport)
    if parts is None:
        name, port = (hostport.strip("[]") or "127.0.0.1"), default_port
    else:
        name, port = (parts[0] or "127.0.0.1"), (parts[1] or default_port)
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"host {host!r} has a bad port {port!r} — write it like "
                          f"127.0.0.1:11434 (Ollama itself would silently use port "
                          f"{default_port})")
    return scheme, name, int(port), path.rstrip("/")


def normalize_host(host: str) -> str:
    """Turn an ``OLLAMA_HOST``-style value into a base URL to connect to, without a trailing
    slash: :func:`parse_ollama_host`, then Ollama's ``ConnectableHost`` — the unspecified
    addresses ``0.0.0.0`` and ``::`` (bind all) are reached at ``127.0.0.1`` and ``[::1]``.

    Raises:
        ConfigError: see :func:`parse_ollama_host`.

    >>> normalize_host("localhost")
    'http://localhost:11434'
    >>> normalize_host("0.0.0.0:8080")
    'http://127.0.0.1:8080'
    >>> normalize_host("'127.0.0.1:11500'")
    'http://127.0.0.1:11500'
    """
    scheme, name, port, path = parse_ollama_host(host)
    if name == "0.0.0.0":
        name = "127.0.0.1"
    elif name == "::":
        name = "::1"
    if ":" in name:  # IPv6 literal
        name = f"[{name}]"
    return f"{scheme}://{name}:{port}" + (f"/{path}" if path else "")


def host_from_env() -> str:
    """``OLLAMA_HOST`` normalized, or the default.

    Raises:
        ConfigError: a value that is not an address (the message names ``OLLAMA_HOST``).
    """
    raw = ollama_var("OLLAMA_HOST")
    try:
        return normalize_host(raw)
    except ConfigError as exc:
        raise ConfigError(f"OLLAMA_HOST: {exc}") from None


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
    """``OLLAMA_NUM_PARALLEL`` (slots per model) read as Ollama reads it (spaces and quotes
    dropped, a whole number); None when unset or 0 ("auto", which is 1).

    Raises:
        ConfigError: not a whole number ≥ 0 (named).
    """
    value = uint_setting("OLLAMA_NUM_PARALLEL", ollama_var("OLLAMA_NUM_PARALLEL"), 0)
    return value or None


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


# -- durations, the way Go and Ollama read them -------------------------------------------
#: Go's ``time.ParseDuration`` units, in seconds (https://pkg.go.dev/time#ParseDuration).
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6, "ms": 1e-3, "s": 1.0,
             "m": 60.0, "h": 3600.0}
_GO_NUMBER = re.compile(r"(\d*)(?:\.(\d*))?")


def _go_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_go_duration(text: str) -> float:
    """Go's ``time.ParseDuration``: ``"300ms"``, ``"-1.5h"``, ``"2h45m"``; returns seconds.

    Raises:
        ValueError: with Go's own message, e.g. ``time: missing unit in duration "-1"``,
            ``time: invalid duration "abc"``, ``time: unknown unit "x" in duration "5x"``.
    """
    orig, s = text, text
    negative = False
    if s[:1] in ("-", "+"):
        negative, s = s[0] == "-", s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise ValueError(f"time: invalid duration {_go_quote(orig)}")
    total = 0.0
    while s:
        m = _GO_NUMBER.match(s)
        whole, frac = (m.group(1), m.group(2)) if m else ("", None)
        if not whole and not frac:
            raise ValueError(f"time: invalid duration {_go_quote(orig)}")
        s = s[m.end():] if m else s
        unit_end = 0
        while unit_end < len(s) and s[unit_end] != "." and not s[unit_end].isdigit():
            unit_end += 1
        unit, s = s[:unit_end], s[unit_end:]
        if not unit:
            raise ValueError(f"time: missing unit in duration {_go_quote(orig)}")
        if unit not in _GO_UNITS:
            raise ValueError(f"time: unknown unit {_go_quote(unit)} in duration "
                             f"{_go_quote(orig)}")
        total += float(f"{whole or 0}.{frac or 0}") * _GO_UNITS[unit]
    return -total if negative else total


def duration_from_body(value: object) -> float:
    """A ``keep_alive`` in a request body, as Ollama's ``api.Duration.UnmarshalJSON`` reads it
    (https://github.com/ollama/ollama/blob/main/api/types.go): a JSON number is seconds
    (fractions allowed), a string is a Go duration (``"5m"``; a bare ``"300"`` or ``"-1"`` is
    Go's "missing unit" error), anything negative means forever (``math.inf``).

    Returns model seconds. Raises:
        ValueError: Ollama's message for the value (it answers 400 with it).
    """
    if isinstance(value, bool):
        raise ValueError("Unsupported type: 'bool'")
    if isinstance(value, (int, float)):
        if value != value:  # NaN cannot come from JSON, but a Python caller may pass it
            raise ValueError("Unsupported type: 'NaN'")
        return float("inf") if value < 0 else float(value)
    if isinstance(value, str):
        seconds = parse_go_duration(value)
        return float("inf") if seconds < 0 else seconds
    kind = ("map[string]interface {}" if isinstance(value, dict) else
            "[]interface {}" if isinstance(value, list) else type(value).__name__)
    raise ValueError(f"Unsupported type: '{kind}'")


def keep_alive_setting(raw: str | float, name: str = "OLLAMA_KEEP_ALIVE") -> float:
    """A server keep-alive (``OLLAMA_KEEP_ALIVE`` or ``--keep-alive``) as Ollama's
    ``envconfig.KeepAlive`` reads it: a Go duration (``"5m"``, ``"24h"``, ``"-1s"``), else a
    whole number of seconds (``"3600"``, ``"-1"``); negative means forever (``math.inf``).

    Raises:
        ConfigError: anything else, listing the forms that work (Ollama itself would ignore the
            value and keep its default of 5m).
    """
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        return float("inf") if raw < 0 else float(raw)
    text = str(raw).strip().strip("\"'")
    try:
        seconds = parse_go_duration(text)
    except ValueError:
        try:
            seconds = float(int(text))
        except ValueError:
            raise ConfigError(
                f"{name}={raw!r} is not a duration — use a Go duration (\"5m\", \"24h\", "
                f"\"90s\"), a whole number of seconds (3600), -1 for forever or 0 to unload "
                f"at once (Ollama itself would ignore it and keep 5m)") from None
    return float("inf") if seconds < 0 else seconds


def uint_setting(name: str, raw: str | int | None, default: int, *, minimum: int = 0) -> int:
    """A whole-number setting the way Ollama's ``envconfig.Uint`` reads it (``strconv.ParseUint``
    after dropping spaces and quotes); ``raw`` None or empty gives ``default``.

    Raises:
        ConfigError: not a whole number ≥ ``minimum`` (Ollama would log a warning and use its
            default; the kit refuses, naming the variable).
    """
    if raw is None:
        return default
    if isinstance(raw, int) and not isinstance(raw, bool):
        value = raw
    else:
        text = str(raw).strip().strip("\"'")
        if not text:
            return default
        if not text.isdigit():
            raise ConfigError(f"{name}={raw!r} is not a whole number — set it to e.g. "
                              f"{max(default, minimum, 1)} (Ollama itself would ignore it and "
                              f"use {default})")
        value = int(text)
    if value < minimum:
        raise ConfigError(f"{name}={value} must be at least {minimum}")
    return value
