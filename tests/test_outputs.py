"""Output paths are checked before a run: a figure's suffix must be one matplotlib writes."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from matplotlib.figure import Figure

from parallel_kit import plots
from parallel_kit.errors import ConfigError
from parallel_kit.outputs import check_figure_format, check_writable, figure_formats

SUFFIXES = st.one_of(st.sampled_from(["", *figure_formats(), "json", "csv", "txt", "html", "PNG",
                                      "Svg", "jpeg2000", "png~"]),
                     st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=6))


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(suffix=SUFFIXES)
def test_a_figure_is_written_or_refused_before_the_run_with_one_line(suffix: str,
                                                                      tmp_path: Path) -> None:
    path = tmp_path / (f"fig.{suffix}" if suffix else "fig")
    try:
        check_writable([], figures=[("--plot", str(path))])
    except ConfigError as e:
        assert suffix.lower() not in figure_formats()
        assert "--plot" in str(e) and "\n" not in str(e) and ".png" in str(e)
        with pytest.raises(ConfigError):
            plots.save(Figure(), path)
        return
    out = plots.save(Figure(), path)
    assert out.exists() and out.stat().st_size > 0


def test_no_suffix_means_png() -> None:
    check_figure_format("--plot", "timeline")
    assert "png" in figure_formats()
