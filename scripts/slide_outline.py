"""A slide outline (Markdown) from the notebooks' headings and figures.

Usage: ``python scripts/slide_outline.py [NOTEBOOK …] [--out FILE]`` (default: every numbered
notebook in ``notebooks/``, printed). One section per notebook (its ``#`` title and its
*Time* line), one slide per ``##`` heading (wherever it stands in a Markdown cell), and under each slide its figures: a figure is a code
cell whose saved outputs hold an image, and its caption is the first sentence of the Markdown
cell right after it (the notebooks' "What it means" paragraphs), else of the Markdown that
introduces it. The "In three lines" summaries are kept as bullets. Nothing is written by hand:
rerun it after the notebooks change.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"

_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")
_HEADING = re.compile(r"^(#{1,3})\s+(.*)$")


def _plain(text: str) -> str:
    """One line of Markdown without links' targets, HTML tags and extra spaces."""
    text = _LINK.sub(r"\1", text)
    text = re.sub(r"<[^>]+>", "", text)
    return " ".join(text.split())


def _first_sentence(markdown: str) -> str:
    """The first sentence of the first paragraph of ``markdown`` (before any heading)."""
    body = []
    for ln in markdown.splitlines():
        if _HEADING.match(ln) and body:
            break
        if ln.strip() and not ln.lstrip().startswith(("#", "*[", "<")):
            body.append(ln)
    text = _plain(" ".join(body))
    text = re.sub(r"^\*\*What it means\.\*\*\s*", "", text)
    match = re.match(r"(.+?[.!?])(\s|$)", text)
    sentence = match.group(1) if match else text
    return sentence[:240]


def _has_figure(cell: nbformat.NotebookNode) -> bool:
    return cell.cell_type == "code" and any(
        "image/png" in out.get("data", {}) or "image/svg+xml" in out.get("data", {})
        for out in cell.get("outputs", []))


def outline(path: Path) -> list[str]:
    """The outline lines of one notebook."""
    nb = nbformat.read(path, as_version=4)
    cells = nb.cells
    lines: list[str] = []
    section = None
    last_caption = None
    for i, cell in enumerate(cells):
        if cell.cell_type == "markdown":
            src_lines = cell.source.splitlines()
            for j, line in enumerate(src_lines):
                m = _HEADING.match(line)
                if not m:
                    continue
                level, title = len(m.group(1)), _plain(m.group(2))
                rest = []
                for ln in src_lines[j + 1:]:
                    if _HEADING.match(ln):
                        break
                    rest.append(ln)
                if level == 1:
                    lines.append(f"## {title}")
                    time_line = re.search(r"\*\*Time:\*\*\s*([^·\n]+)", "\n".join(rest))
                    if time_line:
                        lines.append(f"*{time_line.group(1).strip()}* · `{path.name}`")
                    lines.append("")
                elif level == 2:
                    section = title
                    lines.append(f"### {title}")
                    if title.lower().startswith("in three lines"):
                        lines += [ln.strip() for ln in rest if re.match(r"^\s*\d+\.", ln)]
                    lines.append("")
        elif _has_figure(cell):
            after = cells[i + 1] if i + 1 < len(cells) else None
            caption = ""
            if (after is not None and after.cell_type == "markdown"
                    and not _HEADING.match(after.source.strip().split("\n")[0])):
                caption = _first_sentence(after.source)
            if not caption:
                before = next((c for c in reversed(cells[:i]) if c.cell_type == "markdown"),
                              None)
                caption = _first_sentence(before.source) if before is not None else ""
            if lines and lines[-1] == "":
                lines.pop()
            shown = ("another figure of the same" if caption and caption == last_caption
                     else caption or "(no caption)")
            last_caption = caption
            lines.append(f"- Figure{f' ({section})' if section else ''}: {shown}")
            lines.append("")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path,
                        help="notebooks (default: every numbered one in notebooks/)")
    parser.add_argument("--out", type=Path, default=None, help="write here instead of stdout")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    missing = [p for p in paths if not p.is_file()]
    if missing:
        print(f"no such notebook: {missing[0]} — give .ipynb files", file=sys.stderr)
        return 2
    text = ["# Slide outline", "",
            "Generated by `scripts/slide_outline.py` from the notebooks' headings and figures.",
            ""]
    for path in paths:
        text += outline(path)
    out = "\n".join(text).rstrip() + "\n"
    if args.out:
        args.out.write_text(out, encoding="utf-8")
    else:
        sys.stdout.write(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
