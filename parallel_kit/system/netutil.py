"""Sockets: listening sockets shared by the kit's servers (the simulated Ollama and the HTTP
API), and a free port for a child server.

Each server binds its own socket before the event loop serves it, so that a taken port is a
clear :class:`~parallel_kit.errors.ConfigError` at once (and ``port=0`` picks a free port whose
number is then known).
"""

from __future__ import annotations

import socket

from ..errors import ConfigError

__all__ = ["free_port", "listen", "socket_url"]


def listen(bind: str, port: int, *, what: str = "server", backlog: int = 2048) -> socket.socket:
    """A non-blocking TCP socket listening on ``bind:port`` (port 0: any free port).

    The socket is created with ``IPPROTO_TCP`` explicitly: asyncio sets ``TCP_NODELAY`` on
    accepted connections only when the listening socket says it is TCP; with protocol 0,
    Nagle's algorithm and delayed ACKs stall each answer on a reused connection by ~40 ms.

    Args:
        bind: address to listen on (``127.0.0.1``, ``0.0.0.0``, ``::1``, ``[::1]``).
        port: 0–65535; 0 picks a free one.
        what: what listens, for the error message (``"simulated Ollama"``, ``"API"``).

    Raises:
        ConfigError: a port outside 0–65535, or one that cannot be bound (in use, bad
            address), naming the fix.
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError(f"--port {port!r} is not a port — use 1 to 65535 (0 picks a free one)")
    host = bind.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {bind}:{port} for the {what} "
                          f"({exc.strerror or exc}) — the port may be in use: choose another "
                          f"with --port (0 picks a free one), or check --bind") from None
    sock.setblocking(False)
    return sock


def socket_url(sock: socket.socket) -> str:
    """``http://host:port`` of a listening socket; a wildcard address reads as loopback."""
    host, port = sock.getsockname()[:2]
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def free_port(bind: str = "127.0.0.1") -> int:
    """A TCP port free right now on ``bind`` (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((bind, 0))
        return int(s.getsockname()[1])
