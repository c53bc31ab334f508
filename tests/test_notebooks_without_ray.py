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


def execute(name: str, first: str, monkeypatch: pytest.MonkeyPatch,
            **env: str) -> tuple[nbformat.NotebookNode, str]:
    """Run notebook ``name`` with ``first`` as an extra first cell; its cells and stream text."""
    monkeypatch.setenv("PARALLEL_KIT_TIME_SCALE", "0.02")
    monkeypatch.setenv("PARALLEL_KIT_BACKEND", "sim")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell(first))
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    errors = [f"{o.ename}: {o.evalue}" for c in nb.cells if c.cell_type == "code"
              for o in c.outputs if o.output_type == "error"]
    assert not errors, errors
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                     for o in c.outputs if o.output_type == "stream")
    return nb, text


def test_09_without_the_production_extra_says_so_up_front_and_runs_the_rest(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Neither Celery nor Ray: the first code cell names both installs, the pool still runs, and
    # every cell that needs the stack says it skipped instead of failing.
    nb, text = execute("09_production_stack",
                       'import sys\nsys.modules["celery"] = None\nsys.modules["ray"] = None',
                       monkeypatch)
    first = next(c for c in nb.cells[1:] if c.cell_type == "code")
    said_first = "".join(o.get("text", "") for o in first.outputs)
    assert 'pip install "parallel_kit[production]"' in said_first
    assert 'pip install "parallel_kit[ray]"' in said_first
    assert "pool" in text and "5/5" in text  # the run that could run, kept and shown
    assert text.count("skipped: needs the production extra") >= 3
    assert "not measured here" in text  # the routing exercise says why it has no answer


@pytest.mark.ray
def test_04_when_ray_does_not_start_in_time_it_says_why_and_goes_on(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A busy laptop: the GPU workers miss their start deadline (made tiny here).
    _, text = execute("04_ray_multi_gpu", "pass", monkeypatch,
                      PARALLEL_KIT_RAY_START_TIMEOUT="0.001")
    assert "Ray could not start its workers here" in text
    assert "did not start within" in text  # the cause, from the kit's error
    assert "pool" in text and "Ray stopped" in text  # the cluster it did start is stopped


@pytest.mark.ray
def test_09_when_ray_does_not_start_in_time_it_keeps_the_pool_and_skips_the_stack(
        monkeypatch: pytest.MonkeyPatch) -> None:
    _, text = execute("09_production_stack", "pass", monkeypatch,
                      PARALLEL_KIT_RAY_START_TIMEOUT="0.001")
    assert "Ray could not start its workers here" in text and "did not start within" in text
    assert "skipped: Ray did not start" in text  # the stack's cells say why, no NameError
    assert "5/5" in text and "Ray stopped" in text
