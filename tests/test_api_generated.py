"""Generated requests against the HTTP API's own OpenAPI schema (schemathesis, a well-kept
property-based API tester built on Hypothesis): no request, however odd, gets a 500, hangs or
resets the connection; every answer is one the schema documents.

The API runs as a user runs it — uvicorn on loopback in front of a simulated Ollama — in a
background event loop for the module, with a key (so the key check is exercised) and a tiny time
scale (a long ``num_predict`` costs milliseconds). A fixed seed and a stated number of examples
per operation keep the run repeatable and inside the test budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    status_code_conformance,
)

from parallel_kit.api import ApiSettings, create_app, open_api_backend, serve_api  # noqa: E402
from parallel_kit.sim.server import SimulatedOllama  # noqa: E402

KEY = "generated-cases-key"
EXAMPLES = 100  # per operation and key (with and without)
SCALE = 1e-4


@contextlib.contextmanager
def _live_api() -> Iterator[str]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    stack = contextlib.AsyncExitStack()

    async def start() -> str:
        sim = await stack.enter_async_context(SimulatedOllama("seed", time_scale=SCALE,
                                                              num_parallel=2))
        cfg = ApiSettings(api_key=KEY, max_num_predict=4096, max_request_s=30.0,
                          shutdown_timeout_s=2.0)
        backend = await stack.enter_async_context(open_api_backend([sim.url], concurrency=4))
        return await stack.enter_async_context(serve_api(create_app(backend, cfg)))

    url = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=60)
    try:
        yield url
    finally:
        asyncio.run_coroutine_threadsafe(stack.aclose(), loop).result(timeout=60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


@pytest.fixture(scope="module")
def api_schema() -> Iterator[object]:
    with _live_api() as url:
        yield schemathesis.openapi.from_url(f"{url}/openapi.json",
                                            headers={"Authorization": f"Bearer {KEY}"})


def test_generated_requests_get_documented_answers_and_never_a_500(api_schema) -> None:
    operations = [op.ok() for op in api_schema.get_all_operations()]  # type: ignore[attr-defined]
    assert len(operations) >= 6, [o.path for o in operations]

    for operation in operations:
        # valid requests, and — where the operation takes a body or a path parameter —
        # invalid ones too (schemathesis' negative generation)
        cases = operation.as_strategy(GenerationMode.POSITIVE)
        if operation.body or operation.path_parameters:
            cases = st.one_of(cases, operation.as_strategy(GenerationMode.NEGATIVE))

        @given(case=cases)
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case: object) -> None:
            for headers in ({"Authorization": f"Bearer {KEY}"}, {}):
                response = case.call(headers=headers, timeout=30)  # type: ignore[attr-defined]
                assert response.status_code < 500 or response.status_code == 503, (
                    case, response.status_code, response.text[:300])
                if headers:
                    case.validate_response(  # type: ignore[attr-defined]
                        response, checks=(status_code_conformance,))
                else:  # without the key: refused, but for the open health check and docs
                    assert response.status_code in (200, 401, 404, 405, 422), (
                        case, response.status_code)

        check()
