"""Execute every notebook in notebooks/ in place, so the committed copies show their outputs.

Usage: ``make notebooks`` (or ``python scripts/execute_notebooks.py [NAME …]``). Runs against
the simulator unless ``PARALLEL_KIT_BACKEND``/``OLLAMA_HOST`` say otherwise, at the time scale
in ``PARALLEL_KIT_TIME_SCALE`` (the Makefile sets 0.05). Figures are embedded at modest DPI.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"


def main(names: list[str]) -> int:
    os.environ.setdefault("PARALLEL_KIT_BACKEND", "sim")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.pop("CUDA_VISIBLE_DEVICES", None)
    paths = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if names:
        paths = [p for p in paths if any(n in p.name for n in names)]
    for path in paths:
        t0 = time.perf_counter()
        nb = nbformat.read(path, as_version=4)
        client = NotebookClient(nb, timeout=900, kernel_name="python3",
                                resources={"metadata": {"path": str(NOTEBOOKS)}})
        client.execute()
        for cell in nb.cells:  # keep diffs small: no execution timing metadata
            cell.get("metadata", {}).pop("execution", None)
        nbformat.write(nb, path)
        print(f"executed {path.name} in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
