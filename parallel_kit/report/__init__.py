"""Reports: one self-contained, offline HTML file per command (:func:`write_html_report`), and
the capacity plan's figures it draws (:func:`plan_figure`, :func:`plan_curve`)."""

from __future__ import annotations

from .html import (
    MAX_REPORT_BYTES,
    plan_curve,
    plan_figure,
    render_html_report,
    svg_of,
    write_html_report,
)

__all__ = ["MAX_REPORT_BYTES", "plan_curve", "plan_figure", "render_html_report", "svg_of",
           "write_html_report"]
