"""Generated requests against the *production* HTTP API's own OpenAPI schema (schemathesis, as
in ``tests/test_api_generated.py``): no request, however odd, gets a 5xx other than the
documented 503, hangs or resets the connection; with the key every answer is one the schema
documents, without it every guarded route refuses.

The API runs as a user runs it — ``parallel-kit serve --mode production`` as a process of its
own, an API-only process (``--workers 0 --serve-app``) in front of the session's stack
(``production_stack``: a real Redis, a Celery worker process, Ray Serve replicas) — with a key
(``PARALLEL_KIT_API_KEY``) and ``--max-num-predict`` set low: the schema allows any
``options.num_predict``, so most valid generated bodies get one drawn across the bound
(negative, within, past it) and the refusal (422 naming the limit) is exercised; what is
accepted stays a short request, and a worker's request timeout bounds the rest. At the end
every task the cases queued has finished (Redis's counters, read through ``/stats``).

EXAMPLES = 12 per operation and key, valid bodies and invalid ones (positive and negative
generation): every accepted request is a real Celery task through Redis and Ray Serve, and the
stack's start-up alone takes about a minute on a 2-core machine; twelve cases of each of the six
operations (each sent twice) take about half a minute more, so the whole file runs in under two
minutes there. Fixed seed (``derandomize``, no example database): the same requests every
run.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")
pytest.importorskip("celery")
import httpx  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.specs.openapi.checks import status_code_conformance  # noqa: E402

from parallel_kit.api import API_KEY_ENV  # noqa: E402
from parallel_kit.servers.launcher import free_port  # noqa: E402

pytestmark = pytest.mark.timeout(300)

KEY = "generated-cases-production-key"
EXAMPLES = 12  # per operation and key (with and without); see the module docstring
MAX_NUM_PREDICT = 16
#: Per request: longer than any answer may take (a POST /inference waits at most for the
#: workers' request timeout and its margin, ``--max-request-s`` below), so a timeout is a hang.
REQUEST_TIMEOUT_S = 30.0
NUM_PREDICT = st.one_of(st.none(), st.integers(-3, 2 * MAX_NUM_PREDICT),
                        st.sampled_from([MAX_NUM_PREDICT, MAX_NUM_PREDICT + 1, 10**9]))


def _with_num_predict(body: Any, num_predict: int | None) -> bool:
    """Put ``num_predict`` into each generated ``options`` object of ``body``; whether any
    item now asks for more (or fewer) tokens than the bound allows."""
    items = body if isinstance(body, list) else [body]
    past = False
    for item in items:
        if num_predict is None or not isinstance(item, dict):
            continue
        options = item.get("options")
        if options is None and "prompt" in item:
            options = item["options"] = {}
        if isinstance(options, dict):
            options["num_predict"] = num_predict
            past = past or not 1 <= num_predict <= MAX_NUM_PREDICT
    return past


@pytest.fixture
def production_api(production_stack, monkeypatch) -> Iterator[str]:
    """``parallel-kit serve --mode production`` (API only) with a key, in front of the
    session's stack; at the end, every task it accepted has finished (Redis's counters)."""
    from test_production import _start_api

    monkeypatch.setenv(API_KEY_ENV, KEY)
    port = free_port()
    proc = _start_api(production_stack, port, "--max-num-predict", str(MAX_NUM_PREDICT),
                      "--max-request-s", "5", "--shutdown-timeout-s", "1")
    errors: list[bytes] = []  # drained, so tracebacks cannot fill the pipe and block it
    reader = threading.Thread(target=lambda: errors.extend(proc.stderr or ()), daemon=True)
    reader.start()
    url = f"http://127.0.0.1:{port}"
    try:
        yield url
        # the tasks the cases queued finish (the worker's request timeout bounds each)
        auth = {"Authorization": f"Bearer {KEY}"}
        deadline = time.monotonic() + 120
        stats = httpx.get(f"{url}/stats", headers=auth, timeout=REQUEST_TIMEOUT_S).json()
        while stats["unfinished"] and time.monotonic() < deadline:
            time.sleep(0.1)
            stats = httpx.get(f"{url}/stats", headers=auth, timeout=REQUEST_TIMEOUT_S).json()
        assert stats["unfinished"] == 0, stats
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        reader.join(10)
    assert b"Traceback" not in b"".join(errors), b"".join(errors).decode(errors="replace")


@pytest.mark.ray
@pytest.mark.slow
def test_generated_requests_get_documented_answers_and_never_a_500(production_api) -> None:
    schema = schemathesis.openapi.from_url(f"{production_api}/openapi.json",
                                           headers={"Authorization": f"Bearer {KEY}"})
    operations = [op.ok() for op in schema.get_all_operations()]
    assert {f"{o.method.upper()} {o.path}" for o in operations} >= {
        "POST /inference", "POST /inference/async", "POST /inference/batch",
        "GET /tasks/{task_id}", "GET /stats", "GET /health"}
    for operation in operations:
        _send_generated(operation)


def _send_generated(operation: Any) -> None:
    """EXAMPLES generated requests of one operation, each sent with the key and without."""
    # (case, valid): valid bodies and parameters, and — where the operation takes any —
    # invalid ones too (there is nothing to break otherwise)
    cases = operation.as_strategy(GenerationMode.POSITIVE).map(lambda c: (c, True))
    if operation.body or operation.path_parameters:
        cases = st.one_of(cases, operation.as_strategy(GenerationMode.NEGATIVE).map(
            lambda c: (c, False)))
    open_route = operation.path == "/health"

    @given(drawn=cases, num_predict=NUM_PREDICT)
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def check(drawn: tuple[Any, bool], num_predict: int | None) -> None:
        case, valid = drawn
        past_limit = valid and case.body is not None and _with_num_predict(case.body,
                                                                           num_predict)
        for headers in ({"Authorization": f"Bearer {KEY}"}, {}):
            try:
                response = case.call(headers=headers, timeout=REQUEST_TIMEOUT_S)
            except OSError as exc:  # requests' timeouts and connection resets are OSErrors
                raise AssertionError(f"no answer (a hang or a reset): {exc!r}; {case!r}") from exc
            assert response.status_code < 500 or response.status_code == 503, (
                case, response.status_code, response.text[:300])
            if headers:
                case.validate_response(response, checks=(status_code_conformance,))
                if past_limit:  # refused before anything is queued, naming the limit
                    assert response.status_code == 422, (case, response.text[:300])
                    assert "--max-num-predict" in response.text, response.text[:300]
            elif open_route:  # the health check needs no key
                case.validate_response(response, checks=(status_code_conformance,))
            else:  # without the key: refused
                assert response.status_code == 401, (case, response.status_code)

    check()


class _Accepting:
    """A stand-in task client: accepts every task (the body check runs before it)."""

    def submit(self, spec: Any, **kwargs: Any) -> str:
        return "task-1"


async def test_a_body_that_is_not_utf8_is_a_documented_422_not_fastapis_400() -> None:
    """Found by the generated cases (invalid bodies): bytes that do not decode as JSON text got
    FastAPI's undocumented 400; now the guard both APIs share answers 422 saying why. JSON in
    UTF-16 (which JSON parsers detect) is still read."""
    from parallel_kit.api import ApiSettings
    from parallel_kit.production.api import create_production_app

    app = create_production_app(_Accepting(), ApiSettings(mode="production", api_key=None))
    json_type = {"content-type": "application/json"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://api") as client:
        for body in (b"\xff", b'{"prompt": "caf\xe9"}', b'[{"prompt": "\xff"}]'):
            resp = await client.post("/inference/async", content=body, headers=json_type)
            assert resp.status_code == 422, (body, resp.status_code, resp.text)
            assert "not UTF-8 text" in resp.json()["detail"]
        utf16 = '{"prompt": "café"}'.encode("utf-16")
        resp = await client.post("/inference/async", content=utf16, headers=json_type)
        assert resp.status_code == 200 and resp.json()["task_id"] == "task-1"
