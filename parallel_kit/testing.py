"""A pytest plugin for your own tests: a simulated Ollama per test.

Installed with the kit (entry point ``pytest11``), so the fixture is there without imports::

    def test_my_code_talks_to_ollama(simulated_ollama):
        client = ollama.Client(host=simulated_ollama.url)
        assert client.generate(model="llama3.2:3b", prompt="hi").done

The fixture yields a started :class:`~parallel_kit.sim.server.SimulatedOllama` (profile
``seed``: 10 s of model time per request, one slot) at time scale 0.02, so a request takes
0.2 s on the clock. It runs on its own event loop in a background thread, so sync and async
tests alike can use it. Change its arguments per test with indirect parametrization::

    @pytest.mark.parametrize("simulated_ollama",
                             [{"num_parallel": 4, "time_scale": 0.01}], indirect=True)
    async def test_four_at_once(simulated_ollama): ...

The same fixture fronts the real engine, llama.cpp's ``llama-server`` started as Ollama ≥ 0.30
starts it (built from source on first use, see :mod:`parallel_kit.sim.llama_build`)::

    @pytest.mark.parametrize("simulated_ollama",
                             [{"engine": "llama-server", "num_parallel": 2}], indirect=True)
    def test_real_tokens(simulated_ollama): ...

``llama_server_binary`` (session scope) builds the kit's llama-server if needed and checks, in a
child process, that it generates tokens; a binary that crashes fails the tests that use it with
one message naming the cause, and never the test run.

Importing this module does nothing else: the simulator is imported when a test asks for it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .sim.server import SimulatedOllama

__all__ = ["DEFAULTS", "llama_server_binary", "simulated_ollama"]

#: The fixture's arguments unless a test's parameter overrides them.
DEFAULTS: dict[str, Any] = {"profile": "seed", "time_scale": 0.02}


@pytest.fixture
def simulated_ollama(request: pytest.FixtureRequest) -> Iterator[SimulatedOllama]:
    """A simulated Ollama on a free 127.0.0.1 port for one test (``.url``, ``.stats()``)."""
    from .sim.server import SimulatedOllama

    options = {**DEFAULTS, **(getattr(request, "param", None) or {})}
    engine_name = options.pop("engine", None)
    if engine_name not in (None, "sim"):
        from .sim.registry import make_engine

        request.getfixturevalue("llama_server_binary")
        engine_opts = {k: options.pop(k) for k in ("gguf", "threads", "num_ctx", "binary")
                       if k in options}
        options["engine"] = make_engine(engine_name, num_parallel=options.get("num_parallel"),
                                        models=options.pop("models", None), **engine_opts)
        options.pop("time_scale", None)
    sim = SimulatedOllama(**options)
    sim.start_in_thread()
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture(scope="session")
def llama_server_binary() -> str:
    """The llama-server the real-engine tests run, built if needed and checked in a child.

    Fails (not skips) with the cause when the build fails or the binary cannot generate: a
    machine of the kind the kit supports must run the real engine.
    """
    import subprocess
    import sys

    from .errors import ConfigError
    from .sim.llama_build import ensure_llama_server

    try:
        path = ensure_llama_server(log=lambda s: print(s, file=sys.stderr, flush=True))
    except ConfigError as exc:
        pytest.fail(f"the real engine could not be built: {exc}", pytrace=False)
    proc = subprocess.run([sys.executable, "-m", "parallel_kit", "engine", "check"],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        pytest.fail(f"the real engine does not run on this machine: "
                    f"{(proc.stderr or proc.stdout).strip()[-600:]}", pytrace=False)
    return str(path)
