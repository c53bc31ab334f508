"""Reports: one self-contained, offline HTML file per command (:func:`write_html_report`)."""

from __future__ import annotations

from .html import MAX_REPORT_BYTES, render_html_report, svg_of, write_html_report

__all__ = ["MAX_REPORT_BYTES", "render_html_report", "svg_of", "write_html_report"]
