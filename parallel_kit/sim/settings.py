"""The simulated Ollama's server settings, from the environment the way Ollama reads it.

Every ``OLLAMA_*`` variable the simulator honours, read as ``envconfig`` reads it
(https://github.com/ollama/ollama/blob/main/envconfig/config.go: spaces and quotes trimmed,
whole numbers by ``strconv.ParseUint``, durations by ``time.ParseDuration`` then whole
seconds); a flag given on the command line overrides its variable:

=============================  =========================  ======================================
variable                       flag                       default
=============================  =========================  ======================================
``OLLAMA_HOST``                ``--bind``, ``--port``     ``127.0.0.1:11434``
``OLLAMA_NUM_PARALLEL``        ``--num-parallel``         the profile's (1, Ollama's default)
``OLLAMA_MAX_QUEUE``           ``--max-queue``            512
``OLLAMA_KEEP_ALIVE``          ``--keep-alive``           5m
``OLLAMA_MAX_LOADED_MODELS``   ``--max-loaded-models``    0 = 3 per GPU of the profile
``OLLAMA_CONTEXT_LENGTH``      ``--context-length``       0 = by GPU memory (4096 without one)
=============================  =========================  ======================================

A value Ollama would ignore (and fall back to its default) is refused here with a
:class:`~parallel_kit.errors.ConfigError` naming the variable: a typo should not pass silently.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import DEFAULT_PORT, keep_alive_setting, ollama_var, parse_ollama_host, uint_setting
from ..errors import ConfigError

__all__ = ["SimSettings", "listen_address", "sim_settings"]


@dataclass(frozen=True, slots=True)
class SimSettings:
    """Server settings of a simulated Ollama (see the module docstring).

    ``num_parallel`` None = the profile's; ``keep_alive_s`` model seconds (``math.inf`` =
    forever); ``max_loaded_models`` and ``context_length`` 0 = Ollama's automatic choice.
    """

    bind: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    num_parallel: int | None = None
    max_queue: int = 512
    keep_alive_s: float = 300.0
    max_loaded_models: int = 0
    context_length: int = 0


def listen_address(bind: str | None = None, port: int | None = None) -> tuple[str, int]:
    """Where to listen: ``bind``/``port`` where given, else ``OLLAMA_HOST`` read as
    ``envconfig.Host`` reads it (no scheme = port 11434; ``0.0.0.0`` listens on every address).

    Raises:
        ConfigError: ``OLLAMA_HOST`` is not an address (named, with the fix).
    """
    raw = ollama_var("OLLAMA_HOST")
    env_host, env_port = "127.0.0.1", DEFAULT_PORT
    if raw and (bind is None or port is None):
        try:
            _, env_host, env_port, _ = parse_ollama_host(raw)
        except ConfigError as exc:
            raise ConfigError(f"OLLAMA_HOST: {exc}") from None
    return (bind if bind is not None else env_host), (port if port is not None else env_port)


def sim_settings(*, bind: str | None = None, port: int | None = None,
                 num_parallel: int | None = None, max_queue: int | None = None,
                 keep_alive: str | float | None = None, max_loaded_models: int | None = None,
                 context_length: int | None = None) -> SimSettings:
    """The settings: each argument given (not None) wins over its ``OLLAMA_*`` variable,
    which wins over Ollama's default.

    Raises:
        ConfigError: a value that is not valid (named, with the forms that work).
    """
    bind, port = listen_address(bind, port)
    if num_parallel is None:
        env = uint_setting("OLLAMA_NUM_PARALLEL", ollama_var("OLLAMA_NUM_PARALLEL"), 0)
        num_parallel = env or None  # 0 = automatic, which is 1 (the profile's)
    elif num_parallel < 1:
        raise ConfigError(f"--num-parallel must be at least 1, got {num_parallel}")
    if keep_alive is None:
        env_keep = ollama_var("OLLAMA_KEEP_ALIVE")
        keep_alive_s = keep_alive_setting(env_keep) if env_keep else 300.0
    else:
        keep_alive_s = keep_alive_setting(keep_alive, "--keep-alive")
    return SimSettings(
        bind=bind, port=port, num_parallel=num_parallel,
        max_queue=uint_setting("--max-queue", max_queue, 512) if max_queue is not None
        else uint_setting("OLLAMA_MAX_QUEUE", ollama_var("OLLAMA_MAX_QUEUE"), 512),
        keep_alive_s=keep_alive_s,
        max_loaded_models=uint_setting("--max-loaded-models", max_loaded_models, 0)
        if max_loaded_models is not None else
        uint_setting("OLLAMA_MAX_LOADED_MODELS", ollama_var("OLLAMA_MAX_LOADED_MODELS"), 0),
        context_length=uint_setting("--context-length", context_length, 0)
        if context_length is not None else
        uint_setting("OLLAMA_CONTEXT_LENGTH", ollama_var("OLLAMA_CONTEXT_LENGTH"), 0),
    )
