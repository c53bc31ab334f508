"""Notebooks 04 and 05 on a machine without Ray: they say what to install and go on.

Ray is an optional extra (``parallel_kit[ray]``). Each notebook is executed by a real kernel
(nbclient) with ``ray`` made unimportable in that kernel (``sys.modules["ray"] = None``: both
``import ray`` and ``importlib.util.find_spec("ray")`` then behave as if it were not installed).
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", ["04_ray_multi_gpu", "05_speedup_analysis"])
def test_a_ray_notebook_without_ray_says_what_to_install_and_goes_on(
        name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARALLEL_KIT_TIME_SCALE", "0.02")
    monkeypatch.setenv("PARALLEL_KIT_BACKEND", "sim")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell('import sys\nsys.modules["ray"] = None'))
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                     for o in c.outputs if o.output_type == "stream")
    assert 'pip install "parallel_kit[ray]"' in text
    assert not any(o.output_type == "error" for c in nb.cells if c.cell_type == "code"
                   for o in c.outputs)
    assert "Ray stopped" not in text
