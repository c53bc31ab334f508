"""The offline HTML report: one file, ≤ 1 MB, nothing fetched from anywhere, every value
escaped, a figure in every section that has data."""

from __future__ import annotations

import re

import pytest

from parallel_kit.bench import capacity as cap
from parallel_kit.bench import compare_sync
from parallel_kit.errors import ConfigError
from parallel_kit.report import MAX_REPORT_BYTES, html, render_html_report, write_html_report

#: Any attribute or CSS that would load something: src=, href=, url(), @import, srcset=.
_LOADS = re.compile(r"""(?:\b(?:src|href|srcset|action|data)\s*=\s*["']?\s*(?!#)[^"'\s>]"""
                    r"""|url\(\s*["']?(?!#)|@import)""", re.I)


def external_references(page: str) -> list[str]:
    """What in ``page`` would make a browser fetch something (fragment links allowed)."""
    return _LOADS.findall(page)


@pytest.fixture(scope="module")
def bench_runs():
    return compare_sync("sequential,pool", time_scale=0.01, gpus=3)


@pytest.fixture(scope="module")
def plan():
    return cap.plan_capacity(cap.Traffic(1 / 8), cap.PercentileSlo.parse("latency_p95=30"),
                             max_gpus=3, slots=[1, 2])


def test_the_reference_check_catches_what_it_should():
    for bad in ('<img src="http://x/y.png">', "<link href='https://cdn/x.css'>",
                "<style>@import 'x.css'</style>", "<div style=\"background:url(x.png)\">",
                '<script src="x.js">'):
        assert external_references(bad), bad
    assert not external_references('<use href="#glyph-1"/><path clip-path="url(#c1)"/>')


def test_bench_report_is_self_contained_and_small(tmp_path, bench_runs):
    path = write_html_report(tmp_path / "r.html", runs=bench_runs, command="parallel-kit bench")
    page = path.read_text(encoding="utf-8")
    assert path.stat().st_size <= MAX_REPORT_BYTES
    assert external_references(page) == []
    assert "http://" not in page and "https://" not in page
    assert page.count("<svg") >= 2  # speed-up and timeline
    for word in ("Predicted vs measured", "Speed-up", "Request timeline",
                 "What produced these numbers", "time scale", "0.01", "parallel-kit bench"):
        assert word in page


def test_capacity_report_has_verdict_table_and_curves(tmp_path, plan):
    page = write_html_report(tmp_path / "c.html", plan=plan).read_text(encoding="utf-8")
    assert external_references(page) == []
    assert "http://" not in page and "https://" not in page
    assert "2 server(s) × 1 slot(s)" in page
    assert page.count("<svg") == 2  # each configuration; against load
    assert len(page.encode()) <= MAX_REPORT_BYTES


def test_every_value_is_escaped(bench_runs):
    page = render_html_report(runs=bench_runs, command="<script>alert(1)</script>")
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_a_report_over_the_limit_is_refused(tmp_path, bench_runs, monkeypatch):
    monkeypatch.setattr(html, "MAX_REPORT_BYTES", 1000)
    with pytest.raises(ConfigError, match="MB limit"):
        html.write_html_report(tmp_path / "big.html", runs=bench_runs)
    assert not (tmp_path / "big.html").exists()


def test_nothing_to_report_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="nothing to report"):
        write_html_report(tmp_path / "x.html")


def test_svg_has_no_url():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([1, 2], [3, 4])
    svg = html.svg_of(fig)
    assert svg.startswith("<svg") and "http" not in svg


def test_bench_html_flag_writes_the_report(tmp_path, capsys):
    from parallel_kit.cli import main

    out = tmp_path / "bench.html"
    assert main(["bench", "--mode", "pool", "--n", "3", "--time-scale", "0.01",
                 "--no-progress", "--html", str(out)]) == 0
    assert "<svg" in out.read_text(encoding="utf-8")


@pytest.mark.parametrize("argv", [
    ["sweep", "--mode", "pool", "--gpus", "2", "--rates", "0.1,0.2", "--n", "4"],
    ["demo", "--modes", "sequential,pool", "--no-plots"],
])
def test_sweep_and_demo_write_the_report_too(tmp_path, capsys, argv):
    from parallel_kit.cli import main

    out = tmp_path / "r.html"
    extra = ["--out", str(tmp_path / "demo")] if argv[0] == "demo" else []
    assert main([*argv, *extra, "--time-scale", "0.01", "--html", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    assert page.count("<svg") >= 2 and external_references(page) == []


def test_a_bad_html_path_is_refused_before_the_run(tmp_path, capsys):
    from parallel_kit.cli import main

    assert main(["sweep", "--mode", "pool", "--rates", "0.1", "--html", str(tmp_path)]) == 2
    assert "--html" in capsys.readouterr().err
