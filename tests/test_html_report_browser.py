"""The HTML report in headless Chromium with networking disabled: every figure renders.

Needs Debian's ``chromium`` and ``chromium-driver`` and the ``selenium`` package (as
tests/test_browser_lab.py); skips with that message otherwise. The browser is started with
every host name resolving nowhere and an unreachable proxy, and the page is checked for having
requested no resource at all (the Resource Timing API lists none).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from _browser import chromium, require_browser

from parallel_kit.bench import capacity as cap
from parallel_kit.bench import compare_sync
from parallel_kit.report import write_html_report

pytestmark = [pytest.mark.browser]

require_browser()


@pytest.fixture(scope="module")
def offline_browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with chromium(tmp_path_factory.mktemp("chromium-report"),
                  ("--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9")
                  ) as driver:
        yield driver


def _reports(tmp_path: Any) -> list[Any]:
    runs = compare_sync("sequential,pool", time_scale=0.01, gpus=3)
    plan = cap.plan_capacity(cap.Traffic(1 / 8), cap.PercentileSlo.parse("latency_p95=30"),
                             max_gpus=3, slots=[1, 2])
    return [write_html_report(tmp_path / "bench.html", runs=runs),
            write_html_report(tmp_path / "capacity.html", plan=plan)]


def test_every_figure_renders_offline(offline_browser: Any, tmp_path: Any) -> None:
    for path in _reports(tmp_path):
        offline_browser.get(path.resolve().as_uri())
        figures = offline_browser.execute_script(
            "return Array.from(document.querySelectorAll('figure svg')).map(s => {"
            " const r = s.getBoundingClientRect();"
            " return [r.width, r.height, s.querySelectorAll('path, use').length]; });")
        assert figures, f"{path.name}: no figure"
        for width, height, marks in figures:
            assert width > 100 and height > 100 and marks > 10, (path.name, width, height)
        loaded = offline_browser.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name);")
        assert loaded == [], f"{path.name} asked the network for {loaded}"
