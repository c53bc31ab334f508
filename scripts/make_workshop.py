"""Make the learners' copy of the notebooks: no outputs, CI checks folded away, answers closed.

Usage: ``make workshop`` (or ``python scripts/make_workshop.py [--out DIR]``). Writes
``workshop/`` at the repository root (git-ignored) with:

* ``notebooks/`` — every numbered notebook with its outputs, execution counts and saved widget
  state removed, so a learner runs each cell and sees their own results; cells tagged
  ``remove-cell`` are dropped; cells tagged ``ci-check`` (the assertions CI runs) keep their
  code — later cells may use what they define — but with the input collapsed
  (``metadata.jupyter.source_hidden``, which JupyterLab honours); answers stay in their closed
  ``<details>`` blocks;
* ``notebooks/README.md`` and ``docs/GLOSSARY.md``, so the links between them work.

The committed notebooks are not changed.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
#: Metadata a learner's copy must not carry (saved widget views, execution timings).
DROPPED_METADATA = ("widgets", "execution")


def learners_copy(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The notebook as a learner gets it (a new object; ``nb`` is not changed)."""
    out = nbformat.from_dict(nb)
    for key in DROPPED_METADATA:
        out.metadata.pop(key, None)
    cells = []
    for cell in out.cells:
        tags = set(cell.metadata.get("tags", []))
        if "remove-cell" in tags:
            continue
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
            if "ci-check" in tags:
                cell.metadata.setdefault("jupyter", {})["source_hidden"] = True
        cells.append(cell)
    out.cells = cells
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "workshop",
                        help="where to write the copy (default: workshop/ at the repo root)")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    if out == NOTEBOOKS.resolve() or NOTEBOOKS.resolve().is_relative_to(out):
        print(f"--out {out} would overwrite the committed notebooks — choose another folder",
              file=sys.stderr)
        return 2
    (out / "notebooks").mkdir(parents=True, exist_ok=True)
    (out / "docs").mkdir(parents=True, exist_ok=True)
    paths = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        nbformat.write(learners_copy(nb), out / "notebooks" / path.name)
    shutil.copy(NOTEBOOKS / "README.md", out / "notebooks" / "README.md")
    glossary = ROOT / "docs" / "GLOSSARY.md"
    if glossary.exists():
        shutil.copy(glossary, out / "docs" / "GLOSSARY.md")
    print(f"wrote {len(paths)} notebooks without outputs to {out / 'notebooks'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
