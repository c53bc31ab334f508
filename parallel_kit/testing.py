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

Importing this module does nothing else: the simulator is imported when a test asks for it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .sim.server import SimulatedOllama

__all__ = ["DEFAULTS", "simulated_ollama"]

#: The fixture's arguments unless a test's parameter overrides them.
DEFAULTS: dict[str, Any] = {"profile": "seed", "time_scale": 0.02}


@pytest.fixture
def simulated_ollama(request: pytest.FixtureRequest) -> Iterator[SimulatedOllama]:
    """A simulated Ollama on a free 127.0.0.1 port for one test (``.url``, ``.stats()``)."""
    from .sim.server import SimulatedOllama

    options = {**DEFAULTS, **(getattr(request, "param", None) or {})}
    sim = SimulatedOllama(**options)
    sim.start_in_thread()
    try:
        yield sim
    finally:
        sim.stop()
