"""Why a connection failed, named by its real cause.

httpx (through anyio) wraps every connect failure as ``ConnectError("All connection attempts
failed")`` or similar; the cause — a name that does not resolve, a refused port, an unreachable
network — is further down the exception chain. Reporting all of them as "connection refused"
sends people to start a server when the host name is misspelt. :func:`connect_reason` walks the
chain and names the first cause it knows.
"""

from __future__ import annotations

import errno
import socket

__all__ = ["connect_reason"]

_UNREACHABLE = {errno.EHOSTUNREACH: "no route to the host (EHOSTUNREACH)",
                errno.ENETUNREACH: "the network is unreachable (ENETUNREACH)",
                errno.EADDRNOTAVAIL: "the address is not available here (EADDRNOTAVAIL)"}


def connect_reason(exc: BaseException, host: str = "") -> str | None:
    """The known root cause of a failed connection, in a few words; ``None`` when unknown.

    Looks at ``exc`` and its ``__cause__``/``__context__`` chain (at most 8 links) for
    :class:`socket.gaierror` (the name does not resolve), :class:`ConnectionRefusedError`,
    :class:`TimeoutError` and unreachable-network ``OSError`` numbers.
    """
    cause: BaseException | None = exc
    for _ in range(8):
        if cause is None:
            return None
        if isinstance(cause, socket.gaierror):
            name = f" {host!r}" if host else ""
            return f"the host name{name} does not resolve (DNS: {cause.strerror or cause})"
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, OSError) and cause.errno in _UNREACHABLE:
            return _UNREACHABLE[cause.errno]
        if isinstance(cause, TimeoutError):
            return "connect timed out"
        cause = cause.__cause__ or cause.__context__
    return None
